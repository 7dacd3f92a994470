"""Describe a dataset for ``maskaudit inspect``: a JSON-ready dict, and the same as readable text."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from .dataset import DatasetIndex
from .errors import DatasetError, InputFileError
from .imageio import DEFAULT_MAX_PIXELS
from .prepare import Reader, label_values, read_pair, skipped_pair

if TYPE_CHECKING:
    from .formats import DatasetSource
    from .formats.nnunet import VolumeIndex

__all__ = ["describe_dataset", "describe_source", "describe_volumes", "format_description"]

_MAX_SKIPPED_LINES = 20


def describe_source(source: "DatasetSource", *, progress: bool = False) -> dict[str, Any]:
    """:func:`describe_dataset` or :func:`describe_volumes`, whichever fits the source's format."""
    if source.volumes is not None:
        return describe_volumes(source.volumes, progress=progress)
    return describe_dataset(source.index, progress=progress, reader=source.reader) | {"format": source.format}


def describe_volumes(volumes: "VolumeIndex", *, progress: bool = False) -> dict[str, Any]:
    """Decode every case of a volume dataset once and summarise it (the keys of :func:`describe_dataset`).

    ``num_samples`` counts cases, ``image_sizes`` are "XxYxZ" voxel shapes, ``image_modes`` the
    channel names, and ``spacing`` (mm per axis, the median over cases) is added.

    Raises
    ------
    DatasetError
        If no case decodes.
    """
    from .formats.nnunet import read_case
    from .dataset import Skipped

    skipped = list(volumes.skipped)
    class_voxels = np.zeros(len(volumes.classes), dtype=np.int64)
    total, empty, usable = 0, 0, 0
    sizes: Counter[str] = Counter()
    for case in tqdm(volumes.cases, desc="reading", unit="case", disable=not progress):
        try:
            labels = read_case(volumes, case).labels
        except InputFileError as error:
            message, prefix = str(error), f"{case.label.as_posix()}: "
            skipped.append(Skipped(case.label.as_posix(), message.removeprefix(prefix)))
            continue
        usable += 1
        total += labels.size
        counts = np.bincount(labels.ravel(), minlength=len(volumes.classes) + 1)[1:]
        class_voxels += counts
        empty += int(not counts.any())
        sizes["x".join(str(value) for value in labels.shape)] += 1
    if not usable:
        raise DatasetError(f"no case in {volumes.root} can be decoded (e.g. {skipped[-1].path}: {skipped[-1].reason});"
                           " fix or replace the broken files")
    skipped.sort(key=lambda item: item.path)
    return {
        "root": str(volumes.root), "format": "nnunet", "layout": "nnU-Net v2", "multilabel": False, "mask_suffix": "",
        "classes": list(volumes.classes), "num_samples": usable, "num_skipped": len(skipped),
        "skipped": [{"path": item.path, "reason": item.reason} for item in skipped],
        "class_pixel_fraction": {name: float(count) / total for name, count in zip(volumes.classes, class_voxels.tolist())},
        "empty_masks": empty, "image_sizes": dict(sizes.most_common()),
        "image_modes": {name: usable for name in volumes.channel_names},
        "spacing": list(volumes.spacing),
    }


def describe_dataset(
    index: DatasetIndex, *, progress: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS, reader: Reader | None = None
) -> dict[str, Any]:
    """Decode every pair once and summarise the dataset.

    Parameters
    ----------
    index : DatasetIndex
        From :func:`~maskaudit.dataset.find_dataset`.
    progress : bool
        Show a tqdm progress bar while reading the files.
    max_pixels : int
        Decompression-bomb guard for every file.
    reader : callable, optional
        ``reader(index, sample) -> Pair`` of a format other than folders; default :func:`read_pair`.

    Returns
    -------
    dict
        JSON-serialisable, with keys ``root`` (str), ``layout`` ("A"/"B"), ``multilabel`` (bool),
        ``mask_suffix`` (str), ``classes`` (list of K names), ``num_samples`` (pairs that
        decode), ``num_skipped``, ``skipped`` (list of ``{"path", "reason"}``; pairs that fail to
        decode are added here), ``class_pixel_fraction`` ({class: fraction of all image pixels}),
        ``empty_masks`` (samples whose masks are all empty), ``image_sizes`` ({"HxW": count}),
        ``image_modes`` ({mode: count}), ``label_values`` (layout A: ``{"values", "void", "binary",
        "notes"}``, see :class:`~maskaudit.labels.LabelValues`; None for layout B) and
        ``void_pixel_fraction`` (fraction of all image pixels that are void).

    Raises
    ------
    DatasetError
        If no pair decodes.
    """
    skipped = list(index.skipped)
    num_classes = len(index.classes)
    class_pixels = np.zeros(num_classes, dtype=np.int64)
    void_pixels = 0
    total_pixels = 0
    empty = 0
    sizes: Counter[str] = Counter()
    modes: Counter[str] = Counter()
    usable = 0
    for sample in tqdm(index.samples, desc="reading", unit="pair", disable=not progress):
        try:
            pair = read_pair(index, sample, max_pixels=max_pixels) if reader is None else reader(index, sample)
        except InputFileError as error:
            skipped.append(skipped_pair(sample, error))
            continue
        usable += 1
        height, width = pair.image.shape[:2]
        total_pixels += height * width
        per_class = pair.masks.reshape(num_classes, -1).sum(axis=1)
        class_pixels += per_class
        void_pixels += int(pair.void.sum()) if pair.void is not None else 0
        empty += int(not per_class.any())
        sizes[f"{height}x{width}"] += 1
        modes[pair.mode] += 1
    if not usable:
        raise DatasetError(
            f"no pair in {index.root} can be decoded (e.g. {skipped[-1].path}: {skipped[-1].reason});"
            " fix or replace the broken files"
        )
    skipped.sort(key=lambda item: item.path)
    return {
        "root": str(index.root),
        "layout": index.layout,
        "multilabel": index.multilabel,
        "mask_suffix": index.mask_suffix,
        "classes": list(index.classes),
        "num_samples": usable,
        "num_skipped": len(skipped),
        "skipped": [{"path": item.path, "reason": item.reason} for item in skipped],
        "class_pixel_fraction": {
            name: float(count) / total_pixels for name, count in zip(index.classes, class_pixels.tolist())
        },
        "empty_masks": empty,
        "image_sizes": dict(sizes.most_common()),
        "image_modes": dict(modes.most_common()),
        "label_values": None if index.multilabel else label_values(index).as_dict(),
        "void_pixel_fraction": void_pixels / total_pixels,
    }


def format_description(description: dict[str, Any]) -> str:
    """Render :func:`describe_dataset`'s dict as a short text summary (no trailing newline)."""
    layout = {
        "A": "A (masks/<id>.png label images, one class per pixel)",
        "B": "B (masks/<class>/<id>.png, one binary mask per class, may overlap)",
    }.get(description["layout"], description["layout"])
    if description.get("format") == "coco":
        layout = "COCO instances (one binary mask per category, may overlap)"
    suffix = description["mask_suffix"]
    lines = [
        f"Dataset      {description['root']}",
        f"Layout       {layout}",
        f"Mask suffix  {suffix!r}" if suffix else "Mask suffix  (none)",
        f"Samples      {description['num_samples']} usable, {len(description['skipped'])} skipped",
        f"Empty masks  {description['empty_masks']} samples with no labelled pixel",
        f"Classes      {len(description['classes'])}",
    ]
    if "spacing" in description:
        lines.insert(2, "Spacing      " + " x ".join(f"{value:g}" for value in description["spacing"]) + " mm")
    width = max((len(name) for name in description["classes"]), default=0)
    labels = description.get("label_values")
    values = [f"value {value}" for value in labels["values"]] if labels else [""] * len(description["classes"])
    if labels and labels["binary"]:
        values = ["values >= 128"]
    value_width = max((len(text) for text in values), default=0)
    for name, value in zip(description["classes"], values):
        fraction = description["class_pixel_fraction"].get(name, 0.0)
        column = f"  {value:<{value_width}}" if value_width else ""
        lines.append(f"  {name:<{width}}{column}  {100 * fraction:6.2f} % of pixels")
    if labels and labels["void"] is not None:
        fraction = description.get("void_pixel_fraction", 0.0)
        lines.append(f"Void         value {labels['void']}, {100 * fraction:.2f} % of pixels (not a class,"
                     " left out of training and scoring)")
    for note in labels["notes"] if labels else ():
        lines.append(f"Note         {note}")
    lines.append("Image sizes  " + _counts(description["image_sizes"]))
    lines.append("Image modes  " + _counts(description["image_modes"]))
    skipped = description["skipped"]
    if skipped:
        lines.append(f"Skipped ({len(skipped)}):")
        lines.extend(f"  {item['path']}: {item['reason']}" for item in skipped[:_MAX_SKIPPED_LINES])
        if len(skipped) > _MAX_SKIPPED_LINES:
            lines.append(f"  ... and {len(skipped) - _MAX_SKIPPED_LINES} more (use --json for the full list)")
    return "\n".join(lines)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{key} ({value})" for key, value in counts.items()) or "-"
