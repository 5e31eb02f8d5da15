"""A fuzz campaign with counts (the numbers in docs/robustness.md):

    python -m tests.fuzz.campaign --cases 3000 --plans 1000

Case files: seeded mutations of ../shared/examples through load_case and plan, in this process; counted as
refused (an EmbplanError), planned, raw (any other exception), silent (a mutation of a field that is no dose input
changed a dose). Plan files: seeded byte and structural mutations of a saved plan, each loaded in a forked child
(so that a crash or a hang of libhdf5 is counted, not fatal), with a time limit; counted as refused, identical
(loaded equal to the saved plan), changed (loaded but different: a silent change), raw, crash, hang. Peak memory
is tracemalloc's (Python and numpy allocations).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import signal
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from .mutate import mutate_case_text, mutate_case_tree, mutate_plan_bytes, mutate_plan_h5

DOSE_INPUTS = ("dosimetry", "procedure", "thresholds", "patient.weight_kg", "patient.height_cm",
               "patient.prior_treatments")


def _doses(plan: object) -> object:
    d = plan.dosimetry  # type: ignore[attr-defined]
    return None if d is None else (d.activity_gbq, d.tumor_dose_gy, d.normal_liver_dose_gy, d.lung_dose_gy)


def cases(n: int, examples: Path, seed0: int = 0) -> dict[str, object]:
    import embplan
    from embplan.errors import EmbplanError

    texts = {p.name: p.read_text(encoding="utf-8") for p in sorted(examples.glob("*.json"))}
    base = {name: embplan.plan(embplan.load_case(examples / name)) for name in texts}
    counts: collections.Counter[str] = collections.Counter()
    samples: dict[str, str] = {}
    peak = 0
    tmp = Path(tempfile.mkdtemp(prefix="embplan-fuzz-")) / "case.json"
    start = time.monotonic()
    for seed in range(seed0, seed0 + n):
        rng = random.Random(seed)
        name = rng.choice(sorted(texts))
        if rng.random() < 0.7:
            data, label = mutate_case_tree(json.loads(texts[name]), rng)
            text = json.dumps(data, indent=2, ensure_ascii=rng.random() < 0.5)
        else:
            text, label = mutate_case_text(texts[name], rng)
        tmp.write_text(text, encoding="utf-8", errors="surrogatepass")
        tracemalloc.start()
        try:
            case = embplan.load_case(tmp)
            case._base_dir = str(examples)
            plan = embplan.plan(case)
            words = label.split(" ")
            touched = words[1] if words[0] in ("replace", "scale", "delete", "wrap", "add", "dup") else ""
            if touched and not touched.startswith(DOSE_INPUTS) and _doses(plan) != _doses(base[name]):
                kind = "silent"
            else:
                kind = "planned"
        except EmbplanError:
            kind = "refused"
        except BaseException as exc:  # noqa: BLE001
            kind = "raw"
            samples.setdefault(f"{type(exc).__name__}", f"seed {seed} {name}: {label}: {exc}"[:300])
        peak = max(peak, tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        counts[kind] += 1
        if kind == "silent":
            samples.setdefault("silent", f"seed {seed} {name}: {label}")
    return {"n": n, "counts": dict(counts), "samples": samples, "peak_mb": round(peak / 1e6, 1),
            "seconds": round(time.monotonic() - start, 1)}


def plans(n: int, seed0: int = 0, limit_s: int = 60) -> dict[str, object]:
    import numpy as np

    from embplan.errors import PlanFileError
    from embplan.io.hdf5 import load_plan, save_plan
    from tests.plan_factory import build_plan

    folder = Path(tempfile.mkdtemp(prefix="embplan-fuzz-"))
    plan = build_plan()
    base = folder / "base.h5"
    save_plan(plan, base)
    raw = base.read_bytes()
    codes = {0: "identical", 1: "refused", 2: "changed", 3: "raw", 4: "memory"}
    counts: collections.Counter[str] = collections.Counter()
    samples: dict[str, str] = {}
    identical: list[str] = []
    start = time.monotonic()
    for seed in range(seed0, seed0 + n):
        rng = random.Random(seed)
        path = folder / "m.h5"
        if rng.random() < 0.5:
            data, label = mutate_plan_bytes(raw, rng)
            path.write_bytes(data)
        else:
            path.write_bytes(raw)
            label = mutate_plan_h5(path, rng)
        pid = os.fork()
        if pid == 0:  # the child loads; its exit status says what happened
            signal.alarm(limit_s)
            code = 3
            try:
                tracemalloc.start()
                got = load_plan(path)
                same = got == plan and all(
                    np.asarray(got.voxel.arrays[k]).tobytes() == np.asarray(plan.voxel.arrays[k]).tobytes()
                    for k in plan.voxel.arrays)
                code = 0 if same else 2
            except PlanFileError:
                code = 1
            except MemoryError:
                code = 4
            except BaseException:  # noqa: BLE001
                code = 3
            if tracemalloc.get_traced_memory()[1] > 256 * 1024**2:
                code = 4
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):
            kind = "hang" if os.WTERMSIG(status) == signal.SIGALRM else f"crash (signal {os.WTERMSIG(status)})"
        else:
            kind = codes.get(os.WEXITSTATUS(status), "raw")
        counts[kind] += 1
        if kind == "identical":
            identical.append(f"{seed}: {label}")
        elif kind != "refused":
            samples.setdefault(kind, f"seed {seed}: {label}")
    return {"n": n, "counts": dict(counts), "samples": samples, "identical": identical,
            "seconds": round(time.monotonic() - start, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=300)
    ap.add_argument("--plans", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--examples", type=Path, default=Path(__file__).resolve().parents[2].parent / "shared" / "examples")
    args = ap.parse_args(argv)
    out = {}
    if args.cases:
        out["cases"] = cases(args.cases, args.examples, args.seed)
    if args.plans:
        out["plans"] = plans(args.plans, args.seed)
    print(json.dumps(out, indent=2))
    bad = sum(v for part in out.values() for k, v in part["counts"].items()  # type: ignore[union-attr]
              if k not in ("refused", "planned", "identical"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
