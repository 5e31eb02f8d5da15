"""The convolution engine (the hot path; nothing else lives here).

``convolve(tia, kernel, roi=None)`` equals ``scipy.signal.fftconvolve(tia, kernel, mode="same")``.
(First version: crop to the activity's support plus the kernel reach, real FFT. To be optimised.)
"""

from __future__ import annotations

import numpy as np
import scipy.fft

from ..errors import DosimetryError

__all__ = ["convolve"]


def convolve(tia: np.ndarray, kernel: np.ndarray, roi: np.ndarray | None = None) -> np.ndarray:
    tia = np.asarray(tia)
    kernel = np.asarray(kernel)
    if tia.ndim != 3 or kernel.ndim != 3:
        raise DosimetryError("convolve: tia and kernel must be 3-D arrays")
    if any(n % 2 == 0 for n in kernel.shape):
        raise DosimetryError(f"convolve: kernel shape must be odd in every axis, got {kernel.shape}")
    dtype = np.result_type(tia.dtype, kernel.dtype, np.float32)
    out = np.zeros(tia.shape, dtype=dtype)
    nz = np.nonzero(tia)
    if nz[0].size == 0:
        return out
    half = [k // 2 for k in kernel.shape]
    lo = [int(a.min()) for a in nz]
    hi = [int(a.max()) + 1 for a in nz]
    olo = [max(0, lo[d] - half[d]) for d in range(3)]
    ohi = [min(tia.shape[d], hi[d] + half[d]) for d in range(3)]
    src = tia[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]].astype(dtype, copy=False)
    full_shape = [src.shape[d] + kernel.shape[d] - 1 for d in range(3)]
    fshape = [scipy.fft.next_fast_len(n, real=True) for n in full_shape]
    spec = scipy.fft.rfftn(src, fshape) * scipy.fft.rfftn(kernel.astype(dtype, copy=False), fshape)
    full = scipy.fft.irfftn(spec, fshape)
    # full[0] corresponds to output index lo - half
    sl = tuple(slice(olo[d] - (lo[d] - half[d]), ohi[d] - (lo[d] - half[d])) for d in range(3))
    out[olo[0]:ohi[0], olo[1]:ohi[1], olo[2]:ohi[2]] = full[sl]
    if roi is not None:
        out[~np.asarray(roi, dtype=bool)] = 0
    return out
