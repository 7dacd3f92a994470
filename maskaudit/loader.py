"""Mini-batches read from the prepared arrays, in the main process or in background workers.

Shape key: b batch, C image channels, K classes, S working resolution.

Workers only slice the memory-mapped cache and convert to float32; augmentation and everything
random stay in the training process, so the batches (and the run) are the same for any number
of workers. On a CPU the cores are better spent on the networks, so the default there is none.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from .pages import release_pages


class BatchRows(torch.utils.data.Dataset):
    """Item i is batch i: (rows (b,) int64 sorted, images (b, C, S, S) float32 in [0, 1], masks (b, K, S, S) float32)."""

    def __init__(self, images: np.ndarray, masks: np.ndarray, batches: Sequence[np.ndarray]):
        self.images, self.masks, self.batches = images, masks, [np.sort(batch) for batch in batches]

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, item: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rows = self.batches[item]
        images = np.asarray(self.images[rows], dtype=np.float32) / 255.0
        masks = np.asarray(self.masks[rows], dtype=np.float32)
        return torch.from_numpy(rows), torch.from_numpy(images), torch.from_numpy(masks)

    def __getstate__(self) -> dict:
        # A worker started by spawn or forkserver gets this object pickled: send the cache's file
        # names, not a copy of the arrays, and map the files again on the other side.
        return {**self.__dict__, "images": _portable(self.images), "masks": _portable(self.masks)}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, images=_reopen(state["images"]), masks=_reopen(state["masks"]))


def default_workers(device: torch.device) -> int:
    """Loader processes for ``device``: none on a CPU, up to 4 beside a GPU."""
    if device.type != "cuda":
        return 0
    return max(1, min(4, (os.cpu_count() or 2) // 2))


def iterate_batches(
    images: np.ndarray, masks: np.ndarray, batches: Sequence[np.ndarray], *, workers: int, device: torch.device
) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
    """Yield (rows, images, masks) for each batch in order, on ``device`` (pinned, asynchronous copies on CUDA)."""
    source = BatchRows(images, masks, batches)
    pin = device.type == "cuda"
    if workers > 0:
        batches_iter = torch.utils.data.DataLoader(source, batch_size=None, shuffle=False, num_workers=workers,
                                                   pin_memory=pin, prefetch_factor=2)
    else:
        batches_iter = (source[item] for item in range(len(source)))
    for rows, image_batch, mask_batch in batches_iter:
        if pin and not image_batch.is_pinned():
            image_batch, mask_batch = image_batch.pin_memory(), mask_batch.pin_memory()
        release_pages(images, masks)  # a pass over a large memory-mapped cache leaves none of it resident
        yield (rows.numpy(), image_batch.to(device, non_blocking=pin), mask_batch.to(device, non_blocking=pin))


def _portable(array: np.ndarray):
    """A memory map as (file name, dtype, shape, offset); any other array unchanged."""
    whole_file = (isinstance(array, np.memmap) and array.filename and array.flags.c_contiguous
                  and os.path.getsize(array.filename) - array.offset == array.nbytes)
    if whole_file:  # (a view of part of a map keeps the parent's offset, so only whole maps travel by name)
        return ("memmap", array.filename, array.dtype.str, array.shape, array.offset)
    return array


def _reopen(value):
    if isinstance(value, tuple) and value and value[0] == "memmap":
        _, filename, dtype, shape, offset = value
        return np.memmap(filename, dtype=np.dtype(dtype), mode="r", shape=shape, offset=offset)
    return value
