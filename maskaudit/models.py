"""The networks of Pick-and-Learn: a U-Net segmenter, the Quality Awareness Module and the OCM weights.

Shape key: B batch, C image channels, K classes, H x W pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

MODES = ("qam-ocm", "qam", "baseline")


def _conv_block(in_channels: int, out_channels: int, *, norm: str) -> nn.Sequential:
    """Two 3x3 convolutions, each followed by a normalisation ("batch", "group" or "none") and a ReLU."""

    def norm_layer(channels: int) -> nn.Module:
        if norm == "batch":
            return nn.BatchNorm2d(channels)
        if norm == "none":
            return nn.Identity()
        return nn.GroupNorm(min(8, channels), channels)

    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        norm_layer(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        norm_layer(out_channels),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """U-Net (Ronneberger et al. 2015): four resolution levels, skip connections, width configurable.

    ``forward(x)`` takes images (B, C, H, W) float with H and W divisible by 8 and returns
    ``(logits, bottleneck)``: logits (B, out_channels, H, W) and the bottleneck features
    average-pooled to (B, 8 * width), used for clustering.
    """

    def __init__(self, in_channels: int, out_channels: int, *, width: int = 16) -> None:
        super().__init__()
        widths = [width, 2 * width, 4 * width, 8 * width]
        self.encoders = nn.ModuleList()
        previous = in_channels
        for channels in widths:
            self.encoders.append(_conv_block(previous, channels, norm="batch"))
            previous = channels
        self.upsamplers = nn.ModuleList(
            nn.ConvTranspose2d(widths[level + 1], widths[level], 2, stride=2) for level in range(3)
        )
        self.decoders = nn.ModuleList(
            _conv_block(2 * widths[level], widths[level], norm="batch") for level in range(3)
        )
        self.head = nn.Conv2d(width, out_channels, 1)
        self.feature_dim = widths[-1]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skips = []
        for level, encoder in enumerate(self.encoders):
            x = encoder(x)
            if level < 3:
                skips.append(x)
                x = F.max_pool2d(x, 2)
        bottleneck = x.mean(dim=(2, 3))  # (B, 8w)
        for level in reversed(range(3)):
            x = self.upsamplers[level](x)
            x = self.decoders[level](torch.cat([x, skips[level]], dim=1))
        return self.head(x), bottleneck


class QualityAwarenessModule(nn.Module):
    """VGG-style CNN that scores how well a label fits its image (paper section 2.1).

    Input is the image channels concatenated with one channel per class (the paper's n + 1).
    Four VGG stages (two 3x3 convolutions and a 2x2 max-pool each) end in a one-channel 1x1
    convolution and a global average pool: one raw score t per sample. GroupNorm keeps each
    sample's score independent of the rest of its batch. The first stage, at full resolution, is
    not normalised unless ``stem_norm``: its GroupNorms took about a third of the QAM's time on a CPU
    (docs/BENCHMARKS.md, section 0.4); older checkpoints have them
    (:func:`qam_from_state` reads either).

    ``forward(image, masks)`` takes (B, C, H, W) and (B, K, H, W) floats and returns
    ``(t, features)``: t (B,) and the penultimate features average-pooled to (B, 8 * width).
    """

    def __init__(self, image_channels: int, num_classes: int, *, width: int = 8, stem_norm: bool = False) -> None:
        super().__init__()
        widths = [width, 2 * width, 4 * width, 8 * width]
        stages = []
        previous = image_channels + num_classes
        for stage, channels in enumerate(widths):
            stages.append(_conv_block(previous, channels, norm="group" if stage > 0 or stem_norm else "none"))
            stages.append(nn.MaxPool2d(2))
            previous = channels
        self.features = nn.Sequential(*stages)
        self.score = nn.Conv2d(previous, 1, 1)
        self.feature_dim = widths[-1]

    def forward(self, image: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.features(torch.cat([image, masks], dim=1))
        t = self.score(features).mean(dim=(1, 2, 3))  # (B,)
        return t, features.mean(dim=(2, 3))


def has_stem_norm(state: dict) -> bool:
    """Whether a QAM state_dict has first-stage GroupNorms (written before the first stage lost them)."""
    return "features.0.1.weight" in state


def qam_from_state(state: dict, image_channels: int, num_classes: int, *, width: int) -> QualityAwarenessModule:
    """A QAM holding the weights ``state`` (its state_dict), with or without the first stage's
    GroupNorms as the state has them (older checkpoints have them)."""
    qam = QualityAwarenessModule(image_channels, num_classes, width=width, stem_norm=has_stem_norm(state))
    qam.load_state_dict(state)
    return qam


def ocm_weights(t: torch.Tensor, *, mode: str, lam: float = 2.0) -> torch.Tensor:
    """Per-sample loss weights over one mini-batch, summing to 1 (paper Eq. 1 and 2).

    ``qam-ocm``: softmax(lam * tanh(t)), so no two weights differ by more than exp(2 * lam);
    ``qam``: softmax(t), unbounded; ``baseline``: uniform 1 / B (t is ignored).
    t has shape (B,); the result has shape (B,).
    """
    if mode == "qam-ocm":
        return torch.softmax(lam * torch.tanh(t), dim=0)
    if mode == "qam":
        return torch.softmax(t, dim=0)
    if mode == "baseline":
        return torch.full_like(t, 1.0 / t.shape[0])
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
