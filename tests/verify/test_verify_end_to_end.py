"""The README's three-command example on a small grid: plan -> phantom-post -> verify finds the deviations
(one tumour under-perfused, gut deposition), recovers the transform, and writes the archive, report and the
prior-treatment record that the next plan counts."""

from __future__ import annotations

import json
from datetime import datetime

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

import embplan
from embplan import cli
from embplan.errors import PlanFileError
from embplan.io.verification import load_verification
from embplan.nuclides import Y90_HALF_LIFE_H
from embplan.protocols.history import PriorTreatment
from embplan.risk import dose_limits
from tests.verify.conftest import small_case_dict

runner = CliRunner()
#: Transform recovery tolerance: target registration error over the liver below a quarter of the 8 mm voxel.
TRE_TOLERANCE_MM = 2.0


def run(*args):
    return runner.invoke(cli.app, [str(a) for a in args])


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    root = tmp_path_factory.mktemp("example")
    case = root / "case.json"
    case.write_text(json.dumps(small_case_dict()))
    r = run("plan", case, "-o", root / "plan.h5")
    assert r.exit_code == 0, r.stderr
    r = run("phantom-post", root / "plan.h5", "--out", root / "post", "--json")
    assert r.exit_code == 0, r.stderr
    r = run("verify", root / "plan.h5", root / "post" / "post.json", "-o", root / "v.h5", "--report",
            root / "v.html", "--prior-out", root / "prior.json", "--json")
    assert r.exit_code == 0, r.stderr
    return root, json.loads(r.stdout)


def test_transform_recovered(example):
    root, _ = example
    truth = json.loads((root / "post" / "truth.json").read_text())
    f = load_verification(root / "v.h5")
    t = truth["transform"]
    from embplan.imaging.registration import RigidTransform

    true_t = RigidTransform(tuple(v for row in t["rotation_matrix"] for v in row), tuple(t["translation_mm"]),
                            tuple(t["center_mm"]))
    liver_pts = f.grid.index_to_patient_mm(np.argwhere(f.arrays["mask_liver"]))
    assert true_t.max_displacement_error_mm(f.transform, liver_pts) < TRE_TOLERANCE_MM
    assert abs(f.transform.rotation_deg - true_t.rotation_deg) < 0.5
    q = f.result.registration["quality"]
    assert q["liver_msd_after_mm"] < 2.0 < q["liver_msd_before_mm"]
    assert q["mattes_mi_after"] < q["mattes_mi_before"]


def test_deviations_found(example):
    root, summary = example
    truth = json.loads((root / "post" / "truth.json").read_text())
    rows = {s["structure"]: s for s in summary["structures"]}
    target = truth["under_perfused_tumor"]
    perfused_tumours = [k for k, s in rows.items() if k.startswith("tumor_") and s["planned_mean_gy"] > 0]
    worst = min(perfused_tumours, key=lambda k: rows[k]["difference_percent"])
    assert worst == target and rows[target]["difference_percent"] < -40.0
    # the delivered activity: the plan's vial decayed to the administration x (1 - 5 % residual)
    assert summary["delivered_activity_gbq"] == pytest.approx(truth["delivered_activity_gbq"], rel=1e-9)
    post = json.loads((root / "post" / "post.json").read_text())
    hours = (datetime.fromisoformat(post["administration_datetime"])
             - datetime.fromisoformat(post["delivery"]["vial_reference_datetime"])).total_seconds() / 3600.0
    expected = post["delivery"]["vial_activity_gbq"] * 2.0 ** (-hours / Y90_HALF_LIFE_H) * 0.95
    assert summary["delivered_activity_gbq"] == pytest.approx(expected, rel=1e-6)
    # the gut deposit: located and flagged
    deposits = summary["deposits"]
    assert deposits and deposits[0]["flagged"]
    gut = np.asarray(truth["gut_centre_plan_frame_mm"])
    assert np.linalg.norm(np.asarray(deposits[0]["centroid_plan_mm"]) - gut) < 8.0
    assert np.linalg.norm(np.asarray(deposits[0]["centroid_post_mm"]) - truth["gut_centre_post_frame_mm"]) < 8.0
    assert deposits[0]["fraction_of_delivered"] == pytest.approx(truth["gut_fraction"], rel=0.25)
    codes = {f["code"] for f in summary["flags"]}
    assert "EXTRAHEPATIC_DEPOSITION" in codes
    assert "TUMOR_DOSE_LOW" in codes  # the perfused tumours fall under the glass 205 Gy target as delivered
    gamma = summary["gamma"]
    assert gamma is not None and 0.0 < gamma["pass_rate"] < 1.0 and gamma["evaluated_voxels"] > 0
    notes = load_verification(root / "v.h5").result.notes
    assert any("below the 205 Gy target" in n and target in n for n in notes)


def test_archive_report_and_prior(example):
    root, summary = example
    f = load_verification(root / "v.h5")
    assert f.result.patient_id == "demo-phantom"
    np.testing.assert_allclose(f.arrays["difference_gy"], f.arrays["delivered_dose_gy"] - f.arrays["planned_dose_gy"])
    with h5py.File(root / "v.h5") as h5:  # plain h5py
        assert h5.attrs["format"] == "embplan.verification"
        assert h5["dose/delivered"].attrs["units"] == "Gy"
        assert "liver_msd_after_mm" in h5["registration"].attrs
        assert h5["structures/tumor_1"].attrs["planned_mean_gy"] > 0
    html = (root / "v.html").read_text()
    assert html.count("data:image/png;base64,") == 3  # DVHs, difference map, registration check
    for needle in ("Planned vs delivered per structure", "Dose-volume histograms", "Difference map",
                   "EXTRAHEPATIC_DEPOSITION", "liver mean surface distance", "Mattes MI"):
        assert needle in html
    prior = PriorTreatment.model_validate(json.loads((root / "prior.json").read_text()))
    assert prior.kind == "TARE" and prior.activity_gbq == pytest.approx(summary["delivered_activity_gbq"], abs=1e-6)
    rows = {s["structure"]: s for s in summary["structures"]}
    assert prior.lung_dose_gy == pytest.approx(rows["lungs"]["delivered_mean_gy"], abs=1e-4)
    assert prior.normal_liver_dose_gy == pytest.approx(rows["normal_liver"]["delivered_mean_gy"], abs=1e-4)
    # the next case counts it toward the cumulative lung dose
    nxt = small_case_dict()
    nxt["procedure"]["date"] = "2027-03-01"
    nxt["procedure"]["territory"] = {"scope": "lobar", "lobe": "left"}
    nxt["patient"]["prior_treatments"].append(json.loads((root / "prior.json").read_text()))
    case = embplan.load_case(nxt)
    limits = dose_limits(case)
    assert limits.prior_lung_dose_gy == pytest.approx(prior.lung_dose_gy)
    assert limits.lung_remaining_gy == pytest.approx(50.0 - prior.lung_dose_gy)


def test_altered_archive_refused(example, tmp_path):
    root, _ = example
    copy = tmp_path / "v.h5"
    copy.write_bytes((root / "v.h5").read_bytes())
    with h5py.File(copy, "r+") as h5:
        h5["dose/delivered"][0, 0, 0] = 123.0
    with pytest.raises(PlanFileError, match="checksum mismatch"):
        load_verification(copy)


def test_errors_write_nothing(example, tmp_path):
    root, _ = example
    out = tmp_path / "v.h5"
    r = run("verify", root / "plan.h5", tmp_path / "missing.json", "-o", out)
    assert r.exit_code == 1 and r.stderr.startswith("embplan: error: ") and len(r.stderr.splitlines()) == 1
    assert not out.exists()
    # a plan without voxel data
    case = tmp_path / "c.json"
    d = small_case_dict()
    d["dosimetry"] = {"lung_shunt_fraction": 0.05, "lung_mass_kg": 1.0, "liver_volume_ml": 1500,
                      "perfused_volume_ml": 900}
    case.write_text(json.dumps(d))
    assert run("plan", case, "-o", tmp_path / "p.h5").exit_code == 0
    r = run("verify", tmp_path / "p.h5", root / "post" / "post.json", "-o", out, "--json")
    assert r.exit_code == 1 and "voxel data" in r.stderr
    assert not out.exists()


def test_bremsstrahlung_spect_example(example, tmp_path):
    """The same example with a bremsstrahlung SPECT (15 mm resolution, patient-relative calibration)."""
    root, _ = example
    r = run("phantom-post", root / "plan.h5", "--out", tmp_path / "post", "--spect")
    assert r.exit_code == 0, r.stderr
    r = run("verify", root / "plan.h5", tmp_path / "post" / "post.json", "-o", tmp_path / "v.h5", "--json")
    assert r.exit_code == 0, r.stderr
    summary = json.loads(r.stdout)
    truth = json.loads((tmp_path / "post" / "truth.json").read_text())
    f = load_verification(tmp_path / "v.h5")
    assert f.result.emission == "spect" and f.result.calibration["method"] == "patient_relative"
    assert f.result.activity_liver_mbq + f.result.activity_lungs_mbq == pytest.approx(
        1000.0 * truth["delivered_activity_gbq"], rel=1e-6)
    rows = {s["structure"]: s for s in summary["structures"]}
    assert rows[truth["under_perfused_tumor"]]["difference_percent"] < -40.0
    flagged = [d for d in summary["deposits"] if d["flagged"]]
    assert len(flagged) == 1
    assert np.linalg.norm(np.asarray(flagged[0]["centroid_plan_mm"]) - truth["gut_centre_plan_frame_mm"]) < 10.0


def test_foreign_and_newer_files_refused(example, tmp_path):
    root, _ = example
    with pytest.raises(PlanFileError, match="not an embplan verification file .format 'embplan.plan'"):
        load_verification(root / "plan.h5")
    newer = tmp_path / "newer.h5"
    newer.write_bytes((root / "v.h5").read_bytes())
    with h5py.File(newer, "r+") as h5:
        h5.attrs["format_version"] = "2.0"
    with pytest.raises(PlanFileError, match="format 2.0 is not readable"):
        load_verification(newer)
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(PlanFileError, match="not an HDF5 file"):
        load_verification(tmp_path / "text.h5")
    from embplan.io.verification import save_verification

    v = embplan.verify_files(root / "plan.h5", root / "post" / "post.json")
    with pytest.raises(PlanFileError, match="does not exist"):
        save_verification(v, tmp_path / "missing" / "v.h5")
    assert not (tmp_path / "missing").exists()
