"""The plan archive: exact round trip, documented layout, checksum, versions, damage and atomic writes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from embplan.errors import EmbplanError, PlanFileError
from embplan.io import hdf5
from embplan.io.hdf5 import FORMAT_VERSION, load_plan, save_plan
from tests.plan_factory import build_plan


@pytest.fixture(scope="module")
def plan():
    return build_plan()


@pytest.fixture(scope="module")
def plan_file(plan, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("plans") / "plan.h5"
    save_plan(plan, path)
    return path


@pytest.fixture
def copy_of(plan_file, tmp_path):
    def make(name: str = "copy.h5") -> Path:
        dst = tmp_path / name
        shutil.copyfile(plan_file, dst)
        return dst

    return make


def _recipe_sha256(f: h5py.File) -> str:
    """The checksum recipe of docs/plan-format.md, written out independently of embplan."""
    h = hashlib.sha256()

    def field(b: bytes) -> None:
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)

    plan_json, meta_json = f["plan_json"][()], f["meta_json"][()]
    field(plan_json)
    field(meta_json)
    voxel = json.loads(meta_json)["voxel"] or {"paths": {}}
    for name in sorted(voxel["paths"]):
        a = np.ascontiguousarray(f[voxel["paths"][name]][()])
        for part in (name.encode(), a.dtype.str.encode(), ",".join(map(str, a.shape)).encode(), a.tobytes()):
            field(part)
    return h.hexdigest()


def _set_checksum(path: Path) -> None:
    """Re-seal an edited file: the content checksum by the documented recipe, then the whole-file checksum."""
    with h5py.File(path, "r+") as f:
        f.attrs["content_sha256"] = _recipe_sha256(f)
    hdf5.seal_file(path)


# ----------------------------------------------------------------------------------------------- round trip
def test_round_trip_is_exact(plan, plan_file):
    loaded = load_plan(plan_file)
    assert loaded == plan
    assert loaded.model_dump(mode="json") == plan.model_dump(mode="json")
    assert list(loaded.dosimetry.dvh) == list(plan.dosimetry.dvh) == ["tumors", "normal_liver"]  # order kept
    assert list(loaded.case_source) == list(plan.case_source)
    assert loaded.voxel is not None and plan.voxel is not None
    assert loaded.voxel.grid == plan.voxel.grid
    assert loaded.voxel.units == plan.voxel.units
    assert loaded.voxel.attributes == plan.voxel.attributes
    assert sorted(loaded.voxel.arrays) == sorted(plan.voxel.arrays)
    for name, a in plan.voxel.arrays.items():
        b = loaded.voxel.arrays[name]
        assert b.dtype == a.dtype, name
        assert b.shape == a.shape, name
        assert b.tobytes() == a.tobytes(), name  # bitwise
    # the thresholds the case overrode are still the overridden ones
    assert loaded.thresholds.overridden() == plan.thresholds.overridden() == {"lung_dose_session_limit_gy": 25.0}
    assert loaded.thresholds.describe() == plan.thresholds.describe()
    assert loaded.case.model_fields_set == plan.case.model_fields_set
    assert loaded.case.source_json == plan.case.source_json  # the case as given, byte for byte


def test_round_trip_changes_are_seen(plan, plan_file):
    """Equality is not vacuous: a plan that differs in one voxel is not equal."""
    loaded = load_plan(plan_file)
    arrays = dict(loaded.voxel.arrays)
    dose = arrays["dose_ldm_gy"].copy()
    dose[0, 0, 0] = np.nextafter(dose[0, 0, 0], np.inf)
    arrays["dose_ldm_gy"] = dose
    from embplan.plan_model import VoxelData

    other = loaded.model_copy(update={"voxel": VoxelData(loaded.voxel.grid, arrays, dict(loaded.voxel.units),
                                                         dict(loaded.voxel.attributes))})
    assert other != plan


def test_round_trip_without_voxels_or_dosimetry(tmp_path):
    for kw in ({"with_voxels": False}, {"with_voxels": False, "with_dosimetry": False}):
        p = build_plan(**kw)
        path = tmp_path / "p.h5"
        save_plan(p, path)
        q = load_plan(path)
        assert q == p
        assert q.voxel is None
        with h5py.File(path) as f:
            assert "grid" not in f and "masks" not in f and "dose" not in f
            assert ("dosimetry" in f) == kw.get("with_dosimetry", True)


def test_returns_path_and_overwrites(plan, tmp_path):
    path = tmp_path / "p.h5"
    assert save_plan(build_plan(with_voxels=False), path) == path
    save_plan(plan, path)
    assert load_plan(path) == plan


# ----------------------------------------------------------------------------------------------- layout
def test_root_attributes(plan_file):
    with h5py.File(plan_file) as f:
        a = f.attrs
        assert a["format"] == "embplan.plan"
        assert a["format_version"] == FORMAT_VERSION
        assert a["created_utc"].endswith("Z")
        assert a["software"] == "embplan"
        deps = json.loads(a["dependency_versions_json"])
        assert {"numpy", "h5py", "hdf5", "python"} <= set(deps)
        assert a["content_sha256"] == _recipe_sha256(f)  # the documented recipe


def test_every_dataset_has_units_and_arrays_are_filtered(plan_file):
    seen = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            seen.append(name)
            assert "units" in obj.attrs, name
            if obj.ndim >= 1 and obj.size and obj.dtype.kind in "fiub":
                is_array = name.split("/")[0] in ("images", "masks", "dose", "dvh")
                if is_array:
                    assert obj.compression == "gzip" and obj.shuffle and obj.fletcher32, name

    with h5py.File(plan_file) as f:
        f.visititems(visit)
    assert {"plan_json", "meta_json", "case/source_json", "dose/vsv_density", "masks/liver", "images/ct_hu",
            "grid/affine", "dvh/tumors/dose_gy", "dvh/tumors/volume_fraction"} <= set(seen)


def test_readable_views_for_plain_h5py(plan, plan_file):
    with h5py.File(plan_file) as f:
        assert json.loads(f["plan_json"][()])["dosimetry"]["activity_gbq"] == plan.dosimetry.activity_gbq
        assert json.loads(f["case/source_json"][()]) == plan.case_source
        # arrays: values, units, dtypes
        assert np.array_equal(f["dose/vsv_density"][()], plan.voxel.arrays["dose_vsv_density_gy"])
        assert f["dose/vsv_density"].attrs["units"] == "Gy"
        assert json.loads(f["dose/vsv_density"].attrs["kernel_json"]) == plan.provenance.kernel
        assert f["masks/liver"].dtype == np.bool_
        assert f["images/ct_hu"].attrs["units"] == "HU"
        assert f["images/tia_mbq_s"].attrs["units"] == "MBq s"
        # grid
        assert np.array_equal(f["grid/affine"][()], plan.voxel.grid.affine)
        assert tuple(f["grid/shape"][()]) == plan.voxel.grid.shape
        assert tuple(f["grid/spacing_mm"][()]) == plan.voxel.grid.spacing_mm
        # flags in plan order, with evidence and context
        groups = [f["flags"][k] for k in sorted(f["flags"])]
        assert f["flags"].attrs["count"] == len(plan.flags) == len(groups)
        for g, flag in zip(groups, plan.flags, strict=True):
            assert g.attrs["code"] == flag.code
            assert g.attrs["severity"] == flag.severity.value
            assert g.attrs["severity_rank"] == flag.severity.rank
            assert g.attrs["evidence"] == flag.evidence
            assert json.loads(g.attrs["context_json"]) == flag.context
        # thresholds
        t = f["thresholds/lung_dose_session_limit_gy"]
        assert t[()] == 25.0 and t.attrs["units"] == "Gy" and bool(t.attrs["overridden"])
        assert not bool(f["thresholds/lung_dose_cumulative_limit_gy"].attrs["overridden"])
        assert len(f["thresholds"]) == len(plan.thresholds.describe())
        # provenance and dosimetry
        assert f["provenance"].attrs["embplan_version"] == plan.provenance.embplan_version
        assert f["dosimetry/activity_gbq"][()] == plan.dosimetry.activity_gbq
        assert f["dosimetry/activity_gbq"].attrs["units"] == "GBq"
        rec = plan.dosimetry.dvh["tumors"]
        assert list(f["dvh/tumors/dose_gy"][()]) == rec.dose_gy
        assert list(f["dvh/tumors/volume_fraction"][()]) == rec.volume_fraction
        assert json.loads(f["dvh/tumors"].attrs["d_gy_json"]) == rec.d_gy


# ----------------------------------------------------------------------------------------------- damage
def test_flipped_byte_in_a_dose_chunk(copy_of):
    path = copy_of()
    with h5py.File(path) as f:
        dset = f["dose/vsv_density"]
        assert dset.chunks is not None
        info = dset.id.get_chunk_info(0)
        offset = info.byte_offset + info.size // 2
    with open(path, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0x01]))
    with pytest.raises(PlanFileError, match="checksum mismatch"):  # the whole-file checksum, before libhdf5
        load_plan(path)
    hdf5.seal_file(path)  # re-sealed: the chunk's Fletcher32 still catches it, naming the dataset
    with pytest.raises(PlanFileError, match="/dose/vsv_density"):
        load_plan(path)


@pytest.mark.parametrize("fraction", [0.05, 0.5, 0.9, 0.999])
def test_truncated_file(copy_of, fraction):
    path = copy_of()
    os.truncate(path, int(path.stat().st_size * fraction))
    with pytest.raises(PlanFileError) as err:
        load_plan(path)
    assert str(path) in str(err.value)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.h5"
    path.write_bytes(b"")
    with pytest.raises(PlanFileError, match="not an HDF5 file"):
        load_plan(path)


def test_text_file(tmp_path):
    path = tmp_path / "plan.h5"
    path.write_text("this is not a plan\n")
    with pytest.raises(PlanFileError, match="not an HDF5 file"):
        load_plan(path)


def test_foreign_hdf5(tmp_path):
    path = tmp_path / "foreign.h5"
    with h5py.File(path, "w") as f:
        f["data"] = np.arange(10)
    with pytest.raises(PlanFileError, match="not an embplan plan file"):
        load_plan(path)
    with h5py.File(path, "r+") as f:
        f.attrs["format"] = "something.else"
    with pytest.raises(PlanFileError, match="not an embplan plan file"):
        load_plan(path)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(PlanFileError, match="no such file"):
        load_plan(tmp_path / "nothing.h5")
    with pytest.raises(PlanFileError, match="folder"):
        load_plan(tmp_path)


def test_altered_json_fails_the_checksum(copy_of, plan):
    path = copy_of()
    with h5py.File(path, "r+") as f:
        doc = json.loads(f["plan_json"][()])
        doc["dosimetry"]["activity_gbq"] = 9.99
        del f["plan_json"]
        f.create_dataset("plan_json", data=json.dumps(doc, sort_keys=True, separators=(",", ":")),
                         dtype=h5py.string_dtype())
        f["plan_json"].attrs["units"] = "json"
    with pytest.raises(PlanFileError, match="checksum mismatch"):
        load_plan(path)
    _set_checksum(path)  # re-sealed with the documented recipe: it loads, with the edit
    assert load_plan(path).dosimetry.activity_gbq == 9.99


def test_altered_array_fails_the_checksum(copy_of):
    path = copy_of()
    with h5py.File(path, "r+") as f:
        f["dose/ldm"][0, 0, 0] = 1.0e6  # a valid, rewritten chunk (Fletcher32 recomputed)
    with pytest.raises(PlanFileError, match="checksum mismatch"):
        load_plan(path)


def test_missing_dataset(copy_of):
    path = copy_of()
    with h5py.File(path, "r+") as f:
        del f["masks/liver"]
    with pytest.raises(PlanFileError, match="checksum mismatch"):
        load_plan(path)
    hdf5.seal_file(path)  # the whole-file checksum re-sealed: the missing array is named
    with pytest.raises(PlanFileError, match="missing dataset /masks/liver"):
        load_plan(path)


def test_errors_are_embplan_errors(plan, tmp_path):
    assert issubclass(PlanFileError, EmbplanError)
    with pytest.raises(PlanFileError, match="plan: expected an embplan Plan"):
        save_plan({"not": "a plan"}, tmp_path / "x.h5")
    with pytest.raises(PlanFileError, match="gzip_level"):
        save_plan(plan, tmp_path / "x.h5", gzip_level=12)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------------- versions
def test_newer_major_is_refused(copy_of):
    path = copy_of()
    with h5py.File(path, "r+") as f:
        f.attrs["format_version"] = "2.0"
    hdf5.seal_file(path)  # as a newer embplan would write it
    with pytest.raises(PlanFileError, match="written by a newer embplan"):
        load_plan(path)


def test_newer_minor_is_read(copy_of, plan):
    path = copy_of()
    with h5py.File(path, "r+") as f:
        f.attrs["format_version"] = "1.7"
    _set_checksum(path)  # as a newer minor would write it
    assert load_plan(path) == plan


@pytest.mark.parametrize("bad", ["1", "one.two", "1.1.1", ""])
def test_malformed_version(copy_of, bad):
    path = copy_of()
    with h5py.File(path, "r+") as f:
        f.attrs["format_version"] = bad
    hdf5.seal_file(path)
    with pytest.raises(PlanFileError, match="format_version"):
        load_plan(path)


def _downgrade_to_1_0(path: Path, mask_value: int = 1) -> None:
    """Rewrite a 1.1 file as format 1.0 wrote it: masks as uint8 0/1, version "1.0", checksum of that content."""
    with h5py.File(path, "r+") as f:
        for name in list(f["masks"]):
            data = f["masks"][name][()].astype(np.uint8) * np.uint8(mask_value)
            attrs = dict(f["masks"][name].attrs)
            del f["masks"][name]
            d = f["masks"].create_dataset(name, data=data, compression="gzip", shuffle=True, fletcher32=True)
            d.attrs.update(attrs)
        f.attrs["format_version"] = "1.0"
    _set_checksum(path)


def test_older_minor_is_migrated(copy_of, plan):
    path = copy_of()
    _downgrade_to_1_0(path)
    with h5py.File(path) as f:
        assert f["masks/liver"].dtype == np.uint8
    loaded = load_plan(path)
    assert loaded == plan
    assert all(m.dtype == np.bool_ for m in loaded.voxel.masks().values())


def test_migration_rejects_non_binary_masks(copy_of):
    path = copy_of()
    _downgrade_to_1_0(path, mask_value=3)
    with pytest.raises(PlanFileError, match="other than 0 and 1"):
        load_plan(path)


def test_migration_function_directly():
    doc = hdf5.PlanDocument(plan={}, meta={"voxel": None, "fields_set": []},
                            arrays={"mask_a": np.array([[[0, 1]]], dtype=np.uint8),
                                    "ct_hu": np.zeros((1, 1, 2), np.uint8)}, format_version="1.0")
    out = hdf5.MIGRATIONS[(1, 0)](doc)
    assert out.format_version == "1.1"
    assert out.arrays["mask_a"].dtype == np.bool_ and out.arrays["mask_a"].tolist() == [[[False, True]]]
    assert out.arrays["ct_hu"].dtype == np.uint8  # only masks change


# ----------------------------------------------------------------------------------------------- atomic writes
def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_failure_mid_write_keeps_the_old_file(plan, tmp_path, monkeypatch):
    path = tmp_path / "plan.h5"
    old = build_plan(with_voxels=False)
    save_plan(old, path)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(hdf5, "_write_views", boom)  # after the arrays went into the temporary file
    with pytest.raises(PlanFileError, match="disk on fire"):
        save_plan(plan, path)
    assert path.read_bytes() == before
    assert load_plan(path) == old
    assert _leftovers(tmp_path) == []


def test_failure_at_replace_keeps_the_old_file(plan, tmp_path, monkeypatch):
    path = tmp_path / "plan.h5"
    old = build_plan(with_voxels=False)
    save_plan(old, path)
    before = path.read_bytes()

    def no_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", no_replace)
    with pytest.raises(PlanFileError, match="No space left"):
        save_plan(plan, path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert _leftovers(tmp_path) == []


def test_interrupt_leaves_no_temporary_file(plan, tmp_path, monkeypatch):
    path = tmp_path / "plan.h5"

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(hdf5, "_write_views", interrupt)
    with pytest.raises(KeyboardInterrupt):
        save_plan(plan, path)
    assert not path.exists()
    assert _leftovers(tmp_path) == []


def test_unwritable_destination(plan, tmp_path):
    with pytest.raises(PlanFileError, match="does not exist"):
        save_plan(plan, tmp_path / "no" / "such" / "plan.h5")
    with pytest.raises(PlanFileError, match="folder"):
        save_plan(plan, tmp_path)


# ----------------------------------------------------------------------------------------------- generic machinery
_DTYPES = ["<f8", "<f4", ">f8", "<i2", "<i8", "|u1", "|b1", "<c16"]


@given(
    dtype=st.sampled_from(_DTYPES),
    shape=st.tuples(st.integers(1, 4), st.integers(1, 5), st.integers(1, 3)),
    seed=st.integers(0, 2**32 - 1),
)
def test_document_arrays_round_trip_bitwise(tmp_path_factory, dtype, shape, seed):
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, size=int(np.prod(shape)) * np.dtype(dtype).itemsize, dtype=np.uint8)
    # any bit pattern (NaN payloads, signed zeros, subnormals included)
    a = raw.view(np.dtype(dtype)).reshape(shape) if dtype != "|b1" else (raw.reshape(shape) > 127)
    meta = {"voxel": {"grid": {"shape": list(shape)}, "units": {"x": "1"}, "paths": {"x": "/images/x"},
                      "attributes": {}},
            "fields_set": []}
    doc = hdf5.PlanDocument(plan={"k": "v"}, meta=meta, arrays={"x": a})
    path = tmp_path_factory.mktemp("doc") / "d.h5"
    with h5py.File(path, "w", userblock_size=hdf5.USERBLOCK_BYTES) as f:
        hdf5.write_document(f, doc)
    hdf5.seal_file(path)
    back = hdf5.read_document(path)
    assert back.arrays["x"].dtype == a.dtype
    assert back.arrays["x"].tobytes() == a.tobytes()
    assert back.plan == {"k": "v"}


def test_content_hash_distinguishes_parts():
    a = np.zeros((2, 2, 2))
    base = hdf5.content_sha256(b"{}", b"{}", {"x": a})
    assert hdf5.content_sha256(b"{}", b"{}", {"y": a}) != base  # name
    assert hdf5.content_sha256(b"{}", b"{}", {"x": a.astype("<f4")}) != base  # dtype
    assert hdf5.content_sha256(b"{}", b"{}", {"x": a.reshape(2, 4, 1)}) != base  # shape
    assert hdf5.content_sha256(b"{} ", b"{}", {"x": a}) != base  # plan JSON
    assert hdf5.content_sha256(b"{}", b"{}", {"x": a}) == base
    # length prefixes: moving a byte from one part to the next changes the hash
    assert hdf5.content_sha256(b"{}x", b"{}", {}) != hdf5.content_sha256(b"{}", b"x{}", {})
