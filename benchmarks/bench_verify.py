"""Post-treatment verification benchmarks: rigid registration (CT to CT) and the 3D gamma index.

Smoke runs (``--benchmark-disable``) use the 8 mm phantom and a 24^3 gamma grid; full runs the 4.42 mm demo phantom
(68 x 68 x 91) and a 64^3 grid. Every body checks its result; no assertion is about time.
"""

from __future__ import annotations

import numpy as np
import pytest

from embplan.grid import Grid
from embplan.imaging.phantom import make_phantom
from embplan.imaging.registration import RegistrationSettings, RigidTransform, register_rigid
from embplan.imaging.resample import resample_to_grid
from embplan.verify import GammaSettings, gamma_index


@pytest.fixture(scope="module")
def moved_ct(smoke: bool):
    ph = make_phantom("net_liver", 7, 8.0 if smoke else 4.42)
    g = ph.grid
    centre = tuple(float(v) for v in g.index_to_patient_mm(np.array(g.shape) / 2.0 - 0.5))
    truth = RigidTransform.from_euler((2.0, -3.0, 6.0), (14.0, -9.0, 18.0), centre)  # type: ignore[arg-type]
    mg = Grid(shape=g.shape, spacing_mm=g.spacing_mm, origin_mm=tuple(np.asarray(g.origin_mm) + (10.0, -5.0, 20.0)))
    mov = resample_to_grid(ph.ct_hu.astype(float), truth.inverse().grid_in_fixed_frame(g), mg, "linear",
                           default_value=-1000.0)
    return ph, mov, mg, truth


def test_register_rigid(benchmark, moved_ct):
    ph, mov, mg, truth = moved_ct
    benchmark.group = "verify-registration"
    benchmark.extra_info.update(shape=list(ph.grid.shape))
    res = benchmark(register_rigid, ph.ct_hu, ph.grid, mov, mg, settings=RegistrationSettings())
    pts = ph.grid.index_to_patient_mm(np.argwhere(ph.masks["liver"]))
    assert truth.max_displacement_error_mm(res.transform, pts) < 2.0


def test_gamma_index(benchmark, smoke: bool):
    n = 24 if smoke else 64
    g = Grid.cubic((n, n, n), 4.0)
    z, y, x = np.indices(g.shape)
    ref = 100.0 * np.exp(-((x - n / 2) ** 2 + (y - n / 2) ** 2 + (z - n / 2) ** 2) / (2 * (n / 6) ** 2))
    ev = ref * 1.02
    benchmark.group = "verify-gamma"
    benchmark.extra_info.update(shape=list(g.shape))
    gam, res = benchmark(gamma_index, ref, ev, g, GammaSettings())
    assert res.pass_rate == 1.0 and np.nanmax(gam) <= 2.0 / 3.0 + 1e-9
