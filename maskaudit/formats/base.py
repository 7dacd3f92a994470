"""The one interface every dataset format implements: a :class:`DatasetSource`.

A format module finds the samples of a dataset directory (``find``) and knows how to decode one
sample into a :class:`~maskaudit.prepare.Pair` (``reader``). 2-D formats (folders of images, COCO)
give a :class:`~maskaudit.dataset.DatasetIndex` whose samples are images; volume formats (nnU-Net)
give their cases as samples and the volumes themselves in ``volumes``, to be cut into slices by
:mod:`maskaudit.prepare_volumes`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..dataset import DatasetIndex, Sample
from ..errors import DatasetError

if TYPE_CHECKING:
    from ..prepare import Pair
    from .nnunet import VolumeIndex

Reader = Callable[[DatasetIndex, Sample], "Pair"]


@dataclass(frozen=True)
class DatasetSource:
    """A dataset directory opened by one format.

    Attributes
    ----------
    format : str
        ``"folders"`` (layouts A and B), ``"coco"`` or ``"nnunet"``.
    index : DatasetIndex
        The samples (images; for volumes, one per case), classes and skipped files.
    reader : callable or None
        ``reader(index, sample) -> Pair`` decodes one 2-D sample; None for volume formats.
    volumes : VolumeIndex or None
        The cases of a volume dataset; None for 2-D formats.
    annotation_ids : mapping of str to tuple of int
        Per sample id, the source annotation ids its masks were drawn from (COCO); empty otherwise.
    """

    format: str
    index: DatasetIndex
    reader: Reader | None = None
    volumes: "VolumeIndex | None" = None
    annotation_ids: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def is_volume(self) -> bool:
        return self.volumes is not None


def read_json(path: Path) -> Any:
    """The JSON document in ``path`` (a UTF-8 BOM allowed); DatasetError with one line if it cannot be read."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as error:
        raise DatasetError(f"{path} is not valid JSON ({error.msg} at line {error.lineno})") from error
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"cannot read {path} ({error})") from error
