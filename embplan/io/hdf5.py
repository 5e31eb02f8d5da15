"""The plan archive: one HDF5 file per plan (format ``embplan.plan``, version ``1.2``).

:func:`save_plan` writes a :class:`~embplan.plan_model.Plan` atomically; :func:`load_plan` reads it back
exactly (arrays bitwise equal, models equal). The layout is documented in ``docs/plan-format.md`` so that a plan
can be read with plain h5py.

What is stored
--------------
- ``/plan_json``: the plan (everything but the voxel arrays) as compact JSON (UTF-8, no whitespace, keys in
  model and insertion order); ``/meta_json``: what JSON of the plan cannot say: the voxel metadata (grid, array names with their
  units and paths, voxel attributes), which fields of each nested model were given explicitly (pydantic's
  ``model_fields_set``, e.g. which thresholds were overridden) and the models' private attributes (e.g. the
  case's text as given). These two and the arrays are the **single source
  of truth** that :func:`load_plan` reads.
- the arrays: ``/images/<name>``, ``/masks/<structure>``, ``/dose/<method>``, each with a ``units`` attribute,
  gzip + shuffle + Fletcher32.
- readable views for people with h5py (written, never read back): ``/case/source_json``, ``/flags``,
  ``/thresholds``, ``/provenance``, ``/grid``, ``/dosimetry``, ``/dvh/<structure>/{dose_gy, volume_fraction}``.
- root attribute ``content_sha256``: SHA-256 of the plan JSON, the voxel JSON and every array (recipe in
  :func:`content_sha256`), verified on load.
- (1.2) a 512-byte user block with the SHA-256 of every byte after it (:func:`seal_file`), verified first, before
  libhdf5 parses the file: the views, ``units`` attributes and every other byte are covered, and a damaged file
  never reaches the library. Then, before any array is read, the structure is checked (hard links only, no
  external or virtual storage, stored sizes within the file, declared sizes within what gzip can hold, shapes equal
  to the grid, the grid within :data:`PLAN_MAX_VOXELS`): a file cannot make the reader allocate what it merely
  declares.

Versions are ``"major.minor"``: a newer major is refused, an older minor is migrated (:data:`MIGRATIONS`), a
newer minor of the same major is read (minor versions only add).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import platform
import re
import stat
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from ..errors import EmbplanError, PlanFileError
from ..progress import timed
from . import atomic_file
from .h5chunks import ChunkError, read_array, write_arrays, writer_threads

if TYPE_CHECKING:  # pragma: no cover
    from ..plan_model import Plan

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MIGRATIONS",
    "PlanDocument",
    "save_plan",
    "write_plan_file",
    "load_plan",
    "read_document",
    "write_document",
    "content_sha256",
    "seal_file",
    "USERBLOCK_BYTES",
    "PLAN_MAX_VOXELS",
    "compact_json_bytes",
    "plan_to_document",
    "document_to_plan",
]

log = logging.getLogger(__name__)

#: Root attribute ``format`` of every plan file.
FORMAT_NAME = "embplan.plan"
#: Current format version, ``"major.minor"``. 1.0 stored masks as uint8 0/1; 1.1 stores them as bool; 1.2 starts
#: with a 512-byte user block holding the SHA-256 of every byte after it (:func:`seal_file`).
FORMAT_VERSION = "1.2"
#: The first version whose files carry the user-block checksum (older files load; their views are not covered).
_RAW_HASH_SINCE = (1, 2)
#: Size of the user block (HDF5 ignores it; the HDF5 signature follows at byte 512).
USERBLOCK_BYTES = 512
#: How the user block starts: this line, then ``sha256=<64 hex>\n``, then NUL bytes.
USERBLOCK_MAGIC = b"embplan.plan user block\n"

# ---- what a reader allocates, bounded before anything is read (issue 12) --------------------------------------
#: Largest plan file opened, bytes.
PLAN_FILE_MAX_BYTES = 16 * 1024**3
#: Largest voxel grid of a plan (voxels): 2**29 = 537 M, e.g. a 1024 x 1024 x 512 CT grid (grid "ct" of a
#: thin-slice CT), checked before any array is read; override with load_plan(max_voxels=...).
PLAN_MAX_VOXELS = 2**29
#: Largest total of the declared (uncompressed) sizes of a plan's voxel arrays, bytes. Independently, the total
#: may not exceed _GZIP_MAX_RATIO times the file's size (what the file could inflate to).
PLAN_MAX_ARRAY_BYTES = 64 * 1024**3
#: Largest dataset outside the voxel arrays (JSON text, DVH axes, grid, scalars), declared bytes.
PLAN_VIEW_MAX_BYTES = 64 * 1024**2
#: Most objects (groups and datasets) a plan file may hold; a plan has a few hundred.
PLAN_MAX_OBJECTS = 100_000
#: deflate (gzip) cannot compress better than 1032:1 (RFC 1951: at most 258 bytes per 2-bit code); shuffle and
#: Fletcher32 do not change that. A dataset that declares more than this times its stored size is not gzip data.
_GZIP_MAX_RATIO = 1100
#: Groups that hold the voxel arrays (every dataset there must be an array the metadata names).
_ARRAY_GROUPS = ("images", "masks", "dose")
#: dtypes a voxel array may have (numbers and booleans, at most 16 bytes).
_ARRAY_KINDS = "biufc"

#: Filters on every non-empty array dataset.
_ARRAY_FILTERS: dict[str, Any] = {"compression": "gzip", "shuffle": True, "fletcher32": True}
_GZIP_LEVEL_DEFAULT = 1  # b16: level 4 cost 1.7x the CPU (2.7 s vs 1.6 s on the 1.5 mm phantom plan) for a 10 % smaller file
_JSON_UNITS = "json"  # units attribute of JSON text datasets (no physical unit)
_STR = h5py.string_dtype("utf-8")
_VERSION_RE = re.compile(r"^(\d+)\.(\d+)$")


# ====================================================================================== the document
@dataclass
class PlanDocument:
    """What a plan file holds, before it becomes a Plan: the plan JSON, the metadata JSON and the arrays.

    ``meta`` is ``{"voxel": None | {"grid": {...}, "units": {name: unit}, "paths": {name: hdf5 path},
    "attributes": {...}}, "fields_set": [[path, [field, ...]], ...], "private": [[path, {name: value}], ...]}``;
    ``arrays`` maps a name to its array.
    """

    plan: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=lambda: {"voxel": None, "fields_set": [], "private": []})
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    format_version: str = FORMAT_VERSION
    attrs: dict[str, Any] = field(default_factory=dict)  # root attributes as read (not hashed)

    @property
    def voxel(self) -> dict[str, Any] | None:
        return self.meta.get("voxel")


def _json_default(obj: Any) -> Any:
    """JSON fallback for numpy scalars/arrays, dates and sets in free-form (``dict[str, Any]``) fields."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (_dt.date, _dt.datetime, _dt.time)):
        return obj.isoformat()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def compact_json_bytes(obj: Any) -> bytes:
    """Compact JSON: UTF-8, no whitespace, keys in their order (model field order, dict insertion order: the
    order is part of the plan, e.g. the order of the DVH structures), NaN/Infinity refused."""
    return json.dumps(
        obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_json_default
    ).encode("utf-8")


def content_sha256(plan_json: bytes, meta_json: bytes, arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 (hex) of a plan's content (the stored JSON bytes and the arrays).

    Every part enters as a *field*: its length as 8 bytes little-endian, then its bytes. The fields, in order:
    the plan JSON bytes; the metadata JSON bytes; then for each array in sorted name
    order: the name (UTF-8), ``dtype.str`` (e.g. ``<f8``, ``|b1``), the shape as comma-joined decimals
    (``"64,64,64"``), and the raw C-order bytes.
    """
    h = ContentHasher(plan_json, meta_json)
    for name in sorted(arrays):
        h.add(name, arrays[name])
    return h.hexdigest()


class ContentHasher:
    """:func:`content_sha256` one array at a time (in sorted name order), so that a reader can hash each array as
    soon as it is read."""

    def __init__(self, plan_json: bytes, meta_json: bytes) -> None:
        self._h = hashlib.sha256()
        self._last: str | None = None
        self._put(plan_json)
        self._put(meta_json)

    def _put(self, b: bytes | memoryview) -> None:
        self._h.update(len(b).to_bytes(8, "little") if isinstance(b, bytes) else b.nbytes.to_bytes(8, "little"))
        self._h.update(b)

    def add(self, name: str, array: np.ndarray) -> None:
        if self._last is not None and name <= self._last:
            raise ValueError(f"ContentHasher: arrays must come in sorted name order ({name!r} after {self._last!r})")
        self._last = name
        a = np.ascontiguousarray(array)
        self._put(name.encode("utf-8"))
        self._put(a.dtype.str.encode("ascii"))
        self._put(",".join(str(n) for n in a.shape).encode("ascii"))
        self._put(a.reshape(-1).view(np.uint8).data if a.size else b"")  # .data: the memoryview of the bytes

    def hexdigest(self) -> str:
        return self._h.hexdigest()


# ====================================================================================== Plan <-> document
def _hdf5_name(name: str) -> str:
    """A safe HDF5 link name for ``name`` ('/' and leading '.' replaced)."""
    safe = name.replace("/", "_")
    if safe in ("", ".", ".."):
        safe = f"_{safe}"
    return safe


def _array_path(name: str) -> str:
    if name.startswith("mask_"):
        return f"/masks/{_hdf5_name(name[len('mask_'):])}"
    if name.startswith("dose_") and name.endswith("_gy") and len(name) > len("dose__gy"):
        return f"/dose/{_hdf5_name(name[len('dose_'):-len('_gy')])}"
    return f"/images/{_hdf5_name(name)}"


def _walk_models(obj: Any, path: tuple[Any, ...], out: list[tuple[tuple[Any, ...], Any]]) -> None:
    """Every pydantic model inside ``obj`` (fields, lists, tuples, dict values) with its path."""
    from pydantic import BaseModel

    if isinstance(obj, BaseModel):
        out.append((path, obj))
        for name, info in type(obj).model_fields.items():
            if info.exclude:
                continue
            _walk_models(getattr(obj, name), (*path, name), out)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _walk_models(v, (*path, i), out)
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            if isinstance(k, str):
                _walk_models(v, (*path, k), out)


def _model_state_record(plan: Plan) -> tuple[list[list[Any]], list[list[Any]]]:
    """What a JSON dump of the plan loses, per nested model (path from the plan):

    - ``fields_set``: ``[[path, sorted fields], ...]`` for every model whose explicitly given fields are not all
      of its fields (pydantic's ``model_fields_set``; e.g. the thresholds a case overrode);
    - ``private``: ``[[path, {name: value}], ...]`` for every model with JSON-representable private attributes
      (e.g. the case's text as given).
    """
    found: list[tuple[tuple[Any, ...], Any]] = []
    _walk_models(plan, (), found)
    fields_set: list[list[Any]] = []
    private: list[list[Any]] = []
    for path, model in found:
        names = {n for n, info in type(model).model_fields.items() if not info.exclude}
        given = set(model.model_fields_set) & names
        if given != names:
            fields_set.append([list(path), sorted(given)])
        priv = getattr(model, "__pydantic_private__", None) or {}
        keep = {}
        for key, value in priv.items():
            try:
                keep[key] = json.loads(compact_json_bytes(value))
            except (TypeError, ValueError):
                log.debug("private attribute %s of %s is not JSON: not stored", key, type(model).__name__)
        if keep:
            private.append([list(path), keep])
    return fields_set, private


def _model_at(plan: Plan, path: list[Any]) -> Any:
    from pydantic import BaseModel

    obj: Any = plan
    for step in path:
        obj = getattr(obj, step) if isinstance(step, str) and isinstance(obj, BaseModel) else obj[step]
    if not isinstance(obj, BaseModel):
        raise TypeError(f"{path} is not a model")
    return obj


def _restore_model_state(plan: Plan, meta: Mapping[str, Any], source: str) -> None:
    for kind in ("fields_set", "private"):
        for entry in meta.get(kind, []) or []:
            try:
                path, value = entry
                obj = _model_at(plan, path)
                if kind == "fields_set":
                    excluded = {n for n, info in type(obj).model_fields.items() if info.exclude}
                    given = set(value) | (set(obj.model_fields_set) & excluded)
                    object.__setattr__(obj, "__pydantic_fields_set__", given)
                else:
                    priv = getattr(obj, "__pydantic_private__", None)
                    if priv is None or not set(value) <= set(priv):
                        raise KeyError(f"unknown private attribute(s) {sorted(value)}")
                    priv.update(value)
            except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
                raise PlanFileError(
                    f"{source}: /meta_json {kind} entry {entry!r} does not fit the plan ({exc})"
                ) from exc


def plan_to_document(plan: Plan) -> PlanDocument:
    """Split a Plan into its JSON, its metadata and its arrays (no I/O)."""
    try:
        plan_obj = plan.model_dump(mode="json", fallback=_json_default)
        # round-trip through JSON so that the document is exactly what the file will hold
        plan_obj = json.loads(compact_json_bytes(plan_obj))
    except (TypeError, ValueError) as exc:
        raise PlanFileError(f"plan: cannot serialise to JSON: {exc}") from exc
    fields_set, private = _model_state_record(plan)
    meta: dict[str, Any] = {"voxel": None, "fields_set": fields_set, "private": private}
    voxel = plan.voxel
    if voxel is None:
        return PlanDocument(plan=plan_obj, meta=meta)
    paths: dict[str, str] = {}
    used: set[str] = set()
    for name in sorted(voxel.arrays):
        path = base = _array_path(name)
        i = 1
        while path in used:  # two names that sanitise to the same link name
            i += 1
            path = f"{base}_{i}"
        used.add(path)
        paths[name] = path
    try:
        meta["voxel"] = {
            "grid": voxel.grid.model_dump(mode="json"),
            "units": dict(voxel.units),
            "paths": paths,
            "attributes": json.loads(compact_json_bytes(dict(voxel.attributes))),
        }
    except (TypeError, ValueError) as exc:
        raise PlanFileError(f"plan.voxel.attributes: cannot serialise to JSON: {exc}") from exc
    return PlanDocument(plan=plan_obj, meta=meta, arrays=dict(voxel.arrays))


def document_to_plan(doc: PlanDocument, *, source: str = "plan") -> Plan:
    """Build a Plan from a (current-version) document; any inconsistency -> PlanFileError naming ``source``."""
    from pydantic import ValidationError

    from ..grid import Grid
    from ..plan_model import Plan, VoxelData

    voxel_data = None
    vmeta = doc.voxel
    if vmeta is not None:
        try:
            grid = Grid(**vmeta["grid"])
            units = dict(vmeta["units"])
            if set(units) != set(doc.arrays):
                raise ValueError(f"arrays {sorted(doc.arrays)} do not match units {sorted(units)}")
            voxel_data = VoxelData(
                grid=grid, arrays=dict(doc.arrays), units=units, attributes=dict(vmeta.get("attributes", {}))
            )
        except (EmbplanError, ValueError, KeyError, TypeError) as exc:
            raise PlanFileError(f"{source}: voxel data are inconsistent: {exc}") from exc
    elif doc.arrays:
        raise PlanFileError(f"{source}: arrays present but /meta_json has no voxel metadata")
    try:
        plan = Plan.model_validate(doc.plan, context={"stored_plan": True})  # the case as planned (case.py)
    except ValidationError as exc:
        e = exc.errors()[0]
        loc = ".".join(str(p) for p in e.get("loc", ())) or "(root)"
        raise PlanFileError(
            f"{source}: the stored plan does not validate ({exc.error_count()} error(s)); first: {loc}: {e.get('msg')}"
        ) from exc
    except (EmbplanError, ValueError, TypeError) as exc:
        raise PlanFileError(f"{source}: the stored plan does not validate: {exc}") from exc
    if voxel_data is not None:
        given = set(plan.model_fields_set)
        plan = plan.model_copy(update={"voxel": voxel_data})
        object.__setattr__(plan, "__pydantic_fields_set__", given | {"voxel"})
    _restore_model_state(plan, doc.meta, source)
    return plan


# ====================================================================================== versions / migrations
def _parse_version(text: Any, source: str) -> tuple[int, int]:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    m = _VERSION_RE.match(str(text))
    if not m:
        raise PlanFileError(f"{source}: root attribute 'format_version' is {text!r}, expected 'major.minor'")
    return int(m.group(1)), int(m.group(2))


def _migrate_1_0_to_1_1(doc: PlanDocument) -> PlanDocument:
    """1.0 -> 1.1: masks were stored as uint8 0/1 with units "1"; 1.1 stores them as bool."""
    arrays = dict(doc.arrays)
    for name, arr in doc.arrays.items():
        if name.startswith("mask_") and arr.dtype != np.bool_:
            if not np.isin(arr, (0, 1)).all():
                raise PlanFileError(f"format 1.0 mask {name!r} holds values other than 0 and 1")
            arrays[name] = arr.astype(np.bool_)
    return PlanDocument(plan=doc.plan, meta=doc.meta, arrays=arrays, format_version="1.1", attrs=doc.attrs)


#: (major, minor) -> function migrating a document of that version to the next minor.
def _migrate_1_1_to_1_2(doc: PlanDocument) -> PlanDocument:
    """1.1 -> 1.2: the content is the same (1.2 only adds the user-block checksum)."""
    return PlanDocument(plan=doc.plan, meta=doc.meta, arrays=doc.arrays, format_version="1.2", attrs=doc.attrs)


MIGRATIONS: dict[tuple[int, int], Callable[[PlanDocument], PlanDocument]] = {
    (1, 0): _migrate_1_0_to_1_1,
    (1, 1): _migrate_1_1_to_1_2,
}


def _migrate(doc: PlanDocument, source: str) -> PlanDocument:
    current = _parse_version(FORMAT_VERSION, "embplan")
    version = _parse_version(doc.format_version, source)
    while version < current:
        step = MIGRATIONS.get(version)
        if step is None:
            raise PlanFileError(f"{source}: no migration from format {version[0]}.{version[1]}")
        doc = step(doc)
        new = _parse_version(doc.format_version, source)
        if new <= version:  # a migration must move forward
            raise PlanFileError(f"{source}: migration from format {version[0]}.{version[1]} did not advance")
        log.info("%s: migrated plan format %d.%d -> %d.%d", source, *version, *new)
        version = new
    return doc


# ====================================================================================== writing
def _dependency_versions() -> dict[str, str]:
    import numpy
    import pydantic

    versions = {
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "h5py": h5py.version.version,
        "hdf5": h5py.version.hdf5_version,
        "pydantic": pydantic.VERSION,
    }
    for mod in ("scipy", "numba"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - optional at write time
            pass
    return versions


def _create_array(parent: h5py.Group, name: str, data: np.ndarray, units: str, level: int) -> h5py.Dataset:
    data = np.asarray(data)
    if data.size and data.ndim:
        dset = parent.create_dataset(name, data=data, compression_opts=level, **_ARRAY_FILTERS)
    else:  # empty or 0-d arrays cannot be chunked
        dset = parent.create_dataset(name, data=data)
    dset.attrs["units"] = units
    return dset


def _create_text(parent: h5py.Group, name: str, data: bytes | str, units: str = _JSON_UNITS) -> h5py.Dataset:
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    dset = parent.create_dataset(name, data=text, dtype=_STR)
    dset.attrs["units"] = units
    return dset


def _set_attr(attrs: h5py.AttributeManager, key: str, value: Any) -> None:
    """Scalars as attributes; anything else as a ``<key>_json`` attribute."""
    if value is None:
        attrs[f"{key}_json"] = "null"
    elif isinstance(value, (bool, np.bool_)):
        attrs[key] = bool(value)
    elif isinstance(value, (int, float, str, np.integer, np.floating)):
        attrs[key] = value
    else:
        attrs[f"{key}_json"] = compact_json_bytes(value).decode("utf-8")


def write_document(
    h5: h5py.File, doc: PlanDocument, *, gzip_level: int = _GZIP_LEVEL_DEFAULT, created_utc: str | None = None
) -> str:
    """Write the source of truth of ``doc`` (root attributes, plan/voxel JSON, arrays) into an open file.

    Returns the content SHA-256 it stored. ``doc.format_version`` is written as given (tests write older
    versions with it); the arrays are written as they are.
    """
    plan_json = compact_json_bytes(doc.plan)
    meta_json = compact_json_bytes(doc.meta)
    from .. import __version__

    # issue 16: the content hash (hashlib releases the GIL) runs beside the arrays' compression
    # (h5chunks.write_arrays: the chunks are encoded on a thread pool); the digest is stored once both are done
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="embplan-sha") as pool:
        digest_future = pool.submit(content_sha256, plan_json, meta_json, doc.arrays)
        attrs = h5.attrs
        attrs["format"] = FORMAT_NAME
        attrs["format_version"] = doc.format_version
        attrs["created_utc"] = created_utc or _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds").replace(
            "+00:00", "Z"
        )
        attrs["software"] = "embplan"
        attrs["software_version"] = __version__
        attrs["dependency_versions_json"] = compact_json_bytes(_dependency_versions()).decode("utf-8")
        attrs["axis_order"] = "z,y,x"
        _create_text(h5, "plan_json", plan_json)
        _create_text(h5, "meta_json", meta_json)
        if doc.voxel is not None:
            paths = doc.voxel["paths"]
            units = doc.voxel["units"]
            big: list[tuple[h5py.Group, str, np.ndarray]] = []
            big_names: list[str] = []
            for name in sorted(doc.arrays):
                group_name, _, leaf = paths[name].rpartition("/")
                group = h5.require_group(group_name or "/")
                data = np.asarray(doc.arrays[name])
                if data.ndim and data.size:
                    big.append((group, leaf, data))
                    big_names.append(name)
                else:
                    _create_array(group, leaf, data, units[name], gzip_level).attrs["name"] = name
            for name, dset in zip(big_names, write_arrays(big, gzip_level), strict=True):
                dset.attrs["units"] = units[name]
                dset.attrs["name"] = name
        digest = digest_future.result()
        attrs["content_sha256"] = digest
    return digest


def _write_views(h5: h5py.File, plan: Plan, doc: PlanDocument, gzip_level: int) -> None:
    """Readable groups for plain-h5py users; derived from the plan, never read back by :func:`load_plan`."""
    # --- the case as given
    case_g = h5.create_group("case")
    _create_text(case_g, "source_json", compact_json_bytes(doc.plan.get("case_source", {})))
    _create_text(case_g, "case_json", compact_json_bytes(doc.plan.get("case", {})))
    # --- flags: one group per flag, in plan order
    flags_g = h5.create_group("flags")
    flags_g.attrs["count"] = len(plan.flags)
    for i, flag in enumerate(plan.flags):
        g = flags_g.create_group(f"{i:04d}")
        for key, value in flag.model_dump(mode="json", fallback=_json_default).items():
            _set_attr(g.attrs, key, value)
        sev = flag.severity
        g.attrs["severity_name"] = str(getattr(sev, "name", sev)).lower()
        rank = getattr(sev, "rank", sev)
        g.attrs["severity_rank"] = int(rank) if isinstance(rank, (int, np.integer)) else -1
    # --- thresholds: one scalar dataset per threshold, with units, source and whether overridden
    thr_g = h5.create_group("thresholds")
    rows = plan.thresholds.describe() if hasattr(plan.thresholds, "describe") else None
    if rows is None:
        rows = [{"name": k, "value": v} for k, v in plan.thresholds.model_dump(mode="json").items()]
    for row in rows:
        name, value = str(row["name"]), row.get("value")
        if isinstance(value, (bool, int, float)) and value is not None:
            dset = thr_g.create_dataset(_hdf5_name(name), data=value)
            dset.attrs["units"] = str(row.get("unit") or "1")
        else:
            dset = _create_text(thr_g, _hdf5_name(name), compact_json_bytes(value))
        for key in ("source", "overridden", "description"):
            if key in row and row[key] is not None:
                _set_attr(dset.attrs, key, row[key])
    # --- provenance as attributes
    prov_g = h5.create_group("provenance")
    for key, value in plan.provenance.model_dump(mode="json", fallback=_json_default).items():
        _set_attr(prov_g.attrs, key, value)
    # --- grid
    if plan.voxel is not None:
        grid = plan.voxel.grid
        grid_g = h5.create_group("grid")
        grid_g.attrs["axis_order"] = "z,y,x"
        grid_g.attrs["affine_maps"] = "(k, j, i, 1) index (z, y, x order) -> patient (x, y, z, 1) mm, DICOM LPS"
        for name, data, units in (
            ("affine", grid.affine, "mm"),
            ("shape", np.asarray(grid.shape, dtype=np.int64), "voxel"),
            ("spacing_mm", np.asarray(grid.spacing_mm, dtype=np.float64), "mm"),
            ("origin_mm", np.asarray(grid.origin_mm, dtype=np.float64), "mm"),
            ("direction", np.asarray(grid.direction, dtype=np.float64).reshape(3, 3), "1"),
        ):
            grid_g.create_dataset(name, data=data).attrs["units"] = units
        # dose maps: the parameters they were computed with
        kernel = plan.provenance.kernel
        attributes = plan.voxel.attributes
        for name, path in doc.voxel["paths"].items() if doc.voxel else ():
            if path.startswith("/dose/"):
                dset = h5[path]
                dset.attrs["method"] = path[len("/dose/"):]
                dset.attrs["kernel_json"] = compact_json_bytes(kernel).decode("utf-8")
                extra = attributes.get(name)
                if extra is not None:
                    dset.attrs["parameters_json"] = compact_json_bytes(extra).decode("utf-8")
    # --- dosimetry summary and DVHs
    dosi = plan.dosimetry
    if dosi is not None:
        d_g = h5.create_group("dosimetry")
        d_g.attrs["source"] = dosi.source
        d_g.attrs["method"] = dosi.method
        for name, value, units in (
            ("activity_gbq", dosi.activity_gbq, "GBq"),
            ("tumor_dose_gy", dosi.tumor_dose_gy, "Gy"),
            ("normal_liver_dose_gy", dosi.normal_liver_dose_gy, "Gy"),
            ("perfused_dose_gy", dosi.perfused_dose_gy, "Gy"),
            ("lung_dose_gy", dosi.lung_dose_gy, "Gy"),
            ("lung_shunt_fraction", dosi.lung_shunt_fraction, "1"),
        ):
            if value is not None:
                d_g.create_dataset(name, data=float(value)).attrs["units"] = units
        if dosi.dvh:
            dvh_g = h5.create_group("dvh")
            for structure, rec in dosi.dvh.items():
                g = dvh_g.create_group(_hdf5_name(structure))
                g.attrs["structure"] = structure
                for key in ("volume_ml", "mean_gy", "min_gy", "max_gy"):
                    g.attrs[key] = float(getattr(rec, key))
                g.attrs["d_gy_json"] = compact_json_bytes(rec.d_gy).decode("utf-8")
                g.attrs["v_percent_json"] = compact_json_bytes(rec.v_percent).decode("utf-8")
                _create_array(g, "dose_gy", np.asarray(rec.dose_gy, dtype=np.float64), "Gy", gzip_level)
                _create_array(
                    g, "volume_fraction", np.asarray(rec.volume_fraction, dtype=np.float64), "1", gzip_level
                )


def save_plan(plan: Plan, path: str | os.PathLike[str], *, gzip_level: int = _GZIP_LEVEL_DEFAULT) -> Path:
    """Write ``plan`` to ``path`` (HDF5, format :data:`FORMAT_VERSION`), atomically; return the path.

    The file appears complete or not at all: it is written to a temporary file beside ``path``, fsynced and
    moved over ``path``. Any failure raises :class:`~embplan.errors.PlanFileError`, leaves an earlier file at
    ``path`` intact and no temporary file behind.
    """
    from ..plan_model import Plan

    if not isinstance(plan, Plan):
        raise PlanFileError(f"plan: expected an embplan Plan, got {type(plan).__name__}")
    if isinstance(gzip_level, bool) or not isinstance(gzip_level, int) or not 0 <= gzip_level <= 9:
        raise PlanFileError(f"gzip_level: must be an integer 0..9, got {gzip_level!r}")
    doc = plan_to_document(plan)
    with atomic_file(path, error=PlanFileError, what="plan") as fh:
        _write_plan_h5(fh, plan, doc, gzip_level)
    return Path(path)


def write_plan_file(plan: Plan, fh: Any, *, gzip_level: int = _GZIP_LEVEL_DEFAULT) -> None:
    """Write ``plan`` as a plan file into the open binary file object ``fh`` (readable, writable, seekable, e.g.
    from :func:`embplan.io.atomic_file`); committing it is the caller's. :func:`save_plan` is this plus the atomic
    file."""
    from ..plan_model import Plan

    if not isinstance(plan, Plan):
        raise PlanFileError(f"plan: expected an embplan Plan, got {type(plan).__name__}")
    _write_plan_h5(fh, plan, plan_to_document(plan), gzip_level)


@timed("write plan", logging.INFO)
def _write_plan_h5(fh: Any, plan: Plan, doc: PlanDocument, gzip_level: int) -> None:
    with h5py.File(fh, "w", libver=("earliest", "latest"), userblock_size=USERBLOCK_BYTES) as h5:
        write_document(h5, doc, gzip_level=gzip_level)
        _write_views(h5, plan, doc, gzip_level)
    seal_file(fh)


# ====================================================================================== the whole file's checksum
def _raw_sha256(fh: Any) -> str:
    """SHA-256 (hex) of every byte of an open file after the user block, read in 1 MiB pieces."""
    h = hashlib.sha256()
    fh.seek(USERBLOCK_BYTES)
    while True:
        piece = fh.read(1024 * 1024)
        if not piece:
            break
        h.update(piece)
    return h.hexdigest()


def seal_file(target: str | os.PathLike[str] | Any) -> str:
    """Write the user block of a plan file written with ``userblock_size=USERBLOCK_BYTES`` (a path, or an open
    binary file object): :data:`USERBLOCK_MAGIC`, ``sha256=<hex>`` of every byte after the block, NUL padding.
    Returns the checksum. :func:`save_plan` seals every file it writes."""
    if isinstance(target, str | os.PathLike):
        with open(target, "r+b") as fh:
            return seal_file(fh)
    digest = _raw_sha256(target)
    block = USERBLOCK_MAGIC + b"sha256=" + digest.encode("ascii") + b"\n"
    target.seek(0)
    target.write(block.ljust(USERBLOCK_BYTES, b"\0"))
    target.flush()
    return digest


def _check_raw(path: Path, source: str) -> bool:
    """Verify the user-block checksum (before libhdf5 parses a byte: a damaged file is refused before a damaged
    heap or B-tree can make the library spin or crash). False when the file has no embplan user block."""
    with open(path, "rb") as fh:
        head = fh.read(USERBLOCK_BYTES)
        if not head.startswith(USERBLOCK_MAGIC):
            return False
        line = head[len(USERBLOCK_MAGIC):].split(b"\n", 1)[0]
        stored = line.removeprefix(b"sha256=").decode("ascii", "replace")
        if not line.startswith(b"sha256=") or not re.fullmatch(r"[0-9a-f]{64}", stored):
            raise PlanFileError(f"{source}: damaged user block (no sha256=<hex> line)")
        actual = _raw_sha256(fh)
    if actual != stored:
        raise PlanFileError(f"{source}: checksum mismatch: file SHA-256 {actual[:16]}... != stored {stored[:16]}... "
                            "(the file was altered or damaged: a view, an attribute or the plan itself)")
    return True


def _is_array_path(path: str) -> bool:
    parts = path.strip("/").split("/")
    return len(parts) >= 2 and parts[0] in _ARRAY_GROUPS


def _walk(h5: h5py.File, source: str, file_size: int | None) -> list[tuple[str, Any]]:
    """Every group and dataset of the file with its path (sorted), checking what could make a reader allocate,
    wait or read elsewhere: only hard links (no soft or external links), no external storage, no virtual
    datasets, no committed datatypes, at most :data:`PLAN_MAX_OBJECTS` objects; a dataset's stored size within the
    file and its declared size within what its compression can hold."""
    out: list[tuple[str, Any]] = [("/", h5)]
    stack = [("/", h5)]
    while stack:
        path, group = stack.pop()
        for name in group:
            child = f"{path.rstrip('/')}/{name}"
            link = group.get(name, getlink=True)
            if not isinstance(link, h5py.HardLink):
                kind = "an external link" if isinstance(link, h5py.ExternalLink) else "a soft link"
                raise PlanFileError(f"{source}: {child} is {kind}: plan files hold hard links only")
            obj = group.get(name)
            if isinstance(obj, h5py.Group):
                stack.append((child, obj))
            elif isinstance(obj, h5py.Dataset):
                _check_storage(obj, child, source, file_size)
            else:
                raise PlanFileError(f"{source}: {child} is a {type(obj).__name__}: not part of a plan file")
            out.append((child, obj))
            if len(out) > PLAN_MAX_OBJECTS:
                raise PlanFileError(f"{source}: more than {PLAN_MAX_OBJECTS} objects: not a plan file")
    out.sort(key=lambda item: item[0])
    return out


def _check_storage(dset: h5py.Dataset, path: str, source: str, file_size: int | None) -> None:
    if dset.is_virtual:
        raise PlanFileError(f"{source}: {path} is a virtual dataset (data from other files): refused")
    if dset.external:
        raise PlanFileError(f"{source}: {path} stores its data in external files: refused")
    if dset.dtype.kind == "O" and h5py.check_string_dtype(dset.dtype) is None:
        raise PlanFileError(f"{source}: {path} has a variable-length type that is not text: refused")
    if file_size is None:
        return
    declared = int(dset.size or 0) * int(dset.dtype.itemsize)
    stored = int(dset.id.get_storage_size())
    if stored > file_size:
        raise PlanFileError(f"{source}: {path} declares {stored} stored bytes, more than the file's {file_size}")
    if dset.dtype.kind != "O" and declared > 1024 * 1024 and declared > _GZIP_MAX_RATIO * max(stored, 1):
        raise PlanFileError(f"{source}: {path} declares {declared} bytes from {stored} stored bytes: more than "
                            f"compression can hold ({_GZIP_MAX_RATIO}:1); damaged or crafted file")


# ====================================================================================== reading
def _attr_str(attrs: h5py.AttributeManager, key: str) -> str | None:
    value = attrs.get(key)
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value.item()
    return str(value)


def _read_text(h5: h5py.File, name: str, source: str) -> bytes:
    if name not in h5:
        raise PlanFileError(f"{source}: missing dataset /{name}")
    dset = h5[name]
    if not isinstance(dset, h5py.Dataset) or dset.shape != ():
        raise PlanFileError(f"{source}: /{name} is not a scalar text dataset")
    try:
        value = dset[()]
    except OSError as exc:
        raise PlanFileError(f"{source}: dataset /{name} is corrupted or unreadable ({exc})") from exc
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes):
        return value
    raise PlanFileError(f"{source}: /{name} is not a text dataset")


def _parse_json(data: bytes, name: str, source: str) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PlanFileError(f"{source}: /{name} is not valid UTF-8 JSON ({exc})") from exc


def read_document(path: str | os.PathLike[str], *, verify: bool = True,
                  max_voxels: int = PLAN_MAX_VOXELS) -> PlanDocument:
    """Read the source of truth of a plan file (no migration, no Plan validation).

    Before reading any data: the file must be a regular file of at most :data:`PLAN_FILE_MAX_BYTES`; its objects
    hard-linked groups and datasets only (no external links, external storage or virtual datasets), none storing
    more than the file holds or declaring more than its compression can hold; with ``verify``, the user-block
    checksum (format >= 1.2; every byte after the block, so the plan JSON, the metadata, the views and every
    attribute) must match before libhdf5 parses the file; each array must have the grid's shape, a numeric dtype, and the grid at most
    ``max_voxels`` voxels. Then the arrays are read and, with ``verify``, ``content_sha256`` is checked. Every
    problem is a :class:`~embplan.errors.PlanFileError` with the reason.
    """
    p = Path(path)
    source = str(p)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise PlanFileError(f"{source}: no such file") from None
    except OSError as exc:
        raise PlanFileError(f"{source}: cannot read ({exc.strerror or exc})") from exc
    if stat.S_ISDIR(st.st_mode):
        raise PlanFileError(f"{source}: is a folder, not a plan file")
    if not stat.S_ISREG(st.st_mode):
        raise PlanFileError(f"{source}: not a regular file (a pipe, device or socket): not a plan file")
    if st.st_size > PLAN_FILE_MAX_BYTES:
        raise PlanFileError(f"{source}: {st.st_size} bytes, larger than a plan file may be ({PLAN_FILE_MAX_BYTES})")
    try:
        sealed = _check_raw(p, source) if verify else False
        is_hdf5 = h5py.is_hdf5(p)
    except OSError as exc:
        raise PlanFileError(f"{source}: cannot read ({exc.strerror or exc})") from exc
    if not is_hdf5:
        raise PlanFileError(f"{source}: not an HDF5 file (no HDF5 signature): not an embplan plan")
    try:
        h5 = h5py.File(p, "r")
    except OSError as exc:
        raise PlanFileError(f"{source}: cannot open as HDF5 (truncated or damaged file?): {exc}") from exc
    try:
        with h5:
            return _read_open(h5, source, verify, st.st_size, max_voxels, sealed)
    except PlanFileError:
        raise
    except MemoryError as exc:
        raise PlanFileError(f"{source}: damaged plan file: reading it would exhaust memory") from exc
    except (OSError, KeyError, ValueError, RuntimeError, TypeError, AttributeError, IndexError,
            UnicodeError, OverflowError) as exc:
        # h5py raises these for damaged metadata (bad B-tree, heap, object header, ...)
        raise PlanFileError(f"{source}: damaged plan file: {type(exc).__name__}: {exc}") from exc


def _read_open(h5: h5py.File, source: str, verify: bool, file_size: int | None = None,
               max_voxels: int = PLAN_MAX_VOXELS, sealed: bool = False) -> PlanDocument:
    fmt = _attr_str(h5.attrs, "format")
    if fmt is None:
        raise PlanFileError(f"{source}: not an embplan plan file (HDF5 without the root attribute 'format')")
    if fmt != FORMAT_NAME:
        raise PlanFileError(f"{source}: not an embplan plan file (format {fmt!r}, expected {FORMAT_NAME!r})")
    version_text = _attr_str(h5.attrs, "format_version")
    if version_text is None:
        raise PlanFileError(f"{source}: root attribute 'format_version' is missing")
    version = _parse_version(version_text, source)
    current = _parse_version(FORMAT_VERSION, "embplan")
    if version[0] > current[0]:
        raise PlanFileError(
            f"{source}: written by a newer embplan (format {version_text}); this embplan "
            f"reads format {current[0]}.x up to {FORMAT_VERSION}: upgrade embplan to read it"
        )
    if version[0] < current[0]:
        raise PlanFileError(f"{source}: format {version_text} is older than any this embplan can migrate")
    if verify and version >= _RAW_HASH_SINCE and not sealed:
        raise PlanFileError(f"{source}: format {version_text} file without its user-block checksum: altered or "
                            "damaged")
    objects = _walk(h5, source, file_size)
    plan_json = _read_text(h5, "plan_json", source)
    meta_json = _read_text(h5, "meta_json", source)
    plan_obj = _parse_json(plan_json, "plan_json", source)
    meta_obj = _parse_json(meta_json, "meta_json", source)
    if not isinstance(plan_obj, dict):
        raise PlanFileError(f"{source}: /plan_json is not a JSON object")
    if (
        not isinstance(meta_obj, dict)
        or not isinstance(meta_obj.get("fields_set", []), list)
        or not isinstance(meta_obj.get("private", []), list)
    ):
        raise PlanFileError(f"{source}: /meta_json is not a metadata object")
    arrays: dict[str, np.ndarray] = {}
    hasher: ContentHasher | None = None
    voxel_obj = meta_obj.get("voxel")
    array_paths = {path for path, obj in objects if isinstance(obj, h5py.Dataset) and _is_array_path(path)}
    if voxel_obj is not None:
        if not isinstance(voxel_obj, dict) or not isinstance(voxel_obj.get("paths"), dict):
            raise PlanFileError(f"{source}: /meta_json voxel has no 'paths' object")
        shape = _grid_shape(voxel_obj, source, max_voxels)
        planned: list[tuple[str, str, h5py.Dataset]] = []
        total = 0
        for name, dpath in voxel_obj["paths"].items():
            if not isinstance(dpath, str) or dpath not in array_paths:
                raise PlanFileError(f"{source}: missing dataset {dpath} (array {name!r})")
            dset = h5[dpath]
            if dset.dtype.kind not in _ARRAY_KINDS or dset.dtype.itemsize > 16:
                raise PlanFileError(f"{source}: {dpath} has dtype {dset.dtype}, not a voxel array's")
            if tuple(dset.shape or ()) != shape:
                raise PlanFileError(f"{source}: {dpath} has shape {dset.shape}, not the grid's {shape}")
            total += int(dset.size) * int(dset.dtype.itemsize)
            planned.append((name, dpath, dset))
        if total > PLAN_MAX_ARRAY_BYTES:
            raise PlanFileError(f"{source}: the voxel arrays declare {total} bytes, more than "
                                f"PLAN_MAX_ARRAY_BYTES ({PLAN_MAX_ARRAY_BYTES})")
        if file_size is not None and total > _GZIP_MAX_RATIO * file_size + 1024 * 1024:
            raise PlanFileError(f"{source}: the voxel arrays declare {total} bytes, more than a {file_size}-byte "
                                f"file can inflate to ({_GZIP_MAX_RATIO}:1): damaged or crafted file")
        array_paths -= {dpath for _, dpath, _ in planned}
        # issue 16: the chunks are decoded on a thread pool (h5chunks.read_array) and each array is hashed, in the
        # content hash's order, on another thread while the next one is read
        hasher = ContentHasher(plan_json, meta_json) if verify else None
        with ThreadPoolExecutor(max_workers=writer_threads(), thread_name_prefix="embplan-h5") as pool, \
                ThreadPoolExecutor(max_workers=1, thread_name_prefix="embplan-sha") as hash_pool:
            hashed = []
            for name, dpath, dset in sorted(planned):
                try:
                    arrays[name] = read_array(dset, pool)
                except (OSError, ChunkError) as exc:
                    raise PlanFileError(
                        f"{source}: dataset {dpath} is corrupted (checksum or decompression failure): {exc}"
                    ) from exc
                if hasher is not None:
                    hashed.append(hash_pool.submit(hasher.add, name, arrays[name]))
            for fut in hashed:
                fut.result()
        arrays = {name: arrays[name] for name, _, _ in planned}  # the file's order, as before
    if array_paths:
        raise PlanFileError(f"{source}: {sorted(array_paths)[0]} is not an array of the plan: altered file")
    stored = _attr_str(h5.attrs, "content_sha256")
    if verify:
        if stored is None:
            raise PlanFileError(f"{source}: root attribute 'content_sha256' is missing")
        actual = hasher.hexdigest() if hasher is not None else content_sha256(plan_json, meta_json, arrays)
        if actual != stored:
            raise PlanFileError(
                f"{source}: checksum mismatch: content SHA-256 {actual[:16]}... != stored {stored[:16]}... "
                "(the file was altered or damaged)"
            )
    attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in h5.attrs.items()}
    return PlanDocument(plan=plan_obj, meta=meta_obj, arrays=arrays, format_version=version_text, attrs=attrs)


def _grid_shape(voxel_obj: Mapping[str, Any], source: str, max_voxels: int) -> tuple[int, ...]:
    """The grid shape of the voxel metadata, checked against the voxel budget."""
    grid = voxel_obj.get("grid")
    shape = grid.get("shape") if isinstance(grid, Mapping) else None
    if (not isinstance(shape, list) or len(shape) != 3
            or not all(type(n) is int and 0 < n <= 2**31 for n in shape)):
        raise PlanFileError(f"{source}: /meta_json voxel grid has no valid shape (3 positive integers)")
    voxels = shape[0] * shape[1] * shape[2]
    if voxels > max_voxels:
        raise PlanFileError(f"{source}: grid {shape[0]}x{shape[1]}x{shape[2]} has {voxels} voxels, more than "
                            f"{max_voxels} (PLAN_MAX_VOXELS; load_plan(max_voxels=...))")
    return tuple(shape)


def load_plan(path: str | os.PathLike[str], *, max_voxels: int = PLAN_MAX_VOXELS) -> Plan:
    """Read a plan written by :func:`save_plan` (verifying its checksum, migrating an older minor version).

    Raises :class:`~embplan.errors.PlanFileError` naming the file and the reason when the file is missing,
    not HDF5, foreign, truncated, corrupted, altered, or written by a newer major version.
    """
    source = str(path)
    doc = read_document(path, verify=True, max_voxels=max_voxels)
    doc = _migrate(doc, source)
    return document_to_plan(doc, source=source)
