"""Dataset formats: one module per format, each opening a directory as a :class:`DatasetSource`.

==========  ===============================================================  ====================
format      directory holds                                                  module
==========  ===============================================================  ====================
folders     ``images/`` + ``masks/`` (layout A) or ``masks/<class>/`` (B)     :mod:`.folders`
coco        ``images/`` + a COCO instances JSON, no ``masks/``               :mod:`.coco`
nnunet      ``dataset.json`` + ``imagesTr/`` + ``labelsTr/`` (NIfTI)         :mod:`.nnunet`
==========  ===============================================================  ====================
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DatasetError
from ..labels import AUTO
from .base import DatasetSource
from .coco import is_coco, open_coco
from .folders import open_folders
from .nnunet import is_nnunet, open_nnunet

__all__ = ["DatasetSource", "FORMATS", "detect_format", "open_dataset"]

FORMATS = ("folders", "coco", "nnunet")


def detect_format(root: Path | str) -> str:
    """The format of the dataset directory ``root``: ``"nnunet"``, ``"coco"`` or ``"folders"``.

    ``"folders"`` is the fallback, so that its own checks explain what is missing.
    """
    root = Path(root)
    if root.is_dir() and is_nnunet(root):
        return "nnunet"
    if root.is_dir() and is_coco(root):
        return "coco"
    return "folders"


def open_dataset(root: Path | str, *, mask_suffix: str | None = None, ignore_value: int | None | str = AUTO
                 ) -> DatasetSource:
    """Detect the format of ``root`` and open it. ``ignore_value`` (the void label value, None or
    ``"auto"``) applies to folders of label-index masks; nnU-Net and COCO labels declare their classes.

    Raises
    ------
    DatasetError
        If the directory cannot be used, or ``mask_suffix`` is given for a format without mask files.
    """
    root = Path(root)
    found = detect_format(root)
    if found == "folders":
        return open_folders(root, mask_suffix=mask_suffix, ignore_value=ignore_value)
    if mask_suffix is not None:
        raise DatasetError(f"--mask-suffix applies to folders of masks, but {root} is a {found} dataset")
    return open_nnunet(root) if found == "nnunet" else open_coco(root)
