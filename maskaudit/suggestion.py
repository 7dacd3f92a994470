"""Suggested masks for suspects: per class, keep the annotator's channel, repair it, or take the segmenter's.

Shape key: ``N`` samples, ``K`` classes, ``H`` x ``W`` pixels of one sample (any resolution).

The segmenter is not copied wholesale: where it is weak, where it hesitates, or where the
given channel already agrees with it as well as clean labels do, the annotator's pixels are
worth more. For each class ``k`` of a suspect, :func:`suggest_masks` builds candidates from
the given channel, from the least edited to the most:

1. **keep**: the channel as drawn.
2. **components**: given structures the segmenter does not see (under 20 % overlap, mean
   probability under 0.2) are removed; predicted structures the channel lacks (mean
   probability at least 0.7) are added, largest first, up to the class's usual number of
   structures. A class that is almost always present (90 % of clean samples) is never
   emptied: the given structure the segmenter likes best then stays.
3. **offset**: the components candidate with its boundary moved by its median signed
   distance from the predicted boundary (eroded when drawn too loose, dilated when too
   tight), when that distance is at least one pixel.

A more edited candidate is taken only when it is at least ``EDIT_MARGIN`` closer (Dice) to the
prediction and the segmenter is sure of the pixels it changes (mean ``|2 p - 1|`` at least
``MIN_CERTAINTY``). Then:

4. **replace**: the segmenter's channel replaces the result when the result still agrees with
   it worse than the class's *agreement floor* (the 10th percentile of Dice(given, predicted)
   over clean samples of the class) and the segmenter is sure of the pixels still disputed,
   unless it predicts nothing of a class that is almost always present. An empty channel of
   such a class is always replaced by whatever the segmenter predicts.
5. **unreliable**: a class the segmenter does not reproduce on clean samples (median Dice
   under ``MIN_RELIABILITY``) is left as given.

Each suggestion carries a confidence in [0, 1]: over the pixels it changes, the segmenter's
probability of the suggested value times the class's reliability (median clean Dice),
averaged with the changed pixels as weights; 0 when nothing was changed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .metrics import _as_bool_masks

__all__ = ["ACTIONS", "ClassPriors", "Suggestion", "class_priors", "suggest_masks"]

#: What a suggestion did to each class, in order of how much of the given channel it keeps.
ACTIONS: tuple[str, ...] = ("keep", "components", "offset", "replace", "unreliable")

# A component overlapping the other mask by less than this share of its pixels has no counterpart.
UNMATCHED_MAX_OVERLAP = 0.2
# Given structures are removed only where the segmenter is confident they are background ...
REMOVE_MAX_PROBABILITY = 0.2
# ... and predicted structures are added only where it is confident they are there.
ADD_MIN_PROBABILITY = 0.7
# Structures smaller than 0.1 % of the image (65 px at 256 x 256) are not counted or added.
MIN_REGION_FRACTION = 0.001
MIN_REGION_PIXELS = 4
# A class present in at least this share of clean samples is never emptied by a suggestion.
USUALLY_PRESENT = 0.9
# A more edited candidate must be this much closer (Dice) to the prediction to be preferred.
EDIT_MARGIN = 0.01
# The agreement floor of a class: this quantile of Dice(given, predicted) over its clean samples.
FLOOR_QUANTILE = 0.1
# The usual number of structures of a class: this quantile of the counts over its clean samples.
COUNT_QUANTILE = 0.95
# An edit, and a replacement by the prediction, is made only where the segmenter is at least this
# sure (mean |2 p - 1|) of the pixels it changes: clean labels in hard images disagree with it
# where it hesitates. 0.65-0.75 measured alike on JSRT 40 % (docs/BENCHMARKS.md, section 4).
MIN_CERTAINTY = 0.7
# Classes whose clean samples reach a median Dice below this are left as given.
MIN_RELIABILITY = 0.5
# With fewer clean samples of a class than this, its statistics come from every sample.
MIN_CLEAN_SAMPLES = 5

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
_FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)


@dataclass(frozen=True)
class ClassPriors:
    """What clean samples say about each class, all (K,)."""

    reliability: np.ndarray      # median Dice(given, predicted) over clean samples holding the class
    agreement_floor: np.ndarray  # FLOOR_QUANTILE of the same Dice values
    presence: np.ndarray         # share of clean samples whose given mask holds the class
    max_components: np.ndarray   # int: the usual most structures per sample (COUNT_QUANTILE, at least 1)


@dataclass(frozen=True)
class Suggestion:
    """The suggested masks of one sample and what was done to get them."""

    masks: np.ndarray            # (K, H, W) bool
    actions: tuple[str, ...]     # (K,) one of ACTIONS per class
    confidence: float            # [0, 1], see the module docstring


def _min_pixels(shape: tuple[int, int]) -> int:
    return max(MIN_REGION_PIXELS, int(np.ceil(MIN_REGION_FRACTION * shape[0] * shape[1])))


def _count_structures(mask: np.ndarray, min_px: int) -> int:
    labels, n = ndimage.label(mask, structure=_EIGHT_CONNECTED)
    if n == 0:
        return 0
    return int(np.count_nonzero(np.bincount(labels.ravel())[1:] >= min_px))


def class_priors(given: np.ndarray, dice: np.ndarray, clean: np.ndarray) -> ClassPriors:
    """Per-class statistics of the clean samples, from which suggestions are judged.

    Parameters
    ----------
    given : ndarray of bool or int {0, 1}, shape (N, K, H, W)
        The given masks (the working resolution is enough; may be a memory map).
    dice : ndarray of float, shape (N, K)
        Dice(given, predicted) per sample and class.
    clean : ndarray of bool, shape (N,)
        Samples taken as clean (for a scan: not suspect).

    Returns
    -------
    ClassPriors

    Raises
    ------
    ValueError
        If the shapes do not agree.

    Examples
    --------
    >>> m = np.zeros((6, 1, 8, 8), bool); m[:, 0, 2:6, 2:6] = True
    >>> priors = class_priors(m, np.full((6, 1), 0.9), np.ones(6, bool))
    >>> float(priors.reliability[0]), float(priors.presence[0]), int(priors.max_components[0])
    (0.9, 1.0, 1)
    """
    dice = np.asarray(dice, dtype=np.float64)
    clean = np.asarray(clean, dtype=bool)
    if np.ndim(given) != 4 or dice.shape != tuple(np.shape(given)[:2]) or clean.shape != dice.shape[:1]:
        raise ValueError(
            f"given must be (N, K, H, W), dice (N, K) and clean (N,) with the same N and K; "
            f"got {np.shape(given)}, {dice.shape} and {clean.shape}"
        )
    n, k = dice.shape
    min_px = _min_pixels(np.shape(given)[2:])
    counts = np.zeros((n, k), dtype=np.int64)
    for i in range(n):
        sample = np.asarray(given[i], dtype=bool)
        counts[i] = [_count_structures(sample[c], min_px) for c in range(k)]
    present = counts > 0
    reliability, floor, presence, max_components = (np.zeros(k) for _ in range(4))
    for c in range(k):
        rows = clean & present[:, c]
        if np.count_nonzero(rows) < MIN_CLEAN_SAMPLES:
            rows = present[:, c]
        reference = clean if np.count_nonzero(clean) >= MIN_CLEAN_SAMPLES else np.ones(n, bool)
        presence[c] = present[reference, c].mean() if reference.any() else 0.0
        if rows.any():
            reliability[c] = np.median(dice[rows, c])
            floor[c] = np.quantile(dice[rows, c], FLOOR_QUANTILE)
            max_components[c] = np.ceil(np.quantile(counts[rows, c], COUNT_QUANTILE))
    return ClassPriors(reliability=reliability, agreement_floor=floor, presence=presence,
                       max_components=np.maximum(max_components, 1).astype(np.int64))


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = np.count_nonzero(a) + np.count_nonzero(b)
    return 1.0 if total == 0 else 2.0 * np.count_nonzero(a & b) / total


def _components(mask: np.ndarray, other: np.ndarray, probability: np.ndarray):
    """Label image of ``mask``'s structures and, per structure (1..n), its size, overlap with
    ``other`` (pixels) and mean probability."""
    labels, n = ndimage.label(mask, structure=_EIGHT_CONNECTED)
    flat = labels.ravel()
    sizes = np.bincount(flat, minlength=n + 1)[1:]
    overlap = np.bincount(flat, weights=other.ravel().astype(np.float64), minlength=n + 1)[1:]
    mean_p = np.bincount(flat, weights=probability.ravel(), minlength=n + 1)[1:] / np.maximum(sizes, 1)
    return labels, sizes, overlap, mean_p


def _fix_components(given: np.ndarray, predicted: np.ndarray, probability: np.ndarray, *,
                    max_components: int, usually_present: bool, min_px: int) -> np.ndarray:
    """The given channel without the structures the segmenter rejects, plus those it finds missing."""
    labels, sizes, overlap, mean_p = _components(given, predicted, probability)
    rejected = (overlap < UNMATCHED_MAX_OVERLAP * sizes) & (mean_p < REMOVE_MAX_PROBABILITY)
    fixed = given & ~np.isin(labels, np.flatnonzero(rejected) + 1)

    labels_p, sizes_p, overlap_p, mean_pp = _components(predicted, given, probability)
    lacking = (overlap_p < UNMATCHED_MAX_OVERLAP * sizes_p) & (sizes_p >= min_px) & (mean_pp >= ADD_MIN_PROBABILITY)
    count = _count_structures(fixed, min_px)
    for index in np.flatnonzero(lacking)[np.argsort(-sizes_p[lacking], kind="stable")]:
        if count >= max_components:
            break
        fixed |= labels_p == index + 1
        count += 1

    if usually_present and not fixed.any() and len(sizes):
        fixed = labels == int(np.argmax(mean_p)) + 1  # never empty a class that is almost always there
    return fixed


def _boundary_offset(mask: np.ndarray, predicted: np.ndarray) -> float:
    """Median signed distance (px) of ``mask``'s boundary from ``predicted``'s: > 0 outside, < 0 inside.

    The image border is not a boundary. A mask equal to ``predicted`` dilated by n px gives n,
    eroded by n px gives -n.
    """
    edge = mask & ~ndimage.binary_erosion(mask, structure=_FOUR_CONNECTED, border_value=1)
    if not edge.any() or not predicted.any() or predicted.all():
        return 0.0
    signed = np.where(predicted, 1.0 - ndimage.distance_transform_edt(predicted),
                      ndimage.distance_transform_edt(~predicted))
    return float(np.median(signed[edge]))


def _moved_boundary(mask: np.ndarray, offset: float) -> np.ndarray:
    """``mask`` eroded (offset > 0) or dilated (offset < 0) by round(|offset|) px (Euclidean disk)."""
    radius = int(round(abs(offset)))
    if offset > 0:
        return ndimage.distance_transform_edt(mask) > radius
    return ndimage.distance_transform_edt(~mask) <= radius


def _choose_class(given: np.ndarray, predicted: np.ndarray, probability: np.ndarray, priors: ClassPriors,
                  k: int, min_px: int) -> tuple[np.ndarray, str]:
    """The suggested channel of class ``k`` and the action that made it (one of ACTIONS)."""
    usually_present = bool(priors.presence[k] >= USUALLY_PRESENT)
    if priors.reliability[k] < MIN_RELIABILITY:
        return given, "unreliable"
    fixed = _fix_components(given, predicted, probability, max_components=int(priors.max_components[k]),
                            usually_present=usually_present, min_px=min_px)
    candidates = [(given, "keep"), (fixed, "components")]
    offset = _boundary_offset(fixed, predicted)
    if abs(offset) >= 1.0 and fixed.any():
        candidates.append((_moved_boundary(fixed, offset), "offset"))
    best, best_action = candidates[0]
    best_dice = _dice(best, predicted)
    for mask, action in candidates[1:]:
        score = _dice(mask, predicted)
        if score >= best_dice + EDIT_MARGIN and _certainty(mask ^ best, probability) >= MIN_CERTAINTY:
            best, best_action, best_dice = mask, action, score
    if usually_present and not best.any() and predicted.any():
        return predicted, "replace"  # anything the segmenter finds beats nothing for a class that is always there
    if (best_dice >= priors.agreement_floor[k]
            or _certainty(best ^ predicted, probability) < MIN_CERTAINTY
            or (usually_present and not predicted.any())):  # (it misses a class that is almost always there)
        return best, best_action
    return predicted, "replace"


def _certainty(region: np.ndarray, probability: np.ndarray) -> float:
    """Mean of |2 p - 1| over ``region``: 1 where the segmenter is sure either way, 0 where it hesitates."""
    return float(np.abs(2.0 * probability[region] - 1.0).mean()) if region.any() else 1.0


def _exclusive(masks: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Give each pixel claimed by several classes to the most probable of them."""
    claimed = masks.sum(axis=0) > 1
    if not claimed.any():
        return masks
    scores = np.where(masks, probabilities, -1.0)
    winner = scores.argmax(axis=0)
    out = masks.copy()
    for k in range(len(masks)):
        out[k] &= ~claimed | (winner == k)
    return out


def _confidence(given: np.ndarray, suggested: np.ndarray, probabilities: np.ndarray, reliability: np.ndarray) -> float:
    changed = given != suggested
    total = np.count_nonzero(changed)
    if total == 0:
        return 0.0
    agreement = np.where(suggested, probabilities, 1.0 - probabilities)
    weighted = sum(reliability[k] * agreement[k][changed[k]].sum() for k in range(len(given)))
    return float(np.clip(weighted / total, 0.0, 1.0))


def suggest_masks(given: np.ndarray, predicted: np.ndarray, probabilities: np.ndarray, priors: ClassPriors, *,
                  multilabel: bool = True) -> Suggestion:
    """The suggested correction of one sample's masks.

    Parameters
    ----------
    given : ndarray of bool or int {0, 1}, shape (K, H, W)
        The annotated masks.
    predicted : ndarray of bool or int {0, 1}, shape (K, H, W)
        The segmenter's masks (``maskaudit.inference.predicted_masks`` of ``probabilities``).
    probabilities : ndarray of float, shape (K, H, W)
        The segmenter's per-class probabilities at the same size (sigmoid per class, or the
        softmax without background for exclusive classes).
    priors : ClassPriors
        From :func:`class_priors` over the dataset.
    multilabel : bool, default True
        Layout B (classes may overlap). With False, a pixel claimed by several classes goes
        to the most probable one.

    Returns
    -------
    Suggestion
        New arrays; the inputs are untouched.

    Raises
    ------
    ValueError
        If the shapes do not agree with each other or with ``priors``.

    Examples
    --------
    >>> p = np.zeros((1, 32, 32)); p[0, 8:24, 8:24] = 0.95
    >>> g = np.zeros((1, 32, 32), bool); g[0, 8:24, 8:24] = True; g[0, 1:5, 27:31] = True
    >>> priors = ClassPriors(np.array([0.9]), np.array([0.8]), np.array([1.0]), np.array([1]))
    >>> s = suggest_masks(g, p > 0.5, p, priors)
    >>> s.actions, int(s.masks.sum())
    (('components',), 256)
    """
    given = _as_bool_masks(given, "given", "(K, H, W)")
    predicted = _as_bool_masks(predicted, "predicted", "(K, H, W)")
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if not (given.shape == predicted.shape == probabilities.shape) or len(priors.reliability) != given.shape[0]:
        raise ValueError(
            f"given, predicted and probabilities must all be (K, H, W) with K = {len(priors.reliability)} "
            f"classes as in the priors; got {given.shape}, {predicted.shape} and {probabilities.shape}"
        )
    min_px = _min_pixels(given.shape[1:])
    chosen = [_choose_class(given[k], predicted[k], probabilities[k], priors, k, min_px) for k in range(len(given))]
    masks = np.stack([mask for mask, _ in chosen])
    if not multilabel:
        masks = _exclusive(masks, probabilities)
    return Suggestion(masks=masks, actions=tuple(action for _, action in chosen),
                      confidence=_confidence(given, masks, probabilities, priors.reliability))
