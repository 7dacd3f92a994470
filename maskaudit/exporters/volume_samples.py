"""The samples of a volume run's export: one per flagged slice of each chosen case, its image as a PNG.

A labeling tool shows 2-D images, so each chosen case is exported as its *flagged slices* (the
most suspicious fifth of its slices, at most 8: those its score averages, as in the report), read
from slices.csv. Each slice is rendered as an 8-bit grey PNG (the first channel, normalised as the
scan normalises it; a CT channel windowed on the case's own foreground) into a folder beside the
export file; the sample's ``image`` is the PNG's path relative to that folder. The given mask is the
label file's slice; the suggested mask is the slice of ``suggested/labelsTr/<case>`` for a suspect,
else the segmenter's mask computed with the scan's ``model.pt``, as the scan computes it.
Shape key: K classes, H x W one slice's voxels (the two axes other than the slicing axis, in order).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..atomic import atomic_write_bytes
from ..errors import DatasetError, ExportError, InputFileError
from ..formats.nnunet import find_nnunet, read_case
from ..formats.volume_files import open_volume
from ..overlays import encode_png
from ..volume_results import flagged_slices
from .samples import ExportSample, scan_segmenter
from .scan_results import ScanResults

__all__ = ["slices_dir", "iter_volume_samples"]


def slices_dir(out: Path) -> Path:
    """The folder of slice PNGs written beside ``out``: ``tasks.json`` -> ``tasks.slices/``."""
    return out.with_name(f"{out.stem}.slices")


def slice_png_name(case_id: str, slice_index: int, axis: int) -> str:
    return f"{case_id}_axis{axis}_slice{slice_index:04d}.png"


def iter_volume_samples(results: ScanResults, rows: Sequence[dict[str, str]], *, images_dir: Path,
                        progress: bool = False) -> Iterator[ExportSample]:
    """Write each chosen case's flagged-slice PNGs into ``images_dir`` and yield one ExportSample per slice,
    cases in rank order, slices in slice order; the sample id is ``<case>/<slice>``.

    Raises
    ------
    ExportError
        If slices.csv is missing or damaged, or the dataset no longer matches the scan.
    """
    try:
        volumes = find_nnunet(results.dataset_root)
    except DatasetError as error:
        raise ExportError(f"the scan's dataset no longer reads: {error}") from error
    if volumes.classes != results.classes:
        raise ExportError(f"the dataset {volumes.root} now has the classes {', '.join(volumes.classes)}, "
                          f"not those of the scan ({', '.join(results.classes)}); scan it again")
    cases = {case.id: case for case in volumes.cases}
    slice_table = _read_slices_csv(results.results_dir / "slices.csv")
    axis = int(results.axis)
    segmenter = _VolumeSegmenter(results, volumes)
    images_dir.mkdir(parents=True, exist_ok=True)
    for row in tqdm(rows, desc="export", unit="case", disable=not progress):
        case = cases.get(row["id"])
        if case is None or row["id"] not in slice_table:
            raise ExportError(f"case {row['id']!r} of the scan is no longer in the dataset {volumes.root}; scan it again")
        indices, suspicion = slice_table[row["id"]]
        (positions,) = flagged_slices(suspicion, np.zeros(len(indices), np.int64), [0]).values()
        try:
            volume = read_case(volumes, case)
        except InputFileError as error:
            raise ExportError(f"case {row['id']!r} no longer reads: {error}") from error
        suggested_volume = _read_suggested(results, row)
        grey = _grey_volume(volume, volumes.channel_names)
        for index in (int(indices[position]) for position in positions):
            labels = np.take(volume.labels, index, axis=axis)
            given = np.stack([labels == k + 1 for k in range(len(results.classes))])
            if suggested_volume is not None:
                suggested_labels = np.take(suggested_volume, index, axis=axis)
                suggested = np.stack([suggested_labels == k + 1 for k in range(len(results.classes))])
            else:
                suggested = segmenter.masks(f"{case.id}/{index}")
            name = slice_png_name(case.id, index, axis)
            atomic_write_bytes(images_dir / name, encode_png(np.take(grey, index, axis=axis)))
            yield ExportSample(id=f"{case.id}/{index}", image=name, rank=int(row["rank"]),
                               quality_score=float(row["quality_score"]), suspect=row["suspect"] == "1",
                               issue_type=row["issue_type"], given=given, suggested=suggested)


def _read_slices_csv(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{case: (slice indices (n,) int, suspicion (n,) float)} from a volume run's slices.csv."""
    table: dict[str, tuple[list[int], list[float]]] = {}
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            for line in csv.DictReader(handle):
                indices, suspicion = table.setdefault(line["case"], ([], []))
                indices.append(int(line["slice"]))
                suspicion.append(float(line["suspicion"]))
    except (OSError, KeyError, TypeError, ValueError, csv.Error) as error:
        raise ExportError(f"{path} is missing or damaged ({type(error).__name__}: {error}); "
                          "a volume run's export reads it to find the flagged slices") from error
    return {case: (np.asarray(indices), np.asarray(suspicion)) for case, (indices, suspicion) in table.items()}


def _read_suggested(results: ScanResults, row: dict[str, str]) -> np.ndarray | None:
    """(X, Y, Z) labels of ``suggested/labelsTr/<case>`` (written for suspects), or None if the scan wrote none."""
    path = results.results_dir / "suggested" / row["mask"]
    if not path.is_file():
        return None
    try:
        return open_volume(path).array().astype(np.int64)
    except DatasetError:
        raise
    except Exception as error:  # noqa: BLE001 - nibabel and SimpleITK raise many kinds for a damaged file
        raise ExportError(f"the suggested label volume {path} is damaged ({error})") from error


def _grey_volume(volume, channel_names: tuple[str, ...]) -> np.ndarray:
    """(X, Y, Z) uint8 of the first channel: normalised as the scan does, CT windowed on this case's foreground."""
    from ..prepare_volumes import CT_PERCENTILES, normalise_case

    windows = {}
    if channel_names[0].strip().upper() == "CT":
        values = volume.image[0][volume.labels > 0] if (volume.labels > 0).any() else volume.image[0].ravel()
        low, high = np.percentile(values, CT_PERCENTILES)
        windows[0] = (float(low), float(high))
    return normalise_case(volume.image[:1], channel_names[:1], windows)[0]


class _VolumeSegmenter:
    """The scan's segmenter on the scan's slice cache, loaded on first use: (K, H, W) masks of one slice."""

    def __init__(self, results: ScanResults, volumes) -> None:
        self._results, self._volumes = results, volumes
        self._unet = None
        self._data = None

    def masks(self, slice_id: str) -> np.ndarray:
        from ..visuals import predict_samples

        if self._data is None:
            self._load()
        try:
            position = self._data.index.samples.position(slice_id)
        except KeyError:
            raise ExportError(f"slice {slice_id!r} is not in the scan's slices any more; scan the dataset again") from None
        (_, _, original), = predict_samples(self._data, self._unet, [position],
                                             precision=self._results.options.get("precision", "auto"))
        return original

    def _load(self) -> None:
        from ..prepare_volumes import prepare_volumes

        results = self._results
        unet = scan_segmenter(results)
        sliced = prepare_volumes(self._volumes, size=int(results.options["size"]), axis=int(results.axis),
                                 cache_dir=Path(results.results_dir) / "cache")  # the scan's cache, read back
        self._data, self._unet = sliced.data, unet
