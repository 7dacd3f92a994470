"""One ``quality_score`` per sample, comparable across the whole dataset (higher = better label).

Each family of evidence (:mod:`maskaudit.evidence`: segmenter disagreement, the label critic,
image edges and contrast, dataset priors) gives per-sample numbers, higher = worse, for every
given mask and for one synthetic corruption of it (a probe). The fusion learns on this dataset
how to combine them, one expert per corruption family (:mod:`maskaudit.evidence.fusion`); its
output, the suspicion, orders the ranking. A Gaussian mixture on the suspicion then gives
quality_score = P(label belongs to the clean component), so that 0.5 is a natural threshold; when
the data show no second component (a clean dataset) it falls back to a tail probability, so only
samples far from the rest drop below 0.5. A 1-D mixture cannot tell a group of bad masks from the
long upper tail of a clean population; where the masks it flags look clean to the fusion itself
(their median estimated probability of being bad is low), quality_score is 1 - that probability.

Shape key: N samples, K classes, E epochs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from sklearn.mixture import GaussianMixture

from .evidence.fusion import Fusion, bad_probability, bad_share, fuse, self_check_auroc
from .evidence.priors import fit_priors, prior_evidence
from .evidence.scaling import fit_class_scale, worst_class
from .pages import new_memmap, release_pages
from .signals import release_signals, take_rows

if TYPE_CHECKING:
    from .signals import Signals


TAIL_Z = 3.0                    # without a second component, suspicion z of 3 (upper_tail_z) maps to quality 0.5
MIN_FOR_MIXTURE = 20            # fewer samples than this: tail probability only
BIC_MARGIN = 10.0               # the mixture must beat one Gaussian by this much BIC
MAX_COMPONENTS = 3              # clean plus up to two kinds of bad label
CLEAN_SPREAD = 2.0              # a component this many clean standard deviations above clean is bad
MIN_CLEAN_WEIGHT = 0.1          # the clean reference component holds at least this share of samples
CLEAN_QUANTILE = 0.3            # the sample at this quantile of the suspicion is taken as clean
SPREAD_FLOOR = 0.1              # no component is narrower than this share of the scores' robust spread
RANK_SHARE = 0.05               # share of quality_score that comes from the rank, to break ties
CLEAN_BAD_SHARE = 0.02          # estimated share of bad masks under which a dataset reads as clean
FLAGGED_BAD_FLOOR = 0.15        # the mixture's suspects must have at least this median estimated P(bad)
SELF_CHECK_REACH_PX = 3.0       # probes that move no part of the outline this far (working px) are no errors to the eye
FIT_ROWS = 20_000               # the dataset-level models (priors, scales, fusion, mixture) learn from at most this many samples
EVIDENCE_CHUNK = 16_384         # samples whose evidence is computed at a time


def reference_rows(count: int, *, seed: int = 0) -> np.ndarray:
    """(R,) sorted positions of the samples the dataset-level models are fitted on: every one of
    ``count`` up to FIT_ROWS, else FIT_ROWS drawn at random (deterministic for a seed), so that the
    memory of scoring 200,000 slices does not grow with them."""
    if count <= FIT_ROWS:
        return np.arange(count)
    return np.sort(np.random.default_rng([seed, count]).choice(count, FIT_ROWS, replace=False))


def _robust_scale(values: np.ndarray) -> float:
    """1.4826 * MAD of finite ``values`` (their standard deviation if the MAD is 0)."""
    scale = 1.4826 * float(np.median(np.abs(values - np.median(values))))
    return scale if scale > 1e-12 else float(values.std())


def robust_z(values: np.ndarray) -> np.ndarray:
    """(N,) values centred on their median and scaled by 1.4826 * MAD (or the std if MAD is 0)."""
    values = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=np.nanmedian(values) if np.isfinite(values).any() else 0.0)
    scale = _robust_scale(values)
    return (values - np.median(values)) / scale if scale > 1e-12 else np.zeros_like(values)


def upper_tail_z(values: np.ndarray) -> np.ndarray:
    """(N,) values centred on their median and scaled by the spread of the upper half alone (the
    median distance above the median, / 0.6745: the standard deviation for a normal population).
    The fused suspicion is a log of mean odds, skewed upwards, so a tail test in units of the whole
    population's MAD flags more of a clean dataset than its upper half warrants. Falls back to
    :func:`robust_z` where the upper half has no spread."""
    values = np.asarray(values, dtype=np.float64)
    centre = float(np.median(values))
    above = values[values > centre] - centre
    scale = float(np.median(above)) / 0.6745 if len(above) else 0.0
    return (values - centre) / scale if scale > 1e-12 else robust_z(values)


def quality_from_suspicion(score: np.ndarray, *, seed: int = 0, mixture: bool = True) -> np.ndarray:
    """(N,) quality in [0, 1], non-increasing in ``score``: P(clean) under a Gaussian mixture.

    Mixtures of 1 to MAX_COMPONENTS components are fitted and the best by BIC is kept. The clean
    reference is the lowest component holding at least MIN_CLEAN_WEIGHT of the samples, or the
    component of the sample at CLEAN_QUANTILE if that lies higher; it and
    every component centred within CLEAN_SPREAD of its standard deviations are clean, the others
    are kinds of bad label (a few gross errors and a group of subtle ones make two bad components,
    as in the demo). Without a mixture clearly better than one Gaussian, or without a bad
    component, quality is a tail probability. Non-finite scores count as the median.
    ``mixture=False`` (a dataset that reads as clean, see quality_scores) gives the tail probability:
    a clean population's heavy tail would otherwise fit as a component of bad labels.
    """
    score = np.asarray(score, dtype=np.float64)
    finite = np.isfinite(score)
    if not finite.all():
        score = np.where(finite, score, np.median(score[finite]) if finite.any() else 0.0)
    tail = 1.0 / (1.0 + np.exp(np.clip(upper_tail_z(score) - TAIL_Z, -50, 50)))
    if not mixture or len(score) < MIN_FOR_MIXTURE or np.ptp(score) == 0:
        return tail
    column = score[reference_rows(len(score), seed=seed), None]  # fitted on at most FIT_ROWS samples
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
    # (a handful of unusually clean samples may form a tiny component further down), or, if higher,
    # the component of the sample at the CLEAN_QUANTILE: the least suspect 30 % of the labels are
    # right, so a clean population that splits into two groups (the learned fusion can separate,
    # say, empty from full masks) stays clean.
    # Components centred within CLEAN_SPREAD of its standard deviations describe clean samples too:
    # a heavy-tailed clean population fits as a narrow plus a wide Gaussian.
    candidates = np.flatnonzero(weights >= MIN_CLEAN_WEIGHT)
    lowest = candidates[np.argmin(means[candidates])]
    anchor = int(np.argmax(fits[best].predict_proba([[np.quantile(score, CLEAN_QUANTILE)]])[0]))
    reference = anchor if means[anchor] > means[lowest] else lowest
    clean = means <= means[reference] + CLEAN_SPREAD * spreads[reference]
    if clean.all():
        return tail
    posterior = np.concatenate([fits[best].predict_proba(score[start : start + EVIDENCE_CHUNK, None])[:, clean].sum(axis=1)
                                for start in range(0, len(score), EVIDENCE_CHUNK)])
    # A 1-D mixture with unequal variances is not monotone in the tails: below the clean centre
    # every sample is clean, and above it P(clean) may only fall.
    posterior[score <= means[reference]] = 1.0
    order = np.argsort(score, kind="stable")
    posterior[order] = np.minimum.accumulate(posterior[order])
    return _with_rank(posterior, order)


def quality_from_bad_probability(probability: np.ndarray, score: np.ndarray) -> np.ndarray:
    """(N,) quality in [0, 1], non-increasing in ``score``: 1 - ``probability`` (N,), each mask's
    estimated probability of being bad (:func:`maskaudit.evidence.fusion.bad_probability`, itself
    increasing in ``score``), with the RANK_SHARE of the rank."""
    return _with_rank(1.0 - probability, np.argsort(score, kind="stable"))


def _with_rank(clean_probability: np.ndarray, order: np.ndarray) -> np.ndarray:
    """(N,) (1 - RANK_SHARE) * ``clean_probability`` + RANK_SHARE * the rank share, given ``order``
    (N,), the positions sorted by rising suspicion: probabilities saturate at 0 and 1, and a small
    share of the rank keeps every sample's quality distinct."""
    rank_share = 1.0 - (np.argsort(order, kind="stable") + 0.5) / len(order)
    return np.clip((1 - RANK_SHARE) * clean_probability + RANK_SHARE * rank_share, 0.0, 1.0)


def suspect_rule(quality: np.ndarray, probability: np.ndarray | None) -> str:
    """Which rule should set the suspects, given the mixture's (or tail's) ``quality`` (N,) and each
    mask's estimated P(bad) ``probability`` (N,) or None: ``"mixture"``, or ``"bad probability"`` when
    the masks under 0.5 look clean to the fusion (median P(bad) under FLAGGED_BAD_FLOOR). The mixture
    then describes the long upper tail of a clean population, not a group of bad masks: on PH2 as
    shipped it flagged 52 of 200 masks with a median P(bad) of 0.07 (docs/BENCHMARKS.md, section
    0.000000000000)."""
    flagged = quality < 0.5
    if probability is None or not flagged.any() or np.median(probability[flagged]) >= FLAGGED_BAD_FLOOR:
        return "mixture"
    return "bad probability"


IMAGE_EVIDENCE = ("edge_misfit", "step_misfit", "rim_blend")  # per-class fields of Signals, NaN for empty classes
RIM_EVIDENCE = ("rim_disagreement",)                           # likewise, from the segmenter's probabilities
CLASS_EVIDENCE = ("size_ratio", *IMAGE_EVIDENCE, *RIM_EVIDENCE)  # scaled per class before the worst class is taken


def mask_evidence(signals: "Signals", priors, class_scales: dict, *, own: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-feature evidence of a bad label for the masks in ``signals``, each (N,), higher = worse.

    ``priors`` come from :func:`maskaudit.evidence.priors.fit_priors` and ``class_scales`` (one
    :class:`~maskaudit.evidence.scaling.ClassScale` per name in CLASS_EVIDENCE) from the given masks;
    ``own`` (N,) is the index of each mask's own given mask, left out of its prior neighbours.
    """
    evidence = {
        "disagreement": 1.0 - signals.dice.mean(axis=1),
        "pixel_softmin": -signals.softmin,
        "boundary": np.log1p(signals.boundary.max(axis=1)),
        "object_miss": signals.object_miss.max(axis=1),
        "critic": -signals.qam_score,
        "critic_prefers_prediction": signals.qam_prediction - signals.qam_score,
        "oversize": worst_class(signals.size_ratio, class_scales["size_ratio"]),
        "undersize": worst_class(signals.size_ratio, class_scales["size_ratio"], direction=-1.0),
        **{name: worst_class(getattr(signals, name), class_scales[name]) for name in (*IMAGE_EVIDENCE, *RIM_EVIDENCE)},
        **prior_evidence(priors, signals.shape, own=own),
    }
    if signals.dice.shape[1] > 1:  # one wrong structure among several
        evidence["worst_class_disagreement"] = 1.0 - signals.dice.min(axis=1)
    return {name: np.asarray(values, dtype=np.float64) for name, values in evidence.items()}


@dataclass(frozen=True)
class Scores:
    """The scorer's output, one value per sample."""

    quality: np.ndarray                  # (N,) exported quality_score in [0, 1], higher = better label
    suspicion: np.ndarray                # (N,) fused score that orders the ranking (higher = worse)
    evidence: dict[str, np.ndarray]      # per-feature evidence, each (N,), higher = worse
    fusion: Fusion                       # the learned weights, given masks' and probes' scores
    self_check_auroc: float              # estimated AUROC on this dataset (NaN: too few samples)
    bad_share: float                     # estimated share of bad masks (NaN: too few samples), see fusion.bad_share
    rule: str                            # what set quality: "tail" (reads clean), "mixture" or "bad probability"

    @property
    def reads_clean(self) -> bool:
        """Whether almost no mask looks like a synthetic error of this dataset: only outliers are flagged."""
        return bool(self.bad_share < CLEAN_BAD_SHARE)


def quality_scores(signals: "Signals", *, seed: int = 0, store: Path | None = None) -> Scores:
    """Score every sample: evidence per feature for the given masks and their probes, the learned
    fusion of them, and quality_score. ``signals.probes`` must be set (compute_signals sets it).

    With more than FIT_ROWS samples, the priors, scales and fusion are learned from FIT_ROWS of them
    (:func:`reference_rows`) and their probes, and every sample is then scored chunk by chunk. With
    ``store``, a directory, the given masks' evidence is written there as memory-mapped .npy files
    (``evidence-<name>.npy``), chunk by chunk, so that scoring 200,000 slices does not hold it."""
    if signals.probes is None:
        raise ValueError("quality_scores needs the probes' signals, which compute_signals gathers")
    count = len(signals.softmin)
    reference = reference_rows(count, seed=seed)
    fitted = signals if len(reference) == count else take_rows(signals, reference, features=False)
    release_signals(signals)  # the pages of a store that the scattered reference rows mapped
    priors = fit_priors(fitted.shape)
    class_scales = {name: fit_class_scale(getattr(fitted, name)) for name in CLASS_EVIDENCE}
    own = np.full(count, -1)  # each mask's own row among the reference masks, left out of its prior neighbours
    own[reference] = np.arange(len(reference))
    given = _chunked_evidence(signals, priors, class_scales, own, store=store)
    probes = mask_evidence(fitted.probes, priors, class_scales, own=np.arange(len(reference)))
    informative = [name for name, values in given.items() if np.ptp(np.r_[values[reference], probes[name]]) > 0]
    fusion = fuse({name: given[name] for name in informative}, {name: probes[name] for name in informative},
                  seed=seed, fit_rows=None if len(reference) == count else reference,
                  families=np.asarray(fitted.probes.family).astype(np.int64))
    share = bad_share(fusion)
    if share < CLEAN_BAD_SHARE:
        quality, rule = quality_from_suspicion(fusion.suspicion, seed=seed, mixture=False), "tail"
    else:
        quality = quality_from_suspicion(fusion.suspicion, seed=seed)
        probability = bad_probability(fusion)
        rule = suspect_rule(quality, probability)
        if rule == "bad probability":
            quality = quality_from_bad_probability(probability, fusion.suspicion)
    visible = np.asarray(fitted.probes.reach) >= SELF_CHECK_REACH_PX  # the probes the self-check counts
    return Scores(quality=quality, suspicion=fusion.suspicion, evidence=given, fusion=fusion,
                  self_check_auroc=self_check_auroc(fusion, counted=visible), bad_share=share, rule=rule)


def _chunked_evidence(signals: "Signals", priors, class_scales: dict, own: np.ndarray, *,
                      store: Path | None = None) -> dict[str, np.ndarray]:
    """:func:`mask_evidence` of every mask in ``signals``, EVIDENCE_CHUNK at a time, as (N,) float64
    arrays: in memory, or with ``store`` memory-mapped files there whose pages are released after
    each chunk."""
    count = len(signals.softmin)
    if count <= EVIDENCE_CHUNK and store is None:
        return mask_evidence(signals, priors, class_scales, own=own)
    evidence: dict[str, np.ndarray] = {}
    for start in range(0, count, EVIDENCE_CHUNK):
        rows = slice(start, min(start + EVIDENCE_CHUNK, count))
        for name, values in mask_evidence(take_rows(signals, rows, features=False), priors, class_scales, own=own[rows]).items():
            if name not in evidence:
                evidence[name] = np.empty(count) if store is None else new_memmap(store / f"evidence-{name}.npy",
                                                                                   (count,), np.float64)
            evidence[name][rows] = values
        release_signals(signals)  # a store's pages read for this chunk
        release_pages(*evidence.values())  # and written
    return evidence

