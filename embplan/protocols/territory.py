"""The treated liver territory: segmental (Couinaud segments), lobar (right or left lobe) or whole liver.

Couinaud segments 1-8 (Couinaud C, Le foie: etudes anatomiques et chirurgicales, Masson 1957): segment 1 is the
caudate lobe; the left lobe holds segments 2, 3 and 4, the right lobe 5, 6, 7 and 8 (the functional division along
Cantlie's line, as used for lobar embolization). The caudate lobe has its own arterial supply and belongs to
neither lobe here.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from .base import Int, Issue, StrictModel, raise_issues

__all__ = ["Territory", "Scope", "Lobe", "COUINAUD_SEGMENTS", "LOBE_SEGMENTS"]

Scope = Literal["segmental", "lobar", "whole_liver"]
Lobe = Literal["right", "left"]

COUINAUD_SEGMENTS: frozenset[int] = frozenset(range(1, 9))
LOBE_SEGMENTS: dict[str, frozenset[int]] = {
    "left": frozenset({2, 3, 4}),
    "right": frozenset({5, 6, 7, 8}),
}

Segment = Annotated[Int, Field(ge=1, le=8, description="Couinaud segment 1-8")]


class Territory(StrictModel):
    """Where the procedure goes: ``scope`` with ``lobe`` (lobar only) or ``segments`` (segmental only)."""

    scope: Scope
    lobe: Lobe | None = None
    segments: list[Segment] | None = Field(default=None, min_length=1, max_length=8)

    @model_validator(mode="after")
    def _scope_fields(self) -> Territory:
        issues: list[Issue] = []
        if self.scope == "lobar":
            if self.lobe is None:
                issues.append(Issue("lobe", "required for lobar scope ('right' or 'left')"))
            if self.segments is not None:
                issues.append(Issue("segments", "only for segmental scope (the lobe gives a lobar territory)",
                                    self.segments))
        elif self.scope == "segmental":
            if self.segments is None:
                issues.append(Issue("segments", "required for segmental scope (Couinaud segments 1-8)"))
            elif len(set(self.segments)) != len(self.segments):
                issues.append(Issue("segments", "each segment at most once", self.segments))
            if self.lobe is not None:
                issues.append(Issue("lobe", "only for lobar scope", self.lobe))
        else:  # whole liver
            if self.lobe is not None:
                issues.append(Issue("lobe", "only for lobar scope (the whole liver has no lobe)", self.lobe))
            if self.segments is not None:
                issues.append(Issue("segments", "only for segmental scope", self.segments))
        if issues:
            raise_issues(issues)
        return self

    @property
    def couinaud_segments(self) -> frozenset[int]:
        """The Couinaud segments the territory covers (whole liver: 1-8; a lobe: see :data:`LOBE_SEGMENTS`)."""
        if self.scope == "whole_liver":
            return COUINAUD_SEGMENTS
        if self.scope == "lobar":
            assert self.lobe is not None  # validated
            return LOBE_SEGMENTS[self.lobe]
        assert self.segments is not None  # validated
        return frozenset(self.segments)

    def overlaps(self, other: Territory) -> bool:
        """True when the two territories share at least one Couinaud segment."""
        return bool(self.couinaud_segments & other.couinaud_segments)

    @property
    def is_whole_liver(self) -> bool:
        return self.scope == "whole_liver"

    def describe(self) -> str:
        """``"right lobe"``, ``"segments 6, 7"``, ``"segment 4"``, ``"whole liver"``."""
        if self.scope == "whole_liver":
            return "whole liver"
        if self.scope == "lobar":
            return f"{self.lobe} lobe"
        segs = sorted(self.couinaud_segments)
        return ("segment " if len(segs) == 1 else "segments ") + ", ".join(str(s) for s in segs)
