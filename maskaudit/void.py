"""Void (ignore) pixels seen by what judges a mask's shape: the image evidence, the shape
descriptors, the size ratio and the rims.

A VOC-style void band straddles every outline, so a class read as given stops at the band's inner
side, a few pixels inside the structure's edge, and all of its outlines look shrunken. Giving each
void pixel the labels of the nearest labelled pixel puts the outline through the band's middle,
where the edge is; the segmenter's loss and the disagreement signals leave void pixels out instead.
The label critic reads the masks as given (void as background), in training and in scoring: it
learns the band as part of what a given mask looks like, and found 1-8 px errors far better so
than from filled masks (docs/BENCHMARKS.md, section 4). For the same reason the segmenter's mask,
which the critic also scores, is drawn with a band along its own outline where the given mask's
void is a band (:func:`drawn_as_given`): without one it is unlike every mask the critic learned.

Shape key: b samples, K classes, S working resolution.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["drawn_as_given", "fill_void", "fill_void_batch", "outline_band"]

BAND_SHARE = 0.8  # a sample's void is a border band when at least this share of it lies on the filled mask's outline


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


def outline_band(masks: np.ndarray) -> np.ndarray:
    """(S, S) bool: the pixels of masks (K, S, S) bool whose 3 x 3 neighbourhood holds another label,
    i.e. about 1 px on each side of every outline (how benchmarks.void_labels draws a VOC band)."""
    band = np.zeros(masks.shape[1:], bool)
    for plane in np.packbits(masks, axis=0):  # 8 classes a byte: a pixel's code differs where any class does
        band |= ndimage.maximum_filter(plane, size=3) != ndimage.minimum_filter(plane, size=3)
    return band


def drawn_as_given(masks: np.ndarray, filled: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Masks (K, S, S) bool, e.g. the segmenter's, drawn as the given mask is: where at least
    BAND_SHARE of the given mask's void pixels (``valid`` (S, S) False) lie on the outline band of
    its void-filled masks ``filled`` (K, S, S), a border band in the VOC manner, the pixels of the
    outline band of ``masks`` become background; otherwise (no void, or void that is not a band,
    such as an ignored region) ``masks`` as they are."""
    void = ~valid
    if not void.any() or void.all():
        return masks
    if (outline_band(filled) & void).sum() < BAND_SHARE * void.sum():
        return masks
    return masks & ~outline_band(masks)
