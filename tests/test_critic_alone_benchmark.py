"""benchmarks/critic_alone.py on a few JSRT images: what each setting learns from and scores (its figures
come from the benchmark run, docs/BENCHMARKS.md)."""

import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # benchmarks/ is a plain directory next to the package
    sys.path.insert(0, str(REPO))

from benchmarks import critic_alone  # noqa: E402
from benchmarks.make_corrupted import make_corrupted, read_truth  # noqa: E402
from maskaudit.dataset import find_dataset  # noqa: E402
from maskaudit.prepare import prepare  # noqa: E402
from tests.test_suggestions_benchmark import mini_jsrt  # noqa: E402


def test_the_clean_half_setting_learns_the_sources_masks_and_scores_the_other_half(tmp_path, capsys, one_torch_thread):
    source = mini_jsrt(tmp_path / "mini", count=12)
    copy = tmp_path / "mini-50pct"
    make_corrupted(source, copy, fraction=0.5, kinds=("delete",), seed=0)
    truth = read_truth(copy / "truth.csv")
    copy_data = prepare(find_dataset(copy), size=32, cache_dir=tmp_path / "cache-copy")
    ids = [sample.id for sample in copy_data.index.samples]

    learned = critic_alone.training_masks(np.asarray(copy_data.masks), ids, source, 32, tmp_path / "cache")
    for row, sample_id in enumerate(ids):  # the source's masks: a deleted structure is back
        same = np.array_equal(learned[row], copy_data.masks[row])
        assert same == (not truth[sample_id][0])

    assert critic_alone.main([str(copy), "--setting", "clean-half", "--source", str(source), "--epochs", "2",
                              "--every", "1", "--size", "32", "--cache", str(tmp_path / "cache")]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2]
    assert all(line["masks_scored"] == 6 for line in lines)  # the odd-numbered half of the 12
    assert all(0.0 <= line["critic_auroc"] <= 1.0 and set(line["per_kind"]) == {"delete"} for line in lines)
