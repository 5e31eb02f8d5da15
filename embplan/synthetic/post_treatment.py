"""A simulated post-treatment Y-90 PET/CT of a planned TARE, with known deviations from the plan.

:func:`simulate_post_treatment` takes a plan with voxel data (e.g. the phantom demo) and writes, under ``out_dir``:

- ``ct/``: the post-treatment CT, the plan's CT numbers seen in a **new frame of reference** (own Study and
  Frame of Reference UIDs): the patient lies rotated and shifted, ``q = T(p)`` with ``T`` the true rigid transform
  (plan frame -> post frame, ITK convention, :class:`embplan.imaging.registration.RigidTransform`), plus seeded
  Gaussian noise (``ct_noise_hu``);
- ``pet/``: a Y-90 PET series (Units BQML, Decay Correction START at the acquisition start, Radiopharmaceutical
  Start DateTime = administration, Radionuclide Total Dose = the delivered activity) on its own grid in that frame;
- ``rtstruct.dcm``: the liver and lungs as contoured on the post CT (for the registration's liver surface distance);
- ``post.json``: the verification input (:class:`embplan.verify.PostTreatment`) naming them, with the delivery
  record (vial activity and its reference time, residual fraction, administration time) and a 3 %/3 mm gamma
  analysis;
- ``truth.json``: what was simulated: the true transform, the delivered activity, the deviations.

The delivered activity distribution, on the plan's grid, before it is moved into the post frame:

1. the plan's administered activity map (liver and lungs; the MAA-based prediction) as the starting shape;
2. one perfused tumour (default: the one with the most planned activity) **under-perfused**: its activity times
   ``under_perfusion_fraction``;
3. liver + lungs rescaled to hold ``1 - gut_fraction`` of the delivered activity, and a sphere of radius
   ``gut_radius_mm`` outside the liver and lungs (the body's soft tissue nearest a point below and to the left of the
   liver: where stomach and duodenum lie) holding ``gut_fraction`` of it (**gut deposition**);
4. the delivered activity = vial activity decayed to the administration time, times ``1 - residual_fraction``.

The map is moved into the PET grid by the total-conserving activity resampling, blurred by a Gaussian of
``pet_fwhm_mm`` (a Y-90 PET resolution of 5-10 mm FWHM [U]; 6 mm by default keeps the demo readable), decayed to the
acquisition time (Y-90 half-life of :mod:`embplan.nuclides`) and written as Bq/mL in 16-bit pixels with a Rescale
Slope per slice (relative rounding below 2e-5 of each slice's maximum). Optional multiplicative noise
(``pet_noise_fraction``, seeded). With ``modality="spect"`` a Y-90 bremsstrahlung SPECT is written instead
(``spect/bremss.dcm``: counts proportional to the activity, ``spect_total_counts`` in all, blurred by
``spect_fwhm_mm``, 15 mm by default: bremsstrahlung SPECT resolves 15-20 mm [U]); ``verify`` then calibrates it
patient-relatively. Synthetic data for tests and examples, not patient data.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from scipy import ndimage

from ..errors import ImagingError
from ..grid import Grid
from ..imaging.phantom_dicom import (  # the phantom's DICOM writer: same CT and RTSTRUCT conventions
    _UINT16_MAX,
    _ds,
    _integer_counts,
    _iop,
    _pixels_16bit,
    _save,
    _write_ct,
    _write_nm,
    _write_rtstruct,
    _Writer,
    mask_contours,
)
from ..imaging.registration import RigidTransform
from ..imaging.resample import resample_to_grid
from ..nuclides import Y90_HALF_LIFE_H, decay_factor

__all__ = ["PostSimulation", "SimulatedPost", "simulate_post_treatment", "PET_IMAGE_STORAGE"]

log = logging.getLogger(__name__)

PET_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.128"
#: Where the gut deposit is put: the soft-tissue voxel outside liver and lungs nearest the liver centroid plus this
#: offset (patient LPS mm: +x left, -y anterior, -z inferior), i.e. below and to the left of the liver.
GUT_TARGET_OFFSET_MM: tuple[float, float, float] = (70.0, -30.0, -60.0)
#: The deposit's centre stays this far from liver and lungs (so that it is extrahepatic, not spill-over).
GUT_CLEARANCE_MM: float = 20.0


@dataclass(frozen=True)
class PostSimulation:
    """Parameters of the simulation (see the module docstring); the defaults make the README's example."""

    rotation_deg: tuple[float, float, float] = (2.0, -3.0, 6.0)
    translation_mm: tuple[float, float, float] = (14.0, -9.0, 18.0)
    under_perfused_tumor: str | None = None
    under_perfusion_fraction: float = 0.4
    gut_fraction: float = 0.04
    gut_radius_mm: float = 12.0
    vial_activity_gbq: float | None = None  # None: the plan's vial (glass) or its vial activity at administration
    residual_fraction: float = 0.05
    administration_datetime: datetime | None = None  # None: the plan's, else the procedure date at 10:00
    acquisition_hours: float = 20.0
    pet_voxel_mm: float = 4.0
    pet_fwhm_mm: float = 6.0
    pet_noise_fraction: float = 0.0
    ct_noise_hu: float = 8.0
    frame_duration_s: float = 1200.0
    seed: int = 2026
    modality: Literal["pet", "spect"] = "pet"
    spect_voxel_mm: float = 4.8
    spect_fwhm_mm: float = 15.0
    spect_total_counts: float = 2.0e6


@dataclass(frozen=True)
class SimulatedPost:
    """What :func:`simulate_post_treatment` wrote, and the truth behind it."""

    paths: dict[str, Path]
    truth: dict[str, Any] = field(default_factory=dict)

    @property
    def transform(self) -> RigidTransform:
        t = self.truth["transform"]
        return RigidTransform(tuple(v for row in t["rotation_matrix"] for v in row), tuple(t["translation_mm"]),
                              tuple(t["center_mm"]))


def _bounding_grid(grid: Grid, transform: RigidTransform, spacing_mm: float) -> Grid:
    """An axis-aligned grid in the moving (post) frame covering ``grid`` moved by ``transform``."""
    nz, ny, nx = grid.shape
    corners = np.array([[k, j, i] for k in (-0.5, nz - 0.5) for j in (-0.5, ny - 0.5) for i in (-0.5, nx - 0.5)])
    pts = transform.apply(grid.index_to_patient_mm(corners))
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    n = np.maximum(1, np.ceil((hi - lo) / spacing_mm).astype(int))  # x, y, z
    origin = lo + spacing_mm / 2.0
    return Grid(shape=(int(n[2]), int(n[1]), int(n[0])), spacing_mm=(spacing_mm,) * 3,
                origin_mm=tuple(float(v) for v in origin))


def _gut_sphere(grid: Grid, ct_hu: np.ndarray, liver: np.ndarray, lungs: np.ndarray, radius_mm: float) -> np.ndarray:
    spacing = tuple(float(s) for s in grid.spacing_mm)
    dist = ndimage.distance_transform_edt(~(liver | lungs), sampling=spacing)
    soft = (ct_hu > -200.0) & (ct_hu < 200.0)
    body_dist = ndimage.distance_transform_edt(soft, sampling=spacing)
    ok = soft & (dist >= GUT_CLEARANCE_MM + radius_mm * 0.5) & (body_dist >= radius_mm)
    if not ok.any():
        raise ImagingError("simulate_post_treatment: no soft tissue outside liver and lungs for the gut deposit")
    centroid = grid.index_to_patient_mm(np.argwhere(liver).mean(axis=0))
    target = centroid + np.asarray(GUT_TARGET_OFFSET_MM)
    cand = np.argwhere(ok)
    pts = grid.index_to_patient_mm(cand)
    best = cand[int(np.argmin(np.linalg.norm(pts - target, axis=1)))]
    centre = grid.index_to_patient_mm(best.astype(float))
    allpts = grid.index_to_patient_mm(np.indices(grid.shape).reshape(3, -1).T.astype(float))
    sphere = (np.linalg.norm(allpts - centre, axis=1) <= radius_mm).reshape(grid.shape)
    return sphere & ~(liver | lungs)


def _check_plan(plan: Any) -> tuple[Grid, dict[str, np.ndarray]]:
    voxel = getattr(plan, "voxel", None)
    if voxel is None or plan.dosimetry is None:
        raise ImagingError("plan: a TARE plan with images (voxel data) is needed to simulate its post-treatment PET")
    for name in ("activity_mbq", "ct_hu", "mask_liver", "mask_lungs"):
        if name not in voxel.arrays:
            raise ImagingError(f"plan: the voxel data has no {name!r}")
    return voxel.grid, voxel.arrays


def _write_pet(w: _Writer, folder: Path, grid: Grid, bq_ml: np.ndarray, *, acquisition: datetime,
               administration: datetime, total_dose_bq: float, frame_duration_s: float) -> str:
    series_uid = w.uid("pet-series")
    iop = _iop(grid)
    for k in range(grid.shape[0]):
        sl = np.asarray(bq_ml[k], dtype=np.float64)
        top = float(sl.max())
        slope = top / 65535.0 if top > 0 else 1.0
        raw = np.clip(np.rint(sl / slope), 0, 65535).astype("<u2")
        sop_uid = w.uid("pet", k)
        ds = w.base(PET_IMAGE_STORAGE, "PT", series_uid, 4, sop_uid, "Y-90 PET post-treatment (synthetic)")
        w.frame_of_reference(ds)
        ds.SeriesDate = acquisition.strftime("%Y%m%d")
        ds.SeriesTime = acquisition.strftime("%H%M%S")
        ds.AcquisitionDate = ds.SeriesDate
        ds.AcquisitionTime = ds.SeriesTime
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.PatientPosition = w.position
        ds.InstanceNumber = k + 1
        ds.ImageIndex = k + 1
        ds.NumberOfSlices = grid.shape[0]
        ds.Units = "BQML"
        ds.DecayCorrection = "START"
        ds.CorrectedImage = ["ATTN", "DECY", "SCAT", "RAN", "NORM", "DTIM"]
        ds.CountsSource = "EMISSION"
        ds.SeriesType = ["STATIC", "IMAGE"]
        ds.DecayFactor = "1"
        ds.ActualFrameDuration = int(round(frame_duration_s * 1000.0))
        ds.FrameReferenceTime = "0"
        rp = Dataset()
        rp.Radiopharmaceutical = "Y-90 microspheres"
        rp.RadionuclideTotalDose = f"{total_dose_bq:.10g}"  # Decimal String: 16 characters at most
        rp.RadionuclideHalfLife = _ds(Y90_HALF_LIFE_H * 3600.0)
        rp.RadiopharmaceuticalStartDateTime = administration.strftime("%Y%m%d%H%M%S")
        ds.RadiopharmaceuticalInformationSequence = Sequence([rp])
        ds.ImagePositionPatient = [_ds(v) for v in grid.index_to_patient_mm(np.array([k, 0, 0], dtype=float))]
        ds.ImageOrientationPatient = iop
        ds.PixelSpacing = [_ds(grid.spacing_mm[1]), _ds(grid.spacing_mm[2])]
        ds.SliceThickness = _ds(grid.spacing_mm[0])
        ds.RescaleIntercept = "0"
        ds.RescaleSlope = f"{slope:.10g}"
        _pixels_16bit(ds, raw, signed=False)
        _save(ds, folder / f"PT_{k + 1:04d}.dcm")
    return series_uid


def _write_bremsstrahlung(w: _Writer, path: Path, grid: Grid, activity_mbq: np.ndarray, total_counts: float,
                          delivered_mbq: float) -> None:
    """A Y-90 bremsstrahlung SPECT (reconstructed NM, counts proportional to the activity, ``total_counts`` in all,
    rounded by error diffusion) with a Y-90 radiopharmaceutical and a wide bremsstrahlung window in its header."""
    import pydicom

    a = np.clip(np.asarray(activity_mbq, dtype=np.float64), 0.0, None)
    if not a.sum() > 0:
        raise ImagingError("simulate_post_treatment: no activity in the SPECT field of view")
    counts = _integer_counts(a * (float(total_counts) / float(a.sum())))
    if counts.max() > _UINT16_MAX:
        raise ImagingError(f"spect_total_counts: {total_counts:g} overflows the 16-bit NM pixels; lower it")
    _write_nm(w, path, grid, counts, delivered_mbq)
    ds = pydicom.dcmread(path)
    rp = ds.RadiopharmaceuticalInformationSequence[0]
    rp.Radiopharmaceutical = "Y-90 microspheres (bremsstrahlung)"
    rp.RadionuclideHalfLife = _ds(Y90_HALF_LIFE_H * 3600.0)
    rp.RadionuclideCodeSequence[0].CodeMeaning = "^90^Yttrium"
    rp.RadionuclideCodeSequence[0].CodeValue = "C-162E4"  # [U] SNOMED-RT code as used for Y-90 by some vendors
    win = ds.EnergyWindowInformationSequence[0]
    win.EnergyWindowName = "Y90 BREMSS"  # Short String: 16 characters at most
    win.EnergyWindowRangeSequence[0].EnergyWindowLowerLimit = "100"  # a wide bremsstrahlung window [U]
    win.EnergyWindowRangeSequence[0].EnergyWindowUpperLimit = "250"
    ds.SeriesDescription = "Y-90 bremsstrahlung SPECT post-treatment (synthetic)"
    ds.save_as(path, enforce_file_format=True)


def simulate_post_treatment(plan: Any, out_dir: str | os.PathLike[str],
                            params: PostSimulation | None = None) -> SimulatedPost:
    """Write a simulated post-treatment Y-90 PET/CT of ``plan`` under ``out_dir`` (see the module docstring)."""
    p = params or PostSimulation()
    grid, arrays = _check_plan(plan)
    if not 0.0 <= p.under_perfusion_fraction <= 1.0:
        raise ImagingError(f"under_perfusion_fraction: must be in [0, 1], got {p.under_perfusion_fraction}")
    if not 0.0 <= p.gut_fraction < 0.5:
        raise ImagingError(f"gut_fraction: must be in [0, 0.5), got {p.gut_fraction}")
    if not 0.0 <= p.residual_fraction < 1.0:
        raise ImagingError(f"residual_fraction: must be in [0, 1), got {p.residual_fraction}")
    if p.modality not in ("pet", "spect"):
        raise ImagingError(f"modality: must be 'pet' or 'spect', got {p.modality!r}")
    if not (0.5 <= p.spect_voxel_mm <= 20.0 and p.spect_fwhm_mm >= 0.0 and p.spect_total_counts >= 1000):
        raise ImagingError("spect_voxel_mm (0.5-20), spect_fwhm_mm (>= 0) and spect_total_counts (>= 1000) out of range")
    if not (0.5 <= p.pet_voxel_mm <= 20.0 and p.pet_fwhm_mm >= 0.0 and p.acquisition_hours >= 0.0):
        raise ImagingError("pet_voxel_mm (0.5-20), pet_fwhm_mm (>= 0) and acquisition_hours (>= 0) out of range")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ImagingError(f"{out}: exists and is not a folder")
    if not out.parent.is_dir():
        raise ImagingError(f"{out}: the parent folder {out.parent} does not exist")
    for sub in ("ct", "pet", "spect"):
        if (out / sub).is_dir() and any((out / sub).iterdir()):
            raise ImagingError(f"{out / sub}: already holds files; write the simulated post-treatment set into an "
                               "empty folder")

    d = plan.dosimetry
    delivery = d.delivery
    case = plan.case
    # ---- times and the delivery record
    admin = p.administration_datetime
    if admin is None:
        given = getattr(case.procedure, "administration_datetime", None)
        admin = given.replace(tzinfo=None) if given is not None else datetime.combine(case.procedure.date,
                                                                                      datetime.min.time()) + timedelta(hours=10)
    vial_ref = admin
    vial = p.vial_activity_gbq
    if vial is None:
        if delivery is not None and delivery.glass_vial_gbq is not None and delivery.glass_vial_delivered_gbq:
            vial = delivery.glass_vial_gbq
            hours = delivery.glass_vial_hours_after_calibration or 0.0
            vial_ref = admin - timedelta(hours=hours)
        elif delivery is not None and delivery.vial_activity_at_administration_gbq > 0:
            vial = delivery.vial_activity_at_administration_gbq
        else:
            vial = d.activity_gbq
    vial_at_admin = vial * decay_factor((admin - vial_ref).total_seconds() / 3600.0)
    delivered_gbq = vial_at_admin * (1.0 - p.residual_fraction)
    if not delivered_gbq > 0:
        raise ImagingError("simulate_post_treatment: the plan delivers no activity")

    # ---- the delivered activity on the plan grid
    planned = np.asarray(arrays["activity_mbq"], dtype=np.float64)
    liver = np.asarray(arrays["mask_liver"], dtype=bool)
    lungs = np.asarray(arrays["mask_lungs"], dtype=bool)
    ct_hu = np.asarray(arrays["ct_hu"], dtype=np.float64)
    tumors = sorted(k[len("mask_"):] for k in arrays if k.startswith("mask_tumor_"))
    target = p.under_perfused_tumor
    if target is None and tumors:
        target = max(tumors, key=lambda t: float(planned[np.asarray(arrays[f"mask_{t}"], bool)].sum()))
    shape = planned.copy()
    if target is not None:
        key = f"mask_{target}"
        if key not in arrays:
            raise ImagingError(f"under_perfused_tumor: the plan has no structure {target!r} (it has {', '.join(tumors)})")
        shape[np.asarray(arrays[key], bool)] *= p.under_perfusion_fraction
    inside = float(shape[liver | lungs].sum())
    if not inside > 0:
        raise ImagingError("plan: no planned activity in the liver and lungs")
    delivered_mbq = delivered_gbq * 1000.0
    activity = np.where(liver | lungs, shape, 0.0) * ((1.0 - p.gut_fraction) * delivered_mbq / inside)
    gut = np.zeros(grid.shape, dtype=bool)
    if p.gut_fraction > 0:
        gut = _gut_sphere(grid, ct_hu, liver, lungs, p.gut_radius_mm)
        activity[gut] += p.gut_fraction * delivered_mbq / np.count_nonzero(gut)
    gut_centre = grid.index_to_patient_mm(np.argwhere(gut).mean(axis=0)) if gut.any() else None

    # ---- the post frame
    centre = grid.index_to_patient_mm(np.array(grid.shape, dtype=float) / 2.0 - 0.5)
    truth_t = RigidTransform.from_euler(p.rotation_deg, p.translation_mm,
                                        (float(centre[0]), float(centre[1]), float(centre[2])))
    plan_in_post = truth_t.inverse().grid_in_fixed_frame(grid)  # plan voxel p sits at T(p)
    ct_grid = _bounding_grid(grid, truth_t, float(min(grid.spacing_mm)))
    spect = p.modality == "spect"
    pet_grid = _bounding_grid(grid, truth_t, float(p.spect_voxel_mm if spect else p.pet_voxel_mm))
    rng = np.random.default_rng(p.seed)
    post_hu = np.asarray(resample_to_grid(ct_hu, plan_in_post, ct_grid, "linear", default_value=-1000.0))
    post_hu = np.clip(post_hu + rng.normal(0.0, p.ct_noise_hu, post_hu.shape), -1024.0, 3000.0)
    pet_mbq = np.asarray(resample_to_grid(activity, plan_in_post, pet_grid, "activity"))
    fwhm = p.spect_fwhm_mm if spect else p.pet_fwhm_mm
    if fwhm > 0:
        sigma = [fwhm / (2.0 * math.sqrt(2.0 * math.log(2.0))) / s for s in pet_grid.spacing_mm]
        pet_mbq = ndimage.gaussian_filter(pet_mbq, sigma, mode="constant")
    if p.pet_noise_fraction > 0:
        pet_mbq = np.clip(pet_mbq * (1.0 + rng.normal(0.0, p.pet_noise_fraction, pet_mbq.shape)), 0.0, None)
    acquisition = admin + timedelta(hours=p.acquisition_hours)
    bq_ml = pet_mbq * 1.0e6 * decay_factor(p.acquisition_hours) / pet_grid.voxel_volume_ml
    post_liver = np.asarray(resample_to_grid(liver.astype(np.float32), plan_in_post, ct_grid, "linear")) >= 0.5
    post_lungs = np.asarray(resample_to_grid(lungs.astype(np.float32), plan_in_post, ct_grid, "linear")) >= 0.5

    # ---- write
    patient_id = case.patient.id
    key = hashlib.sha256(json.dumps([asdict(p), patient_id, delivered_gbq], default=str).encode()).hexdigest()
    w = _Writer(key, patient_id, "Phantom^Post^Y90", acquisition, "HFS")
    try:
        (out / "ct").mkdir(parents=True, exist_ok=True)
        (out / ("spect" if spect else "pet")).mkdir(exist_ok=True)
    except OSError as exc:
        raise ImagingError(f"{out}: cannot create the output folders ({exc})") from exc
    ct_series, ct_uids = _write_ct(w, out / "ct", ct_grid, post_hu)
    if spect:
        _write_bremsstrahlung(w, out / "spect" / "bremss.dcm", pet_grid, pet_mbq, p.spect_total_counts,
                              round(delivered_gbq * 1.0e9) / 1.0e6)  # whole Bq: a Decimal String of <= 16 characters
    else:
        _write_pet(w, out / "pet", pet_grid, bq_ml, acquisition=acquisition, administration=admin,
                   total_dose_bq=delivered_gbq * 1.0e9, frame_duration_s=p.frame_duration_s)
    contours = {"Liver": mask_contours(post_liver, ct_grid), "Lungs": mask_contours(post_lungs, ct_grid)}
    _write_rtstruct(w, out / "rtstruct.dcm", ct_grid, ct_series, ct_uids, contours, set())

    post = {
        "schema_version": 1,
        "description": f"simulated post-treatment Y-90 {'bremsstrahlung SPECT' if spect else 'PET'}/CT (embplan "
                       "phantom-post)",
        "administration_datetime": admin.isoformat(),
        **({"spect": "spect/bremss.dcm"} if spect else {"pet": "pet"}),
        "ct": "ct",
        "structures": {"rtstruct": "rtstruct.dcm", "liver": ["Liver"], "lungs": ["Lungs"]},
        "delivery": {
            "vial_activity_gbq": round(float(vial), 6),
            "vial_reference_datetime": vial_ref.isoformat(),
            "residual_fraction": p.residual_fraction,
        },
        "gamma": {"dose_percent": 3.0, "distance_mm": 3.0},
    }
    truth = {
        "transform": truth_t.as_dict(),
        "delivered_activity_gbq": delivered_gbq,
        "vial_activity_gbq": vial,
        "vial_activity_at_administration_gbq": vial_at_admin,
        "residual_fraction": p.residual_fraction,
        "under_perfused_tumor": target,
        "under_perfusion_fraction": p.under_perfusion_fraction,
        "gut_fraction": p.gut_fraction,
        "gut_centre_plan_frame_mm": None if gut_centre is None else [float(v) for v in gut_centre],
        "gut_centre_post_frame_mm": None if gut_centre is None else [float(v) for v in truth_t.apply(gut_centre)],
        "administration_datetime": admin.isoformat(),
        "acquisition_datetime": acquisition.isoformat(),
        "emission_grid": pet_grid.model_dump(mode="json"),
        "ct_grid": ct_grid.model_dump(mode="json"),
        "parameters": asdict(p),
    }
    from ..io import atomic_write_text

    atomic_write_text(out / "post.json", json.dumps(post, indent=2) + "\n", error=ImagingError, what="post.json")
    atomic_write_text(out / "truth.json", json.dumps(truth, indent=2, default=str) + "\n", error=ImagingError,
                      what="truth.json")
    log.info("simulated post-treatment PET/CT written to %s (delivered %.3f GBq)", out, delivered_gbq)
    paths = {"ct": out / "ct", **({"spect": out / "spect" / "bremss.dcm"} if spect else {"pet": out / "pet"}),
             "rtstruct": out / "rtstruct.dcm", "post": out / "post.json", "truth": out / "truth.json"}
    return SimulatedPost(paths=paths, truth=truth)
