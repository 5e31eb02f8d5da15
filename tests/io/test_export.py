"""Exports read back by independent readers: SimpleITK for NRRD / NIfTI (plus the NIfTI header's raw bytes),
pydicom for SEG and RT Dose; arrays equal to the plan's, orientation checked with a marker in one corner of an
asymmetric, flipped, off-origin grid."""

from __future__ import annotations

import gzip
import json
import struct

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from embplan.cli import main
from embplan.grid import Grid
from embplan.io.export import export_plan, export_volumes
from embplan.io.hdf5 import save_plan
from embplan.plan_model import VoxelData
from tests.plan_factory import build_plan

#: a feet-first-like grid: k runs to the patient's inferior, i to the patient's right; anisotropic; off-origin
_DIRECTION = (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
_SHAPE = (7, 6, 5)
_MARKER = (0, 0, 4)  # (k, j, i): one corner only


@pytest.fixture(scope="module")
def plan():
    p = build_plan(shape=_SHAPE)
    v = p.voxel
    grid = Grid(shape=_SHAPE, spacing_mm=(4.0, 3.5, 3.0), origin_mm=(50.0, -20.0, 100.0), direction=_DIRECTION)
    arrays = dict(v.arrays)
    marker = np.zeros(_SHAPE, bool)
    marker[_MARKER] = True
    arrays["mask_marker"] = marker
    dose = np.array(arrays["dose_vsv_density_gy"], dtype=float)
    dose[_MARKER] = 999.25  # the hottest voxel is the marker
    arrays["dose_vsv_density_gy"] = dose
    units = dict(v.units) | {"mask_marker": "1"}
    reference = {"patient_id": "PAT-15", "patient_name": "Test^Export", "study_instance_uid": "1.2.3.4.5",
                 "frame_of_reference_uid": "1.2.3.4.5.6", "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2",
                 "sop_instance_uids": ["1.2.3.4.5.7", "1.2.3.4.5.8"]}
    attrs = dict(v.attributes) | {"images": {"rt_dose_reference": reference}}
    return p.model_copy(update={"voxel": VoxelData(grid, arrays, units, attrs)})


def _marker_mm(plan) -> np.ndarray:
    return plan.voxel.grid.index_to_patient_mm(np.array(_MARKER, dtype=float))


@pytest.mark.parametrize("fmt, ext", [("nrrd", ".nrrd"), ("nifti", ".nii.gz")])
def test_volumes_read_back_equal_and_in_place(plan, tmp_path, fmt, ext):
    out = tmp_path / fmt
    paths = export_volumes(plan, out, fmt)
    names = sorted(p.name for p in paths)
    v = plan.voxel
    expected = sorted([f"dose_{m}_gy{ext}" for m in v.dose_maps()] + [f"ct_hu{ext}", f"density_g_cm3{ext}"]
                      + [f"mask_{m}{ext}" for m in v.masks()])
    assert names == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == [fmt]  # no staging folder left behind
    for name, arr in [("dose_vsv_density_gy", v.arrays["dose_vsv_density_gy"]), ("ct_hu", v.arrays["ct_hu"]),
                      ("mask_marker", v.arrays["mask_marker"]), ("mask_liver", v.arrays["mask_liver"])]:
        img = sitk.ReadImage(str(out / f"{name}{ext}"))
        back = sitk.GetArrayFromImage(img)
        assert back.shape == _SHAPE
        np.testing.assert_array_equal(back, np.asarray(arr).astype(back.dtype))
        if name.startswith("dose"):
            assert back.dtype == np.float64  # full precision
    img = sitk.ReadImage(str(out / f"mask_marker{ext}"))
    (k, j, i), = np.argwhere(sitk.GetArrayFromImage(img))
    assert (int(k), int(j), int(i)) == _MARKER
    # ITK's physical point (LPS) of the marker's (i, j, k) index is where the plan puts it
    np.testing.assert_allclose(img.TransformIndexToPhysicalPoint((int(i), int(j), int(k))), _marker_mm(plan),
                               atol=1e-4)
    np.testing.assert_allclose(img.GetSpacing(), (3.0, 3.5, 4.0))


def test_nifti_header_is_ras(plan, tmp_path):
    """Read the NIfTI-1 sform rows from the raw header bytes: they map (i, j, k) to RAS = (-x, -y, z) of LPS."""
    export_volumes(plan, tmp_path / "n", "nifti")
    raw = gzip.decompress((tmp_path / "n" / "mask_marker.nii.gz").read_bytes())
    assert struct.unpack("<i", raw[:4])[0] == 348
    sform_code = struct.unpack("<h", raw[254:256])[0]
    assert sform_code > 0
    rows = [np.array(struct.unpack("<4f", raw[o:o + 16])) for o in (280, 296, 312)]
    ijk1 = np.array([_MARKER[2], _MARKER[1], _MARKER[0], 1.0])
    ras = np.array([r @ ijk1 for r in rows])
    lps = _marker_mm(plan)
    np.testing.assert_allclose(ras, [-lps[0], -lps[1], lps[2]], atol=1e-3)


def test_nrrd_header_is_lps(plan, tmp_path):
    export_volumes(plan, tmp_path / "r", "nrrd")
    head = (tmp_path / "r" / "mask_marker.nrrd").read_bytes().split(b"\n\n", 1)[0].decode("ascii")
    assert "space: left-posterior-superior" in head
    assert "space origin: (50,-20,100)" in head.replace(" ", "").replace("spaceorigin:", "space origin: ")


def test_seg_reads_back_equal_in_the_ct_frame(plan, tmp_path):
    out = tmp_path / "seg.dcm"
    info = export_plan(plan, out, "seg")
    assert info["reference"] == "stored"
    ds = pydicom.dcmread(out)
    assert ds.Modality == "SEG" and ds.SegmentationType == "BINARY"
    assert ds.FrameOfReferenceUID == "1.2.3.4.5.6" and ds.PatientID == "PAT-15"
    assert ds.StudyInstanceUID == "1.2.3.4.5"
    refs = [r.ReferencedSOPInstanceUID for s in ds.ReferencedSeriesSequence for r in s.ReferencedInstanceSequence]
    assert refs == ["1.2.3.4.5.7"]
    labels = {int(s.SegmentNumber): s.SegmentLabel for s in ds.SegmentSequence}
    masks = plan.voxel.masks()
    assert sorted(labels.values()) == sorted(n.replace("_", " ") for n in masks)
    shared = ds.SharedFunctionalGroupsSequence[0]
    iop = [float(x) for x in shared.PlaneOrientationSequence[0].ImageOrientationPatient]
    np.testing.assert_allclose(iop, [-1, 0, 0, 0, 1, 0])
    assert [float(x) for x in shared.PixelMeasuresSequence[0].PixelSpacing] == [3.5, 3.0]
    # rebuild every mask from the frames: the segment number and the frame's position give (segment, k)
    grid = plan.voxel.grid
    frames = ds.pixel_array.reshape(-1, _SHAPE[1], _SHAPE[2])
    rebuilt = {name: np.zeros(_SHAPE, bool) for name in labels.values()}
    for f, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        seg = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        pos = np.array([float(x) for x in item.PlanePositionSequence[0].ImagePositionPatient])
        kf, jf, i_f = grid.patient_mm_to_index(pos)
        assert abs(jf) < 1e-6 and abs(i_f) < 1e-6
        rebuilt[labels[seg]][int(round(kf))] = frames[f].astype(bool)
    for name, m in masks.items():
        np.testing.assert_array_equal(rebuilt[name.replace("_", " ")], m)


def test_rtdose_via_export(plan, tmp_path):
    out = tmp_path / "dose.dcm"
    info = export_plan(plan, out, "rtdose")
    ds = pydicom.dcmread(out)
    assert ds.FrameOfReferenceUID == "1.2.3.4.5.6" and info["method"] == "vsv_density"
    dose = ds.pixel_array * float(ds.DoseGridScaling)
    # here k runs along the slice normal i x j = (0, 0, -1): frames in the plan's k order
    np.testing.assert_allclose(dose, plan.voxel.arrays["dose_vsv_density_gy"], atol=float(ds.DoseGridScaling))
    (k, j, i), = np.argwhere(dose == dose.max())
    pos = np.array([float(x) for x in ds.ImagePositionPatient])
    row, col = np.array(ds.ImageOrientationPatient[:3], float), np.array(ds.ImageOrientationPatient[3:], float)
    where = pos + i * float(ds.PixelSpacing[1]) * row + j * float(ds.PixelSpacing[0]) * col + float(
        ds.GridFrameOffsetVector[k]) * np.cross(row, col)
    np.testing.assert_allclose(where, _marker_mm(plan), atol=1e-6)


def test_cli_export_and_failures(plan, tmp_path, capsys):
    pf = tmp_path / "plan.h5"
    save_plan(plan, pf)
    assert main(["export", str(pf), "--format", "nifti", "-o", str(tmp_path / "nii"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["written"]) == len(list((tmp_path / "nii").iterdir()))
    assert main(["export", str(pf), "--format", "seg", "-o", str(tmp_path / "s.dcm")]) == 0
    capsys.readouterr()
    # bad format, plan without images, missing folder: exit 1, one line, nothing written
    assert main(["export", str(pf), "--format", "png", "-o", str(tmp_path / "x")]) == 1
    assert "--format" in capsys.readouterr().err
    bare = tmp_path / "bare.h5"
    save_plan(build_plan(with_voxels=False), bare)
    for fmt, target in (("seg", tmp_path / "b.dcm"), ("nrrd", tmp_path / "bn"), ("rtdose", tmp_path / "bd.dcm")):
        assert main(["export", str(bare), "--format", fmt, "-o", str(target)]) == 1
        err = capsys.readouterr().err
        assert err.startswith("embplan: error:") and "Traceback" not in err
        assert not target.exists()
    assert main(["export", str(pf), "--format", "nrrd", "-o", str(tmp_path / "no" / "where")]) == 1
    assert not (tmp_path / "no").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bare.h5", "nii", "plan.h5", "s.dcm"]


def _highdicom_masks(path, grid):
    """The SEG read with highdicom's own volume reader, its axes turned to the plan grid's where reversed."""
    import highdicom as hd

    seg = hd.seg.segread(path)
    vol = seg.get_volume(combine_segments=False)
    arr, aff, ref = vol.array, vol.affine.copy(), grid.affine
    for a in range(3):
        if np.allclose(aff[:3, a], -ref[:3, a]):
            aff[:3, 3] += aff[:3, a] * (arr.shape[a] - 1)
            aff[:3, a] *= -1
            arr = np.flip(arr, axis=a)
    np.testing.assert_allclose(aff, ref, atol=1e-6)
    labels = [s.SegmentLabel for s in seg.SegmentSequence]
    return {label: arr[..., n].astype(bool) for n, label in enumerate(labels)}


def test_seg_reads_back_with_highdicom(plan, tmp_path):
    out = tmp_path / "seg.dcm"
    export_plan(plan, out, "seg")
    masks = _highdicom_masks(out, plan.voxel.grid)
    for name, m in plan.voxel.masks().items():
        np.testing.assert_array_equal(masks[name.replace("_", " ")], m)
