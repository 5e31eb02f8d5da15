"""The convolution engine against the independent oracle ``scipy.signal.fftconvolve(..., mode="same")``.

The oracle is always evaluated in float64 on the same inputs; the engine must agree to 1e-5 of the oracle's largest
magnitude in float32 and 1e-10 in float64, on both paths, with and without a region of interest.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest
import scipy.signal
from hypothesis import given
from hypothesis import strategies as st

from embplan.dosimetry import convolve as conv
from embplan.dosimetry.convolve import clear_kernel_cache, convolve, plan_convolution
from embplan.errors import DosimetryError, EmbplanError

RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-10}


class _Oracle(np.ndarray):
    """The oracle's values, and the maximum of the whole convolution (before the roi): the scale of its FFT
    round-off (an roi that sees only exact zeros of the convolution still sees that round-off, about 1e-16 of it)."""

    full_max: float = 0.0


def reference(tia: np.ndarray, kernel: np.ndarray, roi: np.ndarray | None = None) -> np.ndarray:
    ref = scipy.signal.fftconvolve(np.asarray(tia, dtype=np.float64), np.asarray(kernel, dtype=np.float64),
                                   mode="same")
    full_max = float(np.abs(ref).max()) if ref.size else 0.0
    if roi is not None:
        ref[~roi] = 0.0
    out = ref.view(_Oracle)
    out.full_max = full_max
    return out


def assert_matches(result: np.ndarray, ref: np.ndarray, dtype: np.dtype, roi: np.ndarray | None = None) -> None:
    assert result.shape == ref.shape
    assert result.dtype == dtype
    # 1e-9 of the whole convolution's maximum: below it the oracle's values inside an roi are FFT round-off
    scale = max(float(np.abs(np.asarray(ref)).max()), 1e-9 * float(getattr(ref, "full_max", 0.0)))
    if scale == 0.0:
        assert not result.any(), "the oracle is identically zero, so must the result be"
    else:
        err = float(np.abs(result.astype(np.float64) - np.asarray(ref)).max())
        assert err <= RTOL[np.dtype(dtype)] * scale, f"max error {err:.3g} = {err / scale:.3g} of the maximum"
    if roi is not None:
        assert not result[~roi].any(), "the result must be exactly 0 outside the roi"


def radial_kernel(n: int, voxel_mm: float = 1.0, reach_mm: float | None = None) -> np.ndarray:
    """A radially decaying, point-symmetric kernel (like a dose kernel), truncated at ``reach_mm``."""
    h = n // 2
    z, y, x = np.mgrid[-h:h + 1, -h:h + 1, -h:h + 1] * voxel_mm
    r = np.sqrt(z * z + y * y + x * x)
    k = np.exp(-r / 1.5) / (1.0 + r * r)
    if reach_mm is not None:
        k[r > reach_mm] = 0.0
    return k


def sparse_volume(rng: np.random.Generator, shape, fill: float, dtype) -> np.ndarray:
    tia = np.zeros(shape, dtype=dtype)
    mask = rng.random(shape) < fill
    tia[mask] = rng.uniform(-0.5, 2.0, int(mask.sum()))
    return tia


# ------------------------------------------------------------------------------------------- property tests

odd = st.integers(0, 4).map(lambda i: 2 * i + 1)


@given(
    shape=st.tuples(st.integers(1, 12), st.integers(1, 12), st.integers(1, 12)),
    kshape=st.tuples(odd, odd, odd),
    fill=st.floats(0.0, 0.5),
    kernel_zero=st.floats(0.0, 0.6),
    symmetric=st.booleans(),
    dtype=st.sampled_from([np.float32, np.float64]),
    method=st.sampled_from(["direct", "fft", "auto"]),
    with_roi=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_matches_scipy_on_random_inputs(shape, kshape, fill, kernel_zero, symmetric, dtype, method, with_roi, seed):
    rng = np.random.default_rng(seed)
    tia = sparse_volume(rng, shape, fill, dtype)
    kernel = rng.random(kshape)
    kernel[rng.random(kshape) < kernel_zero] = 0.0
    if symmetric:
        kernel = kernel + kernel[::-1, ::-1, ::-1]
    roi = rng.random(shape) < 0.6 if with_roi else None
    result = convolve(tia, kernel, roi, method=method)
    assert_matches(result, reference(tia, kernel, roi), np.dtype(dtype), roi)


@pytest.mark.parametrize("method", ["direct", "fft"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_liver_like_support_with_dose_kernel(method, dtype):
    """A compact blob of activity (zero elsewhere) and a truncated radial kernel, as in a dose calculation."""
    rng = np.random.default_rng(7)
    shape = (30, 34, 38)
    z, y, x = np.ogrid[:30, :34, :38]
    blob = ((z - 14) / 8.0) ** 2 + ((y - 15) / 10.0) ** 2 + ((x - 20) / 9.0) ** 2 <= 1.0
    tia = np.zeros(shape, dtype=dtype)
    tia[blob] = rng.uniform(0.5, 1.5, int(blob.sum()))
    kernel = radial_kernel(9, voxel_mm=2.0, reach_mm=8.0)
    assert_matches(convolve(tia, kernel, method=method), reference(tia, kernel), np.dtype(dtype))


@pytest.mark.parametrize("method", ["direct", "fft"])
def test_support_touching_every_edge(method):
    rng = np.random.default_rng(3)
    tia = np.zeros((9, 10, 11))
    tia[0, :, 0] = rng.random(10)
    tia[-1, -1, :] = rng.random(11)
    tia[:, 0, -1] = rng.random(9)
    kernel = rng.random((5, 7, 3))
    assert_matches(convolve(tia, kernel, method=method), reference(tia, kernel), np.dtype(np.float64))


@pytest.mark.parametrize("method", ["direct", "fft"])
def test_kernel_larger_than_the_volume(method):
    rng = np.random.default_rng(4)
    tia = rng.random((3, 4, 5)).astype(np.float32)
    kernel = rng.random((9, 11, 13))
    assert_matches(convolve(tia, kernel, method=method), reference(tia, kernel), np.dtype(np.float32))


@pytest.mark.parametrize("method", ["direct", "fft", "auto"])
def test_all_zero_activity_gives_zeros(method):
    tia = np.zeros((6, 7, 8), dtype=np.float32)
    result = convolve(tia, radial_kernel(5), method=method)
    assert result.dtype == np.float32 and result.shape == tia.shape and not result.any()


def test_single_voxel_reproduces_the_kernel():
    """A unit source in the middle of the volume returns the kernel itself, centred on the source."""
    kernel = np.random.default_rng(5).random((5, 3, 7))
    for method in ("direct", "fft"):
        tia = np.zeros((11, 11, 11))
        tia[5, 5, 5] = 1.0
        result = convolve(tia, kernel, method=method)
        np.testing.assert_allclose(result[3:8, 4:7, 2:9], kernel, rtol=0, atol=1e-12)
        result[3:8, 4:7, 2:9] = 0.0
        assert np.abs(result).max() < 1e-12


@pytest.mark.parametrize("method", ["direct", "fft"])
def test_roi_restricts_the_result(method):
    rng = np.random.default_rng(11)
    tia = sparse_volume(rng, (16, 18, 20), 0.1, np.float32)
    kernel = radial_kernel(7)
    roi = np.zeros(tia.shape, dtype=bool)
    roi[4:9, 2:15, 5:12] = True
    roi[12, 3, 3] = True
    result = convolve(tia, kernel, roi, method=method)
    assert_matches(result, reference(tia, kernel, roi), np.dtype(np.float32), roi)
    # an integer 0/1 mask means the same; an empty roi gives zeros
    assert np.array_equal(convolve(tia, kernel, roi.astype(np.uint8), method=method), result)
    assert not convolve(tia, kernel, np.zeros(tia.shape, dtype=bool), method=method).any()


def test_roi_far_from_the_activity_gives_zeros():
    tia = np.zeros((20, 20, 20))
    tia[2, 2, 2] = 1.0
    roi = np.zeros(tia.shape, dtype=bool)
    roi[15:, 15:, 15:] = True
    for method in ("direct", "fft", "auto"):
        assert not convolve(tia, radial_kernel(5), roi, method=method).any()


@pytest.mark.parametrize("method", ["direct", "fft"])
def test_asymmetric_kernel_is_convolved_not_correlated(method):
    """A kernel with a single off-centre tap shifts the activity by +offset (convolution), not -offset."""
    tia = np.zeros((7, 7, 7))
    tia[3, 3, 3] = 2.0
    kernel = np.zeros((3, 3, 3))
    kernel[2, 1, 0] = 1.0  # offset (+1, 0, -1) from the centre
    result = convolve(tia, kernel, method=method)
    expected = np.zeros_like(tia)
    expected[4, 3, 2] = 2.0
    np.testing.assert_allclose(result, expected, atol=1e-12)


def test_fft_path_in_z_blocks_under_a_small_memory_budget():
    rng = np.random.default_rng(12)
    tia = sparse_volume(rng, (40, 12, 14), 0.3, np.float64)
    kernel = rng.random((7, 5, 5))
    plan = plan_convolution(tia, kernel, method="fft", max_temp_bytes=1)
    assert len(plan.z_blocks) > 1
    result = convolve(tia, kernel, method="fft", max_temp_bytes=1)
    assert_matches(result, reference(tia, kernel), np.dtype(np.float64))
    roi = rng.random(tia.shape) < 0.5
    result = convolve(tia, kernel, roi, method="fft", max_temp_bytes=1)
    assert_matches(result, reference(tia, kernel, roi), np.dtype(np.float64), roi)


def test_output_dtypes():
    kernel = radial_kernel(3)
    tia = np.zeros((5, 5, 5), dtype=np.int16)
    tia[2, 2, 2] = 3
    assert convolve(tia, kernel).dtype == np.float64
    assert convolve(tia.astype(np.float16), kernel).dtype == np.float32
    assert convolve(tia.astype(np.float32), kernel).dtype == np.float32
    assert convolve(tia.astype(np.float64), kernel.astype(np.float32)).dtype == np.float64
    assert_matches(convolve(tia, kernel), reference(tia, kernel), np.dtype(np.float64))
    assert_matches(convolve(tia > 0, kernel), reference(tia > 0, kernel), np.dtype(np.float64))


def test_non_contiguous_input():
    rng = np.random.default_rng(13)
    base = sparse_volume(rng, (14, 12, 10), 0.2, np.float64)
    tia = base.transpose(2, 0, 1)[:, ::2, :]
    kernel = rng.random((3, 5, 3))
    for method in ("direct", "fft"):
        assert_matches(convolve(tia, kernel, method=method), reference(tia, kernel), np.dtype(np.float64))


def test_kernel_spectrum_cache_is_keyed_by_the_kernel_values():
    """Two kernels of one shape on one grid must not share a cached spectrum."""
    clear_kernel_cache()
    rng = np.random.default_rng(14)
    tia = sparse_volume(rng, (12, 12, 12), 0.3, np.float64)
    k1 = radial_kernel(5)
    k2 = k1 * rng.uniform(0.5, 1.5, k1.shape)
    first = convolve(tia, k1, method="fft")
    assert len(conv._cache) == 1
    assert_matches(convolve(tia, k2, method="fft"), reference(tia, k2), np.dtype(np.float64))
    assert len(conv._cache) == 2
    assert np.array_equal(convolve(tia, k1, method="fft"), first)  # the cached spectrum gives the same bits
    for _ in range(conv._KERNEL_CACHE_SIZE + 2):
        convolve(tia, rng.random((3, 3, 3)), method="fft")
    assert len(conv._cache) == conv._KERNEL_CACHE_SIZE


def test_output_box_is_the_support_dilated_by_the_kernel_radius():
    tia = np.zeros((40, 40, 40))
    tia[10:15, 20, 30:33] = 1.0
    plan = plan_convolution(tia, np.ones((5, 7, 9)))
    assert plan.output_box == ((8, 17), (17, 24), (26, 37))
    assert plan.input_box == ((10, 15), (20, 21), (30, 33))


def test_automatic_choice_follows_the_cost():
    rng = np.random.default_rng(15)
    sparse = sparse_volume(rng, (48, 48, 48), 0.05, np.float32)
    assert plan_convolution(sparse, radial_kernel(3)).method == "direct"
    dense = rng.random((48, 48, 48)).astype(np.float32)
    assert plan_convolution(dense, rng.random((21, 21, 21))).method == "fft"


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="numba runs with a single thread here")
@pytest.mark.parametrize("method", ["direct", "fft"])
def test_result_does_not_depend_on_the_thread_count(method):
    rng = np.random.default_rng(16)
    tia = sparse_volume(rng, (24, 40, 36), 0.2, np.float32)
    kernel = radial_kernel(7, reach_mm=3.2).astype(np.float32)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = convolve(tia, kernel, method=method)
        numba.set_num_threads(2)
        two = convolve(tia, kernel, method=method)
    finally:
        numba.set_num_threads(before)
    assert np.array_equal(one, two), "the summation order must not depend on the thread partition"
    assert_matches(two, reference(tia, kernel), np.dtype(np.float32))


# ------------------------------------------------------------------------------------------- bad input

GOOD = np.zeros((4, 4, 4), dtype=np.float32)
@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="numba runs with a single thread here")
@pytest.mark.parametrize("symmetric", [True, False])
def test_direct_result_does_not_depend_on_how_the_box_is_cut(monkeypatch, symmetric):
    """The direct path cuts the output box into y-slabs (2 per thread by default); planes whose activity lies in
    only some slabs must still be summed in the same order everywhere, so that every cut gives the same bits."""
    rng = np.random.default_rng(23)
    tia = np.zeros((20, 44, 30), dtype=np.float32)
    for z in range(2, 18):  # each plane holds data in a band of rows that moves with z
        y0 = 2 + (z * 5) % 30
        tia[z, y0:y0 + 6, 5:25] = rng.uniform(0.1, 2.0, (6, 20))
    kernel = radial_kernel(7, reach_mm=3.2)
    if not symmetric:
        kernel = kernel * (1.0 + 0.3 * rng.random(kernel.shape))
    kernel = kernel.astype(np.float32)
    before = numba.get_num_threads()
    results = []
    try:
        for threads, per_thread in [(1, 1), (2, 1), (2, 2), (2, 7)]:
            monkeypatch.setattr(conv, "_DIRECT_SLABS_PER_THREAD", per_thread)
            numba.set_num_threads(threads)
            results.append(convolve(tia, kernel, method="direct"))
    finally:
        numba.set_num_threads(before)
    for r in results[1:]:
        assert np.array_equal(results[0], r), "the summation order must not depend on the slabs"
    assert_matches(results[0], reference(tia, kernel), np.dtype(np.float32))


@pytest.mark.parametrize("method", ["direct", "fft"])
@pytest.mark.parametrize("with_roi", [False, True])
def test_every_voxel_of_the_uninitialised_output_is_written(method, with_roi):
    """Outputs are allocated uninitialised and zeroed by the worker threads outside the output box: recycled
    memory full of NaN must not show through anywhere."""
    rng = np.random.default_rng(31)
    tia = np.zeros((30, 34, 38), dtype=np.float32)
    tia[12:18, 10:20, 20:30] = rng.uniform(0.5, 1.5, (6, 10, 10))
    kernel = radial_kernel(5).astype(np.float32)
    roi = None
    if with_roi:
        roi = np.zeros(tia.shape, dtype=bool)
        roi[5:25, 8:30, 4:34] = True
    for _ in range(3):  # leave freed NaN-filled blocks of the output's size for the allocator to hand back
        junk = np.full(tia.shape, np.nan, dtype=np.float32)
        del junk
        result = convolve(tia, kernel, roi, method=method)
        assert np.isfinite(result).all()
        assert_matches(result, reference(tia, kernel, roi), np.dtype(np.float32), roi)


KERNEL = np.ones((3, 3, 3))


def _nan_at(a: np.ndarray, value: float) -> np.ndarray:
    a = a.copy()
    a[1, 2, 3] = value
    return a


@pytest.mark.parametrize(
    ("tia", "kernel", "roi", "kwargs", "words"),
    [
        (np.zeros((4, 4)), KERNEL, None, {}, "tia must be a 3-D"),
        (GOOD, np.ones((3, 3)), None, {}, "kernel must be a 3-D"),
        (GOOD, np.ones((3, 4, 3)), None, {}, "odd"),
        (np.zeros((0, 4, 4)), KERNEL, None, {}, "empty"),
        (GOOD.astype(np.complex64), KERNEL, None, {}, "real numbers"),
        (_nan_at(GOOD, np.nan), KERNEL, None, {}, "finite"),
        (_nan_at(GOOD, np.inf), KERNEL, None, {}, "finite"),
        (_nan_at(GOOD.astype(np.float64), -np.inf), KERNEL, None, {}, "finite"),
        (GOOD, _nan_at(np.ones((5, 5, 5)), np.nan), None, {}, "kernel must be finite"),
        (GOOD, KERNEL, np.ones((4, 4, 5), dtype=bool), {}, "roi shape"),
        (GOOD, KERNEL, np.ones((4, 4, 4)), {}, "roi must be a boolean"),
        (GOOD, KERNEL, None, {"method": "spline"}, "method"),
    ],
)
def test_bad_input_is_refused_with_the_reason(tia, kernel, roi, kwargs, words):
    with pytest.raises(DosimetryError, match=words) as info:
        convolve(tia, kernel, roi, **kwargs)
    assert isinstance(info.value, EmbplanError)


@given(
    shape=st.tuples(st.integers(1, 9), st.integers(1, 9), st.integers(1, 40)),
    n_points=st.integers(0, 6),
    parts=st.integers(1, 5),
    seed=st.integers(0, 2**32 - 1),
)
def test_scan_finds_every_rows_span_and_the_bounding_box(shape, n_points, parts, seed):
    """The input scan's row spans and bounding box equal numpy's, however the rows are split over threads, with
    -0.0 counted as zero and tiny (subnormal) values as data."""
    rng = np.random.default_rng(seed)
    tia = np.zeros(shape, dtype=np.float32)
    if rng.random() < 0.3:
        tia[tuple(rng.integers(0, n) for n in shape)] = -0.0
    for _ in range(n_points):
        tia[tuple(rng.integers(0, n) for n in shape)] = rng.choice([1.0, -2.5, 1e-45, 3e38])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(conv, "_SCAN_PARTS_PER_THREAD", parts)
        rlo, rhi, box = conv._scan(tia, 2)
    nz = tia != 0
    for z in range(shape[0]):
        for y in range(shape[1]):
            xs = np.flatnonzero(nz[z, y])
            assert (rlo[z, y], rhi[z, y]) == ((xs[0], xs[-1] + 1) if xs.size else (0, 0))
    if not nz.any():
        assert box is None
    else:
        idx = np.nonzero(nz)
        assert box == tuple((int(i.min()), int(i.max()) + 1) for i in idx)
