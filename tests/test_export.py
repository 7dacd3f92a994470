"""`maskaudit export` on a tiny real scan: Label Studio tasks and COCO JSON decode back to the masks exactly."""

from __future__ import annotations

import csv
import json
import shutil
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from maskaudit.cli import main
from maskaudit.export import read_scores_csv

CLASSES = ("heart", "lung")
HEIGHT, WIDTH = 40, 56  # not square, so that a width/height swap shows
# Enough training on 12 small images for suggestions that are close to, but not equal to, the masks.
SCAN_OPTIONS = ["--size", "32", "--epochs", "30", "--lr", "0.01", "--batch-size", "8", "--threshold", "1.0",
                "--no-early-stop", "--no-augment", "--seed", "0", "--quiet"]


def make_dataset(root: Path, *, n: int = 12, seed: int = 0) -> Path:
    """Layout B: an ellipse ("heart") and a box ("lung") per image, drawn brighter in the image."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:HEIGHT, :WIDTH]
    for i in range(n):
        cy, cx = rng.uniform(0.35, 0.65) * HEIGHT, rng.uniform(0.3, 0.5) * WIDTH
        heart = ((yy - cy) / (HEIGHT * 0.25)) ** 2 + ((xx - cx) / (WIDTH * 0.18)) ** 2 < 1
        lung = (np.abs(yy - HEIGHT * 0.5) < HEIGHT * 0.2) & (np.abs(xx - WIDTH * 0.78) < WIDTH * 0.12)
        image = (40 + 120 * heart + 80 * lung + rng.normal(0, 8, (HEIGHT, WIDTH))).clip(0, 255).astype(np.uint8)
        (root / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / "images" / f"s{i:02d}.png")
        for name, mask in zip(CLASSES, (heart, lung)):
            (root / "masks" / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask.astype(np.uint8) * 255).save(root / "masks" / name / f"s{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def scanned(tmp_path_factory, one_torch_thread):
    """(dataset, results) of one scan in which every sample is a suspect."""
    root = tmp_path_factory.mktemp("export")
    dataset = make_dataset(root / "data")
    results = root / "results"
    outcome = CliRunner().invoke(main, ["scan", str(dataset), "--out", str(results), *SCAN_OPTIONS])
    assert outcome.exit_code == 0, outcome.output
    return dataset, results


def suggested(results: Path, sample_id: str) -> np.ndarray:
    """(K, H, W) bool: the suggested masks the scan wrote for a suspect."""
    return np.stack([np.asarray(Image.open(results / "suggested" / "masks" / name / f"{sample_id}.png")) > 0
                     for name in CLASSES])


def predicted_masks_on_disk(out: Path, sample_id: str) -> np.ndarray:
    """(K, H, W) bool: the masks `maskaudit predict --out out` wrote for one image."""
    return np.stack([np.asarray(Image.open(out / "masks" / name / f"{sample_id}.png")) > 0 for name in CLASSES])


def given(dataset: Path, sample_id: str) -> np.ndarray:
    return np.stack([np.asarray(Image.open(dataset / "masks" / name / f"{sample_id}.png")) > 0 for name in CLASSES])


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * (a & b).sum() / total)


def decode_brush_regions(regions: list[dict]) -> np.ndarray:
    """(K, H, W) bool from Label Studio brush regions, decoded with label-studio-sdk."""
    from label_studio_sdk.converter.brush import decode_rle

    masks = np.zeros((len(CLASSES), HEIGHT, WIDTH), dtype=bool)
    for region in regions:
        assert region["type"] == "brushlabels" and region["value"]["format"] == "rle"
        assert (region["original_height"], region["original_width"]) == (HEIGHT, WIDTH)
        (label,) = region["value"]["brushlabels"]
        rgba = decode_rle(region["value"]["rle"]).reshape(HEIGHT, WIDTH, 4)
        masks[CLASSES.index(label)] |= rgba[:, :, 3] > 0
    return masks


def export(*args: str):
    return CliRunner().invoke(main, ["export", *args, "--quiet"])


def test_labelstudio_tasks_decode_to_the_suggested_and_given_masks(scanned, tmp_path):
    dataset, results = scanned
    out = tmp_path / "tasks.json"
    outcome = export(str(results), "--format", "labelstudio", "--out", str(out))
    assert outcome.exit_code == 0, outcome.output
    tasks = json.loads(out.read_text())
    rows = read_scores_csv(results / "scores.csv")
    assert [task["data"]["maskaudit_id"] for task in tasks] == [row["id"] for row in rows]  # all suspects, by rank
    for task, row in zip(tasks, rows):
        assert task["data"]["image"] == "/data/local-files/?d=" + str(dataset / row["image"]).lstrip("/")
        assert task["data"]["quality_score"] == pytest.approx(float(row["quality_score"]))
        assert task["data"]["issue_type"] == row["issue_type"]
        prediction = decode_brush_regions(task["predictions"][0]["result"])
        expected = suggested(results, row["id"])
        assert expected.any(axis=(1, 2)).all()  # the check below compares real shapes, not empty masks
        assert np.array_equal(prediction, expected)
        assert all(dice(p, e) == 1.0 for p, e in zip(prediction, expected))
        annotation = decode_brush_regions(task["annotations"][0]["result"])
        assert np.array_equal(annotation, given(dataset, row["id"]))
    config = ElementTree.parse(tmp_path / "tasks.label_config.xml").getroot()
    brush = config.find("BrushLabels")
    assert brush.get("name") == "label" and brush.get("toName") == "image"
    assert [label.get("value") for label in brush.findall("Label")] == list(CLASSES)
    assert config.find("Image").get("value") == "$image"


def test_image_prefix_replaces_the_local_files_url(scanned, tmp_path):
    _, results = scanned
    out = tmp_path / "tasks.json"
    outcome = export(str(results), "--format", "labelstudio", "--out", str(out),
                     "--image-prefix", "https://example.org/my data/")
    assert outcome.exit_code == 0, outcome.output
    first = json.loads(out.read_text())[0]
    assert first["data"]["image"] == "https://example.org/my data/images/" + first["data"]["maskaudit_id"] + ".png"


def test_coco_decodes_to_the_suggested_masks_with_scores_as_attributes(scanned, tmp_path):
    from pycocotools.coco import COCO

    dataset, results = scanned
    out = tmp_path / "suggested.json"
    outcome = export(str(results), "--format", "coco", "--out", str(out))
    assert outcome.exit_code == 0, outcome.output
    coco = COCO(str(out))
    rows = {row["id"]: row for row in read_scores_csv(results / "scores.csv")}
    assert [category["name"] for category in coco.loadCats(coco.getCatIds())] == list(CLASSES)
    assert len(coco.getImgIds()) == len(rows)
    for image in coco.loadImgs(coco.getImgIds()):
        assert (dataset / image["file_name"]).is_file() and (image["height"], image["width"]) == (HEIGHT, WIDTH)
        sample_id = Path(image["file_name"]).stem
        decoded = np.zeros((len(CLASSES), HEIGHT, WIDTH), dtype=bool)
        for annotation in coco.loadAnns(coco.getAnnIds(imgIds=image["id"])):
            assert annotation["iscrowd"] == 0 and annotation["area"] > 0
            assert annotation["attributes"]["sample_id"] == sample_id
            assert annotation["attributes"]["quality_score"] == pytest.approx(float(rows[sample_id]["quality_score"]))
            assert annotation["attributes"]["issue_type"] == rows[sample_id]["issue_type"]
            decoded[annotation["category_id"] - 1] |= coco.annToMask(annotation).astype(bool)
        expected = suggested(results, sample_id)
        assert np.array_equal(decoded, expected)
        assert all(dice(d, e) == 1.0 for d, e in zip(decoded, expected))


DATUMARO = Path(__file__).resolve().parents[1] / ".venv-datumaro" / "bin" / "python"
# Run in Datumaro's venv: read a COCO instances file as CVAT's "COCO 1.0" import does, dump its masks.
DATUMARO_READER = """
import json, sys
import numpy as np
import datumaro as dm
root, out = sys.argv[1], sys.argv[2]
dataset = dm.Dataset.import_from(root, "coco_instances")
labels = dataset.categories()[dm.AnnotationType.label]
found = [(item.id, labels.items[ann.label].name, ann) for item in dataset for ann in item.annotations
         if ann.type == dm.AnnotationType.mask]
np.savez(out + ".npz", *[ann.image.astype(bool) for _, _, ann in found])
with open(out + ".json", "w") as handle:
    json.dump([[item_id, label, dict(ann.attributes)] for item_id, label, ann in found], handle)
"""


def export_coco_through_datumaro(results: Path, tmp_path: Path) -> tuple[Path, list, dict]:
    """Export ``results`` as COCO into Datumaro's layout (annotations/ beside an empty images/) and read
    it back with Datumaro's COCO reader (what CVAT's COCO 1.0 import runs): (the COCO file, one
    [item id, label, attributes] per annotation, their masks as arr_0, arr_1, ...)."""
    import os
    import subprocess

    python = Path(os.environ.get("MASKAUDIT_DATUMARO_PYTHON", DATUMARO))
    if not python.is_file():
        pytest.fail(f"Datumaro is not installed at {python}: run `make datumaro` "
                    "(or set MASKAUDIT_DATUMARO_PYTHON to a Python that imports datumaro)")
    root = tmp_path / "coco"
    (root / "images").mkdir(parents=True)
    out = root / "annotations" / "instances_default.json"
    outcome = export(str(results), "--format", "coco", "--out", str(out))
    assert outcome.exit_code == 0, outcome.output
    read = subprocess.run([str(python), "-c", DATUMARO_READER, str(root), str(tmp_path / "read")],
                          capture_output=True, text=True, timeout=300)
    assert read.returncode == 0, read.stderr
    return out, json.loads((tmp_path / "read.json").read_text()), np.load(tmp_path / "read.npz")


def test_coco_export_reads_back_through_datumaro_as_cvat_imports_it(scanned, tmp_path):
    """CVAT's COCO 1.0 import is Datumaro's COCO reader: the masks and attributes must survive it."""
    _, results = scanned
    _, found, masks = export_coco_through_datumaro(results, tmp_path)
    rows = {row["id"]: row for row in read_scores_csv(results / "scores.csv")}
    assert len(found) == len(rows) * len(CLASSES)  # every class of every suspect has pixels here
    for position, (item_id, label, attributes) in enumerate(found):
        sample_id = Path(item_id).name
        expected = suggested(results, sample_id)[CLASSES.index(label)]
        assert np.array_equal(masks[f"arr_{position}"], expected)
        assert attributes["quality_score"] == pytest.approx(float(rows[sample_id]["quality_score"]))
        assert attributes["issue_type"] == rows[sample_id]["issue_type"]


def _copy_with_non_suspects(results: Path, target: Path, non_suspects: set[str]) -> Path:
    """A copy of ``results`` in which ``non_suspects`` are not suspects and have no suggested files."""
    shutil.copytree(results, target)
    rows = read_scores_csv(target / "scores.csv")
    for row in rows:
        if row["id"] in non_suspects:
            row.update(suspect="0", issue_type="ok", issue_classes="")
            for name in CLASSES:
                (target / "suggested" / "masks" / name / f"{row['id']}.png").unlink()
    with open(target / "scores.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\r\n")
        writer.writeheader()
        writer.writerows(rows)
    return target


def test_all_adds_non_suspects_with_the_segmenters_masks_from_the_checkpoint(scanned, tmp_path):
    _, results = scanned
    ids = [row["id"] for row in read_scores_csv(results / "scores.csv")]
    non_suspects = set(ids[6:])
    copy = _copy_with_non_suspects(results, tmp_path / "results", non_suspects)

    assert export(str(copy), "--format", "coco", "--out", str(tmp_path / "suspects.json")).exit_code == 0
    images = json.loads((tmp_path / "suspects.json").read_text())["images"]
    assert [Path(image["file_name"]).stem for image in images] == ids[:6]

    outcome = export(str(copy), "--format", "labelstudio", "--out", str(tmp_path / "all.json"), "--all")
    assert outcome.exit_code == 0, outcome.output
    tasks = json.loads((tmp_path / "all.json").read_text())
    assert [task["data"]["maskaudit_id"] for task in tasks] == ids
    # the non-suspects' suggestion is the segmenter's mask, computed again from model.pt: the masks
    # `maskaudit predict` writes with the same checkpoint; the suspects keep the scan's suggestions
    predicted = tmp_path / "predicted"
    dataset = Path(json.loads((results / "run.json").read_text())["dataset"]["root"])
    outcome = CliRunner().invoke(main, ["predict", str(results / "model.pt"), str(dataset / "images"),
                                        "--out", str(predicted), "--quiet"])
    assert outcome.exit_code == 0, outcome.output
    for task in tasks:
        sample_id = task["data"]["maskaudit_id"]
        exported = decode_brush_regions(task["predictions"][0]["result"])
        if sample_id in non_suspects:  # predict resizes the original image, the scan its cached copy: near, not equal
            assert all(dice(e, p) >= 0.9 for e, p in zip(exported, predicted_masks_on_disk(predicted, sample_id)))
        else:
            assert np.array_equal(exported, suggested(results, sample_id))


def _write_decisions(path: Path, lines: list[tuple[str, str, str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\r\n")
        writer.writerow(("id", "decision", "note"))
        writer.writerows(lines)
    return path


def test_decisions_export_the_rows_marked_relabel_in_rank_order(scanned, tmp_path):
    _, results = scanned
    run_id = json.loads((results / "run.json").read_text())["report_id"]
    assert run_id and run_id in (results / "report.html").read_text()
    ids = [row["id"] for row in read_scores_csv(results / "scores.csv")]
    decisions = _write_decisions(tmp_path / f"maskaudit-decisions-{run_id}.csv",
                                 [(ids[5], "relabel", "too wide"), (ids[1], "relabel", ""), (ids[0], "ok", "fine")])
    out = tmp_path / "relabel.json"
    outcome = export(str(results), "--format", "coco", "--out", str(out), "--decisions", str(decisions))
    assert outcome.exit_code == 0, outcome.output
    assert [Path(image["file_name"]).stem for image in json.loads(out.read_text())["images"]] == [ids[1], ids[5]]


def test_a_decisions_csv_of_another_run_is_refused_in_one_line(scanned, tmp_path):
    _, results = scanned
    ids = [row["id"] for row in read_scores_csv(results / "scores.csv")]
    other_run = _write_decisions(tmp_path / "maskaudit-decisions-0123456789ab.csv", [(ids[0], "relabel", "")])
    foreign_ids = _write_decisions(tmp_path / "renamed.csv", [(ids[0], "relabel", ""), ("JPCLN001", "relabel", "")])
    for decisions, reason in ((other_run, "run 0123456789ab"), (foreign_ids, "another run")):
        outcome = export(str(results), "--format", "coco", "--out", str(tmp_path / "x.json"), "--decisions", str(decisions))
        assert outcome.exit_code == 6
        assert reason in outcome.output and len(outcome.output.strip().splitlines()) == 1
    assert not (tmp_path / "x.json").exists()


def test_bad_requests_are_refused_in_one_line_before_writing(scanned, tmp_path, monkeypatch):
    dataset, results = scanned
    out = tmp_path / "tasks.json"
    out.write_text("keep me")
    cases = [
        ((str(results), "--format", "coco", "--out", str(out)), 3, "--overwrite"),
        ((str(tmp_path), "--format", "coco", "--out", str(tmp_path / "a.json")), 6, "no finished scan"),
        ((str(results), "--format", "coco", "--out", str(dataset / "a.json")), 3, "inside the dataset"),
        ((str(results), "--format", "coco", "--out", str(tmp_path / "a.json"), "--all", "--decisions", str(out)),
         2, "pass only one"),
    ]
    for args, code, message in cases:
        outcome = export(*args)
        assert outcome.exit_code == code, outcome.output
        assert message in outcome.output
    assert out.read_text() == "keep me" and not (tmp_path / "a.json").exists() and not (dataset / "a.json").exists()

    none_suspect = _copy_with_non_suspects(results, tmp_path / "calm", {row["id"] for row in read_scores_csv(results / "scores.csv")})
    outcome = export(str(none_suspect), "--format", "coco", "--out", str(tmp_path / "b.json"))
    assert outcome.exit_code == 6 and "--all" in outcome.output

    monkeypatch.setitem(sys.modules, "label_studio_sdk.converter.brush", None)  # as if not installed
    outcome = export(str(results), "--format", "labelstudio", "--out", str(tmp_path / "c.json"))
    assert outcome.exit_code == 6 and "pip install 'maskaudit[labelstudio]'" in outcome.output
    assert len(outcome.output.strip().splitlines()) == 1


def test_layout_a_suggestions_are_read_as_label_indices(tmp_path):
    from maskaudit.exporters.samples import _read_suggested
    from maskaudit.exporters.scan_results import ScanResults

    labels = np.array([[0, 1, 2], [2, 2, 0]], dtype=np.uint8)
    (tmp_path / "suggested" / "masks").mkdir(parents=True)
    Image.fromarray(labels).save(tmp_path / "suggested" / "masks" / "a.png")
    results = ScanResults(results_dir=tmp_path, dataset_root=tmp_path, classes=CLASSES, multilabel=False,
                          options={}, report_id=None, rows=())
    masks = _read_suggested(results, "a", (2, 2, 3))
    assert np.array_equal(masks, np.stack([labels == 1, labels == 2]))
    assert _read_suggested(results, "missing", (2, 2, 3)) is None


# -- a real Label Studio server (the ``label_studio`` fixture of conftest.py) --------------------

@pytest.mark.slow
def test_label_studio_imports_the_tasks_and_gives_the_suggestions_back(scanned, label_studio, tmp_path):
    dataset, results = scanned
    out = tmp_path / "tasks.json"
    outcome = export(str(results), "--format", "labelstudio", "--out", str(out))
    assert outcome.exit_code == 0, outcome.output
    config = (tmp_path / "tasks.label_config.xml").read_text()
    project = label_studio.api("POST", "/api/projects", {"title": "maskaudit suspects", "label_config": config})
    imported = label_studio.api("POST", f"/api/projects/{project['id']}/import", json.loads(out.read_text()))
    rows = read_scores_csv(results / "scores.csv")
    assert imported["task_count"] == imported["prediction_count"] == imported["annotation_count"] == len(rows)

    tasks = label_studio.api("GET", f"/api/tasks?project={project['id']}&page_size=1000")["tasks"]
    assert sorted(task["data"]["maskaudit_id"] for task in tasks) == sorted(row["id"] for row in rows)
    for task in tasks:
        sample_id = task["data"]["maskaudit_id"]
        (prediction,) = label_studio.api("GET", f"/api/predictions?task={task['id']}")
        assert np.array_equal(decode_brush_regions(prediction["result"]), suggested(results, sample_id))
        (annotation,) = label_studio.api("GET", f"/api/tasks/{task['id']}/annotations")
        assert np.array_equal(decode_brush_regions(annotation["result"]), given(dataset, sample_id))

    # the default image URL is served once the project has a local storage at the dataset root (see README)
    label_studio.api("POST", "/api/storages/localfiles",
                     {"project": project["id"], "path": str(dataset), "title": "dataset", "use_blob_urls": False})
    assert label_studio.get_bytes(tasks[0]["data"]["image"]) == (
        dataset / "images" / f"{tasks[0]['data']['maskaudit_id']}.png").read_bytes()
