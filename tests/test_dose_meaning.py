"""Issue 13, one meaning per dose number: every point checked against an independent calculation (closed forms,
hand calculations, or a voxel-centre DVH written here, independently of embplan.dosimetry.metrics)."""

from __future__ import annotations

import copy
import json
import math
from importlib import resources

import numpy as np
import pytest
from scipy import ndimage

import embplan
from embplan import planner
from embplan.dosimetry import conventions as conv
from embplan.dosimetry import metrics
from embplan.imaging.image_set import build_image_set
from embplan.nuclides import y90_mean_life_s
from embplan.planner import PlannerOptions

K = 49.67


def _demo_raw() -> dict:
    return json.loads(resources.files("embplan.data").joinpath("demo_tare_phantom.json").read_text())


@pytest.fixture(scope="module")
def demo_plan():
    return embplan.plan(_demo_raw())


def _voxel_centre_mean(dose: np.ndarray, mask: np.ndarray, rho: np.ndarray) -> float:
    """A dicompyler-core-style structure mean, written here: voxels whose centre is inside, weighted by mass."""
    d, w = dose[mask].astype(np.float64), rho[mask].astype(np.float64)
    return float(np.sum(d * w) / np.sum(w))


# ------------------------------------------------------------------------------- the demo: one number everywhere
def test_demo_headline_tables_dvh_and_flags_read_the_same_number(demo_plan):
    d, vox = demo_plan.dosimetry, demo_plan.voxel
    # headline = compartment model at the delivered activity (definitions say so)
    assert d.dose_activity == "delivered" and d.activity_gbq == d.delivery.delivered_activity_gbq
    assert "delivered activity" in d.definitions["tumor_dose_gy"]
    pairs = {
        "perfused_tumors": d.tumor_dose_gy,
        "perfused_normal_liver": d.normal_liver_dose_gy,
        "perfused": d.perfused_dose_gy,
        "lungs": d.lung_dose_gy,
        "normal_liver": d.compartment.normal_liver_gy,
    }
    structures = {s.structure: s.mean_gy for s in d.structures}
    rho = vox.arrays["dose_density_g_cm3"]
    dose = vox.arrays[f"dose_{d.method}_gy"]
    for name, headline in pairs.items():
        own = _voxel_centre_mean(dose, vox.arrays[f"mask_{name}"], rho)
        assert own == pytest.approx(headline, rel=1e-6), name  # the map, read independently
        assert d.dvh[name].mean_gy == pytest.approx(headline, rel=1e-6), name  # the DVH table
        assert structures[name] == pytest.approx(headline, rel=1e-6), name  # the structure table
        assert d.dvh[name].weighting == "mass"
    assert d.voxel.tumor_gy == pytest.approx(d.tumor_dose_gy, rel=1e-6)  # the compartment/voxel table
    # hand calculation of the headline: MIRD at the delivered activity over nominal-density masses
    lsf = d.lung_shunt_fraction
    m_perf = d.volumes_ml["perfused"] * 1.03 / 1000.0
    assert d.perfused_dose_gy == pytest.approx(K * d.activity_gbq * (1.0 - lsf) / m_perf, rel=1e-6)  # float32 1.03
    # the flags quote the same numbers and name the definition they checked
    from embplan.cli import plan_summary

    summary = json.loads(json.dumps(plan_summary(demo_plan)))
    assert summary["dosimetry"]["tumor_dose_gy"] == d.tumor_dose_gy
    for f in demo_plan.flags:
        for key, field in (("tumor_dose_gy", "tumor_dose_gy"), ("lung_dose_gy", "lung_dose_gy")):
            if key in f.context:
                assert f.context[key] == getattr(d, field), f.code
                assert "delivered activity" in f.context["dose_definition"]


# ------------------------------------------------------------------------------- (2) prescription vs tumour check
def test_plan_prescribed_to_205_gy_reads_205_gy_and_is_not_flagged(shared_examples):
    """Partition prescription to the glass target 205 Gy on the phantom with the density-corrected kernel: the
    tumour check reads the compartment definition of the prescription (>= 205 Gy: the vial is chosen never below a
    target), the voxel map's lower value (cross-fire) is shown beside it."""
    raw = json.loads((shared_examples / "tare_phantom_voxel.json").read_text())
    raw["procedure"]["prescription"] = {"method": "partition", "tumor_dose_target_gy": 205.0}
    raw["dosimetry"]["dose_method"] = "vsv_density"
    plan = embplan.plan(raw)
    d = plan.dosimetry
    assert not d.prescription.conflict and d.prescription.binding_constraint == "target"
    assert d.compartment_at_prescribed.tumor_gy == pytest.approx(205.0, rel=1e-9)
    one_hour = 2.0 ** (1.0 / 64.10) - 1.0
    assert 205.0 <= d.tumor_dose_gy <= 205.0 * (1.0 + one_hour) + 1e-9
    assert "TUMOR_DOSE_LOW" not in {f.code for f in plan.flags}
    # the issue's 189 Gy: the kernel map's mean, 5-10 % under by cross-fire, shown beside (not checked by the rule)
    assert -0.10 < d.voxel.tumor_gy / d.tumor_dose_gy - 1.0 < -0.05


# ------------------------------------------------------------------------------- (1) masses, contrast-enhanced CT
def test_contrast_enhanced_liver_changes_neither_mass_nor_activity(monkeypatch):
    """+100 HU of iodine in the liver: the CT calibration would read 1.055 -> about 1.10 g/cm3 (+4 %); the masses and
    the prescription stay nominal density x contoured volume, and the plan notes the contrast."""
    raw = _demo_raw()
    base = embplan.plan(copy.deepcopy(raw))
    img = build_image_set(embplan.load_case(copy.deepcopy(raw)))
    liver = img.masks["liver"]
    hu = np.array(img.ct_hu, copy=True)
    hu[liver] += 100.0
    from embplan.dosimetry.dose import hu_to_density_g_cm3

    enhanced = type(img)(**{**img.__dict__, "ct_hu": hu, "density_g_cm3": hu_to_density_g_cm3(hu).astype(np.float32)})
    ct_mass_increase = float(enhanced.density_g_cm3[liver].mean() / img.density_g_cm3[liver].mean()) - 1.0
    assert ct_mass_increase > 0.035  # what CT-density masses would have done (interpolated calibration, by hand: +4 %)
    monkeypatch.setattr(planner, "build_image_set", lambda case: enhanced)
    plan = embplan.plan(copy.deepcopy(raw))
    assert plan.dosimetry.prescription.activity_gbq == pytest.approx(base.dosimetry.prescription.activity_gbq, rel=1e-12)
    assert plan.dosimetry.perfused_dose_gy == pytest.approx(base.dosimetry.perfused_dose_gy, rel=1e-12)
    assert any("contrast-enhanced" in n for n in plan.dosimetry.notes)
    assert not any("contrast-enhanced" in n for n in base.dosimetry.notes)
    # mass = 1.03 g/mL x volume, by hand
    m = {s.structure: s for s in plan.dosimetry.structures}["perfused"]
    assert m.mass_kg == pytest.approx(m.volume_ml * 1.03 / 1000.0, rel=1e-6)


def test_nominal_density_is_a_parameter_with_its_source():
    assert conv.NOMINAL_TISSUE_DENSITY_G_CM3 == 1.03 and "package insert" in conv.NOMINAL_TISSUE_DENSITY_SOURCE
    from embplan.dosimetry.prescription import TissueDensities

    opts = PlannerOptions(densities=TissueDensities(normal_liver_g_cm3=1.06, tumor_g_cm3=1.06))
    a103 = embplan.plan(_demo_raw()).dosimetry.prescription.activity_gbq
    a106 = embplan.plan(_demo_raw(), options=opts).dosimetry.prescription.activity_gbq
    assert a106 / a103 == pytest.approx(1.06 / 1.03, rel=1e-6)  # MIRD: activity proportional to mass (+2.9 %)


# ------------------------------------------------------------------------------- (4) DVH: mass weighting, air floor
def test_mass_weighted_dvh_with_air_voxels_closed_form():
    """98 % lung voxels (0.26 g/cm3) and 2 % air voxels (0.0012 g/cm3) holding the same activity per voxel: local
    deposition gives D = E / (rho V). Volume-weighted, the air voxels dominate D2 (216x the lung dose); mass-weighted,
    the mean is the energy over the mass (closed form) and D2 is the lung dose."""
    n = 1000
    rho = np.full(n, 0.26)
    rho[:20] = 0.0012
    d_lung = 15.0
    dose = d_lung * 0.26 / rho
    vol = metrics.dvh(dose, None, voxel_volume_ml=0.1, bin_width_gy=0.5)
    mass = metrics.dvh(dose, None, voxel_volume_ml=0.1, bin_width_gy=0.5, mass_density_g_cm3=rho)
    energy_over_mass = float(np.sum(dose * rho) / np.sum(rho))
    assert mass.mean_gy == pytest.approx(energy_over_mass, rel=1e-12)
    assert vol.d_gy(2.0) > 1000.0  # the issue's 3,188 Gy kind of number
    assert mass.d_gy(2.0) == pytest.approx(d_lung, abs=0.5)
    assert mass.total_volume_ml == pytest.approx(100.0)
    # the dose engine's floor: air enters at 0.05 g/cm3 (-950 HU), 0.26 / 0.05 = 5.2x the lung dose at most
    floored = conv.dose_density_g_cm3(rho.reshape(10, 10, 10), np.zeros((10, 10, 10), bool))
    assert float(floored.min()) == pytest.approx(0.05) and float(floored.max()) == pytest.approx(0.26)


def test_fraction_weights_remove_the_half_voxel_bias_of_a_small_sphere():
    """A 2 mL sphere on a 4.42 mm grid in a dose field linear along x: the exact mean over the sphere is the dose
    at its centre (symmetry). Fraction weights (4^3 supersampling) get it within 1 %; the half-voxel mask rule,
    on a field that falls off outward, reads high (its rim is dropped or added by chance)."""
    from embplan.grid import Grid

    g = Grid(shape=(12, 12, 12), spacing_mm=(4.42, 4.42, 4.42))
    r = (3.0 * 2000.0 / (4.0 * math.pi)) ** (1.0 / 3.0)
    centre = np.asarray(g.index_to_patient_mm(np.array([[5.8, 6.1, 5.6]])))[0]
    frac = metrics.fraction_inside(g, lambda p: np.linalg.norm(p - centre, axis=1) <= r, supersample=8)
    zz, yy, xx = np.indices(g.shape)
    pts = np.asarray(g.index_to_patient_mm(np.stack([zz.ravel(), yy.ravel(), xx.ravel()], 1).astype(float)))
    dose = (100.0 + 2.0 * (pts[:, 0] - centre[0])).reshape(g.shape)  # Gy, linear in x
    h = metrics.dvh(dose, frac, voxel_volume_ml=g.voxel_volume_ml, bin_width_gy=0.1)
    assert h.mean_gy == pytest.approx(100.0, rel=0.01)
    assert h.total_volume_ml == pytest.approx(2.0, rel=0.03)


# ------------------------------------------------------------------------------- (3) per-lesion report
def test_lesion_table_sizes_warnings_and_recovery(demo_plan):
    d = demo_plan.dosimetry
    rc = conv.RecoveryCoefficients("phantom", (1.0, 100.0), (0.5, 1.0), source="test")
    plan = embplan.plan(_demo_raw(), options=PlannerOptions(recovery_coefficients=(rc,)))
    lesions = {x.name: x for x in plan.dosimetry.lesions}
    assert set(lesions) == set(demo_plan.voxel.attributes["images"]["phantom"].get("tumor_names", lesions))
    v_ml = demo_plan.voxel.grid.voxel_volume_ml
    for name, les in lesions.items():
        mask = demo_plan.voxel.arrays[f"mask_{name}"]
        assert les.voxel_count == int(mask.sum())
        assert les.volume_ml == pytest.approx(mask.sum() * v_ml, rel=1e-9)
        assert les.partial_volume_warning == (les.volume_ml < 10.0)
        # recovery by hand: linear in log volume between (1 mL, 0.5) and (100 mL, 1.0)
        t = min(max(math.log(les.volume_ml) / math.log(100.0), 0.0), 1.0)
        assert les.recovery_coefficient == pytest.approx(0.5 + 0.5 * t, rel=1e-9)
        assert les.recovery_corrected_gy == pytest.approx(les.mean_gy / les.recovery_coefficient, rel=1e-9)
        assert les.mass_kg == pytest.approx(les.volume_ml * 1.03 / 1000.0, rel=1e-6)
    assert any(x.partial_volume_warning for x in d.lesions) and any(not x.partial_volume_warning for x in d.lesions)


# ------------------------------------------------------------------------------- (6) energy of the plain kernel
def test_plain_kernel_conserves_energy_in_the_liver(shared_examples):
    """vsv's kernel is built for the liver's density: deep inside a uniform region its dose equals local deposition
    (closed form K A / (rho V)); before issue 13 it was 1.06/1.04 = +1.9 % off in energy."""
    raw = json.loads((shared_examples / "tare_phantom_voxel.json").read_text())
    raw["dosimetry"]["dose_method"] = "vsv"
    plan = embplan.plan(raw)
    vox = plan.voxel
    deep = ndimage.binary_erosion(vox.arrays["mask_perfused_normal_liver"], iterations=4)
    assert deep.sum() > 100
    vsv, ldm = vox.arrays["dose_vsv_gy"][deep], vox.arrays["dose_ldm_gy"][deep]
    closed = vox.arrays["tia_mbq_s"][deep] / y90_mean_life_s() * 1e-3 * K / (1.03 * vox.grid.voxel_volume_ml * 1e-3)
    np.testing.assert_allclose(ldm, closed, rtol=1e-5)
    np.testing.assert_allclose(vsv, ldm, rtol=2e-3)
    assert plan.provenance.kernel["vsv"]["kernel_density_g_cm3"] == pytest.approx(1.03)


# ------------------------------------------------------------------------------- (7) one lung shunt
def test_one_lung_shunt_for_dose_and_flags(shared_examples):
    """The case says 20 %, the images 8 %: dose and flags use the images' (hand calculation of the lung dose), the
    case's value stands beside it and the discrepancy is flagged."""
    raw = json.loads((shared_examples / "tare_phantom_voxel.json").read_text())
    raw["dosimetry"]["lung_shunt_fraction"] = 0.20
    raw["dosimetry"]["images"]["phantom"]["lung_shunt_fraction"] = 0.08
    plan = embplan.plan(raw)
    d = plan.dosimetry
    assert d.lung_shunt.source == "images" and d.lung_shunt.case_fraction == 0.20
    assert d.lung_shunt_fraction == pytest.approx(0.08, rel=1e-6) and d.lung_shunt.differs
    m_lung = d.prescription.inputs["lung_mass_kg"]
    assert d.lung_dose_gy == pytest.approx(K * d.activity_gbq * 0.08 / m_lung, rel=1e-6)
    codes = {f.code: f for f in plan.flags}
    assert "LUNG_SHUNT_DISCREPANCY" in codes
    assert codes["LUNG_SHUNT_DISCREPANCY"].context["case_lung_shunt_fraction"] == 0.20
    lsh = codes.get("LUNG_SHUNT_HIGH")
    assert lsh is None or lsh.context["lung_shunt_fraction"] == pytest.approx(0.08, rel=1e-6)


# ------------------------------------------------------------------------------- (8) default method per modality
def test_default_method_per_modality_is_stated():
    for modality in ("NM", "PT", "phantom"):
        method, reason = conv.default_dose_method(modality, 4.42)
        assert method == "ldm" and "EANM" in reason
    assert conv.default_dose_method("NM", 0.5)[0] == "vsv_density"
    d = embplan.plan(_demo_raw()).dosimetry
    assert d.method == "ldm" and "Chiesa" in d.dose_method_reason


# ------------------------------------------------------------------------------- (5) the lung DVH
def test_lung_dvh_beyond_the_dome_margin(demo_plan):
    """The lung DVH says what it means; the dome-excluded one covers exactly the lung voxels more than 20 mm from
    the liver (distance computed here with scipy's exact Euclidean transform)."""
    vox, d = demo_plan.voxel, demo_plan.dosimetry
    lungs, liver = vox.arrays["mask_lungs"], vox.arrays["mask_liver"]
    dist = ndimage.distance_transform_edt(~liver, sampling=vox.grid.spacing_mm)
    away = lungs & (dist > 20.0)
    assert d.dvh["lungs_beyond_dome"].volume_ml == pytest.approx(away.sum() * vox.grid.voxel_volume_ml, rel=1e-9)
    assert "spill-in" in d.dvh["lungs"].definition
    rho = vox.arrays["dose_density_g_cm3"]
    assert d.dvh["lungs_beyond_dome"].mean_gy == pytest.approx(
        _voxel_centre_mean(vox.arrays["dose_ldm_gy"], away, rho), rel=1e-6)


def test_vial_never_crosses_the_largest_safe_activity(shared_examples):
    """A target whose activity sits just under the lung limit: rounding the vial up (the 'never below a target'
    side) would cross the limit, so the vial is taken on the lower side and no lung flag fires on the delivered
    dose. By hand: the lung limit allows 30 Gy x M_lung / (K LSF)."""
    raw = json.loads((shared_examples / "tare_lobar_resin.json").read_text())
    raw["procedure"]["device"] = "glass"
    raw["dosimetry"]["lung_shunt_fraction"] = 0.20
    raw["dosimetry"]["lung_mass_kg"] = 1.0
    a_lung = 30.0 * 1.0 / (K * 0.20)  # 3.0199 GBq
    m_perf = 1100.0 * 1.03 / 1000.0
    target = a_lung * 0.999 * K * 0.80 / m_perf  # MIRD target whose activity is 0.1 % under the lung limit
    raw["procedure"]["prescription"] = {"method": "mird", "perfused_dose_target_gy": target}
    plan = embplan.plan(raw)
    d = plan.dosimetry
    assert d.prescription.activity_gbq == pytest.approx(a_lung * 0.999, rel=1e-9)
    assert d.activity_gbq <= a_lung * (1 + 1e-12)
    assert "LUNG_DOSE_LIMIT" not in {f.code for f in plan.flags}


def test_recovery_coefficients_from_the_case_file():
    raw = _demo_raw()
    raw["dosimetry"]["recovery_coefficients"] = [
        {"modality": "phantom", "volume_ml": [1.0, 100.0], "coefficient": [0.4, 0.9], "source": "site NEMA 2026"}]
    lesions = embplan.plan(raw).dosimetry.lesions
    for les in lesions:
        t = min(max(math.log(les.volume_ml) / math.log(100.0), 0.0), 1.0)
        assert les.recovery_coefficient == pytest.approx(0.4 + 0.5 * t, rel=1e-9)
        assert "site NEMA 2026" in les.note
    raw["dosimetry"]["recovery_coefficients"][0]["coefficient"] = [0.4]
    with pytest.raises(embplan.CaseError, match="recovery_coefficients"):
        embplan.load_case(raw)


@pytest.mark.parametrize("blur_mm, ldm_range, vsv_range", [
    (0.0, (-0.17, -0.11), (-0.27, -0.20)),   # README: -14 % (ldm), -24 % (vsv_density) at 5 mL without blur
    (12.0, (-0.45, -0.38), (-0.48, -0.41)),  # README: -42 % and -45 % with a 12 mm FWHM resolution
])
def test_small_lesion_bias_stated_in_the_readme(blur_mm, ldm_range, vsv_range):
    """A 5 mL sphere at T/N 4 in uniform liver, 4.42 mm grid, off the voxel centres: its true mean dose is 4x the
    liver's local-deposition dose (closed form K A / (rho V) of a uniform medium). The fraction-weighted voxel
    means read low by what the README states (voxelisation, kernel cross-fire, resolution)."""
    from embplan.dosimetry.dose import absorbed_dose_gy
    from embplan.grid import Grid

    v, n = 4.42, 40
    g = Grid(shape=(n, n, n), spacing_mm=(v, v, v))
    r = (3.0 * 5.0 * 1000.0 / (4.0 * math.pi)) ** (1.0 / 3.0)
    centre = np.array([(n - 1) / 2 + 0.3, (n - 1) / 2 + 0.2, (n - 1) / 2 + 0.1]) * v
    sub = (np.arange(4) + 0.5) / 4 - 0.5
    idx = np.indices(g.shape).reshape(3, -1).T * v
    frac = np.zeros(n**3)
    for a in sub:
        for b in sub:
            for c in sub:
                frac += np.linalg.norm(idx + np.array([a, b, c]) * v - centre, axis=1) <= r
    frac = (frac / 64.0).reshape(g.shape)
    conc = 1.0 + 3.0 * frac
    if blur_mm:
        conc = ndimage.gaussian_filter(conc, blur_mm / 2.3548 / v, mode="nearest")
    truth = 4.0 * absorbed_dose_gy(np.full(g.shape, 1e3), g, "ldm", 1.03)[0, 0, 0]
    for method, (lo, hi) in (("ldm", ldm_range), ("vsv_density", vsv_range)):
        dose = absorbed_dose_gy(conc * 1e3, g, method, 1.03, kernel_density_g_cm3=1.03)
        bias = float((dose * frac).sum() / frac.sum()) / truth - 1.0
        assert lo < bias < hi, (method, bias)


def test_delivery_tolerance_is_a_case_threshold(shared_examples):
    """24 h after calibration a 2.91 GBq prescription gets the 3 GBq vial at 2.316 GBq (-20.5 %, by hand): flagged at
    the default 10 %, not when the case sets the tolerance to 25 %; the plan records the value used."""
    raw = json.loads((shared_examples / "tare_lobar_resin.json").read_text())
    raw["procedure"]["device"] = "glass"
    raw["procedure"]["prescription"] = {"method": "mird", "perfused_dose_target_gy": 120.0}
    raw["procedure"].update(calibration_datetime="2026-12-06T12:00:00", administration_datetime="2026-12-07T12:00:00")
    assert "DELIVERED_ACTIVITY_DEVIATION" in {f.code for f in embplan.plan(copy.deepcopy(raw)).flags}
    raw["thresholds"] = {"delivered_activity_tolerance_fraction": 0.25}
    plan = embplan.plan(raw)
    assert "DELIVERED_ACTIVITY_DEVIATION" not in {f.code for f in plan.flags}
    assert plan.thresholds.delivered_activity_tolerance_fraction == 0.25
    assert plan.dosimetry.delivery.tolerance_fraction == 0.25
    assert plan.dosimetry.delivery.deviation_fraction == pytest.approx(3.0 * 2 ** (-24 / 64.10) / (
        120.0 * 1.133 / (K * 0.94)) - 1.0, rel=1e-9)


def test_air_in_the_lung_cannot_dominate_its_dvh(monkeypatch):
    """2 % of the lung voxels turned to air (-1000 HU, 0.0012 g/cm3; seeded). Each lung voxel holds the same
    activity, so by local deposition D = K A_voxel / (rho V): air voxels enter at the 0.05 g/cm3 floor (5.2x the lung
    tissue dose, not 217x), the mass-weighted D2 is the tissue dose, and the DVH mean is the headline lung dose."""
    raw = _demo_raw()
    img = build_image_set(embplan.load_case(copy.deepcopy(raw)))
    lungs = np.asarray(img.masks["lungs"])
    rng = np.random.default_rng(13)
    idx = np.flatnonzero(lungs)
    air = rng.choice(idx, size=int(0.02 * idx.size), replace=False)
    rho = np.array(img.density_g_cm3, copy=True).ravel()
    hu = np.array(img.ct_hu, copy=True).ravel()
    rho[air], hu[air] = 0.0012, -1000.0
    changed = type(img)(**{**img.__dict__, "density_g_cm3": rho.reshape(img.grid.shape),
                           "ct_hu": hu.reshape(img.grid.shape)})
    monkeypatch.setattr(planner, "build_image_set", lambda case: changed)
    d = embplan.plan(copy.deepcopy(raw)).dosimetry
    h = d.dvh["lungs"]
    tissue = float(np.median(np.asarray(embplan.plan(copy.deepcopy(raw)).voxel.arrays["dose_ldm_gy"])[lungs]))
    v_l = img.grid.voxel_volume_ml / 1000.0
    m_ct = float(np.sum(rho[lungs.ravel()], dtype=np.float64)) * v_l  # the lung's mass on the CT (kg)
    m_floor = float(np.sum(np.maximum(rho[lungs.ravel()], 0.05), dtype=np.float64)) * v_l
    energy = K * d.activity_gbq * d.lung_shunt_fraction  # Gy kg
    assert d.lung_dose_gy == pytest.approx(energy / m_ct, rel=1e-5)  # compartment: the CT's mass, not floored
    assert h.mean_gy == pytest.approx(energy / m_floor, rel=1e-5)  # voxel map: the floored masses (0.4 % lower)
    assert h.max_gy == pytest.approx(tissue * 0.26 / 0.05, rel=0.01)
    assert h.d_gy["D2"] < 1.05 * tissue
    assert any("lighter than 0.05" in n for n in d.notes)


def test_mass_weighted_dvh_points_against_an_independent_sort(shared_examples):
    """The kernel plan's perfused-tumour DVH (a real spread of doses) against Dx computed here by sorting the voxel
    doses and accumulating their masses (the hottest x % of the mass): within one 0.5 Gy bin."""
    raw = json.loads((shared_examples / "tare_phantom_voxel.json").read_text())
    raw["dosimetry"]["dose_method"] = "vsv_density"
    plan = embplan.plan(raw)
    vox, h = plan.voxel, plan.dosimetry.dvh["perfused_tumors"]
    m = vox.arrays["mask_perfused_tumors"]
    dose = vox.arrays["dose_vsv_density_gy"][m].astype(float)
    mass = vox.arrays["dose_density_g_cm3"][m].astype(float)
    order = np.argsort(dose)[::-1]
    cum = np.cumsum(mass[order]) / mass.sum()
    for x in (2.0, 50.0, 70.0, 95.0, 98.0):
        own = dose[order][np.searchsorted(cum, x / 100.0)]
        assert h.d_gy[f"D{x:g}"] == pytest.approx(own, abs=0.5 + 1e-9), x
    assert h.mean_gy == pytest.approx(float(np.sum(dose * mass) / mass.sum()), rel=1e-9)
