"""The verification archive: one HDF5 file per post-treatment verification (format ``embplan.verification``,
version ``1.0``), written atomically and checksummed like the plan archive (:mod:`embplan.io.hdf5`).

Layout (documented for plain h5py users in ``docs/verification.md``):

- root attributes: ``format``, ``format_version``, ``created_utc``, ``software``, ``software_version``,
  ``content_sha256`` (SHA-256 of the result JSON, the metadata JSON and every array, the recipe of
  :func:`embplan.io.hdf5.content_sha256`), ``axis_order`` ``"z,y,x"``;
- ``/verification_json``: the :class:`~embplan.verify.VerificationResult` as compact JSON (source of truth);
- ``/meta_json``: the grid, the transform, and each array's unit and path (source of truth);
- arrays (gzip + shuffle + Fletcher32, ``units`` attribute): ``/dose/planned``, ``/dose/delivered``,
  ``/dose/difference`` (delivered - planned, Gy), ``/activity/delivered`` (MBq per voxel at administration),
  ``/images/post_ct_hu``, ``/images/plan_ct_hu``, ``/images/density_g_cm3``, ``/deposits/labels``, ``/gamma`` (when computed),
  ``/masks/<structure>``;
- readable views (written, never read back): ``/grid`` (affine, shape, spacing, origin, direction),
  ``/registration`` (attributes: source, rotation, translation, quality figures), ``/delivered`` (attributes),
  ``/structures/<name>`` (attributes: planned/delivered mean, difference; datasets: the two DVHs),
  ``/flags/<nnnn>``, ``/prior_treatment_json``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..errors import PlanFileError
from . import atomic_output
from .hdf5 import compact_json_bytes, content_sha256

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "save_verification", "load_verification", "verify_files",
           "VerificationFile"]

FORMAT_NAME = "embplan.verification"
FORMAT_VERSION = "1.0"
_FILTERS: dict[str, Any] = {"compression": "gzip", "shuffle": True, "fletcher32": True}
_STR = h5py.string_dtype("utf-8")

_PATHS = {
    "planned_dose_gy": "/dose/planned",
    "delivered_dose_gy": "/dose/delivered",
    "difference_gy": "/dose/difference",
    "delivered_activity_mbq": "/activity/delivered",
    "post_ct_hu": "/images/post_ct_hu",
    "plan_ct_hu": "/images/plan_ct_hu",
    "density_g_cm3": "/images/density_g_cm3",
    "deposit_labels": "/deposits/labels",
    "gamma": "/gamma",
}


def _path(name: str) -> str:
    if name.startswith("mask_"):
        return "/masks/" + name[len("mask_"):].replace("/", "_")
    return _PATHS.get(name, "/arrays/" + name.replace("/", "_"))


@dataclass(frozen=True, eq=False)
class VerificationFile:
    """What a verification file holds: the result (a :class:`~embplan.verify.VerificationResult`), the grid, the
    transform (fixed = planning frame -> moving = post frame) and the arrays with their units."""

    result: Any
    grid: Any
    transform: Any
    arrays: dict[str, np.ndarray]
    units: dict[str, str]
    attrs: dict[str, Any]


def _dataset(parent: h5py.Group, name: str, data: np.ndarray, units: str) -> h5py.Dataset:
    data = np.asarray(data)
    dset = parent.create_dataset(name, data=data, **_FILTERS) if data.size and data.ndim else \
        parent.create_dataset(name, data=data)
    dset.attrs["units"] = units
    return dset


def _text(parent: h5py.Group, name: str, data: bytes) -> None:
    parent.create_dataset(name, data=data.decode("utf-8"), dtype=_STR).attrs["units"] = "json"


def _attr(attrs: h5py.AttributeManager, key: str, value: Any) -> None:
    if value is None:
        attrs[f"{key}_json"] = "null"
    elif isinstance(value, bool | int | float | str):
        attrs[key] = value
    else:
        attrs[f"{key}_json"] = compact_json_bytes(value).decode("utf-8")


def save_verification(verification: Any, path: str | os.PathLike[str]) -> Path:
    """Write a :class:`~embplan.verify.Verification` to ``path`` atomically (nothing is left on failure)."""
    from .. import __version__
    from ..verify import Verification

    if not isinstance(verification, Verification):
        raise PlanFileError(f"verification: expected an embplan Verification, got {type(verification).__name__}")
    v = verification
    res_json = compact_json_bytes(v.result.model_dump(mode="json"))
    meta = {
        "grid": v.grid.model_dump(mode="json"),
        "transform": v.transform.as_dict(),
        "units": dict(v.units),
        "paths": {name: _path(name) for name in v.arrays},
    }
    meta_json = compact_json_bytes(meta)
    digest = content_sha256(res_json, meta_json, v.arrays)
    with atomic_output(path, error=PlanFileError, what="verification") as tmp:
        with h5py.File(tmp, "w", libver=("earliest", "latest")) as h5:
            a = h5.attrs
            a["format"] = FORMAT_NAME
            a["format_version"] = FORMAT_VERSION
            a["created_utc"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
            a["software"] = "embplan"
            a["software_version"] = __version__
            a["content_sha256"] = digest
            a["axis_order"] = "z,y,x"
            _text(h5, "verification_json", res_json)
            _text(h5, "meta_json", meta_json)
            for name in sorted(v.arrays):
                group, _, leaf = meta["paths"][name].rpartition("/")
                dset = _dataset(h5.require_group(group or "/"), leaf, v.arrays[name], v.units[name])
                dset.attrs["name"] = name
            _views(h5, v)
    return Path(path)


def _views(h5: h5py.File, v: Any) -> None:
    r = v.result
    g = h5.create_group("grid")
    g.attrs["axis_order"] = "z,y,x"
    g.attrs["affine_maps"] = "(k, j, i, 1) index (z, y, x order) -> patient (x, y, z, 1) mm, DICOM LPS, planning frame"
    for name, data, units in (("affine", v.grid.affine, "mm"), ("shape", np.asarray(v.grid.shape), "voxel"),
                              ("spacing_mm", np.asarray(v.grid.spacing_mm), "mm"),
                              ("origin_mm", np.asarray(v.grid.origin_mm), "mm"),
                              ("direction", np.asarray(v.grid.direction).reshape(3, 3), "1")):
        g.create_dataset(name, data=data).attrs["units"] = units
    reg = h5.create_group("registration")
    reg.attrs["source"] = r.registration.get("source", "")
    for key, value in (r.registration.get("quality") or {}).items():
        _attr(reg.attrs, key, value)
    _attr(reg.attrs, "transform", r.registration.get("transform"))
    d = h5.create_group("delivered")
    for key, value in r.delivered.model_dump(mode="json").items():
        _attr(d.attrs, key, value)
    d.attrs["lung_shunt_planned_fraction"] = r.lung_shunt_planned_fraction
    d.attrs["lung_shunt_delivered_fraction"] = r.lung_shunt_delivered_fraction
    d.attrs["activity_outside_fraction"] = r.activity_outside_fraction
    s = h5.create_group("structures")
    dvh = {p.structure: p for p in r.dvh}
    for row in r.structures:
        sg = s.create_group(row.structure.replace("/", "_"))
        for key, value in row.model_dump(mode="json").items():
            _attr(sg.attrs, key, value)
        pair = dvh.get(row.structure)
        if pair is not None:
            _dataset(sg, "planned_dvh_dose_gy", np.asarray(pair.planned_dose_gy), "Gy")
            _dataset(sg, "planned_dvh_volume_fraction", np.asarray(pair.planned_volume_fraction), "1")
            _dataset(sg, "delivered_dvh_dose_gy", np.asarray(pair.delivered_dose_gy), "Gy")
            _dataset(sg, "delivered_dvh_volume_fraction", np.asarray(pair.delivered_volume_fraction), "1")
    f = h5.create_group("flags")
    f.attrs["count"] = len(r.flags)
    for i, flag in enumerate(r.flags):
        fg = f.create_group(f"{i:04d}")
        for key, value in flag.model_dump(mode="json").items():
            _attr(fg.attrs, key, value)
    _text(h5, "prior_treatment_json", compact_json_bytes(r.prior_treatment))


def _str_attr(attrs: h5py.AttributeManager, key: str) -> str | None:
    value = attrs.get(key)
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _read_text(h5: h5py.File, name: str, source: str) -> bytes:
    if name not in h5 or not isinstance(h5[name], h5py.Dataset) or h5[name].shape != ():
        raise PlanFileError(f"{source}: missing or malformed dataset /{name}")
    value = h5[name][()]
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def load_verification(path: str | os.PathLike[str]) -> VerificationFile:
    """Read a verification file (checksum verified); PlanFileError naming the file and the reason otherwise."""
    from ..grid import Grid
    from ..imaging.registration import RigidTransform
    from ..verify import VerificationResult

    p = Path(path)
    source = str(p)
    if not p.is_file():
        raise PlanFileError(f"{source}: no such file")
    try:
        if not h5py.is_hdf5(p):
            raise PlanFileError(f"{source}: not an HDF5 file: not an embplan verification")
        h5 = h5py.File(p, "r")
    except OSError as exc:
        raise PlanFileError(f"{source}: cannot open as HDF5 ({exc})") from exc
    try:
        with h5:
            fmt = _str_attr(h5.attrs, "format")
            if fmt != FORMAT_NAME:
                raise PlanFileError(f"{source}: not an embplan verification file (format {fmt!r})")
            version = _str_attr(h5.attrs, "format_version") or ""
            if version.split(".")[0] != FORMAT_VERSION.split(".")[0]:
                raise PlanFileError(f"{source}: format {version} is not readable by this embplan ({FORMAT_VERSION})")
            res_json = _read_text(h5, "verification_json", source)
            meta_json = _read_text(h5, "meta_json", source)
            meta = json.loads(meta_json.decode("utf-8"))
            arrays = {}
            for name, dpath in meta["paths"].items():
                if dpath not in h5:
                    raise PlanFileError(f"{source}: missing dataset {dpath}")
                arrays[name] = np.asarray(h5[dpath][()])
            stored = _str_attr(h5.attrs, "content_sha256")
            if stored != content_sha256(res_json, meta_json, arrays):
                raise PlanFileError(f"{source}: checksum mismatch (the file was altered or damaged)")
            attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in h5.attrs.items()}
    except PlanFileError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise PlanFileError(f"{source}: damaged verification file: {type(exc).__name__}: {exc}") from exc
    try:
        result = VerificationResult.model_validate_json(res_json)
        grid = Grid(**meta["grid"])
        t = meta["transform"]
        transform = RigidTransform(tuple(v for row in t["rotation_matrix"] for v in row), tuple(t["translation_mm"]),
                                   tuple(t["center_mm"]))
    except Exception as exc:
        raise PlanFileError(f"{source}: the verification content does not validate ({exc})") from exc
    return VerificationFile(result=result, grid=grid, transform=transform, arrays=arrays, units=dict(meta["units"]),
                            attrs=attrs)


def verify_files(plan_path: str | os.PathLike[str], post_path: str | os.PathLike[str],
                 output: str | os.PathLike[str] | None = None, *, options: Any = None) -> Any:
    """:func:`embplan.verify.verify` from the files: read the plan (checksum verified), verify ``post.json``
    against it and, with ``output``, write the verification archive. Returns the
    :class:`~embplan.verify.Verification`. Nothing is written on failure."""
    from ..verify import load_post, verify
    from .hdf5 import load_plan, read_document

    if output is not None:
        from . import check_output_path

        check_output_path(output, error=PlanFileError, what="verification")
    post = load_post(post_path)
    doc = read_document(plan_path, verify=True)
    plan = load_plan(plan_path)
    sha = doc.attrs.get("content_sha256")
    v = verify(plan, post, options=options, plan_sha256=str(sha) if sha else None)
    if output is not None:
        save_verification(v, output)
    return v
