"""Territory: scope with lobe or Couinaud segments; description; segments covered."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from embplan.protocols import Territory
from embplan.protocols.base import validation_problems


def _lines(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ValidationError) as info:
        Territory.model_validate(data)
    return [p["line"] for p in validation_problems(info.value, data, Territory)]


@pytest.mark.parametrize(("data", "text"), [
    ({"scope": "whole_liver"}, "whole liver"),
    ({"scope": "lobar", "lobe": "right"}, "right lobe"),
    ({"scope": "lobar", "lobe": "left"}, "left lobe"),
    ({"scope": "segmental", "segments": [7, 6]}, "segments 6, 7"),
    ({"scope": "segmental", "segments": [4]}, "segment 4"),
])
def test_describe(data: dict[str, Any], text: str) -> None:
    assert Territory.model_validate(data).describe() == text


def test_couinaud_segments_and_overlap() -> None:
    right = Territory.model_validate({"scope": "lobar", "lobe": "right"})
    left = Territory.model_validate({"scope": "lobar", "lobe": "left"})
    whole = Territory.model_validate({"scope": "whole_liver"})
    s67 = Territory.model_validate({"scope": "segmental", "segments": [6, 7]})
    s1 = Territory.model_validate({"scope": "segmental", "segments": [1]})
    # Couinaud: left lobe 2-4, right lobe 5-8, caudate (1) in neither
    assert right.couinaud_segments == {5, 6, 7, 8}
    assert left.couinaud_segments == {2, 3, 4}
    assert whole.couinaud_segments == set(range(1, 9))
    assert right.overlaps(s67) and s67.overlaps(right) and whole.overlaps(left)
    assert not left.overlaps(right) and not left.overlaps(s67)
    assert not s1.overlaps(right) and not s1.overlaps(left) and s1.overlaps(whole)
    assert whole.is_whole_liver and not right.is_whole_liver


@pytest.mark.parametrize(("data", "expected"), [
    ({"scope": "lobar"}, "lobe: required for lobar scope"),
    ({"scope": "lobar", "lobe": "middle"}, "lobe: must be one of 'right' or 'left', got \"middle\""),
    ({"scope": "lobar", "lobe": "right", "segments": [5]}, "segments: only for segmental scope"),
    ({"scope": "segmental"}, "segments: required for segmental scope"),
    ({"scope": "segmental", "segments": [9]}, "segments.0: must be <= 8, got 9"),
    ({"scope": "segmental", "segments": [0]}, "segments.0: must be >= 1, got 0"),
    ({"scope": "segmental", "segments": [6, 6]}, "segments: each segment at most once, got [6, 6]"),
    ({"scope": "segmental", "segments": [6.5]}, "segments.0: must be an integer, got 6.5"),
    ({"scope": "segmental", "segments": ["6"]}, "segments.0: must be an integer"),
    ({"scope": "segmental", "segments": []}, "segments: must have at least 1 item"),
    ({"scope": "segmental", "segments": [6], "lobe": "right"}, "lobe: only for lobar scope"),
    ({"scope": "whole_liver", "lobe": "left"}, "lobe: only for lobar scope"),
    ({"scope": "whole_liver", "segments": [1]}, "segments: only for segmental scope"),
    ({"scope": "bilobar"}, "scope: must be one of"),
    ({"scope": "lobar", "lobe": "right", "lobes": "right"}, "lobes: unknown field (did you mean 'lobe'?)"),
])
def test_invalid_territory_names_the_field(data: dict[str, Any], expected: str) -> None:
    lines = _lines(data)
    assert any(expected in line for line in lines), lines


def test_integral_float_segment_accepted() -> None:
    assert Territory.model_validate({"scope": "segmental", "segments": [6.0]}).segments == [6]


def test_frozen() -> None:
    t = Territory.model_validate({"scope": "lobar", "lobe": "right"})
    with pytest.raises(ValidationError):
        t.lobe = "left"  # type: ignore[misc]
