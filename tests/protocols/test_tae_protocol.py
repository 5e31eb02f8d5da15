"""TAE: physical bounds are errors, departures from the RETNET standard are deviations."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from embplan.protocols import TAE_STANDARD, ProtocolDeviation, TAEProcedure, TAEStandard
from embplan.thresholds import Thresholds


def _tae(**changes: Any) -> TAEProcedure:
    data: dict[str, Any] = {
        "kind": "TAE", "date": "2026-12-02", "territory": {"scope": "lobar", "lobe": "right"},
        "embolic": {"agent": "microspheres", "size_min_um": 50, "size_max_um": 500},
        "endpoint": {"stasis_heartbeats": 3},
    }
    for key, value in changes.items():
        data[key] = value
    return TAEProcedure.model_validate(data)


def test_standard_is_the_retnet_tae_arm() -> None:
    # The issue / DESIGN.md: lobar or segmental, 50-500 um microspheres, 2-5 heartbeat stasis (RETNET, Soulen 2019)
    assert set(TAE_STANDARD.scopes) == {"lobar", "segmental"}
    assert TAE_STANDARD.embolic_agent == "microspheres"
    assert TAE_STANDARD.particle_um_range == (50, 500)
    assert TAE_STANDARD.stasis_heartbeats_range == (2, 5)
    assert "RETNET" in TAE_STANDARD.source


def test_standard_follows_threshold_overrides() -> None:
    t = Thresholds.with_overrides({"protocol_particle_max_um": 700, "protocol_stasis_max_heartbeats": 8})
    std = TAEStandard.from_thresholds(t)
    assert std.particle_um_range == (50, 700) and std.stasis_heartbeats_range == (2, 8)
    assert TAEStandard.from_thresholds(Thresholds()) == TAE_STANDARD
    assert _tae(embolic={"agent": "microspheres", "size_min_um": 50, "size_max_um": 700},
                endpoint={"stasis_heartbeats": 8}).deviations(std) == []


def test_standard_tae_has_no_deviation() -> None:
    assert _tae().deviations() == []
    assert _tae(territory={"scope": "segmental", "segments": [6, 7]}).deviations() == []
    for hb in (2, 5):  # the bounds of the standard are inside it
        assert _tae(endpoint={"stasis_heartbeats": hb}).deviations() == []


@pytest.mark.parametrize(("changes", "parameter"), [
    ({"embolic": {"agent": "microspheres", "size_min_um": 40, "size_max_um": 120}}, "embolic"),
    ({"embolic": {"agent": "microspheres", "size_min_um": 300, "size_max_um": 700}}, "embolic"),
    ({"embolic": {"agent": "pva", "size_min_um": 100, "size_max_um": 300}}, "embolic.agent"),
    ({"endpoint": {"stasis_heartbeats": 1}}, "endpoint.stasis_heartbeats"),
    ({"endpoint": {"stasis_heartbeats": 6}}, "endpoint.stasis_heartbeats"),
    ({"territory": {"scope": "whole_liver"}}, "territory.scope"),
])
def test_departure_is_a_deviation_naming_the_parameter(changes: dict[str, Any], parameter: str) -> None:
    devs = _tae(**changes).deviations()
    assert [d.parameter for d in devs] == [parameter]
    dev = devs[0]
    assert isinstance(dev, ProtocolDeviation) and dev.path == f"procedure.{parameter}"
    assert dev.standard and dev.message and "RETNET" in dev.source
    with pytest.raises(ValidationError):
        dev.message = "changed"  # type: ignore[misc]


def test_several_departures_all_listed() -> None:
    devs = _tae(embolic={"agent": "gelfoam", "size_min_um": 10, "size_max_um": 1000},
                endpoint={"stasis_heartbeats": 20}).deviations()
    assert {d.parameter for d in devs} == {"embolic.agent", "embolic", "endpoint.stasis_heartbeats"}


@pytest.mark.parametrize("changes", [
    {"embolic": {"agent": "microspheres", "size_min_um": 50, "size_max_um": 5001}},  # 5 mm: not a particle
    {"embolic": {"agent": "microspheres", "size_min_um": 0, "size_max_um": 500}},
    {"embolic": {"agent": "microspheres", "size_min_um": 600, "size_max_um": 500}},
    {"endpoint": {"stasis_heartbeats": 0}},
    {"endpoint": {"stasis_heartbeats": 101}},
    {"endpoint": {"stasis_heartbeats": 3.5}},
    {"embolic": {"agent": "microspheres", "size_min_um": float("nan"), "size_max_um": 500}},
    {"drug": {"name": "doxorubicin", "dose_mg": 50}},  # not a TAE field
])
def test_physical_bounds_are_errors(changes: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        _tae(**changes)


def test_required_parameters() -> None:
    for key in ("embolic", "endpoint", "territory", "date"):
        data = _tae().model_dump(mode="json")
        del data[key]
        with pytest.raises(ValidationError, match=key):
            TAEProcedure.model_validate(data)


def test_describe() -> None:
    assert _tae().describe() == "TAE of the right lobe: microspheres 50-500 um to stasis within 3 heartbeats"
