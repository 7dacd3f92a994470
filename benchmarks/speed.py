"""Speed and memory: training/scoring images per second, a default JSRT scan's stages and peak RSS.

    python -m benchmarks.speed                    # throughput at 128 and 256 px, scans at 1x and 8x JSRT
    python -m benchmarks.speed --skip-scans       # throughput only

Peak RSS is measured per scan in a child process (ru_maxrss of the child), so the numbers are
those of `maskaudit scan` alone. The 8x dataset repeats every JSRT pair 8 times under new names.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from maskaudit.inference import run_networks
from maskaudit.models import QualityAwarenessModule, UNet
from maskaudit.precision import dtype_name
from maskaudit.critic import corrupt_batch
from maskaudit.train import TrainConfig, autocast_dtype, weighted_loss

REPO = Path(__file__).resolve().parents[1]
JSRT = REPO.parent / "shared" / "datasets" / "jsrt"


def training_throughput(size: int, *, precision: str, steps: int = 12, batch: int = TrainConfig().batch_size,
                        width: int = 16) -> float:
    """Images per second of joint U-Net + QAM training steps on random data (after one warm-up step),
    the label critic's corrupted copies included (made with maskaudit.critic.corrupt_batch each step)."""
    torch.manual_seed(0)
    unet, qam = UNet(1, 5, width=width), QualityAwarenessModule(1, 5, width=8)
    unet.to(memory_format=torch.channels_last)
    qam.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam([*unet.parameters(), *qam.parameters()], lr=1e-3)
    images = torch.rand(batch, 1, size, size).contiguous(memory_format=torch.channels_last)
    masks = torch.zeros(batch, 5, size, size)  # five rectangles of different sizes per image
    for k in range(5):
        masks[:, k, size // 8 * (k % 3 + 1) : size // 8 * (k % 3 + 3), size // 10 * (k + 1) : size // 10 * (k + 4)] = 1
    masks = masks.contiguous(memory_format=torch.channels_last)
    rng = np.random.default_rng(0)
    dtype = autocast_dtype(torch.device("cpu"), precision)
    for step in range(steps + 1):
        if step == 1:
            started = time.perf_counter()
        corrupted, changed = corrupt_batch(masks.numpy() > 0.5, rng)
        corrupted = torch.from_numpy(corrupted).float().contiguous(memory_format=torch.channels_last)
        loss = weighted_loss(unet, qam, images, masks, config=TrainConfig(), amp_dtype=dtype, multilabel=True,
                             corrupted=corrupted, changed=torch.from_numpy(changed))[0]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return steps * batch / (time.perf_counter() - started)


def scoring_throughput(size: int, *, count: int = 96) -> float:
    """Images per second of the scoring forward pass (U-Net + QAM, no gradients)."""
    unet, qam = UNet(1, 5, width=16).eval(), QualityAwarenessModule(1, 5, width=8).eval()
    images = np.random.default_rng(0).integers(0, 255, (count, 1, size, size), dtype=np.uint8)
    masks = np.zeros((count, 5, size, size), np.uint8)
    started = time.perf_counter()
    for _ in run_networks(images, masks, unet, qam, multilabel=True):
        pass
    return count / (time.perf_counter() - started)


def repeated_dataset(copies: int, target: Path) -> Path:
    """JSRT with every pair repeated ``copies`` times (ids suffixed _r0, _r1, ...)."""
    if target.exists():
        return target
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    classes = sorted(path.name for path in (JSRT / "masks").iterdir() if path.is_dir())
    for image in sorted((JSRT / "images").glob("*.png")):
        for copy in range(copies):
            name = f"{image.stem}_r{copy}.png"
            (staging / "images").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(image, staging / "images" / name)
            for cls in classes:
                (staging / "masks" / cls).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(JSRT / "masks" / cls / image.name, staging / "masks" / cls / name)
    staging.rename(target)
    return target


def scan_in_child(dataset: Path, out_dir: Path) -> dict:
    """Run a default `maskaudit scan` in a child process; return wall seconds, peak RSS and stages."""
    started = time.perf_counter()
    command = [sys.executable, "-m", "maskaudit", "scan", str(dataset), "--out", str(out_dir), "--overwrite", "-q"]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    run = json.loads((out_dir / "run.json").read_text())
    return {"samples": run["dataset"]["num_samples"], "epochs": run["options"]["epochs"], "wall_seconds": seconds,
            "peak_rss_mib": peak_mib, "stage_seconds": run["stage_seconds"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-scans", action="store_true")
    parser.add_argument("--copies", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--runs", type=Path, default=REPO / "benchmarks" / "runs" / "speed")
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}\n")
    auto_name = dtype_name(torch.device("cpu"), "auto")
    print(f"| resolution | training img/s (fp32) | training img/s (auto: {auto_name} here) | scoring img/s |")
    print("|---|---|---|---|")
    for size in (128, 256):
        fp32 = training_throughput(size, precision="fp32")
        auto = training_throughput(size, precision="auto")
        print(f"| {size} px | {fp32:.1f} | {auto:.1f} | {scoring_throughput(size):.1f} |")
    sys.stdout.flush()
    if args.skip_scans:
        return 0
    args.runs.mkdir(parents=True, exist_ok=True)
    print("\n| dataset | samples | epochs | wall s | peak RSS MiB | seconds per stage |")
    print("|---|---|---|---|---|---|")
    for copies in args.copies:
        dataset = JSRT if copies == 1 else repeated_dataset(copies, args.runs / f"jsrt-x{copies}")
        # Each scan gets its own child-measuring process so ru_maxrss is that scan's alone.
        probe = subprocess.run(
            [sys.executable, "-c", "import json, sys; from benchmarks.speed import scan_in_child; "
             "from pathlib import Path; print(json.dumps(scan_in_child(Path(sys.argv[1]), Path(sys.argv[2]))))",
             str(dataset), str(args.runs / f"scan-x{copies}")],
            check=True, capture_output=True, text=True, cwd=REPO,
        )
        outcome = json.loads(probe.stdout.strip().splitlines()[-1])
        stages = ", ".join(f"{name} {value:.0f}" for name, value in outcome["stage_seconds"].items())
        print(f"| JSRT x{copies} | {outcome['samples']} | {outcome['epochs']} | {outcome['wall_seconds']:.0f} | "
              f"{outcome['peak_rss_mib']:.0f} | {stages} |")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
