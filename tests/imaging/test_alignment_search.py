"""The alignment search of embplan.imaging.checks (issue 16: a circular FFT correlation of the cropped, padded box)
against a direct sum over every shift: the overlaps in place and at the best shift, and the shift returned, on
random masks and weights of odd shapes and spacings (block reduction with remainders, boxes clipped at the grid's
edge, windows larger than the grid)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from embplan.grid import Grid
from embplan.imaging.checks import ALIGNMENT_WORK_VOXEL_MM, _best_shift


def _direct(weights: np.ndarray, mask: np.ndarray, spacing: tuple[float, float, float], max_shift_mm: float,
            per: str) -> tuple[np.ndarray, list[int], tuple[int, ...]] | None:
    """overlap(s) = sum_x M(x - s) A(x) / total for every shift, by moving the block-averaged mask (no FFT)."""
    f = tuple(max(1, int(ALIGNMENT_WORK_VOXEL_MM // s)) for s in spacing)
    nb = [s // k for s, k in zip(mask.shape, f, strict=True)]

    def reduce(a: np.ndarray) -> np.ndarray:
        a = np.asarray(a, dtype=float)[: nb[0] * f[0], : nb[1] * f[1], : nb[2] * f[2]]
        return a.reshape(nb[0], f[0], nb[1], f[1], nb[2], f[2]).mean(axis=(1, 3, 5))

    m, a = reduce(mask), reduce(weights)
    r = [math.ceil(max_shift_mm / (s * k)) for s, k in zip(spacing, f, strict=True)]
    total = m.sum() if per == "mask" else a.sum()
    if not total > 0:  # nothing to divide by (weights only in the left-out remainder): the callers never ask
        return None
    win = np.zeros([2 * x + 1 for x in r])
    for s0 in range(-r[0], r[0] + 1):
        for s1 in range(-r[1], r[1] + 1):
            for s2 in range(-r[2], r[2] + 1):
                s = (s0, s1, s2)
                src = tuple(slice(max(0, -v), n - max(0, v)) for v, n in zip(s, m.shape, strict=True))
                dst = tuple(slice(max(0, v), n - max(0, -v)) for v, n in zip(s, m.shape, strict=True))
                if all(x.stop > x.start for x in src):
                    win[s0 + r[0], s1 + r[1], s2 + r[2]] = float((m[src] * a[dst]).sum()) / total
    return win, r, f


@pytest.mark.parametrize("seed", range(6))
def test_best_shift_equals_the_direct_sum_over_every_shift(seed: int) -> None:
    rng = np.random.default_rng(seed)
    checked = 0
    for trial in range(20):
        shape = tuple(int(x) for x in rng.integers(3, 24, 3))
        spacing = tuple(float(x) for x in rng.choice([0.7, 1.5, 2.0, 3.0, 4.4, 8.0], 3))
        grid = Grid(shape=shape, spacing_mm=spacing, origin_mm=(0.0, 0.0, 0.0))
        mask = np.zeros(shape, dtype=bool)
        lo = [int(rng.integers(0, s)) for s in shape]
        hi = [min(s, v + int(rng.integers(1, 15))) for v, s in zip(lo, shape, strict=True)]
        box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        mask[box] = rng.random(mask[box].shape) < 0.7
        weights = (rng.random(shape) * (rng.random(shape) < 0.5)) if trial % 2 else rng.random(shape) < 0.3
        per = "weights" if trial % 3 == 0 else "mask"
        max_shift_mm = float(rng.choice([8.0, 20.0, 40.0]))
        direct = _direct(weights, mask, spacing, max_shift_mm, per)
        if direct is None:
            continue
        win, r, f = direct
        if not mask[: shape[0] // f[0] * f[0], : shape[1] // f[1] * f[1], : shape[2] // f[2] * f[2]].any():
            continue  # the mask lies in the remainder that whole work voxels leave out
        at0, best, shift_mm = _best_shift(weights, mask, grid, max_shift_mm, per=per)
        assert at0 == pytest.approx(win[tuple(r)], abs=1e-9)
        assert best == pytest.approx(win.max(), abs=1e-9)
        # the shift returned is one where the direct sum is largest (x, y, z mm -> work voxels (k, j, i))
        k = [round(v) for v in np.array([shift_mm[2], shift_mm[1], shift_mm[0]]) / np.array(spacing) / np.array(f)]
        assert win[k[0] + r[0], k[1] + r[1], k[2] + r[2]] == pytest.approx(win.max(), abs=1e-9)
        if win.max() <= win[tuple(r)] + 1e-12:
            assert shift_mm == (0.0, 0.0, 0.0)
        checked += 1
    assert checked >= 10
