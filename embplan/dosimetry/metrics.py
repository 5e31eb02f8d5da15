"""Dose metrics: cumulative DVH per structure, Dx / Vx, mean dose, BED, EUD and Lyman NTCP.

Structures
----------
A structure is given either as a boolean mask or as a *fraction-of-voxel-inside* array (float, 0..1, the grid's
shape). A fraction counts a voxel that lies partly inside the structure by the part inside, so the volume and the
DVH of a small structure do not depend on the dose grid beyond its voxel size (dicompyler-core's small-structure
bug). :func:`fraction_inside` builds such an array by supersampling an analytic or rasterised shape.

Every function here depends only on the (dose, weight) pairs of the voxels inside the structure, never on the array
order: flipped (feet-first) arrays give the same result as long as dose and structure are flipped together.

Radiobiology
------------
- BED of a permanent implant with mono-exponential decay and mono-exponential repair (Dale RG, "The application of
  the linear-quadratic dose-effect equation to fractionated and protracted radiotherapy", Br J Radiol 58:515-528,
  1985)::

      BED = D [1 + D lambda / ((mu + lambda) alpha/beta)],  lambda = ln2 / T1/2,  mu = ln2 / T_rep

  with T1/2 = 64.10 h for Y-90 (ICRP-107, :data:`embplan.nuclides.Y90_HALF_LIFE_H`).
- Generalised EUD, gEUD = (sum_i v_i D_i^a)^(1/a) (Niemierko A, Med Phys 26:1100, 1999, abstract; the form used
  in the LKB model by Mohan R et al., Int J Radiat Oncol Biol Phys 22:1083-1088, 1992 [effective volume reduction]).
- Radiobiological EUD for tumours with linear cell kill, EUD = -ln(sum_i v_i exp(-alpha D_i)) / alpha (Niemierko A,
  "Reporting and analyzing dose distributions: a concept of equivalent uniform dose", Med Phys 24:103-110, 1997).
- Lyman-Kutcher-Burman NTCP: NTCP = Phi((D_eff - TD50) / (m TD50)) with D_eff the gEUD at a = 1/n (Lyman JT,
  Radiat Res Suppl 8:S13-S19, 1985; Kutcher GJ, Burman C, Int J Radiat Oncol Biol Phys 16:1623-1630, 1989).

The parameter sets (:data:`LIVER_RADIOBIOLOGY`, :data:`TUMOUR_RADIOBIOLOGY`, :data:`LIVER_LYMAN_STRIGARI2010`) are
data with their source; ``uncertain=True`` marks values not verified at the primary source ([U] in EVIDENCE.md).
They are defaults only: every function takes the numbers as arguments.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import numba
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..errors import DosimetryError
from ..grid import Grid
from ..nuclides import Y90_HALF_LIFE_H
from ..progress import timed

__all__ = [
    "DVH",
    "dvh",
    "dvh_from_samples",
    "fraction_inside",
    "mean_dose_gy",
    "bed_gy",
    "eud_gy",
    "radiobiological_eud_gy",
    "lyman_ntcp",
    "RadiobiologyParams",
    "LymanParams",
    "LIVER_RADIOBIOLOGY",
    "TUMOUR_RADIOBIOLOGY",
    "LIVER_LYMAN_STRIGARI2010",
    "DEFAULT_DX_PERCENT",
    "DEFAULT_VX_GY",
]

#: Dx levels reported by default (percent of the structure volume): D2, D50, D70, D95, D98.
DEFAULT_DX_PERCENT: tuple[float, ...] = (2.0, 50.0, 70.0, 95.0, 98.0)
#: Vx levels reported by default (Gy): V40Gy, V70Gy, V100Gy, V120Gy, V205Gy (the dose levels of EANM 2022 Tables
#: 2 and 3 for resin normal liver, glass perfused liver and tumour; see EVIDENCE.md 2.3).
DEFAULT_VX_GY: tuple[float, ...] = (40.0, 70.0, 100.0, 120.0, 205.0)
#: Largest number of DVH bins accepted (about 16 MB per array); a wider dose range needs a wider bin.
MAX_DVH_BINS: int = 2_000_000


# ---------------------------------------------------------------------------------------------------- parameters
class RadiobiologyParams(BaseModel):
    """Linear-quadratic parameters of a tissue for the BED of a permanent implant (Dale 1985)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    name: str
    alpha_beta_gy: float = Field(gt=0.0, le=1000.0, description="alpha/beta ratio, Gy")
    repair_half_time_h: float = Field(gt=0.0, le=1000.0, description="sublethal-damage repair half-time, h")
    source: str
    uncertain: bool = Field(description="True where the value is not verified at the primary source ([U])")

    def bed_gy(self, dose_gy: Any, half_life_h: float = Y90_HALF_LIFE_H) -> Any:
        """BED of ``dose_gy`` (scalar or array) with these parameters; see :func:`bed_gy`."""
        return bed_gy(dose_gy, self.alpha_beta_gy, self.repair_half_time_h, half_life_h=half_life_h)


class LymanParams(BaseModel):
    """Lyman-Kutcher-Burman NTCP parameters: TD50, slope m, volume effect n (D_eff = gEUD with a = 1/n)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    name: str
    td50_gy: float = Field(gt=0.0, le=1.0e4, description="uniform dose giving 50% complication probability, Gy")
    m: float = Field(gt=0.0, le=10.0, description="slope: standard deviation of TD50 / TD50")
    n: float = Field(gt=0.0, le=100.0, description="volume effect (n = 1: parallel organ, D_eff = mean dose)")
    dose_quantity: Literal["absorbed", "bed"] = "absorbed"
    source: str
    uncertain: bool

    def ntcp(self, dose_gy: np.ndarray, structure: np.ndarray | None = None) -> float:
        """NTCP of a dose distribution with these parameters; see :func:`lyman_ntcp`."""
        return lyman_ntcp(dose_gy, structure, td50_gy=self.td50_gy, m=self.m, n=self.n)


#: Normal liver, Y-90 permanent implant: alpha/beta 2.5 Gy, repair half-time 2.5 h [U].
LIVER_RADIOBIOLOGY = RadiobiologyParams(
    name="normal liver",
    alpha_beta_gy=2.5,
    repair_half_time_h=2.5,
    source=(
        "values in common use for Y-90 radioembolization BED (e.g. Strigari L et al., J Nucl Med 51:1377-1385, "
        "2010), as collected in EVIDENCE.md 2.2 [U: not verified at the primary source]. An alpha/beta of about "
        "8 Gy was fitted for hepatitic liver after EBRT (Son SH et al., Radiat Oncol 8:11, 2013)."
    ),
    uncertain=True,
)
#: Tumour, Y-90 permanent implant: alpha/beta 10 Gy, repair half-time 1.5 h [U].
TUMOUR_RADIOBIOLOGY = RadiobiologyParams(
    name="tumour",
    alpha_beta_gy=10.0,
    repair_half_time_h=1.5,
    source=(
        "values in common use for Y-90 radioembolization BED (e.g. Strigari L et al., J Nucl Med 51:1377-1385, "
        "2010), as collected in EVIDENCE.md 2.2 [U: not verified at the primary source]; not NET-specific."
    ),
    uncertain=True,
)
#: Lyman fit for liver toxicity after resin Y-90 in HCC: TD50 about 52 Gy, m about 0.28, n = 1 [U].
LIVER_LYMAN_STRIGARI2010 = LymanParams(
    name="liver toxicity, resin Y-90, HCC",
    td50_gy=52.0,
    m=0.28,
    n=1.0,
    dose_quantity="absorbed",
    source=(
        "Strigari L et al., J Nucl Med 51:1377-1385, 2010 (resin HCC), as recalled in EVIDENCE.md 3 "
        "[U: primary source not accessible; verify]. The same work gives a BED50 of about 93 Gy [U]. "
        "Fitted in HCC (mostly cirrhotic liver), not in NET."
    ),
    uncertain=True,
)


# ---------------------------------------------------------------------------------------------------- DVH
def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=np.float64, copy=True)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class DVH:
    """A cumulative dose-volume histogram.

    ``volume_fraction[i]`` is the fraction of the structure volume that receives a dose ``>= dose_bins_gy[i]``;
    ``dose_bins_gy`` are the bin edges (ascending, spaced by ``bin_width_gy``, starting at 0 Gy, or lower if some
    dose is negative); the curve starts at 1.0 and ends at 0.0. ``mean_gy``, ``min_gy`` and ``max_gy`` are exact
    (from the voxels, not the bins); Dx and Vx are interpolated linearly between bin edges (dose uniform within a
    bin) and clamped to [min_gy, max_gy], so they are exact for a uniform dose and within one bin width otherwise.
    """

    dose_bins_gy: np.ndarray
    volume_fraction: np.ndarray
    total_volume_ml: float
    mean_gy: float
    min_gy: float
    max_gy: float
    bin_width_gy: float
    name: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        bins = _readonly(self.dose_bins_gy)
        vf = _readonly(self.volume_fraction)
        if bins.ndim != 1 or vf.shape != bins.shape or bins.size < 2:
            raise DosimetryError(
                f"DVH: dose_bins_gy and volume_fraction must be 1-D of the same length >= 2, got {bins.shape} "
                f"and {vf.shape}"
            )
        if not (np.all(np.isfinite(bins)) and np.all(np.isfinite(vf))):
            raise DosimetryError("DVH: dose_bins_gy and volume_fraction must be finite")
        if np.any(np.diff(bins) <= 0):
            raise DosimetryError("DVH: dose_bins_gy must be strictly increasing")
        if np.any(np.diff(vf) > 1e-12) or vf.min() < -1e-12 or vf.max() > 1.0 + 1e-12:
            raise DosimetryError("DVH: volume_fraction must be non-increasing within [0, 1]")
        if not (self.total_volume_ml > 0 and math.isfinite(self.total_volume_ml)):
            raise DosimetryError(f"DVH: total_volume_ml must be > 0, got {self.total_volume_ml!r}")
        object.__setattr__(self, "dose_bins_gy", bins)
        object.__setattr__(self, "volume_fraction", vf)

    # -------------------------------------------------------------- derived
    @property
    def volume_ml(self) -> np.ndarray:
        """Cumulative volume (mL) receiving >= each bin edge."""
        return self.volume_fraction * self.total_volume_ml

    def d_gy(self, percent: float | Iterable[float]) -> float | np.ndarray:
        """Dx: the minimum dose received by the hottest ``percent`` % of the volume (D2, D50, D95, ...).

        Interpolated linearly between bin edges, clamped to [min_gy, max_gy]; D0 = max_gy, D100 = min_gy.
        """
        p = np.asarray(percent, dtype=float)
        if not np.all(np.isfinite(p)) or np.any(p < 0) or np.any(p > 100):
            raise DosimetryError(f"percent: must be within [0, 100], got {percent!r}")
        out = np.array([self._dx_one(float(x) / 100.0) for x in p.ravel()]).reshape(p.shape)
        return float(out) if out.ndim == 0 else out

    def _dx_one(self, f: float) -> float:
        if f <= 0.0:
            return self.max_gy
        if f >= 1.0:
            return self.min_gy
        vf, bins = self.volume_fraction, self.dose_bins_gy
        # last edge that at least a fraction f receives; vf[0] == 1 >= f and vf[-1] == 0 < f
        i = int(np.nonzero(vf >= f)[0][-1])
        v0, v1 = vf[i], vf[i + 1]
        d = bins[i] + (v0 - f) / (v0 - v1) * (bins[i + 1] - bins[i])
        return float(min(max(d, self.min_gy), self.max_gy))

    def v_percent(self, dose_gy: float | Iterable[float]) -> float | np.ndarray:
        """Vx: percent of the volume receiving >= ``dose_gy`` (V40Gy = ``v_percent(40)``), interpolated linearly
        between bin edges; 100 at or below min_gy, 0 above max_gy."""
        d = np.asarray(dose_gy, dtype=float)
        if not np.all(np.isfinite(d)):
            raise DosimetryError(f"dose_gy: must be finite, got {dose_gy!r}")
        v = np.interp(d, self.dose_bins_gy, self.volume_fraction) * 100.0
        v = np.where(d <= self.min_gy, 100.0, np.where(d > self.max_gy, 0.0, v))
        return float(v) if v.ndim == 0 else v

    def v_ml(self, dose_gy: float | Iterable[float]) -> float | np.ndarray:
        """Volume (mL) receiving >= ``dose_gy``."""
        v = np.asarray(self.v_percent(dose_gy)) / 100.0 * self.total_volume_ml
        return float(v) if v.ndim == 0 else v

    def metrics(
        self, dx_percent: Iterable[float] = DEFAULT_DX_PERCENT, vx_gy: Iterable[float] = DEFAULT_VX_GY
    ) -> dict[str, float]:
        """The usual scalars: mean, min, max, Dx (``D95_gy``), Vx (``V40Gy_percent``), volume."""
        out: dict[str, float] = {
            "mean_gy": self.mean_gy,
            "min_gy": self.min_gy,
            "max_gy": self.max_gy,
            "total_volume_ml": self.total_volume_ml,
        }
        for x in dx_percent:
            out[f"D{_num(x)}_gy"] = float(self.d_gy(x))
        for x in vx_gy:
            out[f"V{_num(x)}Gy_percent"] = float(self.v_percent(x))
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-able dict (lists and floats) with units in the keys; inverse of :meth:`from_dict`."""
        return {
            "name": self.name,
            "dose_bins_gy": self.dose_bins_gy.tolist(),
            "volume_fraction": self.volume_fraction.tolist(),
            "total_volume_ml": self.total_volume_ml,
            "mean_gy": self.mean_gy,
            "min_gy": self.min_gy,
            "max_gy": self.max_gy,
            "bin_width_gy": self.bin_width_gy,
            "metrics": self.metrics(),
            "provenance": dict(self.provenance),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DVH:
        try:
            return cls(
                dose_bins_gy=np.asarray(d["dose_bins_gy"], dtype=float),
                volume_fraction=np.asarray(d["volume_fraction"], dtype=float),
                total_volume_ml=float(d["total_volume_ml"]),
                mean_gy=float(d["mean_gy"]),
                min_gy=float(d["min_gy"]),
                max_gy=float(d["max_gy"]),
                bin_width_gy=float(d["bin_width_gy"]),
                name=str(d.get("name", "")),
                provenance=dict(d.get("provenance", {})),
            )
        except KeyError as exc:
            raise DosimetryError(f"DVH.from_dict: missing key {exc.args[0]!r}") from exc


def _num(x: float) -> str:
    return f"{x:g}"


def _structure_weights(
    dose_gy: np.ndarray, structure: np.ndarray | None, name: str = "structure"
) -> tuple[np.ndarray, np.ndarray]:
    """(dose, weight) of the voxels with weight > 0; validates shapes, ranges and finiteness."""
    d = np.asarray(dose_gy)
    if d.dtype.kind not in "biuf":
        raise DosimetryError(f"dose_gy: must be a real numeric array, got dtype {d.dtype}")
    if structure is None:
        inside = None
        w = np.ones(d.size, dtype=np.float64)
    else:
        s = np.asarray(structure)
        if s.shape != d.shape:
            raise DosimetryError(f"{name}: shape {s.shape} does not match dose_gy shape {d.shape}")
        if s.dtype == bool:
            # a mask: the voxels inside, weight 1 each (no float copy of the whole grid)
            inside = s
            w = np.ones(int(np.count_nonzero(s)), dtype=np.float64)
        elif s.dtype.kind in "biuf":
            if s.size:
                lo, hi = float(np.min(s)), float(np.max(s))  # NaN propagates; +-inf fails the range
                if not (math.isfinite(lo) and math.isfinite(hi)):
                    raise DosimetryError(f"{name}: fraction-of-voxel values must be finite")
                if lo < 0.0 or hi > 1.0:
                    raise DosimetryError(
                        f"{name}: fraction-of-voxel values must be within [0, 1], got [{lo:g}, {hi:g}]"
                    )
            inside = s > 0
            w = s[inside].astype(np.float64)
        else:
            raise DosimetryError(f"{name}: must be a boolean mask or a fraction array, got dtype {s.dtype}")
    if w.size == 0:
        raise DosimetryError(f"{name}: the structure is empty (no voxel with a fraction > 0)")
    dv = (d.reshape(-1) if inside is None else d[inside]).astype(np.float64)
    if not np.all(np.isfinite(dv)):
        raise DosimetryError(
            f"dose_gy: {int(np.count_nonzero(~np.isfinite(dv)))} voxels inside {name} are NaN or infinite "
            "(a plain-kernel dose is not reported in lung: use method='vsv_density' or 'ldm')"
        )
    return dv, w


@timed("DVH")
def dvh(
    dose_gy: np.ndarray,
    structure: np.ndarray | None,
    *,
    voxel_volume_ml: float,
    bin_width_gy: float = 0.1,
    name: str = "",
    mass_density_g_cm3: np.ndarray | float | None = None,
) -> DVH:
    """Cumulative DVH of ``dose_gy`` over ``structure``.

    ``structure``: a boolean mask, a fraction-of-voxel-inside array (0..1) of the dose's shape, or None (every
    voxel). ``voxel_volume_ml``: the volume of one voxel (``grid.voxel_volume_ml``). ``bin_width_gy``: the bin
    width; Dx and Vx are accurate to within one bin width (exact for a uniform dose).
    ``mass_density_g_cm3``: when given (an array of the dose's shape or a number), each voxel weighs its mass
    (fraction x density) instead of its volume: ``volume_fraction`` is then the fraction of the structure's *mass*
    receiving at least each dose and ``mean_gy`` the mass-weighted mean (deposited energy / mass, the reported mean
    dose); ``total_volume_ml`` stays the structure's volume. Where densities vary (lung, air) the two differ.
    """
    if not (isinstance(voxel_volume_ml, int | float) and math.isfinite(voxel_volume_ml) and voxel_volume_ml > 0):
        raise DosimetryError(f"voxel_volume_ml: must be a finite number > 0, got {voxel_volume_ml!r}")
    if not (isinstance(bin_width_gy, int | float) and math.isfinite(bin_width_gy) and bin_width_gy > 0):
        raise DosimetryError(f"bin_width_gy: must be a finite number > 0, got {bin_width_gy!r}")
    d, w = _structure_weights(dose_gy, structure)
    fractional = structure is not None and np.asarray(structure).dtype != bool
    rho = None if mass_density_g_cm3 is None else _density_weights(mass_density_g_cm3, dose_gy, structure)
    # the structure's voxels, gathered: the same histogram as the planner's (one implementation)
    return dvh_from_samples(d, w if fractional else None, voxel_volume_ml=voxel_volume_ml, bin_width_gy=bin_width_gy,
                            name=name, mass_density_g_cm3=rho)


@timed("DVH")
def dvh_from_samples(
    dose_gy: np.ndarray,
    fraction: np.ndarray | None = None,
    *,
    voxel_volume_ml: float,
    bin_width_gy: float = 0.1,
    name: str = "",
    mass_density_g_cm3: np.ndarray | None = None,
) -> DVH:
    """:func:`dvh` of a structure given by its voxels' values (1-D arrays, one entry per voxel of the structure,
    any order): ``dose_gy``, ``fraction`` (fraction of each voxel inside, in (0, 1]; None: 1 each) and
    ``mass_density_g_cm3`` (None: volume weighting). The same DVH as :func:`dvh` on the whole grid when the samples
    are that structure's voxels (in C order: bit for bit), without a pass over the grid per call; the planner
    gathers each structure's voxels once and uses them for its mean, BED and DVH (issue 16)."""
    if not (isinstance(voxel_volume_ml, int | float) and math.isfinite(voxel_volume_ml) and voxel_volume_ml > 0):
        raise DosimetryError(f"voxel_volume_ml: must be a finite number > 0, got {voxel_volume_ml!r}")
    if not (isinstance(bin_width_gy, int | float) and math.isfinite(bin_width_gy) and bin_width_gy > 0):
        raise DosimetryError(f"bin_width_gy: must be a finite number > 0, got {bin_width_gy!r}")
    d = np.asarray(dose_gy)
    if d.ndim != 1 or d.dtype.kind not in "biuf":
        raise DosimetryError(f"dose_gy: must be a 1-D real array of the structure's voxels, got {d.dtype} {d.shape}")
    label = name or "structure"
    if d.size == 0:
        raise DosimetryError(f"{label}: the structure is empty (no voxel with a fraction > 0)")
    d = d.astype(np.float64, copy=False)
    if fraction is None:
        w = np.ones(d.size, dtype=np.float64)
    else:
        w = np.asarray(fraction, dtype=np.float64)
        if w.shape != d.shape:
            raise DosimetryError(f"{label}: fraction shape {w.shape} does not match dose_gy shape {d.shape}")
        if not (np.all(np.isfinite(w)) and float(w.min()) > 0.0 and float(w.max()) <= 1.0):
            raise DosimetryError(f"{label}: fraction-of-voxel values must be finite and within (0, 1]")
    if not np.all(np.isfinite(d)):
        raise DosimetryError(
            f"dose_gy: {int(np.count_nonzero(~np.isfinite(d)))} voxels inside {label} are NaN or infinite "
            "(a plain-kernel dose is not reported in lung: use method='vsv_density' or 'ldm')"
        )
    volume_w = float(w.sum())
    if mass_density_g_cm3 is not None:
        rho = np.asarray(mass_density_g_cm3)
        if rho.shape != d.shape:
            raise DosimetryError(f"mass_density_g_cm3: shape {rho.shape} does not match dose_gy shape {d.shape}")
        rho = rho.astype(np.float64, copy=False)
        if not np.all(np.isfinite(rho)) or np.any(rho <= 0):
            raise DosimetryError("mass_density_g_cm3: must be finite and > 0 inside the structure")
        w = w * rho
    return _dvh_core(d, w, volume_w, float(voxel_volume_ml), float(bin_width_gy), name)


def _dvh_core(d: np.ndarray, w: np.ndarray, volume_w: float, voxel_volume_ml: float, bw: float, name: str) -> DVH:
    """The histogram of doses ``d`` (float64) with weights ``w`` (> 0); ``volume_w`` the structure's volume in
    voxels."""
    dmin, dmax = float(d.min()), float(d.max())
    i_lo = min(0, math.floor(dmin / bw))
    while i_lo * bw > dmin:  # rounding of dmin / bw
        i_lo -= 1
    i_hi = max(i_lo, math.floor(dmax / bw))
    while (i_hi + 1) * bw <= dmax:  # the last edge lies above the maximum
        i_hi += 1
    n_bins = i_hi - i_lo + 1
    if n_bins + 1 > MAX_DVH_BINS:
        raise DosimetryError(
            f"bin_width_gy: {bw:g} Gy gives {n_bins} bins for doses up to {dmax:g} Gy (limit {MAX_DVH_BINS}); "
            "use a wider bin"
        )
    edges = np.arange(i_lo, i_hi + 2, dtype=np.float64) * bw
    hist = _histogram(np.ascontiguousarray(d, dtype=np.float64), np.ascontiguousarray(w, dtype=np.float64), bw,
                      i_lo, n_bins, edges)
    total_w = float(w.sum())
    cum = np.cumsum(hist[::-1])[::-1] / total_w
    vf = np.append(cum, 0.0)
    vf[0] = 1.0
    vf = np.minimum.accumulate(np.clip(vf, 0.0, 1.0))
    return DVH(
        dose_bins_gy=edges,
        volume_fraction=vf,
        total_volume_ml=volume_w * voxel_volume_ml,
        mean_gy=float(np.dot(w, d) / total_w),
        min_gy=dmin,
        max_gy=dmax,
        bin_width_gy=bw,
        name=name,
    )


@numba.njit(cache=True, nogil=True)
def _histogram(d, w, bw, i_lo, n_bins, edges):  # pragma: no cover - compiled
    """Weights ``w`` summed per dose bin [edges[i], edges[i + 1]): the bin index floor(d / bw) - i_lo, clipped, then
    moved by one where the rounding of d / bw disagrees with the edges array; one pass, and the same sums in the
    same order as ``np.bincount`` over the index array the numpy version built in a dozen passes (issue 16)."""
    hist = np.zeros(n_bins)
    for k in range(d.shape[0]):
        x = d[k]
        i = np.int64(np.floor(x / bw)) - i_lo
        if i < 0:
            i = 0
        elif i > n_bins - 1:
            i = n_bins - 1
        if i + 1 < n_bins and x >= edges[i + 1]:
            i += 1
        if i > 0 and x < edges[i]:
            i -= 1
        hist[i] += w[k]
    return hist


def _density_weights(density: np.ndarray | float, dose_gy: np.ndarray, structure: np.ndarray | None) -> np.ndarray:
    """The densities of the voxels that :func:`_structure_weights` keeps (same order), checked finite and > 0."""
    shape = np.shape(dose_gy)
    rho = np.broadcast_to(np.asarray(density), shape) if np.ndim(density) == 0 else np.asarray(density)
    if rho.shape != shape:
        raise DosimetryError(f"mass_density_g_cm3: shape {rho.shape} does not match dose_gy shape {shape}")
    if structure is None:
        sel = rho.reshape(-1).astype(np.float64)
    else:
        # the voxels of the structure only, then float64 (no float copies of the whole grid)
        s = np.asarray(structure)
        sel = rho[s if s.dtype == np.bool_ else s > 0].astype(np.float64)
    if not np.all(np.isfinite(sel)) or np.any(sel <= 0):
        raise DosimetryError("mass_density_g_cm3: must be finite and > 0 inside the structure")
    return sel


def fraction_inside(
    grid: Grid,
    inside: Callable[[np.ndarray], np.ndarray],
    *,
    supersample: int = 4,
) -> np.ndarray:
    """Fraction of each voxel inside a shape, by supersampling.

    ``inside`` maps an (N, 3) array of patient coordinates (x, y, z) in mm to an (N,) boolean array. Each voxel is
    sampled at ``supersample**3`` sub-voxel centres; the result (float64, the grid's shape) is the fraction of them
    inside. Volumes so measured converge to the true volume as O(voxel / supersample), whatever the grid.
    """
    if not isinstance(grid, Grid):
        raise DosimetryError(f"grid: must be an embplan.grid.Grid, got {type(grid).__name__}")
    if not (isinstance(supersample, int) and 1 <= supersample <= 32):
        raise DosimetryError(f"supersample: must be an integer within [1, 32], got {supersample!r}")
    n = supersample
    sub = (np.arange(n) + 0.5) / n - 0.5
    oz, oy, ox = np.meshgrid(sub, sub, sub, indexing="ij")
    offsets = np.stack([oz.ravel(), oy.ravel(), ox.ravel()], axis=1)  # (n^3, 3) in index units
    nz, ny, nx = grid.shape
    jj, ii = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    out = np.empty(grid.shape, dtype=np.float64)
    for k in range(nz):  # one slice at a time keeps memory at ny*nx*n^3 points
        centres = np.stack([np.full(jj.size, k, dtype=float), jj.ravel(), ii.ravel()], axis=1)
        pts = (centres[:, None, :] + offsets[None, :, :]).reshape(-1, 3)
        hit = np.asarray(inside(grid.index_to_patient_mm(pts)), dtype=bool).reshape(-1, n**3)
        out[k] = hit.mean(axis=1).reshape(ny, nx)
    return out


# ---------------------------------------------------------------------------------------------------- scalars
def mean_dose_gy(dose_gy: np.ndarray, structure: np.ndarray | None = None) -> float:
    """Volume-weighted mean dose over ``structure`` (mask or fraction array; None: every voxel)."""
    d, w = _structure_weights(dose_gy, structure)
    return float(np.dot(w, d) / w.sum())


def bed_gy(
    dose_gy: Any,
    alpha_beta_gy: float,
    repair_half_time_h: float,
    *,
    half_life_h: float = Y90_HALF_LIFE_H,
) -> Any:
    """Biologically effective dose of a permanent Y-90 implant (Dale 1985), vectorised.

    BED = D [1 + D lambda / ((mu + lambda) alpha/beta)], lambda = ln2 / ``half_life_h`` (Y-90: 64.10 h, ICRP-107),
    mu = ln2 / ``repair_half_time_h``. Example: 40 Gy with liver alpha/beta 2.5 Gy, T_rep 2.5 h gives 64.0 Gy.
    Returns a float for a scalar dose, else an array of the dose's shape.
    """
    for nm, v in (("alpha_beta_gy", alpha_beta_gy), ("repair_half_time_h", repair_half_time_h),
                  ("half_life_h", half_life_h)):
        if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
            raise DosimetryError(f"{nm}: must be a finite number > 0, got {v!r}")
    d = np.asarray(dose_gy, dtype=np.float64)
    if not np.all(np.isfinite(d)):
        raise DosimetryError("dose_gy: must be finite")
    if np.any(d < 0):
        raise DosimetryError(f"dose_gy: must be >= 0, got min {float(d.min()):g}")
    lam = math.log(2.0) / half_life_h
    mu = math.log(2.0) / repair_half_time_h
    g = lam / ((mu + lam) * alpha_beta_gy)
    bed = d * (1.0 + d * g)
    return float(bed) if bed.ndim == 0 else bed


def eud_gy(dose_gy: np.ndarray, structure: np.ndarray | None, a: float) -> float:
    """Generalised EUD (Niemierko 1999): (sum_i v_i D_i^a)^(1/a), v_i the volume fractions.

    a = 1: mean dose; a -> +inf: maximum (serial organs); a < 0: tumours (cold spots dominate; a zero-dose voxel
    gives 0); a = 0: the limit, the geometric mean.
    """
    if not (isinstance(a, int | float) and math.isfinite(a)):
        raise DosimetryError(f"a: must be a finite number, got {a!r}")
    d, w = _structure_weights(dose_gy, structure)
    if np.any(d < 0):
        raise DosimetryError(f"dose_gy: must be >= 0 inside the structure for the EUD, got min {float(d.min()):g}")
    v = w / w.sum()
    if a == 0:
        if np.any(d == 0):
            return 0.0
        return float(np.exp(np.dot(v, np.log(d))))
    if a < 0 and np.any(d == 0):
        return 0.0
    # scale by the maximum to avoid overflow for large |a|
    dmax = float(d.max())
    if dmax == 0.0:
        return 0.0
    return float(dmax * np.dot(v, (d / dmax) ** a) ** (1.0 / a))


def radiobiological_eud_gy(dose_gy: np.ndarray, structure: np.ndarray | None, alpha_per_gy: float) -> float:
    """Tumour EUD with linear cell kill (Niemierko 1997): -ln(sum_i v_i exp(-alpha D_i)) / alpha.

    The uniform dose with the same surviving fraction. Pass a BED array as ``dose_gy`` for a BED-based EUD.
    ``alpha_per_gy`` has no default: radiosensitivity of NET metastases is not established.
    """
    if not (isinstance(alpha_per_gy, int | float) and math.isfinite(alpha_per_gy) and alpha_per_gy > 0):
        raise DosimetryError(f"alpha_per_gy: must be a finite number > 0, got {alpha_per_gy!r}")
    d, w = _structure_weights(dose_gy, structure)
    v = w / w.sum()
    dmin = float(d.min())
    # log-sum-exp around the minimum dose for stability
    s = np.dot(v, np.exp(-alpha_per_gy * (d - dmin)))
    return float(dmin - math.log(s) / alpha_per_gy)


def lyman_ntcp(
    dose_gy: np.ndarray,
    structure: np.ndarray | None = None,
    *,
    td50_gy: float,
    m: float,
    n: float,
) -> float:
    """Lyman-Kutcher-Burman NTCP = Phi((D_eff - TD50) / (m TD50)), D_eff = gEUD with a = 1/n.

    For liver parameters see :data:`LIVER_LYMAN_STRIGARI2010` [U] (``LIVER_LYMAN_STRIGARI2010.ntcp(dose, mask)``).
    """
    for nm, v in (("td50_gy", td50_gy), ("m", m), ("n", n)):
        if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
            raise DosimetryError(f"{nm}: must be a finite number > 0, got {v!r}")
    d_eff = eud_gy(dose_gy, structure, 1.0 / n)
    t = (d_eff - td50_gy) / (m * td50_gy)
    import scipy.special  # here, not at import: 0.17 s of every command's start-up (issue 16)

    return float(scipy.special.ndtr(t))
