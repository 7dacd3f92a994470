"""Image evidence that needs no network: does the mask's boundary sit on the image's edges, and
does the structure stand out from the ring around it?

For each class, pixels are binned by their signed distance d to the mask's boundary (d > 0
inside). The edge profile is the mean gradient magnitude in each bin, d in [-R, R]: where the
outline follows a real edge the profile peaks at d = 0; an outline drawn a few pixels inside
or outside the edge (eroded, dilated, shifted) peaks elsewhere. Contrast compares the mean
intensity inside the mask with the ring just outside it, in units of their spread.

Shape key: b samples, C image channels, K classes, S working resolution.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

PROFILE_RADIUS = 8   # px at 128 px working size: the reach of the edge profile on each side
EDGE_SIGMA = 1.5     # px: Gaussian smoothing before the gradient (ultrasound speckle, JPEG noise)


def gradient_magnitude(image: np.ndarray) -> np.ndarray:
    """(S, S) float: Gaussian gradient magnitude of an image (C, S, S), summed over channels and
    divided by its median over the image (so that images of different contrast compare)."""
    magnitude = sum(ndimage.gaussian_gradient_magnitude(channel.astype(np.float32), EDGE_SIGMA)
                    for channel in np.asarray(image))
    return magnitude / max(float(np.median(magnitude)), 1e-3)


def edge_profile(magnitude: np.ndarray, mask: np.ndarray, *, radius: int = PROFILE_RADIUS) -> np.ndarray:
    """(2 * radius + 1,) mean gradient magnitude at signed distance d = -radius..radius px from the
    boundary of ``mask`` (S, S) bool (d > 0 inside; NaN where no pixel lies at that distance)."""
    signed = ndimage.distance_transform_edt(mask) - ndimage.distance_transform_edt(~mask)
    # boundary pixels on both sides sit at |d| = 1; shift the inside by one so d = 0 is the inner rim
    signed = np.where(mask, signed - 1, signed)
    bins = np.rint(signed).astype(np.int64)
    keep = np.abs(bins) <= radius
    index = bins[keep] + radius
    sums = np.bincount(index, weights=magnitude[keep], minlength=2 * radius + 1)
    counts = np.bincount(index, minlength=2 * radius + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts


def edge_misfit(profile: np.ndarray) -> float:
    """How much stronger the edges are away from the outline than on it: (max over d of the profile,
    around d = 0 excluded, minus the profile at the outline) / the profile's mean. 0 or below: the
    outline sits on the strongest edge nearby."""
    radius = len(profile) // 2
    on_outline = np.nanmax(profile[radius - 1 : radius + 1])
    away = np.concatenate([profile[: radius - 2], profile[radius + 2 :]])
    if not np.isfinite(on_outline) or not np.isfinite(away).any():
        return 0.0
    return float((np.nanmax(away) - on_outline) / max(float(np.nanmean(profile)), 1e-6))


def contrast(image: np.ndarray, mask: np.ndarray, *, ring: int = PROFILE_RADIUS) -> float:
    """Distance between the mean colour inside ``mask`` and in the ring up to ``ring`` px outside it,
    over their pooled standard deviation (image (C, S, S)); 0 for an empty or full mask."""
    outside = ndimage.distance_transform_edt(~mask)
    band = (outside > 0) & (outside <= ring)
    if not mask.any() or not band.any():
        return 0.0
    pixels = np.asarray(image, dtype=np.float32).reshape(len(image), -1)
    inner, outer = pixels[:, mask.ravel()], pixels[:, band.ravel()]
    spread = np.sqrt(0.5 * (inner.var(axis=1) + outer.var(axis=1)).sum()) + 1.0
    return float(np.linalg.norm(inner.mean(axis=1) - outer.mean(axis=1)) / spread)


def image_evidence(images: np.ndarray, masks: np.ndarray) -> dict[str, np.ndarray]:
    """Per-sample image evidence for images (b, C, S, S) uint8 and masks (b, K, S, S) bool.

    Returns ``edge_misfit`` (b,): the worst non-empty class's :func:`edge_misfit`, and
    ``low_contrast`` (b,): minus the weakest non-empty class's :func:`contrast`. Both are 0
    for an empty mask (the priors judge absence).
    """
    misfit, low_contrast = np.zeros(len(images)), np.zeros(len(images))
    for i, (image, sample_masks) in enumerate(zip(images, np.asarray(masks, dtype=bool))):
        present = [mask for mask in sample_masks if mask.any()]
        if not present:
            continue
        magnitude = gradient_magnitude(image)
        misfit[i] = max(edge_misfit(edge_profile(magnitude, mask)) for mask in present)
        low_contrast[i] = -min(contrast(image, mask) for mask in present)
    return {"edge_misfit": misfit, "low_contrast": low_contrast}
