"""Run trained networks over prepared data in streaming batches; nothing of size N x K x H x W is kept.

Shape key: N samples, b batch, C image channels, K classes, S working resolution.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from .models import QualityAwarenessModule, UNet
from .precision import segmenter_forward


@dataclass(frozen=True)
class BatchOutput:
    """Network outputs for rows ``start:start + b`` of the prepared data."""

    start: int
    probabilities: np.ndarray    # (b, K, S, S) float32: per-class probability (sigmoid, or softmax without background)
    bottleneck: np.ndarray       # (b, F) float32 pooled U-Net bottleneck features
    qam_score: np.ndarray        # (b,) float32 raw QAM score t (0 without a QAM)
    qam_features: np.ndarray     # (b, G) float32 pooled QAM penultimate features (G = 0 without a QAM)


def class_probabilities(logits: torch.Tensor, *, multilabel: bool) -> torch.Tensor:
    """(b, K, S, S) per-class probabilities from U-Net logits ((b, K) sigmoid or (b, K + 1) softmax)."""
    if multilabel:
        return torch.sigmoid(logits)
    return torch.softmax(logits, dim=1)[:, 1:]


def predicted_masks(probabilities: np.ndarray, *, multilabel: bool) -> np.ndarray:
    """Binary masks (..., K, S, S) bool from probabilities: > 0.5 per class, or the arg-max class."""
    if multilabel:
        return probabilities > 0.5
    background = 1.0 - probabilities.sum(axis=-3, keepdims=True)
    winner = np.concatenate([background, probabilities], axis=-3).argmax(axis=-3)
    return np.stack([winner == k + 1 for k in range(probabilities.shape[-3])], axis=-3)


@torch.no_grad()
def run_networks(
    images: np.ndarray,
    masks: np.ndarray | None,
    unet: UNet,
    qam: QualityAwarenessModule | None,
    *,
    multilabel: bool,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    precision: str = "auto",
) -> Iterator[BatchOutput]:
    """Yield the networks' outputs batch by batch over images (N, C, S, S) uint8 and masks (N, K, S, S).

    The QAM needs the given masks (void pixels, if any, as background); with ``masks=None`` (or no
    QAM) its outputs are empty. The U-Net runs in the ``precision`` it trained in (maskaudit.precision).
    """
    device = torch.device(device)
    unet = unet.to(device).eval()
    if qam is not None:
        qam = qam.to(device).eval()
    for start in range(0, len(images), batch_size):
        image_batch = torch.from_numpy(np.asarray(images[start : start + batch_size], dtype=np.float32) / 255.0).to(device)
        logits, bottleneck = segmenter_forward(unet, image_batch, precision=precision)
        probabilities = class_probabilities(logits, multilabel=multilabel)
        if qam is not None and masks is not None:
            mask_batch = np.asarray(masks[start : start + batch_size], dtype=bool)
            mask_batch = torch.from_numpy(mask_batch.astype(np.float32)).to(device)
            t, features = qam(image_batch, mask_batch)
            qam_score, qam_features = t.float().cpu().numpy(), features.float().cpu().numpy()
        else:
            qam_score = np.zeros(len(image_batch), np.float32)
            qam_features = np.zeros((len(image_batch), 0), np.float32)
        yield BatchOutput(
            start=start,
            probabilities=probabilities.cpu().numpy(),
            bottleneck=bottleneck.cpu().numpy(),
            qam_score=qam_score,
            qam_features=qam_features,
        )
