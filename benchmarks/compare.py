"""The ratio table of the performance issue: ``python -m benchmarks.compare``.

For each grid, on the same seeded inputs and in one process: the median time of
``scipy.signal.fftconvolve(tia, kernel, mode="same")`` on the full volume (the baseline), the median time of
``embplan.dosimetry.convolve.convolve(tia, kernel)`` with all threads and with one, their ratio, the accuracy
against the baseline, and (in a fresh subprocess per grid) the peak memory of one embplan call. Timings of the
three are interleaved round by round, in a seeded random order per round, so that a change in machine load hits
them alike and none of them always runs right after the same other one (a fixed order always hands one of them
the caches that the call before left). The dose-map table times
``absorbed_dose_gy`` with ``vsv`` and ``vsv_density``.

The table is printed and saved as JSON (default ``.benchmarks/compare/<UTC time>_<commit>.json``) so that runs
can be compared across commits. Options: ``--grids spect,pet,ct``, ``--repeat N``, ``--smoke`` (small stand-in
grids), ``--no-memory``, ``--no-dose``, ``--json PATH``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numba
import numpy as np
import scipy
import scipy.signal

from benchmarks.cases import GRIDS, make_case
from embplan.dosimetry.convolve import clear_kernel_cache, convolve, plan_convolution

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------ machine


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        mem_gib = float("nan")
    try:
        load = os.getloadavg()
    except OSError:
        load = (float("nan"),) * 3
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": round(mem_gib, 1),
        "load_average_at_start": [round(v, 2) for v in load],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "numba": numba.__version__,
        "numba_threads": numba.config.NUMBA_NUM_THREADS,
        "numba_threading_layer": numba.config.THREADING_LAYER,
    }


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                             timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True,
                               timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if out.returncode != 0:
        return "unknown"
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


# ------------------------------------------------------------------------------------------------ timing


def _time(fn, *args, **kwargs) -> tuple[float, Any]:
    gc.collect()
    t0 = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - t0, result


def _stats(samples: list[float]) -> dict[str, float]:
    a = np.asarray(samples)
    return {"median_s": float(np.median(a)), "min_s": float(a.min()), "max_s": float(a.max()),
            "samples_s": [float(v) for v in a]}


#: Seed of the per-round order of the timed calls (see ``_round_orders``).
ORDER_SEED = 20240601


def _round_orders(n_calls: int, repeat: int, seed: int = ORDER_SEED) -> list[list[int]]:
    """The order of the timed calls in each round: a seeded random permutation per round, so that no call always
    runs right after the same other one. A fixed order is biased: the call after the scipy baseline always finds
    the caches flushed by it, and the baseline always finds the input cached by the call before it."""
    rng = np.random.default_rng(seed)
    return [[int(i) for i in rng.permutation(n_calls)] for _ in range(repeat)]


def measure_convolution(name: str, smoke: bool, repeat: int) -> dict[str, Any]:
    case = make_case(name, smoke)
    all_threads = numba.config.NUMBA_NUM_THREADS
    plan = plan_convolution(case.tia, case.kernel)
    clear_kernel_cache()
    numba.set_num_threads(all_threads)
    cold, _ = _time(convolve, case.tia, case.kernel)  # numba compiled already (cache) or now; spectrum built
    cold2, _ = _time(convolve, case.tia, case.kernel)
    base, emb, one = [], [], []
    ref = result = None
    orders = _round_orders(3, repeat)
    for order in orders:
        for call in order:
            if call == 0:
                t, ref = _time(scipy.signal.fftconvolve, case.tia, case.kernel, mode="same")
                base.append(t)
            elif call == 1:
                numba.set_num_threads(all_threads)
                t, result = _time(convolve, case.tia, case.kernel)
                emb.append(t)
            else:
                numba.set_num_threads(1)
                t, _ = _time(convolve, case.tia, case.kernel)
                one.append(t)
                numba.set_num_threads(all_threads)
    err = float(np.abs(result.astype(np.float64) - ref).max() / np.abs(ref).max())
    b, e, o = _stats(base), _stats(emb), _stats(one)
    return {
        "grid": name,
        "label": case.spec.label if not smoke else f"{name} stand-in {'x'.join(map(str, case.shape))}",
        "shape": list(case.shape),
        "voxel_mm": case.spec.voxel_mm,
        "kernel_shape": list(case.kernel.shape),
        "kernel_taps": int(np.count_nonzero(case.kernel)),
        "activity_fraction": float(np.count_nonzero(case.tia) / case.tia.size),
        "input_bytes": int(case.tia.nbytes),
        "path": plan.method,
        "fft_shape": list(plan.fft_shape) if plan.fft_shape else None,
        "output_box": [list(b_) for b_ in plan.output_box] if plan.output_box else None,
        "scipy": b,
        "embplan": e,
        "embplan_1_thread": o,
        "embplan_first_call_s": cold,
        "embplan_second_call_s": cold2,
        "ratio_median": b["median_s"] / e["median_s"],
        "ratio_spread": [b["min_s"] / e["max_s"], b["max_s"] / e["min_s"]],
        "target_ratio": case.spec.target_ratio,
        "threads": all_threads,
        "thread_speedup": o["median_s"] / e["median_s"],
        "max_error_fraction_of_max": err,
        "round_orders": [[("scipy", "embplan", "embplan_1_thread")[i] for i in o] for o in orders],
    }


def measure_dose(name: str, smoke: bool, repeat: int) -> dict[str, Any] | None:
    try:
        from embplan.dosimetry.dose import absorbed_dose_gy
        from embplan.grid import Grid
    except ImportError:
        return None
    case = make_case(name, smoke)
    v = case.spec.voxel_mm
    grid = Grid(shape=case.shape, spacing_mm=(v, v, v))
    density = np.full(case.shape, 1.06, dtype=np.float32)
    density[:, : case.shape[1] // 5] = 0.30
    absorbed_dose_gy(case.tia, grid, "vsv")
    absorbed_dose_gy(case.tia, grid, "vsv_density", density)
    vsv, vsvd = [], []
    for order in _round_orders(2, repeat, ORDER_SEED + 1):
        for call in order:
            if call == 0:
                vsv.append(_time(absorbed_dose_gy, case.tia, grid, "vsv")[0])
            else:
                vsvd.append(_time(absorbed_dose_gy, case.tia, grid, "vsv_density", density)[0])
    a, b = _stats(vsv), _stats(vsvd)
    label = case.spec.label if not smoke else f"{name} stand-in {'x'.join(map(str, case.shape))}"
    return {"grid": name, "label": label, "vsv": a, "vsv_density": b, "ratio_median": b["median_s"] / a["median_s"]}


# ------------------------------------------------------------------------------------------------ memory


def _rss_bytes(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def memory_child(name: str, smoke: bool, baseline: bool) -> dict[str, Any]:
    """Run in a fresh process: peak memory of one cold embplan call (kernel spectrum built inside it)."""
    case = make_case(name, smoke)
    tiny = np.zeros((8, 8, 8), dtype=np.float32)
    tiny[4, 4, 4] = 1.0
    for m in ("direct", "fft"):  # compile / load the numba functions first; their memory is not the call's
        convolve(tiny, case.kernel[:3, :3, :3], method=m)
    clear_kernel_cache()
    gc.collect()

    def peak_of(fn) -> dict[str, Any]:
        gc.collect()
        rss0 = _rss_bytes("VmRSS")
        reset = _reset_peak_rss()
        tracemalloc.start()
        out = fn()
        traced = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        hwm = _rss_bytes("VmHWM") if reset else None
        del out
        return {"tracemalloc_peak_bytes": int(traced),
                "rss_peak_above_start_bytes": None if hwm is None or rss0 is None else int(hwm - rss0)}

    res = {"grid": name, "input_bytes": int(case.tia.nbytes), "embplan": peak_of(lambda: convolve(case.tia,
                                                                                               case.kernel))}
    if baseline:
        res["scipy"] = peak_of(lambda: scipy.signal.fftconvolve(case.tia, case.kernel, mode="same"))
    return res


def measure_memory(name: str, smoke: bool, baseline: bool) -> dict[str, Any] | None:
    cmd = [sys.executable, "-m", "benchmarks.compare", "--memory-child", name]
    if smoke:
        cmd.append("--smoke")
    if baseline:
        cmd.append("--baseline-memory")
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        print(f"memory measurement of {name} failed:\n{proc.stderr}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------ report


def _peak_fraction(mem: dict[str, Any] | None, who: str = "embplan") -> float | None:
    if not mem or who not in mem:
        return None
    m = mem[who]
    peak = max(v for v in (m["tracemalloc_peak_bytes"], m["rss_peak_above_start_bytes"]) if v is not None)
    return peak / mem["input_bytes"]


def format_table(results: list[dict[str, Any]], doses: list[dict[str, Any]]) -> str:
    lines = [
        "| grid | kernel (taps) | path | scipy median (s) | embplan median (s) | ratio (spread) | target |"
        " 1 thread (s) | speed-up 1->{t} | peak mem / input | max error / max |".format(
            t=results[0]["threads"] if results else "N"),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        peak = _peak_fraction(r.get("memory"))
        lines.append(
            f"| {r['label']} | {'x'.join(map(str, r['kernel_shape']))} ({r['kernel_taps']}) | {r['path']} "
            f"| {r['scipy']['median_s']:.4f} | {r['embplan']['median_s']:.4f} "
            f"| {r['ratio_median']:.1f}x ({r['ratio_spread'][0]:.1f}-{r['ratio_spread'][1]:.1f}) "
            f"| >= {r['target_ratio']:g}x | {r['embplan_1_thread']['median_s']:.4f} | {r['thread_speedup']:.2f}x "
            f"| {'-' if peak is None else f'{peak:.2f}x'} | {r['max_error_fraction_of_max']:.1e} |"
        )
    if doses:
        lines += ["", "| grid | vsv median (s) | vsv_density median (s) | vsv_density / vsv |", "|---|---|---|---|"]
        for d in doses:
            lines.append(f"| {d['label']} | {d['vsv']['median_s']:.4f} "
                         f"| {d['vsv_density']['median_s']:.4f} | {d['ratio_median']:.2f}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__.splitlines()[0])
    ap.add_argument("--grids", default="spect,pet,ct", help="comma-separated subset of " + ",".join(GRIDS))
    ap.add_argument("--repeat", type=int, default=7, help="timed rounds per grid (medians are reported)")
    ap.add_argument("--smoke", action="store_true", help="small stand-in grids (quick check of the command)")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    ap.add_argument("--baseline-memory", action="store_true", help="also measure scipy's peak memory")
    ap.add_argument("--no-dose", action="store_true", help="skip the dose-map table")
    ap.add_argument("--json", type=Path, default=None, help="where to save the results (JSON)")
    ap.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child, args.smoke, args.baseline_memory)))
        return 0

    grids = [g.strip() for g in args.grids.split(",") if g.strip()]
    unknown = [g for g in grids if g not in GRIDS]
    if unknown:
        ap.error(f"unknown grid(s) {unknown}; choose from {list(GRIDS)}")
    if args.repeat < 1:
        ap.error("--repeat must be >= 1")

    info = machine_info()
    commit = git_commit()
    results, doses = [], []
    for g in grids:
        print(f"[{g}] timing ...", file=sys.stderr, flush=True)
        r = measure_convolution(g, args.smoke, args.repeat)
        if not args.no_memory:
            print(f"[{g}] peak memory (subprocess) ...", file=sys.stderr, flush=True)
            r["memory"] = measure_memory(g, args.smoke, args.baseline_memory)
        results.append(r)
        if not args.no_dose:
            d = measure_dose(g, args.smoke, args.repeat)
            if d is not None:
                doses.append(d)
    table = format_table(results, doses)
    print(table)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = args.json or REPO / ".benchmarks" / "compare" / f"{stamp}_{commit}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"created_utc": stamp, "commit": commit, "machine": info, "smoke": args.smoke,
               "repeat": args.repeat, "convolution": results, "dose": doses, "table": table}
    path.write_text(json.dumps(payload, indent=1))
    print(f"\nsaved {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
