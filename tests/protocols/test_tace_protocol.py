"""Lipiodol TACE and DEB-TACE: standards, deviations, physical bounds."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from embplan.protocols import (
    DEB_TACE_STANDARD,
    TACE_STANDARD,
    DEBTACEProcedure,
    DEBTACEStandard,
    TACEProcedure,
    TACEStandard,
    procedure_deviations,
)
from embplan.thresholds import Thresholds


def _tace(**changes: Any) -> TACEProcedure:
    data: dict[str, Any] = {
        "kind": "TACE", "date": "2026-12-15", "territory": {"scope": "lobar", "lobe": "right"},
        "drug": {"name": "doxorubicin", "dose_mg": 50.0}, "contrast_ml": 10.0, "lipiodol_ml": 15.0,
        "embolic": {"agent": "microspheres", "size_min_um": 50, "size_max_um": 500},
        "endpoint": {"stasis_heartbeats": 3},
    }
    data.update(changes)
    return TACEProcedure.model_validate(data)


def _deb(**changes: Any) -> DEBTACEProcedure:
    data: dict[str, Any] = {
        "kind": "DEB_TACE", "date": "2026-12-15", "territory": {"scope": "segmental", "segments": [6, 7]},
        "drug": {"name": "doxorubicin", "dose_mg": 75.0}, "beads": {"size_min_um": 100, "size_max_um": 300},
    }
    data.update(changes)
    return DEBTACEProcedure.model_validate(data)


def test_tace_standard_is_the_retnet_tace_arm() -> None:
    # doxorubicin 50 mg in 10 mL dilute contrast with 10-20 mL iodized oil, then 50-500 um microspheres
    assert TACE_STANDARD.drug_name == "doxorubicin" and TACE_STANDARD.doxorubicin_mg == 50
    assert TACE_STANDARD.contrast_ml == 10 and TACE_STANDARD.lipiodol_ml_range == (10, 20)
    assert TACE_STANDARD.embolization.particle_um_range == (50, 500)
    assert TACE_STANDARD.embolization.stasis_heartbeats_range == (2, 5)
    assert TACEStandard.from_thresholds(Thresholds()) == TACE_STANDARD


def test_standard_tace_has_no_deviation() -> None:
    assert _tace().deviations() == []
    for oil in (10.0, 20.0):
        assert _tace(lipiodol_ml=oil).deviations() == []


@pytest.mark.parametrize(("changes", "parameters"), [
    ({"drug": {"name": "doxorubicin", "dose_mg": 75.0}}, ["drug.dose_mg"]),
    ({"drug": {"name": "epirubicin", "dose_mg": 50.0}}, ["drug.name"]),  # the 50 mg standard is doxorubicin's
    ({"contrast_ml": 12.0}, ["contrast_ml"]),
    ({"lipiodol_ml": 9.9}, ["lipiodol_ml"]),
    ({"lipiodol_ml": 20.5}, ["lipiodol_ml"]),
    ({"embolic": {"agent": "microspheres", "size_min_um": 500, "size_max_um": 700}}, ["embolic"]),
    ({"endpoint": {"stasis_heartbeats": 10}}, ["endpoint.stasis_heartbeats"]),
    ({"territory": {"scope": "whole_liver"}}, ["territory.scope"]),
])
def test_tace_departure_is_a_deviation(changes: dict[str, Any], parameters: list[str]) -> None:
    devs = _tace(**changes).deviations()
    assert [d.parameter for d in devs] == parameters
    assert all(d.path.startswith("procedure.") and d.source for d in devs)


def test_tace_deviation_message_names_value_and_standard() -> None:
    (dev,) = _tace(drug={"name": "doxorubicin", "dose_mg": 75.0}).deviations()
    assert "75" in dev.message and "50 mg" in dev.standard and dev.value == 75.0
    (oil,) = _tace(lipiodol_ml=25.0).deviations()
    assert oil.standard == "10-20 mL" and "25" in oil.message


def test_tace_thresholds_move_the_standard() -> None:
    t = Thresholds.with_overrides({"protocol_doxorubicin_mg": 75, "protocol_lipiodol_max_ml": 30})
    std = TACEStandard.from_thresholds(t)
    assert _tace(drug={"name": "doxorubicin", "dose_mg": 75.0}, lipiodol_ml=25.0).deviations(std) == []


def test_procedure_deviations_pairs_each_procedure_with_its_kinds_standard() -> None:
    # issue 17: the typed replacement of standards_from_thresholds(th)[proc.kind] + proc.deviations(standard)
    t = Thresholds.with_overrides({"protocol_doxorubicin_mg": 75, "protocol_lipiodol_max_ml": 30})
    moved = _tace(drug={"name": "doxorubicin", "dose_mg": 75.0}, lipiodol_ml=25.0)
    assert procedure_deviations(moved, t) == []  # the overridden TACE standard was used
    assert [d.parameter for d in procedure_deviations(moved, Thresholds())] == [
        d.parameter for d in moved.deviations(TACE_STANDARD)] and procedure_deviations(moved, Thresholds())
    deb = _deb(drug={"name": "epirubicin", "dose_mg": 50})
    assert procedure_deviations(deb, t) == deb.deviations(DEB_TACE_STANDARD) != []


@pytest.mark.parametrize("changes", [
    {"drug": {"name": "doxorubicin", "dose_mg": -50.0}},
    {"drug": {"name": "doxorubicin", "dose_mg": 0}},
    {"drug": {"name": "doxorubicin", "dose_mg": 501}},
    {"drug": {"name": "adriamycin", "dose_mg": 50}},
    {"lipiodol_ml": 0},
    {"lipiodol_ml": 101},
    {"contrast_ml": -10},
    {"lipiodol_ml": float("inf")},
])
def test_tace_physical_bounds_are_errors(changes: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        _tace(**changes)


def test_tace_requires_every_protocol_parameter() -> None:
    for key in ("drug", "contrast_ml", "lipiodol_ml", "embolic", "endpoint"):
        data = _tace().model_dump(mode="json")
        del data[key]
        with pytest.raises(ValidationError, match=key):
            TACEProcedure.model_validate(data)


def test_doxorubicin_of_the_session() -> None:
    assert _tace().doxorubicin_mg == 50
    assert _tace(drug={"name": "cisplatin", "dose_mg": 100}).doxorubicin_mg == 0
    assert _deb().doxorubicin_mg == 75


def test_deb_standard_bead_calibrations() -> None:
    assert DEB_TACE_STANDARD.bead_um_ranges == ((100, 300), (300, 500))
    assert DEB_TACE_STANDARD.drug_name == "doxorubicin"


@pytest.mark.parametrize(("beads", "deviates"), [
    ((100, 300), False), ((300, 500), False), ((150, 250), False),
    ((70, 150), True), ((500, 700), True), ((100, 500), True), ((40, 90), True),
])
def test_deb_bead_calibration(beads: tuple[int, int], deviates: bool) -> None:
    devs = _deb(beads={"size_min_um": beads[0], "size_max_um": beads[1]}).deviations()
    assert [d.parameter for d in devs] == (["beads"] if deviates else [])


def test_deb_drug_and_optional_dose_range() -> None:
    assert [d.parameter for d in _deb(drug={"name": "epirubicin", "dose_mg": 50}).deviations()] == ["drug.name"]
    assert _deb(drug={"name": "doxorubicin", "dose_mg": 150}).deviations() == []  # dose not checked by default
    site = DEBTACEStandard(doxorubicin_mg_range=(50.0, 100.0))
    assert [d.parameter for d in _deb(drug={"name": "doxorubicin", "dose_mg": 150}).deviations(site)] == [
        "drug.dose_mg"]
    with pytest.raises(ValidationError):
        DEBTACEStandard(doxorubicin_mg_range=(100.0, 50.0))
    with pytest.raises(ValidationError):
        DEBTACEStandard(bead_um_ranges=((100.0, 6000.0),))


def test_deb_physical_bounds() -> None:
    with pytest.raises(ValidationError):
        _deb(beads={"size_min_um": 300, "size_max_um": 100})
    with pytest.raises(ValidationError):
        _deb(beads={"size_min_um": 100, "size_max_um": 300}, lipiodol_ml=10)  # not a DEB-TACE field
