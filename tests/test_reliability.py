"""Reliability of ``maskaudit scan``: the dataset is never modified, runs survive SIGKILL and Ctrl-C,
output directories never mix two runs, NaN stops a run, hostile inputs are refused or skipped.

Training runs use one thread (``OMP_NUM_THREADS=1`` / ``torch.set_num_threads(1)``): results are
reproducible for a fixed thread count, and one thread is much faster on a busy 2-core machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shlex
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import maskaudit.pipeline as pipeline_module
import maskaudit.train as train_module
from maskaudit.atomic import atomic_path, atomic_write_text
from maskaudit.checkpoint import load_checkpoint
from maskaudit.cli import main
from maskaudit.errors import CheckpointError
from maskaudit.export import read_scores_csv

EPOCHS = 10
OPTIONS = ["--size", "32", "--epochs", str(EPOCHS), "--batch-size", "8", "--no-report", "-q"]
QUICK = ["--size", "32", "--epochs", "1", "--batch-size", "8", "-q"]
GOOD_IDS = {f"case{number:03d}" for number in range(1, 9)}
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


# -- helpers ------------------------------------------------------------------------------------


def digest(root: Path) -> dict[str, str]:
    """{relative path: sha256 or symlink target} of every file under ``root``."""
    hashes = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            key = path.relative_to(root).as_posix()
            target = os.readlink(path) if path.is_symlink() else None
            hashes[key] = "->" + target if target else hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes


def save_masks(root: Path, stem: str, shape: tuple[int, int]) -> None:
    for cls in ("left_lung", "right_lung", "heart"):
        mask = np.zeros(shape, np.uint8)
        mask[2:-2, 2 : shape[1] // 2] = 255
        Image.fromarray(mask).save(root / "masks" / cls / f"{stem}.png")


def png_bomb(path: Path, side: int = 30_000) -> None:
    """A 300-byte PNG whose header claims side x side pixels (9e8 > the 4e7 limit)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    body = zlib.compress(b"\0" * (side + 1) * 4)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def scan_command(dataset: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "maskaudit.cli", "scan", str(dataset), "--out", str(out), *OPTIONS, *extra]


def start(command: list[str]) -> subprocess.Popen:
    # A shell started in the background ignores SIGINT and its children inherit that; a user's
    # terminal does not, so give the child the default SIGINT behaviour.
    return subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def interrupt_after_first_checkpoint(process: subprocess.Popen, out: Path, signum: int) -> tuple[str, str]:
    """Send ``signum`` as soon as the first epoch's model.pt exists; return stdout, stderr."""
    deadline = time.monotonic() + 240
    while not (out / "model.pt").exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no checkpoint within 240 s"
        time.sleep(0.005)
    process.send_signal(signum)
    return process.communicate(timeout=240)


def quality(out: Path) -> dict[str, float]:
    return {row["id"]: float(row["quality_score"]) for row in read_scores_csv(out / "scores.csv")}


def invoke(*args: object):
    return CliRunner().invoke(main, ["scan", *(str(arg) for arg in args)])


# -- fixtures -----------------------------------------------------------------------------------


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, example_module) -> tuple[Path, dict[str, str], Path]:
    """8 good pairs plus one NaN/inf float TIFF (usable), a PNG bomb, a corrupt DICOM, a symlink
    leaving the root and a text file (all skipped). Returns root, its digest and the outside file."""
    root = example_module.make_example(tmp_path_factory.mktemp("hostile") / "ds", n=8, bad_fraction=0.25, seed=5)
    floats = np.linspace(0, 1, 40 * 48, dtype=np.float32).reshape(40, 48)
    floats[0, :5], floats[1, :5], floats[2, :5] = np.nan, np.inf, -np.inf
    Image.fromarray(floats, mode="F").save(root / "images/nan_pixels.tif")
    save_masks(root, "nan_pixels", (40, 48))
    png_bomb(root / "images/bomb.png")
    save_masks(root, "bomb", (16, 16))
    (root / "images/broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 200)
    save_masks(root, "broken", (16, 16))
    outside = tmp_path_factory.mktemp("outside") / "secret.png"
    Image.fromarray(np.full((128, 128), 9, np.uint8)).save(outside)
    os.symlink(outside, root / "images/escape.png")
    save_masks(root, "escape", (128, 128))
    (root / "images/notes.txt").write_text("annotator notes")
    return root, digest(root), outside


@pytest.fixture(scope="module")
def uninterrupted(hostile, tmp_path_factory) -> Path:
    """A full CLI scan of the hostile dataset, run in its own process."""
    out = tmp_path_factory.mktemp("uninterrupted") / "out"
    process = start(scan_command(hostile[0], out))
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr
    return out


@pytest.fixture(scope="module")
def small(tmp_path_factory, example_module) -> Path:
    return example_module.make_example(tmp_path_factory.mktemp("small") / "ds", n=8, bad_fraction=0.25, seed=2)


# -- the dataset is never modified; bad inputs are skipped or handled ---------------------------


def test_full_scan_skips_hostile_files_and_leaves_the_dataset_unchanged(hostile, uninterrupted):
    root, before, outside = hostile
    assert set(quality(uninterrupted)) == GOOD_IDS | {"nan_pixels"}  # NaN/inf pixels are handled, not skipped
    assert all(0.0 <= value <= 1.0 for value in quality(uninterrupted).values())
    skipped = {item["path"]: item["reason"] for item in json.loads((uninterrupted / "run.json").read_text())
               ["dataset"]["skipped"]}
    assert "decompression-bomb guard" in skipped["images/bomb.png"]
    assert skipped["images/broken.dcm"].startswith("DICOM without a readable image header")
    assert skipped["images/escape.png"] == "symlink that leaves the dataset root; not followed"
    assert skipped["images/notes.txt"].startswith("not a supported image file")
    assert digest(root) == before
    assert outside.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(uninterrupted.rglob("*.tmp"))


def test_sigkill_mid_training_then_resume_completes_with_the_same_scores(hostile, uninterrupted, tmp_path):
    root, before, _ = hostile
    out = tmp_path / "out"
    process = start(scan_command(root, out))
    interrupt_after_first_checkpoint(process, out, signal.SIGKILL)
    assert process.returncode == -signal.SIGKILL
    killed_at = load_checkpoint(out / "model.pt")["epoch"]
    assert 1 <= killed_at < EPOCHS  # killed in the middle of training
    assert not (out / "scores.csv").exists()
    (out / ".model.pt.k1ll3d.tmp").write_bytes(b"half a checkpoint")  # as if killed while saving

    plain = start(scan_command(root, out))  # without --resume the old run is not mixed with a new one
    _, stderr = plain.communicate(timeout=240)
    assert plain.returncode == 3 and "pass --resume to continue it" in stderr

    resumed = start(scan_command(root, out, "--resume"))
    _, stderr = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, stderr
    assert load_checkpoint(out / "model.pt")["epoch"] == EPOCHS
    assert (out / "run.json").is_file() and not list(out.glob(".*.tmp"))
    expected, got = quality(uninterrupted), quality(out)
    assert set(got) == GOOD_IDS | {"nan_pixels"}
    assert max(abs(got[key] - expected[key]) for key in expected) <= 1e-6
    assert digest(root) == before


def test_ctrl_c_keeps_the_checkpoint_and_prints_a_resume_command_that_works(hostile, uninterrupted, tmp_path):
    root, before, _ = hostile
    out = tmp_path / "out dir"  # a space: the printed command must quote it
    process = start(scan_command(root, out))
    _, stderr = interrupt_after_first_checkpoint(process, out, signal.SIGINT)
    assert process.returncode == 130
    # (the lines before it are pydicom's warnings about broken.dcm while the data was prepared)
    message = stderr.strip().splitlines()[-1]
    assert "Traceback" not in stderr
    assert message.startswith(f"maskaudit: interrupted. The last finished epoch is saved in {out / 'model.pt'};")
    assert 1 <= load_checkpoint(out / "model.pt")["epoch"] < EPOCHS
    assert not (out / "scores.csv").exists() and not list(out.glob(".*.tmp"))

    command = shlex.split(message.split("continue with: ", 1)[1])
    assert command[:2] == ["maskaudit", "scan"] and command[-1] == "--resume"
    assert "--size" in command and "--epochs" in command  # the user's options, not the defaults
    resumed = start([sys.executable, "-m", "maskaudit.cli", *command[1:]])
    _, stderr = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, stderr
    expected, got = quality(uninterrupted), quality(out)
    assert set(got) == set(expected)
    assert max(abs(got[key] - expected[key]) for key in expected) <= 1e-6
    assert digest(root) == before


def test_ctrl_c_before_any_checkpoint_says_to_start_again(small, tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline_module, "train", interrupted)
    result = invoke(small, "--out", tmp_path / "out", *QUICK)
    assert result.exit_code == 130
    assert result.stderr.strip() == (
        "maskaudit: interrupted before the first epoch finished; run the same command to start again"
    )


# -- output directory ---------------------------------------------------------------------------


def test_a_second_run_is_refused_and_overwrite_leaves_nothing_of_the_first(small, tmp_path):
    out = tmp_path / "out"
    first = invoke(small, "--out", out, *QUICK, "--threshold", "1.0")  # every sample a suspect, with report
    assert first.exit_code == 0, first.output
    assert (out / "report.html").is_file() and len(list((out / "suggested").rglob("*.png"))) == 8 * 3
    (out / "notes.txt").write_text("mine")
    scores_before = (out / "scores.csv").read_bytes()

    again = invoke(small, "--out", out, *QUICK)
    assert again.exit_code == 3
    assert again.stderr.startswith(f"maskaudit: error: {out} already holds a run (scores.csv, run.json")
    assert "--overwrite" in again.stderr and (out / "scores.csv").read_bytes() == scores_before
    both = invoke(small, "--out", out, *QUICK, "--overwrite", "--resume")
    assert both.exit_code == 3 and "pass only one" in both.stderr

    second = invoke(small, "--out", out, *QUICK, "--overwrite", "--threshold", "0", "--no-report")
    assert second.exit_code == 0, second.output
    assert not (out / "report.html").exists() and not (out / "assets").exists()
    assert not (out / "suggested").exists()  # no suspects now, and the old suggestions are gone
    assert (out / "notes.txt").read_text() == "mine"  # files maskaudit did not write are kept
    assert all(row["suspect"] == "0" for row in read_scores_csv(out / "scores.csv"))


@pytest.mark.parametrize("inside", ["results", "."])
def test_output_directory_inside_the_dataset_is_refused(small, inside):
    before = digest(small)
    result = invoke(small, "--out", small / inside, *QUICK)
    assert result.exit_code == 3
    assert "is inside the dataset" in result.stderr and "choose --out outside it" in result.stderr
    assert digest(small) == before and not (small / "results").exists()


def test_failed_scan_leaves_the_dataset_unchanged(tmp_path):
    root = tmp_path / "corrupt"
    for stem in ("a", "b"):
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(exist_ok=True)
        (root / "images" / f"{stem}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # header only
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "masks" / f"{stem}.png")
    before = digest(root)
    result = invoke(root, "--out", tmp_path / "out", *QUICK)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"maskaudit: error: no pair in {root} could be decoded")
    assert len(result.stderr.strip().splitlines()) == 1
    assert digest(root) == before and not (tmp_path / "out/scores.csv").exists()


# -- atomic writes ------------------------------------------------------------------------------


def test_a_crash_while_writing_keeps_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "scores.csv"
    atomic_write_text(target, "old\n")
    with pytest.raises(RuntimeError, match="power cut"):
        with atomic_path(target) as temporary:
            temporary.write_text("half a fi")
            raise RuntimeError("power cut")
    assert target.read_text() == "old\n" and sorted(tmp_path.iterdir()) == [target]


# -- numerical safety ---------------------------------------------------------------------------


def test_nan_loss_stops_the_run_with_one_line_and_no_scores(small, tmp_path, monkeypatch):
    real = train_module.per_sample_loss

    def nan_loss(logits, masks, **options):
        loss, dice, cross_entropy = real(logits, masks, **options)
        return loss * float("nan"), dice, cross_entropy

    monkeypatch.setattr(train_module, "per_sample_loss", nan_loss)
    before = digest(small)
    result = invoke(small, "--out", tmp_path / "out", *QUICK)
    assert result.exit_code == 5
    assert result.stderr == (
        "maskaudit: error: the training loss became nan at epoch 1; check the images for NaN/inf values or lower --lr\n"
    )
    assert not (tmp_path / "out/scores.csv").exists() and not (tmp_path / "out/run.json").exists()
    assert digest(small) == before


def test_non_finite_model_outputs_stop_the_run_before_any_score_is_written(small, tmp_path, monkeypatch):
    real = pipeline_module.compute_signals

    def poisoned(*args, **kwargs):
        signals = real(*args, **kwargs)
        signals.qam_score[3] = np.inf
        return signals

    monkeypatch.setattr(pipeline_module, "compute_signals", poisoned)
    result = invoke(small, "--out", tmp_path / "out", *QUICK)
    assert result.exit_code == 5
    assert "non-finite outputs (qam_score), so no scores were written" in result.stderr
    written = {path.name for path in (tmp_path / "out").iterdir()}
    assert written == {"cache", "model.pt"}


# -- untrusted checkpoints ----------------------------------------------------------------------


class Exploit:
    """Unpickling this would run a shell command that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


@pytest.mark.parametrize("kind", ["torch-zip", "raw-pickle", "truncated", "random-bytes"])
def test_hostile_or_damaged_checkpoint_is_refused_without_running_code(small, tmp_path, kind):
    marker = tmp_path / "pwned"
    out = tmp_path / "out"
    out.mkdir()
    path = out / "model.pt"
    if kind == "torch-zip":
        torch.save({"format": "maskaudit-checkpoint-1", "unet": Exploit(marker)}, path)
    elif kind == "raw-pickle":
        path.write_bytes(pickle.dumps(Exploit(marker), protocol=2))
    elif kind == "truncated":
        torch.save({"format": "maskaudit-checkpoint-1", "unet": {"w": torch.zeros(1000)}}, path)
        path.write_bytes(path.read_bytes()[:300])
    else:
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CheckpointError, match="is not a maskaudit checkpoint or is damaged"):
        load_checkpoint(path)
    result = invoke(small, "--out", out, *QUICK, "--resume")
    assert result.exit_code == 4 and "is not a maskaudit checkpoint or is damaged" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not marker.exists()


def test_resume_refuses_a_checkpoint_of_another_dataset(small, tmp_path, example_module):
    out = tmp_path / "out"
    assert invoke(small, "--out", out, *QUICK, "--no-report").exit_code == 0
    other = example_module.make_example(tmp_path / "other", n=8, seed=2)
    (other / "masks/heart").rename(other / "masks/aorta")
    result = invoke(other, "--out", out, *QUICK, "--no-report", "--resume")
    assert result.exit_code == 4
    assert "was trained on 8 samples of the classes heart, left_lung, right_lung" in result.stderr
    assert "now has 8 samples of aorta, left_lung, right_lung" in result.stderr
    fewer = example_module.make_example(tmp_path / "fewer", n=7, seed=2)
    result = invoke(fewer, "--out", out, *QUICK, "--no-report", "--resume")
    assert result.exit_code == 4 and "now has 7 samples" in result.stderr
    assert (out / "scores.csv").is_file()  # a refused resume leaves the earlier results alone
