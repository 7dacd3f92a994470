"""Euclidean distances to a mask's outline, computed only where they are asked for.

The evidence and the corruptions need distances of a few pixels from an outline (rims 3 px wide,
profiles 12 px, dilations by up to 14 px), but a distance transform of the whole image costs the
same for a clavicle as for a lung: it was a third of the scoring time on JSRT. Computed on the
mask's bounding box grown by ``reach + 2`` px, the distances are *exactly* those of the whole
image wherever they are within ``reach`` of the outline: every mask pixel lies in the box, so the
distance of an outside pixel to the mask is the same; and a pixel of the mask is never closer to
a background pixel outside the box than to the 2 px of background ring that the box keeps around
the mask (or the image border, where the box is cut by it, as the whole image is).

Shape key: H x W one mask.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["mask_box", "signed_distance"]

_RING = 2  # px of background kept around the mask beyond the reach: enough for exact inside distances


def signed_distance(mask: np.ndarray, *, reach: float) -> np.ndarray:
    """(H, W) float64: distance of each pixel of ``mask`` (H, W) bool to the nearest background pixel
    (> 0), minus the distance of each background pixel to the nearest mask pixel (< 0), the same
    as ``edt(mask) - edt(~mask)`` wherever that lies in [-reach, inf); further outside, a value
    below -reach. An empty mask: every pixel below -reach."""
    mask = np.asarray(mask, dtype=bool)
    outside = -(float(reach) + _RING + 1.0)
    box = mask_box(mask, int(np.ceil(reach)) + _RING)
    if box is None:
        return np.full(mask.shape, outside)
    crop = mask[box]
    signed = np.full(mask.shape, outside)
    signed[box] = ndimage.distance_transform_edt(crop) - ndimage.distance_transform_edt(~crop)
    return signed


def mask_box(mask: np.ndarray, margin: int) -> tuple[slice, slice] | None:
    """The bounding box of ``mask`` (H, W) bool grown by ``margin`` px on every side and cut by the
    image's borders, as a pair of slices; None for an empty mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return None
    return (slice(max(rows[0] - margin, 0), min(rows[-1] + margin + 1, mask.shape[0])),
            slice(max(cols[0] - margin, 0), min(cols[-1] + margin + 1, mask.shape[1])))
