"""The contract of DESIGN.md: the names outside tests call, with the argument names DESIGN gives. If one of these
breaks, outside code breaks: change DESIGN first."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal

import embplan
from embplan.dosimetry import prescription
from embplan.dosimetry.convolve import convolve
from embplan.dosimetry.dose import absorbed_dose_gy
from embplan.dosimetry.kernels import y90_voxel_kernel
from embplan.grid import Grid
from embplan.risk import ALL_CODES, Severity

CONTRACT_CODES = {
    "LUNG_DOSE_LIMIT", "LUNG_SHUNT_HIGH", "NON_TUMOR_LIVER_DOSE_HIGH", "TUMOR_DOSE_LOW", "WHOLE_LIVER_TARE",
    "BILIARY_ENTERIC_ANASTOMOSIS", "INCOMPETENT_SPHINCTER", "DEB_TACE_IN_NET", "CARCINOID_CRISIS_RISK",
    "BILIRUBIN_HIGH", "TUMOR_BURDEN_HIGH", "PORTAL_VEIN_THROMBOSIS", "PERFORMANCE_STATUS", "LAB_LIMITS",
    "DOXORUBICIN_CUMULATIVE", "SEQUENCE_DEVIATION", "RESECTION_CANDIDATE", "TRANSPLANT_CANDIDATE",
    "PRIOR_RADIOEMBOLIZATION", "PROTOCOL_DEVIATION", "HEPATIC_RESERVE_LOW",
}


def test_top_level_names():
    for name in ("load_case", "plan", "assess", "save_plan", "load_plan", "EmbplanError", "Plan", "Case", "Flag"):
        assert hasattr(embplan, name), name
    for sub in ("CaseError", "PlanFileError", "ImagingError"):
        assert issubclass(getattr(embplan, sub), embplan.EmbplanError)


def test_flag_codes_and_severity_order():
    assert CONTRACT_CODES <= set(ALL_CODES)
    assert Severity.INFO < Severity.CAUTION < Severity.WARNING < Severity.CONTRAINDICATION


def test_whipple_done_when(shared_examples):
    flags = embplan.assess(embplan.load_case(shared_examples / "tace_after_whipple.json"))
    flag = next(f for f in flags if f.code == "BILIARY_ENTERIC_ANASTOMOSIS")
    assert flag.severity == Severity.WARNING and flag.evidence and flag.message and isinstance(flag.context, dict)


def test_grid_and_kernel_signatures():
    g = Grid(shape=(3, 4, 5), spacing_mm=(2.0, 3.0, 4.0))
    assert g.shape == (3, 4, 5) and g.spacing_mm == (2.0, 3.0, 4.0)
    k = y90_voxel_kernel(voxel_mm=4.42, density_g_cm3=1.04)
    assert k.mgy_per_mbq_s.ndim == 3 and all(n % 2 == 1 for n in k.mgy_per_mbq_s.shape)
    assert k.voxel_mm == (4.42, 4.42, 4.42) and k.density_g_cm3 == 1.04
    k2 = y90_voxel_kernel((3.0, 2.0, 2.0))
    assert k2.voxel_mm == (3.0, 2.0, 2.0)


def test_convolve_and_dose_signatures():
    rng = np.random.default_rng(3)
    tia = np.zeros((12, 12, 12))
    tia[4:8, 3:9, 5:7] = rng.random((4, 6, 2))
    kern = y90_voxel_kernel(4.42).mgy_per_mbq_s
    roi = np.zeros(tia.shape, bool)
    roi[2:10, 2:10, 2:10] = True
    ref = scipy.signal.fftconvolve(tia, kern, mode="same")
    np.testing.assert_allclose(convolve(tia, kern), ref, atol=1e-10 * np.abs(ref).max())
    np.testing.assert_allclose(convolve(tia, kern, roi=roi)[roi], ref[roi], atol=1e-10 * np.abs(ref).max())
    grid = Grid(shape=tia.shape, spacing_mm=(4.42, 4.42, 4.42))
    for method in ("ldm", "vsv", "vsv_density"):
        d = absorbed_dose_gy(tia_mbq_s=tia, grid=grid, method=method, density_g_cm3=1.04)
        assert d.shape == tia.shape and np.all(d >= 0)


def test_prescription_signatures():
    pd = prescription.partition_doses(
        activity_gbq=2.0, lung_shunt_fraction=0.1, tn_ratio=3.0, tumor_mass_kg=0.3, normal_liver_mass_kg=1.0,
        lung_mass_kg=1.0, k_gy_kg_per_gbq=49.67,
    )
    d_n = 49.67 * 2.0 * 0.9 / (1.0 + 3.0 * 0.3)
    assert (pd.tumor_gy, pd.normal_liver_gy, pd.lung_gy) == pytest.approx((3.0 * d_n, d_n, 49.67 * 2.0 * 0.1))
    a = prescription.mird_activity_gbq(
        target_dose_gy=120.0, perfused_mass_kg=1.1, lung_shunt_fraction=0.1, k_gy_kg_per_gbq=49.67
    )
    assert a == pytest.approx(120.0 * 1.1 / (49.67 * 0.9))
    b = prescription.bsa_activity_gbq(weight_kg=64.0, height_cm=168.0, tumor_ml=480.0, liver_ml=1170.0, lobe_fraction=1.0)
    assert b == pytest.approx(1.72720 - 0.2 + 480.0 / 1650.0, abs=1e-4)
    assert prescription.decay_factor(hours=64.10) == pytest.approx(0.5)


def test_plan_dosimetry_fields(shared_examples, tmp_path):
    p = embplan.plan(embplan.load_case(shared_examples / "tare_lobar_resin.json"))
    for name in ("activity_gbq", "tumor_dose_gy", "normal_liver_dose_gy", "lung_dose_gy", "perfused_dose_gy"):
        assert isinstance(getattr(p.dosimetry, name), float)
    assert isinstance(p.flags, list)
    embplan.save_plan(p, tmp_path / "p.h5")
    assert embplan.load_plan(tmp_path / "p.h5") == p
    tae = embplan.plan(embplan.load_case(shared_examples / "tae_first_line.json"))
    assert tae.dosimetry is None
