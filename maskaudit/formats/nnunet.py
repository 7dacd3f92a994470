"""nnU-Net v2 raw datasets: ``dataset.json`` + ``imagesTr/<case>_0000.nii.gz`` + ``labelsTr/<case>.nii.gz``.

Layout (https://github.com/MIC-DKFZ/nnUNet, documentation/dataset_format.md)::

    dataset.json                     channel_names {"0": "CT"}, labels {"background": 0, "liver": 1}, file_ending
    imagesTr/<case>_0000.nii.gz      one file per channel (_0001, ... for more channels)
    labelsTr/<case>.nii.gz           integer labels 0..K, same shape and affine as the images

Read with nibabel (``.nii.gz`` and ``.nii``), or SimpleITK (``.mha``, ``.nrrd``; the optional extra
``maskaudit[sitk]``) through :mod:`maskaudit.formats.volume_files`. Shape key: C channels, X x Y x Z voxels, K classes.
Per-case problems become :class:`~maskaudit.dataset.Skipped` entries; a dataset that cannot be
used at all raises :class:`~maskaudit.errors.DatasetError`.
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..dataset import Skipped
from ..errors import DatasetError, InputFileError
from .base import DatasetSource, read_json
from .volume_files import SITK_ENDINGS, VOLUME_ENDINGS, open_volume, require_sitk, volume_ending

__all__ = ["VolumeCase", "VolumeIndex", "CaseVolume", "is_nnunet", "find_nnunet", "read_case", "through_plane_axis"]

_AFFINE_TOLERANCE = 1e-3  # mm; nnU-Net's own check uses a similar tolerance


@dataclass(frozen=True)
class VolumeCase:
    """One training case: its channel files and its label file, relative to the dataset root."""

    id: str
    images: tuple[Path, ...]  # one per channel, in channel order
    label: Path


@dataclass(frozen=True)
class VolumeIndex:
    """The cases of an nnU-Net v2 raw dataset.

    Attributes
    ----------
    root : Path
        Absolute dataset directory.
    classes : tuple of str
        K class names; label value k + 1 is class k.
    channel_names : tuple of str
        C modality names from ``channel_names`` ("CT", "MRI", ...), in channel order.
    cases : tuple of VolumeCase
        Usable cases, sorted by id.
    skipped : tuple of Skipped
        Files or cases left out, with reasons.
    spacing : tuple of float
        Median voxel spacing (mm) per axis over the cases' label headers.
    """

    root: Path
    classes: tuple[str, ...]
    channel_names: tuple[str, ...]
    cases: tuple[VolumeCase, ...]
    skipped: tuple[Skipped, ...]
    spacing: tuple[float, float, float]


@dataclass(frozen=True)
class CaseVolume:
    """One decoded case.

    Attributes
    ----------
    image : np.ndarray
        (C, X, Y, Z) ``float32`` raw intensities.
    labels : np.ndarray
        (X, Y, Z) ``uint8`` label values 0..K.
    spacing : tuple of float
        Voxel size in mm along X, Y, Z.
    """

    image: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, float, float]


def is_nnunet(root: Path) -> bool:
    """Whether ``root`` looks like an nnU-Net v2 raw dataset (``dataset.json`` and ``labelsTr/``)."""
    return (root / "dataset.json").is_file() and (root / "labelsTr").is_dir()


def find_nnunet(root: Path | str) -> VolumeIndex:
    """Find the training cases of the nnU-Net v2 raw dataset in ``root``.

    Raises
    ------
    DatasetError
        If ``dataset.json`` is missing or invalid, uses region-based labels or a file ending other
        than NIfTI, MetaImage or NRRD (the last two without SimpleITK installed), or no case has both
        its channel files and its label file.
    """
    root = Path(root).absolute()
    if not is_nnunet(root):
        raise DatasetError(f"{root} is not an nnU-Net v2 raw dataset: it needs dataset.json and labelsTr/")
    meta = _read_dataset_json(root / "dataset.json")
    channel_names = _channel_names(root, meta)
    classes = _classes(root, meta)
    ending = meta.get("file_ending", ".nii.gz")
    if ending not in VOLUME_ENDINGS:
        raise DatasetError(
            f"{root / 'dataset.json'}: file_ending {ending!r} is not supported yet (only"
            f" {', '.join(VOLUME_ENDINGS)}); convert the volumes to NIfTI"
        )
    if ending in SITK_ENDINGS:
        require_sitk()
    skipped: list[Skipped] = []
    labels = _volume_files(root, "labelsTr", skipped)
    images = _volume_files(root, "imagesTr", skipped)
    used: set[str] = set()
    cases: list[VolumeCase] = []
    for case_id, label in sorted(labels.items()):
        files = [images.get(f"{case_id}_{channel:04d}") for channel in range(len(channel_names))]
        missing = [f"imagesTr/{case_id}_{channel:04d}{ending}" for channel, path in enumerate(files) if path is None]
        used.update(f"{case_id}_{channel:04d}" for channel in range(len(channel_names)))
        if missing:
            skipped.append(Skipped(label.as_posix(), f"missing channel file {missing[0]}"
                                   f" (dataset.json names {len(channel_names)} channel(s))"))
            continue
        cases.append(VolumeCase(case_id, tuple(path for path in files if path is not None), label))
    for stem, path in sorted(images.items()):
        if stem not in used:
            skipped.append(Skipped(path.as_posix(), "image without a label file in labelsTr/ (or not named"
                                   " <case>_<4-digit channel>)"))
    if not cases:
        first = f" (e.g. {skipped[0].path}: {skipped[0].reason})" if skipped else ""
        raise DatasetError(f"no usable case in {root}{first}; put labelsTr/<case>{ending} beside"
                           f" imagesTr/<case>_0000{ending}")
    return VolumeIndex(root=root, classes=classes, channel_names=channel_names, cases=tuple(cases),
                       skipped=tuple(sorted(skipped, key=lambda item: item.path)),
                       spacing=_median_spacing(root, cases))


def through_plane_axis(spacing: tuple[float, ...]) -> int:
    """The axis with the largest voxel spacing (the slice direction); ties go to the last such axis."""
    spacing_array = np.asarray(spacing, dtype=np.float64)
    return int(np.flatnonzero(np.isclose(spacing_array, spacing_array.max(), rtol=1e-3))[-1])


def read_case(index: VolumeIndex, case: VolumeCase) -> CaseVolume:
    """Decode one case and check that its label volume fits its images and the declared labels.

    Raises
    ------
    InputFileError
        One line naming the file: unreadable or truncated file, a 4-D image, a shape or affine
        that differs between an image and the label volume, or non-integer or undeclared labels.
    """
    label_image = _load(index.root, case.label)
    labels = _label_values(case.label, label_image, len(index.classes))
    channels = []
    for path in case.images:
        image = _load(index.root, path)
        if len(image.shape) != 3:
            extra = " nnU-Net v2 keeps each channel in its own file (_0000, _0001, ...); split it" if len(
                image.shape) == 4 else ""
            raise InputFileError(f"{path.as_posix()}: image has {len(image.shape)} dimensions {tuple(image.shape)},"
                                 f" expected 3 (X, Y, Z);{extra}")
        if tuple(image.shape) != labels.shape:
            raise InputFileError(f"{case.label.as_posix()}: label volume is {_shape(labels.shape)} but its image"
                                 f" {path.name} is {_shape(image.shape)}; they must match voxel for voxel")
        if not np.allclose(image.affine, label_image.affine, atol=_AFFINE_TOLERANCE):
            raise InputFileError(f"{case.label.as_posix()}: affine (orientation/origin/spacing) differs from its"
                                 f" image {path.name}; resample the label onto the image grid")
        channels.append(_decode(path, lambda: np.asarray(image.array(), dtype=np.float32)))
    spacing = tuple(float(value) for value in label_image.zooms[:3])
    return CaseVolume(image=np.stack(channels), labels=labels, spacing=spacing)  # type: ignore[arg-type]


# -- dataset.json --------------------------------------------------------------------------------


def _read_dataset_json(path: Path) -> dict:
    meta = read_json(path)
    if not isinstance(meta, dict):
        raise DatasetError(f"{path} must hold a JSON object with channel_names and labels")
    return meta


def _channel_names(root: Path, meta: dict) -> tuple[str, ...]:
    names = meta.get("channel_names", meta.get("modality"))
    fix = 'write "channel_names": {"0": "CT"} (one entry per channel file _0000, _0001, ...)'
    if not isinstance(names, dict) or not names:
        raise DatasetError(f"{root / 'dataset.json'} has no channel_names; {fix}")
    try:
        by_index = {int(key): str(value) for key, value in names.items()}
    except ValueError as error:
        raise DatasetError(f"{root / 'dataset.json'}: channel_names keys must be 0, 1, ...; {fix}") from error
    if sorted(by_index) != list(range(len(by_index))):
        raise DatasetError(f"{root / 'dataset.json'}: channel_names keys must be 0..{len(by_index) - 1}; {fix}")
    return tuple(by_index[key] for key in range(len(by_index)))


def _classes(root: Path, meta: dict) -> tuple[str, ...]:
    labels = meta.get("labels")
    path = root / "dataset.json"
    if not isinstance(labels, dict) or not labels:
        raise DatasetError(f'{path} has no labels; write "labels": {{"background": 0, "<class>": 1, ...}}')
    if any(isinstance(value, (list, tuple)) for value in labels.values()):
        raise DatasetError(f"{path} uses region-based labels (lists of label values), which maskaudit does not"
                           " support yet; list one integer value per class")
    try:
        by_value = {int(value): str(name) for name, value in labels.items()}
    except (TypeError, ValueError) as error:
        raise DatasetError(f"{path}: every label value must be an integer") from error
    if len(by_value) != len(labels):
        raise DatasetError(f"{path}: two labels share a value; each class needs its own integer")
    values = sorted(by_value)
    if values != list(range(len(values))):
        raise DatasetError(f"{path}: label values must be consecutive from 0 (background), found {values}")
    return tuple(by_value[value] for value in values[1:])


# -- files ---------------------------------------------------------------------------------------


def _volume_stem(name: str) -> str | None:
    ending = volume_ending(name)
    return None if ending is None else name[: -len(ending)]


def _volume_files(root: Path, folder: str, skipped: list[Skipped]) -> dict[str, Path]:
    """{stem: path relative to root} of the volume files directly in ``root/folder``."""
    directory = root / folder
    if not directory.is_dir():
        return {}
    found: dict[str, Path] = {}
    for path in sorted(directory.iterdir()):
        relative = path.relative_to(root)
        if path.name.startswith("."):
            continue
        stem = _volume_stem(path.name)
        if stem is None or not path.is_file():
            skipped.append(Skipped(relative.as_posix(), f"not a volume file ({', '.join(VOLUME_ENDINGS)})"))
        elif path.stat().st_size == 0:
            skipped.append(Skipped(relative.as_posix(), "empty file (0 bytes)"))
        elif stem in found:
            skipped.append(Skipped(relative.as_posix(), f"same case as {found[stem].as_posix()}; keep one of them"))
        else:
            found[stem] = relative
    return found


def _median_spacing(root: Path, cases: list[VolumeCase]) -> tuple[float, float, float]:
    """Median voxel size per axis from the label headers (headers only: cheap)."""
    spacings = []
    for case in cases:
        try:
            zooms = open_volume(root / case.label).zooms[:3]
        except DatasetError:
            raise
        except Exception:  # noqa: BLE001 - a broken file is reported when it is read
            continue
        if len(zooms) == 3:
            spacings.append(zooms)
    if not spacings:
        return (1.0, 1.0, 1.0)
    median = np.median(np.asarray(spacings, dtype=np.float64), axis=0)
    return (float(median[0]), float(median[1]), float(median[2]))


def _decode(path: Path, read):
    """Run ``read``, turning nibabel's, SimpleITK's and gzip's failures into one-line InputFileErrors naming ``path``."""
    from nibabel.filebasedimages import ImageFileError

    try:
        return read()
    except (EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise InputFileError(f"{path.as_posix()}: truncated or corrupt compressed file ({error});"
                             " copy it again from its source") from error
    except (ImageFileError, OSError, ValueError) as error:
        raise InputFileError(f"{path.as_posix()}: cannot read as NIfTI ({error})") from error
    except RuntimeError as error:  # SimpleITK's only exception type
        reason = " ".join(str(error).split())[-200:]
        raise InputFileError(f"{path.as_posix()}: cannot read as {volume_ending(path.name)} ({reason})") from error


def _load(root: Path, path: Path):
    return _decode(path, lambda: open_volume(root / path))


def _label_values(path: Path, image, num_classes: int) -> np.ndarray:
    """(X, Y, Z) uint8 labels; InputFileError for a non-3-D, non-integer or undeclared label volume."""
    if len(image.shape) != 3:
        raise InputFileError(f"{path.as_posix()}: label volume has shape {tuple(image.shape)}, expected 3-D")
    values = _decode(path, image.array)
    if not np.issubdtype(values.dtype, np.integer):
        if not np.isfinite(values).all() or not np.array_equal(values, np.round(values)):
            raise InputFileError(f"{path.as_posix()}: label volume holds non-integer values; labels must be"
                                 " whole numbers 0..K")
    present = np.unique(values)
    undeclared = [int(value) for value in present if value < 0 or value > num_classes]
    if undeclared:
        raise InputFileError(f"{path.as_posix()}: label value(s) {', '.join(map(str, undeclared[:5]))} not declared"
                             f" in dataset.json labels (0..{num_classes})")
    return values.astype(np.uint8)


def _shape(shape) -> str:
    return " x ".join(str(int(value)) for value in shape)


def open_nnunet(root: Path | str) -> DatasetSource:
    """The nnU-Net v2 raw dataset in ``root`` as a source whose samples are its cases."""
    from ..dataset import DatasetIndex, Sample

    volumes = find_nnunet(root)
    samples = tuple(Sample(case.id, case.images[0], (case.label,)) for case in volumes.cases)
    index = DatasetIndex(root=volumes.root, layout="nnU-Net v2", classes=volumes.classes, samples=samples,
                         skipped=volumes.skipped, mask_suffix="")
    return DatasetSource(format="nnunet", index=index, volumes=volumes)
