"""Per-sample evidence about label quality, gathered in one streaming pass of the trained networks.

For every given mask, and for one synthetic corruption of it (a *probe*, whose label is known
to be bad), the pass records the segmenter's disagreement, the label critic's score t (and its
score of the segmenter's own mask for the same image), the image evidence and the shape
descriptors. The probes let the fusion learn, on this very dataset, which evidence separates good
masks from bad ones (:mod:`maskaudit.evidence.fusion`).

Shape key: N samples, K classes, F / G feature widths, S working resolution, D shape descriptors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm.auto import tqdm

from .critic import critic_families, probe_batch, probe_reach
from .evidence.image import image_evidence
from .evidence.segmenter import segmenter_evidence
from .inference import predicted_masks, run_networks
from .metrics import shape_descriptors
from .pages import new_memmap, release_pages, return_freed_memory
from .void import drawn_as_given, fill_void_batch

if TYPE_CHECKING:
    from .prepare import PreparedData
    from .train import TrainResult


TRIM_EVERY = 32  # batches between returns of the C heap's freed memory (maskaudit.pages)


@dataclass(frozen=True)
class Signals:
    """Everything the scorer and the clusterer look at, one row per sample."""

    dice: np.ndarray            # (N, K) Dice(given mask, segmenter's mask) per class
    boundary: np.ndarray        # (N, K) mean symmetric surface distance, working-resolution px
    boundary_mm: np.ndarray     # (N, K) the same in mm (volumes; NaN for 2-D images and for probes)
    softmin: np.ndarray         # (N,) soft minimum over pixels of the probability of the given label
    size_ratio: np.ndarray      # (N, K) log((given area + 1) / (predicted area + 1)) per class
    rim_disagreement: np.ndarray  # (N, K) prediction vs mask on the rims either side of the outline, NaN where empty
    object_miss: np.ndarray     # (N, K) the worst-matched whole object, mask's or prediction's, in [0, 1]
    qam_score: np.ndarray       # (N,) raw QAM score t of the final model: the label critic
    qam_prediction: np.ndarray  # (N,) the critic's t of the segmenter's own mask for the image (a probe's: the same)
    qam_features: np.ndarray    # (N, G) pooled QAM penultimate features (G = 0 for probes)
    bottleneck: np.ndarray      # (N, F) pooled U-Net bottleneck features (F = 0 for probes)
    shape: np.ndarray           # (N, K * D) shape descriptors of the given masks
    edge_misfit: np.ndarray     # (N, K) edge misfit per class, NaN where empty (maskaudit.evidence.image)
    step_misfit: np.ndarray     # (N, K) colour-step misfit per class, NaN where empty
    rim_blend: np.ndarray       # (N, K) likeness of the rims either side of the outline, NaN where empty
    family: np.ndarray          # (N,) a probe's corruption family, its index in CRITIC_FAMILIES (-1: a given mask, or none applied)
    reach: np.ndarray           # (N,) how far a probe moves its mask's outline, working px (maskaudit.critic.probe_reach; 0: a given mask)
    probes: "Signals | None" = field(default=None, compare=False)  # the same for one corrupted copy of each mask


def _mask_signals(images: np.ndarray, masks: np.ndarray, filled: np.ndarray, probabilities: np.ndarray,
                  t: np.ndarray, *, multilabel: bool, valid: np.ndarray | None, pixel_mm: np.ndarray | None = None
                  ) -> dict[str, np.ndarray]:
    """The per-mask evidence of one batch: images (b, C, S, S), masks (b, K, S, S) bool, the critic's t (b,),
    valid (b, S, S) bool (False on void pixels) or None, pixel_mm (b, 2) mm per working pixel or None.
    Disagreement leaves void pixels out; the image evidence, the shapes, the size ratio and the rims
    read ``filled``, the void-filled masks (maskaudit.void; the masks themselves without void)."""
    return {
        **segmenter_evidence(probabilities, masks, multilabel=multilabel, valid=valid, filled=filled, pixel_mm=pixel_mm),
        **image_evidence(images, filled),
        "qam_score": t,
        "shape": np.stack([shape_descriptors(m) for m in filled]),
    }


def compute_signals(
    data: "PreparedData",
    result: "TrainResult",
    *,
    rows: range | None = None,
    batch_size: int = 32,
    device: str = "cpu",
    seed: int = 0,
    progress: bool = False,
    store: Path | None = None,
    description: str = "score",
) -> Signals:
    """Run the trained networks once over ``rows`` (default: every sample) and reduce each batch to
    per-sample numbers; the result has one row per sample of ``rows``, in order. Its ``probes`` hold
    the same evidence for one random corruption of each mask, drawn from the critic's corruption
    families (its held-out ones excluded) with ``seed`` (the critic's t is 0 without a QAM).

    With ``store``, a directory, every field of the given masks and of the probes is a memory-mapped
    .npy file there, written batch by batch and released from memory (maskaudit.pages), so that a scan
    of hundreds of thousands of slices does not hold them (about 1 KiB per sample at the defaults).
    ``description`` names the progress bar."""
    rows = range(len(data.images)) if rows is None else rows
    images, masks = data.images[rows.start : rows.stop], data.masks[rows.start : rows.stop]
    multilabel = data.index.multilabel
    families = critic_families(result.config.critic_holdout)
    given_rows = _Rows(len(rows), store=store, prefix=f"rows{rows.start}-")
    probe_rows = _Rows(len(rows), store=store, prefix=f"rows{rows.start}-probes-")
    bar = tqdm(total=len(rows), desc=description, unit="img", disable=not progress)
    for out in run_networks(images, masks, result.unet, result.qam, multilabel=multilabel, batch_size=batch_size,
                            device=device, precision=result.config.precision):
        span = slice(out.start, out.start + len(out.probabilities))
        batch_images, given = np.asarray(images[span]), np.asarray(masks[span], dtype=bool)
        valid = valid_pixels(data, rows, span)
        pixel_mm = None if data.pixel_mm is None else data.pixel_mm[rows.start + span.start : rows.start + span.stop]
        filled = fill_void_batch(given, valid)  # what the image evidence and the shapes read
        parts = _mask_signals(batch_images, given, filled, out.probabilities, out.qam_score, multilabel=multilabel,
                              valid=valid, pixel_mm=pixel_mm)
        # the critic's t of the segmenter's mask, not cut by the given void pixels (a bad mask's band would
        # carve its own shape into it) but, where they are a border band, with one along its own outline
        predicted = predicted_masks(out.probabilities, multilabel=multilabel)
        if valid is not None:
            predicted = np.stack([drawn_as_given(*sample) for sample in zip(predicted, filled, valid)])
        t_prediction = _critic_scores(result.qam, batch_images, predicted, device=device)
        given_rows.put(out.start, parts | {"qam_prediction": t_prediction, "qam_features": out.qam_features,
                                           "bottleneck": out.bottleneck, "family": np.full(len(given), -1),
                                           "reach": np.zeros(len(given))})
        rng = np.random.default_rng([seed, rows.start + out.start])  # the same probes in any process split
        # probes corrupt the masks as given, which the critic reads (void pixels as background, as in training)
        corrupted, family = probe_batch(given, rng, families=families, classes=data.index.classes)
        t = _critic_scores(result.qam, batch_images, corrupted, device=device)
        probe_rows.put(out.start, _mask_signals(batch_images, corrupted, fill_void_batch(corrupted, valid),
                                                out.probabilities, t, multilabel=multilabel, valid=valid)
                       | {"qam_prediction": t_prediction, "family": family, "reach": probe_reach(given, corrupted)})
        release_pages(images, masks, data.void)  # one pass over the cache leaves none of it resident
        if (out.start // batch_size) % TRIM_EVERY == TRIM_EVERY - 1:
            release_pages(*given_rows.arrays.values(), *probe_rows.arrays.values())  # written so far (a flush)
            return_freed_memory()  # the batches' freed arrays, which would otherwise pile up in the heap
        bar.update(len(given))
    bar.close()
    release_pages(*given_rows.arrays.values(), *probe_rows.arrays.values())
    return_freed_memory()
    no_features = np.zeros((len(rows), 0), np.float32)
    probes = Signals(**probe_rows.arrays, qam_features=no_features, bottleneck=no_features)
    return Signals(**given_rows.arrays, probes=probes)


class _Rows:
    """Per-field float32 arrays of ``count`` rows, filled batch by batch: a scan of N samples holds each
    field once, never a list of batches and their concatenation beside it. With ``store``, they are
    memory-mapped files ``store/<prefix><field>.npy`` instead."""

    def __init__(self, count: int, *, store: Path | None = None, prefix: str = ""):
        self.count, self.store, self.prefix = count, store, prefix
        self.arrays: dict[str, np.ndarray] = {}

    def put(self, start: int, parts: dict[str, np.ndarray]) -> None:
        """Store each field's (b, ...) values as rows ``start .. start + b``."""
        for name, values in parts.items():
            values = np.asarray(values)
            if name not in self.arrays:
                shape = (self.count, *values.shape[1:])
                if self.store is not None and np.prod(shape) > 0:
                    self.arrays[name] = new_memmap(self.store / f"{self.prefix}{name}.npy", shape, np.float32)
                else:
                    self.arrays[name] = np.empty(shape, np.float32)
            self.arrays[name][start : start + len(values)] = values


@torch.no_grad()
def _critic_scores(qam, images: np.ndarray, masks: np.ndarray, *, device: str) -> np.ndarray:
    """(b,) the critic's t for images (b, C, S, S) uint8 and masks (b, K, S, S) bool (zeros without a QAM)."""
    if qam is None:
        return np.zeros(len(images), np.float32)
    image_batch = torch.from_numpy(images.astype(np.float32) / 255.0).to(device)
    mask_batch = torch.from_numpy(masks.astype(np.float32)).to(device)
    return qam(image_batch, mask_batch)[0].float().cpu().numpy()


def valid_pixels(data: "PreparedData", rows: range, batch: slice) -> np.ndarray | None:
    """(b, S, S) bool, False on void pixels, for ``batch`` (positions within ``rows``); None without void."""
    if data.void is None:
        return None
    return ~np.asarray(data.void[rows.start + batch.start : rows.start + batch.stop], dtype=bool)


def take_rows(signals: Signals, rows: "slice | np.ndarray", *, features: bool = True) -> Signals:
    """The Signals of rows ``rows`` (a slice: views; positions: copies), probes included. ``features=False``
    leaves out the wide QAM and bottleneck features (zero columns): the scorer never reads them, and
    a few thousand scattered rows of a memory-mapped store would map most of its pages."""
    probes = None if signals.probes is None else take_rows(signals.probes, rows, features=features)
    left_out = () if features else _WIDE_FIELDS
    values = {name: getattr(signals, name)[rows] for name in Signals.__dataclass_fields__
              if name != "probes" and name not in left_out}
    count = len(range(len(signals.softmin))[rows]) if isinstance(rows, slice) else len(rows)
    values.update({name: np.zeros((count, 0), np.float32) for name in left_out})
    return Signals(**values, probes=probes)


_WIDE_FIELDS = ("qam_features", "bottleneck")  # (N, 64) and (N, 128) at the defaults: most of a row's bytes


def release_signals(signals: Signals) -> None:
    """Drop from this process the pages it has read of memory-mapped fields (a store's; maskaudit.pages),
    the probes' too; in-memory fields are left alone."""
    release_pages(*(getattr(signals, name) for name in Signals.__dataclass_fields__ if name != "probes"))
    if signals.probes is not None:
        release_signals(signals.probes)


def concatenate_signals(parts: list[Signals]) -> Signals:
    """One Signals from the per-process shards of a distributed run, in shard order."""
    if len(parts) == 1:
        return parts[0]
    probes = None
    if all(part.probes is not None for part in parts):
        probes = concatenate_signals([part.probes for part in parts])
    return Signals(**{name: np.concatenate([getattr(part, name) for part in parts])
                      for name in Signals.__dataclass_fields__ if name != "probes"}, probes=probes)
