"""Property-based tests: random ids, image shapes and kinds, and masks through ingestion
(find_dataset + prepare), the metrics and the scores.csv writer. No crash, every score in [0, 1],
every id and path back exactly as it went in."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from maskaudit.dataset import find_dataset
from maskaudit.export import ScoreRow, read_scores_csv, write_scores_csv
from maskaudit.metrics import boundary_distance, dice_per_class, shape_descriptors
from maskaudit.prepare import prepare

SIZE = 8
SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Ids that are file names: any Unicode but '/' and control characters (accents, CJK, spaces,
# leading dots, quotes, commas, ';', '<>'), at most 12 characters (<= 48 bytes). Not dots alone:
# "..png" has no extension for os.path.splitext, so no image library can write it.
ids = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc"), exclude_characters="/"),
    min_size=1,
    max_size=12,
).filter(lambda text: text.strip(".") != "")

# Any text a CSV cell may hold: newlines, carriage returns, tabs, quotes, separators, every Unicode plane.
cells = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",), exclude_characters="\0"),
                max_size=16)


@st.composite
def samples(draw, num_classes: int, multilabel: bool):
    """(image array, save kwargs, masks (K, H, W) bool) of one sample of random shape and kind."""
    height, width = draw(st.integers(1, 20)), draw(st.integers(1, 20))
    kind = draw(st.sampled_from(["grey8", "rgb8", "grey16", "float-nan"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "grey8":
        image = rng.integers(0, 256, (height, width), dtype=np.uint8)
    elif kind == "rgb8":
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    elif kind == "grey16":
        image = rng.integers(0, 65536, (height, width), dtype=np.uint16)
    else:
        image = rng.normal(0, 1e6, (height, width)).astype(np.float32)
        image[rng.random((height, width)) < 0.3] = rng.choice([np.nan, np.inf, -np.inf])
    density = draw(st.sampled_from([0.0, 0.3, 1.0]))
    if multilabel:
        masks = rng.random((num_classes, height, width)) < density
    else:  # exclusive labels: each pixel one class or background
        labels = rng.integers(1, num_classes + 1, (height, width)) * (rng.random((height, width)) < density)
        masks = np.stack([labels == k + 1 for k in range(num_classes)])
    return image, kind, masks


@st.composite
def datasets(draw):
    multilabel = draw(st.booleans())
    num_classes = draw(st.integers(1, 3))
    names = draw(st.lists(ids, min_size=1, max_size=4, unique=True))
    return multilabel, num_classes, names, [draw(samples(num_classes, multilabel)) for _ in names]


def write_dataset(root: Path, multilabel: bool, num_classes: int, names: list[str], pairs) -> None:
    classes = [f"c{k}" for k in range(num_classes)]
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    if not multilabel:
        (root / "classes.txt").write_text("\n".join(classes) + "\n", encoding="utf-8")
    for name, (image, kind, masks) in zip(names, pairs):
        if kind == "float-nan":
            Image.fromarray(image, mode="F").save(root / "images" / f"{name}.tif")
        else:
            Image.fromarray(image).save(root / "images" / f"{name}.png")
        if multilabel:
            for cls, mask in zip(classes, masks):
                (root / "masks" / cls).mkdir(exist_ok=True)
                Image.fromarray(mask.astype(np.uint8) * 255).save(root / "masks" / cls / f"{name}.png")
        else:
            labels = np.zeros(masks.shape[1:], np.uint8)
            for k, mask in enumerate(masks):
                labels[mask] = k + 1
            Image.fromarray(labels).save(root / "masks" / f"{name}.png")


def nearest(mask: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(mask.astype(np.uint8)).resize((SIZE, SIZE), Image.Resampling.NEAREST))


@SETTINGS
@given(datasets(), st.data())
def test_ingestion_metrics_and_csv_round_trip(dataset, data):
    multilabel, num_classes, names, pairs = dataset
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "ds"
        write_dataset(root, multilabel, num_classes, names, pairs)
        prepared = prepare(find_dataset(root), size=SIZE, cache_dir=Path(folder) / "out")
        index = prepared.index
        assert [sample.id for sample in index.samples] == sorted(names) and index.skipped == ()
        assert index.multilabel == multilabel and len(index.classes) == num_classes
        assert prepared.images.dtype == np.uint8 and prepared.images.shape[2:] == (SIZE, SIZE)
        position = {name: i for i, name in enumerate(sorted(names))}
        for name, (image, _, masks) in zip(names, pairs):
            row = position[name]
            assert tuple(prepared.original_sizes[row]) == image.shape[:2]
            expected = np.stack([nearest(mask) for mask in masks])
            np.testing.assert_array_equal(prepared.masks[row], expected)

        given_masks = np.asarray(prepared.masks, dtype=bool)
        other = given_masks[::-1]  # another sample's masks as the "prediction"
        dice = dice_per_class(other, given_masks)
        assert dice.shape == (len(names), num_classes) and ((dice >= 0) & (dice <= 1)).all()
        np.testing.assert_array_equal(dice_per_class(given_masks, given_masks), 1.0)
        for predicted, annotated in zip(other, given_masks):
            distance = boundary_distance(predicted, annotated)
            assert np.isfinite(distance).all() and (distance >= 0).all()
            assert (distance <= np.hypot(SIZE, SIZE)).all()
            assert (boundary_distance(annotated, annotated) == 0).all()
            assert np.isfinite(shape_descriptors(annotated)).all()

        quality = data.draw(st.lists(st.floats(0, 1), min_size=len(names), max_size=len(names)))
        rows = [
            ScoreRow(rank=rank, id=sample.id, image=sample.image.as_posix(),
                     mask=";".join(path.as_posix() for path in sample.masks), quality_score=quality[rank - 1],
                     suspect=quality[rank - 1] < 0.5, issue_type="ok", issue_classes=(), qam_score=0.0,
                     dice_vs_prediction=float(dice[rank - 1].mean()),
                     dice_per_class=tuple(float(value) for value in dice[rank - 1]),
                     boundary_distance=0.0, cluster=0, outlier=False, outlier_score=0.0)
            for rank, sample in enumerate(index.samples, start=1)
        ]
        write_scores_csv(Path(folder) / "scores.csv", rows)
        back = read_scores_csv(Path(folder) / "scores.csv")
        assert [row["id"] for row in back] == sorted(names)
        assert [row["image"] for row in back] == [row.image for row in rows]
        assert [row["mask"] for row in back] == [row.mask for row in rows]
        for written, read in zip(rows, back):
            value = float(read["quality_score"])
            assert 0.0 <= value <= 1.0 and abs(value - written.quality_score) <= 5e-7
            assert 0.0 <= float(read["dice_vs_prediction"]) <= 1.0


@settings(max_examples=150, deadline=None)
@given(st.lists(cells, min_size=1, max_size=5), st.lists(st.floats(0, 1), min_size=5, max_size=5))
def test_any_id_and_class_name_survive_the_csv(names, scores):
    rows = [
        ScoreRow(rank=rank, id=name, image=f"images/{name}.png", mask=f"masks/{name}.png",
                 quality_score=scores[rank - 1], suspect=False, issue_type="other", issue_classes=(name,),
                 qam_score=-1.5, dice_vs_prediction=1.0, dice_per_class=(1.0,), boundary_distance=0.0,
                 cluster=-1, outlier=True, outlier_score=scores[rank - 1])
        for rank, name in enumerate(names, start=1)
    ]
    with tempfile.TemporaryDirectory() as folder:
        write_scores_csv(Path(folder) / "scores.csv", rows)
        back = read_scores_csv(Path(folder) / "scores.csv")
    assert [row["id"] for row in back] == names
    assert [row["image"] for row in back] == [f"images/{name}.png" for name in names]
    assert [float(row["quality_score"]) for row in back] == [round(value, 6) for value in scores[: len(names)]]
