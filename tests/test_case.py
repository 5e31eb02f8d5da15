"""The case model and load_case: every example loads; every kind of bad input is a CaseError naming the field."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from embplan.case import Case, du_bois_bsa_m2, load_case
from embplan.errors import CaseError, EmbplanError

EXPECTED_KINDS = {
    "deb_tace.json": "DEB_TACE",
    "tace_after_whipple.json": "TACE",
    "tae_first_line.json": "TAE",
    "tare_lobar_resin.json": "TARE",
    "tare_phantom_voxel.json": "TARE",
}


@pytest.fixture(scope="module")
def examples(shared_examples: Path) -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(shared_examples.glob("*.json"))}


def _error(data: Any) -> CaseError:
    with pytest.raises(CaseError) as info:
        load_case(data)
    return info.value


# ---- the examples ------------------------------------------------------------------------------------------------


def test_every_example_file_loads_as_it_is(shared_examples: Path) -> None:
    files = sorted(shared_examples.glob("*.json"))
    assert {p.name for p in files} >= set(EXPECTED_KINDS)
    for path in files:
        case = load_case(path)
        assert isinstance(case, Case)
        assert case.schema_version == 1
        raw = json.loads(path.read_text())
        assert case.procedure.kind == raw["procedure"]["kind"]
        assert case.patient.id == raw["patient"]["id"]
        assert len(case.patient.prior_treatments) == len(raw["patient"].get("prior_treatments", []))
        if path.name in EXPECTED_KINDS:
            assert case.procedure.kind == EXPECTED_KINDS[path.name]


def test_example_from_path_str_and_dict_are_equal_and_keep_the_source(shared_examples: Path) -> None:
    for path in sorted(shared_examples.glob("*.json")):
        raw = json.loads(path.read_text())
        by_path, by_str, by_dict = load_case(path), load_case(str(path)), load_case(copy.deepcopy(raw))
        assert by_path == by_str == by_dict
        assert by_path.source == raw  # the case as given, exactly
        assert json.loads(by_dict.source_json) == raw
        assert load_case(by_path) is by_path


def test_json_round_trip_and_source_outside_equality(examples: dict[str, dict[str, Any]]) -> None:
    for raw in examples.values():
        case = load_case(raw)
        again = Case.model_validate_json(case.model_dump_json())
        assert again == case
        assert "source" not in case.model_dump() and "_source_json" not in case.model_dump()
        # a different source text (extra default spelled out) with the same content is still equal
        raw2 = copy.deepcopy(raw)
        raw2.setdefault("thresholds", {})
        other = load_case(raw2)
        assert other == case and other.source_json != case.source_json


def test_example_values_reach_the_model(examples: dict[str, dict[str, Any]]) -> None:
    raw = examples["tare_lobar_resin.json"]
    case = load_case(raw)
    assert case.patient.labs.bilirubin_mg_dl == raw["patient"]["labs"]["bilirubin_mg_dl"]
    assert case.dosimetry is not None
    assert case.dosimetry.perfused_volume_ml == raw["dosimetry"]["perfused_volume_ml"]
    assert case.procedure.prescription.tumor_dose_target_gy == raw["procedure"]["prescription"]["tumor_dose_target_gy"]
    assert case.patient.prior_treatments[0].date.isoformat() == raw["patient"]["prior_treatments"][0]["date"]
    assert case.procedure.territory.describe() == "right lobe"
    assert case.is_embolization and case.is_tare and not case.procedure.is_whole_liver


def test_cumulative_doxorubicin_from_the_records(examples: dict[str, dict[str, Any]]) -> None:
    raw = examples["tare_lobar_resin.json"]
    expected = sum(r.get("doxorubicin_mg", 0) for r in raw["patient"]["prior_treatments"]
                   if r["kind"] in ("TACE", "DEB_TACE"))
    case = load_case(raw)
    assert expected > 0
    assert case.patient.cumulative_doxorubicin_mg() == pytest.approx(expected)
    assert case.cumulative_doxorubicin_mg() == pytest.approx(expected)  # TARE adds nothing
    tace = load_case(examples["tace_after_whipple.json"])
    assert tace.cumulative_doxorubicin_mg() == pytest.approx(examples["tace_after_whipple.json"]["procedure"]["drug"]
                                                             ["dose_mg"])
    assert tace.cumulative_doxorubicin_mg(include_requested=False) == 0


def test_doxorubicin_unrecorded_counts_records_without_dose(examples: dict[str, dict[str, Any]]) -> None:
    raw = copy.deepcopy(examples["tare_lobar_resin.json"])
    del raw["patient"]["prior_treatments"][3]["doxorubicin_mg"]
    case = load_case(raw)
    assert case.patient.doxorubicin_unrecorded == 1
    assert case.patient.cumulative_doxorubicin_mg() == pytest.approx(50)


def test_prior_tare_records_listed_in_date_order(examples: dict[str, dict[str, Any]]) -> None:
    raw = copy.deepcopy(examples["tare_lobar_resin.json"])
    raw["patient"]["prior_treatments"] += [
        {"kind": "TARE", "date": "2020-05-01", "device": "resin", "territory": {"scope": "lobar", "lobe": "left"}},
        {"kind": "TARE", "date": "2019-05-01", "device": "glass", "activity_gbq": 1.8},
    ]
    tare = load_case(raw).patient.prior_tare()
    assert [r.date.isoformat() for r in tare] == ["2019-05-01", "2020-05-01"]


def test_body_surface_area_du_bois_published_value() -> None:
    # Du Bois & Du Bois 1916: 70 kg, 170 cm -> 1.81 m2 (the value quoted in BSA tables)
    assert du_bois_bsa_m2(70.0, 170.0) == pytest.approx(1.81, abs=0.005)
    # hand computation in logarithms: ln BSA = ln 0.007184 + 0.425 ln 64 + 0.725 ln 168
    expected = math.exp(math.log(0.007184) + 0.425 * math.log(64.0) + 0.725 * math.log(168.0))
    assert du_bois_bsa_m2(64.0, 168.0) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(EmbplanError):
        du_bois_bsa_m2(float("nan"), 170.0)


def test_integral_float_accepted_for_integers_but_not_fractions(examples: dict[str, dict[str, Any]]) -> None:
    raw = copy.deepcopy(examples["tae_first_line.json"])
    raw["patient"]["age_years"] = 47.0
    assert load_case(raw).patient.age_years == 47
    raw["patient"]["age_years"] = 47.5
    assert "patient.age_years: must be an integer, got 47.5" in str(_error(raw))


# ---- hand-written invalid cases -----------------------------------------------------------------------------------


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(d: dict[str, Any]) -> None:
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        node: Any = d
        for p in parents:
            node = node[p]
        node[last] = value

    return mutate


def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    def mutate(d: dict[str, Any]) -> None:
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        node: Any = d
        for p in parents:
            node = node[p]
        del node[last]

    return mutate


# (example, mutation, a line the message must contain)
INVALID = [
    ("tare_lobar_resin.json", _set("patient.labs.bilirubin_mg_dl", -1),
     "patient.labs.bilirubin_mg_dl: must be >= 0, got -1"),
    ("tare_lobar_resin.json", _set("patient.labs.bilirubin_mg_dl", 51), "patient.labs.bilirubin_mg_dl: must be <= 50"),
    ("tare_lobar_resin.json", _set("patient.labs.bilirubin_mg_dl", float("nan")),
     "patient.labs.bilirubin_mg_dl: must be a finite number"),
    ("tare_lobar_resin.json", _set("patient.labs.inr", float("inf")), "patient.labs.inr: must be a finite number"),
    ("tare_lobar_resin.json", _set("patient.labs.bilirubin_mg_dl", "0.7"),
     'patient.labs.bilirubin_mg_dl: must be a number, got "0.7"'),
    ("tare_lobar_resin.json", _set("patient.labs.albumin_g_dl", True), "patient.labs.albumin_g_dl: must be a number"),
    ("tare_lobar_resin.json", _set("patient.age_years", 121), "patient.age_years: must be <= 120, got 121"),
    ("tare_lobar_resin.json", _set("patient.age_years", "52"), "patient.age_years: must be an integer"),
    ("tare_lobar_resin.json", _set("patient.weight_kg", 0), "patient.weight_kg: must be > 0, got 0"),
    ("tare_lobar_resin.json", _set("patient.height_cm", 1680),
     "patient.height_cm: implausible: expected 90-250 cm; looks like millimetres (168 cm?)"),
    ("tare_lobar_resin.json", _set("patient.ecog", 5), "patient.ecog: must be <= 4"),
    ("tare_lobar_resin.json", _set("patient.disease.ki67_percent", 101), "patient.disease.ki67_percent: must be <= 100"),
    ("tare_lobar_resin.json", _set("patient.disease.grade", "G4"), "patient.disease.grade: must be one of"),
    ("tare_lobar_resin.json", _set("patient.sex", "F"), "patient.sex: must be one of"),
    ("tare_lobar_resin.json", _set("patient.biliary.biliary_stent", "no"),
     'patient.biliary.biliary_stent: must be true or false, got "no"'),
    ("tare_lobar_resin.json", _set("patient.biliary.biliary_stent", 0), "patient.biliary.biliary_stent: must be true"),
    ("tare_lobar_resin.json", _set("patient.id", ""), "patient.id: must not be empty"),
    ("tare_lobar_resin.json", _set("patient.labs.bilirubin_mg_dL", 0.7),
     "patient.labs.bilirubin_mg_dL: unknown field (did you mean 'bilirubin_mg_dl'?)"),
    ("tare_lobar_resin.json", _set("procedure.devise", "resin"), "procedure.devise: unknown field (did you mean 'device'?)"),
    ("tare_lobar_resin.json", _set("patient.labs", [1, 2]), "patient.labs: must be an object"),
    ("tare_lobar_resin.json", _delete("patient.labs.inr"), "patient.labs.inr: required"),
    ("tare_lobar_resin.json", _delete("patient.disease"), "patient.disease: required"),
    ("tare_lobar_resin.json", _delete("procedure.device"), "procedure.device: required"),
    ("tare_lobar_resin.json", _set("procedure.device", "Resin"), 'procedure.device: must be one of \'resin\' or '
     '\'glass\', got "Resin"'),
    ("tare_lobar_resin.json", _delete("procedure.prescription"), "procedure.prescription: required"),
    ("tare_lobar_resin.json", _delete("procedure.kind"), "procedure.kind: required"),
    ("tare_lobar_resin.json", _set("procedure.kind", "SIRT"), 'procedure.kind: must be one of'),
    ("tare_lobar_resin.json", _set("procedure.date", "10/12/2026"), "procedure.date: must be an ISO date"),
    ("tare_lobar_resin.json", _set("procedure.date", "2026-02-30"), "procedure.date: not a valid calendar date"),
    ("tare_lobar_resin.json", _set("procedure.date", 20261210), "procedure.date: must be an ISO date"),
    ("tare_lobar_resin.json", _set("patient.prior_treatments.1.date", "2027-01-01"),
     "patient.prior_treatments.1.date: a prior treatment must not be after the procedure date"),
    ("tare_lobar_resin.json", _set("patient.prior_treatments.1.kind", "tae"),
     "patient.prior_treatments.1.kind: must be one of"),
    ("tare_lobar_resin.json", _set("patient.prior_treatments.3.doxorubicin_mg", -50),
     "patient.prior_treatments.3.doxorubicin_mg: must be >= 0"),
    ("tare_lobar_resin.json", _set("patient.prior_treatments.1.doxorubicin_mg", 50),
     "patient.prior_treatments.1.doxorubicin_mg: only on TACE or DEB_TACE records, not TAE"),
    ("tare_lobar_resin.json", _set("patient.prior_treatments.3.device", "resin"),
     "patient.prior_treatments.3.device: only on TARE records"),
    ("tare_lobar_resin.json", _set("patient.prior_treatments.0.territory", {"scope": "whole_liver"}),
     "patient.prior_treatments.0.territory: SSA is systemic"),
    ("tare_lobar_resin.json", _set("patient.prior_treatments.1.response", "good"),
     "patient.prior_treatments.1.response: must be one of"),
    ("tare_lobar_resin.json", _set("dosimetry.perfused_volume_ml", 1700),
     "dosimetry.perfused_volume_ml: must be <= liver_volume_ml (1650), got 1700"),
    ("tare_lobar_resin.json", _set("dosimetry.tumor_volume_ml", 1700),
     "dosimetry.tumor_volume_ml: must be <= liver_volume_ml (1650), got 1700"),
    ("tare_lobar_resin.json", _set("dosimetry.perfused_tumor_volume_ml", 500),
     "dosimetry.perfused_tumor_volume_ml: must be <= tumor_volume_ml (480), got 500"),
    ("tare_lobar_resin.json", _set("dosimetry.lung_shunt_fraction", 1.0), "dosimetry.lung_shunt_fraction: must be < 1"),
    ("tare_lobar_resin.json", _set("dosimetry.lung_shunt_fraction", 6), "dosimetry.lung_shunt_fraction: must be < 1"),
    ("tare_lobar_resin.json", _delete("dosimetry.tumor_to_normal_ratio"),
     "dosimetry.tumor_to_normal_ratio: required for the partition method without images"),
    ("tare_lobar_resin.json", _delete("dosimetry.lung_mass_kg"),
     "dosimetry.lung_mass_kg: required for the partition method without images"),
    ("tare_lobar_resin.json", _delete("dosimetry"), "dosimetry: required for TARE"),
    ("tare_lobar_resin.json", _delete("procedure.prescription.tumor_dose_target_gy"),
     "procedure.prescription.tumor_dose_target_gy: required for the partition method"),
    ("tare_lobar_resin.json", _set("procedure.prescription.method", "dosimetric"),
     "procedure.prescription.method: must be one of"),
    ("tare_lobar_resin.json", _set("procedure.prescription.activity_gbq", 31),
     "procedure.prescription.activity_gbq: must be <= 30"),
    ("tare_lobar_resin.json", _set("procedure.residual_fraction", 1.0), "procedure.residual_fraction: must be < 1"),
    ("tare_lobar_resin.json", _set("procedure.territory", {"scope": "lobar"}),
     "procedure.territory.lobe: required for lobar scope"),
    ("tare_lobar_resin.json", _set("procedure.territory", {"scope": "segmental", "segments": [4, 9]}),
     "procedure.territory.segments.1: must be <= 8, got 9"),
    ("tare_lobar_resin.json", _set("procedure.territory", {"scope": "segmental", "segments": [0]}),
     "procedure.territory.segments.0: must be >= 1, got 0"),
    ("tare_lobar_resin.json", _set("procedure.territory", {"scope": "segmental"}),
     "procedure.territory.segments: required for segmental scope"),
    ("tare_lobar_resin.json", _set("procedure.territory", {"scope": "segmental", "segments": []}),
     "procedure.territory.segments: must have at least 1 item"),
    ("tare_lobar_resin.json", _set("procedure.territory", {"scope": "whole_liver", "lobe": "right"}),
     "procedure.territory.lobe: only for lobar scope"),
    ("tare_phantom_voxel.json", _delete("dosimetry.images"),
     "dosimetry.lung_shunt_fraction: required for the mird method without images"),
    ("tare_phantom_voxel.json", _set("dosimetry.images", {}), "dosimetry.images.phantom: required"),
    ("tare_phantom_voxel.json", _set("dosimetry.images.phantom.voxel_mm", 0.5),
     "dosimetry.images.phantom.voxel_mm: must be >= 1"),
    ("tare_phantom_voxel.json", _set("dosimetry.images.phantom.seed", -7),
     "dosimetry.images.phantom.seed: must be >= 0"),
    ("tare_phantom_voxel.json", _set("dosimetry.dose_method", "monte_carlo"), "dosimetry.dose_method: must be one of"),
    ("tace_after_whipple.json", _delete("procedure.lipiodol_ml"), "procedure.lipiodol_ml: required"),
    ("tace_after_whipple.json", _delete("procedure.endpoint"), "procedure.endpoint: required"),
    ("tace_after_whipple.json", _set("procedure.drug.dose_mg", -50), "procedure.drug.dose_mg: must be > 0, got -50"),
    ("tace_after_whipple.json", _set("procedure.embolic.size_max_um", 5001),
     "procedure.embolic.size_max_um: must be <= 5000"),
    ("tace_after_whipple.json", _set("procedure.embolic.size_min_um", 700),
     "procedure.embolic.size_min_um: must be <= size_max_um (500)"),
    ("tace_after_whipple.json", _set("procedure.endpoint.stasis_heartbeats", 0),
     "procedure.endpoint.stasis_heartbeats: must be >= 1"),
    ("tace_after_whipple.json", _set("procedure.beads", {"size_min_um": 100, "size_max_um": 300}),
     "procedure.beads: unknown field"),
    ("deb_tace.json", _delete("procedure.beads"), "procedure.beads: required"),
    ("deb_tace.json", _set("procedure.beads.size_min_um", -100), "procedure.beads.size_min_um: must be > 0"),
    ("tae_first_line.json", _set("procedure.embolic.agent", "coils"), "procedure.embolic.agent: must be one of"),
    ("tae_first_line.json", _set("procedure.drug", {"name": "doxorubicin", "dose_mg": 50}),
     "procedure.drug: unknown field"),
    ("tae_first_line.json", _set("thresholds", {"lung_dose_limit_gy": 25}),
     "thresholds.lung_dose_limit_gy: unknown threshold"),
    ("tae_first_line.json", _set("thresholds", {"inr_max": -1}), "thresholds.inr_max: must be > 0, got -1"),
    ("tae_first_line.json", _set("thresholds", {"inr_max": "1.5"}), 'thresholds.inr_max: must be a number, got "1.5"'),
    ("tae_first_line.json", _set("thresholds", {"lung_dose_session_limit_gy": 60}),
     "thresholds.lung_dose_session_limit_gy: must be <="),
    ("tae_first_line.json", _set("schema_version", 2), "schema_version: unsupported schema version (supported: 1), "
     "got 2"),
    ("tae_first_line.json", _set("schema_version", "1"), "schema_version: unsupported schema version"),
    ("tae_first_line.json", _set("schema_version", True), "schema_version: unsupported schema version"),
    ("tae_first_line.json", _delete("schema_version"), "schema_version: required (supported: 1)"),
    ("tae_first_line.json", _set("schema_versoin", 1), "schema_versoin: unknown field (did you mean 'schema_version'?)"),
]


@pytest.mark.parametrize(("example", "mutate", "expected"), INVALID, ids=[e for _, _, e in INVALID])
def test_invalid_case_names_the_field(examples: dict[str, dict[str, Any]], example: str,
                                      mutate: Callable[[dict[str, Any]], None], expected: str) -> None:
    data = copy.deepcopy(examples[example])
    load_case(data)  # valid before the mutation
    mutate(data)
    err = _error(data)
    assert expected in str(err), str(err)
    assert err.errors and all({"loc", "path", "msg"} <= set(e) for e in err.errors)


def test_one_line_per_error_and_structured_list(examples: dict[str, dict[str, Any]]) -> None:
    data = copy.deepcopy(examples["tare_lobar_resin.json"])
    data["patient"]["labs"]["bilirubin_mg_dl"] = -1
    data["patient"]["age_years"] = 130
    data["procedure"]["devise"] = "resin"
    err = _error(data)
    lines = str(err).splitlines()
    assert len(lines) == 1 + 3
    assert "3 problems" in lines[0]
    paths = {e["path"] for e in err.errors}
    assert paths == {"patient.labs.bilirubin_mg_dl", "patient.age_years", "procedure.devise"}
    bili = next(e for e in err.errors if e["path"] == "patient.labs.bilirubin_mg_dl")
    assert bili["loc"] == ("patient", "labs", "bilirubin_mg_dl")
    assert bili["msg"] == "must be >= 0" and bili["input"] == -1
    assert not any("TARE" in e["path"] for e in err.errors)  # no union tag in any path


def test_valid_threshold_override_applies(examples: dict[str, dict[str, Any]]) -> None:
    data = copy.deepcopy(examples["tare_lobar_resin.json"])
    data["thresholds"] = {"lung_dose_session_limit_gy": 25, "ecog_warning_min": 2}
    case = load_case(data)
    t = case.effective_thresholds()
    assert t.lung_dose_session_limit_gy == 25 and t.ecog_warning_min == 2
    default = load_case(examples["tare_lobar_resin.json"]).effective_thresholds()
    assert default.lung_dose_session_limit_gy == 30


def test_deviation_uses_case_threshold_overrides(examples: dict[str, dict[str, Any]]) -> None:
    data = copy.deepcopy(examples["tace_after_whipple.json"])
    assert load_case(data).deviations() == []
    data["procedure"]["lipiodol_ml"] = 25.0
    devs = load_case(data).deviations()
    assert [d.parameter for d in devs] == ["lipiodol_ml"] and devs[0].path == "procedure.lipiodol_ml"
    data["thresholds"] = {"protocol_lipiodol_max_ml": 30}
    assert load_case(data).deviations() == []


def test_sequence_from_the_case(examples: dict[str, dict[str, Any]]) -> None:
    seq = load_case(examples["tare_lobar_resin.json"]).sequence()
    # issue 11: the ladder reads the right lobe's own history (TAE, TACE both partial): TARE skips a TACE that still
    # works there, justified by grade G2 (ENETS 2022); the left lobe's progression after TACE does not count here
    assert not seq.follows_ladder and seq.skipped == ["TACE"] and seq.expected_step == "TACE"
    assert not seq.is_deviation and seq.suggested_next_code == "SYSTEMIC"
    deb = load_case(examples["deb_tace.json"]).sequence()
    assert not deb.on_ladder and deb.is_deviation


# ---- files ---------------------------------------------------------------------------------------------------------


def _write(tmp_path: Path, text: str, name: str = "case.json") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"])
def test_file_nan_and_infinity_literals_are_rejected_with_their_path(
        tmp_path: Path, examples: dict[str, dict[str, Any]], literal: str) -> None:
    text = json.dumps(examples["tare_lobar_resin.json"]).replace('"bilirubin_mg_dl": 0.7',
                                                                 f'"bilirubin_mg_dl": {literal}')
    assert literal in text
    err = _error(_write(tmp_path, text))
    assert f"patient.labs.bilirubin_mg_dl: NaN and Infinity are not numbers a case may hold, got {literal}" in str(err)
    assert "case.json" in str(err)


def test_file_duplicate_key_is_rejected(tmp_path: Path, examples: dict[str, dict[str, Any]]) -> None:
    text = json.dumps(examples["tare_lobar_resin.json"]).replace('"inr": 1.0', '"inr": 1.0, "inr": 3.0')
    err = _error(_write(tmp_path, text))
    assert "patient.labs.inr: duplicate key" in str(err)


def test_file_problems(tmp_path: Path, examples: dict[str, dict[str, Any]]) -> None:
    assert "not found" in str(_error(tmp_path / "missing.json"))
    assert "not valid JSON" in str(_error(_write(tmp_path, '{"schema_version": 1,')))
    assert "must hold a JSON object" in str(_error(_write(tmp_path, "[1, 2]")))
    assert "cannot be read" in str(_error(tmp_path))  # a directory
    bad = tmp_path / "latin1.json"
    bad.write_bytes(b'{"id": "\xe9"}')
    assert "not UTF-8" in str(_error(bad))
    # a UTF-8 byte-order mark is fine
    bom = tmp_path / "bom.json"
    bom.write_bytes(b"\xef\xbb\xbf" + json.dumps(examples["tae_first_line.json"]).encode())
    assert load_case(bom).procedure.kind == "TAE"


def test_wrong_argument_type() -> None:
    with pytest.raises(CaseError, match="expected a path"):
        load_case(42)  # type: ignore[arg-type]
    with pytest.raises(CaseError, match="expected a path"):
        load_case([{"schema_version": 1}])  # type: ignore[arg-type]


def test_case_error_is_embplan_error_and_nothing_half_built(examples: dict[str, dict[str, Any]]) -> None:
    data = copy.deepcopy(examples["tare_lobar_resin.json"])
    data["patient"]["labs"]["bilirubin_mg_dl"] = float("nan")
    with pytest.raises(EmbplanError):
        load_case(data)
    with pytest.raises(ValueError):  # CaseError is a ValueError too
        load_case(data)


def test_packaged_case_files_load() -> None:
    from importlib.resources import files

    found = [p for p in (files("embplan") / "data").iterdir() if p.name.endswith(".json")]
    for item in found:
        assert isinstance(load_case(json.loads(item.read_text())), Case)
