"""The ``maskaudit`` command line: parses options, calls the library, turns errors into exit codes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from . import __version__
from .errors import MaskauditError

_DATASET = click.Path(exists=False, file_okay=False, path_type=Path)
_MASK_SUFFIX = click.option(
    "--mask-suffix",
    default=None,
    metavar="SUFFIX",
    help="Suffix of mask file stems, e.g. '_mask' for case01.png / case01_mask.png. Auto-detected if omitted.",
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
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout instead of text.")
def inspect(dataset: Path, mask_suffix: str | None, as_json: bool) -> None:
    """Find image/mask pairs, classes and layout in DATASET and summarise them, without training."""
    from .dataset import find_dataset
    from .summary import describe_dataset, format_description

    try:
        description = describe_dataset(find_dataset(dataset, mask_suffix=mask_suffix))
    except MaskauditError as error:
        _fail(error)
    click.echo(json.dumps(description, indent=2) if as_json else format_description(description))


if __name__ == "__main__":  # pragma: no cover
    main()
