"""`maskaudit predict`: segment new images with a trained checkpoint, in the training dataset's layout."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from maskaudit.cli import main
from maskaudit.dataset import find_dataset
from maskaudit.predict import load_segmenter, segment
from maskaudit.prepare import prepare
from maskaudit.train import CHECKPOINT_NAME, TrainConfig, train

CLASSES = ("left_lung", "right_lung", "heart")
#: name -> (H, W[, 3]) of the images to segment: other sizes than the training data, grey and colour.
NEW_IMAGES = {"tall": (70, 40), "wide": (33, 90), "square": (128, 128), "colour": (50, 60, 3)}


def _train_model(root: Path, out_dir: Path) -> Path:
    data = prepare(find_dataset(root), size=32, cache_dir=out_dir / "cache")
    config = TrainConfig(size=32, width=4, qam_width=4, batch_size=8, epochs=1, precision="fp32")
    train(data, config, out_dir=out_dir)
    return out_dir / CHECKPOINT_NAME


@pytest.fixture(scope="module")
def models(tmp_path_factory, example_module) -> dict[str, Path]:
    """model.pt of a 1-epoch run on a layout B dataset and on the same data as layout A."""
    base = tmp_path_factory.mktemp("predict")
    layout_b = example_module.make_example(base / "layout_b", n=16, bad_fraction=0.0, seed=0)
    layout_a = base / "layout_a"
    (layout_a / "masks").mkdir(parents=True)
    shutil.copytree(layout_b / "images", layout_a / "images")
    for image in sorted((layout_b / "images").iterdir()):
        labels = np.zeros((128, 128), np.uint8)
        for k, name in enumerate(CLASSES):
            labels[np.asarray(Image.open(layout_b / "masks" / name / image.name)) > 0] = k + 1
        Image.fromarray(labels).save(layout_a / "masks" / image.name)
    return {"B": _train_model(layout_b, base / "run_b"), "A": _train_model(layout_a, base / "run_a")}


@pytest.fixture
def images_dir(tmp_path) -> Path:
    """New images of several sizes (one of them colour) and a file that is not an image."""
    folder = tmp_path / "new"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, shape in NEW_IMAGES.items():
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / f"{name}.png")
    return folder


def invoke(*args: object):
    return CliRunner().invoke(main, ["predict", *map(str, args), "-q"])


def test_layout_b_masks_per_class_at_original_size(models, images_dir, tmp_path):
    out = tmp_path / "out"
    result = invoke(models["B"], images_dir, "--out", out)
    assert result.exit_code == 0, result.output
    assert f"{len(NEW_IMAGES)} images segmented" in result.stdout
    assert sorted(path.name for path in (out / "masks").iterdir()) == sorted(CLASSES)
    for name, shape in NEW_IMAGES.items():
        for cls in CLASSES:
            mask = np.asarray(Image.open(out / "masks" / cls / f"{name}.png"))
            assert mask.shape == shape[:2] and mask.dtype == np.uint8
            assert set(np.unique(mask).tolist()) <= {0, 255}


def test_layout_a_label_masks_at_original_size(models, images_dir, tmp_path):
    out = tmp_path / "out"
    result = invoke(models["A"], images_dir, "--out", out)
    assert result.exit_code == 0, result.output
    assert sorted(path.name for path in (out / "masks").iterdir()) == sorted(f"{name}.png" for name in NEW_IMAGES)
    for name, shape in NEW_IMAGES.items():
        labels = np.asarray(Image.open(out / "masks" / f"{name}.png"))
        assert labels.shape == shape[:2]
        assert set(np.unique(labels).tolist()) <= {0, 1, 2, 3}


def test_segment_agrees_with_the_written_masks(models, images_dir, tmp_path):
    out = tmp_path / "out"
    assert invoke(models["B"], images_dir, "--out", out).exit_code == 0
    unet, state = load_segmenter(models["B"])
    pixels = np.asarray(Image.open(images_dir / "tall.png"))
    masks = segment(unet, pixels, size=32, channels=state["image_channels"], multilabel=True,
                    precision=state["config"]["precision"])  # the precision it trained in, as predict uses
    assert masks.shape == (3, 70, 40) and masks.dtype == bool
    assert sorted(state["classes"]) == sorted(CLASSES)
    for k, cls in enumerate(state["classes"]):
        np.testing.assert_array_equal(np.asarray(Image.open(out / "masks" / cls / "tall.png")) > 0, masks[k])


def test_refuses_to_overwrite_without_flag(models, images_dir, tmp_path):
    out = tmp_path / "out"
    assert invoke(models["B"], images_dir, "--out", out).exit_code == 0
    again = invoke(models["B"], images_dir, "--out", out)
    assert again.exit_code == 3
    assert "--overwrite" in again.stderr and len(again.stderr.strip().splitlines()) == 1
    assert invoke(models["B"], images_dir, "--out", out, "--overwrite").exit_code == 0


def test_corrupt_image_is_skipped_with_a_message(models, images_dir, tmp_path):
    (images_dir / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a PNG")
    out = tmp_path / "out"
    result = invoke(models["B"], images_dir, "--out", out)
    assert result.exit_code == 0, result.output
    assert "skipped broken.png" in result.stderr
    assert f"{len(NEW_IMAGES)} images segmented" in result.stdout
    assert not (out / "masks" / "heart" / "broken.png").exists()


@pytest.mark.parametrize("content", [b"not a checkpoint\n", b""])
def test_non_checkpoint_gives_one_line_error(images_dir, tmp_path, content):
    model = tmp_path / "model.pt"
    model.write_bytes(content)
    result = invoke(model, images_dir, "--out", tmp_path / "out")
    assert result.exit_code == 4
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("maskaudit: error:") and "checkpoint" in lines[0]
    assert "Traceback" not in result.output
    assert not (tmp_path / "out" / "masks").exists()


def test_missing_model_and_empty_folder_are_errors(models, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert invoke(tmp_path / "nope.pt", empty, "--out", tmp_path / "out").exit_code == 4
    result = invoke(models["B"], empty, "--out", tmp_path / "out")
    assert result.exit_code == 2 and "no images" in result.stderr
