"""Refit: the scan's segmenter trained a few epochs more on the masks the scan kept (quality >= threshold).

The jointly trained U-Net has learned from every given mask, the bad ones too, even if the QAM
weighted them down. Once the scan has scored every mask, a few epochs on the masks it did not flag,
with uniform weights, undo much of what the bad ones taught it. The refitted U-Net is the one that
``maskaudit predict`` uses (docs/BENCHMARKS.md, section 2.00: JSRT with half its training masks
eroded or dilated by 5-13 px, test Dice 0.907 -> 0.925 over 3 seeds). ``scan`` scores every mask
again with it: it never learned the flagged masks, so its disagreement with them is not damped
(section 0.0000000000: AUROC up on 8 of 10 benchmark scans). A suspect's suggested mask comes from
the mean of both (MeanSegmenter): the trained U-Net saw the suspect's mask, and is right where that
mask was; the refitted one never saw it, and is right where it was wrong (section 5.00: on DDTI the
refitted U-Net alone degrades the clean masks flagged by mistake, 0.961 -> 0.906; the mean keeps
them at 0.965).

Shape key: N samples, B batch size.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from .train import TrainResult, epoch_batches, train

if TYPE_CHECKING:
    from .models import UNet
    from .prepare import PreparedData

__all__ = ["REFIT_EPOCHS", "REFIT_MAX_STEPS", "MIN_FLAGGED_SHARE", "REFIT_LR_SCALE", "KeptSampler", "MeanSegmenter",
           "Refit", "refit_segmenter", "refit_skip_reason"]

# Measured on JSRT with 50 % of the training masks eroded or dilated by 5-13 px (docs/BENCHMARKS.md, 2.00).
REFIT_EPOCHS = 5          # epochs over the kept masks (seed 0 at the full rate: 5 epochs 0.914-0.928, 15 epochs 0.931)
REFIT_MAX_STEPS = 100     # a tenth of a default training; larger sets draw a share of the kept masks each epoch
MIN_FLAGGED_SHARE = 0.05  # below this share of flagged masks the kept set is nearly the training set: no refit
REFIT_LR_SCALE = 0.3      # of the training rate: test Dice over four batch orders 0.924-0.927 (at 1.0: 0.914-0.928)


@dataclass(frozen=True)
class KeptSampler:
    """Epochs over the ``kept`` positions only, ``draws`` of them per epoch (as maskaudit.sampling's sampler).

    kept: (M,) sorted int positions into the (N, ...) cache; draws <= M.
    """

    kept: np.ndarray
    draws: int
    epochs: int

    def epoch_batches(self, batch_size: int, *, seed: int, epoch: int, parts: int = 1) -> list[np.ndarray]:
        """About draws / ``batch_size`` batches of kept positions, each sorted, a multiple of ``parts`` of them."""
        rows = self.kept
        if self.draws < len(rows):
            rows = np.sort(np.random.default_rng([seed, epoch, 2]).choice(rows, size=self.draws, replace=False))
        batches = epoch_batches(len(rows), batch_size, seed=seed, epoch=epoch, parts=parts)
        return [np.sort(rows[batch]) for batch in batches]


@dataclass(frozen=True)
class Refit:
    """A refitted segmenter and what it was trained on."""

    unet: "UNet"
    samples: int       # masks kept
    epochs: int
    steps_per_epoch: int


def refit_skip_reason(quality: np.ndarray, threshold: float, batch_size: int) -> str | None:
    """Why a refit would not help (None: it would). quality: (N,) scores in [0, 1]."""
    flagged = int(np.sum(quality < threshold))
    if flagged == 0:
        return "no mask was flagged"
    if flagged < MIN_FLAGGED_SHARE * len(quality):
        return (f"only {flagged} of {len(quality)} masks were flagged (under {MIN_FLAGGED_SHARE:.0%}): "
                "the segmenter already learned from nearly the same masks")
    if len(quality) - flagged < batch_size:
        return f"fewer than {batch_size} masks were kept"
    return None


def refit_segmenter(data: "PreparedData", result: TrainResult, kept: np.ndarray, *, device: str,
                    progress: bool = False) -> Refit:
    """Train a copy of ``result.unet`` for REFIT_EPOCHS epochs on the ``kept`` (M,) positions, uniform weights.

    The learning rate is REFIT_LR_SCALE times the scan's; everything else (augmentation, precision,
    epoch-end weight average, BatchNorm recalibration) is as in its training; the QAM takes no part.
    ``result.unet`` is left unchanged. At most REFIT_MAX_STEPS optimizer steps in all.
    """
    kept = np.sort(np.asarray(kept, dtype=np.int64))
    batch_size = result.config.batch_size
    draws = min(len(kept), REFIT_MAX_STEPS * batch_size // REFIT_EPOCHS)
    sampler = KeptSampler(kept=kept, draws=draws, epochs=REFIT_EPOCHS)
    config = dataclasses.replace(result.config, mode="baseline", epochs=REFIT_EPOCHS, early_stop=False,
                                 device=device, critic=0.0, lr=result.config.lr * REFIT_LR_SCALE)
    refitted = train(data, config, progress=progress, sampler=sampler, initial=result.unet,
                     description="refit")
    return Refit(unet=refitted.unet, samples=len(kept), epochs=REFIT_EPOCHS,
                 steps_per_epoch=math.ceil(draws / batch_size))


class MeanSegmenter(torch.nn.Module):
    """Two U-Nets as one: the mean of their class probabilities, returned as logits that
    maskaudit.inference.class_probabilities turns back into that mean, and the first one's bottleneck.

    multilabel: the U-Nets' outputs are (b, K) sigmoids, else (b, K + 1) softmax with background first.
    """

    def __init__(self, first: "UNet", second: "UNet", *, multilabel: bool) -> None:
        super().__init__()
        self.first, self.second, self.multilabel = first, second, multilabel

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        (logits_a, bottleneck), (logits_b, _) = self.first(images), self.second(images)
        logits_a, logits_b = logits_a.float(), logits_b.float()
        if self.multilabel:
            mean = (torch.sigmoid(logits_a) + torch.sigmoid(logits_b)) / 2
            return torch.logit(mean.clamp(1e-6, 1 - 1e-6)), bottleneck
        mean = (torch.softmax(logits_a, dim=1) + torch.softmax(logits_b, dim=1)) / 2
        return torch.log(mean.clamp_min(1e-12)), bottleneck
