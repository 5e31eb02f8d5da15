"""Chemoembolization: lipiodol TACE and drug-eluting-bead TACE (DEB-TACE).

Standard lipiodol TACE (the RETNET trial TACE arm; Soulen, CIRSE 2019; DESIGN.md "Clinical picture"): doxorubicin
50 mg in 10 mL dilute contrast, emulsified with 10-20 mL iodized oil (lipiodol), then 50-500 um microspheres to
stasis within 2-5 heartbeats, lobar or segmental. Every parameter is required in a case (as the example files give
them); departures are allowed and returned by :meth:`TACEProcedure.deviations`.

DEB-TACE: doxorubicin-loaded beads of 100-300 or 300-500 um (the RETNET DEB-TACE arm). DEB-TACE has no role in
NET: the RETNET DEB arm was closed for biliary injury (Soulen, CIRSE 2019), and DEB and NET were independent
predictors of biloma/infarct (odds ratios 9.78 and 8.13; Guiu, J Hepatol 2012). The model accepts it (the risk
rule DEB_TACE_IN_NET flags it); it is never a step of the ladder (:mod:`embplan.protocols.sequencing`). No usual
DEB-TACE doxorubicin dose for NET was verified at a source, so the dose is not checked unless a site sets
:attr:`DEBTACEStandard.doxorubicin_mg_range`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ..thresholds import RETNET, Thresholds
from .base import Issue, ProtocolDeviation, StrictModel, raise_issues
from .common import (
    PARTICLE_MAX_UM,
    Embolic,
    Endpoint,
    ProcedureBase,
    SizeRange,
    check_equal,
    check_in_range,
    check_ordered,
    check_territory,
    range_text,
)
from .tae import TAE_STANDARD, TAEStandard, embolization_deviations, threshold_default
from .territory import Scope

__all__ = [
    "Drug",
    "DrugName",
    "Beads",
    "TACEProcedure",
    "TACEStandard",
    "TACE_STANDARD",
    "DEBTACEProcedure",
    "DEBTACEStandard",
    "DEB_TACE_STANDARD",
    "GUIU_2012",
]

GUIU_2012 = ("Guiu B et al., J Hepatol 2012 (liver/biliary injuries after chemoembolization: DEB OR 9.78, "
             "NET OR 8.13)")

DrugName = Literal["doxorubicin", "epirubicin", "cisplatin", "mitomycin", "other"]


class Drug(StrictModel):
    """The cytotoxic drug and its dose for this session (mg). 0 < dose <= 500 mg is the physical bound."""

    name: DrugName
    dose_mg: float = Field(gt=0, le=500)


class Beads(SizeRange):
    """Drug-eluting bead calibration (um)."""


class TACEStandard(StrictModel):
    """The standard lipiodol TACE protocol (RETNET TACE arm)."""

    drug_name: DrugName = "doxorubicin"
    doxorubicin_mg: float = threshold_default("protocol_doxorubicin_mg")
    contrast_ml: float = 10.0  # 10 mL dilute contrast (RETNET TACE arm)
    lipiodol_ml_range: tuple[float, float] = (
        threshold_default("protocol_lipiodol_min_ml"), threshold_default("protocol_lipiodol_max_ml"))
    embolization: TAEStandard = TAE_STANDARD  # then 50-500 um microspheres to 2-5 heartbeat stasis, lobar/segmental
    source: str = RETNET

    @model_validator(mode="after")
    def _ranges(self) -> TACEStandard:
        check_ordered({"lipiodol_ml_range": self.lipiodol_ml_range})
        return self

    @classmethod
    def from_thresholds(cls, thresholds: Thresholds) -> TACEStandard:
        return cls(
            doxorubicin_mg=thresholds.protocol_doxorubicin_mg,
            lipiodol_ml_range=(thresholds.protocol_lipiodol_min_ml, thresholds.protocol_lipiodol_max_ml),
            embolization=TAEStandard.from_thresholds(thresholds),
        )

    def describe(self) -> str:
        e = self.embolization
        return (f"{self.drug_name} {self.doxorubicin_mg:g} mg in {self.contrast_ml:g} mL dilute contrast emulsified "
                f"with {range_text(*self.lipiodol_ml_range, 'mL')} iodized oil, then "
                f"{range_text(*e.particle_um_range, 'um')} {e.embolic_agent} to stasis within "
                f"{e.stasis_heartbeats_range[0]}-{e.stasis_heartbeats_range[1]} heartbeats, "
                f"{' or '.join(e.scopes)} ({self.source})")


TACE_STANDARD = TACEStandard()


class _Chemoembolization(ProcedureBase):
    """A procedure that gives a cytotoxic ``drug``."""

    drug: Drug

    @property
    def doxorubicin_mg(self) -> float:
        """The doxorubicin dose of this session (0 for another drug)."""
        return self.drug.dose_mg if self.drug.name == "doxorubicin" else 0.0


class TACEProcedure(_Chemoembolization):
    """Lipiodol TACE: ``drug`` in ``contrast_ml`` contrast emulsified with ``lipiodol_ml`` iodized oil, then
    ``embolic`` to the ``endpoint``."""

    kind: Literal["TACE"]
    contrast_ml: float = Field(gt=0, le=100)
    lipiodol_ml: float = Field(gt=0, le=100)
    embolic: Embolic
    endpoint: Endpoint

    def deviations(self, standard: TACEStandard = TACE_STANDARD) -> list[ProtocolDeviation]:
        """Every departure from the standard TACE protocol: drug, doxorubicin dose, contrast volume, iodized oil
        volume, embolic agent and particles, endpoint, territory."""
        src = standard.source
        out = [
            *check_territory(self.territory, standard.embolization.scopes, "TACE", src),
            *check_equal("drug.name", self.drug.name, standard.drug_name, "", "TACE drug", src),
        ]
        if self.drug.name == "doxorubicin":  # the standard dose is a doxorubicin dose
            out += check_equal("drug.dose_mg", self.drug.dose_mg, standard.doxorubicin_mg, "mg", "TACE doxorubicin",
                               src)
        out += check_equal("contrast_ml", self.contrast_ml, standard.contrast_ml, "mL", "TACE dilute contrast", src)
        out += check_in_range("lipiodol_ml", self.lipiodol_ml, *standard.lipiodol_ml_range, "mL",
                              "TACE iodized oil", src)
        out += embolization_deviations(self.embolic, self.endpoint, standard.embolization, "TACE")
        return out

    def describe(self) -> str:
        e = self.embolic
        return (f"TACE of the {self.territory.describe()}: {self.drug.name} {self.drug.dose_mg:g} mg in "
                f"{self.contrast_ml:g} mL contrast with {self.lipiodol_ml:g} mL iodized oil, then {e.agent} "
                f"{range_text(e.size_min_um, e.size_max_um, 'um')} to stasis within "
                f"{self.endpoint.stasis_heartbeats} heartbeats")


class DEBTACEStandard(StrictModel):
    """The standard DEB-TACE protocol (RETNET DEB arm): doxorubicin-loaded beads 100-300 or 300-500 um.

    ``doxorubicin_mg_range``: no usual dose for NET was verified at a source, so ``None`` (not checked); a site
    may set one.
    """

    drug_name: DrugName = "doxorubicin"
    bead_um_ranges: tuple[tuple[float, float], ...] = ((100.0, 300.0), (300.0, 500.0))
    doxorubicin_mg_range: tuple[float, float] | None = None
    scopes: tuple[Scope, ...] = ("lobar", "segmental")
    source: str = f"{RETNET} [U: bead calibrations not verified at the primary source]"

    @model_validator(mode="after")
    def _ranges(self) -> DEBTACEStandard:
        pairs = {f"bead_um_ranges.{i}": r for i, r in enumerate(self.bead_um_ranges)}
        if self.doxorubicin_mg_range is not None:
            pairs["doxorubicin_mg_range"] = self.doxorubicin_mg_range
        check_ordered(pairs)
        bad = [Issue(f"bead_um_ranges.{i}", f"must lie in (0, {PARTICLE_MAX_UM:g}] um", list(r))
               for i, r in enumerate(self.bead_um_ranges) if not 0 < r[0] <= r[1] <= PARTICLE_MAX_UM]
        if bad or not self.bead_um_ranges:
            raise_issues(bad or [Issue("bead_um_ranges", "at least one calibration")])
        return self

    def describe(self) -> str:
        beads = " or ".join(range_text(lo, hi, "um") for lo, hi in self.bead_um_ranges)
        return f"{self.drug_name}-loaded beads {beads}, {' or '.join(self.scopes)} ({self.source})"


DEB_TACE_STANDARD = DEBTACEStandard()


class DEBTACEProcedure(_Chemoembolization):
    """DEB-TACE: ``beads`` loaded with ``drug``."""

    kind: Literal["DEB_TACE"]
    beads: Beads

    def deviations(self, standard: DEBTACEStandard = DEB_TACE_STANDARD) -> list[ProtocolDeviation]:
        """Departures from the DEB-TACE standard: bead calibration outside every standard calibration, a drug
        other than doxorubicin, a dose outside ``standard.doxorubicin_mg_range`` (when set), territory."""
        src = standard.source
        out = [
            *check_territory(self.territory, standard.scopes, "DEB-TACE", src),
            *check_equal("drug.name", self.drug.name, standard.drug_name, "", "DEB-TACE drug", src),
        ]
        if not any(self.beads.within(lo, hi) for lo, hi in standard.bead_um_ranges):
            std = " or ".join(range_text(lo, hi, "um") for lo, hi in standard.bead_um_ranges)
            got = range_text(self.beads.size_min_um, self.beads.size_max_um, "um")
            out.append(ProtocolDeviation(
                parameter="beads", value=[self.beads.size_min_um, self.beads.size_max_um], standard=std,
                source=src, message=f"DEB-TACE beads {got} are outside the standard calibrations {std}"))
        if standard.doxorubicin_mg_range is not None and self.drug.name == "doxorubicin":
            out += check_in_range("drug.dose_mg", self.drug.dose_mg, *standard.doxorubicin_mg_range, "mg",
                                  "DEB-TACE doxorubicin", src)
        return out

    def describe(self) -> str:
        b = self.beads
        return (f"DEB-TACE of the {self.territory.describe()}: {self.drug.name} {self.drug.dose_mg:g} mg on "
                f"beads {range_text(b.size_min_um, b.size_max_um, 'um')}")
