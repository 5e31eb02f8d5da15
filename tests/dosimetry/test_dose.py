"""Dose maps (LDM, VSV, density-corrected VSV) against closed forms, energy balance and the published tables."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embplan.dosimetry import dose as D
from embplan.dosimetry.kernels import y90_voxel_kernel
from embplan.errors import DosimetryError, EmbplanError
from embplan.grid import Grid
from embplan.nuclides import MEV_TO_J, energy_per_decay_mev, y90_mean_life_s

METHODS = ("ldm", "vsv", "vsv_density")


def ldm_closed_form_gy(tia_mbq_s: float, voxel_ml: float, density: float, k: float = 49.67) -> float:
    """D = K A0 / M with A0 = cumulated activity / mean life (full decay in situ), K in Gy kg / GBq."""
    a0_gbq = tia_mbq_s / y90_mean_life_s() / 1000.0
    return k * a0_gbq / (density * voxel_ml * 1e-3)


def emitted_energy_j(tia_total_mbq_s: float, k: float = 49.67) -> float:
    return tia_total_mbq_s * 1e6 * energy_per_decay_mev(k) * MEV_TO_J


# ------------------------------------------------------------------------------------------------ uniform region
@pytest.mark.parametrize("voxel", [4.0, (3.0, 4.0, 5.0)])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("density", [1.04, 1.06])
def test_uniform_activity_reproduces_local_deposition_deep_inside(method, voxel, density):
    spacing = (voxel,) * 3 if isinstance(voxel, float) else voxel
    half = [n // 2 for n in y90_voxel_kernel(spacing).shape]
    shape = tuple(2 * h + 2 * h + 6 for h in half)  # the active block holds the kernel's reach on every side
    grid = Grid(shape=shape, spacing_mm=spacing)
    tia = np.zeros(shape)
    tia[1:-1, 1:-1, 1:-1] = 250.0
    dens = None if method == "vsv" else density
    d = D.absorbed_dose_gy(tia, grid, method, dens)
    deep = tuple(slice(1 + h, n - 1 - h) for h, n in zip(half, shape, strict=True))
    expected = ldm_closed_form_gy(250.0, grid.voxel_volume_ml, 1.04 if method == "vsv" else density)
    np.testing.assert_allclose(d[deep], expected, rtol=0.01)
    # the kernel is normalised to K: in fact equal to rounding
    np.testing.assert_allclose(d[deep], expected, rtol=1e-6)


def test_k_sets_the_energy_per_decay_for_every_method():
    grid = Grid.cubic((16, 16, 16), 4.0)
    tia = np.zeros(grid.shape)
    tia[1:-1, 1:-1, 1:-1] = 10.0
    for method in METHODS:
        a = D.absorbed_dose_gy(tia, grid, method, 1.04, k_gy_kg_per_gbq=49.67)
        b = D.absorbed_dose_gy(tia, grid, method, 1.04, k_gy_kg_per_gbq=50.0)
        assert b[8, 8, 8] / a[8, 8, 8] == pytest.approx(50.0 / 49.67, rel=1e-6)


# ------------------------------------------------------------------------------------------------ hot voxel
@pytest.mark.parametrize("where", ["centre", "corner"])
def test_one_hot_voxel_reproduces_the_kernel(where):
    grid = Grid.cubic((13, 12, 11), 4.0)
    kern = y90_voxel_kernel(4.0).mgy_per_mbq_s
    h = kern.shape[0] // 2
    src = (6, 6, 5) if where == "centre" else (0, 1, 10)
    tia = np.zeros(grid.shape)
    tia[src] = 3.0
    d = D.absorbed_dose_gy(tia, grid, "vsv")
    expected = np.zeros(grid.shape)
    for dz, dy, dx in np.ndindex(kern.shape):
        z, y, x = src[0] + dz - h, src[1] + dy - h, src[2] + dx - h
        if 0 <= z < grid.shape[0] and 0 <= y < grid.shape[1] and 0 <= x < grid.shape[2]:
            expected[z, y, x] = 3.0 * kern[dz, dy, dx] * 1e-3
    np.testing.assert_allclose(d, expected, rtol=1e-9, atol=1e-12 * expected.max())
    # same through vsv_density in soft tissue, and LDM keeps all of it in the voxel
    np.testing.assert_allclose(D.absorbed_dose_gy(tia, grid, "vsv_density", 1.04), d, rtol=1e-12, atol=1e-15)
    ldm = D.absorbed_dose_gy(tia, grid, "ldm")
    assert np.count_nonzero(ldm) == 1
    assert ldm[src] == pytest.approx(ldm_closed_form_gy(3.0, grid.voxel_volume_ml, 1.04), rel=1e-9)


def _lanconelli(shared_reference, voxel_mm: float) -> dict[tuple[int, int, int], float]:
    path = shared_reference / "y90_vsv_lanconelli2012_softtissue.csv"
    rows = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
    out = {}
    for r in csv.DictReader(rows):
        if float(r["voxel_mm"]) == voxel_mm:
            out[(int(r["i"]), int(r["j"]), int(r["k"]))] = float(r["S_mGy_per_MBq_s"])
    return out


@pytest.mark.reference
@pytest.mark.parametrize("voxel_mm", [3.0, 4.42])
def test_hot_voxel_dose_matches_the_published_voxel_s_values(shared_reference, voxel_mm):
    table = _lanconelli(shared_reference, voxel_mm)
    assert table, f"no {voxel_mm} mm table"
    grid = Grid.cubic((15, 15, 15), voxel_mm)
    tia = np.zeros(grid.shape)
    tia[7, 7, 7] = 1.0  # 1 MBq s: dose in mGy = S
    d_mgy = D.absorbed_dose_gy(tia, grid, "vsv") * 1e3
    # tolerances of the shared README: centre 2%, face 3%, edge and corner 5%
    for (i, j, k), tol in (((0, 0, 0), 0.02), ((0, 0, 1), 0.03), ((0, 1, 1), 0.05), ((1, 1, 1), 0.05)):
        assert d_mgy[7 + k, 7 + j, 7 + i] == pytest.approx(table[(i, j, k)], rel=tol)


# ------------------------------------------------------------------------------------------------ linearity, sign
@settings(max_examples=15)
@given(
    st.floats(0.0, 1e3), st.floats(0.0, 1e3), st.integers(0, 2**31 - 1), st.sampled_from(METHODS)
)
def test_dose_is_linear_in_activity(a, b, seed, method):
    rng = np.random.default_rng(seed)
    grid = Grid(shape=(9, 10, 11), spacing_mm=(4.0, 4.0, 4.0))
    t1 = rng.gamma(0.5, 10.0, grid.shape) * (rng.random(grid.shape) < 0.4)
    t2 = rng.gamma(2.0, 1.0, grid.shape)
    rho = rng.uniform(0.25, 1.9, grid.shape)
    d1 = D.absorbed_dose_gy(t1, grid, method, rho if method != "vsv" else None)
    d2 = D.absorbed_dose_gy(t2, grid, method, rho if method != "vsv" else None)
    d12 = D.absorbed_dose_gy(a * t1 + b * t2, grid, method, rho if method != "vsv" else None)
    ref = a * d1 + b * d2
    np.testing.assert_allclose(d12, ref, rtol=1e-9, atol=1e-12 * (ref.max() + 1e-300))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("layout", ["sparse", "dense"])
def test_no_negative_dose(method, layout):
    rng = np.random.default_rng(3)
    grid = Grid.cubic((30, 30, 30), 2.0)
    tia = np.zeros(grid.shape)
    if layout == "sparse":
        idx = tuple(rng.integers(0, 30, (3, 12)))
        tia[idx] = 10.0 ** rng.uniform(-6, 6, 12)
    else:  # a dense block over twelve decades: an FFT leaves about -1e-13 Gy where the exact dose is 0
        tia[6:-6, 6:-6, 6:-6] = 10.0 ** rng.uniform(-6, 6, (18, 18, 18))
    rho = rng.uniform(0.0012, 2.0, grid.shape)
    d = D.absorbed_dose_gy(tia, grid, method, rho if method == "vsv_density" else None)
    assert np.all(np.isfinite(d)) and d.min() >= 0.0
    assert np.all(d[tia > 0] > 0)


# ------------------------------------------------------------------------------------------------ energy balance
@pytest.mark.parametrize("method", METHODS)
def test_energy_balance(method):
    """sum(dose x mass) over a volume holding the kernel's reach = energy emitted (E per decay x decays)."""
    rng = np.random.default_rng(11)
    grid = Grid(shape=(18, 20, 22), spacing_mm=(3.0, 4.0, 5.0))
    half = [n // 2 for n in y90_voxel_kernel(grid.spacing_mm).shape]
    tia = np.zeros(grid.shape)
    inner = tuple(slice(h, n - h) for h, n in zip(half, grid.shape, strict=True))
    tia[inner] = rng.gamma(1.0, 50.0, tia[inner].shape)
    rho = rng.uniform(0.25, 1.9, grid.shape)  # lung to bone, voxel by voxel
    dens = None if method == "vsv" else rho
    d = D.absorbed_dose_gy(tia, grid, method, dens)
    mass_kg = (1.04 if dens is None else rho) * grid.voxel_volume_ml * 1e-3
    absorbed_j = float(np.sum(d * mass_kg))
    assert absorbed_j == pytest.approx(emitted_energy_j(float(tia.sum())), rel=1e-6)


# ------------------------------------------------------------------------------------------------ lung
def test_uniform_lung_region_gives_the_local_deposition_lung_dose_with_vsv_density():
    grid = Grid.cubic((16, 16, 16), 4.0)
    lung_rho = float(D.hu_to_density_g_cm3(-740.0))
    assert 0.25 <= lung_rho <= 0.31
    tia = np.zeros(grid.shape)
    tia[1:-1, 1:-1, 1:-1] = 40.0
    rho = np.full(grid.shape, lung_rho)
    expected = ldm_closed_form_gy(40.0, grid.voxel_volume_ml, lung_rho)
    d = D.absorbed_dose_gy(tia, grid, "vsv_density", rho)
    np.testing.assert_allclose(d[5:11, 5:11, 5:11], expected, rtol=0.01)
    np.testing.assert_allclose(D.absorbed_dose_gy(tia, grid, "ldm", rho)[5:11, 5:11, 5:11], expected, rtol=1e-9)
    # the plain soft-tissue kernel would give the soft-tissue dose (-75% here): it reports none in lung
    plain = D.absorbed_dose_gy(tia, grid, "vsv", rho)
    assert np.all(np.isnan(plain))
    dm = D.dose_map(tia, grid, "vsv", rho)
    assert any("NaN" in n for n in dm.notes)


def test_liver_lung_interface_each_side_gets_its_own_local_deposition_dose_far_from_it():
    grid = Grid.cubic((30, 12, 12), 4.0)
    rho = np.where(np.arange(30)[:, None, None] < 15, 1.06, 0.26) * np.ones(grid.shape)
    tia = np.zeros(grid.shape)
    tia[:, 1:-1, 1:-1] = 15.0
    d = D.absorbed_dose_gy(tia, grid, "vsv_density", rho)
    liver, lung = d[3:11, 4:8, 4:8], d[19:27, 4:8, 4:8]
    np.testing.assert_allclose(liver, ldm_closed_form_gy(15.0, grid.voxel_volume_ml, 1.06), rtol=0.01)
    np.testing.assert_allclose(lung, ldm_closed_form_gy(15.0, grid.voxel_volume_ml, 0.26), rtol=0.01)
    # the plain kernel reports the liver side and nothing on the lung side
    plain = D.absorbed_dose_gy(tia, grid, "vsv", rho)
    assert np.all(np.isnan(plain[15:])) and np.all(np.isfinite(plain[:15]))


# ------------------------------------------------------------------------------------------------ CT -> density
def test_hu_to_density_calibration_nodes_and_lung():
    f = D.hu_to_density_g_cm3
    assert f(-1000) == pytest.approx(0.0012)
    assert f(-2000) == pytest.approx(0.0012)  # constant beyond the nodes
    assert f(0) == pytest.approx(1.0)
    assert f(-740) == pytest.approx(0.26, abs=0.005)  # inflated lung, ICRU 44
    assert f(-700) == pytest.approx(0.30, abs=0.005)
    assert f(60) == pytest.approx(1.06, abs=0.005)  # liver
    assert f(1600) == pytest.approx(1.92) and f(4000) == pytest.approx(1.92)
    hu = np.linspace(-1000, 3000, 401).reshape(1, 1, -1)
    rho = f(hu)
    assert rho.shape == hu.shape and np.all(np.diff(rho.ravel()) >= 0)
    # lung is never clipped to water
    assert np.all(f(np.arange(-950, -450, 10)) < 0.56)


def test_hu_calibration_is_overridable_and_validated():
    cal = D.HUDensityCalibration(name="site", hu=(-1024, 0, 3071), density_g_cm3=(0.001, 1.0, 2.8), source="site QA")
    assert D.hu_to_density_g_cm3(-512, cal) == pytest.approx(0.5 + 0.001 * 0.5, rel=1e-3)
    for bad in (
        {"hu": (0, -1000), "density_g_cm3": (1.0, 0.0012)},
        {"hu": (-1000, 0), "density_g_cm3": (0.0, 1.0)},
        {"hu": (-1000, 0, 10), "density_g_cm3": (0.5, 1.0)},
        {"hu": (-1000, 0), "density_g_cm3": (1.0, 0.5)},
    ):
        with pytest.raises(Exception) as exc:  # noqa: PT011 - pydantic ValidationError or EmbplanError
            D.HUDensityCalibration(name="bad", source="x", **bad)
        assert "hu" in str(exc.value) or "density" in str(exc.value)
    with pytest.raises(DosimetryError, match="hu"):
        D.hu_to_density_g_cm3(np.array([0.0, np.nan]))


# ------------------------------------------------------------------------------------------------ dtype, roi, result
def test_float32_in_float32_out():
    grid = Grid.cubic((12, 12, 12), 4.0)
    rng = np.random.default_rng(5)
    tia = rng.gamma(1.0, 5.0, grid.shape)
    for method in METHODS:
        d64 = D.absorbed_dose_gy(tia, grid, method, 1.04)
        d32 = D.absorbed_dose_gy(tia.astype(np.float32), grid, method, 1.04)
        assert d64.dtype == np.float64 and d32.dtype == np.float32
        np.testing.assert_allclose(d32, d64, rtol=1e-4, atol=1e-6 * d64.max())


def test_roi_restricts_the_output():
    grid = Grid.cubic((12, 12, 12), 4.0)
    tia = np.random.default_rng(2).gamma(1.0, 5.0, grid.shape)
    roi = np.zeros(grid.shape, bool)
    roi[3:9, 2:7, 4:10] = True
    for method in METHODS:
        full = D.absorbed_dose_gy(tia, grid, method, 1.04)
        part = D.absorbed_dose_gy(tia, grid, method, 1.04, roi=roi)
        assert np.all(part[~roi] == 0)
        np.testing.assert_allclose(part[roi], full[roi], rtol=1e-9)


def test_dose_map_records_what_made_it():
    grid = Grid.cubic((10, 10, 10), 4.0)
    tia = np.ones(grid.shape)
    dm = D.dose_map(tia, grid, "vsv_density", 1.0)
    assert dm.method == "vsv_density" and dm.grid == grid and dm.kernel_density_g_cm3 == 1.04
    assert dm.energy_per_decay_mev == pytest.approx(0.9312, abs=1e-4)
    assert dm.kernel_parameters["voxel_mm"] == [4.0, 4.0, 4.0]
    assert "Mikell" in dm.notes[0]
    with pytest.raises(ValueError):
        dm.dose_gy[0, 0, 0] = 1.0
    prov = dm.provenance()
    assert prov["method"] == "vsv_density" and prov["k_gy_kg_per_gbq"] == 49.67
    # a prebuilt kernel of the wrong voxel size is refused
    with pytest.raises(DosimetryError, match="kernel"):
        D.absorbed_dose_gy(tia, grid, "vsv", kernel=y90_voxel_kernel(5.0))
    own = y90_voxel_kernel(4.0)
    np.testing.assert_array_equal(D.absorbed_dose_gy(tia, grid, "vsv", kernel=own), D.absorbed_dose_gy(tia, grid))


# ------------------------------------------------------------------------------------------------ bad input
def _bad_cases():
    grid = Grid.cubic((6, 6, 6), 4.0)
    ok = np.ones(grid.shape)
    nan = ok.copy()
    nan[1, 2, 3] = np.nan
    neg = ok.copy()
    neg[0, 0, 0] = -1.0
    inf = ok.copy()
    inf[2, 2, 2] = np.inf
    zero_rho = np.ones(grid.shape)
    zero_rho[1, 1, 1] = 0.0
    nan_rho = np.ones(grid.shape)
    nan_rho[1, 1, 1] = np.nan
    bad_spacing = Grid.model_construct(shape=(6, 6, 6), spacing_mm=(4.0, 0.0, 4.0))
    return [
        ((nan, grid, "vsv", None), {}, "tia_mbq_s.*NaN"),
        ((inf, grid, "ldm", None), {}, "tia_mbq_s.*infinite"),
        ((neg, grid, "vsv", None), {}, "tia_mbq_s.*negative"),
        ((np.ones((6, 6, 5)), grid, "vsv", None), {}, "tia_mbq_s.*shape"),
        ((np.ones((6, 6)), grid, "ldm", None), {}, "tia_mbq_s.*shape"),
        ((ok.astype(complex), grid, "ldm", None), {}, "tia_mbq_s.*dtype"),
        ((ok, grid, "vsv_density", np.ones((6, 6, 7))), {}, "density_g_cm3.*shape"),
        ((ok, grid, "vsv_density", zero_rho), {}, "density_g_cm3.*<= 0"),
        ((ok, grid, "vsv_density", nan_rho), {}, "density_g_cm3.*NaN"),
        ((ok, grid, "ldm", -1.0), {}, "density_g_cm3"),
        ((ok, grid, "vsv_density", None), {}, "density_g_cm3.*required"),
        ((ok, grid, "monte_carlo", None), {}, "method"),
        ((ok, grid, "vsv", None), {"roi": np.ones((6, 6, 5), bool)}, "roi.*shape"),
        ((ok, grid, "vsv", None), {"roi": np.ones((6, 6, 6))}, "roi.*boolean"),
        ((ok, grid, "vsv", None), {"k_gy_kg_per_gbq": 0.0}, "k_gy_kg_per_gbq"),
        ((ok, grid, "vsv_density", 1.0), {"kernel_density_g_cm3": -1.04}, "kernel_density_g_cm3"),
        ((ok, bad_spacing, "vsv", None), {}, "spacing"),
        ((ok, {"shape": (6, 6, 6)}, "vsv", None), {}, "grid"),
    ]


@pytest.mark.parametrize("args, kwargs, pattern", _bad_cases())
def test_bad_input_raises_naming_the_problem(args, kwargs, pattern):
    with pytest.raises(EmbplanError, match=pattern):
        D.absorbed_dose_gy(*args, **kwargs)


def test_non_positive_spacing_is_refused_by_the_grid():
    for spacing in ((4.0, 0.0, 4.0), (4.0, -1.0, 4.0), (math.nan, 4.0, 4.0)):
        with pytest.raises(EmbplanError, match="spacing_mm"):
            Grid(shape=(4, 4, 4), spacing_mm=spacing)


def test_density_is_checked_wherever_it_enters_the_dose():
    """A NaN, infinite or non-positive density raises, naming the field, wherever it can change the result:
    anywhere for ldm and vsv (they use the whole map), within the kernel's reach of the activity for vsv_density
    (the dose is computed there, in the pass that applies the densities, also split over the threads). Beyond that
    reach the vsv_density dose is exactly 0 whatever the density, and a bad value there changes nothing."""
    grid = Grid.cubic((16, 16, 16), 4.0)
    tia = np.zeros(grid.shape, dtype=np.float32)
    tia[1:3, 1:3, 1:3] = 100.0
    good = D.absorbed_dose_gy(tia, grid, "vsv_density", np.ones(grid.shape, dtype=np.float32))
    reach = good > 0
    assert reach[3, 3, 3] and not reach[15, 15, 15]
    for bad in (np.nan, 0.0, -0.0, -1.0, np.inf):
        for where in ((2, 2, 2), (3, 4, 3), (15, 15, 15)):
            rho = np.ones(grid.shape, dtype=np.float32)
            rho[where] = bad
            for method in ("ldm", "vsv"):
                with pytest.raises(DosimetryError, match="density_g_cm3"):
                    D.absorbed_dose_gy(tia, grid, method, rho)
            for parallel_min in (D._PARALLEL_MIN_BYTES, 0):
                with pytest.MonkeyPatch.context() as mp:
                    mp.setattr(D, "_PARALLEL_MIN_BYTES", parallel_min)
                    if where == (15, 15, 15):  # beyond the reach: the same dose as with a good density there
                        np.testing.assert_array_equal(D.absorbed_dose_gy(tia, grid, "vsv_density", rho), good)
                    else:
                        with pytest.raises(DosimetryError, match=r"density_g_cm3 \(where the dose is computed"):
                            D.absorbed_dose_gy(tia, grid, "vsv_density", rho)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vsv_density_is_the_vsv_dose_rescaled_to_each_voxel_mass(dtype):
    """Mikell 2015's correction: D_density = D_vsv x rho_kernel / rho_voxel, voxel by voxel, everywhere (zero where
    the kernel dose is zero)."""
    grid = Grid.cubic((14, 15, 16), 4.0)
    rng = np.random.default_rng(8)
    tia = np.zeros(grid.shape, dtype=dtype)
    tia[5:9, 6:10, 4:9] = rng.uniform(10.0, 100.0, (4, 4, 5))
    rho = rng.uniform(0.2, 1.9, grid.shape).astype(dtype)
    plain = D.absorbed_dose_gy(tia, grid, "vsv")
    corrected = D.absorbed_dose_gy(tia, grid, "vsv_density", rho)
    assert corrected.dtype == np.dtype(dtype)
    expected = plain.astype(np.float64) * (1.04 / rho.astype(np.float64))
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(corrected, expected, rtol=rtol, atol=rtol * float(expected.max()) * 1e-3)
    assert not corrected[plain == 0].any()


_EDGE_VALUES = (0.0, -0.0, 1.0, -1.0, math.nan, -math.nan, math.inf, -math.inf, 1e-320, 5e-45, -5e-45, 3.4e38, 1e300)


@settings(max_examples=200, deadline=None)
@given(
    dtype=st.sampled_from([np.float32, np.float64]),
    allow_zero=st.booleans(),
    layout=st.sampled_from(["C", "F", "strided"]),
    base=st.floats(min_value=1e-3, max_value=1e3),
    planted=st.lists(st.tuples(st.integers(0, 63), st.sampled_from(_EDGE_VALUES)), max_size=3),
    big=st.booleans(),
)
def test_input_check_agrees_with_an_exact_float_test(dtype, allow_zero, layout, base, planted, big):
    """The one-pass bit test behind the activity and density checks says 'all finite and > 0' (or '>= 0') exactly
    when plain float comparisons do: for -0.0, subnormals, NaN of either sign, +-inf, the largest floats, in any
    memory layout, and when the array is split over the threads."""
    shape = (4, 4, 4)
    with np.errstate(over="ignore"):
        a = np.full(shape, base, dtype=dtype)
        for idx, v in planted:
            a.reshape(-1)[idx] = v
    if layout == "F":
        a = np.asfortranarray(a)
    elif layout == "strided":
        a = a[:, ::2]
    exact = bool(np.isfinite(a).all() and ((a >= 0).all() if allow_zero else (a > 0).all()))
    with pytest.MonkeyPatch.context() as mp:
        if big:
            mp.setattr(D, "_PARALLEL_MIN_BYTES", 0)  # the threaded split, on a small array
        assert D._all_finite_positive(a, allow_zero) is exact


def test_hu_to_density_in_pieces_equals_one_interpolation(monkeypatch):
    """The conversion runs piece by piece (issue 16): the same values as one np.interp over the whole volume, in
    float64 or rounded once to float32, across piece boundaries; NaN counted over every piece."""
    monkeypatch.setattr(D, "HU_DENSITY_PIECE_VOXELS", 1000)
    rng = np.random.default_rng(3)
    hu = rng.uniform(-1100, 1700, size=(7, 13, 29)).astype(np.float32)
    cal = D.DEFAULT_HU_DENSITY_CALIBRATION
    ref = np.interp(hu.astype(np.float64), np.asarray(cal.hu), np.asarray(cal.density_g_cm3))
    got64 = D.hu_to_density_g_cm3(hu)
    got32 = D.hu_to_density_g_cm3(hu, dtype=np.float32)
    assert got64.dtype == np.float64 and np.array_equal(got64, ref)
    assert got32.dtype == np.float32 and np.array_equal(got32, ref.astype(np.float32))
    hu[0, 0, 0] = np.nan
    hu[-1, -1, -1] = np.inf
    with pytest.raises(DosimetryError, match="2 values are NaN or infinite"):
        D.hu_to_density_g_cm3(hu)
    with pytest.raises(DosimetryError, match="dtype"):
        D.hu_to_density_g_cm3(hu, dtype=np.int16)


@pytest.mark.parametrize("method", ["ldm", "vsv", "vsv_density"])
def test_a_float32_density_gives_the_dose_of_its_float64_copy(method):
    """The planner passes its float32 density map as it is (issue 16: no grid-sized float64 copy): the dose must be
    bit for bit the one of the map converted to float64 (lung voxels below the plain kernel's threshold included)."""
    from embplan.grid import Grid

    rng = np.random.default_rng(12)
    shape = (14, 16, 18)
    grid = Grid(shape=shape, spacing_mm=(4.42, 4.42, 4.42))
    tia = np.zeros(shape)
    tia[4:10, 5:11, 6:12] = rng.uniform(0.0, 5.0, (6, 6, 6))
    rho32 = rng.uniform(0.05, 1.3, shape).astype(np.float32)
    rho32[0, 0, :3] = np.float32(D.VSV_MIN_DENSITY_G_CM3)  # on the plain kernel's threshold, as float32
    a = D.absorbed_dose_gy(tia, grid, method, rho32)
    b = D.absorbed_dose_gy(tia, grid, method, rho32.astype(np.float64))
    assert a.dtype == b.dtype == np.float64
    np.testing.assert_array_equal(a, b)  # NaN where both are NaN (vsv in lung)
