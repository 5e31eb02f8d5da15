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


# ---------------------------------------------------------------------------------------------------- plan files
def mutate_plan_bytes(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """One byte-level mutation of a plan file: flipped bits, a run of bytes overwritten, a cut, bytes inserted."""
    buf = bytearray(data)
    op = rng.choice(["flip", "flip", "run", "cut", "insert", "ffrun"])
    i = rng.randrange(len(buf))
    if op == "flip":
        n = rng.choice([1, 1, 2, 4, 8])
        for k in range(n):
            j = min(len(buf) - 1, i + k)
            buf[j] ^= 1 << rng.randrange(8)
        return bytes(buf), f"flip {n} at {i}"
    if op == "run":
        n = rng.choice([4, 16, 64, 512])
        buf[i:i + n] = bytes(rng.randrange(256) for _ in range(min(n, len(buf) - i)))
        return bytes(buf), f"random run {n} at {i}"
    if op == "ffrun":
        n = rng.choice([2, 4, 8])
        buf[i:i + n] = b"\xff" * min(n, len(buf) - i)
        return bytes(buf), f"0xff run {n} at {i}"
    if op == "cut":
        return bytes(buf[:i]), f"cut at {i}"
    return bytes(buf[:i] + bytes(rng.randrange(256) for _ in range(rng.choice([1, 8]))) + buf[i:]), f"insert at {i}"


def mutate_plan_h5(path: Any, rng: random.Random) -> str:
    """One structural edit of a plan file in place (h5py): a view's value or attribute, a units attribute, a
    dataset replaced by a huge declared one, an external or soft link, an external-storage or virtual dataset,
    the grid shape in the metadata, a group or attribute added or removed."""
    import h5py
    import numpy as np

    with h5py.File(path, "r+") as f:
        datasets: list[str] = []
        groups: list[str] = []
        f.visititems(lambda n, o: (datasets if isinstance(o, h5py.Dataset) else groups).append(n))
        op = rng.choice(["view_value", "attr", "attr", "units", "huge", "bomb", "extlink", "softlink", "external",
                         "virtual", "grid", "add_group", "del_attr", "del_obj"])
        if op == "view_value":
            name = rng.choice([d for d in datasets if d.split("/")[0] in ("dosimetry", "thresholds", "grid", "dvh")]
                              or datasets)
            d = f[name]
            if d.dtype.kind in "fiu" and d.size:
                data = d[()]
                arr = np.array(data, dtype=d.dtype, copy=True)
                arr.reshape(-1)[0] = arr.reshape(-1)[0] * 2 + 1
                d[...] = arr
                return f"view value {name}"
            return "noop"
        if op in ("attr", "units", "del_attr"):
            objs = [f[n] for n in datasets + groups] + [f]
            obj = rng.choice(objs)
            keys = list(obj.attrs)
            if op == "units":
                if "units" in obj.attrs:
                    obj.attrs["units"] = rng.choice(["mGy", "cGy", "Bq", "1", ""])
                    return f"units {obj.name}"
                return "noop"
            if not keys:
                return "noop"
            key = rng.choice(keys)
            if op == "del_attr":
                del obj.attrs[key]
                return f"del attr {obj.name}@{key}"
            value = obj.attrs[key]
            if isinstance(value, str):
                obj.attrs[key] = value + "x" if rng.random() < 0.5 else value[::-1]
            elif isinstance(value, (np.floating, float)):
                obj.attrs[key] = float(value) * 1.5 + 0.25
            elif isinstance(value, (np.integer, int)):
                obj.attrs[key] = int(value) + 1
            else:
                obj.attrs[key] = "edited"
            return f"attr {obj.name}@{key}"
        if op == "huge":  # a dataset declaring a 1024^3 float64 array (8 GiB), no data written
            target = rng.choice([d for d in datasets if d.startswith(("dose/", "images/", "masks/"))] or ["dose/x"])
            if target in f:
                del f[target]
            f.create_dataset(target, shape=(1024, 1024, 1024), dtype="<f8", chunks=(64, 64, 64),
                             compression="gzip", shuffle=True, fletcher32=True)
            return f"huge {target}"
        if op == "bomb":  # zeros at gzip's best ratio: ~1 MB of stored chunks that inflate to 1 GiB
            import zlib

            target = rng.choice([d for d in datasets if d.startswith("dose/")] or ["dose/x"])
            if target in f:
                del f[target]
            d = f.create_dataset(target, shape=(128, 1024, 1024), dtype="<f8", chunks=(1, 1024, 1024),
                                 compression="gzip")
            chunk = zlib.compress(bytes(8 * 1024 * 1024), 9)
            for z in range(128):
                d.id.write_direct_chunk((z, 0, 0), chunk)
            return f"gzip bomb {target}"
        if op == "extlink":
            name = rng.choice(datasets)
            del f[name]
            f[name] = h5py.ExternalLink("/etc/passwd", "/x")
            return f"external link {name}"
        if op == "softlink":
            name = rng.choice(datasets)
            other = rng.choice(datasets)
            if other == name:
                return "noop"
            del f[name]
            f[name] = h5py.SoftLink("/" + other)
            return f"soft link {name} -> {other}"
        if op == "external":
            name = rng.choice(datasets)
            shape, dtype = f[name].shape, f[name].dtype
            if dtype.kind == "O" or not shape:
                return "noop"
            del f[name]
            f.create_dataset(name, shape=shape, dtype=dtype, external=[("/dev/zero", 0, h5py.h5f.UNLIMITED)])
            return f"external storage {name}"
        if op == "virtual":
            name = rng.choice([d for d in datasets if f[d].shape and f[d].dtype.kind != "O"] or datasets)
            shape, dtype = f[name].shape, f[name].dtype
            if not shape or dtype.kind == "O":
                return "noop"
            layout = h5py.VirtualLayout(shape=shape, dtype=dtype)
            layout[...] = h5py.VirtualSource("/tmp/nonexistent-embplan.h5", "x", shape=shape)
            del f[name]
            f.create_virtual_dataset(name, layout)
            return f"virtual {name}"
        if op == "grid":
            import json as _json

            meta = _json.loads(f["meta_json"][()])
            if not meta.get("voxel"):
                return "noop"
            meta["voxel"]["grid"]["shape"] = [1024, 1024, 1024]
            del f["meta_json"]
            f.create_dataset("meta_json", data=_json.dumps(meta), dtype=h5py.string_dtype())
            return "grid shape 1024^3"
        if op == "add_group":
            f.create_group(rng.choice(["extra", "flags/9999", "dvh/extra"]))
            return "add group"
        name = rng.choice(datasets + groups)
        del f[name]
        return f"del {name}"
