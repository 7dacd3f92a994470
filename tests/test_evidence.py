"""Evidence families on tiny images where the answer is known."""

from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.draw import disk as draw_disk

from maskaudit.corruptions import dilate
from maskaudit.evidence.fusion import bad_share, fuse, self_check_auroc
from maskaudit.evidence.image import (edge_misfit, edge_profile, gradient_magnitude, image_evidence,
                                      intensity_profile, rim_blend, step_misfit)
from maskaudit.evidence.scaling import fit_class_scale, worst_class
from maskaudit.evidence.priors import fit_priors, prior_evidence
from maskaudit.metrics import shape_descriptors
from maskaudit.void import fill_void, fill_void_batch, outline_band


def disk_sample(radius: float = 14, size: int = 64, centre=(32, 32), noise: float = 4.0, seed: int = 0):
    """A bright disk on a dark background with mild noise: image (1, S, S) uint8 and its true mask (S, S)."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((size, size), bool)
    mask[draw_disk(centre, radius, shape=mask.shape)] = True
    image = np.where(mask, 170.0, 70.0) + rng.normal(0, noise, mask.shape)
    return np.clip(image, 0, 255).astype(np.uint8)[None], mask


def test_the_true_outline_sits_on_the_edge_and_an_eroded_one_misses_it():
    image, mask = disk_sample()
    eroded = ~dilate(~mask, 5)
    magnitude = gradient_magnitude(image)
    profile = edge_profile(magnitude, mask)
    assert np.nanargmax(profile) in (len(profile) // 2 - 1, len(profile) // 2)  # peak at the outline
    assert edge_misfit(edge_profile(magnitude, eroded)) > edge_misfit(profile) + 1.0
    assert edge_misfit(edge_profile(magnitude, dilate(mask, 5))) > edge_misfit(profile) + 1.0


def test_the_colour_step_sits_on_the_true_outline_under_heavy_speckle():
    """Speckle (noise sd 60 on a step of 60) hides local edges; the profile averaged along the outline keeps the step."""
    image, mask = disk_sample(radius=22, size=96, centre=(48, 48), noise=60.0)
    eroded, dilated = ~dilate(~mask, 7), dilate(mask, 7)
    true_profile = intensity_profile(image, mask)
    assert true_profile.shape == (25, 1)
    assert true_profile[12:, 0].mean() > true_profile[:12, 0].mean() + 50  # inside brighter than outside
    for wrong in (eroded, dilated):
        profile = intensity_profile(image, wrong)
        assert step_misfit(profile) > step_misfit(true_profile) + 1.0
        assert rim_blend(profile) > rim_blend(true_profile) + 0.3  # the rims either side look alike


def test_image_evidence_ranks_a_shifted_mask_below_the_true_one_in_rgb():
    image, mask = disk_sample()
    rgb = np.repeat(image, 3, axis=0)
    shifted = np.roll(mask, 9, axis=1)
    evidence = image_evidence(np.stack([rgb, rgb]), np.stack([mask[None], shifted[None]]))
    assert evidence["edge_misfit"][1] > evidence["edge_misfit"][0]
    assert evidence["step_misfit"][1] > evidence["step_misfit"][0]


def test_a_void_band_on_the_outline_is_not_read_as_an_outline_off_the_edge():
    """VOC style: the class stops 3 px inside the edge and a 6 px void band straddles it."""
    image, mask = disk_sample(radius=20)
    band = dilate(mask, 3) & ~(~dilate(~mask, 3))
    given = mask & ~band
    masks, valid = np.stack([given[None], mask[None]]), np.stack([~band, np.ones_like(band)])
    with_void = image_evidence(np.stack([image, image]), fill_void_batch(masks, valid))
    as_given = image_evidence(np.stack([image, image]), masks)
    assert fill_void(given[None], ~band)[0].sum() == pytest.approx(mask.sum(), rel=0.03)
    for name in ("edge_misfit", "step_misfit", "rim_blend"):
        assert with_void[name][0, 0] == pytest.approx(with_void[name][1, 0], abs=0.15)  # as good as the true mask
    assert as_given["edge_misfit"][0, 0] > as_given["edge_misfit"][1, 0] + 1.0  # read as given: 3 px inside


def test_image_evidence_leaves_an_empty_class_out():
    image, mask = disk_sample()
    evidence = image_evidence(image[None], np.stack([np.zeros_like(mask), mask])[None])
    for values in evidence.values():
        assert values.shape == (1, 2) and np.isnan(values[0, 0]) and np.isfinite(values[0, 1])
    scale = fit_class_scale(evidence["edge_misfit"])
    assert worst_class(np.full((1, 2), np.nan), scale)[0] == 0  # an empty mask: the priors judge it


def test_the_worst_class_is_judged_in_its_own_class_spread():
    rng = np.random.default_rng(0)
    per_class = np.stack([rng.normal(0, 10, 200), rng.normal(0, 0.1, 200)], axis=1)  # a noisy thin class, a steady one
    per_class[0] = [5.0, 0.0]   # half a spread off in the noisy class: normal
    per_class[1] = [0.0, 1.0]   # ten spreads off in the steady class: the suspect
    worst = worst_class(per_class, fit_class_scale(per_class))
    assert worst[1] > 5 > worst[0]
    assert np.argmax(worst) == 1


def test_an_empty_mask_among_full_ones_is_the_most_surprising():
    rng = np.random.default_rng(0)
    masks = []
    for i in range(30):
        _, mask = disk_sample(radius=rng.uniform(8, 16), centre=(rng.integers(20, 44), rng.integers(20, 44)), seed=i)
        masks.append(mask[None])
    masks[7] = np.zeros_like(masks[7])
    descriptors = np.stack([shape_descriptors(m) for m in masks])
    priors = fit_priors(descriptors)
    evidence = prior_evidence(priors, descriptors, own=np.arange(30))
    assert np.argmax(evidence["presence_surprise"]) == 7
    assert np.argmax(evidence["shape_outlier"]) == 7


def test_shape_outliers_respect_two_normal_modes():
    """Small and large disks are both normal; a mid-sized ring-like blob at the corner is not."""
    masks = []
    for i in range(40):
        radius = 6 if i % 2 else 20
        masks.append(disk_sample(radius=radius + (i % 5) * 0.3, seed=i)[1][None])
    odd = np.zeros_like(masks[0]); odd[0, 2:12, 2:40] = True
    descriptors = np.stack([shape_descriptors(m) for m in masks])
    priors = fit_priors(descriptors)
    query = np.stack([shape_descriptors(odd), descriptors[0], descriptors[1]])
    outlier = prior_evidence(priors, query, own=np.array([-1, 0, 1]))["shape_outlier"]
    assert outlier[0] > 3 * max(outlier[1], outlier[2])


def test_fusion_learns_which_evidence_separates_and_is_reproducible():
    rng = np.random.default_rng(0)
    n = 120
    given = {"useful": rng.normal(0, 1, n), "noise": rng.normal(0, 1, n)}
    probes = {"useful": rng.normal(3, 1, n), "noise": rng.normal(0, 1, n)}
    first, second = fuse(given, probes, seed=3), fuse(given, probes, seed=3)
    assert np.array_equal(first.suspicion, second.suspicion)
    assert np.array_equal(first.probe_scores, second.probe_scores)
    assert first.weights["useful"] > 5 * first.weights["noise"] >= 0
    assert 0.9 < self_check_auroc(first) <= 1.0
    assert np.corrcoef(first.suspicion, given["useful"])[0, 1] > 0.95


def test_one_expert_per_probe_family_finds_masks_too_small_and_too_large():
    """Erosions raise one feature and lower the other, dilations the reverse: no single model with
    non-negative weights separates both from the given masks, an expert per family does."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(7)
    n, m = 200, 200
    bad = np.r_[np.zeros(160), np.ones(20), 2 * np.ones(20)]  # 20 eroded and 20 dilated given masks
    shift = np.select([bad == 1, bad == 2], [1.0, -1.0], 0.0)
    given = {"undersize": rng.normal(0, 1, n) + 3 * shift, "oversize": rng.normal(0, 1, n) - 3 * shift}
    family = np.repeat([0, 1], m // 2)                      # probes: half eroded, half dilated
    sign = np.where(family == 0, 1.0, -1.0)
    probes = {"undersize": rng.normal(0, 1, m) + 3 * sign, "oversize": rng.normal(0, 1, m) - 3 * sign}
    single, experts = fuse(given, probes, seed=0), fuse(given, probes, seed=0, families=family)
    assert single.experts == 1 and experts.experts == 2
    assert roc_auc_score(bad > 0, experts.suspicion) > 0.85 > 0.6 > roc_auc_score(bad > 0, single.suspicion)
    assert self_check_auroc(experts) > 0.85 > 0.6 > self_check_auroc(single)
    assert np.array_equal(fuse(given, probes, seed=0, families=family).suspicion, experts.suspicion)


def test_small_probe_families_are_pooled_and_uncorrupted_probes_teach_no_expert():
    from maskaudit.evidence.fusion import _expert_probes

    family = np.r_[np.zeros(30), np.ones(6), 2 * np.ones(6), -np.ones(5)].astype(int)
    groups = _expert_probes(family, len(family))
    assert [int(g.sum()) for g in groups] == [30, 12]       # family 0 alone; 1 and 2 pooled; -1 in none
    assert not any(g[-5:].any() for g in groups)
    assert [int(g.sum()) for g in _expert_probes(None, 47)] == [47]


def test_fusion_fitted_on_some_rows_scores_the_others_chunk_by_chunk(monkeypatch):
    """A volume scan's 200,000 slices: the fusion learns from a sample of them and scores the rest."""
    import maskaudit.evidence.fusion as fusion_module

    rng = np.random.default_rng(5)
    n = 600
    bad = rng.random(n) < 0.2
    given = {"useful": rng.normal(0, 1, n) + 4 * bad, "noise": rng.normal(0, 1, n)}
    probes = {"useful": rng.normal(4, 1, 150), "noise": rng.normal(0, 1, 150)}
    everything = fuse(given, probes, seed=1)
    assert np.array_equal(fuse(given, probes, seed=1, fit_rows=np.arange(n)).suspicion, everything.suspicion)
    monkeypatch.setattr(fusion_module, "SCORE_CHUNK", 64)
    rows = np.sort(rng.choice(n, 150, replace=False))
    sampled = fuse(given, probes, seed=1, fit_rows=rows)
    assert sampled.learned and sampled.suspicion.shape == (n,) and np.isfinite(sampled.suspicion).all()
    assert np.array_equal(sampled.suspicion[rows], fuse({k: v[rows] for k, v in given.items()}, probes, seed=1).suspicion)
    others = np.setdiff1d(np.arange(n), rows)
    assert np.mean(sampled.suspicion[others][bad[others]] > np.median(sampled.suspicion[others][~bad[others]])) > 0.95
    assert np.corrcoef(sampled.suspicion, everything.suspicion)[0, 1] > 0.98


def test_experts_fitted_on_some_rows_score_the_others_as_they_score_those_rows():
    """A volume scan's sampled fit with one expert per family: the rows fitted on get the scores of a
    fusion of those rows alone, and the others the same experts' log mean odds."""
    import maskaudit.evidence.fusion as fusion_module

    rng = np.random.default_rng(9)
    n, m = 500, 240
    given = {"small": rng.normal(0, 1, n), "large": rng.normal(0, 1, n)}
    family = np.repeat([0, 1], m // 2)
    sign = np.where(family == 0, 1.0, -1.0)
    probes = {"small": rng.normal(0, 1, m) + 3 * sign, "large": rng.normal(0, 1, m) - 3 * sign}
    rows = np.sort(rng.choice(n, 200, replace=False))
    sampled = fuse(given, probes, seed=2, fit_rows=rows, families=family)
    alone = fuse({k: v[rows] for k, v in given.items()}, probes, seed=2, families=family)
    assert sampled.experts == 2 and np.array_equal(sampled.suspicion[rows], alone.suspicion)
    centre, scale = fusion_module._robust_scale(fusion_module._matrix(given, ("small", "large"), rows))
    x = fusion_module._standardise(fusion_module._matrix(given, ("small", "large")), centre, scale)
    experts = fusion_module._learn_experts(x[rows], fusion_module._standardise(
        fusion_module._matrix(probes, ("small", "large")), centre, scale),
        fusion_module._expert_probes(family, m), seed=2)[0]
    others = np.setdiff1d(np.arange(n), rows)
    assert np.allclose(sampled.suspicion[others], experts.decision_function(x[others]))


def test_the_fusion_penalty_gives_way_to_more_samples():
    """The ridge penalty is a prior worth a fixed number of samples: four times the same evidence
    (a dataset four times larger) lets the weights grow towards the unpenalised fit."""
    rng = np.random.default_rng(4)
    given = {"a": rng.normal(0, 1, 60), "b": rng.normal(0, 1, 60)}
    probes = {"a": rng.normal(1.5, 1, 60), "b": rng.normal(1.0, 1, 60)}
    larger = fuse({k: np.tile(v, 4) for k, v in given.items()}, {k: np.tile(v, 4) for k, v in probes.items()}, seed=0)
    small = fuse(given, probes, seed=0)
    assert sum(larger.weights.values()) > 1.5 * sum(small.weights.values())
    assert larger.weights["a"] > larger.weights["b"] > 0


def test_fusion_weights_stay_non_negative_when_features_overlap():
    """Two copies of one useful feature: a free logistic fit may trade them against each other."""
    rng = np.random.default_rng(2)
    base_given, base_probe = rng.normal(0, 1, 150), rng.normal(2.5, 1, 150)
    given = {"a": base_given, "b": base_given + rng.normal(0, 0.05, 150)}
    probes = {"a": base_probe, "b": base_probe + rng.normal(0, 0.05, 150)}
    fusion = fuse(given, probes, seed=0)
    assert min(fusion.weights.values()) >= 0 and sum(fusion.weights.values()) > 0


def test_the_self_check_counts_given_masks_as_little_as_they_look_bad():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    clean, bad = rng.normal(0, 1, 90), rng.normal(4, 1, 30)  # 25 % of the given masks are bad
    fusion = fuse({"x": np.r_[clean, bad]}, {"x": rng.normal(4, 1, 120)}, seed=0)
    every_given = roc_auc_score(np.r_[np.zeros(120), np.ones(120)], np.r_[fusion.suspicion, fusion.probe_scores])
    clean_only = roc_auc_score(np.r_[np.zeros(90), np.ones(120)], np.r_[fusion.suspicion[:90], fusion.probe_scores])
    assert abs(self_check_auroc(fusion) - clean_only) < 0.03 and every_given < clean_only - 0.1
    assert np.mean(fusion.suspicion[90:] > np.median(fusion.suspicion[:90])) > 0.95


def test_the_self_check_can_leave_out_probes_that_are_no_errors():
    rng = np.random.default_rng(2)
    errors, no_errors = rng.normal(4, 1, 80), rng.normal(0, 1, 40)  # a third of the probes look like given masks
    fusion = fuse({"x": rng.normal(0, 1, 120)}, {"x": np.r_[errors, no_errors]}, seed=0)
    counted = np.r_[np.ones(80, bool), np.zeros(40, bool)]
    assert self_check_auroc(fusion, counted=counted) > self_check_auroc(fusion) + 0.1
    assert np.isnan(self_check_auroc(fusion, counted=np.zeros(120, bool)))


def test_the_bad_share_is_near_zero_for_clean_masks_and_finds_a_population_of_bad_ones():
    """Probes 8 sd from the clean masks (clean JSRT's fusion separates them about as well)."""
    rng = np.random.default_rng(4)
    probes = {"x": rng.normal(8, 1, 200)}
    clean = fuse({"x": rng.normal(0, 1, 200)}, probes, seed=0)
    with_bad = fuse({"x": np.r_[rng.normal(0, 1, 140), rng.normal(8, 1, 60)]}, probes, seed=0)  # 30 % bad
    assert bad_share(clean) < 0.01
    assert 0.2 < bad_share(with_bad) < 0.4
    few = fuse({"x": rng.normal(0, 1, 5)}, {"x": rng.normal(4, 1, 5)}, seed=0)
    assert not few.learned and np.isnan(bad_share(few))


def test_fusion_with_too_few_samples_falls_back_to_equal_weights():
    fusion = fuse({"a": np.arange(5.0), "b": np.arange(5.0)}, {"a": np.arange(5.0), "b": np.arange(5.0)})
    assert np.isnan(self_check_auroc(fusion))
    assert fusion.weights == {"a": 0.5, "b": 0.5}


def test_a_dilated_mask_is_oversize_even_when_the_segmenter_over_segments_like_it():
    from maskaudit.evidence.segmenter import segmenter_evidence

    predicted = np.zeros((1, 64, 64), bool)
    predicted[0][draw_disk((32, 32), 16, shape=(64, 64))] = True           # the segmenter draws every disk too large
    masks = np.stack([disk_sample(radius=12 + 0.2 * i)[1][None] for i in range(12)])
    masks[5, 0] = predicted[0]                                               # one mask dilated to the prediction's size
    probabilities = np.repeat(predicted[None].astype(np.float32), len(masks), axis=0)
    evidence = segmenter_evidence(probabilities, masks, multilabel=True)
    assert np.argmax(evidence["dice"][:, 0]) == 5                            # disagreement calls it the best mask
    oversize = worst_class(evidence["size_ratio"], fit_class_scale(evidence["size_ratio"]))
    assert np.argmax(oversize) == 5 and oversize[5] > np.delete(oversize, 5).max() + 1.0
    undersize = worst_class(evidence["size_ratio"], fit_class_scale(evidence["size_ratio"]), direction=-1.0)
    assert np.argmin(undersize) == 5


def test_the_rims_of_a_dilated_or_eroded_mask_disagree_with_the_prediction():
    from maskaudit.evidence.segmenter import rim_disagreement

    _, mask = disk_sample(radius=14)
    probabilities = np.repeat(np.stack([np.where(mask, 0.95, 0.05), np.zeros_like(mask, float)])[None], 3, axis=0)
    empty = np.zeros_like(mask)
    masks = np.stack([np.stack([mask, empty]), np.stack([dilate(mask, 6), empty]), np.stack([~dilate(~mask, 6), empty])])
    disagreement = rim_disagreement(probabilities, masks)
    assert disagreement[0, 0] < 0.15                            # the outline where the prediction drops
    assert disagreement[1, 0] > 0.8 and disagreement[2, 0] > 0.8  # a rim on the wrong side of the edge
    assert np.isnan(disagreement[:, 1]).all()                   # an empty class: the priors judge it
    outer_void = ~mask & dilate(mask, 4)  # the correct mask's outer rim void: only its inner rim counts
    with_void = rim_disagreement(probabilities, masks, valid=np.stack([~outer_void] * 3))
    assert with_void[0, 0] == pytest.approx(0.05, abs=0.01)


def test_a_small_missing_or_extra_object_beside_a_large_one_is_an_object_miss():
    from maskaudit.evidence.segmenter import object_miss, segmenter_evidence

    yy, xx = np.mgrid[:64, :64]
    large = (yy - 30) ** 2 + (xx - 30) ** 2 < 20 ** 2        # about 1,250 px
    small = (yy - 56) ** 2 + (xx - 56) ** 2 < 3 ** 2          # about 30 px
    truth = large | small
    blob = truth | ((yy - 5) ** 2 + (xx - 58) ** 2 < 3 ** 2)  # a spurious one where the image shows nothing
    speck = truth.copy()
    speck[2, 2] = True                                        # a 1 px component: no object
    masks = np.stack([truth, large, blob, speck, np.zeros_like(truth)])[:, None]
    probabilities = np.where(truth, 0.95, 0.05)[None, None].repeat(len(masks), axis=0)
    misses = object_miss(probabilities, masks, multilabel=True)[:, 0]
    assert misses[0] == pytest.approx(0.05)   # every object matched (its mean probability is 0.95)
    assert misses[1] == pytest.approx(1.0)    # the small object left out
    assert misses[2] == pytest.approx(0.95)   # the blob's mean probability is 0.05
    assert misses[3] == pytest.approx(0.05)
    assert misses[4] == pytest.approx(1.0)    # an empty mask leaves every object out
    dice = segmenter_evidence(probabilities, masks, multilabel=True)["dice"][:, 0]
    assert dice[1] > 0.97 and dice[2] > 0.97  # which Dice barely sees
    nothing = np.zeros_like(masks[:1])
    assert object_miss(np.zeros(nothing.shape), nothing, multilabel=False)[0, 0] == 0.0
    unsure = np.where(truth, 0.95, 0.05)
    unsure[2:6, 40:44] = 0.7                                  # a 16 px speck the segmenter half-believes in
    assert object_miss(unsure[None, None], truth[None, None], multilabel=False)[0, 0] == pytest.approx(0.05)


def test_a_sliver_another_exclusive_class_owns_is_no_missing_object_but_a_blob_on_nothing_is():
    from maskaudit.evidence.segmenter import object_miss

    yy, xx = np.mgrid[:64, :64]
    lung, clavicle = (yy > 20) & (yy < 60) & (xx > 10) & (xx < 30), (yy > 10) & (yy < 20) & (xx > 5) & (xx < 35)
    sliver = (yy > 7) & (yy < 10) & (xx > 12) & (xx < 18)   # 10 px of lung past the clavicle, which the segmenter calls clavicle
    blob = (yy > 5) & (yy < 9) & (xx > 50) & (xx < 54)      # 9 px of lung on background
    probabilities = np.stack([np.where(lung, 0.95, 0.02), np.where(clavicle | sliver, 0.95, 0.02)])[None]
    for extra, expected in ((sliver, 0.05), (blob, 0.98)):
        masks = np.stack([lung | extra, clavicle])[None]
        assert object_miss(probabilities, masks, multilabel=False)[0, 0] == pytest.approx(expected)
    # where classes overlap, each is judged alone: the sliver is lung the segmenter does not see
    assert object_miss(probabilities, np.stack([lung | sliver, clavicle])[None], multilabel=True)[0, 0] == pytest.approx(0.98)


class _ThresholdSegmenter(torch.nn.Module):
    """A segmenter that finds the bright disk exactly: logits (B, 1, S, S) of image > 0.47, no bottleneck."""

    def forward(self, images):
        return 40.0 * (images[:, :1] - 0.47), torch.zeros(len(images), 2)


class _MismatchCritic(torch.nn.Module):
    """A critic that knows what fits: t = -(share of pixels where the mask differs from image > 0.47)."""

    def forward(self, images, masks):
        mismatch = ((images[:, :1] > 0.47).float() - masks[:, :1]).abs().mean(dim=(1, 2, 3))
        return -mismatch, torch.zeros(len(images), 2)


def test_the_critic_prefers_the_segmenters_mask_to_a_shifted_one():
    """critic_prefers_prediction = t(the segmenter's mask) - t(the given mask): ~0 where the given mask is
    as good as the prediction, large where the critic finds the segmenter's mask fits the image better."""
    from maskaudit.dataset import DatasetIndex, Sample
    from maskaudit.prepare import PreparedData
    from maskaudit.scoring import quality_scores
    from maskaudit.signals import compute_signals
    from maskaudit.train import TrainConfig, TrainResult

    images, masks = zip(*(disk_sample(radius=8 + i % 5, centre=(24 + i % 7, 30 + i % 5), seed=i) for i in range(16)))
    images, masks = np.stack(images), np.stack(masks)[:, None]
    shifted = [3, 11]
    masks[shifted] = np.roll(masks[shifted], 9, axis=-1)
    index = DatasetIndex(root=Path("/nonexistent"), layout="B", classes=("disk",), skipped=(), mask_suffix="",
                         samples=tuple(Sample(f"s{i:02d}", Path(f"s{i:02d}.png"), ()) for i in range(16)))
    data = PreparedData(index, images, masks.astype(np.uint8), np.full((16, 2), 64, np.int64), 64)
    result = TrainResult(unet=_ThresholdSegmenter(), qam=_MismatchCritic(), config=TrainConfig(size=64))
    signals = compute_signals(data, result, batch_size=5)

    predicted = (images[:, :1] / 255.0 > 0.47)
    expected = -np.abs(predicted.astype(float) - (images[:, :1] / 255.0 > 0.47)).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(signals.qam_prediction, expected, atol=1e-6)      # the prediction fits: t = 0
    np.testing.assert_allclose(signals.probes.qam_prediction, signals.qam_prediction)  # a probe's image is the same
    evidence = quality_scores(signals).evidence
    preference = evidence["critic_prefers_prediction"]
    np.testing.assert_allclose(preference, signals.qam_prediction - signals.qam_score, atol=1e-6)
    assert set(np.argsort(preference)[-2:]) == set(shifted)
    assert preference[shifted].min() > 0.02 > np.delete(preference, shifted).max()

    # a VOC-style void band along the given outlines: the critic judges the segmenter's mask with a band
    # along its own outline, as the given masks are drawn, never one carved by the band of a (possibly
    # wrong) given outline
    outline = np.stack([dilate(m[0], 1) & ~(~dilate(~m[0], 1)) for m in masks.astype(bool)])
    banded = PreparedData(index, images, masks.astype(np.uint8), np.full((16, 2), 64, np.int64), 64,
                          void=outline.astype(np.uint8))
    with_void = compute_signals(banded, result, batch_size=5)
    drawn = np.stack([p & ~outline_band(p) for p in predicted])
    expected = -np.abs(drawn.astype(float) - (images[:, :1] / 255.0 > 0.47)).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(with_void.qam_prediction, expected, atol=1e-6)
    preference = quality_scores(with_void).evidence["critic_prefers_prediction"]
    assert set(np.argsort(preference)[-2:]) == set(shifted)
