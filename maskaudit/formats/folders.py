"""Folders of 2-D images and masks (layouts A and B), found by :func:`maskaudit.dataset.find_dataset`."""

from __future__ import annotations

from pathlib import Path

from ..dataset import find_dataset
from ..labels import AUTO
from .base import DatasetSource


def open_folders(root: Path, *, mask_suffix: str | None = None, ignore_value: int | None | str = AUTO
                 ) -> DatasetSource:
    """The images/ + masks/ dataset in ``root`` (raises DatasetError like ``find_dataset``)."""
    from ..prepare import read_pair

    index = find_dataset(root, mask_suffix=mask_suffix, ignore_value=ignore_value)
    return DatasetSource(format="folders", index=index, reader=read_pair)
