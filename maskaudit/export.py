"""Write the scan's public outputs: scores.csv, run.json and suggested masks, each atomically."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .atomic import atomic_path, atomic_write_text

# The public columns of scores.csv, in order. Documented in README.md; keep them stable.
SCORE_COLUMNS = (
    "rank",
    "id",
    "image",
    "mask",
    "quality_score",
    "suspect",
    "issue_type",
    "issue_classes",
    "qam_score",
    "dice_vs_prediction",
    "dice_per_class",
    "boundary_distance",
    "cluster",
    "outlier",
    "outlier_score",
    "edge_misfit",
    "presence_surprise",
    "shape_outlier",
    "suggestion_confidence",
    "worst_slice",
    "annotation_ids",
    "boundary_distance_mm",
    "object_miss",
)
LIST_SEPARATOR = ";"


@dataclass(frozen=True)
class ScoreRow:
    """One sample's line in scores.csv (see README.md, "scores.csv columns")."""

    rank: int                       # 1 = most suspect
    id: str
    image: str                      # relative to the dataset root
    mask: str                       # relative to the dataset root; layout B: one path per class, ';'-joined
    quality_score: float            # [0, 1], higher = better label
    suspect: bool
    issue_type: str
    issue_classes: tuple[str, ...]
    qam_score: float                # raw QAM score t of the final model (higher = label fits better)
    dice_vs_prediction: float       # mean over classes of Dice(given mask, segmenter's mask)
    dice_per_class: tuple[float, ...]
    boundary_distance: float        # worst class's mean surface distance, in working-resolution pixels
    cluster: int
    outlier: bool
    outlier_score: float            # [0, 1], higher = further from the other samples' features
    edge_misfit: float = 0.0        # how much stronger image edges are off the outline than on it (0: on it)
    presence_surprise: float = 0.0  # -log P(classes present/absent as here), from the dataset's masks
    shape_outlier: float = 0.0      # distance to the nearest given masks' shapes, robust units
    suggestion_confidence: float | None = None  # [0, 1] trust in the suggested mask; None = no suggestion
    worst_slice: int | None = None  # volumes: index of the case's worst slice along the slicing axis
    annotation_ids: tuple[int, ...] = ()  # COCO: ids of the annotations drawn into the sample's masks
    boundary_distance_mm: float | None = None  # volumes: boundary_distance in mm; None for 2-D images
    object_miss: float = 0.0        # [0, 1] the worst-matched whole object, the mask's or the segmenter's

    def as_csv_fields(self) -> list[str]:
        return [
            str(self.rank),
            self.id,
            self.image,
            self.mask,
            f"{self.quality_score:.6f}",
            str(int(self.suspect)),
            self.issue_type,
            LIST_SEPARATOR.join(self.issue_classes),
            f"{self.qam_score:.6f}",
            f"{self.dice_vs_prediction:.6f}",
            LIST_SEPARATOR.join(f"{value:.4f}" for value in self.dice_per_class),
            f"{self.boundary_distance:.3f}",
            str(self.cluster),
            str(int(self.outlier)),
            f"{self.outlier_score:.6f}",
            f"{self.edge_misfit:.4f}",
            f"{self.presence_surprise:.4f}",
            f"{self.shape_outlier:.4f}",
            "" if self.suggestion_confidence is None else f"{self.suggestion_confidence:.4f}",
            "" if self.worst_slice is None else str(self.worst_slice),
            LIST_SEPARATOR.join(str(value) for value in self.annotation_ids),
            "" if self.boundary_distance_mm is None else f"{self.boundary_distance_mm:.3f}",
            f"{self.object_miss:.4f}",
        ]


def write_scores_csv(path: Path, rows: list[ScoreRow]) -> None:
    """Write ``rows`` (already sorted by rank) to ``path`` as UTF-8 CSV with a header line."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")  # RFC 4180; also makes csv quote a bare \r in an id
    writer.writerow(SCORE_COLUMNS)
    for row in rows:
        writer.writerow(row.as_csv_fields())
    atomic_write_text(path, buffer.getvalue())


def read_scores_csv(path: Path) -> list[dict[str, str]]:
    """Read a scores.csv back as one dict per row (column name to text)."""
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def write_json(path: Path, payload: dict) -> None:
    """Write ``payload`` as indented JSON atomically (numpy scalars become Python numbers)."""
    atomic_write_text(path, json.dumps(payload, indent=2, default=_json_default) + "\n")


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def write_mask_png(path: Path, mask: np.ndarray, *, palette: tuple[int, ...] | None = None) -> None:
    """Write a (H, W) mask as a PNG atomically: bool as 0/255, integers as label values (8 or 16 bit).

    ``palette`` (768 ints, RGB per index) makes an 8-bit label mask a palette PNG whose indices
    are the label values.
    """
    if mask.dtype == bool:
        array = mask.astype(np.uint8) * 255
    else:
        array = mask.astype(np.uint8 if mask.max(initial=0) <= 255 else np.uint16)
    image = Image.fromarray(array)
    if palette is not None and array.dtype == np.uint8:
        image.putpalette(list(palette))  # "L" becomes "P": the same indices, now with colours
    with atomic_path(path) as temporary:
        image.save(temporary, format="PNG")


def write_suggested_masks(out_dir: Path, sample_id: str, masks: np.ndarray, *, classes: tuple[str, ...],
                          multilabel: bool, file_name: str, values: tuple[int, ...] | None = None,
                          void: np.ndarray | None = None, void_value: int | None = None,
                          palette: tuple[int, ...] | None = None, foreground: int = 255) -> list[Path]:
    """Write masks (K, H, W) bool of one sample (a suggestion or a prediction) in the dataset's own layout.

    Layout B: ``out_dir/masks/<class>/<file_name>`` (0/``foreground`` per class); layout A:
    ``out_dir/masks/<file_name>``, class k stored as ``values[k]`` (default k + 1, 0 = background),
    the given void pixels ``void`` (H, W) bool kept as ``void_value``, and with ``palette`` (768
    ints) a palette PNG (see :mod:`maskaudit.mask_format`). Returns the written paths.
    """
    if multilabel:
        paths = [out_dir / "masks" / name / file_name for name in classes]
        for path, mask in zip(paths, masks):
            write_mask_png(path, mask.astype(np.uint8) * np.uint8(foreground))
        return paths
    values = values or tuple(range(1, len(masks) + 1))
    labels = np.zeros(masks.shape[1:], np.uint8 if max(values, default=0) <= 255 else np.uint16)
    for value, mask in zip(values, masks):
        labels[mask] = value
    if void is not None and void_value is not None:
        labels[void] = void_value
    path = out_dir / "masks" / file_name
    write_mask_png(path, labels, palette=palette)
    return [path]
