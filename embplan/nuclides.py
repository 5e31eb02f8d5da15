"""Y-90 physical data, with sources; decay; the local-deposition constant K.

Sources
-------
- Half-life 64.10 h: ICRP Publication 107 (2008), Y-90 (the value in the Graves 2019 kernel file name too).
- Mean energy emitted per decay as electrons, 0.9331 MeV: ICRP-107 (all electrons, beta plus conversion/Auger).
  Other values in use: 0.9336 MeV (Graves 2019 EGSnrc kernel total), 0.9367 MeV (TheraSphere package insert),
  about 0.927 MeV (GATE exercises).
- Local-deposition constant K (absorbed dose x mass per administered activity, full decay, all energy absorbed):
  K = E_mean * T_half / ln 2. The clinical convention is **49.67 Gy kg / GBq** (64.1 h x 0.9312 MeV; used by the
  resin and glass calculators and by Taranis; its derivation is not published [U]). Others in use: 50 (TheraSphere
  package insert), 49.38 (AAPM TG-144: 0.9267 MeV, 64.04 h), 49.77 (ICRP-107: 0.9331 MeV, 64.10 h).
  K spans about 1.2 % between sources: it is a parameter everywhere it is used.

The energy per decay implied by a K (``energy_per_decay_mev(k)``) is what the kernels are normalised to, so that
kernel dose and local-deposition dose agree in a uniform region whatever K is in use.
"""

from __future__ import annotations

import math
import numbers

from .errors import EmbplanError

__all__ = [
    "Y90_HALF_LIFE_H",
    "Y90_MEAN_ENERGY_ICRP107_MEV",
    "Y90_GRAVES2019_TOTAL_ENERGY_MEV",
    "K_GY_KG_PER_GBQ_DEFAULT",
    "K_ALTERNATIVES_GY_KG_PER_GBQ",
    "MEV_TO_J",
    "y90_mean_life_s",
    "decay_constant_per_h",
    "decay_factor",
    "cumulated_decays_per_mbq",
    "energy_per_decay_mev",
    "k_from_energy",
]

#: Y-90 half-life in hours (ICRP-107).
Y90_HALF_LIFE_H: float = 64.10
#: Y-90 mean energy emitted per decay as electrons, MeV (ICRP-107, all electrons).
Y90_MEAN_ENERGY_ICRP107_MEV: float = 0.9331
#: Total energy per decay in the Graves 2019 EGSnrc point kernel (water), MeV (Graves, Med Phys 46:5284, 2019).
Y90_GRAVES2019_TOTAL_ENERGY_MEV: float = 0.9336
#: Clinical convention for K, Gy kg / GBq (64.1 h x 0.9312 MeV; resin/glass calculators, Taranis) [U: derivation].
K_GY_KG_PER_GBQ_DEFAULT: float = 49.67
#: Other K values in use, Gy kg / GBq, with their sources.
K_ALTERNATIVES_GY_KG_PER_GBQ: dict[str, float] = {
    "clinical convention (resin and glass calculators, Taranis)": 49.67,
    "TheraSphere package insert": 50.0,
    "AAPM TG-144 (0.9267 MeV, 64.04 h)": 49.38,
    "ICRP-107 (0.9331 MeV, 64.10 h)": 49.77,
}
#: 1 MeV in joules (CODATA 2018, exact SI).
MEV_TO_J: float = 1.602176634e-13

# The clinical K (49.67) was derived with T1/2 = 64.1 h; it is used with the same half-life here.


def y90_mean_life_s(half_life_h: float = Y90_HALF_LIFE_H) -> float:
    """Mean life tau = T1/2 / ln 2, in seconds."""
    _positive("half_life_h", half_life_h)
    return half_life_h * 3600.0 / math.log(2.0)


def decay_constant_per_h(half_life_h: float = Y90_HALF_LIFE_H) -> float:
    """lambda = ln 2 / T1/2, per hour."""
    _positive("half_life_h", half_life_h)
    return math.log(2.0) / half_life_h


def decay_factor(hours: float, half_life_h: float = Y90_HALF_LIFE_H) -> float:
    """A(t)/A(0) = 2^(-t / T1/2). Negative ``hours`` decay backwards (a factor > 1)."""
    if isinstance(hours, bool) or not isinstance(hours, numbers.Real) or not math.isfinite(hours):
        raise EmbplanError(f"hours: must be a finite number, got {hours!r}")
    _positive("half_life_h", half_life_h)
    return 2.0 ** (-hours / half_life_h)


def cumulated_decays_per_mbq(half_life_h: float = Y90_HALF_LIFE_H) -> float:
    """Number of decays per MBq of activity for full decay in situ (MBq s per MBq = tau in s)."""
    return y90_mean_life_s(half_life_h)


def energy_per_decay_mev(
    k_gy_kg_per_gbq: float = K_GY_KG_PER_GBQ_DEFAULT, half_life_h: float = Y90_HALF_LIFE_H
) -> float:
    """Mean energy absorbed per decay implied by K: E = K / (1e9 * tau * MeV_to_J), in MeV.

    49.67 Gy kg/GBq with 64.1 h gives 0.9312 MeV.
    """
    _positive("k_gy_kg_per_gbq", k_gy_kg_per_gbq)
    return k_gy_kg_per_gbq / (1.0e9 * y90_mean_life_s(half_life_h) * MEV_TO_J)


def k_from_energy(energy_mev: float, half_life_h: float = Y90_HALF_LIFE_H) -> float:
    """K = E * tau * 1e9 * MeV_to_J, Gy kg / GBq (inverse of :func:`energy_per_decay_mev`)."""
    _positive("energy_mev", energy_mev)
    return energy_mev * 1.0e9 * y90_mean_life_s(half_life_h) * MEV_TO_J


def _positive(name: str, value: float) -> None:
    """Finite real number > 0 (numpy scalars accepted, bool refused), else EmbplanError naming ``name``."""
    if isinstance(value, bool) or not (
        isinstance(value, numbers.Real) and math.isfinite(value) and value > 0
    ):
        raise EmbplanError(f"{name}: must be a finite number > 0, got {value!r}")
