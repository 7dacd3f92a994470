"""Per-class choice of the suggested mask (maskaudit.suggestion) on tiny hand-made arrays."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from maskaudit.suggestion import ClassPriors, class_priors, suggest_masks

SIZE = 48


def square(top: int, left: int, side: int) -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), bool)
    mask[top : top + side, left : left + side] = True
    return mask


def disc(cy: float, cx: float, radius: float) -> np.ndarray:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2


def probabilities_of(masks: np.ndarray, *, inside: float = 0.95, outside: float = 0.02) -> np.ndarray:
    return np.where(masks, inside, outside)


def priors(k: int, *, reliability: float = 0.9, floor: float = 0.85, presence: float = 1.0,
           max_components: int = 1) -> ClassPriors:
    return ClassPriors(reliability=np.full(k, reliability), agreement_floor=np.full(k, floor),
                       presence=np.full(k, presence), max_components=np.full(k, max_components))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def suggest(given, predicted, probabilities, prior, **options):
    return suggest_masks(given, predicted, probabilities, prior, **options)


def test_class_missing_from_the_prediction_but_given_is_kept():
    truth = np.stack([disc(24, 14, 8), disc(24, 34, 6)])
    predicted = truth.copy()
    predicted[1] = False                       # the segmenter misses class 1 in this image
    result = suggest(truth, predicted, probabilities_of(predicted), priors(2))
    np.testing.assert_array_equal(result.masks, truth)
    assert result.actions == ("keep", "keep")
    assert result.confidence == 0.0            # nothing changed: no correction to trust


def test_spurious_blob_is_removed_and_the_rest_of_the_channel_kept_as_drawn():
    truth = disc(20, 20, 9)
    predicted = ndimage.binary_dilation(truth)  # the segmenter's boundary is a pixel off ...
    given = truth | square(38, 38, 6)           # ... and the annotator added a blob far away
    result = suggest(given[None], predicted[None], probabilities_of(predicted[None]), priors(1))
    np.testing.assert_array_equal(result.masks[0], truth)  # the blob is gone, the boundary is the annotator's
    assert result.actions == ("components",)
    assert result.confidence > 0.8


def test_uniformly_dilated_class_is_brought_back_to_its_boundary():
    truth = disc(24, 24, 12)
    given = ndimage.distance_transform_edt(~truth) <= 4  # drawn 4 px too loose
    result = suggest(given[None], truth[None], probabilities_of(truth[None]), priors(1))
    assert result.actions == ("offset",)
    assert dice(result.masks[0], truth) > 0.97 > dice(given, truth)


def test_misdrawn_class_is_replaced_and_the_good_class_untouched():
    truth = np.stack([disc(16, 16, 8), disc(32, 32, 9)])
    given = truth.copy()
    given[1] = square(26, 20, 12)               # class 1 drawn with the wrong shape, overlapping the truth
    result = suggest(given, truth, probabilities_of(truth), priors(2))
    np.testing.assert_array_equal(result.masks[0], given[0])
    np.testing.assert_array_equal(result.masks[1], truth[1])
    assert result.actions == ("keep", "replace")


def test_deleted_class_is_added_from_the_prediction():
    truth = np.stack([disc(16, 16, 8), disc(32, 32, 9)])
    given = truth.copy()
    given[0] = False
    result = suggest(given, truth, probabilities_of(truth), priors(2))
    np.testing.assert_array_equal(result.masks, truth)
    assert result.actions == ("components", "keep")
    # unsure of it, the segmenter's structure still beats nothing for a class that is always there ...
    unsure = suggest(given, truth, probabilities_of(truth, inside=0.6), priors(2))
    np.testing.assert_array_equal(unsure.masks, truth)
    assert unsure.actions == ("replace", "keep")
    # ... but not for a class that is often absent
    rare = suggest(given, truth, probabilities_of(truth, inside=0.6), priors(2, presence=0.5))
    np.testing.assert_array_equal(rare.masks, given)


def test_swapped_classes_are_exchanged_back():
    truth = np.stack([disc(24, 12, 8), disc(24, 36, 8)])
    given = truth[::-1].copy()
    result = suggest(given, truth, probabilities_of(truth), priors(2))
    np.testing.assert_array_equal(result.masks, truth)


def test_a_hesitant_segmenter_does_not_move_the_annotators_boundary():
    given = disc(24, 24, 10)
    predicted = ndimage.distance_transform_edt(~given) <= 3
    probabilities = np.where(given, 0.95, np.where(predicted, 0.6, 0.02))  # unsure of the band it adds
    result = suggest(given[None], predicted[None], probabilities[None], priors(1, floor=0.95))
    np.testing.assert_array_equal(result.masks[0], given)
    assert result.actions == ("keep",)
    sure = suggest(given[None], predicted[None], np.where(predicted, 0.95, 0.02)[None], priors(1, floor=0.95))
    assert sure.actions == ("offset",) and dice(sure.masks[0], predicted) > 0.97


def test_a_class_the_segmenter_does_not_reproduce_is_left_as_given():
    truth = disc(24, 24, 10)
    given = ndimage.distance_transform_edt(~truth) <= 5
    result = suggest(given[None], truth[None], probabilities_of(truth[None]), priors(1, reliability=0.3))
    np.testing.assert_array_equal(result.masks[0], given)
    assert result.actions == ("unreliable",)


def test_confidence_follows_the_segmenters_certainty():
    truth = disc(24, 24, 10)
    given = truth | square(2, 36, 8)
    sure = suggest(given[None], truth[None], probabilities_of(truth[None], outside=0.01), priors(1))
    unsure = suggest(given[None], truth[None], probabilities_of(truth[None], outside=0.1), priors(1))
    np.testing.assert_array_equal(sure.masks, unsure.masks)
    assert 0.0 <= unsure.confidence < sure.confidence <= 1.0


def test_exclusive_layout_gives_each_pixel_to_one_class():
    truth = np.stack([square(8, 8, 16), square(8, 24, 16)])
    probabilities = np.stack([np.where(truth[0], 0.9, 0.02), np.where(truth[1], 0.9, 0.02)])
    given = np.stack([square(8, 8, 16), square(8, 24, 16)])
    given[0] = ndimage.binary_dilation(given[0], iterations=3)  # class 0 spills into class 1
    result = suggest(given, truth, probabilities, priors(2), multilabel=False)
    assert not (result.masks[0] & result.masks[1]).any()
    assert dice(result.masks[0], truth[0]) > 0.95 and dice(result.masks[1], truth[1]) > 0.95


def test_inputs_are_untouched_and_bad_shapes_are_refused():
    truth = disc(24, 24, 10)[None]
    given = truth | square(40, 40, 6)[None]
    given_copy, probabilities = given.copy(), probabilities_of(truth)
    suggest(given, truth, probabilities, priors(1))
    np.testing.assert_array_equal(given, given_copy)
    with pytest.raises(ValueError, match=r"\(K, H, W\)"):
        suggest(given, truth, probabilities[:, :10], priors(1))
    with pytest.raises(ValueError, match="priors"):
        suggest(given, truth, probabilities, priors(2))


def test_class_priors_describe_the_clean_samples():
    masks = np.zeros((8, 2, SIZE, SIZE), bool)
    masks[:, 0] = disc(24, 24, 10)
    masks[:4, 1] = square(2, 2, 8) | square(30, 30, 8)  # class 1: two structures, in half the samples
    dice_values = np.column_stack([np.linspace(0.8, 0.98, 8), np.full(8, 0.7)])
    clean = np.ones(8, bool)
    clean[0] = False                                     # the suspect with the lowest Dice is ignored
    result = class_priors(masks, dice_values, clean)
    assert result.reliability[0] == pytest.approx(np.median(dice_values[1:, 0]))
    assert result.agreement_floor[0] == pytest.approx(np.quantile(dice_values[1:, 0], 0.1))
    assert result.presence.tolist() == pytest.approx([1.0, 3 / 7])
    assert result.max_components.tolist() == [1, 2]
    with pytest.raises(ValueError, match=r"\(N, K, H, W\)"):
        class_priors(masks, dice_values[:, :1], clean)
