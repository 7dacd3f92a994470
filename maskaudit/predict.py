"""``maskaudit predict``: segment new images with a scan's checkpoint, in the training dataset's layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from .checkpoint import load_checkpoint
from .dataset import Skipped
from .errors import CheckpointError, DatasetError, InputFileError, OutputDirError
from .export import write_suggested_masks
from .imageio import IMAGE_EXTENSIONS, is_dicom, read_image
from .inference import class_probabilities, predicted_masks
from .mask_format import MaskFormat
from .models import UNet
from .precision import segmenter_forward


def load_segmenter(model_path: Path, *, refit: bool = True) -> tuple[UNet, dict]:
    """The U-Net of a checkpoint (eval mode, CPU) and the checkpoint's metadata (config, classes, ...).

    The refitted U-Net when the scan made one (maskaudit.refit: it predicts, and scored the masks
    in the scan's second pass), else, or with ``refit`` False, the jointly trained one.
    """
    state = load_checkpoint(model_path)
    weights = state.get("refit_unet") if refit else None
    return _unet(state, weights if weights is not None else state["unet"], model_path), state


def load_suggester(model_path: Path) -> tuple[torch.nn.Module, dict]:
    """The network that suggested a scan's masks (eval mode, CPU) and the checkpoint's metadata: the mean
    of the trained and the refitted U-Net (maskaudit.refit.MeanSegmenter), or the trained one alone."""
    from .refit import MeanSegmenter

    state = load_checkpoint(model_path)
    trained = _unet(state, state["unet"], model_path)
    if state.get("refit_unet") is None:
        return trained, state
    refitted = _unet(state, state["refit_unet"], model_path)
    return MeanSegmenter(trained, refitted, multilabel=bool(state["multilabel"])).eval(), state


def _unet(state: dict, weights: dict, model_path: Path) -> UNet:
    """A U-Net built from a checkpoint's configuration holding ``weights``, in eval mode."""
    classes = state["classes"]
    outputs = len(classes) if state["multilabel"] else len(classes) + 1
    unet = UNet(state["image_channels"], outputs, width=state["config"]["width"])
    try:
        unet.load_state_dict(weights)
    except RuntimeError as error:
        raise CheckpointError(f"{model_path}: the U-Net weights do not match its configuration") from error
    return unet.eval()


@torch.no_grad()
def segment(unet: UNet, pixels: np.ndarray, *, size: int, channels: int, multilabel: bool,
            precision: str, device: str = "cpu") -> np.ndarray:
    """Segment one decoded image (H, W) or (H, W, 3) uint8; returns (K, H, W) bool at the original size.
    ``precision`` is the one the U-Net trained in (its checkpoint's ``config``; maskaudit.precision)."""
    height, width = pixels.shape[:2]
    resized = np.asarray(Image.fromarray(pixels).resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)
    if resized.ndim == 2:
        resized = np.repeat(resized[None], channels, axis=0)
    else:
        resized = resized.transpose(2, 0, 1) if channels == 3 else resized.mean(axis=2)[None]
    logits, _ = segmenter_forward(unet, torch.from_numpy(resized / 255.0)[None].to(device), precision=precision)
    probabilities = class_probabilities(logits, multilabel=multilabel)
    upsampled = F.interpolate(probabilities, size=(height, width), mode="bilinear", align_corners=False)[0]
    return predicted_masks(upsampled.cpu().numpy(), multilabel=multilabel)


def predict_directory(
    model_path: Path, images_dir: Path, out_dir: Path, *, device: str = "cpu", overwrite: bool = False,
    progress: bool = False,
) -> tuple[int, list[Skipped]]:
    """Write ``out_dir/masks/...`` for every readable image in ``images_dir``; return (count, skipped).

    Layout B models write ``masks/<class>/<id>.png`` (0/255), layout A models ``masks/<id>.png``
    holding the training dataset's own label values (and its palette), each at its image's
    original size; see :mod:`maskaudit.mask_format`. Unreadable files are skipped, not fatal.
    """
    images_dir, out_dir = Path(images_dir), Path(out_dir)
    if not images_dir.is_dir():
        raise DatasetError(f"{images_dir} is not a directory of images")
    if (out_dir / "masks").exists() and any((out_dir / "masks").iterdir()) and not overwrite:
        raise OutputDirError(f"{out_dir / 'masks'} already holds masks; pass --overwrite or choose another --out")
    unet, state = load_segmenter(model_path)
    stored = MaskFormat.from_checkpoint(state)
    unet.to(device)
    files = sorted(path for path in images_dir.iterdir()
                   if path.is_file() and (path.suffix.lower() in IMAGE_EXTENSIONS or is_dicom(path)))
    if not files:
        raise DatasetError(f"no images (PNG, JPEG, TIFF, DICOM) in {images_dir}")
    skipped: list[Skipped] = []
    written = 0
    for path in tqdm(files, desc="predict", unit="img", disable=not progress):
        try:
            pixels = read_image(path).pixels
        except InputFileError as error:
            skipped.append(Skipped(path.name, str(error)))
            continue
        masks = segment(unet, pixels, size=state["config"]["size"], channels=state["image_channels"],
                        precision=state["config"].get("precision", "auto"),
                        multilabel=state["multilabel"], device=device)
        write_suggested_masks(out_dir, path.stem, masks, classes=tuple(state["classes"]),
                              multilabel=stored.multilabel, file_name=f"{path.stem}.png", values=stored.values,
                              palette=stored.palette, foreground=stored.foreground)
        written += 1
    return written, skipped
