"""Which slices a training epoch visits when a volume dataset has too many to visit them all.

A volume dataset has tens of thousands of slices, most of them without any foreground. Training on
every slice in each of at least 3 epochs makes training time grow with the number of slices; here
an epoch instead draws a fixed number of slices, about half of them among the slices whose given
mask has any foreground and the rest uniformly among the others, so that training costs about the
2-D step budget whatever the dataset's size. Scoring still visits every slice.

Shape key: N slices, K classes, S working resolution, B global batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .train import DEFAULT_STEPS, classes_present, epoch_batches

__all__ = ["FOREGROUND_SHARE", "MIN_SAMPLED_EPOCHS", "SliceSampler", "slice_sampler"]

FOREGROUND_SHARE = 0.5   # share of an epoch's draws taken among the slices with foreground
MIN_SAMPLED_EPOCHS = 10  # epochs of a sampled run: enough for early stopping's two 3-epoch windows
MAX_EPOCHS = 40          # as train.default_epochs: small datasets are not trained longer than this


@dataclass(frozen=True)
class SliceSampler:
    """Draws ``draws`` distinct slices per epoch, a ``foreground_share`` of them among ``foreground``.

    Attributes
    ----------
    foreground : np.ndarray
        (N,) bool, whether each slice's given mask has any foreground.
    draws : int
        Slices per epoch (at most N; N means every slice once, as in a 2-D run).
    epochs : int
        Epochs of a default run: ``draws * epochs`` is about the step budget times the batch size.
    foreground_share : float
        Share of the draws taken among the foreground slices (all of them when there are fewer);
        the rest are drawn uniformly among the slices not drawn yet.
    """

    foreground: np.ndarray
    draws: int
    epochs: int
    foreground_share: float = FOREGROUND_SHARE

    def __post_init__(self) -> None:
        if not 1 <= self.draws <= len(self.foreground):
            raise ValueError(f"draws must be in 1..{len(self.foreground)} (the slices), got {self.draws}")
        if not 0.0 <= self.foreground_share <= 1.0:
            raise ValueError(f"foreground_share must be in [0, 1], got {self.foreground_share}")

    def epoch_rows(self, *, seed: int, epoch: int) -> np.ndarray:
        """(draws,) distinct slice positions of one epoch, sorted; the same for the same seed and epoch."""
        num_slices = len(self.foreground)
        if self.draws == num_slices:  # nothing to choose
            return np.arange(num_slices)
        rng = np.random.default_rng([seed, epoch, 1])
        with_foreground = np.flatnonzero(self.foreground)
        take = min(round(self.foreground_share * self.draws), len(with_foreground))
        chosen = rng.choice(with_foreground, size=take, replace=False)
        others = np.setdiff1d(np.arange(num_slices), chosen, assume_unique=True)
        rest = rng.choice(others, size=self.draws - take, replace=False)
        return np.sort(np.concatenate([chosen, rest]))

    def epoch_batches(self, batch_size: int, *, seed: int, epoch: int, parts: int = 1) -> list[np.ndarray]:
        """The epoch's draws shuffled and split into about draws / ``batch_size`` batches, a multiple of
        ``parts`` of them, by :func:`maskaudit.train.epoch_batches` (so with ``draws == N`` the batches
        are those of a 2-D epoch); positions index the (N, ...) cache."""
        rows = self.epoch_rows(seed=seed, epoch=epoch)
        return [rows[batch] for batch in epoch_batches(len(rows), batch_size, seed=seed, epoch=epoch, parts=parts)]


def slice_sampler(masks: np.ndarray, *, batch_size: int = 8, steps: int = DEFAULT_STEPS) -> SliceSampler:
    """A sampler whose default run takes about ``steps`` optimizer steps of ``batch_size`` on the
    (N, K, S, S) masks, however large N is.

    A set of at most ``steps * batch_size / MIN_SAMPLED_EPOCHS`` slices (800 by default) is
    visited whole each epoch, for as many epochs as fit the budget (MIN_SAMPLED_EPOCHS to
    MAX_EPOCHS); a larger one draws that many slices in each of MIN_SAMPLED_EPOCHS epochs.
    The masks are read in chunks (they may be a memory map larger than memory).
    """
    num_slices = len(masks)
    if num_slices == 0:
        raise ValueError("cannot sample from an empty set of slices")
    budget = steps * batch_size
    draws = min(num_slices, math.ceil(budget / MIN_SAMPLED_EPOCHS))
    epochs = MIN_SAMPLED_EPOCHS if draws < num_slices else int(
        np.clip(math.ceil(budget / num_slices), MIN_SAMPLED_EPOCHS, MAX_EPOCHS))
    return SliceSampler(foreground=classes_present(masks).any(axis=1), draws=draws, epochs=epochs)
