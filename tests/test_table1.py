"""benchmarks/table1.py end to end on a few JSRT images with a tiny budget (its figures come from the benchmark run)."""

import csv
import json
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
JSRT = REPO.parent / "shared" / "datasets" / "jsrt"
if str(REPO) not in sys.path:  # benchmarks/ is a plain directory next to the package
    sys.path.insert(0, str(REPO))

from benchmarks import table1  # noqa: E402


def mini_jsrt(root: Path, *, train: int = 8, test: int = 3) -> Path:
    """A JSRT copy of symlinks: the first ``train`` train ids and ``test`` test ids, with their split.csv."""
    ids = table1.read_split(JSRT)
    chosen = {"train": ids["train"][:train], "test": ids["test"][:test]}
    (root / "images").mkdir(parents=True)
    classes = sorted(path.name for path in (JSRT / "masks").iterdir())
    for name in classes:
        (root / "masks" / name).mkdir(parents=True)
    with open(root / "split.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "split"])
        for split, members in chosen.items():
            for sample_id in members:
                writer.writerow([sample_id, split])
                os.symlink(JSRT / "images" / f"{sample_id}.png", root / "images" / f"{sample_id}.png")
                for name in classes:
                    os.symlink(JSRT / "masks" / name / f"{sample_id}.png", root / "masks" / name / f"{sample_id}.png")
    return root


@pytest.mark.slow
def test_table1_trains_every_mode_and_reports_dice_and_weights(tmp_path, capsys):
    data = mini_jsrt(tmp_path / "jsrt")
    out = tmp_path / "results.json"
    assert table1.main(["--data", str(data), "--runs", str(tmp_path / "runs"), "--epochs", "1", "--size", "32",
                        "--batch-size", "8", "--modes", "clean-baseline", "baseline", "qam-ocm", "--json", str(out)]) == 0
    results = {result["mode"]: result for result in json.loads(out.read_text())["results"]}
    assert set(results) == {"clean-baseline", "baseline", "qam-ocm"}
    for result in results.values():
        assert result["train_images"] == 8 and result["test_images"] == 3
        assert 0.0 <= result["dice"]["average"] <= 1.0
        assert len(result["weight_per_epoch"]["clean"]) == 1  # the Fig. 4 curve, one point per epoch
    assert results["clean-baseline"]["noisy_images"] == 0
    assert results["baseline"]["noisy_images"] == 4  # 50 % of the 8 training samples
    assert results["baseline"]["weight_last_quarter"]["clean"] == pytest.approx(1.0)  # uniform weights
    printed = capsys.readouterr().out
    assert "QAM+OCM average" in printed and "| 50 %, 5-13 px | QAM+OCM |" in printed
