"""Per-case results of a volume scan: slice scores aggregated to cases, slices.csv, suggested NIfTI labels.

The pipeline scores 2-D slices; a reviewer fixes cases. A case's quality_score is the mean of its
worst slices' quality scores (the lowest fifth, at least one), so a corruption that touches a few
slices counts as much as one that touches all of them; the case's other columns come from its
worst slice, whose index goes into the last column ``worst_slice``. Suspect cases get a suggested
label volume: the segmenter's mask of every slice at the slice's original size, stacked back
along the slicing axis and saved with the label file's affine and header.
Shape key: N slices, K classes, M cases, S working resolution, H x W one slice's voxels.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import atomic_write_bytes, atomic_write_text
from .diagnosis import diagnose
from .export import LIST_SEPARATOR, ScoreRow
from .formats.nnunet import read_case
from .prepare_volumes import VolumeData
from .visuals import predict_samples

__all__ = ["SLICE_COLUMNS", "CaseScores", "aggregate_cases", "rank_cases", "write_slices_csv", "case_visuals"]

WORST_FRACTION = 0.2  # a case's score is the mean over this share of its slices, the worst ones
SLICE_COLUMNS = ("case", "slice", "quality_score", "suspicion", "dice_vs_prediction", "dice_per_class",
                 "boundary_distance", "qam_score", "cluster", "outlier")


@dataclass(frozen=True)
class CaseScores:
    """Slice scores reduced to cases, aligned with ``VolumeData.volumes.cases``.

    Attributes
    ----------
    quality : np.ndarray
        (M,) mean quality_score of each case's worst slices.
    suspicion : np.ndarray
        (M,) mean suspicion of the same slices (higher = worse).
    worst : np.ndarray
        (M,) ``int64`` sample position of each case's lowest-quality slice.
    """

    quality: np.ndarray
    suspicion: np.ndarray
    worst: np.ndarray


def aggregate_cases(volume_data: VolumeData, quality: np.ndarray, suspicion: np.ndarray) -> CaseScores:
    """Reduce (N,) slice quality and suspicion to (M,) cases: the mean over each case's worst fifth."""
    cases = len(volume_data.volumes.cases)
    case_quality, case_suspicion = np.ones(cases), np.zeros(cases)
    worst = np.zeros(cases, dtype=np.int64)
    for case in range(cases):
        positions = volume_data.slices_of_case(case)
        order = positions[np.argsort(quality[positions], kind="stable")]
        take = order[: max(1, math.ceil(WORST_FRACTION * len(order)))]
        case_quality[case] = float(np.mean(quality[take]))
        case_suspicion[case] = float(np.mean(suspicion[take]))
        worst[case] = order[0]
    return CaseScores(case_quality, case_suspicion, worst)


def write_slices_csv(path: Path, volume_data: VolumeData, signals, clusters, scores) -> None:
    """slices.csv: one row per slice, in case and slice order (columns :data:`SLICE_COLUMNS`)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(SLICE_COLUMNS)
    cases = volume_data.volumes.cases
    for position, (case, index) in enumerate(zip(volume_data.case_of, volume_data.slice_of)):
        writer.writerow([
            cases[case].id, int(index), f"{scores.quality[position]:.6f}", f"{scores.suspicion[position]:.6f}",
            f"{signals.dice[position].mean():.6f}", LIST_SEPARATOR.join(f"{value:.4f}" for value in signals.dice[position]),
            f"{signals.boundary[position].max():.3f}", f"{signals.qam_score[position]:.6f}",
            int(clusters.labels[position]), int(clusters.outlier[position]),
        ])
    atomic_write_text(path, buffer.getvalue())


def rank_cases(volume_data: VolumeData, unet, signals, clusters, scores, *, threshold: float, out_dir: Path,
               progress: bool = False) -> tuple[list[ScoreRow], CaseScores]:
    """One ScoreRow per case, most suspect first; suspect cases get a diagnosis and suggested/labelsTr/<case>.

    The diagnosis is that of the case's worst slice.
    """
    data, volumes = volume_data.data, volume_data.volumes
    case_scores = aggregate_cases(volume_data, scores.quality, scores.suspicion)
    order = sorted(range(len(volumes.cases)),
                   key=lambda c: (case_scores.quality[c], -case_scores.suspicion[c], volumes.cases[c].id))
    diagnoses: dict[int, tuple[str, tuple[int, ...]]] = {}
    for case in (c for c in order if case_scores.quality[c] < threshold):
        worst = int(case_scores.worst[case])
        labels, worst_working = _predict_case(volume_data, unet, case, worst)
        diagnoses[case] = diagnose(np.asarray(data.masks[worst], dtype=bool), worst_working, suspect=True,
                                   multilabel=False)
        write_suggested_volume(out_dir / "suggested", volume_data, case, labels)
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
        ))
    return rows, case_scores


def _predict_case(volume_data: VolumeData, unet, case: int, worst: int) -> tuple[np.ndarray, np.ndarray]:
    """(X, Y, Z) uint8 predicted labels of one case, and the (K, S, S) working mask of slice position ``worst``."""
    slices: dict[int, np.ndarray] = {}
    worst_working = None
    for position, working, original in predict_samples(volume_data.data, unet, list(volume_data.slices_of_case(case))):
        labels = np.zeros(original.shape[1:], dtype=np.uint8)
        for k, mask in enumerate(original):
            labels[mask] = k + 1
        slices[int(volume_data.slice_of[position])] = labels
        if position == worst:
            worst_working = working
    return np.stack([slices[index] for index in sorted(slices)], axis=volume_data.axis), worst_working


def write_suggested_volume(out_dir: Path, volume_data: VolumeData, case: int, labels: np.ndarray) -> Path:
    """Write ``labels`` (X, Y, Z) as ``out_dir/labelsTr/<label file name>`` with the label file's affine and header."""
    import nibabel as nib

    item = volume_data.volumes.cases[case]
    source = nib.load(volume_data.volumes.root / item.label)
    header = source.header.copy()
    image = nib.Nifti1Image(labels.astype(header.get_data_dtype()), source.affine, header)
    payload = image.to_bytes()
    target = out_dir / "labelsTr" / item.label.name
    atomic_write_bytes(target, gzip.compress(payload, compresslevel=6) if target.name.endswith(".gz") else payload)
    return target


def case_visuals(volume_data: VolumeData, unet, position: int):
    """The report's picture of one slice: cached image at the slice's size, given labels from the file, prediction."""
    from PIL import Image

    from .report import SampleVisuals

    data = volume_data.data
    volumes = volume_data.volumes
    case = volumes.cases[int(volume_data.case_of[position])]
    labels = np.take(read_case(volumes, case).labels, int(volume_data.slice_of[position]), axis=volume_data.axis)
    height, width = labels.shape
    channel = np.asarray(data.images[position, 0])
    grey = np.asarray(Image.fromarray(channel).resize((width, height), Image.Resampling.BILINEAR))
    given = np.stack([labels == k + 1 for k in range(len(volumes.classes))])
    (_, _, predicted), = predict_samples(data, unet, [position])
    return SampleVisuals(image=np.repeat(grey[..., None], 3, axis=2), given=given, predicted=predicted)
