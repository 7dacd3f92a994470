"""benchmarks/suggestions.py end to end on a few JSRT images with a tiny budget (its figures come from the benchmark run)."""

import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
JSRT = REPO.parent / "shared" / "datasets" / "jsrt"
if str(REPO) not in sys.path:  # benchmarks/ is a plain directory next to the package
    sys.path.insert(0, str(REPO))

from benchmarks import suggestions  # noqa: E402
from benchmarks.make_corrupted import read_truth  # noqa: E402
from maskaudit.pipeline import ScanConfig, scan  # noqa: E402
from maskaudit.train import TrainConfig  # noqa: E402


def mini_jsrt(root: Path, count: int = 8) -> Path:
    """A copy of the first ``count`` JSRT samples (copies: a dataset's files may not leave its root)."""
    ids = sorted(path.stem for path in (JSRT / "images").glob("*.png"))[:count]
    (root / "images").mkdir(parents=True)
    for sample_id in ids:
        shutil.copy(JSRT / "images" / f"{sample_id}.png", root / "images")
    for class_dir in sorted((JSRT / "masks").iterdir()):
        (root / "masks" / class_dir.name).mkdir(parents=True)
        for sample_id in ids:
            shutil.copy(class_dir / f"{sample_id}.png", root / "masks" / class_dir.name)
    return root


@pytest.mark.slow
def test_the_suggestion_benchmark_rebuilds_and_scores_every_corrupted_samples_suggestion(tmp_path, monkeypatch,
                                                                                          one_torch_thread):
    monkeypatch.setattr(suggestions, "DATASETS", tmp_path / "datasets")
    mini_jsrt(tmp_path / "datasets" / "mini")
    corrupted = suggestions.corrupted_copy("mini", tmp_path / "runs", fraction=0.5, seed=0)
    out_dir = tmp_path / "runs" / "mini-scan"
    scan(corrupted, out_dir, ScanConfig(train=TrainConfig(seed=0, epochs=2, size=32, early_stop=False),
                                        overwrite=True, report=False))
    truth = read_truth(corrupted / "truth.csv")
    outcomes = suggestions.evaluate("mini", corrupted, out_dir, unflagged=True, progress=False)
    by_id = {outcome.id: outcome for outcome in outcomes}
    assert {sample_id for sample_id, (bad, _) in truth.items() if bad} <= set(by_id)  # every corrupted sample, flagged or not
    for sample_id, outcome in by_id.items():
        bad, kind = truth[sample_id]
        assert outcome.kind == (kind if bad else "clean")
        assert 0.0 <= outcome.dice_suggested <= 1.0 and 0.0 <= outcome.confidence <= 1.0
        # the given mask is the clean source's exactly where the sample was not corrupted
        assert (outcome.dice_given == 1.0) == (not bad)
