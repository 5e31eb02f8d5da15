"""The convolution engine (the hot path; nothing else lives here).

``convolve(tia, kernel, roi=None)`` equals ``scipy.signal.fftconvolve(tia, kernel, mode="same")`` (inside ``roi``
when one is given, zero outside it), for odd-shaped 3-D kernels, to float rounding.

What makes it fast is only what is exactly true:

* **Reach.** The result can be non-zero only within the kernel's half-width of the activity's support. One pass
  over the volume finds, for every (z, y) row, the first and last non-zero voxel (and checks that every value is
  finite); only the output box = support bounding box dilated by the kernel half-width, clipped to the volume and
  to the bounding box of ``roi``, is computed. Everything else is exactly 0. Kernel taps that cannot connect any
  input voxel to any output voxel are dropped, so a kernel larger than the volume costs no more than one of the
  volume's size.
* **Two paths**, chosen by estimated cost (``method="auto"``) or forced (``"direct"`` / ``"fft"``):

  - *direct*: the kernel factored exactly into what repeats in it -- its distinct x-profiles (rows of taps),
    its distinct planes (lists of (sy, profile) rows) and the (sz, plane) pairs that make it up (a radial kernel
    of 7^3 with 251 taps has 9 profiles and 4 planes) -- and applied in three numba passes over the output box:
    every input row convolved along x with every profile, those rows summed along y into every distinct plane,
    those planes summed along z into the output. About 86 multiply-adds per voxel instead of 251 for that
    kernel, all of them flat loops over whole planes, four sources at a time.
  - *fft*: real FFTs (``scipy.fft``, pocketfft) of fast 5-smooth lengths over the output box only. The kernel is
    stored centred on index 0 of the circular buffer; when it is point-symmetric (checked exactly:
    ``k == k[::-1, ::-1, ::-1]``; true for every radial dose kernel) its spectrum is real, which halves the cached
    spectrum and the multiply. The kernel spectrum is cached per (kernel bytes, transform shape) in a small LRU,
    so repeated dose maps on one grid pay one forward and one inverse transform. Transforms are pruned (forward x
    only over rows that hold input, forward y only over planes that hold input, inverse y and x only over the
    planes and rows that are kept) and done chunk by chunk so that each chunk's working set stays in the caches.
    When the whole box would exceed the temporary-memory budget, the output box is cut into z-blocks
    (overlap-save).

* **All cores, same answer.** Both paths cut their work into chunks (planes of the input or output; planes or
  columns of the spectrum) that are handed out dynamically to ``numba.get_num_threads()`` threads of a small pool (the calling
  thread included); compiled kernels release the GIL and FFT calls run one worker each. Every output voxel is
  computed by exactly one chunk, in an order that does not depend on the chunking, so results are bitwise
  identical for any thread count. Python threads rather than ``prange`` because idle OpenMP threads spin-wait for
  milliseconds after a parallel region, taking the very cores the FFT workers need next; and a dynamic hand-out
  keeps a busy core (another process) from holding up the others.

Output dtype: float32 for float32 (or float16) ``tia`` -- the kernel is then applied in float32 --, float64 for
float64 ``tia``, and float64 for integer or boolean ``tia``. Temporaries stay within ``max_temp_bytes`` (default:
1.5x the output's bytes, at least 64 MiB) apart from per-row index arrays of (nz, ny) integers.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import numba
import numpy as np
import scipy.fft

from ..errors import DosimetryError

__all__ = ["convolve", "plan_convolution", "ConvolutionPlan", "clear_kernel_cache", "DIRECT_NS_PER_TAP_VOXEL",
           "DIRECT_NS_PER_ADD", "DIRECT_NS_PER_OUT_VOXEL", "FFT_NS_PER_POINT_LOG2"]

log = logging.getLogger(__name__)

Method = Literal["auto", "direct", "fft"]

# Cost model of the automatic choice: a least-squares fit of single-thread CPU times on the 2-core development
# machine (AMD EPYC; 32 cases: cubes of 48-160 voxels holding an 8 % liver, radial kernels of 3^3-13^3 and random
# ones; see docs/performance.md), most estimates within about +-30 % of the measured time (worse on the smallest
# volumes, where fixed overheads dominate and either path takes about a millisecond). Direct path:
# DIRECT_NS_PER_TAP_VOXEL per (profile tap x voxel of the input planes' data rows, widened by the kernel),
# DIRECT_NS_PER_ADD per (row of a distinct kernel plane x output-frame voxel of each input plane) and per (kernel
# plane x output-box voxel), and DIRECT_NS_PER_OUT_VOXEL per output-box voxel. FFT path: FFT_NS_PER_POINT_LOG2 per (transform point x log2 of
# the transform size), forward plus inverse, and half that again when the kernel spectrum is not cached. Only
# ratios matter: both paths scale alike with threads.
DIRECT_NS_PER_TAP_VOXEL = 0.075
DIRECT_NS_PER_ADD = 0.035
DIRECT_NS_PER_OUT_VOXEL = 4.8
FFT_NS_PER_POINT_LOG2 = 0.3

_KERNEL_CACHE_SIZE = 4
_MIN_TEMP_BYTES = 64 * 2**20
_CHUNK_BYTES = 4 * 2**20  # working set of one FFT chunk: a few MiB stays in the caches
_CHUNKS_PER_THREAD = 4  # dynamic hand-out: a few chunks per thread balance uneven rows and busy cores


# ----------------------------------------------------------------------------------------------- threads

_pool: ThreadPoolExecutor | None = None
_pool_pid = -1
_pool_lock = threading.Lock()


def _threads() -> int:
    return max(1, int(numba.get_num_threads()))


def _executor() -> ThreadPoolExecutor:
    global _pool, _pool_pid
    with _pool_lock:
        if _pool is None or _pool_pid != os.getpid():  # a forked child must not use its parent's dead threads
            _pool = ThreadPoolExecutor(max_workers=max(1, numba.config.NUMBA_NUM_THREADS - 1),
                                       thread_name_prefix="embplan-convolve")
            _pool_pid = os.getpid()
        return _pool


def _parallel(fn: Callable[[int], None], n_items: int, threads: int) -> None:
    """fn(i) for i in range(n_items), items handed out one at a time to ``threads`` threads (caller included)."""
    if threads <= 1 or n_items <= 1:
        for i in range(n_items):
            fn(i)
        return
    counter = itertools.count()  # next() on it is atomic under the GIL

    def worker() -> None:
        while True:
            i = next(counter)
            if i >= n_items:
                return
            fn(i)

    ex = _executor()
    futures = [ex.submit(worker) for _ in range(min(threads, n_items) - 1)]
    try:
        worker()
    finally:
        for f in futures:
            f.result()


def _ranges(start: int, stop: int, parts: int) -> list[tuple[int, int]]:
    """[start, stop) cut into at most ``parts`` contiguous ranges of near-equal length."""
    n = stop - start
    parts = max(1, min(parts, n))
    edges = [start + (n * k) // parts for k in range(parts + 1)]
    return [(edges[k], edges[k + 1]) for k in range(parts) if edges[k + 1] > edges[k]]


# ----------------------------------------------------------------------------------------------- numba kernels

@numba.njit(cache=True, nogil=True, fastmath={"reassoc"})
def _row_spans(tia, rlo, rhi, q0, q1):  # pragma: no cover - compiled
    """For the (z, y) rows q0:q1 (flat index z * ny + y): first and one-past-last non-zero voxel (rlo = rhi = 0
    when none); returns how many of these rows hold a non-finite value.

    The sum of |v| over a row is 0 exactly when the row is all zeros and is finite unless the row holds inf or
    nan (or overflows, which the exact check below tells apart). Only this sum is reassociated (vectorised)."""
    ny = tia.shape[1]
    nx = tia.shape[2]
    bad = 0
    for q in range(q0, q1):
        z = q // ny
        y = q - z * ny
        row = tia[z, y]
        acc = row[0] * 0
        for x in range(nx):
            acc += abs(row[x])
        a = 0
        b = 0
        if acc != 0:
            if not np.isfinite(acc):
                for x in range(nx):
                    if not np.isfinite(row[x]):
                        bad += 1
                        break
            while row[a] == 0:
                a += 1
            b = nx
            while row[b - 1] == 0:
                b -= 1
        rlo[z, y] = a
        rhi[z, y] = b
    return bad


@numba.njit(cache=True, nogil=True)
def _mask_spans(roi, rlo, rhi, q0, q1):  # pragma: no cover - compiled
    """For the rows q0:q1 of a boolean mask: first and one-past-last True voxel (0, 0 when none)."""
    ny = roi.shape[1]
    nx = roi.shape[2]
    for q in range(q0, q1):
        z = q // ny
        y = q - z * ny
        row = roi[z, y]
        a = 0
        while a < nx and not row[a]:
            a += 1
        b = nx
        while b > a and not row[b - 1]:
            b -= 1
        if a >= b:
            a = 0
            b = 0
        rlo[z, y] = a
        rhi[z, y] = b


@numba.njit(cache=True, nogil=True, fastmath={"contract"})
def _flat_taps(d, src, base, tap_sx, tap_w, t0, t1, accumulate):  # pragma: no cover - compiled
    """d[i] (+)= sum over taps t0:t1 of w * src[base + i - s], for i in range(len(d)); four taps at a time, then
    two, then one, so that d is loaded and stored once per four taps. Without ``accumulate`` the first group
    assigns. The order of the sum at i does not depend on i."""
    n = d.shape[0]
    t = t0
    while t + 4 <= t1:
        w0 = tap_w[t]
        w1 = tap_w[t + 1]
        w2 = tap_w[t + 2]
        w3 = tap_w[t + 3]
        p0 = src[base - tap_sx[t]:base - tap_sx[t] + n]
        p1 = src[base - tap_sx[t + 1]:base - tap_sx[t + 1] + n]
        p2 = src[base - tap_sx[t + 2]:base - tap_sx[t + 2] + n]
        p3 = src[base - tap_sx[t + 3]:base - tap_sx[t + 3] + n]
        if accumulate:
            for i in range(n):
                d[i] += w0 * p0[i] + w1 * p1[i] + w2 * p2[i] + w3 * p3[i]
        else:
            for i in range(n):
                d[i] = w0 * p0[i] + w1 * p1[i] + w2 * p2[i] + w3 * p3[i]
        accumulate = True
        t += 4
    if t + 2 <= t1:
        w0 = tap_w[t]
        w1 = tap_w[t + 1]
        p0 = src[base - tap_sx[t]:base - tap_sx[t] + n]
        p1 = src[base - tap_sx[t + 1]:base - tap_sx[t + 1] + n]
        if accumulate:
            for i in range(n):
                d[i] += w0 * p0[i] + w1 * p1[i]
        else:
            for i in range(n):
                d[i] = w0 * p0[i] + w1 * p1[i]
        accumulate = True
        t += 2
    if t < t1:
        w0 = tap_w[t]
        p0 = src[base - tap_sx[t]:base - tap_sx[t] + n]
        if accumulate:
            for i in range(n):
                d[i] += w0 * p0[i]
        else:
            for i in range(n):
                d[i] = w0 * p0[i]


@numba.njit(cache=True, nogil=True)
def _flat_sum(d, rows, prof, offs, k0, k1, n):  # pragma: no cover - compiled
    """d[i] = sum over k in k0:k1 of rows[prof[k]].flat[offs[k] + i], for i < n: four sources at a time (one load
    and store of d per four), the first group assigning. The order of the sum at i does not depend on i."""
    d = d[:n]
    k = k0
    first = True
    while k + 4 <= k1:
        p0 = rows[prof[k]].reshape(-1)[offs[k]:offs[k] + n]
        p1 = rows[prof[k + 1]].reshape(-1)[offs[k + 1]:offs[k + 1] + n]
        p2 = rows[prof[k + 2]].reshape(-1)[offs[k + 2]:offs[k + 2] + n]
        p3 = rows[prof[k + 3]].reshape(-1)[offs[k + 3]:offs[k + 3] + n]
        if first:
            for i in range(n):
                d[i] = p0[i] + p1[i] + p2[i] + p3[i]
        else:
            for i in range(n):
                d[i] += p0[i] + p1[i] + p2[i] + p3[i]
        first = False
        k += 4
    if k + 2 <= k1:
        p0 = rows[prof[k]].reshape(-1)[offs[k]:offs[k] + n]
        p1 = rows[prof[k + 1]].reshape(-1)[offs[k + 1]:offs[k + 1] + n]
        if first:
            for i in range(n):
                d[i] = p0[i] + p1[i]
        else:
            for i in range(n):
                d[i] += p0[i] + p1[i]
        first = False
        k += 2
    if k < k1:
        p0 = rows[prof[k]].reshape(-1)[offs[k]:offs[k] + n]
        if first:
            for i in range(n):
                d[i] = p0[i]
        else:
            for i in range(n):
                d[i] += p0[i]


@numba.njit(cache=True, nogil=True)
def _direct_stage1(padded, ylo, yhi, prof_ptr, prof_sx, prof_w, cls_ptr, cls_sy, cls_prof, hx, hy, planes,
                   z0, z1):  # pragma: no cover - compiled
    """Stage 1 of the direct path, input planes z0:z1 of the slab.

    ``padded`` (nz_in, nyo + 2 hy, wp) holds the input in the output's frame widened by the kernel: row j is
    y = oy0 - hy + j, column i is x = ox0 - hx + i (wp = wx + 2 hx); its data rows are ylo[z]:yhi[z].
    (a) rows[r, j, x] = sum over the taps of profile r of w * padded[z, j, x + hx - s], for every distinct
    x-profile r, as one flat loop over the plane's data rows (other rows are zero; columns x >= wx are scratch).
    (b) planes[c, z, y, x] = sum over the (sy, r) rows of distinct kernel plane c of rows[r, y + hy - sy, x], as
    flat loops over the whole plane, four rows at a time. Sums run in a fixed order."""
    nprof = prof_ptr.shape[0] - 1
    ncls = cls_ptr.shape[0] - 1
    nyf = padded.shape[1]
    wp = padded.shape[2]
    n_out = (nyf - 2 * hy) * wp
    rows = np.empty((nprof, nyf, wp), dtype=padded.dtype)
    offs = (hy - cls_sy) * wp
    for z in range(z0, z1):
        a = ylo[z]
        b = yhi[z]
        if a >= b:
            for c in range(ncls):
                planes[c, z] = 0.0
            continue
        src = padded[z].reshape(-1)
        base = a * wp
        n = (b - a) * wp - 2 * hx
        for r in range(nprof):
            rows[r, :a] = 0.0
            rows[r, b:] = 0.0
            rows[r, b - 1, wp - 2 * hx:] = 0.0
            dst = rows[r].reshape(-1)[base:base + n]
            _flat_taps(dst, src, base + hx, prof_sx, prof_w, prof_ptr[r], prof_ptr[r + 1], False)
        for c in range(ncls):
            _flat_sum(planes[c, z].reshape(-1), rows, cls_prof, offs, cls_ptr[c], cls_ptr[c + 1], n_out)


@numba.njit(cache=True, nogil=True)
def _direct_stage2(planes, pl_sz, pl_cls, pz0, oy0, oy1, ox0, ox1, use_roi, roi, out, z0, z1):  # pragma: no cover
    """Stage 2 of the direct path, output planes z0:z1: out[z, y, ox0 + x] = sum over the kernel's planes
    (sz, c), in a fixed order, of planes[c, z - sz - pz0, y - oy0, x], as flat loops over whole planes, four at a
    time; zero outside ``roi`` when ``use_roi``."""
    npl = planes.shape[1]
    wp = planes.shape[3]
    wx = ox1 - ox0
    n = (oy1 - oy0) * wp
    acc = np.empty(n, dtype=planes.dtype)
    idx = np.empty(pl_sz.shape[0], dtype=np.int64)
    zls = np.empty(pl_sz.shape[0], dtype=np.int64)
    for z in range(z0, z1):
        m = 0
        for t in range(pl_sz.shape[0]):
            zl = z - pl_sz[t] - pz0
            if 0 <= zl < npl:
                idx[m] = pl_cls[t]
                zls[m] = zl
                m += 1
        if m == 0:
            continue
        acc[:] = 0.0
        j = 0
        while j + 4 <= m:
            p0 = planes[idx[j], zls[j]].reshape(-1)
            p1 = planes[idx[j + 1], zls[j + 1]].reshape(-1)
            p2 = planes[idx[j + 2], zls[j + 2]].reshape(-1)
            p3 = planes[idx[j + 3], zls[j + 3]].reshape(-1)
            for i in range(n):
                acc[i] += p0[i] + p1[i] + p2[i] + p3[i]
            j += 4
        while j < m:
            p0 = planes[idx[j], zls[j]].reshape(-1)
            for i in range(n):
                acc[i] += p0[i]
            j += 1
        for y in range(oy0, oy1):
            orow = out[z, y]
            arow = acc[(y - oy0) * wp:(y - oy0) * wp + wx]
            if use_roi:
                mrow = roi[z, y]
                for x in range(wx):
                    orow[ox0 + x] = arow[x] if mrow[ox0 + x] else 0.0
            else:
                for x in range(wx):
                    orow[ox0 + x] = arow[x]


@numba.njit(cache=True, nogil=True)
def _mul_spectrum(spec, k):  # pragma: no cover - compiled
    """spec *= k, elementwise over a (z, y, x) chunk; k real (point-symmetric kernel) or complex."""
    for z in range(spec.shape[0]):
        for y in range(spec.shape[1]):
            srow = spec[z, y]
            krow = k[z, y]
            for x in range(srow.shape[0]):
                srow[x] = srow[x] * krow[x]


@numba.njit(cache=True, nogil=True)
def _zero_outside_roi(out, roi, z0, z1, y0, y1, x0, x1):  # pragma: no cover - compiled
    for z in range(z0, z1):
        for y in range(y0, y1):
            orow = out[z, y]
            mrow = roi[z, y]
            for x in range(x0, x1):
                if not mrow[x]:
                    orow[x] = 0.0


# ----------------------------------------------------------------------------------------------- planning

@dataclass(frozen=True)
class ConvolutionPlan:
    """What :func:`convolve` will do for given inputs (for logging, benchmarks and tests).

    Boxes are half-open ``((z0, z1), (y0, y1), (x0, x1))`` in voxel indices of the volume; ``None`` when the result
    is identically zero. ``z_blocks``: the output z-ranges processed one after the other (FFT blocks or direct
    slabs); ``fft_shape``: the transform shape of one FFT block; ``profiles``: the distinct x-profiles of the
    kernel's rows (direct path); ``temp_bytes``: the estimated temporaries of the chosen path."""

    method: Literal["direct", "fft", "zero"]
    output_box: tuple[tuple[int, int], ...] | None
    input_box: tuple[tuple[int, int], ...] | None
    kernel_half: tuple[int, int, int]
    taps: int
    profiles: int
    direct_cost_ns: float
    fft_cost_ns: float
    fft_shape: tuple[int, int, int] | None
    z_blocks: tuple[tuple[int, int], ...]
    temp_bytes: int


@dataclass(frozen=True)
class _Profiles:
    """The kernel factored exactly into what repeats: its distinct x-profiles (rows of taps, sorted by sx); its
    distinct planes, each a list of (sy, profile) rows; and the (sz, plane) pairs that make up the kernel."""

    prof_ptr: np.ndarray
    prof_sx: np.ndarray
    prof_w: np.ndarray
    cls_ptr: np.ndarray
    cls_sy: np.ndarray
    cls_prof: np.ndarray
    pl_sz: np.ndarray
    pl_cls: np.ndarray

    @property
    def count(self) -> int:
        return int(self.prof_ptr.shape[0] - 1)

    @property
    def classes(self) -> int:
        return int(self.cls_ptr.shape[0] - 1)


def _profiles(kc: np.ndarray) -> _Profiles:
    hz, hy, hx = (n // 2 for n in kc.shape)
    rows = kc.reshape(-1, kc.shape[2])
    used = np.flatnonzero(rows.any(axis=1))
    uniq, inverse = np.unique(rows[used], axis=0, return_inverse=True)
    row_prof = np.full(rows.shape[0], -1, dtype=np.int64)
    row_prof[used] = np.asarray(inverse).reshape(-1)
    nzs = [np.flatnonzero(u) for u in uniq]
    prof_ptr = np.zeros(len(uniq) + 1, dtype=np.int64)
    prof_ptr[1:] = np.cumsum([len(n) for n in nzs])
    prof_sx = np.concatenate([n - hx for n in nzs]).astype(np.int64) if nzs else np.zeros(0, np.int64)
    prof_w = (np.concatenate([u[n] for u, n in zip(uniq, nzs, strict=True)]) if nzs
              else np.zeros(0, kc.dtype)).astype(kc.dtype)
    # planes: the pattern of profile indices of a plane's rows identifies it exactly
    pattern = row_prof.reshape(kc.shape[0], kc.shape[1])
    used_pl = np.flatnonzero((pattern >= 0).any(axis=1))
    upat, pl_inv = np.unique(pattern[used_pl], axis=0, return_inverse=True)
    cls_sy, cls_prof, cls_ptr = [], [], [0]
    for pat in upat:
        iy = np.flatnonzero(pat >= 0)
        cls_sy.extend(iy - hy)
        cls_prof.extend(pat[iy])
        cls_ptr.append(len(cls_sy))
    return _Profiles(prof_ptr, prof_sx, np.ascontiguousarray(prof_w), np.asarray(cls_ptr, dtype=np.int64),
                     np.asarray(cls_sy, dtype=np.int64), np.asarray(cls_prof, dtype=np.int64),
                     (used_pl - hz).astype(np.int64), np.asarray(pl_inv, dtype=np.int64).reshape(-1))


def _direct_layout(obox, ibox, he, prof: _Profiles, spans: np.ndarray, itemsize: int, budget: int):
    """Slabs of output z for the direct path (the fewest whose padded input and stage-1 planes fit ``budget``)
    and the estimated cost. Returns (cost_ns, temp_bytes, z_blocks)."""
    (oz0, oz1), (oy0, oy1), (ox0, ox1) = obox
    (iz0, iz1), (iy0, iy1), _ = ibox
    wp = ox1 - ox0 + 2 * he[2]
    plane_bytes = ((oy1 - oy0 + 2 * he[1]) + prof.classes * (oy1 - oy0)) * wp * itemsize
    # lanes of one pass over the data rows of every input plane (first to last non-empty row)
    ne = spans > 0
    has = ne.any(axis=1)
    rows_per_plane = np.where(has, ne.shape[1] - ne.argmax(axis=1) - ne[:, ::-1].argmax(axis=1), 0)
    lanes = float(rows_per_plane.sum()) * wp
    nzo = oz1 - oz0
    n = 1
    while True:
        slabs = _z_blocks((oz0, oz1), (iz0, iz1), he[0], n)
        planes = [i1 - i0 for _, _, i0, i1 in slabs]
        temp = max(planes) * plane_bytes
        if temp <= budget or n >= nzo:
            break
        n = min(nzo, n + 1 if n < 4 else n + n // 2)
    halo = sum(planes) / max(1, iz1 - iz0)
    out_voxels = float(nzo * (oy1 - oy0) * wp)
    stage1 = halo * (float(prof.prof_sx.shape[0]) * DIRECT_NS_PER_TAP_VOXEL * lanes
                     + float(prof.cls_sy.shape[0]) * DIRECT_NS_PER_ADD * float((iz1 - iz0) * (oy1 - oy0) * wp))
    stage2 = (float(prof.pl_sz.shape[0]) * DIRECT_NS_PER_ADD + DIRECT_NS_PER_OUT_VOXEL) * out_voxels
    return stage1 + stage2, int(temp), tuple((b0, b1) for b0, b1, _, _ in slabs)


@dataclass
class _Prepared:
    tia: np.ndarray
    kernel: np.ndarray  # cropped to the reach, work dtype
    dtype: np.dtype
    rlo: np.ndarray
    rhi: np.ndarray
    roi: np.ndarray | None
    qlo: np.ndarray | None
    qhi: np.ndarray | None
    plan: ConvolutionPlan
    info: _KernelInfo | None


def _fast_len(n: int) -> int:
    return int(scipy.fft.next_fast_len(int(n), real=True))


def _work_dtype(dt: np.dtype) -> np.dtype:
    if dt == np.float64:
        return np.dtype(np.float64)
    if dt in (np.float32, np.float16):
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def _check_array(name: str, a: object) -> np.ndarray:
    try:
        arr = np.asarray(a)
    except Exception as exc:  # pragma: no cover - numpy's own conversion errors
        raise DosimetryError(f"convolve: {name} is not convertible to an array: {exc}") from exc
    if arr.ndim != 3:
        raise DosimetryError(f"convolve: {name} must be a 3-D (z, y, x) array, got {arr.ndim} dimension(s)")
    if arr.size == 0:
        raise DosimetryError(f"convolve: {name} must not be empty, got shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise DosimetryError(f"convolve: {name} must hold real numbers, got dtype {arr.dtype}")
    return arr


def _scan(tia: np.ndarray, threads: int) -> tuple[np.ndarray, np.ndarray]:
    """Row spans of the non-zero voxels of a C-contiguous float array; raises on non-finite values."""
    nz, ny, _ = tia.shape
    rlo = np.empty((nz, ny), dtype=np.int64)
    rhi = np.empty((nz, ny), dtype=np.int64)
    parts = _ranges(0, nz * ny, threads * _CHUNKS_PER_THREAD if threads > 1 else 1)
    bad = [0] * len(parts)

    def run(i: int) -> None:
        bad[i] = _row_spans(tia, rlo, rhi, *parts[i])

    _parallel(run, len(parts), threads)
    if sum(bad):
        raise DosimetryError(f"convolve: tia must be finite; {int(sum(bad))} row(s) hold NaN or infinite values")
    return rlo, rhi


def _bbox_from_spans(rlo: np.ndarray, rhi: np.ndarray) -> tuple[tuple[int, int], ...] | None:
    nonempty = rhi > rlo
    if not nonempty.any():
        return None
    zs = np.flatnonzero(nonempty.any(axis=1))
    ys = np.flatnonzero(nonempty.any(axis=0))
    return ((int(zs[0]), int(zs[-1]) + 1), (int(ys[0]), int(ys[-1]) + 1),
            (int(rlo[nonempty].min()), int(rhi[nonempty].max())))


def _fft_requirement(o0: int, o1: int, i0: int, i1: int, h: int) -> int:
    """Smallest circular length that holds input [i0, i1) and yields output [o0, o1) free of wrap-around, with the
    buffer starting at min(o0, i0) and the kernel (half-width h) centred on index 0."""
    return max(o1 - i0 + h, i1 - o0 + h, max(o1, i1) - min(o0, i0), 2 * h + 1)


def _z_blocks(oz: tuple[int, int], iz: tuple[int, int], h: int, nblocks: int) -> list[tuple[int, int, int, int]]:
    o0, o1 = oz
    n = o1 - o0
    size = -(-n // nblocks)
    blocks = []
    for b0 in range(o0, o1, size):
        b1 = min(b0 + size, o1)
        i0 = max(iz[0], b0 - h)
        i1 = min(iz[1], b1 + h)
        blocks.append((b0, b1, i0, i1))
    return blocks


def _fft_layout(obox, ibox, he, itemsize: int, budget: int, symmetric: bool):
    """Choose the z-blocking and transform shape: the fewest z-blocks (each block adds the kernel's overlap) whose
    temporaries fit ``budget``, or, when none fits, the smallest temporaries.
    Returns (cost_ns, temp_bytes, fft_shape, z_blocks)."""
    ly = _fast_len(_fft_requirement(*obox[1], *ibox[1], he[1]))
    lx = _fast_len(_fft_requirement(*obox[2], *ibox[2], he[2]))
    lxh = lx // 2 + 1
    nzo = obox[0][1] - obox[0][0]
    best = smallest = None
    nb = 1
    while nb <= nzo:
        blocks = _z_blocks(obox[0], ibox[0], he[0], nb)
        lz = _fast_len(max(_fft_requirement(b0, b1, i0, i1, he[0]) for b0, b1, i0, i1 in blocks))
        npts = lz * ly * lx
        spec = lz * ly * lxh * 2 * itemsize
        kspec = spec // (2 if symmetric else 1)
        # the block spectrum, the cached kernel spectrum, and chunk buffers of a few MiB (padded rows, their
        # spectrum, kept real rows)
        temp = spec + kspec + 3 * _CHUNK_BYTES
        cost = len(blocks) * 2.0 * npts * math.log2(max(npts, 2)) * FFT_NS_PER_POINT_LOG2
        cand = (cost, temp, (lz, ly, lx), tuple((b0, b1) for b0, b1, _, _ in blocks))
        if temp <= budget and (best is None or cost < best[0]):
            best = cand
        if smallest is None or temp < smallest[1]:
            smallest = cand
        if best is not None:  # more blocks only add overlap: the first layout that fits is the cheapest
            break
        nb = nb + 1 if nb < 4 else nb + nb // 2
    return best if best is not None else smallest


def _prepare(tia, kernel, roi, method: str, max_temp_bytes: int | None) -> _Prepared:
    tia = _check_array("tia", tia)
    kernel = _check_array("kernel", kernel)
    if any(n % 2 == 0 for n in kernel.shape):
        raise DosimetryError(f"convolve: kernel shape must be odd along every axis, got {kernel.shape}")
    if method not in ("auto", "direct", "fft"):
        raise DosimetryError(f"convolve: method must be 'auto', 'direct' or 'fft', got {method!r}")
    if not np.isfinite(kernel).all():
        raise DosimetryError("convolve: kernel must be finite, it holds NaN or infinite values")
    dtype = _work_dtype(tia.dtype)
    tia_w = np.ascontiguousarray(tia, dtype=dtype)
    threads = _threads()
    rlo, rhi = _scan(tia_w, threads)

    roi_b = qlo = qhi = None
    if roi is not None:
        roi_a = np.asarray(roi)
        if roi_a.shape != tia.shape:
            raise DosimetryError(f"convolve: roi shape {roi_a.shape} must equal the tia shape {tia.shape}")
        if roi_a.dtype.kind not in "biu":
            raise DosimetryError(f"convolve: roi must be a boolean (or 0/1 integer) mask, got dtype {roi_a.dtype}")
        roi_b = np.ascontiguousarray(roi_a if roi_a.dtype == np.bool_ else roi_a != 0)
        qlo = np.empty(tia.shape[:2], dtype=np.int64)
        qhi = np.empty(tia.shape[:2], dtype=np.int64)
        mparts = _ranges(0, tia.shape[0] * tia.shape[1], threads * _CHUNKS_PER_THREAD if threads > 1 else 1)
        _parallel(lambda i: _mask_spans(roi_b, qlo, qhi, *mparts[i]), len(mparts), threads)

    h = tuple(n // 2 for n in kernel.shape)
    sbox = _bbox_from_spans(rlo, rhi)
    obox = ibox = None
    if sbox is not None:
        obox = tuple((max(lo - hd, 0), min(hi + hd, n)) for (lo, hi), hd, n in zip(sbox, h, tia.shape, strict=True))
        if roi_b is not None:
            qbox = _bbox_from_spans(qlo, qhi)
            obox = None if qbox is None else tuple(
                (max(o0, q0), min(o1, q1)) for (o0, o1), (q0, q1) in zip(obox, qbox, strict=True))
            if obox is not None and any(o0 >= o1 for o0, o1 in obox):
                obox = None
    if obox is not None:
        ibox = tuple((max(s0, o0 - hd), min(s1, o1 + hd))
                     for (s0, s1), (o0, o1), hd in zip(sbox, obox, h, strict=True))
        if any(i0 >= i1 for i0, i1 in ibox):
            obox = ibox = None
    if obox is None:
        plan = ConvolutionPlan("zero", None, None, (0, 0, 0), 0, 0, 0.0, 0.0, None, (), 0)
        return _Prepared(tia_w, kernel, dtype, rlo, rhi, roi_b, qlo, qhi, plan, None)

    # taps beyond the largest input-output distance can never contribute: crop the kernel to that reach
    he = tuple(min(hd, max(o1 - 1 - i0, i1 - 1 - o0))
               for hd, (o0, o1), (i0, i1) in zip(h, obox, ibox, strict=True))
    kc = kernel[tuple(slice(hd - e, hd + e + 1) for hd, e in zip(h, he, strict=True))].astype(dtype)
    info = _kernel_info(kc)
    taps = info.taps

    # work estimates of the two paths (see the cost constants above)
    spans = (rhi - rlo)[ibox[0][0]:ibox[0][1], ibox[1][0]:ibox[1][1]]
    prof = info.profiles
    symmetric = info.symmetric
    out_bytes = int(np.prod(tia.shape)) * dtype.itemsize
    budget = max(int(1.5 * out_bytes), _MIN_TEMP_BYTES) if max_temp_bytes is None else int(max_temp_bytes)
    direct_cost, direct_temp, slabs = _direct_layout(obox, ibox, he, prof, spans, dtype.itemsize, budget)
    fft_cost, fft_temp, fshape, zblocks = _fft_layout(obox, ibox, he, dtype.itemsize, budget, symmetric)
    if not _kernel_cache_has(info, fshape):
        npts = fshape[0] * fshape[1] * fshape[2]
        fft_cost += 0.5 * npts * math.log2(max(npts, 2)) * FFT_NS_PER_POINT_LOG2

    if method == "auto":
        chosen = "direct" if (taps == 0 or direct_cost <= fft_cost) else "fft"
    else:
        chosen = method
    if chosen == "fft":
        plan = ConvolutionPlan("fft", obox, ibox, he, taps, prof.count, direct_cost, fft_cost, fshape, zblocks,
                               fft_temp)
    else:
        plan = ConvolutionPlan("direct", obox, ibox, he, taps, prof.count, direct_cost, fft_cost, None, slabs,
                               direct_temp)
    return _Prepared(tia_w, kc, dtype, rlo, rhi, roi_b, qlo, qhi, plan, info)


# ----------------------------------------------------------------------------------------------- kernel caches

_cache: OrderedDict[tuple, np.ndarray] = OrderedDict()  # kernel spectra
_info_cache: OrderedDict[tuple, _KernelInfo] = OrderedDict()  # kernel factorisations
_cache_lock = threading.Lock()


@dataclass(frozen=True)
class _KernelInfo:
    key: tuple
    taps: int
    symmetric: bool
    profiles: _Profiles


def _kernel_info(kc: np.ndarray) -> _KernelInfo:
    """What the planner needs to know of a (cropped, work-dtype) kernel, cached by its bytes."""
    digest = hashlib.blake2b(np.ascontiguousarray(kc).view(np.uint8).ravel(), digest_size=16).hexdigest()
    key = (digest, kc.shape, kc.dtype.str)
    with _cache_lock:
        info = _info_cache.get(key)
        if info is not None:
            _info_cache.move_to_end(key)
            return info
    info = _KernelInfo(key, int(np.count_nonzero(kc)), bool(np.array_equal(kc, kc[::-1, ::-1, ::-1])),
                       _profiles(kc))
    with _cache_lock:
        _info_cache[key] = info
        while len(_info_cache) > 4 * _KERNEL_CACHE_SIZE:
            _info_cache.popitem(last=False)
    return info


def _kernel_cache_has(info: _KernelInfo, fshape: tuple[int, int, int]) -> bool:
    with _cache_lock:
        return (info.key, tuple(fshape)) in _cache


def clear_kernel_cache() -> None:
    """Forget every cached kernel spectrum and factorisation."""
    with _cache_lock:
        _cache.clear()
        _info_cache.clear()


def _kernel_spectrum(kc: np.ndarray, info: _KernelInfo, fshape: tuple[int, int, int], workers: int) -> np.ndarray:
    """rfftn of the kernel centred on index 0 of a circular buffer of ``fshape``; real when point-symmetric."""
    key = (info.key, tuple(fshape))
    with _cache_lock:
        spec = _cache.get(key)
        if spec is not None:
            _cache.move_to_end(key)
            return spec
    buf = np.zeros(fshape, dtype=kc.dtype)
    idx = [np.arange(-(n // 2), n // 2 + 1) % L for n, L in zip(kc.shape, fshape, strict=True)]
    buf[np.ix_(*idx)] = kc
    spec = scipy.fft.rfftn(buf, workers=workers, overwrite_x=True)
    del buf
    if info.symmetric:
        spec = np.ascontiguousarray(spec.real)
    with _cache_lock:
        _cache[key] = spec
        _cache.move_to_end(key)
        while len(_cache) > _KERNEL_CACHE_SIZE:
            _cache.popitem(last=False)
    return spec


# ----------------------------------------------------------------------------------------------- execution

def _run_direct(p: _Prepared, out: np.ndarray, threads: int) -> None:
    """Direct path, slab by slab of output z: (1) every input plane the slab needs, convolved along x with every
    distinct x-profile of the kernel, then summed along y into every distinct kernel plane; (2) every output
    plane, the sum of those over the kernel's planes."""
    plan = p.plan
    prof = p.info.profiles
    hz, hy, hx = plan.kernel_half
    (_, _), (oy0, oy1), (ox0, ox1) = plan.output_box
    (iz0, iz1), (iy0, iy1), (ix0, ix1) = plan.input_box
    wp = ox1 - ox0 + 2 * hx
    f0 = oy0 - hy  # first row of the frame: the output rows widened by the kernel
    nyf = oy1 - oy0 + 2 * hy
    nonempty = (p.rhi > p.rlo)[:, iy0:iy1]
    if p.roi is not None:
        roi, use_roi = p.roi, True
    else:
        roi, use_roi = np.ones((1, 1, 1), dtype=np.bool_), False
    parts_per = threads * _CHUNKS_PER_THREAD if threads > 1 else 1
    for s0, s1 in plan.z_blocks:
        pz0 = max(iz0, s0 - hz)
        pz1 = min(iz1, s1 + hz)
        # the data rows of each input plane, in the frame: first and one-past-last non-empty row
        ne = nonempty[pz0:pz1]
        has = ne.any(axis=1)
        ylo = np.where(has, ne.argmax(axis=1) + iy0 - f0, 0).astype(np.int64)
        yhi = np.where(has, ne.shape[1] - ne[:, ::-1].argmax(axis=1) + iy0 - f0, 0).astype(np.int64)
        padded = np.zeros((pz1 - pz0, nyf, wp), dtype=p.dtype)
        padded[:, iy0 - f0:iy1 - f0, ix0 - ox0 + hx:ix1 - ox0 + hx] = p.tia[pz0:pz1, iy0:iy1, ix0:ix1]
        planes = np.empty((prof.classes, pz1 - pz0, oy1 - oy0, wp), dtype=p.dtype)
        in_parts = _ranges(0, pz1 - pz0, parts_per)
        out_parts = _ranges(s0, s1, parts_per)

        def stage1(i: int, padded=padded, planes=planes, ylo=ylo, yhi=yhi, in_parts=in_parts) -> None:
            _direct_stage1(padded, ylo, yhi, prof.prof_ptr, prof.prof_sx, prof.prof_w, prof.cls_ptr, prof.cls_sy,
                           prof.cls_prof, hx, hy, planes, *in_parts[i])

        def stage2(i: int, planes=planes, pz0=pz0, out_parts=out_parts) -> None:
            _direct_stage2(planes, prof.pl_sz, prof.pl_cls, pz0, oy0, oy1, ox0, ox1, use_roi, roi, out,
                           *out_parts[i])

        _parallel(stage1, len(in_parts), threads)
        del padded
        _parallel(stage2, len(out_parts), threads)
        del planes


def _chunk_ranges(start: int, stop: int, item_bytes: int, threads: int) -> list[tuple[int, int]]:
    """[start, stop) in chunks of at most ~_CHUNK_BYTES, and at least a few per thread when threads > 1."""
    n = stop - start
    parts = max(1, -(-n * item_bytes // _CHUNK_BYTES))
    if threads > 1:
        parts = max(parts, threads * _CHUNKS_PER_THREAD // 2)
    return _ranges(start, stop, parts)


def _run_fft(p: _Prepared, out: np.ndarray, threads: int) -> None:
    """Pruned real-FFT convolution over the output box, block by block along z, chunk by chunk in cache.

    Per block: (1) for chunks of input planes: pad the rows to the transform length, rfft along x into the block
    spectrum, fft along y (in place); (2) for chunks of y: fft along z, multiply by the kernel spectrum, inverse fft
    along z (in place, one sweep through memory); (3) for chunks of kept planes: inverse fft along y, irfft along x
    of the kept rows, copy the kept part into ``out``. Chunks of a phase run in parallel, one FFT worker each."""
    plan = p.plan
    lz, ly, lx = plan.fft_shape
    lxh = lx // 2 + 1
    he = plan.kernel_half
    (_, _), (oy0, oy1), (ox0, ox1) = plan.output_box
    (iz0_all, iz1_all), (iy0, iy1), (ix0, ix1) = plan.input_box
    cy = min(oy0, iy0)
    cx = min(ox0, ix0)
    kspec = _kernel_spectrum(p.kernel, p.info, plan.fft_shape, threads)
    ctype = np.result_type(p.dtype, np.complex64)
    citem = np.dtype(ctype).itemsize
    tia, roi, dtype = p.tia, p.roi, p.dtype
    for bz0, bz1 in plan.z_blocks:
        iz0 = max(iz0_all, bz0 - he[0])
        iz1 = min(iz1_all, bz1 + he[0])
        cz = min(bz0, iz0)
        spec = np.zeros((lz, ly, lxh), dtype=ctype)
        fwd = _chunk_ranges(iz0, iz1, ly * lxh * citem, threads)
        sweep = _chunk_ranges(0, ly, lz * lxh * citem, threads)
        inv = _chunk_ranges(bz0, bz1, ly * lxh * citem, threads)

        def forward(i: int, spec=spec, fwd=fwd, cz=cz) -> None:
            z0, z1 = fwd[i]
            pad = np.zeros((z1 - z0, iy1 - iy0, lx), dtype=dtype)
            pad[:, :, ix0 - cx:ix1 - cx] = tia[z0:z1, iy0:iy1, ix0:ix1]
            planes = spec[z0 - cz:z1 - cz]
            planes[:, iy0 - cy:iy1 - cy] = scipy.fft.rfft(pad, axis=2, workers=1)
            scipy.fft.fft(planes, axis=1, workers=1, overwrite_x=True)

        def along_z(i: int, spec=spec, sweep=sweep) -> None:
            y0, y1 = sweep[i]
            cols = spec[:, y0:y1]
            scipy.fft.fft(cols, axis=0, workers=1, overwrite_x=True)
            _mul_spectrum(cols, kspec[:, y0:y1])
            scipy.fft.ifft(cols, axis=0, workers=1, overwrite_x=True)

        def inverse(i: int, spec=spec, inv=inv, cz=cz) -> None:
            z0, z1 = inv[i]
            planes = spec[z0 - cz:z1 - cz]
            scipy.fft.ifft(planes, axis=1, workers=1, overwrite_x=True)
            res = scipy.fft.irfft(planes[:, oy0 - cy:oy1 - cy], n=lx, axis=2, workers=1)
            out[z0:z1, oy0:oy1, ox0:ox1] = res[:, :, ox0 - cx:ox1 - cx]
            if roi is not None:
                _zero_outside_roi(out, roi, z0, z1, oy0, oy1, ox0, ox1)

        _parallel(forward, len(fwd), threads)
        _parallel(along_z, len(sweep), threads)
        _parallel(inverse, len(inv), threads)
        del spec


# ----------------------------------------------------------------------------------------------- public API

def plan_convolution(tia: np.ndarray, kernel: np.ndarray, roi: np.ndarray | None = None, *,
                     method: Method = "auto", max_temp_bytes: int | None = None) -> ConvolutionPlan:
    """The :class:`ConvolutionPlan` that :func:`convolve` would execute for these inputs (validates them too)."""
    return _prepare(tia, kernel, roi, method, max_temp_bytes).plan


def convolve(tia: np.ndarray, kernel: np.ndarray, roi: np.ndarray | None = None, *, method: Method = "auto",
             max_temp_bytes: int | None = None) -> np.ndarray:
    """3-D convolution, centred like ``scipy.signal.fftconvolve(tia, kernel, mode="same")``.

    Parameters
    ----------
    tia : (nz, ny, nx) array of real numbers (e.g. cumulated activity in MBq*s per voxel); must be finite.
    kernel : 3-D array with an odd length along every axis, centre at ``shape // 2``; must be finite.
    roi : optional boolean mask of ``tia``'s shape; the result is computed inside it and is 0 outside.
    method : ``"auto"`` (by estimated cost), ``"direct"`` (numba gather) or ``"fft"`` (pruned real FFTs).
    max_temp_bytes : budget for the FFT path's temporaries (default 1.5x the output's bytes, at least 64 MiB);
        beyond it the output box is processed in z-blocks.

    Returns
    -------
    ndarray of ``tia``'s shape: float32 when ``tia`` is float32 or float16 (the kernel is applied in float32),
    float64 otherwise. Runs on ``numba.get_num_threads()`` threads (set it with ``numba.set_num_threads``); the
    result does not depend on that number.
    """
    p = _prepare(tia, kernel, roi, method, max_temp_bytes)
    out = np.zeros(p.tia.shape, dtype=p.dtype)
    plan = p.plan
    log.debug("convolve: %s", plan)
    if plan.method == "zero" or plan.taps == 0:
        return out
    threads = _threads()
    if plan.method == "direct":
        _run_direct(p, out, threads)
    else:
        _run_fft(p, out, threads)
    return out
