"""Bland transarterial embolization (TAE).

Standard protocol (the RETNET trial TAE arm; Soulen, CIRSE 2019; DESIGN.md "Clinical picture"): lobar or segmental
embolization with 50-500 um microspheres to stasis within 2-5 heartbeats. Every standard parameter is required in
a case (``embolic`` and ``endpoint``, as the example files give them): a plan states what will be done, it does not
fill in a protocol the user did not write. Departures from the standard are allowed and returned by
:meth:`TAEProcedure.deviations` (PROTOCOL_DEVIATION).

The numbers the risk thresholds also hold (particle range, stasis range) take their defaults from
:class:`embplan.thresholds.Thresholds`, so that a site override of those thresholds and this standard cannot
disagree: build the standard with :meth:`TAEStandard.from_thresholds`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from ..thresholds import RETNET, Thresholds
from .base import ProtocolDeviation, StrictModel
from .common import (
    Embolic,
    EmbolicAgent,
    Endpoint,
    ProcedureBase,
    check_equal,
    check_in_range,
    check_ordered,
    check_particles,
    check_territory,
    range_text,
)
from .territory import Scope

__all__ = ["TAEProcedure", "TAEStandard", "TAE_STANDARD", "embolization_deviations", "threshold_default"]


def threshold_default(name: str) -> float:
    """The default of a :class:`~embplan.thresholds.Thresholds` field (its source is cited there)."""
    return Thresholds.model_fields[name].default


class TAEStandard(StrictModel):
    """The standard TAE protocol (RETNET TAE arm)."""

    scopes: tuple[Scope, ...] = ("lobar", "segmental")
    embolic_agent: EmbolicAgent = "microspheres"
    particle_um_range: tuple[float, float] = (
        threshold_default("protocol_particle_min_um"), threshold_default("protocol_particle_max_um"))
    stasis_heartbeats_range: tuple[int, int] = (
        int(threshold_default("protocol_stasis_min_heartbeats")),
        int(threshold_default("protocol_stasis_max_heartbeats")),
    )
    source: str = RETNET

    @model_validator(mode="after")
    def _ranges(self) -> TAEStandard:
        check_ordered({"particle_um_range": self.particle_um_range,
                  "stasis_heartbeats_range": self.stasis_heartbeats_range})
        return self

    @classmethod
    def from_thresholds(cls, thresholds: Thresholds) -> TAEStandard:
        """The standard with the (possibly overridden) protocol thresholds of ``thresholds``."""
        return cls(
            particle_um_range=(thresholds.protocol_particle_min_um, thresholds.protocol_particle_max_um),
            stasis_heartbeats_range=(thresholds.protocol_stasis_min_heartbeats,
                                     thresholds.protocol_stasis_max_heartbeats),
        )

    def describe(self) -> str:
        return (f"{' or '.join(self.scopes)} embolization with {range_text(*self.particle_um_range, 'um')} "
                f"{self.embolic_agent} to stasis within {self.stasis_heartbeats_range[0]}-"
                f"{self.stasis_heartbeats_range[1]} heartbeats ({self.source})")


TAE_STANDARD = TAEStandard()


def embolization_deviations(embolic: Embolic, endpoint: Endpoint, standard: TAEStandard,
                            what: str) -> list[ProtocolDeviation]:
    """Deviations of the embolic agent, its calibration and the stasis endpoint from ``standard``."""
    src = standard.source
    return [
        *check_equal("embolic.agent", embolic.agent, standard.embolic_agent, "", f"{what} embolic agent", src),
        *check_particles("embolic", embolic, *standard.particle_um_range, f"{what} particles", src),
        *check_in_range("endpoint.stasis_heartbeats", endpoint.stasis_heartbeats, *standard.stasis_heartbeats_range,
                        "heartbeats", f"{what} endpoint: stasis within", src),
    ]


class TAEProcedure(ProcedureBase):
    """Bland embolization: ``embolic`` (agent and calibration) to the ``endpoint`` (stasis)."""

    kind: Literal["TAE"]
    embolic: Embolic
    endpoint: Endpoint

    def deviations(self, standard: TAEStandard = TAE_STANDARD) -> list[ProtocolDeviation]:
        """Every departure from the standard TAE protocol (territory, agent, particles, endpoint)."""
        return [
            *check_territory(self.territory, standard.scopes, "TAE", standard.source),
            *embolization_deviations(self.embolic, self.endpoint, standard, "TAE"),
        ]

    def describe(self) -> str:
        e = self.embolic
        return (f"TAE of the {self.territory.describe()}: {e.agent} {range_text(e.size_min_um, e.size_max_um, 'um')}"
                f" to stasis within {self.endpoint.stasis_heartbeats} heartbeats")
