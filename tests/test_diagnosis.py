import numpy as np
import pytest
from scipy import ndimage

from maskaudit.diagnosis import ISSUE_TYPES, diagnose, diagnose_batch

SIZE = 64


def disc(cy, cx, r, size=SIZE):
    yy, xx = np.mgrid[:size, :size]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def ball(r):
    return disc(r, r, r + 0.5, size=2 * r + 1)


@pytest.fixture
def predicted():
    """Three separate structures: disc (class 0), rectangle (class 1), smaller disc (class 2)."""
    p = np.zeros((3, SIZE, SIZE), dtype=bool)
    p[0] = disc(16, 16, 10)
    p[1, 38:58, 20:50] = True
    p[2] = disc(16, 48, 8)
    return p


def check(given, predicted, expected_type, expected_classes, **kw):
    issue, classes = diagnose(given, predicted, suspect=True, **kw)
    assert issue == expected_type, (issue, classes)
    assert classes == expected_classes
    return issue, classes


def test_issue_types_constant():
    assert ISSUE_TYPES == (
        "over-segmented",
        "under-segmented",
        "missing",
        "spurious",
        "class-confusion",
        "misplaced",
        "other",
        "ok",
    )


def test_not_suspect_is_ok(predicted):
    given = predicted.copy()
    given[2] = False  # even a clear error is "ok" when the sample is not suspect
    assert diagnose(given, predicted, suspect=False) == ("ok", ())


def test_suspect_but_identical_is_other_without_classes(predicted):
    assert diagnose(predicted.copy(), predicted, suspect=True) == ("other", ())


@pytest.mark.parametrize("k", [0, 1, 2])
def test_dilated_class_is_over_segmented(predicted, k):
    given = predicted.copy()
    given[k] = ndimage.binary_dilation(predicted[k], ball(4))
    check(given, predicted, "over-segmented", (k,))


@pytest.mark.parametrize("k", [0, 1])
def test_eroded_class_is_under_segmented(predicted, k):
    given = predicted.copy()
    given[k] = ndimage.binary_erosion(predicted[k], ball(4))
    check(given, predicted, "under-segmented", (k,))


@pytest.mark.parametrize("k", [0, 1, 2])
def test_deleted_class_is_missing(predicted, k):
    given = predicted.copy()
    given[k] = False
    check(given, predicted, "missing", (k,))


def test_one_of_two_components_deleted_is_missing(predicted):
    predicted = predicted.copy()
    predicted[0] |= disc(50, 8, 5)  # class 0 has two structures, like two lungs
    given = predicted.copy()
    given[0] &= ~disc(50, 8, 6)
    check(given, predicted, "missing", (0,))


def test_far_blob_is_spurious(predicted):
    given = predicted.copy()
    given[0] |= disc(56, 6, 4)
    check(given, predicted, "spurious", (0,))


def test_class_labelled_where_prediction_is_empty_is_spurious(predicted):
    predicted = predicted.copy()
    predicted[2] = False
    given = predicted.copy()
    given[2] = disc(16, 48, 8)
    check(given, predicted, "spurious", (2,))


def test_swapped_classes_are_class_confusion(predicted):
    given = predicted[[2, 1, 0]]
    issue, classes = diagnose(given, predicted, suspect=True)
    assert issue == "class-confusion"
    assert sorted(classes) == [0, 2]


def test_region_labelled_with_wrong_class_is_class_confusion(predicted):
    given = predicted.copy()
    given[0] |= given[2]  # the class-2 disc labelled as class 0 instead
    given[2] = False
    issue, classes = diagnose(given, predicted, suspect=True)
    assert issue == "class-confusion"
    assert sorted(classes) == [0, 2]


@pytest.mark.parametrize(("k", "axis"), [(0, 0), (1, 1)])
def test_shifted_class_is_misplaced(predicted, k, axis):
    given = predicted.copy()
    given[k] = np.roll(predicted[k], 10, axis=axis)
    check(given, predicted, "misplaced", (k,))


def test_structure_drawn_far_away_is_misplaced(predicted):
    given = predicted.copy()
    given[2] = disc(52, 8, 8)  # same disc, nowhere near the predicted one
    check(given, predicted, "misplaced", (2,))


def test_tiny_disagreement_is_other(predicted):
    given = predicted.copy()
    given[1, 38, 20] = False  # one pixel: annotation noise, no class worth naming
    assert diagnose(given, predicted, suspect=True) == ("other", ())


def test_errors_found_despite_noisy_prediction(predicted):
    # The segmenter is not perfect: every class of the prediction is 1 px too large.
    truth = predicted
    noisy = np.stack([ndimage.binary_dilation(m) for m in truth])
    given = truth.copy()
    given[1] = ndimage.binary_erosion(truth[1], ball(4))
    check(given, noisy, "under-segmented", (1,))
    given = truth.copy()
    given[0] = np.roll(truth[0], 10, axis=1)
    check(given, noisy, "misplaced", (0,))


def test_nested_spurious_blob_is_not_class_confusion():
    # Layout A, tumour (class 1) inside liver (class 0): a spurious tumour blob inside
    # the liver takes its pixels from the liver, yet it is not a liver/tumour mix-up.
    liver = disc(32, 32, 24)
    tumour = disc(24, 24, 5)
    predicted = np.stack([liver & ~tumour, tumour])
    given = predicted.copy()
    blob = disc(42, 40, 5)
    given[1] |= blob
    given[0] &= ~blob
    check(given, predicted, "spurious", (1,), multilabel=False)


def test_exclusive_layout_names_the_neighbour_that_lost_pixels():
    # Layout A: class 0 grew 6 px into class 1's territory.
    predicted = np.zeros((2, SIZE, SIZE), dtype=bool)
    predicted[0, 10:30, 10:30] = True
    predicted[1, 10:50, 30:60] = True
    given = predicted.copy()
    given[0, 10:30, 30:36] = True
    given[1, 10:30, 30:36] = False
    check(given, predicted, "over-segmented", (0, 1), multilabel=False)
    check(given, predicted, "over-segmented", (0,), multilabel=True)


def test_accepts_uint8_masks(predicted):
    given = predicted.copy()
    given[2] = False
    assert diagnose(given.astype(np.uint8), predicted.astype(np.uint8), suspect=True) == (
        "missing",
        (2,),
    )


def test_inputs_not_modified(predicted):
    given = predicted[[2, 1, 0]].copy()
    before_g, before_p = given.copy(), predicted.copy()
    diagnose(given, predicted, suspect=True)
    np.testing.assert_array_equal(given, before_g)
    np.testing.assert_array_equal(predicted, before_p)


def test_always_returns_a_known_type_and_valid_classes():
    rng = np.random.default_rng(0)
    for _ in range(20):
        g = ndimage.binary_opening(rng.random((3, 24, 24)) > 0.6, np.ones((1, 2, 2), bool))
        p = ndimage.binary_opening(rng.random((3, 24, 24)) > 0.6, np.ones((1, 2, 2), bool))
        issue, classes = diagnose(g, p, suspect=True, multilabel=bool(rng.integers(2)))
        assert issue in ISSUE_TYPES and issue != "ok"
        assert all(0 <= c < 3 for c in classes) and len(set(classes)) == len(classes)


@pytest.mark.parametrize(
    ("g", "p", "match"),
    [
        (np.zeros((3, 8, 8), bool), np.zeros((2, 8, 8), bool), r"\(K, H, W\) with equal sizes"),
        (np.zeros((8, 8), bool), np.zeros((8, 8), bool), r"shape \(K, H, W\)"),
        (np.zeros((1, 8, 8), float), np.zeros((1, 8, 8), bool), r"bool or integer"),
    ],
)
def test_diagnose_rejects_bad_input(g, p, match):
    with pytest.raises(ValueError, match=match):
        diagnose(g, p, suspect=True)


def test_diagnose_batch_matches_single_calls(predicted):
    deleted = predicted.copy()
    deleted[1] = False
    swapped = predicted[[2, 1, 0]]
    given = np.stack([predicted, deleted, swapped, deleted])
    batch_predicted = np.stack([predicted] * 4)
    suspect = np.array([True, True, True, False])
    result = diagnose_batch(given, batch_predicted, suspect=suspect)
    assert result == [
        diagnose(g, predicted, suspect=bool(s)) for g, s in zip(given, suspect)
    ]
    assert [issue for issue, _ in result] == ["other", "missing", "class-confusion", "ok"]


def test_diagnose_batch_rejects_bad_suspect_shape(predicted):
    batch = np.stack([predicted] * 2)
    with pytest.raises(ValueError, match=r"suspect must have shape \(N,\)"):
        diagnose_batch(batch, batch, suspect=np.array([True]))
    with pytest.raises(ValueError, match=r"\(N, K, H, W\)"):
        diagnose_batch(predicted, predicted, suspect=np.array([True, True, True]))
