"""maskaudit.sampling: a fixed number of foreground-aware slices per epoch for volume datasets."""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from maskaudit.errors import CheckpointError
from maskaudit.formats.nnunet import find_nnunet
from maskaudit.prepare_volumes import prepare_volumes
from maskaudit.sampling import MIN_SAMPLED_EPOCHS, SliceSampler, slice_sampler
from maskaudit.train import DEFAULT_STEPS, TrainConfig, epoch_batches, ranking_stability, train

DEPTH = 40
FOREGROUND_SLICES = range(10, 18)  # 8 of each case's 40 slices hold the structure


def make_volumes(root: Path, cases: int) -> Path:
    """``cases`` 16 x 16 x 40 volumes whose label (one box) lies in slices 10-17 only."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "MRI"}, "numTraining": cases,
                                                   "labels": {"background": 0, "box": 1}, "file_ending": ".nii.gz"}))
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    rng = np.random.default_rng(0)
    for case in range(cases):
        labels = np.zeros((16, 16, DEPTH), np.uint8)
        labels[4 + case % 3 : 10 + case % 3, 5:11, FOREGROUND_SLICES.start : FOREGROUND_SLICES.stop] = 1
        image = (100 + 80 * labels + rng.normal(0, 5, labels.shape)).astype(np.float32)
        nib.save(nib.Nifti1Image(labels, affine), root / "labelsTr" / f"case_{case:03d}.nii.gz")
        nib.save(nib.Nifti1Image(image, affine), root / "imagesTr" / f"case_{case:03d}_0000.nii.gz")
    return root


@pytest.fixture(scope="module")
def sliced(tmp_path_factory):
    root = tmp_path_factory.mktemp("sampling")
    volumes = find_nnunet(make_volumes(root / "ds", 6))
    return prepare_volumes(volumes, size=16, axis=2, cache_dir=root / "cache")


def test_sampled_slices_come_more_often_from_slices_with_foreground(sliced):
    masks = sliced.data.masks  # 6 cases x 40 slices, 48 with foreground
    foreground = np.isin(sliced.slice_of, FOREGROUND_SLICES)
    sampler = slice_sampler(masks, batch_size=8, steps=40)  # 320 draws over 10 epochs: 32 of the 240 slices an epoch
    np.testing.assert_array_equal(sampler.foreground, foreground)
    assert (sampler.epochs, sampler.draws) == (MIN_SAMPLED_EPOCHS, 32)
    counts = np.zeros(len(masks), int)
    for epoch in range(200):
        rows = np.concatenate(sampler.epoch_batches(8, seed=0, epoch=epoch))
        assert len(rows) == len(np.unique(rows)) == 32  # distinct within an epoch
        counts[rows] += 1
    # 16 draws among the 48 foreground slices, 16 among the 224 slices not drawn yet (192 background)
    expected_background = 200 * 16 / 224
    expected_foreground = 200 * (16 + 16 * 32 / 224) / 48
    assert counts[~foreground].mean() == pytest.approx(expected_background, rel=0.05)
    assert counts[foreground].mean() == pytest.approx(expected_foreground, rel=0.05)
    assert counts[foreground].mean() > 5 * counts[~foreground].mean()
    assert (counts > 0).all()  # every slice is drawn sometime


def test_the_epochs_steps_do_not_grow_with_the_number_of_slices():
    budget = DEFAULT_STEPS * 8
    steps = []
    for num_slices in (9_270, 4 * 9_270, 8 * 9_270):
        masks = np.zeros((num_slices, 1, 4, 4), np.uint8)
        masks[::5, 0, 1:3, 1:3] = 1
        sampler = slice_sampler(masks, batch_size=8)
        batches = sampler.epoch_batches(8, seed=0, epoch=0)
        steps.append(len(batches))
        assert sampler.epochs == MIN_SAMPLED_EPOCHS and sampler.draws * sampler.epochs == budget
        assert sum(len(batch) for batch in batches) == sampler.draws
    assert steps == [DEFAULT_STEPS // MIN_SAMPLED_EPOCHS] * 3


@pytest.mark.parametrize("num_slices, draws, epochs", [(120, 120, 40), (800, 800, 10), (799, 799, 11), (801, 800, 10)])
def test_sets_of_up_to_800_slices_are_visited_whole(num_slices, draws, epochs):
    sampler = slice_sampler(np.zeros((num_slices, 1, 2, 2), np.uint8), batch_size=8)
    assert (sampler.draws, sampler.epochs) == (draws, epochs)


def test_a_small_set_is_visited_whole_each_epoch_as_in_a_2d_run():
    masks = np.zeros((120, 1, 4, 4), np.uint8)
    masks[:30, 0, 0, 0] = 1
    sampler = slice_sampler(masks, batch_size=8)
    assert sampler.draws == 120 and sampler.epochs == 40  # at most 40 epochs, as train.default_epochs
    ours = sampler.epoch_batches(8, seed=3, epoch=2, parts=2)
    theirs = epoch_batches(120, 8, seed=3, epoch=2, parts=2)
    assert len(ours) == len(theirs) and all(np.array_equal(a, b) for a, b in zip(ours, theirs))


def test_foreground_share_is_capped_by_the_slices_that_have_foreground():
    foreground = np.zeros(100, bool)
    foreground[:3] = True
    rows = SliceSampler(foreground=foreground, draws=20, epochs=10).epoch_rows(seed=0, epoch=0)
    assert len(np.unique(rows)) == 20 and set(range(3)) <= set(rows.tolist())
    with pytest.raises(ValueError, match="draws must be in 1..100"):
        SliceSampler(foreground=foreground, draws=101, epochs=10)


def test_training_with_a_sampler_records_only_the_drawn_slices(sliced):
    sampler = slice_sampler(sliced.data.masks, batch_size=8, steps=40)
    config = TrainConfig(size=16, width=4, qam_width=4, batch_size=8, epochs=2, precision="fp32", augment=False)
    result = train(sliced.data, config, sampler=sampler)
    for epoch in range(2):
        drawn = np.zeros(len(sliced.data.masks), bool)
        drawn[np.concatenate(sampler.epoch_batches(8, seed=0, epoch=epoch))] = True
        for history in (result.history_loss[epoch], result.history_t[epoch], result.history_weight[epoch]):
            assert np.isfinite(history[drawn]).all() and np.isnan(history[~drawn]).all()
        assert np.isnan(result.history_dice[epoch][~drawn]).all()
        np.testing.assert_array_equal(result.history.records[epoch][0], np.flatnonzero(drawn))  # nothing else kept
    assert result.epoch_budget == 2


def test_resume_continues_only_a_run_with_the_same_slice_sampler(sliced, tmp_path):
    config = TrainConfig(size=16, width=4, qam_width=4, batch_size=8, epochs=2, precision="fp32", augment=False)
    sampler = slice_sampler(sliced.data.masks, batch_size=8, steps=40)
    train(sliced.data, dataclasses.replace(config, epochs=1), out_dir=tmp_path, sampler=sampler)
    for other in (None, dataclasses.replace(sampler, draws=sampler.draws - 8)):
        with pytest.raises(CheckpointError, match="slices per epoch"):
            train(sliced.data, config, out_dir=tmp_path, resume=True, sampler=other)
    resumed = train(sliced.data, config, out_dir=tmp_path, resume=True, sampler=sampler)
    assert resumed.history_loss.shape == (2, len(sliced.data.masks))


def test_ranking_stability_compares_only_the_samples_drawn_in_both_windows():
    rng = np.random.default_rng(0)
    loss = np.tile(rng.random(50), (6, 1)).astype(np.float32)
    loss[:, 40:] = rng.random((6, 10))  # noise ...
    loss[:3, 40:] = np.nan  # ... on samples never drawn in the first window
    loss[rng.random((6, 50)) < 0.3] = np.nan  # and a third of the rest not drawn in some epochs
    loss[:, :3] = np.nan
    loss[0, :3] = 1.0  # samples drawn in one window only
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stability = ranking_stability(loss)
    assert stability == pytest.approx(1.0)
    assert ranking_stability(np.full((6, 50), np.nan)) is None
