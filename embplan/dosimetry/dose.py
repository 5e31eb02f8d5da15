"""Absorbed dose maps from cumulated activity: local deposition (LDM), voxel S-value kernel (VSV), and
density-corrected VSV.

Methods
-------
``"ldm"``
    Local deposition: all the energy of a decay is absorbed in the voxel where it happens,
    D = A~ x E / m_voxel, with A~ the cumulated activity (MBq s = 1e6 decays), E the mean energy absorbed per decay
    implied by K (:func:`embplan.nuclides.energy_per_decay_mev`) and m_voxel = density x voxel volume.
``"vsv"``
    Convolution of the cumulated activity with a Y-90 soft-tissue voxel S-value kernel
    (:func:`embplan.dosimetry.kernels.y90_voxel_kernel` for the grid's spacing, at ``kernel_density_g_cm3``).
    The kernel is normalised so that a uniform region gets the local-deposition dose at the kernel density.
    Its dose is energy / (kernel density x voxel volume): read over tissue of another density rho, the energy it
    implies is off by rho / kernel density (1.06 / 1.04 = +1.9 %). Build the kernel at the tissue's density
    (``kernel_density_g_cm3``) to conserve energy there; the planner uses the liver's nominal density (issue 13).
``"vsv_density"``
    The kernel dose scaled voxel by voxel by (kernel density / voxel density). Mikell JK et al., "Comparing voxel-
    based absorbed dosimetry methods in tumors, liver, lung, and at the liver-lung interface for 90Y microsphere
    selective internal radiation therapy", EJNMMI Phys 2:16 (2015): within about 5% of Monte Carlo in liver and
    tumour, about +20% in lung, against about -60% for the plain soft-tissue kernel.

    **Limitation**: the correction rescales the energy deposited in each voxel to the voxel's mass but transports
    the electrons as in soft tissue. Lung doses are therefore approximate (about +20%, Mikell 2015); at the liver-
    lung interface and at other density steps (bone, air at the skin, gas in bowel) the error is larger, and the
    dose in very low-density voxels near activity (air outside the body) is large and meaningless: restrict the
    output with ``roi``. Energy is conserved exactly (sum of dose x mass is the same as for the plain kernel).

The plain soft-tissue kernel must never report a lung dose: with ``method="vsv"`` and a density map, voxels below
``vsv_min_density_g_cm3`` (lung, air) are returned as NaN (and a DVH over them raises). Without a density map,
``"vsv"`` cannot tell lung from liver: do not read a lung dose from it.

Densities
---------
The default kernel and local-deposition density is 1.04 g/cm3: soft tissue as in the Lanconelli 2012 tables (ICRP
soft tissue; their S-values x voxel volume integrate to the emitted energy at about 1.04 g/cm3, see the shared
reference README) [U: the tables do not state it]. :func:`hu_to_density_g_cm3` maps CT numbers to densities with a
piecewise-linear calibration (:data:`DEFAULT_HU_DENSITY_CALIBRATION`, overridable). It never clips lung to water.

Output dtype: float32 when the cumulated activity is float32 (half the memory, about 1e-6 relative rounding),
else float64. Tiny negative values from FFT rounding are set to 0 (every kernel value is >= 0).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numba
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..errors import DosimetryError
from ..grid import Grid
from ..nuclides import K_GY_KG_PER_GBQ_DEFAULT, MEV_TO_J, energy_per_decay_mev
from ..progress import timed
from .convolve import _convolve_box, _parallel, _ranges, _threads
from .kernels import DENSITY_SOFT_TISSUE_G_CM3_DEFAULT, VoxelKernel, y90_voxel_kernel

__all__ = [
    "METHODS",
    "SOFT_TISSUE_DENSITY_G_CM3",
    "VSV_MIN_DENSITY_G_CM3",
    "HUDensityCalibration",
    "DEFAULT_HU_DENSITY_CALIBRATION",
    "hu_to_density_g_cm3",
    "DoseMap",
    "dose_map",
    "absorbed_dose_gy",
    "ldm_factor_gy_per_mbq_s",
]

logger = logging.getLogger(__name__)

Method = Literal["ldm", "vsv", "vsv_density"]
METHODS: tuple[str, ...] = ("ldm", "vsv", "vsv_density")

#: Soft-tissue density of the VSV kernels and the default local-deposition density, g/cm3: ICRP soft tissue as in
#: the Lanconelli 2012 voxel S-value tables (energy balance of the tables gives about 1.04) [U: not stated there].
#: The same number as the kernels' default, :data:`embplan.dosimetry.kernels.DENSITY_SOFT_TISSUE_G_CM3_DEFAULT`.
SOFT_TISSUE_DENSITY_G_CM3: float = DENSITY_SOFT_TISSUE_G_CM3_DEFAULT
#: Below this density (g/cm3) the plain soft-tissue kernel reports no dose (NaN): lung (about 0.26-0.30 inflated,
#: ICRU Report 44, 1989) and air. Adipose tissue (about 0.95, ICRU 44) stays above it. Mikell 2015: the plain
#: kernel is about -60% in lung.
VSV_MIN_DENSITY_G_CM3: float = 0.8

_PARALLEL_MIN_BYTES = 1 << 22  # input checks of arrays from 4 MiB on are split over the threads


# ---------------------------------------------------------------------------------------------------- CT -> density
class HUDensityCalibration(BaseModel):
    """Piecewise-linear CT number (HU) to mass density (g/cm3) calibration; constant beyond the end points."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    name: str
    hu: tuple[float, ...] = Field(min_length=2, description="CT numbers of the nodes, strictly increasing, HU")
    density_g_cm3: tuple[float, ...] = Field(min_length=2, description="densities at the nodes, g/cm3")
    source: str

    @model_validator(mode="after")
    def _check(self) -> HUDensityCalibration:
        if len(self.hu) != len(self.density_g_cm3):
            raise ValueError(
                f"hu and density_g_cm3 must have the same length, got {len(self.hu)} and {len(self.density_g_cm3)}"
            )
        if any(b <= a for a, b in zip(self.hu, self.hu[1:], strict=False)):
            raise ValueError("hu must be strictly increasing")
        if any(d <= 0 for d in self.density_g_cm3):
            raise ValueError("density_g_cm3 must be > 0 at every node")
        if any(b < a for a, b in zip(self.density_g_cm3, self.density_g_cm3[1:], strict=False)):
            raise ValueError("density_g_cm3 must not decrease with HU")
        return self


#: Generic calibration of the Schneider form (Schneider U, Pedroni E, Lomax A, Phys Med Biol 41:111-124, 1996;
#: Schneider W, Bortfeld T, Schlegel W, Phys Med Biol 45:459-478, 2000): air -1000 HU -> 0.0012 g/cm3 (dry air,
#: 20 C), a straight line through lung to water 0 HU -> 1.00 (so -740 HU -> 0.26, inflated lung of ICRU Report 44,
#: and -700 HU -> 0.30), soft tissue with the water slope to +100 HU -> 1.10 (liver about +60 HU -> 1.06, ICRU 44),
#: then a shallower bone line to +1600 HU -> 1.92 g/cm3 (cortical bone, ICRU 44), constant above. Scanner- and
#: kVp-specific: replace it with the site's own calibration where one exists [U: generic nodes, not a fit].
DEFAULT_HU_DENSITY_CALIBRATION = HUDensityCalibration(
    name="generic air-lung-water-soft tissue-bone (Schneider form)",
    hu=(-1000.0, 0.0, 100.0, 1600.0),
    density_g_cm3=(0.0012, 1.0, 1.10, 1.92),
    source=(
        "Schneider U et al., Phys Med Biol 41:111 (1996); Schneider W et al., Phys Med Biol 45:459 (2000); "
        "densities of air, inflated lung (0.26), liver (1.06) and cortical bone (1.92) from ICRU Report 44 (1989) "
        "[U: generic nodes, not a scanner fit]"
    ),
)


#: Voxels converted per piece by :func:`hu_to_density_g_cm3` (its float64 temporaries stay in the allocator's
#: reused memory instead of fresh pages: issue 16).
HU_DENSITY_PIECE_VOXELS = 1 << 20


@timed("HU to density")
def hu_to_density_g_cm3(
    hu: Any, calibration: HUDensityCalibration = DEFAULT_HU_DENSITY_CALIBRATION, *, dtype: Any = np.float64
) -> np.ndarray:
    """Mass density (g/cm3, an array of the input's shape, float64 unless ``dtype`` says otherwise) from CT numbers
    (HU), by piecewise-linear interpolation of ``calibration`` (in float64, then rounded to ``dtype``); below the
    first node and above the last the end densities hold. Lung keeps its own density (about 0.26-0.30 g/cm3 at
    -740..-700 HU): it is never clipped to water."""
    if not isinstance(calibration, HUDensityCalibration):
        raise DosimetryError(
            f"calibration: must be an HUDensityCalibration, got {type(calibration).__name__}"
        )
    h = np.asarray(hu)
    if h.dtype.kind not in "iuf":
        raise DosimetryError(f"hu: must be a real numeric array, got dtype {h.dtype}")
    out_dtype = np.dtype(dtype)
    if out_dtype.kind != "f":
        raise DosimetryError(f"dtype: must be a floating-point type, got {out_dtype}")
    xp, fp = np.asarray(calibration.hu), np.asarray(calibration.density_g_cm3)
    flat = h.reshape(-1)
    out = np.empty(h.shape, dtype=out_dtype)
    out_flat = out.reshape(-1)
    bad = 0
    for a in range(0, flat.size, HU_DENSITY_PIECE_VOXELS):
        piece = flat[a:a + HU_DENSITY_PIECE_VOXELS].astype(np.float64, copy=False)
        finite = np.isfinite(piece)
        if not finite.all():
            bad += int(np.count_nonzero(~finite))
            continue
        out_flat[a:a + piece.size] = np.interp(piece, xp, fp)
    if bad:
        raise DosimetryError(f"hu: {bad} values are NaN or infinite")
    return out


# ---------------------------------------------------------------------------------------------------- results
@dataclass(frozen=True, eq=False)
class DoseMap:
    """An absorbed-dose map with what made it (read-only ``dose_gy``, (z, y, x), on ``grid``)."""

    dose_gy: np.ndarray
    grid: Grid
    method: str
    k_gy_kg_per_gbq: float
    energy_per_decay_mev: float
    kernel_density_g_cm3: float
    kernel_parameters: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.grid, Grid):
            raise DosimetryError(f"grid: must be an embplan.grid.Grid, got {type(self.grid).__name__}")
        if np.shape(self.dose_gy) != self.grid.shape:
            raise DosimetryError(
                f"dose_gy: shape {np.shape(self.dose_gy)} does not match the grid shape {self.grid.shape}"
            )
        if isinstance(self.dose_gy, np.ndarray) and not self.dose_gy.flags.writeable:
            return
        a = np.array(self.dose_gy, copy=True)  # keep a private, read-only copy
        a.setflags(write=False)
        object.__setattr__(self, "dose_gy", a)

    def provenance(self) -> dict[str, Any]:
        """What a plan records about this dose map."""
        return {
            "method": self.method,
            "k_gy_kg_per_gbq": self.k_gy_kg_per_gbq,
            "energy_per_decay_mev": self.energy_per_decay_mev,
            "kernel_density_g_cm3": self.kernel_density_g_cm3,
            "kernel_parameters": dict(self.kernel_parameters),
            "notes": list(self.notes),
        }


# ---------------------------------------------------------------------------------------------------- helpers
def ldm_factor_gy_per_mbq_s(
    voxel_volume_ml: float,
    density_g_cm3: float = SOFT_TISSUE_DENSITY_G_CM3,
    *,
    k_gy_kg_per_gbq: float = K_GY_KG_PER_GBQ_DEFAULT,
) -> float:
    """Local-deposition dose (Gy) per MBq s of cumulated activity in one voxel: 1e6 E MeV_to_J / (rho V 1e-3)."""
    for nm, v in (("voxel_volume_ml", voxel_volume_ml), ("density_g_cm3", density_g_cm3)):
        if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
            raise DosimetryError(f"{nm}: must be a finite number > 0, got {v!r}")
    e_j = energy_per_decay_mev(k_gy_kg_per_gbq) * MEV_TO_J
    return 1.0e6 * e_j / (density_g_cm3 * voxel_volume_ml * 1.0e-3)


def _check_grid(grid: Any) -> Grid:
    if not isinstance(grid, Grid):
        raise DosimetryError(f"grid: must be an embplan.grid.Grid, got {type(grid).__name__}")
    for s in grid.spacing_mm:
        if not (math.isfinite(s) and s > 0):
            raise DosimetryError(f"grid.spacing_mm: every spacing must be > 0, got {grid.spacing_mm}")
    return grid


def _check_tia(tia_mbq_s: Any, grid: Grid) -> np.ndarray:
    a = np.asarray(tia_mbq_s)
    if a.dtype.kind not in "iuf":
        raise DosimetryError(f"tia_mbq_s: must be a real numeric array, got dtype {a.dtype}")
    if a.shape != grid.shape:
        raise DosimetryError(f"tia_mbq_s: shape {a.shape} does not match the grid shape {grid.shape}")
    dtype = np.float32 if a.dtype == np.float32 else np.float64
    a = a.astype(dtype, copy=False)
    _require_finite(a, "tia_mbq_s", allow_zero=True, unit="MBq s", rule="cumulated activity must be >= 0")
    return a


def _check_density(density_g_cm3: Any, grid: Grid, dtype: type, values: bool = True) -> np.ndarray | float:
    """The density as a number or a C-contiguous array of ``dtype`` (a float32 map stays float32 for float64 work);
    its values are checked (finite, > 0) unless ``values`` is false: the caller then checks them where it uses
    them."""
    if np.ndim(density_g_cm3) == 0 and np.asarray(density_g_cm3).dtype.kind in "iuf":
        v = float(density_g_cm3)
        if not (math.isfinite(v) and v > 0):
            raise DosimetryError(f"density_g_cm3: must be a finite number > 0, got {density_g_cm3!r}")
        return v
    a = np.asarray(density_g_cm3)
    if a.dtype.kind not in "iuf":
        raise DosimetryError(f"density_g_cm3: must be a number or a real numeric array, got dtype {a.dtype}")
    if a.shape != grid.shape:
        raise DosimetryError(f"density_g_cm3: shape {a.shape} does not match the grid shape {grid.shape}")
    if a.dtype == np.float32 and np.dtype(dtype) == np.float64:
        # kept in float32 (issue 16: no grid-sized float64 copy): every use promotes each value to float64 as it
        # reads it, which is exact, so the dose is the one of the converted map
        a = np.ascontiguousarray(a)
    else:
        a = np.ascontiguousarray(a, dtype=dtype)
    if values:
        _require_finite(a, "density_g_cm3", allow_zero=False, unit="g/cm3", rule=_DENSITY_RULE)
    return a


_DENSITY_RULE = "every density must be > 0 (air is about 0.0012)"


def _require_finite(a: np.ndarray, name: str, allow_zero: bool, unit: str, rule: str) -> None:
    """Raise naming ``name`` unless every value is finite and > 0 (>= 0 with ``allow_zero``); the counting of the
    offending voxels happens only then."""
    if _all_finite_positive(a, allow_zero):
        return
    bad = ~np.isfinite(a)
    if bad.any():
        raise DosimetryError(f"{name}: {int(np.count_nonzero(bad))} voxels are NaN or infinite")
    low = a < 0 if allow_zero else a <= 0
    what = "negative" if allow_zero else "<= 0"
    raise DosimetryError(f"{name}: {int(np.count_nonzero(low))} voxels are {what} (min {float(a.min()):g} {unit}); {rule}")


#: Bits of +inf as unsigned integers: read so, the non-negative finite floats are exactly 0 (+0.0) up to one below
#: these, and every negative number (-0.0 included), infinity and NaN is at or above them.
_INF_BITS: dict[np.dtype, tuple[type[np.unsignedinteger], int]] = {
    np.dtype(np.float32): (np.uint32, 0x7F800000), np.dtype(np.float64): (np.uint64, 0x7FF0000000000000)}


def _bits_in_range(lo: int, hi: int, dtype: np.dtype, allow_zero: bool) -> bool:
    """Whether floats of ``dtype`` whose bits span [lo, hi] are all finite and > 0 (>= 0 with ``allow_zero``);
    False also for -0.0, which an exact float test must then decide."""
    return hi < _INF_BITS[dtype][1] and (allow_zero or lo >= 1)


@numba.njit(cache=True, nogil=True)
def _bits_min_max(u, i0, i1):  # pragma: no cover - compiled
    """(min, max) of the unsigned integers u[i0:i1] (i0 < i1); integer min/max reductions vectorise."""
    w = u[i0:i1]  # a slice indexed from 0: no negative-index wraparound in the loop, so it vectorises
    lo = w[0]
    hi = w[0]
    for i in range(w.shape[0]):
        v = w[i]
        lo = v if v < lo else lo
        hi = v if v > hi else hi
    return lo, hi


def _all_finite_positive(a: np.ndarray, allow_zero: bool) -> bool:
    """True when every value of the float array ``a`` is finite and > 0 (>= 0 with ``allow_zero``).

    One pass over memory and no temporaries: the floats' bits, read as unsigned integers, all lie in [1, bits of
    +inf) exactly when every value is a positive finite number ([0, bits of +inf) for non-negative). Integer
    min/max reductions vectorise; arrays from 4 MiB on are split over the convolution's threads. -0.0 (which is
    >= 0) fails the bit test, so a failed test is decided again by an exact float test.
    """
    if a.size == 0:
        return True
    spec = _INF_BITS.get(a.dtype)
    if spec is not None and (a.flags.c_contiguous or a.flags.f_contiguous):
        u = a.ravel(order="K").view(spec[0])  # a view: contiguous memory in either order
        threads = _threads()
        parts = _ranges(0, u.size, threads if (threads > 1 and a.nbytes >= _PARALLEL_MIN_BYTES) else 1)
        lo = [0] * len(parts)
        hi = [0] * len(parts)

        def run(i: int) -> None:
            lo[i], hi[i] = (int(v) for v in _bits_min_max(u, parts[i][0], parts[i][1]))

        _parallel(run, len(parts), threads)
        if _bits_in_range(min(lo), max(hi), a.dtype, allow_zero):
            return True
    finite = bool(np.isfinite(a).all())
    return finite and bool((a >= 0).all() if allow_zero else (a > 0).all())


@numba.njit(cache=True, nogil=True, error_model="numpy")  # numpy error model: no zero-division branch, vectorised
def _finish_box(dose, z0, z1, y0, y1, x0, x1, scale, rho, rho_bits, k_rho, use_rho):  # pragma: no cover - compiled
    """In place over dose[z0:z1, y0:y1, x0:x1]: dose = max(dose * scale, 0), times k_rho / rho when ``use_rho``
    (rho an array of the dose's shape, rho_bits the same memory read as unsigned integers). Returns the min and
    max of rho_bits over the box (the first element twice when not ``use_rho``), so that the densities used are
    checked in the same pass (see :func:`_all_finite_positive`)."""
    zero = scale - scale
    lo = rho_bits[0, 0, 0]
    if use_rho:
        lo = rho_bits[z0, y0, x0]
    hi = lo
    for z in range(z0, z1):
        for y in range(y0, y1):
            d = dose[z, y, x0:x1]
            if use_rho:
                r = rho[z, y, x0:x1]
                rb = rho_bits[z, y, x0:x1]
                for x in range(x1 - x0):
                    v = d[x] * scale
                    d[x] = (v if v > zero else zero) * (k_rho / r[x])
                    b = rb[x]
                    lo = b if b < lo else lo
                    hi = b if b > hi else hi
            else:
                for x in range(x1 - x0):
                    v = d[x] * scale
                    d[x] = v if v > zero else zero
    return lo, hi


def _finish(dose: np.ndarray, box: tuple[tuple[int, int], ...], scale: Any, rho: np.ndarray | None,
            k_rho: Any) -> None:
    """:func:`_finish_box` over ``box``, in z-slabs on the convolution's threads for large boxes; with a density
    map, raises unless every density in the box (where the dose is computed) is finite and > 0."""
    (z0, z1), (y0, y1), (x0, x1) = box
    use_rho = rho is not None
    if rho is not None:
        rho_arr = rho
        rho_bits = rho.view(_INF_BITS[rho.dtype][0])
    else:
        rho_arr = np.ones((1, 1, 1), dtype=dose.dtype)
        rho_bits = rho_arr.view(_INF_BITS[rho_arr.dtype][0])
    threads = _threads()
    box_bytes = (z1 - z0) * (y1 - y0) * (x1 - x0) * dose.itemsize
    parts = _ranges(z0, z1, threads if (threads > 1 and box_bytes >= _PARALLEL_MIN_BYTES) else 1)
    lo = [0] * len(parts)
    hi = [0] * len(parts)

    def run(i: int) -> None:
        a, b = parts[i]
        lo[i], hi[i] = (int(v) for v in _finish_box(dose, a, b, y0, y1, x0, x1, scale, rho_arr, rho_bits, k_rho,
                                                     use_rho))

    _parallel(run, len(parts), threads)
    if rho is not None and not _bits_in_range(min(lo), max(hi), rho.dtype, allow_zero=False):
        _require_finite(rho[z0:z1, y0:y1, x0:x1], "density_g_cm3 (where the dose is computed, within the kernel's "
                        "reach of the activity)", allow_zero=False, unit="g/cm3", rule=_DENSITY_RULE)


def _check_roi(roi: Any, grid: Grid) -> np.ndarray | None:
    if roi is None:
        return None
    r = np.asarray(roi)
    if r.shape != grid.shape:
        raise DosimetryError(f"roi: shape {r.shape} does not match the grid shape {grid.shape}")
    if r.dtype != bool:
        raise DosimetryError(f"roi: must be a boolean mask, got dtype {r.dtype}")
    return r


def _kernel_for(grid: Grid, kernel: VoxelKernel | None, kernel_density_g_cm3: float, k: float) -> VoxelKernel:
    if kernel is None:  # y90_voxel_kernel caches its kernels
        return y90_voxel_kernel(tuple(float(s) for s in grid.spacing_mm), kernel_density_g_cm3, k_gy_kg_per_gbq=k)
    if not isinstance(kernel, VoxelKernel):
        raise DosimetryError(f"kernel: must be an embplan.dosimetry.kernels.VoxelKernel, got {type(kernel).__name__}")
    kv = np.asarray(kernel.voxel_mm, dtype=float)
    if not np.allclose(kv, grid.spacing_mm, rtol=1e-6, atol=0):
        raise DosimetryError(
            f"kernel: voxel_mm {tuple(kv.tolist())} does not match the grid spacing_mm {grid.spacing_mm}"
        )
    return kernel


# ---------------------------------------------------------------------------------------------------- dose
@timed("dose map", logging.INFO)
def dose_map(
    tia_mbq_s: np.ndarray,
    grid: Grid,
    method: Method = "vsv",
    density_g_cm3: float | np.ndarray | None = None,
    *,
    k_gy_kg_per_gbq: float = K_GY_KG_PER_GBQ_DEFAULT,
    kernel_density_g_cm3: float = SOFT_TISSUE_DENSITY_G_CM3,
    roi: np.ndarray | None = None,
    kernel: VoxelKernel | None = None,
    vsv_min_density_g_cm3: float = VSV_MIN_DENSITY_G_CM3,
) -> DoseMap:
    """Absorbed dose (Gy) of the cumulated activity ``tia_mbq_s`` (MBq s per voxel, (z, y, x), ``grid.shape``),
    with the method and kernel parameters that made it.

    ``method``: ``"ldm"``, ``"vsv"`` or ``"vsv_density"`` (see the module docstring, and its limitations).
    ``density_g_cm3``: a number or an array of the grid's shape; required for ``"vsv_density"``; for ``"ldm"`` the
    voxel mass uses it (default: the soft-tissue kernel density, 1.04 g/cm3); for ``"vsv"`` it only marks the
    voxels below ``vsv_min_density_g_cm3`` (lung, air), whose dose is NaN. ``k_gy_kg_per_gbq``: the local-
    deposition constant, which sets the energy per decay (:func:`embplan.nuclides.energy_per_decay_mev`).
    ``kernel_density_g_cm3``: the density of the kernel medium. ``roi``: boolean mask; the dose is computed only
    inside it (0 outside). ``kernel``: a prebuilt :class:`~embplan.dosimetry.kernels.VoxelKernel` for the grid's
    spacing (e.g. read from a published table), used instead of :func:`~embplan.dosimetry.kernels.y90_voxel_kernel`
    (its own density replaces ``kernel_density_g_cm3``).

    Raises :class:`~embplan.errors.DosimetryError` on NaN, infinite or negative activity, shape mismatches, bad
    spacing, an unknown method, or a NaN, infinite or non-positive density wherever it enters the result: anywhere
    in the map for ``"ldm"`` and ``"vsv"``; for ``"vsv_density"`` within the kernel's reach of the activity (the
    box where the dose is computed), checked in the pass that applies it -- beyond that reach the dose is exactly
    0 whatever the density, so the map is not read there.
    """
    dose, meta = _compute(
        tia_mbq_s, grid, method, density_g_cm3, k_gy_kg_per_gbq, kernel_density_g_cm3, roi, kernel,
        vsv_min_density_g_cm3,
    )
    dose.setflags(write=False)
    return DoseMap(dose_gy=dose, grid=grid, **meta)


def absorbed_dose_gy(
    tia_mbq_s: np.ndarray,
    grid: Grid,
    method: Method = "vsv",
    density_g_cm3: float | np.ndarray | None = None,
    *,
    k_gy_kg_per_gbq: float = K_GY_KG_PER_GBQ_DEFAULT,
    kernel_density_g_cm3: float = SOFT_TISSUE_DENSITY_G_CM3,
    roi: np.ndarray | None = None,
    kernel: VoxelKernel | None = None,
    vsv_min_density_g_cm3: float = VSV_MIN_DENSITY_G_CM3,
) -> np.ndarray:
    """Absorbed dose map in Gy: an array of the grid's shape (float32 for float32 activity, else float64).
    The arguments are those of :func:`dose_map` (which also returns the method and kernel parameters)."""
    dose, _ = _compute(
        tia_mbq_s, grid, method, density_g_cm3, k_gy_kg_per_gbq, kernel_density_g_cm3, roi, kernel,
        vsv_min_density_g_cm3,
    )
    return dose


def _compute(
    tia_mbq_s: Any,
    grid: Any,
    method: Any,
    density_g_cm3: Any,
    k_gy_kg_per_gbq: float,
    kernel_density_g_cm3: float,
    roi: Any,
    kernel: Any,
    vsv_min_density_g_cm3: float,
) -> tuple[np.ndarray, dict[str, Any]]:
    grid = _check_grid(grid)
    if method not in METHODS:
        raise DosimetryError(f"method: must be one of {METHODS}, got {method!r}")
    tia = _check_tia(tia_mbq_s, grid)
    dtype = tia.dtype.type
    r = _check_roi(roi, grid)
    for nm, v in (("kernel_density_g_cm3", kernel_density_g_cm3), ("vsv_min_density_g_cm3", vsv_min_density_g_cm3),
                  ("k_gy_kg_per_gbq", k_gy_kg_per_gbq)):
        if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
            raise DosimetryError(f"{nm}: must be a finite number > 0, got {v!r}")
    # vsv_density uses a density map only within the kernel's reach of the activity (the dose is exactly 0
    # elsewhere, whatever the density): its values are checked there, in the pass that applies them
    rho = None if density_g_cm3 is None else _check_density(density_g_cm3, grid, dtype,
                                                            values=method != "vsv_density")
    if method == "vsv_density" and rho is None:
        raise DosimetryError("density_g_cm3: required for method 'vsv_density' (a number or an array, g/cm3)")
    meta: dict[str, Any] = {
        "method": method,
        "k_gy_kg_per_gbq": float(k_gy_kg_per_gbq),
        "energy_per_decay_mev": energy_per_decay_mev(k_gy_kg_per_gbq),
        "kernel_density_g_cm3": float(kernel_density_g_cm3),
        "kernel_parameters": {},
    }

    if method == "ldm":
        factor = ldm_factor_gy_per_mbq_s(grid.voxel_volume_ml, 1.0, k_gy_kg_per_gbq=k_gy_kg_per_gbq)
        dens = kernel_density_g_cm3 if rho is None else rho
        dose = np.multiply(tia, dtype(factor) if dtype is np.float32 else factor)  # (tia * factor) / dens,
        np.divide(dose, dens, out=dose)  # in place: one array of the grid, not two
        dose = np.asarray(dose, dtype=dtype)
        if r is not None:
            dose[~r] = 0
        meta["notes"] = (
            "local deposition, voxel mass from "
            + ("the given density" if rho is not None else f"{kernel_density_g_cm3:g} g/cm3 (soft tissue)"),
        )
        return dose, meta

    kern = _kernel_for(grid, kernel, kernel_density_g_cm3, k_gy_kg_per_gbq)
    k_rho = float(kern.density_g_cm3)
    meta["kernel_density_g_cm3"] = k_rho
    meta["kernel_parameters"] = dict(kern.parameters)
    k_arr = np.asarray(kern.mgy_per_mbq_s, dtype=dtype)
    dose, box = _convolve_box(tia, k_arr, roi=r)  # a fresh array of the work dtype, exactly 0 outside box
    dose = np.asarray(dose, dtype=dtype)
    if box is not None:
        # mGy -> Gy; max(., 0) removes FFT rounding only (every kernel value is >= 0); vsv_density rescales the
        # energy to each voxel's mass (k_rho / rho), in the same pass and only where the dose can be non-zero
        scale = dtype(1.0e-3)
        if method == "vsv_density" and not isinstance(rho, np.ndarray):
            assert rho is not None  # vsv_density without a density raised above
            scale = dtype(scale * dtype(k_rho / rho))
        _finish(dose, box, scale, rho if method == "vsv_density" and isinstance(rho, np.ndarray) else None,
                dtype(k_rho))
    notes: list[str] = []
    if method == "vsv_density":
        notes.append(
            "density-corrected kernel (Mikell 2015): soft-tissue transport, energy rescaled to the voxel mass; "
            "lung about +20%, density interfaces less accurate"
        )
    elif rho is not None:
        rho_cmp = rho.astype(np.float64) if isinstance(rho, np.ndarray) and rho.dtype != dtype else rho
        low = np.broadcast_to(np.asarray(rho_cmp) < vsv_min_density_g_cm3, grid.shape)  # in the dose's dtype
        if np.any(low):
            dose[low] = np.nan
            n_low = int(np.count_nonzero(low))
            notes.append(
                f"{n_low} voxels below {vsv_min_density_g_cm3:g} g/cm3 (lung, air) are NaN: the soft-tissue "
                "kernel underestimates lung dose (about -60%, Mikell 2015); use 'vsv_density' or 'ldm'"
            )
            logger.info("vsv: %d low-density voxels reported as NaN", n_low)
    meta["notes"] = tuple(notes)
    return dose, meta
