"""Quantities the rules and limits derive from a case (thresholds in force, prior doses, hepatic reserve, BSA)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..anthropometry import body_surface_area_m2 as _bsa_m2
from ..thresholds import Thresholds

if TYPE_CHECKING:  # pragma: no cover
    from ..case import Case

__all__ = [
    "EMBOLIZATION_KINDS",
    "TRANSARTERIAL_CHEMO_OR_BLAND_KINDS",
    "effective_thresholds",
    "PriorTARE",
    "prior_tare",
    "case_hepatic_reserve_fraction",
    "body_surface_area_m2",
    "PORTAL_DRAINAGE_SITES",
    "SYSTEMIC_DRAINAGE_SITES",
    "portal_drainage",
]

#: Every procedure kind embplan plans is an embolization.
EMBOLIZATION_KINDS = frozenset({"TAE", "TACE", "DEB_TACE", "TARE"})
#: Particle/chemo-embolization (not radioembolization).
TRANSARTERIAL_CHEMO_OR_BLAND_KINDS = frozenset({"TAE", "TACE", "DEB_TACE"})

#: Primary sites drained by the portal system: "pancreas and intermediate gut from stomach to sigmoid colon"
#: (Milan-NET, Mazzaferro et al., J Hepatol 2007). The rectum drains largely to the systemic circulation.
PORTAL_DRAINAGE_SITES = frozenset({"stomach", "small_intestine", "pancreas", "appendix", "colon"})
SYSTEMIC_DRAINAGE_SITES = frozenset({"lung", "rectum"})



def effective_thresholds(case: Case, thresholds: Thresholds | None = None) -> Thresholds:
    """The thresholds in force for ``case``.

    ``thresholds`` (e.g. a site configuration) is the base, defaults when None; the case's own overrides
    (``case.thresholds``) apply on top. Unknown key or bad value -> CaseError naming ``thresholds.<key>``.
    """
    overrides: dict[str, Any] = dict(getattr(case, "thresholds", None) or {})
    if thresholds is None:
        eff = getattr(case, "effective_thresholds", None)
        if callable(eff):
            return eff()
        return Thresholds.with_overrides(overrides)
    return Thresholds.with_overrides(overrides, base=thresholds)


@dataclass(frozen=True)
class PriorTARE:
    """Summary of the earlier radioembolizations of a case."""

    count: int
    lung_dose_gy: float  # sum of the recorded lung doses
    lung_dose_unknown_count: int  # records without a lung dose
    normal_liver_doses_gy: tuple[float, ...]  # the recorded normal-liver doses
    normal_liver_dose_unknown_count: int


def prior_tare(case: Case) -> PriorTARE:
    """Earlier TARE records of the patient: count, summed lung dose, recorded normal-liver doses."""
    records = [t for t in case.patient.prior_treatments if t.kind == "TARE"]
    lung = [t.lung_dose_gy for t in records if t.lung_dose_gy is not None]
    liver = [t.normal_liver_dose_gy for t in records if t.normal_liver_dose_gy is not None]
    return PriorTARE(
        count=len(records),
        lung_dose_gy=float(sum(lung)),
        lung_dose_unknown_count=len(records) - len(lung),
        normal_liver_doses_gy=tuple(float(x) for x in liver),
        normal_liver_dose_unknown_count=len(records) - len(liver),
    )


def case_hepatic_reserve_fraction(case: Case) -> float | None:
    """Fraction of the liver left untreated by the requested TARE, as far as the case alone decides.

    Whole-liver scope -> 0.0; otherwise ``1 - perfused_volume_ml / liver_volume_ml`` when both are given; else
    None (the planner may know it from the images: see ``DoseFacts.hepatic_reserve_fraction``). None for
    procedures other than TARE.
    """
    proc = case.procedure
    if proc.kind != "TARE":
        return None
    if proc.territory.scope == "whole_liver":
        return 0.0
    dosi = case.dosimetry
    if dosi is None or dosi.perfused_volume_ml is None or dosi.liver_volume_ml is None:
        return None
    # (liver - perfused) / liver rather than 1 - perfused / liver: exact at round boundaries (300/1000 == 0.3)
    return max(0.0, (dosi.liver_volume_ml - dosi.perfused_volume_ml) / dosi.liver_volume_ml)


def body_surface_area_m2(weight_kg: float, height_cm: float) -> float:
    """Du Bois body surface area (Du Bois & Du Bois, Arch Intern Med 1916; :mod:`embplan.anthropometry`)."""
    return _bsa_m2(weight_kg, height_cm, "dubois")


def portal_drainage(case: Case) -> tuple[bool | None, str]:
    """Is the primary drained by the portal system? (value, how it was decided).

    The case's ``disease.primary_portal_drainage`` when given; else inferred from the primary site
    (:data:`PORTAL_DRAINAGE_SITES` / :data:`SYSTEMIC_DRAINAGE_SITES`); None when the site does not decide it.
    """
    disease = case.patient.disease
    given = getattr(disease, "primary_portal_drainage", None)
    if given is not None:
        return bool(given), "given"
    if disease.primary_site in PORTAL_DRAINAGE_SITES:
        return True, f"inferred from primary site {disease.primary_site}"
    if disease.primary_site in SYSTEMIC_DRAINAGE_SITES:
        return False, f"inferred from primary site {disease.primary_site}"
    return None, f"unknown for primary site {disease.primary_site}"
