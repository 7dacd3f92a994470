"""Benchmark helpers: corruptions, make_corrupted, synthetic_rgb, detection_metrics, cleanlab baseline."""

from __future__ import annotations

import csv
import hashlib
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage as ndi
from skimage.morphology import disk

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # benchmarks/ is a plain directory next to the package
    sys.path.insert(0, str(REPO))

from maskaudit.corruptions import (  # noqa: E402
    CORRUPTIONS,
    add_spurious,
    corrupt_arrays,
    delete_component,
    delete_structure,
    erode_dilate,
    plan_corruptions,
    sample_rng,
    swap_classes,
)
from benchmarks.detection_metrics import (  # noqa: E402
    detection_report,
    format_markdown_table,
    precision_at_k,
)
from benchmarks.make_corrupted import empty_as_shipped, load_dataset, make_corrupted, read_truth, without  # noqa: E402
from benchmarks.synthetic_rgb import make_synthetic_rgb  # noqa: E402

JSRT = REPO.parent / "shared" / "datasets" / "jsrt"
CLASSES = ("left_lung", "right_lung", "heart", "left_clavicle", "right_clavicle")


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def ellipse(shape, cy, cx, ry, rx) -> np.ndarray:
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


@pytest.fixture
def chest() -> np.ndarray:
    """A toy 5-class 'chest' at 96 px (K, H, W) bool: two lungs, heart, two thin clavicles."""
    s = (96, 96)
    m = np.stack(
        [
            ellipse(s, 50, 68, 26, 12),  # left_lung (image right)
            ellipse(s, 50, 28, 26, 12),  # right_lung
            ellipse(s, 62, 52, 10, 9),  # heart, touches the left lung a bit
            ellipse(s, 20, 66, 2, 12),  # left_clavicle, 5 px thick
            ellipse(s, 20, 30, 2, 12),  # right_clavicle
        ]
    )
    assert all(m[k].any() for k in range(5))
    return m


# -- corruptions -----------------------------------------------------------------------------


def test_dilate_grows_every_structure_and_keeps_it(chest):
    before = chest.copy()
    out = erode_dilate(chest, rng(), low=3, high=3, mode="dilate")
    np.testing.assert_array_equal(chest, before)  # input untouched
    assert out.dtype == bool and out.shape == chest.shape
    for k in range(5):
        assert out[k].sum() > chest[k].sum()
        assert not (chest[k] & ~out[k]).any()  # original inside the dilated one


def test_dilation_uses_a_disk_footprint():
    m = np.zeros((1, 41, 41), bool)
    m[0, 20, 20] = True
    out = erode_dilate(m, rng(), low=5, high=5, mode="dilate")
    np.testing.assert_array_equal(out[0, 15:26, 15:26], disk(5).astype(bool))
    assert out.sum() == disk(5).sum()


def test_erode_shrinks_but_never_removes_a_structure(chest):
    out = erode_dilate(chest, rng(), low=8, high=8, mode="erode")
    for k in range(5):
        assert 0 < out[k].sum() < chest[k].sum()
        assert not (out[k] & ~chest[k]).any()  # eroded inside the original
    # the 5 px thick clavicles would vanish at n=8: clamped, at least a few pixels kept
    assert out[3].sum() >= 8 and out[4].sum() >= 8


def test_erode_dilate_range_scaling_and_empty_classes(chest):
    chest = chest.copy()
    chest[2] = False
    seen = set()
    for seed in range(30):
        out = erode_dilate(chest, rng(seed), low=1, high=8)
        assert not out[2].any()
        grew = out[0].sum() > chest[0].sum()
        seen.add(grew)
        # all structures move in the same direction
        assert all((out[k].sum() > chest[k].sum()) == grew for k in (0, 1, 3, 4))
    assert seen == {True, False}  # both erosion and dilation happen
    # ref_size: 2 px at 256 px is 1 px at 128 px
    m = np.zeros((1, 128, 128), bool)
    m[0, 64, 64] = True
    assert erode_dilate(m, rng(), low=2, high=2, mode="dilate", ref_size=256).sum() == disk(1).sum()
    with pytest.raises(ValueError, match="low <= high"):
        erode_dilate(chest, rng(), low=5, high=2)
    with pytest.raises(ValueError, match=r"\(K, H, W\)"):
        erode_dilate(chest[0], rng(), low=1, high=2)


def test_delete_empties_exactly_one_class(chest):
    for seed in range(10):
        out = delete_structure(chest, rng(seed))
        changed = [k for k in range(5) if not np.array_equal(out[k], chest[k])]
        assert len(changed) == 1 and not out[changed[0]].any()
    with pytest.raises(ValueError, match="non-empty"):
        delete_structure(np.zeros((2, 8, 8), bool), rng())


def test_delete_component_removes_one_object():
    m = np.zeros((1, 40, 40), bool)
    m[0, 2:6, 2:6] = m[0, 20:30, 20:30] = m[0, 2:5, 30:35] = True
    out = delete_component(m, rng(3))
    assert ndi.label(out[0])[1] == 2 and not (out & ~m).any()


def test_spurious_adds_one_component_to_one_class_away_from_it(chest):
    for seed in range(10):
        out = add_spurious(chest, rng(seed))
        changed = [k for k in range(5) if not np.array_equal(out[k], chest[k])]
        assert len(changed) == 1
        k = changed[0]
        eight = np.ones((3, 3), bool)
        assert ndi.label(out[k], eight)[1] == ndi.label(chest[k], eight)[1] + 1
        assert not (chest[k] & ~out[k]).any()  # nothing removed
        new = out[k] & ~chest[k]
        assert ndi.distance_transform_edt(~chest[k])[new].min() > 2


def test_swap_exchanges_two_classes(chest):
    for seed in range(10):
        out = swap_classes(chest, rng(seed))
        changed = [k for k in range(5) if not np.array_equal(out[k], chest[k])]
        assert len(changed) == 2
        i, j = changed
        np.testing.assert_array_equal(out[i], chest[j])
        np.testing.assert_array_equal(out[j], chest[i])


def test_swap_prefers_sensible_pairs_and_needs_two_classes(chest):
    sensible = {frozenset(p) for p in [(0, 1), (3, 4), (2, 0)]}
    for seed in range(20):
        out = swap_classes(chest, rng(seed), classes=CLASSES)
        changed = frozenset(k for k in range(5) if not np.array_equal(out[k], chest[k]))
        assert changed in sensible
    out = swap_classes(chest, rng(), pairs=[("heart", "right_clavicle")], classes=CLASSES)
    np.testing.assert_array_equal(out[2], chest[4])
    with pytest.raises(ValueError, match="two classes"):
        swap_classes(chest[:1], rng())


def test_every_registered_kind_is_deterministic(chest):
    for kind, fn in CORRUPTIONS.items():
        a, detail_a = fn(chest, sample_rng(7, "JPCLN001"), classes=CLASSES)
        b, detail_b = fn(chest, sample_rng(7, "JPCLN001"), classes=CLASSES)
        assert a.shape == chest.shape and a.dtype == bool
        assert not np.array_equal(a, chest), kind
        np.testing.assert_array_equal(a, b)
        assert detail_a == detail_b and detail_a


def test_plan_counts_balance_and_order_independence():
    ids = [f"s{i:02d}" for i in range(40)]
    kinds = list(CORRUPTIONS)
    plan = plan_corruptions(ids, fraction=0.5, kinds=kinds, seed=1)
    assert sum(k is not None for k in plan.values()) == 20
    counts = [sum(v == k for v in plan.values()) for k in kinds]
    assert max(counts) - min(counts) <= 1
    assert plan == plan_corruptions(ids[::-1], fraction=0.5, kinds=kinds, seed=1)
    assert plan != plan_corruptions(ids, fraction=0.5, kinds=kinds, seed=2)
    with pytest.raises(ValueError, match="unknown corruption"):
        plan_corruptions(ids, fraction=0.5, kinds=["nope"], seed=0)


def test_corrupt_arrays_keeps_clean_samples(chest):
    masks = np.stack([chest] * 6).astype(np.uint8)
    ids = [f"s{i}" for i in range(6)]
    out, truth = corrupt_arrays(masks, ids, fraction=0.5, kinds=["delete"], seed=0, classes=CLASSES)
    assert out.dtype == np.uint8 and sum(c for c, _ in truth.values()) == 3
    for n, i in enumerate(ids):
        assert np.array_equal(out[n], masks[n]) != truth[i][0]


# -- make_corrupted ----------------------------------------------------------------------------


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def layout_b(tmp_path, chest) -> Path:
    """12 samples of the toy chest (shifted a little each), layout B, 0/255 PNGs."""
    root = tmp_path / "src"
    for n in range(12):
        sid = f"ID{n:02d}"
        m = np.roll(chest, shift=(n % 3, n % 4), axis=(1, 2))
        img = (np.random.default_rng(n).random((96, 96)) * 60 + m[:2].any(0) * 120).astype(np.uint8)
        (root / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / "images" / f"{sid}.png")
        for k, c in enumerate(CLASSES):
            (root / "masks" / c).mkdir(parents=True, exist_ok=True)
            Image.fromarray(m[k].astype(np.uint8) * 255).save(root / "masks" / c / f"{sid}.png")
    (root / "split.csv").write_text("id,split\n" + "".join(f"ID{n:02d},train\n" for n in range(12)))
    return root


def test_make_corrupted_layout_b(layout_b, tmp_path):
    before = tree_digest(layout_b)
    dst = tmp_path / "out" / "noisy"
    truth = make_corrupted(layout_b, dst, fraction=0.5, kinds=list(CORRUPTIONS), seed=3)
    assert tree_digest(layout_b) == before  # source untouched
    assert sum(c for c, _ in truth.values()) == 6 and len(truth) == 12
    assert read_truth(dst / "truth.csv") == truth
    assert sorted(p.name for p in dst.iterdir()) == ["images", "masks", "truth.csv"]
    assert not any(p.is_symlink() for p in dst.rglob("*"))
    for sid, (bad, _) in truth.items():
        assert (dst / "images" / f"{sid}.png").read_bytes() == (layout_b / "images" / f"{sid}.png").read_bytes()
        same = all(
            (dst / "masks" / c / f"{sid}.png").read_bytes() == (layout_b / "masks" / c / f"{sid}.png").read_bytes()
            for c in CLASSES
        )
        assert same != bad
        values = np.unique(np.array(Image.open(dst / "masks" / "heart" / f"{sid}.png")))
        assert set(values.tolist()) <= {0, 255}
    with open(dst / "truth.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert all(r["detail"] for r in rows if r["corrupted"] == "1")
    # deterministic: a second run gives the same bytes
    dst2 = tmp_path / "out" / "noisy2"
    make_corrupted(layout_b, dst2, fraction=0.5, kinds=list(CORRUPTIONS), seed=3)
    assert tree_digest(dst2) == tree_digest(dst)


def test_make_corrupted_refuses_unsafe_destinations_and_subsets(layout_b, tmp_path):
    with pytest.raises(ValueError, match="outside the source"):
        make_corrupted(layout_b, layout_b / "noisy", fraction=0.5, seed=0)
    with pytest.raises(ValueError, match="outside the source"):
        make_corrupted(layout_b, layout_b, fraction=0.5, seed=0)
    dst = tmp_path / "sub"
    truth = make_corrupted(layout_b, dst, fraction=0.25, kinds=["delete"], seed=0, ids=["ID00", "ID01", "ID02", "ID03"])
    assert sorted(truth) == ["ID00", "ID01", "ID02", "ID03"] and sum(c for c, _ in truth.values()) == 1
    assert len(list((dst / "images").iterdir())) == 4
    with pytest.raises(ValueError, match="not empty"):
        make_corrupted(layout_b, dst, fraction=0.25, seed=0)
    make_corrupted(layout_b, dst, fraction=0.0, seed=0, overwrite=True)
    assert len(list((dst / "images").iterdir())) == 12
    with pytest.raises(ValueError, match="not in"):
        make_corrupted(layout_b, tmp_path / "x", fraction=0.5, seed=0, ids=["nope"])
    assert not (tmp_path / "x").exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_synthetic_rgb_layout_a_and_its_corruption(tmp_path):
    src = tmp_path / "syn"
    ids = make_synthetic_rgb(src, n=6, size=64, seed=0)
    assert ids == [f"syn{i:04d}" for i in range(6)]
    img = np.array(Image.open(src / "images" / "syn0000.png"))
    mask = np.array(Image.open(src / "masks" / "syn0000.png"))
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    assert set(np.unique(mask).tolist()) == {0, 255} and ndi.label(mask > 0)[1] >= 2
    again = tmp_path / "syn2"
    make_synthetic_rgb(again, n=6, size=64, seed=0)
    assert tree_digest(again) == tree_digest(src)

    dst = tmp_path / "syn_noisy"
    truth = make_corrupted(src, dst, fraction=0.5, kinds=["delete_object", "spurious", "erode_dilate_5_13"], seed=0)
    assert sum(c for c, _ in truth.values()) == 3
    for sid, (bad, _) in truth.items():
        m = np.array(Image.open(dst / "masks" / f"{sid}.png"))
        assert set(np.unique(m).tolist()) <= {0, 255}
        assert (m.tobytes() != np.array(Image.open(src / "masks" / f"{sid}.png")).tobytes()) == bad
    with pytest.raises(ValueError, match="two classes"):
        make_corrupted(src, tmp_path / "bad", fraction=0.5, kinds=["swap"], seed=0)
    ds = load_dataset(dst, size=32)
    assert ds.layout == "A" and ds.images.shape == (6, 3, 32, 32) and ds.masks.shape == (6, 1, 32, 32)


def test_make_corrupted_on_four_jsrt_samples(tmp_path):
    ids = ["JPCLN001", "JPCLN002", "JPCLN003", "JPCLN004"]
    truth = make_corrupted(JSRT, tmp_path / "j", fraction=1.0, kinds=["erode_dilate_5_13", "swap"], seed=0, ids=ids)
    assert sorted(k for _, k in truth.values()) == ["erode_dilate_5_13"] * 2 + ["swap"] * 2
    ds = load_dataset(tmp_path / "j")
    assert ds.classes == tuple(sorted(CLASSES)) and ds.masks.shape == (4, 5, 256, 256)


# -- detection metrics --------------------------------------------------------------------------


def toy_truth() -> dict:
    kinds = ["delete", "swap", "delete", "spurious"]
    return {f"s{i}": (i < 4, kinds[i] if i < 4 else None) for i in range(12)}


def test_perfect_scores_give_one_everywhere():
    truth = toy_truth()
    scores = {i: (0.1 if bad else 0.9) + 0.01 * n for n, (i, (bad, _)) in enumerate(truth.items())}
    r = detection_report(truth, scores)
    for m in [r["overall"], *r["per_kind"].values()]:
        assert (m["auroc"], m["ap"], m["p_at_k"]) == (1.0, 1.0, 1.0)
    assert r["overall"]["n_bad"] == 4 and r["per_kind"]["delete"]["n_bad"] == 2
    assert r["per_kind"]["swap"]["n_clean"] == 8
    # the same scores read the other way round are the worst possible
    worst = detection_report(truth, scores, lower_is_worse=False)["overall"]
    assert worst["auroc"] == 0.0 and worst["p_at_k"] == 0.0


def test_ties_count_at_the_base_rate_and_bad_input_is_refused():
    truth = toy_truth()
    r = detection_report(truth, {i: 0.5 for i in truth})["overall"]
    assert r["auroc"] == 0.5 and math.isclose(r["p_at_k"], 4 / 12)
    assert precision_at_k(np.array([1, 0, 0, 1], bool), np.array([3.0, 2.0, 2.0, 1.0]), 2) == 0.5
    with pytest.raises(ValueError, match="no score"):
        detection_report(truth, {"s0": 1.0})
    with pytest.raises(ValueError, match="finite"):
        detection_report(truth, {i: math.nan for i in truth})


def test_markdown_table_compares_methods():
    truth = toy_truth()
    good = {i: 0.0 if bad else 1.0 for i, (bad, _) in truth.items()}
    flat = {i: 0.5 for i in truth}
    table = format_markdown_table(
        {"maskaudit": detection_report(truth, good), "cleanlab": detection_report(truth, flat)},
        extra_rows={"wall time (s)": {"maskaudit": 10.0, "cleanlab": 20.0}},
    )
    lines = table.strip().splitlines()
    assert lines[0] == "| subset | n bad | metric | maskaudit | cleanlab |"
    assert "| overall | 4 | AUROC | **1.000** | 0.500 |" in lines
    assert len(lines) == 2 + 3 * 4 + 1 and lines[-1].startswith("| wall time (s) |")


# -- cleanlab baseline ----------------------------------------------------------------------------


def test_label_index_map_smaller_class_wins():
    from benchmarks.cleanlab_pipeline import label_index_map

    m = np.zeros((1, 2, 8, 8), np.uint8)
    m[0, 0, :6, :6] = 1  # big
    m[0, 1, 4:6, 4:8] = 1  # small, overlaps the big one
    labels = label_index_map(m)
    assert labels[0, 0, 0] == 1 and labels[0, 5, 5] == 2 and labels[0, 7, 7] == 0


def test_cleanlab_pipeline_runs_on_a_tiny_dataset():
    from benchmarks.cleanlab_pipeline import run_cleanlab_pipeline

    g = np.random.default_rng(0)
    masks = np.zeros((6, 2, 32, 32), np.uint8)
    masks[:, 0, 4:16, 4:16] = 1
    masks[:, 1, 18:28, 18:28] = 1
    images = (masks.max(1, keepdims=True) * 150 + g.integers(0, 60, (6, 1, 32, 32))).astype(np.uint8)
    scores, seconds = run_cleanlab_pipeline(images, masks, folds=2, epochs=1, batch_size=4, width=4, seed=0)
    assert scores.shape == (6,) and np.all((scores >= 0) & (scores <= 1)) and seconds > 0
    again, _ = run_cleanlab_pipeline(images, masks, folds=2, epochs=1, batch_size=4, width=4, seed=0)
    np.testing.assert_allclose(scores, again, rtol=1e-5)


def test_empty_masks_are_never_drawn_for_corruption():
    ids = [f"s{i}" for i in range(10)]
    plan = plan_corruptions(ids, fraction=0.5, kinds=["shift"], seed=0, eligible=ids[:6])
    assert sum(kind is not None for kind in plan.values()) == 5
    assert all(plan[i] is None for i in ids[6:])
    with pytest.raises(ValueError, match="only 2 are eligible"):
        plan_corruptions(ids, fraction=0.5, kinds=["shift"], seed=0, eligible=ids[:2])


def test_an_empty_mask_as_shipped_is_left_out_only_where_masks_are_almost_always_present(tmp_path):
    """DDTI ships 7 empty masks among 654 one-nodule images: wrong masks, not clean ones. Where empty
    masks are common they are normal, and nothing is left out."""
    def dataset(name: str, empty: int) -> Path:
        root = tmp_path / name
        (root / "images").mkdir(parents=True)
        (root / "masks").mkdir()
        for i in range(20):
            Image.fromarray(np.full((16, 16), 80, np.uint8)).save(root / "images" / f"s{i:02d}.png")
            mask = np.zeros((16, 16), np.uint8)
            if i >= empty:
                mask[4:12, 4:12] = 255
            Image.fromarray(mask).save(root / "masks" / f"s{i:02d}.png")
        return root

    rare = make_corrupted(dataset("rare", 1), tmp_path / "rare-noisy", fraction=0.5, kinds=["delete"], seed=0)
    assert empty_as_shipped(tmp_path / "rare-noisy", rare) == {"s00"}  # the planted deletions are not counted
    assert "s00" not in without(rare, {"s00"}) and len(without(rare, {"s00"})) == 19
    common = make_corrupted(dataset("common", 6), tmp_path / "common-noisy", fraction=0.5, kinds=["delete"], seed=0)
    assert empty_as_shipped(tmp_path / "common-noisy", common) == set()


def test_shift_and_foreign_make_the_errors_they_name():
    from maskaudit.corruptions import get_corruption, pick_donor

    masks = np.zeros((3, 1, 64, 64), bool)
    masks[0, 0, 20:40, 20:40] = True
    masks[1, 0, 5:15, 40:60] = True
    shifted, detail = get_corruption("shift")(masks[0], np.random.default_rng(0))
    assert shifted.sum() == masks[0].sum() and not np.array_equal(shifted, masks[0]) and "shifted" in detail
    donor = pick_donor(masks, 0, np.random.default_rng(0))
    assert np.array_equal(donor, masks[1])  # the only other non-empty mask
    foreign, _ = get_corruption("foreign")(masks[0], np.random.default_rng(0), donor=donor)
    assert np.array_equal(foreign, masks[1])
    with pytest.raises(ValueError, match="donor"):
        get_corruption("foreign")(masks[0], np.random.default_rng(0))


def test_jagged_and_smooth_outlines_computed_on_the_box_equal_the_whole_image_ones(chest):
    """The critic's jagged and over-smoothed corruptions work on each structure's box (for speed):
    the same pixels as the whole-image distance transform and blur, near the image's border too."""
    from maskaudit.corruptions import REFERENCE_SIZE, _jagged, _scaled, _smooth

    border = np.zeros((1, 96, 96), bool)
    border[0, :30, 60:] = True  # cut by two sides of the image
    for masks in (chest, border):
        for seed in range(12):
            jagged, _ = _jagged(masks, rng(seed), low=1, high=6)
            smooth, _ = _smooth(masks, rng(seed), low=4, high=20)
            draw = rng(seed)
            n = _scaled(int(draw.integers(1, 7)), masks.shape, REFERENCE_SIZE)
            noise = ndi.gaussian_filter(draw.standard_normal(masks.shape[1:]), sigma=max(1.0, n / 2))
            noise *= n / noise.std()
            sigma = _scaled(int(rng(seed).integers(4, 21)), masks.shape, REFERENCE_SIZE)
            for k, mask in enumerate(masks):
                whole = ndi.distance_transform_edt(mask) - ndi.distance_transform_edt(~mask)
                np.testing.assert_array_equal(jagged[k], whole + noise > 0)
                np.testing.assert_array_equal(smooth[k], ndi.gaussian_filter(mask.astype(np.float32), sigma) > 0.5)
