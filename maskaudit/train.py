"""Joint training of the U-Net and the Quality Awareness Module on one re-weighted loss.

Loss = sum_i w_i * L_i with w = softmax(lam * tanh(t)) over each mini-batch (paper Eq. 1, 2).
Shape key: N samples, B batch, C image channels, K classes, S working resolution, E epochs.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .checkpoint import load_checkpoint, save_checkpoint
from .distributed import ProcessGroup, broadcast_buffers, sum_across
from .errors import CheckpointError, TrainingError
from .history import KEYS as HISTORY_KEYS, TrainingHistory
from .loader import default_workers, iterate_batches
from .mask_format import mask_format_of
from .pages import read_chunks
from .precision import autocast_dtype
from .critic import corrupt_batch, critic_families, ranking_loss
from .models import MODES, QualityAwarenessModule, UNet, has_stem_norm, ocm_weights

if TYPE_CHECKING:
    from .prepare import PreparedData
    from .refit import KeptSampler
    from .sampling import SliceSampler

CHECKPOINT_NAME = "model.pt"
# Fields that must match for --resume to continue a run rather than start a different one.
_RESUME_KEYS = ("mode", "lam", "size", "width", "qam_width", "batch_size", "seed", "flips", "augment",
                "weight_average", "critic", "critic_holdout", "critic_share")


@dataclass(frozen=True)
class TrainConfig:
    """Options of one training run; defaults are tuned for a 2-core CPU (see docs/BENCHMARKS.md)."""

    mode: str = "qam-ocm"        # "qam-ocm", "qam" or "baseline" (uniform weights, no QAM)
    lam: float = 2.0             # OCM bound: scores live in (-lam, lam)
    size: int = 128              # working resolution S (pixels, divisible by 8)
    width: int = 16              # U-Net width of the first level
    qam_width: int = 8           # QAM width of the first stage
    batch_size: int = 8          # the QAM softmax runs over this many samples (>= 8)
    lr: float = 1e-3             # Adam learning rate of both networks
    epochs: int | None = None    # None: DEFAULT_STEPS optimizer steps, as epochs (see default_epochs)
    seed: int = 0
    device: str = "cpu"          # resolved device name, "cpu" or "cuda[:i]"
    augment: bool = True         # random affine + intensity jitter, identical on image and mask
    flips: bool = False          # left-right flips (off: left and right matter in X-rays)
    precision: str = "auto"      # "auto" (bf16 on CPUs with native bf16, fp16 on CUDA), "fp32", "bf16"
    early_stop: bool = True      # stop before ``epochs`` once the ranking by training loss is stable
    workers: int | None = None   # batch-loading processes; None: 0 on CPU, up to 4 beside a GPU
    weight_average: float = 0.5  # result = epoch-end weights averaged with this decay; 0: the last epoch's
    critic: float = 1.0          # weight of the label critic's ranking loss on the QAM (0: the paper's QAM only)
    critic_holdout: tuple[str, ...] = ()  # corruption families the critic never sees (for benchmarks)
    critic_share: float = 1.0    # share of each batch whose corrupted copy the critic scores (the QAM's extra cost)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.batch_size < 8:
            raise ValueError(f"batch_size must be at least 8 for the batch softmax, got {self.batch_size}")
        if self.size % 8:
            raise ValueError(f"size must be divisible by 8, got {self.size}")
        if not 0.0 <= self.weight_average < 1.0:
            raise ValueError(f"weight_average must be in [0, 1), got {self.weight_average}")
        if self.critic < 0:
            raise ValueError(f"critic must be >= 0, got {self.critic}")
        critic_families(self.critic_holdout)  # raises ValueError for unknown names
        if not 0.0 < self.critic_share <= 1.0:
            raise ValueError(f"critic_share must be in (0, 1], got {self.critic_share}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision must be auto, fp32 or bf16, got {self.precision!r}")


DEFAULT_STEPS = 1000  # optimizer steps of a default run's budget (docs/BENCHMARKS.md, section 1.1)


def default_epochs(num_samples: int, batch_size: int = 8) -> int:
    """Epochs that give about DEFAULT_STEPS optimizer steps on ``num_samples``, at least 3 and at most 40.

    Small datasets are capped at 40 epochs; large ones get 3 epochs, so that every sample has a loss
    history, which means more steps as the data grows (33 epochs for JSRT's 247 images at batch 8).
    Early stopping may end a run sooner (JSRT 40 % corrupted: after 21 epochs; never on clean data),
    and a run whose segmenter still learns may go on to EXTENSION_LIMIT times it (epochs_after).
    """
    return int(np.clip(math.ceil(DEFAULT_STEPS * batch_size / max(num_samples, 1)), 3, 40))


STABILITY_WINDOW = 3        # epochs averaged into one ranking of the per-sample training loss
STABLE_CORRELATION = 0.93   # Spearman correlation of two successive windows that counts as stable
LEARNED_DICE = 0.5          # a class is learned once its median training soft Dice reaches this
MIN_EPOCH_FRACTION = 0.5    # never stop before this share of the epoch budget


def ranking_stability(history_loss: np.ndarray, window: int = STABILITY_WINDOW) -> float | None:
    """Spearman correlation between the per-sample mean training loss of the last ``window`` epochs
    and of the ``window`` epochs before them; None until 2 * window epochs exist.

    history_loss: (E, N) per-sample loss of the epochs so far, NaN where a sample was not trained on
    (sampled epochs); only samples trained on in both windows are compared. 1.0 means the order of
    the samples by loss (the order that makes the late-loss signal) no longer changes.
    """
    if history_loss.shape[0] < 2 * window:
        return None
    with warnings.catch_warnings():  # a sample not drawn in a window has no mean there (NaN)
        warnings.simplefilter("ignore", RuntimeWarning)
        recent = np.nanmean(history_loss[-window:], axis=0)
        before = np.nanmean(history_loss[-2 * window : -window], axis=0)
    both = np.isfinite(recent) & np.isfinite(before)
    if both.sum() < 3:
        return None
    recent, before = recent[both], before[both]
    ranks = [np.argsort(np.argsort(values, kind="stable"), kind="stable") for values in (recent, before)]
    correlation = np.corrcoef(ranks[0], ranks[1])[0, 1]
    return float(correlation) if np.isfinite(correlation) else None


def classes_learned(history_dice: np.ndarray, present: np.ndarray | None = None) -> bool:
    """Whether, in the last epoch, every class's median training soft Dice reached LEARNED_DICE.

    history_dice: (E, N, K). present: (N, K) bool, whether each given mask contains the class
    (None: all do); the median runs over those samples only, since the soft Dice of an empty mask
    says little, and ignores up to half of them having bad masks. A class no mask contains is
    skipped. Small structures (JSRT's clavicles) are learned many epochs after large ones, and
    until then the ranking is stable only because it ignores them (docs/BENCHMARKS.md, 1.1).
    """
    if history_dice.shape[0] == 0:
        return False
    last = history_dice[-1].astype(np.float64)
    if present is not None:
        last = np.where(present, last, np.nan)
    medians = [np.nanmedian(column) for column in last.T if np.isfinite(column).any()]
    return bool(np.all(np.asarray(medians) >= LEARNED_DICE))


def should_stop_early(history: TrainingHistory, budget: int, present: np.ndarray | None = None) -> bool:
    """True once MIN_EPOCH_FRACTION of ``budget`` epochs ran, every class is learned and the loss
    ranking is stable. ``history`` holds the epochs finished; present: (N, K) bool, which given masks
    contain each class (see classes_learned). Only the last 2 * STABILITY_WINDOW epochs are read."""
    finished = len(history)
    if finished < math.ceil(MIN_EPOCH_FRACTION * budget) or finished >= budget:
        return False
    stability = ranking_stability(history.dense("loss", first=max(finished - 2 * STABILITY_WINDOW, 0)))
    return (stability is not None and stability >= STABLE_CORRELATION
            and classes_learned(history.dense("dice", first=finished - 1), present))


GAIN_WINDOW = STABILITY_WINDOW  # epochs averaged on each side of the segmenter's gain
MIN_GAIN = 0.005                # training Dice gain per window that keeps a default budget going
EXTENSION_LIMIT = 1.5           # a default budget grows at most to this multiple of itself


def segmenter_gain(history: TrainingHistory, present: np.ndarray | None = None) -> float | None:
    """How much the segmenter's training soft Dice rose: the mean over classes of the median Dice of
    the masks that contain the class (see classes_learned), averaged over the last GAIN_WINDOW
    epochs, minus the same over the GAIN_WINDOW epochs before them; None until 2 * GAIN_WINDOW
    epochs exist. present: (N, K) bool or None (all)."""
    if len(history) < 2 * GAIN_WINDOW:
        return None
    dice = history.dense("dice", first=len(history) - 2 * GAIN_WINDOW).astype(np.float64)  # (2W, N, K)
    if present is not None:
        dice = np.where(present[None], dice, np.nan)
    judged = np.isfinite(dice).any(axis=(0, 1))  # classes some drawn mask contains
    if not judged.any():
        return None
    with warnings.catch_warnings():  # a class no mask of an epoch contains has no median there
        warnings.simplefilter("ignore", RuntimeWarning)
        per_epoch = np.nanmean(np.nanmedian(dice[:, :, judged], axis=1), axis=1)  # (2W,)
    gain = np.mean(per_epoch[GAIN_WINDOW:]) - np.mean(per_epoch[:GAIN_WINDOW])
    return float(gain) if np.isfinite(gain) else None


def epochs_after(history: TrainingHistory, budget: int, limit: int, present: np.ndarray | None = None) -> int:
    """The epochs a run with ``len(history)`` finished should last: ``budget`` until it is spent,
    then one more at a time while the segmenter still gains MIN_GAIN per window, up to ``limit``.

    A default budget is about 1000 optimizer steps; where the segmenter is still learning when they
    are spent (DDTI's ultrasound), a longer run finds more bad masks (docs/BENCHMARKS.md, 0.0).
    The gain needs 2 * GAIN_WINDOW epochs, so budgets shorter than that (datasets of more than
    about 1,600 samples at batch 8) never grow.
    """
    finished = len(history)
    if finished < budget or finished >= limit:
        return max(budget, min(finished, limit))
    gain = segmenter_gain(history, present)
    return finished + 1 if gain is not None and gain >= MIN_GAIN else finished


def classes_present(masks: np.ndarray, chunk: int = 256) -> np.ndarray:
    """(N, K) bool: whether each mask of (N, K, S, S) contains each class, read in chunks of rows
    (a memory-mapped cache leaves none of its pages resident, see maskaudit.pages)."""
    present = np.zeros((len(masks), masks.shape[1]), bool)
    for start, rows in read_chunks(masks, chunk):
        present[start : start + len(rows)] = rows.reshape(len(rows), masks.shape[1], -1).any(axis=2)
    return present


@dataclass
class TrainResult:
    """Trained networks (eval mode, on CPU) and what training measured per sample (``history``; the
    ``history_*`` properties are its (E, N) tables, NaN where an epoch did not draw the sample)."""

    unet: UNet
    qam: QualityAwarenessModule | None
    config: TrainConfig
    history: TrainingHistory | None = None
    seconds: float = 0.0
    epoch_budget: int = 0        # epochs the run was given: more than E after an early stop, fewer if it grew

    @property
    def history_loss(self) -> np.ndarray:
        """(E, N) per-sample loss L_i seen in training."""
        return self._table("loss")

    @property
    def history_t(self) -> np.ndarray:
        """(E, N) raw QAM score t_i (0 in baseline mode)."""
        return self._table("t")

    @property
    def history_weight(self) -> np.ndarray:
        """(E, N) batch weight w_i times the batch size (1 = an average sample)."""
        return self._table("weight")

    @property
    def history_dice(self) -> np.ndarray:
        """(E, N, K) soft Dice of the training prediction against the given mask."""
        return self._table("dice")

    def _table(self, key: str) -> np.ndarray:
        if self.history is None:
            raise ValueError("this TrainResult was made from saved networks, without a training history")
        return self.history.dense(key)


def resolve_device(name: str) -> torch.device:
    """Turn ``auto``, ``cpu`` or ``cuda[:i]`` into a device; ``auto`` picks CUDA when present."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError("--device cuda was asked for but PyTorch sees no CUDA device; use --device cpu")
    return device


def per_sample_loss(
    logits: torch.Tensor, masks: torch.Tensor, *, multilabel: bool, valid: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cross-entropy plus soft Dice for each sample, the per-class soft Dice and the cross-entropy alone.

    logits: (B, K, H, W) for multi-label (one sigmoid per class) or (B, K + 1, H, W) with
    background first for exclusive classes (softmax). masks: (B, K, H, W) float {0, 1}.
    valid: (B, 1, H, W) float {0, 1}, 0 = void pixel left out of both terms; None = all valid.
    Returns loss (B,), dice (B, K) and cross-entropy (B,).
    """
    if multilabel:
        cross_entropy = F.binary_cross_entropy_with_logits(logits, masks, reduction="none")
        probabilities = torch.sigmoid(logits)
    else:
        background = 1.0 - masks.amax(dim=1, keepdim=True)
        target = torch.cat([background, masks], dim=1).argmax(dim=1)
        cross_entropy = F.cross_entropy(logits, target, reduction="none")[:, None]
        probabilities = torch.softmax(logits, dim=1)[:, 1:]
    if valid is None:
        cross_entropy = cross_entropy.mean(dim=(1, 2, 3))
    else:  # mean over the valid pixels only
        cross_entropy = (cross_entropy * valid).sum(dim=(1, 2, 3)) / (
            valid.sum(dim=(1, 2, 3)).clamp(min=1.0) * cross_entropy.shape[1]
        )
        probabilities = probabilities * valid
    intersection = (probabilities * masks).sum(dim=(2, 3))
    dice = (2 * intersection + 1.0) / (probabilities.sum(dim=(2, 3)) + masks.sum(dim=(2, 3)) + 1.0)
    return cross_entropy + (1.0 - dice.mean(dim=1)), dice, cross_entropy


def weighted_loss(
    unet: torch.nn.Module, qam: torch.nn.Module | None, images: torch.Tensor, masks: torch.Tensor, *,
    config: TrainConfig, amp_dtype: torch.dtype | None, multilabel: bool, valid: torch.Tensor | None = None,
    corrupted: torch.Tensor | None = None, changed: torch.Tensor | None = None, critic_rows: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One forward pass of the joint objective on a batch: (objective, L (B,), Dice (B, K), t (B,), w (B,)).
    valid: (B, 1, H, W) float, 0 on void pixels (see per_sample_loss), or None. The QAM reads ``masks``
    as given, void pixels as background (docs/BENCHMARKS.md, section 4: reading void-filled masks, it
    found 1-8 px errors under a VOC band far less well).

    The segmenter learns from sum_i w_i L_i with the weights held fixed (w = softmax(lam tanh t),
    paper Eq. 1-2). The QAM learns from sum_i w_i CE_i with the losses held fixed: cross-entropy
    alone, in which a dilated mask is not easier than the true one (under CE + soft Dice it is,
    and the paper's objective then favours dilated masks; docs/BENCHMARKS.md, section 2). With
    ``corrupted`` masks (B', K, H, W) and ``changed`` (B',) bool, the label critic's ranking loss,
    times ``config.critic``, teaches the QAM to score each given mask above its corrupted copy;
    ``critic_rows`` (B',) int are the batch positions the copies were made from (None: all B).
    The U-Net runs under autocast with ``amp_dtype``. The QAM stays in fp32: its score drives the
    batch softmax, and its GroupNorm runs twice as fast in fp32 as in bf16 on a CPU (docs/BENCHMARKS.md).
    """
    with torch.autocast(images.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        logits, _ = unet(images)
    loss_i, dice_i, cross_entropy = per_sample_loss(logits.float(), masks, multilabel=multilabel, valid=valid)
    if qam is None:
        weights = ocm_weights(torch.zeros(len(images), device=images.device), mode="baseline")
        return (weights * loss_i).sum(), loss_i, dice_i, torch.zeros_like(weights), weights
    if corrupted is not None and config.critic > 0:
        rows = slice(None) if critic_rows is None else critic_rows
        t_both = qam(torch.cat([images, images[rows]]), torch.cat([masks, corrupted]))[0].float()
        t, t_corrupted = t_both[: len(images)], t_both[len(images) :]
        critic = ranking_loss(t[rows], t_corrupted, changed)
    else:
        t, critic = qam(images, masks)[0].float(), None
    weights = ocm_weights(t, mode=config.mode, lam=config.lam)
    objective = (weights.detach() * loss_i).sum() + (weights * cross_entropy.detach()).sum()
    if critic is not None:
        objective = objective + config.critic * critic
    return objective, loss_i, dice_i, t, weights


def critic_positions(batch: int, share: float, rng: np.random.Generator) -> np.ndarray:
    """(m,) sorted positions of the batch whose corrupted copies the critic scores: all of them at
    ``share`` 1 (no draw from ``rng``), else ceil(share * batch) drawn at random (a batch's rows are
    sorted, so taking the first ones would favour low sample indices)."""
    if share >= 1.0:
        return np.arange(batch)
    return np.sort(rng.choice(batch, size=math.ceil(share * batch), replace=False))


def void_batch(void: np.ndarray, rows: np.ndarray, device: torch.device) -> torch.Tensor:
    """(b, 1, S, S) float32 void pixels of ``rows`` (sorted, as the loader yields them) from the (N, S, S) cache."""
    return torch.from_numpy(np.asarray(void[rows], dtype=np.float32)[:, None]).to(device)


def augment_batch(
    images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator, *, flips: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random affine warp (rotation +-10 deg, scale 0.9-1.1, shift +-6 %) on image and mask,
    then brightness, contrast and gamma jitter on the image only. Shapes are kept: (B, C|K, S, S)."""
    batch = images.shape[0]

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(batch, generator=generator)

    angle = uniform(-10, 10) * math.pi / 180
    scale = uniform(0.9, 1.1)
    mirror = torch.where(torch.rand(batch, generator=generator) < 0.5, -1.0, 1.0) if flips else torch.ones(batch)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [
            torch.stack([cos * mirror, -sin, uniform(-0.12, 0.12)], dim=1),
            torch.stack([sin * mirror, cos, uniform(-0.12, 0.12)], dim=1),
        ],
        dim=1,
    ).to(images.device)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    masks = (F.grid_sample(masks, grid, mode="bilinear", padding_mode="zeros", align_corners=False) > 0.5).float()
    gamma = uniform(0.8, 1.25).to(images.device).view(-1, 1, 1, 1)
    contrast = uniform(0.85, 1.15).to(images.device).view(-1, 1, 1, 1)
    brightness = uniform(-0.08, 0.08).to(images.device).view(-1, 1, 1, 1)
    images = ((images.clamp(0, 1) ** gamma - 0.5) * contrast + 0.5 + brightness).clamp(0, 1)
    return images, masks


def build_models(
    image_channels: int, num_classes: int, *, multilabel: bool, config: TrainConfig
) -> tuple[UNet, QualityAwarenessModule | None]:
    """Fresh networks for ``config``, initialised from ``config.seed``. No QAM in baseline mode."""
    torch.manual_seed(config.seed)
    unet = UNet(image_channels, num_classes if multilabel else num_classes + 1, width=config.width)
    qam = None if config.mode == "baseline" else QualityAwarenessModule(image_channels, num_classes, width=config.qam_width)
    return unet, qam


def epoch_batches(num_samples: int, batch_size: int, *, seed: int, epoch: int, parts: int = 1) -> list[np.ndarray]:
    """A shuffled split of range(N) into about N / B batches of nearly equal size (none tiny).

    The number of batches is rounded up to a multiple of ``parts`` so that every process of a
    distributed run takes the same number of steps.
    """
    order = np.random.default_rng([seed, epoch]).permutation(num_samples)
    count = max(1, math.ceil(num_samples / batch_size))
    return np.array_split(order, parts * math.ceil(count / parts))


def train(
    data: "PreparedData",
    config: TrainConfig,
    *,
    out_dir: Path | None = None,
    resume: bool = False,
    progress: bool = False,
    group: ProcessGroup = ProcessGroup(),
    on_epoch_end: "Callable[[int, UNet, QualityAwarenessModule | None, TrainingHistory], None] | None" = None,
    sampler: "SliceSampler | KeptSampler | None" = None,
    initial: UNet | None = None,
    description: str = "train",
) -> TrainResult:
    """Train the U-Net and the QAM jointly on ``data``, checkpointing to ``out_dir/model.pt`` each epoch.

    ``config.epochs`` fixes the number of epochs (early stopping may end sooner); without it the
    default budget stops early once the ranking is stable, or grows past its end while the
    segmenter's training Dice still rises (epochs_after), up to EXTENSION_LIMIT times.

    With ``resume`` the run continues from that checkpoint, which must come from the same options.
    Under torchrun (``group.active``) both networks are wrapped in DistributedDataParallel, each
    process trains on its own share of every epoch's mini-batches (the QAM softmax stays per local
    mini-batch), histories are summed across processes, and only the main process checkpoints.
    ``on_epoch_end(epoch, unet, qam, history)``, if given, is called after every epoch (0-based) with
    the weight-averaged networks a run stopped there would return and the TrainingHistory of the
    epochs so far. With a ``sampler`` each epoch trains on the slices it draws (and lasts
    ``sampler.epochs`` epochs by default), and the history keeps only the slices drawn. With an
    ``initial`` U-Net (unchanged) the segmenter starts from its weights (maskaudit.refit); ``description``
    names the progress bar.
    Raises TrainingError when the loss stops being finite, CheckpointError for a bad checkpoint.
    """
    import time

    started = time.perf_counter()
    device = torch.device(config.device)
    num_samples, image_channels = data.images.shape[:2]
    num_classes = data.masks.shape[1]
    multilabel = data.index.multilabel
    # Each process takes batch_size / world_size samples a step, but at least 8 for the QAM softmax: the
    # global batch is batch_size, or 8 x world_size when that is larger. The default budget counts
    # optimizer steps of that global batch, so it is the same number of steps on any number of processes.
    local_batch_size = max(8, config.batch_size // group.world_size)
    budget = config.epochs or (sampler.epochs if sampler is not None
                               else default_epochs(num_samples, local_batch_size * group.world_size))
    # a default budget over whole epochs may grow while the segmenter still learns (epochs_after)
    adaptive = config.early_stop and config.epochs is None and sampler is None
    limit = math.ceil(EXTENSION_LIMIT * budget) if adaptive else budget
    epochs = budget
    unet, qam = build_models(image_channels, num_classes, multilabel=multilabel, config=config)
    if initial is not None:
        unet.load_state_dict(initial.state_dict())
    unet.to(device)
    parameters = list(unet.parameters())
    if qam is not None:
        qam.to(device)
        parameters += list(qam.parameters())
    optimizer = torch.optim.Adam(parameters, lr=config.lr)
    history = TrainingHistory(num_samples, num_classes)
    checkpoint_path = Path(out_dir) / CHECKPOINT_NAME if out_dir is not None else None
    slices_per_epoch = None if sampler is None else sampler.draws  # None: every sample in every epoch
    first_epoch, averaged_state = 0, None
    if resume:
        first_epoch, averaged_state = _restore(checkpoint_path, config, unet, qam, optimizer, history, epochs=limit,
                                               classes=tuple(data.index.classes), slices_per_epoch=slices_per_epoch)

    memory_format = torch.channels_last if device.type == "cpu" else torch.contiguous_format
    unet.to(memory_format=memory_format)
    if qam is not None:
        qam.to(memory_format=memory_format)
    unet_module, qam_module = unet, qam  # unwrapped, for checkpoints
    # The result is an average of the epoch-end weights, not the last step's: with a constant learning
    # rate the last epoch's model is a noisy draw (detection AUROC moves by +-0.01 between epochs).
    average_unet, average_qam = copy.deepcopy(unet), copy.deepcopy(qam)
    if averaged_state is not None:
        average_unet.load_state_dict(averaged_state["unet"])
        if average_qam is not None:
            average_qam.load_state_dict(averaged_state["qam"])
    if group.active:
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [device.index] if device.type == "cuda" else None
        unet = DistributedDataParallel(unet, device_ids=device_ids)
        if qam is not None:
            qam = DistributedDataParallel(qam, device_ids=device_ids)
    amp_dtype = autocast_dtype(device, config.precision)
    workers = default_workers(device) if config.workers is None else config.workers
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    present = classes_present(data.masks) if config.early_stop else None
    families = critic_families(config.critic_holdout)
    finished = first_epoch
    if config.early_stop and should_stop_early(history, budget, present):
        first_epoch = epochs  # a resumed run that had already stopped early: nothing left to train
    elif adaptive:
        epochs = epochs_after(history, budget, limit, present)  # a resumed run past its budget
    stored_format = mask_format_of(data.index).as_dict() if checkpoint_path is not None and group.is_main else None
    bar = tqdm(desc=description, unit="epoch", disable=not (progress and group.is_main), initial=first_epoch, total=epochs)
    epoch = first_epoch
    while epoch < epochs:  # ``epochs`` may grow at an epoch's end (epochs_after)
        unet.train()
        if qam is not None:
            qam.train()
        generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
        critic_rng = np.random.default_rng([config.seed, epoch, group.rank])
        losses, low_quarter_shares = [], []
        batches = (epoch_batches(num_samples, local_batch_size, seed=config.seed, epoch=epoch, parts=group.world_size)
                   if sampler is None else
                   sampler.epoch_batches(local_batch_size, seed=config.seed, epoch=epoch, parts=group.world_size))
        drawn = np.unique(np.concatenate(batches))  # the same in every process
        # what this process measures, one row per drawn sample; the others' rows stay 0 for the sum across processes
        seen = {key: np.zeros((len(drawn), num_classes) if key == "dice" else len(drawn), np.float32)
                for key in HISTORY_KEYS}
        for rows, images, masks in iterate_batches(data.images, data.masks, batches[group.rank :: group.world_size],
                                                   workers=workers, device=device):
            if data.void is not None:  # void rides along as a last channel so that it is warped with the masks
                masks = torch.cat([masks, void_batch(data.void, rows, device)], dim=1)
            if config.augment:
                images, masks = augment_batch(images, masks, generator, flips=config.flips)
            masks, valid = (masks[:, :-1], 1.0 - masks[:, -1:]) if data.void is not None else (masks, None)
            corrupted, changed, critic_rows = None, None, None
            if qam is not None and config.critic > 0:  # after augmentation: the pair differs only by the corruption
                given = masks.cpu().numpy() > 0.5  # as given: void pixels are background to the critic
                picked = critic_positions(len(given), config.critic_share, critic_rng)
                corrupted, changed = corrupt_batch(given[picked], critic_rng, families=families,
                                                   classes=data.index.classes)
                critic_rows = None if len(picked) == len(given) else torch.from_numpy(picked).to(device)
                corrupted = torch.from_numpy(corrupted).float().to(device).contiguous(memory_format=memory_format)
                changed = torch.from_numpy(changed).to(device)
            images = images.contiguous(memory_format=memory_format)
            masks = masks.contiguous(memory_format=memory_format)
            loss, loss_i, dice_i, t, weights = weighted_loss(unet, qam, images, masks, config=config,
                                                             amp_dtype=amp_dtype, multilabel=multilabel, valid=valid,
                                                             corrupted=corrupted, changed=changed, critic_rows=critic_rows)
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"the training loss became {loss.item()} at epoch {epoch + 1}; "
                    "check the images for NaN/inf values or lower --lr"
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

            positions = np.searchsorted(drawn, rows)
            seen["loss"][positions] = loss_i.detach().cpu().numpy()
            seen["t"][positions] = t.detach().float().cpu().numpy()
            seen["weight"][positions] = weights.detach().cpu().numpy() * len(rows)
            seen["dice"][positions] = dice_i.detach().cpu().numpy()
            losses.append(loss.item())
            low_quarter_shares.append(_low_quarter_share(t.detach(), weights.detach()))
        # every drawn sample is seen by exactly one process each epoch; the others were not measured
        history.record(drawn, {key: sum_across(values, group) for key, values in seen.items()})
        broadcast_buffers(unet_module, group)  # the same BatchNorm statistics in every process's average
        average_weights(average_unet, unet_module, first=epoch == 0, decay=config.weight_average)
        if qam is not None:
            average_weights(average_qam, qam_module, first=epoch == 0, decay=config.weight_average)
        bar.set_postfix(loss=f"{np.mean(losses):.3f}", low_q_weight=f"{np.mean(low_quarter_shares):.2f}")
        finished = epoch + 1
        stop = config.early_stop and should_stop_early(history, budget, present)
        if adaptive and not stop:
            epochs = epochs_after(history, budget, limit, present)
            bar.total = epochs
        if stop or finished == epochs:  # the final network: BatchNorm statistics for its own weights, then saved
            recalibrate_batchnorm(average_unet, data.images, data.masks, batch_size=max(config.batch_size, 16),
                                  device=device)
        if checkpoint_path is not None and group.is_main:
            save_checkpoint(
                checkpoint_path,
                unet=average_unet,
                qam=average_qam,
                training_networks=(unet_module, qam_module),
                optimizer=optimizer,
                config={**dataclasses.asdict(config), "slices_per_epoch": slices_per_epoch},
                classes=list(data.index.classes),
                multilabel=multilabel,
                image_channels=image_channels,
                epoch=epoch + 1,
                histories=history.state(),
                mask_format=stored_format,
            )
        if on_epoch_end is not None:
            on_epoch_end(epoch, average_unet, average_qam, history)
        bar.update(1)
        if stop:
            bar.set_description("train (ranking stable: stopped early)")
            break  # every process sees the same summed history, so all stop together
        epoch += 1
    bar.close()
    history.truncate(finished)
    unet, qam = average_unet, average_qam
    unet.eval().cpu().to(memory_format=torch.contiguous_format)
    if qam is not None:
        qam.eval().cpu().to(memory_format=torch.contiguous_format)
    return TrainResult(
        unet=unet,
        qam=qam,
        config=dataclasses.replace(config, epochs=finished),
        epoch_budget=budget,
        history=history,
        seconds=time.perf_counter() - started,
    )


BATCHNORM_SAMPLES = 2048  # at most this many training images re-estimate the final U-Net's BatchNorm statistics


@torch.no_grad()
def recalibrate_batchnorm(unet: torch.nn.Module, images: np.ndarray, masks: np.ndarray, *, batch_size: int,
                          device: torch.device) -> None:
    """Re-estimate the BatchNorm running statistics of ``unet`` for its final weights: one pass in
    training mode, no gradients, over up to BATCHNORM_SAMPLES evenly spaced training images (N, C, S, S)
    uint8, unaugmented, with a cumulative average (momentum None); ``masks`` only ride along.

    Running statistics are averaged over the last steps' weights, not the final ones; after an
    epoch-end weight average (and the larger late steps a weighted loss can take) they may belong
    to no network at all, which costs little in training mode and a lot at inference (the SWA
    recipe, as in torch.optim.swa_utils.update_bn; docs/BENCHMARKS.md section 2.0).
    """
    norms = [module for module in unet.modules() if isinstance(module, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms or not len(images):
        return
    rows = np.unique(np.linspace(0, len(images) - 1, min(len(images), BATCHNORM_SAMPLES)).round().astype(np.int64))
    batches = [rows[start : start + batch_size] for start in range(0, len(rows), batch_size)]
    momenta = [module.momentum for module in norms]
    for module in norms:
        module.reset_running_stats()
        module.momentum = None
    was_training = unet.training
    unet.train()
    for _, image_batch, _ in iterate_batches(images, masks, batches, workers=0, device=device):
        unet(image_batch)
    for module, momentum in zip(norms, momenta):
        module.momentum = momentum
    unet.train(was_training)


def average_weights(average: torch.nn.Module, current: torch.nn.Module, *, first: bool, decay: float) -> None:
    """average <- decay * average + (1 - decay) * current for every float parameter and buffer (BatchNorm
    statistics included); integer buffers and the ``first`` update are copied."""
    with torch.no_grad():
        for mine, theirs in zip(average.state_dict().values(), current.state_dict().values()):
            if first or not mine.is_floating_point():
                mine.copy_(theirs)
            else:
                mine.mul_(decay).add_(theirs.detach(), alpha=1.0 - decay)


def _low_quarter_share(t: torch.Tensor, weights: torch.Tensor) -> float:
    """Total weight given to the lowest-scored quarter of a batch (0.25 means no down-weighting)."""
    quarter = max(1, len(t) // 4)
    return float(weights[torch.argsort(t)[:quarter]].sum())


def _restore(checkpoint_path, config, unet, qam, optimizer, history: TrainingHistory, *, epochs: int,
             classes: tuple[str, ...], slices_per_epoch: int | None) -> tuple[int, dict]:
    """Load a checkpoint into the training networks, optimizer and histories; return the number of
    finished epochs and the averaged networks' state dicts ({"unet": ..., "qam": ...}).
    ``slices_per_epoch`` is the run's slice sampler's draws per epoch (None: whole epochs)."""
    if checkpoint_path is None or not checkpoint_path.exists():
        raise CheckpointError(
            f"--resume was given but there is no checkpoint at {checkpoint_path}; "
            "run the same command without --resume to start from scratch"
        )
    state = load_checkpoint(checkpoint_path)
    try:
        options = state["config"]
        changed = [key for key in _RESUME_KEYS if options.get(key) != getattr(config, key)]
        if options.get("slices_per_epoch") != slices_per_epoch:
            changed.append("slices per epoch")
        if changed:
            raise CheckpointError(
                f"{checkpoint_path} was trained with other options ({', '.join(changed)}); "
                "rerun with the same options, or with --overwrite instead of --resume to start again"
            )
        old_qam = qam is not None and has_stem_norm(state["training_networks"]["qam"] or {})
        if "samples" not in state["histories"] or old_qam:
            raise CheckpointError(
                f"{checkpoint_path} was written by an older maskaudit, whose "
                f"{'QAM' if old_qam else 'training histories'} cannot be resumed; "
                "start again with --overwrite instead of --resume"
            )
        saved = TrainingHistory.from_state(state["histories"])
        if tuple(state["classes"]) != classes or saved.num_samples != history.num_samples:
            raise CheckpointError(
                f"{checkpoint_path} was trained on {saved.num_samples} samples of the classes "
                f"{', '.join(state['classes'])}; the dataset now has {history.num_samples} samples of "
                f"{', '.join(classes)}; start again with --overwrite instead of --resume"
            )
        unet.load_state_dict(state["training_networks"]["unet"])
        if qam is not None:
            qam.load_state_dict(state["training_networks"]["qam"])
        optimizer.load_state_dict(state["optimizer"])
        finished = int(state["epoch"])
        if finished > epochs:
            allowed = f"--epochs {epochs}" if config.epochs else f"this run's {epochs} epochs"
            raise CheckpointError(
                f"{checkpoint_path} has already trained {finished} epochs, more than {allowed}; "
                f"rerun with --epochs {finished} or more, or with --overwrite"
            )
        history.records[:] = saved.records[:finished]
        averaged_state = {"unet": state["unet"], "qam": state["qam"]}
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"{checkpoint_path} does not fit this run ({first_line}); "
            "start again with --overwrite instead of --resume"
        ) from error
    return finished, averaged_state
