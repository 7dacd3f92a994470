"""The HTML report without a browser: escaping, assets on disk, refusal to write nothing, template rules."""

from __future__ import annotations

import json
import re

import jinja2
import numpy as np
import pytest
from PIL import Image

from maskaudit import overlays, report
from maskaudit.errors import InputFileError, MaskauditError
from maskaudit.report import ReportInput, SampleRow, SampleVisuals, render_report

XSS_ID = "<img src=x onerror=alert(1)>"
ISSUES = ("over-segmented", "under-segmented", "missing", "spurious", "class-confusion", "misplaced", "other")


def make_visuals(seed: int, h: int = 24, w: int = 32, k: int = 2) -> SampleVisuals:
    """A grey ramp with a disc (class 0) and a box (class 1); the prediction is shifted by ``seed % 4`` px."""
    yy, xx = np.mgrid[:h, :w]
    grey = ((xx * 255) // max(w - 1, 1)).astype(np.uint8)
    image = np.stack([grey, grey, 255 - grey], axis=-1)
    given = np.zeros((k, h, w), dtype=bool)
    given[0] = (yy - h // 2) ** 2 + (xx - w // 3) ** 2 < (h // 4) ** 2
    if k > 1:
        given[1, 2: h // 2, w // 2: w - 2] = True
    shift = seed % 4
    predicted = np.roll(given, shift, axis=2)
    return SampleVisuals(image=image, given=given, predicted=predicted)


def make_report(n: int = 6, *, ids: list[str] | None = None, root: str = "/data/chest <x> & 'y'",
                classes: tuple[str, ...] = ("heart", "lung"), threshold: float = 0.5) -> ReportInput:
    """``n`` rows ranked by ascending score; the first ids are the awkward ones in ``ids``."""
    rng = np.random.default_rng(0)
    scores = np.sort(rng.uniform(0.0, 1.0, n))
    ids = list(ids if ids is not None else [XSS_ID, "case 02 é", 'a "b" & c'])
    rows = []
    for i in range(n):
        sid = ids[i] if i < len(ids) else f"s{i:03d}"
        suspect = bool(scores[i] < threshold)
        rows.append(SampleRow(
            rank=i + 1, id=sid, image=f"images/{sid}.png", mask=f"masks/{sid}.png",
            quality_score=float(scores[i]), suspect=suspect,
            issue_type=ISSUES[i % len(ISSUES)] if suspect else "ok",
            issue_classes=(classes[i % len(classes)],) if suspect else (),
            qam_score=float(rng.uniform()), dice_vs_prediction=float(rng.uniform(0.5, 1.0)),
            dice_per_class=tuple(float(d) for d in rng.uniform(0.5, 1.0, len(classes))),
            cluster=i % 3, outlier=i % 5 == 4))
    return ReportInput(
        dataset_root=root, layout="A", classes=classes, num_samples=n,
        skipped=(("images/<b>bad</b>.png", "cannot decode: truncated <PNG>"),),
        settings={"mode": "qam", "epochs": 2, "size": 64, "seed": 0, "device": "cpu"},
        stage_seconds={"load": 0.5, "train": 75.0, "score": 1.0, "cluster": 0.2},
        threshold=threshold, rows=tuple(rows), coords=rng.normal(size=(n, 2)), version="0.1.0")


def visuals_for(rep: ReportInput, calls: list[str] | None = None):
    index = {r.id: i for i, r in enumerate(rep.rows)}

    def load(sample_id: str) -> SampleVisuals:
        if calls is not None:
            calls.append(sample_id)
        return make_visuals(index[sample_id], k=len(rep.classes))

    return load


def embedded_data(html: str) -> dict:
    m = re.search(r'<script type="application/json" id="maskaudit-data">(.*?)</script>', html, re.S)
    assert m, "the row data must be embedded as a JSON script"
    return json.loads(m.group(1))


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    rep = make_report()
    path = render_report(rep, visuals_for(rep), out)
    return rep, path, path.read_text(encoding="utf-8")


def test_returns_report_html_in_out_dir(rendered):
    rep, path, html = rendered
    assert path.name == "report.html" and path.is_file()
    assert html.startswith("<!doctype html>")


def test_ids_and_paths_are_escaped(rendered):
    rep, path, html = rendered
    assert XSS_ID not in html
    assert "<img src=x" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html  # shown as text in the map tooltip
    assert "<b>bad</b>" not in html and "&lt;b&gt;bad&lt;/b&gt;.png" in html
    assert "&lt;PNG&gt;" in html
    assert "/data/chest &lt;x&gt; &amp; &#39;y&#39;" in html


def test_json_cannot_close_its_script_and_round_trips(rendered):
    rep, path, html = rendered
    block = html.split('id="maskaudit-data">', 1)[1].split("</script>", 1)[0]
    assert "<" not in block and ">" not in block and "NaN" not in block
    data = embedded_data(html)
    assert [r["id"] for r in data["rows"]] == [r.id for r in rep.rows]
    assert [r["rank"] for r in data["rows"]] == [1, 2, 3, 4, 5, 6]
    assert data["classes"] == ["heart", "lung"]
    assert data["datasetRoot"] == rep.dataset_root
    assert data["storageKey"].startswith("maskaudit:v1:" + rep.dataset_root + ":")
    first = data["rows"][0]
    assert first["score"] == pytest.approx(rep.rows[0].quality_score, abs=1e-4)
    assert first["mask"] == [rep.rows[0].mask]


def test_every_referenced_asset_exists_and_decodes(rendered):
    rep, path, html = rendered
    out = path.parent
    refs = set(re.findall(r'(?:src|href)="(assets/[^"]+)"', html))
    assert {"assets/report.css", "assets/report.js"} <= refs
    for row in embedded_data(html)["rows"]:
        for key in ("thumb", "diff", "full", "given", "pred"):
            refs.add(row[key])
    for ref in refs:
        assert (out / ref).is_file(), ref
    row = embedded_data(html)["rows"][0]
    with Image.open(out / row["thumb"]) as im:
        assert max(im.size) <= report.THUMB_SIDE
    with Image.open(out / row["full"]) as im:
        assert im.size == (32, 24)  # small originals keep their size
    with Image.open(out / row["given"]) as im:
        assert im.mode == "RGBA" and im.size == (32, 24)


def test_asset_names_never_come_from_ids(rendered):
    rep, path, html = rendered
    names = sorted(p.name for p in (path.parent / "assets" / "samples").iterdir())
    assert len(names) == 5 * len(rep.rows)
    assert all(re.fullmatch(r"\d{6}-[a-z]+\.(png|jpg)", n) for n in names), names


def test_structure(rendered):
    rep, path, html = rendered
    for section in ('id="view-summary"', 'id="view-samples"', 'id="view-map"', 'id="detail"'):
        assert section in html
    assert html.count('class="bar-suspect"') == 20  # one stacked bar per histogram bin
    assert html.count('class="threshold"') == 1 and "threshold 0.50" in html
    assert len(re.findall(r'<circle class="pt[^"]*"[^>]*data-i="\d+"', html)) == len(rep.rows)
    for name in rep.classes:
        assert f'<option value="{name}">{name}</option>' in html
    assert '<option value="">all</option>' in html
    for label in ("suspects only", "Download decisions CSV", "Overlay opacity", "Dice per class"):
        assert label in html
    assert "<kbd>j</kbd>" in html and "<kbd>Esc</kbd>" in html
    assert "1 min 15 s" in html  # the train stage
    assert 'loading="lazy"' not in html  # rows are built by report.js, which sets it
    assert "http://" not in html and "https://" not in html  # nothing from the network


def test_rendering_is_deterministic_apart_from_the_date(tmp_path):
    rep = make_report()
    a = render_report(rep, visuals_for(rep), tmp_path / "a").read_text(encoding="utf-8")
    b = render_report(rep, visuals_for(rep), tmp_path / "b").read_text(encoding="utf-8")

    def blank(s):
        return re.sub(r'(<dt>generated</dt><dd class="mono">)[^<]*', r"\1", s)

    assert blank(a) == blank(b)


def test_empty_rows_raise_before_touching_disk(tmp_path):
    rep = make_report()
    empty = ReportInput(**{**rep.__dict__, "rows": (), "coords": np.zeros((0, 2))})
    out = tmp_path / "out"

    def never(_):
        raise AssertionError("visuals must not be called")

    with pytest.raises(MaskauditError, match="nothing to report"):
        render_report(empty, never, out)
    assert not out.exists()


def test_misaligned_coords_raise_before_touching_disk(tmp_path):
    rep = make_report()
    bad = ReportInput(**{**rep.__dict__, "coords": np.zeros((2, 2))})
    with pytest.raises(MaskauditError, match=r"\(N, 2\)"):
        render_report(bad, visuals_for(rep), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_environment_is_strict_and_autoescapes():
    env = report._environment()
    with pytest.raises(jinja2.UndefinedError):
        env.from_string("{{ missing }}").render()
    with pytest.raises(jinja2.UndefinedError):
        env.from_string("{{ page.nope }}").render(page=object())
    assert env.from_string("{{ x }}").render(x="<b>") == "&lt;b&gt;"
    assert env.get_template(report.TEMPLATE) is not None


def test_only_the_first_rows_get_pictures(tmp_path):
    rep = make_report(n=6)
    calls: list[str] = []
    path = render_report(rep, visuals_for(rep, calls), tmp_path, max_visual_samples=2)
    assert calls == [rep.rows[0].id, rep.rows[1].id]
    rows = embedded_data(path.read_text(encoding="utf-8"))["rows"]
    assert "thumb" in rows[1] and "thumb" not in rows[2]
    assert len(list((tmp_path / "assets" / "samples").iterdir())) == 10
    assert "the other 4 are listed without pictures" in path.read_text(encoding="utf-8")


def test_a_sample_whose_pictures_fail_is_listed_with_the_reason(tmp_path):
    rep = make_report(n=3)
    ok = visuals_for(rep)

    def load(sample_id):
        if sample_id == rep.rows[1].id:
            raise InputFileError("cannot decode images/x.png: truncated file")
        return ok(sample_id)

    rows = embedded_data(render_report(rep, load, tmp_path).read_text(encoding="utf-8"))["rows"]
    assert "thumb" not in rows[1] and "truncated file" in rows[1]["error"]
    assert "thumb" in rows[0] and "thumb" in rows[2]


def test_non_finite_numbers_become_null(tmp_path):
    rep = make_report(n=3)
    rows = list(rep.rows)
    rows[2] = SampleRow(**{**rows[2].__dict__, "quality_score": float("nan"), "dice_per_class": (float("inf"), 0.5)})
    coords = np.array(rep.coords)
    coords[0] = np.nan
    rep = ReportInput(**{**rep.__dict__, "rows": tuple(rows), "coords": coords})
    html = render_report(rep, visuals_for(rep), tmp_path).read_text(encoding="utf-8")
    block = html.split('id="maskaudit-data">', 1)[1].split("</script>", 1)[0]
    assert "NaN" not in block and "Infinity" not in block
    data = json.loads(block)
    assert data["rows"][2]["score"] is None and data["rows"][2]["dpc"][0] is None
    assert "1 samples have no map position" in html


def test_detail_pictures_are_capped(tmp_path):
    rep = make_report(n=1, ids=["big"])
    path = render_report(rep, lambda _: make_visuals(0, h=90, w=120), tmp_path, detail_max_side=60)
    row = embedded_data(path.read_text(encoding="utf-8"))["rows"][0]
    assert (row["w"], row["h"], row["ow"], row["oh"]) == (60, 45, 120, 90)
    with Image.open(tmp_path / row["given"]) as im:
        assert im.size == (60, 45)


def test_disagreement_map_codes():
    given = np.zeros((2, 3, 3), dtype=bool)
    predicted = np.zeros((2, 3, 3), dtype=bool)
    given[0, 0, 0] = True  # given only
    predicted[1, 1, 1] = True  # predicted only
    given[0, 2, 2] = predicted[1, 2, 2] = True  # both, different class
    given[1, 0, 2] = predicted[1, 0, 2] = True  # agree
    code = overlays.disagreement_map(given, predicted)
    assert code[0, 0] == 1 and code[1, 1] == 2 and code[2, 2] == 3 and code[0, 2] == 0


def test_contour_thumbnail_draws_class_colours():
    vis = make_visuals(1, h=80, w=100)
    colours = [overlays.class_colour(k) for k in range(2)]
    thumb = overlays.contour_thumbnail(vis.image, vis.given, vis.predicted, colours, max_side=160)
    assert thumb.shape == (80, 100, 3) and thumb.dtype == np.uint8
    target = np.array(overlays.hex_to_rgb(colours[0]))
    assert (np.abs(thumb.astype(int) - target).sum(axis=2) < 40).sum() > 20
    overlay = overlays.filled_overlay(vis.given, colours)
    assert overlay.shape == (80, 100, 4)
    assert set(np.unique(overlay[..., 3])) == {0, 110, 255}


def slice_report(n: int = 4, *, slices_per_case: int = 3) -> ReportInput:
    """``make_report`` as a volume run: rows 0 and 1 (suspect cases) have flagged slices."""
    rep = make_report(n, ids=["case_a", "case_b"])
    slices = {row.id: tuple(report.SliceView(key=f"{row.id}/{4 + 2 * j}", label=f"slice {4 + 2 * j}",
                                             quality_score=0.1 + 0.1 * ((j + 1) % slices_per_case),
                                             dice_vs_prediction=0.5)
                            for j in range(slices_per_case))
              for row in rep.rows[:2]}
    return ReportInput(**{**rep.__dict__, "slices": slices})


def slice_visuals(rep: ReportInput, calls: list[str]):
    """Rows as in ``visuals_for``; a slice key '<case>/<k>' gives a k-pixel-wide shift and a 20 + k px high picture."""
    rows = visuals_for(rep)

    def load(key: str) -> SampleVisuals:
        calls.append(key)
        if "/" not in key:
            return rows(key)
        k = int(key.rsplit("/", 1)[1])
        return make_visuals(k, h=20 + k, k=len(rep.classes))

    return load


def test_flagged_slices_of_cases_with_pictures_get_detail_pictures(tmp_path):
    rep = slice_report()
    calls: list[str] = []
    path = render_report(rep, slice_visuals(rep, calls), tmp_path, max_visual_samples=1)
    data = embedded_data(path.read_text(encoding="utf-8"))
    # only the first row has pictures, so only its slices are drawn (the report stays bounded)
    assert calls == ["case_a", "case_a/4", "case_a/6", "case_a/8"]
    first, second = data["rows"][0], data["rows"][1]
    assert "slices" not in second and "slices" not in data["rows"][2]
    assert [entry["label"] for entry in first["slices"]] == ["slice 4", "slice 6", "slice 8"]
    assert [entry["score"] for entry in first["slices"]] == pytest.approx([0.2, 0.3, 0.1])
    for k, entry in zip((4, 6, 8), first["slices"]):
        assert "thumb" not in entry  # detail pictures only
        for key in ("full", "given", "pred"):
            with Image.open(tmp_path / entry[key]) as picture:
                assert picture.size == (32, 20 + k)
        assert (entry["ow"], entry["oh"]) == (32, 20 + k)
    assert len(list((tmp_path / "assets" / "samples").iterdir())) == 5 + 3 * 3


def test_a_slice_whose_pictures_fail_carries_the_reason(tmp_path):
    rep = slice_report()
    calls: list[str] = []
    good = slice_visuals(rep, calls)

    def load(key: str) -> SampleVisuals:
        if key == "case_a/6":
            raise InputFileError("labelsTr/case_a.nii.gz: truncated")
        return good(key)

    data = embedded_data(render_report(rep, load, tmp_path).read_text(encoding="utf-8"))
    entries = data["rows"][0]["slices"]
    assert "truncated" in entries[1]["error"] and "full" not in entries[1]
    assert entries[0]["full"] and entries[2]["full"]


def test_slices_of_unknown_rows_raise_before_touching_disk(tmp_path):
    rep = slice_report()
    bad = ReportInput(**{**rep.__dict__, "slices": {**rep.slices, "nope": rep.slices["case_a"]}})
    with pytest.raises(MaskauditError, match="slices name rows that do not exist: nope"):
        render_report(bad, slice_visuals(bad, []), tmp_path / "out")
    assert not (tmp_path / "out").exists()
