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


def test_dicom_case_end_to_end(benchmark, smoke: bool):
    from benchmarks.dicom_cases import ensure_case
    from embplan.case import load_case
    from embplan.planner import plan

    case = load_case(ensure_case("clinical_smoke" if smoke else "phantom15"))
    plan(case)  # warm
    benchmark.group = "end to end"
    p = benchmark.pedantic(plan, args=(case,), rounds=1 if smoke else 5, iterations=1)
    assert p.dosimetry is not None and p.dosimetry.voxel is not None and p.dosimetry.dvh
