"""How does detection quality grow with training, and when is the ranking stable?

Trains maskaudit once on a corrupted copy of JSRT (or of the synthetic RGB set) and, after selected epochs, scores the networks
a scan stopped there would return (the epoch-end weight average) exactly as ``scan`` does
(signals + quality_score), giving AUROC and AP of the ranking at that point of training. Every epoch it also prints the ranking-stability statistic
that ``maskaudit.train`` uses to stop early, so the stop rule can be checked against the curve.

    python -m benchmarks.convergence                                  # defaults, 40 % mixed
    python -m benchmarks.convergence --epochs 33 --batch-size 16 --weight-average 0   # the 0.1 defaults
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np

from benchmarks.detection_metrics import detection_report
from benchmarks.make_corrupted import make_corrupted, read_truth
from benchmarks.run_detection import clean_source
from maskaudit.dataset import find_dataset
from maskaudit.prepare import prepare
from maskaudit.scoring import quality_scores
from maskaudit.signals import compute_signals
from maskaudit.train import TrainConfig, TrainResult, classes_learned, default_epochs, ranking_stability, train

REPO = Path(__file__).resolve().parents[1]


def corrupted_copy(name: str, runs: Path, fraction: float, seed: int) -> tuple[Path, dict]:
    """The corrupted copy of dataset ``name`` and its truth, made once and reused (both are deterministic)."""
    source, kinds = clean_source(name, runs, seed=seed)
    root = runs / f"{name}-{int(fraction * 100)}pct-seed{seed}"
    if not (root / "truth.csv").exists():
        make_corrupted(source, root, fraction=fraction, kinds=kinds, seed=seed, overwrite=True)
    return root, read_truth(root / "truth.csv")


def snapshot_detection(data, config, unet, qam, history, truth) -> dict:
    """AUROC / AP of quality_score computed from the networks as they are after the epochs in ``history``."""
    unet, qam = copy.deepcopy(unet).eval(), (copy.deepcopy(qam).eval() if qam is not None else None)
    result = TrainResult(unet=unet, qam=qam, config=config, history=history)
    signals = compute_signals(data, result)
    scores = quality_scores(signals, seed=config.seed)
    ids = [sample.id for sample in data.index.samples]
    overall = detection_report(truth, dict(zip(ids, scores.quality)))["overall"]
    per_signal = {name: round(detection_report(truth, dict(zip(ids, -np.asarray(values))))["overall"]["auroc"], 3)
                  for name, values in scores.evidence.items() if np.ptp(values) > 0}
    clean = np.array([not truth[sample_id][0] for sample_id in ids])
    clean_dice = dict(zip(data.index.classes, np.round(signals.dice[clean].mean(axis=0), 3).tolist()))
    return {"auroc": overall["auroc"], "ap": overall["ap"], "p_at_k": overall["p_at_k"],
            "signal_auroc": per_signal, "clean_dice": clean_dice}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="jsrt", help="jsrt or synthetic-rgb")
    parser.add_argument("--fraction", type=float, default=0.4)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--weight-average", type=float, default=0.5, help="0 scores the last epoch's weights")
    parser.add_argument("--every", type=int, default=3, help="score a snapshot every this many epochs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", type=Path, default=REPO / "benchmarks" / "runs" / "convergence")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    args.runs.mkdir(parents=True, exist_ok=True)
    root, truth = corrupted_copy(args.dataset, args.runs, args.fraction, args.seed)
    data = prepare(find_dataset(root), size=128, cache_dir=args.runs / f"cache-{root.name}")
    epochs = args.epochs or default_epochs(len(data.images), args.batch_size)
    config = TrainConfig(epochs=epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed, early_stop=False,
                         weight_average=args.weight_average)
    rows, clock = [], {"train": 0.0, "mark": time.perf_counter()}

    def on_epoch_end(epoch, unet, qam, history):
        clock["train"] += time.perf_counter() - clock["mark"]
        row = {"epoch": epoch + 1, "train_s": round(clock["train"], 1),
               "stability": ranking_stability(history.dense("loss")),
               "classes_learned": classes_learned(history.dense("dice"))}
        if (epoch + 1) % args.every == 0 or epoch + 1 == epochs:
            row.update(snapshot_detection(data, config, unet, qam, history, truth))
        rows.append(row)
        print(json.dumps(row), flush=True)
        clock["mark"] = time.perf_counter()

    result = train(data, config, on_epoch_end=on_epoch_end)
    if args.json:
        np.savez_compressed(args.json.with_suffix(".npz"), loss=result.history_loss, dice=result.history_dice,
                            is_bad=np.array([truth[sample.id][0] for sample in data.index.samples]))
    print("\n| epoch | train s | stability | AUROC | AP |\n|---|---|---|---|---|")
    for row in rows:
        if "auroc" in row:
            stability = "" if row["stability"] is None else f"{row['stability']:.3f}"
            print(f"| {row['epoch']} | {row['train_s']} | {stability} | {row['auroc']:.3f} | {row['ap']:.3f} |")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
