"""Per-case results of a volume scan: slice scores aggregated to cases, slices.csv, suggested label volumes,
the flagged slices the report steps through.

The pipeline scores 2-D slices; a reviewer fixes cases. A case's suspicion is the mean over its
most suspicious fifth of slices, and its quality_score the scorer's P(clean) on those case
suspicions (see :func:`aggregate_cases`); the case's other columns come from its worst slice,
whose index goes into the column ``worst_slice``. Those slices are the case's *flagged slices*
(:func:`flagged_slices`, at most MAX_FLAGGED_SLICES), drawn in the report and exported. Suspect
cases get a suggested label volume: the segmenter's mask of every slice at the slice's original
size, stacked back along the slicing axis and saved in the label file's format and geometry.
Shape key: N slices, K classes, M cases, S working resolution, H x W one slice's voxels.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .diagnosis import diagnose
from .export import LIST_SEPARATOR, ScoreRow
from .scoring import quality_from_suspicion
from .formats.nnunet import read_case
from .formats.volume_files import write_label_volume
from .prepare_volumes import VolumeData
from .visuals import predict_samples
from .pages import release_pages, return_freed_memory
from .signals import release_signals

__all__ = ["SLICE_COLUMNS", "CaseScores", "aggregate_cases", "flagged_slices", "rank_cases", "write_slices_csv",
           "report_slices", "SlicePictures"]

WORST_FRACTION = 0.2  # a case's score is the mean over this share of its slices, the worst ones
_RELEASE_ROWS = 16_384  # slices.csv rows between releases of the signals' pages
MAX_FLAGGED_SLICES = 8  # flagged slices of a suspect case shown in the report and exported, at most
SLICE_COLUMNS = ("case", "slice", "quality_score", "suspicion", "dice_vs_prediction", "dice_per_class",
                 "boundary_distance", "qam_score", "cluster", "outlier", "boundary_distance_mm")


@dataclass(frozen=True)
class CaseScores:
    """Slice scores reduced to cases.

    Attributes
    ----------
    quality : np.ndarray
        (M,) P(clean) of each case under the scorer's mixture model, fitted on ``suspicion``.
    suspicion : np.ndarray
        (M,) mean suspicion of each case's worst slices (higher = worse).
    worst : np.ndarray
        (M,) ``int64`` sample position of each case's most suspicious slice.
    """

    quality: np.ndarray
    suspicion: np.ndarray
    worst: np.ndarray


def aggregate_cases(suspicion: np.ndarray, case_of: np.ndarray, num_cases: int, *, seed: int = 0,
                    mixture: bool = True) -> CaseScores:
    """Reduce (N,) slice suspicion to (M,) cases.

    A case's suspicion is the mean over its most suspicious fifth of slices (at least one), so a
    corruption of a few slices counts about as much as one of all of them; its quality_score is
    P(clean) from :func:`~maskaudit.scoring.quality_from_suspicion` on the case suspicions, so that
    0.5 separates clean and bad cases as it does samples (``mixture=False``: the tail probability,
    for a dataset that reads as clean). ``case_of`` (N,) must be sorted.
    """
    bounds = np.searchsorted(case_of, np.arange(num_cases + 1))
    case_suspicion = np.zeros(num_cases)
    worst = np.zeros(num_cases, dtype=np.int64)
    for case in range(num_cases):
        order = _worst_slices(suspicion, np.arange(bounds[case], bounds[case + 1]))
        case_suspicion[case] = float(np.mean(suspicion[order]))
        worst[case] = order[0]
    return CaseScores(quality_from_suspicion(case_suspicion, seed=seed, mixture=mixture), case_suspicion, worst)


def _worst_slices(suspicion: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """The most suspicious WORST_FRACTION (at least one) of the slice ``positions``, most suspicious first."""
    order = positions[np.argsort(-suspicion[positions], kind="stable")]
    return order[: max(1, math.ceil(WORST_FRACTION * len(order)))]


def flagged_slices(suspicion: np.ndarray, case_of: np.ndarray, cases, *, limit: int = MAX_FLAGGED_SLICES
                   ) -> dict[int, np.ndarray]:
    """{case: sample positions of its flagged slices, in slice order} for each of ``cases``.

    A case's flagged slices are the ones its score averages: its most suspicious fifth (see
    :func:`aggregate_cases`), at most ``limit`` of them, the most suspicious kept. suspicion: (N,)
    per slice; case_of: (N,) sorted case position of each slice.
    """
    bounds = np.searchsorted(case_of, np.arange(int(case_of.max(initial=-1)) + 2))
    return {int(case): np.sort(_worst_slices(suspicion, np.arange(bounds[case], bounds[case + 1]))[:limit])
            for case in cases}


def write_slices_csv(path: Path, volume_data: VolumeData, signals, clusters, scores) -> None:
    """slices.csv: one row per slice, in case and slice order (columns :data:`SLICE_COLUMNS`)."""
    cases = volume_data.volumes.cases
    with atomic_path(path) as temporary, open(temporary, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\r\n")  # row by row: never the whole file in memory
        writer.writerow(SLICE_COLUMNS)
        for position, (case, index) in enumerate(zip(volume_data.case_of, volume_data.slice_of)):
            if position % _RELEASE_ROWS == _RELEASE_ROWS - 1:
                release_signals(signals)  # the memory-mapped signals read so far
            writer.writerow([
                cases[case].id, int(index), f"{scores.quality[position]:.6f}", f"{scores.suspicion[position]:.6f}",
                f"{signals.dice[position].mean():.6f}",
                LIST_SEPARATOR.join(f"{value:.4f}" for value in signals.dice[position]),
                f"{signals.boundary[position].max():.3f}", f"{signals.qam_score[position]:.6f}",
                int(clusters.labels[position]), int(clusters.outlier[position]),
                f"{signals.boundary_mm[position].max():.3f}",
            ])


def rank_cases(volume_data: VolumeData, unet, signals, clusters, scores, *, threshold: float, out_dir: Path,
               seed: int = 0, precision: str = "auto") -> tuple[list[ScoreRow], CaseScores]:
    """One ScoreRow per case, most suspect first; suspect cases get a diagnosis and suggested/labelsTr/<case>.

    The diagnosis is that of the case's worst slice; the U-Net predicts in ``precision`` (maskaudit.precision).
    """
    data, volumes = volume_data.data, volume_data.volumes
    case_scores = aggregate_cases(scores.suspicion, volume_data.case_of, len(volumes.cases), seed=seed,
                                  mixture=not scores.reads_clean)
    order = sorted(range(len(volumes.cases)),
                   key=lambda c: (case_scores.quality[c], -case_scores.suspicion[c], volumes.cases[c].id))
    diagnoses: dict[int, tuple[str, tuple[int, ...]]] = {}
    for case in (c for c in order if case_scores.quality[c] < threshold):
        worst = int(case_scores.worst[case])
        labels, worst_working = _predict_case(volume_data, unet, case, worst, precision=precision)
        diagnoses[case] = diagnose(np.asarray(data.masks[worst], dtype=bool), worst_working, suspect=True,
                                   multilabel=False)
        write_suggested_volume(out_dir / "suggested", volume_data, case, labels)
        release_pages(data.masks)
        return_freed_memory()  # each case's predictions and label volume
    rows = []
    for rank, case in enumerate(order, start=1):
        item, worst = volumes.cases[case], int(case_scores.worst[case])
        issue_type, issue_classes = diagnoses.get(case, ("ok", ()))
        rows.append(ScoreRow(
            rank=rank, id=item.id, image=";".join(path.as_posix() for path in item.images),
            mask=item.label.as_posix(), quality_score=float(case_scores.quality[case]),
            suspect=bool(case_scores.quality[case] < threshold), issue_type=issue_type,
            issue_classes=tuple(volumes.classes[k] for k in issue_classes),
            qam_score=float(signals.qam_score[worst]), dice_vs_prediction=float(signals.dice[worst].mean()),
            dice_per_class=tuple(float(value) for value in signals.dice[worst]),
            boundary_distance=float(signals.boundary[worst].max()), cluster=int(clusters.labels[worst]),
            outlier=bool(clusters.outlier[worst]), outlier_score=float(clusters.outlier_score[worst]),
            worst_slice=int(volume_data.slice_of[worst]),
            boundary_distance_mm=float(signals.boundary_mm[worst].max()),
            object_miss=float(signals.object_miss[worst].max()),
        ))
    return rows, case_scores


def _predict_case(volume_data: VolumeData, unet, case: int, worst: int, *, precision: str = "auto"
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(X, Y, Z) uint8 predicted labels of one case, and the (K, S, S) working mask of slice position ``worst``."""
    slices: dict[int, np.ndarray] = {}
    worst_working = None
    for position, working, original in predict_samples(volume_data.data, unet, list(volume_data.slices_of_case(case)),
                                                       precision=precision):
        labels = np.zeros(original.shape[1:], dtype=np.uint8)
        for k, mask in enumerate(original):
            labels[mask] = k + 1
        slices[int(volume_data.slice_of[position])] = labels
        if position == worst:
            worst_working = working
    return np.stack([slices[index] for index in sorted(slices)], axis=volume_data.axis), worst_working


def write_suggested_volume(out_dir: Path, volume_data: VolumeData, case: int, labels: np.ndarray) -> Path:
    """Write ``labels`` (X, Y, Z) as ``out_dir/labelsTr/<label file name>`` in the label file's format, with its
    geometry (affine, or spacing, origin and direction), header and data type."""
    item = volume_data.volumes.cases[case]
    return write_label_volume(out_dir / "labelsTr" / item.label.name, labels, like=volume_data.volumes.root / item.label)


def report_slices(volume_data: VolumeData, signals, scores, case_scores: CaseScores, *, threshold: float) -> dict:
    """{case id: (SliceView, ...)}: the flagged slices of every suspect case, for the report's detail view."""
    from .report import SliceView

    cases = volume_data.volumes.cases
    suspects = np.flatnonzero(case_scores.quality < threshold)
    samples = volume_data.data.index.samples
    return {cases[case].id: tuple(SliceView(key=samples[position].id,
                                            label=f"slice {int(volume_data.slice_of[position])}",
                                            quality_score=float(scores.quality[position]),
                                            dice_vs_prediction=float(signals.dice[position].mean()))
                                  for position in positions)
            for case, positions in flagged_slices(scores.suspicion, volume_data.case_of, suspects).items()}


class SlicePictures:
    """``pictures(position)``: the report's picture of one slice, the cached image at the slice's size,
    the given labels from the label file and the prediction. The last case's labels are kept, since the
    report draws a case's slices one after another."""

    def __init__(self, volume_data: VolumeData, unet, *, precision: str = "auto"):
        self.volume_data, self.unet, self.precision = volume_data, unet, precision
        self._labels: tuple[int, np.ndarray] | None = None

    def __call__(self, position: int):
        from PIL import Image

        from .report import SampleVisuals

        volume_data = self.volume_data
        data, volumes = volume_data.data, volume_data.volumes
        case = int(volume_data.case_of[position])
        if self._labels is None or self._labels[0] != case:
            self._labels = (case, read_case(volumes, volumes.cases[case]).labels)
        labels = np.take(self._labels[1], int(volume_data.slice_of[position]), axis=volume_data.axis)
        height, width = labels.shape
        channel = np.asarray(data.images[position, 0])
        grey = np.asarray(Image.fromarray(channel).resize((width, height), Image.Resampling.BILINEAR))
        given = np.stack([labels == k + 1 for k in range(len(volumes.classes))])
        (_, _, predicted), = predict_samples(data, self.unet, [position], precision=self.precision)
        return SampleVisuals(image=np.repeat(grey[..., None], 3, axis=2), given=given, predicted=predicted)
