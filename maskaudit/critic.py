"""The label critic's self-supervised objective: the QAM learns to score each given mask above
corrupted copies of it.

Most given labels are right, so a QAM that ranks a mask above its own erosions, dilations,
shifts, deletions, spurious blobs, class swaps, other images' masks and distorted outlines learns
what a mask that fits its image looks like, whether or not the segmenter has learned the task.
The corruptions are drawn from :mod:`maskaudit.corruptions` at random kinds, strengths and
mixtures, so that no single corruption's fingerprint is enough to win.

Shape key: B batch, K classes, S working resolution.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from .corruptions import CRITIC_FAMILIES, family_corruption
from .distance import mask_box


#: How often each family is drawn for the critic's training pairs, relative to 1 for the others.
#: Erosions and dilations are the subtlest errors and the commonest real ones; at uniform odds the
#: critic of a weak-edged set (DDTI) hardly saw a 5-13 px erosion (docs/BENCHMARKS.md, section 0.0000000).
CRITIC_FAMILY_WEIGHTS = {"erode": 2.5, "dilate": 2.5}


def critic_families(holdout: Sequence[str] = ()) -> tuple[str, ...]:
    """The corruption families the critic trains on: all but ``holdout`` (names from CRITIC_FAMILIES)."""
    unknown = sorted(set(holdout) - set(CRITIC_FAMILIES))
    if unknown:
        raise ValueError(f"unknown critic corruption families {unknown}; known: {', '.join(CRITIC_FAMILIES)}")
    return tuple(family for family in CRITIC_FAMILIES if family not in holdout)


def corrupt_batch(masks: np.ndarray, rng: np.random.Generator, **options) -> tuple[np.ndarray, np.ndarray]:
    """:func:`probe_batch` (same ``options``; by default ``strength`` ``"subtle"`` and ``weights``
    CRITIC_FAMILY_WEIGHTS, the critic's training draws) that says only whether each mask changed:
    the corrupted masks (B, K, S, S) bool and (B,) bool (False only where nothing applies, e.g. an
    empty one-class mask whose neighbour is empty too)."""
    corrupted, family = probe_batch(masks, rng, **{"strength": "subtle", "weights": CRITIC_FAMILY_WEIGHTS, **options})
    return corrupted, family >= 0


def probe_batch(
    masks: np.ndarray,
    rng: np.random.Generator,
    *,
    families: Sequence[str] = CRITIC_FAMILIES,
    classes: Sequence[str] | None = None,
    strength: str = "probe",
    weights: Mapping[str, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One random corruption of each mask in a batch (B, K, S, S) bool, at ``strength`` (see
    :data:`maskaudit.corruptions.STRENGTHS`), families drawn uniformly or by ``weights``; the donor
    of ``foreign`` is the next sample's mask. Returns the corrupted masks (B, K, S, S) bool and
    (B,) int8, the index in CRITIC_FAMILIES of the family applied first (-1 where nothing applies)."""
    masks = np.asarray(masks, dtype=bool)
    corrupted = np.empty_like(masks)
    family = np.full(len(masks), -1, np.int8)
    for i, given in enumerate(masks):
        donor = masks[(i + 1) % len(masks)]
        corrupted[i], _, name = family_corruption(
            given, rng, families=families, classes=classes, strength=strength, weights=weights,
            donor=donor if donor.any() and not np.array_equal(donor, given) else None,
        )
        family[i] = CRITIC_FAMILIES.index(name) if name else -1
    return corrupted, family


def probe_reach(masks: np.ndarray, probes: np.ndarray) -> np.ndarray:
    """(B,) how far each probe (B, K, S, S) bool moves its mask (B, K, S, S) bool: the largest distance,
    in working px, from a changed pixel to the mask's outline over classes; 0 where nothing changed and
    inf where a class gained pixels from nothing. Smoothing a round outline moves it by a pixel or two,
    a spurious blob far from the structure by its whole distance."""
    reach = np.zeros(len(masks))
    for i, (given, probe) in enumerate(zip(np.asarray(masks, bool), np.asarray(probes, bool))):
        for mask, changed in zip(given, given ^ probe):
            if not changed.any():
                continue
            if not mask.any():
                reach[i] = np.inf
                break
            box = mask_box(mask | changed, 0)  # holds every outline pixel: the distances in it are exact
            outline = mask[box] & ~ndimage.binary_erosion(mask[box])
            reach[i] = max(reach[i], float(ndimage.distance_transform_edt(~outline)[changed[box]].max()))
    return reach


def ranking_loss(t_given: torch.Tensor, t_corrupted: torch.Tensor, changed: torch.Tensor) -> torch.Tensor:
    """Logistic ranking loss of the critic, a scalar: each given mask should score above its own
    corrupted copy (softplus(t_corrupted - t_given)), and, so that scores compare across images,
    given masks above 0 and corrupted ones below (softplus(-t_given), softplus(t_corrupted)).

    t_given, t_corrupted: (B,) raw QAM scores; changed: (B,) bool, the pairs that count.
    """
    weight = changed.float()
    if weight.sum() == 0:
        return t_given.sum() * 0.0
    pairwise = F.softplus(t_corrupted - t_given)
    pointwise = 0.5 * (F.softplus(-t_given) + F.softplus(t_corrupted))
    return ((pairwise + pointwise) * weight).sum() / weight.sum()

