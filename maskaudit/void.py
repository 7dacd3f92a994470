"""Void (ignore) pixels seen by what judges a mask's shape: the image evidence, the shape
descriptors, the size ratio and the rims.

A VOC-style void band straddles every outline, so a class read as given stops at the band's inner
side, a few pixels inside the structure's edge, and all of its outlines look shrunken. Giving each
void pixel the labels of the nearest labelled pixel puts the outline through the band's middle,
where the edge is; the segmenter's loss and the disagreement signals leave void pixels out instead.
The label critic reads the masks as given (void as background), in training and in scoring: it
learns the band as part of what a given mask looks like, and found 1-8 px errors far better so
than from filled masks (docs/BENCHMARKS.md, section 4).

Shape key: b samples, K classes, S working resolution.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["fill_void", "fill_void_batch"]


def fill_void(masks: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Masks (K, S, S) bool with each void pixel (``valid`` (S, S) False) given the labels of the
    nearest non-void pixel (unchanged without void, or when every pixel is void)."""
    if valid.all() or not valid.any():
        return masks
    _, (rows, cols) = ndimage.distance_transform_edt(~valid, return_indices=True)
    return masks[:, rows, cols]


def fill_void_batch(masks: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """:func:`fill_void` on each of masks (b, K, S, S) with valid (b, S, S); masks as they are if ``valid`` is None."""
    if valid is None:
        return masks
    return np.stack([fill_void(sample, sample_valid) for sample, sample_valid in zip(masks, valid)])
