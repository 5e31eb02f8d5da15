"""The ``embplan`` command: exit codes, one-line errors, nothing written on bad input, --json, end to end."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import embplan
from embplan import cli
from embplan.io.hdf5 import load_plan, save_plan
from tests.plan_factory import build_plan, demo_case_dict

runner = CliRunner()


def run(*args: str):
    return runner.invoke(cli.app, [str(a) for a in args])


def _one_line_error(result, *needles: str) -> None:
    assert result.exit_code == 1, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("embplan: error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert result.stdout == ""


@pytest.fixture(scope="module")
def plan_file(tmp_path_factory) -> tuple[Path, object]:
    plan = build_plan(shape=(16, 14, 12))
    path = tmp_path_factory.mktemp("cli") / "hand.h5"
    save_plan(plan, path)
    return path, plan


# ----------------------------------------------------------------------------------------------- basics
def test_version():
    from importlib import metadata

    r = run("--version")
    assert r.exit_code == 0
    lines = r.stdout.strip().splitlines()
    assert lines[0] == f"embplan {embplan.__version__}"
    # every numerical dependency with the version the interpreter actually imports
    for dist in ("numpy", "numba", "scipy", "pydantic", "h5py", "pydicom", "highdicom", "SimpleITK"):
        assert f"{dist} {metadata.version(dist)}" in lines


@pytest.mark.parametrize("args", [[], ["nope"], ["plan"], ["plan", "x.json"], ["kernel", "-o", "k.csv"],
                                  ["kernel", "--voxel-mm", "abc", "-o", "k.csv"], ["show", "--bogus", "p.h5"]])
def test_usage_errors_exit_2(args, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = run(*args)
    assert r.exit_code == 2, r.output
    assert list(tmp_path.iterdir()) == []


def test_python_dash_m(tmp_path):
    r = subprocess.run([sys.executable, "-m", "embplan", "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.splitlines()[0] == f"embplan {embplan.__version__}"


# ----------------------------------------------------------------------------------------------- validate
def test_validate_the_examples(shared_examples):
    for path in sorted(shared_examples.glob("*.json")):
        r = run("validate", path, "--json")
        assert r.exit_code == 0, (path, r.stderr)
        info = json.loads(r.stdout)
        assert info["valid"] is True and info["file"] == str(path)
        r = run("validate", path)
        assert r.exit_code == 0 and "valid" in r.stdout


def test_validate_invalid_case(tmp_path):
    data = demo_case_dict()
    data["patient"]["labs"]["bilirubin_mg_dl"] = -1
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    _one_line_error(run("validate", path), "patient.labs.bilirubin_mg_dl")


def test_validate_unreadable(tmp_path):
    _one_line_error(run("validate", tmp_path / "missing.json"), "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    _one_line_error(run("validate", bad), "bad.json")


# ----------------------------------------------------------------------------------------------- plan
def test_plan_invalid_case_writes_nothing(tmp_path):
    data = demo_case_dict()
    data["procedure"]["territory"] = {"scope": "lobar"}  # lobe missing
    case = tmp_path / "case.json"
    case.write_text(json.dumps(data))
    out = tmp_path / "out"
    out.mkdir()
    _one_line_error(run("plan", case, "-o", out / "plan.h5", "--report", out / "r.html"), "territory")
    assert list(out.iterdir()) == []


def test_plan_output_folder_missing(tmp_path):
    case = tmp_path / "case.json"
    case.write_text(json.dumps(demo_case_dict()))
    _one_line_error(run("plan", case, "-o", tmp_path / "no" / "plan.h5"), "does not exist")
    _one_line_error(run("plan", case, "-o", tmp_path / "p.h5", "--report", tmp_path / "no" / "r.html"),
                    "does not exist")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case.json"]


def test_plan_compartment_case(shared_examples, tmp_path):
    """A TARE case without images: plan, report and --json (fast: no voxel work)."""
    out, rep = tmp_path / "plan.h5", tmp_path / "report.html"
    r = run("plan", shared_examples / "tare_lobar_resin.json", "-o", out, "--report", rep, "--json")
    assert r.exit_code == 0, r.stderr
    summary = json.loads(r.stdout)
    plan = load_plan(out)
    assert summary["written"] == [str(out), str(rep)]
    assert summary["patient_id"] == plan.case.patient.id
    assert summary["dosimetry"]["activity_gbq"] == plan.dosimetry.activity_gbq
    assert [f["code"] for f in summary["flags"]] == [f.code for f in cli._flags_by_severity(plan)]
    assert rep.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    # the plain-text summary (stdout is not a terminal here)
    r = run("plan", shared_examples / "tare_lobar_resin.json", "-o", out)
    assert r.exit_code == 0
    assert "activity:" in r.stdout and f"wrote {out}" in r.stdout


def test_plan_non_tare_case(shared_examples, tmp_path):
    out = tmp_path / "plan.h5"
    r = run("plan", shared_examples / "deb_tace.json", "-o", out, "--json")
    assert r.exit_code == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["dosimetry"] is None
    assert summary["highest_severity"] == "contraindication"
    assert summary["flags"][0]["severity"] == "contraindication" and summary["flags"][0]["evidence"]


# ----------------------------------------------------------------------------------------------- show
def test_show_text(plan_file):
    path, plan = plan_file
    r = run("show", path)
    assert r.exit_code == 0, r.stderr
    out = r.stdout
    assert f"patient {plan.case.patient.id}" in out
    assert "TARE" in out and "3.42 GBq" in out
    assert "tumour" in out and "241.7" in out and "48.2" in out  # voxel and compartment doses
    assert "DVH tumors" in out and "D70 200.0 Gy" in out and "V100Gy 98.0 %" in out
    # flags by severity, each with its evidence
    pos = [out.index(f"[{s}]") for s in ("WARNING", "CAUTION", "INFO")]
    assert pos == sorted(pos)
    for flag in plan.flags:
        assert flag.message in out and f"evidence: {flag.evidence}" in out


def test_show_json(plan_file):
    path, plan = plan_file
    r = run("show", path, "--json")
    assert r.exit_code == 0
    s = json.loads(r.stdout)
    assert s["file"] == str(path)
    assert s["highest_severity"] == "warning"
    assert [f["severity"] for f in s["flags"]] == ["warning", "caution", "info"]
    assert s["dosimetry"]["voxel"]["tumor_gy"] == plan.dosimetry.voxel.tumor_gy
    assert s["dosimetry"]["dvh"]["tumors"]["d_gy"]["D70"] == 200.0


def test_show_rich_summary(plan_file, capsys):
    """The terminal rendering (rich tables) holds the same content."""
    _, plan = plan_file
    cli._summary_rich(plan, [Path("x.h5")])
    out = capsys.readouterr().out
    for needle in ("LUNG_DOSE_LIMIT", "evidence: EANM 2022", "Mean absorbed dose", "241.7", "wrote x.h5"):
        assert needle in out


def test_show_bad_files(plan_file, tmp_path):
    path, _ = plan_file
    _one_line_error(run("show", tmp_path / "none.h5"), "none.h5", "no such file")
    text = tmp_path / "t.h5"
    text.write_text("hello")
    _one_line_error(run("show", text), "not an HDF5 file")
    cut = tmp_path / "cut.h5"
    shutil.copyfile(path, cut)
    with open(cut, "r+b") as fh:
        fh.truncate(cut.stat().st_size // 2)
    _one_line_error(run("show", cut), "cut.h5")


# ----------------------------------------------------------------------------------------------- kernel
def _read_kernel_csv(path: Path) -> tuple[list[str], np.ndarray]:
    lines = path.read_text().splitlines()
    comments = [ln for ln in lines if ln.startswith("#")]
    rows = list(csv.DictReader(io.StringIO("\n".join(ln for ln in lines if not ln.startswith("#")))))
    assert list(rows[0]) == ["i", "j", "k", "S_mGy_per_MBq_s"]
    ijk = np.array([[int(r["i"]), int(r["j"]), int(r["k"])] for r in rows])
    half = ijk.max(axis=0)
    s = np.zeros(tuple(2 * half[::-1] + 1))
    for (i, j, k), r in zip(ijk, rows, strict=True):
        s[k + half[2], j + half[1], i + half[0]] = float(r["S_mGy_per_MBq_s"])
    assert len(rows) == s.size  # the full kernel, every voxel once
    return comments, s


def test_kernel_export_matches_the_kernel(tmp_path):
    from embplan.dosimetry.kernels import y90_voxel_kernel

    out = tmp_path / "kernel.csv"
    r = run("kernel", "--voxel-mm", "4.42", "-o", out, "--json")
    assert r.exit_code == 0, r.stderr
    info = json.loads(r.stdout)
    comments, s = _read_kernel_csv(out)
    k = y90_voxel_kernel(4.42, 1.04)
    assert np.array_equal(s, k.mgy_per_mbq_s)  # full precision, right axes
    assert info["shape"] == list(k.shape)
    assert any("Graves" in c for c in comments) and any("density_g_cm3: 1.04" in c for c in comments)
    assert s[tuple(n // 2 for n in s.shape)] == s.max()


@pytest.mark.reference
def test_kernel_export_against_lanconelli(shared_reference, tmp_path):
    """The exported 4.42 mm soft-tissue kernel agrees with the published GATE table (Lanconelli 2012) within the
    tolerances of the reference README: centre 2 %, face neighbours 3 %, edge and corner neighbours 5 %."""
    out = tmp_path / "kernel.csv"
    assert run("kernel", "--voxel-mm", "4.42", "--density", "1.04", "-o", out).exit_code == 0
    _, s = _read_kernel_csv(out)
    c = tuple(n // 2 for n in s.shape)
    ref = {}
    with open(shared_reference / "y90_vsv_lanconelli2012_softtissue.csv") as fh:
        for row in csv.DictReader(ln for ln in fh if not ln.startswith("#")):
            if float(row["voxel_mm"]) == 4.42:
                ref[(int(row["i"]), int(row["j"]), int(row["k"]))] = float(row["S_mGy_per_MBq_s"])
    for (i, j, k), tol in (((0, 0, 0), 0.02), ((1, 0, 0), 0.03), ((1, 1, 0), 0.05), ((1, 1, 1), 0.05)):
        # the CSV's signed offsets, read back in (z, y, x): the table is symmetric, check both signs
        for sign in (1, -1):
            got = s[c[0] + sign * k, c[1] + sign * j, c[2] + sign * i]
            assert got == pytest.approx(ref[(i, j, k)], rel=tol), (i, j, k)


def test_kernel_anisotropic_and_bad_values(tmp_path):
    out = tmp_path / "k.csv"
    r = run("kernel", "--voxel-mm", "5,4,4", "-o", out)
    assert r.exit_code == 0, r.stderr
    _, s = _read_kernel_csv(out)
    assert s.shape[0] <= s.shape[1] == s.shape[2]  # fewer voxels along the longer z spacing
    bad = tmp_path / "bad.csv"
    _one_line_error(run("kernel", "--voxel-mm", "4.42", "--density", "-1", "-o", bad), "density")
    _one_line_error(run("kernel", "--voxel-mm", "-2", "-o", bad), "voxel")
    assert not bad.exists()
    _one_line_error(run("kernel", "--voxel-mm", "4.42", "-o", tmp_path / "no" / "k.csv"), "does not exist")


# ----------------------------------------------------------------------------------------------- export-dicom
def test_export_dicom(plan_file, tmp_path):
    import pydicom

    path, plan = plan_file
    out = tmp_path / "dose.dcm"
    r = run("export-dicom", path, "-o", out, "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["method"] == "vsv_density"
    ds = pydicom.dcmread(out)
    dose = ds.pixel_array * float(ds.DoseGridScaling)
    ref = plan.voxel.arrays["dose_vsv_density_gy"]
    assert dose.shape == ref.shape
    assert np.allclose(dose, ref, rtol=0, atol=1e-6 * ref.max())
    assert ds.PatientID == plan.case.patient.id
    _one_line_error(run("export-dicom", path, "-o", tmp_path / "x.dcm", "--method", "nope"), "nope")
    bare = tmp_path / "bare.h5"
    save_plan(build_plan(with_voxels=False), bare)
    _one_line_error(run("export-dicom", bare, "-o", tmp_path / "y.dcm"), "no dose map")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bare.h5", "dose.dcm"]


# ----------------------------------------------------------------------------------------------- demo (end to end)
@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    result = run("demo", "--out", out, "--json")
    return out, result


def test_demo_end_to_end(demo_run):
    out, r = demo_run
    assert r.exit_code == 0, r.stderr
    summary = json.loads(r.stdout)
    plan_path, report_path = out / "plan.h5", out / "report.html"
    assert summary["written"] == [str(plan_path), str(report_path)]
    plan = load_plan(plan_path)
    assert plan.procedure.kind == "TARE" and plan.voxel is not None
    assert plan.dosimetry.source == "compartment" and plan.dosimetry.voxel is not None and plan.dosimetry.dvh
    assert summary["dosimetry"]["activity_gbq"] == plan.dosimetry.activity_gbq
    html = report_path.read_text(encoding="utf-8")
    assert html.count("data:image/png;base64,") == 1  # the DVH; the slices are the embedded viewer (issue 15)
    assert 'id="slices"' in html and 'id="dvh"' in html and 'id="viewer-data"' in html
    # the demo plan equals a fresh plan of the packaged case (deterministic), apart from its creation time
    fresh = embplan.plan(embplan.load_case(demo_case_dict()))
    assert fresh.model_copy(update={"provenance": plan.provenance}) == plan


def test_show_the_demo_plan(demo_run):
    out, _ = demo_run
    r = run("show", out / "plan.h5")
    assert r.exit_code == 0, r.stderr
    assert "demo-phantom" in r.stdout and "DVH tumors" in r.stdout
