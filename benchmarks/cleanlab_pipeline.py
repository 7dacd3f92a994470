"""The baseline a cleanlab user would build: K-fold out-of-fold U-Net predictions + cleanlab.

Shape key: N samples, C image channels, K classes, H x W pixels.

1. Labels (N, K, H, W) {0, 1} become ONE label-index map (N, H, W): 0 = background, k + 1 =
   class k. cleanlab's segmentation API wants mutually exclusive classes; where classes of a
   multi-label (layout B) sample overlap, the class with the SMALLER total area over the whole
   dataset wins (it is painted last), e.g. a JSRT clavicle over a lung is labelled clavicle.
   For layout A data (no overlaps) the map is exactly the original label image.
2. The samples are split into ``folds`` random folds; for each fold a fresh softmax U-Net with
   K + 1 outputs is trained on the other folds and predicts the held-out fold, giving
   out-of-fold ``pred_probs`` (N, K + 1, H, W).
3. ``cleanlab.segmentation.rank.get_label_quality_scores(labels, pred_probs, method=...)``
   gives one score per sample in [0, 1], lower = label more likely wrong.

So that the comparison with maskaudit is about the method (QAM re-weighting on the whole data
vs. cross-validation + cleanlab) and not about the network, this reuses maskaudit's own
``UNet``, its per-sample loss (cross-entropy + soft Dice, exclusive-class form) averaged
plainly over the batch (no QAM, no re-weighting), its batch split and, with ``augment=True``,
its augmentation; optimiser Adam, same defaults as ``maskaudit.train.TrainConfig``.

Budget: each fold trains on (folds - 1) / folds of the data for ``epochs`` epochs, so with
``folds=2`` the total number of sample visits equals one maskaudit scan with the same epochs
(plus one prediction pass). ``folds=5`` costs 4x that.

Note: cleanlab 2.9's ``get_label_quality_scores`` offers ``method="softmin"`` (its default,
used here) and ``"num_pixel_issues"``; there is no ``"softmax"`` method.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Sequence

import numpy as np

from maskaudit.train import TrainConfig

__all__ = ["label_index_map", "out_of_fold_pred_probs", "run_cleanlab_pipeline"]

_DEFAULTS = TrainConfig()  # batch size and learning rate of a default maskaudit scan


def label_index_map(label_masks: np.ndarray) -> np.ndarray:
    """(N, K, H, W) {0, 1} -> (N, H, W) uint8 label map, 0 = background, k + 1 = class k.

    Overlaps: classes are painted from the largest total area to the smallest, so the class
    with the smaller total area over the dataset wins (ties: the later class index wins).
    """
    m = np.asarray(label_masks)
    if m.ndim != 4:
        raise ValueError(f"label_masks must be (N, K, H, W), got shape {m.shape}")
    if m.shape[1] > 254:
        raise ValueError(f"at most 254 classes fit a uint8 label map, got {m.shape[1]}")
    areas = m.reshape(m.shape[0], m.shape[1], -1).astype(bool).sum(axis=(0, 2))
    order = sorted(range(m.shape[1]), key=lambda k: (-int(areas[k]), k))
    labels = np.zeros((m.shape[0], *m.shape[2:]), np.uint8)
    for k in order:
        labels[m[:, k].astype(bool)] = k + 1
    return labels


def _onehot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(B, H, W) label map -> (B, K, H, W) float32 one-hot WITHOUT the background channel."""
    return (labels[:, None] == np.arange(1, num_classes + 1)[None, :, None, None]).astype(np.float32)


def out_of_fold_pred_probs(
    images: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    *,
    folds: int = 2,
    epochs: int,
    batch_size: int = _DEFAULTS.batch_size,
    width: int = 16,
    lr: float = _DEFAULTS.lr,
    augment: bool = True,
    seed: int = 0,
    device: str = "cpu",
    precision: str = "auto",
) -> np.ndarray:
    """Out-of-fold softmax probabilities (N, K + 1, H, W) float32 of maskaudit's U-Net.

    ``images`` (N, C, H, W) uint8, ``labels`` (N, H, W) label map with values 0..K.
    H and W must be divisible by 8 (the U-Net's three poolings).
    """
    import torch

    from maskaudit.models import UNet
    from maskaudit.train import augment_batch, autocast_dtype, epoch_batches, per_sample_loss

    n, c, h, w = images.shape
    if h % 8 or w % 8:
        raise ValueError(f"H and W must be divisible by 8, got {h}x{w}")
    if not 2 <= folds <= n:
        raise ValueError(f"folds must be in 2..N={n}, got {folds}")
    dev = torch.device(device)
    # The same speed path as a maskaudit scan (bf16 autocast where the CPU computes it natively,
    # channels-last on CPU), so that the wall-time ratio measures the method, not the arithmetic.
    amp_dtype = autocast_dtype(dev, precision)
    memory_format = torch.channels_last if dev.type == "cpu" else torch.contiguous_format
    fold_of = np.empty(n, int)
    for f, part in enumerate(np.array_split(np.random.default_rng(seed).permutation(n), folds)):
        fold_of[part] = f
    pred_probs = np.zeros((n, num_classes + 1, h, w), np.float32)

    for f in range(folds):
        train_idx = np.flatnonzero(fold_of != f)
        test_idx = np.flatnonzero(fold_of == f)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed * 1000 + f)
            unet = UNet(c, num_classes + 1, width=width).to(dev).to(memory_format=memory_format)
        optimizer = torch.optim.Adam(unet.parameters(), lr=lr)
        for epoch in range(epochs):
            unet.train()
            generator = torch.Generator().manual_seed(seed * 100_003 + 1000 * f + epoch)
            for batch in epoch_batches(len(train_idx), batch_size, seed=seed * 1000 + f, epoch=epoch):
                rows = np.sort(train_idx[batch])
                x = torch.from_numpy(images[rows].astype(np.float32) / 255.0)
                y = torch.from_numpy(_onehot(labels[rows], num_classes))
                if augment:
                    x, y = augment_batch(x, y, generator, flips=False)
                with torch.autocast(dev.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                    logits, _ = unet(x.to(dev).contiguous(memory_format=memory_format))
                loss = per_sample_loss(logits.float(), y.to(dev), multilabel=False)[0]
                loss = loss.mean()
                if not torch.isfinite(loss):
                    raise RuntimeError(f"loss became {loss.item()} in fold {f}, epoch {epoch}")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        unet.eval()
        with torch.no_grad():
            for start in range(0, len(test_idx), 32):
                rows = test_idx[start : start + 32]
                x = torch.from_numpy(images[rows].astype(np.float32) / 255.0).to(dev)
                pred_probs[rows] = torch.softmax(unet(x.contiguous(memory_format=memory_format))[0].float(),
                                                 dim=1).cpu().numpy()
    return pred_probs


def run_cleanlab_pipeline(
    images: np.ndarray,
    label_masks: np.ndarray,
    *,
    folds: int = 2,
    epochs: int,
    batch_size: int = _DEFAULTS.batch_size,
    width: int = 16,
    seed: int = 0,
    device: str = "cpu",
    lr: float = _DEFAULTS.lr,
    augment: bool = True,
    method: str = "softmin",
    precision: str = "auto",
) -> tuple[np.ndarray, float]:
    """cleanlab label quality scores from K-fold out-of-fold U-Net predictions.

    Parameters
    ----------
    images : (N, C, H, W) uint8
    label_masks : (N, K, H, W) uint8 {0, 1}
        Layout A or B masks as maskaudit carries them (see :func:`label_index_map` for overlaps).
    folds : int >= 2
    epochs, batch_size, width, lr, augment :
        Training of each fold's U-Net (see the module docstring for the budget).
    seed : int
        Folds, initialisation, batches and augmentation.
    device : str
        A torch device name.
    precision : {"auto", "fp32", "bf16"}
        As ``maskaudit scan --precision`` (autocast for training; prediction runs in fp32).
    method : {"softmin", "num_pixel_issues"}
        cleanlab's scoring method.

    Returns
    -------
    scores : (N,) float in [0, 1], lower = label more likely wrong.
    seconds : float, wall time of the whole pipeline (training, prediction, scoring).

    Raises
    ------
    ValueError
        Bad shapes or dtypes, H or W not divisible by 8, folds out of range.
    """
    from cleanlab.segmentation.rank import get_label_quality_scores

    started = time.perf_counter()
    images = np.asarray(images)
    label_masks = np.asarray(label_masks)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"images must be (N, C, H, W) uint8, got {images.shape} {images.dtype}")
    if label_masks.ndim != 4 or label_masks.shape[0] != images.shape[0] \
            or label_masks.shape[2:] != images.shape[2:]:
        raise ValueError(
            f"label_masks must be (N, K, H, W) matching images {images.shape}, got {label_masks.shape}"
        )
    num_classes = label_masks.shape[1]
    labels = label_index_map(label_masks)
    pred_probs = out_of_fold_pred_probs(
        images, labels, num_classes, folds=folds, epochs=epochs, batch_size=batch_size,
        width=width, lr=lr, augment=augment, seed=seed, device=device, precision=precision,
    )
    with contextlib.redirect_stdout(None):  # cleanlab may still print despite verbose=False
        scores, _ = get_label_quality_scores(labels, pred_probs, method=method, verbose=False)
    return np.asarray(scores, float), time.perf_counter() - started


def _main(argv: Sequence[str] | None = None) -> int:
    from benchmarks.detection_metrics import detection_report, format_markdown_table
    from benchmarks.make_corrupted import load_dataset, read_truth

    p = argparse.ArgumentParser(description="Run the cleanlab baseline on a layout-A/B dataset.")
    p.add_argument("root")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--limit", type=int, help="use only the first LIMIT ids (sorted)")
    p.add_argument("--folds", type=int, default=2)
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--batch-size", type=int, default=_DEFAULTS.batch_size)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--truth", help="truth.csv of make_corrupted: print the detection report")
    a = p.parse_args(argv)
    ds = load_dataset(a.root, size=a.size)
    ids = ds.ids[: a.limit] if a.limit else ds.ids
    n = len(ids)
    scores, seconds = run_cleanlab_pipeline(
        ds.images[:n], ds.masks[:n], folds=a.folds, epochs=a.epochs, batch_size=a.batch_size,
        width=a.width, seed=a.seed, augment=not a.no_augment,
    )
    print(f"{n} samples at {a.size} px, {a.folds} folds x {a.epochs} epochs: {seconds:.1f} s")
    if a.truth:
        truth = {i: t for i, t in read_truth(a.truth).items() if i in set(ids)}
        report = detection_report(truth, dict(zip(ids, scores.tolist())))
        print(format_markdown_table({"cleanlab": report}, extra_rows={"wall time (s)": {"cleanlab": seconds}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
