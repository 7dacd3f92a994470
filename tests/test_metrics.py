import numpy as np
import pytest
from scipy import ndimage
from hypothesis import given, settings
from hypothesis.extra.numpy import arrays

from maskaudit.metrics import (
    SHAPE_DESCRIPTOR_NAMES,
    boundary_distance,
    dice_per_class,
    shape_descriptor_names,
    shape_descriptors,
    signed_area_ratio,
)

D = len(SHAPE_DESCRIPTOR_NAMES)


def square(top, left, side, size=16):
    m = np.zeros((size, size), dtype=bool)
    m[top : top + side, left : left + side] = True
    return m


# --------------------------------------------------------------------------- dice


def test_dice_hand_computed():
    p = np.zeros((2, 2, 4, 4), dtype=bool)
    g = np.zeros_like(p)
    p[0, 0, :2] = True  # 8 px
    g[0, 0, :1] = True  # 4 px, inside p
    g[0, 1, 0, 0] = True  # class 1: only given
    p[1, 0] = g[1, 0] = True  # identical
    dice = dice_per_class(p, g)
    assert dice.shape == (2, 2) and dice.dtype == np.float64
    np.testing.assert_allclose(dice, [[2 * 4 / 12, 0.0], [1.0, 1.0]])


def test_dice_both_empty_is_one():
    empty = np.zeros((1, 3, 5, 5), dtype=bool)
    np.testing.assert_array_equal(dice_per_class(empty, empty), np.ones((1, 3)))


def test_dice_accepts_uint8_like_bool():
    rng = np.random.default_rng(0)
    p = rng.random((3, 2, 6, 6)) > 0.5
    g = rng.random((3, 2, 6, 6)) > 0.5
    np.testing.assert_array_equal(
        dice_per_class(p.astype(np.uint8), g.astype(np.uint8)), dice_per_class(p, g)
    )


def test_dice_many_samples_chunked_same_as_one_by_one():
    rng = np.random.default_rng(1)
    p = rng.random((70, 2, 4, 4)) > 0.5  # more than one internal chunk
    g = rng.random((70, 2, 4, 4)) > 0.5
    whole = dice_per_class(p, g)
    single = np.concatenate([dice_per_class(p[i : i + 1], g[i : i + 1]) for i in range(70)])
    np.testing.assert_array_equal(whole, single)


@settings(max_examples=25, deadline=None)
@given(
    arrays(bool, (2, 2, 5, 5)),
    arrays(bool, (2, 2, 5, 5)),
)
def test_dice_symmetric_and_bounded(p, g):
    dice = dice_per_class(p, g)
    np.testing.assert_array_equal(dice, dice_per_class(g, p))
    assert ((dice >= 0) & (dice <= 1)).all()
    np.testing.assert_array_equal(dice_per_class(p, p), np.ones((2, 2)))


@pytest.mark.parametrize(
    ("p", "g", "match"),
    [
        (np.zeros((2, 4, 4), bool), np.zeros((2, 4, 4), bool), r"shape \(N, K, H, W\)"),
        (np.zeros((1, 2, 4, 4), bool), np.zeros((1, 2, 4, 5), bool), r"equal sizes"),
        (np.zeros((1, 2, 4, 4)), np.zeros((1, 2, 4, 4), bool), r"dtype float64"),
    ],
)
def test_dice_rejects_bad_input(p, g, match):
    with pytest.raises(ValueError, match=match):
        dice_per_class(p, g)


# --------------------------------------------------------------------------- area ratio


def test_signed_area_ratio_sign_and_values():
    p = np.zeros((1, 4, 4, 4), dtype=bool)
    g = np.zeros_like(p)
    p[0, 0, :1] = True
    g[0, 0, :2] = True  # given twice the prediction: +0.5
    p[0, 1, :2] = True
    g[0, 1, :1] = True  # given half the prediction: -0.5
    g[0, 2, 0, 0] = True  # only given: +1
    ratio = signed_area_ratio(p, g)
    np.testing.assert_allclose(ratio, [[0.5, -0.5, 1.0, 0.0]])
    np.testing.assert_allclose(signed_area_ratio(g, p), -ratio)


def test_signed_area_ratio_rejects_mismatch():
    with pytest.raises(ValueError, match=r"\(N, K, H, W\)"):
        signed_area_ratio(np.zeros((1, 1, 4, 4), bool), np.zeros((1, 2, 4, 4), bool))


# --------------------------------------------------------------------------- boundary


def test_boundary_distance_identical_and_empty():
    m = np.stack([square(2, 2, 6), np.zeros((16, 16), bool)])
    np.testing.assert_array_equal(boundary_distance(m, m), [0.0, 0.0])


def test_boundary_distance_one_empty_is_image_diagonal():
    p = np.stack([square(2, 2, 6), np.zeros((16, 16), bool)])
    g = np.stack([square(2, 2, 6), square(4, 4, 3)])
    np.testing.assert_allclose(boundary_distance(p, g), [0.0, np.hypot(16, 16)])
    np.testing.assert_allclose(boundary_distance(g, p), [0.0, np.hypot(16, 16)])


def test_boundary_distance_concentric_squares():
    # Boundaries 5 px apart along the sides, sqrt(50) from the outer corners.
    p = square(8, 8, 10, size=32)[None]
    g = square(3, 3, 20, size=32)[None]
    (d,) = boundary_distance(p, g)
    assert 5.0 <= d <= np.sqrt(50)
    assert boundary_distance(g, p)[0] == pytest.approx(d)


def test_boundary_distance_grows_with_shift():
    p = square(4, 4, 8, size=24)[None]
    d = [boundary_distance(p, np.roll(p, s, axis=2))[0] for s in (1, 3, 6)]
    assert 0 < d[0] < d[1] < d[2]


def test_boundary_distance_in_mm_scales_rows_and_columns_by_their_own_pixel_size():
    p, below, right = (np.zeros((1, 8, 8), bool) for _ in range(3))
    p[0, 2, 2] = below[0, 4, 2] = right[0, 2, 4] = True  # one-pixel masks 2 px apart
    assert boundary_distance(p, below, sampling=(5.0, 3.0))[0] == pytest.approx(10.0)  # 2 rows of 5 mm
    assert boundary_distance(p, right, sampling=(5.0, 3.0))[0] == pytest.approx(6.0)  # 2 columns of 3 mm
    square_p = square(4, 4, 8, size=24)[None]
    shifted = np.roll(square_p, 3, axis=2)
    assert boundary_distance(square_p, shifted, sampling=(0.5, 0.5))[0] == pytest.approx(
        0.5 * boundary_distance(square_p, shifted)[0])
    empty = np.zeros((1, 8, 8), bool)
    assert boundary_distance(p, empty, sampling=(5.0, 3.0))[0] == pytest.approx(np.hypot(40.0, 24.0))  # the diagonal


def test_boundary_distance_rejects_batch_shape():
    with pytest.raises(ValueError, match=r"shape \(K, H, W\)"):
        boundary_distance(np.zeros((1, 1, 4, 4), bool), np.zeros((1, 1, 4, 4), bool))


# --------------------------------------------------------------------------- shape


def test_shape_descriptors_square_two_blobs_and_empty():
    masks = np.zeros((3, 16, 16), dtype=bool)
    masks[0, 0:4, 0:4] = True  # one convex square in the top-left corner
    masks[1, 0:2, 0:2] = True
    masks[1, 10:12, 10:12] = True  # two components
    desc = shape_descriptors(masks)
    assert desc.shape == (3 * D,) and desc.dtype == np.float64
    table = dict(zip(shape_descriptor_names(["sq", "two", "none"]), desc))
    assert table["sq.area_fraction"] == pytest.approx(16 / 256)
    assert table["sq.centroid_y"] == pytest.approx(2 / 16)
    assert table["sq.centroid_x"] == pytest.approx(2 / 16)
    assert table["sq.n_components"] == 1
    assert table["sq.solidity"] == pytest.approx(1.0)
    assert table["sq.extent"] == pytest.approx(1.0)
    assert table["two.n_components"] == 2
    assert table["two.centroid_y"] == pytest.approx(table["two.centroid_x"])
    assert table["two.solidity"] < 0.2  # the hull spans the gap between the blobs
    assert table["two.extent"] == pytest.approx(8 / 144)
    np.testing.assert_array_equal(desc[2 * D :], [0.0, 0.5, 0.5, 0.0, 0.0, 0.0])


def test_shape_descriptors_l_shape_is_not_convex():
    m = np.zeros((1, 20, 20), dtype=bool)
    m[0, 2:18, 2:6] = True
    m[0, 14:18, 2:18] = True
    area_fraction, _, _, n_components, solidity, extent = shape_descriptors(m)
    assert n_components == 1
    assert 0.4 < solidity < 0.8
    assert extent == pytest.approx(area_fraction * 400 / 256)


def test_solidity_uses_the_hull_of_every_pixel_square():
    """The hull is taken from each row's outer corners only: the same area as the hull of the corners
    of every pixel of the mask (a brute-force reference), on random shapes, single pixels and lines."""
    from scipy.spatial import ConvexHull

    from maskaudit.metrics import _convex_hull_area

    rng = np.random.default_rng(0)
    for trial in range(200):
        size = int(rng.choice([5, 24, 64]))
        mask = ndimage.gaussian_filter(rng.standard_normal((size, size)), rng.uniform(0.5, 6)) > rng.uniform(0, 1.5)
        if trial % 10 == 0:
            mask = np.zeros((size, size), bool)
            mask[rng.integers(0, size), rng.integers(0, size) :] = True  # one pixel or a horizontal line
        if not mask.any():
            continue
        ys, xs = np.nonzero(mask)
        corners = np.concatenate([np.stack([ys + dy, xs + dx], axis=1) for dy in (0, 1) for dx in (0, 1)])
        assert _convex_hull_area(mask) == pytest.approx(ConvexHull(corners.astype(float)).volume, abs=1e-9)


def test_shape_descriptor_names_order():
    names = shape_descriptor_names(["a", "b"])
    assert len(names) == 2 * D
    assert names[0] == "a.area_fraction" and names[D] == "b.area_fraction"


def test_shape_descriptors_rejects_2d():
    with pytest.raises(ValueError, match=r"shape \(K, H, W\)"):
        shape_descriptors(np.zeros((4, 4), bool))


def test_softmin_label_quality_is_pulled_down_by_one_small_confidently_wrong_object():
    from maskaudit.metrics import softmin_label_quality

    given = np.zeros((1, 64, 64), dtype=bool)
    given[0, 10:40, 10:40] = True
    agreeing = np.where(given, 0.95, 0.05)
    assert softmin_label_quality(agreeing, given) == pytest.approx(0.95, abs=1e-6)
    missing_object = agreeing.copy()
    missing_object[0, 50:54, 50:54] = 0.97  # the model sees a small object the label lacks
    assert softmin_label_quality(missing_object, given) < 0.2


def test_signed_distance_on_the_mask_box_equals_the_whole_image_transform_within_its_reach():
    """maskaudit.distance computes on the mask's box: the same numbers wherever they are within reach."""
    from scipy import ndimage

    from maskaudit.distance import signed_distance

    rng = np.random.default_rng(0)
    for trial in range(300):
        shape = tuple(rng.integers(5, 50, 2))
        mask = ndimage.gaussian_filter(rng.standard_normal(shape), rng.uniform(0.5, 4)) > rng.uniform(0, 1.2)
        if trial % 10 == 0:  # a single pixel
            mask = np.zeros(shape, bool)
            mask[rng.integers(0, shape[0]), rng.integers(0, shape[1])] = True
        reach = float(rng.choice([0, 1, 3, 12, 14.5]))
        if not mask.any():  # scipy's transform of an image without zeros is not a distance
            continue
        whole = ndimage.distance_transform_edt(mask) - ndimage.distance_transform_edt(~mask)
        got = signed_distance(mask, reach=reach)
        within = whole >= -reach
        np.testing.assert_array_equal(got[within], whole[within])
        assert (got[~within] < -reach).all()
    assert (signed_distance(np.zeros((6, 6), bool), reach=3) < -3).all()
