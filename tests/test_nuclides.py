"""Tests of embplan.nuclides: Y-90 constants, decay and the local-deposition constant K, against closed forms and
the published K values (ICRP-107, AAPM TG-144, the clinical convention)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from embplan import nuclides as nu
from embplan.errors import EmbplanError


def test_constants_and_mean_life():
    assert nu.Y90_HALF_LIFE_H == 64.10
    assert nu.Y90_MEAN_ENERGY_ICRP107_MEV == 0.9331
    assert nu.K_GY_KG_PER_GBQ_DEFAULT == 49.67
    assert nu.y90_mean_life_s() == pytest.approx(64.1 * 3600 / math.log(2), rel=1e-15)
    assert nu.y90_mean_life_s() == pytest.approx(332_916, abs=1)  # 92.48 h
    assert nu.cumulated_decays_per_mbq() == nu.y90_mean_life_s()
    assert nu.decay_constant_per_h() * nu.Y90_HALF_LIFE_H == pytest.approx(math.log(2))


def test_decay_factor():
    assert nu.decay_factor(0.0) == 1.0
    assert nu.decay_factor(64.1) == pytest.approx(0.5)
    assert nu.decay_factor(2 * 64.1) == pytest.approx(0.25)
    assert nu.decay_factor(-64.1) == pytest.approx(2.0)
    assert nu.decay_factor(24.0) == pytest.approx(math.exp(-math.log(2) * 24 / 64.1))
    assert nu.decay_factor(np.float32(64.1)) == pytest.approx(0.5, rel=1e-6)


@given(st.floats(-500, 500), st.floats(0, 500))
def test_decay_factor_composes(t1, t2):
    assert nu.decay_factor(t1 + t2) == pytest.approx(nu.decay_factor(t1) * nu.decay_factor(t2), rel=1e-9)


@pytest.mark.parametrize(
    ("k", "energy_mev", "half_life_h"),
    [
        (49.67, 0.9312, 64.1),  # clinical convention
        (49.77, 0.9331, 64.10),  # ICRP-107
        (49.38, 0.9267, 64.04),  # AAPM TG-144
    ],
)
def test_k_matches_published_energy_and_half_life(k, energy_mev, half_life_h):
    """K = E tau (1e9 decays per GBq s, MeV -> J): the published K values follow from their E and T1/2."""
    assert nu.k_from_energy(energy_mev, half_life_h) == pytest.approx(k, abs=0.006)
    assert nu.energy_per_decay_mev(k, half_life_h) == pytest.approx(energy_mev, abs=1.2e-4)


def test_k_alternatives_documented_and_within_spread():
    values = nu.K_ALTERNATIVES_GY_KG_PER_GBQ
    assert set(values.values()) == {49.67, 50.0, 49.38, 49.77}
    assert (max(values.values()) - min(values.values())) / 49.67 < 0.013  # "K spans about 1.2 %"
    # 50 (TheraSphere insert) implies ~0.937 MeV at 64.1 h: the insert's 0.9367 MeV
    assert nu.energy_per_decay_mev(50.0) == pytest.approx(0.9367, abs=0.001)


@given(st.floats(1.0, 100.0))
def test_energy_and_k_are_inverse(k):
    assert nu.k_from_energy(nu.energy_per_decay_mev(k)) == pytest.approx(k, rel=1e-12)


def test_local_deposition_dose_by_hand():
    """1 GBq decaying fully in 1 kg: decays x energy = K Gy (independent arithmetic)."""
    decays = 1e9 * 64.1 * 3600 / math.log(2)
    dose_gy = decays * nu.energy_per_decay_mev() * 1.602176634e-13 / 1.0
    assert dose_gy == pytest.approx(49.67, rel=1e-12)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), True, "49.67", None])
def test_bad_k_names_the_argument(bad):
    with pytest.raises(EmbplanError, match="k_gy_kg_per_gbq"):
        nu.energy_per_decay_mev(bad)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "1", None, True])
def test_bad_hours(bad):
    with pytest.raises(EmbplanError, match="hours"):
        nu.decay_factor(bad)


def test_bad_half_life():
    with pytest.raises(EmbplanError, match="half_life_h"):
        nu.decay_factor(1.0, half_life_h=0.0)
    with pytest.raises(EmbplanError, match="energy_mev"):
        nu.k_from_energy(-0.9)
