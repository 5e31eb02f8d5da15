"""Stages: timed and nested correctly, one log line each at the CLI's levels; --verbose / --quiet; warmup."""

from __future__ import annotations

import json
import logging
import time

from typer.testing import CliRunner

from embplan import cli
from embplan.progress import configure_logging, listen, record_stages, stage, timed

runner = CliRunner()


def test_stage_times_nest_and_own_times_add_up():
    @timed("inner")
    def inner():
        time.sleep(0.02)

    heard = []
    with record_stages() as rec, listen(heard.append):
        with stage("outer"):
            time.sleep(0.01)
            inner()
            inner()
    assert heard == ["outer", "inner", "inner"]
    assert rec.calls == {"outer": 1, "inner": 2}
    assert rec.total["inner"] >= 0.04
    assert rec.total["outer"] >= rec.total["inner"] + 0.01
    # own time of the outer stage excludes the inner ones; own times add up to the outer total
    assert abs(rec.own["outer"] + rec.own["inner"] - rec.total["outer"]) < 1e-9
    assert rec.as_dict()["inner"]["calls"] == 2


def test_no_recorder_no_error_and_a_failing_listener_is_ignored():
    def boom(_name):
        raise RuntimeError("display broke")

    with listen(boom), stage("x"):
        pass


def test_log_levels(caplog):
    caplog.set_level(logging.DEBUG, logger="embplan")
    with stage("a stage"):
        pass
    with stage("a step", logging.DEBUG):
        pass
    with stage("per slice", None):
        pass
    levels = {r.getMessage().split(":")[0]: r.levelno for r in caplog.records if r.name == "embplan.stages"}
    assert levels == {"a stage": logging.INFO, "a step": logging.DEBUG}


def test_cli_verbose_prints_a_line_per_stage_and_quiet_none(tmp_path):
    try:
        r = runner.invoke(cli.app, ["-v", "demo", "--out", str(tmp_path / "d"), "--json"])
        assert r.exit_code == 0, r.stderr
        json.loads(r.stdout)  # stdout stays pure JSON
        lines = r.stderr.splitlines()
        for name in ("plan", "images", "dose map", "voxel dosimetry", "write plan"):
            assert any(ln.startswith(f"embplan: INFO: {name}: ") and ln.endswith(" s") for ln in lines), (name, lines)
        assert not any(": DEBUG: " in ln for ln in lines)
        r = runner.invoke(cli.app, ["-vv", "demo", "--out", str(tmp_path / "d2"), "--json"])
        assert any(ln.startswith("embplan: DEBUG: DVH: ") for ln in r.stderr.splitlines())
        r = runner.invoke(cli.app, ["-q", "demo", "--out", str(tmp_path / "d3"), "--json"])
        assert r.exit_code == 0 and r.stderr == ""
        r = runner.invoke(cli.app, ["demo", "--out", str(tmp_path / "d4"), "--json"])
        assert r.exit_code == 0 and "INFO" not in r.stderr
    finally:
        configure_logging(0, False)


def test_warmup_command(tmp_path):
    r = runner.invoke(cli.app, ["warmup", "--json"])
    assert r.exit_code == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["seconds"] >= 0 and "package" in info["cache"]


def test_cache_locations_names_numba_user_wide_folder():
    # found by mypy (issue 17): the private _UserWideCacheLocator is UserWideCacheLocator in recent numba, and the
    # user-wide folder was silently missing from cache_locations()
    from embplan.dosimetry.warmup import cache_locations

    out = cache_locations()
    assert out["package"].endswith("__pycache__")
    assert "user_wide" in out and "dosimetry" in out["user_wide"]
