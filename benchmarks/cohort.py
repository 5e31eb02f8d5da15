"""Cohort throughput: cases per minute of ``embplan batch`` with 1 and 2 workers, and where the time goes.

``python -m benchmarks.cohort`` generates ``--cases`` phantom TARE cases (the demo case with seeded tumour
positions, patient weights and ids: the voxel workflow on the 4.42 mm phantom), then for each worker count plans
them all into a fresh output folder on a new ``LocalCluster`` (process workers, one thread each; numba threads =
CPUs / workers) and reports: wall time of the batch (cluster start included), cluster start-up, cases per minute,
the per-case task time (plan, write), the sum of task times divided by the workers (the ideal wall), and the rest
(scheduling, transfers, the table). The ratio 2 workers / 1 worker is the speed-up. A JSON record goes to
``.benchmarks/cohort/<UTC time>.json``. ``--processes 0`` uses thread workers.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any


def make_cases(folder: Path, n: int, *, voxel_mm: float = 4.42) -> list[Path]:
    """``n`` phantom TARE cases (the packaged demo case, seeds 1..n, weights 55-95 kg), written to ``folder``."""
    from importlib import resources

    base = json.loads(resources.files("embplan").joinpath("data/demo_tare_phantom.json").read_text("utf-8"))
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        d = json.loads(json.dumps(base))
        d["patient"]["id"] = f"C{i + 1:03d}"
        d["patient"]["weight_kg"] = 55.0 + (i * 7) % 40
        d["dosimetry"]["images"]["phantom"].update(seed=i + 1, voxel_mm=voxel_mm)
        p = folder / f"case_{i + 1:03d}.json"
        p.write_text(json.dumps(d, indent=1))
        out.append(p)
    return out


def run(cases: Path, workers: int, processes: bool) -> dict[str, Any]:
    import distributed

    from embplan.cohort import run_batch

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=processes,
                                           dashboard_address=":0")
        client = distributed.Client(cluster)
        t_start = time.perf_counter() - t0
        try:
            # numba threads per worker: what run_batch sets for its own LocalCluster
            threads = max(1, (os.cpu_count() or 1) // workers)
            client.run(lambda: __import__("numba").set_num_threads(threads))
            t1 = time.perf_counter()
            res = run_batch(cases, Path(tmp) / "out", client=client)
            t_batch = time.perf_counter() - t1
        finally:
            client.close()
            cluster.close()
    wall = t_start + t_batch
    ok = [r for r in res.rows if r.get("status") == "ok"]
    tasks = [r["time_total_s"] for r in ok]
    plans = [r["time_plan_s"] for r in ok]
    writes = [r["time_write_s"] for r in ok]
    ideal = sum(tasks) / workers
    return {
        "workers": workers, "processes": processes, "cases": len(res.rows), "errors": res.errors,
        "wall_s": wall, "cluster_start_s": t_start, "batch_s": t_batch, "cases_per_min": 60.0 * len(res.rows) / wall,
        "cases_per_min_excluding_start": 60.0 * len(res.rows) / t_batch,
        "task_mean_s": statistics.mean(tasks), "plan_mean_s": statistics.mean(plans),
        "write_mean_s": statistics.mean(writes), "sum_tasks_s": sum(tasks), "ideal_batch_s": ideal,
        "overhead_s": t_batch - ideal, "first_task_s": max(tasks),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=20)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--processes", type=int, default=1)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "cases"
        make_cases(folder, args.cases)
        for w in [int(x) for x in args.workers.split(",")]:
            r = run(folder, w, bool(args.processes))
            results.append(r)
            print(json.dumps(r))
    print()
    print("| workers | wall (s) | cluster start (s) | cases/min | cases/min without start | task mean (s): plan + write "
          "| sum of tasks / workers (s) | overhead (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['workers']} | {r['wall_s']:.1f} | {r['cluster_start_s']:.1f} | {r['cases_per_min']:.1f} | "
              f"{r['cases_per_min_excluding_start']:.1f} | {r['task_mean_s']:.2f}: {r['plan_mean_s']:.2f} + "
              f"{r['write_mean_s']:.2f} | {r['ideal_batch_s']:.1f} | {r['overhead_s']:.1f} |")
    if len(results) >= 2:
        print(f"\nratio {results[-1]['workers']} / {results[0]['workers']} workers: "
              f"{results[-1]['cases_per_min'] / results[0]['cases_per_min']:.2f}x "
              f"(without cluster start: {results[-1]['cases_per_min_excluding_start'] / results[0]['cases_per_min_excluding_start']:.2f}x)")
    try:
        load = os.getloadavg()[0]
    except OSError:  # pragma: no cover
        load = float("nan")
    print(f"load average at the end: {load:.1f} on {os.cpu_count()} CPUs")
    out = Path(args.json) if args.json else Path(".benchmarks/cohort") / (
        _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ") + ".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"results": results, "load": load}, indent=1))
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
