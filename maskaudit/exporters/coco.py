"""COCO instances JSON of the suggested masks, for CVAT's "COCO 1.0" import and other COCO tools.

One image entry per sample (``file_name`` relative to the dataset root), one category per class
and one annotation per class with pixels: ``segmentation`` is compressed RLE from pycocotools
(``iscrowd: 0``), and ``attributes`` carry maskaudit's ``quality_score``, ``issue_type``, ``rank``
and sample id (CVAT keeps attributes its labels declare).
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .. import __version__
from ..atomic import atomic_write_text
from ..errors import ExportError
from .samples import ExportSample


class CocoExporter:
    """Write a COCO JSON file.

    Raises
    ------
    ExportError
        If pycocotools is not installed.
    """

    def __init__(self) -> None:
        try:
            from pycocotools import mask as mask_utils
        except ImportError as error:
            raise ExportError(
                f"--format coco needs pycocotools ({error}); install it with: pip install 'maskaudit[coco]'"
            ) from error
        self._mask_utils = mask_utils

    def outputs(self, out: Path) -> tuple[Path, ...]:
        return (out,)

    def write(self, out: Path, samples: Iterable[ExportSample], *, classes: tuple[str, ...]) -> int:
        """Write the suggested masks of ``samples`` to ``out``; return the number of images."""
        images: list[dict] = []
        annotations: list[dict] = []
        for image_id, sample in enumerate(samples, start=1):
            images.append({"id": image_id, "file_name": sample.image, "width": sample.width, "height": sample.height})
            for k, mask in enumerate(sample.suggested):
                if mask.any():
                    annotations.append(self._annotation(len(annotations) + 1, image_id, k + 1, mask, sample))
        payload = {
            "info": {"description": "maskaudit suggested masks", "version": __version__,
                     "date_created": _dt.date.today().isoformat()},
            "licenses": [],
            "categories": [{"id": k + 1, "name": name, "supercategory": ""} for k, name in enumerate(classes)],
            "images": images,
            "annotations": annotations,
        }
        atomic_write_text(out, json.dumps(payload) + "\n")
        return len(images)

    def _annotation(self, annotation_id: int, image_id: int, category_id: int, mask: np.ndarray,
                    sample: ExportSample) -> dict:
        """One annotation of a (H, W) bool mask with pixels."""
        rle = self._mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))
        return {
            "id": annotation_id,
            "image_id": image_id,
            "category_id": category_id,
            "segmentation": {"size": [int(value) for value in rle["size"]], "counts": rle["counts"].decode("ascii")},
            "area": float(self._mask_utils.area(rle)),
            "bbox": [float(value) for value in self._mask_utils.toBbox(rle)],
            "iscrowd": 0,
            "attributes": {"quality_score": sample.quality_score, "issue_type": sample.issue_type,
                           "rank": sample.rank, "sample_id": sample.id, "suspect": sample.suspect},
        }
