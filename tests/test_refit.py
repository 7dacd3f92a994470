"""maskaudit.refit: the segmenter trained on the kept masks only, and when a scan does not refit."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from maskaudit.checkpoint import add_refit, load_checkpoint
from maskaudit.metrics import dice_per_class
from maskaudit.predict import load_segmenter
from maskaudit.prepare import PreparedData
from maskaudit.refit import REFIT_EPOCHS, KeptSampler, refit_segmenter, refit_skip_reason
from maskaudit.models import UNet
from maskaudit.train import CHECKPOINT_NAME, TrainResult, train
from maskaudit.visuals import predict_probabilities
from maskaudit.inference import predicted_masks
from tests.test_train import small_config, tiny_data


def test_kept_sampler_draws_only_kept_positions_once_per_epoch():
    kept = np.array([1, 4, 5, 9, 12, 13, 20, 21, 30, 31, 33])
    sampler = KeptSampler(kept=kept, draws=len(kept), epochs=3)
    for epoch in range(3):
        batches = sampler.epoch_batches(4, seed=0, epoch=epoch)
        drawn = np.concatenate(batches)
        assert sorted(drawn.tolist()) == kept.tolist()
        assert all((np.diff(batch) > 0).all() for batch in batches)  # sorted, as the loader expects
    fewer = KeptSampler(kept=kept, draws=6, epochs=3)
    drawn = [np.concatenate(fewer.epoch_batches(4, seed=0, epoch=epoch)) for epoch in range(2)]
    assert all(len(rows) == 6 and set(rows.tolist()) <= set(kept.tolist()) for rows in drawn)
    assert drawn[0].tolist() != drawn[1].tolist()  # another share of the kept masks each epoch


def test_a_scan_refits_only_when_enough_masks_were_flagged():
    quality = np.full(100, 0.9)
    assert refit_skip_reason(quality, 0.5, 8) == "no mask was flagged"
    quality[:4] = 0.1  # 4 %: nearly the training set
    assert "only 4 of 100" in refit_skip_reason(quality, 0.5, 8)
    quality[:40] = 0.1
    assert refit_skip_reason(quality, 0.5, 8) is None
    assert refit_skip_reason(np.r_[np.full(20, 0.1), np.full(5, 0.9)], 0.5, 8) == "fewer than 8 masks were kept"


def shifted_copy(data: PreparedData, rows: np.ndarray, pixels: int) -> PreparedData:
    """``data`` with the masks of ``rows`` moved ``pixels`` to the right: a systematic labelling error."""
    masks = np.array(data.masks)
    masks[rows] = np.roll(masks[rows], pixels, axis=-1)
    return dataclasses.replace(data, masks=masks)


def test_refit_on_the_clean_masks_undoes_what_shifted_masks_taught(monkeypatch):
    # At a third of the training rate this tiny U-Net, still learning after 12 epochs, gains too little
    # from 10 steps to tell apart from noise; at the full rate the kept masks' effect is clear.
    monkeypatch.setattr("maskaudit.refit.REFIT_LR_SCALE", 1.0)
    clean, _ = tiny_data(32, size=32, seed=4)
    shifted = np.arange(0, 32, 2)  # half the masks are 4 px to the right of their objects
    noisy = shifted_copy(clean, shifted, 4)
    config = small_config(mode="baseline", epochs=12, early_stop=False, augment=False, width=8)
    trained = train(noisy, config)
    kept = np.setdiff1d(np.arange(32), shifted)
    refit = refit_segmenter(noisy, trained, kept, device="cpu")

    def dice_to_clean(unet) -> float:
        positions = list(range(32))
        predicted = np.stack([predicted_masks(working, multilabel=False)
                              for _, working, _ in predict_probabilities(noisy, unet, positions, precision="fp32")])
        return float(np.mean(dice_per_class(predicted, np.asarray(clean.masks, bool))))

    # the same epochs on every mask, shifted ones included: what more training alone would do
    everything = refit_segmenter(noisy, trained, np.arange(32), device="cpu")
    before, after, control = (dice_to_clean(unet) for unet in (trained.unet, refit.unet, everything.unet))
    assert after > before + 0.02 and after > control + 0.015, (before, after, control)  # seeds 0-4: +0.03-0.06, +0.025-0.046
    assert refit.samples == 16 and refit.epochs == REFIT_EPOCHS and refit.steps_per_epoch == 2
    # the scan's own network is left as it was: it scored the masks
    assert not all(torch.equal(a, b) for a, b in zip(trained.unet.state_dict().values(),
                                                      refit.unet.state_dict().values()))


def test_a_large_kept_set_is_refitted_within_the_step_budget(monkeypatch):
    monkeypatch.setattr("maskaudit.refit.REFIT_MAX_STEPS", 10)
    data, _ = tiny_data(160, size=32)
    unet = UNet(1, 2, width=4)  # layout B: one sigmoid per class
    refit = refit_segmenter(data, TrainResult(unet=unet, qam=None, config=small_config(mode="baseline")),
                            np.arange(160), device="cpu")
    assert refit.steps_per_epoch * refit.epochs == 10  # 20 steps an epoch would be 100


def test_predict_uses_the_refitted_segmenter_and_scoring_the_trained_one(tmp_path):
    data, _ = tiny_data(16, size=32)
    trained = train(data, small_config(mode="baseline", epochs=1), out_dir=tmp_path)
    checkpoint = tmp_path / CHECKPOINT_NAME
    refit = refit_segmenter(data, trained, np.arange(10), device="cpu")
    add_refit(checkpoint, refit.unet, {"samples": 10})
    assert load_checkpoint(checkpoint)["refit"] == {"samples": 10}

    def weights(unet):
        return torch.cat([value.flatten().float() for value in unet.state_dict().values()])

    assert torch.equal(weights(load_segmenter(checkpoint)[0]), weights(refit.unet))
    assert torch.equal(weights(load_segmenter(checkpoint, refit=False)[0]), weights(trained.unet))
    add_refit(checkpoint, None, {})  # a later scan that did not refit removes it
    assert torch.equal(weights(load_segmenter(checkpoint)[0]), weights(trained.unet))


@pytest.mark.parametrize("multilabel", [True, False])
def test_the_mean_segmenter_gives_the_mean_of_both_networks_probabilities(multilabel):
    from maskaudit.inference import class_probabilities
    from maskaudit.refit import MeanSegmenter

    torch.manual_seed(0)
    outputs = 2 if multilabel else 3
    first, second = UNet(1, outputs, width=4).eval(), UNet(1, outputs, width=4).eval()
    with torch.no_grad():  # make the two disagree: one is sure of class 1, the other unsure
        second.head.bias += torch.arange(outputs, dtype=torch.float32) * 3
        images = torch.rand(2, 1, 32, 32)
        mean = MeanSegmenter(first, second, multilabel=multilabel).eval()
        got = class_probabilities(mean(images)[0], multilabel=multilabel)
        want = (class_probabilities(first(images)[0], multilabel=multilabel)
                + class_probabilities(second(images)[0], multilabel=multilabel)) / 2
    assert torch.allclose(got, want, atol=1e-5)
    assert not torch.allclose(want, class_probabilities(first(images)[0], multilabel=multilabel), atol=1e-2)


def test_the_suggester_of_a_checkpoint_is_the_mean_only_after_a_refit(tmp_path):
    from maskaudit.predict import load_suggester
    from maskaudit.refit import MeanSegmenter

    data, _ = tiny_data(16, size=32)
    trained = train(data, small_config(mode="baseline", epochs=1), out_dir=tmp_path)
    checkpoint = tmp_path / CHECKPOINT_NAME
    assert isinstance(load_suggester(checkpoint)[0], UNet)
    add_refit(checkpoint, refit_segmenter(data, trained, np.arange(10), device="cpu").unet, {"samples": 10})
    assert isinstance(load_suggester(checkpoint)[0], MeanSegmenter)
