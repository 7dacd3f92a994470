"""COCO instances input: polygons and RLE decoded per category, bad annotations, annotation ids in scores.csv."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from pycocotools import mask as mask_utils

from maskaudit.cli import main
from maskaudit.formats import detect_format, open_dataset
from maskaudit.formats.coco import polygon_self_intersects
from maskaudit.summary import describe_source

HEIGHT, WIDTH = 24, 32


def _rle_block(top: int, left: int, size: int) -> tuple[np.ndarray, dict]:
    """A (H, W) bool square and its compressed COCO RLE (counts as text)."""
    mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
    mask[top : top + size, left : left + size] = True
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return mask, {"size": [HEIGHT, WIDTH], "counts": rle["counts"].decode("ascii")}


def make_coco(root: Path, images: int = 3) -> tuple[Path, dict]:
    """images/img_<i>.png + annotations.json: a polygon square of category 7 ("cell") and an RLE block of
    category 3 ("nucleus") in each image (so class order is nucleus, cell)."""
    coco = {"images": [], "annotations": [],
            "categories": [{"id": 7, "name": "cell"}, {"id": 3, "name": "nucleus"}]}
    for number in range(images):
        name = f"img_{number}.png"
        (root / "images").mkdir(parents=True, exist_ok=True)
        pixels = (np.add.outer(np.arange(HEIGHT), np.arange(WIDTH)) * 3 + number).astype(np.uint8)
        Image.fromarray(pixels).save(root / "images" / name)
        coco["images"].append({"id": 100 + number, "file_name": name, "height": HEIGHT, "width": WIDTH})
        x0, y0 = 4 + number, 3
        coco["annotations"].append({"id": 1000 + 2 * number, "image_id": 100 + number, "category_id": 7, "iscrowd": 0,
                                    "segmentation": [[x0, y0, x0 + 10, y0, x0 + 10, y0 + 8, x0, y0 + 8]]})
        _, rle = _rle_block(12, 20, 5)
        coco["annotations"].append({"id": 1001 + 2 * number, "image_id": 100 + number, "category_id": 3, "iscrowd": 1,
                                    "segmentation": rle})
    (root / "annotations.json").write_text(json.dumps(coco))
    return root, coco


def test_polygons_and_rle_become_one_mask_per_category(tmp_path):
    root, _ = make_coco(tmp_path / "coco")
    assert detect_format(root) == "coco"
    source = open_dataset(root)
    assert source.format == "coco" and source.index.multilabel
    assert source.index.classes == ("nucleus", "cell")  # ordered by category id
    assert [sample.id for sample in source.index.samples] == ["img_0", "img_1", "img_2"]
    assert source.annotation_ids["img_1"] == (1002, 1003)
    pair = source.reader(source.index, source.index.samples[1])
    assert pair.image.shape == (HEIGHT, WIDTH) and pair.masks.shape == (2, HEIGHT, WIDTH)
    expected_rle, _ = _rle_block(12, 20, 5)
    np.testing.assert_array_equal(pair.masks[0], expected_rle)
    cell = pair.masks[1]
    rows, columns = np.nonzero(cell)
    # the polygon x 5..15, y 3..11 covers about 10 x 8 pixels inside that box
    assert 70 <= cell.sum() <= 100 and rows.min() >= 3 and rows.max() <= 11 and columns.min() >= 5 and columns.max() <= 15


def test_uncompressed_rle_counts_are_decoded(tmp_path):
    root, coco = make_coco(tmp_path / "coco", images=1)
    mask, _ = _rle_block(2, 2, 6)
    flat = mask.flatten(order="F").astype(np.uint8)
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    counts = np.diff(np.concatenate([[0], changes])).tolist()
    coco["annotations"][1]["segmentation"] = {"size": [HEIGHT, WIDTH], "counts": counts}
    (root / "annotations.json").write_text(json.dumps(coco))
    source = open_dataset(root)
    np.testing.assert_array_equal(source.reader(source.index, source.index.samples[0]).masks[0], mask)


def test_bad_annotations_are_one_line_each_and_the_rest_is_scanned(tmp_path):
    root, coco = make_coco(tmp_path / "coco")
    square = [2, 2, 8, 2, 8, 8, 2, 8]
    coco["annotations"] += [
        {"id": 1, "image_id": 999, "category_id": 7, "segmentation": [square]},            # dangling image id
        {"id": 2, "image_id": 100, "category_id": 7, "segmentation": []},                  # empty
        {"id": 3, "image_id": 100, "category_id": 7, "segmentation": [[2, 2, 8, 8, 8, 2, 2, 8]]},  # bow tie
        {"id": 4, "image_id": 100, "category_id": 7, "segmentation": [[2, 2, 8, 2]]},       # 2 points
        {"id": 5, "image_id": 100, "category_id": 42, "segmentation": [square]},            # unknown category
    ]
    coco["images"].append({"id": 555, "file_name": "gone.png", "height": HEIGHT, "width": WIDTH})
    (root / "annotations.json").write_text(json.dumps(coco))
    source = open_dataset(root)
    reasons = {item.path: item.reason for item in source.index.skipped}
    assert "image id 999" in reasons["annotations.json#annotation 1"]
    assert "empty segmentation" in reasons["annotations.json#annotation 2"]
    assert "self-intersecting" in reasons["annotations.json#annotation 3"]
    assert "fewer than 3 points" in reasons["annotations.json#annotation 4"]
    assert "category id 42" in reasons["annotations.json#annotation 5"]
    assert "missing from images/" in reasons["images/gone.png"]
    assert len(reasons) == 6
    description = describe_source(source)
    assert description["num_samples"] == 3 and description["format"] == "coco"
    assert source.annotation_ids["img_0"] == (1000, 1001)  # the bad ones are not drawn
    text = CliRunner().invoke(main, ["inspect", str(root)]).output
    assert "Layout       COCO instances" in text and "Samples      3 usable, 6 skipped" in text
    assert "annotations.json#annotation 3: self-intersecting polygon" in text


def test_self_intersection_check():
    assert not polygon_self_intersects(np.array([[0, 0], [4, 0], [4, 4], [0, 4]], float))
    assert not polygon_self_intersects(np.array([[0, 0], [4, 0], [2, 3]], float))
    assert polygon_self_intersects(np.array([[0, 0], [4, 4], [4, 0], [0, 4]], float))
    assert not polygon_self_intersects(np.array([[0, 0], [6, 0], [6, 6], [3, 2], [0, 6]], float))  # concave


def test_an_invalid_coco_file_is_one_clear_error(tmp_path):
    root, _ = make_coco(tmp_path / "coco", images=1)
    (root / "annotations.json").write_text(json.dumps({"images": []}))
    result = CliRunner().invoke(main, ["inspect", str(root)])
    assert result.exit_code == 2
    assert "not a COCO instances file" in result.output and len(result.output.strip().splitlines()) == 1


@pytest.mark.slow
def test_scan_of_coco_writes_annotation_ids_and_layout_b_suggestions(tmp_path):
    root, _ = make_coco(tmp_path / "coco", images=8)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["scan", str(root), "--out", str(out), "--size", "32", "--epochs", "1",
                                       "--threshold", "1.0", "--no-report", "--quiet"])
    assert result.exit_code == 0, result.output
    with open(out / "scores.csv", newline="") as handle:
        rows = {row["id"]: row for row in csv.DictReader(handle)}
    assert rows["img_3"]["annotation_ids"] == "1006;1007" and rows["img_3"]["worst_slice"] == ""
    assert rows["img_3"]["mask"] == "annotations.json"
    assert (out / "suggested" / "masks" / "cell" / "img_3.png").is_file()
    assert (out / "suggested" / "masks" / "nucleus" / "img_3.png").is_file()
