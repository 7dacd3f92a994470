"""Find image/mask pairs in a dataset directory: layout, classes, mask suffix and skipped files.

Two layouts are understood (see docs/DESIGN.md)::

    A: images/<id>.png   masks/<id><suffix>.png            one label-index mask (0 = background)
    B: images/<id>.png   masks/<class>/<id><suffix>.png    one binary mask per class (multi-label)

Nothing in the dataset directory is ever written, renamed or deleted. Symlinks that leave the
dataset root are skipped. Per-file problems become :class:`Skipped` entries; a dataset that
cannot be used at all raises :class:`~maskaudit.errors.DatasetError`.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DatasetError, InputFileError
from .imageio import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, MASK_EXTENSIONS, has_dicom_magic, read_mask
from .labels import AUTO, LabelValues, ValueCounts, class_names_for, decide_label_values

__all__ = ["DatasetIndex", "Sample", "Skipped", "file_reason", "find_dataset", "is_binary_255"]

_CLASS_FILES = ("classes.txt", "classes.json")


@dataclass(frozen=True)
class Sample:
    """One usable image with its mask files.

    Attributes
    ----------
    id : str
        Image file stem, e.g. ``"JPCLN001"``.
    image : Path
        Relative to :attr:`DatasetIndex.root`.
    masks : tuple of Path
        Relative to root. Layout A: one label image; layout B: one per class, in class order.
    """

    id: str
    image: Path
    masks: tuple[Path, ...]


@dataclass(frozen=True)
class Skipped:
    """A file (or pair) that is left out, and why.

    Attributes
    ----------
    path : str
        Relative to the dataset root.
    reason : str
        One line: what is wrong and, where possible, the fix.
    """

    path: str
    reason: str


@dataclass(frozen=True)
class DatasetIndex:
    """The pairs found in a dataset directory.

    Attributes
    ----------
    root : Path
        Absolute dataset directory.
    layout : str
        ``"A"`` (label-index masks) or ``"B"`` (``masks/<class>/``).
    classes : tuple of str
        The K class names; layout A: class k is stored as label value ``labels.values[k]``.
    samples : tuple of Sample
        Usable pairs, sorted by id.
    skipped : tuple of Skipped
        Files left out, with reasons.
    mask_suffix : str
        ``""`` or e.g. ``"_mask"``.
    labels : LabelValues
        Layout A: the stored value of each class, the void value and the notes on how they were
        chosen (see :mod:`maskaudit.labels`); empty for layout B.
    """

    root: Path
    layout: str
    classes: tuple[str, ...]
    samples: tuple[Sample, ...]
    skipped: tuple[Skipped, ...]
    mask_suffix: str
    labels: LabelValues = LabelValues()

    @property
    def void_value(self) -> int | None:
        """The stored value of void pixels (layout A), or None."""
        return self.labels.void

    @property
    def multilabel(self) -> bool:
        return self.layout == "B"


def is_binary_255(labels: np.ndarray) -> bool:
    """Whether a label array holds only 0 and 255 (a binary mask saved as 0/255).

    Parameters
    ----------
    labels : np.ndarray
        (H, W) integer labels.
    """
    return bool(np.isin(labels, (0, 255)).all())


def file_reason(path: Path, error: InputFileError) -> str:
    """``"<path>: <reason>"`` for a per-file error, with ``path`` relative to the dataset root.

    imageio only knows the file name and starts its messages with it; this swaps in the path.
    """
    message = str(error)
    prefix = f"{path.name}: "
    return f"{path.as_posix()}: {message[len(prefix):] if message.startswith(prefix) else message}"


@dataclass(frozen=True)
class _Entry:
    """A regular file found under images/ or masks/ that may be used."""

    stem: str
    path: Path  # relative to root


def find_dataset(
    root: Path | str,
    *,
    mask_suffix: str | None = None,
    ignore_value: int | None | str = AUTO,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> DatasetIndex:
    """Find the image/mask pairs in ``root``.

    Parameters
    ----------
    root : Path or str
        Dataset directory holding ``images/`` and ``masks/`` and optionally ``classes.txt`` or
        ``classes.json``.
    mask_suffix : str, optional
        Suffix of mask file stems (``"_mask"`` for ``case01.png`` / ``case01_mask.png``).
        Auto-detected when None; ``""`` forces identical stems.
    ignore_value : int, None or "auto"
        Layout A void value: pixels holding it are neither background nor a class. ``"auto"``:
        255 when the other values form a small set (PASCAL VOC); None: no void value.
    max_pixels : int
        Pixel limit when layout A masks are read to find their label values.

    Returns
    -------
    DatasetIndex
        Pairs sorted by id, plus every file that was left out and why.

    Raises
    ------
    DatasetError
        If the directory is missing or empty, lacks ``images/`` or ``masks/``, has an invalid
        classes file or an ambiguous layout, holds no usable pair at all, or its layout A masks
        hold many tiny label values (see :func:`~maskaudit.labels.decide_label_values`).
    """
    root = _check_root(Path(root))
    real_root = Path(os.path.realpath(root))
    images_dir = _check_subdir(root, real_root, "images")
    masks_dir = _check_subdir(root, real_root, "masks")
    skipped: list[Skipped] = []

    image_entries = _list_files(root, real_root, images_dir, IMAGE_EXTENSIONS, kind="image", skipped=skipped)
    layout, class_dirs = _detect_layout(root, real_root, masks_dir, skipped)
    class_names, class_values = _read_class_file(root)

    if layout == "B":
        classes = _layout_b_classes(root, class_dirs, class_names, skipped)
        mask_entries = {
            name: _list_files(root, real_root, class_dirs[name], MASK_EXTENSIONS, kind="mask", skipped=skipped)
            for name in classes
        }
    else:
        mask_entries = {"": _list_files(root, real_root, masks_dir, MASK_EXTENSIONS, kind="mask", skipped=skipped)}

    image_by_stem = _unique_stems(image_entries, skipped)
    masks_by_class = {name: _unique_stems(entries, skipped) for name, entries in mask_entries.items()}
    all_mask_stems = [stem for by_stem in masks_by_class.values() for stem in by_stem]
    suffix = mask_suffix if mask_suffix is not None else _detect_suffix(set(image_by_stem), all_mask_stems)

    samples = _pair(image_by_stem, masks_by_class, suffix, layout, skipped)
    labels = LabelValues()
    if layout == "A" and samples:
        samples, counts = _count_label_values(root, samples, skipped, max_pixels=max_pixels)
        labels = decide_label_values(counts, declared=class_values, ignore=ignore_value)
        classes = class_names if class_names is not None else class_names_for(labels.values)
    if not samples:
        first = f" (e.g. {skipped[0].path}: {skipped[0].reason})" if skipped else ""
        raise DatasetError(
            f"no usable image/mask pairs in {root}{first}; put images in images/ and masks with matching"
            " file names in masks/ (or masks/<class>/)"
        )
    return DatasetIndex(
        root=root,
        layout=layout,
        classes=tuple(classes),
        samples=tuple(sorted(samples, key=lambda sample: sample.id)),
        skipped=tuple(sorted(skipped, key=lambda item: item.path)),
        mask_suffix=suffix,
        labels=labels,
    )


# -- directory checks ----------------------------------------------------------------------------


def _check_root(root: Path) -> Path:
    if not root.exists():
        raise DatasetError(f"dataset directory {root} does not exist; pass the folder that holds images/ and masks/")
    if not root.is_dir():
        raise DatasetError(f"dataset path {root} is not a directory; pass the folder that holds images/ and masks/")
    try:
        empty = not any(True for _ in os.scandir(root))
    except OSError as error:
        raise DatasetError(f"cannot list dataset directory {root} ({error.strerror}); check its permissions") from error
    if empty:
        raise DatasetError(f"dataset directory {root} is empty; it must hold images/ and masks/ folders")
    return Path(os.path.abspath(root))


def _inside(real_root: Path, path: Path) -> bool:
    real = Path(os.path.realpath(path))
    return real == real_root or real_root in real.parents


def _check_subdir(root: Path, real_root: Path, name: str) -> Path:
    path = root / name
    if not path.is_dir():
        raise DatasetError(
            f"{root} has no {name}/ folder; a dataset needs images/ and masks/ (layout A: masks/<id>.png,"
            " layout B: masks/<class>/<id>.png)"
        )
    if not _inside(real_root, path):
        raise DatasetError(f"{path} is a symlink that leaves {root}; copy or move the data inside the dataset folder")
    return path


def _rel(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def _list_files(
    root: Path, real_root: Path, folder: Path, extensions: frozenset[str], *, kind: str, skipped: list[Skipped]
) -> list[_Entry]:
    """Usable regular files directly in ``folder``; everything else goes to ``skipped``."""
    entries: list[_Entry] = []
    try:
        listing = sorted(os.scandir(folder), key=lambda item: item.name)
    except OSError as error:
        skipped.append(Skipped(_rel(root, folder), f"cannot list folder ({error.strerror}); check its permissions"))
        return entries
    for item in listing:
        path = Path(item.path)
        rel = _rel(root, path)
        if item.is_symlink() and not _inside(real_root, path):
            skipped.append(Skipped(rel, "symlink that leaves the dataset root; not followed"))
            continue
        try:
            is_dir, is_file = item.is_dir(), item.is_file()
            size = item.stat().st_size if is_file else 0
        except OSError as error:
            skipped.append(Skipped(rel, f"cannot read ({error.strerror})"))
            continue
        if is_dir:
            skipped.append(Skipped(rel, f"folder inside {_rel(root, folder)}/ is not searched"))
            continue
        if not is_file:
            skipped.append(Skipped(rel, "not a regular file (broken symlink or special file)"))
            continue
        if size == 0:
            skipped.append(Skipped(rel, "empty file (0 bytes)"))
            continue
        extension = path.suffix.lower()
        if extension in extensions:
            entries.append(_Entry(path.stem, path.relative_to(root)))
        elif kind == "image" and _dicom_magic(path):
            # DICOM names often are UIDs ("1.2.840.5"): the whole name is the stem.
            entries.append(_Entry(path.name, path.relative_to(root)))
        else:
            allowed = ", ".join(sorted(extensions)) + (", DICOM" if kind == "image" else "")
            skipped.append(Skipped(rel, f"not a supported {kind} file (allowed: {allowed})"))
    return entries


def _dicom_magic(path: Path) -> bool:
    try:
        return has_dicom_magic(path)
    except OSError:
        return False


def _detect_layout(
    root: Path, real_root: Path, masks_dir: Path, skipped: list[Skipped]
) -> tuple[str, dict[str, Path]]:
    """Layout "B" when masks/ holds class folders, "A" when it holds mask files."""
    try:
        listing = sorted(os.scandir(masks_dir), key=lambda item: item.name)
    except OSError as error:
        raise DatasetError(f"cannot list {masks_dir} ({error.strerror}); check its permissions") from error
    folders: dict[str, Path] = {}
    files: list[str] = []
    for item in listing:
        if item.is_dir():
            if not _inside(real_root, Path(item.path)):
                reason = "symlink that leaves the dataset root; not followed"
                skipped.append(Skipped(_rel(root, Path(item.path)), reason))
            elif not item.name.startswith("."):
                folders[item.name] = Path(item.path)
        else:
            files.append(item.name)
    if folders and any(Path(name).suffix.lower() in MASK_EXTENSIONS for name in files):
        raise DatasetError(
            f"{masks_dir} holds both mask files and class folders; use label masks in masks/ (layout A)"
            " or one folder per class masks/<class>/ (layout B), not both"
        )
    if folders:  # layout A lists (and reports) these files itself
        reason = "file directly in masks/ is ignored: layout B keeps masks in masks/<class>/"
        skipped.extend(Skipped(f"masks/{name}", reason) for name in files)
    return ("B" if folders else "A"), folders


# -- classes -------------------------------------------------------------------------------------


def _read_class_file(root: Path) -> tuple[tuple[str, ...] | None, tuple[int, ...] | None]:
    """Class names and their layout A label values from classes.txt or classes.json in root.

    A list names the values 1..K in order; a JSON mapping ``{"1": "lung", "5": "heart"}`` names
    exactly the values it lists. (None, None) if neither file exists.
    """
    present = [name for name in _CLASS_FILES if (root / name).is_file()]
    if len(present) > 1:
        raise DatasetError(f"{root} has both classes.txt and classes.json; keep one of them")
    if not present:
        return None, None
    path = root / present[0]
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"cannot read {path} ({error}); save it as UTF-8 text") from error
    if path.suffix == ".txt":
        names = [line.strip() for line in text.splitlines() if line.strip()]
        values = list(range(1, len(names) + 1))
    else:
        names, values = _parse_class_json(path, text)
    if not names:
        raise DatasetError(f"{path} lists no classes; write one class name per line")
    duplicates = sorted(name for name, count in Counter(names).items() if count > 1)
    if duplicates:
        raise DatasetError(f"{path} lists {', '.join(duplicates)} more than once; class names must be unique")
    return tuple(names), tuple(values)


def _parse_class_json(path: Path, text: str) -> tuple[list[str], list[int]]:
    fix = 'use a list ["lung", "heart"] or a mapping {"1": "lung", "2": "heart"}'
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise DatasetError(f"{path} is not valid JSON ({error.msg} at line {error.lineno}); {fix}") from error
    if isinstance(data, list) and all(isinstance(name, str) for name in data):
        return [name.strip() for name in data], list(range(1, len(data) + 1))
    if isinstance(data, dict):
        try:
            by_index = {int(key): str(value).strip() for key, value in data.items()}
        except ValueError as error:
            raise DatasetError(f"{path} has a non-integer key; {fix}") from error
        by_index.pop(0, None)  # label 0 is background
        if not by_index or min(by_index) < 1:
            raise DatasetError(f"{path} needs positive label values; {fix}")
        values = sorted(by_index)
        return [by_index[value] for value in values], values
    raise DatasetError(f"{path} has an unexpected structure; {fix}")


def _layout_b_classes(
    root: Path, class_dirs: dict[str, Path], class_names: tuple[str, ...] | None, skipped: list[Skipped]
) -> tuple[str, ...]:
    if class_names is None:
        return tuple(sorted(class_dirs))
    missing = [name for name in class_names if name not in class_dirs]
    if missing:
        raise DatasetError(
            f"the classes file in {root} lists {', '.join(missing)} but masks/{missing[0]}/ does not exist;"
            " make the class names match the folders in masks/"
        )
    for name in sorted(set(class_dirs) - set(class_names)):
        skipped.append(Skipped(f"masks/{name}", "class folder not listed in the classes file; add it to use it"))
    return class_names


# -- pairing -------------------------------------------------------------------------------------


def _unique_stems(entries: list[_Entry], skipped: list[Skipped]) -> dict[str, Path]:
    by_stem: dict[str, Path] = {}
    for entry in entries:  # sorted by name, so the kept file is deterministic
        if entry.stem in by_stem:
            skipped.append(
                Skipped(entry.path.as_posix(), f"same name as {by_stem[entry.stem].as_posix()}; keep one of them")
            )
        else:
            by_stem[entry.stem] = entry.path
    return by_stem


def _detect_suffix(image_stems: set[str], mask_stems: list[str]) -> str:
    """The mask-stem suffix that pairs the most masks with images ("" wins ties)."""
    exact = sum(stem in image_stems for stem in mask_stems)
    suffixes: Counter[str] = Counter()
    for stem in mask_stems:
        if stem in image_stems:
            continue
        for cut in range(len(stem) - 1, 0, -1):  # longest image stem that is a prefix
            if stem[:cut] in image_stems:
                suffixes[stem[cut:]] += 1
                break
    if not suffixes:
        return ""
    suffix, count = suffixes.most_common(1)[0]
    return suffix if count > exact else ""


def _pair(
    image_by_stem: dict[str, Path],
    masks_by_class: dict[str, dict[str, Path]],
    suffix: str,
    layout: str,
    skipped: list[Skipped],
) -> list[Sample]:
    used: set[Path] = set()
    samples: list[Sample] = []
    for stem, image in image_by_stem.items():
        found = [by_stem.get(stem + suffix) for by_stem in masks_by_class.values()]
        if all(path is not None for path in found):
            masks = tuple(path for path in found if path is not None)
            used.update(masks)
            samples.append(Sample(stem, image, masks))
            continue
        if layout == "A":
            reason = f"no mask: expected masks/{stem}{suffix}.png (or .tif)"
        else:
            missing = [name for name, path in zip(masks_by_class, found) if path is None]
            used.update(path for path in found if path is not None)
            reason = f"missing mask for class {', '.join(missing)}: expected masks/{missing[0]}/{stem}{suffix}.png"
        skipped.append(Skipped(image.as_posix(), reason))
    for by_stem in masks_by_class.values():
        for mask_stem, path in by_stem.items():
            if path in used:
                continue
            if suffix and not mask_stem.endswith(suffix):
                reason = f"mask name does not end with the mask suffix {suffix!r}"
            else:
                reason = f"mask without an image: no images/{mask_stem[: len(mask_stem) - len(suffix)]}.*"
            skipped.append(Skipped(path.as_posix(), reason))
    return samples


def _count_label_values(
    root: Path, samples: list[Sample], skipped: list[Skipped], *, max_pixels: int
) -> tuple[list[Sample], ValueCounts]:
    """Layout A: read every mask once and count its values; unreadable masks go to ``skipped``."""
    kept: list[Sample] = []
    counts = ValueCounts()
    for sample in samples:
        try:
            labels = read_mask(root / sample.masks[0], max_pixels=max_pixels)
        except InputFileError as error:
            skipped.append(Skipped(sample.image.as_posix(), file_reason(sample.masks[0], error)))
            continue
        counts.add(labels)
        kept.append(sample)
    return kept, counts
