"""What the first plan after an install compiles (issue 16's cold start): measured in a fresh interpreter with an
empty numba cache, through numba's compile events.

* building a voxel kernel compiles nothing (the quadrature is numpy);
* the direct convolution of a mirror-symmetric kernel (every kernel a plan uses) compiles the symmetric variant of
  the slab function only, not the asymmetric one nor its tap helper;
* each compiled function of the dose engine is compiled once for float64 inputs: no second specialisation (a
  literal ``0`` argument used to type a helper a second time as ``Literal[int](0)``);
* the next process loads all of it from the cache (the slab variants are closures, cached under their own keys).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

_PROBE = r"""
import json, sys
from numba.core import event
compiled = []
class Rec(event.Listener):
    def on_start(self, ev):
        pass
    def on_end(self, ev):
        f = ev.data["dispatcher"].py_func
        if f.__module__.startswith("embplan"):
            compiled.append((phase, f.__qualname__, str(ev.data["args"])))
event.register("numba:compile", Rec())
import numpy as np
from embplan.dosimetry.convolve import convolve
from embplan.dosimetry.kernels import y90_voxel_kernel
phase = "kernel"
kernel = y90_voxel_kernel(4.42).mgy_per_mbq_s
phase = "direct"
tia = np.zeros((20, 22, 24))
tia[6:14, 7:15, 5:17] = np.random.default_rng(3).random((8, 8, 12))
roi = np.zeros(tia.shape, dtype=bool)
roi[4:16, 4:18, 4:20] = True
a = convolve(tia, kernel, method="direct")
b = convolve(tia, kernel, roi, method="direct")
assert np.all(b[~roi] == 0.0) and np.array_equal(a[roi], b[roi])
print(json.dumps(compiled))
"""


def _compiled(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba_cache"))
    r = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_first_direct_convolution_compiles_one_variant_once_and_the_kernel_nothing(tmp_path):
    compiled = _compiled(tmp_path)
    assert [c for c in compiled if c[0] == "kernel"] == []  # the quadrature is numpy
    names = [name for _, name, _ in compiled]
    assert "_make_direct_slab.<locals>._direct_slab" in names and "_flat_wsum" in names
    assert "_flat_taps" not in names  # the asymmetric x-pass is pruned before typing
    slab = [args for _, name, args in compiled if name == "_make_direct_slab.<locals>._direct_slab"]
    assert len(slab) == 1  # one variant (the symmetric one), one specialisation
    assert len(names) == len(set(names)), names  # no function compiled twice
    assert not any("Literal" in args for _, _, args in compiled), compiled
    assert _compiled(tmp_path) == []  # a second process: everything from the cache
