"""Shared fixtures: tiny datasets built in tmp_path, DICOM writers, directory hashing, a Label Studio server."""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


# -- ingestion fixtures (dataset, imageio, prepare, inspect) ------------------------------------


@pytest.fixture
def write_image() -> Callable[..., Path]:
    """``write_image(path, array, **save_kwargs)``: save a (H, W[, C]) array with PIL, creating parents."""

    def write(path: Path, array: np.ndarray, **save_kwargs: object) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.asarray(array)).save(path, **save_kwargs)
        return path

    return write


def _label_mask(height: int, width: int, num_classes: int, shift: int) -> np.ndarray:
    """(H, W) uint8 label image: vertical stripes 0, 1, ..., K (shifted per sample)."""
    columns = (np.arange(width) + shift) % width
    labels = (columns * (num_classes + 1) // width).astype(np.uint8)
    return np.broadcast_to(labels, (height, width)).copy()


@pytest.fixture
def make_layout_a(tmp_path: Path, write_image: Callable[..., Path]) -> Callable[..., Path]:
    """``make_layout_a(n=3, *, num_classes=2, size=(16, 16), suffix="", name="layout_a")`` -> root.

    Image i is a grey gradient; its mask holds labels 0..K in vertical stripes.
    """

    def make(
        n: int = 3, *, num_classes: int = 2, size: tuple[int, int] = (16, 16), suffix: str = "", name: str = "layout_a"
    ) -> Path:
        root = tmp_path / name
        height, width = size
        for number in range(n):
            stem = f"case{number:02d}"
            image = (np.add.outer(np.arange(height), np.arange(width)) * 4 + number).astype(np.uint8)
            write_image(root / "images" / f"{stem}.png", image)
            write_image(root / "masks" / f"{stem}{suffix}.png", _label_mask(height, width, num_classes, number))
        return root

    return make


@pytest.fixture
def make_layout_b(tmp_path: Path, write_image: Callable[..., Path]) -> Callable[..., Path]:
    """``make_layout_b(n=3, *, classes=("heart", "lung"), size=(16, 16), suffix="", name="layout_b")`` -> root.

    Class k of every sample is a 0/255 block of rows starting at 2 * k; blocks of
    neighbouring classes overlap (multi-label).
    """

    def make(
        n: int = 3,
        *,
        classes: tuple[str, ...] = ("heart", "lung"),
        size: tuple[int, int] = (16, 16),
        suffix: str = "",
        name: str = "layout_b",
    ) -> Path:
        root = tmp_path / name
        height, width = size
        for number in range(n):
            stem = f"case{number:02d}"
            image = np.full((height, width), 40 + 10 * number, dtype=np.uint8)
            image[:, : width // 2] = 200
            write_image(root / "images" / f"{stem}.png", image)
            for k, cls in enumerate(classes):
                mask = np.zeros((height, width), dtype=np.uint8)
                mask[2 * k : 2 * k + height // 2, 1:-1] = 255
                write_image(root / "masks" / cls / f"{stem}{suffix}.png", mask)
        return root

    return make


@pytest.fixture
def write_dicom() -> Callable[..., Path]:
    """``write_dicom(path, pixels, *, photometric="MONOCHROME2", slope=None, intercept=None,
    window=None, frames=1)``: a minimal uncompressed DICOM file of (H, W) or (F, H, W) uint16."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

    def write(
        path: Path,
        pixels: np.ndarray,
        *,
        photometric: str = "MONOCHROME2",
        slope: float | None = None,
        intercept: float | None = None,
        window: tuple[float, float] | None = None,
        frames: int = 1,
    ) -> Path:
        pixels = np.asarray(pixels, dtype=np.uint16)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
        meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498.1"
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        dataset = Dataset()
        dataset.file_meta = meta
        dataset.SOPClassUID = SecondaryCaptureImageStorage
        dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        dataset.Modality = "OT"
        dataset.Rows, dataset.Columns = pixels.shape[-2:]
        dataset.SamplesPerPixel = 1
        dataset.PhotometricInterpretation = photometric
        dataset.BitsAllocated = 16
        dataset.BitsStored = 16
        dataset.HighBit = 15
        dataset.PixelRepresentation = 0
        if frames > 1:
            dataset.NumberOfFrames = frames
        if slope is not None:
            dataset.RescaleSlope = slope
        if intercept is not None:
            dataset.RescaleIntercept = intercept
        if window is not None:
            dataset.WindowCenter, dataset.WindowWidth = window
        dataset.PixelData = pixels.tobytes()
        path.parent.mkdir(parents=True, exist_ok=True)
        dataset.save_as(path, enforce_file_format=True)
        return path

    return write


@pytest.fixture
def hash_tree() -> Callable[[Path], dict[str, str]]:
    """``hash_tree(root)`` -> {relative path: sha256} of every file under root (symlinks not followed)."""

    def digest(root: Path) -> dict[str, str]:
        hashes = {}
        for folder, _, files in os.walk(root):
            for name in files:
                path = Path(folder) / name
                if path.is_symlink():
                    hashes[path.relative_to(root).as_posix()] = "symlink:" + os.readlink(path)
                else:
                    hashes[path.relative_to(root).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
        return hashes

    return digest


@pytest.fixture(scope="session")
def example_module() -> ModuleType:
    """``examples/make_example.py`` imported as a module (it is not part of the package)."""
    spec = importlib.util.spec_from_file_location("make_example", REPO / "examples" / "make_example.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def one_torch_thread():
    """Train with one torch thread in this module: scans of tiny data are fastest so on a busy machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# -- a real Label Studio server (tests/test_export.py, tests/test_export_volumes.py) --------------

LABEL_STUDIO = REPO / ".venv-labelstudio" / "bin" / "label-studio"
LABEL_STUDIO_TOKEN = "0123456789abcdef0123456789abcdef01234567"  # the test server's own API token
STARTUP_SECONDS = 900  # a fresh database is migrated first: minutes on a busy 2-core machine


@dataclass(frozen=True)
class LabelStudioServer:
    """A running Label Studio: its base URL and authenticated calls to its API."""

    url: str
    token: str = LABEL_STUDIO_TOKEN

    def api(self, method: str, path: str, body: object = None) -> object:
        """Call the JSON API; returns the decoded answer (None when empty)."""
        import json
        import urllib.request

        request = urllib.request.Request(
            self.url + path, method=method, data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Token {self.token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            payload = response.read()
        return json.loads(payload) if payload else None

    def get_bytes(self, path: str) -> bytes:
        """The body of a GET of ``path`` (e.g. a task's image URL)."""
        import urllib.request

        request = urllib.request.Request(self.url + path, headers={"Authorization": f"Token {self.token}"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.read()


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory):
    """A Label Studio server on 127.0.0.1 with SQLite in a temporary directory, shared by the test session
    (starting one migrates a fresh database: minutes).

    Fails (never skips) when the server cannot be had: `make test` installs it (`make labelstudio`).
    """
    import signal
    import subprocess
    import time
    import urllib.request

    executable = Path(os.environ.get("MASKAUDIT_LABEL_STUDIO", LABEL_STUDIO))
    if not executable.is_file():
        pytest.fail(f"Label Studio is not installed at {executable}: run `make labelstudio` "
                    "(or set MASKAUDIT_LABEL_STUDIO to a label-studio executable)")
    data = tmp_path_factory.mktemp("label-studio")
    port = _free_port()
    env = {**os.environ, "LABEL_STUDIO_BASE_DATA_DIR": str(data), "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
           "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true", "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": "/"}
    env.pop("HOST", None)  # Label Studio reads HOST as its public URL
    log = open(data / "server.log", "wb")
    server = subprocess.Popen(
        [str(executable), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port),
         "--data-dir", str(data), "--username", "maskaudit@example.com", "--password", "maskaudit-test",
         "--user-token", LABEL_STUDIO_TOKEN],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/version", timeout=10):
                    break
            except OSError:
                pass
            tail = (data / "server.log").read_text(errors="replace").strip().splitlines()[-3:]
            if server.poll() is not None:
                pytest.fail(f"Label Studio exited with code {server.returncode}: {' | '.join(tail)}")
            if time.monotonic() > deadline:
                pytest.fail(f"Label Studio did not answer on {url} within {STARTUP_SECONDS} s: {' | '.join(tail)}")
            time.sleep(2)
        yield LabelStudioServer(url)
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and the workers it started, nothing else
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()
