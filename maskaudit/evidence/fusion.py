"""Fusion: one suspicion score from all the evidence, with weights learned on the dataset itself.

The given masks (mostly right) are the negatives, and one synthetic corruption of each (a probe,
certainly wrong) the positives. A logistic regression on robust z-scores of the evidence learns
which evidence separates them *on this dataset*: where the segmenter fits the labels, its
disagreement; where it does not, the critic, the image edges and the priors. Its weights are
held non-negative: every feature is oriented so that more means worse, and a negative weight
could only come from features that overlap. Every mask is scored by a model that did not see it.

A mask is wrong in one way at a time, and each way shows in different evidence: an eroded mask
is too small and its rims disagree with the segmenter, a dilated one is too large, a shifted one
sits off the image's edges. So, given the probes' corruption families, one model is learned per
family (an *expert*: that family's probes against all given masks), and the suspicion is the log
of the experts' mean odds: high when any one expert recognises its kind of error.
The **self-check** is the AUROC of probes against the given masks, each weighted by its
estimated probability of being clean: an estimate of how well the ranking finds wrong masks in
this dataset.

Shape key: N given masks, M probes, F evidence features.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import logsumexp
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

FOLDS = 5
MIN_PER_CLASS = 10   # fewer probes or given masks than this: no learned fusion (equal weights)
SCORE_CHUNK = 16_384  # given masks scored at a time beyond the fitted rows
RIDGE = 25.0         # ridge penalty on the weights, worth this many rows: spreads weight over overlapping
                     # evidence, and a larger dataset outweighs it


@dataclass(frozen=True)
class Fusion:
    """The learned combination, scores out of fold."""

    suspicion: np.ndarray             # (N,) score of 'bad label' for the given masks (higher = worse)
    probe_scores: np.ndarray          # (M,) the same for the probes, by the same cross-validated models
    weights: dict[str, float]         # per evidence feature, the logistic models' mean weight (>= 0) on its robust z-score
    learned: bool = True              # False: too few samples, the scores are mean z-scores, not log-odds
    experts: int = 1                  # models learned, one per probe family with enough probes


@dataclass(frozen=True)
class _Linear:
    """A fitted linear score x @ weights + bias."""

    weights: np.ndarray  # (F,) >= 0
    bias: float

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        return x @ self.weights + self.bias


def _fit(x: np.ndarray, y: np.ndarray) -> _Linear:
    """Class-balanced logistic regression with non-negative weights and a ridge penalty that shrinks
    as rows are added: RIDGE / rows (the sample weights sum to 1; the rows are the given masks and
    this expert's probes, four fifths of them within a fold)."""
    penalty = RIDGE / max(len(y), 1)
    sample_weight = np.where(y == 1, 0.5 / max(y.sum(), 1), 0.5 / max((1 - y).sum(), 1))
    sign = 2 * y - 1

    def loss(params: np.ndarray) -> tuple[float, np.ndarray]:
        margin = sign * (x @ params[:-1] + params[-1])
        value = np.sum(sample_weight * np.logaddexp(0, -margin)) + 0.5 * penalty * params[:-1] @ params[:-1]
        slope = -sample_weight * sign / (1 + np.exp(np.clip(margin, -50, 50)))
        gradient = np.r_[x.T @ slope + penalty * params[:-1], slope.sum()]
        return value, gradient

    bounds = [(0, None)] * x.shape[1] + [(None, None)]
    params = minimize(loss, np.zeros(x.shape[1] + 1), jac=True, method="L-BFGS-B", bounds=bounds).x
    return _Linear(weights=params[:-1], bias=float(params[-1]))


@dataclass(frozen=True)
class _Experts:
    """One linear model per corruption family; the score is the log of their mean odds."""

    models: tuple[_Linear, ...]

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        return _mean_log_odds(np.stack([model.decision_function(x) for model in self.models]))


def _mean_log_odds(scores: np.ndarray) -> np.ndarray:
    """(R,) log of the mean odds of (E, R) log-odds."""
    return logsumexp(scores, axis=0) - np.log(len(scores))


def _expert_probes(families: np.ndarray | None, count: int) -> list[np.ndarray]:
    """(M,) bool rows of the probes each expert learns from: one per family with at least MIN_PER_CLASS
    probes, the smaller families pooled into one more if together they reach it; probes of family -1
    (nothing could corrupt them) into none. Without ``families``, or with no family that large, one
    expert learns from every probe."""
    if families is None:
        return [np.ones(count, bool)]
    families = np.asarray(families)
    labels, counts = np.unique(families[families >= 0], return_counts=True)
    large = labels[counts >= MIN_PER_CLASS]
    groups = [families == label for label in large]
    rest = (families >= 0) & ~np.isin(families, large)
    if rest.sum() >= MIN_PER_CLASS:
        groups.append(rest)
    return groups or [np.ones(count, bool)]


def _matrix(evidence: dict[str, np.ndarray], names: tuple[str, ...], rows=slice(None)) -> np.ndarray:
    """(R, F) float64 of ``evidence[name][rows]`` per column, non-finite values as 0."""
    return np.nan_to_num(np.column_stack([np.asarray(evidence[name][rows], dtype=np.float64) for name in names]),
                         copy=False)


def _robust_scale(given: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(F,) centre and scale of the given masks' evidence (R, F): median and 1.4826 MAD (or std if 0)."""
    centre = np.median(given, axis=0)
    scale = 1.4826 * np.median(np.abs(given - centre), axis=0)
    return centre, np.where(scale > 1e-9, scale, np.maximum(given.std(axis=0), 1e-9))


def _standardise(values: np.ndarray, centre: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``values`` (., F) on the robust z scale of (centre, scale), clipped to +-10, in place."""
    values -= centre
    values /= scale
    return np.clip(values, -10, 10, out=values)


def _out_of_fold(negatives: np.ndarray, probes: np.ndarray, *, seed: int) -> np.ndarray:
    """(n + M,) the score of every negative and probe, in that order, by a model that did not see it."""
    x = np.concatenate([negatives, probes])
    y = np.r_[np.zeros(len(negatives)), np.ones(len(probes))]
    scores = np.zeros(len(x))
    for train_rows, test_rows in StratifiedKFold(FOLDS, shuffle=True, random_state=seed).split(x, y):
        scores[test_rows] = _fit(x[train_rows], y[train_rows]).decision_function(x[test_rows])
    return scores


def _learn_experts(x_given: np.ndarray, x_probe: np.ndarray, groups: list[np.ndarray], *, seed: int
                   ) -> tuple[_Experts, np.ndarray, np.ndarray]:
    """The experts fitted on all rows, and the out-of-fold scores of the given masks (n,) and the
    probes (M,): each expert scores its own probes out of fold and the others, which it never saw,
    with its full fit."""
    models, given_scores, probe_scores = [], [], []
    for rows in groups:
        own = x_probe[rows]
        scores = _out_of_fold(x_given, own, seed=seed)
        model = _fit(np.concatenate([x_given, own]), np.r_[np.zeros(len(x_given)), np.ones(len(own))])
        probe_score = model.decision_function(x_probe)
        probe_score[rows] = scores[len(x_given) :]
        models.append(model)
        given_scores.append(scores[: len(x_given)])
        probe_scores.append(probe_score)
    return _Experts(tuple(models)), _mean_log_odds(np.stack(given_scores)), _mean_log_odds(np.stack(probe_scores))


def fuse(given: dict[str, np.ndarray], probes: dict[str, np.ndarray], *, seed: int = 0,
         fit_rows: np.ndarray | None = None, families: np.ndarray | None = None) -> Fusion:
    """Learn the fusion from evidence of the given masks (each (N,)) and of their probes (each (M,),
    same keys; higher = worse) and score both, each sample by a model that did not train on it
    (5-fold). Every given mask is a negative: the few bad ones among them only blur the boundary.
    ``families`` (M,) int, each probe's corruption family (-1: not corrupted): one expert per family
    (see :func:`_expert_probes`); without it, one model for all probes.
    ``fit_rows`` (R,), sorted positions among the given masks: only those are learned from (and scaled
    on); the others are scored, chunk by chunk, by the models fitted on all R and the probes, which
    never saw them. With fewer than MIN_PER_CLASS of either, the suspicion is the mean z-score.
    Deterministic for a seed.
    """
    names = tuple(given)
    count = len(given[names[0]]) if names else 0
    x_given = _matrix(given, names, slice(None) if fit_rows is None else fit_rows)
    centre, scale = _robust_scale(x_given)
    x_given, x_probe = _standardise(x_given, centre, scale), _standardise(_matrix(probes, names), centre, scale)
    if min(len(x_given), len(x_probe)) < MIN_PER_CLASS:
        score = lambda x: x.mean(axis=1)  # noqa: E731 - the unlearned fallback
        fitted, probe_scores = score(x_given), score(x_probe)
        weights, learned, experts = {name: 1.0 / len(names) for name in names}, False, 0
    else:
        groups = _expert_probes(families, len(x_probe))
        model, fitted, probe_scores = _learn_experts(x_given, x_probe, groups, seed=seed)
        score, experts, learned = model.decision_function, len(groups), True
        mean_weights = np.mean([expert.weights for expert in model.models], axis=0)
        weights = {name: float(weight) for name, weight in zip(names, mean_weights)}
    if fit_rows is None:
        suspicion = fitted
    else:  # the rows not fitted on, a chunk at a time: never an (N, F) table
        suspicion = np.empty(count)
        suspicion[fit_rows] = fitted
        rest = np.ones(count, bool)
        rest[fit_rows] = False
        for start in range(0, count, SCORE_CHUNK):
            rows = start + np.flatnonzero(rest[start : start + SCORE_CHUNK])
            if len(rows):
                suspicion[rows] = score(_standardise(_matrix(given, names, rows), centre, scale))
    return Fusion(suspicion=suspicion, probe_scores=probe_scores, weights=weights, learned=learned, experts=experts)


def bad_probability(fusion: Fusion) -> np.ndarray | None:
    """(N,) each given mask's estimated probability of being bad, in [0, 1]; None if the fusion was
    not learned.

    The learned scores are out-of-fold log-odds that a mask is a probe rather than a given mask.
    Read as learning from positive (the probes) and unlabelled (the given masks) examples (Elkan &
    Noto, KDD 2008): with c the mean probability over the probes, a given mask is bad with
    probability (1 - c) / c * odds, clipped to 1.
    """
    if not fusion.learned or not len(fusion.probe_scores):
        return None
    c = float(np.mean(1.0 / (1.0 + np.exp(-fusion.probe_scores))))
    if c <= 0.0:
        return None
    return np.minimum((1.0 - c) / c * np.exp(np.clip(fusion.suspicion, -50, 50)), 1.0)


def bad_share(fusion: Fusion) -> float:
    """Estimated share of bad masks among the given ones, in [0, 1] (NaN if the fusion was not
    learned): the mean of :func:`bad_probability`. It assumes bad given masks look like probes; real
    errors subtler than the probes are undercounted (on the benchmark copies with 40 % corrupted:
    0.17-0.47), but a dataset whose masks all look unlike every probe reads near 0 (clean JSRT:
    0.001-0.005).
    """
    probability = bad_probability(fusion)
    return float("nan") if probability is None else float(np.mean(probability))


def self_check_auroc(fusion: Fusion, *, counted: np.ndarray | None = None) -> float:
    """Estimated AUROC of the ranking on this dataset: the probes against the given masks, both
    scored out of fold, each given mask weighted by its estimated probability of being clean
    (1 - :func:`bad_probability`), so that the bad masks among them count as little as the fusion
    believes them bad, and no threshold decides. Where it believes almost every mask bad (weights
    summing to under MIN_PER_CLASS: a fusion that cannot tell probes from given masks), every given
    mask counts fully. ``counted`` (P,) bool keeps only some probes (None: all), e.g. those that
    are errors to the eye. NaN if the fusion was not learned or no probe is counted."""
    probability = bad_probability(fusion)
    probes = fusion.probe_scores if counted is None else fusion.probe_scores[np.asarray(counted, bool)]
    if probability is None or len(probes) == 0:
        return float("nan")
    clean_weight = 1.0 - probability
    if clean_weight.sum() < MIN_PER_CLASS:
        clean_weight = np.ones_like(clean_weight)
    labels = np.r_[np.zeros(len(clean_weight)), np.ones(len(probes))]
    return float(roc_auc_score(labels, np.r_[fusion.suspicion, probes],
                               sample_weight=np.r_[clean_weight, np.ones(len(probes))]))
