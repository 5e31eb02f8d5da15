"""Building blocks shared by the protocol models and the case model.

- :data:`STRICT` / :class:`StrictModel`: every input model is frozen, forbids unknown keys, rejects NaN and
  infinity, and is *strict*: numbers must be numbers, booleans booleans, strings strings (pydantic's lax mode would
  turn ``"61"`` into 61 and ``true`` into 1; a case file that says so is wrong and must be told). Integer fields
  accept a float without a fractional part (``61.0``), as JSON writers emit it.
- :data:`IsoDate` / :data:`IsoDateTime`: ISO 8601 text (``YYYY-MM-DD``; date and time for datetimes) or a
  ``date``/``datetime`` object; anything else (``"10/09/2024"``, a Unix timestamp) is rejected.
- :class:`Issue` and :func:`raise_issues`: a cross-field check reports every problem with the path of the field
  at fault (relative to the model that checks), so that :func:`embplan.case.load_case` can name
  ``dosimetry.perfused_volume_ml`` rather than ``dosimetry``.
- :class:`ProtocolDeviation`: a departure from a standard protocol (allowed, flagged by the risk rules).
"""

from __future__ import annotations

import difflib
import json
import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Annotated, Any, NoReturn

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, JsonValue, ValidationError
from pydantic_core import PydanticCustomError

from ..errors import CaseError

__all__ = [
    "STRICT",
    "StrictModel",
    "IsoDate",
    "IsoDateTime",
    "Int",
    "MISSING",
    "Issue",
    "ISSUES_ERROR_TYPE",
    "raise_issues",
    "ProtocolDeviation",
    "DATE_MIN",
    "DATE_MAX",
    "validation_problems",
    "case_error",
    "make_problem",
    "readable_reason",
    "did_you_mean",
    "node_at",
    "show_value",
]

STRICT = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True, strict=True)

# Sanity bounds on calendar dates (not clinical numbers): a typo such as "0224-09-10" or "2924-09-10" is an error.
DATE_MIN = date(1900, 1, 1)
DATE_MAX = date(2199, 12, 31)

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_ISO_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:?\d{2})?")


class StrictModel(BaseModel):
    """Base of every input model: frozen, ``extra="forbid"``, ``allow_inf_nan=False``, strict types.

    A case enters through :func:`embplan.case.load_case`, which turns validation errors into one
    :class:`~embplan.errors.CaseError`; a model built directly raises pydantic's ``ValidationError`` (a
    ``ValueError``). A custom ``__init__`` cannot convert it: pydantic would call it for every nested model too.
    """

    model_config = STRICT


def _parse_iso_date(value: Any) -> Any:
    if isinstance(value, datetime):
        raise ValueError("must be a date (YYYY-MM-DD), not a date and time")
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        if not _ISO_DATE.fullmatch(value):
            raise ValueError("must be an ISO date YYYY-MM-DD")
        try:
            return date.fromisoformat(value)
        except ValueError as exc:
            raise ValueError(f"not a valid calendar date ({exc})") from None
    raise ValueError("must be an ISO date string YYYY-MM-DD")


def _parse_iso_datetime(value: Any) -> Any:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        if not _ISO_DATETIME.fullmatch(value):
            raise ValueError("must be an ISO date and time, e.g. 2026-12-10T09:30:00+01:00")
        try:
            return datetime.fromisoformat(value)
        except ValueError as exc:
            raise ValueError(f"not a valid date and time ({exc})") from None
    raise ValueError("must be an ISO date and time string, e.g. 2026-12-10T09:30:00")


def _date_in_range(value: date) -> date:
    day = value.date() if isinstance(value, datetime) else value
    if not DATE_MIN <= day <= DATE_MAX:
        raise ValueError(f"must lie between {DATE_MIN.isoformat()} and {DATE_MAX.isoformat()}")
    return value


def _integral(value: Any) -> Any:
    """A float with no fractional part becomes an int (JSON writers emit ``3.0``); everything else passes on."""
    if type(value) is float and value.is_integer():
        return int(value)
    return value


IsoDate = Annotated[date, BeforeValidator(_parse_iso_date), AfterValidator(_date_in_range)]
IsoDateTime = Annotated[datetime, BeforeValidator(_parse_iso_datetime), AfterValidator(_date_in_range)]
Int = Annotated[int, BeforeValidator(_integral)]


class _Missing:
    """Marker: the field at fault is absent (the error message then has no ``got`` part)."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()

ISSUES_ERROR_TYPE = "embplan_issues"


@dataclass(frozen=True)
class Issue:
    """One cross-field problem: ``path`` (dotted, relative to the validating model), ``reason``, the ``value`` at
    fault (:data:`MISSING` when the field is absent)."""

    path: str
    reason: str
    value: Any = MISSING

    def __str__(self) -> str:
        head = f"{self.path}: {self.reason}" if self.path else self.reason
        return head if self.value is MISSING else f"{head}, got {self.value!r}"


def raise_issues(issues: list[Issue]) -> NoReturn:
    """Raise every issue at once as one pydantic error of type :data:`ISSUES_ERROR_TYPE`.

    The readable summary is the error message; ``ctx["issues"]`` keeps the structured list, which
    :func:`embplan.case.load_case` expands into one line per issue with the full path.
    """
    summary = "; ".join(str(i) for i in issues)
    raise PydanticCustomError(ISSUES_ERROR_TYPE, "{summary}", {"summary": summary, "issues": list(issues)})


class ProtocolDeviation(BaseModel):
    """A departure from the standard protocol: allowed, and flagged (PROTOCOL_DEVIATION, caution).

    ``parameter`` is the dotted path inside the procedure (``drug.dose_mg``); :attr:`path` prefixes
    ``procedure.`` for the case. ``value`` is what was requested, ``standard`` what the standard says (text with
    unit), ``message`` a sentence for the report, ``source`` the citation of the standard.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    parameter: str
    value: JsonValue
    standard: str
    message: str
    source: str

    @property
    def path(self) -> str:
        return f"procedure.{self.parameter}"


# ---- readable validation errors ----------------------------------------------------------------------------------
# One problem per pydantic error: a tag-free dotted path, a readable reason ("must be >= 0") and the value given.
# Used by embplan.case.load_case (and by any caller that validates a protocol model from user data).


def show_value(value: Any, limit: int = 80) -> str:
    """A value as JSON would write it (``-1``, ``"abc"``, ``true``, ``null``), shortened to ``limit`` characters."""
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def make_problem(loc: tuple[str | int, ...], msg: str, value: Any = MISSING,
                 shown: str | None = None) -> dict[str, Any]:
    """A problem record: ``loc``, dotted ``path``, ``msg``, ``input`` (only when a value was given), ``line``."""
    path = ".".join(str(p) for p in loc)
    problem: dict[str, Any] = {"loc": loc, "path": path, "msg": msg}
    line = f"{path}: {msg}" if path else msg
    if value is not MISSING:
        problem["input"] = value
        line += f", got {shown if shown is not None else show_value(value)}"
    problem["line"] = line
    return problem


def case_error(where: str, problems: list[dict[str, Any]]) -> CaseError:
    """One :class:`CaseError`: a header line, then one line per problem; ``errors`` holds the records."""
    n = len(problems)
    header = f"invalid {where}: {n} problem{'s' if n != 1 else ''}"
    error = CaseError("\n".join([header, *(p.pop("line") for p in problems)]))
    error.errors = problems
    return error


_RANGE = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}
_RANGE_CTX = {"greater_than_equal": "ge", "greater_than": "gt", "less_than_equal": "le", "less_than": "lt"}
_TYPE = {
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "finite_number": "must be a finite number (no NaN or Infinity)",
    "date_type": "must be an ISO date YYYY-MM-DD",
    "datetime_type": "must be an ISO date and time",
}


def _number(value: Any) -> Any:
    """0.0 -> 0 (bounds read as written: ``must be >= 0``); other values unchanged."""
    return int(value) if isinstance(value, float) and value.is_integer() and abs(value) < 1e15 else value


def readable_reason(err: Mapping[str, Any]) -> str:
    """A readable reason for one pydantic error (``must be >= 0``, ``must be one of 'a' or 'b'``)."""
    kind, ctx, msg = err["type"], err.get("ctx") or {}, str(err.get("msg", "invalid"))
    if kind in _RANGE:
        return f"must be {_RANGE[kind]} {_number(ctx.get(_RANGE_CTX[kind]))}"
    if kind in _TYPE:
        return _TYPE[kind]
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}"
    if kind == "string_too_short":
        return "must not be empty" if ctx.get("min_length") == 1 else f"must have at least {ctx['min_length']} characters"
    if kind == "string_too_long":
        return f"must have at most {ctx.get('max_length')} characters"
    if kind == "too_short":
        return f"must have at least {ctx.get('min_length')} item(s)"
    if kind == "too_long":
        return f"must have at most {ctx.get('max_length')} items"
    if kind == "string_pattern_mismatch":
        return "must not be blank" if ctx.get("pattern") == r"\S" else f"must match the pattern {ctx.get('pattern')}"
    if kind == "value_error":
        return msg.removeprefix("Value error, ")
    return msg[:1].lower() + msg[1:]


def _child(node: Any, seg: Any) -> Any:
    if isinstance(node, Mapping):
        return node.get(seg)
    if isinstance(node, list) and isinstance(seg, int) and 0 <= seg < len(node):
        return node[seg]
    return None


def node_at(loc: tuple[Any, ...], data: Any) -> Any:
    """The input value at ``loc`` (None when absent)."""
    for seg in loc:
        data = _child(data, seg)
    return data


def _strip_tags(loc: tuple[Any, ...], data: Any) -> tuple[str | int, ...]:
    """The loc without discriminated-union tags: ('procedure', 'TARE', 'device') -> ('procedure', 'device').

    A segment is a tag when the object it would index has that value under ``kind`` (and, as the last segment,
    is not also one of its keys)."""
    out: list[str | int] = []
    node = data
    for i, seg in enumerate(loc):
        if isinstance(node, Mapping) and node.get("kind") == seg and not (i == len(loc) - 1 and seg in node):
            continue
        out.append(seg)
        node = _child(node, seg)
    return tuple(out)


def _unwrap(tp: Any, node: Any) -> Any:
    """Unwrap Annotated and unions (picking the member whose ``kind`` matches the data)."""
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(tp) if a is not type(None)]
            kind = node.get("kind") if isinstance(node, Mapping) else None
            chosen = [m for m in members if kind in _kind_tags(m)]
            if chosen:
                tp = chosen[0]
            elif len(members) == 1:
                tp = members[0]
            else:
                return tp
        else:
            return tp


def _kind_tags(tp: Any) -> tuple[Any, ...]:
    if isinstance(tp, type) and issubclass(tp, BaseModel) and "kind" in tp.model_fields:
        return typing.get_args(tp.model_fields["kind"].annotation)
    return ()


def _type_at(loc: tuple[Any, ...], data: Any, root: type[BaseModel]) -> Any:
    """The annotation that validates the value at ``loc`` (tags stripped), unions resolved along the way."""
    tp: Any = root
    for depth, seg in enumerate(loc):
        tp = _unwrap(tp, node_at(loc[:depth], data))
        if isinstance(tp, type) and issubclass(tp, BaseModel) and isinstance(seg, str) and seg in tp.model_fields:
            tp = tp.model_fields[seg].annotation
        elif typing.get_origin(tp) is list and isinstance(seg, int):
            tp = typing.get_args(tp)[0]
        elif typing.get_origin(tp) is dict:
            tp = typing.get_args(tp)[1]
        else:
            return None
    return tp


def _model_at(loc: tuple[Any, ...], data: Any, root: type[BaseModel]) -> type[BaseModel] | None:
    tp = _unwrap(_type_at(loc, data, root), node_at(loc, data))
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _union_tags(loc: tuple[Any, ...], data: Any, root: type[BaseModel]) -> list[str]:
    tp = _type_at(loc, data, root)
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return [str(t) for m in typing.get_args(tp) for t in _kind_tags(m)]
    return []


def did_you_mean(key: str, names: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``names``, or an empty string."""
    close = difflib.get_close_matches(str(key), list(names), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def validation_problems(exc: ValidationError, data: Any, root: type[BaseModel]) -> list[dict[str, Any]]:
    """One problem per pydantic error of validating ``data`` as ``root`` (cross-field issue lists expanded), with
    tag-free paths and readable reasons."""
    problems = []
    for err in exc.errors(include_url=False):
        loc = _strip_tags(err["loc"], data)
        kind = err["type"]
        ctx = err.get("ctx") or {}
        if kind == ISSUES_ERROR_TYPE:
            for issue in ctx["issues"]:
                sub = tuple(int(p) if p.isdigit() else p for p in issue.path.split(".")) if issue.path else ()
                full = (*loc, *sub)
                value = issue.value
                if value is not MISSING:  # show the value as given (2000, not the model's 2000.0) when it is there
                    raw = node_at(full, data)
                    value = raw if raw is not None else value
                problems.append(make_problem(full, issue.reason, value))
        elif kind == "union_tag_not_found":
            tags = _union_tags(loc, data, root)
            problems.append(make_problem((*loc, "kind"), f"required (one of {', '.join(tags)})" if tags
                                         else "required"))
        elif kind == "union_tag_invalid":
            problems.append(make_problem((*loc, "kind"), f"must be one of {ctx.get('expected_tags')}",
                                         ctx.get("tag")))
        elif kind == "missing":
            problems.append(make_problem(loc, "required"))
        elif kind == "extra_forbidden":
            model = _model_at(loc[:-1], data, root)
            hint = did_you_mean(str(loc[-1]), model.model_fields) if model is not None else ""
            problems.append(make_problem(loc, "unknown field" + hint, err.get("input")))
        else:
            problems.append(make_problem(loc, readable_reason(err), err.get("input", MISSING)))
    return problems
