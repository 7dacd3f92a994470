"""maskaudit.dataset.find_dataset: pairs, layout, classes, suffix, and every file it leaves out."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from maskaudit.dataset import Sample, find_dataset
from maskaudit.errors import DatasetError


def reasons(index) -> dict[str, str]:
    return {item.path: item.reason for item in index.skipped}


def test_layout_a_counts_classes_from_the_largest_label(make_layout_a):
    index = find_dataset(make_layout_a(3, num_classes=3))
    assert index.layout == "A" and not index.multilabel
    assert index.classes == ("class_1", "class_2", "class_3")
    assert [sample.id for sample in index.samples] == ["case00", "case01", "case02"]
    assert index.samples[0] == Sample("case00", Path("images/case00.png"), (Path("masks/case00.png"),))
    assert index.skipped == () and index.mask_suffix == "" and index.root.is_absolute()


def test_layout_a_binary_0_255_masks_are_one_class(tmp_path, write_image):
    mask = np.zeros((8, 8), dtype=np.uint8)
    mask[2:5, 2:5] = 255
    write_image(tmp_path / "images/a.png", np.zeros((8, 8), dtype=np.uint8))
    write_image(tmp_path / "masks/a.png", mask)
    assert find_dataset(tmp_path).classes == ("class_1",)


def test_layout_b_classes_are_sorted_folders_and_masks_follow_them(make_layout_b):
    index = find_dataset(make_layout_b(2, classes=("lung", "heart")))
    assert index.layout == "B" and index.multilabel
    assert index.classes == ("heart", "lung")
    assert index.samples[1].masks == (Path("masks/heart/case01.png"), Path("masks/lung/case01.png"))


@pytest.mark.parametrize("make", ["make_layout_a", "make_layout_b"])
def test_mask_suffix_is_detected_and_can_be_forced(request, make):
    root = request.getfixturevalue(make)(3, suffix="_mask")
    index = find_dataset(root)
    assert index.mask_suffix == "_mask" and len(index.samples) == 3
    with pytest.raises(DatasetError, match="no usable image/mask pairs"):
        find_dataset(root, mask_suffix="")


def test_forced_suffix_skips_masks_without_it(make_layout_a, write_image):
    root = make_layout_a(2, suffix="_seg")
    write_image(root / "masks/case00.png", np.zeros((16, 16), dtype=np.uint8))
    index = find_dataset(root, mask_suffix="_seg")
    assert len(index.samples) == 2
    assert reasons(index) == {"masks/case00.png": "mask name does not end with the mask suffix '_seg'"}


def test_classes_txt_names_layout_a_labels(make_layout_a):
    root = make_layout_a(2, num_classes=2)
    (root / "classes.txt").write_text("lung\n\nheart\nclavicle\n")
    assert find_dataset(root).classes == ("lung", "heart", "clavicle")


def test_classes_json_list_and_mapping(make_layout_a):
    root = make_layout_a(2)
    (root / "classes.json").write_text(json.dumps(["lung", "heart"]))
    assert find_dataset(root).classes == ("lung", "heart")
    (root / "classes.json").write_text(json.dumps({"0": "background", "1": "lung", "3": "heart"}))
    index = find_dataset(root)  # a mapping names exactly the values it lists (no channel for 2)
    assert index.classes == ("lung", "heart") and index.labels.values == (1, 3)


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        ("classes.json", "{not json", "is not valid JSON"),
        ("classes.json", '{"one": "lung"}', "non-integer key"),
        ("classes.json", "42", "unexpected structure"),
        ("classes.txt", "lung\nlung\n", "lung more than once"),
        ("classes.txt", "\n\n", "lists no classes"),
    ],
)
def test_invalid_classes_file(make_layout_a, name, text, match):
    root = make_layout_a(1)
    (root / name).write_text(text)
    with pytest.raises(DatasetError, match=match):
        find_dataset(root)


def test_layout_b_classes_file_orders_classes_and_must_match_folders(make_layout_b):
    root = make_layout_b(2, classes=("heart", "lung", "spine"))
    (root / "classes.txt").write_text("lung\nheart\n")
    index = find_dataset(root)
    assert index.classes == ("lung", "heart")
    assert index.samples[0].masks[0] == Path("masks/lung/case00.png")
    assert "not listed in the classes file" in reasons(index)["masks/spine"]
    (root / "classes.txt").write_text("lung\nliver\n")
    with pytest.raises(DatasetError, match="liver but masks/liver/ does not exist"):
        find_dataset(root)


# -- fatal problems -----------------------------------------------------------------------------


def test_missing_empty_and_incomplete_directories(tmp_path):
    with pytest.raises(DatasetError, match=r"nope does not exist; pass the folder"):
        find_dataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="empty is empty"):
        find_dataset(tmp_path / "empty")
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(DatasetError, match="is not a directory"):
        find_dataset(tmp_path / "file.png")
    (tmp_path / "half" / "images").mkdir(parents=True)
    with pytest.raises(DatasetError, match="has no masks/ folder"):
        find_dataset(tmp_path / "half")


def test_no_usable_pairs_names_the_directory_and_an_example(tmp_path, write_image):
    write_image(tmp_path / "images/a.png", np.zeros((4, 4), dtype=np.uint8))
    write_image(tmp_path / "masks/b.png", np.zeros((4, 4), dtype=np.uint8))
    with pytest.raises(DatasetError, match=f"no usable image/mask pairs in {tmp_path} .e.g. images/a.png: no mask"):
        find_dataset(tmp_path)


def test_mask_files_and_class_folders_together_are_ambiguous(make_layout_a):
    root = make_layout_a(1)
    (root / "masks/heart").mkdir()
    with pytest.raises(DatasetError, match="both mask files and class folders"):
        find_dataset(root)


# -- skipped files ------------------------------------------------------------------------------


def test_images_without_masks_and_masks_without_images(make_layout_a, write_image):
    root = make_layout_a(2)
    write_image(root / "images/lonely.png", np.zeros((16, 16), dtype=np.uint8))
    write_image(root / "masks/orphan.png", np.zeros((16, 16), dtype=np.uint8))
    index = find_dataset(root)
    assert [sample.id for sample in index.samples] == ["case00", "case01"]
    assert reasons(index) == {
        "images/lonely.png": "no mask: expected masks/lonely.png (or .tif)",
        "masks/orphan.png": "mask without an image: no images/orphan.*",
    }


def test_layout_b_pair_missing_a_class_mask_is_skipped(make_layout_b):
    root = make_layout_b(3, classes=("heart", "lung"))
    (root / "masks/lung/case01.png").unlink()
    (root / "masks/.DS_Store").write_bytes(b"\x00")
    index = find_dataset(root)
    assert [sample.id for sample in index.samples] == ["case00", "case02"]
    assert reasons(index) == {
        "images/case01.png": "missing mask for class lung: expected masks/lung/case01.png",
        "masks/.DS_Store": "file directly in masks/ is ignored: layout B keeps masks in masks/<class>/",
    }


def test_non_image_hidden_zero_byte_and_duplicate_files_are_skipped(make_layout_a, write_image):
    root = make_layout_a(2)
    (root / "images/notes.txt").write_text("annotator notes")
    (root / "images/.DS_Store").write_bytes(b"\x00\x01")
    (root / "images/zero.png").write_bytes(b"")
    (root / "masks/zero.png").write_bytes(b"")
    (root / "masks/case00.jpg").write_bytes(b"jpeg")
    (root / "images/sub").mkdir()
    write_image(root / "images/case01.jpg", np.zeros((16, 16), dtype=np.uint8))
    index = find_dataset(root)
    assert len(index.samples) == 2
    found = reasons(index)
    assert found["images/notes.txt"].startswith("not a supported image file")
    assert found["images/.DS_Store"].startswith("not a supported image file")
    assert found["images/zero.png"] == "empty file (0 bytes)"
    assert found["masks/zero.png"] == "empty file (0 bytes)"
    assert found["masks/case00.jpg"].startswith("not a supported mask file (allowed: .png, .tif, .tiff)")
    assert found["images/sub"] == "folder inside images/ is not searched"
    assert found["images/case01.png"] == "same name as images/case01.jpg; keep one of them"


def test_symlinks_leaving_the_root_are_not_followed(make_layout_a, tmp_path, write_image):
    root = make_layout_a(1)
    outside = write_image(tmp_path / "outside/secret.png", np.zeros((16, 16), dtype=np.uint8))
    os.symlink(outside, root / "images/secret.png")
    os.symlink(root / "images/case00.png", root / "images/inside.png")
    write_image(root / "masks/secret.png", np.zeros((16, 16), dtype=np.uint8))
    write_image(root / "masks/inside.png", np.zeros((16, 16), dtype=np.uint8))
    index = find_dataset(root)
    assert [sample.id for sample in index.samples] == ["case00", "inside"]
    assert reasons(index)["images/secret.png"] == "symlink that leaves the dataset root; not followed"


def test_odd_file_names_are_ordinary_samples(tmp_path, write_image):
    names = ["with space", "ünïcödé 肺", "<img src=x onerror=alert(1)>", "quote'\"&amp"]
    for name in names:
        write_image(tmp_path / "images" / f"{name}.png", np.zeros((4, 4), dtype=np.uint8))
        write_image(tmp_path / "masks" / f"{name}.png", np.ones((4, 4), dtype=np.uint8))
    index = find_dataset(tmp_path)
    assert sorted(sample.id for sample in index.samples) == sorted(names)
    assert index.skipped == ()


def test_dicom_images_by_extension_and_by_magic(tmp_path, write_dicom, write_image):
    write_dicom(tmp_path / "images/scan.dcm", np.zeros((4, 4)))
    write_dicom(tmp_path / "images/1.2.840.5", np.zeros((4, 4)))
    write_image(tmp_path / "masks/scan.png", np.zeros((4, 4), dtype=np.uint8))
    write_image(tmp_path / "masks/1.2.840.5.png", np.zeros((4, 4), dtype=np.uint8))
    index = find_dataset(tmp_path)
    assert [sample.id for sample in index.samples] == ["1.2.840.5", "scan"]


def test_corrupt_mask_while_counting_layout_a_classes_is_skipped(make_layout_a):
    root = make_layout_a(2)
    (root / "masks/case01.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    index = find_dataset(root)
    assert [sample.id for sample in index.samples] == ["case00"]
    assert reasons(index)["images/case01.png"].startswith("masks/case01.png: cannot identify")
