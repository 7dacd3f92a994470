"""The wheel ships the report templates, and an installed maskaudit renders a report outside the source tree."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = sorted(p.name for p in (ROOT / "templates").iterdir() if p.is_file())


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "-o", str(out)],
                   cwd=ROOT, check=True, capture_output=True, text=True)
    wheels = list(out.glob("maskaudit-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_contains_the_templates(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert TEMPLATES, "templates/ is empty"
    for name in TEMPLATES:
        assert f"maskaudit/templates/{name}" in names
    assert "maskaudit/report.py" in names and "maskaudit/overlays.py" in names


def test_installed_wheel_renders_a_report(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    python = venv / "bin" / "python"
    # The dependencies (numpy, pillow, scikit-image, jinja2, ...) come from the environment running the
    # tests, appended after the new venv's own site-packages, so the installed maskaudit wins.
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "zz_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
                   check=True, capture_output=True, text=True)
    snippet = textwrap.dedent("""
        import numpy as np, pathlib, maskaudit
        from maskaudit.report import ReportInput, SampleRow, SampleVisuals, render_report
        here = pathlib.Path(maskaudit.__file__).resolve()
        assert "site-packages" in str(here) and str(here).startswith(str(pathlib.Path(%r).resolve())), here
        img = np.zeros((20, 30, 3), np.uint8)
        m = np.zeros((1, 20, 30), bool); m[0, 5:15, 5:20] = True
        row = SampleRow(rank=1, id="a", image="images/a.png", mask="masks/a.png", quality_score=0.2,
                        suspect=True, issue_type="missing", issue_classes=("lesion",), qam_score=0.3,
                        dice_vs_prediction=0.4, dice_per_class=(0.4,), cluster=0, outlier=False)
        rep = ReportInput(dataset_root="/data", layout="A", classes=("lesion",), num_samples=1, skipped=(),
                          settings={}, stage_seconds={"train": 1.0}, threshold=0.5, rows=(row,),
                          coords=np.zeros((1, 2)), version=maskaudit.__version__)
        out = render_report(rep, lambda _id: SampleVisuals(img, m, np.roll(m, 3, axis=2)), pathlib.Path("out"))
        assert out.is_file() and (out.parent / "assets" / "report.js").is_file()
        print(out.resolve())
    """) % str(venv)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([str(python), "-c", snippet], cwd=tmp_path, env=env, check=True,
                            capture_output=True, text=True)
    assert Path(result.stdout.strip()) == (tmp_path / "out" / "report.html").resolve()
