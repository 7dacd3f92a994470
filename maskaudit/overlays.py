"""Pictures for the HTML report: contour thumbnails, disagreement maps and translucent mask overlays.

Pure functions on numpy arrays; nothing here touches files. Shapes: K classes, H x W pixels.
Images are ``(H, W, 3) uint8``, masks ``(K, H, W) bool``; every function returns a new array.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw
from skimage.measure import find_contours

# Okabe-Ito (without black) then Paul Tol's muted scheme: distinguishable with the common
# colour-vision deficiencies and visible on grey medical images. Cycled beyond 14 classes.
CLASS_PALETTE: tuple[str, ...] = (
    "#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7",
    "#88CCEE", "#CC6677", "#DDCC77", "#44AA99", "#AA4499", "#999933", "#882255",
)
# Paul Tol's bright scheme for clusters on the feature map.
CLUSTER_PALETTE: tuple[str, ...] = (
    "#4477AA", "#EE6677", "#228833", "#CCBB44", "#66CCEE", "#AA3377", "#BBBBBB",
    "#332288", "#117733", "#999933", "#CC6677", "#882255",
)
# Disagreement map: pixels only in the given mask, only in the prediction, or in both with different classes.
GIVEN_ONLY = "#EE7733"
PREDICTED_ONLY = "#33BBEE"
CLASS_DIFFERS = "#EE3377"
# Void / ignore pixels (no class, not background): light grey diagonal hatch, never disagreement.
VOID_HATCH = "#DDDDDD"


def class_colour(k: int) -> str:
    """Hex colour of class ``k`` (0-based)."""
    return CLASS_PALETTE[k % len(CLASS_PALETTE)]


def cluster_colour(c: int) -> str:
    """Hex colour of cluster ``c``; negative labels (noise) are grey."""
    return "#888888" if c < 0 else CLUSTER_PALETTE[c % len(CLUSTER_PALETTE)]


def hex_to_rgb(colour: str) -> tuple[int, int, int]:
    c = colour.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


def fit_size(height: int, width: int, max_side: int | None) -> tuple[int, int]:
    """(h, w) scaled down so the longer side is at most ``max_side``; never scaled up."""
    if max_side is None or max(height, width) <= max_side:
        return height, width
    scale = max_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Any grey/RGB/RGBA image, any numeric dtype -> ``(H, W, 3) uint8`` (min-max scaled if not uint8)."""
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[2] not in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # channels-first by mistake
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[..., :3]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] != 3):
        raise ValueError(f"expected an image of shape (H, W, 3) or (H, W), got {arr.shape}")
    if arr.dtype != np.uint8:
        arr = arr.astype(np.float64)
        finite = np.isfinite(arr)
        lo = float(arr[finite].min()) if finite.any() else 0.0
        hi = float(arr[finite].max()) if finite.any() else 1.0
        arr = np.where(finite, (arr - lo) / (hi - lo if hi > lo else 1.0), 0.0)
        arr = np.clip(np.round(arr * 255.0), 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    return np.ascontiguousarray(arr)


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(H, W, 3) uint8`` -> ``(h, w, 3) uint8`` with an antialiasing filter."""
    h, w = size
    if image.shape[:2] == (h, w):
        return image.copy()
    return np.asarray(Image.fromarray(image).resize((w, h), Image.Resampling.LANCZOS))


def mask_coverage(masks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(K, H, W) bool`` -> ``(K, h, w) float`` in [0, 1]: the fraction of each output pixel covered."""
    h, w = size
    masks = np.asarray(masks, dtype=bool)
    if masks.shape[1:] == (h, w):
        return masks.astype(np.float32)
    out = np.empty((masks.shape[0], h, w), dtype=np.float32)
    for k, m in enumerate(masks):
        small = Image.fromarray(m.astype(np.uint8) * 255).resize((w, h), Image.Resampling.BOX)
        out[k] = np.asarray(small, dtype=np.float32) / 255.0
    return out


def resize_masks(masks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(K, H, W) bool`` -> ``(K, h, w) bool`` by area coverage >= 1/2."""
    return mask_coverage(masks, size) >= 0.5


def _contours(coverage: np.ndarray) -> list[np.ndarray]:
    """Closed iso-0.5 contours of one coverage map, as (M, 2) arrays of (row, col) pixel centres."""
    if not (coverage >= 0.5).any():
        return []
    padded = np.pad(coverage, 1)  # closes contours that touch the border
    return [c - 1.0 for c in find_contours(padded, 0.5) if len(c) >= 2]


def _draw_polyline(draw: ImageDraw.ImageDraw, contour: np.ndarray, scale: float, colour, width: int,
                   dash: float | None) -> None:
    pts = (contour[:, ::-1] + 0.5) * scale  # (x, y) at the drawing scale
    if dash is None:
        draw.line([tuple(p) for p in pts], fill=colour, width=width, joint="curve")
        return
    seg = np.diff(pts, axis=0)
    lengths = np.hypot(seg[:, 0], seg[:, 1])
    travelled = np.concatenate([[0.0], np.cumsum(lengths)])
    on = (travelled[:-1] // dash) % 2 == 0
    run: list[tuple[float, float]] = []
    for i in range(len(seg)):
        if on[i]:
            if not run:
                run.append(tuple(pts[i]))
            run.append(tuple(pts[i + 1]))
        elif run:
            draw.line(run, fill=colour, width=width)
            run = []
    if run:
        draw.line(run, fill=colour, width=width)


def _lighter(rgb: tuple[int, int, int], amount: float = 0.45) -> tuple[int, int, int]:
    return tuple(int(round(c + (255 - c) * amount)) for c in rgb)  # type: ignore[return-value]


def contour_thumbnail(image: np.ndarray, given: np.ndarray, predicted: np.ndarray, colours: list[str], *,
                      max_side: int = 160) -> np.ndarray:
    """Image with each class's given contour (solid) and predicted contour (dashed, lighter).

    image (H, W, 3) uint8; given, predicted (K, H, W) bool; colours K hex strings.
    Returns (h, w, 3) uint8 with max(h, w) <= max_side. Lines are drawn at 3x and downsampled (antialiased).
    """
    h, w = fit_size(*image.shape[:2], max_side)
    ss = 3
    big = Image.fromarray(resize_image(image, (h * ss, w * ss)))
    draw = ImageDraw.Draw(big)
    cov_given = mask_coverage(given, (h * 2, w * 2))  # contours at 2x: smooth yet cheap
    cov_pred = mask_coverage(predicted, (h * 2, w * 2))
    scale = ss / 2.0
    for k in range(cov_given.shape[0]):
        rgb = hex_to_rgb(colours[k])
        for c in _contours(cov_pred[k]):
            _draw_polyline(draw, c, scale, (20, 20, 20), 5, dash=9.0)
            _draw_polyline(draw, c, scale, _lighter(rgb), 3, dash=9.0)
        for c in _contours(cov_given[k]):
            _draw_polyline(draw, c, scale, rgb, 4, dash=None)
    return np.asarray(big.resize((w, h), Image.Resampling.LANCZOS))


def disagreement_map(given: np.ndarray, predicted: np.ndarray, *, void: np.ndarray | None = None) -> np.ndarray:
    """``(H, W) uint8`` code per pixel: 0 agree, 1 given only, 2 predicted only, 3 both but different
    class, 4 void (``void`` (H, W) bool: whatever is predicted there is never disagreement)."""
    given = np.asarray(given, dtype=bool)
    predicted = np.asarray(predicted, dtype=bool)
    given_only = (given & ~predicted).any(axis=0)
    pred_only = (predicted & ~given).any(axis=0)
    code = np.zeros(given.shape[1:], dtype=np.uint8)
    code[given_only] = 1
    code[pred_only] = 2
    code[given_only & pred_only] = 3
    if void is not None:
        code[np.asarray(void, dtype=bool)] = 4
    return code


def hatch(shape: tuple[int, int], *, period: int = 4) -> np.ndarray:
    """``(H, W) bool`` diagonal stripes: half of every ``period`` pixels along each diagonal."""
    rows, cols = np.indices(shape)
    return (rows + cols) % period < period // 2


def disagreement_thumbnail(image: np.ndarray, given: np.ndarray, predicted: np.ndarray, *,
                           void: np.ndarray | None = None, max_side: int = 160) -> np.ndarray:
    """Dimmed grey image; pixels where given XOR predicted coloured by kind (see ``disagreement_map``),
    void pixels (``void`` (H, W) bool) hatched.

    Agreement (inside both masks) is shown as a faint light tint so the structure stays readable.
    """
    h, w = fit_size(*image.shape[:2], max_side)
    small = resize_image(image, (h, w)).astype(np.float32)
    grey = small.mean(axis=2, keepdims=True)
    out = np.repeat(grey * 0.45 + 10.0, 3, axis=2)
    g = resize_masks(given, (h, w))
    p = resize_masks(predicted, (h, w))
    both = (g & p).any(axis=0)
    out[both] = out[both] * 0.6 + 255.0 * 0.4 * np.array([0.85, 0.85, 0.9], dtype=np.float32)
    v = resize_masks(void[None], (h, w))[0] if void is not None else None
    code = disagreement_map(g, p, void=v)
    for value, colour in ((1, GIVEN_ONLY), (2, PREDICTED_ONLY), (3, CLASS_DIFFERS)):
        out[code == value] = np.array(hex_to_rgb(colour), dtype=np.float32)
    out[(code == 4) & hatch((h, w))] = np.array(hex_to_rgb(VOID_HATCH), dtype=np.float32)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def inner_edge(mask: np.ndarray, width: int = 1) -> np.ndarray:
    """``(H, W) bool`` -> pixels of ``mask`` within ``width`` px (4-connected) of its outside."""
    core = np.asarray(mask, dtype=bool)
    for _ in range(width):
        eroded = core.copy()
        eroded[1:] &= core[:-1]
        eroded[:-1] &= core[1:]
        eroded[:, 1:] &= core[:, :-1]
        eroded[:, :-1] &= core[:, 1:]
        core = eroded
    return mask & ~core


def filled_overlay(masks: np.ndarray, colours: list[str], *, fill_alpha: int = 110,
                   void: np.ndarray | None = None) -> np.ndarray:
    """``(K, H, W) bool`` -> ``(H, W, 4) uint8``: translucent class fill with an opaque outline.

    The outline is 1 px, 2 px on pictures larger than 600 px. Classes are painted in order,
    so where layout-B classes overlap the later class shows. Void pixels (``void`` (H, W) bool)
    are hatched.
    """
    masks = np.asarray(masks, dtype=bool)
    out = np.zeros(masks.shape[1:] + (4,), dtype=np.uint8)
    if void is not None:
        out[np.asarray(void, dtype=bool) & hatch(masks.shape[1:])] = (*hex_to_rgb(VOID_HATCH), 200)
    width = 2 if max(masks.shape[1:]) > 600 else 1
    for k, m in enumerate(masks):
        if m.any():
            out[m] = (*hex_to_rgb(colours[k]), fill_alpha)
    for k, m in enumerate(masks):
        if m.any():
            out[inner_edge(m, width)] = (*hex_to_rgb(colours[k]), 255)
    return out


def encode_png(array: np.ndarray, *, compress_level: int = 3) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def encode_jpeg(array: np.ndarray, *, quality: int = 88) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).convert("RGB").save(buf, format="JPEG", quality=quality, subsampling=0)
    return buf.getvalue()
