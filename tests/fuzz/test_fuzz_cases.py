"""Fuzz suite for case files: seeded mutations (tests/fuzz/mutate.py) and hypothesis, through load_case, the
planner and the command.

Each mutated case must either be refused with an EmbplanError or be planned; nothing else may escape. When a
mutation is accepted and touches no dose input, the plan's doses must equal the unmutated plan's (no silent dose
change). Memory stays bounded (tracemalloc peak). CI runs a few dozen cases (seconds); EMBPLAN_FUZZ_N=3000 runs a
campaign (see docs/robustness.md).
"""

from __future__ import annotations

import json
import os
import random
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

import embplan
from embplan.cli import app
from embplan.errors import EmbplanError

from .mutate import mutate_case_text, mutate_case_tree

N = int(os.environ.get("EMBPLAN_FUZZ_N", "60"))
#: Paths whose change may legitimately change a dose (the dose inputs); anything else must leave doses alone.
DOSE_INPUTS = ("dosimetry", "procedure", "thresholds", "patient.weight_kg", "patient.height_cm",
               "patient.prior_treatments")
#: Peak Python memory of loading and planning one compartment case (bytes); the phantom case plans in ~100 MB.
MEMORY_LIMIT = 512 * 1024**2


@pytest.fixture(scope="module")
def texts(shared_examples: Path) -> dict[str, str]:
    # the phantom case plans in ~0.4 s: kept, but the campaign is dominated by the compartment cases
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(shared_examples.glob("*.json"))}


@pytest.fixture(scope="module")
def baseline(texts: dict[str, str], shared_examples: Path) -> dict[str, Any]:
    return {name: embplan.plan(embplan.load_case(shared_examples / name)) for name in texts}


def _doses(plan: Any) -> Any:
    d = plan.dosimetry
    if d is None:
        return None
    return (d.activity_gbq, d.tumor_dose_gy, d.normal_liver_dose_gy, d.lung_dose_gy, d.perfused_dose_gy)


def _mutant(texts: dict[str, str], seed: int) -> tuple[str, str, str]:
    rng = random.Random(seed)
    name = rng.choice(sorted(texts))
    if rng.random() < 0.7:
        data, label = mutate_case_tree(json.loads(texts[name]), rng)
        return name, json.dumps(data, indent=2, ensure_ascii=rng.random() < 0.5), label
    text, label = mutate_case_text(texts[name], rng)
    return name, text, label


def _check_one(tmp_path: Path, shared_examples: Path, texts: dict[str, str], baseline: dict[str, Any],
               seed: int) -> str:
    name, text, label = _mutant(texts, seed)
    path = tmp_path / "case.json"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    tracemalloc.start()
    try:
        case = embplan.load_case(path)
        case._base_dir = str(shared_examples)  # the examples' relative paths
        plan = embplan.plan(case)
    except EmbplanError:
        return "refused"
    except BaseException as exc:  # noqa: BLE001 - the point of the test
        pytest.fail(f"seed {seed} ({name}: {label}) raised {type(exc).__name__}: {exc}")
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < MEMORY_LIMIT, f"seed {seed} ({name}: {label}) peaked at {peak / 1e6:.0f} MB"
    touched = label.split(" ", 2)[1] if label.split(" ")[0] in ("replace", "scale", "delete", "wrap", "add",
                                                                  "dup") else ""
    if touched and not touched.startswith(DOSE_INPUTS):
        assert _doses(plan) == _doses(baseline[name]), f"seed {seed} ({name}: {label}) changed a dose"
    return "planned"


def test_seeded_case_mutations(tmp_path: Path, shared_examples: Path, texts: dict[str, str],
                               baseline: dict[str, Any]) -> None:
    outcomes = [_check_one(tmp_path, shared_examples, texts, baseline, seed) for seed in range(N)]
    assert "refused" in outcomes  # the mutations do bite


def test_cli_never_prints_a_traceback(tmp_path: Path, texts: dict[str, str]) -> None:
    runner = CliRunner()
    for seed in range(max(8, N // 10)):
        _, text, label = _mutant(texts, 10_000 + seed)
        path = tmp_path / "case.json"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        for args in (["validate", str(path)], ["validate", str(path), "--json"]):
            result = runner.invoke(app, args)
            out = result.output + (result.stderr if result.stderr_bytes is not None else "")
            assert result.exit_code in (0, 1), (seed, label, out)
            assert "Traceback" not in out, (seed, label, out)
            assert result.exception is None or isinstance(result.exception, SystemExit), (seed, label)
            if "--json" in args and result.exit_code == 1:
                assert json.loads(result.stdout)["ok"] is False


@given(value=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(10**40), 10**40),
                       st.text(max_size=20), st.none(), st.booleans(), st.lists(st.integers(), max_size=3)),
       leaf=st.sampled_from(["patient.weight_kg", "patient.height_cm", "patient.id", "dosimetry.liver_volume_ml",
                             "dosimetry.lung_mass_kg", "dosimetry.perfused_tumor_volume_ml",
                             "dosimetry.tumor_to_normal_ratio", "dosimetry.lung_shunt_fraction"]))
def test_hypothesis_leaf_values(shared_examples: Path, value: Any, leaf: str) -> None:
    data = json.loads((shared_examples / "tare_lobar_resin.json").read_text())
    node = data
    *parents, last = leaf.split(".")
    for p in parents:
        node = node[p]
    node[last] = value
    try:
        case = embplan.load_case(data)
    except EmbplanError as exc:
        assert leaf.rsplit(".", 1)[-1] in str(exc)  # the error names the field (or, in a cross-field check, it)
        return
    plan = embplan.plan(case)  # accepted: it plans (or raises an EmbplanError, which fails this test)
    assert plan.dosimetry is not None and plan.dosimetry.activity_gbq > 0
