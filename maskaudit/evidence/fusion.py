"""Fusion: one suspicion score from all the evidence, with weights learned on the dataset itself.

The given masks (mostly right) are the negatives, and one synthetic corruption of each (a probe,
certainly wrong) the positives. A logistic regression on robust z-scores of the evidence learns
which evidence separates them *on this dataset*: where the segmenter fits the labels, its
disagreement; where it does not, the critic, the image edges and the priors. Given masks that
already look like probes (the real bad labels among them) are dropped from the negatives once
and the model refitted. Its cross-validated AUROC on the probes is the **self-check**: an
estimate of how well the score finds corrupted masks in this dataset.

Shape key: N given masks, M probes, F evidence features.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict

FOLDS = 5
MIN_PER_CLASS = 10   # fewer probes or given masks than this: no learned fusion (equal weights)


@dataclass(frozen=True)
class Fusion:
    """The learned combination and what it says about itself."""

    suspicion: np.ndarray             # (N,) out-of-fold score of 'bad label' for the given masks (higher = worse)
    weights: dict[str, float]         # per evidence feature, the logistic model's coefficient on its robust z-score
    self_check_auroc: float           # cross-validated AUROC, probes against the kept given masks (NaN: not fitted)
    kept_negatives: int               # given masks used as negatives after dropping likely-bad ones


def _model() -> LogisticRegression:
    return LogisticRegression(C=0.5, class_weight="balanced", max_iter=2000)


def _robust_standardise(given: np.ndarray, probes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both (., F) arrays on the given masks' robust z scale (median 0, 1.4826 MAD 1), clipped to +-10."""
    centre = np.median(given, axis=0)
    scale = 1.4826 * np.median(np.abs(given - centre), axis=0)
    scale = np.where(scale > 1e-9, scale, np.maximum(given.std(axis=0), 1e-9))
    return tuple(np.clip((values - centre) / scale, -10, 10) for values in (given, probes))


def _out_of_fold(negatives: np.ndarray, probes: np.ndarray, *, seed: int) -> np.ndarray:
    """(n + M,) the score of every negative and probe, in that order, by a model that did not see it."""
    x = np.concatenate([negatives, probes])
    y = np.r_[np.zeros(len(negatives)), np.ones(len(probes))]
    folds = StratifiedKFold(FOLDS, shuffle=True, random_state=seed)
    return cross_val_predict(_model(), x, y, cv=folds, method="decision_function")


def fuse(given: dict[str, np.ndarray], probes: dict[str, np.ndarray], *, seed: int = 0) -> Fusion:
    """Learn the fusion from evidence of the given masks (each (N,)) and of their probes (each (M,),
    same keys; higher = worse) and score the given masks, each by models that did not train on it.

    The suspicion comes from a logistic regression with every given mask a negative (the few bad
    ones among them only blur the boundary). The self-check refits it without the given masks that
    score like probes (most of them real bad labels) and cross-validates it on the rest, so that
    the estimate is not dragged down by the dataset's own errors. Deterministic for a seed.
    """
    names = tuple(given)
    x_given = np.nan_to_num(np.column_stack([given[name] for name in names]).astype(np.float64))
    x_probe = np.nan_to_num(np.column_stack([probes[name] for name in names]).astype(np.float64))
    x_given, x_probe = _robust_standardise(x_given, x_probe)
    if min(len(x_given), len(x_probe)) < MIN_PER_CLASS:
        return Fusion(suspicion=x_given.mean(axis=1), weights={name: 1.0 / len(names) for name in names},
                      self_check_auroc=float("nan"), kept_negatives=len(x_given))

    scores = _out_of_fold(x_given, x_probe, seed=seed)
    suspicion = scores[: len(x_given)]
    kept = suspicion < np.median(scores[len(x_given) :])
    if kept.sum() < MIN_PER_CLASS:
        kept = np.ones(len(x_given), bool)
    check_scores = _out_of_fold(x_given[kept], x_probe, seed=seed)
    y = np.r_[np.zeros(kept.sum()), np.ones(len(x_probe))]
    linear = _model().fit(np.concatenate([x_given, x_probe]), np.r_[np.zeros(len(x_given)), np.ones(len(x_probe))])
    return Fusion(
        suspicion=suspicion,
        weights={name: float(weight) for name, weight in zip(names, linear.coef_[0])},
        self_check_auroc=float(roc_auc_score(y, check_scores)),
        kept_negatives=int(kept.sum()),
    )
