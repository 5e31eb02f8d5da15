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
    of 7^3 with 251 taps has 9 profiles and 4 planes) -- and applied in one walk along z per y-slab of the
    output box: every input row convolved along x with every profile (a mirror-symmetric profile, w(-s) == w(s)
    exactly, from the pair sums src[x - s] + src[x + s]: 31 multiply-adds and 3 adds instead of 53 taps), those
    rows summed along y into every distinct plane, kept in a ring of the last 2 hz + 1 input planes that stays
    in cache, and each output plane the sum of the ring's planes along z (into a one-plane buffer of the slab,
    then copied into the output with the roi mask). About 66 operations per voxel instead of 251 for that
    kernel, all of them flat loops over whole planes, four sources at a time, in one compiled weighted-sum
    helper. The slab function is compiled in two variants, for mirror-symmetric kernels (all that embplan builds)
    and for others, so that the first call compiles only the branch it takes (issue 16's cold start; see
    ``dosimetry/warmup.py``).
  - *fft*: real FFTs (``scipy.fft``, pocketfft) of fast 5-smooth lengths over the output box only. The kernel is
    stored centred on index 0 of the circular buffer; when it is point-symmetric (checked exactly:
    ``k == k[::-1, ::-1, ::-1]``; true for every radial dose kernel) its spectrum is real, which halves the cached
    spectrum and the multiply. The kernel spectrum is cached per (kernel bytes, transform shape) in a small LRU,
    so repeated dose maps on one grid pay one forward and one inverse transform. Transforms are pruned (forward x
    only over rows that hold input, forward y only over planes that hold input, inverse y and x only over the
    planes and rows that are kept) and done chunk by chunk so that each chunk's working set stays in the caches.
    When the whole box would exceed the temporary-memory budget, the output box is cut into z-blocks
    (overlap-save).

* **All cores, same answer.** Both paths cut their work into chunks (y-slabs of the output box; planes or
  columns of the spectrum) that are handed out dynamically to ``numba.get_num_threads()`` threads of a small pool (the calling
  thread included); compiled kernels release the GIL and FFT calls run one worker each. Every output voxel is
  computed by exactly one chunk, in an order that does not depend on the chunking, so results are bitwise
  identical for any thread count. Python threads rather than ``prange`` because idle OpenMP threads spin-wait for
  milliseconds after a parallel region, taking the very cores the FFT workers need next; and a dynamic hand-out
  keeps a busy core (another process) from holding up the others.

Output dtype: float32 for float32 (or float16) ``tia`` -- the kernel is then applied in float32 --, float64 for
float64 ``tia``, and float64 for integer or boolean ``tia``. Temporaries stay within ``max_temp_bytes`` (default:
1.5x the output's bytes, at least 64 MiB) apart from per-row index arrays of (nz, ny) integers. The output is a
fresh array every call: outputs up to 32 MiB are allocated uninitialised and zeroed outside the output box by
the worker threads (recycled heap memory would otherwise be memset on one thread), larger ones come from
``np.zeros`` (fresh pages that the OS zeroes lazily, never touched outside the box).
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
from typing import Any, Literal

import numba
import numpy as np
import scipy.fft

from ..errors import DosimetryError

__all__ = ["convolve", "plan_convolution", "ConvolutionPlan", "clear_kernel_cache", "DIRECT_NS_PER_TAP_VOXEL",
           "DIRECT_NS_PER_ADD", "DIRECT_NS_PER_OUT_VOXEL", "FFT_NS_PER_POINT_LOG2"]

log = logging.getLogger(__name__)

Method = Literal["auto", "direct", "fft"]
#: A half-open voxel box ((z0, z1), (y0, y1), (x0, x1)).
_Box = tuple[tuple[int, int], ...]

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
_SCAN_PARTS_PER_THREAD = 2  # the input scan: rows are cheap and uniform, fewer hand-outs cost less
_DIRECT_SLABS_PER_THREAD = 1  # y-slabs per thread on the direct path: each costs 2 hy extra rows along x
# Outputs above this size come from fresh, lazily zeroed pages (glibc serves allocations above its largest mmap
# threshold, 32 MiB on 64-bit, with mmap); smaller ones are zeroed by the worker threads.
_FRESH_PAGES_BYTES = 32 * 2**20


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
            # numba.config sets its NUMBA_* settings at import time; its type information does not declare them
            _pool = ThreadPoolExecutor(max_workers=max(1, numba.config.NUMBA_NUM_THREADS - 1),  # type: ignore[attr-defined]
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
def _row_spans(rows, ny, rlo, rhi, q0, q1):  # pragma: no cover - compiled
    """For the rows q0:q1 of ``rows`` (the volume as (nz * ny, nx), row q = z * ny + y): first and one-past-last
    non-zero voxel into rlo[q], rhi[q] (0, 0 when none). Returns the number of rows holding a non-finite value
    and the bounding box of the non-zero voxels of these rows, (z0, z1, y0, y1, x0, x1) (all 0 when none).

    The sum of |v| over a row is 0 exactly when the row is all zeros and is finite unless the row holds inf or
    nan (or overflows, which the exact check below tells apart); only this sum is reassociated. Both it and the
    searches for the first and last non-zero voxel are branch-free loops over the whole row, so they vectorise;
    the searches run only on rows that hold data."""
    nx = rows.shape[1]
    bad = 0
    qa = -1
    qb = -1
    ya = ny
    yb = 0
    xa = nx
    xb = 0
    for q in range(q0, q1):
        row = rows[q]
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
            a = nx
            for x in range(nx):
                a = min(a, x if row[x] != 0 else nx)
            for x in range(nx):
                b = max(b, x + 1 if row[x] != 0 else 0)
            if qa < 0:
                qa = q
            qb = q
            y = q % ny
            ya = min(ya, y)
            yb = max(yb, y + 1)
            xa = min(xa, a)
            xb = max(xb, b)
        rlo[q] = a
        rhi[q] = b
    if qa < 0:
        return bad, 0, 0, 0, 0, 0, 0
    return bad, qa // ny, qb // ny + 1, ya, yb, xa, xb


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


@numba.njit(cache=True, nogil=True, fastmath={"contract"})
def _flat_wsum(d, srcs, src, offs, w, base, t0, t1):  # pragma: no cover - compiled
    """d[i] = sum over the terms t0:t1 of w[t] * srcs[src[t], offs[t] + base + i], for i < len(d); four terms at a
    time (one load and store of d per four), the first group assigning. The order of the sum at i does not depend
    on i. One function for the direct path's three sums (the pass along x from pair sums, the sum along y into the
    kernel planes and the output planes' sum; the last two with weights 1.0, exact: 1.0 * p = p, and a contracted
    fma(1.0, p, q) rounds p + q once, as the add does), so numba compiles one loop nest instead of three (0.4 s of
    the first call's compilation)."""
    n = d.shape[0]
    t = t0
    first = True
    while t + 4 <= t1:
        w0 = w[t]
        w1 = w[t + 1]
        w2 = w[t + 2]
        w3 = w[t + 3]
        o0 = offs[t] + base
        o1 = offs[t + 1] + base
        o2 = offs[t + 2] + base
        o3 = offs[t + 3] + base
        p0 = srcs[src[t], o0:o0 + n]
        p1 = srcs[src[t + 1], o1:o1 + n]
        p2 = srcs[src[t + 2], o2:o2 + n]
        p3 = srcs[src[t + 3], o3:o3 + n]
        if first:
            for i in range(n):
                d[i] = w0 * p0[i] + w1 * p1[i] + w2 * p2[i] + w3 * p3[i]
        else:
            for i in range(n):
                d[i] += w0 * p0[i] + w1 * p1[i] + w2 * p2[i] + w3 * p3[i]
        first = False
        t += 4
    if t + 2 <= t1:
        w0 = w[t]
        w1 = w[t + 1]
        o0 = offs[t] + base
        o1 = offs[t + 1] + base
        p0 = srcs[src[t], o0:o0 + n]
        p1 = srcs[src[t + 1], o1:o1 + n]
        if first:
            for i in range(n):
                d[i] = w0 * p0[i] + w1 * p1[i]
        else:
            for i in range(n):
                d[i] += w0 * p0[i] + w1 * p1[i]
        first = False
        t += 2
    if t < t1:
        w0 = w[t]
        o0 = offs[t] + base
        p0 = srcs[src[t], o0:o0 + n]
        if first:
            for i in range(n):
                d[i] = w0 * p0[i]
        else:
            for i in range(n):
                d[i] += w0 * p0[i]
        first = False
    if first:
        d[:] = 0.0


def _make_direct_slab(symmetric: bool) -> Any:
    """The direct path's slab function for kernels whose x-profiles are all mirror-symmetric (``symmetric``: the
    pass along x from pair sums) or not (``_flat_taps``). Two compiled functions instead of one
    runtime branch: numba prunes the branch on the closure's constant before typing, so a plan (whose kernels
    are symmetric) compiles only its variant (0.9 s less CPU on the first call after an install; each variant is
    cached on disk under its own key)."""

    @numba.njit(cache=True, nogil=True, fastmath={"contract"})
    def _direct_slab(tia, rlo, rhi, out, z0, z1, y0, y1, obox, ibox, hz, hy, hx, prof_ptr, prof_sx, prof_w, sym_ptr,
                     sym_j, sym_w, cls_ptr, offs, cls_prof, pl_sz, pl_cls, use_roi, roi, sym_off, ones, pad, rows,
                     sums, ring, acc, slot_empty, slot_ra, slot_rb, src_row, src_off):  # pragma: no cover
        """The direct path for out[z0:z1, y0:y1], written whole (zeros outside the output box).

        Walks z once, keeping the last 2 hz + 1 input planes' partial sums in a ring buffer that stays in cache:
        every input plane the slab needs is (a) copied into a zero-padded frame (the output box widened by the
        kernel; columns i <-> x = ox0 - hx + i, rows j <-> y = oy0 - hy + j), (b) convolved along x with every
        distinct x-profile of the kernel (flat loops over its data rows; mirror-symmetric profiles from the pair sums
        src[x - j] + src[x + j], so 2 h + 1 taps cost h + 1 multiply-adds), (c) summed along y into every distinct
        kernel plane, over the rows that can be non-zero; each output plane is then the sum over the kernel's
        (sz, plane) pairs whose input plane holds data anywhere (decided on the whole input box, not on the slab's
        rows), in a fixed order. Rows recomputed by two slabs get identical values, so the result does not depend on
        how the box is cut into slabs.

        The work buffers come from the caller, uninitialised and flat along (y, x) (``_direct_buffers``; no
        allocation or reshape compiled here): ``pad`` (nyf * wp), ``rows`` (nprof, nyf * wp), ``sums``
        (hx + 1, nyf * wp), ``ring`` ((2 hz + 1) * ncls, nyo * wp), ``slot_*`` (2 hz + 1), ``src_*`` (len(pl_sz)).
        ``offs`` = (hy - sy) * wp per plane row; ``sym_off`` zeros (len(sym_j)); ``ones`` 1.0 (at least
        max(len(cls_prof), len(pl_sz))): the weights of the unweighted sums."""
        oz0, oz1 = obox[0, 0], obox[0, 1]
        oy0 = max(y0, obox[1, 0])  # the slab's part of the output box
        oy1 = min(y1, obox[1, 1])
        ox0, ox1 = obox[2, 0], obox[2, 1]
        iz0, iz1 = ibox[0, 0], ibox[0, 1]
        iy0, iy1 = ibox[1, 0], ibox[1, 1]
        c0 = max(z0, oz0)
        c1 = min(z1, oz1)
        for z in range(z0, z1):
            if z < c0 or z >= c1 or oy0 >= oy1:
                out[z, y0:y1] = 0.0
        if c0 >= c1 or oy0 >= oy1:
            return
        ly0 = max(iy0, oy0 - hy)  # the input rows this slab reads
        ly1 = min(iy1, oy1 + hy)
        wx = ox1 - ox0
        wp = wx + 2 * hx
        nyo = oy1 - oy0
        nyf = nyo + 2 * hy
        f0 = oy0 - hy
        xa = ox0 - hx
        nprof = prof_ptr.shape[0] - 1
        ncls = cls_ptr.shape[0] - 1
        nsl = 2 * hz + 1
        m = pl_sz.shape[0]
        # uninitialised buffers: every row that is read is written first, or zeroed because it is marked dirty
        for s in range(nsl):
            slot_empty[s] = True
            slot_ra[s] = 0  # rows [ra, rb) of a slot's planes may be non-zero, the rest is 0
            slot_rb[s] = nyo
        for t in range(m):
            src_off[t] = 0
        src = pad
        nil = np.int64(0)
        pa = 0  # frame rows [pa, pb) of ``rows`` may be non-zero, the rest is 0
        pb = nyf
        nxt = max(iz0, c0 - hz)
        for z in range(c0, c1):
            top = min(z + hz, iz1 - 1)
            while nxt <= top:
                zi = nxt
                nxt += 1
                s = zi % nsl
                slot_empty[s] = True
                for y in range(iy0, iy1):
                    if rhi[zi, y] > rlo[zi, y]:
                        slot_empty[s] = False
                        break
                if slot_empty[s]:
                    continue
                a = -1
                b = -1
                for y in range(ly0, ly1):
                    if rhi[zi, y] > rlo[zi, y]:
                        if a < 0:
                            a = y
                        b = y + 1
                ra = slot_ra[s]
                rb = slot_rb[s]
                if a < 0:  # data elsewhere in the plane but not in the slab's rows: its planes read as 0 here
                    for c in range(ncls):
                        ring[s * ncls + c, ra * wp:rb * wp] = 0.0
                    slot_ra[s] = 0
                    slot_rb[s] = 0
                    continue
                fa = a - f0
                fb = b - f0
                for y in range(a, b):  # (a) the input rows in the frame
                    prow = pad[(y - f0) * wp:(y - f0 + 1) * wp]
                    prow[:] = 0.0
                    lo = max(rlo[zi, y], xa)
                    hi = min(rhi[zi, y], xa + wp)
                    trow = tia[zi, y]
                    for x in range(lo, hi):  # a loop, not a slice assignment: numba compiles a shape check with
                        prow[x - xa] = trow[x]  # string formatting for that (1.6 s of the first call's compilation)
                for r in range(nprof):  # rows outside [fa, fb) must read as 0
                    rows[r, pa * wp:min(pb, fa) * wp] = 0.0
                    rows[r, max(pa, fb) * wp:pb * wp] = 0.0
                    rows[r, (fb - 1) * wp + wx:fb * wp] = 0.0
                pa = fa
                pb = fb
                base = fa * wp
                n = (fb - fa) * wp - 2 * hx
                if symmetric:  # (b) along x (a constant: numba compiles only this variant's branch)
                    s0 = sums[0]
                    cen = src[base + hx:base + hx + n]
                    for i in range(n):
                        s0[i] = cen[i]
                    for j in range(1, hx + 1):  # slices, so that the loop has no negative-index checks
                        sj = sums[j]
                        lft = src[base + hx - j:base + hx - j + n]
                        rgt = src[base + hx + j:base + hx + j + n]
                        for i in range(n):
                            sj[i] = lft[i] + rgt[i]
                    for r in range(nprof):
                        dst = rows[r, base:base + n]
                        _flat_wsum(dst, sums, sym_j, sym_off, sym_w, nil, sym_ptr[r], sym_ptr[r + 1])
                else:
                    for r in range(nprof):
                        dst = rows[r, base:base + n]
                        _flat_taps(dst, src, base + hx, prof_sx, prof_w, prof_ptr[r], prof_ptr[r + 1], False)
                ca = max(0, fa - 2 * hy)  # (c) along y, over the output rows that can be non-zero
                cb = min(nyo, fb)
                for c in range(ncls):
                    pl = ring[s * ncls + c]
                    pl[ra * wp:min(rb, ca) * wp] = 0.0
                    pl[max(ra, cb) * wp:rb * wp] = 0.0
                    if cb > ca:
                        _flat_wsum(pl[ca * wp:cb * wp], rows, cls_prof, offs, ones, ca * wp, cls_ptr[c],
                                  cls_ptr[c + 1])
                slot_ra[s] = ca
                slot_rb[s] = cb
            # the output plane: sum over the kernel's (sz, plane) pairs whose input plane holds data
            # np.int64, not a literal 0: numba's type inference would first see k as Literal[int](0) and compile
            # _flat_wsum for it too (0.45 s)
            k = np.int64(0)
            ua = nyo
            ub = 0
            for t in range(m):
                zi = z - pl_sz[t]
                if zi < iz0 or zi >= iz1:
                    continue
                s = zi % nsl
                if slot_empty[s]:
                    continue
                src_row[k] = s * ncls + pl_cls[t]  # the ring's row of (slot, plane)
                k += 1
                ua = min(ua, slot_ra[s])
                ub = max(ub, slot_rb[s])
            if k == 0 or ua >= ub:
                out[z, y0:y1] = 0.0
                continue
            for y in range(y0, oy0 + ua):
                out[z, y] = 0.0
            for y in range(oy0 + ub, y1):
                out[z, y] = 0.0
            # the planes' sum over the rows [ua, ub) at once (one call, whole ring rows), then copied out
            _flat_wsum(acc[:(ub - ua) * wp], ring, src_row, src_off, ones, ua * wp, nil, k)
            for yo in range(ua, ub):
                orow = out[z, oy0 + yo]
                orow[:ox0] = 0.0
                orow[ox1:] = 0.0
                a_row = acc[(yo - ua) * wp:(yo - ua) * wp + wx]
                o = orow[ox0:ox1]
                if use_roi:
                    mrow = roi[z, oy0 + yo, ox0:ox1]
                    for x in range(wx):
                        o[x] = a_row[x] if mrow[x] else 0.0
                else:
                    for x in range(wx):
                        o[x] = a_row[x]

    return _direct_slab


_DIRECT_SLAB = {True: _make_direct_slab(True), False: _make_direct_slab(False)}


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
def _zero_outside_box(out, z0, z1, oz0, oz1, oy0, oy1, ox0, ox1):  # pragma: no cover - compiled
    """Zero the planes z0:z1 of ``out`` outside the box [oz0, oz1) x [oy0, oy1) x [ox0, ox1)."""
    for z in range(z0, z1):
        if z < oz0 or z >= oz1:
            out[z] = 0.0
            continue
        for y in range(oy0):
            out[z, y] = 0.0
        for y in range(oy1, out.shape[1]):
            out[z, y] = 0.0
        for y in range(oy0, oy1):
            out[z, y, :ox0] = 0.0
            out[z, y, ox1:] = 0.0


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
    symmetric_x: bool
    sym_ptr: np.ndarray
    sym_j: np.ndarray
    sym_w: np.ndarray

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
    # mirror-symmetric x-profiles (w(-s) == w(s) exactly; true for every radial kernel): one term per |s|
    symmetric_x = True
    sym_ptr: list[int] = [0]
    sym_j: list[int] = []
    sym_w: list[float] = []
    for r in range(len(uniq)):
        sx = prof_sx[prof_ptr[r]:prof_ptr[r + 1]]
        w = prof_w[prof_ptr[r]:prof_ptr[r + 1]]
        if not (np.array_equal(sx, -sx[::-1]) and np.array_equal(w, w[::-1])):
            symmetric_x = False
        keep = sx >= 0
        sym_j.extend(sx[keep])
        sym_w.extend(w[keep])
        sym_ptr.append(len(sym_j))
    return _Profiles(prof_ptr, prof_sx, np.ascontiguousarray(prof_w), np.asarray(cls_ptr, dtype=np.int64),
                     np.asarray(cls_sy, dtype=np.int64), np.asarray(cls_prof, dtype=np.int64),
                     (used_pl - hz).astype(np.int64), np.asarray(pl_inv, dtype=np.int64).reshape(-1),
                     symmetric_x, np.asarray(sym_ptr, dtype=np.int64), np.asarray(sym_j, dtype=np.int64),
                     np.asarray(sym_w, dtype=kc.dtype))


def _direct_layout(obox: _Box, ibox: _Box, he: tuple[int, ...], prof: _Profiles, spans: np.ndarray, itemsize: int,
                   threads: int) -> tuple[float, int, tuple[tuple[int, int], ...]]:
    """The estimated cost of the direct path and its temporaries (per-thread buffers that stay in cache: the
    padded frame, the x-profile rows, the pair sums and the ring of 2 hz + 1 planes of partial sums).
    Returns (cost_ns, temp_bytes, z_blocks)."""
    (oz0, oz1), (oy0, oy1), (ox0, ox1) = obox
    (iz0, iz1), (iy0, iy1), _ = ibox
    wp = ox1 - ox0 + 2 * he[2]
    nyo = oy1 - oy0
    nyf = nyo + 2 * he[1]
    per_thread = (nyf * wp * (2 + prof.count + he[2]) + (2 * he[0] + 1) * prof.classes * nyo * wp) * itemsize
    # lanes of one pass over the data rows of every input plane (first to last non-empty row)
    ne = spans > 0
    has = ne.any(axis=1)
    rows_per_plane = np.where(has, ne.shape[1] - ne.argmax(axis=1) - ne[:, ::-1].argmax(axis=1), 0)
    lanes = float(rows_per_plane.sum()) * wp
    nzo = oz1 - oz0
    # per tap along x (fitted before the mirror-symmetric pair sums; they make small kernels about 1.3x faster,
    # but not large ones, whose profiles and ring of planes outgrow the caches, so the fit is kept)
    x_ops = float(prof.prof_sx.shape[0])
    out_voxels = float(nzo * nyo * wp)
    stage1 = (x_ops * DIRECT_NS_PER_TAP_VOXEL * lanes
              + float(prof.cls_sy.shape[0]) * DIRECT_NS_PER_ADD * float((iz1 - iz0) * nyo * wp))
    stage2 = (float(prof.pl_sz.shape[0]) * DIRECT_NS_PER_ADD + DIRECT_NS_PER_OUT_VOXEL) * out_voxels
    return stage1 + stage2, int(per_thread * max(1, threads)), ((oz0, oz1),)


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


def _scan(tia: np.ndarray, threads: int) -> tuple[np.ndarray, np.ndarray, tuple[tuple[int, int], ...] | None]:
    """Row spans of the non-zero voxels of a C-contiguous float array and their bounding box (None when all
    zero); raises on non-finite values."""
    nz, ny, nx = tia.shape
    rlo = np.empty((nz, ny), dtype=np.int64)
    rhi = np.empty((nz, ny), dtype=np.int64)
    rows = tia.reshape(nz * ny, nx)
    flo = rlo.reshape(-1)
    fhi = rhi.reshape(-1)
    parts = _ranges(0, nz * ny, threads * _SCAN_PARTS_PER_THREAD if threads > 1 else 1)
    res = [(0, 0, 0, 0, 0, 0, 0)] * len(parts)

    def run(i: int) -> None:
        res[i] = _row_spans(rows, ny, flo, fhi, *parts[i])

    _parallel(run, len(parts), threads)
    bad = sum(r[0] for r in res)
    if bad:
        raise DosimetryError(f"convolve: tia must be finite; {int(bad)} row(s) hold NaN or infinite values")
    boxes = [r[1:] for r in res if r[2] > r[1]]
    if not boxes:
        return rlo, rhi, None
    return rlo, rhi, ((min(b[0] for b in boxes), max(b[1] for b in boxes)),
                      (min(b[2] for b in boxes), max(b[3] for b in boxes)),
                      (min(b[4] for b in boxes), max(b[5] for b in boxes)))


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


def _fft_layout(obox: _Box, ibox: _Box, he: tuple[int, ...], itemsize: int, budget: int, symmetric: bool
                ) -> tuple[float, int, tuple[int, int, int], tuple[tuple[int, int], ...]]:
    """Choose the z-blocking and transform shape: the fewest z-blocks (each block adds the kernel's overlap) whose
    temporaries fit ``budget``, or, when none fits, the smallest temporaries.
    Returns (cost_ns, temp_bytes, fft_shape, z_blocks)."""
    ly = _fast_len(_fft_requirement(obox[1][0], obox[1][1], ibox[1][0], ibox[1][1], he[1]))
    lx = _fast_len(_fft_requirement(obox[2][0], obox[2][1], ibox[2][0], ibox[2][1], he[2]))
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
    chosen = best if best is not None else smallest
    assert chosen is not None  # nzo >= 1: the loop ran at least once
    return chosen


def _prepare(tia: Any, kernel: Any, roi: Any, method: str, max_temp_bytes: int | None) -> _Prepared:
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
    rlo, rhi, sbox = _scan(tia_w, threads)

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
    obox = ibox = None
    if sbox is not None:
        obox = tuple((max(lo - hd, 0), min(hi + hd, n)) for (lo, hi), hd, n in zip(sbox, h, tia.shape, strict=True))
        if roi_b is not None:
            assert qlo is not None and qhi is not None
            qbox = _bbox_from_spans(qlo, qhi)
            obox = None if qbox is None else tuple(
                (max(o0, q0), min(o1, q1)) for (o0, o1), (q0, q1) in zip(obox, qbox, strict=True))
            if obox is not None and any(o0 >= o1 for o0, o1 in obox):
                obox = None
    if obox is not None:
        assert sbox is not None
        ibox = tuple((max(s0, o0 - hd), min(s1, o1 + hd))
                     for (s0, s1), (o0, o1), hd in zip(sbox, obox, h, strict=True))
        if any(i0 >= i1 for i0, i1 in ibox):
            obox = ibox = None
    if obox is None:
        plan = ConvolutionPlan("zero", None, None, (0, 0, 0), 0, 0, 0.0, 0.0, None, (), 0)
        return _Prepared(tia_w, kernel, dtype, rlo, rhi, roi_b, qlo, qhi, plan, None)

    assert ibox is not None
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
    direct_cost, direct_temp, slabs = _direct_layout(obox, ibox, he, prof, spans, dtype.itemsize, threads)
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
    digest = hashlib.blake2b(np.ascontiguousarray(kc).view(np.uint8).ravel().data, digest_size=16).hexdigest()
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

def _direct_buffers(item: tuple[int, int, int, int], obox: tuple[tuple[int, int], ...], he: tuple[int, int, int],
                   wp: int, prof: _Profiles, dtype: np.dtype) -> tuple[np.ndarray, ...]:
    """The uninitialised work buffers of one ``_direct_slab`` call (see its docstring), allocated here rather than
    in compiled code (numba compiles an allocator per array type: 0.5 s of the first call); empty for an item
    that lies outside the output box (it only zeroes)."""
    z0, z1, y0, y1 = item
    hz, hy, hx = he
    (oz0, oz1), (by0, by1), _ = obox
    nyo = min(y1, by1) - max(y0, by0)
    if nyo <= 0 or min(z1, oz1) <= max(z0, oz0):
        nyo, wp = 0, 0
    nyf = nyo + 2 * hy if nyo else 0
    nprof = prof.prof_ptr.shape[0] - 1
    ncls = prof.cls_ptr.shape[0] - 1
    nsl = 2 * hz + 1
    m = prof.pl_sz.shape[0]
    return (np.empty(nyf * wp, dtype=dtype), np.empty((nprof, nyf * wp), dtype=dtype),
            np.empty((hx + 1, nyf * wp), dtype=dtype), np.empty((nsl * ncls, nyo * wp), dtype=dtype),
            np.empty(nyo * wp, dtype=dtype),
            np.empty(nsl, dtype=np.bool_), np.empty(nsl, dtype=np.int64), np.empty(nsl, dtype=np.int64),
            np.empty(m, dtype=np.int64), np.empty(m, dtype=np.int64))


def _run_direct(p: _Prepared, out: np.ndarray, threads: int, zero_outside: bool = True) -> None:
    """Direct path into an uninitialised ``out``: the output box cut along y into one slab per thread (each
    walks the box's planes once, see ``_direct_slab``; a cut costs only 2 hy rows of the pass along x), and the
    rest of the volume zeroed (unless ``zero_outside`` is false: ``out`` then holds zeros already), handed out
    dynamically."""
    plan = p.plan
    assert p.info is not None and plan.output_box is not None and plan.input_box is not None
    prof = p.info.profiles
    hz, hy, hx = plan.kernel_half
    (oz0, oz1), (oy0, oy1), _ = plan.output_box
    obox = np.asarray(plan.output_box, dtype=np.int64)
    ibox = np.asarray(plan.input_box, dtype=np.int64)
    nz, ny, _ = out.shape
    items = [(oz0, oz1, y0, y1) for y0, y1 in _ranges(oy0, oy1, _DIRECT_SLABS_PER_THREAD * threads)]
    if zero_outside:
        items += [r for r in ((0, oz0, 0, ny), (oz1, nz, 0, ny), (oz0, oz1, 0, oy0), (oz0, oz1, oy1, ny))
                  if r[1] > r[0] and r[3] > r[2]]
    if p.roi is not None:
        roi, use_roi = p.roi, True
    else:
        roi, use_roi = np.ones((1, 1, 1), dtype=np.bool_), False

    direct_slab = _DIRECT_SLAB[bool(prof.symmetric_x)]
    out_box = plan.output_box
    ox0, ox1 = out_box[2]
    wp = ox1 - ox0 + 2 * hx
    offs = (hy - prof.cls_sy) * wp
    sym_off = np.zeros(prof.sym_j.shape[0], dtype=np.int64)
    ones = np.ones(max(prof.cls_prof.shape[0], prof.pl_sz.shape[0]), dtype=prof.sym_w.dtype)

    def slab(i: int) -> None:
        bufs = _direct_buffers(items[i], out_box, (hz, hy, hx), wp, prof, out.dtype)
        direct_slab(p.tia, p.rlo, p.rhi, out, *items[i], obox, ibox, hz, hy, hx, prof.prof_ptr, prof.prof_sx,
                    prof.prof_w, prof.sym_ptr, prof.sym_j, prof.sym_w, prof.cls_ptr, offs, prof.cls_prof, prof.pl_sz,
                    prof.pl_cls, use_roi, roi, sym_off, ones, *bufs)

    _parallel(slab, len(items), threads)


def _chunk_ranges(start: int, stop: int, item_bytes: int, threads: int) -> list[tuple[int, int]]:
    """[start, stop) in chunks of at most ~_CHUNK_BYTES, and at least a few per thread when threads > 1."""
    n = stop - start
    parts = max(1, -(-n * item_bytes // _CHUNK_BYTES))
    if threads > 1:
        parts = max(parts, threads * _CHUNKS_PER_THREAD // 2)
    return _ranges(start, stop, parts)


def _run_fft(p: _Prepared, out: np.ndarray, threads: int, zero_outside: bool = False) -> None:
    """Pruned real-FFT convolution over the output box, block by block along z, chunk by chunk in cache.

    Per block: (1) for chunks of input planes: pad the rows to the transform length, rfft along x into the block
    spectrum, fft along y (in place); (2) for chunks of y: fft along z, multiply by the kernel spectrum, inverse fft
    along z (in place, one sweep through memory); (3) for chunks of kept planes: inverse fft along y, irfft along x
    of the kept rows, copy the kept part into ``out``. Chunks of a phase run in parallel, one FFT worker each.
    With ``zero_outside`` (``out`` uninitialised) the same chunks zero their planes outside the output box, and
    the planes outside it are zeroed alongside the first block's inverse phase."""
    plan = p.plan
    assert p.info is not None and plan.fft_shape is not None
    assert plan.output_box is not None and plan.input_box is not None
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
    (oz0, oz1), _, _ = plan.output_box
    nz = out.shape[0]
    outside = []
    if zero_outside:
        for a, b in ((0, oz0), (oz1, nz)):
            if b > a:
                outside += _chunk_ranges(a, b, out[0].nbytes, threads)
    for bz0, bz1 in plan.z_blocks:
        iz0 = max(iz0_all, bz0 - he[0])
        iz1 = min(iz1_all, bz1 + he[0])
        cz = min(bz0, iz0)
        spec = np.zeros((lz, ly, lxh), dtype=ctype)
        fwd = _chunk_ranges(iz0, iz1, ly * lxh * citem, threads)
        sweep = _chunk_ranges(0, ly, lz * lxh * citem, threads)
        inv = _chunk_ranges(bz0, bz1, ly * lxh * citem, threads)

        def forward(i: int, spec: np.ndarray = spec, fwd: list[tuple[int, int]] = fwd, cz: int = cz) -> None:
            z0, z1 = fwd[i]
            pad = np.zeros((z1 - z0, iy1 - iy0, lx), dtype=dtype)
            pad[:, :, ix0 - cx:ix1 - cx] = tia[z0:z1, iy0:iy1, ix0:ix1]
            planes = spec[z0 - cz:z1 - cz]
            planes[:, iy0 - cy:iy1 - cy] = scipy.fft.rfft(pad, axis=2, workers=1)
            scipy.fft.fft(planes, axis=1, workers=1, overwrite_x=True)

        def along_z(i: int, spec: np.ndarray = spec, sweep: list[tuple[int, int]] = sweep) -> None:
            y0, y1 = sweep[i]
            cols = spec[:, y0:y1]
            scipy.fft.fft(cols, axis=0, workers=1, overwrite_x=True)
            _mul_spectrum(cols, kspec[:, y0:y1])
            scipy.fft.ifft(cols, axis=0, workers=1, overwrite_x=True)

        def inverse(i: int, spec: np.ndarray = spec, inv: list[tuple[int, int]] = inv, cz: int = cz,
                    outside: list[tuple[int, int]] = outside) -> None:
            if i >= len(inv):
                a, b = outside[i - len(inv)]
                _zero_outside_box(out, a, b, oz0, oz1, oy0, oy1, ox0, ox1)
                return
            z0, z1 = inv[i]
            planes = spec[z0 - cz:z1 - cz]
            scipy.fft.ifft(planes, axis=1, workers=1, overwrite_x=True)
            res = scipy.fft.irfft(planes[:, oy0 - cy:oy1 - cy], n=lx, axis=2, workers=1)
            out[z0:z1, oy0:oy1, ox0:ox1] = res[:, :, ox0 - cx:ox1 - cx]
            if roi is not None:
                _zero_outside_roi(out, roi, z0, z1, oy0, oy1, ox0, ox1)
            if zero_outside:
                _zero_outside_box(out, z0, z1, oz0, oz1, oy0, oy1, ox0, ox1)

        _parallel(forward, len(fwd), threads)
        _parallel(along_z, len(sweep), threads)
        _parallel(inverse, len(inv) + len(outside), threads)
        outside = []
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
    return _convolve_box(tia, kernel, roi, method, max_temp_bytes)[0]


def _convolve_box(tia: Any, kernel: Any, roi: Any = None, method: Method = "auto", max_temp_bytes: int | None = None
                  ) -> tuple[np.ndarray, tuple[tuple[int, int], ...] | None]:
    """:func:`convolve`, and the output box outside which the result is exactly 0 (``None``: 0 everywhere), so
    that callers can post-process the box only."""
    p = _prepare(tia, kernel, roi, method, max_temp_bytes)
    plan = p.plan
    log.debug("convolve: %s", plan)
    if plan.method == "zero" or plan.taps == 0:
        return np.zeros(p.tia.shape, dtype=p.dtype), None
    threads = _threads()
    # A fresh output: a large one from np.zeros (calloc maps fresh pages that the OS zeroes lazily, so the part
    # outside the output box is never touched); a smaller one usually recycles heap memory that calloc would
    # memset on one thread, so it is left uninitialised and the worker threads zero their own part of it.
    big = p.tia.size * p.dtype.itemsize > _FRESH_PAGES_BYTES
    out = (np.zeros if big else np.empty)(p.tia.shape, dtype=p.dtype)
    if plan.method == "direct":
        _run_direct(p, out, threads, zero_outside=not big)
    else:
        _run_fft(p, out, threads, zero_outside=not big)
    return out, plan.output_box
