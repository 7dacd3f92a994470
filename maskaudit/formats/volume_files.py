"""One 3-D volume file: NIfTI through nibabel, MetaImage (``.mha``) and NRRD (``.nrrd``) through SimpleITK.

Whatever the format, arrays are indexed (X, Y, Z) (SimpleITK's own arrays are (Z, Y, X)) and the
affine maps voxel indices to RAS+ millimetres as nibabel's does, so that shapes, spacing, orientation
and origin compare across formats. SimpleITK is the optional extra ``maskaudit[sitk]``, imported only
when such a file is opened. Shape key: X x Y x Z voxels.
"""

from __future__ import annotations

import gzip
import os
import uuid
from pathlib import Path

import numpy as np

from ..errors import DatasetError

__all__ = ["NIFTI_ENDINGS", "SITK_ENDINGS", "VOLUME_ENDINGS", "volume_ending", "open_volume", "write_label_volume",
           "require_sitk"]

NIFTI_ENDINGS = (".nii.gz", ".nii")
SITK_ENDINGS = (".mha", ".nrrd")
VOLUME_ENDINGS = NIFTI_ENDINGS + SITK_ENDINGS
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])  # ITK's physical space is LPS, NIfTI's RAS


def volume_ending(name: str) -> str | None:
    """The volume file ending of ``name`` (``.nii.gz``, ``.nii``, ``.mha``, ``.nrrd``), or None."""
    return next((ending for ending in VOLUME_ENDINGS if name.endswith(ending) and len(name) > len(ending)), None)


def require_sitk():
    """The SimpleITK module; DatasetError naming the extra to install when it is missing."""
    try:
        import SimpleITK
    except ImportError as error:
        raise DatasetError(f".mha and .nrrd volumes are read with SimpleITK ({error});"
                           " install it with: pip install 'maskaudit[sitk]'") from error
    return SimpleITK


class _SitkVolume:
    """A MetaImage or NRRD file opened through SimpleITK: header now, voxels on demand."""

    def __init__(self, path: Path):
        sitk = require_sitk()
        self._sitk, self._path = sitk, Path(path)
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        self._components = reader.GetNumberOfComponents()
        self.shape = tuple(int(size) for size in reader.GetSize()) + ((self._components,) if self._components > 1 else ())
        spacing = np.asarray(reader.GetSpacing(), dtype=np.float64)
        dimension = len(spacing)
        direction = np.asarray(reader.GetDirection(), dtype=np.float64).reshape(dimension, dimension)[:3, :3]
        origin = np.asarray(reader.GetOrigin(), dtype=np.float64)[:3]
        self.affine = np.eye(4)
        self.affine[:3, :3] = _LPS_TO_RAS @ direction @ np.diag(spacing[:3])
        self.affine[:3, 3] = _LPS_TO_RAS @ origin
        self.zooms = tuple(float(value) for value in spacing)

    def array(self) -> np.ndarray:
        """The voxels, (X, Y, Z) (a vector image: (X, Y, Z, C)), in the file's data type."""
        values = self._sitk.GetArrayFromImage(self._sitk.ReadImage(str(self._path)))
        spatial = values.ndim - (1 if self._components > 1 else 0)
        return np.transpose(values, (*reversed(range(spatial)), *range(spatial, values.ndim)))


class _NiftiVolume:
    def __init__(self, path: Path):
        import nibabel as nib

        self._image = nib.load(path)
        self.shape = tuple(int(size) for size in self._image.shape)
        self.affine = np.asarray(self._image.affine, dtype=np.float64)
        self.zooms = tuple(float(value) for value in self._image.header.get_zooms())

    def array(self) -> np.ndarray:
        return np.asanyarray(self._image.dataobj)


def open_volume(path: Path):
    """Open ``path``: ``.shape``, ``.affine`` (4, 4) voxel to RAS+ mm, ``.zooms`` (mm per axis) from the header,
    ``.array()`` reads the voxels (X, Y, Z) in the file's data type.

    Raises nibabel's or SimpleITK's own errors for unreadable files (the readers turn them into one line),
    DatasetError when SimpleITK is needed and missing.
    """
    path = Path(path)
    if volume_ending(path.name) in SITK_ENDINGS:
        return _SitkVolume(path)
    return _NiftiVolume(path)


def write_label_volume(target: Path, labels: np.ndarray, *, like: Path) -> Path:
    """Write (X, Y, Z) ``labels`` to ``target`` (atomically) in the format of its ending, with the geometry
    (affine or spacing, origin, direction), the header and the data type of the label file ``like``."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}{volume_ending(target.name) or ''}")
    try:
        if volume_ending(target.name) in SITK_ENDINGS:
            sitk = require_sitk()
            source = sitk.ReadImage(str(like))
            image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(labels, (2, 1, 0))))
            image = sitk.Cast(image, source.GetPixelID())
            image.CopyInformation(source)  # spacing, origin, direction
            sitk.WriteImage(image, str(temporary), useCompression=True)
        else:
            import nibabel as nib

            source = nib.load(like)
            header = source.header.copy()
            payload = nib.Nifti1Image(labels.astype(header.get_data_dtype()), source.affine, header).to_bytes()
            temporary.write_bytes(gzip.compress(payload, compresslevel=6) if target.name.endswith(".gz") else payload)
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    return target
