"""`maskaudit inspect`, maskaudit.summary and the example dataset generator."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from maskaudit.cli import main
from maskaudit.dataset import find_dataset
from maskaudit.errors import DatasetError
from maskaudit.summary import describe_dataset, format_description

JSRT = Path(__file__).resolve().parents[2] / "shared/datasets/jsrt"


@pytest.mark.skipif(not JSRT.is_dir(), reason="the shared JSRT dataset is not on this machine")
def test_inspect_jsrt_json():
    result = CliRunner().invoke(main, ["inspect", str(JSRT), "--json"])
    assert result.exit_code == 0, result.output
    description = json.loads(result.stdout)
    assert description["num_samples"] == 247
    assert description["layout"] == "B"
    assert len(description["classes"]) == 5 and "heart" in description["classes"]
    assert description["skipped"] == [] and description["image_sizes"] == {"256x256": 247}


def test_describe_counts_pixels_sizes_modes_and_empty_masks(make_layout_b, write_image):
    root = make_layout_b(3, classes=("heart", "lung"), size=(16, 16))
    for cls in ("heart", "lung"):
        write_image(root / f"masks/{cls}/case02.png", np.zeros((16, 16), dtype=np.uint8))
    write_image(root / "images/case01.png", np.zeros((16, 16, 3), dtype=np.uint8))
    description = describe_dataset(find_dataset(root))
    json.dumps(description)  # serialisable
    assert description["layout"] == "B" and description["num_samples"] == 3
    assert description["classes"] == ["heart", "lung"] and description["mask_suffix"] == ""
    # each class of case00/case01: 8 rows x 14 columns of 16 x 16; case02 empty
    assert description["class_pixel_fraction"] == pytest.approx({"heart": 2 * 112 / 768, "lung": 2 * 112 / 768})
    assert description["empty_masks"] == 1
    assert description["image_sizes"] == {"16x16": 3}
    assert description["image_modes"] == {"L": 2, "RGB": 1}
    assert description["skipped"] == [] and description["root"] == str(root)


def test_describe_adds_pairs_that_fail_to_decode(make_layout_a, write_image):
    root = make_layout_a(3, num_classes=2)
    (root / "classes.txt").write_text("lung\nheart\n")
    write_image(root / "masks/case01.png", np.full((16, 16), 9, dtype=np.uint8))
    (root / "images/notes.txt").write_text("x")
    description = describe_dataset(find_dataset(root), progress=False)
    assert description["num_samples"] == 2 and description["classes"] == ["lung", "heart"]
    assert description["skipped"] == [
        {"path": "images/case01.png", "reason": "masks/case01.png: label value 9 is not a class (classes are"
         ' 1, 2); fix the mask or name it in classes.json ({"9": "name", ...})'},
        {"path": "images/notes.txt", "reason": "not a supported image file (allowed: .dcm, .dicom, .jpeg, .jpg,"
         " .png, .tif, .tiff, DICOM)"},
    ]
    text = format_description(description)
    assert "Layout       A" in text and "lung" in text and "images/case01.png: masks/case01.png: label value 9" in text


def test_describe_raises_when_nothing_decodes(tmp_path, write_image):
    (tmp_path / "images").mkdir()
    (tmp_path / "images/a.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    write_image(tmp_path / "masks/a.png", np.zeros((4, 4), dtype=np.uint8))
    (tmp_path / "classes.txt").write_text("organ\n")
    with pytest.raises(DatasetError, match=r"no pair in .* can be decoded \(e.g. images/a.png: cannot identify"):
        describe_dataset(find_dataset(tmp_path))


def test_format_description_shortens_long_skipped_lists():
    description = {
        "root": "/data", "layout": "A", "mask_suffix": "_mask", "classes": ["a"], "num_samples": 1,
        "skipped": [{"path": f"images/{n}.txt", "reason": "not an image"} for n in range(25)],
        "class_pixel_fraction": {"a": 0.25}, "empty_masks": 0, "image_sizes": {"4x4": 1}, "image_modes": {"L": 1},
    }
    text = format_description(description)
    assert "Mask suffix  '_mask'" in text and "25.00 % of pixels" in text
    assert "images/19.txt" in text and "images/20.txt" not in text
    assert "... and 5 more (use --json for the full list)" in text


@pytest.mark.parametrize(("make_dir", "message"), [(False, "does not exist"), (True, "is empty")])
def test_cli_missing_or_empty_directory_exits_with_one_line(tmp_path, make_dir, message):
    target = tmp_path / "data"
    if make_dir:
        target.mkdir()
    result = CliRunner().invoke(main, ["inspect", str(target)])
    assert result.exit_code == DatasetError.exit_code
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("maskaudit: error: dataset directory") and message in result.stderr


def test_cli_text_output_and_mask_suffix_option(make_layout_a):
    root = make_layout_a(2, suffix="_seg")
    result = CliRunner().invoke(main, ["inspect", str(root), "--mask-suffix", "_seg"])
    assert result.exit_code == 0, result.output
    assert "Samples      2 usable, 0 skipped" in result.stdout and "Mask suffix  '_seg'" in result.stdout


# -- examples/make_example.py -------------------------------------------------------------------


def test_example_dataset_is_deterministic_and_has_known_bad_masks(example_module, tmp_path, hash_tree):
    first = example_module.make_example(tmp_path / "one", n=8, bad_fraction=0.25, seed=3)
    second = example_module.make_example(tmp_path / "two", n=8, bad_fraction=0.25, seed=3)
    assert hash_tree(first) == hash_tree(second)
    with open(first / "truth.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["id"] for row in rows] == [f"case{n:03d}" for n in range(1, 9)]
    bad = [row for row in rows if row["corrupted"] == "1"]
    assert len(bad) == 2 and all(row["corruption"] in example_module.CORRUPTIONS for row in bad)
    description = describe_dataset(find_dataset(first))
    assert description["num_samples"] == 8 and description["classes"] == ["heart", "left_lung", "right_lung"]
    assert description["image_sizes"] == {"128x128": 8}
    assert hash_tree(example_module.make_example(tmp_path / "three", n=8, seed=4)) != hash_tree(first)


def test_example_refuses_a_non_empty_directory_unless_forced(example_module, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty; pass --force"):
        example_module.make_example(out, n=2)
    assert example_module.main([str(out), "--n", "2"]) == 2
    assert example_module.main([str(out), "--n", "2", "--force", "--bad-fraction", "1"]) == 0
    assert (out / "keep.txt").read_text() == "mine"
    with open(out / "truth.csv", newline="") as handle:
        assert [row["corrupted"] for row in csv.DictReader(handle)] == ["1", "1"]
    with pytest.raises(ValueError, match="bad_fraction"):
        example_module.make_example(tmp_path / "new", bad_fraction=1.5)
