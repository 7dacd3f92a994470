"""Decode ONE image or mask file to numpy.

Images come back as ``uint8`` arrays normalised to 0..255, shape (H, W) for grey or (H, W, 3)
for colour. Masks come back as integer label arrays of shape (H, W), values as stored.
Every per-file problem (unreadable, truncated, too large, unsupported) raises
:class:`~maskaudit.errors.InputFileError` with a one-line reason; callers record it as skipped.
"""

from __future__ import annotations

import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import InputFileError

if TYPE_CHECKING:
    from pydicom.dataset import FileDataset

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "MASK_EXTENSIONS",
    "DecodedImage",
    "ImageInfo",
    "has_dicom_magic",
    "is_dicom",
    "normalise_to_uint8",
    "probe_image",
    "read_image",
    "read_mask",
    "read_palette",
]

DEFAULT_MAX_PIXELS = 40_000_000
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm", ".dicom"})
MASK_EXTENSIONS = frozenset({".png", ".tif", ".tiff"})
_DICOM_EXTENSIONS = frozenset({".dcm", ".dicom"})
_TIFF_EXTENSIONS = frozenset({".tif", ".tiff"})
_GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "F"})

Normalisation = Literal["percentile", "minmax"]

# Decoders raise a wide variety of exceptions on hostile or broken files (PIL: OSError,
# SyntaxError, struct.error; pydicom: InvalidDicomError, KeyError, AttributeError, ...).
# They are all turned into InputFileError at this one boundary.
_DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    struct.error,
    zlib.error,
    KeyError,
    IndexError,
    TypeError,
    AttributeError,
    NotImplementedError,
    RuntimeError,
    MemoryError,
)


@dataclass(frozen=True)
class ImageInfo:
    """What the header of an image file says, without decoding the pixels.

    Attributes
    ----------
    height, width : int
        Size in pixels.
    mode : str
        ``"L"``, ``"RGB"``, ``"I;16"``, ... for PIL formats, ``"DICOM MONOCHROME2"`` etc. for DICOM.
    channels : int
        1 if :func:`read_image` returns a grey (H, W) array for this file, else 3.
    """

    height: int
    width: int
    mode: str
    channels: int


@dataclass(frozen=True)
class DecodedImage:
    """One decoded image.

    Attributes
    ----------
    pixels : np.ndarray
        (H, W) or (H, W, 3) ``uint8``, normalised to 0..255.
    mode : str
        The source mode, as in :class:`ImageInfo`.
    """

    pixels: np.ndarray
    mode: str

    @property
    def channels(self) -> int:
        return 1 if self.pixels.ndim == 2 else 3


def has_dicom_magic(path: Path) -> bool:
    """Whether ``path`` holds ``DICM`` at byte 128 (the DICOM Part 10 preamble).

    Raises
    ------
    OSError
        If the file cannot be opened (callers decide how to report it).
    """
    with open(path, "rb") as handle:
        head = handle.read(132)
    return len(head) == 132 and head[128:132] == b"DICM"


def is_dicom(path: Path) -> bool:
    """Whether ``path`` is a DICOM file: a ``.dcm``/``.dicom`` name or the DICM magic."""
    path = Path(path)
    if path.suffix.lower() in _DICOM_EXTENSIONS:
        return True
    try:
        return has_dicom_magic(path)
    except OSError:
        return False


def normalise_to_uint8(
    values: np.ndarray, *, method: Normalisation = "percentile", percentiles: tuple[float, float] = (0.5, 99.5)
) -> np.ndarray:
    """Map any numeric array to ``uint8`` 0..255.

    Parameters
    ----------
    values : np.ndarray
        Any shape, any real dtype. NaN and -inf become the finite minimum, +inf the finite maximum.
    method : {"percentile", "minmax"}
        ``"percentile"`` clips to the given percentiles of the finite values first (robust to a
        few hot pixels); it falls back to min-max when the percentiles coincide.
    percentiles : tuple of float
        Lower and upper percentile for ``"percentile"``.

    Returns
    -------
    np.ndarray
        Same shape, ``uint8``. A constant input gives all zeros.

    Examples
    --------
    >>> normalise_to_uint8(np.array([0.0, 5.0, 10.0]), method="minmax").tolist()
    [0, 128, 255]
    """
    if method not in ("percentile", "minmax"):
        raise ValueError(f"method must be 'percentile' or 'minmax', got {method!r}")
    data = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(data)
    if not finite.any():
        return np.zeros(data.shape, dtype=np.uint8)
    low, high = float(data[finite].min()), float(data[finite].max())
    if not finite.all():
        data = np.where(np.isposinf(data), high, data)
        data = np.where(np.isfinite(data), data, low)
    if method == "percentile":
        p_low, p_high = np.percentile(data, percentiles)
        if p_high > p_low:
            low, high = float(p_low), float(p_high)
    if high <= low:
        return np.zeros(data.shape, dtype=np.uint8)
    scaled = (np.clip(data, low, high) - low) * (255.0 / (high - low))
    return np.rint(scaled).astype(np.uint8)


def probe_image(path: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageInfo:
    """Read only the header of an image file.

    Raises
    ------
    InputFileError
        If the file is empty, unreadable, not an image, multi-frame or over ``max_pixels``.
    """
    path = Path(path)
    _check_not_empty(path)
    if is_dicom(path):
        dataset = _read_dicom(path, pixels=False)
        info = _dicom_info(path, dataset)
        _check_pixels(path, info.height, info.width, max_pixels)
        return info
    with _open_pil(path, max_pixels=max_pixels) as image:
        mode = _target_mode(image)
        return ImageInfo(image.height, image.width, image.mode, 1 if mode in ("L", "F") else 3)


def read_image(
    path: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS, normalisation: Normalisation = "percentile"
) -> DecodedImage:
    """Decode one image file (PNG, JPEG, TIFF 8/16 bit, DICOM) to ``uint8``.

    8-bit images keep their values. 16-bit, 32-bit and float images are normalised with
    ``normalisation``. DICOM: Rescale Slope/Intercept (modality LUT) is applied, then the first
    VOI window (WindowCenter/WindowWidth) if present (else ``normalisation``), and MONOCHROME1 is
    inverted so that high values are bright. RGBA and LA drop alpha; a palette image becomes grey
    if its palette is grey, else RGB.

    Parameters
    ----------
    path : Path
        The file.
    max_pixels : int
        Files with more pixels (H * W) are refused before decoding (decompression-bomb guard).
    normalisation : {"percentile", "minmax"}
        How non-8-bit intensities are mapped to 0..255, see :func:`normalise_to_uint8`.

    Returns
    -------
    DecodedImage
        ``pixels`` (H, W) ``uint8`` for grey, (H, W, 3) ``uint8`` for colour.

    Raises
    ------
    InputFileError
        For an empty, unreadable, truncated, multi-frame, over-large or unsupported file.
    """
    path = Path(path)
    _check_not_empty(path)
    if is_dicom(path):
        return _read_dicom_image(path, max_pixels=max_pixels, normalisation=normalisation)
    try:
        with _open_pil(path, max_pixels=max_pixels) as image:
            if _is_deep_colour_tiff(image):  # PIL would keep only the high byte of each sample
                return _read_tiff_fallback(path, max_pixels=max_pixels, normalisation=normalisation)
            target = _target_mode(image)
            mode = image.mode
            pixels = _decode_pil(path, image, target)
    except InputFileError as error:
        if path.suffix.lower() in _TIFF_EXTENSIONS and "cannot identify" in str(error):
            return _read_tiff_fallback(path, max_pixels=max_pixels, normalisation=normalisation)
        raise
    if pixels.dtype != np.uint8:
        pixels = normalise_to_uint8(pixels, method=normalisation)
    return DecodedImage(np.ascontiguousarray(pixels), mode)


def read_mask(path: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode one mask file (PNG or TIFF) to its stored label values.

    Palette PNGs give their palette indices, 1-bit images give 0/1, grey images their grey
    values. A colour mask is accepted only when its channels are equal.

    Parameters
    ----------
    path : Path
        The file.
    max_pixels : int
        Decompression-bomb guard, as in :func:`read_image`.

    Returns
    -------
    np.ndarray
        (H, W) ``uint8``, or ``int32`` for 16-bit masks. Values are as stored (e.g. 0/255).

    Raises
    ------
    InputFileError
        For an unreadable or broken file, a colour mask or a float mask with fractional values.
    """
    path = Path(path)
    _check_not_empty(path)
    with _open_pil(path, max_pixels=max_pixels) as image:
        mode = image.mode
        labels = _decode_pil(path, image, mode)
    if labels.ndim == 3:
        colour = labels[..., :3] if labels.shape[-1] >= 3 else labels[..., :1]
        if not (colour == colour[..., :1]).all():
            raise InputFileError(
                f"{path.name}: colour mask ({mode}); save masks as label-index, palette or binary grey images"
            )
        labels = colour[..., 0]
    if labels.dtype.kind == "f":
        if not np.isfinite(labels).all() or (labels != np.round(labels)).any() or labels.min() < 0:
            raise InputFileError(f"{path.name}: float mask with non-integer values; save integer labels")
        labels = labels.astype(np.int32)
    if labels.dtype == bool:
        labels = labels.astype(np.uint8)
    if labels.dtype != np.uint8:
        if labels.min() < 0:
            raise InputFileError(f"{path.name}: mask has negative values; labels must be 0..K")
        labels = labels.astype(np.uint8 if labels.max() <= 255 else np.int32)
    return np.ascontiguousarray(labels)


def read_palette(path: Path) -> tuple[int, ...] | None:
    """The colours of a palette mask: flat (R, G, B) per index, 3 x 256 ints; None for any other file.

    Only the header is read. A file that cannot be opened gives None: masks that do not decode
    are reported where they are read (:func:`read_mask`).
    """
    try:
        with Image.open(path) as image:
            if image.mode != "P":
                return None
            palette = image.getpalette("RGB") or []
    except (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError):
        return None
    return tuple(palette[:768]) + (0,) * (768 - min(len(palette), 768))


# -- helpers -------------------------------------------------------------------------------------


def _check_not_empty(path: Path) -> None:
    try:
        size = path.stat().st_size
    except OSError as error:
        raise InputFileError(f"{path.name}: cannot read ({_os_reason(error)})") from error
    if size == 0:
        raise InputFileError(f"{path.name}: empty file (0 bytes)")


def _os_reason(error: OSError) -> str:
    if isinstance(error, PermissionError):
        return "permission denied; make it readable, e.g. chmod a+r"
    if isinstance(error, FileNotFoundError):
        return "file not found"
    return error.strerror or type(error).__name__


def _check_pixels(path: Path, height: int, width: int, max_pixels: int) -> None:
    if height * width > max_pixels:
        raise InputFileError(
            f"{path.name}: {height}x{width} = {height * width} pixels exceeds the limit of {max_pixels}"
            " (decompression-bomb guard); downsample it or raise max_pixels"
        )


class _PilOpener:
    """Context manager: open a PIL image with the pixel guard, closing file and image afterwards."""

    def __init__(self, path: Path, max_pixels: int) -> None:
        self._path = path
        self._max_pixels = max_pixels
        self._handle = None
        self._image: Image.Image | None = None

    def __enter__(self) -> Image.Image:
        path = self._path
        try:
            self._handle = open(path, "rb")
            with warnings.catch_warnings():
                # PIL warns (and above twice its limit raises) about huge images. Our own
                # max_pixels check below decides; the warning must not leak to the user.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                self._image = Image.open(self._handle)
        except Image.DecompressionBombError as error:
            self._close()
            raise InputFileError(f"{path.name}: refused by the decompression-bomb guard ({error})") from error
        except UnidentifiedImageError as error:
            self._close()
            raise InputFileError(f"{path.name}: cannot identify image file (corrupt or not an image)") from error
        except OSError as error:
            self._close()
            raise InputFileError(f"{path.name}: cannot read ({_os_reason(error)})") from error
        except _DECODE_ERRORS as error:
            self._close()
            raise InputFileError(f"{path.name}: cannot decode ({type(error).__name__}: {error})") from error
        try:
            _check_pixels(path, self._image.height, self._image.width, self._max_pixels)
            if getattr(self._image, "n_frames", 1) > 1:
                raise InputFileError(f"{path.name}: multi-page image; save one image per file")
        except InputFileError:
            self._close()
            raise
        return self._image

    def __exit__(self, *exc_info: object) -> None:
        self._close()

    def _close(self) -> None:
        if self._image is not None:
            self._image.close()
        if self._handle is not None:
            self._handle.close()


def _open_pil(path: Path, *, max_pixels: int) -> _PilOpener:
    return _PilOpener(path, max_pixels)


def _target_mode(image: Image.Image) -> str:
    """The PIL mode an image is decoded in: "L"/"F" (grey, kept as its own dtype) or "RGB"."""
    if image.mode in _GREY_MODES or image.mode.startswith("I;"):
        return "L" if image.mode in ("1", "L", "LA", "La") else "F"
    if image.mode == "P" or image.mode == "PA":
        palette = image.getpalette() or []
        triples = np.asarray(palette[: 3 * (len(palette) // 3)]).reshape(-1, 3)
        return "L" if triples.size and (triples == triples[:, :1]).all() else "RGB"
    return "RGB"


def _decode_pil(path: Path, image: Image.Image, target: str) -> np.ndarray:
    """Decode pixels. ``target`` "L"/"RGB" convert to 8 bit; "F" keeps the native integer/float values."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image.load()
            if target == image.mode or target == "F":
                if image.mode in ("LA", "La"):
                    return np.asarray(image.getchannel(0))
                return np.asarray(image)
            if target == "L":
                return np.asarray(image.convert("L"))
            return np.asarray(image.convert("RGB"))
    except Image.DecompressionBombError as error:
        raise InputFileError(f"{path.name}: refused by the decompression-bomb guard ({error})") from error
    except OSError as error:
        reason = _os_reason(error) if error.errno is not None else str(error)
        raise InputFileError(f"{path.name}: truncated or corrupt image ({reason})") from error
    except _DECODE_ERRORS as error:
        raise InputFileError(f"{path.name}: cannot decode ({type(error).__name__}: {error})") from error


def _is_deep_colour_tiff(image: Image.Image) -> bool:
    """A colour TIFF with more than 8 bits per sample, which PIL reduces to 8 bits by truncation."""
    if image.format != "TIFF" or image.mode not in ("RGB", "RGBA", "RGBX"):
        return False
    bits = getattr(image, "tag_v2", {}).get(258, (8,))
    bits = bits if isinstance(bits, tuple) else (bits,)
    return max(bits, default=8) > 8


def _read_tiff_fallback(path: Path, *, max_pixels: int, normalisation: Normalisation) -> DecodedImage:
    """TIFFs PIL cannot open or would truncate (e.g. 16-bit RGB) go through tifffile (a scikit-image dependency)."""
    try:
        import tifffile

        with tifffile.TiffFile(path) as tiff:
            if len(tiff.pages) > 1:
                raise InputFileError(f"{path.name}: multi-page TIFF; save one image per file")
            page = tiff.pages[0]
            height, width = int(page.shape[0]), int(page.shape[1])
            _check_pixels(path, height, width, max_pixels)
            pixels = page.asarray()
    except InputFileError:
        raise
    except (ImportError, *_DECODE_ERRORS) as error:
        raise InputFileError(f"{path.name}: cannot decode TIFF ({type(error).__name__}: {error})") from error
    if pixels.ndim == 3 and pixels.shape[-1] in (3, 4):
        pixels, mode = pixels[..., :3], f"RGB;{pixels.dtype.itemsize * 8}"
    elif pixels.ndim == 2:
        mode = f"L;{pixels.dtype.itemsize * 8}"
    else:
        raise InputFileError(f"{path.name}: unsupported TIFF layout {pixels.shape}")
    if pixels.dtype != np.uint8:
        pixels = normalise_to_uint8(pixels, method=normalisation)
    return DecodedImage(np.ascontiguousarray(pixels), mode)


# -- DICOM ---------------------------------------------------------------------------------------


def _read_dicom(path: Path, *, pixels: bool) -> FileDataset:
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    try:
        # pydicom warns on stderr about damaged files; the damage is reported as a skip reason instead.
        with open(path, "rb") as handle, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return dcmread(handle, stop_before_pixels=not pixels, force=path.suffix.lower() in _DICOM_EXTENSIONS)
    except OSError as error:
        raise InputFileError(f"{path.name}: cannot read ({_os_reason(error)})") from error
    except (InvalidDicomError, *_DECODE_ERRORS) as error:
        raise InputFileError(f"{path.name}: corrupt DICOM ({type(error).__name__}: {error})") from error


def _dicom_info(path: Path, dataset: FileDataset) -> ImageInfo:
    try:
        frames = int(dataset.get("NumberOfFrames", 1) or 1)
        rows, columns = int(dataset.Rows), int(dataset.Columns)
        samples = int(dataset.get("SamplesPerPixel", 1) or 1)
        photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    except (AttributeError, ValueError, TypeError, KeyError) as error:
        raise InputFileError(f"{path.name}: DICOM without a readable image header ({error})") from error
    if frames > 1:
        raise InputFileError(
            f"{path.name}: multi-frame DICOM ({frames} frames); 3-D volumes are not supported yet, export 2-D slices"
        )
    return ImageInfo(rows, columns, f"DICOM {photometric}", 1 if samples == 1 else 3)


def _first(value: object) -> float:
    """WindowCenter/WindowWidth may hold several values; the first is the default window."""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = list(value)[0]  # type: ignore[call-overload]
    return float(value)  # type: ignore[arg-type]


def _read_dicom_image(path: Path, *, max_pixels: int, normalisation: Normalisation) -> DecodedImage:
    from pydicom.pixels import apply_modality_lut

    dataset = _read_dicom(path, pixels=True)
    info = _dicom_info(path, dataset)
    _check_pixels(path, info.height, info.width, max_pixels)
    try:
        raw = dataset.pixel_array
    except _DECODE_ERRORS as error:
        reason = f"cannot decode DICOM pixel data ({type(error).__name__}: {error})"
        raise InputFileError(f"{path.name}: {reason}") from error
    if raw.ndim != (2 if info.channels == 1 else 3):
        raise InputFileError(f"{path.name}: unexpected DICOM pixel array shape {raw.shape}")
    if info.channels == 3:
        pixels = raw if raw.dtype == np.uint8 else normalise_to_uint8(raw, method=normalisation)
        return DecodedImage(np.ascontiguousarray(pixels[..., :3]), info.mode)
    try:
        values = np.asarray(apply_modality_lut(raw, dataset), dtype=np.float64)
    except _DECODE_ERRORS as error:
        raise InputFileError(f"{path.name}: invalid DICOM rescale / modality LUT ({error})") from error
    pixels = _apply_window(values, dataset)
    if pixels is None:
        pixels = normalise_to_uint8(values, method=normalisation)
    if info.mode == "DICOM MONOCHROME1":
        pixels = 255 - pixels
    return DecodedImage(np.ascontiguousarray(pixels), info.mode)


def _apply_window(values: np.ndarray, dataset: FileDataset) -> np.ndarray | None:
    """The DICOM linear VOI window (PS3.3 C.11.2.1.2.1) to 0..255, or None without a valid window."""
    if "WindowCenter" not in dataset or "WindowWidth" not in dataset:
        return None
    try:
        center, width = _first(dataset.WindowCenter), _first(dataset.WindowWidth)
    except (ValueError, TypeError, IndexError):
        return None
    if not (np.isfinite(center) and np.isfinite(width)) or width < 1:
        return None
    values = np.nan_to_num(values, nan=center - width, posinf=center + width, neginf=center - width)
    scaled = ((values - (center - 0.5)) / (width - 1) + 0.5) if width > 1 else (values > center - 0.5) * 1.0
    return np.rint(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)
