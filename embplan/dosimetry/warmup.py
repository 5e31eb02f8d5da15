"""Compile (or load from numba's cache) the numba code of the dose engine before it is needed.

The dose engine's compiled functions (:mod:`embplan.dosimetry.convolve`, :mod:`~embplan.dosimetry.dose`,
:mod:`~embplan.dosimetry.kernels`) are compiled on first use and cached on disk (``cache=True``; numba writes
``__pycache__`` beside the package, or a user-wide cache folder where the package folder is read-only, or
``NUMBA_CACHE_DIR`` when set). The first plan after an install therefore pays the compilation (about 10 s of CPU
on a 2-core VM, most of it the direct convolution path); every later process loads the cache (well under 1 s).

:func:`warmup` runs every compiled function once on tiny inputs, for the array types a plan uses (float64;
``float32=True`` adds the float32 specialisations that :func:`~embplan.dosimetry.convolve.convolve` uses for
float32 inputs), so that the compilation happens at a moment the user chooses (``embplan warmup`` after an
install, in a container build, on each cluster worker). Measured on this project's 2-core VM (docs/performance.md):
a background warm-up while a plan reads its images compiled both convolution paths where a plan needs one, and
cost more CPU than it hid, so the planner does not start one.
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
