"""Property tests: mutate the example cases at random and check that load_case names the mutated field.

Mutations: a numeric leaf replaced by NaN, infinity, a negative or huge number or a value of another type; a
boolean, string or date leaf replaced by a value of another type or a misspelling; a misspelt key inserted at a
random level; a key deleted (required keys: a CaseError naming it; optional keys, per the case spec: still
loads). The number of examples comes from the hypothesis profile (tests/conftest.py).
"""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from embplan.case import load_case
from embplan.errors import CaseError

Path_ = tuple[str | int, ...]

# Keys the case spec makes optional (deleting them leaves a valid case); "*" stands for a list index.
OPTIONAL_KEYS = {
    "patient.liver.future_liver_remnant_percent",
    "patient.prior_treatments",
    "patient.prior_treatments.*.territory",
    "patient.prior_treatments.*.response",
    "patient.prior_treatments.*.note",
    "patient.prior_treatments.*.doxorubicin_mg",
    "procedure.prescription.normal_liver_dose_limit_gy",
    "dosimetry.images.phantom.seed",
    "dosimetry.images.phantom.voxel_mm",
}
# Optional in one example only: with images, the lung mass is not required (the images give the lung).
OPTIONAL_IN = {("tare_phantom_voxel.json", "dosimetry.lung_mass_kg")}
# Deleting these moves the error to the fields they stood for: without images, the mird method needs the
# compartment inputs (dosimetry.lung_shunt_fraction, ...).
REDIRECTED = {("tare_phantom_voxel.json", "dosimetry.images"): "dosimetry."}
FREE_TEXT_KEYS = {"id", "note", "name"}
ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


@pytest.fixture(scope="module")
def examples(shared_examples: Path) -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(shared_examples.glob("*.json"))}


def _walk(node: Any, path: Path_ = ()) -> list[tuple[Path_, Any]]:
    out = [(path, node)]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _walk(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _walk(v, (*path, i))
    return out


def _dotted(path: Path_) -> str:
    return ".".join(str(p) for p in path)


def _pattern(path: Path_) -> str:
    return ".".join("*" if isinstance(p, int) else str(p) for p in path)


def _replace(data: dict[str, Any], path: Path_, value: Any) -> None:
    node: Any = data
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value


def _message(data: dict[str, Any]) -> str:
    with pytest.raises(CaseError) as info:
        load_case(data)
    return str(info.value)


def _numeric_replacements(value: float) -> st.SearchStrategy[Any]:
    return st.sampled_from([
        math.nan, math.inf, -math.inf,
        -(abs(value) + 1),  # negative: every number in a case has a lower bound >= 0
        1e12,  # huge: every number has an upper bound below this
        str(value), [value], {"value": value}, True,  # wrong types
    ])


@given(data=st.data())
def test_numeric_leaf_replaced(examples: dict[str, dict[str, Any]], data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(examples)), label="example")
    case = copy.deepcopy(examples[name])
    leaves = [(p, v) for p, v in _walk(case) if p and type(v) in (int, float)]
    path, value = data.draw(st.sampled_from(leaves), label="leaf")
    _replace(case, path, data.draw(_numeric_replacements(value), label="replacement"))
    assert f"{_dotted(path)}:" in _message(case)


@given(data=st.data())
def test_null_leaf_replaced(examples: dict[str, dict[str, Any]], data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(examples)), label="example")
    case = copy.deepcopy(examples[name])
    leaves = [p for p, v in _walk(case) if p and v is None]
    if not leaves:
        return
    path = data.draw(st.sampled_from(leaves), label="leaf")
    _replace(case, path, data.draw(st.sampled_from([-1.0, math.nan, "30", [30], 1e12]), label="replacement"))
    assert f"{_dotted(path)}:" in _message(case)


@given(data=st.data())
def test_bool_leaf_replaced(examples: dict[str, dict[str, Any]], data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(examples)), label="example")
    case = copy.deepcopy(examples[name])
    leaves = [(p, v) for p, v in _walk(case) if p and isinstance(v, bool)]
    path, value = data.draw(st.sampled_from(leaves), label="leaf")
    _replace(case, path, data.draw(st.sampled_from([int(value), str(value).lower(), None, [value]]),
                                   label="replacement"))
    assert f"{_dotted(path)}:" in _message(case)


@given(data=st.data())
def test_string_leaf_replaced(examples: dict[str, dict[str, Any]], data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(examples)), label="example")
    case = copy.deepcopy(examples[name])
    leaves = [(p, v) for p, v in _walk(case) if p and isinstance(v, str)]
    path, value = data.draw(st.sampled_from(leaves), label="leaf")
    choices: list[Any] = [123, [value], {"value": value}]
    if path[-1] not in FREE_TEXT_KEYS:  # an enumeration or a date: a misspelling is invalid
        choices += [value + "x", value.upper() + "_", " " + value]
    if ISO_DATE.fullmatch(value):
        y, m, d = value.split("-")
        choices += [f"{d}/{m}/{y}", f"{y}-13-{d}", f"{y}-{m}-32", int(y + m + d)]
    _replace(case, path, data.draw(st.sampled_from(choices), label="replacement"))
    assert f"{_dotted(path)}:" in _message(case)


@given(data=st.data())
def test_misspelt_key_inserted(examples: dict[str, dict[str, Any]], data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(examples)), label="example")
    case = copy.deepcopy(examples[name])
    objects = [(p, v) for p, v in _walk(case) if isinstance(v, dict) and v]
    path, obj = data.draw(st.sampled_from(objects), label="object")
    base = data.draw(st.sampled_from(sorted(obj)), label="key")
    key = base + data.draw(st.text(alphabet="xqz", min_size=1, max_size=3), label="suffix")
    obj[key] = copy.deepcopy(obj[base])
    message = _message(case)
    assert f"{_dotted((*path, key))}: unknown field" in message


@given(data=st.data())
def test_key_deleted(examples: dict[str, dict[str, Any]], data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(examples)), label="example")
    case = copy.deepcopy(examples[name])
    keys = [p for p, _ in _walk(case) if p and isinstance(p[-1], str)]
    path = data.draw(st.sampled_from(keys), label="key")
    node: Any = case
    for p in path[:-1]:
        node = node[p]
    del node[path[-1]]
    dotted = _dotted(path)
    if _pattern(path) in OPTIONAL_KEYS or (name, dotted) in OPTIONAL_IN:
        load_case(case)  # an optional key: still a valid case
    elif (name, dotted) in REDIRECTED:
        assert REDIRECTED[(name, dotted)] in _message(case)
    else:
        assert f"{dotted}:" in _message(case)
