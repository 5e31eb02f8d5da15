"""Convolution, kernel build, dose map and planner benchmarks on the three grids of the performance issue.

Each grid's group holds the scipy baseline (``scipy.signal.fftconvolve(tia, kernel, mode="same")`` on the full
volume, as other dosimetry tools do) next to embplan, in the same session, on the same seeded inputs. Every body
also checks its result, so smoke runs (``--benchmark-disable``) test something. No assertion here is about time.
"""

from __future__ import annotations

import itertools
from functools import lru_cache
from pathlib import Path

import numba
import numpy as np
import pytest
import scipy.signal

from benchmarks.cases import DENSITY_G_CM3, make_case
from embplan.dosimetry.convolve import convolve

GRID_PARAMS = [
    pytest.param("spect", id="spect"),
    pytest.param("pet", id="pet"),
    pytest.param("ct", id="ct", marks=pytest.mark.slow),
]


@pytest.fixture(params=GRID_PARAMS)
def case(request: pytest.FixtureRequest, smoke: bool):
    return make_case(request.param, smoke)


@lru_cache(maxsize=2)
def _reference(name: str, smoke: bool) -> np.ndarray:
    c = make_case(name, smoke)
    return scipy.signal.fftconvolve(c.tia, c.kernel, mode="same")


def _assert_close(result: np.ndarray, ref: np.ndarray) -> None:
    scale = float(np.abs(ref).max())
    assert scale > 0
    assert float(np.abs(result - ref).max()) <= 1e-5 * scale


def test_convolve_scipy_baseline(benchmark, case):
    benchmark.group = f"convolve-{case.spec.name}"
    benchmark.extra_info.update(shape=list(case.shape), kernel=list(case.kernel.shape))
    result = benchmark(scipy.signal.fftconvolve, case.tia, case.kernel, mode="same")
    assert result.shape == case.shape


@pytest.mark.parametrize("threads", [pytest.param(0, id="all-threads"), pytest.param(1, id="1-thread")])
def test_convolve_embplan(benchmark, case, threads):
    benchmark.group = f"convolve-{case.spec.name}"
    benchmark.extra_info.update(shape=list(case.shape), kernel=list(case.kernel.shape))
    before = numba.get_num_threads()
    numba.set_num_threads(threads or numba.config.NUMBA_NUM_THREADS)
    try:
        result = benchmark(convolve, case.tia, case.kernel)
    finally:
        numba.set_num_threads(before)
    assert result.dtype == np.float32
    _assert_close(result, _reference(case.spec.name, case.smoke))


def test_kernel_build(benchmark, case):
    """Build the Y-90 voxel kernel from the point kernel (never from the kernel cache: each round asks for a
    density 1e-9 apart, the same kernel physically)."""
    from embplan.dosimetry.kernels import y90_voxel_kernel

    benchmark.group = "kernel-build"
    counter = itertools.count(1)

    def build():
        return y90_voxel_kernel(case.spec.voxel_mm, DENSITY_G_CM3 * (1.0 + 1.0e-9 * next(counter)))

    kernel = benchmark(build)
    assert kernel.mgy_per_mbq_s.shape == case.kernel.shape


@pytest.mark.parametrize("method", ["vsv", "vsv_density"])
def test_dose_map(benchmark, case, method):
    dose = pytest.importorskip("embplan.dosimetry.dose")
    from embplan.grid import Grid

    benchmark.group = f"dose-{case.spec.name}"
    v = case.spec.voxel_mm
    grid = Grid(shape=case.shape, spacing_mm=(v, v, v))
    density = None
    if method == "vsv_density":
        density = np.full(case.shape, 1.06, dtype=np.float32)  # liver
        density[:, : case.shape[1] // 5] = 0.30  # a slab of lung
    result = benchmark(dose.absorbed_dose_gy, case.tia, grid, method, density)
    assert result.shape == case.shape and np.all(np.isfinite(result))


def test_planner_on_the_demo_phantom_case(benchmark):
    embplan = pytest.importorskip("embplan")
    pytest.importorskip("embplan.planner")
    path = Path(embplan.__file__).parent / "data" / "demo_tare_phantom.json"
    if not path.exists():
        pytest.skip(f"{path} not found")
    case = embplan.load_case(path)
    benchmark.group = "planner"
    result = benchmark.pedantic(embplan.plan, args=(case,), rounds=3, iterations=1, warmup_rounds=1)
    assert result.dosimetry is not None

