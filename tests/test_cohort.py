"""embplan batch on Dask: a generated cohort with a broken case and a duplicate, run twice (the second run skips
everything), on a 2-worker LocalCluster (threads: ``processes=False``, which starts in about a second here; the CLI
default uses processes) and through a scheduler address; the table against single-case plans; an interrupted
batch resumes; the missing extra named."""

from __future__ import annotations

import builtins
import json
import math
import shutil
import time
from pathlib import Path

import pytest

pytest.importorskip("distributed")
pd = pytest.importorskip("pandas")

from typer.testing import CliRunner  # noqa: E402

from embplan import cli  # noqa: E402
from embplan.case import load_case  # noqa: E402
from embplan.cohort import CohortError, discover_cases, run_batch  # noqa: E402
from embplan.planner import plan as make_plan  # noqa: E402
from tests.plan_factory import demo_case_dict  # noqa: E402

#: columns that depend on when and where a case ran, not on the case
RUN_COLUMNS = ("worker", "pid", "planned_utc", "action")


def _cohort(folder: Path, n: int = 4) -> dict[str, Path]:
    """n phantom TARE cases (seeded variations of the demo), one broken case, one duplicate of the first."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for i in range(n):
        d = demo_case_dict()
        d["patient"]["id"] = f"P{i:03d}"
        d["patient"]["weight_kg"] = 60.0 + 5 * i
        d["dosimetry"]["images"]["phantom"]["seed"] = 3 + i
        p = folder / f"case_{i:02d}.json"
        p.write_text(json.dumps(d, indent=1))
        paths[p.stem] = p
    bad = demo_case_dict()
    bad["patient"]["id"] = "BROKEN"
    bad["patient"]["labs"]["bilirubin_mg_dl"] = -1.0
    (folder / "case_broken.json").write_text(json.dumps(bad))
    shutil.copy(paths["case_00"], folder / "case_zz_duplicate.json")
    return paths


def _table(out: Path) -> pd.DataFrame:
    a = pd.read_csv(out / "cohort.csv")
    b = pd.read_parquet(out / "cohort.parquet")
    assert list(a.columns) == list(b.columns) and len(a) == len(b)
    return b


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=":0") as lc:
        yield lc


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cases")
    return folder, _cohort(folder)


@pytest.fixture(scope="module")
def first_run(cohort, cluster, tmp_path_factory):
    folder, _ = cohort
    out = tmp_path_factory.mktemp("out") / "batch"
    res = run_batch(folder, out, scheduler=cluster.scheduler_address)
    return out, res


def test_batch_plans_every_case_with_its_row(cohort, first_run):
    folder, paths = cohort
    out, res = first_run
    assert res.planned == 5 and res.skipped == 0 and res.duplicates == 1 and res.errors == 1
    df = _table(out).set_index("case_id")
    assert list(df.index) == ["case_00", "case_01", "case_02", "case_03", "case_broken", "case_zz_duplicate"]
    bad = df.loc["case_broken"]
    assert bad["status"] == "error" and "bilirubin_mg_dl" in bad["error"]
    assert (df.drop(index="case_broken")["status"] == "ok").all()
    for cid in paths:
        assert (out / "plans" / f"{cid}.h5").is_file() and (out / "state" / f"{cid}.json").is_file()
    assert not (out / "plans" / "case_broken.h5").exists()
    dup = df.loc["case_zz_duplicate"]
    assert dup["action"] == "duplicate" and dup["duplicate_of"] == "case_00"
    assert dup["activity_gbq"] == df.loc["case_00", "activity_gbq"]
    assert (df["embplan_version"] == cli.__version__).all()
    for col in ("patient_id", "procedure", "activity_gbq", "tumor_dose_gy", "lung_dose_gy", "normal_liver_dose_gy",
                "liver_mean_gy", "tumors_D95_gy", "flags_warning", "highest_severity", "time_plan_s"):
        assert col in df.columns, col


def test_table_equals_single_case_plans(cohort, first_run):
    _, paths = cohort
    out, _ = first_run
    df = _table(out).set_index("case_id")
    for cid, path in paths.items():
        p = make_plan(load_case(path))
        row = df.loc[cid]
        d = p.dosimetry
        assert row["patient_id"] == p.case.patient.id
        assert row["procedure"] == p.procedure.kind
        for col, value in (("activity_gbq", d.activity_gbq), ("tumor_dose_gy", d.tumor_dose_gy),
                           ("normal_liver_dose_gy", d.normal_liver_dose_gy), ("lung_dose_gy", d.lung_dose_gy),
                           ("perfused_dose_gy", d.perfused_dose_gy)):
            assert math.isclose(row[col], value, rel_tol=1e-9, abs_tol=1e-12), (cid, col)
        for name, rec in d.dvh.items():
            assert math.isclose(row[f"{name}_mean_gy"], rec.mean_gy, rel_tol=1e-9, abs_tol=1e-12), (cid, name)
            assert math.isclose(row[f"{name}_D95_gy"], rec.d_gy["D95"], rel_tol=1e-9, abs_tol=1e-12), (cid, name)
        warnings = sorted(f.code for f in p.flags if f.severity.value == "warning")
        assert (row["flags_warning"] if isinstance(row["flags_warning"], str) else "") == ";".join(warnings)


def test_second_run_skips_everything(cohort, first_run, cluster):
    folder, _ = cohort
    out, first = first_run
    before = {p.name: p.stat().st_mtime_ns for p in (out / "plans").iterdir()}
    res = run_batch(folder, out, scheduler=cluster.scheduler_address)
    assert res.planned == 0 and res.skipped == 5 and res.duplicates == 1 and res.errors == 1
    assert {p.name: p.stat().st_mtime_ns for p in (out / "plans").iterdir()} == before  # nothing rewritten
    df = _table(out)
    assert set(df.loc[df["case_id"] != "case_zz_duplicate", "action"]) == {"skipped"}
    a = pd.DataFrame(first.rows).drop(columns=list(RUN_COLUMNS), errors="ignore")
    b = pd.DataFrame(res.rows).drop(columns=list(RUN_COLUMNS), errors="ignore")[a.columns]
    pd.testing.assert_frame_equal(a, b)
    # a changed case is planned again; the others stay skipped
    p = folder / "case_01.json"
    text = p.read_text()
    d = json.loads(text)
    d["patient"]["weight_kg"] += 1
    try:
        p.write_text(json.dumps(d))
        res = run_batch(folder, out, scheduler=cluster.scheduler_address)
        assert res.planned == 1 and res.skipped == 4
    finally:
        p.write_text(text)


def test_default_local_cluster_gives_the_same_table(cohort, first_run, tmp_path):
    folder, _ = cohort
    out, first = first_run
    res = run_batch(folder, tmp_path / "b", workers=2, processes=False)
    a = pd.DataFrame(first.rows).drop(columns=[*RUN_COLUMNS, "plan_file"], errors="ignore")
    b = pd.DataFrame(res.rows).drop(columns=[*RUN_COLUMNS, "plan_file"], errors="ignore")
    timing = [c for c in a.columns if c.startswith(("time_", "stage_"))]
    pd.testing.assert_frame_equal(a.drop(columns=timing), b[a.columns].drop(columns=timing))


def test_interrupted_batch_resumes(tmp_path, cluster):
    folder = tmp_path / "cases"
    _cohort(folder, n=3)
    out = tmp_path / "out"

    def stop(row):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_batch(folder, out, scheduler=cluster.scheduler_address, on_row=stop)
    assert not (out / "cohort.csv").exists()  # the table is written at the end only
    # tasks already running on the cluster's workers finish (and write their state) after the client is gone
    deadline = time.monotonic() + 60
    while cluster.scheduler.tasks and time.monotonic() < deadline:
        time.sleep(0.1)
    done_before = {p.stem for p in (out / "state").glob("*.json")}
    assert done_before  # at least the case that finished first
    res = run_batch(folder, out, scheduler=cluster.scheduler_address)
    assert res.skipped == len(done_before) and res.planned == 4 - len(done_before)
    assert len(_table(out)) == 5 and res.errors == 1


def test_csv_case_list_and_cli(tmp_path, cohort, cluster):
    folder, paths = cohort
    listing = tmp_path / "cohort.csv"
    rel = [Path("..") / folder.name / p.name for p in paths.values()]
    listing.write_text("id,case\n" + "".join(f"c{i},{shutil.os.path.relpath(p, tmp_path)}\n"
                                              for i, p in enumerate(paths.values())))
    entries = discover_cases(listing)
    assert [e.case_id for e in entries] == [f"c{i}" for i in range(len(rel))]
    assert all(e.path.is_file() for e in entries)
    r = CliRunner().invoke(cli.app, ["batch", str(listing), "-o", str(tmp_path / "o"), "--scheduler",
                                     cluster.scheduler_address, "--json"])
    assert r.exit_code == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["planned"] == len(paths) and info["errors"] == 0
    assert Path(info["table"][1]).is_file()


@pytest.mark.parametrize("text, needle", [("", "empty"), ("name\nx.json\n", "'case'"), ("case\n\n", "empty")])
def test_bad_case_lists(tmp_path, text, needle):
    p = tmp_path / "list.csv"
    p.write_text(text)
    with pytest.raises(CohortError, match=needle):
        discover_cases(p)
    with pytest.raises(CohortError, match="no such"):
        discover_cases(tmp_path / "missing")


def test_missing_extra_is_named(monkeypatch, tmp_path):
    real = builtins.__import__

    def fake(name, *a, **k):
        if name.split(".")[0] == "dask":
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(CohortError, match=r"embplan\[cohort\].*|cohort.*dask"):
        run_batch(tmp_path, tmp_path / "o")
    r = CliRunner().invoke(cli.app, ["batch", str(tmp_path), "-o", str(tmp_path / "o")])
    assert r.exit_code == 1 and "pip install 'embplan[cohort]'" in r.stderr
