"""Comparison tables, deposits outside liver and lungs, and the gamma index against hand computations and
closed forms on small synthetic volumes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from embplan.grid import Grid
from embplan.imaging.registration import RigidTransform
from embplan.verify import GammaSettings, compare_structures, gamma_index, locate_outside_activity


def test_comparison_table_by_hand():
    g = Grid.cubic((2, 2, 4), 10.0)  # 1 mL voxels
    planned = np.full(g.shape, 10.0)
    delivered = planned.copy()
    delivered[:, :, 2:] = 14.0  # half the voxels get 14 Gy
    rho = np.ones(g.shape)
    rho[:, :, 2:] = 3.0  # ... and weigh three times as much
    mask = np.ones(g.shape, bool)
    act_p, act_d = np.full(g.shape, 2.0), np.full(g.shape, 1.5)
    rows, dvhs = compare_structures(planned, delivered, {"liver": mask, "empty": np.zeros(g.shape, bool)}, rho, g,
                                    planned_activity_mbq=act_p, delivered_activity_mbq=act_d, dvh_bin_width_gy=0.5)
    assert [r.structure for r in rows] == ["liver"]  # an empty structure has no row
    r = rows[0]
    # mass-weighted mean: (8 x 10 x 1 + 8 x 14 x 3) / (8 x 1 + 8 x 3) = 13 Gy
    assert r.delivered_mean_gy == pytest.approx(13.0)
    assert r.planned_mean_gy == pytest.approx(10.0)
    assert r.difference_gy == pytest.approx(3.0)
    assert r.difference_percent == pytest.approx(30.0)
    assert r.volume_ml == pytest.approx(16.0) and r.mass_kg == pytest.approx(0.032)
    assert r.planned_activity_mbq == pytest.approx(32.0) and r.delivered_activity_mbq == pytest.approx(24.0)
    # D-values (by volume): planned uniform 10 Gy; delivered: D95 = 10, D2 = 14, D50 between (bin accuracy)
    assert r.planned_d_gy["D95"] == pytest.approx(10.0, abs=0.5) and r.planned_d_gy["D2"] == pytest.approx(10.0, abs=0.5)
    assert r.delivered_d_gy["D95"] == pytest.approx(10.0, abs=0.5)
    assert r.delivered_d_gy["D2"] == pytest.approx(14.0, abs=0.5)
    assert r.difference_d_gy["D2"] == pytest.approx(4.0, abs=0.5)
    assert dvhs[0].delivered_volume_fraction[0] == pytest.approx(1.0)


def test_relative_difference_undefined_for_zero_plan():
    g = Grid.cubic((2, 2, 2), 5.0)
    rows, _ = compare_structures(np.zeros(g.shape), np.ones(g.shape), {"s": np.ones(g.shape, bool)},
                                 np.ones(g.shape), g)
    assert rows[0].difference_percent is None and rows[0].difference_gy == pytest.approx(1.0)


def _organs(g: Grid):
    liver = np.zeros(g.shape, bool)
    lungs = np.zeros(g.shape, bool)
    liver[5:15, 5:15, 5:15] = True
    lungs[20:28, 5:15, 5:15] = True
    return liver, lungs


def test_deposit_located_by_hand():
    g = Grid.cubic((30, 30, 40), 4.0, origin_mm=(-80.0, -60.0, -60.0))
    liver, lungs = _organs(g)
    act = np.zeros(g.shape)
    act[liver] = 1.0  # 1 MBq per voxel in 1000 voxels
    act[lungs] = 0.1
    act[8:10, 8:10, 30:32] = 5.0  # 8 voxels, 40 MBq, well outside: x index 30-31
    delivered = float(act.sum())
    frac, deposits, labels = locate_outside_activity(
        act, g, {"liver": liver, "lungs": lungs}, delivered_mbq=delivered, margin_mm=10.0, min_fraction=0.005,
        to_post_frame=RigidTransform(translation_mm=(1.0, 2.0, 3.0)))
    assert frac == pytest.approx(40.0 / delivered)
    assert len(deposits) == 1
    d = deposits[0]
    assert d.activity_mbq == pytest.approx(40.0) and d.volume_ml == pytest.approx(8 * 0.064)
    assert d.fraction_of_delivered == pytest.approx(40.0 / delivered) and d.flagged
    # centroid: index (8.5, 8.5, 30.5) -> x = -80 + 4 x 30.5, y = -60 + 4 x 8.5, z = -60 + 4 x 8.5
    assert d.centroid_plan_mm == pytest.approx([42.0, -26.0, -26.0])
    assert d.centroid_post_mm == pytest.approx([43.0, -24.0, -23.0])
    # nearest: the liver, whose last voxel along x is index 14: 16 voxels (64 mm) from index 30 at the rounded
    # centroid (index 8/9 rounds to within the liver's y-z range)
    assert d.nearest_structure == "liver"
    assert d.distance_to_nearest_mm == pytest.approx(4.0 * (round(30.5) - 14), abs=1e-9)
    assert d.max_concentration_mbq_ml == pytest.approx(5.0 / 0.064)
    assert (labels == 1).sum() == 8


def test_spill_within_the_margin_is_not_a_deposit():
    g = Grid.cubic((30, 30, 40), 4.0)
    liver, lungs = _organs(g)
    act = np.zeros(g.shape)
    act[liver] = 1.0
    act[5:15, 5:15, 15] = 0.5  # one voxel layer beyond the liver: within 10 mm
    frac, deposits, _ = locate_outside_activity(act, g, {"liver": liver, "lungs": lungs}, delivered_mbq=act.sum())
    assert frac == 0.0 and deposits == []


def test_small_deposit_reported_not_flagged():
    g = Grid.cubic((30, 30, 40), 4.0)
    liver, lungs = _organs(g)
    act = np.zeros(g.shape)
    act[liver] = 1.0
    act[2, 2, 35] = 1.0  # 1 MBq of 1001: 0.1 % < 0.5 %
    _, deposits, _ = locate_outside_activity(act, g, {"liver": liver, "lungs": lungs}, delivered_mbq=act.sum())
    assert len(deposits) == 1 and not deposits[0].flagged


# ------------------------------------------------------------------------------------------------ gamma
def test_gamma_identical_maps_is_zero():
    g = Grid.cubic((10, 12, 14), 2.0)
    d = np.random.default_rng(4).uniform(0, 100, g.shape)
    gam, res = gamma_index(d, d, g)
    assert res.pass_rate == 1.0 and np.nanmax(gam) == 0.0


@pytest.mark.parametrize("excess", [0.015, 0.03, 0.045])
def test_gamma_uniform_dose_offset(excess):
    """A uniform field has no spatial help: gamma = |dD| / (3 % of the maximum)."""
    g = Grid.cubic((8, 8, 8), 2.0)
    ref = np.full(g.shape, 50.0)
    gam, res = gamma_index(ref, ref * (1 + excess), g)
    inner = gam[2:-2, 2:-2, 2:-2]
    np.testing.assert_allclose(inner, excess / 0.03, rtol=1e-9)


def test_gamma_shifted_ramp_closed_form():
    """ref(x) = G x, eval(x) = G (x - s): gamma = min_u sqrt(u^2/d^2 + G^2 (u - s)^2 / dD^2) = s sqrt(ab/(a+b)),
    a = 1/d^2, b = G^2/dD^2. With G = dD/d (a = b) the minimum is at u = s/2: on the 1 mm lattice for s = 2 mm."""
    g = Grid.cubic((5, 5, 60), 1.0)
    x = np.arange(60, dtype=float)
    grad = 0.5  # Gy per mm
    offset = 41.0 * grad  # maximum 100 G, so dD = 3 % of it = 3 G = G d: a = b for d = 3 mm
    ref = np.broadcast_to(grad * x + offset, g.shape).copy()
    s = 2.0
    ev = np.broadcast_to(grad * (x - s) + offset, g.shape).copy()
    gam, _ = gamma_index(ref, ev, g, GammaSettings(cutoff_percent=0.0))
    expected = s * math.sqrt(0.5 / 9.0)
    np.testing.assert_allclose(gam[2, 2, 10:50], expected, rtol=1e-9)


def test_gamma_cap_and_cutoff():
    g = Grid.cubic((6, 6, 6), 3.0)
    ref = np.full(g.shape, 10.0)
    ref[0] = 0.5  # below 10 % of the maximum: not evaluated
    gam, res = gamma_index(ref, ref * 2.0, g)  # 100 % off: gamma far above the cap
    assert np.all(np.isnan(gam[0]))
    assert np.nanmax(gam) == pytest.approx(2.0) and res.pass_rate == 0.0
    assert res.evaluated_voxels == 5 * 36


def test_deposit_found_in_noise_without_false_flags():
    """Additive background noise (sigma 20 % of the liver voxel activity, clipped at 0 as a PET reader does):
    the smoothed, noise-adaptive threshold finds the deposit and flags nothing else; air is not searched."""
    g = Grid.cubic((30, 30, 40), 4.0)
    liver, lungs = _organs(g)
    act = np.zeros(g.shape)
    act[liver] = 1.0
    act[lungs] = 0.1
    act[6:10, 6:10, 28:32] = 1.0  # 64 voxels, 64 MBq
    body = np.zeros(g.shape, bool)
    body[2:28, 2:28, 2:38] = True
    noisy = np.clip(act + np.random.default_rng(11).normal(0.0, 0.2, g.shape), 0.0, None)
    delivered = float(act.sum())
    _, deposits, _ = locate_outside_activity(noisy, g, {"liver": liver, "lungs": lungs}, delivered_mbq=delivered,
                                             body=body, smoothing_mm=8.0, noise_sigmas=5.0)
    flagged = [d for d in deposits if d.flagged]
    assert len(flagged) == 1
    # centroid at index (7.5, 7.5, 29.5) -> (118, 30, 30) mm; the noise shifts it by under a voxel
    assert np.linalg.norm(np.asarray(flagged[0].centroid_plan_mm) - [118.0, 30.0, 30.0]) < 4.0
    assert flagged[0].fraction_of_delivered == pytest.approx(64.0 / delivered, rel=0.3)
