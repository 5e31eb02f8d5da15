"""Radioembolization (TARE) with Y-90 resin or glass microspheres.

Standard (DESIGN.md "Clinical picture"; Weber, EANM 2022 guideline): resin (SIR-Spheres) or glass (TheraSphere)
Y-90 microspheres to a segmental, lobar or whole-liver territory. Whole-liver treatment in one session is
allowed by the model and is the subject of its own risk rule (WHOLE_LIVER_TARE: cirrhosis-like morphology in
56.4% after whole-liver TARE in NET; Su, JVIR 2017), not a protocol deviation.

The prescription names a method (``partition``, ``mird`` or ``bsa``) and its targets; the dosimetry inputs the
method needs are checked at the case level (:mod:`embplan.case`), since they live beside the procedure.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ..thresholds import EANM_2022
from .base import IsoDateTime, Issue, ProtocolDeviation, StrictModel, raise_issues
from .common import ProcedureBase, check_territory
from .territory import Scope

__all__ = [
    "Device",
    "PrescriptionMethod",
    "TAREPrescription",
    "TAREProcedure",
    "TAREStandard",
    "TARE_STANDARD",
]

Device = Literal["resin", "glass"]
PrescriptionMethod = Literal["partition", "mird", "bsa"]


class TAREPrescription(StrictModel):
    """How the activity is prescribed.

    - ``partition`` (Ho 1996): needs ``tumor_dose_target_gy`` or a fixed ``activity_gbq``;
    - ``mird`` (single compartment): needs ``perfused_dose_target_gy`` or a fixed ``activity_gbq``;
    - ``bsa`` (body surface area, resin): needs nothing.

    Limits (``normal_liver_dose_limit_gy``, ``lung_dose_limit_gy``) are optional: without them the thresholds
    apply. The bounds here are physical (no Y-90 vial exceeds 20 GBq; 30 GBq leaves room), not clinical.
    """

    method: PrescriptionMethod
    tumor_dose_target_gy: float | None = Field(default=None, gt=0, le=2000)
    normal_liver_dose_limit_gy: float | None = Field(default=None, gt=0, le=500)
    perfused_dose_target_gy: float | None = Field(default=None, gt=0, le=2000)
    lung_dose_limit_gy: float | None = Field(default=None, gt=0, le=200)
    activity_gbq: float | None = Field(default=None, gt=0, le=30)

    @model_validator(mode="after")
    def _method_needs(self) -> TAREPrescription:
        if self.activity_gbq is None:
            if self.method == "partition" and self.tumor_dose_target_gy is None:
                raise_issues([Issue("tumor_dose_target_gy",
                                    "required for the partition method (or give a fixed activity_gbq)")])
            if self.method == "mird" and self.perfused_dose_target_gy is None:
                raise_issues([Issue("perfused_dose_target_gy",
                                    "required for the mird method (or give a fixed activity_gbq)")])
        return self


class TAREProcedure(ProcedureBase):
    """Radioembolization: ``device`` and ``prescription``; optional vial calibration and administration times and
    the fraction of activity left in the vial and lines (``residual_fraction``)."""

    kind: Literal["TARE"]
    device: Device
    prescription: TAREPrescription
    calibration_datetime: IsoDateTime | None = None
    administration_datetime: IsoDateTime | None = None
    residual_fraction: float | None = Field(default=None, ge=0, lt=1)

    @model_validator(mode="after")
    def _times(self) -> TAREProcedure:
        cal, adm = self.calibration_datetime, self.administration_datetime
        if cal is not None and adm is not None and (cal.tzinfo is None) != (adm.tzinfo is None):
            raise_issues([Issue("administration_datetime",
                                "give both times with a UTC offset or both without", adm.isoformat())])
        return self

    @property
    def is_whole_liver(self) -> bool:
        return self.territory.scope == "whole_liver"

    def deviations(self, standard: TAREStandard | None = None) -> list[ProtocolDeviation]:
        """Departures from the TARE standard. With the default standard there are none: every device and scope
        is standard, and whole-liver treatment is a risk rule of its own (WHOLE_LIVER_TARE). A site may narrow
        :attr:`TAREStandard.scopes`."""
        standard = TARE_STANDARD if standard is None else standard
        out = check_territory(self.territory, standard.scopes, "TARE", standard.source)
        if self.device not in standard.devices:
            out.append(ProtocolDeviation(
                parameter="device", value=self.device, standard=" or ".join(standard.devices),
                source=standard.source, message=f"TARE device {self.device} is not a standard device"))
        return out

    def describe(self) -> str:
        p = self.prescription
        target = (f"{p.activity_gbq:g} GBq fixed" if p.activity_gbq is not None
                  else f"tumour {p.tumor_dose_target_gy:g} Gy" if p.method == "partition"
                  else f"perfused {p.perfused_dose_target_gy:g} Gy" if p.method == "mird"
                  else "BSA activity")
        return f"TARE ({self.device} Y-90) of the {self.territory.describe()}: {p.method} model, {target}"


class TAREStandard(StrictModel):
    """The TARE standard: resin or glass Y-90 microspheres, segmental, lobar or whole-liver territory."""

    devices: tuple[Device, ...] = ("resin", "glass")
    scopes: tuple[Scope, ...] = ("segmental", "lobar", "whole_liver")
    source: str = f"{EANM_2022}; Su, JVIR 2017 and Currie, JVIR 2019 (whole-liver TARE in NET: prefer staged lobar)"

    def describe(self) -> str:
        scopes = ", ".join(s.replace("_", "-") for s in self.scopes)
        return f"{' or '.join(self.devices)} Y-90 microspheres, {scopes} territory ({self.source})"


TARE_STANDARD = TAREStandard()
