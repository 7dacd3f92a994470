"""Image evidence that needs no network: does the mask's outline sit on the image's edges and on
the step between structure and surroundings?

For each class, pixels are binned by their signed distance d to the mask's boundary (d > 0
inside). The edge profile is the mean gradient magnitude in each bin, d in [-R, R]: where the
outline follows a real edge the profile peaks at d = 0; an outline drawn a few pixels inside
or outside the edge (eroded, dilated, shifted) peaks elsewhere. The intensity profile is the
mean colour in each bin: averaged along the whole outline it keeps the step between structure
and surroundings even where speckle hides every local edge (ultrasound), and that step should
sit on the outline too, with unlike rims on either side of it.

Shape key: b samples, C image channels, K classes, S working resolution.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..distance import signed_distance

PROFILE_RADIUS = 8   # px at 128 px working size: the reach of the edge profile on each side
EDGE_SIGMA = 1.5     # px: Gaussian smoothing before the gradient (ultrasound speckle, JPEG noise)
STEP_RADIUS = 12     # px at 128 px working size: the reach of the intensity profile on each side


def gradient_magnitude(image: np.ndarray) -> np.ndarray:
    """(S, S) float: Gaussian gradient magnitude of an image (C, S, S), summed over channels and
    divided by its median over the image (so that images of different contrast compare)."""
    magnitude = sum(ndimage.gaussian_gradient_magnitude(channel.astype(np.float32), EDGE_SIGMA)
                    for channel in np.asarray(image))
    return magnitude / max(float(np.median(magnitude)), 1e-3)


def edge_profile(magnitude: np.ndarray, mask: np.ndarray, *, radius: int = PROFILE_RADIUS,
                 signed: np.ndarray | None = None) -> np.ndarray:
    """(2 * radius + 1,) mean gradient magnitude at signed distance d = -radius..radius px from the
    boundary of ``mask`` (S, S) bool (d > 0 inside; NaN where no pixel lies at that distance).
    ``signed``: the mask's :func:`~maskaudit.distance.signed_distance` with a reach >= radius, if known."""
    signed = signed_distance(mask, reach=radius) if signed is None else signed
    # boundary pixels on both sides sit at |d| = 1; shift the inside by one so d = 0 is the inner rim
    signed = np.where(mask, signed - 1, signed)
    bins = np.rint(signed).astype(np.int64)
    keep = np.abs(bins) <= radius
    index = bins[keep] + radius
    sums = np.bincount(index, weights=magnitude[keep], minlength=2 * radius + 1)
    counts = np.bincount(index, minlength=2 * radius + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts


def intensity_profile(image: np.ndarray, mask: np.ndarray, *, radius: int = STEP_RADIUS,
                      signed: np.ndarray | None = None) -> np.ndarray:
    """(2 * radius + 1, C) mean colour of image (C, S, S) at signed distance d = -radius..radius px from
    the boundary of ``mask`` (S, S) bool, d > 0 inside; bins no pixel reaches are interpolated.
    ``signed``: the mask's :func:`~maskaudit.distance.signed_distance` with a reach >= radius, if known."""
    signed = signed_distance(mask, reach=radius) if signed is None else signed
    bins = np.rint(np.where(mask, signed - 1, signed)).astype(np.int64)
    keep = np.abs(bins) <= radius
    index = bins[keep] + radius
    counts = np.bincount(index, minlength=2 * radius + 1)
    pixels = np.asarray(image, dtype=np.float64).reshape(len(image), -1)[:, keep.ravel()]
    profile = np.stack([np.bincount(index, weights=channel, minlength=2 * radius + 1) for channel in pixels], axis=1)
    reached = np.flatnonzero(counts)
    profile = profile[reached] / counts[reached, None]
    return np.stack([np.interp(np.arange(2 * radius + 1), reached, column) for column in profile.T], axis=1)


def step_misfit(profile: np.ndarray) -> float:
    """How much larger the colour step is away from the outline than on it, for an intensity
    profile (2R + 1, C): the step at d is the colour distance between d - 1 and d + 1; (largest
    step more than 3 px from the outline - largest within 1 px) / the mean step. 0 or below: the
    outline sits on the largest step."""
    step = np.linalg.norm(profile[2:] - profile[:-2], axis=1)  # centred on d = -R + 1 .. R - 1
    centre = len(step) // 2
    on_outline = step[centre - 1 : centre + 2].max()
    away = np.concatenate([step[: centre - 3], step[centre + 4 :]])
    if not len(away):
        return 0.0
    return float((away.max() - on_outline) / (step.mean() + 1e-3))


def rim_blend(profile: np.ndarray) -> float:
    """How alike the colours just inside and just outside the outline are, for an intensity profile
    (2R + 1, C), relative to structure against background: -|inner rim - outer rim| / (|core - far
    outside| + 1), rims 4 px wide, core and far outside beyond 7 px (colour units). Near -1: the
    outline separates the two; near 0: it runs through one region (the rims either side of a
    dilated outline are both background, of an eroded one both structure)."""
    radius = len(profile) // 2
    inner = profile[radius : radius + 4].mean(axis=0)
    outer = profile[radius - 4 : radius].mean(axis=0)
    core, far = profile[radius + 7 :].mean(axis=0), profile[: radius - 7].mean(axis=0)
    return float(-np.linalg.norm(inner - outer) / (np.linalg.norm(core - far) + 1.0))


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


def image_evidence(images: np.ndarray, masks: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class image evidence for images (b, C, S, S) uint8 and masks (b, K, S, S) bool, each
    (b, K), higher = worse, NaN where the class is empty (the priors judge absence):
    ``edge_misfit`` (:func:`edge_misfit`), ``step_misfit`` (:func:`step_misfit` of the intensity
    profile) and ``rim_blend`` (:func:`rim_blend`); with void pixels, pass the void-filled masks
    (:func:`maskaudit.void.fill_void`). (A plain inside/outside contrast was measured too and
    dropped: no set gained from it, docs/BENCHMARKS.md section 0.3.)
    """
    masks = np.asarray(masks, dtype=bool)
    evidence = {name: np.full(masks.shape[:2], np.nan) for name in ("edge_misfit", "step_misfit", "rim_blend")}
    for i, (image, sample_masks) in enumerate(zip(images, masks)):
        magnitude = None
        for k, mask in enumerate(sample_masks):
            if not mask.any():
                continue
            magnitude = gradient_magnitude(image) if magnitude is None else magnitude
            signed = signed_distance(mask, reach=max(STEP_RADIUS, PROFILE_RADIUS))  # once for both profiles
            profile = intensity_profile(image, mask, signed=signed)
            evidence["edge_misfit"][i, k] = edge_misfit(edge_profile(magnitude, mask, signed=signed))
            evidence["step_misfit"][i, k] = step_misfit(profile)
            evidence["rim_blend"][i, k] = rim_blend(profile)
    return evidence
