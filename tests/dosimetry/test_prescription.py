"""Tests of embplan.dosimetry.prescription against hand calculations written out here (closed forms), energy
conservation and round trips. K = 49.67 Gy kg/GBq unless stated."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from embplan import nuclides
from embplan.dosimetry import prescription as rx
from embplan.errors import DosimetryError, EmbplanError

K = 49.67


# ------------------------------------------------------------------------------------------------------ contract
def test_contract_names_and_defaults():
    for name in ("partition_doses", "mird_activity_gbq", "bsa_activity_gbq", "decay_factor", "PartitionDoses"):
        assert hasattr(rx, name)
    assert rx.mird_activity_gbq.__defaults__ == (49.67,)
    d = rx.partition_doses(1.0, 0.1, 2.0, 0.2, 1.0, 1.0)
    assert {"tumor_gy", "normal_liver_gy", "lung_gy"} <= set(vars(d))
    assert nuclides.K_GY_KG_PER_GBQ_DEFAULT == K


# ----------------------------------------------------------------------------------------------------------- BSA
def test_bsa_dubois_hand_calculation():
    # 64 kg, 168 cm: 64^0.425 = exp(0.425 ln 64) = exp(1.767525) = 5.856343;
    # 168^0.725 = exp(0.725 ln 168) = exp(3.714874) = 41.053409; 0.007184 * 5.856343 * 41.053409 = 1.72720 m2
    assert rx.body_surface_area_m2(64.0, 168.0) == pytest.approx(1.72720, abs=5e-5)
    # textbook anchor: Du Bois gives about 1.81 m2 for 70 kg, 170 cm
    assert rx.body_surface_area_m2(70.0, 170.0) == pytest.approx(1.81, abs=0.005)


def test_bsa_mosteller_hand_calculation():
    # sqrt(64 * 168 / 3600) = sqrt(2.986667) = 1.728198
    assert rx.body_surface_area_m2(64.0, 168.0, formula="mosteller") == pytest.approx(1.728198, abs=1e-6)
    with pytest.raises(DosimetryError, match="formula"):
        rx.body_surface_area_m2(64.0, 168.0, formula="haycock")


def test_bsa_activity_hand_calculation():
    # BSA 1.72720; V_T = 480 mL, V_N = 1650 mL: involvement 480 / 2130 = 0.225352
    # whole liver: A = (1.72720 - 0.2) + 0.225352 = 1.752552 GBq; right lobe 2/3 of the liver: 1.168368 GBq
    assert rx.bsa_activity_gbq(64.0, 168.0, 480.0, 1650.0) == pytest.approx(1.752552, abs=1e-4)
    assert rx.bsa_activity_gbq(64.0, 168.0, 480.0, 1650.0, 2.0 / 3.0) == pytest.approx(1.168368, abs=1e-4)
    # liver volume given including tumour: involvement 480 / 1650 = 0.290909 -> 1.527200 + 0.290909 = 1.818109
    assert rx.bsa_activity_gbq(64.0, 168.0, 480.0, 1650.0, liver_ml_includes_tumor=True) == pytest.approx(
        1.818109, abs=1e-4
    )


@pytest.mark.parametrize(
    ("lsf", "expected"),
    [
        (0.0, 0.0),
        (0.0999, 0.0),
        (0.10, 0.2),  # "10-15 %": 10 % belongs to the 20 % band
        (0.1499, 0.2),
        (0.15, 0.4),  # "15-20 %": 15 % belongs to the 40 % band
        (0.20, 0.4),  # only "> 20 %" is excluded: 20 % is still treatable with 40 % less
        (0.2001, None),
        (0.5, None),
    ],
)
def test_lung_shunt_bands_at_their_boundaries(lsf, expected):
    assert rx.lung_shunt_reduction_fraction(lsf) == expected


def test_lung_shunt_bands_are_parameters():
    bands = ((0.05, 0.1), (0.10, 0.5))
    assert rx.lung_shunt_reduction_fraction(0.07, bands=bands) == 0.1
    assert rx.lung_shunt_reduction_fraction(0.12, bands=bands) == 0.5
    assert rx.lung_shunt_reduction_fraction(0.25, bands=bands, max_lsf_fraction=0.3) == 0.5
    with pytest.raises(DosimetryError, match="device"):
        rx.lung_shunt_reduction_fraction(0.05, device="glass")
    with pytest.raises(DosimetryError, match="bands"):
        rx.lung_shunt_reduction_fraction(0.05, bands=((0.1, 0.2), (0.05, 0.4)))


def test_bsa_prescription_reduced_and_untreatable():
    p = rx.bsa_prescription(64.0, 168.0, 480.0, 1650.0, 0.12)
    assert p.activity_gbq == pytest.approx(1.752552, abs=1e-4)
    assert p.reduction_fraction == 0.2
    assert p.reduced_activity_gbq == pytest.approx(1.752552 * 0.8, abs=1e-4)
    assert p.treatable and p.bsa_m2 == pytest.approx(1.72720, abs=5e-5)
    q = rx.bsa_prescription(64.0, 168.0, 480.0, 1650.0, 0.25)
    assert not q.treatable and q.reduced_activity_gbq is None and q.activity_gbq == pytest.approx(p.activity_gbq)


# ---------------------------------------------------------------------------------------------------------- MIRD
def test_mird_activity_divides_by_one_minus_lsf_regression():
    # D = 120 Gy, M = 1.1 kg, LSF = 0.1: A = 120 * 1.1 / (49.67 * 0.9) = 132 / 44.703 = 2.95282 GBq.
    # The published calculator bug multiplies instead: 120 * 1.1 * 0.9 / 49.67 = 2.39179 GBq.
    a = rx.mird_activity_gbq(120.0, 1.1, 0.1)
    assert a == pytest.approx(2.95282, abs=1e-4)
    assert abs(a - 2.39179) > 0.5
    # the dose delivered by that activity is the target (the perfused tissue gets (1 - LSF) of it)
    assert rx.mird_dose_gy(a, 1.1, 0.1) == pytest.approx(120.0, rel=1e-12)


def test_mird_k_is_a_parameter():
    # TheraSphere IFU K = 50: 120 * 1.1 / (50 * 0.9) = 2.93333
    assert rx.mird_activity_gbq(120.0, 1.1, 0.1, k_gy_kg_per_gbq=50.0) == pytest.approx(2.933333, abs=1e-6)
    assert rx.mird_dose_gy(1.0, 1.0, 0.0, k_gy_kg_per_gbq=50.0) == pytest.approx(50.0)


# ----------------------------------------------------------------------------------------------------- partition
def test_partition_doses_hand_calculation():
    # A = 2 GBq, LSF = 0.1, T/N = 4, M_T = 0.2 kg, M_N = 1.0 kg, M_L = 1.0 kg:
    # D_N = 49.67 * 2 * 0.9 / (1.0 + 4 * 0.2) = 89.406 / 1.8 = 49.67 Gy; D_T = 4 * 49.67 = 198.68 Gy;
    # D_L = 49.67 * 2 * 0.1 / 1.0 = 9.934 Gy
    d = rx.partition_doses(2.0, 0.1, 4.0, 0.2, 1.0, 1.0)
    assert d.normal_liver_gy == pytest.approx(49.67, rel=1e-12)
    assert d.tumor_gy == pytest.approx(198.68, rel=1e-12)
    assert d.lung_gy == pytest.approx(9.934, rel=1e-12)


@given(
    a=st.floats(0.1, 20.0),
    lsf=st.floats(0.0, 0.5),
    tn=st.floats(0.2, 20.0),
    mt=st.floats(0.005, 2.0),
    mn=st.floats(0.2, 2.5),
    ml=st.floats(0.3, 1.5),
)
def test_partition_conserves_energy(a, lsf, tn, mt, mn, ml):
    # sum of dose x mass over the compartments = K x A (everything administered is absorbed somewhere)
    d = rx.partition_doses(a, lsf, tn, mt, mn, ml)
    assert d.tumor_gy * mt + d.normal_liver_gy * mn + d.lung_gy * ml == pytest.approx(K * a, rel=1e-9)
    assert d.tumor_gy == pytest.approx(tn * d.normal_liver_gy, rel=1e-12)


def test_partition_with_tn_one_is_single_compartment():
    d = rx.partition_doses(3.0, 0.07, 1.0, 0.3, 0.9, 1.0)
    m = rx.mird_dose_gy(3.0, 1.2, 0.07)
    assert d.tumor_gy == pytest.approx(m) and d.normal_liver_gy == pytest.approx(m)


@given(target=st.floats(20.0, 600.0), lsf=st.floats(0.0, 0.4), tn=st.floats(0.5, 15.0), mt=st.floats(0.01, 1.5))
def test_partition_round_trip(target, lsf, tn, mt):
    a = rx.partition_activity_for_tumor_dose_gbq(target, lsf, tn, mt, 1.3)
    assert rx.partition_doses(a, lsf, tn, mt, 1.3, 1.0).tumor_gy == pytest.approx(target, rel=1e-9)
    b = rx.partition_activity_for_normal_liver_dose_gbq(40.0, lsf, tn, mt, 1.3)
    assert rx.partition_doses(b, lsf, tn, mt, 1.3, 1.0).normal_liver_gy == pytest.approx(40.0, rel=1e-9)


def test_partition_activity_hand_calculation():
    # target D_T = 120 Gy, LSF 0.1, T/N 4, M_T 0.2, M_N 1.0: A = 120 * 1.8 / (4 * 49.67 * 0.9) = 216 / 178.812
    assert rx.partition_activity_for_tumor_dose_gbq(120.0, 0.1, 4.0, 0.2, 1.0) == pytest.approx(
        216.0 / 178.812, rel=1e-9
    )


# ------------------------------------------------------------------------------------------- limits and max activity
def test_max_activity_bound_by_normal_liver():
    # LSF 0.05, T/N 3, M_T 0.3, M_N 1.5, M_L 1: liver 40 Gy -> A = 40 * (1.5 + 0.9) / (49.67 * 0.95) = 96 / 47.1865
    # lung 30 Gy -> A = 30 / (49.67 * 0.05) = 12.080 GBq, not binding
    m = rx.partition_max_activity(40.0, 30.0, 0.05, 3.0, 0.3, 1.5, 1.0)
    assert m.binding_constraint == "normal_liver"
    assert m.activity_gbq == pytest.approx(96.0 / 47.1865, rel=1e-9)
    assert m.activity_by_constraint_gbq["lung_session"] == pytest.approx(30.0 / (K * 0.05), rel=1e-9)


def test_max_activity_bound_by_lung_session():
    # LSF 0.18, T/N 3, M_T 0.3, M_N 3.0: liver -> 40 * 3.9 / (49.67 * 0.82) = 3.8301 GBq;
    # lung 30 Gy -> 30 / (49.67 * 0.18) = 3.3554 GBq: the lung binds
    m = rx.partition_max_activity(40.0, 30.0, 0.18, 3.0, 0.3, 3.0, 1.0)
    assert m.binding_constraint == "lung_session"
    assert m.activity_gbq == pytest.approx(30.0 / (K * 0.18), rel=1e-9)
    assert rx.lung_dose_gy(m.activity_gbq, 0.18, 1.0) == pytest.approx(30.0)


def test_max_activity_bound_by_cumulative_lung_with_prior_dose():
    # 35 Gy to the lung from earlier TAREs: 15 Gy left of 50 -> 15 / (49.67 * 0.18) = 1.6777 GBq
    m = rx.partition_max_activity(40.0, 30.0, 0.18, 3.0, 0.3, 3.0, 1.0, prior_lung_dose_gy=35.0)
    assert m.binding_constraint == "lung_cumulative"
    assert m.activity_gbq == pytest.approx(15.0 / (K * 0.18), rel=1e-9)
    assert 35.0 + rx.lung_dose_gy(m.activity_gbq, 0.18, 1.0) == pytest.approx(50.0)
    # the budget already spent: nothing may be given
    spent = rx.partition_max_activity(40.0, 30.0, 0.18, 3.0, 0.3, 3.0, 1.0, prior_lung_dose_gy=52.0)
    assert spent.activity_gbq == 0.0 and spent.binding_constraint == "lung_cumulative"
    assert rx.lung_max_activity_gbq(0.18, 1.0, prior_lung_dose_gy=35.0) == pytest.approx(15.0 / (K * 0.18))


def test_lung_mass_changes_lung_dose():
    # 2 GBq, LSF 0.1 into 0.8 kg: 49.67 * 0.2 / 0.8 = 12.4175 Gy
    assert rx.lung_dose_gy(2.0, 0.1, 0.8) == pytest.approx(12.4175)
    assert rx.lung_max_activity_gbq(0.0) == math.inf


def test_prescription_meets_target_when_safe():
    p = rx.partition_prescription(120.0, 40.0, 0.06, 3.2, 0.38, 0.78)
    assert not p.conflict and p.binding_constraint == "tumor_target"
    assert p.doses.tumor_gy == pytest.approx(120.0)
    assert p.doses.normal_liver_gy <= 40.0 and p.doses.lung_gy <= 30.0
    assert p.activity_gbq == pytest.approx(p.tumor_target_activity_gbq)
    assert p.activity_gbq <= p.max_safe_activity_gbq


def test_prescription_reports_conflict_and_stays_within_limits():
    # T/N 1.5 cannot give the tumour 205 Gy with the non-tumour liver below 40 Gy (it would need 136.7 Gy)
    p = rx.partition_prescription(205.0, 40.0, 0.05, 1.5, 0.3, 1.2)
    assert p.conflict
    assert p.binding_constraint == "normal_liver" == p.max_safe_binding_constraint
    assert p.activity_gbq == pytest.approx(p.max_safe_activity_gbq)
    assert p.tumor_target_activity_gbq > p.max_safe_activity_gbq
    assert p.doses.normal_liver_gy == pytest.approx(40.0)
    assert p.doses.tumor_gy == pytest.approx(60.0)  # T/N x 40 Gy


# ------------------------------------------------------------------------------------------------------- densities
def test_tissue_densities_and_mass():
    d = rx.TissueDensities()
    assert d.normal_liver_g_cm3 == 1.03 and d.tumor_g_cm3 == 1.03 and 0.2 <= d.lung_g_cm3 <= 0.4
    assert set(d.SOURCES) == {"normal_liver_g_cm3", "tumor_g_cm3", "lung_g_cm3"}
    assert rx.mass_kg(1000.0, d.normal_liver_g_cm3) == pytest.approx(1.03)
    assert rx.TissueDensities(tumor_g_cm3=1.03).tumor_g_cm3 == 1.03
    with pytest.raises(DosimetryError, match="lung_g_cm3"):
        rx.TissueDensities(lung_g_cm3=0.0)
    # air-water line: -740 HU -> 0.26 g/cm3
    assert rx.density_from_hu_g_cm3(-740.0) == pytest.approx(0.26)
    assert rx.density_from_hu_g_cm3(-1024.0) == pytest.approx(0.0012)


def test_counts_to_compartment_quantities():
    # 40 % of liver counts in 0.1 kg of tumour, 60 % in 1.2 kg of normal liver: (0.4/0.1)/(0.6/1.2) = 8
    assert rx.tn_ratio_from_counts(40.0, 0.1, 60.0, 1.2) == pytest.approx(8.0)
    assert rx.lung_shunt_fraction_from_counts(5.0, 95.0) == pytest.approx(0.05)


# ----------------------------------------------------------------------------------------------- decay and vials
def test_decay_halves_in_one_half_life():
    assert rx.decay_factor(64.1) == pytest.approx(0.5, rel=1e-12)
    assert rx.activity_at_gbq(3.0, 64.1) == pytest.approx(1.5)
    assert rx.activity_at_gbq(3.0, -64.1) == pytest.approx(6.0)
    assert rx.decay_factor(10.0) == nuclides.decay_factor(10.0)
    with pytest.raises(DosimetryError, match="hours"):
        rx.decay_factor(float("nan"))


def test_activity_at_time_with_aware_datetimes():
    cal = datetime(2026, 12, 13, 17, 0, tzinfo=UTC)
    later = cal + timedelta(hours=64.1)
    assert rx.activity_at_time_gbq(5.0, cal, later) == pytest.approx(2.5)
    est = timezone(timedelta(hours=-5))
    assert rx.hours_between(datetime(2026, 12, 13, 12, 0, tzinfo=est), cal) == pytest.approx(0.0)
    with pytest.raises(DosimetryError, match="timezone-aware"):
        rx.hours_between(datetime(2026, 12, 13, 12, 0), cal)


def test_residual_activity():
    assert rx.delivered_activity_gbq(2.0, 0.05) == pytest.approx(1.9)
    assert rx.required_vial_activity_gbq(1.9, 0.05) == pytest.approx(2.0)


def test_glass_vial_choice_smallest_vial_within_tolerance():
    days = [24.0 * d for d in range(8)]
    # 2.4 GBq to deliver: 3 GBq vial on day 0 gives +25 %; on day 1, 3 * 2^(-24/64.1) = 2.3143 GBq (-3.6 %)
    c = rx.glass_vial_choice(2.4, hours_after_calibration=days)
    assert c is not None and c.vial_gbq == 3.0 and c.hours_after_calibration == 24.0
    assert c.delivered_gbq == pytest.approx(3.0 * 2.0 ** (-24.0 / 64.1))
    # 4.0 GBq: a 3 GBq vial never reaches 3.6 GBq after calibration; 5 GBq on day 1 gives 3.857 GBq (-3.6 %)
    c = rx.glass_vial_choice(4.0, hours_after_calibration=days)
    assert c is not None and c.vial_gbq == 5.0 and c.hours_after_calibration == 24.0
    # nothing fits 50 GBq
    assert rx.glass_vial_choice(50.0, hours_after_calibration=days) is None


def test_glass_vial_choice_with_residual_and_datetimes():
    cal = datetime(2026, 12, 13, 17, 0, tzinfo=UTC)
    times = [cal + timedelta(days=d, hours=-3) for d in range(1, 6)]  # 09:00 local ET mornings after calibration
    # 2.2 GBq with 5 % residual: 3 GBq at 21 h: 3 * 2^(-21/64.1) * 0.95 = 2.2765 (+3.5 %)
    c = rx.glass_vial_choice(2.2, calibration_time=cal, treatment_times=times, residual_fraction=0.05)
    assert c is not None and c.vial_gbq == 3.0 and c.treatment_time == times[0]
    assert c.hours_after_calibration == pytest.approx(21.0)
    assert c.delivered_gbq == pytest.approx(3.0 * 2.0 ** (-21.0 / 64.1) * 0.95)
    assert c.delivered_gbq == pytest.approx(c.vial_activity_at_treatment_gbq * 0.95)
    with pytest.raises(DosimetryError, match="calibration_time"):
        rx.glass_vial_choice(2.2, treatment_times=times)


def test_glass_vial_options_cover_every_combination():
    opts = rx.glass_vial_options(2.0, hours_after_calibration=[0.0, 48.0])
    assert len(opts) == 12
    assert [o.vial_gbq for o in opts[:2]] == [3.0, 3.0]
    assert opts[1].deviation_fraction == pytest.approx((3.0 * 2 ** (-48 / 64.1) - 2.0) / 2.0)


# -------------------------------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda: rx.mird_activity_gbq(120.0, 1.1, 1.0), "lung_shunt_fraction"),
        (lambda: rx.mird_activity_gbq(120.0, 1.1, -0.01), "lung_shunt_fraction"),
        (lambda: rx.mird_activity_gbq(120.0, 0.0, 0.1), "perfused_mass_kg"),
        (lambda: rx.mird_activity_gbq(float("nan"), 1.1, 0.1), "target_dose_gy"),
        (lambda: rx.mird_activity_gbq(120.0, 1.1, 0.1, k_gy_kg_per_gbq=0.0), "k_gy_kg_per_gbq"),
        (lambda: rx.partition_doses(-1.0, 0.1, 4.0, 0.2, 1.0, 1.0), "activity_gbq"),
        (lambda: rx.partition_doses(1.0, 0.1, 0.0, 0.2, 1.0, 1.0), "tn_ratio"),
        (lambda: rx.partition_doses(1.0, 0.1, 4.0, 0.0, 1.0, 1.0), "tumor_mass_kg"),
        (lambda: rx.partition_doses(1.0, 0.1, 4.0, 0.2, -1.0, 1.0), "normal_liver_mass_kg"),
        (lambda: rx.partition_doses(1.0, 0.1, 4.0, 0.2, 1.0, 0.0), "lung_mass_kg"),
        (lambda: rx.partition_doses(math.inf, 0.1, 4.0, 0.2, 1.0, 1.0), "activity_gbq"),
        (lambda: rx.partition_doses(True, 0.1, 4.0, 0.2, 1.0, 1.0), "activity_gbq"),
        (lambda: rx.bsa_activity_gbq(64.0, 168.0, 480.0, 1650.0, 0.0), "lobe_fraction"),
        (lambda: rx.bsa_activity_gbq(64.0, 1680.0, 480.0, 1650.0), "height_cm"),
        (lambda: rx.bsa_activity_gbq(64.0, 168.0, -1.0, 1650.0), "tumor_ml"),
        (lambda: rx.partition_max_activity(40.0, 30.0, 0.1, 3.0, 0.3, 1.0, 1.0, prior_lung_dose_gy=-1.0),
         "prior_lung_dose_gy"),
        (lambda: rx.glass_vial_choice(2.0, hours_after_calibration=[0.0], tolerance_fraction=1.5),
         "tolerance_fraction"),
        (lambda: rx.glass_vial_choice(2.0, hours_after_calibration=[0.0], residual_fraction=1.0),
         "residual_fraction"),
    ],
)
def test_bad_arguments_raise_dosimetry_error_naming_them(call, argument):
    with pytest.raises(DosimetryError, match=argument) as info:
        call()
    assert isinstance(info.value, EmbplanError)


def test_glass_vial_for_delivery_against_the_decay_law_on_random_prescriptions():
    """Issue 13, for 300 seeded prescriptions between 0.3 and 19 GBq over a 12-day hourly window: the vial is the
    smallest standard size that can reach the prescription at all (size >= prescription, by the decay law
    A = A0 2^(-t/64.10 h)), at the latest hour that still delivers at least the prescription."""
    rng = np.random.default_rng(2026)
    hours = [float(h) for h in range(0, 288)]
    sizes = (3.0, 5.0, 7.0, 10.0, 15.0, 20.0)
    for a in rng.uniform(0.3, 19.0, 300):
        c = rx.glass_vial_for_delivery(float(a), hours_after_calibration=hours)
        expected_size = min(s for s in sizes if s >= a and s * 2.0 ** (-287.0 / 64.10) <= a * 1.0109)
        assert c.option.vial_gbq == expected_size and c.exact
        t_exact = 64.10 * math.log2(expected_size / a)  # hours at which the vial holds exactly a
        assert c.option.hours_after_calibration == math.floor(t_exact + 1e-9)
        assert 0.0 <= c.option.deviation_fraction <= 2.0 ** (1.0 / 64.10) - 1.0 + 1e-12
