"""Suggestion benchmark: are the suggested masks of flagged samples closer to the truth than the given ones?

For each dataset it makes a corrupted copy with a known truth (40 % of the samples by default,
kinds mixed evenly: benchmarks/corruptions.py), runs a default ``maskaudit scan`` once, and then,
offline from the scan's model.pt, features.npz and cache (so the suggestion rule can change
without retraining), rebuilds the suggestion of every flagged sample exactly as ``scan`` does and
compares, at the original size, with the clean source masks:

* Dice(given, truth), Dice(segmenter's mask, truth) (what 0.2 suggested) and Dice(suggestion, truth),
  each the mean over classes (1 where both are empty), per corruption kind;
* the share of flagged corrupted samples whose suggestion beats the given mask (strictly higher Dice);
* what ``suggestion_confidence`` says: its rank correlation with Dice(suggestion, truth), and the
  suggestions' Dice above and below a confidence of 0.5.

A second table does the same for every corrupted sample, flagged or not, as if it were a suspect:
the suggestion's quality apart from detection (on the hard sets the scan flags few of them).

    python -m benchmarks.suggestions --datasets jsrt ddti ph2 --runs /tmp/maskaudit-suggestions
    python -m benchmarks.suggestions --datasets jsrt --runs /tmp/maskaudit-suggestions   # reuses the scan

One-class sets get erode/dilate 1-8 and 5-13 px, a deleted object and a spurious blob; their
samples with an empty mask are left out of the copy (a deletion needs an object).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.stats import spearmanr

from maskaudit.corruptions import CORRUPTIONS
from benchmarks.make_corrupted import make_corrupted, read_truth, scan_source
from maskaudit.dataset import find_dataset
from maskaudit.inference import predicted_masks
from maskaudit.metrics import dice_per_class
from maskaudit.pipeline import ScanConfig, scan
from maskaudit.predict import load_suggester
from maskaudit.prepare import load_original, prepare
from maskaudit.suggestion import ACTIONS, class_priors, suggest_masks
from maskaudit.train import TrainConfig
from maskaudit.visuals import predict_probabilities

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO.parent / "shared" / "datasets"
ONE_CLASS_KINDS = ("erode_dilate_1_8", "erode_dilate_5_13", "delete_object", "spurious")


@dataclass(frozen=True)
class Outcome:
    """One flagged sample."""

    id: str
    kind: str                 # corruption kind, or "clean"
    flagged: bool             # suspect in the scan (only suspects get a suggestion in scan)
    dice_given: float         # Dice(given, truth), mean over classes
    dice_predicted: float     # Dice(segmenter's mask, truth)
    dice_suggested: float     # Dice(suggestion, truth)
    confidence: float
    actions: tuple[str, ...]


def corrupted_copy(name: str, runs: Path, *, fraction: float, seed: int) -> Path:
    """The corrupted copy of ``name`` in ``runs`` (made once; an existing one is reused)."""
    source = DATASETS / name
    target = runs / f"{name}-{round(fraction * 100)}pct"
    if (target / "truth.csv").is_file():
        return target
    found = scan_source(source)
    kinds = tuple(CORRUPTIONS) if len(found.classes) > 1 else ONE_CLASS_KINDS
    ids = [i for i, paths in found.masks.items() if any(np.asarray(Image.open(p)).any() for p in paths)]
    make_corrupted(source, target, fraction=fraction, kinds=kinds, seed=seed, ids=ids, overwrite=True)
    return target


def scanned(corrupted: Path, runs: Path, *, seed: int, rescan: bool, progress: bool) -> tuple[Path, float | None]:
    """The default scan of ``corrupted`` (run once; reused unless ``rescan``) and its wall time if run now."""
    out_dir = runs / f"{corrupted.name}-scan"
    if not rescan and all((out_dir / name).is_file() for name in ("model.pt", "features.npz", "run.json")):
        return out_dir, None
    started = time.perf_counter()
    scan(corrupted, out_dir, ScanConfig(train=TrainConfig(seed=seed), overwrite=True, report=False), progress=progress)
    return out_dir, time.perf_counter() - started


def evaluate(name: str, corrupted: Path, out_dir: Path, *, unflagged: bool, progress: bool) -> list[Outcome]:
    """Rebuild the suggestion of every sample the scan flagged (and, with ``unflagged``, of every
    corrupted sample it missed, as if it were a suspect) and score it against the clean source."""
    truth = read_truth(corrupted / "truth.csv")
    options = json.loads((out_dir / "run.json").read_text())["options"]
    index = find_dataset(corrupted)
    source = find_dataset(DATASETS / name)
    data = prepare(index, size=options["size"], cache_dir=out_dir / "cache")
    features = np.load(out_dir / "features.npz")
    assert list(features["ids"]) == [sample.id for sample in index.samples], "features.npz is from another copy"
    quality = features["quality_score"]
    flagged = set(np.flatnonzero(quality < options["threshold"]).tolist())
    corrupted_positions = {i for i, sample in enumerate(index.samples) if truth[sample.id][0]}
    positions = sorted(flagged | corrupted_positions if unflagged else flagged)
    priors = class_priors(data.masks, features["dice_per_class"], quality >= options["threshold"])
    unet, state = load_suggester(out_dir / "model.pt")  # as scan suggests
    multilabel = index.multilabel
    outcomes = []
    for position, _, probabilities in predict_probabilities(data, unet, positions, progress=progress, description="suggest",
                                                            precision=state["config"].get("precision", "auto")):
        sample_id = index.samples[position].id
        _, given, _ = load_original(index, sample_id)
        _, clean, _ = load_original(source, sample_id)
        predicted = predicted_masks(probabilities, multilabel=multilabel)
        suggestion = suggest_masks(given, predicted, probabilities, priors, multilabel=multilabel)
        corrupted_, kind = truth[sample_id]
        outcomes.append(Outcome(
            id=sample_id,
            kind=kind if corrupted_ else "clean",
            flagged=position in flagged,
            dice_given=_mean_dice(given, clean),
            dice_predicted=_mean_dice(predicted, clean),
            dice_suggested=_mean_dice(suggestion.masks, clean),
            confidence=suggestion.confidence,
            actions=suggestion.actions,
        ))
    return outcomes


def _mean_dice(masks: np.ndarray, truth: np.ndarray) -> float:
    return float(dice_per_class(masks[None], truth[None]).mean())


def table(outcomes: list[Outcome], truth_counts: Counter) -> str:
    """Markdown rows per kind, then all corrupted samples among ``outcomes``, then the clean ones (false alarms)."""
    kinds = sorted({o.kind for o in outcomes} - {"clean"})
    groups = [(kind, [o for o in outcomes if o.kind == kind], truth_counts[kind]) for kind in kinds]
    groups.append(("**all corrupted**", [o for o in outcomes if o.kind != "clean"], sum(truth_counts.values())))
    groups.append(("clean (false alarms)", [o for o in outcomes if o.kind == "clean"], "-"))
    lines = ["| kind | samples / corrupted | Dice given | Dice segmenter (0.2) | **Dice suggested** | "
             "suggestion beats given | ties | mean confidence | class actions |",
             "|---|---|---|---|---|---|---|---|---|"]
    for label, group, total in groups:
        if not group:
            continue
        beats = sum(o.dice_suggested > o.dice_given + 1e-9 for o in group)
        ties = sum(abs(o.dice_suggested - o.dice_given) <= 1e-9 for o in group)
        actions = Counter(action for o in group for action in o.actions)
        lines.append(
            f"| {label} | {len(group)} / {total} "
            f"| {np.mean([o.dice_given for o in group]):.3f} | {np.mean([o.dice_predicted for o in group]):.3f} "
            f"| **{np.mean([o.dice_suggested for o in group]):.3f}** | {beats / len(group):.0%} | {ties} "
            f"| {np.mean([o.confidence for o in group]):.2f} "
            f"| {', '.join(f'{a} {actions[a]}' for a in ACTIONS if actions[a])} |"
        )
    return "\n".join(lines)


def confidence_lines(outcomes: list[Outcome]) -> list[str]:
    """What the confidence column says about the suggestions of flagged corrupted samples."""
    group = [o for o in outcomes if o.kind != "clean"]
    if len(group) < 3:
        return []
    confidence = np.array([o.confidence for o in group])
    dice = np.array([o.dice_suggested for o in group])
    gain = dice - np.array([o.dice_given for o in group])
    lines = [f"Spearman(confidence, Dice suggested) = {spearmanr(confidence, dice)[0]:.2f}; "
             f"Spearman(confidence, Dice gain over given) = {spearmanr(confidence, gain)[0]:.2f}"]
    for label, selected in (("confidence >= 0.5", confidence >= 0.5), ("confidence < 0.5", confidence < 0.5)):
        if selected.any():
            lines.append(f"{label}: {int(selected.sum())} suggestions, mean Dice {dice[selected].mean():.3f}, "
                         f"beat the given mask {np.mean(gain[selected] > 1e-9):.0%}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["jsrt", "ddti", "ph2"])
    parser.add_argument("--fraction", type=float, default=0.4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", type=Path, default=Path("/tmp/maskaudit-suggestions"),
                        help="corrupted copies and scans live here and are reused by later runs")
    parser.add_argument("--rescan", action="store_true", help="train again even if the scan exists")
    parser.add_argument("--flagged-only", action="store_true",
                        help="skip the second table (suggestions for the corrupted samples the scan missed)")
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write every flagged sample's outcome here")
    args = parser.parse_args(argv)
    args.runs.mkdir(parents=True, exist_ok=True)
    everything = {}
    for name in args.datasets:
        corrupted = corrupted_copy(name, args.runs, fraction=args.fraction, seed=args.seed)
        out_dir, scan_seconds = scanned(corrupted, args.runs, seed=args.seed, rescan=args.rescan,
                                        progress=args.progress)
        started = time.perf_counter()
        outcomes = evaluate(name, corrupted, out_dir, unflagged=not args.flagged_only, progress=args.progress)
        seconds = time.perf_counter() - started
        truth_counts = Counter(kind for bad, kind in read_truth(corrupted / "truth.csv").values() if bad)
        flagged = [o for o in outcomes if o.flagged]
        print(f"\n### {name}, {args.fraction:.0%} corrupted: the {len(flagged)} flagged samples\n")
        print(table(flagged, truth_counts))
        print()
        for line in confidence_lines(flagged):
            print(line)
        if not args.flagged_only:
            print(f"\n### {name}: every corrupted sample, flagged or not, as if it were a suspect\n")
            print(table([o for o in outcomes if o.kind != "clean"], truth_counts))
            print()
            for line in confidence_lines(outcomes):
                print(line)
        print(f"scan {'reused' if scan_seconds is None else f'{scan_seconds:.0f} s'}; "
              f"{len(outcomes)} suggestions rebuilt and scored in {seconds:.0f} s")
        sys.stdout.flush()
        everything[name] = [vars(o) for o in outcomes]
    if args.json:
        args.json.write_text(json.dumps(everything, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
