"""nnU-Net datasets of MetaImage (.mha) and NRRD (.nrrd) volumes, read and written through SimpleITK."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from click.testing import CliRunner

from maskaudit.cli import main
from maskaudit.errors import DatasetError
from maskaudit.formats import open_dataset
from maskaudit.formats.nnunet import find_nnunet, read_case
from maskaudit.formats.volume_files import open_volume
from maskaudit.summary import describe_source

SHAPE = (12, 10, 6)  # X, Y, Z
SPACING = (0.8, 0.7, 2.5)  # the through-plane axis is 2
ORIGIN = (-12.5, 30.0, 7.25)
DIRECTION = (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0)  # rotated in-plane: a non-trivial affine


def _labels(shift: int = 0) -> np.ndarray:
    labels = np.zeros(SHAPE, np.uint8)
    labels[3 + shift : 7 + shift, 2:6, 1:5] = 1
    labels[7 + shift : 10 + shift, 4:8, 2:5] = 2
    return labels


def to_sitk(array: np.ndarray, *, spacing=SPACING) -> sitk.Image:
    """An (X, Y, Z) array as an ITK image with the test geometry (ITK arrays are (Z, Y, X))."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(array, (2, 1, 0))))
    image.SetSpacing(spacing)
    image.SetOrigin(ORIGIN)
    image.SetDirection(DIRECTION)
    return image


def make_dataset(root: Path, ending: str, cases: int = 3) -> Path:
    root.mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "MRI"}, "labels": {"background": 0, "left": 1, "right": 2},
        "numTraining": cases, "file_ending": ending}))
    for folder in ("imagesTr", "labelsTr"):
        (root / folder).mkdir()
    rng = np.random.default_rng(0)
    for case in range(cases):
        labels = _labels(case % 2)
        image = (100.0 + 50.0 * labels + rng.normal(0, 5, SHAPE)).astype(np.float32)
        sitk.WriteImage(to_sitk(labels), str(root / "labelsTr" / f"case_{case:03d}{ending}"), useCompression=True)
        sitk.WriteImage(to_sitk(image), str(root / "imagesTr" / f"case_{case:03d}_0000{ending}"), useCompression=True)
    return root


@pytest.mark.parametrize("ending", [".mha", ".nrrd"])
def test_volumes_read_as_simpleitk_writes_them_in_nifti_with_the_same_geometry(tmp_path, ending):
    root = make_dataset(tmp_path / "ds", ending)
    volumes = find_nnunet(root)
    assert [case.id for case in volumes.cases] == ["case_000", "case_001", "case_002"]
    assert volumes.cases[1].label == Path(f"labelsTr/case_001{ending}")
    assert volumes.spacing == pytest.approx(SPACING)
    volume = read_case(volumes, volumes.cases[1])
    np.testing.assert_array_equal(volume.labels, _labels(1))
    assert volume.image.shape == (1, *SHAPE) and volume.spacing == pytest.approx(SPACING)
    # the same ITK image written as NIfTI by SimpleITK and read by nibabel: same voxels and affine
    reference = tmp_path / "reference.nii.gz"
    sitk.WriteImage(sitk.ReadImage(str(root / "labelsTr" / f"case_001{ending}")), str(reference))
    nifti = nib.load(reference)
    opened = open_volume(root / "labelsTr" / f"case_001{ending}")
    np.testing.assert_allclose(opened.affine, nifti.affine, atol=1e-5)
    np.testing.assert_array_equal(opened.array(), np.asanyarray(nifti.dataobj))
    assert opened.shape == nifti.shape == SHAPE


def test_bad_mha_cases_are_one_skipped_line_each(tmp_path):
    root = make_dataset(tmp_path / "ds", ".mha", 2)
    sitk.WriteImage(to_sitk(_labels(), spacing=(0.8, 0.7, 3.0)), str(root / "labelsTr" / "bad_spacing.mha"))
    sitk.WriteImage(to_sitk(np.zeros(SHAPE, np.float32)), str(root / "imagesTr" / "bad_spacing_0000.mha"))
    sitk.WriteImage(to_sitk(_labels()), str(root / "labelsTr" / "bad_file.mha"), useCompression=True)
    whole = (root / "labelsTr" / "bad_file.mha").read_bytes()
    (root / "labelsTr" / "bad_file.mha").write_bytes(whole[: len(whole) - 40])
    sitk.WriteImage(to_sitk(np.zeros(SHAPE, np.float32)), str(root / "imagesTr" / "bad_file_0000.mha"))
    reasons = {item["path"]: item["reason"] for item in describe_source(open_dataset(root))["skipped"]}
    assert "affine" in reasons["labelsTr/bad_spacing.mha"]
    assert "cannot read as .mha" in reasons["labelsTr/bad_file.mha"]
    assert all("\n" not in reason for reason in reasons.values()) and len(reasons) == 2


def test_without_simpleitk_an_mha_dataset_names_the_extra_to_install(tmp_path, monkeypatch):
    root = make_dataset(tmp_path / "ds", ".mha", 1)
    monkeypatch.setitem(sys.modules, "SimpleITK", None)  # as if not installed
    with pytest.raises(DatasetError, match=r"pip install 'maskaudit\[sitk\]'"):
        find_nnunet(root)


@pytest.mark.slow
def test_an_nrrd_scan_writes_suggested_labels_with_the_label_files_geometry(tmp_path):
    root = make_dataset(tmp_path / "ds", ".nrrd", 4)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["scan", str(root), "--out", str(out), "--size", "32", "--epochs", "1",
                                       "--threshold", "1.0", "--no-report", "--quiet"])
    assert result.exit_code == 0, result.output
    with open(out / "scores.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(row["id"] for row in rows) == [f"case_{case:03d}" for case in range(4)]
    for row in rows:
        assert row["mask"] == f"labelsTr/{row['id']}.nrrd"
        suggested = sitk.ReadImage(str(out / "suggested" / "labelsTr" / f"{row['id']}.nrrd"))
        given = sitk.ReadImage(str(root / "labelsTr" / f"{row['id']}.nrrd"))
        assert suggested.GetSize() == given.GetSize() == SHAPE
        assert suggested.GetSpacing() == pytest.approx(SPACING) and suggested.GetOrigin() == pytest.approx(ORIGIN)
        assert suggested.GetDirection() == pytest.approx(DIRECTION)
        assert suggested.GetPixelID() == given.GetPixelID()
        values = sitk.GetArrayFromImage(suggested)
        assert set(np.unique(values)) <= {0, 1, 2}
    run = json.loads((out / "run.json").read_text())
    assert run["dataset"]["axis"] == 2 and run["dataset"]["spacing"] == pytest.approx(list(SPACING))
    # the export reads the .nrrd suggestions back: each flagged slice decodes to the suggested volume's slice
    from pycocotools import mask as mask_utils

    exported = CliRunner().invoke(main, ["export", str(out), "--format", "coco", "--out", str(tmp_path / "s.json"),
                                         "--quiet"])
    assert exported.exit_code == 0, exported.output
    payload = json.loads((tmp_path / "s.json").read_text())
    assert len(payload["images"]) == 4 * 2  # the worst fifth of 6 slices per case
    for image in payload["images"]:
        case, index = image["file_name"].split("_axis2_slice")
        suggested = np.transpose(sitk.GetArrayFromImage(sitk.ReadImage(str(out / "suggested" / "labelsTr" / f"{case}.nrrd"))),
                                 (2, 1, 0))[:, :, int(index[:4])]
        decoded = np.zeros((2, *SHAPE[:2]), bool)
        for annotation in (a for a in payload["annotations"] if a["image_id"] == image["id"]):
            decoded[annotation["category_id"] - 1] = mask_utils.decode(annotation["segmentation"]).astype(bool)
        np.testing.assert_array_equal(decoded, np.stack([suggested == 1, suggested == 2]))
