"""Refit: the scan's segmenter trained a few epochs more on the masks the scan kept (quality >= threshold).

The jointly trained U-Net has learned from every given mask, the bad ones too, even if the QAM
weighted them down. Once the scan has scored every mask, a few epochs on the masks it did not flag,
with uniform weights, undo much of what the bad ones taught it. The refitted U-Net is the one that
suggests masks for the suspects and that ``maskaudit predict`` uses; the scores come from the
jointly trained U-Net, which saw the masks it is asked about (docs/BENCHMARKS.md, section 2.00:
JSRT with half its training masks eroded or dilated by 5-13 px, test Dice 0.907 -> 0.925 over 3 seeds).

Shape key: N samples, B batch size.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .train import TrainResult, epoch_batches, train

if TYPE_CHECKING:
    from .models import UNet
    from .prepare import PreparedData

__all__ = ["REFIT_EPOCHS", "REFIT_MAX_STEPS", "MIN_FLAGGED_SHARE", "REFIT_LR_SCALE", "KeptSampler", "Refit",
           "refit_segmenter", "refit_skip_reason"]

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
    seconds: float


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
                 steps_per_epoch=math.ceil(draws / batch_size), seconds=refitted.seconds)
