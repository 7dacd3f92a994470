"""Score a finished detection run again with the current scoring code, on the networks it trained.

Training is the expensive part of a benchmark run; a change to the evidence or the fusion does
not need it. This loads ``model.pt`` of a scan made by ``benchmarks/run_detection.py`` (the
averaged networks of the joint training), recomputes the signals and the fusion exactly as ``scan``
does (the first pass, the refit on the masks it kept and the second pass; ``--no-refit``: the first
pass alone), and prints AUROC / AP overall and per kind against the copy's ``truth.csv``.

    python -m benchmarks.rescore_detection benchmarks/runs/ph2-40pct benchmarks/runs/ph2-40pct-scan
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from benchmarks.detection_metrics import detection_report
from benchmarks.make_corrupted import empty_as_shipped, read_truth, without
from maskaudit.checkpoint import load_checkpoint
from maskaudit.dataset import find_dataset
from maskaudit.models import qam_from_state
from maskaudit.predict import load_segmenter
from maskaudit.pipeline import ScanConfig
from maskaudit.prepare import prepare
from maskaudit.refit import refit_segmenter, refit_skip_reason
from maskaudit.scoring import quality_scores
from maskaudit.signals import compute_signals
from maskaudit.train import TrainConfig, TrainResult, recalibrate_batchnorm

THRESHOLD = ScanConfig().threshold  # scan's default: suspect below it


def rescore(dataset: Path, scan_dir: Path, *, recalibrate: bool = False, refit: bool = True) -> dict:
    """Detection report and self-check of ``scan_dir``'s networks on ``dataset`` with today's scoring."""
    unet, state = load_segmenter(scan_dir / "model.pt", refit=False)  # the jointly trained U-Net
    fields = {field.name for field in dataclasses.fields(TrainConfig)}
    config = TrainConfig(**{key: (tuple(value) if isinstance(value, list) else value)
                            for key, value in state["config"].items() if key in fields})
    qam = None
    if load_checkpoint(scan_dir / "model.pt")["qam"] is not None:
        qam = qam_from_state(state["qam"], state["image_channels"], len(state["classes"]), width=config.qam_width).eval()
    result = TrainResult(unet=unet, qam=qam, config=config)
    data = prepare(find_dataset(dataset), size=config.size, cache_dir=scan_dir / "cache")
    if recalibrate:  # networks saved before train() re-estimated the final U-Net's BatchNorm statistics
        recalibrate_batchnorm(unet, data.images, data.masks, batch_size=max(config.batch_size, 16),
                              device=torch.device("cpu"))
        unet.eval()
    signals = compute_signals(data, result, seed=config.seed)
    scores = quality_scores(signals, seed=config.seed)
    if refit and refit_skip_reason(scores.quality, THRESHOLD, config.batch_size) is None:  # as scan: score again
        kept = np.flatnonzero(scores.quality >= THRESHOLD)
        result = dataclasses.replace(result, unet=refit_segmenter(data, result, kept, device="cpu").unet)
        signals = compute_signals(data, result, seed=config.seed)
        scores = quality_scores(signals, seed=config.seed)
    ids = [sample.id for sample in data.index.samples]
    outcome = {"self_check": scores.self_check_auroc, "weights": scores.fusion.weights,
               "suspects": int((scores.quality < THRESHOLD).sum()), "bad_share": scores.bad_share,
               "report": None, "critic": None, "shipped_empty": 0, "without_shipped_empty": None}
    if not (dataset / "truth.csv").exists():  # a clean copy: then only its suspects are counted
        return outcome
    truth, quality = read_truth(dataset / "truth.csv"), dict(zip(ids, scores.quality))
    shipped = empty_as_shipped(dataset, truth)  # wrong as shipped, yet clean in truth.csv (DDTI: 7)
    return outcome | {"report": detection_report(truth, quality),
                      "critic": detection_report(truth, dict(zip(ids, signals.qam_score))),
                      "shipped_empty": len(shipped),
                      "without_shipped_empty": detection_report(without(truth, shipped), quality) if shipped else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path, help="the corrupted copy (with truth.csv), or a clean one")
    parser.add_argument("scan_dir", type=Path, help="the scan's --out directory (with model.pt and cache/)")
    parser.add_argument("--recalibrate-batchnorm", action="store_true",
                        help="re-estimate the U-Net's BatchNorm statistics first (networks trained before 0.3.1)")
    parser.add_argument("--no-refit", action="store_true", help="score once, with the jointly trained U-Net")
    args = parser.parse_args(argv)
    outcome = rescore(args.dataset, args.scan_dir, recalibrate=args.recalibrate_batchnorm, refit=not args.no_refit)
    print(f"{args.dataset.name}: {outcome['suspects']} suspects (quality_score < {THRESHOLD}), "
          f"estimated bad share {outcome['bad_share']:.3f}, self-check {outcome['self_check']:.3f}")
    if outcome["report"] is not None:
        overall = outcome["report"]["overall"]
        print(f"AUROC {overall['auroc']:.3f} AP {overall['ap']:.3f}; the label critic alone (qam_score) AUROC "
              f"{outcome['critic']['overall']['auroc']:.3f}")
        print("per kind AUROC:",
              json.dumps({kind: round(m["auroc"], 3) for kind, m in outcome["report"]["per_kind"].items()}))
    if outcome["without_shipped_empty"] is not None:
        left_out = outcome["without_shipped_empty"]
        print(f"without the {outcome['shipped_empty']} masks empty as shipped: AUROC {left_out['overall']['auroc']:.3f} "
              f"AP {left_out['overall']['ap']:.3f}; per kind",
              json.dumps({kind: round(m["auroc"], 3) for kind, m in left_out["per_kind"].items()}))
    print("fusion weights:", json.dumps({name: round(value, 3) for name, value in outcome["weights"].items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
