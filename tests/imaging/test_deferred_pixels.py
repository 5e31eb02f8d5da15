"""Series readers defer Pixel Data and read it straight into the array (issue 16): the values must be what
pydicom's own decoder gives (the independent reference) for every native layout a series may hold -- signed and
unsigned, 8/16/32 bits, Bits Stored below Bits Allocated with junk in the unused high bits, implicit and explicit
VR, an odd length padded -- and anything else must still go through pydicom (same values, same errors)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from embplan.errors import ImagingError
from embplan.imaging.dicom import SERIES_DEFER_SIZE, _deferred_pixel_element, _pixel_frames, _read


def _write(path: Path, raw: np.ndarray, *, bits: int, stored: int, signed: bool, ts, frames: int = 1,
           photometric: str = "MONOCHROME2") -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ts
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.Rows, ds.Columns = raw.shape[-2:]
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, stored, stored - 1
    ds.PixelRepresentation = int(signed)
    ds.PixelData = raw.tobytes()
    ds.save_as(path, implicit_vr=ts == ImplicitVRLittleEndian, little_endian=True, enforce_file_format=True)
    return path


LAYOUTS = [  # bits, stored, signed, ts, shape
    (16, 16, True, ExplicitVRLittleEndian, (96, 80)),
    (16, 12, True, ExplicitVRLittleEndian, (96, 80)),
    (16, 12, False, ImplicitVRLittleEndian, (96, 80)),
    (16, 16, False, ImplicitVRLittleEndian, (96, 80)),
    (8, 8, False, ExplicitVRLittleEndian, (151, 151)),  # odd length, padded to even
    (8, 6, True, ExplicitVRLittleEndian, (151, 151)),
    (32, 32, True, ExplicitVRLittleEndian, (64, 80)),
    (32, 20, False, ExplicitVRLittleEndian, (64, 80)),
]


@pytest.mark.parametrize(("bits", "stored", "signed", "ts", "shape"), LAYOUTS)
def test_deferred_read_equals_pydicom(tmp_path, bits, stored, signed, ts, shape):
    rng = np.random.default_rng(bits * 100 + stored)
    dtype = np.dtype(f"<{'i' if signed else 'u'}{bits // 8}")
    info = np.iinfo(dtype)
    raw = rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)  # junk in the unused bits too
    path = _write(tmp_path / "x.dcm", raw, bits=bits, stored=stored, signed=signed, ts=ts)
    expected = pydicom.dcmread(path).pixel_array
    ds = _read(path, defer_size=SERIES_DEFER_SIZE if raw.nbytes > SERIES_DEFER_SIZE else 256)
    assert _deferred_pixel_element(ds) is not None  # the direct read is what is tested
    scratch = bytearray()
    got = _pixel_frames(ds, path, buffer=scratch)
    assert got.shape == (1, *shape) and got.dtype == expected.dtype
    np.testing.assert_array_equal(got[0], expected)
    assert _deferred_pixel_element(ds) is not None  # read into the array, not into the dataset
    if stored < bits:  # the correction did something: values stay within Bits Stored
        lo, hi = (-(2 ** (stored - 1)), 2 ** (stored - 1) - 1) if signed else (0, 2**stored - 1)
        assert got.min() >= lo and got.max() <= hi


def test_multiframe_and_reused_buffer(tmp_path):
    """Several frames; a scratch buffer too small is grown, then reused for the next file (the caller consumes each
    array before the next call, as the series readers do)."""
    rng = np.random.default_rng(5)
    raw = rng.integers(-2000, 3000, size=(4, 40, 50)).astype("<i2")
    path = _write(tmp_path / "m.dcm", raw, bits=16, stored=16, signed=True, ts=ExplicitVRLittleEndian, frames=4)
    scratch = bytearray(10)
    np.testing.assert_array_equal(_pixel_frames(_read(path, defer_size=1024), path, buffer=scratch), raw)
    assert len(scratch) >= raw.nbytes
    path2 = _write(tmp_path / "m2.dcm", raw[::-1] + 1, bits=16, stored=16, signed=True, ts=ExplicitVRLittleEndian,
                   frames=4)
    np.testing.assert_array_equal(_pixel_frames(_read(path2, defer_size=1024), path2, buffer=scratch), raw[::-1] + 1)


def test_unusual_files_still_go_through_pydicom(tmp_path):
    """A missing Photometric Interpretation (which pydicom refuses) fails as before; a file whose pixel data were
    already read decodes through pydicom with the same values."""
    raw = np.arange(96 * 80, dtype="<i2").reshape(96, 80)
    path = _write(tmp_path / "p.dcm", raw, bits=16, stored=16, signed=True, ts=ExplicitVRLittleEndian)
    ds = pydicom.dcmread(path, defer_size=1024)
    del ds.PhotometricInterpretation
    with pytest.raises(ImagingError, match="cannot decode the pixel data"):
        _pixel_frames(ds, path)
    ds = _read(path, defer_size=1024)
    _ = ds.PixelData  # read into the dataset: the deferred path is not taken
    assert _deferred_pixel_element(ds) is None
    np.testing.assert_array_equal(_pixel_frames(ds, path)[0], raw)


def test_readers_restore_the_garbage_collector(tmp_path):
    """The series readers pause Python's cyclic collector while they build their datasets: it is on again
    afterwards (after an error too), and a collector the caller had turned off stays off."""
    import gc

    from embplan.imaging.dicom import read_ct_series

    missing = tmp_path / "nothing-here"
    assert gc.isenabled()
    with pytest.raises(ImagingError):
        read_ct_series(missing)
    assert gc.isenabled()
    gc.disable()
    try:
        with pytest.raises(ImagingError):
            read_ct_series(missing)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_view_too_small_for_the_file_is_not_grown(tmp_path):
    """The series reader passes a view of its stack's slice: a file with more pixels than that slice (a slice of
    another size in the series) is read into memory of its own, never by growing the caller's view (found in review:
    a memoryview has no extend, so this raised AttributeError)."""
    rng = np.random.default_rng(9)
    raw = rng.integers(-1000, 1000, size=(40, 50)).astype("<i2")
    path = _write(tmp_path / "big.dcm", raw, bits=16, stored=16, signed=True, ts=ExplicitVRLittleEndian)
    small = np.zeros((20, 50), dtype="<i2")
    got = _pixel_frames(_read(path, defer_size=256), path, buffer=memoryview(small).cast("B"))
    np.testing.assert_array_equal(got[0], raw)
    assert not small.any()  # the caller's array was not written
