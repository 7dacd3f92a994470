"""Same seed, same scores: two scans agree, and a run interrupted mid-epoch and resumed equals an
uninterrupted one, down to the weights.

Reproducibility holds for a fixed torch thread count (run.json records it): CPU kernels split
their reductions by thread, so 1 and 2 threads give slightly different weights after the first
step and, on a tiny dataset, visibly different scores. These tests pin one thread.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import maskaudit.train as train_module
from maskaudit.checkpoint import load_checkpoint
from maskaudit.export import read_scores_csv
from maskaudit.pipeline import ScanConfig, scan
from maskaudit.precision import autocast_dtype
from maskaudit.train import TrainConfig

TRAIN = TrainConfig(size=32, epochs=3, batch_size=8, seed=7)  # 16 samples: 2 batches per epoch
NUMERIC = ("quality_score", "qam_score", "dice_vs_prediction", "boundary_distance", "outlier_score")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, example_module) -> Path:
    return example_module.make_example(tmp_path_factory.mktemp("det") / "ds", n=16, bad_fraction=0.25, seed=11)


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference") / "out"
    scan(dataset, out, ScanConfig(train=TRAIN, report=False))
    return out


def assert_same_scores(expected: Path, got: Path) -> None:
    first, second = read_scores_csv(expected / "scores.csv"), read_scores_csv(got / "scores.csv")
    assert [row["id"] for row in second] == [row["id"] for row in first]  # same ranking
    for a, b in zip(first, second):
        for column in NUMERIC:
            assert abs(float(a[column]) - float(b[column])) <= 1e-6, (a["id"], column, a[column], b[column])
        assert (a["suspect"], a["issue_type"], a["cluster"]) == (b["suspect"], b["issue_type"], b["cluster"])


def test_two_runs_with_the_same_seed_give_the_same_scores(dataset, reference, tmp_path):
    scan(dataset, tmp_path / "out", ScanConfig(train=TRAIN, report=False))
    assert_same_scores(reference, tmp_path / "out")
    record = json.loads((tmp_path / "out/run.json").read_text())
    assert record["torch_threads"] == 1
    native = autocast_dtype(torch.device("cpu"), "auto")  # None without native bf16: the scan ran in fp32
    assert record["segmenter_dtype"] == ("float32" if native is None else "bfloat16")


def test_run_interrupted_mid_epoch_and_resumed_equals_an_uninterrupted_run(dataset, reference, tmp_path, monkeypatch):
    real, calls = train_module.per_sample_loss, []

    def ctrl_c_in_epoch_two(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:  # second batch of epoch 2: one optimizer step of epoch 2 is lost
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "per_sample_loss", ctrl_c_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        scan(dataset, tmp_path / "out", ScanConfig(train=TRAIN, report=False))
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "out/model.pt")["epoch"] == 1

    scan(dataset, tmp_path / "out", ScanConfig(train=TRAIN, report=False, resume=True))
    assert_same_scores(reference, tmp_path / "out")
    expected, got = load_checkpoint(reference / "model.pt"), load_checkpoint(tmp_path / "out/model.pt")
    for part in ("unet", "qam"):
        for name, tensor in expected[part].items():
            assert torch.equal(tensor, got[part][name]), (part, name)
    for name, history in expected["histories"].items():
        np.testing.assert_array_equal(history.numpy(), got["histories"][name].numpy())
