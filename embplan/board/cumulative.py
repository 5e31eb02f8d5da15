"""The liver over the years from voxel maps: every earlier TARE session whose record names its dose map
(``patient.prior_treatments[].dose_file``: an RT Dose or an embplan plan file) is read, placed on this plan's grid
(same frame of reference required; resampled when the grid differs) and summed with this plan's dose map.

What comes out (the planner stores it in the plan):

- the cumulative dose map (plain voxelwise sum of physical absorbed dose, Gy) and the cumulative BED map (the sum of
  each session's BED with the liver's alpha/beta and repair half-time from :class:`~embplan.thresholds.Thresholds`
  ``liver_alpha_beta_gy`` / ``liver_repair_half_time_h``; :mod:`embplan.dosimetry.cumulative` says why the BEDs add);
- mass-weighted means per structure: the whole non-tumour liver, each lobe's and each segment's non-tumour liver where
  the images have those ROIs, the lungs; earlier, this plan, sum, BED sum (:class:`CumulativeVoxelDose`);
- the cumulative DVH of the non-tumour liver (the planner adds it to ``dosimetry.dvh``);
- CUMULATIVE_LIVER_DOSE_HIGH (warning) when the cumulative mean dose of the whole non-tumour liver exceeds the
  non-tumour liver limit in force for this plan (the one its own session is prescribed against). No limit for the sum
  of sessions is validated: applying the single-session limit to the plain sum is a conservative reading, supported by
  the higher REILD risk of repeated radioembolization (Lam 2013: repeat RE was the only independent risk factor,
  OR 9.6).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..dosimetry.cumulative import structure_sums, sum_sessions
from ..dosimetry.metrics import RadiobiologyParams, dvh
from ..errors import ImagingError
from ..grid import Grid
from ..imaging.prior_dose import prior_dose_on_grid, read_prior_dose_map
from ..risk.flags import Flag, Severity
from ..thresholds import Thresholds
from .model import CumulativeStructure, CumulativeVoxelDose, PriorDoseFile

if TYPE_CHECKING:  # pragma: no cover
    from ..case import Case

__all__ = ["CumulativeResult", "PlacedPriors", "place_prior_dose_maps", "cumulative_voxel_dose", "dose_files", "dose_file_paths", "LAM_2013", "CUMULATIVE_DVH_KEY",
           "STRUCTURE_LABELS"]

LAM_2013 = ("Lam MG, Louie JD, Iagaru AH, Goris ML, Sze DY. Safety of repeated yttrium-90 radioembolization. "
            "Cardiovasc Intervent Radiol 2013;36:1320-8 (REILD after repeated RE; repeat RE the only independent risk "
            "factor, OR 9.6; 'the liver's cumulative memory of previous exposure')")
#: Key of the cumulative non-tumour liver DVH in ``dosimetry.dvh``.
CUMULATIVE_DVH_KEY = "normal_liver_cumulative"
#: Structure key -> what a board reads.
STRUCTURE_LABELS = {"normal_liver": "non-tumour liver", "liver_right": "right lobe", "liver_left": "left lobe",
                    "lungs": "lungs"}


@dataclass(frozen=True, eq=False)
class CumulativeResult:
    """The voxel sum: the record for the board, the arrays for the plan's voxel data, the non-tumour liver weights
    of the DVH, and the flags."""

    record: CumulativeVoxelDose
    arrays: dict[str, np.ndarray]
    units: dict[str, str]
    normal_liver: np.ndarray
    flags: list[Flag] = field(default_factory=list)


def dose_files(case: Case) -> list[int]:
    """Indices of the prior TARE records that name a dose map."""
    return [i for i, r in enumerate(case.patient.prior_treatments) if r.kind == "TARE" and r.dose_file is not None]


def dose_file_paths(case: Case) -> dict[str, Path]:
    """The earlier dose maps a TARE case names (field path -> resolved path), without reading them; ImagingError
    naming every field whose file does not exist (``embplan validate``). {} for other procedures (not read)."""
    out: dict[str, Path] = {}
    missing = []
    if case.procedure.kind != "TARE":
        return out  # read only by a TARE plan
    for i in dose_files(case):
        given = case.patient.prior_treatments[i].dose_file
        assert given is not None
        field_name = f"patient.prior_treatments.{i}.dose_file"
        path = case.resolve_path(given)
        if not path.is_file():
            missing.append(f"{field_name}: {path} not found")
        out[field_name] = path
    if missing:
        raise ImagingError("; ".join(missing))
    return out


def _label(key: str) -> str:
    if key.startswith("segment_"):
        return f"segment {key[len('segment_'):]}"
    return STRUCTURE_LABELS.get(key, key)


@dataclass(frozen=True, eq=False)
class PlacedPriors:
    """The earlier dose maps read and placed on the current grid (before this plan's dose is computed)."""

    files: list[PriorDoseFile]
    maps: list[np.ndarray]
    notes: list[str]


def place_prior_dose_maps(case: Case, grid: Grid, masks: Mapping[str, np.ndarray],
                          frame_of_reference_uid: str | None) -> PlacedPriors | None:
    """Read every earlier dose map the case names and place it on ``grid`` (same frame of reference; resampled when
    the grid differs). None when no record names one. ImagingError naming ``patient.prior_treatments.N.dose_file``
    when a file cannot be read or placed: the planner calls this before computing any dose."""
    indices = dose_files(case)
    if not indices:
        return None
    liver = np.asarray(masks["liver"], dtype=bool)
    records = case.patient.prior_treatments
    files: list[PriorDoseFile] = []
    priors: list[np.ndarray] = []
    notes: list[str] = []
    for i in indices:
        r = records[i]
        name = f"patient.prior_treatments.{i}.dose_file"
        assert r.dose_file is not None
        path = case.resolve_path(r.dose_file)
        try:
            prior = read_prior_dose_map(path)
            on_grid, placement = prior_dose_on_grid(prior, grid, frame_of_reference_uid, liver, field_name=name)
        except ImagingError as exc:
            msg = str(exc)
            raise ImagingError(msg if msg.startswith(name) else f"{name}: {msg}") from exc
        if prior.meta.get("dose_summation_type") not in (None, "PLAN", "PLAN_OVERVIEW", "BRACHY", "BRACHY_SESSION"):
            notes.append(f"{prior.path.name}: Dose Summation Type {prior.meta['dose_summation_type']}: taken as one "
                         "session for the BED sum (a multi-session file overstates its BED).")
        files.append(PriorDoseFile(record=i, date=r.date, territory=r.territory.describe() if r.territory else None,
                                   path=str(path), description=prior.description, placement=placement))
        priors.append(on_grid)
    return PlacedPriors(files=files, maps=priors, notes=notes)


def cumulative_voxel_dose(
    case: Case, th: Thresholds, *, grid: Grid, masks: Mapping[str, np.ndarray], dose_gy: np.ndarray,
    lung_dose_gy: np.ndarray, density_g_cm3: np.ndarray, frame_of_reference_uid: str | None, dose_method: str,
    normal_liver_limit_gy: float | None, normal_liver_limit_source: str, dvh_bin_width_gy: float,
    placed: PlacedPriors | None = None,
) -> CumulativeResult | None:
    """Sum the earlier TARE dose maps named in ``case`` with this plan's ``dose_gy`` (on ``grid``; ``lung_dose_gy``
    is the map this plan reads its lung dose from). ``placed``: the maps already placed by
    :func:`place_prior_dose_maps` (else they are read here). None when no record names a dose map. ImagingError
    (naming ``patient.prior_treatments.N.dose_file``) when a file cannot be read or placed."""
    if placed is None:
        placed = place_prior_dose_maps(case, grid, masks, frame_of_reference_uid)
    if placed is None:
        return None
    liver = np.asarray(masks["liver"], dtype=bool)
    tumors = np.asarray(masks["tumors"], dtype=bool)
    normal = liver & ~tumors
    files, priors, notes = placed.files, placed.maps, list(placed.notes)
    radiobio = RadiobiologyParams(
        name="normal liver (thresholds in force)", alpha_beta_gy=th.liver_alpha_beta_gy,
        repair_half_time_h=th.liver_repair_half_time_h,
        source=type(th).model_fields["liver_alpha_beta_gy"].description or "", uncertain=True)
    now = np.asarray(dose_gy, dtype=np.float64)
    summed = sum_sessions([*priors, now], radiobio)
    prior_total = np.sum(priors, axis=0)
    rho = np.asarray(density_g_cm3, dtype=np.float64)
    v_ml = grid.voxel_volume_ml

    structs: dict[str, np.ndarray] = {"normal_liver": normal}
    for key in ("liver_right", "liver_left"):
        if key in masks:
            structs[key] = np.asarray(masks[key], dtype=bool) & normal
    for key in sorted(k for k in masks if k.startswith("segment_")):
        structs[key] = np.asarray(masks[key], dtype=bool) & normal
    sums = structure_sums(prior_total, now, summed.bed_gy, structs, rho, v_ml)
    lungs = np.asarray(masks["lungs"], dtype=bool)
    lung_sums = structure_sums(prior_total, np.asarray(lung_dose_gy, dtype=np.float64), summed.bed_gy,
                               {"lungs": lungs}, rho, v_ml)
    rows = [CumulativeStructure(structure=_label(s.structure), volume_ml=s.volume_ml, prior_gy=max(s.prior_gy, 0.0),
                                this_plan_gy=max(s.this_session_gy, 0.0), cumulative_gy=max(s.cumulative_gy, 0.0),
                                cumulative_bed_gy=max(s.cumulative_bed_gy, 0.0)) for s in sums]
    rows += [CumulativeStructure(structure="lungs", volume_ml=s.volume_ml, prior_gy=max(s.prior_gy, 0.0),
                                 this_plan_gy=max(s.this_session_gy, 0.0), cumulative_gy=max(s.cumulative_gy, 0.0))
             for s in lung_sums]
    if lung_sums:
        lung = lung_sums[0]
        notes.append("Lungs: the earlier maps' lung dose near the liver dome is SPECT spill-in, not lung dose; the "
                     "prescription's cumulative lung budget reads the recorded lung doses (prior_treatments[]."
                     "lung_dose_gy), not these maps.")
        if lung.cumulative_gy > th.lung_dose_cumulative_limit_gy:
            notes.append(f"The voxel maps give a cumulative lung dose of {lung.cumulative_gy:.1f} Gy, above the "
                         f"{th.lung_dose_cumulative_limit_gy:g} Gy cumulative limit (lung_dose_cumulative_limit_gy): "
                         "check the earlier sessions' recorded lung doses.")

    h = dvh(summed.dose_gy, normal, voxel_volume_ml=v_ml, bin_width_gy=dvh_bin_width_gy,
            name=CUMULATIVE_DVH_KEY, mass_density_g_cm3=rho)
    mets = h.metrics()
    whole = next(s for s in rows if s.structure == "non-tumour liver")
    exceeds = normal_liver_limit_gy is not None and whole.cumulative_gy > normal_liver_limit_gy * (1 + 1e-9)
    definition = (
        f"voxel maps of plan files: {len(files)} earlier TARE dose map(s) placed on this plan's grid and summed with "
        f"this plan's {dose_method} map (delivered activity). Dose: the plain voxelwise sum of physical absorbed "
        "dose (Gy), no radiobiology. BED: the voxelwise sum of each session's BED (Dale 1985 permanent Y-90 implant, "
        f"alpha/beta {th.liver_alpha_beta_gy:g} Gy, repair half-time {th.liver_repair_half_time_h:g} h; sessions "
        "weeks apart add as separate exposures; regeneration between them not modelled). Means are mass-weighted "
        "over the current images' structures (non-tumour liver = liver ROIs minus tumour ROIs).")
    record = CumulativeVoxelDose(
        files=files, frame_of_reference_uid=str(frame_of_reference_uid), dose_method=dose_method,
        definition=definition, bed_alpha_beta_gy=th.liver_alpha_beta_gy,
        bed_repair_half_time_h=th.liver_repair_half_time_h, bed_source=radiobio.source, structures=rows,
        dvh_key=CUMULATIVE_DVH_KEY,
        d_gy={k[: -len("_gy")]: v for k, v in mets.items() if k.startswith("D")},
        v_percent={k[: -len("_percent")]: v for k, v in mets.items() if k.startswith("V")},
        normal_liver_limit_gy=normal_liver_limit_gy, normal_liver_limit_source=normal_liver_limit_source,
        exceeds_limit=exceeds, notes=notes,
    )
    flags = []
    if exceeds:
        assert normal_liver_limit_gy is not None
        flags.append(Flag(
            code="CUMULATIVE_LIVER_DOSE_HIGH", severity=Severity.WARNING,
            message=(f"Cumulative non-tumour liver dose {whole.cumulative_gy:.1f} Gy ({whole.prior_gy:.1f} Gy from "
                     f"{len(files)} earlier TARE session(s) + {whole.this_plan_gy:.1f} Gy now; BED sum "
                     f"{whole.cumulative_bed_gy or 0.0:.1f} Gy) exceeds the non-tumour liver limit in force "
                     f"{normal_liver_limit_gy:g} Gy: repeated radioembolization raises the REILD risk. Reduce the "
                     "activity or the territory, lengthen the interval, or document why it is accepted. [checked: "
                     "plain sum of the voxel maps, mass-weighted mean over the whole non-tumour liver; the limit is "
                     "a single-session limit, no cumulative limit is validated]"),
            evidence=f"{LAM_2013}; {normal_liver_limit_source}",
            context={"cumulative_normal_liver_gy": whole.cumulative_gy, "prior_normal_liver_gy": whole.prior_gy,
                     "this_plan_normal_liver_gy": whole.this_plan_gy,
                     "cumulative_normal_liver_bed_gy": whole.cumulative_bed_gy,
                     "normal_liver_limit_gy": normal_liver_limit_gy, "dose_files": [f.path for f in files],
                     "dose_definition": "voxel maps of plan files, plain sum"},
        ))
    arrays = {"cumulative_dose_gy": summed.dose_gy, "cumulative_bed_gy": summed.bed_gy,
              "prior_dose_gy": prior_total}
    units = {"cumulative_dose_gy": "Gy", "cumulative_bed_gy": "Gy", "prior_dose_gy": "Gy"}
    return CumulativeResult(record=record, arrays=arrays, units=units, normal_liver=normal, flags=flags)
