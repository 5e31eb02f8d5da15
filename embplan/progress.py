"""Stages of long work: timed, logged, shown.

A *stage* is a named step of a plan (reading the CT series, rasterising the structures, the dose maps, ...). Each
one, as it ends, writes a log line on the ``embplan.stages`` logger (``INFO`` for the steps of a plan, ``DEBUG``
for steps repeated inside one, e.g. one DVH per structure) with its wall time, and adds that time to the
:class:`StageTimes` being recorded, if any (:func:`record_stages`; the benchmarks and ``embplan batch`` use it).
A listener (:func:`listen`) hears each stage as it starts: the CLI shows it in its spinner on a terminal.

Nothing here prints; the CLI decides where log lines go (``--verbose`` / ``--quiet``). This module imports nothing
from embplan, so every layer may use it.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

__all__ = ["stage", "timed", "record_stages", "listen", "StageTimes"]

log = logging.getLogger("embplan.stages")
F = TypeVar("F", bound=Callable[..., Any])
_P = ParamSpec("_P")
_R = TypeVar("_R")


@dataclass
class StageTimes:
    """Wall time per stage name, seconds: ``total`` includes the stages nested inside it, ``own`` does not (the
    ``own`` times of all stages add up to the time spent inside any stage). ``calls`` counts the entries."""

    total: dict[str, float] = field(default_factory=dict)
    own: dict[str, float] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    _stack: list[list[Any]] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict[str, dict[str, float]]:
        return {name: {"total_s": self.total[name], "own_s": self.own[name], "calls": self.calls[name]}
                for name in self.total}


_RECORDER: contextvars.ContextVar[StageTimes | None] = contextvars.ContextVar("embplan_stage_times", default=None)
_LISTENER: contextvars.ContextVar[Callable[[str], None] | None] = contextvars.ContextVar(
    "embplan_stage_listener", default=None
)


@contextlib.contextmanager
def record_stages() -> Iterator[StageTimes]:
    """Record the stages run inside the ``with`` block (this thread / task only)."""
    rec = StageTimes()
    token = _RECORDER.set(rec)
    try:
        yield rec
    finally:
        _RECORDER.reset(token)


@contextlib.contextmanager
def listen(callback: Callable[[str], None]) -> Iterator[None]:
    """Call ``callback(name)`` as each stage starts inside the ``with`` block."""
    token = _LISTENER.set(callback)
    try:
        yield
    finally:
        _LISTENER.reset(token)


@contextlib.contextmanager
def stage(name: str, level: int | None = logging.INFO) -> Iterator[None]:
    """Time the ``with`` block as stage ``name``: a log line when it ends (none for ``level=None``: steps run
    hundreds of times, e.g. per slice), its time in the recorder."""
    listener = _LISTENER.get()
    if listener is not None:
        with contextlib.suppress(Exception):  # a display must never break a plan
            listener(name)
    rec = _RECORDER.get()
    frame: list[Any] = [name, 0.0]  # name, time of the stages nested inside
    if rec is not None:
        rec._stack.append(frame)
    t0 = time.perf_counter()
    try:
        yield
    finally:
        dt = time.perf_counter() - t0
        if rec is not None:
            rec._stack.pop()
            rec.total[name] = rec.total.get(name, 0.0) + dt
            rec.own[name] = rec.own.get(name, 0.0) + dt - frame[1]
            rec.calls[name] = rec.calls.get(name, 0) + 1
            if rec._stack:
                rec._stack[-1][1] += dt
        if level is not None:
            log.log(level, "%s: %.2f s", name, dt)


def timed(name: str, level: int | None = logging.DEBUG) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """Decorator: every call of the function is stage ``name`` (``DEBUG`` log line by default)."""

    def wrap(func: Callable[_P, _R]) -> Callable[_P, _R]:
        @functools.wraps(func)
        def inner(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            with stage(name, level):
                return func(*args, **kwargs)

        return inner

    return wrap


# ------------------------------------------------------------------------------------------------ the CLI's logs
_QUIET = False


class _StderrHandler(logging.Handler):
    """Writes to the current ``sys.stderr`` (looked up at each record, so a redirected stderr is honoured)."""

    def emit(self, record: logging.LogRecord) -> None:
        import sys

        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:  # pragma: no cover - a closed stream must not break a plan
            self.handleError(record)


def configure_logging(verbose: int = 0, quiet: bool = False) -> None:
    """The command line's convention: warnings only by default; ``-v`` adds a line per stage (``INFO``), ``-vv``
    everything (``DEBUG``, e.g. one line per structure's DVH); ``--quiet`` leaves errors only and no progress
    display. Lines go to stderr as ``embplan: <level>: <message>``."""
    global _QUIET
    _QUIET = bool(quiet)
    level = logging.ERROR if quiet else logging.DEBUG if verbose >= 2 else logging.INFO if verbose == 1 else logging.WARNING
    root = logging.getLogger("embplan")
    for h in list(root.handlers):
        if isinstance(h, _StderrHandler):
            root.removeHandler(h)
    handler = _StderrHandler()  # the loggers' levels decide (a command may open one logger wider)
    handler.setFormatter(logging.Formatter("embplan: %(levelname)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)


def display_enabled() -> bool:
    """False after ``configure_logging(quiet=True)``: no spinner or progress bar."""
    return not _QUIET
