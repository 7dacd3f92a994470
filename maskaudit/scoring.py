"""One ``quality_score`` per sample, comparable across the whole dataset (higher = better label).

Each signal is turned into evidence of a bad label (higher = worse) and put on a robust z scale
(median 0, MAD-based unit) over the dataset, so that no signal's units dominate. The weighted sum
is the suspicion score that ranks the samples. A two-component Gaussian mixture on that score
then gives quality_score = P(label belongs to the clean component), so that 0.5 is a natural
threshold; when the data show no second component (a clean dataset) it falls back to a tail
probability, so only samples far from the rest drop below 0.5. The weights were chosen by
benchmarks/run_detection.py on corrupted JSRT copies (docs/BENCHMARKS.md).

Shape key: N samples, K classes, E epochs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from sklearn.mixture import GaussianMixture

if TYPE_CHECKING:
    from .signals import Signals
    from .train import TrainResult


@dataclass(frozen=True)
class ScoreWeights:
    """Weight of each signal's robust z-score in the suspicion score."""

    disagreement: float = 1.0   # 1 - mean per-class Dice(given mask, segmenter's mask)
    pixel_softmin: float = 2.0  # minus the soft minimum over pixels of p(given label): small confident errors
    boundary: float = 0.5       # log(1 + worst class's mean surface distance)
    late_loss: float = 0.25     # training loss over the last epochs (noisy labels are learned late)
    qam: float = 0.1            # minus the final QAM score t
    outlier: float = 0.0        # clustering outlier score: measured to add nothing (docs/BENCHMARKS.md)


LATE_EPOCH_FRACTION = 0.2       # "late" = the last 20 % of epochs (at least one)
TAIL_Z = 3.0                    # without a second component, suspicion z of 3 maps to quality 0.5
MIN_FOR_MIXTURE = 20            # fewer samples than this: tail probability only
BIC_MARGIN = 10.0               # the mixture must beat one Gaussian by this much BIC
MAX_COMPONENTS = 3              # clean plus up to two kinds of bad label
CLEAN_SPREAD = 2.0              # a component this many clean standard deviations above clean is bad
MIN_CLEAN_WEIGHT = 0.1          # the clean reference component holds at least this share of samples
SPREAD_FLOOR = 0.1              # no component is narrower than this share of the scores' robust spread
RANK_SHARE = 0.05               # share of quality_score that comes from the rank, to break ties


def _robust_scale(values: np.ndarray) -> float:
    """1.4826 * MAD of finite ``values`` (their standard deviation if the MAD is 0)."""
    scale = 1.4826 * float(np.median(np.abs(values - np.median(values))))
    return scale if scale > 1e-12 else float(values.std())


def robust_z(values: np.ndarray) -> np.ndarray:
    """(N,) values centred on their median and scaled by 1.4826 * MAD (or the std if MAD is 0)."""
    values = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=np.nanmedian(values) if np.isfinite(values).any() else 0.0)
    scale = _robust_scale(values)
    return (values - np.median(values)) / scale if scale > 1e-12 else np.zeros_like(values)


def evidence(signals: "Signals", result: "TrainResult", *, outlier_score: np.ndarray) -> dict[str, np.ndarray]:
    """Per-signal evidence of a bad label, each (N,), higher = worse."""
    epochs = result.history_loss.shape[0]
    late = max(1, int(round(epochs * LATE_EPOCH_FRACTION)))
    return {
        "disagreement": 1.0 - signals.dice.mean(axis=1),
        "pixel_softmin": -signals.softmin,
        "boundary": np.log1p(signals.boundary.max(axis=1)),
        "late_loss": np.nanmean(result.history_loss[-late:], axis=0),
        "qam": -signals.qam_score,
        "outlier": np.asarray(outlier_score, dtype=np.float64),
    }


def suspicion(evidence_by_signal: dict[str, np.ndarray], weights: ScoreWeights = ScoreWeights()) -> np.ndarray:
    """(N,) weighted sum of robust z-scores of the evidence (higher = more suspect)."""
    total, weight_sum = None, 0.0
    for name, values in evidence_by_signal.items():
        weight = getattr(weights, name)
        if weight == 0 or np.ptp(values) == 0:
            continue
        term = weight * robust_z(values)
        total = term if total is None else total + term
        weight_sum += weight
    count = len(next(iter(evidence_by_signal.values())))
    return np.zeros(count) if total is None else total / weight_sum


def quality_from_suspicion(score: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """(N,) quality in [0, 1], non-increasing in ``score``: P(clean) under a Gaussian mixture.

    Mixtures of 1 to MAX_COMPONENTS components are fitted and the best by BIC is kept. The clean
    reference is the lowest component holding at least MIN_CLEAN_WEIGHT of the samples; it and
    every component centred within CLEAN_SPREAD of its standard deviations are clean, the others
    are kinds of bad label (a few gross errors and a group of subtle ones make two bad components,
    as in the demo). Without a mixture clearly better than one Gaussian, or without a bad
    component, quality is a tail probability. Non-finite scores count as the median.
    """
    score = np.asarray(score, dtype=np.float64)
    finite = np.isfinite(score)
    if not finite.all():
        score = np.where(finite, score, np.median(score[finite]) if finite.any() else 0.0)
    tail = 1.0 / (1.0 + np.exp(np.clip(robust_z(score) - TAIL_Z, -50, 50)))
    if len(score) < MIN_FOR_MIXTURE or np.ptp(score) == 0:
        return tail
    column = score[:, None]
    fits = [GaussianMixture(k, random_state=seed, n_init=1 if k == 1 else 3).fit(column)
            for k in range(1, MAX_COMPONENTS + 1)]
    bics = [fit.bic(column) for fit in fits]
    best = int(np.argmin(bics))
    if best == 0 or bics[best] > bics[0] - BIC_MARGIN:
        return tail
    means = fits[best].means_[:, 0]
    # (floored, so that a component of identical scores, e.g. duplicated samples, is not a point)
    spreads = np.maximum(np.sqrt(fits[best].covariances_.reshape(-1)), SPREAD_FLOOR * _robust_scale(score))
    weights = fits[best].weights_
    # The clean reference is the lowest component holding at least MIN_CLEAN_WEIGHT of the samples
    # (a handful of unusually clean samples may form a tiny component further down). Components
    # centred within CLEAN_SPREAD of its standard deviations describe clean samples too: a
    # heavy-tailed clean population fits as a narrow plus a wide Gaussian.
    candidates = np.flatnonzero(weights >= MIN_CLEAN_WEIGHT)
    reference = candidates[np.argmin(means[candidates])]
    clean = means <= means[reference] + CLEAN_SPREAD * spreads[reference]
    if clean.all():
        return tail
    posterior = fits[best].predict_proba(column)[:, clean].sum(axis=1)
    # A 1-D mixture with unequal variances is not monotone in the tails: below the clean centre
    # every sample is clean, and above it P(clean) may only fall.
    posterior[score <= means[reference]] = 1.0
    order = np.argsort(score, kind="stable")
    posterior[order] = np.minimum.accumulate(posterior[order])
    # Posteriors saturate at 0 and 1; a small share of the rank keeps every sample's score distinct.
    rank_share = 1.0 - (np.argsort(order, kind="stable") + 0.5) / len(score)
    return np.clip((1 - RANK_SHARE) * posterior + RANK_SHARE * rank_share, 0.0, 1.0)


@dataclass(frozen=True)
class Scores:
    """The scorer's output, one value per sample."""

    quality: np.ndarray                  # (N,) exported quality_score in [0, 1], higher = better label
    suspicion: np.ndarray                # (N,) weighted robust-z sum that orders the ranking
    evidence: dict[str, np.ndarray]      # per-signal evidence, each (N,), higher = worse


def quality_scores(signals: "Signals", result: "TrainResult", *, outlier_score: np.ndarray,
                   weights: ScoreWeights = ScoreWeights(), seed: int = 0) -> Scores:
    """Score every sample: evidence per signal, their weighted suspicion, and quality_score."""
    evidence_by_signal = evidence(signals, result, outlier_score=outlier_score)
    score = suspicion(evidence_by_signal, weights)
    return Scores(quality=quality_from_suspicion(score, seed=seed), suspicion=score, evidence=evidence_by_signal)
