"""DVH, Dx/Vx, mean dose, BED, EUD and NTCP against closed forms."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from embplan.dosimetry import metrics as m
from embplan.errors import DosimetryError, EmbplanError
from embplan.grid import Grid


# ------------------------------------------------------------------------------------------------ uniform dose
@pytest.mark.parametrize("d0", [0.0, 0.3, 40.0, 123.456])
def test_uniform_dose_dvh_is_a_step(d0):
    dose = np.full((4, 5, 6), d0)
    h = m.dvh(dose, None, voxel_volume_ml=0.008, bin_width_gy=0.1)
    assert h.total_volume_ml == pytest.approx(120 * 0.008)
    assert h.mean_gy == pytest.approx(d0) and h.min_gy == d0 and h.max_gy == d0
    assert h.volume_fraction[0] == 1.0 and h.volume_fraction[-1] == 0.0
    # step: every edge at or below d0 is fully covered, every edge above it is empty
    assert np.all(h.volume_fraction[h.dose_bins_gy <= d0] == 1.0)
    assert np.all(h.volume_fraction[h.dose_bins_gy > d0] == 0.0)
    for x in (0, 2, 50, 70, 95, 98, 100):
        assert h.d_gy(x) == pytest.approx(d0, abs=1e-12)
    assert h.v_percent(d0) == 100.0
    assert h.v_percent(d0 + 1e-6) == 0.0
    if d0 > 0:
        assert h.v_percent(d0 - 1e-6) == 100.0


# ------------------------------------------------------------------------------------------------ linear gradient
def test_linear_gradient_in_a_box():
    nz, dmax = 400, 100.0
    dz = dmax * (np.arange(nz) + 0.5) / nz  # D(z) linear, plane centres
    dose = np.broadcast_to(dz[:, None, None], (nz, 3, 2)).copy()
    bw = 0.1
    h = m.dvh(dose, np.ones(dose.shape, bool), voxel_volume_ml=0.001, bin_width_gy=bw)
    # continuous closed form: V(>= D) = 1 - D / Dmax; the discrete planes are within 1/nz of it
    tol_v = 1.0 / nz + 1e-12
    expected = np.clip(1.0 - h.dose_bins_gy / dmax, 0.0, 1.0)
    assert np.max(np.abs(h.volume_fraction - expected)) <= tol_v
    # the cumulative DVH is a straight line in dose
    slope, intercept = np.polyfit(h.dose_bins_gy, h.volume_fraction, 1)
    assert slope == pytest.approx(-1.0 / dmax, rel=0.01) and intercept == pytest.approx(1.0, abs=0.01)
    # Dx at known values, mean at the midpoint
    for x in (2, 50, 70, 95, 98):
        assert h.d_gy(x) == pytest.approx((1 - x / 100) * dmax, abs=dmax / nz + bw)
    assert h.mean_gy == pytest.approx(dmax / 2, rel=1e-12)
    for dx in (10.0, 40.0, 70.0, 99.0):
        assert h.v_percent(dx) == pytest.approx(100 * (1 - dx / dmax), abs=100 * tol_v + 100 * bw / dmax)


def test_d_and_v_are_inverse_of_each_other_on_a_gradient():
    dose = np.linspace(0.0, 80.0, 8001).reshape(1, 1, -1)
    h = m.dvh(dose, None, voxel_volume_ml=1.0, bin_width_gy=0.5)
    for x in (5.0, 33.0, 50.0, 90.0):
        assert h.v_percent(h.d_gy(x)) == pytest.approx(x, abs=0.05)


# ------------------------------------------------------------------------------------------------ sphere, radial dose
def test_sphere_in_a_radial_field():
    grid = Grid.cubic((41, 41, 41), 1.0)
    r_sphere, d0 = 15.0, 60.0
    c = np.array([20.0, 20.0, 20.0])

    def inside(p):
        return np.sum((p - c) ** 2, axis=1) <= r_sphere**2

    frac = m.fraction_inside(grid, inside, supersample=4)
    k, j, i = np.indices(grid.shape)
    r = np.sqrt((i - 20.0) ** 2 + (j - 20.0) ** 2 + (k - 20.0) ** 2)
    dose = d0 * r / r_sphere  # D(r) = D0 r / R
    h = m.dvh(dose, frac, voxel_volume_ml=grid.voxel_volume_ml, bin_width_gy=0.05)
    assert h.total_volume_ml == pytest.approx(4 / 3 * math.pi * r_sphere**3 / 1000, rel=0.005)
    # V(>= D) = 1 - (D / D0)^3; Dx = D0 (1 - x)^(1/3); mean = 3/4 D0
    for dd in (10.0, 30.0, 45.0, 55.0):
        assert h.v_percent(dd) == pytest.approx(100 * (1 - (dd / d0) ** 3), abs=1.5)
    for x in (2, 50, 70, 95):
        assert h.d_gy(x) == pytest.approx(d0 * (1 - x / 100) ** (1 / 3), abs=0.02 * d0)
    assert h.mean_gy == pytest.approx(0.75 * d0, rel=0.01)


# ------------------------------------------------------------------------------------------------ small structures
@pytest.mark.parametrize("voxel_mm", [0.5, 1.0, 2.0, 3.0, 4.0])
def test_small_structure_volume_does_not_depend_on_the_grid(voxel_mm):
    radius = 3.0  # 113 mm3, smaller than a few 4 mm voxels
    n = int(math.ceil(16.0 / voxel_mm))
    grid = Grid.cubic((n, n, n), voxel_mm)
    c = np.array([7.3, 6.1, 8.2])  # off the voxel lattice

    def inside(p):
        return np.sum((p - c) ** 2, axis=1) <= radius**2

    frac = m.fraction_inside(grid, inside, supersample=max(2, int(round(8 * voxel_mm / 2))))
    true_ml = 4 / 3 * math.pi * radius**3 / 1000
    # linear field D = 10 + 2 x: the mean over a sphere is the dose at its centre (up to the dose step across a
    # partial voxel, whose inside part is not centred on the voxel)
    k, j, i = np.indices(grid.shape)
    dose = 10.0 + 2.0 * (i * voxel_mm)
    h = m.dvh(dose, frac, voxel_volume_ml=grid.voxel_volume_ml, bin_width_gy=0.01)
    assert h.total_volume_ml == pytest.approx(true_ml, rel=0.02)
    assert h.mean_gy == pytest.approx(10.0 + 2.0 * c[0], abs=0.05 * 2.0 * voxel_mm)


def test_fraction_counts_partial_voxels_and_boolean_equals_zero_one():
    rng = np.random.default_rng(1)
    dose = rng.uniform(0, 50, (5, 6, 7))
    mask = rng.random((5, 6, 7)) > 0.5
    a = m.dvh(dose, mask, voxel_volume_ml=0.1)
    b = m.dvh(dose, mask.astype(float), voxel_volume_ml=0.1)
    np.testing.assert_array_equal(a.volume_fraction, b.volume_fraction)
    half = m.dvh(dose, mask * 0.5, voxel_volume_ml=0.1)
    assert half.total_volume_ml == pytest.approx(0.5 * a.total_volume_ml)
    np.testing.assert_allclose(half.volume_fraction, a.volume_fraction, atol=1e-12)
    # one voxel at 40 Gy fully inside, one at 0 Gy a quarter inside: V40 = 1 / 1.25
    dose2 = np.zeros((1, 1, 2))
    dose2[0, 0, 0] = 40.0
    h = m.dvh(dose2, np.array([[[1.0, 0.25]]]), voxel_volume_ml=1.0)
    assert h.v_percent(40.0) == pytest.approx(80.0)
    assert h.mean_gy == pytest.approx(32.0)


# ------------------------------------------------------------------------------------------------ orientation
def test_flipped_and_transposed_arrays_give_the_same_dvh():
    rng = np.random.default_rng(7)
    dose = rng.gamma(2.0, 20.0, (8, 9, 10))
    frac = np.clip(rng.normal(0.6, 0.5, dose.shape), 0, 1)
    ref = m.dvh(dose, frac, voxel_volume_ml=0.05, bin_width_gy=0.25)
    for f in (lambda a: a[::-1], lambda a: a[:, ::-1, ::-1], lambda a: np.transpose(a, (2, 0, 1))):
        h = m.dvh(f(dose), f(frac), voxel_volume_ml=0.05, bin_width_gy=0.25)
        np.testing.assert_allclose(h.volume_fraction, ref.volume_fraction, atol=1e-12)
        assert h.mean_gy == pytest.approx(ref.mean_gy, rel=1e-12)
        assert h.total_volume_ml == pytest.approx(ref.total_volume_ml, rel=1e-12)


# ------------------------------------------------------------------------------------------------ brute-force oracle
@given(
    hnp.arrays(np.float64, (3, 4, 5), elements=st.floats(0.0, 200.0)),
    hnp.arrays(np.float64, (3, 4, 5), elements=st.floats(0.0, 1.0)),
    st.sampled_from([0.05, 0.1, 0.7, 2.0]),
)
def test_dvh_matches_a_brute_force_count(dose, frac, bw):
    frac[0, 0, 0] = 1.0  # never empty
    h = m.dvh(dose, frac, voxel_volume_ml=0.3, bin_width_gy=bw)
    for e, v in zip(h.dose_bins_gy, h.volume_fraction, strict=True):
        brute = frac[dose >= e].sum() / frac.sum()
        assert v == pytest.approx(brute, abs=1e-9)
    assert np.all(np.diff(h.volume_fraction) <= 0)
    dx = h.d_gy([0, 2, 50, 98, 100])
    assert np.all(np.diff(dx) <= 1e-12)
    assert h.min_gy - 1e-12 <= dx.min() and dx.max() <= h.max_gy + 1e-12
    sel = frac > 0
    assert h.min_gy == dose[sel].min() and h.max_gy == dose[sel].max()


def test_round_trip_dict_is_json():
    dose = np.linspace(0, 10, 60).reshape(3, 4, 5)
    h = m.dvh(dose, None, voxel_volume_ml=0.2, name="tumour")
    d = json.loads(json.dumps(h.to_dict()))
    assert set(d["metrics"]) >= {"D2_gy", "D50_gy", "D70_gy", "D95_gy", "D98_gy", "V40Gy_percent", "mean_gy"}
    h2 = m.DVH.from_dict(d)
    np.testing.assert_array_equal(h2.volume_fraction, h.volume_fraction)
    assert h2.d_gy(50) == h.d_gy(50) and h2.name == "tumour"
    with pytest.raises(ValueError):
        h.volume_fraction[0] = 0.5  # read-only


def test_metrics_names_and_values():
    h = m.dvh(np.full((2, 2, 2), 50.0), None, voxel_volume_ml=1.0)
    s = h.metrics(dx_percent=(95,), vx_gy=(40, 70, 100))
    assert s == {"mean_gy": 50.0, "min_gy": 50.0, "max_gy": 50.0, "total_volume_ml": 8.0, "D95_gy": 50.0,
                 "V40Gy_percent": 100.0, "V70Gy_percent": 0.0, "V100Gy_percent": 0.0}


# ------------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"structure": np.zeros((2, 2, 2), bool)}, "empty"),
        ({"structure": np.ones((2, 2, 3), bool)}, "shape"),
        ({"structure": np.full((2, 2, 2), 1.5)}, "[0, 1]"),
        ({"structure": np.full((2, 2, 2), np.nan)}, "finite"),
        ({"voxel_volume_ml": 0.0}, "voxel_volume_ml"),
        ({"bin_width_gy": -0.1}, "bin_width_gy"),
        ({"bin_width_gy": 1e-9}, "bin_width_gy"),
    ],
)
def test_bad_input_raises_naming_the_problem(kwargs, word):
    args = {"structure": None, "voxel_volume_ml": 1.0, "bin_width_gy": 0.1, **kwargs}
    with pytest.raises(EmbplanError, match=word.replace("[", r"\[").replace("]", r"\]")):
        m.dvh(np.full((2, 2, 2), 30.0), **args)


def test_nan_dose_inside_structure_raises_but_outside_is_ignored():
    dose = np.full((2, 2, 2), 10.0)
    dose[0, 0, 0] = np.nan
    mask = np.ones((2, 2, 2), bool)
    with pytest.raises(DosimetryError, match="NaN"):
        m.dvh(dose, mask, voxel_volume_ml=1.0)
    mask[0, 0, 0] = False
    assert m.dvh(dose, mask, voxel_volume_ml=1.0).mean_gy == 10.0
    with pytest.raises(DosimetryError, match="percent"):
        m.dvh(dose, mask, voxel_volume_ml=1.0).d_gy(101)


# ------------------------------------------------------------------------------------------------ mean dose
def test_mean_dose_weighted_by_fraction():
    dose = np.array([[[10.0, 20.0, 90.0]]])
    assert m.mean_dose_gy(dose, np.array([[[1.0, 1.0, 0.0]]])) == pytest.approx(15.0)
    assert m.mean_dose_gy(dose, np.array([[[1.0, 0.5, 0.0]]])) == pytest.approx(40.0 / 3)
    assert m.mean_dose_gy(dose) == pytest.approx(40.0)


# ------------------------------------------------------------------------------------------------ BED
def test_bed_40gy_liver_is_about_64gy():
    # lambda = ln2/64.1 h = 0.010813/h, mu = ln2/2.5 h = 0.27726/h: lambda/(mu+lambda) = 0.037537
    # BED = 40 (1 + 40 * 0.037537 / 2.5) = 64.02 Gy (EVIDENCE.md 2.2: about 64 Gy)
    assert m.bed_gy(40.0, 2.5, 2.5, half_life_h=64.1) == pytest.approx(64.02, abs=0.01)
    assert m.LIVER_RADIOBIOLOGY.bed_gy(40.0) == pytest.approx(64.02, abs=0.02)


def test_bed_closed_form_limits():
    ab, trep = 10.0, 1.5
    # small D: BED -> D (quadratic term vanishes)
    assert m.bed_gy(1e-4, ab, trep) == pytest.approx(1e-4, rel=1e-5)
    # large D: (BED - D) / D^2 = lambda / ((mu + lambda) ab), BED grows as D^2
    lam, mu = math.log(2) / 64.10, math.log(2) / trep
    for d in (1e3, 1e6):
        assert (m.bed_gy(d, ab, trep) - d) / d**2 == pytest.approx(lam / ((mu + lam) * ab), rel=1e-9)
    # instant repair: BED -> D; no repair (mu -> 0): the acute limit D (1 + D / (alpha/beta))
    assert m.bed_gy(100.0, ab, 1e-9) == pytest.approx(100.0, rel=1e-9)
    assert m.bed_gy(100.0, ab, 1e9) == pytest.approx(100.0 * (1 + 100.0 / ab), rel=1e-6)


def test_bed_is_vectorised():
    d = np.array([[0.0, 10.0], [50.0, 200.0]])
    b = m.bed_gy(d, 2.5, 2.5)
    assert b.shape == d.shape
    np.testing.assert_allclose(b.ravel(), [m.bed_gy(float(x), 2.5, 2.5) for x in d.ravel()])
    assert np.all(np.diff(b.ravel()) > 0)
    with pytest.raises(DosimetryError, match="dose_gy"):
        m.bed_gy(-1.0, 2.5, 2.5)
    with pytest.raises(DosimetryError, match="alpha_beta_gy"):
        m.bed_gy(1.0, 0.0, 2.5)


# ------------------------------------------------------------------------------------------------ EUD, NTCP
def test_geud_closed_forms():
    uniform = np.full((2, 3, 4), 37.0)
    for a in (-10.0, -1.0, 0.0, 0.5, 1.0, 8.0, 50.0):
        assert m.eud_gy(uniform, None, a) == pytest.approx(37.0, rel=1e-12)
    two = np.array([[[20.0, 80.0]]])
    assert m.eud_gy(two, None, 1.0) == pytest.approx(50.0)
    assert m.eud_gy(two, None, 2.0) == pytest.approx(math.sqrt((400 + 6400) / 2))
    assert m.eud_gy(two, None, 0.0) == pytest.approx(40.0)  # geometric mean
    assert m.eud_gy(two, None, -1.0) == pytest.approx(2 / (1 / 20 + 1 / 80))
    assert m.eud_gy(two, None, 500.0) == pytest.approx(80.0, rel=0.002)  # -> max
    assert m.eud_gy(np.array([[[0.0, 80.0]]]), None, -5.0) == 0.0


def test_radiobiological_eud_closed_forms():
    assert m.radiobiological_eud_gy(np.full((2, 2, 2), 120.0), None, 0.01) == pytest.approx(120.0)
    two = np.array([[[100.0, 300.0]]])
    a = 0.02
    expected = -math.log(0.5 * math.exp(-a * 100) + 0.5 * math.exp(-a * 300)) / a
    assert m.radiobiological_eud_gy(two, None, a) == pytest.approx(expected, rel=1e-12)
    assert 100.0 < expected < 200.0  # cold spot dominates


def test_lyman_ntcp():
    p = m.LIVER_LYMAN_STRIGARI2010
    assert p.ntcp(np.full((3, 3, 3), p.td50_gy)) == pytest.approx(0.5, abs=1e-12)
    # one standard deviation above TD50: Phi(1)
    d = p.td50_gy * (1 + p.m)
    assert m.lyman_ntcp(np.full((2, 2, 2), d), td50_gy=p.td50_gy, m=p.m, n=1.0) == pytest.approx(0.841345, abs=1e-6)
    # n = 1: only the mean dose matters
    half = np.array([[[40.0, 64.0]]])
    assert m.lyman_ntcp(half, td50_gy=52.0, m=0.28, n=1.0) == pytest.approx(0.5, abs=1e-12)
    # small n (serial): D_eff = ((40^20 + 64^20) / 2)^(1/20), dominated by the hot half
    d_eff = ((40.0**20 + 64.0**20) / 2) ** (1 / 20)
    phi = 0.5 * (1 + math.erf((d_eff - 52.0) / (0.28 * 52.0) / math.sqrt(2)))
    assert m.lyman_ntcp(half, td50_gy=52.0, m=0.28, n=0.05) == pytest.approx(phi, rel=1e-9)
    assert phi > 0.7


def test_parameter_sets_carry_source_and_uncertainty():
    for p in (m.LIVER_RADIOBIOLOGY, m.TUMOUR_RADIOBIOLOGY, m.LIVER_LYMAN_STRIGARI2010):
        assert p.uncertain is True and "[U" in p.source
    assert (m.LIVER_RADIOBIOLOGY.alpha_beta_gy, m.LIVER_RADIOBIOLOGY.repair_half_time_h) == (2.5, 2.5)
    assert (m.TUMOUR_RADIOBIOLOGY.alpha_beta_gy, m.TUMOUR_RADIOBIOLOGY.repair_half_time_h) == (10.0, 1.5)
    with pytest.raises(Exception):  # noqa: B017 - pydantic frozen instance
        m.LIVER_RADIOBIOLOGY.alpha_beta_gy = 3.0  # type: ignore[misc]
    custom = m.RadiobiologyParams(name="x", alpha_beta_gy=8.0, repair_half_time_h=2.5, source="Son 2013",
                                  uncertain=False)
    assert custom.bed_gy(0.0) == 0.0


# ------------------------------------------------------------------------------------------------ DVH of samples
@pytest.mark.parametrize("kind", ["mask", "fractions"])
@pytest.mark.parametrize("mass", [False, True])
def test_dvh_from_samples_equals_the_grid_dvh_bit_for_bit(kind, mass):
    """The planner gathers each structure's voxels once (issue 16): the DVH of those samples must be the grid DVH,
    bin for bin, for a mask and for fraction-of-voxel weights, with and without mass weighting."""
    rng = np.random.default_rng(7)
    dose = rng.gamma(2.0, 40.0, size=(9, 11, 13))
    rho = rng.uniform(0.2, 1.2, size=dose.shape).astype(np.float32)
    if kind == "mask":
        struct = rng.random(dose.shape) < 0.3
        idx = np.flatnonzero(struct)
        frac = None
    else:
        struct = np.where(rng.random(dose.shape) < 0.4, rng.uniform(0.05, 1.0, size=dose.shape), 0.0)
        idx = np.flatnonzero(struct > 0)
        frac = struct.reshape(-1)[idx]
    ref = m.dvh(dose, struct, voxel_volume_ml=0.05, bin_width_gy=0.5, name="s",
                mass_density_g_cm3=rho if mass else None)
    got = m.dvh_from_samples(dose.reshape(-1)[idx], frac, voxel_volume_ml=0.05, bin_width_gy=0.5, name="s",
                             mass_density_g_cm3=rho.reshape(-1)[idx] if mass else None)
    assert np.array_equal(got.dose_bins_gy, ref.dose_bins_gy)
    assert np.array_equal(got.volume_fraction, ref.volume_fraction)
    assert (got.mean_gy, got.min_gy, got.max_gy, got.total_volume_ml) == (
        ref.mean_gy, ref.min_gy, ref.max_gy, ref.total_volume_ml)
    # and against the closed form of the mean: sum(d w) / sum(w)
    w = (np.ones(idx.size) if frac is None else frac) * (rho.reshape(-1)[idx] if mass else 1.0)
    assert got.mean_gy == pytest.approx(float((dose.reshape(-1)[idx] * w).sum() / w.sum()), rel=1e-12)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"dose_gy": np.array([]), "fraction": None}, "empty"),
    ({"dose_gy": np.array([1.0, np.nan]), "fraction": None}, "NaN"),
    ({"dose_gy": np.array([1.0, 2.0]), "fraction": np.array([0.5, 1.5])}, "fraction"),
    ({"dose_gy": np.array([1.0, 2.0]), "fraction": np.array([0.0, 1.0])}, "fraction"),
    ({"dose_gy": np.ones((2, 2)), "fraction": None}, "1-D"),
    ({"dose_gy": np.array([1.0, 2.0]), "fraction": None, "mass_density_g_cm3": np.array([1.0, 0.0])},
     "mass_density"),
])
def test_dvh_from_samples_refuses_bad_samples(kwargs, match):
    with pytest.raises(DosimetryError, match=match):
        m.dvh_from_samples(voxel_volume_ml=0.1, name="tumour", **kwargs)
