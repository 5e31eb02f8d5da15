"""The benchmark inputs: three imaging grids, a seeded liver-like activity map on each, the Y-90 kernel of its voxel.

Every grid comes in two sizes: ``full`` (the grids of the performance issue) and ``smoke`` (small stand-ins with
the same voxel size and kernel, for CI runs with ``--benchmark-disable`` and quick checks).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from embplan.dosimetry.kernels import y90_voxel_kernel

#: Fraction of the volume that holds activity (a liver-sized region in an abdominal field of view).
LIVER_VOLUME_FRACTION = 0.08
#: Soft-tissue density of the kernels, g/cm3 (the contract's default of y90_voxel_kernel).
DENSITY_G_CM3 = 1.04


@dataclass(frozen=True)
class GridSpec:
    name: str
    label: str
    shape: tuple[int, int, int]
    smoke_shape: tuple[int, int, int]
    voxel_mm: float
    target_ratio: float


GRIDS: dict[str, GridSpec] = {
    "spect": GridSpec("spect", "SPECT 128^3, 4.42 mm", (128, 128, 128), (40, 40, 40), 4.42, 20.0),
    "pet": GridSpec("pet", "PET 200^3, 2 mm", (200, 200, 200), (48, 48, 48), 2.0, 12.0),
    "ct": GridSpec("ct", "CT 320x512x512, 1 mm", (320, 512, 512), (64, 96, 96), 1.0, 10.0),
}

#: Environment variable that selects the sizes: "1" small stand-ins, "0" full grids; unset: small when the
#: benchmarks are disabled (``--benchmark-disable``), full otherwise.
SMOKE_ENV = "EMBPLAN_BENCH_SMOKE"


def smoke_from_env(default: bool) -> bool:
    value = os.environ.get(SMOKE_ENV, "").strip()
    if value == "":
        return default
    return value not in ("0", "false", "no")


def liver_like_activity(shape: tuple[int, int, int], seed: int = 20240601,
                        fraction: float = LIVER_VOLUME_FRACTION) -> np.ndarray:
    """float32 cumulated activity (MBq s per voxel): an ellipsoidal liver filling ``fraction`` of the volume,
    placed off-centre like a liver in an abdominal field of view, with heterogeneous uptake and a few hot
    tumours; zero elsewhere. Built slab by slab so that building it costs little more than the array."""
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    scale = (fraction * 6.0 / np.pi) ** (1.0 / 3.0)  # ellipsoid volume = pi/6 * product of its axes
    semi = np.array([nz, ny, nx], dtype=float) * scale / 2.0
    centre = np.array([0.50 * nz, 0.46 * ny, 0.42 * nx])
    tumours = [(centre + semi * rng.uniform(-0.5, 0.5, 3), semi.min() * rng.uniform(0.08, 0.2)) for _ in range(6)]
    tia = np.zeros(shape, dtype=np.float32)
    y = (np.arange(ny)[:, None] + 0.5 - centre[1]) / semi[1]
    x = (np.arange(nx)[None, :] + 0.5 - centre[2]) / semi[2]
    yy, xx = np.arange(ny)[:, None] + 0.5, np.arange(nx)[None, :] + 0.5
    for z in range(nz):
        dz = (z + 0.5 - centre[0]) / semi[0]
        inside = dz * dz + y * y + x * x <= 1.0
        if not inside.any():
            continue
        plane = rng.uniform(0.6, 1.4, size=(ny, nx)).astype(np.float32)
        for c, r in tumours:
            hot = (z + 0.5 - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= r * r
            plane[hot] *= 4.0
        plane *= 1.0e3  # ~1e3 MBq s per voxel: the order of a few GBq in a liver
        tia[z] = np.where(inside, plane, np.float32(0.0))
    return tia


@lru_cache(maxsize=8)
def kernel_for(voxel_mm: float) -> np.ndarray:
    """The Y-90 voxel S-value kernel of ``voxel_mm`` (mGy per MBq s), float32."""
    return np.asarray(y90_voxel_kernel(voxel_mm, DENSITY_G_CM3).mgy_per_mbq_s, dtype=np.float32)


@dataclass(frozen=True)
class BenchCase:
    spec: GridSpec
    smoke: bool
    tia: np.ndarray
    kernel: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.tia.shape  # type: ignore[return-value]


@lru_cache(maxsize=4)
def make_case(name: str, smoke: bool) -> BenchCase:
    spec = GRIDS[name]
    shape = spec.smoke_shape if smoke else spec.shape
    return BenchCase(spec, smoke, liver_like_activity(shape), kernel_for(spec.voxel_mm))
