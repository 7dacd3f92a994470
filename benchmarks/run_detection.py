"""Detection benchmark: how well does quality_score find planted bad masks, against cleanlab?

For each (dataset, fraction) it makes a corrupted copy with a known truth list, runs
``maskaudit scan`` with its defaults, and in the same run the pipeline a cleanlab user would
build (K-fold out-of-fold U-Net predictions scored by cleanlab.segmentation.rank) on the same
prepared arrays, each fold model trained for maskaudit's epoch budget; K = 5 (cleanlab's own
default) and K = 2 by default. It reports AUROC, AP and precision at k overall and per
corruption kind, wall times and their ratios, for maskaudit's quality_score, the raw QAM score
alone and each cleanlab pipeline.

    python -m benchmarks.run_detection                          # JSRT 40 % mixed + synthetic RGB
    python -m benchmarks.run_detection --datasets ddti ph2 --folds 2   # the hard one-class sets
    python -m benchmarks.run_detection --datasets jsrt --fractions 0.25 0.5 0.75
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from maskaudit.corruptions import CORRUPTIONS
from benchmarks.detection_metrics import detection_report, format_markdown_table
from benchmarks.make_corrupted import empty_as_shipped, make_corrupted, without
from benchmarks.synthetic_rgb import make_synthetic_rgb
from maskaudit.dataset import find_dataset
from maskaudit.pipeline import ScanConfig, scan
from maskaudit.prepare import prepare
from maskaudit.train import TrainConfig, default_epochs

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"
JSRT = SHARED / "jsrt"
ONE_CLASS_KINDS = ("erode_dilate_1_8", "erode_dilate_5_13", "delete_object", "spurious")
# The hard one-class sets (ultrasound, dermoscopy): the error kinds a relabeling queue meets there.
HARD_KINDS = ("dilate_5_13", "erode_5_13", "shift", "delete", "foreign", "spurious")


def clean_source(name: str, runs: Path, *, seed: int) -> tuple[Path, tuple[str, ...]]:
    """The clean dataset and the corruption kinds that make sense for it."""
    if name == "jsrt":
        return JSRT, tuple(CORRUPTIONS)
    if name == "synthetic-rgb":
        root = runs / "synthetic-rgb-clean"
        if not root.exists():
            make_synthetic_rgb(root, n=200, size=128, seed=seed)
        return root, ONE_CLASS_KINDS
    if name in ("ddti", "ph2"):
        return SHARED / name, HARD_KINDS
    raise SystemExit(f"unknown dataset {name!r}: use jsrt, synthetic-rgb, ddti or ph2")


def run_one(name: str, fraction: float, args, runs: Path) -> dict:
    source, kinds = clean_source(name, runs, seed=args.seed)
    corrupted = runs / f"{name}-{int(fraction * 100)}pct"
    if corrupted.exists():
        shutil.rmtree(corrupted)
    truth = make_corrupted(source, corrupted, fraction=fraction, kinds=kinds, seed=args.seed)
    out_dir = runs / f"{name}-{int(fraction * 100)}pct-scan"
    train_config = TrainConfig(epochs=args.epochs, seed=args.seed, width=args.width, precision=args.precision, flips=args.flips,
                               critic_holdout=tuple(args.critic_holdout), critic_share=args.critic_share,
                               size=args.size, qam_width=args.qam_width)
    started = time.perf_counter()
    result = scan(corrupted, out_dir, ScanConfig(train=train_config, overwrite=True, report=False), progress=args.progress)
    scan_seconds = time.perf_counter() - started
    reports = {
        "maskaudit quality_score": detection_report(truth, {row.id: row.quality_score for row in result.rows}),
        "label critic alone (qam_score)": detection_report(truth, {row.id: row.qam_score for row in result.rows}),
    }
    seconds = {"maskaudit quality_score": scan_seconds, "label critic alone (qam_score)": scan_seconds}
    shipped = empty_as_shipped(corrupted, truth)  # wrong masks the truth would call clean (DDTI: 7)
    if shipped:
        name_shipped = f"maskaudit, the {len(shipped)} masks empty as shipped left out"
        reports[name_shipped] = detection_report(without(truth, shipped), {row.id: row.quality_score for row in result.rows})
        seconds[name_shipped] = scan_seconds
    if not args.no_cleanlab:
        from benchmarks.cleanlab_pipeline import run_cleanlab_pipeline

        data = prepare(find_dataset(corrupted), size=train_config.size, cache_dir=out_dir / "cache")
        epochs = args.cleanlab_epochs or args.epochs or default_epochs(len(data.images), train_config.batch_size)
        for folds in args.folds:
            scores, cleanlab_seconds = run_cleanlab_pipeline(
                np.asarray(data.images), np.asarray(data.masks), folds=folds, epochs=epochs, seed=args.seed,
                batch_size=train_config.batch_size, precision=args.precision,
                width=args.width,
            )
            name_cl = f"cleanlab {folds}-fold"
            reports[name_cl] = detection_report(truth, dict(zip((s.id for s in data.index.samples), scores)))
            seconds[name_cl] = cleanlab_seconds
    run = json.loads((out_dir / "run.json").read_text())
    return {"dataset": name, "fraction": fraction, "kinds": list(kinds), "reports": reports, "seconds": seconds,
            "stage_seconds": result.stage_seconds, "epochs": run["options"]["epochs"],
            "epoch_budget": run["options"]["epoch_budget"], "self_check": run["self_check"]}


def speed_ratios(outcome: dict) -> list[str]:
    """One line per K-fold pipeline: how many times maskaudit's wall time it took, and both AUROCs."""
    ours = "maskaudit quality_score"
    lines = []
    for name, seconds in outcome["seconds"].items():
        if name.startswith("cleanlab"):
            lines.append(
                f"{name}: {seconds / outcome['seconds'][ours]:.2f}x maskaudit's wall time; AUROC "
                f"{outcome['reports'][ours]['overall']['auroc']:.3f} (maskaudit) vs "
                f"{outcome['reports'][name]['overall']['auroc']:.3f}"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["jsrt", "synthetic-rgb"])
    parser.add_argument("--fractions", nargs="+", type=float, default=[0.4])
    parser.add_argument("--epochs", type=int, default=None, help="default: maskaudit's default for the dataset size")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--qam-width", type=int, default=TrainConfig.qam_width, help="the QAM's first-stage width")
    parser.add_argument("--size", type=int, default=TrainConfig.size, help="working resolution (scan --size)")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--folds", type=int, nargs="+", default=[5, 2],
                        help="K of each K-fold cleanlab pipeline to run (5 is cleanlab's own default, cv_n_folds)")
    parser.add_argument("--cleanlab-epochs", type=int, default=None,
                        help="epochs of each fold's U-Net; default: maskaudit's epoch budget for the dataset")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-cleanlab", action="store_true")
    parser.add_argument("--flips", action="store_true", help="left-right flips in augmentation (scan --flips)")
    parser.add_argument("--critic-holdout", nargs="*", default=[],
                        help="corruption families the label critic and the fusion's probes never see "
                             "(maskaudit.corruptions.CRITIC_FAMILIES), to measure a kind it was not trained on")
    parser.add_argument("--critic-share", type=float, default=TrainConfig.critic_share,
                        help="share of each batch whose corrupted copy the label critic scores")
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--runs", type=Path, default=REPO / "benchmarks" / "runs")
    parser.add_argument("--json", type=Path, default=None, help="also write all results to this JSON file")
    args = parser.parse_args(argv)
    args.runs.mkdir(parents=True, exist_ok=True)
    results = []
    for name in args.datasets:
        for fraction in args.fractions:
            outcome = run_one(name, fraction, args, args.runs)
            results.append(outcome)
            print(f"\n### {name}, {fraction:.0%} of samples corrupted ({', '.join(outcome['kinds'])})\n")
            print(format_markdown_table(outcome["reports"], extra_rows={"wall time (s)": outcome["seconds"]}))
            print()
            for line in speed_ratios(outcome):
                print(line)
            ours = outcome["reports"]["maskaudit quality_score"]["overall"]["auroc"]
            check = outcome["self_check"]
            print(f"\nself-check: estimated AUROC {check['estimated_auroc']} against the true {ours:.3f}; "
                  f"segmenter median Dice {check['segmenter_median_dice']}")
            if args.critic_holdout:
                print(f"held out of the critic's training and the probes: {', '.join(args.critic_holdout)}")
            print(f"maskaudit trained {outcome['epochs']} epochs; its budget was {outcome['epoch_budget']} "
                  "(fewer: the early stop; more: the segmenter was still learning).")
            print(f"maskaudit stage seconds: {json.dumps({k: round(v, 1) for k, v in outcome['stage_seconds'].items()})}")
            sys.stdout.flush()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
