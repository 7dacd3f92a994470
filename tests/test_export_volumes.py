"""`maskaudit export` of a volume run: one task per flagged slice, its image a PNG beside the export,
decoding back exactly to the suggested label volume's slice."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from maskaudit.cli import main
from maskaudit.export import read_scores_csv
from test_formats_nnunet import SHAPE, make_nnunet

pytestmark = pytest.mark.slow  # one small scan of 6 volumes

CLASSES = ("left", "right")
AXIS = 2  # SHAPE's through-plane axis: slices are 12 x 10
FLAGGED = 2  # the worst fifth of a case's 6 slices


@pytest.fixture(scope="module")
def scanned(tmp_path_factory, one_torch_thread):
    """(dataset, results) of a scan of 6 volumes in which every case is a suspect."""
    root = tmp_path_factory.mktemp("export-volumes")
    dataset = make_nnunet(root / "ds", 6)
    results = root / "results"
    outcome = CliRunner().invoke(main, ["scan", str(dataset), "--out", str(results), "--size", "32", "--epochs", "2",
                                        "--threshold", "1.0", "--seed", "0", "--quiet"])
    assert outcome.exit_code == 0, outcome.output
    return dataset, results


def export(*args: str):
    return CliRunner().invoke(main, ["export", *args, "--quiet"])


def flagged(results, case: str) -> list[int]:
    """The case's flagged slices from slices.csv: its 2 most suspicious of 6, in slice order."""
    with open(results / "slices.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["case"] == case]
    return sorted(int(row["slice"]) for row in sorted(rows, key=lambda row: -float(row["suspicion"]))[:FLAGGED])


def one_hot(labels: np.ndarray) -> np.ndarray:
    return np.stack([labels == k + 1 for k in range(len(CLASSES))])


def suggested_slice(results, case: str, index: int) -> np.ndarray:
    volume = np.asanyarray(nib.load(results / "suggested" / "labelsTr" / f"{case}.nii.gz").dataobj)
    return one_hot(np.take(volume, index, axis=AXIS))


def given_slice(dataset, case: str, index: int) -> np.ndarray:
    return one_hot(np.take(np.asanyarray(nib.load(dataset / "labelsTr" / f"{case}.nii.gz").dataobj), index, axis=AXIS))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * (a & b).sum() / total)


def decode_brush_regions(regions: list[dict], height: int, width: int) -> np.ndarray:
    from label_studio_sdk.converter.brush import decode_rle

    masks = np.zeros((len(CLASSES), height, width), dtype=bool)
    for region in regions:
        assert region["type"] == "brushlabels" and region["value"]["format"] == "rle"
        assert (region["original_height"], region["original_width"]) == (height, width)
        (label,) = region["value"]["brushlabels"]
        masks[CLASSES.index(label)] |= decode_rle(region["value"]["rle"]).reshape(height, width, 4)[:, :, 3] > 0
    return masks


def test_labelstudio_has_one_task_per_flagged_slice_decoding_to_the_suggested_slice(scanned, tmp_path):
    dataset, results = scanned
    out = tmp_path / "tasks.json"
    outcome = export(str(results), "--format", "labelstudio", "--out", str(out))
    assert outcome.exit_code == 0, outcome.output
    tasks = json.loads(out.read_text())
    rows = read_scores_csv(results / "scores.csv")
    expected_ids = [f"{row['id']}/{index}" for row in rows for index in flagged(results, row["id"])]
    assert [task["data"]["maskaudit_id"] for task in tasks] == expected_ids  # cases by rank, slices in order
    height, width = SHAPE[0], SHAPE[1]
    compared = 0
    for task in tasks:
        case, index = task["data"]["maskaudit_id"].split("/")
        png = tmp_path / "tasks.slices" / f"{case}_axis{AXIS}_slice{int(index):04d}.png"
        assert task["data"]["image"] == "/data/local-files/?d=" + str(png).lstrip("/")
        with Image.open(png) as picture:
            assert picture.size == (width, height) and picture.mode == "L"
        prediction = decode_brush_regions(task["predictions"][0]["result"], height, width)
        expected = suggested_slice(results, case, int(index))
        assert np.array_equal(prediction, expected)
        assert all(dice(p, e) == 1.0 for p, e in zip(prediction, expected))
        compared += int(expected.any())
        annotation = decode_brush_regions(task["annotations"][0]["result"], height, width)
        assert np.array_equal(annotation, given_slice(dataset, case, int(index)))
    assert compared >= len(tasks) // 2  # most compared slices hold a suggested structure, not empty masks
    assert (tmp_path / "tasks.label_config.xml").is_file()
    assert sorted(path.name for path in (tmp_path / "tasks.slices").iterdir()) == sorted(
        f"{task['data']['maskaudit_id'].split('/')[0]}_axis{AXIS}_slice{int(task['data']['maskaudit_id'].split('/')[1]):04d}.png"
        for task in tasks)


def test_coco_decodes_to_the_suggested_slices_and_a_second_export_needs_overwrite(scanned, tmp_path):
    from pycocotools import mask as mask_utils

    _, results = scanned
    out = tmp_path / "suggested.json"
    assert export(str(results), "--format", "coco", "--out", str(out)).exit_code == 0
    payload = json.loads(out.read_text())
    assert len(payload["images"]) == 6 * FLAGGED
    for image in payload["images"]:
        assert (tmp_path / "suggested.slices" / image["file_name"]).is_file()
        assert (image["height"], image["width"]) == SHAPE[:2]
        decoded = np.zeros((len(CLASSES), *SHAPE[:2]), bool)
        for annotation in (a for a in payload["annotations"] if a["image_id"] == image["id"]):
            decoded[annotation["category_id"] - 1] = mask_utils.decode(annotation["segmentation"]).astype(bool)
        case, index = image["file_name"].split("_axis")[0], int(image["file_name"].rsplit("slice", 1)[1][:4])
        assert np.array_equal(decoded, suggested_slice(results, case, index))
    outcome = export(str(results), "--format", "coco", "--out", str(tmp_path / "again.json"))
    assert outcome.exit_code == 0
    (tmp_path / "again.json").unlink()
    outcome = export(str(results), "--format", "coco", "--out", str(tmp_path / "again.json"))  # its folder is left
    assert outcome.exit_code == 3 and "again.slices exists" in outcome.output
    assert export(str(results), "--format", "coco", "--out", str(tmp_path / "again.json"), "--overwrite").exit_code == 0


def test_all_takes_a_non_suspects_suggestion_from_the_checkpoint_exactly(scanned, tmp_path):
    _, results = scanned
    copy = tmp_path / "results"
    shutil.copytree(results, copy)
    rows = read_scores_csv(copy / "scores.csv")
    calm = rows[-1]["id"]
    rows[-1].update(suspect="0", issue_type="ok", issue_classes="")
    (copy / "suggested" / "labelsTr" / f"{calm}.nii.gz").unlink()
    with open(copy / "scores.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\r\n")
        writer.writeheader()
        writer.writerows(rows)
    assert export(str(copy), "--format", "labelstudio", "--out", str(tmp_path / "suspects.json")).exit_code == 0
    assert {task["data"]["maskaudit_id"].split("/")[0] for task in json.loads((tmp_path / "suspects.json").read_text())} \
        == {row["id"] for row in rows[:-1]}
    outcome = export(str(copy), "--format", "labelstudio", "--out", str(tmp_path / "all.json"), "--all")
    assert outcome.exit_code == 0, outcome.output
    calm_tasks = [task for task in json.loads((tmp_path / "all.json").read_text())
                  if task["data"]["maskaudit_id"].startswith(calm + "/")]
    assert len(calm_tasks) == FLAGGED
    for task in calm_tasks:  # the segmenter's mask again from model.pt: the scan wrote the same as its suggestion
        index = int(task["data"]["maskaudit_id"].split("/")[1])
        exported = decode_brush_regions(task["predictions"][0]["result"], *SHAPE[:2])
        assert np.array_equal(exported, suggested_slice(results, calm, index))


def test_label_studio_imports_the_slice_tasks_serves_their_pngs_and_gives_the_suggestions_back(scanned, label_studio,
                                                                                             tmp_path):
    dataset, results = scanned
    out = tmp_path / "tasks.json"
    assert export(str(results), "--format", "labelstudio", "--out", str(out)).exit_code == 0
    config = (tmp_path / "tasks.label_config.xml").read_text()
    project = label_studio.api("POST", "/api/projects", {"title": "maskaudit volume suspects", "label_config": config})
    imported = label_studio.api("POST", f"/api/projects/{project['id']}/import", json.loads(out.read_text()))
    assert imported["task_count"] == imported["prediction_count"] == imported["annotation_count"] == 6 * FLAGGED

    tasks = label_studio.api("GET", f"/api/tasks?project={project['id']}&page_size=1000")["tasks"]
    for task in tasks:
        case, index = task["data"]["maskaudit_id"].split("/")
        (prediction,) = label_studio.api("GET", f"/api/predictions?task={task['id']}")
        assert np.array_equal(decode_brush_regions(prediction["result"], *SHAPE[:2]),
                              suggested_slice(results, case, int(index)))
        (annotation,) = label_studio.api("GET", f"/api/tasks/{task['id']}/annotations")
        assert np.array_equal(decode_brush_regions(annotation["result"], *SHAPE[:2]), given_slice(dataset, case, int(index)))
    # the slice images are served once the project has a local storage at the folder beside tasks.json
    label_studio.api("POST", "/api/storages/localfiles", {"project": project["id"], "path": str(tmp_path / "tasks.slices"),
                                                          "title": "slices", "use_blob_urls": False})
    case, index = tasks[0]["data"]["maskaudit_id"].split("/")
    png = tmp_path / "tasks.slices" / f"{case}_axis{AXIS}_slice{int(index):04d}.png"
    assert label_studio.get_bytes(tasks[0]["data"]["image"]) == png.read_bytes()


def test_coco_slices_read_back_through_datumaro_as_cvat_imports_them(scanned, tmp_path):
    """CVAT's COCO 1.0 import is Datumaro's COCO reader: every flagged slice's masks must survive it."""
    from test_export import export_coco_through_datumaro

    _, results = scanned
    out, found, masks = export_coco_through_datumaro(results, tmp_path)
    coco = json.loads(out.read_text())
    annotated = {annotation["image_id"] for annotation in coco["annotations"]}  # an empty suggestion has none
    assert {item_id for item_id, _, _ in found} == {
        Path(image["file_name"]).stem for image in coco["images"] if image["id"] in annotated}
    for position, (item_id, label, attributes) in enumerate(found):
        case, index = item_id.split("_axis2_slice")
        assert attributes["sample_id"] == f"{case}/{int(index)}"
        assert np.array_equal(masks[f"arr_{position}"], suggested_slice(results, case, int(index))[CLASSES.index(label)])
