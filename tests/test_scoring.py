"""quality_score: robust combination of signals and its mapping to [0, 1]."""

import numpy as np
import pytest

from maskaudit.scoring import (
    quality_from_bad_probability, quality_from_suspicion, robust_z, suspect_rule, upper_tail_z,
)


def test_robust_z_ignores_a_single_extreme_value():
    values = np.array([1.0, 1.1, 0.9, 1.0, 1.05, 0.95, 100.0])
    z = robust_z(values)
    assert abs(np.median(z)) < 1e-9
    assert z[-1] > 50  # the outlier is far out instead of inflating the scale
    assert np.all(np.abs(z[:-1]) < 2)


def test_robust_z_of_constant_values_is_zero():
    assert np.array_equal(robust_z(np.full(5, 3.0)), np.zeros(5))


def _probability(score, odds_at_zero):
    """P(bad) as the fusion estimates it: proportional to the odds exp(score), clipped to 1."""
    return np.minimum(odds_at_zero * np.exp(score), 1.0)


def test_a_mixture_of_a_clean_tail_gives_way_to_the_bad_probability():
    """A clean population with a long upper tail and five gross errors: the mixture flags the tail,
    whose masks the fusion believes clean, so the estimated probability of being bad decides."""
    rng = np.random.default_rng(3)
    score = np.r_[rng.normal(0, 0.5, 180), rng.normal(1.4, 0.8, 70), np.full(5, 8.0)]
    probability = _probability(score, 0.01)
    mixture = quality_from_suspicion(score)
    assert (mixture < 0.5).sum() > 30
    assert suspect_rule(mixture, probability) == "bad probability"
    quality = quality_from_bad_probability(probability, score)
    assert np.array_equal(np.flatnonzero(quality < 0.5), np.arange(250, 255))
    order = np.argsort(score)
    assert np.all(np.diff(quality[order]) <= 0) and len(np.unique(quality)) == len(score)  # monotone, no ties


def test_a_group_of_masks_that_look_bad_keeps_the_mixture():
    rng = np.random.default_rng(1)
    score = np.r_[rng.normal(0.0, 1.0, 120), rng.normal(8.0, 1.5, 40)]
    mixture = quality_from_suspicion(score)
    assert suspect_rule(mixture, _probability(score, 0.01)) == "mixture"
    assert suspect_rule(mixture, None) == "mixture"  # no learned fusion: nothing to check against


def test_two_populations_split_at_the_natural_threshold():
    rng = np.random.default_rng(1)
    clean = rng.normal(0.0, 1.0, size=120)
    bad = rng.normal(8.0, 1.5, size=40)
    score = np.concatenate([clean, bad])
    quality = quality_from_suspicion(score)
    assert quality.min() >= 0 and quality.max() <= 1
    flagged = quality < 0.5
    assert flagged[120:].mean() > 0.95
    assert flagged[:120].mean() < 0.03


def test_a_dataset_read_as_clean_gets_the_tail_probability_not_the_mixture():
    """A clean population's heavy tail fits as a second component; without the mixture only the far tail is flagged."""
    rng = np.random.default_rng(3)
    score = np.r_[rng.normal(0, 0.5, 180), rng.normal(1.4, 0.8, 70)]
    assert (quality_from_suspicion(score) < 0.5).sum() > 30
    assert (quality_from_suspicion(score, mixture=False) < 0.5).sum() <= 10


def test_quality_is_strictly_decreasing_in_suspicion():
    rng = np.random.default_rng(2)
    score = np.concatenate([rng.normal(0, 1, 80), rng.normal(10, 1, 30)])
    quality = quality_from_suspicion(score)
    order = np.argsort(score)
    assert np.all(np.diff(quality[order]) < 0)  # no ties, so the ranking survives in the CSV


def test_a_clean_dataset_flags_only_far_tail_samples():
    score = np.random.default_rng(3).normal(size=200)
    quality = quality_from_suspicion(score)
    assert (quality < 0.5).sum() <= 2


def test_the_tail_of_a_skewed_clean_population_is_judged_by_its_upper_half():
    """The fused suspicion is a log of mean odds, skewed upwards (here Gumbel): in units of the whole
    population's MAD its upper tail looks long, in units of the upper half's spread it does not;
    two gross errors far out are flagged either way."""
    flagged_by_upper, flagged_by_mad = 0, 0
    for seed in range(6):
        score = np.r_[np.random.default_rng(seed).gumbel(size=250), 12.0, 14.0]
        flagged = quality_from_suspicion(score, mixture=False) < 0.5
        assert flagged[250:].all() and flagged[:250].sum() <= 5
        flagged_by_upper += flagged[:250].sum()
        flagged_by_mad += (robust_z(score)[:250] > 3).sum()
    assert flagged_by_upper < 0.6 * flagged_by_mad  # 19 against 34
    symmetric = np.random.default_rng(0).normal(size=400)
    assert np.allclose(upper_tail_z(symmetric), robust_z(symmetric), atol=0.25)


@pytest.mark.parametrize("n", [1, 2, 5])
def test_tiny_datasets_get_scores_in_range(n):
    quality = quality_from_suspicion(np.arange(n, dtype=float))
    assert quality.shape == (n,)
    assert np.all((quality >= 0) & (quality <= 1))


def test_gross_and_subtle_errors_are_both_flagged():
    # The demo's shape: 45 clean, 3 gross errors far out, 12 subtle ones in between. A two-component
    # mixture puts the subtle ones with the clean samples; a third component separates them.
    rng = np.random.default_rng(4)
    clean = rng.normal(0.4, 0.35, size=45)
    subtle = rng.uniform(2.0, 6.5, size=12)
    gross = rng.normal(14.6, 0.4, size=3)
    quality = quality_from_suspicion(np.concatenate([clean, subtle, gross]))
    flagged = quality < 0.5
    assert flagged[45:].all()
    assert flagged[:45].sum() <= 1


@pytest.mark.parametrize("seed", range(5, 13))
def test_heavy_tailed_clean_scores_flag_few_samples(seed):
    # A heavy-tailed clean population fits best as a narrow plus a wide Gaussian, and a few very
    # clean samples may make a tiny component below both: neither may turn everyone into a suspect.
    score = np.random.default_rng(seed).standard_t(df=4, size=300)
    assert (quality_from_suspicion(score) < 0.5).sum() <= 9  # at most 3 %


def test_a_block_of_identical_scores_does_not_make_everyone_a_suspect():
    # e.g. duplicated samples: 40 identical scores would be a zero-width clean component
    rng = np.random.default_rng(1)
    score = np.concatenate([np.zeros(40), rng.normal(0, 1, 160), rng.normal(8, 1, 30)])
    flagged = quality_from_suspicion(score) < 0.5
    assert flagged[200:].all() and flagged[:200].sum() <= 4


def test_non_finite_scores_count_as_the_median():
    quality = quality_from_suspicion(np.array([np.nan, np.inf, *np.linspace(0, 1, 30)]))
    assert np.isfinite(quality).all() and quality[0] > 0.5


def test_a_clean_population_in_two_groups_stays_clean():
    """The learned fusion can split clean samples into two groups; only the far group above the median is bad."""
    rng = np.random.default_rng(4)
    score = np.concatenate([rng.normal(-14, 1.0, 8), rng.normal(-5.5, 0.6, 22), rng.normal(1.0, 1.0, 10)])
    flagged = quality_from_suspicion(score) < 0.5
    assert flagged[30:].mean() >= 0.9
    assert flagged[:30].sum() <= 1


def test_the_mixture_fitted_on_a_sample_of_many_scores_flags_the_same_population(monkeypatch):
    """More than FIT_ROWS scores: the mixture learns from FIT_ROWS of them, and every score gets its quality."""
    import maskaudit.scoring as scoring

    rng = np.random.default_rng(7)
    scores = np.r_[rng.normal(0, 1, 1600), rng.normal(7, 1, 400)]
    full = quality_from_suspicion(scores)
    monkeypatch.setattr(scoring, "FIT_ROWS", 500)
    monkeypatch.setattr(scoring, "EVIDENCE_CHUNK", 300)
    sampled = quality_from_suspicion(scores)
    assert len(scoring.reference_rows(2000)) == 500 and np.array_equal(scoring.reference_rows(400), np.arange(400))
    assert sampled.shape == (2000,) and np.mean((sampled < 0.5) == (full < 0.5)) > 0.99
    assert np.mean(sampled[1600:] < 0.5) > 0.95 and np.mean(sampled[:1600] < 0.5) < 0.02
