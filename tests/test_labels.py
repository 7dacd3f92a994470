"""How layout A label values become classes: sparse values, value-to-name maps, palettes, void,
0/255 masks with stray values, the many-tiny-values guard, and void through training, scoring,
the report's pictures and the suggested masks. Every dataset is a few tiny generated masks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from maskaudit.cli import main
from maskaudit.dataset import find_dataset
from maskaudit.errors import DatasetError
from maskaudit.export import write_suggested_masks
from maskaudit.labels import LabelValues, ValueCounts, decide_label_values, parse_ignore_value
from maskaudit.metrics import softmin_label_quality
from maskaudit.overlays import VOID_HATCH, disagreement_map, disagreement_thumbnail, hex_to_rgb
from maskaudit.pipeline import ScanConfig, scan
from maskaudit.prepare import prepare, read_pair
from maskaudit.summary import describe_dataset, format_description
from maskaudit.train import TrainConfig, per_sample_loss


def _dataset(root: Path, masks: list[np.ndarray], write_image, *, mode: str | None = None) -> Path:
    """images/caseNN.png (a gradient) and masks/caseNN.png (the given labels) under ``root``."""
    for number, labels in enumerate(masks):
        height, width = labels.shape
        image = (np.add.outer(np.arange(height), np.arange(width)) * 3 + number).astype(np.uint8)
        write_image(root / "images" / f"case{number:02d}.png", image)
        mask = Image.fromarray(labels.astype(np.uint8))
        if mode == "P":
            mask = mask.convert("P")
            mask.putpalette([0, 0, 0, 200, 0, 0, 0, 200, 0] + [0] * (3 * 253))
        (root / "masks").mkdir(parents=True, exist_ok=True)
        mask.save(root / "masks" / f"case{number:02d}.png")
    return root


def _voc(height: int = 16, width: int = 16, shift: int = 0) -> np.ndarray:
    """Background, a block of 1, a block of 2, and a 255 band around each block (VOC style)."""
    labels = np.zeros((height, width), np.uint8)
    labels[3:7, 2 + shift : 8 + shift] = 255
    labels[4:6, 3 + shift : 7 + shift] = 1
    labels[9:14, 4:12] = 255
    labels[10:13, 5:11] = 2
    return labels


# -- which values are classes --------------------------------------------------------------------


def test_sparse_values_are_the_classes_and_the_cache_has_one_channel_each(tmp_path, write_image):
    masks = [np.zeros((16, 16), np.uint8) for _ in range(3)]
    for labels in masks:
        labels[2:6, 2:6], labels[8:12, 8:12] = 10, 20
    index = find_dataset(_dataset(tmp_path / "ds", masks, write_image))
    assert index.classes == ("class_10", "class_20") and index.labels.values == (10, 20)
    data = prepare(index, size=8, cache_dir=tmp_path / "out")
    assert data.masks.shape == (3, 2, 8, 8) and data.void is None
    assert data.masks[0, 0].sum() == 4 and data.masks[0, 1].sum() == 4


def test_classes_json_maps_values_to_names_and_refuses_other_values(tmp_path, write_image):
    masks = [np.zeros((8, 8), np.uint8) for _ in range(3)]
    masks[0][1:3, 1:3], masks[1][4:6, 4:6], masks[2][0, 0] = 1, 15, 7
    root = _dataset(tmp_path / "ds", masks, write_image)
    (root / "classes.json").write_text(json.dumps({"0": "background", "1": "aeroplane", "15": "person"}))
    index = find_dataset(root)
    assert index.classes == ("aeroplane", "person") and index.labels.values == (1, 15)
    pair = read_pair(index, index.samples[1])
    assert pair.masks.shape == (2, 8, 8) and pair.masks[1].sum() == 4 and not pair.masks[0].any()
    data = prepare(index, size=8, cache_dir=tmp_path / "out")
    assert [sample.id for sample in data.index.samples] == ["case00", "case01"]
    assert any("label value 7 is not a class (classes are 1, 15)" in item.reason for item in data.index.skipped)


def test_palette_masks_give_their_indices(tmp_path, write_image):
    masks = [np.zeros((8, 8), np.uint8) for _ in range(2)]
    masks[0][:4] = 1
    masks[1][4:] = 2
    index = find_dataset(_dataset(tmp_path / "ds", masks, write_image, mode="P"))
    assert index.labels.values == (1, 2) and index.void_value is None
    assert read_pair(index, index.samples[1]).masks[1].sum() == 32


def test_binary_0_255_masks_are_one_class(tmp_path, write_image):
    masks = [np.zeros((8, 8), np.uint8) for _ in range(2)]
    masks[0][:4], masks[1][2:5] = 255, 255
    index = find_dataset(_dataset(tmp_path / "ds", masks, write_image))
    assert index.classes == ("class_1",) and index.labels.binary and index.void_value is None
    assert index.labels.notes == ()
    assert read_pair(index, index.samples[0]).masks.sum() == 32


def test_binary_masks_with_stray_values_are_thresholded_with_a_note(tmp_path, write_image):
    masks = [np.zeros((32, 32), np.uint8) for _ in range(3)]
    for labels in masks:
        labels[8:24, 8:24] = 255
    masks[0][8, 8:12] = (200, 130, 90, 3)  # resampling leftovers on the border
    index = find_dataset(_dataset(tmp_path / "ds", masks, write_image))
    assert index.classes == ("class_1",) and index.labels.binary
    assert len(index.labels.notes) == 1 and "thresholded at 128" in index.labels.notes[0]
    pair = read_pair(index, index.samples[0])
    assert pair.masks.shape == (1, 32, 32) and pair.masks.sum() == 16 * 16 - 2  # 90 and 3 are background
    text = format_description(describe_dataset(index))
    assert "Note         binary masks (0/255) with stray values (3, 90, 130, 200" in text


def test_many_tiny_values_are_refused_before_any_cache_is_written(tmp_path, write_image):
    rng = np.random.default_rng(0)
    masks = [np.zeros((64, 64), np.uint8) for _ in range(2)]
    for labels in masks:  # 200 pixels of 1..200 each: noise, not labels
        labels.flat[rng.choice(labels.size, 200, replace=False)] = rng.permutation(200) + 1
    root = _dataset(tmp_path / "ds", masks, write_image)
    with pytest.raises(DatasetError, match=r"distinct label values .* under 0.1 % of the pixels"):
        find_dataset(root)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["scan", str(root), "--out", str(out), "--quiet"])
    assert result.exit_code != 0 and len(result.output.strip().splitlines()) == 1
    assert "--ignore-value" in result.output and not out.exists()


def test_many_classes_that_are_not_tiny_are_accepted():
    counts = ValueCounts()
    counts.add(np.repeat(np.arange(100, dtype=np.uint8), 10).reshape(10, 100))  # 99 classes of 1 % each
    assert len(decide_label_values(counts).values) == 99


# -- void ----------------------------------------------------------------------------------------


def test_255_beside_a_small_set_is_void_and_can_be_set_or_disabled(tmp_path, write_image):
    root = _dataset(tmp_path / "ds", [_voc(shift=s) for s in range(3)], write_image)
    index = find_dataset(root)
    assert index.classes == ("class_1", "class_2") and index.void_value == 255
    assert "small set, as in PASCAL VOC" in index.labels.notes[0]
    none = find_dataset(root, ignore_value=None)
    assert none.classes == ("class_1", "class_2", "class_255") and none.void_value is None
    two = find_dataset(root, ignore_value=2)
    assert two.labels.values == (1, 255) and two.void_value == 2 and "--ignore-value" in two.labels.notes[0]
    pair = read_pair(index, index.samples[0])
    assert pair.void.sum() == int((_voc() == 255).sum()) and not (pair.masks.any(axis=0) & pair.void).any()


def test_voc_values_0_to_20_and_255_give_20_classes_and_void():
    counts = ValueCounts()
    labels = np.repeat(np.arange(21, dtype=np.uint8), 20).reshape(20, 21)
    labels[::4] = 255  # the border band
    counts.add(labels)
    decided = decide_label_values(counts)
    assert decided.values == tuple(range(1, 21)) and decided.void == 255


def test_void_is_cached_beside_the_masks_and_reused(tmp_path, write_image):
    root = _dataset(tmp_path / "ds", [_voc(shift=s) for s in range(3)], write_image)
    data = prepare(find_dataset(root), size=16, cache_dir=tmp_path / "out")
    assert data.masks.shape == (3, 2, 16, 16) and data.void.shape == (3, 16, 16)
    assert np.array_equal(np.asarray(data.void[0], bool), _voc() == 255)
    again = prepare(find_dataset(root), size=16, cache_dir=tmp_path / "out")
    assert again.void.filename == data.void.filename
    no_void = prepare(find_dataset(root, ignore_value=None), size=16, cache_dir=tmp_path / "out")
    assert no_void.void is None and no_void.masks.shape == (3, 3, 16, 16)


def test_inspect_says_what_it_did_with_void_and_obeys_ignore_value(tmp_path, write_image):
    root = _dataset(tmp_path / "ds", [_voc(shift=s) for s in range(2)], write_image)
    result = CliRunner().invoke(main, ["inspect", str(root)])
    assert result.exit_code == 0, result.output
    assert "Void         value 255" in result.output and "--ignore-value none makes 255 a class" in result.output
    result = CliRunner().invoke(main, ["inspect", str(root), "--ignore-value", "none", "--json"])
    described = json.loads(result.output)
    assert described["classes"] == ["class_1", "class_2", "class_255"] and described["label_values"]["void"] is None
    result = CliRunner().invoke(main, ["inspect", str(root), "--ignore-value", "-3"])
    assert result.exit_code == 2 and "is not a label value" in result.output


def test_parse_ignore_value():
    assert parse_ignore_value("auto") == "auto" and parse_ignore_value("None") is None
    assert parse_ignore_value(" 255 ") == 255
    with pytest.raises(ValueError):
        parse_ignore_value("2.5")


def test_training_loss_ignores_void_pixels():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, generator=generator)
    masks = torch.zeros(2, 2, 8, 8)
    masks[:, 0, :4] = 1
    valid = torch.ones(2, 1, 8, 8)
    valid[:, :, 3:5] = 0  # a void band across the border
    changed = logits.clone()
    changed[:, :, 3:5] = torch.randn(2, 3, 2, 8, generator=generator) * 10  # anything predicted in the band
    loss, dice, _ = per_sample_loss(logits, masks, multilabel=False, valid=valid)
    loss_changed, dice_changed, _ = per_sample_loss(changed, masks, multilabel=False, valid=valid)
    assert torch.allclose(loss, loss_changed) and torch.allclose(dice, dice_changed)
    assert not torch.allclose(per_sample_loss(logits, masks, multilabel=False)[0],
                              per_sample_loss(changed, masks, multilabel=False)[0])
    multi = per_sample_loss(logits[:, 1:], masks, multilabel=True, valid=valid)[0]
    assert torch.allclose(multi, per_sample_loss(changed[:, 1:], masks, multilabel=True, valid=valid)[0])


def test_softmin_and_disagreement_ignore_void_pixels():
    given = np.zeros((1, 8, 8), bool)
    given[0, :4] = True
    probabilities = given.astype(np.float32) * 0.98 + 0.01
    probabilities[0, 4, :] = 0.99  # confidently "class" where the band is void
    void = np.zeros((8, 8), bool)
    void[4] = True
    assert softmin_label_quality(probabilities, given) < 0.1
    assert softmin_label_quality(probabilities, given, valid=~void) > 0.9
    code = disagreement_map(given, probabilities > 0.5, void=void)
    assert (code[4] == 4).all() and not code[~void].any()


def test_the_disagreement_picture_hatches_void_and_colours_nothing_there():
    given = np.zeros((1, 16, 16), bool)
    predicted = np.zeros((1, 16, 16), bool)
    predicted[0, 4:8] = True  # the segmenter's class fills the void band exactly
    void = np.zeros((16, 16), bool)
    void[4:8] = True
    picture = disagreement_thumbnail(np.full((16, 16, 3), 100, np.uint8), given, predicted, void=void, max_side=16)
    hatched = (picture == hex_to_rgb(VOID_HATCH)).all(axis=2)
    assert hatched[4:8].any() and not hatched[~void].any()
    assert len(np.unique(picture[~void].reshape(-1, 3), axis=0)) == 1  # the rest is plain, dimmed image
    plain = disagreement_thumbnail(np.full((16, 16, 3), 100, np.uint8), given, predicted, max_side=16)
    assert len(np.unique(plain[4:8].reshape(-1, 3), axis=0)) == 1 and not (plain[4:8] == picture[4:8]).all()


def test_empty_masks_give_one_class():
    counts = ValueCounts()
    counts.add(np.zeros((4, 4), np.uint8))
    assert decide_label_values(counts).values == (1,)


def test_suggested_masks_keep_the_label_values_and_the_void_pixels(tmp_path):
    masks = np.zeros((2, 6, 6), bool)
    masks[0, :2], masks[1, 4:] = True, True
    void = np.zeros((6, 6), bool)
    void[2:4, :3] = True
    (path,) = write_suggested_masks(tmp_path, "a", masks, classes=("x", "y"), multilabel=False, file_name="a.png",
                                    values=(10, 20), void=void, void_value=255)
    labels = np.asarray(Image.open(path))
    assert set(np.unique(labels)) == {0, 10, 20, 255} and (labels[void] == 255).all()


def test_label_values_split_reports_unknown_values():
    labels = np.array([[0, 1, 255], [7, 1, 0]], np.uint8)
    masks, void, unknown = LabelValues(values=(1,), void=255).split(labels)
    assert masks.shape == (1, 2, 3) and masks.sum() == 2 and void.sum() == 1 and unknown == (7,)


@pytest.mark.slow
def test_scan_of_a_voc_style_dataset_records_void_and_keeps_it_in_suggestions(tmp_path, write_image):
    root = _dataset(tmp_path / "ds", [_voc(32, 32, shift=s % 4) for s in range(8)], write_image)
    config = ScanConfig(train=TrainConfig(size=32, epochs=1, early_stop=False, augment=False), threshold=1.0,
                        report=False)
    result = scan(root, tmp_path / "out", config)
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["dataset"]["classes"] == ["class_1", "class_2"] and run["dataset"]["label_values"]["void"] == 255
    suggested = np.asarray(Image.open(tmp_path / "out" / "suggested" / "masks" / f"{result.rows[0].id}.png"))
    number = int(result.rows[0].id[-2:])
    assert np.array_equal(suggested == 255, _voc(32, 32, shift=number % 4) == 255)
