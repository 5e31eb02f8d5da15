"""Compile (or load from numba's cache) the numba code of the dose engine before it is needed.

The dose engine's compiled functions (:mod:`embplan.dosimetry.convolve`, :mod:`~embplan.dosimetry.dose`, and the
DVH histogram of :mod:`~embplan.dosimetry.metrics`) are
compiled on first use and cached on disk (``cache=True``; numba writes ``__pycache__`` beside the package, or a
user-wide cache folder where the package folder is read-only, or ``NUMBA_CACHE_DIR`` when set). The first plan
after an install therefore pays the compilation; every later process loads the cache.

What a first plan compiles, CPU seconds per function with an empty cache (numba's compile events; 2-vCPU VM,
load 1.5-2, 2026-12-07; issue 16, docs/performance.md "Cold start"):

* clinical case (CT 512 x 512 x 300, SPECT 128^3 at 4.42 mm: direct convolution path): 2.7 s, was 10.2 s on
  7ee6fdf. The direct path's slab function 2.2 s (its one weighted-sum helper 0.4 s included; was 6.9 s: a
  slice assignment's shape-check message 1.6 s, allocators and reshapes 0.7 s, three sum helpers and six
  inlined sum loops, and the asymmetric-kernel branch 0.9 s, which a plan never takes and which is now a
  separately compiled variant), the input scan 0.26 s, the dose finish 0.2-0.3 s, the bit-range check 0.09 s.
  The voxel kernel's quadrature (2.7 s of compilation) is numpy now, with the same values bit for bit.
* phantom15 (1.5 mm, FFT path): 0.8 s (was 3.4 s: the kernel quadrature 2.6 s).

End to end (``python -m benchmarks.end_to_end --cold``), the first plan costs +2.0-2.9 s on the clinical case
(was +9.4 s) and +1.1-1.5 s on phantom15 (was +3.8 s) over a fresh process whose cache exists.

:func:`warmup` runs every compiled function once on tiny inputs, for the array types a plan uses (float64;
``float32=True`` adds the float32 specialisations that :func:`~embplan.dosimetry.convolve.convolve` uses for
float32 inputs), so that the compilation happens at a moment the user chooses (``embplan warmup`` after an
install, in a container build, on each cluster worker): 4.4 s of CPU with an empty cache (both convolution
paths, the three dose methods), 0.8 s once cached. It compiles the direct path for mirror-symmetric kernels (every
kernel embplan builds or reads is symmetrised); an asymmetric kernel passed to
:func:`~embplan.dosimetry.convolve.convolve` compiles its own variant on first use. Measured on this project's
2-core VM (docs/performance.md): a background warm-up while a plan reads its images compiled both convolution
paths where a plan needs one, and cost more CPU than it hid, so the planner does not start one.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["warmup", "cache_locations"]

log = logging.getLogger(__name__)


def _exercise(dtype: type) -> None:
    from ..grid import Grid
    from .convolve import convolve
    from .dose import absorbed_dose_gy
    from .kernels import y90_voxel_kernel
    from .metrics import dvh

    shape = (12, 12, 12)
    grid = Grid(shape=shape, spacing_mm=(4.42, 4.42, 4.42))
    tia: np.ndarray = np.zeros(shape, dtype=dtype)
    tia[4:8, 5:9, 3:7] = 1.0
    density: np.ndarray = np.full(shape, 1.04, dtype=dtype)
    density[:, :, :2] = 0.3  # lung-like voxels: the vsv low-density branch
    roi = np.zeros(shape, dtype=bool)
    roi[2:10, 2:10, 2:10] = True
    kernel: np.ndarray = np.asarray(y90_voxel_kernel(4.42).mgy_per_mbq_s, dtype=dtype)
    for method in ("direct", "fft"):
        convolve(tia, kernel, method=method)
        convolve(tia, kernel, roi, method=method)
    for dose_method in ("ldm", "vsv", "vsv_density"):
        absorbed_dose_gy(tia, grid, dose_method, density)
        if dtype is np.float64:  # the planner's float32 density map with float64 activity
            absorbed_dose_gy(tia, grid, dose_method, density.astype(np.float32))
    # the DVH's one-pass histogram (float64 whatever the dose's dtype)
    dvh(absorbed_dose_gy(tia, grid, "ldm", density), roi, voxel_volume_ml=grid.voxel_volume_ml)


def warmup(*, float32: bool = False) -> float:
    """Compile or load every numba function of the dose engine for float64 (and float32 inputs when asked);
    return the seconds it took (seconds of compilation the first time, a fraction of a second once cached)."""
    t0 = time.perf_counter()
    _exercise(np.float64)
    if float32:
        _exercise(np.float32)
    dt = time.perf_counter() - t0
    log.info("numba warm-up: %.2f s", dt)
    return dt


def cache_locations() -> dict[str, str]:
    """Where numba caches the dose engine's compiled code: ``NUMBA_CACHE_DIR`` when set, else the package's
    ``__pycache__`` when writable, else numba's user-wide cache folder."""
    from numba.core import config

    pkg = Path(__file__).resolve().parent
    out = {"package": str(pkg / "__pycache__")}
    cache_dir = getattr(config, "CACHE_DIR", "")  # set from NUMBA_CACHE_DIR at import; not in numba's typing
    if cache_dir:
        out["NUMBA_CACHE_DIR"] = str(cache_dir)
    try:
        from numba.core import caching

        # public name in recent numba (0.68: UserWideCacheLocator), private before; found by mypy (issue 17): the
        # private name alone failed on numba 0.68 and the user-wide folder was never reported
        locator: Any = getattr(caching, "UserWideCacheLocator", None) or getattr(caching, "_UserWideCacheLocator", None)
        loc = locator.from_function(_exercise, str(Path(__file__).resolve()))
        if loc is not None:
            out["user_wide"] = loc.get_cache_path()
    except Exception:  # pragma: no cover - numba internals moved
        pass
    return out
