"""``scan``: load -> train -> score -> refit -> score again -> cluster -> diagnose -> export -> report, in one call that never prints."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import __version__
from .clustering import cluster_features
from .diagnosis import diagnose
from .distributed import barrier, gather_objects, init_process_group, local_device, shard_range, shutdown
from .errors import OutputDirError, TrainingError
from .atomic import atomic_path
from .labels import AUTO
from .export import ScoreRow, write_json, write_scores_csv, write_suggested_masks
from .formats import DatasetSource, open_dataset
from .inference import predicted_masks
from .mask_format import mask_format_of
from .precision import dtype_name
from .prepare import PreparedData, load_original, prepare
from .prepare_volumes import SliceSamples, VolumeData, prepare_volumes
from .refit import MeanSegmenter, Refit, refit_segmenter, refit_skip_reason
from .scoring import IMAGE_EVIDENCE, RIM_EVIDENCE, quality_scores
from .signals import compute_signals, concatenate_signals, release_signals
from .suggestion import class_priors, suggest_masks
from .train import CHECKPOINT_NAME, TrainConfig, TrainResult, train
from .visuals import predict_probabilities, predict_samples
from .pages import LazyColumn, read_chunks, release_pages, return_freed_memory, write_npz

# Files whose presence means the directory already holds a run's results.
RESULT_FILES = ("scores.csv", "run.json", "report.html", CHECKPOINT_NAME)
# Everything a scan writes to --out except the checkpoint and the (self-validating) cache/.
# --overwrite and --resume delete these first, so that a new run never mixes with an old one.
DERIVED_OUTPUTS = ("scores.csv", "run.json", "report.html", "features.npz", "suggested", "assets", "slices.csv")


@dataclass(frozen=True)
class ScanConfig:
    """Options of a scan beyond training (see ``maskaudit scan --help``)."""

    train: TrainConfig = field(default_factory=TrainConfig)
    mask_suffix: str | None = None
    ignore_value: int | None | str = AUTO  # layout A void value: an int, None (no void) or "auto"
    threshold: float = 0.5          # suspect when quality_score < threshold
    top: int | None = None          # keep only the N most suspect rows in scores.csv
    suspects_only: bool = False     # keep only suspect rows in scores.csv
    overwrite: bool = False
    resume: bool = False
    report: bool = True
    max_report_samples: int = 2000  # samples with images in the report (the rest are listed)
    axis: int | None = None         # volumes: voxel axis to slice along; None = the through-plane axis by spacing
    refit: bool = True              # 2-D: train the segmenter on the kept masks before it suggests (maskaudit.refit)


@dataclass
class ScanResult:
    rows: list[ScoreRow]            # every usable sample, most suspect first
    out_dir: Path
    stage_seconds: dict[str, float]


def check_output_dir(out_dir: Path, dataset_root: Path, *, overwrite: bool, resume: bool) -> None:
    """Refuse an output directory inside the dataset, or one holding another run's results."""
    out_resolved, root_resolved = out_dir.resolve(), dataset_root.resolve()
    if out_resolved == root_resolved or root_resolved in out_resolved.parents:
        raise OutputDirError(
            f"the output directory {out_dir} is inside the dataset {dataset_root}; "
            "maskaudit never writes into a dataset: choose --out outside it"
        )
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputDirError(f"--out {out_dir} exists and is not a directory")
    if overwrite and resume:
        raise OutputDirError("--overwrite starts a new run and --resume continues the old one: pass only one")
    existing = [name for name in RESULT_FILES if (out_dir / name).exists()]
    if existing and not (overwrite or resume):
        raise OutputDirError(
            f"{out_dir} already holds a run ({', '.join(existing)}); "
            "pass --resume to continue it, --overwrite to replace it, or choose another --out"
        )


def _clear_previous_run(out_dir: Path, *, keep_checkpoint: bool) -> None:
    """Delete stale temporary files and, if ``out_dir`` holds a run, that run's outputs.

    Only maskaudit's own names are touched; symlinks are removed, never followed.
    """
    names = (*DERIVED_OUTPUTS, CHECKPOINT_NAME)
    for name in names:
        for stale in out_dir.glob(f".{name}.*.tmp"):  # left by a process killed while writing
            stale.unlink()
    if not any((out_dir / name).exists() for name in RESULT_FILES):
        return
    for name in names:
        path = out_dir / name
        if name == CHECKPOINT_NAME and keep_checkpoint:
            continue
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)


# Signals that may hold NaN by design: mm in 2-D images, the evidence of empty classes, the probes' fields.
MAY_BE_NAN = ("probes", "boundary_mm", *IMAGE_EVIDENCE, *RIM_EVIDENCE)
SIGNALS_STORE = "signals"  # under OUT/cache: the scoring pass's wide features, memory-mapped, until features.npz has them


def _require_finite(what: str, arrays: dict[str, np.ndarray]) -> None:
    """Stop with a TrainingError instead of writing scores computed from NaN or inf values."""
    bad = [name for name, values in arrays.items()  # in row chunks: memory-mapped features stay on disk
           if not all(np.isfinite(rows).all() for _, rows in read_chunks(values, chunk=16_384))]
    if bad:
        raise TrainingError(
            f"the trained model gave non-finite {what} ({', '.join(bad)}), so no scores were written; "
            "check the images, lower --lr or change --seed, and run again with --overwrite"
        )


def scan(dataset: Path, out_dir: Path, config: ScanConfig, *, progress: bool = False) -> ScanResult:
    """Audit every mask of ``dataset`` and write scores.csv, run.json, suggested/ and report.html to ``out_dir``."""
    dataset, out_dir = Path(dataset), Path(out_dir)
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    group = init_process_group(config.train.device)
    train_config = dataclasses.replace(config.train, device=local_device(config.train.device, group))
    source = open_dataset(dataset, mask_suffix=config.mask_suffix, ignore_value=config.ignore_value)
    check_output_dir(out_dir, source.index.root, overwrite=config.overwrite, resume=config.resume)
    if group.is_main:  # the main process fills the cache and clears old outputs; the others then read
        out_dir.mkdir(parents=True, exist_ok=True)
        data, volume_data = _prepare(source, config, out_dir / "cache", progress=progress)
        if not config.resume:  # (check_output_dir let a run through only under --overwrite)
            _clear_previous_run(out_dir, keep_checkpoint=False)
    barrier(group)
    if not group.is_main:
        data, volume_data = _prepare(source, config, out_dir / "cache", progress=False)
    seconds["load"], clock = time.perf_counter() - clock, time.perf_counter()

    sampler = None
    if volume_data is not None:  # tens of thousands of slices: a fixed number drawn per epoch (maskaudit.sampling)
        from .sampling import slice_sampler

        sampler = slice_sampler(data.masks, batch_size=config.train.batch_size)
    result = train(data, train_config, out_dir=out_dir, resume=config.resume, progress=progress, group=group,
                   sampler=sampler)
    if config.resume and group.is_main:  # the checkpoint fitted: drop what was derived from it before
        _clear_previous_run(out_dir, keep_checkpoint=True)
    seconds["train"], clock = time.perf_counter() - clock, time.perf_counter()

    shard = shard_range(len(data.index.samples), group)
    store = None if group.active else out_dir / "cache" / SIGNALS_STORE  # the processes' features are gathered
    signals = concatenate_signals(gather_objects(
        compute_signals(data, result, rows=shard, device=train_config.device, seed=config.train.seed,
                        progress=progress and group.is_main, store=store),
        group,
    ))
    _require_finite("outputs", {name: value for name, value in vars(signals).items() if name not in MAY_BE_NAN})
    shutdown(group)  # every process at once: from here on the main process works alone
    if not group.is_main:  # only the main process writes outputs
        return ScanResult(rows=[], out_dir=out_dir, stage_seconds=seconds)

    scores = quality_scores(signals, seed=config.train.seed, store=store)  # its evidence beside the signals
    _require_finite("scores", {"quality_score": scores.quality})
    seconds["score"], clock = time.perf_counter() - clock, time.perf_counter()

    scorer, suggester = result, result.unet  # the networks that score, and the U-Net that suggests
    refit_record: dict[str, object] = {"skipped": "volume datasets are not refitted"}
    if volume_data is None:
        refit, refit_record = _refit(data, result, scores.quality, config, out_dir, device=train_config.device,
                                     progress=progress)
        seconds["refit"], clock = time.perf_counter() - clock, time.perf_counter()
        if refit is not None:  # score again with the refitted U-Net, which never learned the flagged masks
            scorer = dataclasses.replace(result, unet=refit.unet)
            suggester = MeanSegmenter(result.unet, refit.unet, multilabel=data.index.multilabel).eval()
            signals, scores = _rescore(data, scorer, signals, scores, store, device=train_config.device,
                                       seed=config.train.seed, progress=progress)
            seconds["rescore"], clock = time.perf_counter() - clock, time.perf_counter()

    clusters = cluster_features((signals.qam_features, signals.bottleneck, signals.shape), seed=config.train.seed)
    check = self_check(scores, signals, cases=volume_data is not None)
    _write_features(out_dir / "features.npz", data, signals, clusters, scores)
    release_signals(signals)  # the pages of cache/signals that scoring read
    release_pages(*scores.evidence.values())  # and those of the evidence that features.npz read
    return_freed_memory()  # what scoring and clustering freed, before the export allocates its own
    seconds["cluster"], clock = time.perf_counter() - clock, time.perf_counter()

    if volume_data is not None:
        from .volume_results import SlicePictures, rank_cases, report_slices, write_slices_csv

        rows, case_scores = rank_cases(volume_data, result.unet, signals, clusters, scores,
                                       threshold=config.threshold, out_dir=out_dir, seed=config.train.seed,
                                       precision=result.config.precision)
        write_slices_csv(out_dir / "slices.csv", volume_data, signals, clusters, scores)
        position_of = {item.id: int(case_scores.worst[case]) for case, item in enumerate(volume_data.volumes.cases)}
        report_index = source.index
        flagged = report_slices(volume_data, signals, scores, case_scores, threshold=config.threshold)
        pictures = SlicePictures(volume_data, result.unet, precision=result.config.precision)

        def visuals(key: str):  # a case is shown through its worst slice, and a flagged slice by its id
            return pictures(position_of[key] if key in position_of else data.index.samples.position(key))
    else:
        rows = _rank_and_diagnose(data, scorer, signals, clusters, scores, config, out_dir, progress=progress,
                                  annotation_ids=source.annotation_ids, reader=source.reader, segmenter=suggester)
        position_of = {sample.id: position for position, sample in enumerate(data.index.samples)}
        report_index = data.index
        flagged = {}

        def visuals(sample_id: str):
            return _sample_visuals(data, scorer, position_of[sample_id], source)
    selected = _select_rows(rows, config)
    write_scores_csv(out_dir / "scores.csv", selected)
    seconds["export"], clock = time.perf_counter() - clock, time.perf_counter()

    run_id = None
    if config.report:
        from .report import render_report, report_id  # the report is the only user of jinja2

        row_coords = np.asarray([clusters.coords[position_of[row.id]] for row in rows]).reshape(len(rows), 2)
        report_input = _report_input(report_index, config, result, rows, row_coords, seconds, check, slices=flagged)
        run_id = report_id(report_input)  # in run.json too: `export --decisions` checks it
        render_report(
            report_input,
            visuals,
            out_dir,
            max_visual_samples=config.max_report_samples,
            progress=progress,
            run_id=run_id,
        )
        seconds["report"] = time.perf_counter() - clock
    _write_run_json(out_dir, data, config, result, clusters, check, seconds, group, report_id=run_id, source=source,
                    volume_data=volume_data, slices_per_epoch=None if sampler is None else sampler.draws,
                    refit=refit_record)
    if store is not None:  # features.npz holds them now
        shutil.rmtree(store, ignore_errors=True)
    return ScanResult(rows=rows, out_dir=out_dir, stage_seconds=seconds)


def _prepare(source: DatasetSource, config: ScanConfig, cache_dir: Path, *, progress: bool
             ) -> tuple[PreparedData, VolumeData | None]:
    """The working-resolution arrays of a 2-D dataset, or of a volume dataset's slices (with where they came from)."""
    size = config.train.size
    if source.volumes is None:
        return prepare(source.index, size=size, cache_dir=cache_dir, progress=progress, reader=source.reader), None
    from .formats.nnunet import through_plane_axis

    axis = through_plane_axis(source.volumes.spacing) if config.axis is None else config.axis
    volume_data = prepare_volumes(source.volumes, size=size, axis=axis, cache_dir=cache_dir, progress=progress)
    return volume_data.data, volume_data


def _refit(data: PreparedData, result: TrainResult, quality: np.ndarray, config: ScanConfig, out_dir: Path, *,
           device: str, progress: bool):
    """The scan's U-Net refitted on the masks that ``quality`` (N,) keeps (maskaudit.refit), stored in
    model.pt for predict, and run.json's record of it; (None, why not) when it would not help.
    Under --resume a refit stored for the same kept masks is reused: the refit is deterministic."""
    from .checkpoint import add_refit, load_checkpoint

    reason = "--no-refit" if not config.refit else refit_skip_reason(quality, config.threshold,
                                                                      result.config.batch_size)
    checkpoint = out_dir / CHECKPOINT_NAME
    if reason is not None:
        add_refit(checkpoint, None, {})  # a resumed run's model.pt may hold the refit of an earlier scoring
        return None, {"skipped": reason}
    kept = np.flatnonzero(quality >= config.threshold)
    digest = hashlib.sha256(kept.astype("<i8").tobytes()).hexdigest()[:16]  # which masks were kept
    stored = load_checkpoint(checkpoint) if config.resume else {}
    record = stored.get("refit") or {}
    if stored.get("refit_unet") is not None and record.get("kept_digest") == digest:
        unet = copy.deepcopy(result.unet)
        unet.load_state_dict(stored["refit_unet"])
        return Refit(unet=unet.eval(), samples=record["samples"], epochs=record["epochs"],
                     steps_per_epoch=record["steps_per_epoch"]), record
    refit = refit_segmenter(data, result, kept, device=device, progress=progress)
    record = {"samples": refit.samples, "epochs": refit.epochs, "steps_per_epoch": refit.steps_per_epoch,
              "first_pass_suspects": len(quality) - len(kept), "kept_digest": digest}
    add_refit(checkpoint, refit.unet, record)
    return refit, record


def _rescore(data: PreparedData, scorer: TrainResult, signals, scores, store: Path | None, *, device: str,
             seed: int, progress: bool):
    """The signals and scores of every sample again, from ``scorer``'s networks; the first pass's
    ``signals`` and ``scores`` are released (and their files in ``store`` deleted) first."""
    release_signals(signals)
    release_pages(*scores.evidence.values())
    if store is not None:  # the caller's mappings keep their unlinked files until it drops them on return
        shutil.rmtree(store, ignore_errors=True)
    return_freed_memory()
    signals = compute_signals(data, scorer, device=device, seed=seed, progress=progress, store=store,
                              description="score again")
    _require_finite("outputs", {name: value for name, value in vars(signals).items() if name not in MAY_BE_NAN})
    scores = quality_scores(signals, seed=seed, store=store)
    _require_finite("scores", {"quality_score": scores.quality})
    return signals, scores


def _rank_and_diagnose(data, result, signals, clusters, scores, config, out_dir, *, progress,
                       annotation_ids=None, reader=None, segmenter=None) -> list[ScoreRow]:
    """One ScoreRow per sample, most suspect first; suspects get a diagnosis and a suggested mask from
    ``segmenter`` (None: the scan's U-Net)."""
    index = data.index
    multilabel = index.multilabel
    quality, suspicion = scores.quality, scores.suspicion
    order = sorted(range(len(quality)), key=lambda i: (-suspicion[i], index.samples[i].id))
    suspects = [i for i in order if quality[i] < config.threshold]
    priors = class_priors(data.masks, signals.dice, quality >= config.threshold) if suspects else None
    diagnoses: dict[int, tuple[str, tuple[int, ...]]] = {}
    confidence: dict[int, float] = {}
    stored = mask_format_of(index)  # suggestions are stored as the dataset stores its masks
    segmenter = result.unet if segmenter is None else segmenter
    for position, working, original in predict_probabilities(data, segmenter, suspects, progress=progress,
                                                             description="diagnose", precision=result.config.precision):
        given = np.asarray(data.masks[position], dtype=bool)
        predicted = predicted_masks(working, multilabel=multilabel)
        if data.void is not None:  # void pixels are never disagreement
            predicted = predicted & ~np.asarray(data.void[position], dtype=bool)
        diagnoses[position] = diagnose(given, predicted, suspect=True, multilabel=multilabel)
        sample_id = index.samples[position].id
        _, given_original, void = load_original(index, sample_id, reader=reader)
        suggestion = suggest_masks(given_original, predicted_masks(original, multilabel=multilabel), original,
                                   priors, multilabel=multilabel)
        confidence[position] = suggestion.confidence
        write_suggested_masks(out_dir / "suggested", sample_id, suggestion.masks, classes=index.classes,
                              multilabel=multilabel, file_name=f"{sample_id}.png", values=stored.values,
                              void=void, void_value=stored.void, palette=stored.palette, foreground=stored.foreground)
    rows = []
    for rank, position in enumerate(order, start=1):
        sample = index.samples[position]
        issue_type, issue_classes = diagnoses.get(position, ("ok", ()))
        rows.append(
            ScoreRow(
                rank=rank,
                id=sample.id,
                image=sample.image.as_posix(),
                mask=";".join(path.as_posix() for path in sample.masks),
                quality_score=float(quality[position]),
                suspect=bool(quality[position] < config.threshold),
                issue_type=issue_type,
                issue_classes=tuple(index.classes[k] for k in issue_classes),
                qam_score=float(signals.qam_score[position]),
                dice_vs_prediction=float(signals.dice[position].mean()),
                dice_per_class=tuple(float(value) for value in signals.dice[position]),
                boundary_distance=float(signals.boundary[position].max()),
                cluster=int(clusters.labels[position]),
                outlier=bool(clusters.outlier[position]),
                outlier_score=float(clusters.outlier_score[position]),
                edge_misfit=float(np.nan_to_num(np.nanmax(signals.edge_misfit[position], initial=-np.inf), neginf=0.0)),
                presence_surprise=float(scores.evidence["presence_surprise"][position]),
                shape_outlier=float(scores.evidence["shape_outlier"][position]),
                suggestion_confidence=confidence.get(position),
                annotation_ids=tuple((annotation_ids or {}).get(sample.id, ())),
                object_miss=float(signals.object_miss[position].max()),
            )
        )
    return rows


def _write_features(path: Path, data: PreparedData, signals, clusters, scores) -> None:
    """Save per-sample features, the 2-D map, clusters and every scoring signal, rows in dataset order."""
    samples = data.index.samples
    ids = (LazyColumn(len(samples), samples.id_dtype, samples.ids) if isinstance(samples, SliceSamples)  # volumes
           else np.asarray([sample.id for sample in samples]))
    arrays = {
        "ids": ids,
        "qam_features": signals.qam_features,
        "bottleneck_features": signals.bottleneck,
        "shape_features": signals.shape,
        "coords": clusters.coords,
        "cluster": clusters.labels,
        "outlier": clusters.outlier,
        "dice_per_class": signals.dice,
        "boundary_per_class": signals.boundary,
        "qam_score": signals.qam_score,
        "suspicion": scores.suspicion,
        "quality_score": scores.quality,
    }
    arrays.update({f"evidence_{name}": values for name, values in scores.evidence.items()})
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as handle:
            write_npz(handle, arrays)


def _select_rows(rows: list[ScoreRow], config: ScanConfig) -> list[ScoreRow]:
    """The rows scores.csv keeps under --suspects-only and --top."""
    selected = [row for row in rows if row.suspect] if config.suspects_only else rows
    return selected[: config.top] if config.top is not None else selected


def _report_input(index, config: ScanConfig, result: TrainResult, rows: list[ScoreRow],
                  row_coords: np.ndarray, seconds: dict[str, float], check: dict[str, object], *, slices=None):
    """The report's data: rows in rank order and ``row_coords`` (R, 2), the 2-D feature map aligned with them;
    ``slices``: volumes, {case id: its flagged slices (report.SliceView)}."""
    from .report import ReportInput, SampleRow

    row_fields = [name for name in SampleRow.__dataclass_fields__]
    return ReportInput(
        dataset_root=str(index.root),
        layout=index.layout,
        classes=index.classes,
        num_samples=len(rows),
        skipped=tuple((item.path, item.reason) for item in index.skipped),
        settings=_settings(config) | {"epochs": result.config.epochs, "epoch_budget": result.epoch_budget},
        stage_seconds=dict(seconds),
        threshold=config.threshold,
        rows=tuple(SampleRow(**{name: getattr(row, name) for name in row_fields}) for row in rows),
        coords=row_coords,
        version=__version__,
        self_check=check,
        void_value=getattr(index, "void_value", None),
        slices=slices or {},
    )


def _sample_visuals(data: PreparedData, result: TrainResult, position: int, source: DatasetSource):
    """Image, given masks and predicted masks of one sample at its original size, for the report."""
    from .report import SampleVisuals

    image, given, void = load_original(data.index, data.index.samples[position].id, reader=source.reader)
    (_, _, predicted), = predict_samples(data, result.unet, [position], precision=result.config.precision)
    return SampleVisuals(image=image, given=given, predicted=predicted, void=void)


def _settings(config: ScanConfig) -> dict[str, object]:
    settings = dataclasses.asdict(config.train)
    settings.update(threshold=config.threshold, top=config.top, suspects_only=config.suspects_only,
                    resume=config.resume, mask_suffix=config.mask_suffix, ignore_value=config.ignore_value,
                    axis=config.axis, refit=config.refit)
    return settings


def self_check(scores, signals, *, cases: bool = False) -> dict[str, object]:
    """What a user can trust: the fusion's estimated AUROC on held-out synthetic corruptions of this
    dataset, how well the segmenter fits the labels, one sentence on what that means, and the rule
    that set the suspects (``cases``: a volume dataset, whose case-level mixture or tail decides)."""
    auroc = scores.self_check_auroc
    median_dice = float(np.median(signals.dice.mean(axis=1)))
    if not np.isfinite(auroc):
        sentence = "Too few samples to estimate how well the ranking works."
    elif median_dice >= 0.85:
        sentence = (f"The segmenter fits the labels well (median Dice {median_dice:.2f}), so disagreement with it "
                    f"is strong evidence; on synthetic errors of this dataset the ranking reaches AUROC {auroc:.2f}.")
    else:
        sentence = (f"The segmenter fits the labels only partly (median Dice {median_dice:.2f}), so the score leans "
                    f"on the label critic, image edges and dataset priors; on synthetic errors of this dataset the "
                    f"ranking reaches AUROC {auroc:.2f}.")
    if scores.reads_clean:
        sentence += (f" Almost no mask looks like a synthetic error of this dataset (estimated share of bad masks "
                     f"{100 * scores.bad_share:.1f} %), so only outliers are flagged.")
    elif scores.rule == "bad probability" and not cases:
        sentence += (" The masks a mixture model would flag look mostly clean to the fusion, so a mask is a "
                     "suspect only where its estimated probability of being bad is at least one half.")
    top = sorted(scores.fusion.weights.items(), key=lambda item: -abs(item[1]))
    return {
        "estimated_auroc": round(float(auroc), 4) if np.isfinite(auroc) else None,
        "estimated_bad_share": round(float(scores.bad_share), 4) if np.isfinite(scores.bad_share) else None,
        "segmenter_median_dice": round(median_dice, 4),
        "suspect_rule": (("case tail" if scores.reads_clean else "case mixture") if cases else scores.rule),
        "summary": sentence,
        "fusion_weights": {name: round(weight, 4) for name, weight in top},
        "fusion_experts": scores.fusion.experts,
    }


def _write_run_json(out_dir: Path, data: PreparedData, config: ScanConfig, result: TrainResult, clusters,
                    check: dict[str, object], seconds: dict[str, float], group, *, report_id: str | None,
                    source: DatasetSource, volume_data: VolumeData | None, slices_per_epoch: int | None = None,
                    refit: dict[str, object] | None = None) -> None:
    import sklearn
    import torch

    write_json(
        out_dir / "run.json",
        {
            "maskaudit_version": __version__,
            "versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "numpy": np.__version__, "scikit-learn": sklearn.__version__},
            "options": _settings(config) | {"epochs": result.config.epochs, "epoch_budget": result.epoch_budget,
                                            "slices_per_epoch": slices_per_epoch},  # volumes: the sampler's draws
            "seed": config.train.seed,
            "report_id": report_id,  # the id in the report's decisions CSV file name; null without a report
            # Same seed, same scores holds for the same machine, torch build and thread count.
            "torch_threads": torch.get_num_threads(),
            # what --precision resolved to on this machine (auto: bfloat16 only where the CPU computes it natively)
            "segmenter_dtype": dtype_name(torch.device(result.config.device), result.config.precision),
            "processes": group.world_size,
            "dataset": {
                "root": str(data.index.root),
                "layout": data.index.layout,
                "classes": list(data.index.classes),
                "label_values": data.index.labels.as_dict(),
                "num_samples": len(data.index.samples),
                "skipped": [{"path": item.path, "reason": item.reason} for item in data.index.skipped],
                "format": source.format,
                **({} if volume_data is None else {"num_cases": len(volume_data.volumes.cases),
                                                   "axis": volume_data.axis,
                                                   "spacing": list(volume_data.volumes.spacing)}),
            },
            "clustering": {"k": int(clusters.k), "outliers": int(np.sum(clusters.outlier))},
            "refit": refit,  # the U-Net that predicts (and suggests, with the scan's own): its kept masks, or why none
            "self_check": check,
            "stage_seconds": {name: round(value, 3) for name, value in seconds.items()},
        },
    )
