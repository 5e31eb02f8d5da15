"""`embplan board`: every shared example prints every option with its criteria, a recommendation, the course and the
follow-up dates; --json; a plan file; errors exit 1 with one line."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

import embplan
from embplan import cli

from .conftest import case_dict, rec

runner = CliRunner()


def run(*args):
    return runner.invoke(cli.app, [str(a) for a in args])


EXAMPLES = ["deb_tace.json", "tace_after_whipple.json", "tae_first_line.json", "tare_lobar_resin.json",
            "tare_phantom_voxel.json"]


@pytest.mark.parametrize("name", EXAMPLES)
def test_board_prints_every_part_for_each_example(shared_examples, name):
    res = run("board", shared_examples / name)
    assert res.exit_code == 0, res.output
    out = res.output
    review = embplan.review(embplan.load_case(shared_examples / name))
    table = out.split("Options, criterion by criterion")[1].split("Course per lobe")[0]
    statuses = re.findall(r"│ (recommended|possible|not_eligible|needs_data)\s+│", table)
    assert statuses == [o.status.value for o in review.options]  # one row per option, in order
    for o in review.options:
        assert o.title.split()[0] in table
        for c in o.criteria:
            assert c.status.value in table
    for part in ("Recommendation", "Options, criterion by criterion", "Course per lobe", "Follow-up",
                 "Liver over the years"):
        assert part in out
    assert "right lobe" in out and "left lobe" in out
    # follow-up with real dates: the month-3 imaging date from the procedure date
    dates = re.findall(r"\d{4}-\d{2}-\d{2}", out)
    assert any(f.date.isoformat() in dates for f in review.follow_up if f.date)
    assert review.recommendation.steps and review.recommendation.steps[0].action[:30] in out.replace("\n", " ")


@pytest.mark.parametrize("name", EXAMPLES)
def test_board_json(shared_examples, name):
    res = run("board", shared_examples / name, "--json")
    assert res.exit_code == 0
    data = json.loads(res.output)
    board = embplan.BoardReview.model_validate(data["board"])
    assert board == embplan.review(embplan.load_case(shared_examples / name))
    assert {o["status"] for o in data["board"]["options"]} <= {"recommended", "possible", "not_eligible", "needs_data"}


def test_board_from_a_plan_file(tmp_path):
    data = case_dict({"patient.prior_treatments": [rec("TACE", "2025-01-01", "right", "progression")]},
                     procedure="TARE")
    plan = embplan.plan(data)
    path = tmp_path / "p.h5"
    embplan.save_plan(plan, path)
    res = run("board", path, "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert embplan.BoardReview.model_validate(out["board"]) == plan.board
    assert "flags" in out


def test_board_errors_exit_1_with_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema_version": 1, "patient": {}}')
    res = run("board", bad)
    assert res.exit_code == 1 and "Traceback" not in res.output
    missing = run("board", tmp_path / "nope.json")
    assert missing.exit_code == 1
    usage = run("board")
    assert usage.exit_code == 2


def test_demo_plan_names_the_untreated_left_lobe_tumours():
    """The demo (right-lobe TARE, disease in both lobes): the plan names the left-lobe tumours at 0 Gy and the board's
    staged plan proposes the left lobe next, not PRRT."""
    from importlib import resources

    case = embplan.load_case(resources.files("embplan.data") / "demo_tare_phantom.json")
    plan = embplan.plan(case)
    flag = next(f for f in plan.flags if f.code == "UNTREATED_DISEASE")
    assert set(flag.context["untreated"]) == {"tumor_3", "tumor_5"} and flag.context["untreated_lobes"] == ["left"]
    assert "tumor_3" in flag.message and "left lobe" in flag.message
    b = plan.board
    assert [(s.territory, s.procedure) for s in b.staged_plan] == [("right lobe", "TARE"), ("left lobe", "TAE")]
    assert "tumor_3" in b.staged_plan[1].note and "tumor_5" in b.staged_plan[1].note
    left = {c.territory: c for c in b.course}["left lobe"]
    assert left.next_step == "TAE" and "tumor_3" in left.reason
    assert plan.sequence.suggested_next.startswith("TAE of the left lobe")
    assert "PRRT" not in plan.sequence.suggested_next.split(";")[0]
    steps = [s.option_key for s in b.recommendation.steps]
    assert steps[:2] == ["intra_arterial_right_lobe", "intra_arterial_left_lobe"]
