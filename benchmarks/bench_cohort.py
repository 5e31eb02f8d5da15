"""Cohort throughput (embplan batch on a LocalCluster) and one DICOM case end to end, under pytest-benchmark.

The tables of issue 16 come from ``python -m benchmarks.cohort`` and ``python -m benchmarks.end_to_end``; these
bodies run the same code (on small stand-ins when benchmarks are disabled) and check their results.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from benchmarks.cohort import make_cases


@pytest.mark.parametrize("workers", [1, 2])
def test_cohort_batch(benchmark, smoke: bool, workers: int, tmp_path_factory):
    distributed = pytest.importorskip("distributed")
    from embplan.cohort import run_batch

    n = 4 if smoke else 20
    cases = tmp_path_factory.mktemp("cases")
    make_cases(cases, n)
    benchmark.group = "cohort"
    with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=not smoke,
                                  dashboard_address=":0") as cluster, distributed.Client(cluster) as client:

        def once():
            with tempfile.TemporaryDirectory() as tmp:
                return run_batch(cases, Path(tmp) / "out", client=client)

        res = benchmark.pedantic(once, rounds=1 if smoke else 3, iterations=1)
    assert res.errors == 0 and res.planned == n


@pytest.mark.parametrize("name", ["phantom15", "clinical"])
def test_dicom_case_end_to_end(benchmark, smoke: bool, name: str):
    """Issue 16's single-case targets under pytest-benchmark: phantom15 <= 2 s and clinical <= 5 s warm (the
    printed table with stages, memory and the cold start: ``python -m benchmarks.end_to_end``)."""
    from benchmarks.dicom_cases import ensure_case
    from embplan.case import load_case
    from embplan.planner import plan

    case = load_case(ensure_case("clinical_smoke" if smoke else name))
    p = plan(case)  # warm, and the result checked
    assert p.dosimetry is not None and p.dosimetry.voxel is not None and p.dosimetry.dvh
    del p
    benchmark.group = "end to end"

    def once() -> None:  # one plan in memory at a time, as in `embplan plan` (the result is dropped at once)
        plan(case)

    benchmark.pedantic(once, rounds=1 if smoke else 5, iterations=1)
