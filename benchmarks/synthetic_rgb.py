"""A synthetic one-class RGB dataset in layout A, so that benchmarks cover the other layout.

Each image is a coloured, textured background (three styles: histology-like pink with purple
objects, endoscopy-like red with pale objects, fluorescence-like dark with bright green
objects) with several objects of very different sizes: many tiny cells (radius 3-6 px at
128 px), a few medium ones (10-20 px) and sometimes one large blob (25-40 px). Objects are
irregular, textured, with soft edges, and do not touch each other, so every object is one
connected component of the mask. Sizes scale with ``size / 128``.

Layout A on disk::

    images/syn0000.png   RGB uint8
    masks/syn0000.png    grey uint8, 0 = background, 255 = object

Command line (from the repository root)::

    python -m benchmarks.synthetic_rgb /tmp/synthetic --n 200 --size 128 --seed 0
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage as ndi

from maskaudit.corruptions import random_blob

__all__ = ["STYLES", "make_synthetic_rgb", "render_sample"]

#: style -> (background RGB, object RGB)
STYLES: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "histology": ((232, 182, 205), (110, 60, 150)),
    "endoscopy": ((190, 80, 60), (240, 205, 150)),
    "fluorescence": ((18, 22, 38), (90, 230, 110)),
}

# (count range inclusive, radius range in px at 128 px)
_TIERS = (
    ((0, 1), (25.0, 40.0)),  # large blob
    ((1, 3), (10.0, 20.0)),  # medium
    ((4, 12), (3.0, 6.0)),  # tiny cells
)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Zero-mean, unit-std smooth noise."""
    n = ndi.gaussian_filter(rng.standard_normal(shape), sigma=sigma)
    return (n - n.mean()) / (n.std() + 1e-12)


def render_sample(rng: np.random.Generator, *, size: int = 128) -> tuple[np.ndarray, np.ndarray, int]:
    """One synthetic sample: image (size, size, 3) uint8, mask (size, size) bool, object count."""
    scale = size / 128.0
    style = list(STYLES)[int(rng.integers(0, len(STYLES)))]
    bg_rgb, obj_rgb = (np.array(c, float) for c in STYLES[style])
    bg_rgb = np.clip(bg_rgb * rng.uniform(0.85, 1.15, 3), 0, 255)
    obj_rgb = np.clip(obj_rgb * rng.uniform(0.85, 1.15, 3), 0, 255)

    # background: large-scale illumination, medium texture, fine grain
    illum = 1.0 + 0.12 * _smooth_noise(rng, (size, size), 24 * scale)[..., None]
    texture = 14.0 * _smooth_noise(rng, (size, size, 3), (3 * scale, 3 * scale, 0))
    image = bg_rgb * illum + texture

    mask = np.zeros((size, size), bool)
    occupied = np.zeros((size, size), bool)  # objects plus a 2 px gap
    count = 0
    for (lo, hi), (rmin, rmax) in _TIERS:
        for _ in range(int(rng.integers(lo, hi + 1))):
            for _attempt in range(40):
                r = rng.uniform(rmin, rmax) * scale
                reach = 1.3 * r
                if 2 * reach + 2 >= size:
                    r = (size - 3) / 2.6
                    reach = 1.3 * r
                cy = rng.uniform(reach, size - 1 - reach)
                cx = rng.uniform(reach, size - 1 - reach)
                blob = random_blob(rng, (cy, cx), r, (size, size))
                if (blob & occupied).any():
                    continue
                mask |= blob
                occupied |= ndi.binary_dilation(blob, iterations=2)
                count += 1
                break
    if count == 0:  # always at least one object
        blob = random_blob(rng, (size / 2, size / 2), 5 * scale, (size, size))
        mask |= blob
        count = 1

    # objects: textured colour, darker rim-to-centre shading, soft edge
    shade = ndi.distance_transform_edt(mask)
    shade = shade / (shade.max() + 1e-9)
    obj = obj_rgb * (0.85 + 0.25 * shade[..., None]) + 18.0 * _smooth_noise(
        rng, (size, size, 3), (1.5 * scale, 1.5 * scale, 0)
    )
    alpha = ndi.gaussian_filter(mask.astype(float), sigma=0.8 * max(scale, 0.5))[..., None]
    alpha *= rng.uniform(0.75, 0.95)  # objects never fully opaque: some background shows through
    image = image * (1 - alpha) + obj * alpha
    image += rng.normal(0.0, 4.0, image.shape)  # sensor noise
    return np.clip(image, 0, 255).round().astype(np.uint8), mask, count


def make_synthetic_rgb(
    dst_root: str | os.PathLike, *, n: int = 200, size: int = 128, seed: int = 0
) -> list[str]:
    """Write ``n`` synthetic samples to ``dst_root`` (layout A) and return their ids.

    ``dst_root`` must not exist or be empty. The dataset is built in a temporary sibling
    directory and renamed into place. Same ``seed``, same files (sample i uses the
    generator ``default_rng([seed, i])``, so the first samples do not depend on ``n``).

    Raises ``ValueError`` for a non-empty destination, ``n < 1`` or ``size < 32``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if size < 32:
        raise ValueError(f"size must be >= 32 px, got {size}")
    dst = Path(dst_root).resolve()
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise ValueError(f"destination {dst} exists and is not an empty directory")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.tmp-", dir=dst.parent))
    ids = [f"syn{i:04d}" for i in range(n)]
    try:
        (tmp / "images").mkdir()
        (tmp / "masks").mkdir()
        for i, sid in enumerate(ids):
            image, mask, _ = render_sample(np.random.default_rng([seed, i]), size=size)
            Image.fromarray(image).save(tmp / "images" / f"{sid}.png")
            Image.fromarray(mask.astype(np.uint8) * 255).save(tmp / "masks" / f"{sid}.png")
        if dst.exists():
            dst.rmdir()
        os.replace(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ids


def _main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Write a synthetic one-class RGB dataset (layout A).")
    p.add_argument("dst")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    ids = make_synthetic_rgb(a.dst, n=a.n, size=a.size, seed=a.seed)
    print(f"{len(ids)} samples -> {a.dst}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
