"""pytest-benchmark suites of embplan (files ``bench_*.py``; see docs/performance.md).

* ``pytest benchmarks`` times the full grids (the CT grid is marked ``slow``: ``-m "not slow"`` leaves it out);
  pytest-benchmark stores and compares runs with ``--benchmark-autosave`` / ``--benchmark-compare``.
* ``pytest benchmarks --benchmark-disable`` (CI) runs every benchmark body once on small stand-in grids, with its
  correctness checks, so the suites cannot rot. ``EMBPLAN_BENCH_SMOKE=1`` / ``=0`` forces small / full grids.
* The ratio table of the performance issue comes from ``python -m benchmarks.compare``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.cases import smoke_from_env


def pytest_collect_file(file_path: Path, parent: pytest.Collector):
    if file_path.suffix == ".py" and file_path.name.startswith("bench_"):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


@pytest.fixture(scope="session")
def smoke(pytestconfig: pytest.Config) -> bool:
    """True: small stand-in grids (default when benchmarks are disabled); False: the full grids."""
    disabled = bool(pytestconfig.getoption("benchmark_disable", default=False))
    return smoke_from_env(default=disabled)
