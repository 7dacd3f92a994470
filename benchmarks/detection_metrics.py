"""How well a per-sample score finds the corrupted samples: AUROC, AP and precision at k.

The positive class is "corrupted". ``lower_is_worse=True`` (maskaudit's ``quality_score``,
cleanlab's label quality score) means a low score should flag a corrupted sample.

Per corruption kind the report compares the corrupted samples of that kind against ALL clean
samples (samples corrupted in another way are left out), so each kind's numbers say how well
that kind of error is found among clean data.

Precision at k uses k = the number of corrupted samples in the subset (R-precision, equal to
recall at k). Ties in the score are handled by expectation over random tie-breaking, so a
constant score gets the base rate, not an order-dependent number.

Example
-------
>>> truth = {"a": (True, "delete"), "b": (False, None), "c": (False, None)}
>>> r = detection_report(truth, {"a": 0.1, "b": 0.9, "c": 0.8})
>>> r["overall"]["auroc"], r["overall"]["ap"], r["overall"]["p_at_k"]
(1.0, 1.0, 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

__all__ = ["detection_report", "format_markdown_table", "precision_at_k"]

METRICS = (("auroc", "AUROC"), ("ap", "AP"), ("p_at_k", "P@k"))


def precision_at_k(is_bad: np.ndarray, badness: np.ndarray, k: int) -> float:
    """Expected fraction of bad samples among the k highest ``badness`` (random tie-breaking).

    ``is_bad`` (N,) bool, ``badness`` (N,) float, higher = more suspect; 0 < k <= N.
    """
    is_bad = np.asarray(is_bad, bool)
    badness = np.asarray(badness, float)
    if not 0 < k <= len(badness):
        raise ValueError(f"k must be in 1..{len(badness)}, got {k}")
    threshold = np.sort(badness)[::-1][k - 1]
    above = badness > threshold
    tied = badness == threshold
    slots = k - int(above.sum())  # how many of the tied samples make it into the top k
    expected_bad = is_bad[above].sum() + slots * is_bad[tied].mean()
    return float(expected_bad / k)


def _subset_metrics(is_bad: np.ndarray, badness: np.ndarray) -> dict[str, float | int]:
    n_bad = int(is_bad.sum())
    n_clean = int((~is_bad).sum())
    out: dict[str, float | int] = {"n_bad": n_bad, "n_clean": n_clean}
    if n_bad == 0 or n_clean == 0:
        out.update(auroc=math.nan, ap=math.nan, p_at_k=math.nan)
        return out
    out["auroc"] = float(roc_auc_score(is_bad, badness))
    out["ap"] = float(average_precision_score(is_bad, badness))
    out["p_at_k"] = precision_at_k(is_bad, badness, n_bad)
    return out


def detection_report(
    truth: Mapping[str, tuple[bool, str | None]],
    scores: Mapping[str, float],
    lower_is_worse: bool = True,
) -> dict:
    """Detection quality of ``scores`` against the planted corruptions in ``truth``.

    Parameters
    ----------
    truth : {id: (corrupted, kind)}
        As returned by ``make_corrupted`` / ``corrupt_arrays`` or read by ``read_truth``;
        ``kind`` is ignored for clean samples.
    scores : {id: float}
        One finite score per id of ``truth`` (extra ids are ignored).
    lower_is_worse : bool
        True: a low score flags a corrupted sample (quality scores). False: a high score does.

    Returns
    -------
    ``{"overall": m, "per_kind": {kind: m}, "n": N}`` where each ``m`` is
    ``{"n_bad", "n_clean", "auroc", "ap", "p_at_k"}`` (NaN when a subset lacks either class).
    Note that AP depends on the base rate (it is the fraction of bad samples for a random score).

    Raises
    ------
    ValueError
        If an id of ``truth`` has no score, a score is not finite, or ``truth`` is empty.
    """
    ids = sorted(truth)
    if not ids:
        raise ValueError("truth is empty")
    missing = [i for i in ids if i not in scores]
    if missing:
        raise ValueError(f"{len(missing)} ids of truth have no score, e.g. {missing[:3]}")
    s = np.array([float(scores[i]) for i in ids])
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite")
    badness = -s if lower_is_worse else s
    is_bad = np.array([bool(truth[i][0]) for i in ids])
    kinds = np.array([(truth[i][1] or "unknown") if truth[i][0] else "" for i in ids], object)

    report = {"n": len(ids), "overall": _subset_metrics(is_bad, badness), "per_kind": {}}
    for kind in sorted(set(kinds[is_bad])):
        sel = ~is_bad | (kinds == kind)
        report["per_kind"][kind] = _subset_metrics(is_bad[sel], badness[sel])
    return report


def _fmt(v: float, digits: int) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def format_markdown_table(
    reports: Mapping[str, dict],
    *,
    digits: int = 3,
    extra_rows: Mapping[str, Mapping[str, float]] | None = None,
    bold_best: bool = True,
) -> str:
    """Markdown table comparing methods side by side.

    ``reports`` maps a method name to its :func:`detection_report`; rows are the overall
    subset then each corruption kind (union over the methods), times AUROC / AP / P@k; one
    column per method. ``extra_rows`` adds rows such as ``{"wall time (s)": {method: 12.3}}``
    (not bolded). With ``bold_best`` the best value of each metric row is bold (all ties).
    """
    methods: Sequence[str] = list(reports)
    if not methods:
        raise ValueError("reports is empty")
    kinds = sorted({k for r in reports.values() for k in r["per_kind"]})
    header = "| subset | n bad | metric | " + " | ".join(methods) + " |"
    lines = [header, "|" + "---|" * (3 + len(methods))]

    def subset(r: dict, name: str) -> dict | None:
        return r["overall"] if name == "overall" else r["per_kind"].get(name)

    for name in ["overall", *kinds]:
        first = next(subset(r, name) for r in reports.values() if subset(r, name) is not None)
        for key, label in METRICS:
            vals = [(subset(r, name) or {}).get(key, math.nan) for r in reports.values()]
            finite = [v for v in vals if not math.isnan(v)]
            best = round(max(finite), digits) if finite else None
            cells = []
            for v in vals:
                cell = _fmt(v, digits)
                if bold_best and best is not None and len(methods) > 1 and not math.isnan(v) \
                        and round(v, digits) == best:
                    cell = f"**{cell}**"
                cells.append(cell)
            lines.append(f"| {name} | {first['n_bad']} | {label} | " + " | ".join(cells) + " |")
    for label, per_method in (extra_rows or {}).items():
        cells = [_fmt(per_method.get(m, math.nan), 1) for m in methods]
        lines.append(f"| {label} | | | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
