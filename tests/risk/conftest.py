"""Fixtures for the risk tests: cases built from the shared example files with targeted edits."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

DELETE = object()

# Each base: an example file plus edits that make it a neutral starting point for rule tests.
_BASES: dict[str, tuple[str, dict[str, Any]]] = {
    # lipiodol TACE with a normal biliary tree
    "tace": ("tace_after_whipple.json", {
        "patient.biliary": {"biliary_enteric_anastomosis": False, "sphincter_of_oddi_intact": True,
                            "biliary_stent": False},
    }),
    "whipple": ("tace_after_whipple.json", {}),
    "tae": ("tae_first_line.json", {}),
    "deb": ("deb_tace.json", {}),
    # resin TARE, partition model, every compartment input given
    "resin": ("tare_lobar_resin.json", {}),
    # the same case with glass microspheres
    "glass": ("tare_lobar_resin.json", {"procedure.device": "glass"}),
    # glass TARE from images (no volumes, no lung shunt in the case)
    "glass_images": ("tare_phantom_voxel.json", {}),
}


def set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set (or delete, with DELETE) ``data[a][b][c]`` for ``dotted = "a.b.c"``; list indices are integers."""
    keys = dotted.split(".")
    node: Any = data
    for k in keys[:-1]:
        node = node[int(k)] if isinstance(node, list) else node[k]
    last = keys[-1]
    if isinstance(node, list):
        node[int(last)] = value
    elif value is DELETE:
        node.pop(last, None)
    else:
        node[last] = value


@pytest.fixture(scope="session")
def example_dicts(shared_examples: Path) -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in shared_examples.glob("*.json")}


@pytest.fixture(scope="session")
def case_dict(example_dicts: dict[str, dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """``case_dict(base, {"dotted.path": value, ...})`` -> a deep-copied, edited case dict."""

    def make(base: str, edits: dict[str, Any] | None = None) -> dict[str, Any]:
        file, base_edits = _BASES[base]
        data = copy.deepcopy(example_dicts[file])
        for path, value in {**base_edits, **(edits or {})}.items():
            set_path(data, path, copy.deepcopy(value))
        return data

    return make


@pytest.fixture(scope="session")
def make_case(case_dict: Callable[..., dict[str, Any]]) -> Callable[..., Any]:
    """``make_case(base, {"dotted.path": value, ...})`` -> a loaded Case."""
    from embplan.case import load_case

    def make(base: str, edits: dict[str, Any] | None = None) -> Any:
        return load_case(case_dict(base, edits))

    return make
