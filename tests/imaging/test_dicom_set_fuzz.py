"""Seeded mutation of a whole DICOM case (CT series + NM SPECT + RTSTRUCT, written by ``embplan phantom-dicom`` at
8 mm), planned end to end (issue 12, "Proof, kept in the project").

Every mutated set must either be refused with an :class:`~embplan.errors.EmbplanError`, or plan to the doses of the
unmutated set (float rounding): a mutation that makes the data invalid, implausible or inconsistent must never
become a plausible wrong plan. Two changes are accepted, each stated in the plan's notes: a contour that is skipped
(a POINT or OPEN contour, a closed contour of fewer than three points; the note names the structure, as the issue
asks), and an activity image in another frame of reference than the CT, which the planner registers to the CT
(issue 14; the note gives the transform). The memory a plan allocates (tracemalloc peak) stays within a bound.

Mutation classes (each names the file and what it did, so a failure is reproducible from the seed):
``delete`` an element anywhere in a file (sequences included) or a whole CT slice; ``invalid`` set a number-changing
attribute to an impossible value (0, negative, NaN, inf, empty, text, wrong multiplicity); ``shift`` the geometry
of the CT, the SPECT or the structures by 10-40 mm, or turn the orientation; ``identity`` give one image another
Patient ID, Frame of Reference UID or series; ``truncate`` the file or its Pixel Data; ``huge`` declare a huge
matrix (Rows, Columns, Number of Frames).

Not mutated, on purpose: *valid* values that mean other numbers (a Rescale Slope of 1.01, a pixel value): another
valid image legitimately plans to another dose, and DICOM carries no checksum to tell them apart.

Small in CI (``FUZZ_N_SMALL`` cases, a few seconds); set ``EMBPLAN_FUZZ_N`` for a larger run (docs/dicom.md records
the counts of the last one), ``EMBPLAN_FUZZ_SEED`` to change the seed.
"""

from __future__ import annotations

import os
import resource
import shutil
import tracemalloc
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

import embplan
from embplan import cli
from embplan.errors import EmbplanError

FUZZ_N_SMALL = 12
#: tracemalloc peak of one plan may exceed the unmutated plan's by at most this (bytes).
MEMORY_MARGIN_BYTES = 64 * 2**20
DOSE_KEYS = ("activity_gbq", "tumor_dose_gy", "normal_liver_dose_gy", "lung_dose_gy", "perfused_dose_gy")

#: attributes whose value changes the numbers (geometry, rescale, sizes) and the impossible values they get
NUMERIC_TAGS = ["Rows", "Columns", "NumberOfFrames", "NumberOfSlices", "BitsAllocated", "BitsStored",
                "PixelRepresentation", "SamplesPerPixel", "ImagePositionPatient", "ImageOrientationPatient",
                "PixelSpacing", "SliceThickness", "SpacingBetweenSlices", "RescaleSlope", "RescaleIntercept",
                "ContourData", "NumberOfContourPoints", "ReferencedROINumber", "ROINumber"]
INVALID = ["0", "-1", "-4.42", "nan", "inf", "-inf", "", "abc", "1e308", "1\\2", "0\\0\\0\\0\\0\\0", "1\\0\\0\\1\\0\\0",
           "1\\1\\1\\1\\1\\1"]
ID_TAGS = ["PatientID", "FrameOfReferenceUID", "SeriesInstanceUID", "ReferencedFrameOfReferenceUID"]


# ----------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def base_set(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("setfuzz") / "set"
    r = CliRunner().invoke(cli.app, ["phantom-dicom", "--out", str(out), "--voxel-mm", "8"])
    assert r.exit_code == 0, r.output
    return out


def _plan(folder: Path):
    return embplan.plan(embplan.load_case(folder / "tare_dicom.json"))


def _plan_with_peak(folder: Path):
    tracemalloc.start()
    try:
        plan = embplan.plan(embplan.load_case(folder / "tare_dicom.json"))
        return plan, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.fixture(scope="module")
def base(base_set):
    _plan(base_set)  # warm caches (numba, kernels) so the measured peak is the plan's own
    plan, peak = _plan_with_peak(base_set)
    return {d: getattr(plan.dosimetry, d) for d in DOSE_KEYS}, peak


# ----------------------------------------------------------------------------------------------------- mutations
def _files(folder: Path) -> list[Path]:
    return [*sorted((folder / "ct").iterdir()), folder / "spect" / "nm.dcm", folder / "rtstruct.dcm"]


def _elements(ds: pydicom.Dataset):
    for elem in ds:
        yield ds, elem
        if elem.VR == "SQ":
            for item in elem.value:
                yield from _elements(item)


def _save(ds: pydicom.Dataset, path: Path) -> bool:
    try:
        ds.save_as(path, enforce_file_format=False)
    except Exception:  # a value pydicom cannot write is not a file anyone can send
        return False
    return True


def _pick_file(folder: Path, rng: np.random.Generator) -> Path:
    files = _files(folder)
    # the CT has many slices: weight the three images alike
    group = int(rng.integers(0, 3))
    if group == 0:
        return files[int(rng.integers(0, len(files) - 2))]
    return files[-2] if group == 1 else files[-1]


def _shift_points(values, vec) -> list[float]:
    a = np.asarray([float(v) for v in values]).reshape(-1, 3) + np.asarray(vec)
    return [float(v) for v in a.reshape(-1)]


def mutate(folder: Path, rng: np.random.Generator) -> tuple[str, str | None]:
    """Mutate the set in ``folder`` in place; returns the class and the description (None: the mutation could not
    be written)."""
    kind = str(rng.choice(["delete", "invalid", "shift", "identity", "truncate", "huge"],
                          p=[0.3, 0.25, 0.15, 0.1, 0.1, 0.1]))
    return kind, _mutate(folder, rng, kind)


def _mutate(folder: Path, rng: np.random.Generator, kind: str) -> str | None:
    if kind == "delete" and rng.random() < 0.1:
        victim = sorted((folder / "ct").iterdir())[int(rng.integers(1, 37))]
        victim.unlink()
        return f"delete CT slice {victim.name}"
    if kind == "shift":
        vec = rng.uniform(10.0, 40.0) * (rng.integers(0, 2) * 2 - 1) * np.eye(3)[int(rng.integers(0, 3))]
        target = str(rng.choice(["ct", "spect", "rtstruct", "orientation"]))
        if target == "ct":
            for f in sorted((folder / "ct").iterdir()):
                ds = pydicom.dcmread(f)
                ds.ImagePositionPatient = _shift_points(ds.ImagePositionPatient, vec)
                ds.save_as(f)
        elif target == "spect":
            f = folder / "spect" / "nm.dcm"
            ds = pydicom.dcmread(f)
            det = ds.DetectorInformationSequence[0]
            det.ImagePositionPatient = _shift_points(det.ImagePositionPatient, vec)
            ds.save_as(f)
        elif target == "rtstruct":
            f = folder / "rtstruct.dcm"
            ds = pydicom.dcmread(f)
            for roi in ds.ROIContourSequence:
                for c in roi.ContourSequence:
                    c.ContourData = _shift_points(c.ContourData, vec)
            ds.save_as(f)
        else:
            iop = [[-1, 0, 0, 0, 1, 0], [1, 0, 0, 0, -1, 0], [0, 1, 0, 1, 0, 0], [1, 0, 0, 0, 0, 1]][int(rng.integers(0, 4))]
            for f in sorted((folder / "ct").iterdir()):
                ds = pydicom.dcmread(f)
                ds.ImageOrientationPatient = iop
                ds.save_as(f)
            return f"orientation of the CT set to {iop}"
        return f"shift {target} by {np.round(vec, 1).tolist()} mm"
    path = _pick_file(folder, rng)
    if kind == "truncate":
        data = path.read_bytes()
        if rng.random() < 0.5:
            cut = int(rng.integers(0, len(data)))
            path.write_bytes(data[:cut])
            return f"truncate {path.name} at byte {cut} of {len(data)}"
        ds = pydicom.dcmread(path)
        if "PixelData" not in ds:
            return None
        n = len(ds.PixelData)
        cut = int(rng.integers(0, n))
        ds.PixelData = ds.PixelData[:cut - (cut % 2)]
        return f"truncate PixelData of {path.name} to {cut} of {n} bytes" if _save(ds, path) else None
    ds = pydicom.dcmread(path)
    if kind == "huge":
        if "Rows" not in ds:
            return None
        tag = str(rng.choice(["Rows", "Columns", "NumberOfFrames"]))
        value = int(rng.choice([4096, 65535, 1024]))
        setattr(ds, tag, value)
        return f"declare {tag} = {value} in {path.name}" if _save(ds, path) else None
    if kind == "identity":
        present = [(p, e) for p, e in _elements(ds) if e.keyword in ID_TAGS]
        parent, elem = present[int(rng.integers(0, len(present)))]
        new = "OTHER-PATIENT" if elem.keyword == "PatientID" else pydicom.uid.generate_uid()
        parent[elem.tag].value = new
        return f"set {elem.keyword} = {new!r} in {path.name}" if _save(ds, path) else None
    if kind == "delete":
        elems = [(p, e) for p, e in _elements(ds) if e.tag.group != 0x0002]
        parent, elem = elems[int(rng.integers(0, len(elems)))]
        del parent[elem.tag]
        return f"delete {elem.keyword or elem.tag} in {path.name}" if _save(ds, path) else None
    present = [(p, e) for p, e in _elements(ds) if e.keyword in NUMERIC_TAGS]
    if not present:
        return None
    parent, elem = present[int(rng.integers(0, len(present)))]
    value = INVALID[int(rng.integers(0, len(INVALID)))]
    try:
        if elem.VR in ("US", "UL", "SS", "SL", "IS"):
            parent[elem.tag].value = int(float(value)) if value.lstrip("-").replace(".", "").isdigit() else 0
        else:
            parent[elem.tag].value = value
    except (ValueError, OverflowError, TypeError):
        parent[elem.tag].value = None
    return f"set {elem.keyword} = {value!r} in {path.name}" if _save(ds, path) else None


# ----------------------------------------------------------------------------------------------------- campaign
def run_campaign(base_set: Path, base, work: Path, n: int, seed: int) -> Counter:
    doses0, peak0 = base
    rng = np.random.default_rng(seed)
    counts: Counter = Counter()
    for i in range(n):
        folder = work / f"case_{i}"
        shutil.copytree(base_set, folder)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns about every invalid value it meets
            kind, what = mutate(folder, rng)
            if what is None:
                counts["not writable"] += 1
                shutil.rmtree(folder)
                continue
            label = f"seed {seed} case {i}: {what}"
            try:
                # tracemalloc slows a plan six-fold: traced where memory bombs live (declared sizes, truncation)
                plan, peak = _plan_with_peak(folder) if kind in ("huge", "truncate") else (_plan(folder), 0)
            except EmbplanError as exc:
                assert str(exc), f"{label}: EmbplanError without a message"
                counts[f"{kind}: refused"] += 1
            except Exception as exc:  # noqa: BLE001 -- the point of the test
                raise AssertionError(f"{label}: {type(exc).__name__} escaped: {exc}") from exc
            else:
                assert peak <= peak0 + MEMORY_MARGIN_BYTES, f"{label}: memory peak {peak / 2**20:.0f} MiB"
                changed = {k: (getattr(plan.dosimetry, k), v0) for k, v0 in doses0.items()
                           if getattr(plan.dosimetry, k) != pytest.approx(v0, rel=1e-9, abs=1e-12)}
                if not changed:
                    counts[f"{kind}: planned, same doses"] += 1
                else:
                    # the accepted changes, each stated in the plan: contours skipped by design (a POINT/OPEN
                    # contour, a contour of < 3 points; issue 12: a note per structure, never silently), and an
                    # activity image in another frame of reference registered to the CT (issue 14)
                    noted = [n for n in plan.dosimetry.notes
                             if (n.startswith("RTSTRUCT ROI") and "skipped" in n) or "different frames of reference" in n
                             # issue 17: a slice set aside as another series, the gap it leaves interpolated
                             or ("resampled" in n and "onto a regular grid" in n)]
                    assert noted, f"{label}: accepted with other doses {changed} and no note (a silent dose change)"
                    counts[f"{kind}: planned with a note (contours skipped or registered)"] += 1
        shutil.rmtree(folder)
    return counts


def test_dicom_set_fuzz(base_set, base, tmp_path):
    n = int(os.environ.get("EMBPLAN_FUZZ_N", FUZZ_N_SMALL))
    seed = int(os.environ.get("EMBPLAN_FUZZ_SEED", 12))
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    counts = run_campaign(base_set, base, tmp_path, n, seed)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux: the process's peak never grew by 1 GiB
    print(f"DICOM set fuzz, seed {seed}, {n} cases: {dict(sorted(counts.items()))}; peak RSS {rss0 // 1024} -> "
          f"{rss // 1024} MiB")  # read with -s for docs/dicom.md
    assert sum(counts.values()) == n
    assert sum(v for k, v in counts.items() if k.endswith("refused")) > 0
    assert rss - rss0 < 2**20


def test_the_unmutated_set_plans_to_itself(base_set, base, tmp_path):
    """The harness itself: a copy that is not mutated plans to the same doses (the comparison is meaningful)."""
    folder = tmp_path / "copy"
    shutil.copytree(base_set, folder)
    plan = _plan(folder)
    for key, v0 in base[0].items():
        assert getattr(plan.dosimetry, key) == v0
