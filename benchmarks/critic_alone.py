"""How far the label critic can see on a dataset by itself, with and without wrong masks to learn from.

The QAM is trained alone: its ranking loss only (``maskaudit.critic.ranking_loss`` on the scan's
own corruptions, ``corrupt_batch``, after the scan's augmentation), no U-Net and no Pick-and-Learn
term. Every ``--every`` epochs its AUROC (overall and per kind) on the corrupted copy's given masks
is printed as one JSON line. ``--setting`` chooses what it learns from and what it scores:

- ``given``: the copy's given masks (40 % of them wrong in the benchmark), scored on the same
  images, as in a scan;
- ``given-half``: the given masks of the even-numbered images, scored on the odd-numbered ones;
- ``clean-half``: the *clean* masks of the same even-numbered images (from ``--source``, the dataset
  the copy was made from), scored on the odd-numbered ones' given masks. No wrong mask teaches it
  and no scored image was seen: what this critic can learn to see on the dataset at all.

    python -m benchmarks.critic_alone runs/ddti-40pct --source ../shared/datasets/ddti --setting clean-half

The copy comes from ``benchmarks/run_detection.py`` (or ``make_corrupted``); the prepared images
are cached under ``--cache`` (default: next to the copy).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.detection_metrics import detection_report
from benchmarks.make_corrupted import read_truth
from maskaudit.critic import corrupt_batch, ranking_loss
from maskaudit.dataset import find_dataset
from maskaudit.models import QualityAwarenessModule
from maskaudit.prepare import prepare
from maskaudit.train import TrainConfig, augment_batch, epoch_batches

SETTINGS = ("given", "given-half", "clean-half")
SCORE_BATCH = 32


def training_masks(copy_masks: np.ndarray, ids: list[str], source: Path | None, size: int, cache: Path) -> np.ndarray:
    """(N, K, S, S) uint8: the clean masks of the copy's ``ids`` from ``source`` (None: the copy's own)."""
    if source is None:
        return copy_masks
    clean = prepare(find_dataset(source), size=size, cache_dir=cache / "source", progress=False)
    position = {sample.id: i for i, sample in enumerate(clean.index.samples)}
    missing = [i for i in ids if i not in position]
    if missing:
        raise ValueError(f"{len(missing)} samples of the copy are not in {source}, e.g. {missing[0]}")
    return np.asarray(clean.masks)[[position[i] for i in ids]]


def critic_scores(qam: QualityAwarenessModule, images: np.ndarray, masks: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """(R,) the critic's t of the given masks (N, K, S, S) of ``rows``, images (N, C, S, S) uint8."""
    qam.eval()
    scores = []
    with torch.no_grad():
        for start in range(0, len(rows), SCORE_BATCH):
            batch = rows[start : start + SCORE_BATCH]
            scores.append(qam(torch.from_numpy(images[batch].astype(np.float32) / 255.0),
                              torch.from_numpy(masks[batch] > 0).float())[0].numpy())
    qam.train()
    return np.concatenate(scores)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("copy", type=Path, help="corrupted copy with truth.csv")
    parser.add_argument("--setting", choices=SETTINGS, default="given")
    parser.add_argument("--source", type=Path, help="the clean dataset the copy was made from (clean-half)")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--every", type=int, default=5, help="score every this many epochs")
    parser.add_argument("--pairs", type=int, default=1, help="corrupted copies per given mask and step (a scan: 1)")
    parser.add_argument("--width", type=int, default=TrainConfig.qam_width)
    parser.add_argument("--size", type=int, default=TrainConfig.size)
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--lr", type=float, default=TrainConfig.lr)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, help="prepared-image cache (default: COPY-critic-cache)")
    args = parser.parse_args(argv)
    if args.setting == "clean-half" and args.source is None:
        parser.error("--setting clean-half needs --source, the clean dataset the copy was made from")
    cache = args.cache or args.copy.with_name(args.copy.name + "-critic-cache")
    torch.manual_seed(args.seed)

    data = prepare(find_dataset(args.copy), size=args.size, cache_dir=cache / "copy", progress=False)
    ids = [sample.id for sample in data.index.samples]
    truth = read_truth(args.copy / "truth.csv")
    images, given = np.asarray(data.images), np.asarray(data.masks)
    everything = np.arange(len(ids))
    halves = (everything[0::2], everything[1::2])
    train_rows, score_rows = (everything, everything) if args.setting == "given" else halves
    try:
        learned = training_masks(given, ids, args.source if args.setting == "clean-half" else None, args.size, cache)
    except ValueError as error:
        parser.error(str(error))

    qam = QualityAwarenessModule(images.shape[1], given.shape[1], width=args.width)
    optimizer = torch.optim.Adam(qam.parameters(), lr=args.lr)
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    for epoch in range(args.epochs):
        generator = torch.Generator().manual_seed(args.seed * 100_003 + epoch)
        for batch in epoch_batches(len(train_rows), args.batch_size, seed=args.seed, epoch=epoch):
            rows = train_rows[np.sort(batch)]
            image_batch, mask_batch = augment_batch(torch.from_numpy(images[rows].astype(np.float32) / 255.0),
                                                    torch.from_numpy(learned[rows].astype(np.float32)),
                                                    generator, flips=False)
            masks = mask_batch.numpy() > 0.5
            copies = [corrupt_batch(masks, rng, classes=data.index.classes) for _ in range(args.pairs)]
            corrupted = torch.from_numpy(np.concatenate([c for c, _ in copies])).float()
            changed = torch.from_numpy(np.concatenate([ch for _, ch in copies]))
            t = qam(torch.cat([image_batch] * (1 + args.pairs)), torch.cat([torch.from_numpy(masks).float(), corrupted]))[0]
            loss = ranking_loss(t[: len(rows)].repeat(args.pairs), t[len(rows) :], changed)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if (epoch + 1) % args.every == 0 or epoch + 1 == args.epochs:
            t = critic_scores(qam, images, given, score_rows)
            report = detection_report({ids[i]: truth[ids[i]] for i in score_rows}, dict(zip((ids[i] for i in score_rows), t)))
            print(json.dumps({"setting": args.setting, "epoch": epoch + 1, "masks_scored": len(score_rows),
                              "critic_auroc": round(report["overall"]["auroc"], 3),
                              "per_kind": {kind: round(row["auroc"], 3) for kind, row in report["per_kind"].items()},
                              "seconds": round(time.perf_counter() - started)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
