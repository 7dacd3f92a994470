"""Releasing the pages of the memory-mapped cache: the data stay, this process's resident set shrinks."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from maskaudit.pages import LazyColumn, _malloc_trim, read_chunks, release_pages, return_freed_memory, write_npz
from maskaudit.train import classes_present

pytestmark = pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux /proc/self/smaps")


def resident_kib(path: Path) -> int:
    """Resident KiB of this process's mappings of ``path``, from /proc/self/smaps."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if fields and "-" in fields[0] and len(fields) >= 5:  # a mapping's header line
            inside = fields[-1] == str(path)
        elif inside and fields[0] == "Rss:":
            total += int(fields[1])
    return total


@pytest.fixture
def cache(tmp_path):
    """A (512, 2, 128, 128) uint8 memory-mapped cache of 16 MiB, reopened read-only as a scan does."""
    path = tmp_path / "masks.npy"
    rng = np.random.default_rng(0)
    values = (rng.random((512, 2, 128, 128)) < 0.001).astype(np.uint8)
    values[::3] = 0  # every third mask empty
    written = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=values.shape)  # as the cache is
    written[:] = values
    written.flush()
    del written
    return path, values


def test_release_pages_drops_what_a_full_read_left_resident(cache):
    path, values = cache
    mapped = np.load(path, mmap_mode="r")
    assert int(np.asarray(mapped).sum()) == int(values.sum())  # touches every page
    assert resident_kib(path) > 12 * 1024
    release_pages(mapped[10:20])  # a view releases its whole map
    assert resident_kib(path) < 1024
    np.testing.assert_array_equal(mapped[100], values[100])  # the data are still there


def test_classes_present_reads_the_cache_without_keeping_it(cache):
    path, values = cache
    mapped = np.load(path, mmap_mode="r")
    present = classes_present(mapped, chunk=64)
    np.testing.assert_array_equal(present, values.reshape(512, 2, -1).any(axis=2))
    assert not present[::3].any() and present[1::3].any()
    assert resident_kib(path) < 1024


def test_read_chunks_yields_every_row_once_in_order(cache):
    path, values = cache
    mapped = np.load(path, mmap_mode="r")
    starts = []
    for start, rows in read_chunks(mapped, chunk=100):
        starts.append(start)
        np.testing.assert_array_equal(rows, values[start : start + 100])
    assert starts == [0, 100, 200, 300, 400, 500]


def test_write_npz_streams_a_memory_mapped_array_into_an_archive_numpy_reads(cache, tmp_path):
    path, values = cache
    mapped = np.load(path, mmap_mode="r")
    others = {"ids": np.asarray(["a", "bb", "ccc"]), "flags": np.array([True, False]), "empty": np.zeros((0, 3)),
              "column": np.arange(12.0).reshape(3, 4)[:, 1], "fortran": np.asfortranarray(np.arange(6).reshape(2, 3))}
    with open(tmp_path / "out.npz", "wb") as handle:
        write_npz(handle, {"masks": mapped, **others}, chunk=100)
    assert resident_kib(path) < 1024  # written chunk by chunk, each chunk's pages released
    loaded = np.load(tmp_path / "out.npz")
    np.testing.assert_array_equal(loaded["masks"], values)
    for name, array in others.items():
        assert loaded[name].dtype == array.dtype
        np.testing.assert_array_equal(loaded[name], array)


def test_write_npz_writes_a_lazy_column_chunk_by_chunk(tmp_path):
    """The ids of a volume's slices are made a chunk at a time, never held as one array."""
    asked = []

    def read(start, stop):
        asked.append((start, stop))
        return np.asarray([f"case/{row}" for row in range(start, stop)])

    with open(tmp_path / "out.npz", "wb") as handle:
        write_npz(handle, {"ids": LazyColumn(250, np.dtype("<U9"), read), "x": np.arange(3)}, chunk=100)
    loaded = np.load(tmp_path / "out.npz")
    assert loaded["ids"].tolist() == [f"case/{row}" for row in range(250)] and loaded["ids"].dtype == np.dtype("<U9")
    assert asked == [(0, 100), (100, 200), (200, 250)] and loaded["x"].tolist() == [0, 1, 2]


def test_release_pages_leaves_in_memory_arrays_alone():
    array = np.arange(10)
    release_pages(array, None)
    np.testing.assert_array_equal(array, np.arange(10))



def test_releasing_after_each_batch_keeps_scattered_reads_from_piling_up(cache):
    path, values = cache
    mapped = np.load(path, mmap_mode="r")
    rng = np.random.default_rng(1)
    highest = 0
    for _ in range(40):  # 40 batches of 8 random rows: unreleased, most of the 16 MiB would end up resident
        rows = np.sort(rng.choice(len(mapped), 8, replace=False))
        np.testing.assert_array_equal(np.asarray(mapped[rows]), values[rows])
        highest = max(highest, resident_kib(path))
        release_pages(mapped)
    assert highest < 2 * 1024 and resident_kib(path) < 1024


_FRAGMENTED_HEAP = """
import json
from pathlib import Path
from maskaudit.pages import return_freed_memory
def anonymous_kib():
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields["RssAnon"].split()[0])
blocks, survivors = [], []
for _ in range(2000):  # 2000 x 64 KiB from the heap, each followed by a small block that stays
    block = bytearray(64 * 1024)
    block[::4096] = bytes(16)  # touch every page: calloc'd fresh pages are not resident until written
    blocks.append(block)
    survivors.append(bytearray(64))
del blocks
before = anonymous_kib()
return_freed_memory()
print(json.dumps({"before": before, "after": anonymous_kib()}))
"""


@pytest.mark.skipif(_malloc_trim() is None, reason="needs glibc's malloc_trim")
def test_freed_heap_memory_goes_back_to_the_system():
    """Freed blocks held in place by small survivors stay resident until trimmed (a fresh interpreter,
    so that no earlier test has moved glibc's thresholds)."""
    completed = subprocess.run([sys.executable, "-c", _FRAGMENTED_HEAP], capture_output=True, text=True, check=True)
    resident = json.loads(completed.stdout)
    assert resident["after"] < resident["before"] - 64 * 1024  # most of the 125 MiB freed, now returned
