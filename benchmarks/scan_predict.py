"""Issue 12's user-level check: a default ``maskaudit scan`` on noisy JSRT training masks, then
``maskaudit predict`` on the test images, compared with the clean test masks.

This is what a user does, through the command line: the training copy is the JSRT train split
(165 images) with a fraction of its samples' masks eroded or dilated (``--kind``, default the
paper's 5-13 px at 256 px), scanned with every default except ``--mode``; the 82 test images are
segmented with the scan's model.pt and scored with table1's Dice groups (lungs, heart,
clavicles, their average). Each mode is one scan; its wall time is printed. A scan that refitted
its segmenter on the masks it kept (maskaudit.refit, the default) also predicts with the jointly
trained U-Net alone (row "MODE, no refit"), from a copy of model.pt without the refitted one.

    python -m benchmarks.scan_predict                                # qam-ocm and baseline, seed 0
    python -m benchmarks.scan_predict --modes qam-ocm --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.table1 import GROUPS, JSRT, REPO, group_dice, load_test_set, read_split


def run(command: list[str]) -> float:
    """Run a maskaudit command (quiet), fail loudly; returns its wall seconds."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "maskaudit", *command, "-q"], check=True)
    return time.perf_counter() - started


def test_images_dir(data: Path, work: Path) -> Path:
    """A folder of symlinks to the test split's images (predict segments every image of a folder)."""
    folder = work / "test-images"
    if not folder.is_dir():
        folder.mkdir(parents=True)
        for sample_id in read_split(data)["test"]:
            os.symlink((data / "images" / f"{sample_id}.png").resolve(), folder / f"{sample_id}.png")
    return folder


def predicted_masks(out: Path, ids: list[str], classes: tuple[str, ...]) -> np.ndarray:
    """(N, K, H, W) bool from predict's output folder (one folder per class, layout B)."""
    from maskaudit.imageio import read_mask

    return np.stack([np.stack([read_mask(out / "masks" / name / f"{sample_id}.png") > 0 for name in classes])
                     for sample_id in ids])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", nargs="+", default=["qam-ocm", "baseline"], choices=["qam-ocm", "qam", "baseline"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="corruption and scan seeds")
    parser.add_argument("--fraction", type=float, default=0.5)
    parser.add_argument("--kind", default="erode_dilate_5_13")
    parser.add_argument("--data", type=Path, default=JSRT)
    parser.add_argument("--work", type=Path, default=REPO / "benchmarks" / "runs" / "scan_predict")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--resume", action="store_true",
                        help="scan again with --resume where a scan finished: its training is reused, "
                             "scoring, refit and export run again (for a change after training)")
    args = parser.parse_args(argv)

    from benchmarks.make_corrupted import make_corrupted
    from maskaudit.checkpoint import add_refit
    from maskaudit.metrics import dice_per_class

    classes = tuple(sorted(path.name for path in (args.data / "masks").iterdir()))
    test_ids, _, truth = load_test_set(args.data, classes)
    images = test_images_dir(args.data, args.work)
    results = []
    for seed in args.seeds:
        noisy = args.work / f"train-{round(args.fraction * 100)}pct-{args.kind}-seed{seed}"
        if not (noisy / "truth.csv").is_file():
            make_corrupted(args.data, noisy, fraction=args.fraction, kinds=[args.kind], seed=seed,
                           ids=read_split(args.data)["train"], overwrite=True)
        for mode in args.modes:
            scan_dir = args.work / f"scan-{mode}-seed{seed}"
            again = args.resume and (scan_dir / "run.json").is_file()
            if not again:
                shutil.rmtree(scan_dir, ignore_errors=True)
            scan_seconds = run(["scan", str(noisy), "--out", str(scan_dir), "--mode", mode, "--seed", str(seed),
                                "--no-report", *(["--resume"] if again else [])])
            run_json = json.loads((scan_dir / "run.json").read_text())
            epochs, refit = run_json["options"]["epochs"], run_json.get("refit") or {}
            models = {mode: scan_dir / "model.pt"}
            if "samples" in refit:  # the same scan without its refit: the trained U-Net predicts
                models[f"{mode}, no refit"] = scan_dir / "model-no-refit.pt"
                shutil.copy(scan_dir / "model.pt", models[f"{mode}, no refit"])
                add_refit(models[f"{mode}, no refit"], None, {})
            for row, model in models.items():
                predicted = args.work / f"predict-{row.replace(', ', '-').replace(' ', '-')}-seed{seed}"
                shutil.rmtree(predicted, ignore_errors=True)
                run(["predict", str(model), str(images), "--out", str(predicted)])
                dice = group_dice(dice_per_class(predicted_masks(predicted, test_ids, classes), truth), classes)
                results.append({"mode": row, "seed": seed, "dice": dice, "scan_seconds": scan_seconds,
                                "epochs": epochs, "refit": refit, "refit_seconds": run_json["stage_seconds"].get("refit")})
                print(f"{row} seed {seed}: average {dice['average']:.3f} (" + ", ".join(
                    f"{group} {dice[group]:.3f}" for group in GROUPS) + f"); scan {scan_seconds:.0f} s, "
                    f"epochs {epochs}, refit {refit}", flush=True)

    print("\n| mode | seeds | lungs | heart | clavicles | average |\n|---|---|---|---|---|---|")
    for mode in dict.fromkeys(result["mode"] for result in results):
        rows = [result["dice"] for result in results if result["mode"] == mode]
        cells = [f"{np.mean([row[key] for row in rows]):.3f} ± {np.std([row[key] for row in rows]):.3f}"
                 for key in (*GROUPS, "average")]
        print(f"| {mode} | {len(rows)} | " + " | ".join(cells) + " |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
