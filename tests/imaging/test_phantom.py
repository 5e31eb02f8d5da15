"""Tests of the synthetic NET liver phantom: determinism, anatomy, masks, densities and the MAA-like map."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from embplan.dosimetry import prescription as rx
from embplan.errors import EmbplanError, ImagingError
from embplan.imaging.phantom import PHANTOMS, TISSUES, TumorSpec, make_phantom, net_liver_phantom


@pytest.fixture(scope="module")
def ph():
    return net_liver_phantom()


@pytest.fixture(scope="module")
def ph2():
    return net_liver_phantom(7, 2.0)


# ------------------------------------------------------------------------------------------------- determinism
def test_deterministic_bitwise(ph):
    again = net_liver_phantom(7, 4.42)
    assert again.grid == ph.grid
    assert np.array_equal(again.ct_hu, ph.ct_hu) and np.array_equal(again.density_g_cm3, ph.density_g_cm3)
    assert again.masks.keys() == ph.masks.keys()
    for name in ph.masks:
        assert np.array_equal(again.masks[name], ph.masks[name]), name
    assert again.parameters["tumors"] == ph.parameters["tumors"]


def test_seed_moves_tumours_only(ph):
    other = net_liver_phantom(8)
    assert not np.array_equal(other.masks["tumors"], ph.masks["tumors"])
    assert np.array_equal(other.masks["lungs"], ph.masks["lungs"])
    assert np.array_equal(other.masks["liver"], ph.masks["liver"])  # tumours lie within the fixed liver shape


def test_registry(ph):
    assert set(PHANTOMS) == {"net_liver"}
    made = make_phantom("net_liver", 7, 4.42)
    assert np.array_equal(made.masks["tumors"], ph.masks["tumors"])
    with pytest.raises(ImagingError, match="phantom.name") as info:
        make_phantom("xcat", 7, 4.42)
    assert isinstance(info.value, EmbplanError)


# ------------------------------------------------------------------------------------------------------ geometry
def test_grid_modest_and_scaled(ph, ph2):
    assert ph.grid.spacing_mm == (4.42, 4.42, 4.42)
    assert ph.grid.size < 100 * 100 * 100
    for n4, n2 in zip(ph.grid.shape, ph2.grid.shape, strict=True):
        assert n2 == pytest.approx(n4 * 4.42 / 2.0, abs=2)
    # centred on the patient origin
    centre = ph.grid.index_to_patient_mm((np.array(ph.grid.shape) - 1) / 2.0)
    assert np.allclose(centre, 0.0, atol=1e-9)


def test_body_inside_grid_with_margin(ph):
    body = ph.masks["body"]
    for axis in range(3):
        assert not np.take(body, 0, axis=axis).any() and not np.take(body, -1, axis=axis).any()
    with pytest.raises(ImagingError, match="shape"):
        net_liver_phantom(7, 4.42, shape=(40, 68, 91))


def test_arrays_types_and_read_only(ph):
    assert ph.ct_hu.dtype == np.float32 and ph.density_g_cm3.dtype == np.float32
    for name, m in ph.masks.items():
        assert m.dtype == np.bool_ and m.shape == ph.grid.shape, name
        assert not m.flags.writeable
    with pytest.raises(ValueError):
        ph.ct_hu[0, 0, 0] = 1.0


# ------------------------------------------------------------------------------------------------------- volumes
def test_liver_volume_realistic_and_grid_independent(ph, ph2):
    v4, v2 = ph.volume_ml("liver"), ph2.volume_ml("liver")
    assert 1400.0 <= v4 <= 1900.0 and 1400.0 <= v2 <= 1900.0
    assert v4 == pytest.approx(v2, rel=0.02)
    for name in ("liver_right", "liver_left", "lungs", "tumors"):
        assert ph.volume_ml(name) == pytest.approx(ph2.volume_ml(name), rel=0.03), name
    # the right hemiliver is the larger one (about 60-70 % of the liver)
    assert 0.55 <= ph.volume_ml("liver_right") / v4 <= 0.75


def test_tumour_sizes(ph, ph2):
    vols = [ph.volume_ml(n) for n in ph.tumor_names]
    assert len(vols) >= 4
    assert sum(v < 2.0 for v in vols) >= 2
    assert max(vols) > 20.0 * min(vols)  # a wide spread of sizes
    assert vols == sorted(vols, reverse=True)  # named largest first
    # at 2 mm the voxelised volumes are close to the nominal (continuous) ones
    for info in ph2.parameters["tumors"]:
        assert ph2.volume_ml(info["name"]) == pytest.approx(info["nominal_volume_ml"], rel=0.12), info["name"]


# --------------------------------------------------------------------------------------------------------- masks
def test_masks_nested(ph):
    m = ph.masks
    liver, tumors = m["liver"], m["tumors"]
    assert not (tumors & ~liver).any()
    assert not (liver & ~m["body"]).any() and not (m["lungs"] & ~m["body"]).any()
    assert np.array_equal(m["normal_liver"], liver & ~tumors)
    # hemilivers partition the liver
    assert not (m["liver_right"] & m["liver_left"]).any()
    assert np.array_equal(m["liver_right"] | m["liver_left"], liver)
    # individual tumours: disjoint, their union is "tumors", each within one hemiliver, both hemilivers have one
    union = np.zeros_like(tumors)
    lobes = set()
    for name in ph.tumor_names:
        t = m[name]
        assert t.any() and not (t & union).any(), name
        union |= t
        in_right, in_left = (t & m["liver_right"]).any(), (t & m["liver_left"]).any()
        assert in_right != in_left, name
        lobes.add("right" if in_right else "left")
    assert np.array_equal(union, tumors)
    assert lobes == {"right", "left"}


def test_segments_partition_the_liver(ph):
    m = ph.masks
    count = np.zeros(ph.grid.shape, dtype=np.int32)
    for k in range(1, 9):
        seg = m[f"segment_{k}"]
        assert seg.any(), k
        count += seg
    assert np.array_equal(count > 0, m["liver"]) and count.max() == 1
    for k in (5, 6, 7, 8):
        assert not (m[f"segment_{k}"] & m["liver_left"]).any(), k
    for k in (2, 3, 4):
        assert not (m[f"segment_{k}"] & m["liver_right"]).any(), k


def test_lungs_above_liver_at_lung_density(ph):
    m, rho, hu = ph.masks, ph.density_g_cm3, ph.ct_hu
    lungs = m["lungs"]
    assert lungs.any()
    lung_rho = rho[lungs]
    assert lung_rho.min() >= 0.2 and lung_rho.max() <= 0.35
    assert not (np.abs(lung_rho - 1.0) < 0.5).any()  # never at water density
    assert (hu[lungs] < -500).all()
    # CT and density agree on the air-water line in the lung: rho = (HU + 1000) / 1000
    assert np.allclose((hu[lungs] + 1000.0) / 1000.0, lung_rho, atol=1e-3)
    # superior = higher z index (identity direction, LPS +z): the lungs' centroid is above the liver's
    zc_lung = ndimage.center_of_mass(lungs)[0]
    zc_liver = ndimage.center_of_mass(m["liver"])[0]
    assert zc_lung > zc_liver + 5
    assert ph.grid.index_to_patient_mm(np.array([zc_lung, 0, 0]))[2] > ph.grid.index_to_patient_mm(
        np.array([zc_liver, 0, 0])
    )[2]
    # a diaphragm between them: no lung voxel touches the liver
    assert not (ndimage.binary_dilation(m["liver"]) & lungs).any()


def test_tissue_densities(ph):
    rho, m = ph.density_g_cm3, ph.masks
    assert np.allclose(rho[m["normal_liver"]], TISSUES["liver"].density_g_cm3)
    assert np.allclose(rho[m["tumors"]], TISSUES["tumor"].density_g_cm3)
    assert np.allclose(rho[~m["body"]], TISSUES["air"].density_g_cm3)
    bone = rho[m["spine"]]
    assert 1.3 <= bone.min() and bone.max() <= 1.95
    # mass from the density map
    assert ph.mass_kg("liver") == pytest.approx(ph.volume_ml("liver") * 1.06 / 1000.0, rel=1e-5)
    with pytest.raises(ImagingError, match="name"):
        ph.volume_ml("kidney")


# ------------------------------------------------------------------------------------------------------------ MAA
def _compartments(ph, a):
    m = ph.masks
    vol = ph.grid.voxel_volume_ml
    rho = ph.density_g_cm3.astype(np.float64)
    t, n = m["tumors"], m["normal_liver"]
    mass_t = rho[t].sum() * vol / 1000.0
    mass_n = rho[n].sum() * vol / 1000.0
    return a[t].sum(), mass_t, a[n].sum(), mass_n, a[m["lungs"]].sum()


def test_maa_sum_lung_fraction_and_tn(ph):
    a = ph.maa_activity(tumor_to_normal_ratio=3.5, lung_shunt_fraction=0.12, total=250.0)
    assert a.dtype == np.float64 and a.shape == ph.grid.shape
    assert a.sum() == pytest.approx(250.0, rel=1e-12)
    a_t, m_t, a_n, m_n, a_l = _compartments(ph, a)
    assert a_l / a.sum() == pytest.approx(0.12, rel=1e-12)
    # nothing outside liver and lungs
    assert a[~(ph.masks["liver"] | ph.masks["lungs"])].sum() == 0.0
    # T/N of concentrations (per mass) and the LSF measured from the map, through the dosimetry helpers
    assert rx.tn_ratio_from_counts(a_t, m_t, a_n, m_n) == pytest.approx(3.5, rel=1e-9)
    assert rx.lung_shunt_fraction_from_counts(a_l, a_t + a_n) == pytest.approx(0.12, rel=1e-12)
    # uniform within the normal liver and within the lungs
    assert np.ptp(a[ph.masks["normal_liver"]]) < 1e-12 * a.max()
    assert np.ptp(a[ph.masks["lungs"]]) < 1e-12 * a.max()


def test_maa_perfused_restriction(ph):
    right = ph.masks["liver_right"]
    a = ph.maa_activity(right, tumor_to_normal_ratio=4.0, lung_shunt_fraction=0.05)
    assert a.sum() == pytest.approx(1.0, rel=1e-12)
    assert a[ph.masks["liver_left"]].sum() == 0.0
    assert a[right].sum() == pytest.approx(0.95, rel=1e-12)
    t, n = ph.masks["tumors"] & right, ph.masks["normal_liver"] & right
    rho = ph.density_g_cm3.astype(np.float64)
    tn = (a[t].sum() / rho[t].sum()) / (a[n].sum() / rho[n].sum())
    assert tn == pytest.approx(4.0, rel=1e-9)
    # a perfused mask is boolean, on the grid, and must touch the liver
    with pytest.raises(ImagingError, match="perfused_mask"):
        ph.maa_activity(right[:-1])
    with pytest.raises(ImagingError, match="perfused_mask"):
        ph.maa_activity(right.astype(np.float32))
    with pytest.raises(ImagingError, match="perfused_mask"):
        ph.maa_activity(ph.masks["lungs"])


def test_maa_noise_seeded(ph):
    a = ph.maa_activity(noise=True, noise_counts=1e6, seed=3)
    b = ph.maa_activity(noise=True, noise_counts=1e6, seed=3)
    c = ph.maa_activity(noise=True, noise_counts=1e6, seed=4)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert (a >= 0).all()
    # Poisson: the total count is within 5 sigma of 1e6 (sigma = 1000), i.e. the total within 0.5 %
    assert a.sum() == pytest.approx(1.0, abs=5e-3)
    clean = ph.maa_activity()
    assert not np.array_equal(a, clean)


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"tumor_to_normal_ratio": 0.0}, "tumor_to_normal_ratio"),
        ({"lung_shunt_fraction": 1.0}, "lung_shunt_fraction"),
        ({"lung_shunt_fraction": float("nan")}, "lung_shunt_fraction"),
        ({"total": -1.0}, "total"),
    ],
)
def test_maa_bad_arguments(ph, kwargs, argument):
    with pytest.raises(ImagingError, match=argument):
        ph.maa_activity(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"voxel_mm": 0.5}, "voxel_mm"),
        ({"voxel_mm": float("inf")}, "voxel_mm"),
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"shape": (10, 10)}, "shape"),
        ({"tumors": (TumorSpec(5.0, "middle"),)}, "tumors"),
        ({"tumors": (TumorSpec(390.0, "left"),)}, "tumors"),
    ],
)
def test_phantom_bad_arguments(kwargs, argument):
    with pytest.raises(ImagingError, match=argument):
        net_liver_phantom(**kwargs)


def test_custom_tumours_and_anisotropic_voxels():
    p = net_liver_phantom(1, (5.0, 4.0, 4.0), tumors=(TumorSpec(10.0, "left"), TumorSpec(1.0, "right")))
    assert p.grid.spacing_mm == (5.0, 4.0, 4.0)
    assert p.tumor_names == ("tumor_1", "tumor_2")
    assert p.volume_ml("tumor_1") == pytest.approx(10.0, rel=0.2)
    assert (p.masks["tumor_1"] & p.masks["liver_left"]).sum() == p.masks["tumor_1"].sum()
