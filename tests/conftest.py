"""Shared test fixtures: the ../shared folder (examples and reference tables) and the hypothesis profile."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# numba compiles on first call: no per-example deadline anywhere; CI uses fewer examples per test.
settings.register_profile("ci", deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None, max_examples=30, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EMBPLAN_SHARED", REPO_ROOT.parent / "shared"))
REQUIRE_SHARED = os.environ.get("EMBPLAN_REQUIRE_SHARED", "") not in ("", "0")


def _shared_path(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        reason = f"{path} not found: the shared reference folder is not beside the project"
        if REQUIRE_SHARED:
            pytest.fail(reason + " (EMBPLAN_REQUIRE_SHARED=1 makes this a failure)")
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def shared_examples() -> Path:
    """../shared/examples (case files as users write them)."""
    return _shared_path("examples")


@pytest.fixture(scope="session")
def shared_reference() -> Path:
    """../shared/reference (published Y-90 tables)."""
    return _shared_path("reference")
