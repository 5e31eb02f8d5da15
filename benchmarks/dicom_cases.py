"""DICOM case folders for the end-to-end and cohort benchmarks, generated from the NET liver phantom.

* ``phantom15``: ``embplan phantom-dicom --voxel-mm 1.5`` (200 CT slices, CT and SPECT on one 1.5 mm grid), the
  case of the performance issue.
* ``clinical``: a clinically sized set: CT 512 x 512 x 300 slices at 0.8 x 0.8 x 2.5 mm, SPECT 128^3 at 4.42 mm
  (its own grid, the dosimetry grid), RTSTRUCT contours of the phantom's structures. The phantom cannot be built
  below 1 mm, so the CT is the phantom at 1.6 x 1.6 x 2.5 mm with each pixel split in 2 x 2 (a CT of 0.8 mm pixels
  holding the same anatomy); the SPECT is the same seeded phantom built on the SPECT grid (the tumours are
  analytic shapes in patient millimetres, so both grids see the same anatomy).

Folders are written once under ``.benchmarks/cases/<name>/`` (or ``EMBPLAN_BENCH_CASES``) and reused; a
``ready`` marker makes an interrupted generation start again.
"""

from __future__ import annotations

import json
import os
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from embplan.grid import Grid

#: name -> (CT shape (z, y, x), CT spacing (z, y, x) mm, SPECT shape, SPECT voxel mm); ``*_smoke`` are small
#: stand-ins for quick runs and tests.
CLINICAL: dict[str, tuple[tuple[int, int, int], tuple[float, float, float], tuple[int, int, int], float]] = {
    "clinical": ((300, 512, 512), (2.5, 0.8, 0.8), (128, 128, 128), 4.42),
    "clinical_smoke": ((64, 96, 96), (5.0, 4.4, 4.4), (48, 48, 48), 8.84),
}


def cases_root() -> Path:
    root = Path(os.environ.get("EMBPLAN_BENCH_CASES", Path(__file__).resolve().parent.parent / ".benchmarks" / "cases"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def _template() -> dict[str, Any]:
    return json.loads(resources.files("embplan").joinpath("data/tare_dicom_template.json").read_text(encoding="utf-8"))


def phantom_case(out: Path, *, voxel_mm: float = 1.5, seed: int = 7, patient_id: str = "phantom") -> Path:
    """What ``embplan phantom-dicom --voxel-mm V --seed S --out OUT`` writes; returns the case file."""
    from embplan.case import load_case
    from embplan.imaging.image_set import territory_mask
    from embplan.imaging.phantom import make_phantom
    from embplan.imaging.phantom_dicom import structure_roles, write_phantom_dicom

    data = _template()
    data["patient"]["id"] = patient_id
    phantom = make_phantom("net_liver", seed, voxel_mm)
    dicom = data["dosimetry"]["images"]["dicom"]
    dicom.update(ct="ct", spect="spect/nm.dcm", rtstruct="rtstruct.dcm", structures=structure_roles(phantom))
    case = load_case(data)
    perfused = territory_mask(case, phantom.masks, phantom.grid.shape)
    write_phantom_dicom(phantom, out, perfused_mask=np.asarray(perfused), patient_id=patient_id)
    path = out / "tare_dicom.json"
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path


def clinical_case(out: Path, name: str = "clinical", *, seed: int = 7) -> Path:
    """The clinically sized DICOM set (see the module docstring); returns the case file."""
    from embplan.case import load_case
    from embplan.imaging import phantom_dicom as pd
    from embplan.imaging.image_set import territory_mask
    from embplan.imaging.phantom import net_liver_phantom

    ct_shape, ct_mm, nm_shape, nm_mm = CLINICAL[name]
    nz, ny, nx = ct_shape
    coarse = net_liver_phantom(seed, (ct_mm[0], 2 * ct_mm[1], 2 * ct_mm[2]), shape=(nz, ny // 2, nx // 2))
    spect = net_liver_phantom(seed, nm_mm, shape=nm_shape)
    data = _template()
    dicom = data["dosimetry"]["images"]["dicom"]
    dicom.update(ct="ct", spect="spect/nm.dcm", rtstruct="rtstruct.dcm", structures=pd.structure_roles(coarse))
    case = load_case(data)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ct").mkdir(exist_ok=True)
    (out / "spect").mkdir(exist_ok=True)

    w = pd._Writer(f"clinical-{name}-{seed}", case.patient.id, "Phantom^Clinical", pd.datetime(2026, 12, 1, 9), "HFS")
    # CT: the coarse phantom in image order, each pixel split in 2 x 2
    img, flip = pd._image_grid(coarse.grid, "HFS")
    origin = img.index_to_patient_mm(np.array([0.0, -0.25, -0.25]))
    ct_grid = Grid(shape=ct_shape, spacing_mm=ct_mm, origin_mm=tuple(float(v) for v in origin), direction=img.direction)
    hu = np.asarray(coarse.ct_hu)[flip]
    hu = np.repeat(np.repeat(hu, 2, axis=1), 2, axis=2)
    ct_series, ct_uids = pd._write_ct(w, out / "ct", ct_grid, hu)
    del hu
    # SPECT: the MAA map of the perfused territory on the SPECT's own grid
    perfused = territory_mask(case, spect.masks, spect.grid.shape)
    act = spect.maa_activity(np.asarray(perfused))
    nm_img, nm_flip = pd._image_grid(spect.grid, "HFS")
    counts = act[nm_flip] * (pd.DEFAULT_TOTAL_COUNTS / float(act.sum()))
    counts = pd._integer_counts(counts[nm_flip])[nm_flip]
    pd._write_nm(w, out / "spect" / "nm.dcm", nm_img, counts, float(pd.MAA_ADMINISTERED_MBQ_DEFAULT))
    # RTSTRUCT: contours of the coarse phantom's masks (patient millimetres), referenced to the CT
    contours = pd.phantom_contours(coarse, supersample=2)
    pd._write_rtstruct(w, out / "rtstruct.dcm", ct_grid, ct_series, ct_uids, contours,
                       {pd.roi_name(t) for t in coarse.tumor_names})
    path = out / "tare_dicom.json"
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path


def ensure_case(name: str) -> Path:
    """The case file of benchmark case ``name`` (``phantom15``, ``clinical``, ``clinical_smoke``), generated on
    first use."""
    folder = cases_root() / name
    case = folder / "tare_dicom.json"
    if (folder / "ready").exists() and case.exists():
        return case
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    if name == "phantom15":
        phantom_case(folder, voxel_mm=1.5)
    elif name in CLINICAL:
        clinical_case(folder, name)
    else:
        raise KeyError(f"unknown benchmark case {name!r}")
    (folder / "ready").write_text("ok\n")
    return case
