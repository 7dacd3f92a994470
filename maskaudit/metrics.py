"""Per-sample agreement metrics and shape descriptors of binary masks (pure numpy).

Shape key used throughout:

- ``N`` samples, ``K`` classes, ``H`` x ``W`` pixels,
- ``D = len(SHAPE_DESCRIPTOR_NAMES)`` shape descriptors per class.

Masks are K binary channels (``bool``, or an integer dtype holding {0, 1}); any
non-zero value counts as inside. "predicted" is the segmenter's mask, "given" is the
annotator's mask under audit. Every function returns new arrays; inputs are untouched.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

__all__ = [
    "SHAPE_DESCRIPTOR_NAMES",
    "boundary_distance",
    "dice_per_class",
    "shape_descriptor_names",
    "shape_descriptors",
    "signed_area_ratio",
]

#: Names of the D per-class values of :func:`shape_descriptors`, in order.
SHAPE_DESCRIPTOR_NAMES: tuple[str, ...] = (
    "area_fraction",  # class pixels / (H * W)
    "centroid_y",  # row of the centroid, (y + 0.5) / H, 0.5 when empty
    "centroid_x",  # column of the centroid, (x + 0.5) / W, 0.5 when empty
    "n_components",  # 8-connected components
    "solidity",  # area / convex hull area of the union of all components, 0 when empty
    "extent",  # area / bounding-box area of the union, 0 when empty
)

# 8-connectivity (a 3x3 block): diagonal neighbours belong to the same component, the
# same choice as skimage.measure.label's default for 2-D images.
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
# 4-connectivity for boundaries: a pixel is on the boundary when one of its 4 direct
# neighbours is outside, so boundaries are 8-connected thin lines.
_FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)
# Samples processed together in dice_per_class, to bound the temporary memory.
_DICE_CHUNK = 64


# --------------------------------------------------------------------------- validation


def _as_bool_masks(masks: np.ndarray, name: str, shape_key: str) -> np.ndarray:
    """Return ``masks`` as a bool array after checking its rank and dtype.

    ``shape_key`` is the expected shape as text, e.g. ``"(N, K, H, W)"``; its number of
    letters is the expected rank.
    """
    masks = np.asarray(masks)
    ndim = shape_key.count(",") + 1
    if masks.ndim != ndim:
        raise ValueError(
            f"{name} must have shape {shape_key}, got an array of shape {masks.shape}"
        )
    if masks.dtype == bool:
        return masks
    if not np.issubdtype(masks.dtype, np.integer):
        raise ValueError(
            f"{name} must be a bool or integer {{0, 1}} mask array of shape {shape_key}, "
            f"got dtype {masks.dtype} (threshold probabilities first)"
        )
    return masks != 0


def _check_pair(
    predicted: np.ndarray, given: np.ndarray, shape_key: str
) -> tuple[np.ndarray, np.ndarray]:
    """Validate two mask arrays of the same ``shape_key`` shape; return them as bool."""
    predicted = _as_bool_masks(predicted, "predicted", shape_key)
    given = _as_bool_masks(given, "given", shape_key)
    if predicted.shape != given.shape:
        raise ValueError(
            f"predicted and given must both have shape {shape_key} with equal sizes, "
            f"got {predicted.shape} and {given.shape}"
        )
    return predicted, given


# --------------------------------------------------------------------------- agreement


def dice_per_class(predicted: np.ndarray, given: np.ndarray) -> np.ndarray:
    """Dice coefficient of every sample and class.

    ``dice = 2 |P & G| / (|P| + |G|)``, and 1.0 where both masks are empty (they agree).

    Parameters
    ----------
    predicted : ndarray of bool or int {0, 1}, shape (N, K, H, W)
        The segmenter's masks.
    given : ndarray of bool or int {0, 1}, shape (N, K, H, W)
        The annotated masks, same shape as ``predicted``.

    Returns
    -------
    dice : ndarray of float64, shape (N, K)
        Values in [0, 1].

    Raises
    ------
    ValueError
        If an input is not a 4-D mask array or the shapes differ.

    Examples
    --------
    >>> p = np.zeros((1, 2, 4, 4), bool); p[0, 0, :2] = True
    >>> g = np.zeros((1, 2, 4, 4), bool); g[0, 0, :1] = True
    >>> dice_per_class(p, g).round(3)
    array([[0.667, 1.   ]])
    """
    predicted, given = _check_pair(predicted, given, "(N, K, H, W)")
    n, k = predicted.shape[:2]
    intersection = np.empty((n, k), dtype=np.int64)
    size_p = np.empty((n, k), dtype=np.int64)
    size_g = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, _DICE_CHUNK):
        p = predicted[start : start + _DICE_CHUNK]
        g = given[start : start + _DICE_CHUNK]
        stop = start + p.shape[0]
        intersection[start:stop] = np.count_nonzero(p & g, axis=(2, 3))
        size_p[start:stop] = np.count_nonzero(p, axis=(2, 3))
        size_g[start:stop] = np.count_nonzero(g, axis=(2, 3))
    total = size_p + size_g
    dice = np.ones((n, k), dtype=np.float64)
    nonempty = total > 0
    dice[nonempty] = 2.0 * intersection[nonempty] / total[nonempty]
    return dice


def signed_area_ratio(predicted: np.ndarray, given: np.ndarray) -> np.ndarray:
    """Over- (positive) or under- (negative) labelling of every sample and class.

    ``ratio = (|G| - |P|) / max(|G|, |P|)``, and 0 where both masks are empty.

    Sign: **positive means the given mask is larger than the prediction** (over-labelled),
    negative means it is smaller (under-labelled). The value is bounded: +1 means a class
    is labelled where the prediction has nothing, -1 means the given mask is empty where
    the prediction has a structure, +0.5 means the given area is twice the predicted one,
    -0.5 means it is half.

    Parameters
    ----------
    predicted : ndarray of bool or int {0, 1}, shape (N, K, H, W)
        The segmenter's masks.
    given : ndarray of bool or int {0, 1}, shape (N, K, H, W)
        The annotated masks, same shape as ``predicted``.

    Returns
    -------
    ratio : ndarray of float64, shape (N, K)
        Values in [-1, 1].

    Raises
    ------
    ValueError
        If an input is not a 4-D mask array or the shapes differ.

    Examples
    --------
    >>> p = np.zeros((1, 1, 4, 4), bool); p[0, 0, :1] = True
    >>> g = np.zeros((1, 1, 4, 4), bool); g[0, 0, :2] = True
    >>> signed_area_ratio(p, g)
    array([[0.5]])
    """
    predicted, given = _check_pair(predicted, given, "(N, K, H, W)")
    size_p = np.count_nonzero(predicted, axis=(2, 3)).astype(np.float64)
    size_g = np.count_nonzero(given, axis=(2, 3)).astype(np.float64)
    larger = np.maximum(size_p, size_g)
    ratio = np.zeros(size_p.shape, dtype=np.float64)
    nonempty = larger > 0
    ratio[nonempty] = (size_g[nonempty] - size_p[nonempty]) / larger[nonempty]
    return ratio


def _inner_boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with at least one 4-neighbour outside it (or outside the image)."""
    return mask & ~ndimage.binary_erosion(mask, structure=_FOUR_CONNECTED, border_value=0)


def boundary_distance(predicted: np.ndarray, given: np.ndarray, *,
                      sampling: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """Mean symmetric surface distance, in pixels (or in the units of ``sampling``), per class of one sample.

    The surface of a mask is its inner boundary (mask pixels with a 4-neighbour outside
    the mask or outside the image). The distance is the mean, over the boundary pixels
    of both masks together, of the Euclidean distance to the nearest boundary pixel of
    the other mask (the usual "average symmetric surface distance").

    Special cases: 0 where both masks of a class are empty; where exactly one is empty
    the distance is undefined and is **capped at the image diagonal**
    ``sqrt((H * sampling[0])**2 + (W * sampling[1])**2)``, larger than any distance between two
    non-empty masks.

    Parameters
    ----------
    predicted : ndarray of bool or int {0, 1}, shape (K, H, W)
        The segmenter's masks of one sample.
    given : ndarray of bool or int {0, 1}, shape (K, H, W)
        The annotated masks of the same sample.
    sampling : tuple of float
        Size of a pixel along the rows and the columns (e.g. mm); (1, 1) measures in pixels.

    Returns
    -------
    distance : ndarray of float64, shape (K,)
        Non-negative distances in pixels (in the units of ``sampling``).

    Raises
    ------
    ValueError
        If an input is not a 3-D mask array or the shapes differ.

    Examples
    --------
    >>> p = np.zeros((1, 8, 8), bool); p[0, 2:6, 2:6] = True
    >>> g = np.zeros((1, 8, 8), bool); g[0, 2:6, 3:7] = True
    >>> boundary_distance(p, g)
    array([0.5])
    >>> boundary_distance(p, g, sampling=(2.0, 2.0))  # pixels of 2 x 2 mm
    array([1.])
    """
    predicted, given = _check_pair(predicted, given, "(K, H, W)")
    k, h, w = predicted.shape
    diagonal = float(np.hypot(h * sampling[0], w * sampling[1]))
    distance = np.zeros(k, dtype=np.float64)
    for c in range(k):
        p, g = predicted[c], given[c]
        has_p, has_g = bool(p.any()), bool(g.any())
        if not (has_p or has_g):
            continue
        if has_p != has_g:
            distance[c] = diagonal
            continue
        # Both boundaries lie inside the bounding box of the union, so the distance
        # transforms computed on that box (grown by one pixel, to keep the erosion
        # exact) give the same distances as on the whole image, only faster.
        rows = np.flatnonzero((p | g).any(axis=1))
        cols = np.flatnonzero((p | g).any(axis=0))
        box = (
            slice(max(rows[0] - 1, 0), min(rows[-1] + 2, h)),
            slice(max(cols[0] - 1, 0), min(cols[-1] + 2, w)),
        )
        edge_p = _inner_boundary(p[box])
        edge_g = _inner_boundary(g[box])
        to_p = ndimage.distance_transform_edt(~edge_p, sampling=sampling)
        to_g = ndimage.distance_transform_edt(~edge_g, sampling=sampling)
        total = to_g[edge_p].sum() + to_p[edge_g].sum()
        distance[c] = total / (np.count_nonzero(edge_p) + np.count_nonzero(edge_g))
    return distance


# --------------------------------------------------------------------------- shape


def shape_descriptor_names(classes: Sequence[str]) -> tuple[str, ...]:
    """Names of the ``K * D`` values of :func:`shape_descriptors`, e.g. ``"lung.solidity"``.

    Parameters
    ----------
    classes : sequence of str, length K
        Class names, in channel order.

    Returns
    -------
    names : tuple of str, length K * D
        ``f"{class}.{descriptor}"``, class-major like the descriptor vector.
    """
    return tuple(f"{c}.{d}" for c in classes for d in SHAPE_DESCRIPTOR_NAMES)


def shape_descriptors(masks: np.ndarray) -> np.ndarray:
    """Shape descriptors of every class of one sample, as one flat feature vector.

    For each class, the D values named in :data:`SHAPE_DESCRIPTOR_NAMES`:

    - ``area_fraction``: class pixels / (H * W);
    - ``centroid_y``, ``centroid_x``: centroid of the class pixels as ``(y + 0.5) / H``
      and ``(x + 0.5) / W`` (in (0, 1); 0.5, the image centre, when the class is empty);
    - ``n_components``: number of 8-connected components;
    - ``solidity``: area / area of the convex hull of all class pixels (pixels taken as
      unit squares, so a convex shape scores close to 1);
    - ``extent``: area / bounding-box area of the union.

    Solidity and extent are 0 when the class is empty.

    Parameters
    ----------
    masks : ndarray of bool or int {0, 1}, shape (K, H, W)
        The masks of one sample.

    Returns
    -------
    descriptors : ndarray of float64, shape (K * D,)
        Class-major: ``descriptors.reshape(K, D)[k]`` are the values of class ``k``.
        :func:`shape_descriptor_names` gives matching names.

    Raises
    ------
    ValueError
        If ``masks`` is not a 3-D mask array.

    Examples
    --------
    >>> m = np.zeros((1, 4, 4), bool); m[0, :2, :2] = True
    >>> shape_descriptors(m).round(3)
    array([0.25, 0.25, 0.25, 1.  , 1.  , 1.  ])
    """
    masks = _as_bool_masks(masks, "masks", "(K, H, W)")
    k, h, w = masks.shape
    out = np.zeros((k, len(SHAPE_DESCRIPTOR_NAMES)), dtype=np.float64)
    for c in range(k):
        mask = masks[c]
        area = np.count_nonzero(mask)
        if area == 0:
            out[c] = (0.0, 0.5, 0.5, 0.0, 0.0, 0.0)
            continue
        _, n_components = ndimage.label(mask, structure=_EIGHT_CONNECTED)
        ys, xs = np.nonzero(mask)
        box_area = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
        out[c] = (
            area / (h * w),
            (ys.mean() + 0.5) / h,
            (xs.mean() + 0.5) / w,
            n_components,
            area / _convex_hull_area(mask),
            area / box_area,
        )
    return out.ravel()


def _convex_hull_area(mask: np.ndarray) -> float:
    """Area of the convex hull of the pixels of a non-empty (H, W) mask, pixels as unit squares.

    The hull of the pixel corners contains every pixel square, so ``area / hull <= 1``. Every
    corner of a row's pixels lies between the outer corners of its first and last pixel, so those
    four corners per row span the same hull as all of them: at most 4 H points.
    """
    from scipy.spatial import ConvexHull

    rows = np.flatnonzero(mask.any(axis=1))
    runs = mask[rows]
    first = runs.argmax(axis=1)
    last = mask.shape[1] - runs[:, ::-1].argmax(axis=1)  # one past the last pixel: its right edge
    corners = np.stack([np.r_[rows, rows, rows + 1, rows + 1], np.r_[first, last, first, last]], axis=1)
    # The corners of even a single pixel span a unit square, so the hull is never flat.
    return float(ConvexHull(corners.astype(np.float64)).volume)


def softmin_label_quality(
    probabilities: np.ndarray, given: np.ndarray, *, valid: np.ndarray | None = None, temperature: float = 0.1
) -> float:
    """Soft minimum over pixels of the probability the model gives to the given label.

    The per-pixel quality is p where the given mask is set and 1 - p elsewhere; the soft minimum
    sum(q * exp(-q / T)) / sum(exp(-q / T)) is dominated by the worst pixels, so one confidently
    wrong region lowers it even in a large image.

    Parameters
    ----------
    probabilities : np.ndarray
        (K, H, W) float, per-class probability from the segmenter.
    given : np.ndarray
        (K, H, W) bool, the dataset's mask.
    valid : np.ndarray, optional
        (H, W) bool, False on void pixels, which are left out; None = every pixel counts.

    Returns
    -------
    float
        In [0, 1], higher = the given label agrees with the model everywhere (1.0 if no pixel is valid).
    """
    quality = np.where(given, probabilities, 1.0 - probabilities).astype(np.float64)
    quality = quality[:, valid].ravel() if valid is not None else quality.ravel()
    if quality.size == 0:
        return 1.0
    weights = np.exp(-(quality - quality.min()) / temperature)
    return float(np.sum(quality * weights) / np.sum(weights))
