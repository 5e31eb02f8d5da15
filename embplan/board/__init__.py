"""The tumour board's review: every option judged criterion by criterion, a recommendation, the course, the liver
over the years, consent numbers and the follow-up schedule. See :mod:`embplan.board.model` for the shapes."""

from __future__ import annotations

from .model import (
    BoardOption,
    BoardReview,
    ConsentItem,
    Criterion,
    CriterionStatus,
    FollowUpItem,
    LiverReserve,
    OptionStatus,
    Recommendation,
    RecommendationStep,
    StagedStep,
    TerritoryCourse,
    TerritoryDose,
)
from .review import review

__all__ = [
    "review",
    "BoardOption",
    "BoardReview",
    "ConsentItem",
    "Criterion",
    "CriterionStatus",
    "FollowUpItem",
    "LiverReserve",
    "OptionStatus",
    "Recommendation",
    "RecommendationStep",
    "StagedStep",
    "TerritoryCourse",
    "TerritoryDose",
]
