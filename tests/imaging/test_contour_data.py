"""ContourData (3006,0050) read from the raw element bytes equals pydicom's own DS values, whatever the formatting
of the decimal strings; what is not a decimal string is an error naming the tag."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from embplan.errors import ImagingError
from embplan.imaging.dicom import _ds_values, read_rtstruct

try:  # tests/imaging as a package or as a plain folder on sys.path
    from . import dicom_factory as fac
except ImportError:  # pragma: no cover
    import dicom_factory as fac

#: decimal strings as scanners and TPSs write them (each at most 16 characters, PS3.5 VR DS)
ODD = [" 1.5", "1.5 ", "  -2.25", "+3.0", "+.5", "-.75", "5.", "12", "-0", "0.0", "1e3", "1E3", "-1.5E-02",
       "+2.5e+01", "7.125e-1", "-110.9999999", "1.23456789012e2", "000012.5", "-0.000001"]


@pytest.fixture
def study():
    return fac.Study()


def _pydicom_values(path) -> list[np.ndarray]:
    ds = pydicom.dcmread(path)
    return [np.array([float(v) for v in c.ContourData], dtype=float)
            for roi in ds.ROIContourSequence for c in roi.ContourSequence
            if c.ContourGeometricType == "CLOSED_PLANAR"]


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_contour_data_equals_pydicom_with_odd_formatting(tmp_path, study, syntax):
    rng = np.random.default_rng(16)
    geom = fac.geometry("HFS", (6, 20, 20), (2.5, 1.0, 1.0), (-10, -10, -5))
    contours = fac.sphere_contours(geom, (0, 0, 0), 6.0, n_points=24)
    path = fac.write_rtstruct(tmp_path / "rs.dcm", {"Liver": contours}, study)
    ds = pydicom.dcmread(path)
    written: list[list[str]] = []
    for c in ds.ROIContourSequence[0].ContourSequence:
        values = [str(v) for v in c.ContourData]
        # the odd strings, in place of the first values, then numbers written in assorted formats
        fmts = ["{:.6g}", "{:+.4f}", "{:e}", "{:E}", " {:.3f}", "{:.2f} "]
        strs = [ODD[i % len(ODD)] if i < len(ODD) else fmts[rng.integers(len(fmts))].format(float(v))[:16]
                for i, v in enumerate(values)]
        c.ContourData = strs
        written.append(strs)
    ds.file_meta.TransferSyntaxUID = syntax
    ds.save_as(path, implicit_vr=syntax == ImplicitVRLittleEndian, little_endian=True)
    raw = open(path, "rb").read()
    assert b"+2.5e+01" in raw and b"-1.5E-02" in raw  # the strings were written as given
    ours = read_rtstruct(path)["Liver"]
    ref = _pydicom_values(path)
    assert len(ours) == len(ref) == len(written)
    for a, b, s in zip(ours, ref, written, strict=True):
        np.testing.assert_array_equal(a.reshape(-1), b)  # bit for bit what pydicom's DS gives
        np.testing.assert_array_equal(a.reshape(-1), [float(x) for x in s])


def test_ds_values_parses_like_float():
    raw = "\\".join(ODD).encode()
    np.testing.assert_array_equal(_ds_values(raw), [float(x) for x in ODD])
    np.testing.assert_array_equal(_ds_values(b"1.5\\2.5 \x00"), [1.5, 2.5])  # NUL / space padding
    assert _ds_values(b"").size == 0


@pytest.mark.parametrize("bad", [b"nan", b"1\\inf", b"1_0", b"1\\\\2", b"1..2", b"--1", b"0x1", b"1,5", b"1\\-",
                                 b"e5", b"1 2"])
def test_ds_values_rejects_what_is_not_a_decimal_string(bad):
    with pytest.raises(ValueError):
        _ds_values(bad)


def test_bad_contour_value_names_the_tag(tmp_path, study):
    geom = fac.geometry("HFS", (4, 10, 10), (2.5, 1.0, 1.0), (0, 0, 0))
    path = fac.write_rtstruct(tmp_path / "rs.dcm", {"A": fac.sphere_contours(geom, (5, 5, 4), 3.0, 8)}, study)
    data = open(path, "rb").read()
    first = pydicom.dcmread(path).ROIContourSequence[0].ContourSequence[0].ContourData
    s = str(first[1]).encode()
    assert data.count(b"\\" + s + b"\\") >= 1
    patched = data.replace(b"\\" + s + b"\\", b"\\" + b"x" * len(s) + b"\\", 1)
    open(path, "wb").write(patched)
    with pytest.raises(ImagingError, match=r"ContourData \(3006,0050\) holds a non-number"):
        read_rtstruct(path)
