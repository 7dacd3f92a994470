"""Per-class scaling of evidence: each class measured in units of its own spread over the
dataset's given masks, then the worst class taken.

Shape key: N masks, K classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClassScale:
    """Per-class centre and spread of one image-evidence feature over the given masks."""

    centre: np.ndarray  # (K,) median over the masks where the class is present
    scale: np.ndarray   # (K,) 1.4826 * MAD there (the standard deviation if the MAD is 0; 1 if unseen)


def fit_class_scale(per_class: np.ndarray) -> ClassScale:
    """The :class:`ClassScale` of an evidence array (N, K), NaN where a class is empty."""
    values = np.asarray(per_class, dtype=np.float64)
    seen = np.isfinite(values).any(axis=0)
    filled = np.where(seen, values, 0.0)
    centre = np.where(seen, np.nanmedian(filled, axis=0), 0.0)
    mad = 1.4826 * np.nanmedian(np.abs(filled - centre), axis=0)
    spread = np.where(mad > 1e-9, mad, np.nanstd(filled, axis=0))
    return ClassScale(centre=centre, scale=np.where(seen & (spread > 1e-9), spread, 1.0))


def worst_class(per_class: np.ndarray, scale: ClassScale, *, direction: float = 1.0) -> np.ndarray:
    """(N,) the worst class's evidence in units of its own class's spread over the given masks, so
    that a thin structure's noisy profile does not drown a wrong large one; 0 for an empty mask.
    ``direction`` -1 takes the lowest value as the worst (e.g. a mask too small)."""
    z = direction * (np.asarray(per_class, dtype=np.float64) - scale.centre) / scale.scale
    present = np.isfinite(z)
    return np.where(present.any(axis=1), np.max(np.where(present, z, -np.inf), axis=1), 0.0)
