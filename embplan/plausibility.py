"""Plausibility of case input beyond physics: the bounds, in one place, with their rationale.

The case model's ``Field`` ranges are *physical* (what a body, an analyser or a vial can produce). A value inside
them can still be impossible for the patient this program plans for, and the commonest cause is a unit slip: a
liver of 1.65 "mL" that was 1.65 L, a lung mass of 1000 "kg" that was grams, a height of 1.68 "cm" that was
metres. Such a value does not make an implausible plan: it makes a *plausible-looking wrong* one (1.65 mL of liver
gets 1.6 MBq and a perfect tumour dose). So a value outside the bounds here is an error (a
:class:`~embplan.errors.CaseError` naming the field), with a hint when a unit slip explains it.

Bounds are *absurdity* bounds, far outside the clinical range, not clinical limits (those are
:class:`embplan.thresholds.Thresholds` and become flags). Each :class:`Bound` carries its rationale and source; a
site that needs another bound passes its own :class:`PlausibilityBounds` to :func:`embplan.case.load_case`
(``plausibility=``). Numbers marked ``[U]`` are judgement calls that no source states as such.

Free text (every string and key of a case: ``patient.id``, notes, ROI names, paths) must not carry control
characters (C0, DEL, C1), bidirectional overrides or line/paragraph separators: printed on a terminal or in a
report they could forge an output line (``\\n``), rewrite the screen (``ESC``) or reorder the text (U+202E).
:func:`control_character_problem` finds them; :func:`printable` escapes them for printing text that did not pass
through the case loader.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

__all__ = [
    "Bound",
    "PlausibilityBounds",
    "DEFAULT_BOUNDS",
    "bound_problem",
    "control_character_problem",
    "printable",
]


@dataclass(frozen=True)
class Bound:
    """An absurdity bound of one case field: ``low <= value <= high`` (either may be None), in ``unit``.

    ``hints`` are (factor, unit name) pairs: when ``value * factor`` lies inside the bounds, the error adds
    "looks like <unit name>: <value * factor> <unit>?"; ``rationale`` says why the bound is where it is (with
    its source).
    """

    low: float | None
    high: float | None
    unit: str
    rationale: str
    hints: tuple[tuple[float, str], ...] = ()

    def contains(self, value: float) -> bool:
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)


#: Volumes in millilitres given in litres (x1000) or in cubic metres (x1e6); masses in kg given in grams (/1000).
_LITRES = ((1000.0, "litres"),)
_GRAMS = ((1e-3, "grams"),)


class PlausibilityBounds(BaseModel):
    """Every absurdity bound of case input. Override a bound with ``DEFAULT_BOUNDS.model_copy(update={...})``."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    weight_kg: Bound = Bound(
        20.0, 400.0, "kg",
        "An adult: the lightest adults are about 25-30 kg; embplan's BSA and dose models are adult models. Below 20 kg "
        "the value is a unit slip or a child [U]. The upper bound is the model's physical bound.",
        hints=(*_GRAMS, (0.45359237, "pounds")),
    )
    height_cm: Bound = Bound(
        90.0, 250.0, "cm",
        "An adult: adults with achondroplasia average about 120-130 cm; below 90 cm the value is a unit slip "
        "(metres) [U].",
        hints=((100.0, "metres"), (0.1, "millimetres"), (2.54, "inches")),
    )
    liver_volume_ml: Bound = Bound(
        300.0, 10000.0, "mL",
        "Adult livers are 1000-2500 mL (standard liver volume 706.2 x BSA + 2.4 mL, Urata et al., Hepatology "
        "1995;21:1317: 706 mL even at BSA 1.0 m2); a remnant after major hepatectomy regrows to >= 60-80% of it. "
        "Below 300 mL the value is a unit slip (litres) [U].",
        hints=_LITRES,
    )
    perfused_volume_ml: Bound = Bound(
        1.0, 10000.0, "mL",
        "The smallest territory treated (a subsegment, radiation segmentectomy) is tens of mL; 1 mL is about "
        "the resolution volume of MAA SPECT (FWHM 12-15 mm) [U]. Below it the value is a unit slip.",
        hints=_LITRES,
    )
    tumor_volume_ml: Bound = Bound(
        0.1, 10000.0, "mL",
        "A tumour volume, when not 0, is at least one lesion that CT volumetry can outline: a 6 mm sphere is "
        "0.11 mL [U]. Below it the value is a unit slip (litres).",
        hints=_LITRES,
    )
    perfused_tumor_volume_ml: Bound = Bound(
        0.1, 10000.0, "mL",
        "As tumor_volume_ml: at least one outlined lesion when not 0 [U].",
        hints=_LITRES,
    )
    lung_mass_kg: Bound = Bound(
        0.3, 5.0, "kg",
        "Adult lungs weigh 0.6-1.5 kg (the MIRD standard is 1 kg; CT-based masses of adults 0.5-1.5 kg, "
        "Kao et al., EJNMMI Res 2013;3:56). Below 0.3 kg the value is a unit slip [U]; the upper bound is the "
        "model's physical bound.",
        hints=_GRAMS,
    )
    tumor_to_normal_ratio: Bound = Bound(
        0.1, 100.0, "1",
        "MAA tumour-to-normal ratios of NET metastases are about 1-10; a ratio below 0.1 cannot be measured on "
        "MAA SPECT (the tumour's counts are below scatter and spill-in) and a value like 1e-300 is a typo [U].",
    )
    doxorubicin_session_mg: Bound = Bound(
        None, 300.0, "mg",
        "One TACE session: the RETNET standard is 50 mg; the highest per-session doses in TACE practice are "
        "150 mg (DC Bead: at most 150 mg doxorubicin per procedure, Lammer et al., PRECISION V, Cardiovasc "
        "Intervent Radiol 2010;33:41), the systemic single-dose maximum 75 mg/m2 (doxorubicin prescribing "
        "information). Above twice that (300 mg) the value is a typing slip (500 for 50) [U]; between 150 and 300 mg "
        "the plan flags DOXORUBICIN_SESSION_HIGH (warning; threshold doxorubicin_session_limit_mg).",
    )

    def items(self) -> Iterable[tuple[str, Bound]]:
        for name in type(self).model_fields:
            yield name, getattr(self, name)


#: The bounds load_case uses unless given others.
DEFAULT_BOUNDS = PlausibilityBounds()


def bound_problem(value: float, bound: Bound, *, zero_allowed: bool = False) -> str | None:
    """Why ``value`` is implausible under ``bound`` (with a unit hint when one explains it), or None."""
    if zero_allowed and value == 0:
        return None
    if bound.contains(value):
        return None
    low = "" if bound.low is None else f"{bound.low:g}"
    high = "" if bound.high is None else f"{bound.high:g}"
    if low and high:
        reason = f"implausible: expected {low}-{high} {bound.unit}"
    elif low:
        reason = f"implausible: expected >= {low} {bound.unit}"
    else:
        reason = f"implausible: expected <= {high} {bound.unit}"
    if zero_allowed:
        reason += " (or 0)"
    for factor, unit_name in bound.hints:
        converted = value * factor
        if bound.contains(converted):
            reason += f"; looks like {unit_name} ({converted:.4g} {bound.unit}?)"
            break
    return reason


# ---- free text ----------------------------------------------------------------------------------------------
#: Bidirectional formatting characters (Unicode TR9): embeddings, overrides, isolates, marks.
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
#: Line and paragraph separators (a terminal or a log reader may break the line there).
_SEPARATORS = frozenset("\u2028\u2029")


def _is_control(ch: str) -> bool:
    code = ord(ch)
    return code < 0x20 or 0x7F <= code <= 0x9F or ch in _BIDI or ch in _SEPARATORS


def _name(ch: str) -> str:
    names = {"\x00": "NUL", "\t": "TAB", "\n": "LF", "\r": "CR", "\x1b": "ESC", "\x7f": "DEL", "\x85": "NEL"}
    return names.get(ch) or unicodedata.name(ch, "control character")


def control_character_problem(text: str) -> str | None:
    """Why ``text`` may not be printed as it is (its first control, bidi or separator character), or None."""
    for i, ch in enumerate(text):
        if _is_control(ch):
            return (f"must not contain control or bidirectional characters (U+{ord(ch):04X} {_name(ch)} at "
                    f"position {i}): printed, it could forge or hide output")
    return None


def printable(text: str, json_escapes: bool = False) -> str:
    """``text`` with every control, bidi or separator character escaped (``\\x1b``, ``\\u202e``; with
    ``json_escapes`` always ``\\u001b``, valid inside a JSON string)."""
    if not any(_is_control(ch) for ch in text):
        return text
    out = []
    for ch in text:
        if _is_control(ch):
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 and not json_escapes else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)
