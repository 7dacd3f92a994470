"""Name what looks wrong with a suspect mask: ``issue_type`` and ``issue_classes``.

Shape key: ``N`` samples, ``K`` classes, ``H`` x ``W`` pixels.

The segmenter's prediction is trusted as the reference. For a sample already judged
suspect (by the quality score), :func:`diagnose` finds the class whose given mask
disagrees most with the prediction and explains the disagreement with one of
:data:`ISSUE_TYPES`:

``missing``
    the prediction has a structure the given mask lacks (a whole class, or one
    connected component of it, e.g. one of two lungs).
``spurious``
    the given mask has a connected region the prediction does not have at all.
``class-confusion``
    a region is labelled as class ``a`` where the prediction has a whole structure of
    class ``b`` (and the annotator did not label ``b`` there), e.g. two classes swapped.
``over-segmented`` / ``under-segmented``
    the given mask contains / lies inside the predicted one and is clearly larger /
    smaller.
``misplaced``
    similar areas, but the given mask is shifted away from the prediction (or drawn
    somewhere else entirely).
``other``
    disagreement none of the above explains (or too small to name).
``ok``
    the sample is not suspect.

Decision order for the worst class: confusion, spurious, missing (each when its
regions hold at least half of the class's disagreeing pixels), then misplaced when
unmatched regions on both sides are of similar size (a structure moved far away),
then over-/under-segmented, then misplaced by centroid shift, then ``other``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .metrics import _as_bool_masks, _check_pair

__all__ = ["ISSUE_TYPES", "diagnose", "diagnose_batch"]

ISSUE_TYPES: tuple[str, ...] = (
    "over-segmented",
    "under-segmented",
    "missing",
    "spurious",
    "class-confusion",
    "misplaced",
    "other",
    "ok",
)

# --- thresholds (fractions unless stated) -------------------------------------------------
# Regions and disagreements smaller than 0.1% of the image (65 px at 256 x 256) are
# annotation noise, not an issue worth naming.
MIN_REGION_FRACTION = 0.001
# ... but never fewer than this many pixels, for tiny working resolutions.
MIN_REGION_PIXELS = 4
# A connected component with less than 20% of its pixels inside the other mask of the
# same class has "no counterpart": a shifted or resized structure overlaps far more.
UNMATCHED_MAX_OVERLAP = 0.2
# A region is another class's structure under a wrong name when at least half of its
# pixels are that class in the other mask (and not in its own) ...
CONFUSION_MIN_SHARE = 0.5
# ... and it covers at least half of the structure(s) of that class it touches, so a
# small spurious "tumour" blob inside a predicted "liver" stays spurious.
CONFUSION_MIN_COVER = 0.5
# Unmatched regions explain a class's disagreement when they hold at least half of its
# disagreeing pixels.
REGION_SHARE = 0.5
# A structure moved far away leaves an unmatched region on both sides; both must hold at
# least this share of the disagreement, with areas within MISPLACED_MAX_AREA_RATIO.
MOVED_MIN_SHARE = 0.3
# "Mostly contains": 85% of the smaller mask lies inside the larger one (room for the
# segmenter's own boundary noise of a pixel or two).
CONTAIN_FRACTION = 0.85
# "Clearly larger / smaller": at least 15% more / fewer pixels. A 2 px dilation of a
# disc of radius 20 adds about 20%, a one-pixel boundary disagreement about 10%.
MIN_AREA_CHANGE = 0.15
# "Similar areas" for misplaced: within a factor of 1.5.
MISPLACED_MAX_AREA_RATIO = 1.5
# "Shifted": the centroid moved by at least 0.5 standard deviations of the predicted
# structure's pixels along the shift direction (a quarter of the radius of a disc; for
# an elongated structure, measured across or along it as it moved). Boundary noise
# moves it by a few hundredths.
MISPLACED_MIN_SHIFT = 0.5
# Exclusive layout only: another class is named too when it holds at least half of the
# disputed pixels (e.g. class a over-segmented into class b's territory).
NEIGHBOUR_MIN_SHARE = 0.5

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def diagnose(
    given: np.ndarray,
    predicted: np.ndarray,
    *,
    suspect: bool,
    multilabel: bool = True,
) -> tuple[str, tuple[int, ...]]:
    """Issue type and classes involved for one sample.

    Parameters
    ----------
    given : ndarray of bool or int {0, 1}, shape (K, H, W)
        The annotated masks under audit.
    predicted : ndarray of bool or int {0, 1}, shape (K, H, W)
        The segmenter's masks, trusted as the reference.
    suspect : bool
        Whether the sample was judged suspect. If not, the answer is ``("ok", ())``.
    multilabel : bool, default True
        Layout B (channels may overlap) when True. With False (layout A, exclusive
        channels), a neighbouring class that took or lost the disputed pixels of an
        over-/under-segmented class is named as a second class.

    Returns
    -------
    issue_type : str
        One of :data:`ISSUE_TYPES`.
    issue_classes : tuple of int
        Class indices involved, the class whose given mask is most wrong first; for
        ``class-confusion`` the two confused classes; ``()`` for ``ok`` and for
        ``other`` when no class disagrees noticeably.

    Raises
    ------
    ValueError
        If the masks are not (K, H, W) mask arrays of the same shape.

    Examples
    --------
    >>> p = np.zeros((1, 32, 32), bool); p[0, 8:24, 8:24] = True
    >>> g = np.zeros((1, 32, 32), bool); g[0, 4:28, 4:28] = True
    >>> diagnose(g, p, suspect=True)
    ('over-segmented', (0,))
    >>> diagnose(g, p, suspect=False)
    ('ok', ())
    """
    predicted, given = _check_pair(predicted, given, "(K, H, W)")
    if not suspect:
        return "ok", ()
    k_classes, h, w = given.shape
    min_px = max(MIN_REGION_PIXELS, int(np.ceil(MIN_REGION_FRACTION * h * w)))

    size_g = np.count_nonzero(given, axis=(1, 2))
    size_p = np.count_nonzero(predicted, axis=(1, 2))
    disagree = np.count_nonzero(given ^ predicted, axis=(1, 2))
    total = size_g + size_p
    badness = np.where(total > 0, disagree / np.maximum(total, 1), 0.0)  # = 1 - Dice
    badness[disagree < min_px] = 0.0
    if not badness.any():
        return "other", ()
    # Worst class: largest 1 - Dice, then most disagreeing pixels, then lowest index.
    k = int(np.lexsort((np.arange(k_classes), -disagree, -badness))[0])
    return _explain_class(given, predicted, k, min_px=min_px, multilabel=multilabel)


def diagnose_batch(
    given: np.ndarray,
    predicted: np.ndarray,
    *,
    suspect: np.ndarray,
    multilabel: bool = True,
) -> list[tuple[str, tuple[int, ...]]]:
    """:func:`diagnose` for every sample of a batch.

    Parameters
    ----------
    given, predicted : ndarray of bool or int {0, 1}, shape (N, K, H, W)
        Annotated and predicted masks.
    suspect : array-like of bool, shape (N,)
        Which samples are suspect; the others are ``("ok", ())``.
    multilabel : bool, default True
        As in :func:`diagnose`.

    Returns
    -------
    diagnoses : list of (str, tuple of int), length N

    Raises
    ------
    ValueError
        If the shapes do not match (N, K, H, W) and (N,).
    """
    given = _as_bool_masks(given, "given", "(N, K, H, W)")
    predicted = _as_bool_masks(predicted, "predicted", "(N, K, H, W)")
    if given.shape != predicted.shape:
        raise ValueError(
            f"given and predicted must both have shape (N, K, H, W) with equal sizes, "
            f"got {given.shape} and {predicted.shape}"
        )
    suspect = np.asarray(suspect, dtype=bool)
    if suspect.shape != given.shape[:1]:
        raise ValueError(
            f"suspect must have shape (N,) = ({given.shape[0]},), got {suspect.shape}"
        )
    return [
        diagnose(g, p, suspect=bool(s), multilabel=multilabel)
        for g, p, s in zip(given, predicted, suspect)
    ]


# --------------------------------------------------------------------------- internals


def _explain_class(
    given: np.ndarray, predicted: np.ndarray, k: int, *, min_px: int, multilabel: bool
) -> tuple[str, tuple[int, ...]]:
    """Issue type for class ``k`` (the worst one); see the module docstring for the order."""
    g, p = given[k], predicted[k]
    size_g, size_p = int(np.count_nonzero(g)), int(np.count_nonzero(p))
    extra = g & ~p  # labelled, not predicted
    lacking = p & ~g  # predicted, not labelled
    n_disagree = int(np.count_nonzero(extra)) + int(np.count_nonzero(lacking))

    # Regions with no counterpart, and the class each one may really be.
    spurious = _unmatched_regions(g, p, min_px)
    missing = _unmatched_regions(p, g, min_px)
    confused: dict[int, int] = {}
    spurious_px = missing_px = 0
    for region in spurious:
        n = int(np.count_nonzero(region & extra))
        spurious_px += n
        b = _confused_with(region, k, own=given, other=predicted)
        if b is not None:
            confused[b] = confused.get(b, 0) + n
    for region in missing:
        n = int(np.count_nonzero(region & lacking))
        missing_px += n
        b = _confused_with(region, k, own=predicted, other=given)
        if b is not None:
            confused[b] = confused.get(b, 0) + n

    if confused:
        b = max(confused, key=lambda c: (confused[c], -c))
        if confused[b] >= REGION_SHARE * n_disagree:
            return "class-confusion", (k, b)
    similar_area = size_p > 0 and size_g > 0 and _similar(size_g, size_p)
    if (
        similar_area
        and spurious_px >= MOVED_MIN_SHARE * n_disagree
        and missing_px >= MOVED_MIN_SHARE * n_disagree
    ):
        return "misplaced", (k,)  # the structure was drawn somewhere else entirely
    if spurious_px >= REGION_SHARE * n_disagree:
        return "spurious", (k,)
    if missing_px >= REGION_SHARE * n_disagree:
        return "missing", (k,)

    inter = (size_g + size_p - n_disagree) // 2  # |G & P|
    if (
        size_p > 0
        and inter >= CONTAIN_FRACTION * size_p
        and size_g >= (1.0 + MIN_AREA_CHANGE) * size_p
    ):
        return "over-segmented", (k, *_neighbour(extra, k, predicted, multilabel))
    if (
        size_g > 0
        and inter >= CONTAIN_FRACTION * size_g
        and size_g <= (1.0 - MIN_AREA_CHANGE) * size_p
    ):
        return "under-segmented", (k, *_neighbour(lacking, k, given, multilabel))
    if similar_area and _relative_shift(g, p) >= MISPLACED_MIN_SHIFT:
        return "misplaced", (k,)
    return "other", (k,)


def _similar(a: int, b: int) -> bool:
    return max(a, b) <= MISPLACED_MAX_AREA_RATIO * min(a, b)


def _relative_shift(given: np.ndarray, predicted: np.ndarray) -> float:
    """Centroid shift from ``predicted`` to ``given``, in standard deviations of the
    predicted pixel coordinates along the shift direction."""
    coords_p = np.argwhere(predicted).astype(np.float64)
    shift = np.argwhere(given).mean(axis=0) - coords_p.mean(axis=0)
    length = float(np.hypot(*shift))
    if length == 0.0:
        return 0.0
    spread = float(np.std(coords_p @ (shift / length)))
    return length / max(spread, 0.5)  # a one-pixel-thin structure still has width


def _unmatched_regions(mask: np.ndarray, other: np.ndarray, min_px: int) -> list[np.ndarray]:
    """Connected components of ``mask`` (at least ``min_px``) barely touched by ``other``."""
    labels, n = ndimage.label(mask, structure=_EIGHT_CONNECTED)
    if n == 0:
        return []
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    overlap = np.bincount(labels.ravel(), weights=other.ravel(), minlength=n + 1)
    ids = np.flatnonzero((sizes >= min_px) & (overlap < UNMATCHED_MAX_OVERLAP * sizes))
    return [labels == i for i in ids if i != 0]


def _confused_with(
    region: np.ndarray, k: int, *, own: np.ndarray, other: np.ndarray
) -> int | None:
    """The class ``b != k`` that ``region`` (of ``own[k]``, unmatched in ``other[k]``) really is.

    ``b`` qualifies when most of the region is ``b`` in ``other`` but not in ``own``
    (CONFUSION_MIN_SHARE) and the region covers most of the ``other[b]`` structures it
    touches (CONFUSION_MIN_COVER). Returns the best such class, or None.
    """
    size = np.count_nonzero(region)
    best, best_share = None, 0.0
    for b in range(other.shape[0]):
        if b == k:
            continue
        share = np.count_nonzero(region & other[b] & ~own[b]) / size
        if share < CONFUSION_MIN_SHARE or share <= best_share:
            continue
        labels, _ = ndimage.label(other[b], structure=_EIGHT_CONNECTED)
        touched = np.unique(labels[region])
        touched = touched[touched != 0]
        structure_size = np.count_nonzero(np.isin(labels, touched))
        if np.count_nonzero(region & other[b]) >= CONFUSION_MIN_COVER * structure_size:
            best, best_share = b, share
    return best


def _neighbour(
    disputed: np.ndarray, k: int, masks: np.ndarray, multilabel: bool
) -> tuple[int, ...]:
    """Exclusive layout: the other class of ``masks`` holding most of the ``disputed`` pixels."""
    n = np.count_nonzero(disputed)
    if multilabel or n == 0:
        return ()
    shares = np.count_nonzero(masks & disputed, axis=(1, 2)) / n
    shares[k] = 0.0
    b = int(np.argmax(shares))
    return (b,) if shares[b] >= NEIGHBOUR_MIN_SHARE else ()
