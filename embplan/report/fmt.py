"""Numbers and labels as a reader sees them.

One place rounds every number the reports print: activity to 0.01 GBq, dose to 0.1 Gy (below 0.1 Gy: "< 0.1"),
fractions as percents, volumes and masses to 3 significant figures. Full precision stays in the plan file and in
``--json``. Labels turn field and structure names into words; nothing in a report shows a raw field name where a
label exists.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any, TypeGuard

__all__ = [
    "esc",
    "gbq",
    "gy",
    "percent",
    "sig3",
    "ml",
    "kg",
    "structure_label",
    "method_label",
    "field_label",
    "threshold_label",
    "threshold_value",
    "value_text",
]

_DASH = "–"


def _finite(value: Any) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))


def esc(value: Any) -> str:
    """Escaped text of ``value`` (``None`` -> an en dash)."""
    if value is None:
        return _DASH
    return html.escape(str(getattr(value, "value", value)))


def gbq(value: float | None) -> str:
    """Activity to 0.01 GBq: ``3.2478`` -> ``3.25``."""
    return f"{float(value):.2f}" if _finite(value) else _DASH


def gy(value: float | None) -> str:
    """Dose to 0.1 Gy: ``91.2284`` -> ``91.2``; a positive dose under 0.05 Gy reads ``< 0.1``, not ``0.0``."""
    if not _finite(value):
        return _DASH
    v = float(value)
    if 0 < abs(v) < 0.05:
        return "&lt; 0.1" if v > 0 else "&gt; -0.1"
    return f"{v:.1f}"


def percent(fraction: float | None, digits: int = 1) -> str:
    """A fraction as a percent: ``0.0799995`` -> ``8.0 %``."""
    if not _finite(fraction):
        return _DASH
    return f"{100.0 * float(fraction):.{digits}f} %"


def sig3(value: float | None) -> str:
    """Three significant figures, never scientific notation for ordinary magnitudes; integers above 1000 whole."""
    if not _finite(value):
        return _DASH
    v = float(value)
    if v == 0:
        return "0"
    mag = abs(v)
    if mag >= 100:
        return f"{v:.0f}"
    digits = max(0, 2 - int(math.floor(math.log10(mag))))
    text = f"{v:.{digits}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def ml(value: float | None) -> str:
    return sig3(value)


def kg(value: float | None) -> str:
    return f"{float(value):.3f}" if _finite(value) else _DASH


# ---------------------------------------------------------------------------------------------- labels
_STRUCTURES = {
    "liver": "Liver",
    "normal_liver": "Non-tumour liver",
    "perfused": "Perfused liver",
    "perfused_normal_liver": "Perfused non-tumour liver",
    "tumors": "All tumours",
    "tumor": "Tumour",
    "tumour": "Tumour",
    "perfused_tumors": "Perfused tumours",
    "lungs": "Lungs",
    "lung": "Lungs",
}


def structure_label(name: str) -> str:
    """``perfused_normal_liver`` -> ``Perfused non-tumour liver``; ``tumor_3`` -> ``Tumour 3``."""
    if name in _STRUCTURES:
        return _STRUCTURES[name]
    m = re.fullmatch(r"tumou?r[_ ]?(\w+)", name)
    if m:
        return f"Tumour {m.group(1).replace('_', ' ')}"
    return name.replace("_", " ").strip().capitalize()


_WORDS = {
    "lsf": "lung shunt fraction",
    "inr": "INR",
    "egfr": "eGFR",
    "wbc": "WBC",
    "flr": "future liver remnant",
    "ecog": "ECOG",
    "bsa": "BSA",
    "tn": "T/N",
    "um": "(µm)",
    "mg": "(mg)",
    "gy": "(Gy)",
    "gbq": "(GBq)",
    "kg": "(kg)",
    "ml": "(mL)",
    "mm": "(mm)",
    "hu": "(HU)",
    "id": "ID",
    "tace": "TACE",
    "tae": "TAE",
    "tare": "TARE",
    "deb": "DEB",
    "tumor": "tumour",
    "tumors": "tumours",
}
_UNIT_SUFFIXES = (
    "_10e9_per_l", "_ml_min", "_mg_m2", "_mg_dl", "_g_cm3", "_fraction", "_percent", "_heartbeats", "_years",
    "_months", "_gy", "_gbq", "_mbq", "_kg", "_ml", "_mm", "_mg", "_um", "_hours", "_cm", "_m2",
)


_METHODS = {
    "vsv_density": "voxel S-value, density-corrected",
    "vsv": "voxel S-value, water",
    "ldm": "local deposition",
}


def method_label(method: str) -> str:
    """A dose method in words: ``vsv_density`` -> ``voxel S-value, density-corrected``."""
    return _METHODS.get(method, method.replace("_", " "))


def field_label(name: str) -> str:
    """A field name in words: ``perfused_dose_target_gy`` -> ``Perfused dose target (Gy)``."""
    words = [_WORDS.get(w, w) for w in str(name).split("_") if w]
    text = " ".join(words)
    return text[:1].upper() + text[1:] if text else ""


def threshold_label(name: str) -> str:
    """A threshold name in words, its unit left to the unit column: ``lsf_glass_caution_fraction`` ->
    ``Lung shunt fraction glass caution``."""
    stem = name
    for suffix in _UNIT_SUFFIXES:
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    words = [_WORDS.get(w, w) for w in stem.split("_") if w]
    words = [w for w in words if not (w.startswith("(") and w.endswith(")"))]
    text = " ".join(words).replace("normal liver", "non-tumour liver")
    return text[:1].upper() + text[1:]


def threshold_value(value: Any, unit: str) -> tuple[str, str]:
    """(value text, unit text) of a threshold: fractions as percents."""
    if unit == "fraction" and _finite(value):
        return sig3(100.0 * float(value)), "%"
    if unit == "percent":
        return sig3(value), "%"
    if _finite(value):
        return sig3(value), unit
    return esc(value), unit


def value_text(value: Any) -> str:
    """Escaped reading text of any case or model value: numbers to 3 significant figures, mappings as
    ``key value; ...`` with labels, lists joined, booleans yes/no."""
    if value is None:
        return _DASH
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return sig3(value) if isinstance(value, float) else str(value)
    if isinstance(value, Mapping):
        parts = [f"{esc(field_label(str(k)).lower())} {value_text(v)}" for k, v in value.items()
                 if v is not None and v != [] and v != {}]
        return ", ".join(parts) if parts else _DASH
    if isinstance(value, (list, tuple)):
        return ", ".join(value_text(v) for v in value) if value else _DASH
    return esc(value)


def join(items: Iterable[str], sep: str = ", ") -> str:
    return sep.join(items)
