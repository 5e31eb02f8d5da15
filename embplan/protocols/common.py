"""Parts shared by the procedure models: the procedure base, particle sizes, embolic agent, embolization endpoint,
and the checks of a parameter against a standard range.

Two kinds of bounds (see the package docstring): the ``Field`` bounds here are *physical* (a 5,000 um particle, a
negative dose, stasis after 0 heartbeats) and make a case invalid; the standard protocols (``*_STANDARD``) are
*clinical* and a departure from them is a :class:`~embplan.protocols.base.ProtocolDeviation`, allowed and flagged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import Field, JsonValue, model_validator

from .base import Int, IsoDate, Issue, ProtocolDeviation, StrictModel, raise_issues
from .territory import Scope, Territory

__all__ = [
    "ProcedureBase",
    "SizeRange",
    "Embolic",
    "Endpoint",
    "EmbolicAgent",
    "PARTICLE_MAX_UM",
    "range_text",
    "check_in_range",
    "check_equal",
    "check_territory",
    "check_particles",
    "check_ordered",
]

# Physical bound on embolic particle size: commercial embolic particles reach 1,200 um (e.g. Embosphere
# 900-1200 um, Merit Medical IFU); 5,000 um (5 mm) is beyond any particle embolic and marks a unit error.
PARTICLE_MAX_UM = 5000.0

EmbolicAgent = Literal["microspheres", "pva", "gelfoam", "other"]


class ProcedureBase(StrictModel):
    """Fields every requested procedure has: its date and its territory."""

    date: IsoDate
    territory: Territory


class SizeRange(StrictModel):
    """A particle calibration ``size_min_um``-``size_max_um`` (um), with min <= max."""

    size_min_um: float = Field(gt=0, le=PARTICLE_MAX_UM)
    size_max_um: float = Field(gt=0, le=PARTICLE_MAX_UM)

    @model_validator(mode="after")
    def _ordered(self) -> SizeRange:
        if self.size_min_um > self.size_max_um:
            raise_issues([Issue("size_min_um", f"must be <= size_max_um ({self.size_max_um:g})", self.size_min_um)])
        return self

    @property
    def size_range_um(self) -> tuple[float, float]:
        return (self.size_min_um, self.size_max_um)

    def within(self, lo_um: float, hi_um: float) -> bool:
        """True when the whole calibration lies inside ``[lo_um, hi_um]``."""
        return lo_um <= self.size_min_um and self.size_max_um <= hi_um


class Embolic(SizeRange):
    """The embolic agent and its calibration."""

    agent: EmbolicAgent


class Endpoint(StrictModel):
    """Embolization endpoint: stasis of the contrast column within ``stasis_heartbeats`` heartbeats.

    1-100 is the physical bound (0 heartbeats is meaningless; above 100 the column is not stagnant); the standard
    2-5 is checked as a deviation, not here.
    """

    stasis_heartbeats: Int = Field(ge=1, le=100)


def check_ordered(pairs: dict[str, tuple[float, float]]) -> None:
    """Raise (as validation issues) for every ``(low, high)`` pair with low > high."""
    issues = [Issue(name, "must be (low, high) with low <= high", list(r)) for name, r in pairs.items() if r[0] > r[1]]
    if issues:
        raise_issues(issues)


def range_text(lo: float, hi: float, unit: str) -> str:
    return f"{lo:g}-{hi:g} {unit}"


def check_in_range(parameter: str, value: float, lo: float, hi: float, unit: str, what: str,
                   source: str) -> list[ProtocolDeviation]:
    """A deviation when ``value`` lies outside ``[lo, hi]``."""
    if lo <= value <= hi:
        return []
    std = range_text(lo, hi, unit)
    return [ProtocolDeviation(parameter=parameter, value=value, standard=std, source=source,
                              message=f"{what} {value:g} {unit} is outside the standard {std}")]


def check_equal(parameter: str, value: JsonValue, standard: JsonValue, unit: str, what: str,
                source: str) -> list[ProtocolDeviation]:
    """A deviation when ``value`` differs from ``standard`` (numbers compared to 1e-9)."""
    if isinstance(value, int | float) and isinstance(standard, int | float):
        same = abs(float(value) - float(standard)) <= 1e-9
        shown, std = f"{value:g} {unit}".strip(), f"{standard:g} {unit}".strip()
    else:
        same = value == standard
        shown, std = f"{value}", f"{standard}"
    if same:
        return []
    return [ProtocolDeviation(parameter=parameter, value=value, standard=std, source=source,
                              message=f"{what} {shown} differs from the standard {std}")]


def check_territory(territory: Territory, scopes: Sequence[Scope], procedure: str,
                    source: str) -> list[ProtocolDeviation]:
    """A deviation when the territory's scope is not one the standard protocol uses."""
    if territory.scope in scopes:
        return []
    std = " or ".join(scopes)
    return [ProtocolDeviation(parameter="territory.scope", value=territory.scope, standard=std, source=source,
                              message=f"{procedure} of the {territory.describe()}: the standard is {std}")]


def check_particles(parameter: str, sizes: SizeRange, lo: float, hi: float, what: str,
                    source: str) -> list[ProtocolDeviation]:
    """A deviation when the calibration ``sizes`` is not inside ``[lo, hi]`` um."""
    if sizes.within(lo, hi):
        return []
    std = range_text(lo, hi, "um")
    got = range_text(sizes.size_min_um, sizes.size_max_um, "um")
    return [ProtocolDeviation(parameter=parameter, value=[sizes.size_min_um, sizes.size_max_um], standard=std,
                              source=source, message=f"{what} {got} are outside the standard {std}")]
