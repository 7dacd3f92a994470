"""maskaudit.loader: the same batches in the same order from the main process and from workers."""

from __future__ import annotations

import pickle

import numpy as np
import torch

from maskaudit.loader import BatchRows, default_workers, iterate_batches
from maskaudit.train import epoch_batches


def _cached_arrays(tmp_path, n=21, size=16):
    rng = np.random.default_rng(3)
    images = np.lib.format.open_memmap(tmp_path / "images.npy", mode="w+", dtype=np.uint8, shape=(n, 1, size, size))
    masks = np.lib.format.open_memmap(tmp_path / "masks.npy", mode="w+", dtype=np.uint8, shape=(n, 2, size, size))
    images[:] = rng.integers(0, 256, images.shape)
    masks[:] = rng.integers(0, 2, masks.shape)
    images.flush(), masks.flush()
    return (np.load(tmp_path / "images.npy", mmap_mode="r"), np.load(tmp_path / "masks.npy", mmap_mode="r"))


def test_workers_yield_the_same_batches_as_the_main_process(tmp_path):
    images, masks = _cached_arrays(tmp_path)
    batches = epoch_batches(len(images), 8, seed=0, epoch=0)
    inline = list(iterate_batches(images, masks, batches, workers=0, device=torch.device("cpu")))
    background = list(iterate_batches(images, masks, batches, workers=2, device=torch.device("cpu")))
    assert len(inline) == len(background) == len(batches)
    for (rows_a, images_a, masks_a), (rows_b, images_b, masks_b), batch in zip(inline, background, batches):
        np.testing.assert_array_equal(rows_a, np.sort(batch))
        np.testing.assert_array_equal(rows_a, rows_b)
        assert torch.equal(images_a, images_b) and torch.equal(masks_a, masks_b)
        np.testing.assert_allclose(images_a.numpy(), images[rows_a] / 255.0, rtol=1e-6)
        assert images_a.dtype == masks_a.dtype == torch.float32


def test_a_pickled_batch_source_maps_the_cache_again_instead_of_copying_it(tmp_path):
    images, masks = _cached_arrays(tmp_path, n=64, size=32)
    source = BatchRows(images, masks, [np.arange(4)])
    payload = pickle.dumps(source)
    assert len(payload) < images.nbytes // 4  # file names travel, not the pixels
    copy = pickle.loads(payload)
    assert isinstance(copy.images, np.memmap)
    for left, right in zip(source[0], copy[0]):
        assert torch.equal(left, right)
    # plain in-memory arrays are pickled as they are
    plain = pickle.loads(pickle.dumps(BatchRows(np.asarray(images), np.asarray(masks), [np.arange(4)])))
    assert torch.equal(plain[0][1], source[0][1])


def test_default_workers_is_zero_on_cpu_and_half_the_cores_up_to_four_beside_a_gpu(monkeypatch):
    assert default_workers(torch.device("cpu")) == 0
    for cores, expected in [(1, 1), (2, 1), (6, 3), (32, 4)]:
        monkeypatch.setattr("maskaudit.loader.os.cpu_count", lambda cores=cores: cores)
        assert default_workers(torch.device("cuda")) == expected
