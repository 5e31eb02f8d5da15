"""Body surface area: one formula set for the whole package (case model, risk rules, BSA prescription).

- Du Bois D, Du Bois EF. A formula to estimate the approximate surface area if height and weight be known.
  Arch Intern Med 1916;17:863-871: BSA [m2] = 0.007184 * W[kg]^0.425 * H[cm]^0.725 (the resin package insert's
  formula, and the default here).
- Mosteller RD. Simplified calculation of body-surface area. N Engl J Med 1987;317:1098: BSA = sqrt(W * H / 3600).
"""

from __future__ import annotations

import math

from .errors import EmbplanError

__all__ = [
    "DU_BOIS_COEFFICIENT",
    "DU_BOIS_WEIGHT_EXPONENT",
    "DU_BOIS_HEIGHT_EXPONENT",
    "BSA_FORMULAS",
    "body_surface_area_m2",
]

DU_BOIS_COEFFICIENT: float = 0.007184
DU_BOIS_WEIGHT_EXPONENT: float = 0.425
DU_BOIS_HEIGHT_EXPONENT: float = 0.725
BSA_FORMULAS: tuple[str, ...] = ("dubois", "mosteller")


def body_surface_area_m2(weight_kg: float, height_cm: float, formula: str = "dubois") -> float:
    """Body surface area in m^2 by ``formula`` ("dubois", default, or "mosteller"); raises EmbplanError on a
    non-finite or non-positive weight or height, or an unknown formula."""
    for name, value in (("weight_kg", weight_kg), ("height_cm", height_cm)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
            raise EmbplanError(f"{name}: must be a finite number > 0, got {value!r}")
    if formula == "dubois":
        return DU_BOIS_COEFFICIENT * weight_kg**DU_BOIS_WEIGHT_EXPONENT * height_cm**DU_BOIS_HEIGHT_EXPONENT
    if formula == "mosteller":
        return math.sqrt(weight_kg * height_cm / 3600.0)
    raise EmbplanError(f"formula: must be one of {BSA_FORMULAS}, got {formula!r}")
