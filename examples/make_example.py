"""Generate a small synthetic chest-X-ray-like dataset (layout B) with known bad masks.

    python examples/make_example.py OUT_DIR [--n 60] [--bad-fraction 0.25] [--seed 0] [--force]

OUT_DIR gets ``images/<id>.png`` (128 x 128 grey: smooth noise texture, vignetting, two dark
"lungs" and a brighter "heart" that overlaps the left lung a little), ``masks/left_lung/``,
``masks/right_lung/``, ``masks/heart/`` (0/255 PNGs) and ``truth.csv`` with the columns
``id,corrupted,corruption,detail``: which masks were deliberately damaged (dilated or eroded by
4-8 px, one structure deleted, or a spurious blob added) and how. Same seed, same files.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

__all__ = ["CLASSES", "CORRUPTIONS", "make_example"]

CLASSES = ("left_lung", "right_lung", "heart")
CORRUPTIONS = ("dilated", "eroded", "deleted", "spurious")
_SIZE = 128


def make_example(
    out_dir: Path | str, *, n: int = 60, bad_fraction: float = 0.25, seed: int = 0, force: bool = False
) -> Path:
    """Write the example dataset to ``out_dir`` and return its path.

    Parameters
    ----------
    out_dir : Path or str
        Target directory; created if missing.
    n : int
        Number of images.
    bad_fraction : float
        Fraction of images (rounded) whose masks are deliberately damaged, in [0, 1].
    seed : int
        Seed of the ``numpy.random.Generator``; the output depends on nothing else.
    force : bool
        Write into a non-empty ``out_dir``, replacing its ``images/``, ``masks/`` and ``truth.csv``.

    Returns
    -------
    Path
        ``out_dir``.

    Raises
    ------
    ValueError
        If ``n < 1`` or ``bad_fraction`` is outside [0, 1].
    FileExistsError
        If ``out_dir`` is a file, or a non-empty directory and ``force`` is False. (A builtin,
        so that the script runs without maskaudit installed.)
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if not 0.0 <= bad_fraction <= 1.0:
        raise ValueError(f"bad_fraction must be in [0, 1], got {bad_fraction}")
    out_dir = Path(out_dir)
    _check_out_dir(out_dir, force=force)
    rng = np.random.default_rng(seed)
    bad = set(rng.choice(n, size=round(n * bad_fraction), replace=False).tolist())
    yy, xx = np.mgrid[0:_SIZE, 0:_SIZE].astype(np.float64) / (_SIZE - 1)

    for name in ("images", *(f"masks/{cls}" for cls in CLASSES)):
        (out_dir / name).mkdir(parents=True, exist_ok=True)
    rows = []
    for number in range(n):
        sample_id = f"case{number + 1:03d}"
        masks = _anatomy(rng, yy, xx)
        image = _render(rng, masks, yy, xx)
        corruption, detail = "none", ""
        if number in bad:
            corruption = str(rng.choice(CORRUPTIONS))
            masks, detail = _corrupt(rng, masks, corruption, yy, xx)
        Image.fromarray(image).save(out_dir / "images" / f"{sample_id}.png")
        for cls, mask in zip(CLASSES, masks):
            Image.fromarray(mask.astype(np.uint8) * 255).save(out_dir / "masks" / cls / f"{sample_id}.png")
        rows.append((sample_id, int(number in bad), corruption, detail))
    with open(out_dir / "truth.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(("id", "corrupted", "corruption", "detail"))
        writer.writerows(rows)
    return out_dir


def _check_out_dir(out_dir: Path, *, force: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} is a file; pass a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not force:
            raise FileExistsError(f"{out_dir} is not empty; pass --force to replace its images/, masks/ and truth.csv")
        for name in ("images", "masks"):
            shutil.rmtree(out_dir / name, ignore_errors=True)
        (out_dir / "truth.csv").unlink(missing_ok=True)


def _blob(
    rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float
) -> np.ndarray:
    """(H, W) bool ellipse-like region whose radius wobbles with a few random harmonics."""
    angle = np.arctan2((yy - cy) / ry, (xx - cx) / rx)
    radius = np.hypot((yy - cy) / ry, (xx - cx) / rx)
    wobble = np.ones_like(angle)
    for harmonic in (2, 3, 5):
        wobble += rng.uniform(0.02, 0.07) * np.sin(harmonic * angle + rng.uniform(0, 2 * np.pi))
    return radius <= wobble


def _anatomy(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """(3, H, W) bool: left lung (image right), right lung (image left), heart."""
    shift_y, shift_x = rng.normal(0, 0.03, size=2)
    scale = rng.uniform(0.88, 1.1)
    right = _blob(rng, yy, xx, 0.48 + shift_y, 0.30 + shift_x, 0.30 * scale, 0.13 * scale)
    left = _blob(rng, yy, xx, 0.50 + shift_y, 0.70 + shift_x, 0.28 * scale, 0.12 * scale)
    heart = _blob(rng, yy, xx, 0.66 + shift_y, 0.57 + shift_x + rng.normal(0, 0.015),
                  0.12 * scale * rng.uniform(0.9, 1.1), 0.12 * scale * rng.uniform(0.9, 1.1))
    return np.stack([left, right, heart])


def _render(rng: np.random.Generator, masks: np.ndarray, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """(H, W) uint8 radiograph-like picture of the anatomy."""
    texture = ndimage.gaussian_filter(rng.normal(0, 1, (_SIZE, _SIZE)), 3.0)
    texture /= texture.std() + 1e-9
    fine = ndimage.gaussian_filter(rng.normal(0, 1, (_SIZE, _SIZE)), 1.0)
    body = 0.62 + 0.05 * texture + 0.02 * fine
    lungs = ndimage.gaussian_filter((masks[0] | masks[1]).astype(np.float64), 1.5)
    heart = ndimage.gaussian_filter(masks[2].astype(np.float64), 1.5)
    body = body - 0.32 * lungs + 0.22 * heart
    vignette = 1.0 - 0.45 * ((yy - 0.5) ** 2 + (xx - 0.5) ** 2) / 0.5
    picture = np.clip(body * vignette + rng.normal(0, 0.01, body.shape), 0, 1)
    return np.rint(picture * 255).astype(np.uint8)


def _corrupt(
    rng: np.random.Generator, masks: np.ndarray, corruption: str, yy: np.ndarray, xx: np.ndarray
) -> tuple[np.ndarray, str]:
    """Damage one structure of (3, H, W) bool ``masks``; returns the new masks and a detail string."""
    masks = masks.copy()
    k = int(rng.integers(len(CLASSES)))
    if corruption in ("dilated", "eroded"):
        pixels = int(rng.integers(4, 9))
        disk = np.hypot(*np.mgrid[-pixels : pixels + 1, -pixels : pixels + 1]) <= pixels
        operation = ndimage.binary_dilation if corruption == "dilated" else ndimage.binary_erosion
        masks[k] = operation(masks[k], structure=disk)
        return masks, f"{CLASSES[k]} {pixels}px"
    if corruption == "deleted":
        masks[k] = False
        return masks, CLASSES[k]
    cy, cx = rng.uniform(0.15, 0.85, size=2)
    masks[k] |= _blob(rng, yy, xx, cy, cx, rng.uniform(0.05, 0.09), rng.uniform(0.05, 0.09))
    return masks, f"{CLASSES[k]} at y={cy:.2f} x={cx:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    parser.add_argument("--n", type=int, default=60, help="number of images (default 60)")
    parser.add_argument("--bad-fraction", type=float, default=0.25, help="fraction of damaged masks (default 0.25)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--force", action="store_true", help="replace images/, masks/ and truth.csv in a non-empty OUT_DIR"
    )
    args = parser.parse_args(argv)
    try:
        make_example(args.out_dir, n=args.n, bad_fraction=args.bad_fraction, seed=args.seed, force=args.force)
    except (FileExistsError, ValueError) as error:
        print(f"make_example: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.n} samples to {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
