"""nnU-Net v2 raw datasets: finding cases, reading volumes, bad inputs, slicing into the cache, a volume scan."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner

from maskaudit.cli import main
from maskaudit.errors import DatasetError
from maskaudit.formats import detect_format, open_dataset
from maskaudit.formats.nnunet import find_nnunet, read_case, through_plane_axis
from maskaudit.prepare_volumes import normalise_case, prepare_volumes
from maskaudit.summary import describe_source
from maskaudit.volume_results import aggregate_cases, flagged_slices

HIPPOCAMPUS = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "hippocampus"
SHAPE = (12, 10, 6)
AFFINE = np.diag([0.8, 0.8, 2.5, 1.0])  # through-plane axis: 2 (largest spacing)


def _labels(shape=SHAPE, shift: int = 0) -> np.ndarray:
    labels = np.zeros(shape, np.uint8)
    labels[3 + shift : 7 + shift, 2:6, 1:5] = 1
    labels[7 + shift : 10 + shift, 4:8, 2:5] = 2
    return labels


def _image(labels: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (100.0 + 50.0 * labels + rng.normal(0, 5, labels.shape)).astype(np.float32)


def _save(path: Path, array: np.ndarray, affine: np.ndarray = AFFINE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), path)


def make_nnunet(root: Path, cases: int = 3, *, channels=("MRI",), labels=None) -> Path:
    """A tiny nnU-Net v2 raw dataset: ``cases`` volumes of SHAPE with two labelled boxes."""
    meta = {"channel_names": {str(i): name for i, name in enumerate(channels)},
            "labels": labels or {"background": 0, "left": 1, "right": 2}, "numTraining": cases,
            "file_ending": ".nii.gz"}
    root.mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps(meta))
    for case in range(cases):
        values = _labels(shift=case % 2)
        _save(root / "labelsTr" / f"case_{case:03d}.nii.gz", values)
        for channel in range(len(channels)):
            _save(root / "imagesTr" / f"case_{case:03d}_{channel:04d}.nii.gz", _image(values, case * 10 + channel))
    return root


def test_cases_classes_channels_and_spacing_come_from_dataset_json(tmp_path):
    root = make_nnunet(tmp_path / "ds", 3, channels=("T2", "ADC"))
    assert detect_format(root) == "nnunet"
    volumes = find_nnunet(root)
    assert [case.id for case in volumes.cases] == ["case_000", "case_001", "case_002"]
    assert volumes.classes == ("left", "right") and volumes.channel_names == ("T2", "ADC")
    assert volumes.cases[1].images == (Path("imagesTr/case_001_0000.nii.gz"), Path("imagesTr/case_001_0001.nii.gz"))
    assert volumes.spacing == pytest.approx((0.8, 0.8, 2.5))
    volume = read_case(volumes, volumes.cases[1])
    assert volume.image.shape == (2, *SHAPE) and volume.labels.dtype == np.uint8
    np.testing.assert_array_equal(volume.labels, _labels(shift=1))


def test_case_scores_average_the_worst_fifth_of_slices_and_flag_the_bad_case():
    # 12 cases of 10 slices; case 5 has three very suspicious slices, the others noise
    rng = np.random.default_rng(0)
    suspicion = rng.normal(0, 0.3, 120)
    suspicion[[52, 55, 57]] = [6.0, 7.0, 5.0]
    case_of = np.repeat(np.arange(12), 10)
    scores = aggregate_cases(suspicion, case_of, 12)
    assert scores.worst[5] == 55 and scores.suspicion[5] == pytest.approx(6.5)  # mean of the worst 2 of 10
    assert np.argmin(scores.quality) == 5 and scores.quality[5] < 0.5
    assert (np.delete(scores.quality, 5) > 0.5).all()
    assert all(case * 10 <= scores.worst[case] < case * 10 + 10 for case in range(12))


def test_flagged_slices_are_the_worst_fifth_a_case_score_averages_in_slice_order():
    suspicion = np.zeros(120)
    suspicion[[52, 55, 57]] = [6.0, 7.0, 5.0]  # case 5: its worst two of 10 slices are 55 and 52
    suspicion[90:120] = np.arange(30)  # case 9 (30 slices): its worst six are 114-119, capped to the worst 4
    case_of = np.concatenate([np.repeat(np.arange(9), 10), np.full(30, 9)])
    flagged = flagged_slices(suspicion, case_of, [5, 9], limit=4)
    assert sorted(flagged) == [5, 9]
    assert flagged[5].tolist() == [52, 55] and flagged[9].tolist() == [116, 117, 118, 119]
    assert aggregate_cases(suspicion, case_of, 10).suspicion[5] == pytest.approx(suspicion[flagged[5]].mean())


def test_through_plane_axis_is_the_largest_spacing_and_ties_go_to_the_last_axis():
    assert through_plane_axis((0.8, 0.8, 2.5)) == 2
    assert through_plane_axis((3.0, 0.7, 0.7)) == 0
    assert through_plane_axis((1.0, 1.0, 1.0)) == 2


def test_inspect_names_the_format_and_spacing(tmp_path):
    root = make_nnunet(tmp_path / "ds", 2)
    result = CliRunner().invoke(main, ["inspect", str(root)])
    assert result.exit_code == 0, result.output
    assert "Layout       nnU-Net v2" in result.output and "Spacing      0.8 x 0.8 x 2.5 mm" in result.output
    assert "Samples      2 usable, 0 skipped" in result.output
    described = json.loads(CliRunner().invoke(main, ["inspect", str(root), "--json"]).output)
    assert described["format"] == "nnunet" and described["image_sizes"] == {"12x10x6": 2}


def test_region_based_labels_are_refused_in_one_clear_line(tmp_path):
    root = make_nnunet(tmp_path / "ds", 1, labels={"background": 0, "whole": [1, 2], "core": 2})
    with pytest.raises(DatasetError, match="region-based labels .* not\\s+support"):
        open_dataset(root)


def test_each_bad_case_is_one_skipped_line_and_the_rest_is_read(tmp_path):
    root = make_nnunet(tmp_path / "ds", 2, channels=("MRI", "PD"))
    good = _labels()

    def case(name: str, labels, images, affine=AFFINE):
        _save(root / "labelsTr" / f"{name}.nii.gz", labels, affine if name == "bad_affine" else AFFINE)
        for channel, array in enumerate(images):
            if array is not None:
                _save(root / "imagesTr" / f"{name}_{channel:04d}.nii.gz", array)

    image = _image(good, 0)
    case("bad_shape", good[:, :, :5], [image, image])
    case("bad_affine", good, [image, image], affine=np.diag([0.8, 0.8, 3.0, 1.0]))
    case("bad_float", good.astype(np.float32) + 0.5, [image, image])
    case("bad_value", np.where(good == 2, 7, good).astype(np.uint8), [image, image])
    case("bad_channel", good, [image, None])
    case("bad_4d", good, [np.stack([image, image], axis=-1), image])
    case("bad_gzip", good, [image, image])
    whole = (root / "imagesTr" / "bad_gzip_0000.nii.gz").read_bytes()
    (root / "imagesTr" / "bad_gzip_0000.nii.gz").write_bytes(whole[: len(whole) // 2])

    description = describe_source(open_dataset(root))
    reasons = {item["path"]: item["reason"] for item in description["skipped"]}
    assert description["num_samples"] == 2
    assert "label volume is 12 x 10 x 5 but its image" in reasons["labelsTr/bad_shape.nii.gz"]
    assert "affine" in reasons["labelsTr/bad_affine.nii.gz"]
    assert "non-integer" in reasons["labelsTr/bad_float.nii.gz"]
    assert "label value(s) 7 not declared" in reasons["labelsTr/bad_value.nii.gz"]
    assert "missing channel file imagesTr/bad_channel_0001.nii.gz" in reasons["labelsTr/bad_channel.nii.gz"]
    assert "4 dimensions" in reasons["labelsTr/bad_4d.nii.gz"] and "_0001" in reasons["labelsTr/bad_4d.nii.gz"]
    assert "truncated or corrupt" in reasons["labelsTr/bad_gzip.nii.gz"]
    assert all("\n" not in reason for reason in reasons.values())
    assert len(reasons) == 7

    sliced = prepare_volumes(open_dataset(root).volumes, size=16, axis=2, cache_dir=tmp_path / "cache")
    assert [case.id for case in sliced.volumes.cases] == ["case_000", "case_001"]
    assert {item.path for item in sliced.volumes.skipped} == set(reasons)


def test_slices_along_the_axis_fill_a_cache_that_is_reused(tmp_path):
    root = make_nnunet(tmp_path / "ds", 3)
    volumes = find_nnunet(root)
    sliced = prepare_volumes(volumes, size=16, axis=2, cache_dir=tmp_path / "cache")
    assert sliced.data.images.shape == (3 * SHAPE[2], 1, 16, 16)
    assert sliced.data.masks.shape == (3 * SHAPE[2], 2, 16, 16)
    assert isinstance(sliced.data.images, np.memmap)
    assert sliced.data.original_sizes.tolist()[0] == [12, 10]
    np.testing.assert_allclose(sliced.data.pixel_mm, np.tile([0.8 * 12 / 16, 0.8 * 10 / 16], (3 * SHAPE[2], 1)))
    assert sliced.slice_of.tolist()[:6] == list(range(6)) and sliced.case_of.tolist()[6] == 1
    samples = sliced.data.index.samples
    assert samples[7].id == "case_001/1" and samples[-1].id == "case_002/5" and len(samples) == 3 * SHAPE[2]
    assert samples[7].image == volumes.cases[1].images[0] and samples[7].masks == (volumes.cases[1].label,)
    assert [samples.position(sample.id) for sample in samples] == list(range(len(samples)))  # the inverse
    for unknown in ("case_001/6", "case_009/0", "case_001/x", "case_001"):
        with pytest.raises(KeyError):
            samples.position(unknown)
    assert samples.ids(5, 8).tolist() == ["case_000/5", "case_001/0", "case_001/1"]
    assert sliced.slices_of_case(1).tolist() == list(range(6, 12))
    # slice 2 of case 0 holds both boxes; its label-1 mask is the 4 x 4 box at rows 3-6, columns 2-5
    np.testing.assert_array_equal(np.asarray(sliced.data.masks[2, 0])[::4, ::4] > 0, np.asarray(_labels()[:, :, 2] == 1)[::3, ::2][:4, :4])
    files = sorted(path.name for path in (tmp_path / "cache").iterdir())
    again = prepare_volumes(volumes, size=16, axis=2, cache_dir=tmp_path / "cache")
    assert sorted(path.name for path in (tmp_path / "cache").iterdir()) == files
    np.testing.assert_array_equal(again.data.images, sliced.data.images)
    along_x = prepare_volumes(volumes, size=16, axis=0, cache_dir=tmp_path / "cache")
    assert len(along_x.data.images) == 3 * SHAPE[0] and along_x.data.original_sizes.tolist()[0] == [10, 6]
    np.testing.assert_allclose(along_x.data.pixel_mm[0], [0.8 * 10 / 16, 2.5 * 6 / 16])  # rows along Y, columns along Z


def test_ct_is_clipped_to_the_foreground_window_and_other_channels_are_z_scored():
    image = np.stack([np.linspace(-1000, 1000, 1000, dtype=np.float32).reshape(10, 10, 10)] * 2)
    out = normalise_case(image, ("CT", "MRI"), {0: (0.0, 100.0)})
    assert out.dtype == np.uint8
    assert out[0].min() == 0 and out[0].max() == 255
    assert (out[0] == 255).sum() == (image[0] >= 100).sum()  # everything above the window saturates
    z = (image[1] - image[1].mean()) / image[1].std()
    np.testing.assert_allclose(out[1], np.round(np.clip((z + 3) / 6, 0, 1) * 255), atol=1)


def test_real_hippocampus_cases_are_found_and_read():
    volumes = find_nnunet(HIPPOCAMPUS)
    assert len(volumes.cases) == 260 and volumes.classes == ("anterior", "posterior")
    volume = read_case(volumes, volumes.cases[0])
    assert volume.image.shape[0] == 1 and volume.image.shape[1:] == volume.labels.shape
    assert set(np.unique(volume.labels)) == {0, 1, 2}


@pytest.mark.slow
def test_volume_scan_writes_case_rows_slices_and_suggested_nifti(tmp_path):
    root = make_nnunet(tmp_path / "ds", 8)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["scan", str(root), "--out", str(out), "--size", "32", "--epochs", "1",
                                       "--threshold", "1.0", "--quiet"])
    assert result.exit_code == 0, result.output
    with open(out / "scores.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(row["id"] for row in rows) == [f"case_{case:03d}" for case in range(8)]
    assert list(rows[0])[-4:] == ["worst_slice", "annotation_ids", "boundary_distance_mm", "object_miss"]
    assert all(0.0 <= float(row["object_miss"]) <= 1.0 for row in rows)
    assert all(0 <= int(row["worst_slice"]) < SHAPE[2] for row in rows)
    assert rows[0]["mask"] == f"labelsTr/{rows[0]['id']}.nii.gz"
    with open(out / "slices.csv", newline="") as handle:
        slices = list(csv.DictReader(handle))
    assert len(slices) == 8 * SHAPE[2] and slices[0]["case"] == "case_000" and slices[0]["slice"] == "0"
    worst = max((row for row in slices if row["case"] == rows[0]["id"]), key=lambda row: float(row["suspicion"]))
    assert worst["slice"] == rows[0]["worst_slice"]
    assert worst["boundary_distance_mm"] == rows[0]["boundary_distance_mm"]
    # working pixels of 0.8 * 12 / 32 by 0.8 * 10 / 32 mm: a distance in mm is 0.25 to 0.3 times the one in px
    for row in slices:
        px, mm = float(row["boundary_distance"]), float(row["boundary_distance_mm"])
        assert 0.25 * px - 1e-3 <= mm <= 0.3 * px + 1e-3
    suggested = nib.load(out / "suggested" / "labelsTr" / f"{rows[0]['id']}.nii.gz")
    original = nib.load(root / "labelsTr" / f"{rows[0]['id']}.nii.gz")
    assert suggested.shape == SHAPE and np.allclose(suggested.affine, original.affine)
    assert suggested.get_data_dtype() == original.get_data_dtype()
    assert set(np.unique(np.asanyarray(suggested.dataobj))) <= {0, 1, 2}
    with gzip.open(out / "suggested" / "labelsTr" / f"{rows[0]['id']}.nii.gz") as handle:
        assert len(handle.read()) > 352  # a real gzip holding a NIfTI header and data
    assert (out / "report.html").is_file()
    run = json.loads((out / "run.json").read_text())
    assert run["dataset"]["axis"] == 2
    assert run["self_check"]["suspect_rule"] in {"case mixture", "case tail"}  # cases, not slices, are suspects
    with open(out / "slices.csv", newline="", encoding="utf-8") as handle:
        slice_count = sum(1 for _ in csv.DictReader(handle))
    assert run["options"]["slices_per_epoch"] == slice_count  # a set this small is visited whole each epoch
    # the report steps through each suspect case's flagged slices: the worst fifth (2 of 6), in slice order
    html = (out / "report.html").read_text(encoding="utf-8")
    data = json.loads(html.split('id="maskaudit-data">', 1)[1].split("</script>", 1)[0])
    for row in data["rows"]:
        case_slices = sorted((row_ for row_ in slices if row_["case"] == row["id"]), key=lambda r: -float(r["suspicion"]))
        assert [entry["label"] for entry in row["slices"]] == [
            f"slice {index}" for index in sorted(int(r["slice"]) for r in case_slices[:2])]
        assert all((out / entry[key]).is_file() for entry in row["slices"] for key in ("full", "given", "pred"))
