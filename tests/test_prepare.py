"""maskaudit.prepare: decode + resize once, cache in the output dir, move broken pairs to skipped."""

from __future__ import annotations

import builtins
import json
import os
from pathlib import Path

import numpy as np
import pytest

import maskaudit.prepare as prepare_module
from maskaudit.dataset import find_dataset
from maskaudit.errors import DatasetError, OutputDirError
from maskaudit.prepare import load_original, prepare
from maskaudit.summary import describe_dataset


def reasons(index) -> dict[str, str]:
    return {item.path: item.reason for item in index.skipped}


def forbid_decoding(monkeypatch) -> None:
    def fail(*args, **kwargs):
        raise AssertionError("a cached pair was decoded again")

    monkeypatch.setattr(prepare_module, "read_pair", fail)
    monkeypatch.setattr(prepare_module, "probe_image", fail)


def count_decoding(monkeypatch) -> list[str]:
    decoded: list[str] = []
    real = prepare_module.read_pair

    def counting(index, sample, **kwargs):
        decoded.append(sample.id)
        return real(index, sample, **kwargs)

    monkeypatch.setattr(prepare_module, "read_pair", counting)
    return decoded


def test_layout_b_shapes_dtypes_and_overlapping_masks(make_layout_b, tmp_path):
    index = find_dataset(make_layout_b(3, classes=("heart", "lung"), size=(16, 16)))
    data = prepare(index, size=8, cache_dir=tmp_path / "out")
    assert data.images.shape == (3, 1, 8, 8) and data.images.dtype == np.uint8
    assert data.masks.shape == (3, 2, 8, 8) and data.masks.dtype == np.uint8
    assert set(np.unique(data.masks).tolist()) == {0, 1}
    assert (data.masks[:, 0] & data.masks[:, 1]).any()  # multi-label: classes overlap
    assert data.original_sizes.tolist() == [[16, 16]] * 3 and data.size == 8
    assert data.index.samples == index.samples
    assert data.images[0, 0, 0, 0] == 200 and data.images[0, 0, 0, -1] == 40  # area-resized halves


def test_layout_a_labels_become_one_channel_per_class(make_layout_a, tmp_path):
    index = find_dataset(make_layout_a(2, num_classes=3, size=(12, 12)))
    data = prepare(index, size=12, cache_dir=tmp_path / "out")
    assert data.masks.shape == (2, 3, 12, 12)
    assert (data.masks.sum(axis=1) <= 1).all()  # layout A: at most one class per pixel
    np.testing.assert_array_equal(data.masks[0, 0, 0], [0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0])


def test_images_of_different_sizes_are_resized_and_originals_kept(tmp_path, write_image):
    for name, (height, width) in {"small": (10, 20), "large": (40, 30)}.items():
        mask = np.zeros((height, width), dtype=np.uint8)
        mask[:, : width // 2] = 255
        write_image(tmp_path / "ds/images" / f"{name}.png", np.full((height, width), 90, dtype=np.uint8))
        write_image(tmp_path / "ds/masks/organ" / f"{name}.png", mask)
    index = find_dataset(tmp_path / "ds")
    data = prepare(index, size=16, cache_dir=tmp_path / "out")
    assert data.original_sizes.tolist() == [[40, 30], [10, 20]]  # sorted ids: large, small
    assert (data.images == 90).all()
    expected = np.zeros((16, 16), dtype=np.uint8)
    expected[:, :8] = 1
    np.testing.assert_array_equal(data.masks[0, 0], expected)
    np.testing.assert_array_equal(data.masks[1, 0], expected)
    image, masks, _ = load_original(index, "small")
    assert image.shape == (10, 20, 3) and image.dtype == np.uint8
    assert masks.shape == (1, 10, 20) and masks.dtype == bool and masks[0, :, :10].all()
    with pytest.raises(KeyError, match="nope"):
        load_original(index, "nope")


def test_one_colour_image_makes_three_channels(make_layout_b, write_image, tmp_path):
    root = make_layout_b(2)
    colour = np.zeros((16, 16, 4), dtype=np.uint8)
    colour[..., 0], colour[..., 3] = 255, 255
    write_image(root / "images/case01.png", colour)
    data = prepare(find_dataset(root), size=16, cache_dir=tmp_path / "out")
    assert data.images.shape == (2, 3, 16, 16)
    assert (data.images[0, 0] == data.images[0, 1]).all()  # grey replicated
    assert (data.images[1, 0] == 255).all() and (data.images[1, 1] == 0).all()


def test_second_run_reads_the_cache_without_decoding(make_layout_b, tmp_path, monkeypatch):
    index = find_dataset(make_layout_b(3))
    first = prepare(index, size=8, cache_dir=tmp_path / "out")
    forbid_decoding(monkeypatch)
    second = prepare(index, size=8, cache_dir=tmp_path / "out")
    assert isinstance(second.images, np.memmap)
    np.testing.assert_array_equal(second.images, first.images)
    np.testing.assert_array_equal(second.masks, first.masks)
    np.testing.assert_array_equal(second.original_sizes, first.original_sizes)


def test_a_changed_or_added_file_is_decoded_again_alone(make_layout_b, write_image, tmp_path, monkeypatch):
    root = make_layout_b(3)
    prepare(find_dataset(root), size=8, cache_dir=tmp_path / "out")
    write_image(root / "images/case01.png", np.full((16, 16), 7, dtype=np.uint8))
    os.utime(root / "images/case01.png", ns=(1, 1))  # a different mtime even on coarse clocks
    for cls in ("heart", "lung"):
        write_image(root / f"masks/{cls}/new.png", np.zeros((16, 16), dtype=np.uint8))
    write_image(root / "images/new.png", np.full((16, 16), 9, dtype=np.uint8))
    decoded = count_decoding(monkeypatch)
    data = prepare(find_dataset(root), size=8, cache_dir=tmp_path / "out")
    assert sorted(decoded) == ["case01", "new"]
    assert [sample.id for sample in data.index.samples] == ["case00", "case01", "case02", "new"]
    assert (data.images[1] == 7).all() and (data.images[3] == 9).all()
    assert len(list((tmp_path / "out").glob("*.npy"))) == 2  # the old generation is gone


def test_cached_grey_rows_widen_when_a_colour_image_arrives(make_layout_b, write_image, tmp_path, monkeypatch):
    root = make_layout_b(2)
    first = prepare(find_dataset(root), size=8, cache_dir=tmp_path / "out")
    write_image(root / "images/zz.png", np.zeros((16, 16, 3), dtype=np.uint8))
    for cls in ("heart", "lung"):
        write_image(root / f"masks/{cls}/zz.png", np.zeros((16, 16), dtype=np.uint8))
    decoded = count_decoding(monkeypatch)
    data = prepare(find_dataset(root), size=8, cache_dir=tmp_path / "out")
    assert decoded == ["zz"] and data.images.shape == (3, 3, 8, 8)
    np.testing.assert_array_equal(data.images[:2, 2], first.images[:, 0])


def test_a_different_size_has_its_own_cache(make_layout_b, tmp_path):
    index = find_dataset(make_layout_b(2))
    assert prepare(index, size=8, cache_dir=tmp_path / "out").images.shape[-1] == 8
    assert prepare(index, size=4, cache_dir=tmp_path / "out").images.shape[-1] == 4
    assert prepare(index, size=8, cache_dir=tmp_path / "out").images.shape[-1] == 8


def test_a_crash_while_writing_leaves_the_old_cache_trusted(make_layout_b, write_image, tmp_path, monkeypatch):
    root = make_layout_b(3)
    first = prepare(find_dataset(root), size=8, cache_dir=tmp_path / "out")
    expected = np.array(first.images)
    files_before = sorted(path.name for path in (tmp_path / "out").iterdir())
    write_image(root / "images/case02.png", np.full((16, 16), 1, dtype=np.uint8))
    os.utime(root / "images/case02.png", ns=(1, 1))

    def crash(*args, **kwargs):
        raise RuntimeError("power cut")

    monkeypatch.setattr(prepare_module, "_resize_pair", crash)
    with pytest.raises(RuntimeError, match="power cut"):
        prepare(find_dataset(root), size=8, cache_dir=tmp_path / "out")
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == files_before  # no temp files
    monkeypatch.undo()
    root_unchanged = find_dataset(root)
    (root / "images/case02.png").unlink()
    for cls in ("heart", "lung"):
        (root / f"masks/{cls}/case02.png").unlink()
    forbid_decoding(monkeypatch)  # rows of the first run are still trusted
    again = prepare(find_dataset(root), size=8, cache_dir=tmp_path / "out")
    np.testing.assert_array_equal(again.images, expected[:2])
    assert len(root_unchanged.samples) == 3


def test_a_corrupt_manifest_is_ignored(make_layout_b, tmp_path):
    index = find_dataset(make_layout_b(2))
    first = np.array(prepare(index, size=8, cache_dir=tmp_path / "out").images)
    (tmp_path / "out/prepared-8.json").write_text('{"version": 1, "size": 8, "images": "gone.npy"')
    np.testing.assert_array_equal(prepare(index, size=8, cache_dir=tmp_path / "out").images, first)
    manifest = json.loads((tmp_path / "out/prepared-8.json").read_text())
    manifest["keys"] = manifest["keys"][:1]  # disagrees with the arrays
    (tmp_path / "out/prepared-8.json").write_text(json.dumps(manifest))
    np.testing.assert_array_equal(prepare(index, size=8, cache_dir=tmp_path / "out").images, first)


def test_cache_dir_inside_the_dataset_is_refused(make_layout_b):
    root = make_layout_b(1)
    with pytest.raises(OutputDirError, match="inside the dataset"):
        prepare(find_dataset(root), size=8, cache_dir=root / "cache")
    assert not (root / "cache").exists()
    with pytest.raises(ValueError, match="positive integer"):
        prepare(find_dataset(root), size=0, cache_dir=root.parent / "out")


# -- pairs that fail to decode ------------------------------------------------------------------


def test_bad_pairs_are_skipped_with_reasons_and_failures_are_cached(
    make_layout_b, write_image, tmp_path, monkeypatch
):
    root = make_layout_b(6)
    write_image(root / "masks/lung/case01.png", np.zeros((12, 16), dtype=np.uint8))  # size mismatch
    grey = np.zeros((16, 16), dtype=np.uint8)
    grey[0, :3] = (0, 128, 255)
    write_image(root / "masks/heart/case02.png", grey)  # not binary
    noise = np.random.default_rng(0).integers(0, 255, (16, 16), dtype=np.uint8)
    data = write_image(root / "images/case03.png", noise).read_bytes()
    (root / "images/case03.png").write_bytes(data[: len(data) // 2])  # truncated
    write_image(root / "masks/heart/case04.png", np.zeros((16, 16), dtype=np.uint8))
    write_image(root / "masks/lung/case04.png", np.zeros((16, 16), dtype=np.uint8))  # all empty: allowed
    index = find_dataset(root)
    data = prepare(index, size=8, cache_dir=tmp_path / "out")
    assert [sample.id for sample in data.index.samples] == ["case00", "case04", "case05"]
    found = reasons(data.index)
    assert found["images/case01.png"] == (
        "masks/lung/case01.png: mask is 12x16 but its image is 16x16; masks must have the size of their image"
    )
    assert found["images/case02.png"] == (
        "masks/heart/case02.png: layout B masks must be binary (0/255 or 0/1), found values 0, 128, 255"
    )
    assert found["images/case03.png"].startswith("truncated or corrupt image")
    assert data.masks[1].sum() == 0 and data.images.shape[0] == 3
    forbid_decoding(monkeypatch)
    again = prepare(index, size=8, cache_dir=tmp_path / "out")
    assert reasons(again.index) == found


def test_layout_a_label_above_the_class_count_is_skipped(make_layout_a, tmp_path):
    root = make_layout_a(2, num_classes=3)
    (root / "classes.txt").write_text("lung\nheart\n")
    index = find_dataset(root)
    with pytest.raises(DatasetError, match="no pair .* could be decoded"):
        prepare(index, size=8, cache_dir=tmp_path / "out")
    assert not list((tmp_path / "out").glob("*.npy"))
    (root / "classes.txt").write_text("lung\nheart\nspine\n")
    assert prepare(find_dataset(root), size=8, cache_dir=tmp_path / "out").masks.shape == (2, 3, 8, 8)
    data = describe_dataset(find_dataset(make_layout_a(2, num_classes=5, name="five")))
    assert data["classes"] == [f"class_{k}" for k in range(1, 6)]


def test_layout_a_label_reason(make_layout_a, write_image, tmp_path):
    root = make_layout_a(2, num_classes=2)
    (root / "classes.txt").write_text("lung\nheart\n")
    write_image(root / "masks/case01.png", np.full((16, 16), 7, dtype=np.uint8))
    data = prepare(find_dataset(root), size=8, cache_dir=tmp_path / "out")
    assert reasons(data.index) == {
        "images/case01.png": "masks/case01.png: label value 7 is not a class (classes are 1, 2); fix the mask"
        ' or name it in classes.json ({"7": "name", ...})'
    }


def test_layout_a_binary_masks_become_class_1(tmp_path, write_image):
    mask = np.zeros((8, 8), dtype=np.uint8)
    mask[:4] = 255
    write_image(tmp_path / "ds/images/a.png", np.zeros((8, 8), dtype=np.uint8))
    write_image(tmp_path / "ds/masks/a.png", mask)
    data = prepare(find_dataset(tmp_path / "ds"), size=8, cache_dir=tmp_path / "out")
    assert data.masks[0, 0].tolist() == [[1] * 8] * 4 + [[0] * 8] * 4


def test_unreadable_and_oversized_files_are_skipped(make_layout_b, write_image, tmp_path, monkeypatch):
    root = make_layout_b(3, size=(16, 16))
    write_image(root / "images/case02.png", np.zeros((20, 20), dtype=np.uint8))
    for cls in ("heart", "lung"):
        write_image(root / f"masks/{cls}/case02.png", np.zeros((20, 20), dtype=np.uint8))
    locked = root / "images/case01.png"
    real_open = builtins.open

    def guarded_open(file, *args, **kwargs):  # chmod 000 does not stop root, so deny like the OS would
        if isinstance(file, (str, os.PathLike)) and Path(file) == locked:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)
    data = prepare(find_dataset(root), size=8, cache_dir=tmp_path / "out", max_pixels=300)
    assert [sample.id for sample in data.index.samples] == ["case00"]
    assert reasons(data.index) == {
        "images/case01.png": "cannot read (permission denied; make it readable, e.g. chmod a+r)",
        "images/case02.png": "20x20 = 400 pixels exceeds the limit of 300"
        " (decompression-bomb guard); downsample it or raise max_pixels",
    }


def test_every_pair_over_the_pixel_limit_is_fatal(make_layout_b, tmp_path):
    index = find_dataset(make_layout_b(2, size=(16, 16)))
    with pytest.raises(DatasetError, match="256 pixels exceeds the limit of 100"):
        prepare(index, size=8, cache_dir=tmp_path / "out", max_pixels=100)


def test_dicom_and_16bit_tiff_images_in_a_dataset(tmp_path, write_dicom, write_image):
    write_dicom(tmp_path / "ds/images/d.dcm", np.array([[0, 100], [200, 300]]), photometric="MONOCHROME1")
    write_image(tmp_path / "ds/images/t.tif", np.array([[0, 1000], [2000, 3000]], dtype=np.uint16))
    for name in ("d", "t"):
        write_image(tmp_path / f"ds/masks/{name}.png", np.array([[0, 1], [1, 0]], dtype=np.uint8))
    data = prepare(find_dataset(tmp_path / "ds"), size=2, cache_dir=tmp_path / "out")
    assert data.images.shape == (2, 1, 2, 2)
    assert data.images[0, 0, 0, 0] == 255 and data.images[0, 0, 1, 1] == 0  # MONOCHROME1 inverted
    assert data.images[1, 0, 0, 0] == 0 and data.images[1, 0, 1, 1] == 255


def test_the_dataset_directory_is_not_modified(example_module, tmp_path, hash_tree, write_image):
    root = example_module.make_example(tmp_path / "ds", n=6, bad_fraction=0.5, seed=1)
    (root / "images/notes.txt").write_text("notes")
    (root / "images/broken.png").write_bytes(b"\x89PNG broken")
    for cls in example_module.CLASSES:
        write_image(root / f"masks/{cls}/broken.png", np.zeros((4, 4), dtype=np.uint8))
    before = hash_tree(root)
    stats_before = {path: os.stat(root / path).st_mtime_ns for path in before}
    index = find_dataset(root)
    prepare(index, size=32, cache_dir=tmp_path / "out")
    prepare(index, size=32, cache_dir=tmp_path / "out")
    describe_dataset(index)
    assert hash_tree(root) == before
    assert {path: os.stat(root / path).st_mtime_ns for path in before} == stats_before
