"""`maskaudit scan` end to end on a small generated dataset with known bad masks."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from sklearn.metrics import roc_auc_score

from maskaudit.cli import main
from maskaudit.diagnosis import ISSUE_TYPES
from maskaudit.export import SCORE_COLUMNS, read_scores_csv

SCAN_OPTIONS = ["--size", "96", "--epochs", "30", "--seed", "0", "--quiet"]


@pytest.fixture(scope="module")
def scanned(tmp_path_factory, example_module):
    """A 40-sample example dataset (10 bad masks) and the output of one scan of it."""
    root = tmp_path_factory.mktemp("scan")
    dataset = example_module.make_example(root / "data", n=40, bad_fraction=0.25, seed=3)
    out = root / "out"
    result = CliRunner().invoke(main, ["scan", str(dataset), "--out", str(out), *SCAN_OPTIONS])
    assert result.exit_code == 0, result.output
    shutil.copy(out / "scores.csv", root / "first-scores.csv")  # later tests rewrite out/scores.csv
    truth = {row["id"]: int(row["corrupted"]) for row in csv.DictReader(open(dataset / "truth.csv"))}
    return dataset, out, truth, result.output


def test_scan_ranks_planted_bad_masks_first(scanned):
    _, out, truth, _ = scanned
    rows = read_scores_csv(out / "scores.csv")
    is_bad = [truth[row["id"]] for row in rows]
    quality = [float(row["quality_score"]) for row in rows]
    assert sum(is_bad) == 10
    assert roc_auc_score(is_bad, [-q for q in quality]) > 0.9
    assert sum(is_bad[:10]) >= 7  # most of the top ten are the planted ones


def test_scores_csv_is_complete_and_ordered(scanned):
    dataset, out, truth, _ = scanned
    rows = read_scores_csv(out / "scores.csv")
    assert tuple(rows[0].keys()) == SCORE_COLUMNS
    assert sorted(row["id"] for row in rows) == sorted(truth)
    assert [int(row["rank"]) for row in rows] == list(range(1, len(rows) + 1))
    quality = [float(row["quality_score"]) for row in rows]
    assert all(0.0 <= q <= 1.0 for q in quality)
    assert quality == sorted(quality)
    for row in rows:
        assert (dataset / row["image"]).is_file()
        assert all((dataset / path).is_file() for path in row["mask"].split(";"))
        assert row["issue_type"] in ISSUE_TYPES
        assert (row["issue_type"] == "ok") == (row["suspect"] == "0")
        assert 0.0 <= float(row["dice_vs_prediction"]) <= 1.0
        assert len(row["dice_per_class"].split(";")) == 3
        assert 0.0 <= float(row["object_miss"]) <= 1.0


def test_suspects_get_suggested_masks_in_the_dataset_layout(scanned):
    _, out, _, _ = scanned
    rows = read_scores_csv(out / "scores.csv")
    suspects = [row for row in rows if row["suspect"] == "1"]
    assert suspects
    assert all(0.0 <= float(row["suggestion_confidence"]) <= 1.0 for row in suspects)
    assert all(row["suggestion_confidence"] == "" for row in rows if row["suspect"] == "0")
    for row in suspects:
        for name in ("left_lung", "right_lung", "heart"):
            mask = np.asarray(Image.open(out / "suggested" / "masks" / name / f"{row['id']}.png"))
            assert mask.shape == (128, 128)  # the original size, not the working size
            assert set(np.unique(mask)) <= {0, 255}


def test_run_json_and_report_are_written(scanned):
    dataset, out, _, output = scanned
    run = json.loads((out / "run.json").read_text())
    assert run["dataset"]["num_samples"] == 40
    # 30 epochs is the budget; early stopping may end the run once half of it is spent
    assert run["options"]["epoch_budget"] == 30 and 15 <= run["options"]["epochs"] <= 30 and run["seed"] == 0
    assert set(run["stage_seconds"]) >= {"load", "train", "score", "cluster", "export", "report"}
    assert (out / "report.html").is_file()
    assert str(out / "scores.csv") in output


def test_the_self_check_is_recorded_and_shown(scanned):
    _, out, _, _ = scanned
    check = json.loads((out / "run.json").read_text())["self_check"]
    assert 0.5 < check["estimated_auroc"] <= 1.0  # the planted errors are gross: probes are easy to tell apart
    assert 0.0 <= check["segmenter_median_dice"] <= 1.0
    assert check["suspect_rule"] == "mixture"  # the planted group of bad masks looks bad to the fusion
    assert {"critic", "disagreement", "edge_misfit", "presence_surprise"} <= set(check["fusion_weights"])
    assert 1 <= check["fusion_experts"] <= 11  # one per corruption family with 10 probes, and one pooled
    assert check["summary"].endswith(".")
    html = (out / "report.html").read_text()
    assert "Self-check" in html and check["summary"] in html


def test_top_and_suspects_only_filter_the_csv(scanned, monkeypatch):
    import maskaudit.pipeline

    dataset, out, _, _ = scanned
    full = read_scores_csv(out / "scores.csv")
    # --resume reuses the finished checkpoint, so only scoring and export run again; the first pass keeps
    # the same masks, so the refit stored in model.pt is reused too (it is deterministic), never trained again.
    monkeypatch.setattr(maskaudit.pipeline, "refit_segmenter", lambda *args, **kwargs: pytest.fail("refit again"))
    runner = CliRunner()
    result = runner.invoke(main, ["scan", str(dataset), "--out", str(out), *SCAN_OPTIONS, "--resume",
                                  "--top", "5", "--no-report"])
    assert result.exit_code == 0, result.output
    top = read_scores_csv(out / "scores.csv")
    assert [row["id"] for row in top] == [row["id"] for row in full[:5]]
    result = runner.invoke(main, ["scan", str(dataset), "--out", str(out), *SCAN_OPTIONS, "--resume",
                                  "--suspects-only", "--no-report"])
    assert result.exit_code == 0, result.output
    suspects = read_scores_csv(out / "scores.csv")
    assert [row["id"] for row in suspects] == [row["id"] for row in full if row["suspect"] == "1"]


def test_layout_a_scan_writes_label_index_suggestions(make_layout_a, tmp_path):
    dataset = make_layout_a(12, num_classes=2, size=(32, 32))
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["scan", str(dataset), "--out", str(out), "--size", "32", "--epochs", "2",
                                       "--batch-size", "8", "--threshold", "1.0", "--quiet", "--no-report",
                                       "--workers", "1", "--no-early-stop"])
    assert result.exit_code == 0, result.output
    run = json.loads((out / "run.json").read_text())
    assert run["options"]["epochs"] == run["options"]["epoch_budget"] == 2
    rows = read_scores_csv(out / "scores.csv")
    assert len(rows) == 12 and all(row["suspect"] == "1" for row in rows)
    labels = np.asarray(Image.open(out / "suggested" / "masks" / f"{rows[0]['id']}.png"))
    assert labels.shape == (32, 32) and labels.max() <= 2


def test_scan_of_a_missing_directory_is_one_line_and_non_zero(tmp_path):
    result = CliRunner().invoke(main, ["scan", str(tmp_path / "nope"), "--out", str(tmp_path / "out")])
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) <= 3


def test_torchrun_with_two_processes_matches_single_process_detection(scanned, tmp_path):
    """DDP on CPU (gloo): rank 0 alone writes complete outputs and finds the bad masks the single-process
    scan finds. At 64 px (the single scan's is 96 px) it costs 50 s instead of 130 s at 128 px on two cores."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as probe:  # a free port, so that nothing else on the machine can collide with it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dataset, out, truth, _ = scanned
    ddp_out = tmp_path / "ddp"
    environment = dict(os.environ, OMP_NUM_THREADS="1")
    completed = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(port),
         "-m", "maskaudit", "scan", str(dataset), "--out", str(ddp_out), *SCAN_OPTIONS, "--size", "64", "--no-report"],
        capture_output=True, text=True, env=environment, timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[:3000] + "\n[...]\n" + completed.stderr[-1500:]
    assert completed.stdout.count("samples scored") == 1  # only rank 0 reports
    assert json.loads((ddp_out / "run.json").read_text())["processes"] == 2

    def auroc(scores_csv: Path) -> float:
        rows = read_scores_csv(scores_csv)
        assert sorted(row["id"] for row in rows) == sorted(truth)
        return roc_auc_score([truth[row["id"]] for row in rows], [-float(row["quality_score"]) for row in rows])

    single, distributed = auroc(out.parent / "first-scores.csv"), auroc(ddp_out / "scores.csv")
    assert single > 0.85 and distributed > 0.85, (single, distributed)
    assert abs(distributed - single) < 0.1, (single, distributed)  # 10 bad of 40: one swapped pair moves AUROC by 0.003


def test_a_baseline_scan_without_a_critic_scores_every_sample(make_layout_a, tmp_path):
    """`--mode baseline` trains no QAM: the fusion works from the other evidence and the critic is left out."""
    dataset = make_layout_a(12, num_classes=2, size=(32, 32))
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["scan", str(dataset), "--out", str(out), "--size", "32", "--epochs", "2",
                                       "--mode", "baseline", "--quiet", "--no-report", "--workers", "1"])
    assert result.exit_code == 0, result.output
    rows = read_scores_csv(out / "scores.csv")
    assert len(rows) == 12 and all(float(row["qam_score"]) == 0 for row in rows)
    weights = json.loads((out / "run.json").read_text())["self_check"]["fusion_weights"]
    assert "critic" not in weights and "disagreement" in weights


def test_the_scan_scores_again_with_its_segmenter_refitted_on_the_kept_masks(scanned):
    """The U-Net refitted on the first pass's kept masks scores every mask again (and predicts);
    `--no-refit` keeps the first pass's scores, from the jointly trained U-Net."""
    import dataclasses

    import torch

    from maskaudit.checkpoint import load_checkpoint
    from maskaudit.dataset import find_dataset
    from maskaudit.models import qam_from_state
    from maskaudit.predict import load_segmenter
    from maskaudit.prepare import prepare
    from maskaudit.scoring import quality_scores
    from maskaudit.signals import compute_signals
    from maskaudit.train import TrainConfig, TrainResult

    dataset, out, _, _ = scanned
    rescored = read_scores_csv(out.parent / "first-scores.csv")
    run = json.loads((out / "run.json").read_text())
    assert {"refit", "rescore"} <= set(run["stage_seconds"])
    record = run["refit"]
    assert record["samples"] + record["first_pass_suspects"] == 40 and len(record["kept_digest"]) == 16
    assert (record["epochs"], record["steps_per_epoch"]) == (5, -(-record["samples"] // 8))
    state = load_checkpoint(out / "model.pt")
    assert state["refit"] == record
    assert any(not torch.equal(state["refit_unet"][name], state["unet"][name]) for name in state["unet"])

    refitted, meta = load_segmenter(out / "model.pt")  # the scores are the refitted U-Net's, with the same QAM
    fields = {field.name for field in dataclasses.fields(TrainConfig)}
    config = TrainConfig(**{key: (tuple(value) if isinstance(value, list) else value)
                            for key, value in meta["config"].items() if key in fields})
    qam = qam_from_state(meta["qam"], meta["image_channels"], len(meta["classes"]), width=config.qam_width).eval()
    data = prepare(find_dataset(dataset), size=config.size, cache_dir=out / "cache")
    scores = quality_scores(compute_signals(data, TrainResult(unet=refitted, qam=qam, config=config), seed=0), seed=0)
    quality = dict(zip((sample.id for sample in data.index.samples), scores.quality))
    assert [float(row["quality_score"]) for row in rescored] == pytest.approx(
        [quality[row["id"]] for row in rescored], abs=1e-4)

    result = CliRunner().invoke(main, ["scan", str(dataset), "--out", str(out), *SCAN_OPTIONS, "--resume",
                                       "--no-report", "--no-refit"])
    assert result.exit_code == 0, result.output
    run = json.loads((out / "run.json").read_text())
    assert run["refit"] == {"skipped": "--no-refit"} and "rescore" not in run["stage_seconds"]
    assert load_checkpoint(out / "model.pt")["refit_unet"] is None  # predict falls back to the trained U-Net
    first_pass = read_scores_csv(out / "scores.csv")
    assert sum(row["suspect"] == "1" for row in first_pass) == record["first_pass_suspects"]
    assert ({row["id"]: row["quality_score"] for row in first_pass}
            != {row["id"]: row["quality_score"] for row in rescored})
