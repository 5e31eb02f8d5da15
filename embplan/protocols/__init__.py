"""embplan.protocols: the requested procedures (TAE, lipiodol TACE, DEB-TACE, TARE) with their standard protocols,
the records of a treatment history, and the TAE -> TACE -> TARE ladder.

Two kinds of bounds: physical ones (a negative dose, a 5,000 um particle) are validation errors; departures from
the standard protocol are allowed and listed by each procedure's ``deviations()`` (PROTOCOL_DEVIATION).
protocols never import :mod:`embplan.case` or :mod:`embplan.risk`.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from ..thresholds import Thresholds
from .base import ProtocolDeviation, StrictModel
from .common import PARTICLE_MAX_UM, Embolic, EmbolicAgent, Endpoint, SizeRange
from .history import (
    CHEMOEMBOLIZATION_KINDS,
    EMBOLIZATION_KINDS,
    SYSTEMIC_KINDS,
    PriorTreatment,
    Response,
    TreatmentKind,
    cumulative_doxorubicin_mg,
)
from .sequencing import (
    LADDER,
    LadderPosition,
    SequenceAssessment,
    evaluate_sequence,
    ladder_position,
    next_step,
)
from .tace import (
    DEB_TACE_STANDARD,
    TACE_STANDARD,
    Beads,
    DEBTACEProcedure,
    DEBTACEStandard,
    Drug,
    TACEProcedure,
    TACEStandard,
)
from .tae import TAE_STANDARD, TAEProcedure, TAEStandard
from .tare import TARE_STANDARD, Device, PrescriptionMethod, TAREPrescription, TAREProcedure, TAREStandard
from .territory import COUINAUD_SEGMENTS, LOBE_SEGMENTS, Territory

__all__ = [
    "Procedure",
    "PROCEDURE_KINDS",
    "STANDARDS",
    "standards_from_thresholds",
    "procedure_deviations",
    "StrictModel",
    "ProtocolDeviation",
    "Territory",
    "COUINAUD_SEGMENTS",
    "LOBE_SEGMENTS",
    "PriorTreatment",
    "TreatmentKind",
    "Response",
    "EMBOLIZATION_KINDS",
    "CHEMOEMBOLIZATION_KINDS",
    "SYSTEMIC_KINDS",
    "cumulative_doxorubicin_mg",
    "SizeRange",
    "Embolic",
    "EmbolicAgent",
    "Endpoint",
    "PARTICLE_MAX_UM",
    "Drug",
    "Beads",
    "TAEProcedure",
    "TAEStandard",
    "TAE_STANDARD",
    "TACEProcedure",
    "TACEStandard",
    "TACE_STANDARD",
    "DEBTACEProcedure",
    "DEBTACEStandard",
    "DEB_TACE_STANDARD",
    "TAREProcedure",
    "TAREPrescription",
    "TAREStandard",
    "TARE_STANDARD",
    "Device",
    "PrescriptionMethod",
    "LADDER",
    "LadderPosition",
    "SequenceAssessment",
    "ladder_position",
    "evaluate_sequence",
    "next_step",
]

# The requested procedure: a union discriminated on "kind".
Procedure = Annotated[
    TAEProcedure | TACEProcedure | DEBTACEProcedure | TAREProcedure, Field(discriminator="kind")
]
PROCEDURE_KINDS: tuple[str, ...] = ("TAE", "TACE", "DEB_TACE", "TARE")

# The default standard of each procedure kind.
STANDARDS = {"TAE": TAE_STANDARD, "TACE": TACE_STANDARD, "DEB_TACE": DEB_TACE_STANDARD, "TARE": TARE_STANDARD}


def standards_from_thresholds(
    thresholds: Thresholds,
) -> dict[str, TAEStandard | TACEStandard | DEBTACEStandard | TAREStandard]:
    """The standards of every kind with the protocol values of ``thresholds`` (a
    :class:`~embplan.thresholds.Thresholds`, possibly overridden by the case)."""
    return {
        "TAE": TAEStandard.from_thresholds(thresholds),
        "TACE": TACEStandard.from_thresholds(thresholds),
        "DEB_TACE": DEB_TACE_STANDARD,
        "TARE": TARE_STANDARD,
    }


def procedure_deviations(
    procedure: TAEProcedure | TACEProcedure | DEBTACEProcedure | TAREProcedure, thresholds: Thresholds,
) -> list[ProtocolDeviation]:
    """``procedure.deviations()`` from the standard of its kind with the protocol values of ``thresholds``
    (:func:`standards_from_thresholds`), each procedure paired with its own standard's type."""
    standard = standards_from_thresholds(thresholds)[procedure.kind]
    if isinstance(procedure, TAEProcedure) and isinstance(standard, TAEStandard):
        return procedure.deviations(standard)
    if isinstance(procedure, TACEProcedure) and isinstance(standard, TACEStandard):
        return procedure.deviations(standard)
    if isinstance(procedure, DEBTACEProcedure) and isinstance(standard, DEBTACEStandard):
        return procedure.deviations(standard)
    if isinstance(procedure, TAREProcedure) and isinstance(standard, TAREStandard):
        return procedure.deviations(standard)
    raise TypeError(f"no standard of type {type(standard).__name__} for a {procedure.kind} procedure")
