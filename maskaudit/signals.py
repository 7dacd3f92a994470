"""Per-sample evidence about label quality, gathered in one streaming pass of the trained networks.

Shape key: N samples, K classes, F / G feature widths, S working resolution, D shape descriptors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from .inference import predicted_masks, run_networks
from .metrics import (
    boundary_distance,
    dice_per_class,
    shape_descriptors,
    softmin_label_quality,
)

if TYPE_CHECKING:
    from .prepare import PreparedData
    from .train import TrainResult


@dataclass(frozen=True)
class Signals:
    """Everything the scorer and the clusterer look at, one row per sample."""

    dice: np.ndarray            # (N, K) Dice(given mask, segmenter's mask) per class
    boundary: np.ndarray        # (N, K) mean symmetric surface distance, working-resolution px
    softmin: np.ndarray         # (N,) soft minimum over pixels of the probability of the given label
    qam_score: np.ndarray       # (N,) raw QAM score t of the final model
    qam_features: np.ndarray    # (N, G) pooled QAM penultimate features
    bottleneck: np.ndarray      # (N, F) pooled U-Net bottleneck features
    shape: np.ndarray           # (N, K * D) shape descriptors of the given masks


def compute_signals(
    data: "PreparedData",
    result: "TrainResult",
    *,
    rows: range | None = None,
    batch_size: int = 32,
    device: str = "cpu",
    progress: bool = False,
) -> Signals:
    """Run the trained networks once over ``rows`` (default: every sample) and reduce each batch to
    per-sample numbers; the result has one row per sample of ``rows``, in order."""
    rows = range(len(data.images)) if rows is None else rows
    images, masks = data.images[rows.start : rows.stop], data.masks[rows.start : rows.stop]
    multilabel = data.index.multilabel
    parts: dict[str, list[np.ndarray]] = {name: [] for name in Signals.__dataclass_fields__}
    bar = tqdm(total=len(rows), desc="score", unit="img", disable=not progress)
    for out in run_networks(
        images, masks, result.unet, result.qam, multilabel=multilabel, batch_size=batch_size, device=device
    ):
        batch = slice(out.start, out.start + len(out.probabilities))
        given = np.asarray(masks[batch], dtype=bool)
        predicted = predicted_masks(out.probabilities, multilabel=multilabel)
        probabilities = out.probabilities
        valid = valid_pixels(data, rows, batch)
        if valid is not None:  # void pixels: no class given, so none predicted either
            predicted = predicted & valid[:, None]
        parts["dice"].append(dice_per_class(predicted, given))
        parts["boundary"].append(np.stack([boundary_distance(p, g) for p, g in zip(predicted, given)]))
        valid_rows = valid if valid is not None else [None] * len(given)
        parts["softmin"].append(np.array([
            softmin_label_quality(p, g, valid=v) for p, g, v in zip(probabilities, given, valid_rows)
        ]))
        parts["qam_score"].append(out.qam_score)
        parts["qam_features"].append(out.qam_features)
        parts["bottleneck"].append(out.bottleneck)
        parts["shape"].append(np.stack([shape_descriptors(g) for g in given]))
        bar.update(len(given))
    bar.close()
    return Signals(**{name: np.concatenate(values).astype(np.float32) for name, values in parts.items()})


def valid_pixels(data: "PreparedData", rows: range, batch: slice) -> np.ndarray | None:
    """(b, S, S) bool, False on void pixels, for ``batch`` (positions within ``rows``); None without void."""
    if data.void is None:
        return None
    return ~np.asarray(data.void[rows.start + batch.start : rows.start + batch.stop], dtype=bool)


def concatenate_signals(parts: list[Signals]) -> Signals:
    """One Signals from the per-process shards of a distributed run, in shard order."""
    if len(parts) == 1:
        return parts[0]
    return Signals(**{name: np.concatenate([getattr(part, name) for part in parts])
                      for name in Signals.__dataclass_fields__})
