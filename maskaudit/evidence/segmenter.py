"""Segmenter evidence: how far a mask is from what the trained U-Net predicts for its image.

Shape key: b samples, K classes, S working resolution.
"""

from __future__ import annotations

import numpy as np

from ..inference import predicted_masks
from ..metrics import boundary_distance, dice_per_class, softmin_label_quality


def segmenter_evidence(probabilities: np.ndarray, masks: np.ndarray, *, multilabel: bool,
                       valid: np.ndarray | None = None, pixel_mm: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-sample disagreement between masks (b, K, S, S) bool and the segmenter's probabilities
    (b, K, S, S) float; ``valid`` (b, S, S) bool is False on void pixels, which never count (None: none);
    ``pixel_mm`` (b, 2) the size in mm of a working pixel along rows and columns (volumes), or None.

    Returns ``dice`` (b, K) Dice(mask, prediction) per class, ``boundary`` (b, K) mean surface
    distance in working-resolution px, ``boundary_mm`` (b, K) the same in mm (NaN without
    ``pixel_mm``), ``softmin`` (b,) the soft minimum over pixels of the probability of the given
    label (low = somewhere the mask is confidently wrong), and ``size_ratio`` (b, K)
    log((mask area + 1) / (predicted area + 1)) per class: a segmenter that over- or under-segments
    everywhere shifts it for every mask alike, so a mask far from the dataset's usual ratio is too
    large or too small even where the prediction itself is biased.
    """
    predicted = predicted_masks(probabilities, multilabel=multilabel)
    if valid is not None:  # void pixels: no class given, so none predicted either
        predicted = predicted & valid[:, None]
    valid_rows = valid if valid is not None else [None] * len(masks)
    return {
        "dice": dice_per_class(predicted, masks),
        "boundary": np.stack([boundary_distance(p, g) for p, g in zip(predicted, masks)]),
        "boundary_mm": (np.full(masks.shape[:2], np.nan) if pixel_mm is None else
                        np.stack([boundary_distance(p, g, sampling=(float(mm[0]), float(mm[1])))
                                  for p, g, mm in zip(predicted, masks, pixel_mm)])),
        "softmin": np.array([softmin_label_quality(p, g, valid=v) for p, g, v in zip(probabilities, masks, valid_rows)]),
        "size_ratio": np.log((masks.sum(axis=(2, 3)) + 1.0) / (predicted.sum(axis=(2, 3)) + 1.0)),
    }
