"""The label critic: corruptions of a batch, the ranking loss, and a critic that learns."""

import numpy as np
import pytest
import torch
from skimage.draw import disk as draw_disk

from maskaudit.corruptions import CRITIC_FAMILIES, random_corruption
from maskaudit.critic import corrupt_batch, critic_families, probe_batch, probe_reach, ranking_loss
from maskaudit.models import QualityAwarenessModule


def disks(count: int, size: int = 32, seed: int = 0):
    """Images (B, 1, S, S) float of bright disks on noise, and their true masks (B, 1, S, S) bool."""
    rng = np.random.default_rng(seed)
    images, masks = [], []
    for _ in range(count):
        mask = np.zeros((size, size), bool)
        mask[draw_disk((rng.integers(10, 22), rng.integers(10, 22)), rng.uniform(4, 9), shape=mask.shape)] = True
        images.append(np.where(mask, 0.7, 0.3) + rng.normal(0, 0.05, mask.shape))
        masks.append(mask)
    return np.stack(images)[:, None].astype(np.float32), np.stack(masks)[:, None]


@pytest.mark.parametrize("family", CRITIC_FAMILIES)
def test_every_family_changes_a_mask_and_leaves_the_input_alone(family):
    _, masks = disks(2)
    two_class = np.concatenate([masks[0], masks[1]])  # (2, S, S): swap needs two classes
    before = two_class.copy()
    out, detail = random_corruption(two_class, np.random.default_rng(0), families=(family,), donor=two_class[::-1])
    assert np.array_equal(two_class, before)
    assert detail and not np.array_equal(out, two_class)


def test_corrupt_batch_marks_what_could_not_be_corrupted():
    _, masks = disks(4)
    masks[2:] = False  # two empty masks side by side: no donor, nothing to erode
    corrupted, changed = corrupt_batch(masks, np.random.default_rng(0), families=("erode", "dilate", "shift"))
    assert changed.tolist() == [True, True, False, False]
    assert np.array_equal(corrupted[2:], masks[2:])
    assert all(not np.array_equal(corrupted[i], masks[i]) for i in (0, 1))


def test_probes_name_the_family_that_made_them_and_match_corrupt_batch():
    _, masks = disks(6)
    masks[5] = False  # empty, but its neighbour lends a mask: only 'foreign' or a blob applies
    corrupted, changed = corrupt_batch(masks, np.random.default_rng(3), strength="probe", weights=None)
    probed, family = probe_batch(masks, np.random.default_rng(3))
    assert np.array_equal(probed, corrupted) and np.array_equal(family >= 0, changed)
    assert CRITIC_FAMILIES[family[5]] in ("foreign", "spurious")
    _, eroded = probe_batch(masks[:5], np.random.default_rng(0), families=("erode",))
    assert set(eroded.tolist()) == {CRITIC_FAMILIES.index("erode")}


def test_family_weights_set_how_often_each_family_is_drawn():
    _, masks = disks(40)
    families = ("erode", "dilate", "shift", "delete")
    uniform = probe_batch(masks, np.random.default_rng(0), families=families)[1]
    weighted = probe_batch(masks, np.random.default_rng(0), families=families, weights={"erode": 6.0})[1]
    eroded = CRITIC_FAMILIES.index("erode")
    assert (uniform == eroded).sum() < 16 < (weighted == eroded).sum()  # about 10 of 40 against 27
    never = probe_batch(masks, np.random.default_rng(0), families=families, weights={"erode": 0.0})[1]
    assert eroded not in never.tolist()
    with pytest.raises(ValueError, match="family weights"):
        probe_batch(masks, np.random.default_rng(0), weights={"erdoe": 2.0})


def test_unknown_holdout_families_are_refused():
    assert "shift" not in critic_families(("shift",))
    with pytest.raises(ValueError, match="unknown critic corruption"):
        critic_families(("shfit",))


def test_probe_reach_tells_a_redrawn_outline_from_a_moved_one():
    yy, xx = np.mgrid[:64, :64]
    disk = (yy - 32) ** 2 + (xx - 32) ** 2 < 15 ** 2
    eroded = (yy - 32) ** 2 + (xx - 32) ** 2 < 14 ** 2         # the outline one pixel in
    far_blob = disk | ((yy - 5) ** 2 + (xx - 5) ** 2 < 3 ** 2)
    empty = np.zeros_like(disk)
    masks = np.stack([np.stack([disk, empty])] * 4)
    probes = np.stack([np.stack([disk, empty]), np.stack([eroded, empty]), np.stack([far_blob, empty]),
                       np.stack([disk, disk])])
    reach = probe_reach(masks, probes)
    assert reach[0] == 0.0 and 0.5 < reach[1] <= 1.5     # unchanged; moved by a pixel
    assert reach[2] > 20                                   # a blob 25 px from the disk's edge
    assert reach[3] == np.inf                              # a class drawn where there was none


def test_ranking_loss_prefers_given_masks_scored_above_their_corruptions():
    changed = torch.tensor([True, True])
    right = ranking_loss(torch.tensor([2.0, 1.0]), torch.tensor([-2.0, -1.0]), changed)
    wrong = ranking_loss(torch.tensor([-2.0, -1.0]), torch.tensor([2.0, 1.0]), changed)
    assert right < 0.5 < wrong
    assert ranking_loss(torch.zeros(2), torch.ones(2), torch.tensor([False, False])) == 0


def critic_auroc(qam, images, masks, seed) -> float:
    """Share of (given, corrupted) pairs of fresh samples that the critic orders correctly."""
    corrupted, changed = corrupt_batch(masks, np.random.default_rng(seed))
    with torch.no_grad():
        given_t = qam(torch.from_numpy(images), torch.from_numpy(masks).float())[0]
        bad_t = qam(torch.from_numpy(images), torch.from_numpy(corrupted).float())[0]
    given_t, bad_t = given_t[torch.from_numpy(changed)], bad_t[torch.from_numpy(changed)]
    return float((given_t[:, None] > bad_t[None, :]).float().mean())


def test_the_critic_learns_to_rank_given_masks_above_corruptions_in_a_few_steps():
    torch.manual_seed(0)
    qam = QualityAwarenessModule(1, 1, width=8)
    optimizer = torch.optim.Adam(qam.parameters(), lr=2e-3)
    test_images, test_masks = disks(48, seed=99)
    before = critic_auroc(qam, test_images, test_masks, seed=1)
    rng = np.random.default_rng(0)
    for step in range(60):
        images, masks = disks(8, seed=step)
        corrupted, changed = corrupt_batch(masks, rng)
        image_batch = torch.from_numpy(images)
        t = qam(torch.cat([image_batch, image_batch]), torch.from_numpy(np.concatenate([masks, corrupted])).float())[0]
        loss = ranking_loss(t[:8], t[8:], torch.from_numpy(changed))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = critic_auroc(qam, test_images, test_masks, seed=1)
    assert after > 0.8 and after > before + 0.2
