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
from sklearn.ensemble import HistGradientBoostingClassifier
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
    model: str                        # "logistic" or "boosting": the one with the better cross-validated AUROC
    self_check_auroc: float           # cross-validated AUROC, probes against the kept given masks (NaN: not fitted)
    kept_negatives: int               # given masks used as negatives after dropping likely-bad ones


def _model(name: str, seed: int):
    if name == "logistic":
        return LogisticRegression(C=0.5, class_weight="balanced", max_iter=2000)
    return HistGradientBoostingClassifier(max_depth=3, max_iter=150, learning_rate=0.05, l2_regularization=1.0,
                                          min_samples_leaf=10, class_weight="balanced", random_state=seed)


def _robust_standardise(given: np.ndarray, probes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both (., F) arrays on the given masks' robust z scale (median 0, 1.4826 MAD 1), clipped to +-10."""
    centre = np.median(given, axis=0)
    scale = 1.4826 * np.median(np.abs(given - centre), axis=0)
    scale = np.where(scale > 1e-9, scale, np.maximum(given.std(axis=0), 1e-9))
    return tuple(np.clip((values - centre) / scale, -10, 10) for values in (given, probes))


def _out_of_fold(name: str, negatives: np.ndarray, probes: np.ndarray, others: np.ndarray, *,
                 seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores of every negative and probe by a model that did not see it ((n + M,), in that order), and
    of ``others`` (given masks outside the training set) averaged over the fold models."""
    x = np.concatenate([negatives, probes])
    y = np.r_[np.zeros(len(negatives)), np.ones(len(probes))]
    scores, other_scores = np.zeros(len(x)), np.zeros(len(others))
    for train_rows, test_rows in StratifiedKFold(FOLDS, shuffle=True, random_state=seed).split(x, y):
        model = _model(name, seed).fit(x[train_rows], y[train_rows])
        scores[test_rows] = model.decision_function(x[test_rows])
        if len(others):
            other_scores += model.decision_function(others) / FOLDS
    return scores, other_scores


def fuse(given: dict[str, np.ndarray], probes: dict[str, np.ndarray], *, seed: int = 0) -> Fusion:
    """Learn the fusion from evidence of the given masks (each (N,)) and of their probes (each (M,),
    same keys; higher = worse) and score the given masks, each by models that did not train on it.

    Pass 1 (logistic, every given mask a negative) finds the given masks that score like probes;
    they are dropped from the negatives. Pass 2 cross-validates a logistic regression and a small
    gradient-boosted tree ensemble on the rest and keeps the one with the higher AUROC (the
    logistic one unless the trees win by 0.01). Deterministic for a seed.
    """
    names = tuple(given)
    x_given = np.nan_to_num(np.column_stack([given[name] for name in names]).astype(np.float64))
    x_probe = np.nan_to_num(np.column_stack([probes[name] for name in names]).astype(np.float64))
    x_given, x_probe = _robust_standardise(x_given, x_probe)
    if min(len(x_given), len(x_probe)) < MIN_PER_CLASS:
        return Fusion(suspicion=x_given.mean(axis=1), weights={name: 1.0 / len(names) for name in names},
                      model="mean", self_check_auroc=float("nan"), kept_negatives=len(x_given))

    scores, _ = _out_of_fold("logistic", x_given, x_probe, x_given[:0], seed=seed)
    kept = scores[: len(x_given)] < np.median(scores[len(x_given) :])
    if kept.sum() < MIN_PER_CLASS:
        kept = np.ones(len(x_given), bool)
    y = np.r_[np.zeros(kept.sum()), np.ones(len(x_probe))]
    results = {}
    for name in ("logistic", "boosting"):
        scores, dropped = _out_of_fold(name, x_given[kept], x_probe, x_given[~kept], seed=seed)
        results[name] = (float(roc_auc_score(y, scores)), scores, dropped)
    chosen = "boosting" if results["boosting"][0] > results["logistic"][0] + 0.01 else "logistic"
    auroc, scores, dropped = results[chosen]
    suspicion = np.empty(len(x_given))
    suspicion[kept], suspicion[~kept] = scores[: kept.sum()], dropped
    linear = _model("logistic", seed).fit(np.concatenate([x_given[kept], x_probe]), y)
    return Fusion(
        suspicion=suspicion,
        weights={name: float(weight) for name, weight in zip(names, linear.coef_[0])},
        model=chosen,
        self_check_auroc=auroc,
        kept_negatives=int(kept.sum()),
    )
