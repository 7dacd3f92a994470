"""The samples of an export: scores, the given masks and the suggested masks at the original size.

A suspect's suggestion is the mask the scan wrote to ``suggested/masks/``. Any other sample's
suggestion (``--all``, ``--decisions``) is the segmenter's mask, computed with the scan's
``model.pt`` exactly as the scan computes it for suspects. Shape key: K classes, H x W an
image's original size.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..dataset import DatasetIndex, find_dataset
from ..errors import ExportError, InputFileError
from ..imageio import read_mask
from ..prepare import read_pair
from .scan_results import ScanResults


@dataclass(frozen=True)
class ExportSample:
    """One exported sample.

    Attributes
    ----------
    id, image : str
        Sample id and image path relative to the dataset root (POSIX).
    rank : int
        1 = most suspect.
    quality_score : float
        [0, 1], higher = better label.
    suspect : bool
    issue_type : str
    given, suggested : np.ndarray
        (K, H, W) bool: the dataset's masks and the suggested correction, channel k = class k.
    """

    id: str
    image: str
    rank: int
    quality_score: float
    suspect: bool
    issue_type: str
    given: np.ndarray
    suggested: np.ndarray

    @property
    def height(self) -> int:
        return int(self.given.shape[1])

    @property
    def width(self) -> int:
        return int(self.given.shape[2])


def iter_samples(results: ScanResults, rows: Sequence[dict[str, str]], *, progress: bool = False) -> Iterator[ExportSample]:
    """Yield an :class:`ExportSample` for each scores.csv row, in order.

    Raises
    ------
    ExportError
        If the dataset no longer matches the scan (missing, other classes, a sample gone or unreadable).
    DatasetError, CheckpointError
        If the dataset or, for a non-suspect, the scan's model.pt cannot be read.
    """
    index = find_dataset(results.dataset_root, mask_suffix=results.options.get("mask_suffix"))
    if index.classes != results.classes:
        raise ExportError(
            f"the dataset {index.root} now has the classes {', '.join(index.classes)}, "
            f"not those of the scan ({', '.join(results.classes)}); scan it again"
        )
    samples = {sample.id: sample for sample in index.samples}
    segmenter = _CheckpointSegmenter(results, index)
    for row in tqdm(rows, desc="export", unit="sample", disable=not progress):
        sample = samples.get(row["id"])
        if sample is None:
            raise ExportError(f"sample {row['id']!r} of the scan is no longer in the dataset {index.root}; scan it again")
        try:
            given = read_pair(index, sample).masks
        except InputFileError as error:
            raise ExportError(f"sample {row['id']!r} no longer reads: {error}") from error
        suggested = _read_suggested(results, row["id"], given.shape)
        if suggested is None:
            suggested = segmenter.masks(row["id"])
        yield ExportSample(
            id=row["id"],
            image=row["image"],
            rank=int(row["rank"]),
            quality_score=float(row["quality_score"]),
            suspect=row["suspect"] == "1",
            issue_type=row["issue_type"],
            given=given,
            suggested=suggested,
        )


def _read_suggested(results: ScanResults, sample_id: str, shape: tuple[int, ...]) -> np.ndarray | None:
    """(K, H, W) bool from ``suggested/masks/`` (written for suspects), or None if the scan wrote none."""
    folder = results.results_dir / "suggested" / "masks"
    file_name = f"{sample_id}.png"
    paths = [folder / name / file_name for name in results.classes] if results.multilabel else [folder / file_name]
    if not all(path.is_file() for path in paths):
        return None
    try:
        arrays = [read_mask(path) for path in paths]
    except InputFileError as error:
        raise ExportError(f"the suggested mask of {sample_id!r} is damaged: {error}") from error
    if results.multilabel:
        masks = np.stack([array > 0 for array in arrays])
    else:
        values = results.label_values or tuple(range(1, len(results.classes) + 1))  # as the scan wrote them
        masks = np.stack([arrays[0] == value for value in values])
    if masks.shape != tuple(shape):
        raise ExportError(f"the suggested mask of {sample_id!r} is {masks.shape[1:]}, its image {tuple(shape[1:])}")
    return masks


class _CheckpointSegmenter:
    """The scan's segmenter, loaded on first use: (K, H, W) masks for samples without a suggested file."""

    def __init__(self, results: ScanResults, index: DatasetIndex) -> None:
        self._results = results
        self._index = index
        self._unet = None
        self._data = None
        self._positions: dict[str, int] = {}

    def masks(self, sample_id: str) -> np.ndarray:
        if self._data is None:
            self._load()
        from ..visuals import predict_samples

        (_, _, original), = predict_samples(self._data, self._unet, [self._positions[sample_id]],
                                             precision=self._results.options.get("precision", "auto"))
        return original

    def _load(self) -> None:
        from ..prepare import prepare

        results = self._results
        unet = scan_segmenter(results)
        # The scan's cache: unchanged files are read back, not decoded again.
        self._data = prepare(self._index, size=int(results.options["size"]), cache_dir=Path(results.results_dir) / "cache")
        self._unet = unet
        self._positions = {sample.id: position for position, sample in enumerate(self._data.index.samples)}


def scan_segmenter(results):
    """The U-Net of a scan's model.pt (``results``: its ScanResults), checked to be that scan's model.

    Raises
    ------
    ExportError
        If model.pt was trained on other classes than the scan's scores.csv lists.
    """
    from ..predict import load_segmenter
    from ..train import CHECKPOINT_NAME

    unet, state = load_segmenter(results.results_dir / CHECKPOINT_NAME)
    if tuple(state["classes"]) != results.classes:
        raise ExportError(f"{results.results_dir / CHECKPOINT_NAME} is not the model of this scan (other classes)")
    return unet
