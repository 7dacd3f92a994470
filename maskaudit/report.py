"""The annotators' HTML report: one self-contained page plus image files, readable offline from disk.

Data first, HTML second: :func:`render_report` fills plain dataclasses (``_Page`` and friends), the
jinja2 template only loops and branches over them, and ``report.js`` builds the ranked list, the
detail view and the triage from a JSON copy of the rows embedded in the page. Layout::

    OUT/report.html
    OUT/assets/report.css, report.js        static files copied from templates/
    OUT/assets/samples/000001-*.jpg|png      pictures of the sample ranked 1, 2, ... (names never use ids)
    OUT/assets/samples/000001-s03-*.jpg|png  volumes: the detail pictures of the 4th flagged slice of case 1

Shapes: N samples (rows), K classes, H x W pixels of one original image.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from . import overlays
from .errors import MaskauditError

from .atomic import atomic_write_bytes, atomic_write_text
from .diagnosis import ISSUE_TYPES  # the summary lists issue types in this order

STATIC_FILES = ("report.css", "report.js")
TEMPLATE = "report.html.j2"
THUMB_SIDE = 160


# --------------------------------------------------------------------------------------------- contract
@dataclass(frozen=True)
class SampleRow:
    """One usable sample; the same values as a line of ``scores.csv``."""

    rank: int  # 1 = most suspect
    id: str
    image: str  # path relative to the dataset root
    mask: str  # path(s) relative to the dataset root, ';'-joined for layout B
    quality_score: float  # [0, 1], higher = better label
    suspect: bool
    issue_type: str  # one of ISSUE_TYPES
    issue_classes: tuple[str, ...]
    qam_score: float
    dice_vs_prediction: float
    dice_per_class: tuple[float, ...]  # K values, class order
    cluster: int
    outlier: bool


@dataclass(frozen=True)
class SampleVisuals:
    """Pictures of one sample at its original size, loaded lazily."""

    image: np.ndarray  # (H, W, 3) uint8
    given: np.ndarray  # (K, H, W) bool, the dataset's mask
    predicted: np.ndarray  # (K, H, W) bool, the segmenter's mask
    void: np.ndarray | None = None  # (H, W) bool void / ignore pixels of the dataset's mask, or None


@dataclass(frozen=True)
class SliceView:
    """One flagged slice of a volume case, which the detail view steps through."""

    key: str  # passed to ``visuals`` for the slice's pictures (the slice's sample id)
    label: str  # what the reviewer reads, e.g. "slice 17"
    quality_score: float  # the slice's own score, [0, 1]
    dice_vs_prediction: float


@dataclass(frozen=True)
class ReportInput:
    dataset_root: str
    layout: str  # "A" or "B"
    classes: tuple[str, ...]
    num_samples: int
    skipped: tuple[tuple[str, str], ...]  # (path, reason)
    settings: dict[str, object]
    stage_seconds: dict[str, float]
    threshold: float  # suspect if quality_score < threshold
    rows: tuple[SampleRow, ...]  # sorted by rank
    coords: np.ndarray  # (N, 2) float, aligned with rows
    version: str
    # the scan's self-check (maskaudit.pipeline.self_check): estimated_auroc, segmenter_median_dice,
    # summary (one sentence), fusion_weights; empty: not shown
    self_check: dict[str, Any] = field(default_factory=dict)
    void_value: int | None = None  # layout A label value of void pixels (hatched in the pictures), or None
    # volumes: row id -> the case's flagged slices in slice order; only rows with pictures get theirs drawn
    slices: Mapping[str, tuple[SliceView, ...]] = field(default_factory=dict)


# ------------------------------------------------------------------------------------ template data
@dataclass(frozen=True)
class _Bar:
    x: float
    width: float
    y_ok: float
    h_ok: float
    y_suspect: float
    h_suspect: float
    label: str


@dataclass(frozen=True)
class _Tick:
    pos: float  # x of a vertical tick, y of a horizontal one
    text_pos: float  # the other coordinate of its label
    label: str


@dataclass(frozen=True)
class _Histogram:
    width: int
    height: int
    left: float
    right: float
    top: float
    bottom: float
    bars: list[_Bar]
    x_ticks: list[_Tick]
    y_ticks: list[_Tick]
    y_label_x: float
    threshold_x: float
    threshold_top: float
    threshold_label: str
    threshold_label_x: float
    threshold_label_y: float
    threshold_anchor: str  # "start" or "end", so the label stays inside the plot


@dataclass(frozen=True)
class _Count:
    key: str  # filter value
    label: str
    count: int
    percent: float  # bar width, of the largest count
    colour: str = ""
    extra: str = ""


@dataclass(frozen=True)
class _Point:
    index: int  # position in rows
    cx: float
    cy: float
    colour: str
    outlier: bool
    suspect: bool
    title: str


@dataclass(frozen=True)
class _ClusterInfo:
    label: str
    value: str
    colour: str
    count: int
    suspects: int
    outliers: int
    mean_score: str


@dataclass(frozen=True)
class _Scatter:
    width: int
    height: int
    points: list[_Point]
    clusters: list[_ClusterInfo]
    missing: int  # points without finite coordinates


@dataclass(frozen=True)
class _KeyValue:
    key: str
    value: str
    percent: float = 0.0


@dataclass(frozen=True)
class _ClassInfo:
    name: str
    colour: str
    flagged: int
    mean_dice: str


@dataclass(frozen=True)
class _Page:
    title: str
    dataset_root: str
    layout_label: str
    version: str
    generated: str
    report_id: str
    num_samples: int
    num_rows: int
    num_suspects: int
    num_outliers: int
    threshold: str
    classes: list[_ClassInfo]
    issues: list[_Count]
    clusters: list[_ClusterInfo]
    skipped: list[_KeyValue]
    settings: list[_KeyValue]
    stages: list[_KeyValue]
    total_time: str
    histogram: _Histogram
    scatter: _Scatter
    visual_limit: int
    rows_without_visuals: int
    self_check: dict[str, Any]
    data: dict[str, Any] = field(default_factory=dict)  # embedded as JSON for report.js
    void_value: int | None = None


def _self_check(check: dict[str, Any]) -> dict[str, Any]:
    """The self-check card's values: AUROC and Dice as text, and the evidence weights, largest first."""
    if not check:
        return {}
    auroc = check.get("estimated_auroc")
    weights = check.get("fusion_weights", {})
    largest = max((abs(value) for value in weights.values()), default=0.0) or 1.0
    return {
        "auroc": "n/a" if auroc is None else _fmt(auroc, 2),
        "median_dice": _fmt(check.get("segmenter_median_dice", float("nan")), 2),
        "summary": str(check.get("summary", "")),
        "weights": [_KeyValue(key=name, value=_fmt(value, 2), percent=round(100 * abs(value) / largest, 1))
                    for name, value in weights.items()],
    }


# --------------------------------------------------------------------------------------------- public
def render_report(
    report: ReportInput,
    visuals: Callable[[str], SampleVisuals],
    out_dir: Path,
    *,
    max_visual_samples: int = 2000,
    progress: bool = False,
    detail_max_side: int | None = 1024,
    page_size: int = 50,
    run_id: str | None = None,
) -> Path:
    """Write ``out_dir/report.html`` and its pictures under ``out_dir/assets/``; return the HTML path.

    Parameters
    ----------
    report : ReportInput
        Everything the page shows; ``rows`` sorted by rank, ``coords`` (N, 2) aligned with them.
    visuals : callable
        ``visuals(sample_id) -> SampleVisuals``, called once per row for the first
        ``max_visual_samples`` rows by rank only, one at a time, and then with the ``key`` of
        each of the row's ``report.slices``. If it raises ``MaskauditError`` the row (or slice)
        is listed without pictures and the message is shown instead.
    out_dir : Path
        Created if missing. Existing files of the same names are replaced atomically.
    max_visual_samples : int
        Rows ranked below this are listed without pictures (with a note saying so).
    progress : bool
        Show a tqdm bar while drawing pictures.
    detail_max_side : int or None
        Longest side of the detail view's pictures; ``None`` keeps the original size.
    page_size : int
        Rows per page in the ranked list.
    run_id : str or None
        Identity of this run for the triage decisions kept in the browser's localStorage;
        default: a hash of the dataset root, settings and ranked ids (stable across re-renders).

    Raises
    ------
    MaskauditError
        Nothing to report (no rows), or inputs that do not fit together; raised before touching disk.
    """
    _validate(report, max_visual_samples=max_visual_samples, page_size=page_size)
    env = _environment()
    template = env.get_template(TEMPLATE)  # fail on a broken install before writing anything

    out_dir = Path(out_dir)
    sample_dir = out_dir / "assets" / "samples"
    sample_dir.mkdir(parents=True, exist_ok=True)

    colours = [overlays.class_colour(k) for k in range(len(report.classes))]
    n_visual = min(len(report.rows), max_visual_samples)
    assets: list[dict[str, Any]] = []
    iterator: Any = range(n_visual)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="report", unit="sample")
    for i in iterator:
        try:
            vis = visuals(report.rows[i].id)
        except MaskauditError as error:
            assets.append({"error": f"Pictures unavailable: {error}"})
            continue
        assets.append(_write_sample_assets(i, vis, colours, sample_dir, detail_max_side=detail_max_side))
        if report.rows[i].id in report.slices:
            assets[-1]["slices"] = _write_slice_assets(i, report.slices[report.rows[i].id], visuals, colours,
                                                       sample_dir, detail_max_side=detail_max_side)

    for name in STATIC_FILES:
        atomic_write_bytes(out_dir / "assets" / name, _template_root().joinpath(name).read_bytes())

    page = _build_page(report, assets, colours, max_visual_samples=max_visual_samples, page_size=page_size,
                       run_id=run_id)
    html = template.render(page=page)
    target = out_dir / "report.html"
    atomic_write_text(target, html)
    return target


# -------------------------------------------------------------------------------------------- helpers
def _validate(report: ReportInput, *, max_visual_samples: int, page_size: int) -> None:
    if not report.rows:
        raise MaskauditError("nothing to report: no sample was scored, so no report was written")
    if not report.classes:
        raise MaskauditError("cannot write a report without class names")
    coords = np.asarray(report.coords)
    if coords.shape != (len(report.rows), 2):
        raise MaskauditError(
            f"report coords must have shape (N, 2) = ({len(report.rows)}, 2) to match the rows, got {coords.shape}")
    if max_visual_samples < 0:
        raise MaskauditError(f"max_visual_samples must be >= 0, got {max_visual_samples}")
    if page_size < 1:
        raise MaskauditError(f"page_size must be >= 1, got {page_size}")
    unknown = set(report.slices) - {row.id for row in report.rows}
    if unknown:
        raise MaskauditError(f"report slices name rows that do not exist: {', '.join(sorted(unknown)[:3])}")


def _template_root():
    """The templates directory: packaged as ``maskaudit/templates`` in a wheel, top-level in a checkout."""
    packaged = resources.files("maskaudit").joinpath("templates")
    if packaged.is_dir() and packaged.joinpath(TEMPLATE).is_file():
        return packaged
    source = Path(__file__).resolve().parent.parent / "templates"
    if (source / TEMPLATE).is_file():
        return source
    raise MaskauditError("maskaudit's report templates are missing; reinstall maskaudit")


def _environment():
    """jinja2 environment: autoescaping on, undefined names are errors, templates read from the package."""
    import jinja2

    root = _template_root()

    def load(name: str):
        entry = root.joinpath(name)
        if not entry.is_file():
            return None
        return entry.read_text(encoding="utf-8"), None, lambda: True

    return jinja2.Environment(
        loader=jinja2.FunctionLoader(load),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _check_visuals(vis: SampleVisuals) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    image = overlays.as_rgb_uint8(vis.image)
    given = np.asarray(vis.given, dtype=bool)
    predicted = np.asarray(vis.predicted, dtype=bool)
    if given.ndim == 2:
        given = given[None]
    if predicted.ndim == 2:
        predicted = predicted[None]
    h, w = image.shape[:2]
    if given.shape[1:] != (h, w):
        given = overlays.resize_masks(given, (h, w))
    if predicted.shape[1:] != (h, w):
        predicted = overlays.resize_masks(predicted, (h, w))
    if given.shape[0] != predicted.shape[0]:
        raise MaskauditError(
            f"given and predicted masks have different class counts: {given.shape[0]} vs {predicted.shape[0]}")
    void = None if vis.void is None else np.asarray(vis.void, dtype=bool)
    if void is not None and void.shape != (h, w):
        void = overlays.resize_masks(void[None], (h, w))[0]
    return image, given, predicted, void


def _write_sample_assets(i: int, vis: SampleVisuals, colours: list[str], sample_dir: Path, *,
                         detail_max_side: int | None) -> dict[str, Any]:
    """Draw and write the five pictures of row ``i``; return their paths relative to the report."""
    image, given, predicted, void = _check_visuals(vis)
    k = given.shape[0]
    if k > len(colours):
        colours = [overlays.class_colour(j) for j in range(k)]
    stem = f"{i + 1:06d}"
    thumb = overlays.contour_thumbnail(image, given, predicted, colours, max_side=THUMB_SIDE)
    diff = overlays.disagreement_thumbnail(image, given, predicted, void=void, max_side=THUMB_SIDE)
    out = _write_files(sample_dir, {"thumb": (f"{stem}-contours.jpg", overlays.encode_jpeg(thumb)),
                                    "diff": (f"{stem}-disagreement.png", overlays.encode_png(diff))})
    out.update(tw=int(thumb.shape[1]), th=int(thumb.shape[0]))
    out.update(_write_detail_assets(stem, (image, given, predicted, void), colours, sample_dir,
                                    detail_max_side=detail_max_side))
    return out


def _write_slice_assets(i: int, views: tuple[SliceView, ...], visuals: Callable[[str], SampleVisuals],
                        colours: list[str], sample_dir: Path, *, detail_max_side: int | None) -> list[dict[str, Any]]:
    """The detail pictures of row ``i``'s flagged slices, one entry per slice (an ``error`` when they fail)."""
    out = []
    for j, view in enumerate(views):
        entry: dict[str, Any] = {"label": view.label, "score": _num(view.quality_score),
                                 "dice": _num(view.dice_vs_prediction)}
        try:
            checked = _check_visuals(visuals(view.key))
        except MaskauditError as error:
            entry["error"] = f"Pictures unavailable: {error}"
        else:
            entry.update(_write_detail_assets(f"{i + 1:06d}-s{j:02d}", checked, colours, sample_dir,
                                              detail_max_side=detail_max_side))
        out.append(entry)
    return out


def _write_files(sample_dir: Path, files: dict[str, tuple[str, bytes]]) -> dict[str, Any]:
    """Write {key: (file name, bytes)} into ``sample_dir``; return {key: path relative to the report}."""
    out: dict[str, Any] = {}
    for key, (name, data) in files.items():
        atomic_write_bytes(sample_dir / name, data)
        out[key] = "assets/samples/" + name
    return out


def _write_detail_assets(stem: str, checked: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None],
                         colours: list[str], sample_dir: Path, *, detail_max_side: int | None) -> dict[str, Any]:
    """The detail view's image and its two overlays (given, predicted) from ``_check_visuals`` output."""
    image, given, predicted, void = checked
    if given.shape[0] > len(colours):
        colours = [overlays.class_colour(j) for j in range(given.shape[0])]
    size = overlays.fit_size(*image.shape[:2], detail_max_side)
    full = overlays.resize_image(image, size)
    given_ov = overlays.filled_overlay(overlays.resize_masks(given, size), colours,
                                       void=None if void is None else overlays.resize_masks(void[None], size)[0])
    pred_ov = overlays.filled_overlay(overlays.resize_masks(predicted, size), colours)
    out = _write_files(sample_dir, {
        "full": (f"{stem}-image.jpg", overlays.encode_jpeg(full, quality=90)),
        "given": (f"{stem}-given.png", overlays.encode_png(given_ov)),
        "pred": (f"{stem}-predicted.png", overlays.encode_png(pred_ov)),
    })
    out.update(w=int(size[1]), h=int(size[0]), ow=int(image.shape[1]), oh=int(image.shape[0]))
    return out


def _num(value: float, digits: int = 4) -> float | None:
    """JSON-safe float: NaN/inf become null."""
    value = float(value)
    return round(value, digits) if math.isfinite(value) else None


def _fmt(value: float, digits: int = 3) -> str:
    value = float(value)
    return f"{value:.{digits}f}" if math.isfinite(value) else "n/a"


def _fmt_seconds(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "n/a"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(round(seconds % 60)):02d} s"
    return f"{int(seconds // 3600)} h {int(round(seconds % 3600 / 60)):02d} min"


def _fmt_setting(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, default=str, ensure_ascii=False)
    return str(value)


def report_id(report: ReportInput) -> str:
    """The run's identity: a hash of the dataset root, settings and ranked ids (stable across re-renders)."""
    h = hashlib.sha256()
    h.update(report.dataset_root.encode("utf-8"))
    h.update(json.dumps({str(k): _fmt_setting(v) for k, v in report.settings.items()}, sort_keys=True).encode())
    for row in report.rows:
        h.update(b"\0" + row.id.encode("utf-8"))
    return h.hexdigest()[:12]


def _histogram(scores: np.ndarray, suspect: np.ndarray, threshold: float, *, bins: int = 20) -> _Histogram:
    width, height = 720, 220
    left, right, top, bottom = 40.0, 12.0, 16.0, 30.0
    pw, ph = width - left - right, height - top - bottom
    finite = np.isfinite(scores)
    idx = np.clip((np.nan_to_num(scores, nan=0.0) * bins).astype(int), 0, bins - 1)
    n_sus = np.bincount(idx[finite & suspect], minlength=bins)
    n_ok = np.bincount(idx[finite & ~suspect], minlength=bins)
    top_count = int(max(1, (n_sus + n_ok).max()))
    step = max(1, math.ceil(top_count / 4))
    y_max = step * math.ceil(top_count / step)
    bw = pw / bins
    bars = []
    for b in range(bins):
        hs = ph * n_sus[b] / y_max
        ho = ph * n_ok[b] / y_max
        y_s = top + ph - hs
        bars.append(_Bar(x=round(left + b * bw + 1, 2), width=round(bw - 2, 2), y_suspect=round(y_s, 2),
                         h_suspect=round(hs, 2), y_ok=round(y_s - ho, 2), h_ok=round(ho, 2),
                         label=f"{b / bins:.2f}–{(b + 1) / bins:.2f}: {n_sus[b] + n_ok[b]} samples"
                               f" ({n_sus[b]} suspect)"))
    x_ticks = [_Tick(pos=round(left + pw * t, 2), text_pos=top + ph + 18, label=f"{t:g}")
               for t in (0, 0.25, 0.5, 0.75, 1)]
    y_ticks = [_Tick(pos=round(top + ph - ph * v / y_max, 2), text_pos=round(top + ph - ph * v / y_max + 4, 2),
                     label=str(v)) for v in range(0, y_max + 1, step)]
    t = min(max(float(threshold), 0.0), 1.0) if math.isfinite(threshold) else 0.0
    tx = round(left + pw * t, 2)
    right_side = t > 0.75
    return _Histogram(width=width, height=height, left=left, right=width - right, top=top, bottom=top + ph,
                      bars=bars, x_ticks=x_ticks, y_ticks=y_ticks, y_label_x=left - 6, threshold_x=tx,
                      threshold_top=top - 6, threshold_label=f"threshold {_fmt(threshold, 2)}",
                      threshold_label_x=tx - 5 if right_side else tx + 5, threshold_label_y=top + 4,
                      threshold_anchor="end" if right_side else "start")


def _scatter(report: ReportInput) -> _Scatter:
    width, height, pad = 640, 480, 18.0
    coords = np.asarray(report.coords, dtype=np.float64)
    finite = np.isfinite(coords).all(axis=1)
    points: list[_Point] = []
    if finite.any():
        lo = coords[finite].min(axis=0)
        span = coords[finite].max(axis=0) - lo
        scale = min((width - 2 * pad) / span[0] if span[0] > 0 else np.inf,
                    (height - 2 * pad) / span[1] if span[1] > 0 else np.inf)
        if not math.isfinite(scale):
            scale = 1.0
        off_x = (width - span[0] * scale) / 2
        off_y = (height - span[1] * scale) / 2
        order = sorted(np.flatnonzero(finite), key=lambda j: (report.rows[j].outlier, -j))  # outliers on top
        for j in order:
            row = report.rows[j]
            points.append(_Point(
                index=int(j),
                cx=round(float(off_x + (coords[j, 0] - lo[0]) * scale), 2),
                cy=round(float(height - off_y - (coords[j, 1] - lo[1]) * scale), 2),
                colour=overlays.cluster_colour(row.cluster), outlier=row.outlier, suspect=row.suspect,
                title=f"#{row.rank} {row.id} · score {_fmt(row.quality_score)} · cluster {row.cluster}"
                      + (" · outlier" if row.outlier else "")))
    return _Scatter(width=width, height=height, points=points, clusters=_clusters(report.rows),
                    missing=int((~finite).sum()))


def _clusters(rows: tuple[SampleRow, ...]) -> list[_ClusterInfo]:
    out = []
    for c in sorted({r.cluster for r in rows}):
        members = [r for r in rows if r.cluster == c]
        scores = [r.quality_score for r in members if math.isfinite(r.quality_score)]
        out.append(_ClusterInfo(label="noise" if c < 0 else f"cluster {c}", value=str(c),
                                colour=overlays.cluster_colour(c), count=len(members),
                                suspects=sum(r.suspect for r in members), outliers=sum(r.outlier for r in members),
                                mean_score=_fmt(float(np.mean(scores))) if scores else "n/a"))
    return out


def _counts(items: list[tuple[str, str, int, str]]) -> list[_Count]:
    top = max([c for _, _, c, _ in items] + [1])
    return [_Count(key=k, label=lbl, count=c, percent=round(100.0 * c / top, 1), colour=col)
            for k, lbl, c, col in items]


def _build_page(report: ReportInput, assets: list[dict[str, Any]], colours: list[str], *,
                max_visual_samples: int, page_size: int, run_id: str | None) -> _Page:
    rows = report.rows
    scores = np.array([r.quality_score for r in rows], dtype=np.float64)
    suspect = np.array([bool(r.suspect) for r in rows])

    issue_counter = Counter(r.issue_type for r in rows)
    issue_keys = list(ISSUE_TYPES) + sorted(k for k in issue_counter if k not in ISSUE_TYPES)
    issues = _counts([(k, k, issue_counter.get(k, 0), "") for k in issue_keys])

    class_infos = []
    for k, name in enumerate(report.classes):
        dices = [r.dice_per_class[k] for r in rows if k < len(r.dice_per_class) and math.isfinite(r.dice_per_class[k])]
        class_infos.append(_ClassInfo(name=name, colour=colours[k],
                                      flagged=sum(name in r.issue_classes for r in rows),
                                      mean_dice=_fmt(float(np.mean(dices))) if dices else "n/a"))

    total = sum(float(v) for v in report.stage_seconds.values() if math.isfinite(float(v)))
    stages = [_KeyValue(key=str(k), value=_fmt_seconds(float(v)),
                        percent=round(100.0 * float(v) / total, 1) if total > 0 and math.isfinite(float(v)) else 0.0)
              for k, v in report.stage_seconds.items()]
    settings = [_KeyValue(key=str(k), value=_fmt_setting(v)) for k, v in report.settings.items()]
    skipped = [_KeyValue(key=str(p), value=str(reason)) for p, reason in report.skipped]

    rid = run_id or report_id(report)
    json_rows = []
    for i, r in enumerate(rows):
        entry: dict[str, Any] = {
            "rank": int(r.rank), "id": str(r.id), "image": str(r.image),
            "mask": [m for m in str(r.mask).split(";") if m],
            "score": _num(r.quality_score), "suspect": bool(r.suspect), "issue": str(r.issue_type),
            "classes": [str(c) for c in r.issue_classes], "qam": _num(r.qam_score),
            "dice": _num(r.dice_vs_prediction), "dpc": [_num(d) for d in r.dice_per_class],
            "cluster": int(r.cluster), "outlier": bool(r.outlier),
        }
        if i < len(assets):
            entry.update(assets[i])
        json_rows.append(entry)
    data = {
        "reportId": rid,
        "storageKey": f"maskaudit:v1:{report.dataset_root}:{rid}",
        "datasetRoot": report.dataset_root,
        "classes": list(report.classes),
        "colours": colours,
        "pageSize": int(page_size),
        "visualLimit": int(max_visual_samples),
        "threshold": _num(report.threshold),
        "rows": json_rows,
    }
    layout_label = {"A": "A · one label-index mask per image",
                    "B": "B · one binary mask folder per class"}.get(report.layout, str(report.layout))
    root_name = Path(report.dataset_root).name or report.dataset_root
    return _Page(
        title=root_name, dataset_root=report.dataset_root, layout_label=layout_label, version=report.version,
        generated=_dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z").strip(), report_id=rid,
        num_samples=int(report.num_samples), num_rows=len(rows), num_suspects=int(suspect.sum()),
        num_outliers=sum(bool(r.outlier) for r in rows), threshold=_fmt(report.threshold, 2),
        classes=class_infos, issues=issues, clusters=_clusters(rows), skipped=skipped, settings=settings,
        stages=stages, total_time=_fmt_seconds(total), histogram=_histogram(scores, suspect, report.threshold),
        scatter=_scatter(report), visual_limit=int(max_visual_samples),
        rows_without_visuals=max(0, len(rows) - max_visual_samples), self_check=_self_check(report.self_check),
        data=data, void_value=report.void_value)
