"""The TAE -> TACE -> TARE ladder: position, skips, justifications, next step."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

import embplan.protocols
from embplan.errors import CaseError
from embplan.protocols import PriorTreatment, evaluate_sequence, ladder_position, next_step


def _rec(kind: str, when: str, response: str | None = None) -> PriorTreatment:
    return PriorTreatment.model_validate({"kind": kind, "date": when, "response": response})


G1_SI_CARCINOID = {"grade": "G1", "primary_site": "small_intestine", "functional_syndrome": "carcinoid"}
G1_SI = {"grade": "G1", "primary_site": "small_intestine", "functional_syndrome": "none"}
G2_SI = {"grade": "G2", "primary_site": "small_intestine", "functional_syndrome": "carcinoid"}
G1_PANCREAS = {"grade": "G1", "primary_site": "pancreas", "functional_syndrome": "none"}
G1_UNKNOWN = {"grade": "G1", "primary_site": "unknown", "functional_syndrome": "none"}


def _eval(kind: str, records: list[PriorTreatment], bea: bool = False, **disease: Any):
    return evaluate_sequence(kind, records, biliary_enteric_anastomosis=bea, **(disease or G1_SI))


def test_position() -> None:
    assert ladder_position([]).step == "none"
    assert ladder_position([_rec("SSA", "2020-01-01"), _rec("resection", "2019-01-01")]).step == "none"
    pos = ladder_position([_rec("TAE", "2020-01-01", "progression"), _rec("TACE", "2021-01-01", "partial")])
    assert pos.step == "TACE" and not pos.refractory and pos.ladder_records == 2
    # the latest record on the top rung decides
    pos = ladder_position([_rec("TACE", "2021-06-01", "progression"), _rec("TACE", "2021-01-01", "partial")])
    assert pos.refractory and pos.last_date.isoformat() == "2021-06-01"
    # DEB-TACE records count as chemoembolization
    assert ladder_position([_rec("DEB_TACE", "2021-01-01", "progression")]).step == "TACE"
    # stable disease is not refractory by default; a site may say it is
    stable = [_rec("TAE", "2020-01-01", "stable")]
    assert not ladder_position(stable).refractory
    assert ladder_position(stable, refractory_responses=frozenset({"progression", "stable"})).refractory
    # records after the procedure date are ignored
    from datetime import date
    assert ladder_position([_rec("TARE", "2030-01-01")], before=date(2026, 1, 1)).step == "none"


def test_tae_first_follows_the_ladder() -> None:
    s = _eval("TAE", [], **G1_SI_CARCINOID)
    assert s.on_ladder and s.follows_ladder and s.skipped == [] and not s.is_deviation
    assert s.expected_step == "TAE" and s.suggested_next_code == "TACE"
    assert "refractory to TAE" in s.suggested_next


def test_tace_after_refractory_tae_follows() -> None:
    s = _eval("TACE", [_rec("TAE", "2024-09-10", "progression")])
    assert s.follows_ladder and not s.is_deviation and s.suggested_next_code == "TARE"


def test_tare_after_refractory_tace_follows_and_points_beyond() -> None:
    s = _eval("TARE", [_rec("TAE", "2017-03-14", "partial"), _rec("TACE", "2018-06-19", "progression")])
    assert s.follows_ladder and s.skipped == []
    assert s.suggested_next_code == "SYSTEMIC" and "PRRT" in s.suggested_next and "tumour board" in s.suggested_next


def test_unjustified_skip_is_a_deviation() -> None:
    s = _eval("TACE", [], **G1_SI_CARCINOID)
    assert not s.follows_ladder and s.skipped == ["TAE"] and s.justifications == [] and s.is_deviation
    assert "ENETS 2022 recommends TAE" in s.explanation
    s = _eval("TARE", [], **G1_SI)
    assert s.skipped == ["TAE", "TACE"] and s.is_deviation


def test_premature_escalation_is_a_skip() -> None:
    s = _eval("TACE", [_rec("TAE", "2024-01-01", "partial")])
    assert s.skipped == ["TAE"] and s.is_deviation and "given, not refractory" in s.explanation
    s = _eval("TARE", [_rec("TAE", "2024-01-01", "progression")])
    assert s.skipped == ["TACE"] and "TACE (not given)" in s.explanation


@pytest.mark.parametrize(("kind", "disease", "code"), [
    ("TACE", G2_SI, "ENETS_2022_GRADE"),
    ("TARE", G2_SI, "ENETS_2022_GRADE"),
    ("TACE", G1_PANCREAS, "ENETS_2022_NON_INTESTINAL"),
    ("TARE", G1_PANCREAS, "ENETS_2022_NON_INTESTINAL"),
])
def test_enets_2022_justifies_tace_or_tare_first(kind: str, disease: dict[str, str], code: str) -> None:
    s = _eval(kind, [], **disease)
    assert not s.follows_ladder and s.skipped
    assert [j.code for j in s.justification_details] == [code]
    assert s.justified and not s.is_deviation
    assert any("ENETS 2022" in j for j in s.justifications)


def test_unknown_primary_is_not_non_intestinal() -> None:
    assert _eval("TACE", [], **G1_UNKNOWN).is_deviation


def test_biliary_enteric_anastomosis_justifies_tare_first_only() -> None:
    s = _eval("TARE", [], bea=True, **G1_SI)
    assert [j.code for j in s.justification_details] == ["BILIARY_ENTERIC_ANASTOMOSIS"]
    assert not s.is_deviation and "Mezhir" in s.justifications[0]
    assert s.expected_step == "TARE"
    tace = _eval("TACE", [], bea=True, **G1_SI)
    assert tace.is_deviation and "TARE first" in tace.explanation
    tae = _eval("TAE", [], bea=True, **G1_SI)
    # issue 11: "follows the ladder" must agree with "the ladder suggests TARE"
    assert not tae.follows_ladder and tae.expected_step == "TARE" and tae.suggested_next_code == "TARE"
    assert tae.below_biliary_step and "does not follow the ladder" in tae.explanation


def test_tace_after_whipple_does_not_follow_the_ladder() -> None:
    """The shared example tace_after_whipple: TAE progressed, TACE requested, biliary-enteric anastomosis."""
    s = _eval("TACE", [_rec("TAE", "2024-09-10", "progression")], bea=True, **G1_SI)
    assert s.expected_step == "TARE" and not s.follows_ladder and s.is_deviation
    assert "follows the TAE -> TACE -> TARE ladder" not in s.explanation


def test_step_back_is_accepted_but_does_not_follow() -> None:
    """Issue 11: "follows the ladder" beside "the ladder suggests TARE" was a contradiction."""
    s = _eval("TAE", [_rec("TARE", "2022-01-01", "partial")])
    assert not s.follows_ladder and s.below_expected and not s.is_deviation and "steps back" in s.explanation
    assert s.expected_step == "TARE"


def test_repeat_of_a_refractory_rung_is_below_the_ladder() -> None:
    s = _eval("TARE", [_rec("TARE", "2022-01-01", "progression")])
    assert s.expected_step == "SYSTEMIC" and not s.follows_ladder and s.below_expected and not s.is_deviation
    assert "follows the TAE" not in s.explanation


def test_repeat_of_a_responding_rung_follows() -> None:
    s = _eval("TACE", [_rec("TACE", "2022-01-01", "partial")])
    assert s.expected_step == "TACE" and s.follows_ladder


def test_deb_tace_is_never_a_ladder_step() -> None:
    s = _eval("DEB_TACE", [_rec("TAE", "2024-09-10", "progression")], **G2_SI)
    assert not s.on_ladder and not s.follows_ladder and s.is_deviation
    assert "no role in NET" in s.explanation and s.suggested_next_code == "TARE"


def test_next_step_and_bad_input() -> None:
    assert next_step("TAE")[0] == "TACE"
    assert next_step("TAE", biliary_enteric_anastomosis=True)[0] == "TARE"
    assert next_step("TACE")[0] == next_step("DEB_TACE")[0] == "TARE"
    assert next_step("TARE")[0] == "SYSTEMIC"
    with pytest.raises(CaseError):
        next_step("PRRT")
    with pytest.raises(CaseError):
        _eval("resection", [])


def test_protocols_never_import_case_or_risk() -> None:
    forbidden = {"case", "risk", "planner", "io", "cli", "report"}
    for path in Path(embplan.protocols.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                parts = (node.module or "").split(".")
                top = parts[1] if parts[0] == "embplan" and len(parts) > 1 else parts[0] if node.level == 2 else None
                assert top not in forbidden, f"{path.name} imports {node.module}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    assert not any(alias.name.startswith(f"embplan.{f}") for f in forbidden), path.name
