"""Label Studio tasks: the given mask as an annotation, the suggested correction as a prediction.

Writes ``FILE`` (a JSON list of tasks, one per sample, for Label Studio's import) and the
labeling configuration ``<FILE stem>.label_config.xml`` beside it. Masks are brush regions,
``value.format: rle``, encoded with label-studio-sdk's brush converter (the optional extra
``maskaudit[labelstudio]``). Each class with pixels becomes one region labelled with its name.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

import numpy as np

from .. import __version__
from ..atomic import atomic_write_text
from ..errors import ExportError
from ..overlays import class_colour
from .samples import ExportSample

FROM_NAME = "label"   # the BrushLabels tag
TO_NAME = "image"     # the Image tag, reading data.image
# Label Studio serves local files under this path when LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true.
LOCAL_FILES_PREFIX = "/data/local-files/?d="


def config_path(out: Path) -> Path:
    """The labeling configuration written beside ``out``: ``tasks.json`` -> ``tasks.label_config.xml``."""
    return out.with_name(f"{out.stem}.label_config.xml")


def labeling_config(classes: tuple[str, ...]) -> str:
    """Label Studio's XML: an image with one brush label per class, in the report's class colours."""
    labels = "\n".join(f"    <Label value={quoteattr(name)} background={quoteattr(class_colour(k))}/>"
                       for k, name in enumerate(classes))
    return (f'<View>\n  <Image name="{TO_NAME}" value="$image" zoom="true"/>\n'
            f'  <BrushLabels name="{FROM_NAME}" toName="{TO_NAME}">\n{labels}\n  </BrushLabels>\n</View>\n')


class LabelStudioExporter:
    """Write Label Studio tasks.

    Parameters
    ----------
    dataset_root : Path
        Absolute dataset directory; with no ``image_prefix`` images are addressed as
        ``/data/local-files/?d=<absolute path without its leading />`` (Label Studio's local file
        serving with ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=/``).
    image_prefix : str or None
        Put before each image's path relative to the dataset root instead, e.g. ``https://host/data/``.

    Raises
    ------
    ExportError
        If label-studio-sdk is not installed.
    """

    def __init__(self, *, dataset_root: Path, image_prefix: str | None = None) -> None:
        try:
            from label_studio_sdk.converter.brush import mask2rle
        except ImportError as error:
            raise ExportError(
                f"--format labelstudio needs label-studio-sdk ({error}); install it with: pip install 'maskaudit[labelstudio]'"
            ) from error
        self._mask2rle = mask2rle
        self._dataset_root = Path(dataset_root)
        self._image_prefix = image_prefix

    def outputs(self, out: Path) -> tuple[Path, ...]:
        return (out, config_path(out))

    def write(self, out: Path, samples: Iterable[ExportSample], *, classes: tuple[str, ...]) -> int:
        """Write the tasks to ``out`` and the configuration beside it; return the number of tasks."""
        tasks = [self.task(sample, classes) for sample in samples]
        atomic_write_text(config_path(out), labeling_config(classes))
        atomic_write_text(out, json.dumps(tasks) + "\n")
        return len(tasks)

    def task(self, sample: ExportSample, classes: tuple[str, ...]) -> dict:
        """One task: ``data`` (image URL and maskaudit's scores), the given annotation, the suggested prediction."""
        return {
            "data": {
                TO_NAME: self.image_url(sample.image),
                "maskaudit_id": sample.id,
                "rank": sample.rank,
                "quality_score": sample.quality_score,
                "issue_type": sample.issue_type,
            },
            "annotations": [{"result": self._regions(sample.given, classes, "given")}],
            "predictions": [{
                "model_version": f"maskaudit {__version__}",
                "score": sample.quality_score,
                "result": self._regions(sample.suggested, classes, "suggested"),
            }],
        }

    def image_url(self, relative: str) -> str:
        if self._image_prefix is not None:
            return self._image_prefix + quote(relative)
        return LOCAL_FILES_PREFIX + quote((self._dataset_root / relative).as_posix().lstrip("/"))

    def _regions(self, masks: np.ndarray, classes: tuple[str, ...], kind: str) -> list[dict]:
        """One brush region per class with pixels; masks (K, H, W) bool."""
        height, width = masks.shape[1:]
        return [
            {
                "id": f"{kind}-{k}",
                "from_name": FROM_NAME,
                "to_name": TO_NAME,
                "type": "brushlabels",
                "original_width": int(width),
                "original_height": int(height),
                "image_rotation": 0,
                "value": {"format": "rle", "rle": self._mask2rle(mask.astype(np.uint8) * 255),
                          "brushlabels": [classes[k]]},
            }
            for k, mask in enumerate(masks)
            if mask.any()
        ]
