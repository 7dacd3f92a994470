"""COCO instances datasets: an images folder and an annotations JSON (polygons and RLE).

Layout::

    images/<file_name>                       the images named in the JSON
    annotations.json  (or annotations/<name>.json, or any single *.json beside images/)

Each category becomes one class with its own binary mask (multi-label, like layout B): the union
of the category's annotations in that image, decoded with pycocotools. Classes are ordered by
category id. Per-annotation problems (an image id that does not exist, an empty or
self-intersecting polygon, an unknown category) become one :class:`~maskaudit.dataset.Skipped`
line each and the annotation is left out; the rest of the dataset is scanned.
Shape key: K categories, H x W pixels of one image.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from ..dataset import DatasetIndex, Sample, Skipped, file_reason
from ..errors import DatasetError, InputFileError
from ..imageio import DEFAULT_MAX_PIXELS, read_image
from .base import DatasetSource, read_json

__all__ = ["find_annotation_file", "is_coco", "open_coco", "polygon_self_intersects"]

_REQUIRED_KEYS = ("images", "annotations", "categories")


def find_annotation_file(root: Path) -> Path | None:
    """The COCO JSON of ``root``: ``annotations.json``, else the only JSON in ``annotations/`` or in root."""
    if (root / "annotations.json").is_file():
        return root / "annotations.json"
    for folder in (root / "annotations", root):
        found = sorted(path for path in folder.glob("*.json") if path.is_file()) if folder.is_dir() else []
        if len(found) == 1:
            return found[0]
    return None


def is_coco(root: Path) -> bool:
    """Whether ``root`` holds images/ and a COCO annotations JSON and no masks/ folder."""
    return (root / "images").is_dir() and not (root / "masks").exists() and find_annotation_file(root) is not None


def open_coco(root: Path | str, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> DatasetSource:
    """The COCO instances dataset in ``root``.

    Raises
    ------
    DatasetError
        If the JSON is missing, invalid or lacks images/annotations/categories, or no image is usable.
    """
    root = Path(root).absolute()
    json_path = find_annotation_file(root)
    if json_path is None:
        raise DatasetError(f"{root} has no COCO annotations file; put it at {root / 'annotations.json'}")
    coco = _read_json(json_path)
    json_rel = json_path.relative_to(root)
    skipped: list[Skipped] = []
    classes, class_of = _categories(json_path, coco["categories"])
    images = _images(root, coco["images"], skipped)
    by_image: dict[int, list[dict]] = defaultdict(list)
    for annotation in coco["annotations"]:
        reason = _annotation_problem(annotation, images, class_of)
        if reason is not None:
            skipped.append(Skipped(f"{json_rel.as_posix()}#annotation {annotation.get('id', '?')}", reason))
        else:
            by_image[annotation["image_id"]].append(annotation)
    samples, annotations, ids = [], {}, {}
    seen: set[str] = set()
    for image_id, entry in sorted(images.items(), key=lambda item: item[1]["file_name"]):
        sample_id = Path(entry["file_name"]).with_suffix("").as_posix()
        if sample_id in seen:
            skipped.append(Skipped(f"images/{entry['file_name']}", f"two images are named {sample_id}.*; rename one"))
            continue
        seen.add(sample_id)
        samples.append(Sample(sample_id, Path("images") / entry["file_name"], (json_rel,)))
        annotations[sample_id] = (entry, tuple(by_image.get(image_id, ())))
        ids[sample_id] = tuple(int(item["id"]) for item in by_image.get(image_id, ()))
    if not samples:
        first = f" (e.g. {skipped[0].path}: {skipped[0].reason})" if skipped else ""
        raise DatasetError(f"no usable image in {root}{first}; the JSON's images must exist under images/")
    index = DatasetIndex(root=root, layout="B", classes=classes, samples=tuple(sorted(samples, key=lambda s: s.id)),
                         skipped=tuple(sorted(skipped, key=lambda item: item.path)), mask_suffix="")
    reader = _Reader(annotations, class_of, max_pixels)
    return DatasetSource(format="coco", index=index, reader=reader, annotation_ids=ids)


class _Reader:
    """``reader(index, sample) -> Pair``: the image, and one mask per category drawn from its annotations."""

    def __init__(self, annotations: dict[str, tuple[dict, tuple[dict, ...]]], class_of: dict[int, int],
                 max_pixels: int) -> None:
        self.annotations, self.class_of, self.max_pixels = annotations, class_of, max_pixels

    def __call__(self, index: DatasetIndex, sample: Sample):
        from pycocotools import mask as mask_utils

        from ..prepare import Pair

        try:
            decoded = read_image(index.root / sample.image, max_pixels=self.max_pixels)
        except InputFileError as error:
            raise InputFileError(file_reason(sample.image, error)) from error
        height, width = decoded.pixels.shape[:2]
        entry, annotations = self.annotations[sample.id]
        if (int(entry["height"]), int(entry["width"])) != (height, width):
            raise InputFileError(f"{sample.image.as_posix()}: image is {height}x{width} but the COCO file says"
                                 f" {entry['height']}x{entry['width']}")
        masks = np.zeros((len(index.classes), height, width), dtype=bool)
        for annotation in annotations:
            segmentation = annotation["segmentation"]
            if isinstance(segmentation, list):
                rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
            elif isinstance(segmentation.get("counts"), list):
                rle = mask_utils.frPyObjects(segmentation, height, width)
            else:
                rle = segmentation
            masks[self.class_of[annotation["category_id"]]] |= mask_utils.decode(rle).astype(bool)
        return Pair(decoded.pixels, masks, decoded.mode)


# -- JSON checks ---------------------------------------------------------------------------------


def _read_json(path: Path) -> dict:
    coco = read_json(path)
    if not isinstance(coco, dict) or any(not isinstance(coco.get(key), list) for key in _REQUIRED_KEYS):
        raise DatasetError(f"{path} is not a COCO instances file: it needs lists images, annotations, categories")
    return coco


def _categories(path: Path, categories: list) -> tuple[tuple[str, ...], dict[int, int]]:
    try:
        by_id = sorted((int(item["id"]), str(item["name"])) for item in categories)
    except (KeyError, TypeError, ValueError) as error:
        raise DatasetError(f"{path}: every category needs an integer id and a name") from error
    if not by_id:
        raise DatasetError(f"{path} lists no categories")
    names = [name for _, name in by_id]
    classes = tuple(name if names.count(name) == 1 else f"{name}_{category}" for category, name in by_id)
    return classes, {category: position for position, (category, _) in enumerate(by_id)}


def _images(root: Path, entries: list, skipped: list[Skipped]) -> dict[int, dict]:
    images: dict[int, dict] = {}
    for entry in entries:
        try:
            image_id, name = int(entry["id"]), str(entry["file_name"])
            int(entry["height"]), int(entry["width"])
        except (KeyError, TypeError, ValueError):
            skipped.append(Skipped(f"images/{entry.get('file_name', '?') if isinstance(entry, dict) else '?'}",
                                   "COCO image entry needs integer id, height, width and a file_name"))
            continue
        path = root / "images" / name
        if image_id in images:
            skipped.append(Skipped(f"images/{name}", f"image id {image_id} is used twice in the COCO file"))
        elif ".." in Path(name).parts or not path.is_file():
            skipped.append(Skipped(f"images/{name}", "listed in the COCO file but missing from images/"))
        else:
            images[image_id] = entry
    return images


def _annotation_problem(annotation: dict, images: dict[int, dict], class_of: dict[int, int]) -> str | None:
    """Why an annotation cannot be used, in one line, or None."""
    if not isinstance(annotation, dict) or "segmentation" not in annotation:
        return "annotation without a segmentation"
    if annotation.get("image_id") not in images:
        return f"refers to image id {annotation.get('image_id')!r}, which is not a usable image of the file"
    if annotation.get("category_id") not in class_of:
        return f"refers to category id {annotation.get('category_id')!r}, which is not in categories"
    segmentation = annotation["segmentation"]
    entry = images[annotation["image_id"]]
    if isinstance(segmentation, dict):
        size = segmentation.get("size")
        if "counts" not in segmentation or list(size or []) != [int(entry["height"]), int(entry["width"])]:
            return f"RLE size {size} does not match its image ({entry['height']}x{entry['width']})"
        return None
    if not isinstance(segmentation, list) or not segmentation:
        return "empty segmentation (no polygon)"
    for polygon in segmentation:
        if not isinstance(polygon, list) or len(polygon) < 6 or len(polygon) % 2:
            return "polygon with fewer than 3 points (or an odd number of coordinates)"
        points = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
        if polygon_self_intersects(points):
            return "self-intersecting polygon; redraw it so that its edges do not cross"
        if _area(points) == 0:
            return "polygon with zero area"
    return None


def _area(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def polygon_self_intersects(points: np.ndarray) -> bool:
    """Whether two non-adjacent edges of the closed polygon ``points`` (P, 2) cross or touch.

    O(P^2) over edge pairs, vectorised per edge; COCO polygons have tens to hundreds of points.
    """
    start = points
    end = np.roll(points, -1, axis=0)
    count = len(points)
    for i in range(count):
        others = np.arange(i + 2, count if i > 0 else count - 1)  # skip the edge itself and its neighbours
        if not len(others):
            continue
        if _segments_cross(start[i], end[i], start[others], end[others]).any():
            return True
    return False


def _segments_cross(p1: np.ndarray, p2: np.ndarray, q1: np.ndarray, q2: np.ndarray) -> np.ndarray:
    """(M,) whether segment p1-p2 properly crosses each segment q1[m]-q2[m]."""
    def orientation(a, b, c):
        return np.sign((b[..., 0] - a[..., 0]) * (c[..., 1] - a[..., 1]) - (b[..., 1] - a[..., 1]) * (c[..., 0] - a[..., 0]))

    d1, d2 = orientation(q1, q2, p1), orientation(q1, q2, p2)
    d3, d4 = orientation(p1, p2, q1), orientation(p1, p2, q2)
    return (d1 * d2 < 0) & (d3 * d4 < 0)
