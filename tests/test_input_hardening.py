"""Issue 12 reproducers outside DICOM: bad case input, plan-file writers killed, kernel time bombs, the command's
errors (no traceback, --json, all or nothing, output modes, path confinement)."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import embplan
from embplan import cli
from embplan.case import CASE_FILE_MAX_BYTES, load_case
from embplan.errors import CaseError, DosimetryError, EmbplanError
from embplan.plausibility import DEFAULT_BOUNDS, printable

runner = CliRunner()


def run(*args: str):
    return runner.invoke(cli.app, [str(a) for a in args])


@pytest.fixture
def resin(shared_examples: Path) -> dict:
    return json.loads((shared_examples / "tare_lobar_resin.json").read_text())


def _error(data: dict) -> str:
    with pytest.raises(CaseError) as info:
        load_case(data)
    return str(info.value)


# ---------------------------------------------------------------------------------------------- plausibility
def test_liver_in_litres_is_an_error_with_a_hint(resin):
    resin["dosimetry"].update(liver_volume_ml=1.65, perfused_volume_ml=1.1, tumor_volume_ml=0.48,
                              perfused_tumor_volume_ml=0.36)
    msg = _error(resin)
    assert "dosimetry.liver_volume_ml: implausible" in msg and "looks like litres (1650 mL?)" in msg


@pytest.mark.parametrize("path, value", [("patient.weight_kg", 1e-320), ("dosimetry.lung_mass_kg", 5e-324),
                                         ("dosimetry.tumor_to_normal_ratio", 1e-300), ("patient.height_cm", 1.68)])
def test_denormal_and_unit_slips(resin, path, value):
    group, name = path.split(".")
    resin[group][name] = value
    assert f"{path}: implausible" in _error(resin)


def test_grams_and_metres_hints(resin):
    resin["patient"]["height_cm"] = 1.68
    assert "looks like metres (168 cm?)" in _error(resin)
    resin["patient"]["height_cm"] = 168.0
    resin["patient"]["weight_kg"] = 64000.0
    assert "looks like grams (64 kg?)" in _error(resin)


def test_bounds_are_overridable(resin):
    resin["dosimetry"]["lung_mass_kg"] = 0.25
    with pytest.raises(CaseError):
        load_case(resin)
    bounds = DEFAULT_BOUNDS.model_copy(update={"lung_mass_kg": DEFAULT_BOUNDS.lung_mass_kg.__class__(
        0.2, 5.0, "kg", "site: paediatric lungs")})
    assert load_case(resin, plausibility=bounds).dosimetry.lung_mass_kg == 0.25


def test_every_bound_has_a_rationale():
    for name, bound in DEFAULT_BOUNDS.items():
        assert len(bound.rationale) > 40 and bound.unit, name


def test_doxorubicin_tenfold_is_an_error(shared_examples):
    data = json.loads((shared_examples / "tace_after_whipple.json").read_text())
    data["procedure"]["drug"]["dose_mg"] = 500.0
    assert "procedure.drug.dose_mg: implausible: expected <= 300 mg" in _error(data)
    data["procedure"]["drug"]["dose_mg"] = 75.0  # above the standard: planned, with a protocol deviation
    plan = embplan.plan(load_case(data))
    assert any(f.code == "PROTOCOL_DEVIATION" for f in plan.flags)


def test_zero_perfused_tumour_names_the_case_field(resin, tmp_path):
    resin["dosimetry"]["perfused_tumor_volume_ml"] = 0
    assert "dosimetry.perfused_tumor_volume_ml: must be > 0 for the partition method" in _error(resin)
    resin["dosimetry"].update(perfused_volume_ml=400.0, perfused_tumor_volume_ml=400.0)
    assert "dosimetry.perfused_tumor_volume_ml: must be < perfused_volume_ml" in _error(resin)
    resin["dosimetry"].update(perfused_volume_ml=1100.0, perfused_tumor_volume_ml=0)
    path = tmp_path / "c.json"
    path.write_text(json.dumps(resin))
    result = run("validate", path)  # validate finds it, not only plan
    assert result.exit_code == 1 and "dosimetry.perfused_tumor_volume_ml" in result.stderr


# ---------------------------------------------------------------------------------------------- the loader
def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "case.json"
    os.mkfifo(fifo)
    with pytest.raises(CaseError, match="not a regular file"):
        load_case(fifo)


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null", "/dev/stdin"])
def test_devices_are_refused(device):
    if not os.path.exists(device):
        pytest.skip(f"{device} missing")
    with pytest.raises(CaseError, match="not a regular file"):
        load_case(device)


def test_size_cap(tmp_path):
    path = tmp_path / "big.json"
    path.write_bytes(b" " * (CASE_FILE_MAX_BYTES + 1))
    with pytest.raises(CaseError, match="larger than a case file"):
        load_case(path)
    path.write_bytes(b"{}" + b" " * 2000)
    with pytest.raises(CaseError, match="larger than a case file"):
        load_case(path, max_bytes=1000)


def test_huge_integer_names_the_field(tmp_path, resin):
    text = json.dumps(resin).replace('"age_years": 52', '"age_years": ' + "9" * 5000)
    path = tmp_path / "c.json"
    path.write_text(text)
    with pytest.raises(CaseError, match=r"patient.age_years: a number of 5000 digits"):
        load_case(path)


@pytest.mark.parametrize("depth", [100, 600, 999, 5000, 200_000])
def test_deep_nesting(tmp_path, depth):
    path = tmp_path / "c.json"
    path.write_text('{"schema_version": 1, "patient": ' + "[" * depth + "]" * depth + "}")
    with pytest.raises(CaseError, match="nested"):
        load_case(path)


def test_deep_nesting_in_a_mapping(resin):
    node: list = []
    deep = node
    for _ in range(3000):
        node.append([])
        node = node[0]
    resin["patient"]["prior_treatments"] = deep
    with pytest.raises(CaseError, match="nested deeper"):
        load_case(resin)


@pytest.mark.parametrize("char", ["\x1b", "\r", "\n", "\x00", "\x07", "\x85", "\x9b", "\u202e", "\u2066", "\u2028",
                                  "\x7f", "\t"])
@pytest.mark.parametrize("where", ["patient.id", "patient.prior_treatments.0.note"])
def test_control_characters_are_refused(resin, char, where):
    if where == "patient.id":
        resin["patient"]["id"] = f"net{char}0001"
    else:
        resin["patient"]["prior_treatments"][0]["note"] = f"ok{char}embplan: error: forged"
    msg = _error(resin)
    assert f"{where}: must not contain control or bidirectional characters (U+{ord(char):04X}" in msg


def test_control_characters_in_keys(resin):
    resin["patient"]["x\x1b[2J"] = 1
    assert "must not contain control" in _error(resin)


def test_printable_escapes():
    assert printable("a\x1b[31mb\nc\u202e") == "a\\x1b[31mb\\x0ac\\u202e"
    assert printable("Müller ≥ 1") == "Müller ≥ 1"


# ---------------------------------------------------------------------------------------------- kernel
@pytest.mark.parametrize("voxel, density, what", [(1e6, 1.04, "voxel_mm"), (60.0, 1.04, "voxel_mm"),
                                                  (4.42, 1e9, "density_g_cm3")])
def test_kernel_inputs_are_bounded(voxel, density, what):
    from embplan.dosimetry.kernels import y90_voxel_kernel

    start = time.monotonic()
    with pytest.raises(DosimetryError, match=what):
        y90_voxel_kernel(voxel, density)
    assert time.monotonic() - start < 5  # refused up front (was minutes)


def test_kernel_command_refuses_a_huge_voxel(tmp_path):
    result = run("kernel", "--voxel-mm", "1e6", "-o", tmp_path / "k.csv")
    assert result.exit_code == 1 and "voxel_mm: at most 50 mm" in result.stderr
    assert not (tmp_path / "k.csv").exists()


# ---------------------------------------------------------------------------------------------- the command
def test_json_error_object(tmp_path, resin):
    resin["patient"]["weight_kg"] = -1
    resin["patient"]["age_years"] = -5
    path = tmp_path / "c.json"
    path.write_text(json.dumps(resin))
    result = run("validate", path, "--json")
    assert result.exit_code == 1
    obj = json.loads(result.stdout)
    assert obj["ok"] is False and obj["type"] == "CaseError"
    assert {f["path"] for f in obj["fields"]} == {"patient.weight_kg", "patient.age_years"}
    assert len(obj["problems"]) == 2
    text = run("validate", path)
    lines = text.stderr.splitlines()
    assert len(lines) == 3 and all(ln.startswith("embplan: error: ") for ln in lines)  # header + one per problem


def test_missing_and_unwritable_outputs_are_one_line(tmp_path, shared_examples):
    case = shared_examples / "tare_lobar_resin.json"
    for out in ("/proc/foo", str(tmp_path / "no" / "such")):
        result = run("demo", "--out", out)
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert len(result.stderr.splitlines()) == 1 and out in result.stderr
    result = run("plan", case, "-o", tmp_path / "p.h5", "--report", "/proc/r.html")
    assert result.exit_code == 1 and "/proc/r.html" in result.stderr
    assert not (tmp_path / "p.h5").exists()  # all or nothing


def test_plan_and_report_all_or_nothing(tmp_path, shared_examples, monkeypatch):
    case = shared_examples / "tare_lobar_resin.json"
    plan_path, report_path = tmp_path / "p.h5", tmp_path / "r.html"
    real_replace = os.replace

    def fail_on_report(src, dst, *a, **k):
        if str(dst).endswith("r.html"):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", fail_on_report)
    result = run("plan", case, "-o", plan_path, "--report", report_path)
    monkeypatch.undo()
    assert result.exit_code == 1 and "No space left on device" in result.stderr and "r.html" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # neither file, no temporary file


def test_earlier_files_come_back_when_a_later_commit_fails(tmp_path, shared_examples, monkeypatch):
    case = shared_examples / "tare_lobar_resin.json"
    plan_path, report_path = tmp_path / "p.h5", tmp_path / "r.html"
    plan_path.write_bytes(b"old plan")
    report_path.write_bytes(b"old report")
    real_replace = os.replace
    calls = []

    def fail_second(src, dst, *a, **k):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(5, "Input/output error")
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", fail_second)
    result = run("plan", case, "-o", plan_path, "--report", report_path)
    monkeypatch.undo()
    assert result.exit_code == 1
    assert plan_path.read_bytes() == b"old plan" and report_path.read_bytes() == b"old report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.h5", "r.html"]


def test_internal_errors_print_no_traceback(tmp_path, shared_examples, monkeypatch):
    def boom(case):
        raise ZeroDivisionError("float division by zero")

    monkeypatch.setattr(cli, "_make_plan", boom)
    result = run("plan", shared_examples / "tare_lobar_resin.json", "-o", tmp_path / "p.h5")
    assert result.exit_code == 1 and "internal error (ZeroDivisionError" in result.stderr
    assert "Traceback" not in result.output and not (tmp_path / "p.h5").exists()


def test_outputs_get_the_umask_mode(tmp_path, shared_examples):
    old = os.umask(0o022)
    try:
        out = tmp_path / "demo"
        assert run("demo", "--out", out).exit_code == 0
        assert run("export-dicom", out / "plan.h5", "-o", out / "dose.dcm").exit_code == 0
    finally:
        os.umask(old)
    for name in ("plan.h5", "report.html", "dose.dcm"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o644, name
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_export_dicom_unwritable_is_one_line(tmp_path):
    out = tmp_path / "demo"
    assert run("demo", "--out", out).exit_code == 0
    result = run("export-dicom", out / "plan.h5", "-o", "/proc/dose.dcm")
    assert result.exit_code == 1 and "/proc/dose.dcm" in result.stderr and "Traceback" not in result.output


def test_printed_ids_cannot_forge_lines(tmp_path):
    from tests.plan_factory import build_plan

    plan = build_plan(patient_id="ok")
    text = cli._summary_text(plan.model_copy(update={"case": plan.case.model_copy(
        update={"patient": plan.case.patient.model_copy(update={"id": "x\nembplan: error: forged\x1b[2J"})})}), [])
    assert text.splitlines()[0] == "embplan plan for patient x\\x0aembplan: error: forged\\x1b[2J"


# ---------------------------------------------------------------------------------------------- case paths
def _dicom_case(tmp_path: Path, ct: str) -> Path:
    data = json.loads((Path(embplan.__file__).parent / "data" / "tare_dicom_template.json").read_text())
    dicom = data["dosimetry"]["images"]["dicom"]
    dicom.update(ct=ct, spect="spect/nm.dcm", rtstruct="rtstruct.dcm",
                 structures={"liver": ["Liver"], "lungs": ["Lungs"], "perfused": ["Liver"]})
    folder = tmp_path / "case"
    folder.mkdir(exist_ok=True)
    (folder / "spect").mkdir(exist_ok=True)
    (folder / "spect" / "nm.dcm").write_bytes(b"x")
    (folder / "rtstruct.dcm").write_bytes(b"x")
    path = folder / "case.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("ct", ["../outside", "OUTSIDE_ABS", "link"])
def test_paths_outside_the_case_folder_need_an_option(tmp_path, ct, monkeypatch):
    outside = tmp_path / "outside"
    outside.mkdir()
    if ct == "OUTSIDE_ABS":
        ct = str(outside)
    case = _dicom_case(tmp_path, ct)
    if ct == "link":
        (case.parent / "link").symlink_to(outside)
    result = run("validate", case)
    assert result.exit_code == 1 and "dosimetry.images.dicom.ct" in result.stderr
    assert "outside the case's folder" in result.stderr
    assert run("validate", case, "--allow-outside-paths").exit_code == 0
    monkeypatch.setenv("EMBPLAN_DATA_ROOT", str(outside))
    assert run("validate", case).exit_code == 0


def test_inside_paths_are_printed_relative(tmp_path):
    case = _dicom_case(tmp_path, "ct")
    (case.parent / "ct").mkdir()
    result = run("validate", case, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["dicom_inputs"] == {"ct": "ct", "spect": "spect/nm.dcm",
                                                         "rtstruct": "rtstruct.dcm"}


# ---------------------------------------------------------------------------------------------- killed writers
def test_kill_9_leaves_no_temporary_file(tmp_path):
    """A writer killed with SIGKILL while it writes plans leaves no visible temporary file (O_TMPFILE), and
    whatever a kill between link and rename leaves is removed by the next write."""
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
        from tests.plan_factory import build_plan
        from embplan.io.hdf5 import save_plan
        plan = build_plan(shape=(40, 40, 40))
        print("ready", flush=True)
        while True:
            save_plan(plan, {str(tmp_path / 'plan.h5')!r})
    """)
    for i in range(8):
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(0.2 + 0.13 * i)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "plan.h5"]
    from embplan.io import remove_stale_temporaries

    remove_stale_temporaries(tmp_path)
    assert [p.name for p in tmp_path.iterdir() if p.name != "plan.h5"] == []
    assert len(leftovers) <= 1  # at most a kill inside the link-rename window, cleaned above
    if (tmp_path / "plan.h5").exists():
        embplan.load_plan(tmp_path / "plan.h5")  # whatever is there is a whole plan


def test_errors_escape_only_as_embplan_errors():
    assert issubclass(CaseError, EmbplanError)


@pytest.mark.parametrize("dose_mg, flagged", [(150.0, False), (151.0, True), (300.0, True)])
def test_doxorubicin_session_warning(shared_examples, dose_mg, flagged):
    from embplan.risk import Severity

    data = json.loads((shared_examples / "tace_after_whipple.json").read_text())
    data["procedure"]["drug"]["dose_mg"] = dose_mg
    flags = [f for f in embplan.plan(load_case(data)).flags if f.code == "DOXORUBICIN_SESSION_HIGH"]
    assert bool(flags) is flagged
    if flags:
        assert flags[0].severity == Severity.WARNING and flags[0].context["doxorubicin_mg"] == dose_mg


def test_plan_file_that_is_a_fifo_is_refused(tmp_path):
    fifo = tmp_path / "plan.h5"
    os.mkfifo(fifo)
    with pytest.raises(embplan.errors.PlanFileError, match="not a regular file"):
        embplan.load_plan(fifo)
    result = run("show", fifo)
    assert result.exit_code == 1 and "not a regular file" in result.stderr


def test_read_only_output_folder_is_one_line(tmp_path, shared_examples, monkeypatch):
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **k: False if Path(p) == tmp_path else real_access(p, mode))
    result = run("plan", shared_examples / "tare_lobar_resin.json", "-o", tmp_path / "p.h5")
    assert result.exit_code == 1 and "is not writable" in result.stderr and len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "p.h5").exists()


def test_named_fallback_and_stale_clean_up(tmp_path, monkeypatch):
    """Without O_TMPFILE the temporary file is named with the writer's pid; one left by a dead writer is removed
    by the next write in that folder, one of a live process is kept."""
    import embplan.io as eio

    monkeypatch.setattr(eio, "_unnamed_temporary", lambda folder: None)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = tmp_path / f".r.html.{dead}.abc123.tmp"
    live = tmp_path / f".r.html.{os.getppid()}.def456.tmp"
    stale.write_text("left by a killed writer")
    live.write_text("another writer, still running")
    eio.atomic_write_text(tmp_path / "r.html", "<p>ok</p>")
    assert (tmp_path / "r.html").read_text() == "<p>ok</p>"
    assert not stale.exists() and live.exists()
    assert stat.S_IMODE((tmp_path / "r.html").stat().st_mode) == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_stored_plan_loads_when_its_case_is_implausible_today(resin, tmp_path):
    """Plausibility bounds apply to new input: a plan file written before a bound existed (here: a case planned
    under relaxed bounds) still loads, and its case is the one that was planned."""
    resin["dosimetry"]["lung_mass_kg"] = 0.25
    relaxed = DEFAULT_BOUNDS.model_copy(update={"lung_mass_kg": DEFAULT_BOUNDS.lung_mass_kg.__class__(
        0.1, 5.0, "kg", "relaxed for the test")})
    plan = embplan.plan(load_case(resin, plausibility=relaxed))
    embplan.save_plan(plan, tmp_path / "p.h5")
    assert embplan.load_plan(tmp_path / "p.h5") == plan
