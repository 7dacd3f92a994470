"""Dataset priors: how unusual is a mask for this dataset, judged from all the given masks?

Two numbers per mask. ``presence_surprise``: -log of the probability, over the dataset, of each
class being present or absent as it is here, summed over classes (an empty mask where 99 % of
the masks have the structure scores 4.6). ``shape_outlier``: the mean distance, in robust units,
from the mask's shape descriptors (area, centroid, components, solidity, extent per class; see
:func:`maskaudit.metrics.shape_descriptors`) to its nearest given masks, its own excluded: a
nearest-neighbour score, so that several normal modes (small and large nodules, say) are all
normal.

Shape key: N given masks, M masks to judge, K classes, D descriptors per class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.neighbors import NearestNeighbors

NEIGHBOURS = 10
D = 6  # values per class in maskaudit.metrics.shape_descriptors


@dataclass(frozen=True)
class Priors:
    """What the given masks say is normal."""

    presence_rate: np.ndarray    # (K,) share of given masks in which each class is present
    centre: np.ndarray           # (K * D,) median of the descriptors
    scale: np.ndarray            # (K * D,) robust spread of the descriptors (> 0)
    neighbours: NearestNeighbors  # fitted on the given masks' scaled descriptors
    count: int                   # N


def _scaled_descriptors(descriptors: np.ndarray) -> np.ndarray:
    """Descriptors with area fractions on a log scale and component counts as log(1 + n)."""
    values = np.asarray(descriptors, dtype=np.float64).reshape(len(descriptors), -1, D).copy()
    values[:, :, 0] = np.log(values[:, :, 0] + 1e-4)
    values[:, :, 3] = np.log1p(values[:, :, 3])
    return values.reshape(len(descriptors), -1)


def fit_priors(descriptors: np.ndarray) -> Priors:
    """Learn the priors from the given masks' shape descriptors (N, K * D)."""
    values = _scaled_descriptors(descriptors)
    areas = np.asarray(descriptors).reshape(len(descriptors), -1, D)[:, :, 0]
    centre = np.median(values, axis=0)
    scale = 1.4826 * np.median(np.abs(values - centre), axis=0)
    scale = np.where(scale > 1e-6, scale, np.maximum(values.std(axis=0), 1e-2))
    neighbours = NearestNeighbors(n_neighbors=min(NEIGHBOURS + 1, len(values))).fit((values - centre) / scale)
    return Priors(presence_rate=(areas > 0).mean(axis=0), centre=centre, scale=scale,
                  neighbours=neighbours, count=len(values))


def prior_evidence(priors: Priors, descriptors: np.ndarray, *, own: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """``presence_surprise`` and ``shape_outlier`` (M,) for masks with descriptors (M, K * D).

    ``own`` (M,) int: the index among the given masks of each mask's own image (its own given
    mask, or the one it was corrupted from), left out of its neighbours; -1 or None: none.
    """
    descriptors = np.asarray(descriptors, dtype=np.float64)
    present = descriptors.reshape(len(descriptors), -1, D)[:, :, 0] > 0
    # Laplace-smoothed rates, so that a class present in every given mask does not give infinity
    rate = (priors.presence_rate * priors.count + 0.5) / (priors.count + 1.0)
    surprise = -np.where(present, np.log(rate), np.log1p(-rate)).sum(axis=1)
    scaled = (_scaled_descriptors(descriptors) - priors.centre) / priors.scale
    k = priors.neighbours.n_neighbors
    distances, indices = priors.neighbours.kneighbors(scaled, n_neighbors=k)
    own = np.full(len(descriptors), -1) if own is None else np.asarray(own)
    not_own = indices != own[:, None]
    # the k - 1 nearest that are not the mask's own image
    kept = np.where(not_own, distances, np.nan)
    outlier = np.array([np.mean(row[np.isfinite(row)][: k - 1]) for row in kept])
    return {"presence_surprise": surprise, "shape_outlier": outlier}
