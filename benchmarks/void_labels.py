"""Void / ignore pixels and sparse label values: does a VOC-style void band change the audit, and
how large is the mask cache of a 0/255 mask with a few stray values?

``detection``: JSRT as a layout A label index (values 1..5, later structures drawn over earlier
ones: left lung, right lung, heart, left clavicle, right clavicle), 40 % of it corrupted with
benchmarks.make_corrupted, and the same two datasets with a PASCAL VOC style void band (value
255 on the pixels where the label changes within a 3 x 3 window, both sides of every border,
drawn around the masks as given). Four scans; reports suspects on the clean pair and AUROC / AP
on the corrupted pair, into RUNS/results-<which>-<size>px.json. ``--which`` picks the scans by
the start of their names ("clean", "40 %", "clean, void", ...), so that they can run in
separate processes.

``cache``: 200 generated 256 px images with one disk each, stored 0/255 with a few stray values
1..254 along the border (as after resampling); prepares the 128 px cache and reports its size.
Run it once with the code to measure and once with an older checkout on PYTHONPATH.

    python -m benchmarks.void_labels detection --runs /tmp/void-runs [--size 64 --epochs 12] [--which clean]
    python -m benchmarks.void_labels cache --runs /tmp/void-cache
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from maskaudit.corruptions import CORRUPTIONS
from benchmarks.detection_metrics import detection_report
from benchmarks.make_corrupted import make_corrupted, read_truth

REPO = Path(__file__).resolve().parents[1]
JSRT = REPO.parent / "shared" / "datasets" / "jsrt"
JSRT_ORDER = ("left_lung", "right_lung", "heart", "left_clavicle", "right_clavicle")  # label values 1..5
VOID = 255


def jsrt_label_index(dst: Path) -> Path:
    """JSRT as layout A: images copied, masks one label image with values 1..5 (later wins)."""
    if dst.exists():
        return dst
    temporary = dst.with_name(dst.name + ".partial")
    shutil.rmtree(temporary, ignore_errors=True)
    (temporary / "images").mkdir(parents=True)
    (temporary / "masks").mkdir()
    for image in sorted((JSRT / "images").glob("*.png")):
        shutil.copyfile(image, temporary / "images" / image.name)
        label = None
        for value, name in enumerate(JSRT_ORDER, start=1):
            inside = np.asarray(Image.open(JSRT / "masks" / name / image.name)) > 0
            label = np.zeros(inside.shape, np.uint8) if label is None else label
            label[inside] = value
        Image.fromarray(label).save(temporary / "masks" / image.name)
    temporary.rename(dst)
    return dst


def border_band(label: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels whose 3 x 3 neighbourhood holds another label (both sides of each border)."""
    padded = np.pad(label, 1, mode="edge")
    height, width = label.shape
    band = np.zeros(label.shape, bool)
    for dy in range(3):
        for dx in range(3):
            band |= padded[dy : dy + height, dx : dx + width] != label
    return band


def with_void(src: Path, dst: Path) -> Path:
    """A copy of the layout A dataset ``src`` whose masks hold 255 on the border band."""
    if dst.exists():
        return dst
    temporary = dst.with_name(dst.name + ".partial")
    shutil.rmtree(temporary, ignore_errors=True)
    shutil.copytree(src / "images", temporary / "images")
    (temporary / "masks").mkdir()
    for mask in sorted((src / "masks").glob("*.png")):
        label = np.asarray(Image.open(mask)).copy()
        label[border_band(label)] = VOID
        Image.fromarray(label).save(temporary / "masks" / mask.name)
    temporary.rename(dst)
    return dst


def scan_scores(dataset: Path, out_dir: Path, *, size: int, epochs: int | None, seed: int, progress: bool) -> dict:
    from maskaudit.pipeline import ScanConfig, scan
    from maskaudit.train import TrainConfig

    started = time.perf_counter()
    config = ScanConfig(train=TrainConfig(size=size, epochs=epochs, seed=seed), overwrite=True, report=False)
    result = scan(dataset, out_dir, config, progress=progress)
    run = json.loads((out_dir / "run.json").read_text())
    return {
        "scores": {row.id: row.quality_score for row in result.rows},
        "suspects": sum(row.suspect for row in result.rows),
        "classes": run["dataset"]["classes"],
        "label_values": run["dataset"]["label_values"],
        "epochs": run["options"]["epochs"],
        "seconds": round(time.perf_counter() - started, 1),
    }


def detection(args: argparse.Namespace) -> dict:
    runs = Path(args.runs)
    runs.mkdir(parents=True, exist_ok=True)
    clean = jsrt_label_index(runs / "jsrt-A")
    corrupted = runs / "jsrt-A-40pct"
    if not corrupted.exists():
        make_corrupted(clean, corrupted, fraction=0.4, kinds=tuple(CORRUPTIONS), seed=args.seed)
    truth = read_truth(corrupted / "truth.csv")
    datasets = {
        "40 % corrupted, void band": with_void(corrupted, runs / "jsrt-A-40pct-void"),
        "40 % corrupted, no void": corrupted,
        "clean, void band": with_void(clean, runs / "jsrt-A-void"),
        "clean, no void": clean,
    }
    if args.which != "all":  # run the two pairs in two processes: each writes its own results file
        datasets = {name: path for name, path in datasets.items() if name.startswith(args.which)}
    results_path = runs / f"results-{args.which}-{args.size}px.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for name, dataset in datasets.items():
        if name in results:
            continue
        outcome = scan_scores(dataset, runs / (dataset.name + "-scan"), size=args.size, epochs=args.epochs,
                              seed=args.seed, progress=args.progress)
        if "corrupted" in name:
            report = detection_report(truth, outcome["scores"])
            outcome.update(auroc=report["overall"]["auroc"], ap=report["overall"]["ap"],
                           auroc_per_kind={kind: part["auroc"] for kind, part in report["per_kind"].items()})
        del outcome["scores"]
        results[name] = outcome
        results_path.write_text(json.dumps(results, indent=2))
        print(name, json.dumps(outcome), flush=True)
    return results


def stray_dataset(dst: Path, *, n: int = 200, size: int = 256, seed: int = 0) -> Path:
    """``n`` grey images with one disk each; masks 0/255 with 1..254 on a few border pixels."""
    if dst.exists():
        return dst
    rng = np.random.default_rng(seed)
    (dst / "images").mkdir(parents=True)
    (dst / "masks").mkdir()
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        (cy, cx), radius = rng.uniform(0.3, 0.7, 2) * size, rng.uniform(0.1, 0.25) * size
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
        image = np.clip(80 + 90 * inside + rng.normal(0, 20, inside.shape), 0, 255).astype(np.uint8)
        mask = inside.astype(np.uint8) * 255
        edge = np.flatnonzero(border_band(inside.astype(np.uint8)))
        picked = rng.choice(edge, size=min(20, len(edge)), replace=False)
        mask.flat[picked] = rng.integers(1, 255, size=len(picked))  # resampling leftovers
        Image.fromarray(image).save(dst / "images" / f"case{i:03d}.png")
        Image.fromarray(mask).save(dst / "masks" / f"case{i:03d}.png")
    return dst


def cache(args: argparse.Namespace) -> dict:
    import maskaudit
    from maskaudit.dataset import find_dataset
    from maskaudit.prepare import prepare

    runs = Path(args.runs)
    dataset = stray_dataset(runs / "stray-255")
    out = runs / "cache-out"
    shutil.rmtree(out, ignore_errors=True)
    index = find_dataset(dataset)
    data = prepare(index, size=128, cache_dir=out)
    files = sorted(out.glob("*.npy"))
    result = {
        "maskaudit": str(Path(maskaudit.__file__).parent),
        "classes": len(index.classes),
        "masks_shape": list(data.masks.shape),
        "cache_bytes": sum(path.stat().st_size for path in files),
    }
    print(json.dumps(result), flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("detection", "cache"))
    parser.add_argument("--runs", required=True, help="Working directory for datasets and scans.")
    parser.add_argument("--size", type=int, default=128, help="Working resolution of each scan.")
    parser.add_argument("--epochs", type=int, default=None, help="Epoch budget of each scan (default: maskaudit's).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--which", default="all",
                        help="detection: scan only the datasets whose name starts with this ('clean', '40 %%').")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    (detection if args.what == "detection" else cache)(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
