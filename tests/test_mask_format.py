"""Masks written back in the dataset's own values: the checkpoint's mask format, `maskaudit predict`,
the suggested masks of a scan, and checkpoints from before the format was recorded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from maskaudit.checkpoint import load_checkpoint
from maskaudit.cli import main
from maskaudit.dataset import find_dataset
from maskaudit.errors import CheckpointError
from maskaudit.export import write_mask_png
from maskaudit.exporters.samples import iter_samples
from maskaudit.exporters.scan_results import load_scan_results, select_rows
from maskaudit.mask_format import MaskFormat, mask_format_of
from maskaudit.pipeline import ScanConfig, scan
from maskaudit.predict import load_segmenter, segment
from maskaudit.prepare import prepare
from maskaudit.train import CHECKPOINT_NAME, TrainConfig, train

#: A VOC-like palette: (R, G, B) of indices 0..255, 255 (void) in VOC's cream (224, 224, 192).
PALETTE = tuple(channel for index in range(255)
                for channel in ((index * 37) % 256, (index * 91) % 256, (index * 53) % 256)) + (224, 224, 192)
TINY = dict(size=32, width=4, qam_width=4, batch_size=8, epochs=1, precision="fp32", early_stop=False,
            augment=False)


def _labels(first: int, second: int, shift: int, *, band: int | None = None) -> np.ndarray:
    """(40, 40): ``first`` on most of the image, a block of ``second``, background in a corner, an optional
    ``band`` value around the block (VOC's void border)."""
    labels = np.full((40, 40), first, np.uint8)
    labels[:8, :8] = 0
    if band is not None:
        labels[14 + shift : 32 + shift, 10:30] = band
    labels[15 + shift : 31 + shift, 11:29] = second
    return labels


def _dataset(root: Path, first: int, second: int, *, band: int | None = None, palette: bool = False, n: int = 8
             ) -> Path:
    """Layout A: images that show the classes (brightness follows the label), masks as given."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for number in range(n):
        labels = _labels(first, second, number % 4, band=band)
        brightness = np.where(labels == second, 220, np.where(labels == 0, 10, 110))
        image = np.clip(brightness + rng.normal(0, 8, labels.shape), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(root / "images" / f"case{number:02d}.png")
        mask = Image.fromarray(labels)
        if palette:
            mask.putpalette(list(PALETTE))
        mask.save(root / "masks" / f"case{number:02d}.png")
    return root


def _train(root: Path, out_dir: Path) -> Path:
    train(prepare(find_dataset(root), size=32, cache_dir=out_dir / "cache"), TrainConfig(**TINY), out_dir=out_dir)
    return out_dir / CHECKPOINT_NAME


def _predicting(model: Path, channel: int, path: Path) -> Path:
    """A copy of ``model`` whose U-Net outputs ``channel`` on every pixel (layout A: 0 background, k class k):
    one epoch of tiny training learns too little to show every class."""
    state = torch.load(model, map_location="cpu", weights_only=True)
    bias = torch.zeros_like(state["unet"]["head.bias"])
    bias[channel] = 1e4
    state["unet"]["head.bias"] = bias
    torch.save(state, path)
    return path


def _values(image: Image.Image) -> set[int]:
    return set(np.unique(np.asarray(image)).tolist())


def _predict(model: Path, images: Path, out: Path):
    result = CliRunner().invoke(main, ["predict", str(model), str(images), "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    return {path.stem: Image.open(path) for path in sorted((out / "masks").glob("*.png"))}


@pytest.fixture(scope="module")
def sparse(tmp_path_factory, one_torch_thread) -> tuple[Path, Path]:
    """A grey layout A dataset with the sparse values {0, 10, 20}, and the model.pt of one epoch on it."""
    base = tmp_path_factory.mktemp("sparse")
    root = _dataset(base / "ds", 10, 20)
    return root, _train(root, base / "run")


def test_checkpoint_records_the_datasets_values(sparse):
    root, model = sparse
    state = load_checkpoint(model)
    assert state["mask_format"] == {"layout": "A", "values": [10, 20], "void": None, "palette": None,
                                    "foreground": 255}
    assert MaskFormat.from_checkpoint(state) == mask_format_of(find_dataset(root))


def test_predict_writes_the_sparse_values_not_class_indices(sparse, tmp_path):
    root, model = sparse
    written = _predict(model, root / "images", tmp_path / "out")
    assert len(written) == 8
    unet, state = load_segmenter(model)
    for name, image in written.items():
        labels = np.asarray(image)
        assert image.mode == "L" and _values(image) <= {0, 10, 20}
        masks = segment(unet, np.asarray(Image.open(root / "images" / f"{name}.png")), size=32, channels=1,
                        multilabel=False, precision=state["config"]["precision"])
        np.testing.assert_array_equal(labels == 10, masks[0])
        np.testing.assert_array_equal(labels == 20, masks[1])
    for channel, value in ((1, 10), (2, 20)):
        only = _predict(_predicting(model, channel, tmp_path / f"{value}.pt"), root / "images", tmp_path / f"{value}")
        assert all(_values(image) == {value} for image in only.values())


def test_a_checkpoint_from_before_the_record_loads_and_writes_1_to_k(sparse, tmp_path):
    _, model = sparse
    state = torch.load(model, map_location="cpu", weights_only=True)
    del state["mask_format"]
    old = tmp_path / "old.pt"
    torch.save(state, old)
    assert MaskFormat.from_checkpoint(load_checkpoint(old)) == MaskFormat(layout="A", values=(1, 2))
    new_images = tmp_path / "new"
    new_images.mkdir()
    Image.fromarray(np.full((24, 30), 110, np.uint8)).save(new_images / "grey.png")
    from_old = np.asarray(_predict(old, new_images, tmp_path / "old-out")["grey"])
    from_new = np.asarray(_predict(model, new_images, tmp_path / "new-out")["grey"])
    assert set(np.unique(from_old).tolist()) <= {0, 1, 2} and set(np.unique(from_new).tolist()) <= {0, 10, 20}
    np.testing.assert_array_equal(from_old, np.select([from_new == 10, from_new == 20], [1, 2], 0))


def test_a_damaged_record_is_a_checkpoint_error(sparse):
    state = load_checkpoint(sparse[1])
    for record in ({"layout": "A"}, {**state["mask_format"], "values": [10]},
                   {**state["mask_format"], "palette": [0, 0, 0]}):
        with pytest.raises(CheckpointError, match="mask format"):
            MaskFormat.from_checkpoint({**state, "mask_format": record})


def test_binary_0_255_datasets_predict_0_255(tmp_path, one_torch_thread):
    root = _dataset(tmp_path / "ds", 255, 255)  # one class stored as 255
    assert mask_format_of(find_dataset(root)) == MaskFormat(layout="A", values=(255,))
    model = _train(root, tmp_path / "run")
    assert all(_values(image) <= {0, 255} for image in _predict(model, root / "images", tmp_path / "out").values())
    everywhere = _predict(_predicting(model, 1, tmp_path / "1.pt"), root / "images", tmp_path / "all")
    assert all(_values(image) == {255} for image in everywhere.values())


def _layout_b(root: Path, foreground: int) -> Path:
    """Layout B, classes "a" and "b" stored 0/``foreground``: "a" on most of the image, "b" on a block."""
    for name in ("a", "b"):
        (root / "masks" / name).mkdir(parents=True)
    (root / "images").mkdir()
    for number in range(8):
        labels = _labels(1, 2, number % 4)
        Image.fromarray(np.where(labels == 2, 220, np.where(labels == 0, 10, 110)).astype(np.uint8)).save(
            root / "images" / f"case{number:02d}.png")
        for value, name in ((1, "a"), (2, "b")):
            Image.fromarray((labels == value).astype(np.uint8) * foreground).save(
                root / "masks" / name / f"case{number:02d}.png")
    return root


@pytest.mark.parametrize("foreground", [1, 255])
def test_layout_b_masks_are_written_back_as_stored_0_1_or_0_255(tmp_path, one_torch_thread, foreground):
    root = _layout_b(tmp_path / "ds", foreground)
    assert mask_format_of(find_dataset(root)) == MaskFormat(layout="B", foreground=foreground)
    model = _train(root, tmp_path / "run")
    assert load_checkpoint(model)["mask_format"]["foreground"] == foreground
    state = torch.load(model, map_location="cpu", weights_only=True)
    state["unet"]["head.bias"] = torch.full_like(state["unet"]["head.bias"], 1e4)  # every class everywhere
    torch.save(state, tmp_path / "all.pt")
    result = CliRunner().invoke(main, ["predict", str(tmp_path / "all.pt"), str(root / "images"), "--out",
                                       str(tmp_path / "out"), "-q"])
    assert result.exit_code == 0, result.output
    written = sorted((tmp_path / "out" / "masks").glob("*/*.png"))
    assert len(written) == 16 and {path.parent.name for path in written} == {"a", "b"}
    assert all(_values(Image.open(path)) == {foreground} for path in written)


def test_palette_masks_are_written_with_their_palette(tmp_path):
    labels = np.array([[0, 3], [7, 255]], np.uint8)
    write_mask_png(tmp_path / "m.png", labels, palette=PALETTE)
    with Image.open(tmp_path / "m.png") as image:
        assert image.mode == "P" and tuple(image.getpalette()) == PALETTE
        np.testing.assert_array_equal(np.asarray(image), labels)


def test_scan_then_predict_of_a_voc_style_palette_dataset_keeps_values_void_and_palette(tmp_path, one_torch_thread):
    """VOC values {0, 3, 7, 255}: class 3 on most pixels, class 7 in a block, 255 the void band around it."""
    root = _dataset(tmp_path / "ds", 3, 7, band=255, palette=True)
    out = tmp_path / "out"
    scan(root, out, ScanConfig(train=TrainConfig(**TINY), threshold=1.0, report=False))  # every sample a suspect
    stored = load_checkpoint(out / CHECKPOINT_NAME)["mask_format"]
    assert stored == {"layout": "A", "values": [3, 7], "void": 255, "palette": list(PALETTE), "foreground": 255}

    suggested = sorted((out / "suggested" / "masks").glob("*.png"))
    assert len(suggested) == 8
    for path in suggested:
        with Image.open(path) as image:
            labels = np.asarray(image)
            assert image.mode == "P" and tuple(image.getpalette()) == PALETTE
        given = np.asarray(Image.open(root / "masks" / path.name))
        assert set(np.unique(labels).tolist()) <= {0, 3, 7, 255}
        np.testing.assert_array_equal(labels == 255, given == 255)  # the void band kept as given

    predicted = _predict(out / CHECKPOINT_NAME, root / "images", tmp_path / "predicted")
    assert len(predicted) == 8
    for image in predicted.values():
        assert image.mode == "P" and tuple(image.getpalette()) == PALETTE
        assert _values(image) <= {0, 3, 7}  # never 1, 2, nor void
    for channel, value in ((1, 3), (2, 7)):
        model = _predicting(out / CHECKPOINT_NAME, channel, tmp_path / f"{value}.pt")
        assert all(_values(image) == {value} for image in _predict(model, root / "images", tmp_path / f"{value}").values())


def test_export_reads_the_suggested_masks_back_in_the_datasets_values(sparse, tmp_path, one_torch_thread):
    root, _ = sparse
    out = tmp_path / "out"
    scan(root, out, ScanConfig(train=TrainConfig(**TINY), threshold=1.0, report=False))
    results = load_scan_results(out)
    assert results.label_values == (10, 20)
    exported = list(iter_samples(results, select_rows(results)))
    assert len(exported) == 8
    for sample in exported:
        written = np.asarray(Image.open(out / "suggested" / "masks" / f"{sample.id}.png"))
        np.testing.assert_array_equal(sample.suggested, np.stack([written == 10, written == 20]))
    assert any(sample.suggested[1].any() for sample in exported)
