"""Table 1 runs saved before train() re-estimated BatchNorm statistics: test Dice as trained and
with the final U-Net's statistics re-estimated (``maskaudit.train.recalibrate_batchnorm``).

Each argument is RUN_DIR:TRAIN_SET, a mode's directory of ``benchmarks/table1.py`` (with model.pt
and cache/) and the training copy it learned from; the test images and Dice groups are table1's.

    python -m benchmarks.table1_batchnorm runs/qam-ocm-1-8:runs/train-50pct-erode_dilate_1_8-seed0
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from benchmarks.table1 import JSRT, group_dice, load_test_set


def main(argv: list[str] | None = None) -> int:
    from maskaudit.dataset import find_dataset
    from maskaudit.metrics import dice_per_class
    from maskaudit.predict import load_segmenter, segment
    from maskaudit.prepare import prepare
    from maskaudit.train import recalibrate_batchnorm

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="RUN_DIR:TRAIN_SET")
    parser.add_argument("--data", type=Path, default=JSRT)
    args = parser.parse_args(argv)
    for item in args.runs:
        run_dir, train_set = (Path(part) for part in item.split(":"))
        unet, state = load_segmenter(run_dir / "model.pt")
        classes = tuple(state["classes"])
        _, images, masks = load_test_set(args.data, classes)
        size = int(state["config"]["size"])

        def average_dice() -> float:
            predicted = np.stack([segment(unet, pixels, size=size, channels=state["image_channels"],
                                          multilabel=state["multilabel"], precision=state["config"]["precision"])
                                 for pixels in images])
            return group_dice(dice_per_class(predicted, masks), classes)["average"]

        before = average_dice()
        data = prepare(find_dataset(train_set), size=size, cache_dir=run_dir / "cache")
        recalibrate_batchnorm(unet, data.images, data.masks, batch_size=16, device=torch.device("cpu"))
        unet.eval()
        print(f"{run_dir.name}: average Dice as trained {before:.3f}, BatchNorm re-estimated {average_dice():.3f}",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
