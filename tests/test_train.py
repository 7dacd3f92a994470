"""maskaudit.train: joint training, histories, checkpoints, the loss, augmentation and the QAM's picking."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from maskaudit.checkpoint import load_checkpoint
from maskaudit.dataset import DatasetIndex, Sample
from maskaudit.errors import CheckpointError
from maskaudit.history import TrainingHistory
from maskaudit.models import QualityAwarenessModule, UNet
from maskaudit.prepare import PreparedData
from maskaudit.train import (
    CHECKPOINT_NAME,
    TrainConfig,
    augment_batch,
    classes_learned,
    classes_present,
    critic_positions,
    epoch_batches,
    epochs_after,
    per_sample_loss,
    ranking_stability,
    segmenter_gain,
    should_stop_early,
    train,
    weighted_loss,
)


def tiny_data(n: int = 20, *, size: int = 32, layout: str = "B", bad_fraction: float = 0.0, seed: int = 0,
              ) -> tuple[PreparedData, np.ndarray]:
    """A bright disk and a horizontal band on a noisy background, masks (N, 2, S, S), and which are bad.

    A bad sample's disk mask is a disk of the same radius somewhere else and its band mask a band
    at another height: the label does not fit the image, but is as large and as smooth as a good one.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images = np.zeros((n, 1, size, size), np.uint8)
    masks = np.zeros((n, 2, size, size), np.uint8)
    bad = np.zeros(n, bool)
    bad[rng.permutation(n)[: round(n * bad_fraction)]] = True
    for i in range(n):
        cy, cx = rng.uniform(10, size - 10, 2)
        radius = rng.uniform(5, 8)
        disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
        band = np.abs(yy - size / 2 - rng.uniform(-4, 4)) < 3
        picture = rng.normal(60, 15, (size, size))
        picture[disk] += 120
        picture[band & ~disk] += 60
        images[i, 0] = np.clip(picture, 0, 255)
        masks[i, 0], masks[i, 1] = disk, band & ~disk
        if bad[i]:
            oy, ox = rng.uniform(10, size - 10, 2)
            masks[i, 0] = (yy - oy) ** 2 + (xx - ox) ** 2 <= radius**2
            masks[i, 1] = np.abs(yy - size / 2 - rng.uniform(-4, 4)) < 3
    if layout == "A":
        masks[:, 1] &= ~masks[:, 0]  # exclusive classes
    samples = tuple(Sample(f"s{i:02d}", Path(f"images/s{i:02d}.png"), ()) for i in range(n))
    index = DatasetIndex(root=Path("/nonexistent"), layout=layout, classes=("disk", "band"), samples=samples,
                         skipped=(), mask_suffix="")
    return PreparedData(index, images, masks, np.full((n, 2), size, np.int64), size), bad


def small_config(**changes) -> TrainConfig:
    options = dict(size=32, width=4, qam_width=4, batch_size=8, epochs=2, lr=1e-3, precision="fp32")
    options.update(changes)
    return TrainConfig(**options)


@pytest.mark.parametrize("mode", ["qam-ocm", "qam", "baseline"])
@pytest.mark.parametrize("layout", ["B", "A"])
def test_train_each_mode_histories_and_checkpoint(tmp_path, mode, layout):
    data, _ = tiny_data(20, layout=layout)
    result = train(data, small_config(mode=mode), out_dir=tmp_path)
    for history in (result.history_loss, result.history_t, result.history_weight):
        assert history.shape == (2, 20)
        assert np.isfinite(history).all()
    assert result.history_dice.shape == (2, 20, 2)
    # w_i * batch size: every sample is seen once per epoch and each batch's weights sum to 1.
    np.testing.assert_allclose(result.history_weight.mean(axis=1), 1.0, rtol=1e-5)
    assert (result.history_weight > 0).all()
    if mode == "baseline":
        assert result.qam is None
        np.testing.assert_allclose(result.history_weight, 1.0)
        assert (result.history_t == 0).all()
    else:
        assert isinstance(result.qam, QualityAwarenessModule) and not result.qam.training
        assert result.history_t.std() > 0
    if mode == "qam-ocm":
        # no weight outside what a batch of 6 or 7 (20 = 7 + 7 + 6) allows with ratios <= exp(2 lam)
        ratio = np.exp(2 * 2.0)
        assert result.history_weight.max() <= 7 * ratio / (ratio + 6) + 1e-5
        assert result.history_weight.min() >= 7 / (1 + 6 * ratio) - 1e-5
    assert isinstance(result.unet, UNet) and not result.unet.training
    assert result.config.epochs == 2 and result.seconds > 0

    path = tmp_path / CHECKPOINT_NAME
    state = torch.load(path, map_location="cpu", weights_only=True)  # loads with no code execution
    assert load_checkpoint(path)["epoch"] == state["epoch"]
    assert state["epoch"] == 2 and state["config"]["mode"] == mode
    assert state["classes"] == ["disk", "band"] and state["multilabel"] == (layout == "B")
    assert (state["qam"] is None) == (mode == "baseline")
    unet = UNet(1, 2 if layout == "B" else 3, width=4)
    unet.load_state_dict(state["unet"])
    np.testing.assert_allclose(TrainingHistory.from_state(state["histories"]).dense("weight"), result.history_weight)


def test_same_seed_same_histories():
    data, _ = tiny_data(16)
    first = train(data, small_config(epochs=1))
    second = train(data, small_config(epochs=1))
    np.testing.assert_array_equal(first.history_loss, second.history_loss)
    np.testing.assert_array_equal(first.history_t, second.history_t)


def test_resume_with_other_options_is_refused(tmp_path):
    data, _ = tiny_data(16)
    train(data, small_config(epochs=1), out_dir=tmp_path)
    with pytest.raises(CheckpointError, match="other options"):
        train(data, small_config(epochs=2, lam=1.0), out_dir=tmp_path, resume=True)


def test_epoch_batches_cover_every_sample_once_with_no_tiny_batch():
    batches = epoch_batches(20, 8, seed=0, epoch=3)
    assert sorted(np.concatenate(batches).tolist()) == list(range(20))
    assert [len(batch) for batch in batches] == [7, 7, 6]


@pytest.mark.parametrize("multilabel", [True, False])
def test_per_sample_loss_is_low_for_perfect_logits_and_high_for_wrong_ones(multilabel):
    masks = torch.zeros(2, 2, 8, 8)
    masks[:, 0, :4] = 1
    masks[:, 1, 5:, 2:6] = 1
    if multilabel:
        logits = (masks * 2 - 1) * 20  # sample 0 perfect
        logits[1] = -logits[1]  # sample 1 exactly wrong
    else:
        target = torch.cat([1 - masks.amax(dim=1, keepdim=True), masks], dim=1)  # background first
        logits = (target * 2 - 1) * 20
        logits[1] = logits[1].roll(1, dims=0)  # every pixel gets a wrong class
    loss, dice, _ = per_sample_loss(logits, masks, multilabel=multilabel)
    assert loss.shape == (2,) and dice.shape == (2, 2)
    assert float(loss[0]) < 0.02
    assert float(dice[0].min()) > 0.98
    assert float(loss[1]) > 1.0 + float(loss[0])
    assert float(dice[1].max()) < 0.05


def test_augment_batch_warps_image_and_mask_alike():
    masks = torch.zeros(4, 1, 48, 48)
    masks[:, 0, 14:34, 12:30] = 1
    masks[:, 0, 20:26, 30:36] = 1  # asymmetric, so a rotation shows
    images = masks.clone()  # an image that is its own mask
    out_images, out_masks = augment_batch(images, masks.clone(), torch.Generator().manual_seed(0), flips=True)
    assert out_images.shape == images.shape and out_masks.shape == masks.shape
    assert set(out_masks.unique().tolist()) <= {0.0, 1.0}
    warped = out_images > 0.5  # the intensity jitter keeps 1 above and 0 below one half
    for i in range(4):
        agree = 2 * (warped[i] & (out_masks[i] > 0)).sum() / (warped[i].sum() + out_masks[i].sum())
        assert float(agree) > 0.97
    moved = [float((out_masks[i] != masks[i]).float().mean()) for i in range(4)]
    assert max(moved) > 0.02  # the warp did something


def test_qam_down_weights_planted_bad_labels():
    """Half the masks belong to no image; after a few epochs the QAM gives them less weight."""
    data, bad = tiny_data(32, bad_fraction=0.5)
    result = train(data, small_config(epochs=8, width=8, lr=3e-3, augment=False))
    late = result.history_weight[4:]
    assert late[:, bad].mean() < 0.8 * late[:, ~bad].mean()


def test_ranking_stability_compares_two_windows_of_the_loss_ranking():
    rng = np.random.default_rng(0)
    assert ranking_stability(rng.random((5, 30))) is None  # fewer than 2 windows of 3 epochs
    settled = np.tile(np.arange(30.0), (6, 1)) + rng.normal(0, 0.01, (6, 30))
    assert ranking_stability(settled) == pytest.approx(1.0)
    reversed_order = np.vstack([np.tile(np.arange(30.0), (3, 1)), np.tile(-np.arange(30.0), (3, 1))])
    assert ranking_stability(reversed_order) == pytest.approx(-1.0)
    assert abs(ranking_stability(rng.random((6, 200)))) < 0.3


def history_of(loss: np.ndarray, dice: np.ndarray) -> TrainingHistory:
    """A history whose every epoch drew every sample, from (E, N) losses and (E, N, K) Dice."""
    history = TrainingHistory(loss.shape[1], dice.shape[2])
    for epoch_loss, epoch_dice in zip(loss, dice):
        history.record(np.arange(loss.shape[1]), {"loss": epoch_loss, "t": np.zeros_like(epoch_loss),
                                                  "weight": np.ones_like(epoch_loss), "dice": epoch_dice})
    return history


def test_early_stop_waits_for_every_class_half_the_budget_and_a_stable_ranking():
    stable_loss = np.tile(np.arange(30.0), (10, 1))
    learned = np.full((10, 30, 2), 0.9)
    assert should_stop_early(history_of(stable_loss, learned), budget=20)
    assert not should_stop_early(history_of(stable_loss[:9], learned[:9]), budget=20)  # before half the budget
    assert not should_stop_early(history_of(stable_loss, learned), budget=10)  # the budget is spent anyway
    small_class_missing = learned.copy()
    small_class_missing[-1, :, 1] = 0.05  # e.g. the clavicles, still predicted empty
    assert not classes_learned(small_class_missing) and classes_learned(learned)
    assert not should_stop_early(history_of(stable_loss, small_class_missing), budget=20)
    # up to half the samples with a bad mask (Dice near 0) do not hide a learned class
    mixed = learned.copy()
    mixed[-1, :14, 1] = 0.0
    assert classes_learned(mixed)
    # a class that most masks do not contain is judged on the masks that do
    rare = learned.copy()
    rare[-1, :25, 1] = 0.2  # empty masks: the soft Dice of an empty mask stays low for long
    present = np.ones((30, 2), bool)
    present[:25, 1] = False
    assert not classes_learned(rare) and classes_learned(rare, present)
    assert should_stop_early(history_of(stable_loss, rare), budget=20, present=present)
    absent_everywhere = present.copy()
    absent_everywhere[:, 1] = False
    assert classes_learned(rare, absent_everywhere)  # only class 0 is judged
    unsettled = stable_loss.copy()
    unsettled[-3:] = np.random.default_rng(1).random((3, 30))
    assert not should_stop_early(history_of(unsettled, learned), budget=20)


def test_training_stops_when_the_rule_says_so_and_resume_does_not_train_further(tmp_path, monkeypatch):
    # The rule itself is tested above; here every epoch counts as stable and learned, so the run must
    # stop exactly when half of its budget of 12 epochs is spent.
    import maskaudit.train as train_module

    monkeypatch.setattr(train_module, "STABLE_CORRELATION", -1.0)
    monkeypatch.setattr(train_module, "LEARNED_DICE", 0.0)
    data, _ = tiny_data(16)
    config = small_config(epochs=12)
    result = train(data, config, out_dir=tmp_path)
    assert result.history_loss.shape == (6, 16) and result.history_dice.shape == (6, 16, 2)
    assert result.config.epochs == 6 and result.epoch_budget == 12
    assert np.isfinite(result.history_loss).all()
    assert load_checkpoint(tmp_path / CHECKPOINT_NAME)["epoch"] == 6
    resumed = train(data, config, out_dir=tmp_path, resume=True)
    np.testing.assert_array_equal(resumed.history_loss, result.history_loss)
    for mine, theirs in zip(resumed.unet.state_dict().values(), result.unet.state_dict().values()):
        assert torch.equal(mine, theirs)
    full = train(data, small_config(epochs=12, early_stop=False))
    assert full.history_loss.shape[0] == 12
    np.testing.assert_array_equal(full.history_loss[:6], result.history_loss)


def rising_history(gains: list[float], samples: int = 12) -> TrainingHistory:
    """A history whose every sample's training Dice follows 0.5 + the running sum of ``gains``."""
    dice = 0.5 + np.cumsum(gains)[:, None, None] * np.ones((1, samples, 2))
    return history_of(np.tile(np.arange(samples, dtype=float), (len(gains), 1)), dice)


def test_a_default_budget_grows_only_while_the_segmenter_gains_and_up_to_its_limit():
    still_learning = rising_history([0.01] * 8)  # +0.03 per window of 3 epochs
    assert segmenter_gain(still_learning) == pytest.approx(0.03)
    assert epochs_after(still_learning, budget=8, limit=12) == 9   # spent, still learning: one more
    assert epochs_after(still_learning, budget=10, limit=15) == 10  # not spent yet
    assert epochs_after(rising_history([0.01] * 12), budget=8, limit=12) == 12  # the limit
    settled = rising_history([0.01] * 5 + [0.0005] * 6)  # +0.0015 per window
    assert epochs_after(settled, budget=8, limit=12) == 11  # ends where it is
    assert segmenter_gain(rising_history([0.01] * 5)) is None  # fewer than two windows
    # only the masks that contain a class judge it: an absent class whose Dice stays 0 changes nothing
    present = np.ones((12, 2), bool)
    present[:, 1] = False
    flat_second = rising_history([0.01] * 8)
    for _, values in flat_second.records:
        values["dice"][:, 1] = 0.0
    assert segmenter_gain(flat_second, present) == pytest.approx(0.03)


def test_a_default_budget_grows_in_training_and_resume_does_not_train_further(tmp_path, monkeypatch):
    import maskaudit.train as train_module

    monkeypatch.setattr(train_module, "default_epochs", lambda *args: 4)
    monkeypatch.setattr(train_module, "MIN_GAIN", -1.0)  # every window counts as a gain
    monkeypatch.setattr(train_module, "GAIN_WINDOW", 1)
    data, _ = tiny_data(16)
    result = train(data, small_config(epochs=None), out_dir=tmp_path)
    assert result.epoch_budget == 4 and result.config.epochs == 6 and len(result.history) == 6  # 1.5 x 4
    resumed = train(data, small_config(epochs=None), out_dir=tmp_path, resume=True)
    assert resumed.config.epochs == 6
    for mine, theirs in zip(resumed.unet.state_dict().values(), result.unet.state_dict().values()):
        assert torch.equal(mine, theirs)
    interrupted = tmp_path / "interrupted"  # stopped inside the extension (5 of 6 epochs), then resumed

    def ctrl_c_after_five(epoch, unet, qam, history):
        if epoch == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(data, small_config(epochs=None), out_dir=interrupted, on_epoch_end=ctrl_c_after_five)
    continued = train(data, small_config(epochs=None), out_dir=interrupted, resume=True)
    assert continued.config.epochs == 6
    np.testing.assert_array_equal(continued.history_loss, result.history_loss)
    for mine, theirs in zip(continued.unet.state_dict().values(), result.unet.state_dict().values()):
        assert torch.equal(mine, theirs)
    monkeypatch.setattr(train_module, "MIN_GAIN", 1.0)  # no window gains that much: the budget as it is
    assert train(data, small_config(epochs=None)).config.epochs == 4
    assert train(data, small_config(epochs=4)).config.epochs == 4  # a given number of epochs never grows


def test_the_result_is_the_average_of_the_epoch_end_weights(tmp_path):
    data, _ = tiny_data(16)
    snapshots = []

    def keep_training_weights(epoch, unet, qam, history):
        state = load_checkpoint(tmp_path / CHECKPOINT_NAME)
        snapshots.append({key: value.clone() for key, value in state["training_networks"]["unet"].items()})

    result = train(data, small_config(epochs=3), out_dir=tmp_path, on_epoch_end=keep_training_weights)
    name = "head.weight" if "head.weight" in snapshots[0] else next(
        key for key, value in snapshots[0].items() if value.is_floating_point())
    expected = 0.25 * snapshots[0][name] + 0.25 * snapshots[1][name] + 0.5 * snapshots[2][name]
    torch.testing.assert_close(result.unet.state_dict()[name], expected)
    assert not torch.equal(result.unet.state_dict()[name], snapshots[2][name])
    last = train(data, small_config(epochs=3, weight_average=0.0))  # 0: the last epoch's weights as they are
    for key, value in last.unet.named_parameters():  # (BatchNorm statistics are re-estimated for them)
        assert torch.equal(value, snapshots[2][key])


def test_a_checkpoint_without_training_networks_is_refused_for_resume(tmp_path):
    # 0.1 checkpoints kept one set of weights; resuming from them would restart the averages wrongly.
    data, _ = tiny_data(16)
    train(data, small_config(epochs=1), out_dir=tmp_path)
    state = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    del state["training_networks"]
    torch.save(state, tmp_path / CHECKPOINT_NAME)
    with pytest.raises(CheckpointError, match="does not fit this run"):
        train(data, small_config(epochs=2), out_dir=tmp_path, resume=True)


def test_a_checkpoint_with_dense_histories_is_refused_for_resume_in_one_line(tmp_path):
    # before maskaudit.history, checkpoints held (E, N) tables per key
    data, _ = tiny_data(16)
    result = train(data, small_config(epochs=1), out_dir=tmp_path)
    state = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    state["histories"] = {"loss": torch.from_numpy(result.history_loss), "dice": torch.from_numpy(result.history_dice)}
    torch.save(state, tmp_path / CHECKPOINT_NAME)
    with pytest.raises(CheckpointError, match="older maskaudit.*--overwrite"):
        train(data, small_config(epochs=2), out_dir=tmp_path, resume=True)


def test_a_checkpoint_whose_qam_has_first_stage_group_norms_is_refused_for_resume_in_one_line(tmp_path):
    # before a64a73c the QAM's first stage had GroupNorms; today's QAM cannot continue those weights
    data, _ = tiny_data(16)
    config = small_config(epochs=1)
    train(data, config, out_dir=tmp_path)
    state = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    old_qam = QualityAwarenessModule(state["image_channels"], len(state["classes"]), width=config.qam_width, stem_norm=True)
    state["training_networks"]["qam"] = old_qam.state_dict()
    torch.save(state, tmp_path / CHECKPOINT_NAME)
    with pytest.raises(CheckpointError, match="older maskaudit, whose QAM.*--overwrite"):
        train(data, small_config(epochs=2), out_dir=tmp_path, resume=True)


def test_resume_with_fewer_epochs_than_already_trained_is_refused(tmp_path):
    data, _ = tiny_data(16)
    train(data, small_config(epochs=3, early_stop=False), out_dir=tmp_path)
    with pytest.raises(CheckpointError, match="already trained 3 epochs"):
        train(data, small_config(epochs=2, early_stop=False), out_dir=tmp_path, resume=True)


def test_classes_present_reads_every_row_in_chunks():
    masks = np.zeros((7, 2, 4, 4), np.uint8)
    masks[[1, 5], 0, 2, 2] = 1
    masks[6, 1] = 1
    present = classes_present(masks, chunk=3)
    assert present.shape == (7, 2)
    assert present[:, 0].tolist() == [False, True, False, False, False, True, False]
    assert present[:, 1].tolist() == [False] * 6 + [True]


def test_batchnorm_statistics_are_re_estimated_for_the_final_weights():
    """Running statistics left by other weights (here: scrambled) are replaced by those of the given images."""
    from maskaudit.train import recalibrate_batchnorm

    torch.manual_seed(0)
    unet = UNet(1, 2, width=4)
    images = (np.random.default_rng(0).random((16, 1, 32, 32)) * 255).astype(np.uint8)
    masks = np.zeros((16, 2, 32, 32), np.uint8)
    batch = torch.from_numpy(images.astype(np.float32) / 255.0)
    with torch.no_grad():
        in_training_mode = unet.train()(batch)[0]
        for module in unet.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.fill_(5.0)
                module.running_var.fill_(0.01)
        scrambled = unet.eval()(batch)[0]
        recalibrate_batchnorm(unet, images, masks, batch_size=16, device=torch.device("cpu"))
        assert not unet.training  # the mode it was in
        recalibrated = unet(batch)[0]
    assert (scrambled - in_training_mode).abs().max() > 1.0
    # one batch of all 16 images: the statistics are that batch's (the unbiased variance: a small difference)
    assert torch.allclose(recalibrated, in_training_mode, atol=0.05)


def test_critic_positions_take_the_whole_batch_or_a_random_share_of_it():
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    np.testing.assert_array_equal(critic_positions(8, 1.0, rng), np.arange(8))
    assert rng.bit_generator.state == state  # the default draws nothing: runs stay as they were
    drawn = [critic_positions(8, 0.5, rng) for _ in range(200)]
    assert all(len(p) == 4 and len(set(p)) == 4 and list(p) == sorted(p) for p in drawn)
    counts = np.bincount(np.concatenate(drawn), minlength=8)
    assert counts.min() > 70  # every position about equally often (100 expected), not the first four
    assert len(critic_positions(9, 0.5, rng)) == 5
    with pytest.raises(ValueError, match="critic_share"):
        small_config(critic_share=0.0)


def test_the_critic_on_part_of_the_batch_ranks_those_samples_and_trains_both_networks():
    data, _ = tiny_data(8)
    config = small_config(critic_share=0.5)
    torch.manual_seed(0)
    unet, qam = UNet(1, 2, width=4), QualityAwarenessModule(1, 2, width=4)
    images = torch.from_numpy(data.images.astype(np.float32) / 255.0)
    masks = torch.from_numpy(data.masks.astype(np.float32))
    rows = torch.tensor([1, 4, 6, 7])
    corrupted = torch.zeros_like(masks[rows])  # every copy emptied: clearly worse than its given mask
    seen = []
    qam.register_forward_hook(lambda module, inputs, output: seen.append(len(inputs[0])))
    objective, *_ = weighted_loss(unet, qam, images, masks, config=config, amp_dtype=None, multilabel=True,
                                  corrupted=corrupted, changed=torch.ones(4, dtype=torch.bool), critic_rows=rows)
    assert seen == [12]  # the batch and the four copies, not twice the batch
    objective.backward()
    assert all(p.grad is not None for p in qam.parameters()) and any(p.grad.abs().sum() > 0 for p in unet.parameters())


def test_signals_with_a_store_keep_every_field_in_memory_mapped_files(tmp_path):
    """A volume scan's hundreds of thousands of rows: the signals of the masks and of their probes go to disk."""
    from maskaudit.signals import compute_signals, release_signals

    data, _ = tiny_data(12)
    result = train(data, small_config(epochs=1))
    in_memory = compute_signals(data, result, batch_size=5)
    stored = compute_signals(data, result, batch_size=5, store=tmp_path / "signals")
    for name in ("qam_features", "bottleneck", "dice", "softmin", "shape", "qam_score"):
        assert isinstance(getattr(stored, name), np.memmap) and not isinstance(getattr(in_memory, name), np.memmap)
        assert (tmp_path / "signals" / f"rows0-{name}.npy").exists()
    assert isinstance(stored.probes.dice, np.memmap) and (tmp_path / "signals" / "rows0-probes-dice.npy").exists()
    release_signals(stored)  # the pages leave this process, the values stay in the files
    release_signals(in_memory)  # in-memory fields are left alone
    for name in ("qam_features", "bottleneck", "dice", "softmin", "shape", "qam_score"):
        np.testing.assert_array_equal(getattr(stored, name), getattr(in_memory, name))
        np.testing.assert_array_equal(getattr(stored.probes, name), getattr(in_memory.probes, name))


def test_scoring_with_a_store_writes_the_evidence_to_memory_mapped_files(tmp_path, monkeypatch):
    """Hundreds of thousands of slices: the given masks' evidence goes to disk beside the signals, same values."""
    import maskaudit.scoring as scoring
    from maskaudit.signals import compute_signals

    data, _ = tiny_data(24)
    signals = compute_signals(data, train(data, small_config(epochs=1)), batch_size=8)
    in_memory = scoring.quality_scores(signals)
    monkeypatch.setattr(scoring, "EVIDENCE_CHUNK", 10)  # three chunks
    stored = scoring.quality_scores(signals, store=tmp_path / "signals")
    assert stored.evidence.keys() == in_memory.evidence.keys()
    for name, values in in_memory.evidence.items():
        assert isinstance(stored.evidence[name], np.memmap) and (tmp_path / "signals" / f"evidence-{name}.npy").exists()
        np.testing.assert_array_equal(stored.evidence[name], values)
    np.testing.assert_array_equal(stored.quality, in_memory.quality)


def test_scoring_in_chunks_and_from_a_sample_of_the_rows(monkeypatch):
    """Many slices: evidence computed a chunk at a time is the same; the dataset-level models may learn
    from a sample of the rows and still score every one."""
    import maskaudit.scoring as scoring
    from maskaudit.signals import compute_signals

    data, _ = tiny_data(24)
    signals = compute_signals(data, train(data, small_config(epochs=1)), batch_size=8)
    whole = scoring.quality_scores(signals)
    monkeypatch.setattr(scoring, "EVIDENCE_CHUNK", 5)
    chunked = scoring.quality_scores(signals)
    assert whole.evidence.keys() == chunked.evidence.keys()
    for name, values in whole.evidence.items():
        np.testing.assert_array_equal(chunked.evidence[name], values)
    np.testing.assert_array_equal(chunked.quality, whole.quality)
    monkeypatch.setattr(scoring, "FIT_ROWS", 16)
    sampled = scoring.quality_scores(signals)
    assert sampled.quality.shape == sampled.suspicion.shape == (24,) and np.isfinite(sampled.suspicion).all()
    assert len(sampled.fusion.probe_scores) == 16 and ((0 <= sampled.quality) & (sampled.quality <= 1)).all()
