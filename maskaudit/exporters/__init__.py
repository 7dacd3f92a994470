"""``maskaudit export``: send a finished scan's samples to a labeling tool, one module per output format.

Every format is an :class:`Exporter`: it names the files it writes (``outputs``) and writes a
sequence of :class:`~maskaudit.exporters.samples.ExportSample` to them (``write``). The formats'
optional dependencies are imported only when that format is chosen.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ..errors import OutputDirError

if TYPE_CHECKING:
    from .samples import ExportSample

FORMATS = ("labelstudio", "coco")


class Exporter(Protocol):
    """One output format."""

    def outputs(self, out: Path) -> tuple[Path, ...]:
        """Every file :meth:`write` creates for ``out`` (``out`` first)."""

    def write(self, out: Path, samples: Iterable["ExportSample"], *, classes: tuple[str, ...]) -> int:
        """Write ``samples`` (masks (K, H, W) bool, channel k = ``classes[k]``); return how many were written."""


@dataclass(frozen=True)
class ExportSummary:
    count: int                  # samples exported
    files: tuple[Path, ...]     # files written, the main one first


def make_exporter(format_name: str, *, dataset_root: Path, image_prefix: str | None = None) -> Exporter:
    """The exporter of ``format_name`` (one of :data:`FORMATS`); raises ExportError if its library is missing."""
    if format_name == "labelstudio":
        from .labelstudio import LabelStudioExporter

        return LabelStudioExporter(dataset_root=dataset_root, image_prefix=image_prefix)
    if format_name == "coco":
        from .coco import CocoExporter

        return CocoExporter()
    raise ValueError(f"unknown export format {format_name!r}; expected one of {', '.join(FORMATS)}")


def export_scan(results_dir: Path, out: Path, *, format_name: str, everything: bool = False,
                decisions: Path | None = None, image_prefix: str | None = None, overwrite: bool = False,
                progress: bool = False) -> ExportSummary:
    """Export the suspects of the scan in ``results_dir`` (or every row, or the "relabel" decisions) to ``out``.

    Raises
    ------
    ExportError
        Not a finished scan, nothing to export, a decisions CSV of another run, or a missing library.
    OutputDirError
        ``out`` (or a file written beside it) exists and ``overwrite`` is false, or lies inside the dataset.
    """
    from .samples import iter_samples
    from .scan_results import load_scan_results, select_rows

    results = load_scan_results(results_dir)
    if results.format == "nnunet":  # one sample per flagged slice, its image a PNG in a folder beside ``out``
        from .volume_samples import iter_volume_samples, slices_dir

        images_dir = slices_dir(Path(out))
        exporter = make_exporter(format_name, dataset_root=Path(os.path.abspath(images_dir)), image_prefix=image_prefix)
        files = exporter.outputs(Path(out))
        _check_outputs(files, results.dataset_root, overwrite=overwrite)
        _check_images_dir(images_dir, results.dataset_root, overwrite=overwrite)
        rows = select_rows(results, everything=everything, decisions=decisions)
        samples = iter_volume_samples(results, rows, images_dir=images_dir, progress=progress)
        count = exporter.write(Path(out), samples, classes=results.classes)
        return ExportSummary(count=count, files=(*files, images_dir))
    exporter = make_exporter(format_name, dataset_root=results.dataset_root, image_prefix=image_prefix)
    files = exporter.outputs(Path(out))
    _check_outputs(files, results.dataset_root, overwrite=overwrite)
    rows = select_rows(results, everything=everything, decisions=decisions)
    count = exporter.write(Path(out), iter_samples(results, rows, progress=progress), classes=results.classes)
    return ExportSummary(count=count, files=files)


def _check_images_dir(images_dir: Path, dataset_root: Path, *, overwrite: bool) -> None:
    """Refuse a slice-image folder inside the dataset, one that is a file, or a non-empty one without ``overwrite``
    (with it, the folder's old PNGs are removed so that it holds only this export's images)."""
    if Path(os.path.realpath(dataset_root)) in Path(os.path.realpath(images_dir)).parents:
        raise OutputDirError(f"{images_dir} is inside the dataset {dataset_root}; maskaudit never writes into a dataset")
    if images_dir.exists() and not images_dir.is_dir():
        raise OutputDirError(f"{images_dir} exists and is not a directory; the slice images go there")
    if images_dir.is_dir() and any(images_dir.iterdir()):
        if not overwrite:
            raise OutputDirError(f"{images_dir} exists; pass --overwrite to replace it or choose another --out")
        for old in images_dir.glob("*.png"):
            old.unlink()


def _check_outputs(files: tuple[Path, ...], dataset_root: Path, *, overwrite: bool) -> None:
    """Refuse to write into the dataset, over a directory, or over an existing file without ``overwrite``."""
    root = Path(os.path.realpath(dataset_root))
    for path in files:
        if root in Path(os.path.realpath(path)).parents:
            raise OutputDirError(f"{path} is inside the dataset {dataset_root}; maskaudit never writes into a dataset")
        if path.is_dir():
            raise OutputDirError(f"{path} is a directory; --out names the file to write")
        if path.exists() and not overwrite:
            raise OutputDirError(f"{path} exists; pass --overwrite to replace it or choose another --out")
