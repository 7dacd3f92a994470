"""maskaudit.imageio: one file in, one numpy array out, or InputFileError."""

from __future__ import annotations

import builtins
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maskaudit.errors import InputFileError
from maskaudit.imageio import is_dicom, normalise_to_uint8, probe_image, read_image, read_mask

RAMP16 = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000)  # 0 .. 55000


def test_8bit_grey_png_keeps_its_values(tmp_path, write_image):
    pixels = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5
    decoded = read_image(write_image(tmp_path / "a.png", pixels))
    assert decoded.mode == "L" and decoded.pixels.dtype == np.uint8
    np.testing.assert_array_equal(decoded.pixels, pixels)


def test_rgba_drops_alpha_and_la_becomes_grey(tmp_path, write_image):
    rgba = np.zeros((4, 5, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 10, 20, 30, 0
    decoded = read_image(write_image(tmp_path / "rgba.png", rgba))
    assert decoded.pixels.shape == (4, 5, 3) and decoded.mode == "RGBA"
    np.testing.assert_array_equal(decoded.pixels[0, 0], [10, 20, 30])
    la = Image.fromarray(np.full((4, 5), 77, dtype=np.uint8)).convert("LA")
    la.save(tmp_path / "la.png")
    grey = read_image(tmp_path / "la.png")
    assert grey.pixels.shape == (4, 5) and (grey.pixels == 77).all()
    assert probe_image(tmp_path / "la.png").channels == 1
    assert probe_image(tmp_path / "rgba.png").channels == 3


def test_jpeg_grey_and_rgb(tmp_path, write_image):
    grey = read_image(write_image(tmp_path / "g.jpg", np.full((8, 8), 100, dtype=np.uint8)))
    colour = read_image(write_image(tmp_path / "c.jpeg", np.full((8, 8, 3), 100, dtype=np.uint8)))
    assert grey.pixels.shape == (8, 8) and abs(int(grey.pixels.mean()) - 100) <= 2
    assert colour.pixels.shape == (8, 8, 3)


@pytest.mark.parametrize("name", ["ramp.png", "ramp.tif"])
def test_16bit_images_are_normalised_to_uint8(tmp_path, write_image, name):
    path = write_image(tmp_path / name, RAMP16)
    decoded = read_image(path, normalisation="minmax")
    assert decoded.mode.startswith("I;16") and decoded.pixels.dtype == np.uint8
    assert decoded.pixels[0, 0] == 0 and decoded.pixels[-1, -1] == 255
    assert (np.diff(decoded.pixels.ravel().astype(int)) > 0).all()


def test_percentile_normalisation_ignores_a_hot_pixel(tmp_path, write_image):
    pixels = np.tile(np.arange(100, dtype=np.uint16) * 10, (10, 1))
    pixels[0, 0] = 65535
    percentile = read_image(write_image(tmp_path / "hot.tif", pixels)).pixels
    minmax = read_image(tmp_path / "hot.tif", normalisation="minmax").pixels
    assert percentile[5, 50] > 100 > minmax[5, 50]


def test_16bit_rgb_tiff_through_tifffile(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    pixels = np.zeros((4, 6, 3), dtype=np.uint16)
    pixels[..., 0] = 60000
    tifffile.imwrite(tmp_path / "rgb16.tif", pixels, photometric="rgb")
    decoded = read_image(tmp_path / "rgb16.tif", normalisation="minmax")
    assert decoded.pixels.shape == (4, 6, 3)
    assert (decoded.pixels[..., 0] == 255).all() and (decoded.pixels[..., 1] == 0).all()


def test_float_nan_and_inf_are_replaced_safely():
    values = np.array([[np.nan, 0.0, 1.0], [2.0, np.inf, -np.inf]])
    out = normalise_to_uint8(values, method="minmax")
    assert out.tolist() == [[0, 0, 128], [255, 255, 0]]
    assert normalise_to_uint8(np.full((2, 2), np.nan)).tolist() == [[0, 0], [0, 0]]
    assert normalise_to_uint8(np.full((2, 2), 7.0)).max() == 0
    with pytest.raises(ValueError, match="percentile"):
        normalise_to_uint8(values, method="zscore")  # type: ignore[arg-type]


def test_float_tiff_with_nan(tmp_path):
    pixels = np.array([[np.nan, 0.0], [0.5, 1.0]], dtype=np.float32)
    Image.fromarray(pixels, mode="F").save(tmp_path / "f.tif")
    decoded = read_image(tmp_path / "f.tif", normalisation="minmax")
    assert decoded.pixels.tolist() == [[0, 0], [128, 255]]


def test_palette_masks_give_indices_and_grey_palette_images_are_grey(tmp_path):
    labels = np.array([[0, 1], [2, 3]], dtype=np.uint8)
    palette = Image.fromarray(labels, mode="P")
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 756)
    palette.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "p.png"), labels)
    assert read_image(tmp_path / "p.png").pixels.shape == (2, 2, 3)
    grey = Image.fromarray(labels, mode="P")
    grey.putpalette([value for index in range(256) for value in (index * 50 % 256,) * 3])
    grey.save(tmp_path / "grey_p.png")
    assert read_image(tmp_path / "grey_p.png").pixels.tolist() == [[0, 50], [100, 150]]


def test_masks_one_bit_sixteen_bit_and_colour(tmp_path, write_image):
    Image.fromarray(np.array([[0, 255]], dtype=np.uint8)).convert("1").save(tmp_path / "bit.png")
    assert read_mask(tmp_path / "bit.png").tolist() == [[0, 1]]
    assert read_mask(write_image(tmp_path / "m16.png", np.array([[0, 3]], dtype=np.uint16))).tolist() == [[0, 3]]
    grey_rgb = np.stack([np.array([[0, 2]], dtype=np.uint8)] * 3, axis=-1)
    assert read_mask(write_image(tmp_path / "grey_rgb.png", grey_rgb)).tolist() == [[0, 2]]
    colour = np.zeros((1, 2, 3), dtype=np.uint8)
    colour[0, 1] = (255, 0, 0)
    with pytest.raises(InputFileError, match="colour mask"):
        read_mask(write_image(tmp_path / "colour.png", colour))


# -- DICOM --------------------------------------------------------------------------------------


def test_dicom_rescale_then_voi_window(tmp_path, write_dicom):
    raw = np.array([[0, 50], [100, 150]])  # rescaled: -100, 0, 100, 200
    path = write_dicom(tmp_path / "w.dcm", raw, slope=2, intercept=-100, window=(50, 201))
    decoded = read_image(path)
    # DICOM linear window: ((x - (c - 0.5)) / (w - 1) + 0.5) clipped to [0, 1]
    assert decoded.pixels.tolist() == [[0, 64], [192, 255]]
    assert decoded.mode == "DICOM MONOCHROME2"


def test_dicom_without_window_is_normalised(tmp_path, write_dicom):
    path = write_dicom(tmp_path / "n.dcm", np.array([[1000, 2000], [3000, 4000]]), slope=1, intercept=-1024)
    assert read_image(path, normalisation="minmax").pixels.tolist() == [[0, 85], [170, 255]]


def test_dicom_monochrome1_is_inverted(tmp_path, write_dicom):
    path = write_dicom(tmp_path / "m1.dcm", np.array([[0, 100], [200, 300]]), photometric="MONOCHROME1")
    decoded = read_image(path, normalisation="minmax")
    assert decoded.mode == "DICOM MONOCHROME1"
    assert decoded.pixels.tolist() == [[255, 170], [85, 0]]


def test_dicom_found_by_magic_without_extension(tmp_path, write_dicom):
    path = write_dicom(tmp_path / "1.2.840.5", np.array([[0, 10]]))
    assert is_dicom(path)
    assert read_image(path).pixels.tolist() == [[0, 255]]
    info = probe_image(path)
    assert (info.height, info.width, info.channels) == (1, 2, 1)


def test_multiframe_dicom_is_refused(tmp_path, write_dicom):
    path = write_dicom(tmp_path / "mf.dcm", np.zeros((2, 3, 3)), frames=2)
    with pytest.raises(InputFileError, match="multi-frame DICOM .*not supported yet"):
        read_image(path)


def test_corrupt_and_truncated_dicom(tmp_path, write_dicom):
    good = write_dicom(tmp_path / "good.dcm", np.arange(64).reshape(8, 8))
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(good.read_bytes()[:-40])
    with pytest.raises(InputFileError, match="truncated.dcm"):
        read_image(truncated)
    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(b"this is not a dicom file at all" * 10)
    with pytest.raises(InputFileError, match="garbage.dcm"):
        read_image(garbage)


# -- bad files ----------------------------------------------------------------------------------


def test_zero_byte_truncated_and_non_image_files(tmp_path, write_image):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(InputFileError, match="empty file"):
        read_image(tmp_path / "empty.png")
    noise = np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)
    data = write_image(tmp_path / "full.png", noise).read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputFileError, match="cut.png: truncated or corrupt"):
        read_image(tmp_path / "cut.png")
    with pytest.raises(InputFileError, match="cut.png: truncated or corrupt"):
        read_mask(tmp_path / "cut.png")
    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(InputFileError, match="cannot identify"):
        read_image(tmp_path / "text.png")


def test_pixel_limit(tmp_path, write_image):
    path = write_image(tmp_path / "big.png", np.zeros((100, 100), dtype=np.uint8))
    with pytest.raises(InputFileError, match="10000 pixels exceeds the limit of 5000"):
        read_image(path, max_pixels=5000)
    with pytest.raises(InputFileError, match="exceeds the limit"):
        read_mask(path, max_pixels=5000)
    with pytest.raises(InputFileError, match="exceeds the limit"):
        probe_image(path, max_pixels=5000)
    assert read_image(path, max_pixels=10000).pixels.shape == (100, 100)


def test_pil_decompression_bomb_error_and_warning_are_caught(tmp_path, write_image, monkeypatch):
    path = write_image(tmp_path / "big.png", np.zeros((100, 100), dtype=np.uint8))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 10000 > 2 * 1000: PIL raises
    with pytest.raises(InputFileError, match="decompression-bomb"):
        read_image(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 6000)  # 6000 < 10000 < 12000: PIL warns
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_image(path).pixels.shape == (100, 100)


def test_permission_denied(tmp_path, write_image, monkeypatch):
    path = write_image(tmp_path / "locked.png", np.zeros((4, 4), dtype=np.uint8))
    real_open = builtins.open

    def guarded_open(file, *args, **kwargs):
        if Path(file) == path:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)
    with pytest.raises(InputFileError, match="locked.png: cannot read .permission denied"):
        read_image(path)
    with pytest.raises(InputFileError, match="permission denied"):
        read_mask(path)
