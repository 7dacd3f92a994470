"""Volume datasets: case-level detection on corrupted hippocampus labels, and scan cost as slices grow.

    # 30 % of the 260 label volumes corrupted -> case-level AUROC / AP, scan time, peak RSS
    python benchmarks/volumes.py auroc --work /tmp/maskaudit-volumes [--size 64] [--axis 2] [--fraction 0.3]

    # the case metrics of that run again from its slices.csv (after a change of the case aggregation)
    python benchmarks/volumes.py rescore --work /tmp/maskaudit-volumes

    # the hippocampus set tiled to >= 20,000 slices at 1x, 4x, 8x -> seconds and peak RSS per stage
    python benchmarks/volumes.py scale --work /tmp/maskaudit-volumes --factors 1 4 8 [--load-only | --train-only]

Each measurement runs in a fresh Python process so that peak RSS is that scan's alone. The work
directory receives the corrupted copy (label files written, images symlinked) and the scan outputs;
the shared dataset is only read. Corruptions (one per corrupted case, chosen at random with seed 0):
dilate or erode every label by 1-3 voxels, shift the labels by 2-4 voxels, drop one label, swap
the two labels, add a spurious ball of radius 3-5 voxels.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HIPPOCAMPUS = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "hippocampus"
CORRUPTIONS = ("dilate", "erode", "shift", "drop_label", "swap_labels", "spurious_blob")


def corrupt_labels(labels: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """A corrupted copy of an (X, Y, Z) integer label volume (labels 1..K, 0 = background)."""
    from scipy import ndimage

    present = [int(value) for value in np.unique(labels) if value > 0]
    out = labels.copy()
    if kind in ("dilate", "erode"):
        radius = int(rng.integers(1, 4))
        ball = ndimage.generate_binary_structure(3, 1)
        if kind == "dilate":
            grown = ndimage.grey_dilation(labels, footprint=ndimage.iterate_structure(ball, radius))
            out = np.where(labels > 0, labels, grown)
        else:
            out[:] = 0
            for value in present:
                out[ndimage.binary_erosion(labels == value, ball, iterations=radius)] = value
    elif kind == "shift":
        axis, step = int(rng.integers(0, 3)), int(rng.integers(2, 5)) * int(rng.choice([-1, 1]))
        out = np.roll(labels, step, axis=axis)
    elif kind == "drop_label":
        out[labels == int(rng.choice(present))] = 0
    elif kind == "swap_labels":
        out[labels == 1], out[labels == 2] = 2, 1
    elif kind == "spurious_blob":
        radius = int(rng.integers(3, 6))
        centre = [int(rng.integers(radius, size - radius)) for size in labels.shape]
        grid = np.ogrid[tuple(slice(0, size) for size in labels.shape)]
        ball = sum((axis - c) ** 2 for axis, c in zip(grid, centre)) <= radius ** 2
        out[ball & (labels == 0)] = int(rng.choice(present))
    else:
        raise ValueError(f"unknown corruption {kind!r}")
    return out.astype(labels.dtype)


def make_corrupted(source: Path, target: Path, *, fraction: float = 0.3, seed: int = 0) -> dict[str, str]:
    """Copy ``source`` to ``target`` (images symlinked) with ``fraction`` of the label volumes corrupted.

    Returns {case: corruption} of the corrupted cases.
    """
    import nibabel as nib

    if target.exists():
        shutil.rmtree(target)
    (target / "imagesTr").mkdir(parents=True)
    (target / "labelsTr").mkdir()
    shutil.copy(source / "dataset.json", target / "dataset.json")
    for image in sorted((source / "imagesTr").iterdir()):
        (target / "imagesTr" / image.name).symlink_to(image.resolve())
    labels = sorted((source / "labelsTr").glob("*.nii.gz"))
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(labels), size=round(fraction * len(labels)), replace=False)
    corrupted: dict[str, str] = {}
    for position, path in enumerate(labels):
        case = path.name[: -len(".nii.gz")]
        if position not in set(chosen.tolist()):
            (target / "labelsTr" / path.name).symlink_to(path.resolve())
            continue
        kind = CORRUPTIONS[int(rng.integers(len(CORRUPTIONS)))]
        image = nib.load(path)
        values = corrupt_labels(np.asanyarray(image.dataobj), kind, rng)
        nib.save(nib.Nifti1Image(values, image.affine, image.header), target / "labelsTr" / path.name)
        corrupted[case] = kind
    return corrupted


def tile_dataset(source: Path, target: Path, *, copies: int) -> int:
    """``copies`` x every case of ``source`` under new case names in ``target`` (symlinks); returns the case count."""
    if target.exists():
        shutil.rmtree(target)
    (target / "imagesTr").mkdir(parents=True)
    (target / "labelsTr").mkdir()
    shutil.copy(source / "dataset.json", target / "dataset.json")
    cases = 0
    for label in sorted((source / "labelsTr").glob("*.nii.gz")):
        case = label.name[: -len(".nii.gz")]
        for copy in range(copies):
            name = f"{case}c{copy:03d}"
            (target / "labelsTr" / f"{name}.nii.gz").symlink_to(label.resolve())
            image = (source / "imagesTr" / f"{case}_0000.nii.gz").resolve()
            (target / "imagesTr" / f"{name}_0000.nii.gz").symlink_to(image)
            cases += 1
    return cases


_MEMORY_WATCH = (
    "import threading\n"
    "timeline = []\n"
    "def watch():\n"
    "    while True:\n"
    "        fields = dict(line.split(':', 1) for line in open('/proc/self/status') if ':' in line)\n"
    "        kib = lambda name: int(fields.get(name, '0 kB').split()[0])\n"
    "        timeline.append((time.perf_counter() - start, kib('VmRSS'), kib('RssAnon'), kib('RssFile'), kib('VmHWM')))\n"
    "        time.sleep(0.5)\n"
    "threading.Thread(target=watch, daemon=True).start()\n"
)


def run_scan(dataset: Path, out: Path, options: list[str]) -> dict:
    """Scan ``dataset`` in a child process; returns its stage seconds, wall time, peak RSS (MiB) and, per
    stage, the peak resident MiB sampled every 0.5 s: all, anonymous (the process's own arrays) and
    file-backed (pages of the memory-mapped cache and of the libraries)."""
    code = (
        "import json, resource, sys, time\n"
        "start = time.perf_counter()\n"
        + _MEMORY_WATCH +
        "from maskaudit.cli import main\n"
        "try:\n"
        "    main(sys.argv[1:], standalone_mode=False)\n"
        "finally:\n"
        "    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
        "    print(json.dumps({'wall': time.perf_counter() - start, 'peak_rss_mib': rss, 'timeline': timeline}),"
        " file=sys.stderr)\n"
    )
    command = [sys.executable, "-c", code, "scan", str(dataset), "--out", str(out), "--overwrite", "-q", *options]
    completed = subprocess.run(command, capture_output=True, text=True, env={**os.environ})
    if completed.returncode:
        raise SystemExit(f"scan failed:\n{completed.stderr[-3000:]}")
    measured = json.loads(completed.stderr.strip().splitlines()[-1])
    run = json.loads((out / "run.json").read_text())
    timeline = np.asarray(measured.pop("timeline"), float).reshape(-1, 5)
    return {**measured, "stage_seconds": run["stage_seconds"], "epochs": run["options"]["epochs"],
            "slices": run["dataset"]["num_samples"], "cases": run["dataset"].get("num_cases"),
            "stage_peak_mib": stage_peaks(timeline, run["stage_seconds"], offset=measured["wall"]
                                          - sum(run["stage_seconds"].values()))}


def stage_peaks(timeline: np.ndarray, stage_seconds: dict[str, float], *, offset: float) -> dict[str, dict]:
    """{stage: {rss, anon, file, hwm}} MiB within each stage of a (T, 5) timeline (seconds, VmRSS,
    RssAnon, RssFile, VmHWM in KiB): the sampled peaks, and the high-water mark (the peak RSS so far)
    at the stage's last sample, which also catches a peak shorter than the 0.5 s between samples.
    The stages follow each other from ``offset`` s (start-up before them)."""
    peaks, begin = {}, offset
    for stage, seconds in stage_seconds.items():
        inside = timeline[(timeline[:, 0] >= begin) & (timeline[:, 0] <= begin + seconds)]
        if len(inside):
            peaks[stage] = {name: round(float(inside[:, column].max()) / 1024)
                            for column, name in ((1, "rss"), (2, "anon"), (3, "file"), (4, "hwm"))}
        begin += seconds
    return peaks


def case_metrics(ids: list[str], badness: np.ndarray, flagged: np.ndarray, corrupted: dict[str, str]) -> dict:
    """Case-level AUROC / AP (overall and per corruption kind) and the precision / recall of the suspects."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    truth = np.array([case in corrupted for case in ids])
    per_kind = {}
    for kind in CORRUPTIONS:
        keep = np.array([case not in corrupted or corrupted[case] == kind for case in ids])
        if truth[keep].any():
            per_kind[kind] = {"cases": int(truth[keep].sum()), "auroc": round(roc_auc_score(truth[keep], badness[keep]), 3)}
    return {
        "cases": len(ids), "corrupted": int(truth.sum()),
        "auroc": round(roc_auc_score(truth, badness), 3), "ap": round(average_precision_score(truth, badness), 3),
        "suspects": int(flagged.sum()),
        "precision_of_suspects": round(float(truth[flagged].mean()), 3) if flagged.any() else None,
        "recall_of_suspects": round(float(flagged[truth].mean()), 3), "per_corruption": per_kind,
    }


def auroc(args: argparse.Namespace) -> None:
    from maskaudit.export import read_scores_csv

    dataset = args.work / "hippocampus-corrupted"
    corrupted = make_corrupted(HIPPOCAMPUS, dataset, fraction=args.fraction, seed=args.seed)
    (args.work / "corrupted.json").write_text(json.dumps(corrupted, indent=1))  # the truth, for rescore
    options = ["--size", str(args.size), "--seed", str(args.seed)]
    options += ["--axis", str(args.axis)] if args.axis is not None else []
    measured = run_scan(dataset, args.work / "scan-auroc", options)
    rows = read_scores_csv(args.work / "scan-auroc" / "scores.csv")
    metrics = case_metrics([row["id"] for row in rows], -np.array([float(row["quality_score"]) for row in rows]),
                           np.array([row["suspect"] == "1" for row in rows]), corrupted)
    print(json.dumps({**metrics, "options": options, **measured}, indent=2))


def rescore(args: argparse.Namespace) -> None:
    """Case metrics of an earlier ``auroc`` run, recomputed from its slices.csv with today's case aggregation."""
    import csv

    from maskaudit.volume_results import aggregate_cases

    corrupted = json.loads((args.work / "corrupted.json").read_text())
    with open(args.work / "scan-auroc" / "slices.csv", newline="") as handle:
        slices = list(csv.DictReader(handle))
    ids = sorted({row["case"] for row in slices})
    position = {case: number for number, case in enumerate(ids)}
    case_of = np.array([position[row["case"]] for row in slices])
    order = np.argsort(case_of, kind="stable")
    suspicion = np.array([float(row["suspicion"]) for row in slices])[order]
    scores = aggregate_cases(suspicion, case_of[order], len(ids), seed=args.seed)
    print(json.dumps(case_metrics(ids, scores.suspicion, scores.quality < 0.5, corrupted), indent=2))


def run_prepare(dataset: Path, cache: Path, size: int) -> dict:
    """Only the load stage (slicing into the memory-mapped cache) in a child process: seconds and peak RSS."""
    code = (
        "import json, resource, sys, time\n"
        "from pathlib import Path\n"
        "from maskaudit.formats.nnunet import find_nnunet, through_plane_axis\n"
        "from maskaudit.prepare_volumes import prepare_volumes\n"
        "start = time.perf_counter()\n"
        "volumes = find_nnunet(sys.argv[1])\n"
        "data = prepare_volumes(volumes, size=int(sys.argv[3]), axis=through_plane_axis(volumes.spacing),"
        " cache_dir=Path(sys.argv[2]))\n"
        "print(json.dumps({'load_seconds': time.perf_counter() - start, 'slices': len(data.data.images),"
        " 'cache_mib': (data.data.images.nbytes + data.data.masks.nbytes) / 2**20,"
        " 'peak_rss_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))\n"
    )
    completed = subprocess.run([sys.executable, "-c", code, str(dataset), str(cache), str(size)],
                               capture_output=True, text=True)
    if completed.returncode:
        raise SystemExit(f"prepare failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def run_train(dataset: Path, cache: Path, size: int, epochs: int) -> dict:
    """Slicing, then ``epochs`` epochs of a scan's training (its slice sampler, no scoring) in a child
    process: seconds of each, optimizer steps, peak RSS."""
    code = (
        "import json, resource, sys, time\n"
        "from pathlib import Path\n"
        "from maskaudit.formats.nnunet import find_nnunet, through_plane_axis\n"
        "from maskaudit.prepare_volumes import prepare_volumes\n"
        "from maskaudit.sampling import slice_sampler\n"
        "from maskaudit.train import TrainConfig, train\n"
        "start = time.perf_counter()\n"
        "volumes = find_nnunet(sys.argv[1])\n"
        "data = prepare_volumes(volumes, size=int(sys.argv[3]), axis=through_plane_axis(volumes.spacing),"
        " cache_dir=Path(sys.argv[2])).data\n"
        "loaded = time.perf_counter()\n"
        "sampler = slice_sampler(data.masks)\n"
        "result = train(data, TrainConfig(size=int(sys.argv[3]), epochs=int(sys.argv[4])), sampler=sampler)\n"
        "trained = time.perf_counter() - loaded\n"
        "epochs = result.config.epochs\n"
        "print(json.dumps({'slices': len(data.images), 'load_seconds': loaded - start, 'train_seconds': trained,"
        " 'epochs': epochs, 'slices_per_epoch': sampler.draws, 'steps_per_epoch': -(-sampler.draws // 8),"
        " 'train_seconds_per_epoch': trained / epochs,"
        " 'peak_rss_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))\n"
    )
    completed = subprocess.run([sys.executable, "-c", code, str(dataset), str(cache), str(size), str(epochs)],
                               capture_output=True, text=True)
    if completed.returncode:
        raise SystemExit(f"training failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def scale(args: argparse.Namespace) -> None:
    """A whole default scan (report included; --epochs to shorten training) at each factor, or with
    --load-only just the slicing stage, or with --train-only the slicing and --epochs epochs of training."""
    for factor in args.factors:
        dataset = args.work / f"hippocampus-x{factor}"
        cases = tile_dataset(HIPPOCAMPUS, dataset, copies=args.base_copies * factor)
        out = args.work / f"scan-x{factor}"
        if args.load_only:
            measured = run_prepare(dataset, out / "cache", args.size)
        elif args.train_only:
            measured = run_train(dataset, out / "cache", args.size, args.epochs or 1)
        else:
            epochs = [] if args.epochs is None else ["--epochs", str(args.epochs)]
            measured = run_scan(dataset, out, ["--size", str(args.size), *epochs])
        print(json.dumps({"factor": factor, "cases": cases, **measured}), flush=True)
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(dataset, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["auroc", "rescore", "scale"])
    parser.add_argument("--work", type=Path, required=True, help="Scratch directory outside the repository.")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--axis", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fraction", type=float, default=0.3, help="auroc: share of the label volumes corrupted.")
    parser.add_argument("--factors", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--base-copies", type=int, default=3, help="Copies of each case at 1x (3: ~27,000 slices).")
    parser.add_argument("--epochs", type=int, default=None,
                        help="scale: epochs of training (default: a scan's own default; --train-only: 1).")
    parser.add_argument("--load-only", action="store_true", help="scale: measure only the slicing (load) stage.")
    parser.add_argument("--train-only", action="store_true",
                        help="scale: measure the slicing and --epochs epochs of training (no scoring).")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    {"auroc": auroc, "rescore": rescore, "scale": scale}[args.mode](args)
    print(f"# total {time.perf_counter() - started:.0f} s, benchmark process peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB", file=sys.stderr)


if __name__ == "__main__":
    main()
