"""The ``maskaudit`` command line: parses options, calls the library, turns errors into exit codes."""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

import click

from . import __version__
from .errors import MaskauditError
from .exporters import FORMATS as EXPORT_FORMATS
from .models import MODES

_DATASET = click.Path(exists=False, file_okay=False, path_type=Path)
_MASK_SUFFIX = click.option(
    "--mask-suffix",
    default=None,
    metavar="SUFFIX",
    help="Suffix of mask file stems, e.g. '_mask' for case01.png / case01_mask.png. Auto-detected if omitted.",
)


def _ignore_value(ctx: click.Context, param: click.Parameter, value: str) -> int | None | str:
    from .labels import parse_ignore_value

    try:
        return parse_ignore_value(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from error


_IGNORE_VALUE = click.option(
    "--ignore-value",
    default="auto",
    show_default=True,
    metavar="N|none|auto",
    callback=_ignore_value,
    help="Layout A label value of void pixels (no class, not background; left out of training and scoring)."
    " auto: 255 when the other values form a small set, as in PASCAL VOC; none: no void value.",
)


def _fail(error: MaskauditError) -> None:
    click.echo(f"maskaudit: error: {error}", err=True)
    sys.exit(error.exit_code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="maskaudit")
def main() -> None:
    """Audit the masks of a segmentation dataset and rank the ones that look wrong."""


@main.command()
@click.argument("dataset", type=_DATASET)
@_MASK_SUFFIX
@_IGNORE_VALUE
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout instead of text.")
def inspect(dataset: Path, mask_suffix: str | None, ignore_value: int | None | str, as_json: bool) -> None:
    """Find image/mask pairs, classes and layout in DATASET and summarise them, without training."""
    from .formats import open_dataset
    from .summary import describe_source, format_description

    try:
        description = describe_source(open_dataset(dataset, mask_suffix=mask_suffix, ignore_value=ignore_value))
    except MaskauditError as error:
        _fail(error)
    click.echo(json.dumps(description, indent=2) if as_json else format_description(description))


@main.command()
@click.argument("dataset", type=_DATASET)
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory for scores.csv, report.html, run.json, suggested/ and the checkpoint.")
@_MASK_SUFFIX
@_IGNORE_VALUE
@click.option("--mode", type=click.Choice(MODES), default="qam-ocm", show_default=True,
              help="qam-ocm: the paper's method; qam: no tanh bound; baseline: plain mean loss, no QAM.")
@click.option("--lam", type=click.FloatRange(min=0, min_open=True), default=2.0, show_default=True,
              help="OCM bound lambda: the largest weight ratio in a batch is exp(2 * lambda).")
@click.option("--size", type=click.IntRange(min=32), default=128, show_default=True,
              help="Working resolution in pixels (divisible by 8); images are resized to size x size.")
@click.option("--width", type=click.IntRange(min=4), default=16, show_default=True, help="U-Net width of the first level.")
@click.option("--batch-size", type=click.IntRange(min=8), default=8, show_default=True,
              help="Mini-batch size; the QAM weights are a softmax over each batch.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True, help="Adam learning rate.")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Most training epochs. Default: about 1,000 optimizer steps, at least 3 and at most 40 epochs, "
                   "extended up to 1.5x while the segmenter's training Dice still rises (budgets of 6 epochs or more).")
@click.option("--early-stop/--no-early-stop", default=True, show_default=True,
              help="Stop before --epochs once every class is learned and the ranking by training loss is stable; "
                   "without it the default budget is run exactly, never extended.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of every random choice; same seed, same scores on CPU.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="auto uses CUDA when PyTorch sees a GPU.")
@click.option("--flips/--no-flips", default=False, show_default=True,
              help="Random left-right flips in augmentation (off: left and right matter in chest X-rays).")
@click.option("--augment/--no-augment", default=True, show_default=True, help="Random affine and intensity augmentation.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto", show_default=True,
              help="The U-Net's precision in training, scoring and prediction. auto: fp16 autocast on CUDA, "
                   "bf16 on CPUs with native bf16, else fp32.")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="Processes that load training batches. Default: 0 on CPU, up to 4 with CUDA.")
@click.option("--threshold", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="A sample is a suspect when its quality_score is below this.")
@click.option("--top", type=click.IntRange(min=1), default=None, help="Write only the N most suspect rows to scores.csv.")
@click.option("--suspects-only", is_flag=True, help="Write only the suspect rows to scores.csv.")
@click.option("--overwrite", is_flag=True,
              help="Replace an earlier run in --out: its results, suggested/ and model.pt are deleted first.")
@click.option("--resume", is_flag=True, help="Continue the interrupted run in --out from its last checkpoint.")
@click.option("--report/--no-report", default=True, show_default=True, help="Write report.html.")
@click.option("--refit/--no-refit", default=True, show_default=True,
              help="After scoring, train the segmenter a few epochs more on the masks not flagged and score "
                   "every mask again with it; `predict` uses that segmenter, and it suggests corrections together "
                   "with the scan's own (2-D datasets).")
@click.option("--axis", type=click.IntRange(0, 2), default=None,
              help="Volumes: voxel axis to audit slice by slice. Default: the axis with the largest spacing.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def scan(dataset: Path, out_dir: Path, mask_suffix: str | None, ignore_value: int | None | str, mode: str,
         lam: float, size: int, width: int,
         batch_size: int, lr: float, epochs: int | None, early_stop: bool, seed: int, device: str, flips: bool,
         augment: bool, precision: str, workers: int | None, threshold: float, top: int | None, suspects_only: bool, overwrite: bool, resume: bool, report: bool,
         refit: bool, axis: int | None, quiet: bool) -> None:
    """Train on DATASET, score every mask and write the ranked suspects to --out."""
    from .pipeline import ScanConfig, scan as run_scan
    from .train import TrainConfig, resolve_device

    try:
        if size % 8:
            raise click.BadParameter(f"{size} is not divisible by 8", param_hint="--size")
        train_config = TrainConfig(mode=mode, lam=lam, size=size, width=width, batch_size=batch_size, lr=lr,
                                   epochs=epochs, seed=seed, device=str(resolve_device(device)), flips=flips,
                                   augment=augment, precision=precision, early_stop=early_stop, workers=workers)
        config = ScanConfig(train=train_config, mask_suffix=mask_suffix, ignore_value=ignore_value,
                            threshold=threshold, top=top, suspects_only=suspects_only, overwrite=overwrite,
                            resume=resume, report=report, axis=axis, refit=refit)
        result = run_scan(dataset, out_dir, config, progress=not quiet)
    except MaskauditError as error:
        _fail(error)
    except KeyboardInterrupt:
        checkpoint = out_dir / "model.pt"
        if checkpoint.is_file():
            message = (f"maskaudit: interrupted. The last finished epoch is saved in {checkpoint}; "
                       f"continue with: {_resume_command(click.get_current_context())}")
        else:
            message = "maskaudit: interrupted before the first epoch finished; run the same command to start again"
        click.echo(message, err=True)
        sys.exit(130)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only the main process reports
        return
    suspects = sum(row.suspect for row in result.rows)
    click.echo(f"{len(result.rows)} samples scored, {suspects} suspects.")
    click.echo(f"scores:  {out_dir / 'scores.csv'}")
    if (out_dir / "slices.csv").is_file():
        click.echo(f"slices:  {out_dir / 'slices.csv'}")
    if report:
        click.echo(f"report:  {out_dir / 'report.html'}")
    if suspects:
        click.echo(f"suggested corrections: {out_dir / 'suggested'}")


def _resume_command(ctx: click.Context) -> str:
    """The user's scan command line with --resume: the options given on it, in a shell-safe form."""
    words = ["maskaudit", "scan"]
    for param in ctx.command.params:
        if param.name in ("overwrite", "resume") or ctx.get_parameter_source(param.name) is not (
            click.core.ParameterSource.COMMANDLINE
        ):
            continue
        value = ctx.params[param.name]
        if isinstance(param, click.Argument):
            words.append(str(value))
        elif isinstance(param, click.Option) and param.is_flag:
            if param.secondary_opts:  # --flips/--no-flips
                words.append(max(param.opts if value else param.secondary_opts, key=len))
            elif value:
                words.append(max(param.opts, key=len))
        else:
            words += [max(param.opts, key=len), str(value)]
    return shlex.join([*words, "--resume"])


@main.command()
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("images_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory for the predicted masks, stored as the training dataset stores its masks (layout, label values, palette).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace masks an earlier predict wrote to --out.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def predict(model: Path, images_dir: Path, out_dir: Path, device: str, overwrite: bool, quiet: bool) -> None:
    """Segment the images in IMAGES_DIR with the model.pt of a scan and write masks to --out."""
    from .predict import predict_directory
    from .train import resolve_device

    try:
        written, skipped = predict_directory(model, images_dir, out_dir, device=str(resolve_device(device)),
                                             overwrite=overwrite, progress=not quiet)
    except MaskauditError as error:
        _fail(error)
    for item in skipped:
        click.echo(f"skipped {item.path}: {item.reason}", err=True)
    click.echo(f"{written} images segmented; masks in {out_dir / 'masks'}")


@main.command()
@click.argument("results", type=click.Path(file_okay=False, path_type=Path))
@click.option("--format", "format_name", required=True, type=click.Choice(EXPORT_FORMATS),
              help="labelstudio: tasks JSON (+ labeling config XML beside it); coco: COCO instances JSON for CVAT.")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="The file to write.")
@click.option("--all", "everything", is_flag=True, help="Export every sample of scores.csv, not only the suspects.")
@click.option("--decisions", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Export the rows marked 'relabel' in this decisions CSV downloaded from the run's report.")
@click.option("--image-prefix", metavar="URL", default=None,
              help="labelstudio: put URL before each image path relative to the dataset root "
                   "(default: Label Studio local files, /data/local-files/?d=<absolute path>).")
@click.option("--overwrite", is_flag=True, help="Replace --out (and the files written beside it) if they exist.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def export(results: Path, format_name: str, out: Path, everything: bool, decisions: Path | None,
           image_prefix: str | None, overwrite: bool, quiet: bool) -> None:
    """Write the suspects of the scan in RESULTS, with their suggested masks, for a labeling tool."""
    from .exporters import export_scan

    if everything and decisions is not None:
        raise click.UsageError("--all and --decisions choose different samples: pass only one")
    try:
        summary = export_scan(results, out, format_name=format_name, everything=everything, decisions=decisions,
                              image_prefix=image_prefix, overwrite=overwrite, progress=not quiet)
    except MaskauditError as error:
        _fail(error)
    click.echo(f"{summary.count} samples exported: {', '.join(str(path) for path in summary.files)}")


if __name__ == "__main__":  # pragma: no cover
    main()
