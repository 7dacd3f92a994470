"""Cut every volume of an nnU-Net dataset into 2-D slices, normalise, resize and cache them.

The rest of the pipeline works on 2-D samples: here each slice along ``axis`` becomes one row of
the same memory-mapped cache :mod:`maskaudit.prepare` builds for folders of images, so training,
scoring and clustering run unchanged. Each case is decoded once (a slice-by-slice reader would
decompress a volume once per slice). The cache is keyed on the settings and on the path, size and
``mtime_ns`` of every file; when any of them changes the whole cache is built again.

Intensities become ``uint8`` per channel, as nnU-Net normalises them: a channel named CT is clipped
to the 0.5 and 99.5 percentiles of the foreground voxels of the whole dataset, any other channel
is z-scored per volume; the result is mapped linearly to 0..255 (z in [-3, 3]).
Shape key: N slices, C channels, K classes, S working resolution, H x W one slice's voxels.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from .atomic import atomic_path, atomic_write_text
from .dataset import DatasetIndex, Sample, Skipped
from .errors import DatasetError, InputFileError, OutputDirError
from .formats.nnunet import CaseVolume, VolumeCase, VolumeIndex, read_case
from .formats.volume_files import open_volume
from .pages import release_pages
from .prepare import PreparedData, _check_cache_dir, _finish_rows, _open_rows

__all__ = ["VolumeData", "SliceSamples", "prepare_volumes", "normalise_case", "slice_id"]

_CACHE_VERSION = 3  # 2: the manifest holds each case's voxel spacing; 3: the per-slice columns are an .npy file
CT_PERCENTILES = (0.5, 99.5)
Z_RANGE = 3.0                 # z-scores in [-Z_RANGE, Z_RANGE] fill 0..255
_FOREGROUND_SAMPLES = 10_000  # foreground voxels drawn per case for the CT percentiles
_RELEASE_EVERY = 32           # cases between releases of the written cache pages from this process


@dataclass
class VolumeData:
    """The slices of every usable case, as 2-D samples, and where each slice comes from.

    Attributes
    ----------
    data : PreparedData
        Slice-level: ``data.index.samples`` is a :class:`SliceSamples`, whose item i is slice i (id ``"<case>/<slice>"``), its image and
        mask paths are the case's files; images (N, C, S, S) and masks (N, K, S, S) memory maps;
        ``data.pixel_mm`` (N, 2) the mm of one working pixel along the slice's rows and columns.
    volumes : VolumeIndex
        The dataset; cases that failed to decode are moved to ``skipped``.
    case_of : np.ndarray
        (N,) ``int64``: position in ``volumes.cases`` of each slice's case.
    slice_of : np.ndarray
        (N,) ``int64``: index of each slice along ``axis``.
    axis : int
        0, 1 or 2, the voxel axis the volumes are cut along.
    """

    data: PreparedData
    volumes: VolumeIndex
    case_of: np.ndarray
    slice_of: np.ndarray
    axis: int

    def slices_of_case(self, case_position: int) -> np.ndarray:
        """Sample positions of one case's slices, in slice order."""
        return np.asarray(self.data.index.samples.rows_of_case(case_position))


def slice_id(case_id: str, slice_index: int) -> str:
    return f"{case_id}/{slice_index}"


class SliceSamples(Sequence):
    """The slices of a volume dataset as :class:`~maskaudit.dataset.Sample` records, made when asked for.

    A scan of 200,000 slices would otherwise hold a record, an id and a tuple per slice (about half a
    KiB each); this holds two integers per slice. ``samples[i]`` is slice i: id ``"<case>/<slice>"``,
    its image and mask paths the case's files. ``position(id)`` is the inverse.
    """

    def __init__(self, cases: Sequence[VolumeCase], case_of: np.ndarray, slice_of: np.ndarray):
        self._cases, self._case_of, self._slice_of = tuple(cases), case_of, slice_of
        self._case_position = {case.id: position for position, case in enumerate(self._cases)}
        self._bounds = np.searchsorted(case_of, np.arange(len(self._cases) + 1))  # rows of case c: bounds[c]..

    def __len__(self) -> int:
        return len(self._case_of)

    def __getitem__(self, position):
        if isinstance(position, slice):
            return tuple(self[item] for item in range(*position.indices(len(self))))
        position = range(len(self))[position]  # negative positions; IndexError past the end
        case = self._cases[int(self._case_of[position])]
        return Sample(slice_id(case.id, int(self._slice_of[position])), case.images[0], (case.label,))

    def position(self, sample_id: str) -> int:
        """The row of the slice called ``sample_id`` (``"<case>/<slice>"``). Raises KeyError for an unknown id."""
        case_id, _, index = sample_id.rpartition("/")
        if case_id not in self._case_position or not index.isdigit():
            raise KeyError(sample_id)
        rows = self.rows_of_case(self._case_position[case_id])
        found = int(np.searchsorted(self._slice_of[rows.start : rows.stop], int(index))) + rows.start
        if found not in rows or self._slice_of[found] != int(index):
            raise KeyError(sample_id)
        return found

    def rows_of_case(self, case: int) -> range:
        """The rows of the slices of case position ``case``, in slice order (a case's slices are consecutive)."""
        return range(int(self._bounds[case]), int(self._bounds[case + 1]))

    @property
    def id_dtype(self) -> np.dtype:
        """A string dtype wide enough for every id."""
        case_width = max((len(case.id) for case in self._cases), default=0)
        return np.dtype(f"<U{case_width + 1 + len(str(int(self._slice_of.max(initial=0))))}")

    def ids(self, start: int, stop: int) -> np.ndarray:
        """(stop - start,) the ids of rows start..stop, as :attr:`id_dtype`."""
        return np.asarray([item.id for item in self[start:stop]], dtype=self.id_dtype)


def normalise_case(image: np.ndarray, channel_names: tuple[str, ...], ct_windows: dict[int, tuple[float, float]]
                   ) -> np.ndarray:
    """(C, X, Y, Z) float32 intensities to ``uint8``: CT channels clipped to their window, others z-scored."""
    out = np.empty(image.shape, dtype=np.uint8)
    for channel, values in enumerate(image):
        if channel in ct_windows:
            low, high = ct_windows[channel]
            scaled = (np.clip(values, low, high) - low) / max(high - low, 1e-6)
        else:
            std = float(values.std())
            scaled = ((values - float(values.mean())) / (std if std > 1e-6 else 1.0) + Z_RANGE) / (2 * Z_RANGE)
        out[channel] = np.round(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)
    return out


def prepare_volumes(
    volumes: VolumeIndex, *, size: int, axis: int, cache_dir: Path, progress: bool = False
) -> VolumeData:
    """Slice, normalise and resize every case along ``axis`` into a memory-mapped cache in ``cache_dir``.

    Raises
    ------
    ValueError
        If ``axis`` is not 0, 1 or 2.
    OutputDirError
        If ``cache_dir`` is inside the dataset or cannot be written.
    DatasetError
        If no case decodes.
    """
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis!r}")
    stand_in = DatasetIndex(root=volumes.root, layout="A", classes=volumes.classes, samples=(), skipped=(),
                            mask_suffix="")
    cache_dir = _check_cache_dir(stand_in, Path(cache_dir))
    key = _cache_key(volumes, size=size, axis=axis)
    manifest_path = cache_dir / f"volumes-{size}.json"
    cached = _load_cache(cache_dir, manifest_path, key)
    if cached is None:
        cached = _build_cache(volumes, size=size, axis=axis, cache_dir=cache_dir, manifest_path=manifest_path,
                              key=key, progress=progress)
    manifest, images, masks, rows = cached
    decoded = set(manifest["cases"])
    kept = [case for case in volumes.cases if case.id in decoded]
    skipped = tuple(sorted([*volumes.skipped, *(Skipped(path, reason) for path, reason in manifest["failed"])],
                           key=lambda item: item.path))
    case_of, slice_of = rows[:, 0].astype(np.int64), rows[:, 1].astype(np.int64)
    index = DatasetIndex(root=volumes.root, layout="A", classes=volumes.classes,
                         samples=SliceSamples(kept, case_of, slice_of), skipped=skipped, mask_suffix="")
    original_sizes = rows[:, 2:4].astype(np.int64)
    in_plane = [other for other in range(3) if other != axis]  # a slice's rows, then its columns
    voxel_mm = np.asarray(manifest["spacing"], dtype=np.float64).reshape(-1, 3)[case_of][:, in_plane]
    data = PreparedData(index=index, images=images, masks=masks, original_sizes=original_sizes, size=size,
                        pixel_mm=voxel_mm * original_sizes / size)
    return VolumeData(data=data, volumes=replace(volumes, cases=tuple(kept), skipped=skipped),
                      case_of=case_of, slice_of=slice_of, axis=axis)


# -- cache ---------------------------------------------------------------------------------------


def _cache_key(volumes: VolumeIndex, *, size: int, axis: int) -> str:
    parts: list[object] = [_CACHE_VERSION, size, axis, list(volumes.classes), list(volumes.channel_names)]
    for case in volumes.cases:
        for relative in (*case.images, case.label):
            path = volumes.root / relative
            try:
                stat = path.stat()
            except OSError:
                parts.append([str(path), None])
                continue
            parts.append([os.path.abspath(path), stat.st_size, stat.st_mtime_ns])
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def _load_cache(cache_dir: Path, manifest_path: Path, key: str):
    """(manifest, images, masks, rows) of a committed cache built with ``key``, or None; rows is (N, 4)
    ``int32``: each slice's case position, slice index, original height and width."""
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if manifest.get("key") != key:
            return None
        images = np.load(cache_dir / manifest["images"], mmap_mode="r")
        masks = np.load(cache_dir / manifest["masks"], mmap_mode="r")
        rows = np.load(cache_dir / manifest["rows"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not (len(images) == len(masks) == len(rows)) or rows.shape[1:] != (4,):
        return None
    return manifest, images, masks, rows


def _build_cache(volumes: VolumeIndex, *, size: int, axis: int, cache_dir: Path, manifest_path: Path, key: str,
                 progress: bool):
    failed: list[tuple[str, str]] = []
    counts: dict[str, int] = {}
    for case in volumes.cases:  # headers only: how many rows to allocate
        try:
            shape = open_volume(volumes.root / case.label).shape
            counts[case.id] = int(shape[axis]) if len(shape) == 3 else 0
        except Exception:  # noqa: BLE001 - reported when the case is read
            counts[case.id] = 0
    ct_windows = _ct_windows(volumes, progress=progress)
    total = max(sum(counts.values()), 1)
    tag = uuid.uuid4().hex[:12]
    names = (f"volumes-{size}-{tag}-images.npy", f"volumes-{size}-{tag}-masks.npy", f"volumes-{size}-{tag}-rows.npy")
    kept: list[str] = []
    rows = np.zeros((total, 4), np.int32)  # per slice: case position, slice index, original height and width
    done = 0
    spacings: list[tuple[float, float, float]] = []
    with atomic_path(cache_dir / names[0]) as images_temp, atomic_path(cache_dir / names[1]) as masks_temp:
        images = _open_rows(images_temp, (total, len(volumes.channel_names), size, size))
        masks = _open_rows(masks_temp, (total, len(volumes.classes), size, size))
        for case in tqdm(volumes.cases, desc="preparing", unit="case", disable=not progress):
            try:
                volume = read_case(volumes, case)
            except InputFileError as error:
                failed.append((case.label.as_posix(), _reason(case.label, error)))
                continue
            if done + volume.labels.shape[axis] > total:
                failed.append((case.label.as_posix(), "volume changed while being read; run again"))
                continue
            pixels = normalise_case(volume.image, volumes.channel_names, ct_windows)
            for index in range(volume.labels.shape[axis]):
                channels = np.take(pixels, index, axis=axis + 1)
                labels = np.take(volume.labels, index, axis=axis)
                images[done], masks[done] = _resize_slice(channels, labels, size, len(volumes.classes))
                rows[done] = (len(kept), index, *labels.shape)
                done += 1
            kept.append(case.id)
            spacings.append(volume.spacing)
            if len(kept) % _RELEASE_EVERY == 0:
                release_pages(images, masks)
        if not kept:
            raise DatasetError(f"no case in {volumes.root} could be decoded (e.g. {failed[-1][0]}: {failed[-1][1]});"
                               " run `maskaudit inspect` on it to list the problems")
        _finish_rows(images, images_temp, done)
        _finish_rows(masks, masks_temp, done)
        del images, masks
    manifest = {"key": key, "images": names[0], "masks": names[1], "rows": names[2], "cases": kept,
                "failed": failed, "spacing": [list(item) for item in spacings]}
    try:
        with atomic_path(cache_dir / names[2]) as rows_temp, open(rows_temp, "wb") as handle:
            np.save(handle, rows[:done])
        atomic_write_text(manifest_path, json.dumps(manifest))
    except OSError as error:
        raise OutputDirError(f"cannot write the cache in {cache_dir} ({error.strerror or error})") from error
    for path in cache_dir.glob(f"volumes-{size}-*-*.npy"):
        if path.name not in names:
            path.unlink(missing_ok=True)
    return _load_cache(cache_dir, manifest_path, key)


def _reason(path: Path, error: InputFileError) -> str:
    message, prefix = str(error), f"{path.as_posix()}: "
    return message[len(prefix):] if message.startswith(prefix) else message


def _ct_windows(volumes: VolumeIndex, *, progress: bool) -> dict[int, tuple[float, float]]:
    """{channel: (low, high)} percentiles of foreground intensities over the dataset, for CT channels."""
    ct = [channel for channel, name in enumerate(volumes.channel_names) if name.strip().upper() == "CT"]
    if not ct:
        return {}
    rng = np.random.default_rng(0)
    samples: dict[int, list[np.ndarray]] = {channel: [] for channel in ct}
    for case in tqdm(volumes.cases, desc="CT window", unit="case", disable=not progress):
        try:
            volume: CaseVolume = read_case(volumes, case)
        except InputFileError:
            continue  # reported by the slicing pass
        foreground = volume.labels > 0
        for channel in ct:
            values = volume.image[channel][foreground] if foreground.any() else volume.image[channel].ravel()
            take = min(len(values), _FOREGROUND_SAMPLES)
            samples[channel].append(rng.choice(values, size=take, replace=False))
    windows = {}
    for channel in ct:
        values = np.concatenate(samples[channel]) if samples[channel] else np.zeros(1, np.float32)
        low, high = np.percentile(values, CT_PERCENTILES)
        windows[channel] = (float(low), float(high))
    return windows


def _resize_slice(channels: np.ndarray, labels: np.ndarray, size: int, num_classes: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(C, H, W) uint8 and (H, W) labels to (C, S, S) (area when shrinking, else bilinear) and (K, S, S) one-hot."""
    height, width = labels.shape
    filter_ = Image.Resampling.BOX if height >= size and width >= size else Image.Resampling.BILINEAR
    image = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(channel)).resize((size, size), filter_))
                      for channel in channels])
    resized = np.asarray(Image.fromarray(np.ascontiguousarray(labels)).resize((size, size), Image.Resampling.NEAREST))
    masks = np.stack([resized == k + 1 for k in range(num_classes)]).astype(np.uint8)
    return image, masks
