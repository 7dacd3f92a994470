"""Void pixels given the labels of the nearest labelled pixel, for the image evidence and the shapes; the
critic reads masks as given."""

from pathlib import Path

import numpy as np
import torch

from maskaudit.critic import probe_batch
from maskaudit.inference import run_networks
from maskaudit.models import QualityAwarenessModule, UNet
from maskaudit.void import drawn_as_given, fill_void, fill_void_batch, outline_band


def banded_square() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(1, 16, 16) mask of a square drawn as VOC does: class inside, a 2 px void band on its border.
    Returns (given masks, valid (16, 16), the square itself)."""
    square = np.zeros((16, 16), bool)
    square[4:12, 4:12] = True
    band = np.zeros_like(square)
    band[3:13, 3:13] = True
    band[5:11, 5:11] = False
    return (square & ~band)[None], ~band, square


def test_void_pixels_take_the_nearest_labels_so_the_outline_runs_through_the_band():
    given, valid, square = banded_square()
    filled = fill_void(given, valid)
    assert filled.shape == (1, 16, 16)
    np.testing.assert_array_equal(filled[0][valid], given[0][valid])  # labelled pixels keep their labels
    assert abs(int(filled.sum()) - int(square.sum())) <= 8  # about the square: the band split down its middle
    assert filled[0, 5:11, 5:11].all() and not filled[0, :3].any()


def test_masks_without_void_or_all_void_are_left_as_they_are():
    given, valid, _ = banded_square()
    assert fill_void(given, np.ones_like(valid)) is given
    assert fill_void(given, np.zeros_like(valid)) is given
    batch = np.stack([given, given])
    assert fill_void_batch(batch, None) is batch
    np.testing.assert_array_equal(fill_void_batch(batch, np.stack([valid, valid]))[1], fill_void(given, valid))


def test_the_critic_reads_the_masks_as_given_and_the_probes_corrupt_them(monkeypatch):
    """Void pixels are background to the critic, in scoring as in training; the probes it scores are
    corruptions of the masks as given, while the image evidence and the shapes read them filled."""
    import maskaudit.signals as signals_module
    from maskaudit.dataset import DatasetIndex, Sample
    from maskaudit.prepare import PreparedData
    from maskaudit.train import TrainConfig, TrainResult

    torch.manual_seed(0)
    unet, qam = UNet(1, 1, width=4).eval(), QualityAwarenessModule(1, 1, width=4).eval()
    given, valid, _ = banded_square()
    images = np.random.default_rng(0).integers(0, 255, (2, 1, 16, 16), dtype=np.uint8)
    masks = np.stack([given, given]).astype(np.uint8)
    samples = tuple(Sample(f"s{i}", Path(f"images/s{i}.png"), ()) for i in range(2))
    index = DatasetIndex(root=Path("/nonexistent"), layout="B", classes=("square",), samples=samples, skipped=(),
                         mask_suffix="")
    void = np.stack([~valid, ~valid]).astype(np.uint8)
    data = PreparedData(index, images, masks, np.full((2, 2), 16, np.int64), 16, void=void)
    result = TrainResult(unet=unet, qam=qam, config=TrainConfig(size=16, width=4, qam_width=4))
    seen = []
    real = signals_module._mask_signals
    monkeypatch.setattr(signals_module, "_mask_signals",
                        lambda images, masks, filled, *args, **kwargs: seen.append((masks, filled)) or
                        real(images, masks, filled, *args, **kwargs))
    signals = signals_module.compute_signals(data, result)
    (raw,) = run_networks(images, masks, unet, qam, multilabel=True)
    np.testing.assert_allclose(signals.qam_score, raw.qam_score, rtol=1e-5)
    (given_masks, given_filled), (probe_masks, probe_filled) = seen
    expected, _ = probe_batch(masks > 0, np.random.default_rng([0, 0]), classes=("square",))
    np.testing.assert_array_equal(probe_masks, expected)  # corruptions of the masks as given, not filled
    np.testing.assert_array_equal(probe_filled, fill_void_batch(probe_masks, np.stack([valid, valid])))
    np.testing.assert_array_equal(given_filled, fill_void_batch(given_masks, np.stack([valid, valid])))


def test_a_void_filled_probe_is_compared_with_the_prediction_on_labelled_pixels_only():
    """Probes are made from void-filled masks; the band they cover must not count as disagreement."""
    from maskaudit.evidence.segmenter import segmenter_evidence

    given, valid, square = banded_square()
    probabilities = np.where(square, 0.9, 0.1)[None, None]
    filled = fill_void(given, valid)[None]
    as_given = segmenter_evidence(probabilities, given[None], multilabel=True, valid=valid[None], filled=filled)
    as_filled = segmenter_evidence(probabilities, filled, multilabel=True, valid=valid[None], filled=filled)
    for name in ("dice", "boundary", "softmin", "size_ratio", "rim_disagreement", "object_miss"):
        np.testing.assert_allclose(as_filled[name], as_given[name], err_msg=name)
    assert as_given["dice"][0, 0] == 1.0


def test_size_and_rims_compare_whole_structures_with_the_prediction():
    """A band covers most of a thin structure: its labelled pixels alone would make it look 44 % too
    small; the void-filled mask has the predicted size, and the prediction drops across its outline."""
    from maskaudit.evidence.segmenter import segmenter_evidence

    given, valid, square = banded_square()
    probabilities = np.where(square, 0.9, 0.1)[None, None]
    evidence = segmenter_evidence(probabilities, given[None], multilabel=True, valid=valid[None],
                                  filled=fill_void(given, valid)[None])
    assert abs(evidence["size_ratio"][0, 0]) < 1e-9  # 64 px filled against 64 predicted
    assert evidence["rim_disagreement"][0, 0] < 0.25  # 0.1 + 0.1 on the rims either side of the outline
    labelled_only = segmenter_evidence(probabilities, given[None], multilabel=True, valid=valid[None])
    assert labelled_only["size_ratio"][0, 0] < np.log(0.6)  # 36 labelled px against 64 predicted


def test_objects_that_meet_the_void_are_not_judged_but_labelled_ones_are():
    """A VOC band along the outline: a prediction a little larger than the structure reaches past the
    band, and cut by it would leave its rim as an object nobody labelled. Components that meet the void
    are partly unknown and left out; an object the segmenter is sure of in labelled pixels counts."""
    from maskaudit.evidence.segmenter import segmenter_evidence

    square = np.zeros((64, 64), bool)
    square[12:52, 12:52] = True
    band = np.zeros_like(square)
    band[11:53, 11:53] = True
    band[13:51, 13:51] = False                       # 1 px either side of the outline
    predicted = np.zeros_like(square)
    predicted[10:54, 10:54] = True                   # 2 px larger all round
    speck = np.zeros_like(square)
    speck[56:60, 56:60] = True                       # the segmenter sure of an object nobody labelled
    probabilities = np.where(predicted | speck, 0.95, 0.05)[None, None]
    given = (square & ~band)[None, None]
    for void, expected in ((band, 1.0), (band | speck, 0.0)):
        evidence = segmenter_evidence(probabilities, given, multilabel=True, valid=~void[None],
                                      filled=fill_void(given[0], ~void)[None])
        assert evidence["object_miss"][0, 0] == expected


def test_the_segmenters_mask_gets_a_band_along_its_own_outline_where_the_given_void_is_a_band():
    """The critic learned masks drawn with a VOC band; the segmenter's mask, which it also scores,
    is drawn the same way, along its own outline (here a square shifted by 2 px), not the given one."""
    given, valid, square = banded_square()
    filled = fill_void(given, valid)
    predicted = np.roll(square, 2, axis=1)[None]
    drawn = drawn_as_given(predicted, filled, valid)
    band = outline_band(predicted)
    assert band[8, 5] and band[8, 6] and not band[8, 4] and not band[8, 7]  # 1 px either side of the outline
    np.testing.assert_array_equal(drawn, predicted & ~band)
    assert drawn[0, 5:11, 7:13].all() and not drawn[0, 4:12, 6].any()  # the band follows the prediction


def test_a_prediction_is_left_whole_without_void_or_where_the_void_is_not_a_band():
    given, valid, square = banded_square()
    predicted = square[None]
    assert drawn_as_given(predicted, given, np.ones_like(valid)) is predicted
    ignored = np.ones_like(valid)
    ignored[:3, :3] = False  # an ignored corner, away from every outline
    assert drawn_as_given(predicted, fill_void(given, ignored), ignored) is predicted


def test_the_critic_scores_the_segmenters_mask_drawn_with_the_band(monkeypatch):
    """compute_signals hands the critic the prediction with a band along its outline on a band-void sample."""
    import maskaudit.signals as signals_module
    from maskaudit.dataset import DatasetIndex, Sample
    from maskaudit.prepare import PreparedData
    from maskaudit.train import TrainConfig, TrainResult

    torch.manual_seed(0)
    unet, qam = UNet(1, 1, width=4).eval(), QualityAwarenessModule(1, 1, width=4).eval()
    given, valid, _ = banded_square()
    images = np.random.default_rng(0).integers(0, 255, (2, 1, 16, 16), dtype=np.uint8)
    samples = tuple(Sample(f"s{i}", Path(f"images/s{i}.png"), ()) for i in range(2))
    index = DatasetIndex(root=Path("/nonexistent"), layout="B", classes=("square",), samples=samples, skipped=(),
                         mask_suffix="")
    void = np.stack([~valid, np.zeros_like(valid)]).astype(np.uint8)  # the second sample has no void
    data = PreparedData(index, images, np.stack([given, given]).astype(np.uint8), np.full((2, 2), 16, np.int64), 16,
                        void=void)
    result = TrainResult(unet=unet, qam=qam, config=TrainConfig(size=16, width=4, qam_width=4))
    square = np.zeros((1, 1, 16, 16), bool)
    square[..., 4:12, 4:12] = True
    monkeypatch.setattr(signals_module, "predicted_masks", lambda probabilities, multilabel: np.repeat(square, 2, 0))
    scored = []
    monkeypatch.setattr(signals_module, "_critic_scores",
                        lambda qam, images, masks, device: scored.append(masks) or np.zeros(len(masks), np.float32))
    signals_module.compute_signals(data, result)
    prediction_masks = scored[0]
    np.testing.assert_array_equal(prediction_masks[0], square[0] & ~outline_band(square[0]))
    np.testing.assert_array_equal(prediction_masks[1], square[0])
