"""maskaudit.models: U-Net and QAM shapes, and the OCM batch weights (paper Eq. 1 and 2)."""

from __future__ import annotations

import math

import pytest
import torch

from maskaudit.models import MODES, QualityAwarenessModule, UNet, ocm_weights, qam_from_state


@pytest.mark.parametrize("out_channels", [1, 4])
def test_unet_shapes(out_channels):
    torch.manual_seed(0)
    unet = UNet(1, out_channels, width=4).eval()
    logits, bottleneck = unet(torch.rand(2, 1, 32, 48))
    assert logits.shape == (2, out_channels, 32, 48)
    assert bottleneck.shape == (2, unet.feature_dim) == (2, 32)


def test_unet_colour_input():
    unet = UNet(3, 2, width=4).eval()
    assert unet(torch.rand(1, 3, 16, 16))[0].shape == (1, 2, 16, 16)


def test_qam_shapes_and_input_channels():
    torch.manual_seed(0)
    qam = QualityAwarenessModule(1, 3, width=4).eval()
    assert qam.features[0][0].in_channels == 1 + 3  # image channels + one per class (the paper's n + 1)
    t, features = qam(torch.rand(5, 1, 32, 32), torch.randint(0, 2, (5, 3, 32, 32)).float())
    assert t.shape == (5,)
    assert features.shape == (5, qam.feature_dim) == (5, 32)


def test_qam_score_of_a_sample_does_not_depend_on_its_batch():
    torch.manual_seed(0)
    qam = QualityAwarenessModule(1, 2, width=4).train()  # GroupNorm: no batch statistics even in train mode
    images, masks = torch.rand(4, 1, 16, 16), torch.randint(0, 2, (4, 2, 16, 16)).float()
    together = qam(images, masks)[0]
    alone = torch.cat([qam(images[i : i + 1], masks[i : i + 1])[0] for i in range(4)])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("stem_norm", [False, True])
def test_qam_from_state_rebuilds_either_architecture(stem_norm):
    """Checkpoints from before the unnormalised first stage still load, and score as they did."""
    torch.manual_seed(0)
    saved = QualityAwarenessModule(1, 2, width=4, stem_norm=stem_norm).eval()
    norms = [type(layer).__name__ for layer in saved.features[0]]
    assert norms.count("GroupNorm") == (2 if stem_norm else 0)
    assert sum(isinstance(layer, torch.nn.GroupNorm) for layer in saved.features[2]) == 2  # later stages keep theirs
    loaded = qam_from_state(saved.state_dict(), 1, 2, width=4).eval()
    images, masks = torch.rand(3, 1, 16, 16), torch.randint(0, 2, (3, 2, 16, 16)).float()
    torch.testing.assert_close(loaded(images, masks)[0], saved(images, masks)[0])


@pytest.mark.parametrize("mode", MODES)
def test_weights_sum_to_one(mode):
    t = torch.randn(16) * 3
    weights = ocm_weights(t, mode=mode, lam=2.0)
    assert weights.shape == (16,)
    assert torch.all(weights >= 0)
    assert float(weights.sum()) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("lam", [0.5, 2.0])
def test_qam_ocm_ratio_is_bounded_by_exp_2_lambda(lam):
    t = torch.tensor([-1e6, -30.0, 0.0, 30.0, 1e6])
    weights = ocm_weights(t, mode="qam-ocm", lam=lam)
    ratio = float(weights.max() / weights.min())
    assert ratio <= math.exp(2 * lam) * (1 + 1e-5)
    assert ratio == pytest.approx(math.exp(2 * lam), rel=1e-4)  # reached for saturated scores
    assert torch.all(weights[1:] >= weights[:-1])  # a higher score never gets less weight


def test_qam_ocm_matches_the_formula():
    t = torch.tensor([0.3, -1.2, 2.0, 0.0])
    expected = torch.softmax(2.0 * torch.tanh(t), dim=0)
    torch.testing.assert_close(ocm_weights(t, mode="qam-ocm", lam=2.0), expected)


def test_baseline_is_uniform_whatever_the_scores():
    weights = ocm_weights(torch.tensor([-5.0, 0.0, 7.0, 100.0]), mode="baseline")
    torch.testing.assert_close(weights, torch.full((4,), 0.25))


def test_qam_without_ocm_is_unbounded():
    weights = ocm_weights(torch.tensor([0.0, 20.0]), mode="qam")
    assert float(weights[1] / weights[0]) > math.exp(2 * 2.0) * 1000
    torch.testing.assert_close(weights, torch.softmax(torch.tensor([0.0, 20.0]), dim=0))


def test_weights_carry_gradient_to_the_scores_except_in_baseline():
    for mode in ("qam-ocm", "qam"):
        t = torch.zeros(4, requires_grad=True)
        loss = (ocm_weights(t, mode=mode) * torch.tensor([1.0, 2.0, 3.0, 4.0])).sum()
        loss.backward()
        # Descending the loss raises the score of the lowest-loss sample and lowers the highest's.
        assert t.grad[0] < 0 < t.grad[3]


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="mode must be one of"):
        ocm_weights(torch.zeros(3), mode="ocm")


def test_the_segmenter_runs_in_the_precision_it_trained_in():
    """maskaudit.precision: fp32 gives the plain forward pass's numbers; bf16 runs under autocast
    (numbers close to fp32's, not equal) and still returns float32; the network ends channels-last."""
    from maskaudit.precision import autocast_dtype, segmenter_forward

    torch.manual_seed(0)
    unet = UNet(1, 3, width=4).eval()
    kernel = next(p for p in unet.parameters() if p.dim() == 4 and p.shape[1] > 1 and p.shape[-1] == 3)
    assert not kernel.is_contiguous(memory_format=torch.channels_last)
    images = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        plain_logits, plain_bottleneck = unet(images)
        logits, bottleneck = segmenter_forward(unet, images, precision="fp32")
        torch.testing.assert_close(logits, plain_logits, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(bottleneck, plain_bottleneck, rtol=1e-5, atol=1e-5)
        half_logits, half_bottleneck = segmenter_forward(unet, images, precision="bf16")
    assert half_logits.dtype == half_bottleneck.dtype == torch.float32
    assert not torch.equal(half_logits, logits)
    torch.testing.assert_close(half_logits, logits, rtol=0.05, atol=0.05)
    kernel = next(p for p in unet.parameters() if p.dim() == 4 and p.shape[1] > 1 and p.shape[-1] == 3)
    assert kernel.is_contiguous(memory_format=torch.channels_last)
    assert autocast_dtype(torch.device("cpu"), "fp32") is None
    assert autocast_dtype(torch.device("cpu"), "bf16") == torch.bfloat16
