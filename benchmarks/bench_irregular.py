"""Resampling an irregular CT stack onto a regular grid (issue 17: a 15-degree gantry tilt, one missing slice).

Full size: 200 slices of 512 x 512 (an abdominal CT at 2.5 mm); smoke (``--benchmark-disable``): 12 x 64 x 64.
The body checks the result against the closed form (a field linear in patient coordinates survives linear /
bilinear resampling exactly). No assertion here is about time.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset

from embplan.imaging.irregular import regular_stack_plan


def _stack(n: int, size: int, missing: int | None):
    t = math.radians(15.0)
    r, c = np.array([1.0, 0.0, 0.0]), np.array([0.0, math.cos(t), math.sin(t)])
    items, slices = [], []
    jj, ii = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    for k in range(n):
        if k == missing:
            continue
        pos = np.array([0.0, 0.0, 2.5 * k])
        ds = Dataset()
        ds.ImageOrientationPatient = [*r, *c]
        ds.PixelSpacing = [0.8, 0.8]
        ds.ImagePositionPatient = list(pos)
        ds.Rows = ds.Columns = size
        items.append((Path(f"ct_{k:04d}.dcm"), ds))
        pts = pos + jj[..., None] * 0.8 * c + ii[..., None] * 0.8 * r
        slices.append(pts @ np.array([0.5, -0.25, 2.0]))
    return items, np.stack(slices)


@pytest.mark.parametrize("missing", [None, 5], ids=["tilt", "tilt+missing"])
def test_resample_tilted_stack(benchmark, smoke: bool, missing):
    n, size = (12, 64) if smoke else (200, 512)
    items, stack = _stack(n, size, missing)
    plan = regular_stack_plan(items, "bench")
    assert plan is not None
    out, filled = benchmark(plan.resample, stack, -1000.0)
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in plan.grid.shape], indexing="ij"), axis=-1).reshape(-1, 3)
    expected = (plan.grid.index_to_patient_mm(idx) @ np.array([0.5, -0.25, 2.0])).reshape(plan.grid.shape)
    inside = out != -1000.0
    assert 0 < filled < 0.5
    np.testing.assert_allclose(out[inside], expected[inside], atol=1e-9)
