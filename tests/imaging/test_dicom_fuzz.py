"""Robustness: mutated DICOM files (bit flips, truncation, garbage, deleted tags, wrong values) -- only ImagingError
escapes a reader, and whatever parses is plausible (finite, consistent shape, non-negative activity, dose in range).

A seeded mutator (numpy Generator) makes the cases reproducible: a failure message names the seed, the base file
and the mutation. ~200 cases always run; ~2000 more are marked slow.
"""

from __future__ import annotations

import io
import shutil
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest

from embplan.errors import ImagingError
from embplan.grid import Grid
from embplan.imaging.dicom import (
    MAX_PLAUSIBLE_DOSE_GY,
    read_ct_series,
    read_nm,
    read_pet_series,
    read_rt_dose,
    read_rtstruct,
    read_seg_volumes,
)
from embplan.imaging.rtdose import write_rt_dose
from embplan.imaging.rtstruct import rasterize_structure
from embplan.imaging.volume import Volume

try:
    from . import dicom_factory as fac
except ImportError:  # pragma: no cover
    import dicom_factory as fac

WEIRD_VALUES = ["0", "-1", "-0.0", "nan", "inf", "1e308", "-1e308", "", "abc", "65535", "4294967295", "1\\2", "0\\0\\0\\0\\0\\0",
                "1\\0\\0\\1\\0\\0", "9" * 16]
TARGET_TAGS = ["Rows", "Columns", "NumberOfFrames", "BitsAllocated", "PixelRepresentation", "SamplesPerPixel",
               "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness",
               "SpacingBetweenSlices", "RescaleSlope", "RescaleIntercept", "DoseGridScaling", "GridFrameOffsetVector",
               "NumberOfSlices", "Units", "DecayCorrection", "Modality", "SeriesInstanceUID", "FrameOfReferenceUID",
               "DoseUnits", "ImageType"]
RASTER_GRID = Grid(shape=(8, 16, 16), spacing_mm=(2.5, 2.0, 2.0), origin_mm=(-16.0, -16.0, -10.0))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, list[Path]]:
    base = tmp_path_factory.mktemp("fuzz_base")
    rng = np.random.default_rng(99)
    study = fac.Study()
    geom = fac.geometry("HFS", (4, 8, 8), (2.5, 2.0, 2.0), (-8, -8, 0))
    ct = fac.write_ct_series(base / "ct", geom, rng.integers(-1000, 1000, geom.shape), study)
    nm = fac.write_nm(base / "nm.dcm", fac.geometry("FFS", (4, 6, 6), (4.0, 4.0, 4.0), (0, 0, 0)),
                      rng.integers(0, 500, (4, 6, 6)), study)
    pt = fac.write_pet_series(base / "pt", fac.geometry("HFS", (3, 6, 6), (3.0, 3.0, 3.0), (0, 0, 0)),
                              rng.uniform(0, 1e5, (3, 6, 6)), study)
    rs = fac.write_rtstruct(base / "rs.dcm", {"Tumour": fac.sphere_contours(geom, (0, 0, 4), 5.0, 24)}, study)
    dose_grid = Grid(shape=(3, 5, 6), spacing_mm=(2.0, 2.0, 2.0), origin_mm=(0, 0, 0))
    rd = write_rt_dose(rng.uniform(0, 80, dose_grid.shape), dose_grid, base / "rd.dcm", reference_ct=ct.paths[0])
    from pydicom.data import get_testdata_file

    seg = base / "seg.dcm"
    shutil.copy(get_testdata_file("liver_1frame.dcm", download=False), seg)
    return {"ct": ct.paths, "nm": nm.paths, "pt": pt.paths, "rs": [rs], "rd": [rd], "seg": [seg]}


# ----------------------------------------------------------------------------------------------------- mutator
def _mutate_bytes(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    b = bytearray(data)
    kind = rng.choice(["bitflip", "truncate", "garbage", "zero_run"], p=[0.45, 0.2, 0.2, 0.15])
    if kind == "bitflip":
        n = int(rng.integers(1, 17))
        for pos in rng.integers(128, len(b), n):
            b[pos] ^= 1 << int(rng.integers(0, 8))
        return bytes(b), f"bitflip x{n}"
    if kind == "truncate":
        cut = int(rng.integers(0, len(b)))
        return bytes(b[:cut]), f"truncate at {cut}"
    start = int(rng.integers(128, len(b)))
    length = int(rng.integers(1, 65))
    fill = rng.integers(0, 256, length, dtype=np.uint8).tobytes() if kind == "garbage" else b"\0" * length
    b[start:start + length] = fill[: len(b) - start]
    return bytes(b), f"{kind} {length} bytes at {start}"


def _all_elements(ds: pydicom.Dataset):
    for elem in ds:
        yield ds, elem
        if elem.VR == "SQ":
            for item in elem.value:
                yield from _all_elements(item)


def _mutate_dataset(path: Path, rng: np.random.Generator) -> tuple[bytes | None, str]:
    ds = pydicom.dcmread(path)
    kind = rng.choice(["delete", "value"])
    if kind == "delete":
        elems = list(_all_elements(ds))
        parent, elem = elems[int(rng.integers(0, len(elems)))]
        del parent[elem.tag]
        what = f"delete {elem.keyword or elem.tag}"
    else:
        present = [(p, e) for p, e in _all_elements(ds) if e.keyword in TARGET_TAGS]
        if not present:
            return None, "no target tag"
        parent, elem = present[int(rng.integers(0, len(present)))]
        value = WEIRD_VALUES[int(rng.integers(0, len(WEIRD_VALUES)))]
        try:
            if elem.VR in ("US", "UL", "SS", "SL", "AT"):
                parent[elem.tag].value = int(float(value)) % 65536 if value.lstrip("-").replace(".", "").isdigit() else 0
            else:
                parent[elem.tag].value = value
        except (ValueError, OverflowError, TypeError):
            parent[elem.tag].value = None
        what = f"set {elem.keyword} = {value!r}"
    buf = io.BytesIO()
    try:
        ds.save_as(buf, enforce_file_format=False)
    except Exception:  # a value pydicom cannot even write is not a file we can test
        return None, what
    return buf.getvalue(), what


def mutate(path: Path, rng: np.random.Generator) -> tuple[bytes | None, str]:
    if rng.random() < 0.6:
        return _mutate_bytes(path.read_bytes(), rng)
    return _mutate_dataset(path, rng)


# ----------------------------------------------------------------------------------------------------- checks
def _plausible(vol: Volume) -> None:
    a = np.asarray(vol.array)
    assert a.shape == vol.grid.shape
    assert np.all(np.isfinite(a))
    if vol.modality in ("NM", "PT", "SEG", "RTDOSE"):
        assert a.min(initial=0) >= 0
    if vol.units == "Gy":
        assert a.max(initial=0) <= MAX_PLAUSIBLE_DOSE_GY


def run_case(kind: str, corpus: dict[str, list[Path]], work: Path, rng: np.random.Generator) -> str:
    files = corpus[kind]
    target = files[int(rng.integers(0, len(files)))]
    data, what = mutate(target, rng)
    if data is None:
        return "skipped"
    mutated = work / f"m_{target.name}"
    mutated.write_bytes(data)
    others = [f for f in files if f != target]
    try:
        if kind == "ct":
            _plausible(read_ct_series([*others, mutated]))
        elif kind == "pt":
            _plausible(read_pet_series([mutated, *others]))
        elif kind == "nm":
            _plausible(read_nm(mutated))
        elif kind == "rd":
            _plausible(read_rt_dose(mutated))
        elif kind == "seg":
            for v in read_seg_volumes(mutated).values():
                _plausible(v)
        else:
            for contours in read_rtstruct(mutated).values():
                frac = rasterize_structure(contours, RASTER_GRID)
                assert np.all((frac >= 0) & (frac <= 1))
        return "parsed"
    except ImagingError as exc:
        assert str(exc), "ImagingError without a reason"
        return "ImagingError"
    except AssertionError as exc:
        raise AssertionError(f"{kind} {target.name} [{what}]: parsed but implausible: {exc}") from exc
    except Exception as exc:
        raise AssertionError(f"{kind} {target.name} [{what}]: {type(exc).__name__} escaped: {exc}") from exc


def fuzz(corpus, tmp_path: Path, n: int, seed: int) -> Counter:
    rng = np.random.default_rng(seed)
    kinds = ["ct", "nm", "pt", "rs", "rd", "seg"]
    weights = [0.22, 0.2, 0.18, 0.18, 0.18, 0.04]
    counts: Counter = Counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about every invalid value it meets
        for _ in range(n):
            kind = str(rng.choice(kinds, p=weights))
            counts[(kind, run_case(kind, corpus, tmp_path, rng))] += 1
    return counts


def _summary(counts: Counter) -> dict[str, int]:
    out: Counter = Counter()
    for (_, result), c in counts.items():
        out[result] += c
    return dict(out)


def test_fuzz_small(corpus, tmp_path):
    counts = fuzz(corpus, tmp_path, 200, seed=1)
    summary = _summary(counts)
    assert sum(summary.values()) == 200
    assert summary.get("ImagingError", 0) > 50  # the mutations do break files
    assert summary.get("parsed", 0) > 10  # and some survive (e.g. flips in pixel data)


@pytest.mark.slow
def test_fuzz_large(corpus, tmp_path):
    counts = fuzz(corpus, tmp_path, 2000, seed=2)
    summary = _summary(counts)
    assert sum(summary.values()) == 2000
    assert summary.get("ImagingError", 0) > 500


# ----------------------------------------------------------------------------------------------------- targeted
def test_the_unmutated_corpus_parses(corpus):
    assert read_ct_series(corpus["ct"]).grid.shape == (4, 8, 8)
    assert read_nm(corpus["nm"][0]).grid.shape == (4, 6, 6)
    assert read_pet_series(corpus["pt"]).grid.shape == (3, 6, 6)
    assert list(read_rtstruct(corpus["rs"][0])) == ["Tumour"]
    assert read_rt_dose(corpus["rd"][0]).units == "Gy"
    assert list(read_seg_volumes(corpus["seg"][0])) == ["Liver"]


@pytest.mark.parametrize("cut", [0, 10, 131, 132, 200, 0.5, -1000, -1])
def test_truncated_files(corpus, tmp_path, cut):
    for kind, reader in (("nm", read_nm), ("rd", read_rt_dose), ("rs", read_rtstruct), ("seg", read_seg_volumes)):
        if kind == "rs" and cut == -1:
            continue  # pydicom reads a structure set whose last (observation) element lost a byte; contours intact
        data = corpus[kind][0].read_bytes()
        at = int(len(data) * cut) if isinstance(cut, float) else cut
        p = tmp_path / f"{kind}.dcm"
        p.write_bytes(data[:at])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(ImagingError):
                reader(p)


def test_seg_with_inflated_size_is_rejected_before_decoding(corpus, tmp_path):
    ds = pydicom.dcmread(corpus["seg"][0])
    ds.Rows = 65535
    ds.Columns = 65535
    ds.save_as(tmp_path / "big.dcm")
    with pytest.raises(ImagingError, match=r"declared image size 1 x 65535 x 65535 .* exceeds the voxel budget"):
        read_seg_volumes(tmp_path / "big.dcm")
    ds.Rows = 1024
    ds.Columns = 1024
    ds.save_as(tmp_path / "big.dcm")
    with pytest.raises(ImagingError, match="shape mismatch"):
        read_seg_volumes(tmp_path / "big.dcm")


def test_rtstruct_with_absurd_coordinates(corpus, tmp_path):
    ds = pydicom.dcmread(corpus["rs"][0])
    c = ds.ROIContourSequence[0].ContourSequence[0]
    c.ContourData = ["1e30"] * len(c.ContourData)
    ds.save_as(tmp_path / "rs.dcm")
    with pytest.raises(ImagingError, match="implausible coordinates"):
        read_rtstruct(tmp_path / "rs.dcm")
