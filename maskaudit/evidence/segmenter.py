"""Segmenter evidence: how far a mask is from what the trained U-Net predicts for its image.

Shape key: b samples, K classes, S working resolution.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..distance import signed_distance
from ..inference import predicted_masks
from ..metrics import boundary_distance, dice_per_class, softmin_label_quality


def segmenter_evidence(probabilities: np.ndarray, masks: np.ndarray, *, multilabel: bool,
                       valid: np.ndarray | None = None, filled: np.ndarray | None = None,
                       pixel_mm: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-sample disagreement between masks (b, K, S, S) bool and the segmenter's probabilities
    (b, K, S, S) float; ``valid`` (b, S, S) bool is False on void pixels, which never count (None: none);
    ``filled`` (b, K, S, S) bool the void-filled masks (maskaudit.void; None: ``masks``), whose whole
    structures the size ratio, the rims and the objects read; ``pixel_mm`` (b, 2) the size in mm of a working
    pixel along rows and columns (volumes), or None.

    Returns ``dice`` (b, K) Dice(mask, prediction) per class, ``boundary`` (b, K) mean surface
    distance in working-resolution px, ``boundary_mm`` (b, K) the same in mm (NaN without
    ``pixel_mm``), ``softmin`` (b,) the soft minimum over pixels of the probability of the given
    label (low = somewhere the mask is confidently wrong), and ``size_ratio`` (b, K)
    log((mask area + 1) / (predicted area + 1)) per class: a segmenter that over- or under-segments
    everywhere shifts it for every mask alike, so a mask far from the dataset's usual ratio is too
    large or too small even where the prediction itself is biased. ``rim_disagreement`` (b, K)
    compares the prediction with the mask on either side of its outline (:func:`rim_disagreement`), and
    ``object_miss`` (b, K) asks whether a whole object is missing or extra (:func:`object_miss`).
    """
    whole = predicted = predicted_masks(probabilities, multilabel=multilabel)
    filled = masks if filled is None else filled
    if valid is not None:  # void pixels count for neither side (a probe's corruption may cover them)
        predicted = predicted & valid[:, None]
        masks = masks & valid[:, None]
    valid_rows = valid if valid is not None else [None] * len(masks)
    return {
        "dice": dice_per_class(predicted, masks),
        "boundary": np.stack([boundary_distance(p, g) for p, g in zip(predicted, masks)]),
        "boundary_mm": (np.full(masks.shape[:2], np.nan) if pixel_mm is None else
                        np.stack([boundary_distance(p, g, sampling=(float(mm[0]), float(mm[1])))
                                  for p, g, mm in zip(predicted, masks, pixel_mm)])),
        "softmin": np.array([softmin_label_quality(p, g, valid=v) for p, g, v in zip(probabilities, masks, valid_rows)]),
        # whole structures: a VOC band covers most of a thin structure, whose valid pixels alone give a noisy ratio
        "size_ratio": np.log((filled.sum(axis=(2, 3)) + 1.0) / (whole.sum(axis=(2, 3)) + 1.0)),
        "rim_disagreement": rim_disagreement(probabilities, filled, valid=valid),
        "object_miss": object_miss(probabilities, filled, multilabel=multilabel, valid=valid),
    }


RIM_WIDTH = 3  # px at the working size: the rims are the pixels 1..RIM_WIDTH px inside and outside the outline


def rim_disagreement(probabilities: np.ndarray, masks: np.ndarray, *, valid: np.ndarray | None = None) -> np.ndarray:
    """(b, K) how much the segmenter disagrees with each class's mask on the rims either side of its
    outline, in [0, 2]: (1 - mean class probability on the inner rim) + mean class probability on
    the outer rim. Rims are the pixels 1..RIM_WIDTH px from the outline; void pixels (``valid``
    False) are left out; NaN where the class is empty (or its inner rim all void). Near 0 where the
    prediction drops from ~1 to ~0 across the outline; a dilated outline's inner rim and an eroded
    one's outer rim lie on the wrong side of the structure's edge."""
    disagreement = np.full(masks.shape[:2], np.nan)
    for i, (sample_probabilities, sample_masks) in enumerate(zip(probabilities, masks)):
        known = np.ones(masks.shape[2:], bool) if valid is None else valid[i]
        for k, mask in enumerate(sample_masks):
            signed = signed_distance(mask, reach=RIM_WIDTH)  # > 0 inside, < 0 outside
            inner = mask & (signed <= RIM_WIDTH) & known
            if not inner.any():
                continue
            outer = ~mask & (signed >= -RIM_WIDTH) & known
            claim = float(sample_probabilities[k][outer].mean()) if outer.any() else 0.0
            disagreement[i, k] = 1.0 - float(sample_probabilities[k][inner].mean()) + claim
    return disagreement


MIN_OBJECT_PX = 4  # px at the working size: smaller components of the mask or of the prediction are not objects
SURE = 0.9         # class probability above which the segmenter is sure of an object


def object_miss(probabilities: np.ndarray, masks: np.ndarray, *, multilabel: bool,
                valid: np.ndarray | None = None) -> np.ndarray:
    """(b, K) in [0, 1]: the worst-matched whole object of each class, however small, from the class
    probabilities (b, K, S, S) and the masks (b, K, S, S) bool. For every connected component of the
    mask, 1 - the mean class probability over it (the segmenter sees nothing there: a spurious blob,
    another image's mask); for every component where the segmenter is sure of the class (probability
    > SURE), 1 - the share of it that the mask covers (an object the mask leaves out; the specks a
    segmenter half-believes in are no such object). Where classes exclude each other (not
    ``multilabel``), "the class" is any class: which of two touching classes owns a sliver is no
    missing object, and the other evidence judges it; overlapping classes are judged each alone. ``valid``
    (b, S, S) bool, False on void pixels (None: none): only components wholly in labelled pixels are
    judged, as one that meets the void is partly unknown (a dataset that draws a void band along every
    outline, as VOC does, is judged on the objects its masks leave out). Components under MIN_OBJECT_PX
    pixels are skipped; 0 where none is left. Dice hides a missing 40 px object beside a 4,000 px one;
    this does not."""
    worst = np.zeros(masks.shape[:2])
    for i, (sample_probabilities, sample_masks) in enumerate(zip(probabilities, masks)):
        known = None if valid is None else valid[i]
        any_seen, any_labelled = sample_probabilities.max(axis=0), sample_masks.any(axis=0)  # (S, S)
        for k, (probability, mask) in enumerate(zip(sample_probabilities, sample_masks)):
            seen, labelled = (probability, mask) if multilabel else (any_seen, any_labelled)
            misses = np.r_[1.0 - _object_means(seen, mask, counted=known),
                           1.0 - _object_means(labelled, probability > SURE, counted=known)]
            worst[i, k] = misses.max(initial=0.0)
    return worst


def _object_means(values: np.ndarray, mask: np.ndarray, *, counted: np.ndarray | None = None) -> np.ndarray:
    """(n,) the mean of ``values`` (S, S) over each 8-connected component of ``mask`` (S, S) bool with
    at least MIN_OBJECT_PX pixels, all of them where ``counted`` (S, S) bool is True (None: everywhere)."""
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), bool))
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    whole = sizes >= MIN_OBJECT_PX
    if counted is not None:  # a component that meets the void is partly unknown
        whole &= np.bincount(labels[counted].ravel(), minlength=count + 1)[1:] == sizes
    objects = np.flatnonzero(whole) + 1
    if len(objects) == 0:
        return np.zeros(0)
    return np.asarray(ndimage.mean(values.astype(np.float64), labels, objects))
