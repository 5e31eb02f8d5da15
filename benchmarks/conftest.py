"""pytest-benchmark suites of embplan (files ``bench_*.py``, collected by ``python_files`` in pyproject.toml; see
docs/performance.md).

* ``pytest benchmarks`` times the full grids (the CT grid is marked ``slow``: ``-m "not slow"`` leaves it out);
  pytest-benchmark stores and compares runs with ``--benchmark-autosave`` / ``--benchmark-compare``.
* ``pytest benchmarks --benchmark-disable`` (CI) runs every benchmark body once on small stand-in grids, with its
  correctness checks, so the suites cannot rot. ``EMBPLAN_BENCH_SMOKE=1`` / ``=0`` forces small / full grids.
* The ratio table of the performance issue comes from ``python -m benchmarks.compare``.
"""

from __future__ import annotations

import pytest

from benchmarks.cases import smoke_from_env


@pytest.fixture(scope="session")
def smoke(pytestconfig: pytest.Config) -> bool:
    """True: small stand-in grids (default when benchmarks are disabled); False: the full grids."""
    disabled = bool(pytestconfig.getoption("benchmark_disable", default=False))
    return smoke_from_env(default=disabled)
