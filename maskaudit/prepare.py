"""Decode and resize every pair once, and cache the arrays in the output directory.

The cache lives in ``cache_dir`` as two ``.npy`` files per working size (opened as memory maps,
so 100,000 samples never sit in RAM) and a small JSON manifest naming them. Each row is keyed on
the absolute path, byte size and ``mtime_ns`` of its files plus the decoding settings, so a
changed file is decoded again and an unchanged one never is. Decoding failures are cached too.
Files are written through :mod:`maskaudit.atomic` (temporary name, then ``os.replace``) under
new names; the manifest is replaced last, so a crash leaves at worst unreferenced files that are
never trusted (and are deleted by the next successful run).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from .dataset import DatasetIndex, Sample, Skipped, file_reason, is_binary_255
from .labels import LabelValues
from .atomic import atomic_path, atomic_write_text
from .errors import DatasetError, InputFileError, OutputDirError
from .imageio import DEFAULT_MAX_PIXELS, probe_image, read_image, read_mask

__all__ = ["Pair", "PreparedData", "load_original", "prepare", "read_pair", "skipped_pair"]

_CACHE_VERSION = 2  # 2: classes are the label values present, and a void array
_NORMALISATION = "percentile"

T = TypeVar("T")
Reader = Callable[[DatasetIndex, Sample], "Pair"]  # a dataset format's decoder (maskaudit.formats)


@dataclass(frozen=True)
class Pair:
    """One decoded sample at its original size.

    Attributes
    ----------
    image : np.ndarray
        (H, W) ``uint8`` grey or (H, W, 3) ``uint8`` colour, 0..255.
    masks : np.ndarray
        (K, H, W) ``bool``; channel k is class k (layout A: ``label == k + 1``).
    mode : str
        Source mode of the image, e.g. ``"L"``, ``"I;16"``, ``"DICOM MONOCHROME1"``.
    void : np.ndarray or None
        (H, W) ``bool`` void / ignore pixels (layout A with a void value), else None.
    """

    image: np.ndarray
    masks: np.ndarray
    mode: str
    void: np.ndarray | None = None


@dataclass
class PreparedData:
    """Every usable sample decoded and resized to ``size`` x ``size``.

    Attributes
    ----------
    index : DatasetIndex
        The dataset; pairs that failed to decode are moved from ``samples`` to ``skipped``.
    images : np.ndarray
        (N, C, S, S) ``uint8``, a read-only ``np.memmap``; C = 1 if every image is grey, else 3.
    masks : np.ndarray
        (N, K, S, S) ``uint8`` in {0, 1}, a read-only ``np.memmap``.
    original_sizes : np.ndarray
        (N, 2) ``int64``: (H, W) of each original image.
    size : int
        S, the working resolution.
    void : np.ndarray or None
        (N, S, S) ``uint8`` in {0, 1}, 1 = void / ignore pixel (no class, not background), a
        read-only ``np.memmap``; None when the dataset has no void value.
    pixel_mm : np.ndarray or None
        (N, 2) ``float64``: size in mm of one working pixel along rows and columns (volume slices,
        whose voxel spacing is known); None for 2-D images.
    """

    index: DatasetIndex
    images: np.ndarray
    masks: np.ndarray
    original_sizes: np.ndarray
    size: int
    void: np.ndarray | None = None
    pixel_mm: np.ndarray | None = None


def read_pair(index: DatasetIndex, sample: Sample, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Pair:
    """Decode one sample and check that its masks fit its image and its classes.

    Parameters
    ----------
    index : DatasetIndex
        The dataset the sample belongs to (root, layout and classes).
    sample : Sample
        The pair to read.
    max_pixels : int
        Decompression-bomb guard for every file.

    Returns
    -------
    Pair
        Image (H, W[, 3]) ``uint8``, masks (K, H, W) ``bool`` and void (H, W) ``bool`` or None.

    Raises
    ------
    InputFileError
        If a file cannot be decoded, a mask's size differs from the image's, a layout A mask
        holds a value that is neither background, a class nor void, or a layout B mask is not
        binary. The message names the file relative to the dataset root.
    """
    decoded = _decoding(sample.image, lambda: read_image(index.root / sample.image, max_pixels=max_pixels))
    height, width = decoded.pixels.shape[:2]
    num_classes = len(index.classes)
    masks = np.zeros((num_classes, height, width), dtype=bool)
    void = None
    for channel, mask_path in enumerate(sample.masks):
        labels = _decoding(mask_path, lambda: read_mask(index.root / mask_path, max_pixels=max_pixels))
        name = mask_path.as_posix()
        if labels.shape != (height, width):
            raise InputFileError(
                f"{name}: mask is {labels.shape[0]}x{labels.shape[1]} but its image is {height}x{width};"
                " masks must have the size of their image"
            )
        if index.multilabel:
            if not (is_binary_255(labels) or bool(np.isin(labels, (0, 1)).all())):
                found = ", ".join(str(int(value)) for value in np.unique(labels)[:6])
                raise InputFileError(f"{name}: layout B masks must be binary (0/255 or 0/1), found values {found}")
            masks[channel] = labels > 0
            continue
        masks, void, unknown = label_values(index).split(labels)
        if unknown:
            listed = ", ".join(str(value) for value in unknown[:6])
            raise InputFileError(
                f"{name}: label value {listed} is not a class ({_values_text(index)}); fix the mask or"
                f' name it in classes.json ({{"{unknown[0]}": "name", ...}})'
            )
    return Pair(decoded.pixels, masks, decoded.mode, void)


def label_values(index: DatasetIndex) -> LabelValues:
    """The index's label values; an index built by hand without them reads values 1..K."""
    if index.labels.values or index.multilabel:
        return index.labels
    return LabelValues(values=tuple(range(1, len(index.classes) + 1)))


def _values_text(index: DatasetIndex) -> str:
    labels = label_values(index)
    text = "classes are " + ", ".join(str(value) for value in labels.values[:8])
    text += ", ..." if len(labels.values) > 8 else ""
    return text + (f"; {labels.void} is void" if labels.void is not None else "")


def load_original(
    index: DatasetIndex, sample_id: str, *, max_pixels: int = DEFAULT_MAX_PIXELS, reader: Reader | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The image, masks and void pixels of one sample at their original size, for the report.

    Returns
    -------
    image : np.ndarray
        (H, W, 3) ``uint8`` (grey replicated).
    masks : np.ndarray
        (K, H, W) ``bool``.
    void : np.ndarray or None
        (H, W) ``bool`` void pixels, or None when the dataset has no void value.

    Raises
    ------
    KeyError
        If ``sample_id`` is not among ``index.samples``.
    InputFileError
        If the files no longer decode.
    """
    sample = next((item for item in index.samples if item.id == sample_id), None)
    if sample is None:
        raise KeyError(f"no sample with id {sample_id!r} in {index.root}")
    pair = _read(index, sample, max_pixels=max_pixels, reader=reader)
    image = pair.image if pair.image.ndim == 3 else np.repeat(pair.image[..., None], 3, axis=2)
    return np.ascontiguousarray(image), pair.masks, pair.void


def prepare(
    index: DatasetIndex,
    *,
    size: int,
    cache_dir: Path,
    progress: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    reader: Reader | None = None,
) -> PreparedData:
    """Decode every pair, resize it to ``size`` x ``size`` and cache the result in ``cache_dir``.

    Images are resized with area averaging when shrinking and bilinear when enlarging, masks with
    nearest neighbour; the aspect ratio is not kept. Rows whose files (path, size, mtime) and
    settings (size, layout, number of classes, max_pixels) are unchanged are copied from the
    previous cache without decoding; pairs that failed before are skipped again without decoding.

    Parameters
    ----------
    index : DatasetIndex
        From :func:`~maskaudit.dataset.find_dataset`.
    size : int
        S, the working resolution.
    cache_dir : Path
        Output directory for the cache; created if missing. Must lie outside the dataset.
    progress : bool
        Show a tqdm progress bar while decoding.
    max_pixels : int
        Decompression-bomb guard for every file.
    reader : callable, optional
        ``reader(index, sample) -> Pair`` of a dataset format other than folders (see
        :mod:`maskaudit.formats`); default :func:`read_pair`.

    Returns
    -------
    PreparedData
        Images (N, C, S, S), masks (N, K, S, S) and void (N, S, S) (or None) as read-only memory maps.

    Raises
    ------
    ValueError
        If ``size`` is not a positive integer.
    OutputDirError
        If ``cache_dir`` is inside the dataset or cannot be written.
    DatasetError
        If no pair decodes.
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    size = int(size)
    cache_dir = _check_cache_dir(index, Path(cache_dir))
    settings = {
        "version": _CACHE_VERSION,
        "size": size,
        "layout": index.layout,
        "classes": len(index.classes),
        "label_values": {key: value for key, value in index.labels.as_dict().items() if key != "notes"},
        "max_pixels": max_pixels,
        "normalisation": _NORMALISATION,
    }
    old = _Cache.load(cache_dir, size)

    skipped = list(index.skipped)
    keys: dict[str, str] = {}
    for sample in index.samples:
        try:
            keys[sample.id] = _row_key(index, sample, settings)
        except InputFileError as error:
            skipped.append(skipped_pair(sample, error))
    failed = {key: old.failed[key] for key in keys.values() if key in old.failed}  # cached failures
    for sample in index.samples:
        if keys.get(sample.id) in failed:
            skipped.append(Skipped(sample.image.as_posix(), failed[keys[sample.id]]))
    candidates = [sample for sample in index.samples if sample.id in keys and keys[sample.id] not in failed]

    channels, colour = _channels(index, candidates, keys, old, max_pixels=max_pixels)
    has_void = index.void_value is not None
    if old.usable(channels, len(index.classes), has_void) and old.keys == [keys[sample.id] for sample in candidates]:
        prepared_index = dataclasses.replace(index, samples=tuple(candidates), skipped=_sorted(skipped))
        return old.prepared(prepared_index, size)

    tag = uuid.uuid4().hex[:12]
    names = tuple(f"prepared-{size}-{tag}-{part}.npy" for part in ("images", "masks", "void")[: 2 + has_void])
    done: list[Sample] = []
    sizes: list[tuple[int, int]] = []
    rows_colour: list[bool] = []
    with contextlib.ExitStack() as stack:
        temps = [stack.enter_context(atomic_path(cache_dir / name)) for name in names]
        images = _open_rows(temps[0], (len(candidates), channels, size, size))
        masks = _open_rows(temps[1], (len(candidates), len(index.classes), size, size))
        void = _open_rows(temps[2], (len(candidates), size, size)) if has_void else None
        for sample in tqdm(candidates, desc="preparing", unit="pair", disable=not progress):
            key = keys[sample.id]
            row = old.row_of.get(key)
            if row is not None:
                images[len(done)] = _widen(old.images[row], channels)
                masks[len(done)] = old.masks[row]
                if void is not None:
                    void[len(done)] = old.void[row]
                sizes.append(old.sizes[row])
            else:
                try:
                    pair = _read(index, sample, max_pixels=max_pixels, reader=reader)
                except InputFileError as error:
                    skipped.append(skipped_pair(sample, error))
                    failed[key] = skipped[-1].reason
                    continue
                images[len(done)], masks[len(done)], row_void = _resize_pair(pair, size, channels)
                if void is not None:
                    void[len(done)] = row_void
                sizes.append(pair.image.shape[:2])
            rows_colour.append(colour[sample.id])
            done.append(sample)
        if not done:
            raise DatasetError(
                f"no pair in {index.root} could be decoded (e.g. {skipped[-1].path}: {skipped[-1].reason});"
                " run `maskaudit inspect` on it to list the problems"
            )
        for array, temp in zip((images, masks, void), temps):
            _finish_rows(array, temp, len(done))
        del images, masks, void
    manifest = {
        **settings,
        "images": names[0],
        "masks": names[1],
        "void": names[2] if has_void else None,
        "keys": [keys[sample.id] for sample in done],
        "original_sizes": [[int(height), int(width)] for height, width in sizes],
        "colour": rows_colour,
        "failed": failed,
    }
    # The manifest is the commit point: until it is replaced the previous generation stays trusted.
    _write(atomic_write_text, _Cache.manifest_path(cache_dir, size), json.dumps(manifest))
    cache = _Cache.load(cache_dir, size)
    old.remove_files_except(cache)
    prepared_index = dataclasses.replace(index, samples=tuple(done), skipped=_sorted(skipped))
    return cache.prepared(prepared_index, size)


# -- helpers -------------------------------------------------------------------------------------


def _read(index: DatasetIndex, sample: Sample, *, max_pixels: int, reader: Reader | None) -> Pair:
    return read_pair(index, sample, max_pixels=max_pixels) if reader is None else reader(index, sample)


def _decoding(path: Path, read: Callable[[], T]) -> T:
    """Run a reader, naming the file by its path relative to the dataset root in any error."""
    try:
        return read()
    except InputFileError as error:
        raise InputFileError(file_reason(path, error)) from error


def skipped_pair(sample: Sample, error: InputFileError) -> Skipped:
    """The :class:`Skipped` entry of a pair that failed in :func:`read_pair`.

    The entry's path is the image; the reason names the failing file only if it is a mask.
    """
    message, prefix = str(error), f"{sample.image.as_posix()}: "
    return Skipped(sample.image.as_posix(), message[len(prefix):] if message.startswith(prefix) else message)


def _sorted(skipped: list[Skipped]) -> tuple[Skipped, ...]:
    return tuple(sorted(skipped, key=lambda item: item.path))


def _check_cache_dir(index: DatasetIndex, cache_dir: Path) -> Path:
    real_cache = Path(os.path.realpath(cache_dir))
    real_root = Path(os.path.realpath(index.root))
    if real_cache == real_root or real_root in real_cache.parents:
        raise OutputDirError(
            f"output directory {cache_dir} is inside the dataset {index.root}; choose a folder outside it"
        )
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputDirError(f"cannot create output directory {cache_dir} ({error.strerror})") from error
    return cache_dir


def _row_key(index: DatasetIndex, sample: Sample, settings: dict) -> str:
    """Hash of the settings and (absolute path, size, mtime_ns) of the image and mask files."""
    parts: list[object] = [settings]
    for relative in (sample.image, *sample.masks):
        path = index.root / relative
        try:
            stat = path.stat()
        except OSError as error:
            raise InputFileError(f"{relative.as_posix()}: cannot read ({error.strerror})") from error
        parts.append([os.path.abspath(path), stat.st_size, stat.st_mtime_ns])
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _channels(
    index: DatasetIndex, samples: list[Sample], keys: dict[str, str], old: _Cache, *, max_pixels: int
) -> tuple[int, dict[str, bool]]:
    """C (1 or 3) and whether each image is colour, from the cache or from the file header."""
    colour: dict[str, bool] = {}
    for sample in samples:
        row = old.row_of.get(keys[sample.id])
        if row is not None:
            colour[sample.id] = old.colour[row]
            continue
        try:
            colour[sample.id] = probe_image(index.root / sample.image, max_pixels=max_pixels).channels == 3
        except InputFileError:
            colour[sample.id] = False  # decoding will fail and report it
    return (3 if any(colour.values()) else 1), colour


def _widen(image: np.ndarray, channels: int) -> np.ndarray:
    """(C', S, S) cached image to (channels, S, S): a grey cache row is replicated when C grows to 3."""
    return image if image.shape[0] == channels else np.repeat(image[:1], channels, axis=0)


def _resize_pair(pair: Pair, size: int, channels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Image (C, S, S) uint8 (area when shrinking, else bilinear), masks (K, S, S) uint8 and void
    (S, S) uint8 or None (both nearest)."""
    height, width = pair.image.shape[:2]
    filter_ = Image.Resampling.BOX if height >= size and width >= size else Image.Resampling.BILINEAR
    image = np.asarray(Image.fromarray(pair.image).resize((size, size), filter_))
    if image.ndim == 2:
        image = np.repeat(image[None], channels, axis=0)
    elif channels == 1:  # unreachable unless the header and the pixels disagree on colour
        image = np.asarray(Image.fromarray(image).convert("L"))[None]
    else:
        image = image.transpose(2, 0, 1)
    masks = np.stack(
        [
            np.asarray(Image.fromarray(channel.astype(np.uint8)).resize((size, size), Image.Resampling.NEAREST))
            for channel in pair.masks
        ]
    ) if len(pair.masks) else np.zeros((0, size, size), dtype=np.uint8)
    void = None if pair.void is None else np.asarray(
        Image.fromarray(pair.void.astype(np.uint8)).resize((size, size), Image.Resampling.NEAREST)
    )
    return image, masks, void


class _Cache:
    """A committed cache generation: manifest plus the two memory-mapped arrays (or nothing)."""

    def __init__(self, cache_dir: Path, size: int, manifest: dict | None = None) -> None:
        self.cache_dir = cache_dir
        self.size = size
        manifest = manifest or {}
        self.manifest = manifest
        self.keys: list[str] = list(manifest.get("keys", []))
        self.row_of = {key: row for row, key in enumerate(self.keys)}
        self.sizes: list[tuple[int, int]] = [tuple(item) for item in manifest.get("original_sizes", [])]
        self.colour: list[bool] = list(manifest.get("colour", []))
        self.failed: dict[str, str] = dict(manifest.get("failed", {}))
        self.images: np.ndarray = np.zeros((0, 1, size, size), dtype=np.uint8)
        self.masks: np.ndarray = np.zeros((0, 0, size, size), dtype=np.uint8)
        self.void: np.ndarray | None = None
        self.files: tuple[str, ...] = ()

    @staticmethod
    def manifest_path(cache_dir: Path, size: int) -> Path:
        return cache_dir / f"prepared-{size}.json"

    @classmethod
    def load(cls, cache_dir: Path, size: int) -> _Cache:
        """The committed cache for ``size``, or an empty one if there is none or it does not check out."""
        try:
            manifest = json.loads(cls.manifest_path(cache_dir, size).read_text(encoding="utf-8"))
            if manifest.get("version") != _CACHE_VERSION or manifest.get("size") != size:
                return cls(cache_dir, size)
            cache = cls(cache_dir, size, manifest)
            cache.images = np.load(cache_dir / manifest["images"], mmap_mode="r")
            cache.masks = np.load(cache_dir / manifest["masks"], mmap_mode="r")
            cache.files = (manifest["images"], manifest["masks"])
            if manifest.get("void"):
                cache.void = np.load(cache_dir / manifest["void"], mmap_mode="r")
                cache.files += (manifest["void"],)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return cls(cache_dir, size)
        rows = len(cache.keys)
        if not (
            cache.images.dtype == np.uint8 and cache.masks.dtype == np.uint8
            and cache.images.ndim == 4 and cache.masks.ndim == 4
            and cache.images.shape[0] == rows == cache.masks.shape[0] == len(cache.sizes) == len(cache.colour)
            and cache.images.shape[2:] == (size, size) == cache.masks.shape[2:]
            and (cache.void is None or (cache.void.dtype == np.uint8 and cache.void.shape == (rows, size, size)))
        ):
            return cls(cache_dir, size)
        return cache

    def usable(self, channels: int, num_classes: int, has_void: bool) -> bool:
        """Whether the arrays can be returned as they are."""
        return (bool(self.files) and self.images.shape[1] == channels and self.masks.shape[1] == num_classes
                and (self.void is not None) == has_void)

    def prepared(self, index: DatasetIndex, size: int) -> PreparedData:
        return PreparedData(
            index=index,
            images=self.images,
            masks=self.masks,
            original_sizes=np.asarray(self.sizes, dtype=np.int64).reshape(-1, 2),
            size=size,
            void=self.void,
        )

    def remove_files_except(self, keep: _Cache) -> None:
        """Delete array files of older generations (and of crashed runs) that ``keep`` does not use."""
        pattern = f"prepared-{self.size}-*-*.npy"
        for path in self.cache_dir.glob(pattern):
            if path.name not in keep.files:
                path.unlink(missing_ok=True)


def _write(writer, *args) -> None:
    """Call a writer, turning OSError into OutputDirError."""
    try:
        writer(*args)
    except OSError as error:
        raise OutputDirError(f"cannot write the cache in {args[0]} ({error.strerror or error})") from error


def _open_rows(path: Path, shape: tuple[int, ...]) -> np.memmap:
    """A new ``uint8`` .npy memory map of ``shape`` at ``path`` (a temporary name)."""
    try:
        return np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
    except OSError as error:
        raise OutputDirError(f"cannot write the cache file {path} ({error.strerror or error})") from error


def _finish_rows(array: np.memmap | None, path: Path, rows: int) -> None:
    """Flush ``array`` (stored at ``path``); if fewer than its rows were filled, cut the file to ``rows``."""
    if array is None:
        return
    array.flush()
    if rows == array.shape[0]:
        return
    with atomic_path(path) as shrunk_path:  # replaces ``path`` with a copy of the first ``rows`` rows
        shrunk = _open_rows(shrunk_path, (rows, *array.shape[1:]))
        for start in range(0, rows, 1024):  # in chunks: never the whole array in RAM
            stop = min(start + 1024, rows)
            shrunk[start:stop] = array[start:stop]
        shrunk.flush()
        del shrunk
