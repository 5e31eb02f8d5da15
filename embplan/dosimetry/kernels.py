"""Y-90 dose kernels: the point kernel in water, voxel S-value kernels for any voxel size and density, and
readers for published tables.

Point kernel
------------
The package carries one published figure set: the Y-90 dose point kernel in water of Graves, Flynn and Hyer
(Med Phys 46:5284, 2019; EGSnrc, ICRP-107 spectrum), as the energy deposited within radius r per decay, E(r) in
MeV, every 0.25 mm from 0 to 12 mm (:data:`GRAVES2019_Y90_WATER_RADIUS_MM`,
:data:`GRAVES2019_Y90_WATER_ENERGY_WITHIN_MEV`). E(r) is interpolated monotonically (PCHIP, Fritsch-Carlson); the
point kernel is K(r) = (dE/dr) / (4 pi r^2 rho). The 12 mm table holds 0.92991 of the 0.9336 MeV emitted per
decay; the rest (about 0.4 %) is a bremsstrahlung tail that is spread over metres.

Voxel S-values
--------------
The mean absorbed dose to a target voxel per decay uniformly distributed in a source voxel of the same size
(a, b, c), their centres offset by o = (i a, j b, k c), is the point kernel averaged over the distance of two
independent uniform points, one in each box:

    S(o) = E[K(|o + X - Y|)] = (1/V) * integral of K(|u|) w_o(u) d^3u,
    w_o(u) = prod_d (1 - |u_d - o_d| / s_d)_+        (the convolution of the two box indicators, / V).

(the energy deposited in the target voxel per decay is then f(o) = rho V S(o) = integral of k(|u|) w_o(u) d^3u,
with k = (dE/dr) / (4 pi r^2) the energy density per decay). This is integrated with a fixed quadrature
(deterministic, no sampling). w_o is a trilinear polynomial on each of the 8 sub-boxes [o_d - s_d, o_d] or
[o_d, o_d + s_d]; the lattice puts the point-kernel singularity u = 0 at a corner of a sub-box or outside it:

- sub-boxes with the singularity at a corner (8 distinct integrals, shared by the 27 nearest offsets) in Duffy
  (pyramid) coordinates: three pyramids with apex at the origin, rays to a Gauss-Legendre grid on each far face,
  and along each ray the exact integral of the cubic tent weight times the piecewise-quadratic dE/dr
  (Gauss-Legendre(3) on every interval of the E(r) table); the Jacobian cancels the 1/r^2;
- all other sub-boxes (at least one voxel side from the singularity) by nested Gauss-Legendre on cells of at most
  ``quadrature_cell_mm`` (1.5 mm of water, scaled by 1/rho; and no larger than the distance to the singularity),
  4 nodes per cell and axis; the inner ranges are clipped to the truncation sphere, which thus bounds the domain
  instead of cutting through cells.

The octant is computed and mirrored; permutation symmetry between axes of equal voxel size is imposed by
averaging over those permutations. The integrals of all offsets sum to the energy within the truncation radius
to about 1e-5 before any renormalisation (recorded in ``parameters['quadrature']``); halving the cells and
doubling the nodes changes no S-value holding more than 0.1 % of the energy by more than 0.02 %; a constant point
kernel gives its closed form to 1e-6, and a seeded Monte Carlo of the same integral agrees within its statistics
(tests/dosimetry/test_kernels.py). The quadrature is vectorised numpy (all boxes, then their nodes level by level
as ragged expansions), with every operation of the former scalar numba loops in their order and each sum
accumulated node after node, so the S-values are bit for bit those of the loops (tests/dosimetry/
test_kernel_quadrature.py). Building a 4.42 mm kernel (7^3, 261,000 point-kernel evaluations) takes about 0.03 s,
1 mm (23^3) 0.045 s, 1.5 mm (17^3, 743,000) 0.07 s, once per process (cached in memory); the numba loops took
0.004-0.014 s but cost 2.7 s of compilation on the first plan after an install (issue 16's cold start).

Energy normalisation and truncation
-----------------------------------
The point kernel is truncated at ``truncation_mm`` (default 11 mm of water, scaled by 1/rho in other media; it
keeps 99.60 % of the 0.9336 MeV of the Graves kernel, as in Taranis). The truncated kernel is then renormalised so
that its total equals the energy per decay implied by the local-deposition constant K in use,
``nuclides.energy_per_decay_mev(k_gy_kg_per_gbq)`` (0.9312 MeV for the clinical K = 49.67 Gy kg/GBq): the
energy beyond the truncation radius (the bremsstrahlung tail, ~0.004 MeV) and the difference between the kernel's
spectrum and K's convention are spread over the kernel in proportion to it (one factor, 1.0014 by default, recorded
in ``parameters['renormalisation_factor']``). So in a uniform activity region larger than the kernel, voxel-S-value
dose equals local-deposition dose exactly, whatever K is in use.

Density
-------
Other densities by range scaling of the water kernel, K_rho(r) = rho^2 K_water(rho r), i.e. E_rho(r) = E_water(rho r)
(O'Connor's density-scaling theorem for a homogeneous medium [U: citation not verified at the source]; reproduces
tabulated kernels of other densities to 1-2 % at the centre, shared/reference/README). It follows that
S_rho(voxel s) = rho^2 * S_water(voxel rho*s) (truncation included), which the tests check.

Readers
-------
:func:`read_point_kernel_csv` reads a shell point-kernel CSV (energy per decay in spherical shells, like the
Graves 2019 files); :func:`read_voxel_s_values_csv` reads octant voxel-S-value tables (i, j, k = 0..n, mirrored),
like the Lanconelli 2012 database. Both return objects that carry their source, so users can bring their own
kernels (:func:`voxel_kernel_from_point_kernel` builds voxel kernels from any :class:`PointKernel`).
"""

from __future__ import annotations

import csv
import functools
import itertools
import logging
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from scipy.interpolate import PchipInterpolator

from ..errors import DosimetryError
from ..nuclides import (
    K_GY_KG_PER_GBQ_DEFAULT,
    MEV_TO_J,
    Y90_GRAVES2019_TOTAL_ENERGY_MEV,
    Y90_HALF_LIFE_H,
    energy_per_decay_mev,
)

__all__ = [
    "GRAVES2019_SOURCE",
    "GRAVES2019_Y90_WATER_RADIUS_MM",
    "GRAVES2019_Y90_WATER_ENERGY_WITHIN_MEV",
    "TRUNCATION_WATER_MM_DEFAULT",
    "DENSITY_SOFT_TISSUE_G_CM3_DEFAULT",
    "QUADRATURE_CELL_WATER_MM",
    "QUADRATURE_NODES_PER_CELL",
    "MAX_HALF_WIDTH_VOXELS",
    "PointKernel",
    "VoxelKernel",
    "graves2019_y90_point_kernel",
    "y90_voxel_kernel",
    "voxel_kernel_from_point_kernel",
    "read_point_kernel_csv",
    "read_voxel_s_values_csv",
]

log = logging.getLogger(__name__)

GRAVES2019_SOURCE = (
    "Graves SA, Flynn RT, Hyer DE. Dose point kernels for 2,174 radionuclides. Med Phys 46(11):5284-5293 (2019), "
    "doi:10.1002/mp.13789; EGSnrc, water, ICRP-107 Y-90 spectrum (T1/2 64.10 h), Zenodo record 2564036"
)

#: Radii (mm) of the embedded Graves 2019 Y-90 water kernel: 0 to 12 mm every 0.25 mm.
GRAVES2019_Y90_WATER_RADIUS_MM: tuple[float, ...] = tuple(0.25 * n for n in range(49))
#: Energy deposited within each radius per decay, MeV (Graves, Flynn, Hyer, Med Phys 46:5284, 2019; cumulative
#: sums of the published 0.1 mm shells, linearly interpolated at the odd quarter millimetres). E(0) = 0.
GRAVES2019_Y90_WATER_ENERGY_WITHIN_MEV: tuple[float, ...] = (
    0.0,
    0.05095, 0.10306, 0.15509, 0.20657, 0.25712, 0.30657, 0.35455, 0.40116,
    0.44595, 0.48901, 0.53019, 0.56943, 0.60654, 0.64159, 0.67452, 0.70531,
    0.73375, 0.75993, 0.78373, 0.80538, 0.82480, 0.84215, 0.85740, 0.87077,
    0.88216, 0.89193, 0.90009, 0.90689, 0.91242, 0.91688, 0.92040, 0.92314,
    0.92518, 0.92669, 0.92777, 0.92853, 0.92905, 0.92939, 0.92959, 0.92972,
    0.92979, 0.92984, 0.92986, 0.92988, 0.92989, 0.92989, 0.92990, 0.92991,
)  # fmt: skip

#: Truncation radius of the point kernel in water, mm (scaled by 1/rho in other media). 11 mm keeps 99.6 % of the
#: energy per decay (Graves 2019 kernel; the value Taranis uses, EVIDENCE.md section 1).
TRUNCATION_WATER_MM_DEFAULT: float = 11.0
#: Default tissue density, g/cm3 (the contract's default; the Lanconelli 2012 soft-tissue voxel S-values balance
#: their energy at about 1.04 g/cm3, shared/reference/README; ICRP soft tissue is 1.03-1.04 g/cm3).
DENSITY_SOFT_TISSUE_G_CM3_DEFAULT: float = 1.04
#: Quadrature cell: the largest side (mm of water; scaled by 1/rho) of the cells on which Gauss-Legendre rules are
#: used (the sub-boxes of the box-pair integral and the faces of the Duffy pyramids). Chosen by a convergence study
#: (tests/dosimetry/test_kernels.py): halving it and doubling the nodes changes no S-value that holds more than
#: 0.1 % of the energy by more than 0.05 %.
QUADRATURE_CELL_WATER_MM: float = 1.5
#: Gauss-Legendre nodes per cell and dimension.
QUADRATURE_NODES_PER_CELL: int = 4
#: Largest kernel half-width in voxels (a (2n+1)^3 array); smaller voxels, lower densities or longer truncation
#: radii that would need more are refused (the kernel would be larger than the images it is convolved with).
MAX_HALF_WIDTH_VOXELS: int = 64
# --- input bounds of kernel building (issue 12: a 1e6 mm voxel or an absurd density ran for minutes, since the
# quadrature's cell count grows with (voxel size x density / QUADRATURE_CELL_WATER_MM)^3)
#: Largest voxel side, mm. Emission images have 2-10 mm voxels; Y-90's maximum beta range in water is 11 mm, so at
#: 50 mm the kernel is the centre voxel and its neighbours (building it takes ~0.1 s; 1000 mm took 60 s).
KERNEL_VOXEL_MM_MAX: float = 50.0
#: Largest medium density, g/cm3: osmium, the densest element, is 22.59 g/cm3 (CRC Handbook); tissues are <= 3
#: (tooth enamel), implants <= 21.5 (platinum).
KERNEL_DENSITY_G_CM3_MAX: float = 25.0

# S [mGy/(MBq s)] = E [MeV/decay] * MEV_TO_J [J/MeV] * 1e6 [decays/(MBq s)] * 1e3 [mGy/Gy] / m [kg],
# m = rho [g/cm3] * V [mm3] * 1e-3 [cm3/mm3] * 1e-3 [kg/g]   =>   S = E * MEV_TO_J * 1e15 / (rho * V_mm3).
_MGY_PER_MBQ_S_PER_MEV_PER_G_MM3 = MEV_TO_J * 1.0e15


# ----------------------------------------------------------------------------------------------------- point kernel
@dataclass(frozen=True)
class PointKernel:
    """A radial dose point kernel given as the energy deposited within radius r per decay, E(r).

    ``radius_mm`` strictly increasing from 0; ``energy_within_mev`` non-decreasing from E(0) = 0;
    ``density_g_cm3`` of the medium the table was computed in; ``total_energy_mev`` the energy emitted per decay
    including what lies beyond the last radius, when the source states it. Hashable (tuples), so kernels built from
    it are cached.
    """

    radius_mm: tuple[float, ...]
    energy_within_mev: tuple[float, ...]
    density_g_cm3: float = 1.0
    source: str = ""
    total_energy_mev: float | None = None

    def __post_init__(self) -> None:
        r = _float_tuple("radius_mm", self.radius_mm)
        e = _float_tuple("energy_within_mev", self.energy_within_mev)
        object.__setattr__(self, "radius_mm", r)
        object.__setattr__(self, "energy_within_mev", e)
        if len(r) != len(e):
            raise DosimetryError(
                f"energy_within_mev: must have one value per radius ({len(r)}), got {len(e)}"
            )
        if len(r) < 3:
            raise DosimetryError(f"radius_mm: need at least 3 radii (0 and two more), got {len(r)}")
        if r[0] != 0.0 or e[0] != 0.0:
            raise DosimetryError(
                f"radius_mm/energy_within_mev: the table must start at r = 0 with E = 0, got ({r[0]}, {e[0]})"
            )
        if any(b <= a for a, b in itertools.pairwise(r)):
            raise DosimetryError("radius_mm: must be strictly increasing")
        if any(b < a for a, b in itertools.pairwise(e)):
            raise DosimetryError("energy_within_mev: must be non-decreasing (energy in a shell is >= 0)")
        if e[-1] <= 0.0:
            raise DosimetryError("energy_within_mev: the kernel deposits no energy")
        object.__setattr__(self, "density_g_cm3", _positive_float("density_g_cm3", self.density_g_cm3))
        if self.total_energy_mev is not None:
            total = _positive_float("total_energy_mev", self.total_energy_mev)
            if total < e[-1] * (1.0 - 1.0e-9):
                raise DosimetryError(
                    f"total_energy_mev: {total} is less than the energy within the table ({e[-1]})"
                )
            object.__setattr__(self, "total_energy_mev", total)
        if not isinstance(self.source, str):
            raise DosimetryError(f"source: must be a string, got {type(self.source).__name__}")

    @property
    def max_radius_mm(self) -> float:
        """The last tabulated radius, mm."""
        return self.radius_mm[-1]

    @functools.cached_property
    def _interpolant(self) -> PchipInterpolator:
        from scipy.interpolate import PchipInterpolator  # here: 0.2 s of every command's start-up (issue 16)

        return PchipInterpolator(
            np.asarray(self.radius_mm), np.asarray(self.energy_within_mev), extrapolate=False
        )

    def energy_within(self, radius_mm: np.ndarray | float) -> np.ndarray:
        """E(r) in MeV per decay: monotone (PCHIP) interpolation; constant beyond the last radius."""
        r = np.clip(np.asarray(radius_mm, dtype=float), 0.0, self.max_radius_mm)
        return self._interpolant(r)

    def energy_gradient_mev_per_mm(self, radius_mm: np.ndarray | float) -> np.ndarray:
        """dE/dr in MeV/mm (>= 0; zero beyond the last radius)."""
        r = np.asarray(radius_mm, dtype=float)
        inside = (r >= 0.0) & (r <= self.max_radius_mm)
        out = np.zeros(np.shape(r))
        out[inside] = self._interpolant.derivative()(r[inside])
        return np.maximum(out, 0.0)

    def dose_mev_per_g(self, radius_mm: np.ndarray | float) -> np.ndarray:
        """The point kernel K(r) = (dE/dr) / (4 pi r^2 rho), MeV per g per decay (r > 0)."""
        r = np.asarray(radius_mm, dtype=float)
        with np.errstate(divide="ignore"):
            # dE/dr [MeV/mm] * 10 [mm/cm] / (4 pi (r/10)^2 [cm2] rho [g/cm3])
            return 1.0e3 * self.energy_gradient_mev_per_mm(r) / (4.0 * math.pi * r**2 * self.density_g_cm3)

    def parameters(self) -> dict[str, Any]:
        """A plain description of the kernel for provenance (not the numbers themselves)."""
        return {
            "source": self.source,
            "medium_density_g_cm3": self.density_g_cm3,
            "max_radius_mm": self.max_radius_mm,
            "n_radii": len(self.radius_mm),
            "energy_within_table_mev": self.energy_within_mev[-1],
            "total_energy_mev": self.total_energy_mev,
            "interpolation": "PCHIP (monotone) of the energy within r",
        }


def graves2019_y90_point_kernel() -> PointKernel:
    """The embedded Y-90 point kernel in water (Graves, Flynn, Hyer, Med Phys 46:5284, 2019), 0-12 mm."""
    return _GRAVES2019


# ----------------------------------------------------------------------------------------------------- voxel kernel
@dataclass(frozen=True, eq=False)
class VoxelKernel:
    """A voxel S-value kernel: dose to each voxel around a source voxel per cumulated activity in it.

    ``mgy_per_mbq_s``: float64, read-only, odd in every axis, (z, y, x), the source voxel at ``shape // 2``;
    mGy per MBq s of cumulated activity in the centre voxel. ``voxel_mm``: (z, y, x) voxel size. ``density_g_cm3``:
    the medium. ``parameters``: provenance as a plain dict (source, truncation, energy per decay, K, density,
    quadrature), ready to be stored with a plan.
    """

    mgy_per_mbq_s: np.ndarray
    voxel_mm: tuple[float, float, float]
    density_g_cm3: float
    parameters: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "voxel_mm", _voxel_mm_tuple(self.voxel_mm))
        object.__setattr__(self, "density_g_cm3", _positive_float("density_g_cm3", self.density_g_cm3))
        arr = self.mgy_per_mbq_s
        if not isinstance(arr, np.ndarray) or arr.dtype != np.float64 or arr.flags.writeable:
            arr = np.array(arr, dtype=np.float64)  # own copy: nobody else can write to it
        if arr.ndim != 3 or any(n % 2 == 0 for n in arr.shape):
            raise DosimetryError(
                f"mgy_per_mbq_s: must be a 3-D array, odd in every axis, got shape {arr.shape}"
            )
        if not np.all(np.isfinite(arr)) or np.any(arr < 0.0):
            raise DosimetryError("mgy_per_mbq_s: every S-value must be finite and >= 0")
        arr.flags.writeable = False
        object.__setattr__(self, "mgy_per_mbq_s", arr)
        if not isinstance(self.parameters, Mapping):
            raise DosimetryError(f"parameters: must be a mapping, got {type(self.parameters).__name__}")
        object.__setattr__(self, "parameters", dict(self.parameters))

    @property
    def shape(self) -> tuple[int, int, int]:
        nz, ny, nx = self.mgy_per_mbq_s.shape
        return (nz, ny, nx)

    @property
    def centre_index(self) -> tuple[int, int, int]:
        """Index of the source voxel, ``shape // 2``."""
        nz, ny, nx = self.shape
        return (nz // 2, ny // 2, nx // 2)

    @property
    def voxel_volume_mm3(self) -> float:
        return self.voxel_mm[0] * self.voxel_mm[1] * self.voxel_mm[2]

    @property
    def voxel_mass_kg(self) -> float:
        return self.density_g_cm3 * self.voxel_volume_mm3 * 1.0e-6

    def total_energy_mev(self) -> float:
        """Energy absorbed in the whole kernel per decay in the centre voxel: sum(S * voxel mass), MeV."""
        total = float(np.sum(self.mgy_per_mbq_s, dtype=np.float64))
        return total * self.density_g_cm3 * self.voxel_volume_mm3 / _MGY_PER_MBQ_S_PER_MEV_PER_G_MM3


def y90_voxel_kernel(
    voxel_mm: float | Sequence[float],
    density_g_cm3: float = DENSITY_SOFT_TISSUE_G_CM3_DEFAULT,
    *,
    k_gy_kg_per_gbq: float = K_GY_KG_PER_GBQ_DEFAULT,
    truncation_mm: float = TRUNCATION_WATER_MM_DEFAULT,
    half_life_h: float = Y90_HALF_LIFE_H,
) -> VoxelKernel:
    """The Y-90 voxel S-value kernel for ``voxel_mm`` (a float: cubic, or (z, y, x)) in a medium of
    ``density_g_cm3``, from the Graves 2019 water point kernel (range-scaled to the density), truncated at
    ``truncation_mm`` of water (scaled by 1/rho) and renormalised to the energy per decay implied by
    ``k_gy_kg_per_gbq`` (with ``half_life_h``): sum(S * voxel mass) equals the local-deposition dose per MBq s.

    Cached per (voxel size, density, K, truncation); the returned array is read-only.
    """
    voxel = _voxel_mm_tuple(voxel_mm)
    density = _positive_float("density_g_cm3", density_g_cm3)
    _check_kernel_bounds(voxel, density)
    k = _positive_float("k_gy_kg_per_gbq", k_gy_kg_per_gbq)
    trunc = _positive_float("truncation_mm", truncation_mm)
    t_half = _positive_float("half_life_h", half_life_h)
    energy = energy_per_decay_mev(k, t_half)
    kernel = voxel_kernel_from_point_kernel(
        _GRAVES2019, voxel, density, energy_per_decay_mev=energy, truncation_mm=trunc
    )
    params = dict(kernel.parameters)
    params.update({"k_gy_kg_per_gbq": k, "half_life_h": t_half})
    return VoxelKernel(kernel.mgy_per_mbq_s, kernel.voxel_mm, kernel.density_g_cm3, params)


def voxel_kernel_from_point_kernel(
    point_kernel: PointKernel,
    voxel_mm: float | Sequence[float],
    density_g_cm3: float = DENSITY_SOFT_TISSUE_G_CM3_DEFAULT,
    *,
    energy_per_decay_mev: float | None = None,
    truncation_mm: float = TRUNCATION_WATER_MM_DEFAULT,
    quadrature_cell_mm: float = QUADRATURE_CELL_WATER_MM,
    quadrature_nodes: int = QUADRATURE_NODES_PER_CELL,
) -> VoxelKernel:
    """Voxel S-values from any radial point kernel (see the module docstring for the method).

    ``quadrature_cell_mm`` (in the point kernel's medium, scaled like the truncation) and ``quadrature_nodes``
    (Gauss-Legendre nodes per cell and axis) set the quadrature; the defaults are converged (module docstring).

    ``truncation_mm`` is in the point kernel's own medium (mm of water for a water kernel) and is scaled by
    rho_kernel / rho in the target medium; it must not exceed the kernel's last radius. ``energy_per_decay_mev``:
    the total the truncated kernel is renormalised to (None keeps the energy the table holds within the truncation
    radius, i.e. the truncated energy is lost).
    """
    if not isinstance(point_kernel, PointKernel):
        raise DosimetryError(f"point_kernel: must be a PointKernel, got {type(point_kernel).__name__}")
    voxel = _voxel_mm_tuple(voxel_mm)
    density = _positive_float("density_g_cm3", density_g_cm3)
    _check_kernel_bounds(voxel, density)
    trunc = _positive_float("truncation_mm", truncation_mm)
    if trunc > point_kernel.max_radius_mm * (1.0 + 1.0e-12):
        raise DosimetryError(
            f"truncation_mm: {trunc} mm is beyond the point kernel's last radius ({point_kernel.max_radius_mm} mm)"
        )
    energy = (
        None
        if energy_per_decay_mev is None
        else _positive_float("energy_per_decay_mev", energy_per_decay_mev)
    )
    key = (
        point_kernel,
        tuple(_key(v) for v in voxel),
        _key(density),
        None if energy is None else _key(energy),
        _key(trunc),
        _key(_positive_float("quadrature_cell_mm", quadrature_cell_mm)),
        _nodes(quadrature_nodes),
    )
    array, params = _build_cached(*key)
    vz, vy, vx = key[1]
    return VoxelKernel(array, (vz, vy, vx), key[2], params)


def _nodes(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or not 2 <= int(n) <= 32:
        raise DosimetryError(f"quadrature_nodes: must be an integer from 2 to 32, got {n!r}")
    return int(n)


def _key(x: float) -> float:
    """Cache key of a float: 12 significant digits (far below any physical uncertainty, above float noise)."""
    return float(f"{x:.12g}")


@functools.lru_cache(maxsize=64)
def _build_cached(
    point_kernel: PointKernel,
    voxel: tuple[float, float, float],
    density: float,
    energy: float | None,
    trunc_kernel_medium_mm: float,
    cell_water_mm: float,
    nodes_per_cell: int,
) -> tuple[np.ndarray, dict[str, Any]]:
    scale = point_kernel.density_g_cm3 / density  # r_target = r_kernel * scale
    radius_mm = trunc_kernel_medium_mm * scale  # truncation radius in the target medium
    half = tuple(max(1, math.ceil(radius_mm / s - 1.0e-9)) for s in voxel)
    if max(half) > MAX_HALF_WIDTH_VOXELS:
        raise DosimetryError(
            f"voxel_mm/density_g_cm3/truncation_mm: the kernel would be {max(half)} voxels in radius "
            f"(truncation {radius_mm:.4g} mm at {density} g/cm3, voxel {voxel} mm); at most "
            f"{MAX_HALF_WIDTH_VOXELS} are supported: use larger voxels or a shorter truncation_mm"
        )
    # dE/dr of the PCHIP interpolant, as a piecewise quadratic in the target medium:
    # dE_t/dr(r) = dE_k/dr(r / scale) / scale, on breaks x * scale.
    deriv = point_kernel._interpolant.derivative()
    breaks = np.ascontiguousarray(deriv.x * scale)
    coefs = np.ascontiguousarray(
        (deriv.c * np.array([scale**-3, scale**-2, scale**-1])[:, None]).T
    )  # (n_pieces, 3): c0 dx^2 + c1 dx + c2
    cell_mm = cell_water_mm * scale
    x3, w3 = np.polynomial.legendre.leggauss(3)
    xf, wf = np.polynomial.legendre.leggauss(nodes_per_cell)
    octant = np.zeros(tuple(h + 1 for h in half))
    n_evaluations = _octant_energy(
        np.asarray(voxel), breaks, coefs, radius_mm, cell_mm, x3, w3, xf, wf, octant
    )
    energy_mev = _symmetrise(_mirror_octant(octant), voxel)

    within = float(point_kernel.energy_within(trunc_kernel_medium_mm))
    quadrature_total = float(energy_mev.sum())
    target = within if energy is None else energy
    volume = voxel[0] * voxel[1] * voxel[2]
    s_values = energy_mev * (
        target / quadrature_total * _MGY_PER_MBQ_S_PER_MEV_PER_G_MM3 / (density * volume)
    )
    s_values.flags.writeable = False
    params: dict[str, Any] = {
        "kernel": "Y-90 voxel S-values from a dose point kernel (box-pair distance integration)",
        "source": point_kernel.source,
        "point_kernel": point_kernel.parameters(),
        "voxel_mm": list(voxel),
        "density_g_cm3": density,
        "shape": list(s_values.shape),
        "truncation_mm": radius_mm,
        "truncation_kernel_medium_mm": trunc_kernel_medium_mm,
        "energy_within_truncation_mev": within,
        "energy_per_decay_mev": target,
        "renormalisation_factor": target / within,
        "truncated_energy_handling": (
            "the point kernel truncated at truncation_mm is scaled by one factor so that sum(S * voxel mass) "
            "equals energy_per_decay_mev (the energy beyond the truncation radius is spread in proportion)"
            if energy is not None
            else "not renormalised: the energy beyond truncation_mm is not deposited"
        ),
        "density_scaling": "K_rho(r) = (rho/rho_kernel)^2 K_kernel((rho/rho_kernel) r) (range scaling, O'Connor)",
        "quadrature": {
            "method": (
                "S(o) = integral of the point kernel against the tent weight of the box pair (8 sub-boxes per "
                "offset); the 8 sub-boxes with the singularity at a corner in Duffy (pyramid) coordinates with "
                "exact Gauss-Legendre(3) on every E(r) interval along each ray; the others tensor Gauss-Legendre"
            ),
            "cell_mm": cell_mm,
            "nodes_per_cell": nodes_per_cell,
            "kernel_evaluations": int(n_evaluations),
            "relative_energy_error_before_renormalisation": quadrature_total / within - 1.0,
        },
    }
    log.debug("built voxel kernel %s mm at %s g/cm3: shape %s", voxel, density, s_values.shape)
    return s_values, params


def _expand(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For a ragged expansion where item p has counts[p] children: each child's parent and its index among its
    siblings, children in parent order (the order of the nested loops this replaces)."""
    parent = np.repeat(np.arange(counts.size), counts)
    first = np.cumsum(counts) - counts
    return parent, np.arange(parent.size) - first[parent]


def _cells(length: np.ndarray, cell: np.ndarray | float) -> np.ndarray:
    """Number of quadrature cells of at most ``cell`` on ``length`` (at least 1)."""
    return np.maximum(1, np.ceil(length / cell - 1e-9).astype(np.int64))


def _de_dr(r: np.ndarray, breaks: np.ndarray, coefs: np.ndarray, r_max: float) -> np.ndarray:
    """dE/dr at r (MeV/mm) from the piecewise quadratic; 0 beyond r_max (the truncation radius)."""
    m = np.clip(np.searchsorted(breaks, r, side="right") - 1, 0, coefs.shape[0] - 1)
    dx = r - breaks[m]
    val = (coefs[m, 0] * dx + coefs[m, 1]) * dx + coefs[m, 2]
    val = np.where(val > 0.0, val, 0.0)
    return np.where((r > r_max) | (r > breaks[-1]), 0.0, val)


def _corner_integrals(s: np.ndarray, breaks: np.ndarray, coefs: np.ndarray, r_max: float, cell_mm: float,
                      x3: np.ndarray, w3: np.ndarray, xf: np.ndarray, wf: np.ndarray) -> tuple[np.ndarray, int]:
    """I[e] = integral over the box [0, s0] x [0, s1] x [0, s2] of prod_d g_d(u_d) * k(|u|), MeV, for the 8 choices
    g_d = 1 - u_d/s_d (e_d = 0) or u_d/s_d (e_d = 1); k = (dE/dr) / (4 pi r^2).

    Duffy coordinates: the box is 3 pyramids with apex at the origin, one per far face; on each, the rays to a
    Gauss-Legendre grid on the face, and along each ray the exact integral of the polynomial weight times dE/dr
    (Gauss-Legendre(3) on every interval of the E(r) table). The 1/r^2 is cancelled by the Jacobian. Vectorised
    over rays, intervals and nodes; each sum is accumulated in the order of the nested loops (``np.bincount``).
    """
    nq = xf.size
    terms: list[np.ndarray] = []
    n_eval = 0
    for face in range(3):
        a = (face + 1) % 3
        b = (face + 2) % 3
        # face cells no larger than the apex distance: the ray density ~ 1/L^3 stays resolved for long voxels
        h_face = min(cell_mm, float(s[face]))
        na = max(1, math.ceil(s[a] / h_face - 1e-9))
        nbb = max(1, math.ceil(s[b] / h_face - 1e-9))
        ha = s[a] / na
        hb = s[b] / nbb
        # rays in the loop order (ca, ia, cb, ib)
        pa1 = (np.arange(na)[:, None] + 0.5 * (xf[None, :] + 1.0)) * ha  # (na, nq)
        wa1 = 0.5 * ha * wf
        pb1 = (np.arange(nbb)[:, None] + 0.5 * (xf[None, :] + 1.0)) * hb
        wb1 = 0.5 * hb * wf
        pa = np.broadcast_to(pa1.reshape(-1)[:, None], (na * nq, nbb * nq)).reshape(-1)
        wa = np.broadcast_to(np.tile(wa1, na)[:, None], (na * nq, nbb * nq)).reshape(-1)
        pb = np.broadcast_to(pb1.reshape(-1)[None, :], (na * nq, nbb * nq)).reshape(-1)
        wb = np.broadcast_to(np.tile(wb1, nbb)[None, :], (na * nq, nbb * nq)).reshape(-1)
        v = np.empty((3, pa.size))
        v[face] = s[face]
        v[a] = pa
        v[b] = pb
        length = np.sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2])
        wray = wa * wb * s[face] / (4.0 * math.pi * (length * length * length))
        rend = np.minimum(length, r_max)
        # the E(r) intervals [breaks[m], min(breaks[m + 1], rend)) with breaks[m] < rend, 3 nodes on each
        n_int = np.searchsorted(breaks[:-1], rend, side="left")
        ray, m = _expand(n_int)
        width = np.repeat(np.minimum(breaks[m + 1], rend[ray]) - breaks[m], 3)
        ray = np.repeat(ray, 3)
        m = np.repeat(m, 3)
        lo = breaks[m]
        q = np.tile(np.arange(3), m.size // 3)
        r = lo + 0.5 * (x3[q] + 1.0) * width
        dx = r - lo
        de = (coefs[m, 0] * dx + coefs[m, 1]) * dx + coefs[m, 2]
        keep = de > 0.0
        ray, r, de, width, q = ray[keep], r[keep], de[keep], width[keep], q[keep]
        n_eval += int(r.size)
        w = wray[ray] * 0.5 * width * w3[q] * de
        t = r / length[ray]
        g1 = [t * v[d][ray] / s[d] for d in range(3)]
        for ez in range(2):
            gz = g1[0] if ez == 1 else 1.0 - g1[0]
            for ey in range(2):
                gy = g1[1] if ey == 1 else 1.0 - g1[1]
                for ex in range(2):
                    gx = g1[2] if ex == 1 else 1.0 - g1[2]
                    terms.append(w * gz * gy * gx)
    # out[ez, ey, ex]: the terms of every face in order, summed one after the other
    out = np.array([_ordered_sum(np.concatenate([terms[f * 8 + e] for f in range(3)])) for e in range(8)])
    return out.reshape(2, 2, 2), n_eval


def _ordered_sum(x: np.ndarray) -> float:
    """The sum of x in index order (one addition after the other, as a loop would; ``np.sum`` pairs terms)."""
    return float(np.bincount(np.zeros(x.size, dtype=np.intp), weights=x, minlength=1)[0])


def _box_integrals(lo: np.ndarray, hi: np.ndarray, up: np.ndarray, o: np.ndarray, s: np.ndarray,
                   breaks: np.ndarray, coefs: np.ndarray, r_max: float, cell_mm: float, xf: np.ndarray,
                   wf: np.ndarray) -> tuple[np.ndarray, int]:
    """For each box b (rows of lo, hi, up, o: (n, 3)), the integral over [lo_b, hi_b] (positive octant, away from
    the origin) intersected with the ball |u| <= r_max of prod_d g_d(u_d) k(|u|), with g_d = 1 - (u_d - o_d)/s_d on
    the upper half (up[d]) and 1 + (u_d - o_d)/s_d on the lower half. Nested Gauss-Legendre: the x range is clipped
    to the ball for each (z, y) node and the y range for each z node, so the truncation sphere is a boundary of the
    domain, never a jump inside a cell.

    Vectorised over boxes and nodes, level by level (z nodes of every box, then the y nodes of every z node, then
    the x nodes of every (z, y) node, each level a ragged expansion of the one above, in loop order); every
    operation is the scalar loop's, in its order, and each box's sum is accumulated node after node
    (``np.bincount``), so the values equal the former compiled loops' bit for bit (tested)."""
    nq = xf.size
    rr = r_max * r_max
    nbox = lo.shape[0]
    sgn = np.where(up, -1.0, 1.0)  # g = 1 + sgn (u - o) / s: 1 - (u - o)/s (upper), 1 + (u - o)/s (lower), exactly

    def nodes(start: np.ndarray, top: np.ndarray, cell: np.ndarray) -> tuple[np.ndarray, ...]:
        """Gauss-Legendre nodes of [start, top] in cells of at most ``cell`` (none where top <= start): per parent
        the node count, and per node its parent, its position, its cell's width h and its weight w."""
        n = np.where(top > start, _cells(top - start, cell), 0)
        h = (top - start) / np.maximum(n, 1)
        count = n * nq
        parent, local = _expand(count)
        frac = (np.arange(int(n.max(initial=0)))[:, None] + 0.5 * (xf[None, :] + 1.0)).reshape(-1)  # c + (x+1)/2
        hp = np.repeat(h, count)
        u = np.repeat(start, count) + frac[local] * hp
        return count, parent, u, hp, np.tile(wf, local.size // nq)

    # cells no larger than the distance to the singularity, so that 1/r^2 stays resolved for long voxels
    cell = np.minimum(cell_mm, np.sqrt(lo[:, 0] * lo[:, 0] + lo[:, 1] * lo[:, 1] + lo[:, 2] * lo[:, 2]))
    z_top = np.minimum(hi[:, 0], np.sqrt(np.maximum(0.0, rr - lo[:, 1] * lo[:, 1] - lo[:, 2] * lo[:, 2])))
    count, box, uz, h, w = nodes(lo[:, 0], z_top, cell)
    wz = 0.5 * h * w * (1.0 + np.repeat(sgn[:, 0], count) * (uz - np.repeat(o[:, 0], count)) / s[0])
    # y level, per z node
    lo_x = lo[box, 2]
    y_top = np.minimum(hi[box, 1], np.sqrt(np.maximum(0.0, rr - uz * uz - lo_x * lo_x)))
    count, _, uy, h, w = nodes(lo[box, 1], y_top, cell[box])
    box = np.repeat(box, count)
    wy = np.repeat(wz, count) * 0.5 * h * w * (1.0 + sgn[box, 1] * (uy - o[box, 1]) / s[1])
    uz = np.repeat(uz, count)
    r2zy = uz * uz + uy * uy
    # x level, per (z, y) node
    lo_x = lo[box, 2]
    x_top = np.minimum(hi[box, 2], np.sqrt(np.maximum(0.0, rr - r2zy)))
    count, _, ux, h, w = nodes(lo_x, x_top, cell[box])
    box = np.repeat(box, count)
    r = np.sqrt(np.repeat(r2zy, count) + ux * ux)
    gx = 1.0 + sgn[box, 2] * (ux - o[box, 2]) / s[2]
    de = _de_dr(r, breaks, coefs, r_max * (1.0 + 1e-12))
    term = np.repeat(wy, count) * 0.5 * h * w * gx * de / (4.0 * math.pi * r * r)
    return np.bincount(box, weights=term, minlength=nbox), int(r.size)


def _octant_energy(s: np.ndarray, breaks: np.ndarray, coefs: np.ndarray, r_max: float, cell_mm: float,
                   x3: np.ndarray, w3: np.ndarray, xf: np.ndarray, wf: np.ndarray, out: np.ndarray) -> int:
    """Energy (MeV per decay) deposited in every target voxel (i, j, k) >= 0 of ``out`` (the octant); returns the
    number of point-kernel evaluations."""
    corner, n_eval = _corner_integrals(s, breaks, coefs, r_max, cell_mm, x3, w3, xf, wf)
    idx = np.indices(out.shape).reshape(3, -1).T  # (n, 3), offsets in C order
    o = idx * s
    # the 8 halves of every offset: bit d set = the upper half [o_d, o_d + s_d] in dimension d, else the lower
    # [o_d - s_d, o_d]. For index 0 the lower half mirrors the upper one (k depends on |u|): counted twice instead.
    halves = []
    for half_code in range(8):
        up = np.array([(half_code >> d) & 1 == 1 for d in range(3)])
        lo = np.where(up, o, o - s)
        hi = np.where(up, o + s, o)
        skip = np.any((idx == 0) & ~up, axis=1)
        mult = np.prod(np.where(idx == 0, 2.0, 1.0), axis=1)
        cornered = np.all(lo == 0.0, axis=1)
        dist2 = lo[:, 0] * lo[:, 0] + lo[:, 1] * lo[:, 1] + lo[:, 2] * lo[:, 2]
        valid = ~skip & (dist2 < r_max * r_max)
        halves.append((np.broadcast_to(up, lo.shape), lo, hi, mult, valid & cornered, valid & ~cornered))
    boxed = np.concatenate([h[5] for h in halves])
    n_off = idx.shape[0]
    sel = np.flatnonzero(boxed)
    vals = np.zeros(8 * n_off)
    if sel.size:
        up_b = np.concatenate([h[0] for h in halves])[sel]
        lo_b = np.concatenate([h[1] for h in halves])[sel]
        hi_b = np.concatenate([h[2] for h in halves])[sel]
        o_b = np.tile(o, (8, 1))[sel]
        vals[sel], ne = _box_integrals(lo_b, hi_b, up_b, o_b, s, breaks, coefs, r_max, cell_mm, xf, wf)
        n_eval += ne
    corner_val = corner[np.minimum(idx[:, 0], 1), np.minimum(idx[:, 1], 1), np.minimum(idx[:, 2], 1)]
    total = np.zeros(n_off)
    for half_code, (_, _, _, mult, cornered, boxed_h) in enumerate(halves):
        v = vals[half_code * n_off:(half_code + 1) * n_off]
        total = total + np.where(cornered, mult * corner_val, np.where(boxed_h, mult * v, 0.0))
    out[...] = total.reshape(out.shape)
    return n_eval


def _symmetrise(arr: np.ndarray, voxel: tuple[float, float, float]) -> np.ndarray:
    """Average over mirror flips and over the permutations of axes of equal voxel size."""
    arr = 0.5 * (arr + arr[::-1, :, :])
    arr = 0.5 * (arr + arr[:, ::-1, :])
    arr = 0.5 * (arr + arr[:, :, ::-1])
    perms = [p for p in itertools.permutations(range(3)) if all(voxel[p[d]] == voxel[d] for d in range(3))]
    if len(perms) > 1:
        arr = np.sum([np.transpose(arr, p) for p in perms], axis=0) / len(perms)
    return np.ascontiguousarray(arr)


# ---------------------------------------------------------------------------------------------------------- readers
_RADIUS_COLUMNS = {"r_outer_cm": 10.0, "r_outer_mm": 1.0}
_SHELL_ENERGY_COLUMNS = ("E_dep_MeV", "e_dep_mev")


def read_point_kernel_csv(
    path: str | Path,
    *,
    density_g_cm3: float = 1.0,
    total_energy_mev: float | None = None,
    source: str | None = None,
) -> PointKernel:
    """Read a shell point-kernel CSV: '#' comment lines, a header with an outer-radius column (``r_outer_cm`` or
    ``r_outer_mm``) and the energy deposited in each shell per decay (``E_dep_MeV``); the inner radius of a shell
    is the outer radius of the previous row (0 for the first). Other columns are ignored. The returned kernel's
    E(r) is the cumulative sum of the shells. ``source`` defaults to the file's '# Source:' comment, else its path.
    """
    path = Path(path)
    comments, rows = _read_csv(path)
    header = rows[0][1] if rows else []
    radius_col = next((c for c in _RADIUS_COLUMNS if c in header), None)
    energy_col = next((c for c in _SHELL_ENERGY_COLUMNS if c in header), None)
    if radius_col is None or energy_col is None:
        raise DosimetryError(
            f"{path}: header must name an outer-radius column ({' or '.join(_RADIUS_COLUMNS)}) and "
            f"'E_dep_MeV', got {header}"
        )
    ri, ei = header.index(radius_col), header.index(energy_col)
    radii, shells = [0.0], []
    for line_no, row in rows[1:]:
        try:
            r = float(row[ri]) * _RADIUS_COLUMNS[radius_col]
            e = float(row[ei])
        except (IndexError, ValueError) as exc:
            raise DosimetryError(f"{path}: line {line_no}: cannot read radius and energy from {row}") from exc
        if not (math.isfinite(r) and math.isfinite(e)) or e < 0.0:
            raise DosimetryError(
                f"{path}: line {line_no}: radius and shell energy must be finite, energy >= 0"
            )
        radii.append(r)
        shells.append(e)
    if not shells:
        raise DosimetryError(f"{path}: no data rows")
    try:
        return PointKernel(
            radius_mm=tuple(radii),
            energy_within_mev=(0.0, *np.cumsum(shells).tolist()),
            density_g_cm3=density_g_cm3,
            source=source if source is not None else _source_from_comments(comments, path),
            total_energy_mev=total_energy_mev,
        )
    except DosimetryError as exc:
        raise DosimetryError(f"{path}: {exc}") from exc


def read_voxel_s_values_csv(
    path: str | Path,
    *,
    density_g_cm3: float = DENSITY_SOFT_TISSUE_G_CM3_DEFAULT,
    source: str | None = None,
) -> dict[float, VoxelKernel]:
    """Read octant voxel-S-value tables (columns ``voxel_mm, i, j, k, S_mGy_per_MBq_s``; i, j, k = 0..n, cubic
    voxels; several voxel sizes per file) into one :class:`VoxelKernel` per voxel size, mirrored to the full
    (2n+1)^3 kernel: S(i, j, k) = S(|i|, |j|, |k|). An octant entry that is missing is taken from a permutation of
    its indices (tables that list only i <= j <= k); one missing in every permutation is an error.
    ``density_g_cm3``: the medium the table is for (the Lanconelli soft-tissue tables do not state it; their energy
    balance implies about 1.04 g/cm3).
    """
    path = Path(path)
    comments, rows = _read_csv(path)
    expected = ["voxel_mm", "i", "j", "k", "S_mGy_per_MBq_s"]
    if not rows or [c.strip() for c in rows[0][1]] != expected:
        got = rows[0][1] if rows else []
        raise DosimetryError(f"{path}: header must be {','.join(expected)}, got {got}")
    tables: dict[float, dict[tuple[int, int, int], float]] = {}
    for line_no, row in rows[1:]:
        try:
            voxel = float(row[0])
            i, j, k = (int(row[n]) for n in (1, 2, 3))
            s = float(row[4])
        except (IndexError, ValueError) as exc:
            raise DosimetryError(f"{path}: line {line_no}: cannot read voxel_mm,i,j,k,S from {row}") from exc
        if not (math.isfinite(voxel) and voxel > 0.0):
            raise DosimetryError(f"{path}: line {line_no}: voxel_mm must be > 0, got {row[0]}")
        if min(i, j, k) < 0:
            raise DosimetryError(f"{path}: line {line_no}: i, j, k must be >= 0 (octant), got {(i, j, k)}")
        if not (math.isfinite(s) and s >= 0.0):
            raise DosimetryError(f"{path}: line {line_no}: S must be finite and >= 0, got {row[4]}")
        table = tables.setdefault(voxel, {})
        if (i, j, k) in table and table[(i, j, k)] != s:
            raise DosimetryError(
                f"{path}: line {line_no}: S{(i, j, k)} for {voxel} mm given twice, differently"
            )
        table[(i, j, k)] = s
    if not tables:
        raise DosimetryError(f"{path}: no data rows")
    src = source if source is not None else _source_from_comments(comments, path)
    out: dict[float, VoxelKernel] = {}
    for voxel, table in tables.items():
        n = max(max(ijk) for ijk in table)
        octant = np.empty((n + 1,) * 3)
        for ijk in itertools.product(range(n + 1), repeat=3):
            value = next((table[p] for p in itertools.permutations(ijk) if p in table), None)
            if value is None:
                raise DosimetryError(
                    f"{path}: S{ijk} missing for voxel_mm {voxel} (octant 0..{n} incomplete)"
                )
            octant[ijk] = value
        full = _mirror_octant(octant)
        out[voxel] = VoxelKernel(
            full,
            (voxel, voxel, voxel),
            density_g_cm3,
            {"kernel": "voxel S-values read from a table", "source": src, "file": str(path),
             "voxel_mm": [voxel] * 3, "density_g_cm3": density_g_cm3, "shape": list(full.shape)},
        )  # fmt: skip
    return out


def _mirror_octant(octant: np.ndarray) -> np.ndarray:
    """(n+1)^3 octant (index 0 = centre) -> (2n+1)^3 array with S(i, j, k) = S(|i|, |j|, |k|)."""
    idx = [np.abs(np.arange(-(m - 1), m)) for m in octant.shape]
    return np.ascontiguousarray(octant[np.ix_(*idx)])


def _read_csv(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """'#' comment lines and (line number, cells) of the other non-blank lines."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DosimetryError(f"{path}: cannot read: {exc}") from exc
    comments: list[str] = []
    rows: list[tuple[int, list[str]]] = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            comments.append(stripped.lstrip("#").strip())
            continue
        rows.append((line_no, [c.strip() for c in next(csv.reader([stripped]))]))
    return comments, rows


def _source_from_comments(comments: Iterable[str], path: Path) -> str:
    """The text of the first '# Source:' comment line, with the file name; else the path."""
    for line in comments:
        if line.lower().startswith("source:"):
            return f"{line.split(':', 1)[1].strip()} (file {path.name})"
    return str(path)


# ------------------------------------------------------------------------------------------------------ validation
def _positive_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise DosimetryError(f"{name}: must be a number, got {value!r}")
    x = float(value)
    if not (math.isfinite(x) and x > 0.0):
        raise DosimetryError(f"{name}: must be a finite number > 0, got {value!r}")
    return x


def _check_kernel_bounds(voxel: tuple[float, float, float], density: float) -> None:
    """Refuse inputs that would make kernel building run for minutes (see KERNEL_VOXEL_MM_MAX)."""
    if max(voxel) > KERNEL_VOXEL_MM_MAX:
        raise DosimetryError(f"voxel_mm: at most {KERNEL_VOXEL_MM_MAX:g} mm per side (KERNEL_VOXEL_MM_MAX), got "
                             f"{max(voxel):g}")
    if density > KERNEL_DENSITY_G_CM3_MAX:
        raise DosimetryError(f"density_g_cm3: at most {KERNEL_DENSITY_G_CM3_MAX:g} g/cm3 (KERNEL_DENSITY_G_CM3_MAX), "
                             f"got {density:g}")


def _voxel_mm_tuple(voxel_mm: Any) -> tuple[float, float, float]:
    if isinstance(voxel_mm, numbers.Real) and not isinstance(voxel_mm, bool):
        s = _positive_float("voxel_mm", voxel_mm)
        return (s, s, s)
    if isinstance(voxel_mm, np.ndarray) and voxel_mm.ndim == 0:
        return _voxel_mm_tuple(voxel_mm.item())
    if isinstance(voxel_mm, str | bytes) or not isinstance(voxel_mm, Sequence | np.ndarray):
        raise DosimetryError(
            f"voxel_mm: must be a number or a (z, y, x) sequence of 3 numbers, got {voxel_mm!r}"
        )
    values = list(voxel_mm)
    if len(values) != 3:
        raise DosimetryError(f"voxel_mm: must have 3 values (z, y, x), got {len(values)}")
    z, y, x = (_positive_float("voxel_mm", v) for v in values)
    return (z, y, x)


def _float_tuple(name: str, values: Any) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError) as exc:
        raise DosimetryError(f"{name}: must be a sequence of numbers") from exc
    if not all(math.isfinite(v) for v in out):
        raise DosimetryError(f"{name}: every value must be finite")
    return out


_GRAVES2019 = PointKernel(
    radius_mm=GRAVES2019_Y90_WATER_RADIUS_MM,
    energy_within_mev=GRAVES2019_Y90_WATER_ENERGY_WITHIN_MEV,
    density_g_cm3=1.0,
    source=GRAVES2019_SOURCE,
    total_energy_mev=Y90_GRAVES2019_TOTAL_ENERGY_MEV,
)
