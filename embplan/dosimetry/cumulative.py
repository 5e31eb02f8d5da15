"""The dose of several TARE sessions summed voxel by voxel (tumour board, issue 11: the liver over the years).

Two sums, both per voxel on one grid:

- **physical dose**: the plain sum of the sessions' absorbed doses, ``D = sum_i D_i`` (Gy). It says how much energy
  per mass each voxel has received over the years; it says nothing about the biological effect of sessions given
  weeks or years apart (the liver repairs and regenerates in between).
- **BED**: the sum of each session's biologically effective dose, ``BED = sum_i BED(D_i)`` with the BED of a
  permanent Y-90 implant (Dale RG, Br J Radiol 58:515, 1985; :func:`embplan.dosimetry.metrics.bed_gy`). Sessions
  weeks apart are independent exposures (sublethal damage is repaired within hours: repair half-times of 1.5-2.5 h),
  so their BEDs add (the linear-quadratic model's rule for separate treatments); this is *not* the BED of the summed
  dose, which would treat the sessions as one implant and overstate the quadratic term. Repopulation and regeneration
  between sessions are not modelled: the BED sum is an upper bound of the effect in that respect.

Means are mass-weighted (voxel weight x density, as the planner's), so the mean of the sum is the sum of the means.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import DosimetryError
from .metrics import RadiobiologyParams

__all__ = ["SessionSum", "StructureSum", "sum_sessions", "structure_sums"]


@dataclass(frozen=True)
class SessionSum:
    """The voxelwise sums of several sessions on one grid: physical dose (Gy) and BED (Gy)."""

    dose_gy: np.ndarray
    bed_gy: np.ndarray
    sessions: int


@dataclass(frozen=True)
class StructureSum:
    """Mass-weighted means over one structure: earlier sessions, this session, the plain sum and the BED sum."""

    structure: str
    volume_ml: float
    prior_gy: float
    this_session_gy: float
    cumulative_gy: float
    cumulative_bed_gy: float


def sum_sessions(doses_gy: Sequence[np.ndarray], radiobiology: RadiobiologyParams) -> SessionSum:
    """Sum the sessions' absorbed-dose maps (same shape, Gy, finite, >= 0) voxel by voxel, with the BED sum of the
    same sessions (each map is one session: its BED is taken on its own, then added)."""
    if not doses_gy:
        raise DosimetryError("doses_gy: at least one session is needed")
    shape = np.shape(doses_gy[0])
    total = np.zeros(shape, dtype=np.float64)
    bed = np.zeros(shape, dtype=np.float64)
    for i, d in enumerate(doses_gy):
        a = np.asarray(d, dtype=np.float64)
        if a.shape != shape:
            raise DosimetryError(f"doses_gy[{i}]: shape {a.shape} differs from the first map's {shape}")
        if not np.all(np.isfinite(a)):
            raise DosimetryError(f"doses_gy[{i}]: non-finite dose values")
        if a.size and a.min() < 0:
            raise DosimetryError(f"doses_gy[{i}]: negative dose (minimum {a.min():.6g} Gy)")
        total += a
        bed += radiobiology.bed_gy(a)
    return SessionSum(dose_gy=total, bed_gy=bed, sessions=len(doses_gy))


def _mean(values: np.ndarray, w: np.ndarray) -> float:
    return float(np.dot(values, w) / w.sum())


def structure_sums(prior_gy: np.ndarray, this_session_gy: np.ndarray, cumulative_bed_gy: np.ndarray,
                   structures: Mapping[str, np.ndarray], density_g_cm3: np.ndarray | float,
                   voxel_volume_ml: float) -> list[StructureSum]:
    """Per structure (boolean mask or fraction array), the mass-weighted means of the earlier sessions' dose, this
    session's, their plain sum and the BED sum. Empty structures are skipped."""
    rho = np.broadcast_to(np.asarray(density_g_cm3, dtype=np.float64), np.shape(prior_gy))
    out = []
    for name, s in structures.items():
        w = np.asarray(s, dtype=np.float64)
        if w.shape != np.shape(prior_gy):
            raise DosimetryError(f"{name}: shape {w.shape} does not match the dose grid {np.shape(prior_gy)}")
        inside = w > 0
        if not np.any(inside):
            continue
        m = w[inside] * rho[inside]
        if not m.sum() > 0:
            raise DosimetryError(f"{name}: zero mass (density <= 0 inside)")
        prior = _mean(np.asarray(prior_gy)[inside], m)
        now = _mean(np.asarray(this_session_gy)[inside], m)
        out.append(StructureSum(structure=name, volume_ml=float(w.sum()) * voxel_volume_ml, prior_gy=prior,
                                this_session_gy=now, cumulative_gy=prior + now,
                                cumulative_bed_gy=_mean(np.asarray(cumulative_bed_gy)[inside], m)))
    return out

