"""Seeded mutators of case files (JSON) and plan files (HDF5), shared by the fuzz suites and the campaign script.

Every mutator takes a ``random.Random`` and returns the mutated object plus a short label (what was done), so that
a failing seed can be replayed and read. Nothing here asserts anything: the suites do.
"""

from __future__ import annotations

import copy
import json
import random
from typing import Any

Path_ = tuple[str | int, ...]

#: Values a leaf may be replaced with: wrong units, denormals, zero, huge, wrong types, control characters.
VALUE_POOL: list[Any] = [
    0, 0.0, -0.0, -1, 1, 5e-324, 1e-320, 1e-9, 1e-3, 1.65, 1e308, -1e308, 2**63, 10**30, 1e6, 1650000.0,
    True, False, None, "", " ", "x", "1650", "\x1b[2J\x1b[31mforged", "a\nembplan: error: forged", "a\rb",
    "nul\x00x", "\u202eevil", "\u0085next", "\ud7ff", "x" * 5000, [], {}, [1], {"a": 1}, [[[]]],
    "2026-02-30", "0001-01-01", "9999-12-31",
]


def walk(node: Any, path: Path_ = ()) -> list[tuple[Path_, Any]]:
    """Every node of a JSON tree with its path (the root first)."""
    out = [(path, node)]
    if isinstance(node, dict):
        for k, v in node.items():
            out += walk(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += walk(v, (*path, i))
    return out


def dotted(path: Path_) -> str:
    return ".".join(str(p) for p in path)


def _parent(data: Any, path: Path_) -> Any:
    node = data
    for p in path[:-1]:
        node = node[p]
    return node


def mutate_case_tree(data: dict[str, Any], rng: random.Random) -> tuple[dict[str, Any], str]:
    """One structural mutation of a case dict (a deep copy): replace a leaf, scale a number (unit slips: x1000,
    /1000), delete a key, add a key, duplicate a list item, or wrap a value."""
    data = copy.deepcopy(data)
    nodes = [(p, v) for p, v in walk(data) if p]
    path, value = rng.choice(nodes)
    parent = _parent(data, path)
    op = rng.choice(["replace", "replace", "scale", "delete", "add", "dup", "wrap"])
    if op == "scale" and type(value) in (int, float):
        factor = rng.choice([1e-3, 1e3, 1e-6, 1e6, 0.0, -1.0, 10.0, 0.1, 1.000001])
        parent[path[-1]] = value * factor
        return data, f"scale {dotted(path)} x{factor:g}"
    if op == "delete" and isinstance(parent, dict):
        del parent[path[-1]]
        return data, f"delete {dotted(path)}"
    if op == "add" and isinstance(value, dict):
        key = rng.choice(["extra", "id", "\x1b", "", "note", "units"])
        value[key] = rng.choice(VALUE_POOL)
        return data, f"add {dotted((*path, key))}"
    if op == "dup" and isinstance(value, list) and value:
        value.append(copy.deepcopy(rng.choice(value)))
        return data, f"dup {dotted(path)}"
    if op == "wrap":
        parent[path[-1]] = rng.choice([[value], {"value": value}, str(value)])
        return data, f"wrap {dotted(path)}"
    new = rng.choice(VALUE_POOL)
    parent[path[-1]] = copy.deepcopy(new)
    return data, f"replace {dotted(path)} = {json.dumps(new)[:40]}"


def mutate_case_text(text: str, rng: random.Random) -> tuple[str, str]:
    """One textual mutation of a case file: a huge integer, deep nesting, a NaN literal, a cut, a flipped or
    inserted byte, a duplicate key, a BOM, a control character."""
    op = rng.choice(["bigint", "deep", "nan", "cut", "flip", "insert", "dupkey", "bom", "ctrl", "bigfloat"])
    # positions of numbers and of values in the text
    if op == "bigint":
        digits = rng.choice([5000, 20000, 100000])
        return _replace_number(text, rng, "9" * digits), f"bigint {digits} digits"
    if op == "bigfloat":
        return _replace_number(text, rng, "1" + "0" * 400 + ".5e-10"), "bigfloat"
    if op == "deep":
        depth = rng.choice([500, 1000, 5000, 100000])
        return _replace_number(text, rng, "[" * depth + "1" + "]" * depth), f"deep {depth}"
    if op == "nan":
        return _replace_number(text, rng, rng.choice(["NaN", "Infinity", "-Infinity", "1e999"])), "nan"
    if op == "cut":
        n = rng.randrange(len(text))
        return text[:n], f"cut at {n}"
    if op == "flip":
        i = rng.randrange(len(text))
        return text[:i] + chr(rng.randrange(0x20, 0x7F)) + text[i + 1:], f"flip {i}"
    if op == "insert":
        i = rng.randrange(len(text))
        return text[:i] + rng.choice(["{", "}", "[", "]", ",", ":", '"', "\\", "\x00", "\ufeff"]) + text[i:], f"insert {i}"
    if op == "dupkey":
        i = text.find('"id"')
        return (text[:i] + '"id": "dup", ' + text[i:], "dupkey") if i >= 0 else (text, "noop")
    if op == "bom":
        return "\ufeff" + text, "bom"
    i = text.find('"id": "')
    ch = rng.choice(["\\u001b[2J", "\\n", "\\r", "\\u0000", "\\u202e", "\\u0085", "\\t", "\\u2028"])
    return (text[: i + 7] + ch + text[i + 7:], f"ctrl {ch}") if i >= 0 else (text, "noop")


def _replace_number(text: str, rng: random.Random, new: str) -> str:
    import re

    spans = [m.span() for m in re.finditer(r"(?<=: )-?\d+(\.\d+)?([eE][-+]?\d+)?", text)]
    if not spans:
        return text
    a, b = rng.choice(spans)
    return text[:a] + new + text[b:]
