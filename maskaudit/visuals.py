"""The segmenter's probabilities and masks for a few chosen samples, at working and at original resolution.

Used for suggested corrections and the report, so only the samples shown are ever predicted
at full size. Shape key: K classes, S working resolution, H x W an image's original size.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .inference import class_probabilities, predicted_masks
from .models import UNet
from .precision import segmenter_forward
from .pages import release_pages

if TYPE_CHECKING:
    from .prepare import PreparedData


@torch.no_grad()
def predict_probabilities(
    data: "PreparedData",
    unet: UNet,
    positions: Sequence[int],
    *,
    batch_size: int = 16,
    progress: bool = False,
    description: str = "predict",
    precision: str = "auto",
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield ``(position, working (K, S, S), original (K, H, W))`` float32 class probabilities.

    The original-size probabilities are the working ones upsampled bilinearly, so that the masks
    thresholded from them have smooth rather than blocky boundaries. The U-Net runs in the
    ``precision`` it trained in (maskaudit.precision).
    """
    unet = unet.eval()
    multilabel = data.index.multilabel
    bar = tqdm(total=len(positions), desc=description, unit="img", disable=not progress)
    for start in range(0, len(positions), batch_size):
        chunk = list(positions[start : start + batch_size])
        images = torch.from_numpy(np.asarray(data.images[sorted(chunk)], dtype=np.float32) / 255.0)
        release_pages(data.images)  # scattered reads would leave much of a large cache resident
        order = {position: row for row, position in enumerate(sorted(chunk))}
        logits, _ = segmenter_forward(unet, images, precision=precision)
        probabilities = class_probabilities(logits, multilabel=multilabel)
        for position in chunk:
            row = probabilities[order[position] : order[position] + 1]
            height, width = (int(value) for value in data.original_sizes[position])
            upsampled = F.interpolate(row, size=(height, width), mode="bilinear", align_corners=False)[0]
            yield position, row[0].numpy(), upsampled.numpy()
            bar.update(1)
    bar.close()


def predict_samples(
    data: "PreparedData",
    unet: UNet,
    positions: Sequence[int],
    *,
    batch_size: int = 16,
    progress: bool = False,
    description: str = "predict",
    precision: str = "auto",
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield ``(position, working (K, S, S) bool, original (K, H, W) bool)`` predicted masks for each position."""
    multilabel = data.index.multilabel
    for position, working, original in predict_probabilities(
        data, unet, positions, batch_size=batch_size, progress=progress, description=description, precision=precision
    ):
        yield (position, predicted_masks(working, multilabel=multilabel),
               predicted_masks(original, multilabel=multilabel))
