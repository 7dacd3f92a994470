"""Make a corrupted copy of a segmentation dataset, with the truth kept outside its images/masks.

Both maskaudit layouts are read and written:

* layout A: ``images/ID.ext`` + ``masks/ID<suffix>.ext`` (label image; 0 = background, each other
  value one class; a 0/255 or 0/1 mask is one class)
* layout B: ``images/ID.ext`` + ``masks/<class>/ID<suffix>.ext`` (0 = outside, > 0 inside)

Images and the masks of clean samples are copied byte for byte (real files, no symlinks:
maskaudit refuses links that leave the dataset root). Corrupted masks are re-encoded with the
source's values (layout B: 0/255 or the source's foreground value; layout A: the source's
label values; where corrupted classes overlap in layout A the later class wins). The dataset
is built in a temporary sibling directory and renamed into place, so a failed run leaves
nothing behind; the source directory is only ever read.

The truth file (default ``DST/truth.csv``, next to ``images/`` and ``masks/``, never inside
them) has one row per sample of the copy: ``id,corrupted,kind,detail``.

Command line (from the repository root)::

    python -m benchmarks.make_corrupted ../shared/datasets/jsrt /tmp/jsrt_noisy \\
        --fraction 0.5 --kinds erode_dilate_5_13 --seed 0 --split train
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from skimage.transform import resize

from maskaudit.corruptions import CORRUPTIONS, corrupt_dataset, plan_corruptions

__all__ = ["LoadedDataset", "SourceDataset", "empty_as_shipped", "load_dataset", "make_corrupted", "read_truth",
           "scan_source", "without"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


@dataclass(frozen=True)
class SourceDataset:
    root: Path
    layout: str  # "A" or "B"
    classes: tuple[str, ...]  # layout B: sub-directory names (sorted); layout A: filled by label values
    images: dict[str, Path]  # id -> image path (absolute)
    masks: dict[str, tuple[Path, ...]]  # id -> mask paths (absolute); layout B: one per class


def _files_by_stem(folder: Path, suffix: str) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."):
            stem = p.stem
            if suffix:
                if not stem.endswith(suffix):
                    continue
                stem = stem[: -len(suffix)]
            out.setdefault(stem, p)
    return out


def scan_source(root: str | os.PathLike, *, mask_suffix: str = "") -> SourceDataset:
    """Find the image/mask pairs of a layout-A or layout-B dataset (only pairs complete in
    every class are kept). Raises ``ValueError`` if the directory is not such a dataset."""
    root = Path(root).resolve()
    img_dir, mask_dir = root / "images", root / "masks"
    if not img_dir.is_dir() or not mask_dir.is_dir():
        raise ValueError(f"{root} needs images/ and masks/ sub-directories")
    images = _files_by_stem(img_dir, "")
    class_dirs = sorted(p for p in mask_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if class_dirs:
        layout = "B"
        classes = tuple(p.name for p in class_dirs)
        per_class = [_files_by_stem(p, mask_suffix) for p in class_dirs]
        masks = {
            i: tuple(pc[i] for pc in per_class)
            for i in images
            if all(i in pc for pc in per_class)
        }
    else:
        layout = "A"
        classes = ()
        found = _files_by_stem(mask_dir, mask_suffix)
        masks = {i: (found[i],) for i in images if i in found}
    images = {i: p for i, p in images.items() if i in masks}
    if not images:
        raise ValueError(f"{root}: no image/mask pairs found (layout {layout})")
    return SourceDataset(root, layout, classes, images, masks)


def _read_gray(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        arr = np.array(im)
    if arr.ndim == 3:
        arr = arr[..., 0]
    return arr


def _label_values(src: SourceDataset) -> list[int]:
    values: set[int] = set()
    for (p,) in src.masks.values():
        values.update(int(v) for v in np.unique(_read_gray(p)))
    values.discard(0)
    return sorted(values)


def _read_masks(src: SourceDataset, sample_id: str, values: Sequence[int]) -> np.ndarray:
    """(K, H, W) bool masks of one sample."""
    if src.layout == "B":
        return np.stack([_read_gray(p) > 0 for p in src.masks[sample_id]])
    label = _read_gray(src.masks[sample_id][0])
    return np.stack([label == v for v in values])


def _donor(src: SourceDataset, sample_id: str, eligible: Sequence[str], values: Sequence[int],
           rng: np.random.Generator) -> np.ndarray:
    """Another sample's non-empty masks, resized (nearest) to ``sample_id``'s size: a mixed-up file."""
    own = _read_masks(src, sample_id, values)
    others = [i for i in eligible if i != sample_id]
    other = _read_masks(src, others[int(rng.integers(0, len(others)))], values)
    if other.shape != own.shape:
        other = resize(other, own.shape, order=0, preserve_range=True, anti_aliasing=False).astype(bool)
    return other


def _encode_png_like(arr: np.ndarray, path: Path) -> bytes:
    buf = io.BytesIO()
    fmt = {".png": "PNG", ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP"}.get(path.suffix.lower(), "PNG")
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def _check_dirs(src: Path, dst: Path, overwrite: bool) -> None:
    if dst == src or src in dst.parents or dst in src.parents:
        raise ValueError(f"destination {dst} must lie outside the source {src} (and not contain it)")
    if dst.exists():
        if not dst.is_dir():
            raise ValueError(f"destination {dst} exists and is not a directory")
        if any(dst.iterdir()):
            if not overwrite:
                raise ValueError(f"destination {dst} is not empty; pass overwrite=True to replace it")
            if not (dst / "truth.csv").is_file() and not (dst / "images").is_dir():
                raise ValueError(f"refusing to overwrite {dst}: it does not look like a dataset made here")


def make_corrupted(
    src_root: str | os.PathLike,
    dst_root: str | os.PathLike,
    *,
    fraction: float,
    kinds: Sequence[str] = tuple(CORRUPTIONS),
    seed: int = 0,
    ids: Iterable[str] | None = None,
    mask_suffix: str = "",
    truth_path: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> dict[str, tuple[bool, str | None]]:
    """Copy a dataset to ``dst_root`` with the masks of ``fraction`` of its samples corrupted.

    Parameters
    ----------
    src_root, dst_root : path
        Source dataset (read only) and destination (must not exist, be empty, or, with
        ``overwrite=True``, be an earlier output of this function). Neither may contain the other.
    fraction : float in [0, 1]
        ``round(fraction * N)`` samples are corrupted (N after ``ids`` filtering).
    kinds : names from :data:`benchmarks.corruptions.CORRUPTIONS` (or ``EXTRA_CORRUPTIONS``)
        Dealt out evenly over the corrupted samples (counts differ by at most one).
    seed : int
        Same seed, same source and ids -> same output, byte for byte.
    ids : iterable of str, optional
        Only these samples are copied (e.g. the train split); the copy is a smaller dataset.
    mask_suffix : str
        Mask files are ``ID<mask_suffix>.ext``.
    truth_path : path, optional
        Where to write the truth CSV; default ``dst_root/truth.csv``. Must not be inside
        ``dst_root/images`` or ``dst_root/masks``.

    Returns
    -------
    ``{id: (corrupted, kind)}``, the format ``detection_metrics.detection_report`` takes.

    Raises
    ------
    ValueError
        Bad directories, unknown ids or kinds, ``swap`` on a one-class dataset, or a sample a
        corruption cannot be applied to (the message names it).
    """
    src = Path(src_root).resolve()
    dst = Path(dst_root).resolve()
    _check_dirs(src, dst, overwrite)
    truth_file = Path(truth_path).resolve() if truth_path is not None else dst / "truth.csv"
    for sub in ("images", "masks"):
        if truth_file == dst / sub or (dst / sub) in truth_file.parents:
            raise ValueError(f"the truth file must not lie inside {dst / sub}")
    if src in truth_file.parents:
        raise ValueError(f"the truth file must not lie inside the source {src}")

    source = scan_source(src, mask_suffix=mask_suffix)
    all_ids = sorted(source.images)
    if ids is not None:
        wanted = sorted(set(ids))
        unknown = [i for i in wanted if i not in source.images]
        if unknown:
            raise ValueError(f"{len(unknown)} ids are not in {src}, e.g. {unknown[:3]}")
        all_ids = wanted
    values: list[int] = []
    classes = source.classes
    if source.layout == "A":
        values = _label_values(source)
        if not values:
            raise ValueError(f"{src}: every mask is empty")
        classes = tuple(f"class{v}" for v in values) if len(values) > 1 else ("foreground",)
    if len(classes) < 2 and "swap" in kinds:
        raise ValueError("'swap' needs at least two classes; this dataset has one")
    eligible = [i for i in all_ids if _read_masks(source, i, values).any()]  # an empty mask cannot be shifted
    plan = plan_corruptions(all_ids, fraction=fraction, kinds=list(kinds), seed=seed, eligible=eligible)

    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.tmp-", dir=dst.parent))
    try:
        (tmp / "images").mkdir()
        if source.layout == "B":
            for c in classes:
                (tmp / "masks" / c).mkdir(parents=True)
        else:
            (tmp / "masks").mkdir()

        def rel_mask(p: Path) -> Path:
            return p.relative_to(src / "masks")

        to_read = ((i, _read_masks(source, i, values)) for i in all_ids if plan[i] is not None)
        corrupted = {s.id: s for s in corrupt_dataset(to_read, plan, seed=seed, classes=classes,
                                                      donor=lambda i, rng: _donor(source, i, eligible, values, rng))}
        rows = []
        for i in all_ids:
            img = source.images[i]
            shutil.copyfile(img, tmp / "images" / img.name)
            s = corrupted.get(i)
            if s is None:
                for p in source.masks[i]:
                    shutil.copyfile(p, tmp / "masks" / rel_mask(p))
                rows.append((i, 0, "", ""))
                continue
            if source.layout == "B":
                for k, p in enumerate(source.masks[i]):
                    fg = int(_read_gray(p).max()) or 255
                    arr = (s.masks[k] * fg).astype(np.uint8)
                    (tmp / "masks" / rel_mask(p)).write_bytes(_encode_png_like(arr, p))
            else:
                p = source.masks[i][0]
                dtype = np.uint16 if max(values) > 255 else np.uint8
                label = np.zeros(s.masks.shape[1:], dtype)
                for k, v in enumerate(values):
                    label[s.masks[k]] = v
                (tmp / "masks" / rel_mask(p)).write_bytes(_encode_png_like(label, p))
            rows.append((i, 1, s.kind, s.detail))

        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["id", "corrupted", "kind", "detail"])
        w.writerows(rows)
        if truth_file.parent == dst:
            (tmp / truth_file.name).write_text(buf.getvalue())
        if dst.exists():
            shutil.rmtree(dst)
        os.replace(tmp, dst)
        if truth_file.parent != dst:
            truth_file.parent.mkdir(parents=True, exist_ok=True)
            part = truth_file.with_name(truth_file.name + ".part")
            part.write_text(buf.getvalue())
            os.replace(part, truth_file)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {i: (plan[i] is not None, plan[i]) for i in all_ids}


def read_truth(path: str | os.PathLike) -> dict[str, tuple[bool, str | None]]:
    """Read a truth CSV written by :func:`make_corrupted` -> ``{id: (corrupted, kind)}``."""
    with open(path, newline="") as f:
        return {
            r["id"]: (r["corrupted"] == "1", r["kind"] or None) for r in csv.DictReader(f)
        }


#: A dataset whose masks are at least this share non-empty treats its empty ones as wrong as shipped.
MOSTLY_PRESENT = 0.9


def empty_as_shipped(copy: str | os.PathLike, truth: Mapping[str, tuple[bool, str | None]]) -> set[str]:
    """Ids of the uncorrupted samples of ``copy`` whose mask is empty, in a dataset whose uncorrupted
    masks are at least MOSTLY_PRESENT non-empty (DDTI: one image per nodule, yet 7 masks empty as
    shipped); empty otherwise, where empty masks are normal. Such a mask is wrong, not clean:
    detection reports can leave it out of both groups (``without``)."""
    source = scan_source(copy)
    clean = [i for i, (corrupted, _) in truth.items() if not corrupted and i in source.masks]
    # any non-zero value is a label (layout A) and any non-zero pixel an object (layout B): one read per mask
    empty = {i for i in clean if not any(_read_gray(path).any() for path in source.masks[i])}
    return empty if clean and len(clean) - len(empty) >= MOSTLY_PRESENT * len(clean) else set()


def without(truth: Mapping[str, tuple[bool, str | None]], ids: set[str]) -> dict[str, tuple[bool, str | None]]:
    """``truth`` without ``ids``."""
    return {i: label for i, label in truth.items() if i not in ids}


@dataclass
class LoadedDataset:
    ids: list[str]
    classes: tuple[str, ...]
    layout: str
    images: np.ndarray  # (N, C, H, W) uint8
    masks: np.ndarray  # (N, K, H, W) uint8 {0, 1}


def load_dataset(
    root: str | os.PathLike,
    *,
    size: int | None = None,
    ids: Iterable[str] | None = None,
    mask_suffix: str = "",
) -> LoadedDataset:
    """Load a layout-A/B dataset into arrays for benchmarks (resized to ``size`` x ``size`` if given).

    A small stand-in for maskaudit's ``prepare`` so benchmarks can run without it: images are
    grey (C = 1) if every image is single-channel, else RGB (C = 3); 16-bit images are scaled
    by their maximum. Resizing: images bilinear with anti-aliasing, masks nearest neighbour.
    """
    from skimage.transform import resize

    source = scan_source(root, mask_suffix=mask_suffix)
    sel = sorted(source.images) if ids is None else sorted(set(ids))
    values = _label_values(source) if source.layout == "A" else []
    classes = source.classes or (
        tuple(f"class{v}" for v in values) if len(values) > 1 else ("foreground",)
    )
    imgs, msks = [], []
    for i in sel:
        with Image.open(source.images[i]) as im:
            a = np.array(im)
        if a.dtype != np.uint8:
            a = (a.astype(np.float64) / max(1.0, float(a.max())) * 255.0).round().astype(np.uint8)
        a = a[..., None] if a.ndim == 2 else a[..., :3]
        m = _read_masks(source, i, values)
        if size is not None and a.shape[:2] != (size, size):
            a = resize(a, (size, size), order=1, anti_aliasing=True, preserve_range=True)
            a = a.round().astype(np.uint8)
            m = resize(m, (m.shape[0], size, size), order=0, anti_aliasing=False, preserve_range=True) > 0.5
        imgs.append(a.transpose(2, 0, 1))
        msks.append(m.astype(np.uint8))
    c = 3 if any(x.shape[0] == 3 for x in imgs) else 1
    imgs = [np.repeat(x, 3, axis=0) if x.shape[0] != c else x for x in imgs]
    return LoadedDataset(sel, tuple(classes), source.layout, np.stack(imgs), np.stack(msks))


def _main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--fraction", type=float, required=True)
    p.add_argument("--kinds", default=",".join(CORRUPTIONS), help="comma-separated kinds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", help="copy only ids of this split in SRC/split.csv (id,split)")
    p.add_argument("--mask-suffix", default="")
    p.add_argument("--truth", help="truth CSV path (default DST/truth.csv)")
    p.add_argument("--overwrite", action="store_true")
    a = p.parse_args(argv)
    ids = None
    if a.split:
        with open(Path(a.src) / "split.csv", newline="") as f:
            ids = [r["id"] for r in csv.DictReader(f) if r["split"] == a.split]
    try:
        truth = make_corrupted(
            a.src, a.dst, fraction=a.fraction, kinds=[k for k in a.kinds.split(",") if k],
            seed=a.seed, ids=ids, mask_suffix=a.mask_suffix, truth_path=a.truth,
            overwrite=a.overwrite,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    bad = sum(c for c, _ in truth.values())
    print(f"{len(truth)} samples, {bad} corrupted -> {a.dst}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
