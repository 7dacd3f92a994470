"""Read a finished scan's results directory and choose the rows to export.

Inputs are the scan's public outputs: ``run.json`` (dataset root, layout, classes, options,
report id), ``scores.csv`` (one row per sample, most suspect first) and, for ``--decisions``,
the CSV the report downloads (``id,decision,note``; see ``templates/report.js``).
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import ExportError
from ..export import read_scores_csv

# The report names its download maskaudit-decisions-<report id>.csv (browsers may add " (1)").
_DECISIONS_NAME = re.compile(r"^maskaudit-decisions-([0-9a-f]{12})(?:\s*\(\d+\))?\.csv$")


@dataclass(frozen=True)
class ScanResults:
    """What an exporter needs from a finished scan.

    Attributes
    ----------
    results_dir : Path
        The scan's ``--out`` directory.
    dataset_root : Path
        Absolute dataset directory recorded in run.json.
    classes : tuple of str
        The K class names, in mask channel order.
    multilabel : bool
        Layout B (one binary mask per class) rather than layout A (label index).
    options : dict
        The scan's options from run.json (``size``, ``mask_suffix``, ``threshold``, ...).
    report_id : str or None
        Identity of the run's report (its decisions CSV carries it in its file name); None for
        runs whose run.json does not record it.
    rows : tuple of dict
        scores.csv rows (column name to text), most suspect first.
    format : str
        The dataset format of run.json (``folders``, ``coco``, ``nnunet``).
    axis : int or None
        nnunet: the voxel axis the scan sliced along; None otherwise.
    label_values : tuple of int
        Layout A: the value class k is stored as in the dataset's masks and in ``suggested/masks/``
        (from run.json); empty for layout B, and for runs whose run.json does not record it (1..K).
    """

    results_dir: Path
    dataset_root: Path
    classes: tuple[str, ...]
    multilabel: bool
    options: dict
    report_id: str | None
    rows: tuple[dict[str, str], ...]
    format: str = "folders"
    axis: int | None = None
    label_values: tuple[int, ...] = ()


def load_scan_results(results_dir: Path) -> ScanResults:
    """Read run.json and scores.csv of ``results_dir``.

    Raises
    ------
    ExportError
        If either file is missing or unreadable (the scan did not finish or this is not a results directory).
    """
    results_dir = Path(results_dir)
    run_path, scores_path = results_dir / "run.json", results_dir / "scores.csv"
    for path in (run_path, scores_path):
        if not path.is_file():
            raise ExportError(f"{results_dir} holds no finished scan (no {path.name}); run `maskaudit scan` first")
    try:
        run = json.loads(run_path.read_text(encoding="utf-8"))
        dataset = run["dataset"]
        rows = tuple(read_scores_csv(scores_path))
        return ScanResults(
            results_dir=results_dir,
            dataset_root=Path(dataset["root"]),
            classes=tuple(dataset["classes"]),
            multilabel=dataset["layout"] == "B",
            options=dict(run["options"]),
            report_id=run.get("report_id"),
            rows=rows,
            format=str(dataset.get("format", "folders")),
            axis=dataset.get("axis"),
            label_values=tuple(int(value) for value in (dataset.get("label_values") or {}).get("values", ())),
        )
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as error:
        raise ExportError(f"{results_dir}: run.json or scores.csv is damaged ({type(error).__name__}: {error})") from error


def select_rows(results: ScanResults, *, everything: bool = False, decisions: Path | None = None) -> list[dict[str, str]]:
    """The scores.csv rows to export, in rank order.

    Default: the suspects; ``everything``: every row of scores.csv; ``decisions``: the rows marked
    "relabel" in the report's decisions CSV.

    Raises
    ------
    ExportError
        If the selection is empty, or the decisions CSV belongs to another run.
    """
    if everything and decisions is not None:
        raise ExportError("--all and --decisions choose different rows: pass only one")
    if decisions is not None:
        wanted = read_relabel_ids(decisions, results)
        rows = [row for row in results.rows if row["id"] in wanted]
        if not rows:
            raise ExportError(f"{decisions} marks no row 'relabel': nothing to export")
        return rows
    if everything:
        rows = list(results.rows)
        if not rows:
            raise ExportError(f"{results.results_dir / 'scores.csv'} has no rows: nothing to export")
        return rows
    rows = [row for row in results.rows if row["suspect"] == "1"]
    if not rows:
        raise ExportError(f"the scan in {results.results_dir} found no suspects; pass --all to export every sample")
    return rows


def read_relabel_ids(path: Path, results: ScanResults) -> set[str]:
    """The ids marked "relabel" in a decisions CSV (header ``id,decision,note``) of this run.

    A CSV is refused as coming from another run when its file name carries another report id,
    or when it names an id that is not in this run's scores.csv.
    """
    path = Path(path)
    match = _DECISIONS_NAME.match(path.name)
    if match and results.report_id and match.group(1) != results.report_id:
        raise ExportError(
            f"{path.name} holds the decisions of run {match.group(1)}, not of this run {results.report_id}; "
            "download the decisions from this run's report.html"
        )
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or not {"id", "decision"} <= set(reader.fieldnames):
                raise ExportError(f"{path} is not a maskaudit decisions CSV (expected the header id,decision,note)")
            decided = [(row["id"], (row["decision"] or "").strip()) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ExportError(f"cannot read the decisions CSV {path} ({error})") from error
    known = {row["id"] for row in results.rows}
    foreign = [sample_id for sample_id, _ in decided if sample_id not in known]
    if foreign:
        raise ExportError(
            f"{path} looks like the decisions of another run: {len(foreign)} of its ids are not in "
            f"this run's scores.csv (e.g. {foreign[0]!r})"
        )
    return {sample_id for sample_id, decision in decided if decision == "relabel"}
