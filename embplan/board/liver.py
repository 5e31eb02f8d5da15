"""The liver over the years: ALBI grade, cirrhosis and ascites (compensated or not), the radioembolization dose each
territory has received (summed from the history's compartment values, plus the planned session), staged bilobar TARE
as whole-liver exposure, and earlier PRRT / EBRT that reduce the reserve.

ALBI (Johnson PJ et al., J Clin Oncol 2015;33:550-8): ``ALBI = 0.66 x log10(bilirubin, umol/L) - 0.085 x
(albumin, g/L)``; grade 1 <= -2.60 < grade 2 <= -1.39 < grade 3. Unit conversions: bilirubin 1 mg/dL = 17.1 umol/L
(molar mass 584.66 g/mol: 10 mg/L / 584.66 g/mol = 17.10 umol/L); albumin 1 g/dL = 10 g/L.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from ..protocols.territory import LOBE_SEGMENTS
from ..risk import evidence as ev
from ..risk.eligibility import staged_bilobar_tare
from ..thresholds import Thresholds
from .facts import LOBES, BoardDoseFacts, lobe_name
from .model import CumulativeVoxelDose, LiverReserve, TerritoryDose

if TYPE_CHECKING:  # pragma: no cover
    from ..case import Case

__all__ = [
    "ALBI_SOURCE",
    "BILIRUBIN_UMOL_PER_MG_DL",
    "ALBI_GRADE1_MAX",
    "ALBI_GRADE2_MAX",
    "albi_score",
    "albi_grade",
    "liver_reserve",
    "compensated",
]

ALBI_SOURCE = ("Johnson PJ et al., J Clin Oncol 2015;33:550-8 (ALBI = 0.66 log10 bilirubin[umol/L] - 0.085 "
               "albumin[g/L]; grade 1 <= -2.60 < grade 2 <= -1.39 < grade 3)")
#: 1 mg/dL of bilirubin (584.66 g/mol) in umol/L.
BILIRUBIN_UMOL_PER_MG_DL = 17.1
ALBI_GRADE1_MAX = -2.60
ALBI_GRADE2_MAX = -1.39
_PRRT_SOURCE = ("Braat AJAT et al., Eur J Nucl Med Mol Imaging 2019 (radioembolization after PRRT, n=44: fatal REILD "
                "2%); earlier EBRT and PRRT are REILD risk factors (van Roekel thesis pp.38-39)")


def albi_score(bilirubin_mg_dl: float, albumin_g_dl: float) -> float | None:
    """ALBI score from bilirubin (mg/dL) and albumin (g/dL); None when bilirubin is 0 (log undefined)."""
    if bilirubin_mg_dl <= 0:
        return None
    return 0.66 * math.log10(bilirubin_mg_dl * BILIRUBIN_UMOL_PER_MG_DL) - 0.085 * (albumin_g_dl * 10.0)


def albi_grade(score: float | None) -> int | None:
    if score is None:
        return None
    if score <= ALBI_GRADE1_MAX:
        return 1
    if score <= ALBI_GRADE2_MAX:
        return 2
    return 3


def compensated(case: Case, th: Thresholds) -> tuple[bool | None, str]:
    """Is the liver compensated? No with ascites, ALBI grade 3 or bilirubin above ``bilirubin_high_mg_dl``; yes when
    ascites is recorded absent and ALBI is grade 1-2; otherwise undecided (None): ascites not recorded."""
    labs = case.patient.labs
    grade = albi_grade(albi_score(labs.bilirubin_mg_dl, labs.albumin_g_dl))
    ascites = case.patient.liver.ascites
    why = []
    if ascites:
        why.append("ascites")
    if grade == 3:
        why.append("ALBI grade 3")
    if labs.bilirubin_mg_dl > th.bilirubin_high_mg_dl:
        why.append(f"bilirubin {labs.bilirubin_mg_dl:g} mg/dL > {th.bilirubin_high_mg_dl:g}")
    if why:
        return False, "decompensated: " + ", ".join(why)
    if ascites is False and grade in (1, 2):
        cirr = "compensated cirrhosis" if case.patient.liver.cirrhosis else "compensated"
        return True, f"{cirr}: no ascites, ALBI grade {grade}"
    return None, "undecided: ascites not recorded (liver.ascites)" if ascites is None else "undecided: ALBI not computable"


def _territory_doses(case: Case, dose: BoardDoseFacts | None) -> list[TerritoryDose]:
    out = []
    proc = case.procedure
    records = [r for r in case.patient.prior_treatments if r.kind == "TARE"]
    for lobe in LOBES:
        segs = LOBE_SEGMENTS[lobe]
        recs = [r for r in records if r.territory is not None and r.territory.couinaud_segments & segs]
        unterritoried = [r for r in records if r.territory is None]
        liver = [r.normal_liver_dose_gy for r in recs if r.normal_liver_dose_gy is not None]
        missing = len(recs) - len(liver)
        planned = (proc.kind == "TARE" and bool(proc.territory.couinaud_segments & segs))
        total = sum(liver) if liver else None
        mapped = sum(1 for r in recs if r.normal_liver_dose_gy is None and r.dose_file is not None)
        parts = [f"{len(recs)} earlier TARE session(s)" + (f", {missing} without a recorded liver dose (sum is a lower "
                                                            "bound)" if missing else "")
                 + (f"; {mapped} of them name a dose map (summed in the voxel records of a plan on DICOM images)"
                    if mapped else "")]
        if unterritoried:
            parts.append(f"{len(unterritoried)} TARE record(s) without a territory not counted")
        if planned and dose is not None and dose.normal_liver_dose_gy is not None:
            total = (total or 0.0) + dose.normal_liver_dose_gy
            parts.append(f"plus this plan's {dose.normal_liver_dose_gy:.1f} Gy (perfused non-tumour liver)")
        elif planned:
            parts.append("plus this plan's session (dose in the plan)")
        out.append(TerritoryDose(
            territory=lobe_name(lobe), prior_sessions=len(recs), cumulative_normal_liver_gy=total,
            source="compartment values from the history (prior_treatments[].normal_liver_dose_gy); " + "; ".join(parts),
        ))
    lung = [r.lung_dose_gy for r in records if r.lung_dose_gy is not None]
    lung_total = sum(lung) if lung else None
    src = f"{len(records)} earlier TARE session(s), {len(records) - len(lung)} without a recorded lung dose"
    if proc.kind == "TARE" and dose is not None and dose.lung_dose_gy is not None:
        lung_total = (lung_total or 0.0) + dose.lung_dose_gy
        src += f"; plus this plan's {dose.lung_dose_gy:.1f} Gy"
    out.append(TerritoryDose(territory="lungs", prior_sessions=len(records), cumulative_lung_gy=lung_total,
                             source=src))
    return out


def _voxel_territory_doses(case: Case, cum: CumulativeVoxelDose) -> list[TerritoryDose]:
    """The voxel sum as territory records: the whole non-tumour liver, each lobe (and segment) the images outline,
    the lungs; source 'voxel maps of plan files ...'."""
    files = ", ".join(f"{Path(f.path).name} ({f.date.isoformat()}, {f.territory or 'territory not recorded'})"
                      for f in cum.files)
    src = (f"voxel maps of plan files: {files} + this plan's {cum.dose_method} map, plain sum on the current grid "
           "(liver.cumulative_voxel)")
    out = []
    for row in cum.structures:
        if row.structure.startswith("segment "):
            continue  # segments: in liver.cumulative_voxel and the note
        lung = row.structure == "lungs"
        out.append(TerritoryDose(
            territory=f"{row.structure} (voxel maps)", prior_sessions=len(cum.files),
            cumulative_normal_liver_gy=None if lung else row.cumulative_gy,
            cumulative_lung_gy=row.cumulative_gy if lung else None, source=src,
            prior_normal_liver_gy=None if lung else row.prior_gy,
            this_plan_normal_liver_gy=None if lung else row.this_plan_gy,
            cumulative_normal_liver_bed_gy=None if lung else row.cumulative_bed_gy, volume_ml=row.volume_ml,
        ))
    return out


def _cumulative_notes(cum: CumulativeVoxelDose) -> list[str]:
    whole = cum.structure("non-tumour liver")
    lobes = "; ".join(f"{r.structure} {r.prior_gy:.1f} + {r.this_plan_gy:.1f} = {r.cumulative_gy:.1f} Gy"
                      for r in cum.structures if r.structure not in ("non-tumour liver", "lungs"))
    limit = ""
    if cum.normal_liver_limit_gy is not None:
        verdict = "ABOVE" if cum.exceeds_limit else "within"
        limit = (f" {verdict} the non-tumour liver limit in force {cum.normal_liver_limit_gy:g} Gy"
                 + (" (CUMULATIVE_LIVER_DOSE_HIGH)" if cum.exceeds_limit else "") + ".")
    v = ", ".join(f"{k} {val:.0f} %" for k, val in cum.v_percent.items() if k in ("V40Gy", "V70Gy"))
    return [f"Liver over the years (voxel maps of {len(cum.files)} earlier plan file(s) + this plan): whole non-tumour "
            f"liver {whole.prior_gy:.1f} + {whole.this_plan_gy:.1f} = {whole.cumulative_gy:.1f} Gy (plain sum; BED sum "
            f"{whole.cumulative_bed_gy or 0.0:.1f} Gy at alpha/beta {cum.bed_alpha_beta_gy:g} Gy)"
            + (f"; {lobes}" if lobes else "") + (f"; cumulative DVH {v}" if v else "") + "." + limit]


def liver_reserve(case: Case, th: Thresholds, dose: BoardDoseFacts | None = None,
                  cumulative: CumulativeVoxelDose | None = None) -> LiverReserve:
    labs = case.patient.labs
    score = albi_score(labs.bilirubin_mg_dl, labs.albumin_g_dl)
    comp, comp_why = compensated(case, th)
    prior = case.patient.prior_treatments
    prrt = [r for r in prior if r.kind == "PRRT"]
    ebrt = [r for r in prior if r.kind == "EBRT" and r.territory is not None]  # liver EBRT (a territory given)
    notes = [f"Liver function: {comp_why}" + (f" (ALBI {score:.2f})" if score is not None else "") + "."]
    if case.patient.liver.cirrhosis:
        notes.append("Cirrhosis: TARE and embolization tighten (lobar or segmental only, lower liver dose limits); "
                     "poorly differentiated NET: TARE only if compensated.")
    if prrt:
        notes.append(f"Earlier PRRT ({', '.join(r.date.isoformat() for r in prrt)}): reduced liver reserve; a REILD "
                     f"risk factor before radioembolization ({_PRRT_SOURCE}). TARE combined with PRRT: no evidence "
                     "for or against (seed).")
    if ebrt:
        notes.append(f"Earlier external-beam radiotherapy of the liver ({', '.join(r.date.isoformat() for r in ebrt)}): reduced "
                     f"liver reserve; a REILD risk factor ({ev.ROBERSON_REILD}).")
    staged = staged_bilobar_tare(case, th)
    if staged:
        notes.append(
            f"Staged bilobar TARE: {case.procedure.territory.describe()} now and "
            + ", ".join(f"{r.territory.describe() if r.territory else '?'} on {r.date.isoformat()}" for r in staged)
            + f" within {th.board_bilobar_tare_window_days} days: whole-liver exposure (WHOLE_LIVER_TARE; "
            f"{ev.SU_2017}; {ev.CURRIE_2019}).")
    if cumulative is not None:
        notes.extend(_cumulative_notes(cumulative))
    elif any(r.kind == "TARE" and r.dose_file for r in prior):
        notes.append("Earlier dose map(s) named (prior_treatments[].dose_file) are summed voxel by voxel only when "
                     "this case plans a TARE on DICOM images of the same frame of reference (embplan plan); here the "
                     "compartment values of the history are summed.")
    if case.procedure.kind == "TARE" and case.procedure.territory.is_whole_liver:
        notes.append(f"Whole-liver TARE in one session: avoid; prefer staged lobar treatment ({ev.SU_2017}).")
    return LiverReserve(
        albi_score=score, albi_grade=albi_grade(score),
        albi_source=ALBI_SOURCE + ("" if score is not None else "; not computable: bilirubin 0"),
        cirrhosis=case.patient.liver.cirrhosis, ascites=case.patient.liver.ascites, compensated=comp,
        territory_doses=_territory_doses(case, dose) + (_voxel_territory_doses(case, cumulative) if cumulative else []),
        cumulative_voxel=cumulative, prior_prrt=bool(prrt), prior_ebrt=bool(ebrt), notes=notes,
    )
