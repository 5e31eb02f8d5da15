"""Fuzz suite for plan files: seeded byte-level and structural (h5py) mutations of a saved plan.

Each mutated file must either be refused with a PlanFileError or load as exactly the saved plan (arrays bitwise):
an edit of any part a reader uses (the plan, a view, a units attribute) is never accepted as a changed plan, and
nothing the file merely declares is allocated (tracemalloc peak; a subprocess with an address-space limit for the
bombs). Seeded and hypothesis-driven. CI runs a few dozen files; EMBPLAN_FUZZ_N=1000 runs a campaign
(docs/robustness.md).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embplan.errors import PlanFileError
from embplan.io.hdf5 import load_plan, save_plan, seal_file
from tests.plan_factory import build_plan

from .mutate import mutate_plan_bytes, mutate_plan_h5

N = int(os.environ.get("EMBPLAN_FUZZ_N", "40"))
#: Peak Python memory of loading the small fixture plan (a few MB of arrays) or refusing a mutant of it.
MEMORY_LIMIT = 64 * 1024**2


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, bytes]:
    plan = build_plan()
    path = tmp_path_factory.mktemp("plan") / "plan.h5"
    save_plan(plan, path)
    return plan, path.read_bytes()


def _same(a: object, b: object) -> bool:
    if a != b:
        return False
    va, vb = a.voxel, b.voxel  # type: ignore[attr-defined]
    if va is None or vb is None:
        return va is vb
    return all(np.asarray(va.arrays[k]).tobytes() == np.asarray(vb.arrays[k]).tobytes() for k in va.arrays)


def _load_checked(path: Path, plan: object, label: str) -> str:
    tracemalloc.start()
    try:
        got = load_plan(path)
    except PlanFileError:
        return "refused"
    except BaseException as exc:  # noqa: BLE001 - the point of the test
        pytest.fail(f"{label}: {type(exc).__name__}: {exc}")
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < MEMORY_LIMIT, f"{label}: peaked at {peak / 1e6:.0f} MB"
    assert _same(got, plan), f"{label}: accepted as a changed plan"
    return "same"


def test_byte_mutations(tmp_path: Path, saved: tuple[object, bytes]) -> None:
    plan, raw = saved
    outcomes = []
    for seed in range(N):
        data, label = mutate_plan_bytes(raw, random.Random(seed))
        path = tmp_path / "m.h5"
        path.write_bytes(data)
        outcomes.append(_load_checked(path, plan, f"seed {seed} ({label})"))
    assert outcomes.count("refused") >= N * 0.9  # almost every byte of a plan file is checked


def test_structural_mutations(tmp_path: Path, saved: tuple[object, bytes]) -> None:
    plan, raw = saved
    for seed in range(N):
        path = tmp_path / "m.h5"
        path.write_bytes(raw)
        label = mutate_plan_h5(path, random.Random(seed))
        if label == "noop":
            continue
        assert _load_checked(path, plan, f"seed {seed} ({label})") == "refused", f"seed {seed} ({label}) accepted"


# ---- the reproducers of issue 12, each re-sealed so that the structural checks (not the checksum) must catch them
def _edited(raw: bytes, tmp_path: Path, edit: str, seed: int = 0) -> Path:
    path = tmp_path / f"{edit}.h5"
    path.write_bytes(raw)
    rng = random.Random(seed)
    while True:  # draw until the mutator picks the wanted edit
        path.write_bytes(raw)
        label = mutate_plan_h5(path, rng)
        if label.startswith(edit):
            break
    seal_file(path)
    return path


@pytest.mark.parametrize("edit, reason", [
    ("huge", "declares|not the grid's"),
    ("gzip bomb", "not the grid's|declares"),
    ("external link", "external link"),
    ("soft link", "soft link"),
    ("external storage", "external files"),
    ("virtual", "virtual dataset"),
    ("grid shape", "voxels, more than|not the grid's"),
])
def test_declared_but_not_allocated(tmp_path: Path, saved: tuple[object, bytes], edit: str, reason: str) -> None:
    _, raw = saved
    path = _edited(raw, tmp_path, edit)
    tracemalloc.start()
    with pytest.raises(PlanFileError, match=reason):
        load_plan(path)
    assert tracemalloc.get_traced_memory()[1] < MEMORY_LIMIT
    tracemalloc.stop()


def test_gzip_bomb_under_an_address_space_limit(tmp_path: Path, saved: tuple[object, bytes]) -> None:
    """A 1 MB file whose chunks inflate to 1 GiB, loaded with 1.5 GiB of address space: a PlanFileError, not a
    MemoryError (libhdf5's own allocations included, which tracemalloc does not see)."""
    _, raw = saved
    path = _edited(raw, tmp_path, "gzip bomb")
    assert path.stat().st_size < 4 * 1024**2
    code = textwrap.dedent(f"""
        import resource, sys
        import embplan.io.hdf5 as h
        resource.setrlimit(resource.RLIMIT_AS, (1536 * 1024**2, 1536 * 1024**2))
        try:
            h.load_plan({str(path)!r})
        except h.PlanFileError as exc:
            print("refused:", exc); sys.exit(0)
        sys.exit(3)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_view_edit_is_refused(tmp_path: Path, saved: tuple[object, bytes]) -> None:
    """An edit with plain h5py of a view, a units attribute or a group (what docs/plan-format.md points readers
    at) is never loaded as the unchanged plan."""
    _, raw = saved
    path = tmp_path / "v.h5"
    edits = {
        "dosimetry/activity_gbq": lambda f: f["dosimetry/activity_gbq"].write_direct(np.array(9.9)),
        "units": lambda f: f["dose/vsv_density"].attrs.__setitem__("units", "cGy"),
        "flag": lambda f: f["flags/0000"].attrs.__setitem__("severity", "info"),
        "threshold": lambda f: f[f"thresholds/{next(iter(f['thresholds']))}"].write_direct(np.array(1.0)),
        "grid": lambda f: f["grid/spacing_mm"].write_direct(np.array([1.0, 1.0, 1.0])),
        "case": lambda f: f["case"].attrs.__setitem__("x", 1),
        "provenance": lambda f: f["provenance"].attrs.__setitem__("embplan_version", "9"),
        "dvh": lambda f: f["dvh"].attrs.__setitem__("x", 1),
    }
    for name, edit in edits.items():
        path.write_bytes(raw)
        with h5py.File(path, "r+") as f:
            edit(f)
        with pytest.raises(PlanFileError, match="checksum mismatch"):
            load_plan(path)
        assert name


@settings(max_examples=int(os.environ.get("EMBPLAN_FUZZ_N", "30")))
@given(where=st.floats(0, 1, exclude_max=True), xor=st.integers(1, 255), cut=st.booleans())
def test_hypothesis_byte_edits(tmp_path_factory: pytest.TempPathFactory, saved: tuple[object, bytes],
                               where: float, xor: int, cut: bool) -> None:
    plan, raw = saved
    i = int(where * len(raw))
    data = raw[:i] if cut else raw[:i] + bytes([raw[i] ^ xor]) + raw[i + 1:]
    path = tmp_path_factory.mktemp("h") / "m.h5"
    path.write_bytes(data)
    outcome = _load_checked(path, plan, f"byte {i} {'cut' if cut else f'^{xor}'}")
    assert outcome == "refused" or (not cut and i < 512)  # only the user block's padding is not read
