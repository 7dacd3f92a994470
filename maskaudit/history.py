"""What training measured for each sample, epoch by epoch, kept only for the samples an epoch drew.

A volume dataset trains on a few thousand of its hundreds of thousands of slices per epoch; dense
(epochs, samples) tables would hold mostly NaN and grow with the dataset (0.2 KiB per slice over
ten epochs). This keeps each epoch's rows and their values instead, and makes the dense tables
only when asked (benchmarks, tests, the early-stop window).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

SCALARS = ("loss", "t", "weight")  # per-sample loss L_i, raw QAM score t_i, batch weight x batch size
KEYS = SCALARS + ("dice",)         # dice: (K,) soft Dice per class of the training prediction


@dataclass
class TrainingHistory:
    """Per-epoch records of ``num_samples`` samples with ``num_classes`` classes.

    records[e] is epoch e's (rows, values): rows (M,) int64, sorted, the samples it trained on;
    values maps each of KEYS to float32 (M,) (``dice``: (M, K)).
    """

    num_samples: int
    num_classes: int
    records: list[tuple[np.ndarray, dict[str, np.ndarray]]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)

    def record(self, rows: np.ndarray, values: dict[str, np.ndarray]) -> None:
        """Append one epoch: rows (M,) sample positions, values[key] (M,) or (M, K) in the same order."""
        order = np.argsort(rows, kind="stable")
        self.records.append((np.asarray(rows, np.int64)[order],
                            {key: np.asarray(values[key], np.float32)[order] for key in KEYS}))

    def truncate(self, epochs: int) -> None:
        """Keep the first ``epochs`` epochs only."""
        del self.records[epochs:]

    def dense(self, key: str, first: int = 0) -> np.ndarray:
        """(E - first, N) float32, or (E - first, N, K) for ``dice``: epochs ``first``.. as a table,
        NaN where an epoch did not draw the sample."""
        if first < 0:
            raise ValueError(f"first must be >= 0, got {first}")
        shape = (self.num_samples, self.num_classes) if key == "dice" else (self.num_samples,)
        table = np.full((max(len(self) - first, 0), *shape), np.nan, np.float32)
        for row, (rows, values) in zip(table, self.records[first:]):
            row[rows] = values[key]
        return table

    def state(self) -> dict[str, torch.Tensor]:
        """The checkpoint form: tensors only. ``offsets`` (E + 1,) cut the concatenated ``rows`` and
        values into epochs; ``samples`` and ``classes`` are 0-d tensors."""
        lengths = [len(rows) for rows, _ in self.records]
        offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
        state = {"samples": torch.tensor(self.num_samples), "classes": torch.tensor(self.num_classes),
                 "offsets": torch.from_numpy(offsets),
                 "rows": torch.from_numpy(_concatenate([rows for rows, _ in self.records], (0,), np.int64))}
        for key in KEYS:
            tail = (self.num_classes,) if key == "dice" else ()
            state[key] = torch.from_numpy(_concatenate([values[key] for _, values in self.records], (0, *tail),
                                                       np.float32))
        return state

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> "TrainingHistory":
        """Rebuild a history from :meth:`state`. Raises KeyError or ValueError for another form."""
        history = cls(int(state["samples"]), int(state["classes"]))
        offsets, rows = state["offsets"].numpy(), state["rows"].numpy()
        if offsets[-1] != len(rows) or any(len(state[key]) != len(rows) for key in KEYS) or (
                len(rows) and not 0 <= rows.min() <= rows.max() < history.num_samples):
            raise ValueError("the history's rows, offsets and values do not agree")
        for start, stop in zip(offsets[:-1], offsets[1:]):
            history.records.append((rows[start:stop].astype(np.int64),
                                   {key: state[key].numpy()[start:stop].astype(np.float32) for key in KEYS}))
        return history


def _concatenate(parts: list[np.ndarray], empty_shape: tuple[int, ...], dtype) -> np.ndarray:
    return np.ascontiguousarray(np.concatenate(parts) if parts else np.zeros(empty_shape, dtype), dtype=dtype)
