"""Liver transplant, judged separately under Milan-NET, ENETS 2016 and OPTN/UNOS 2015 (the criteria live in
:mod:`embplan.risk.eligibility`, shared with the TRANSPLANT_CANDIDATE flag, which fires exactly when the Milan option
is eligible)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..risk.eligibility import (
    ENETS_2016,
    MAZZAFERRO_2007_2016,
    OPTN_2015,
    enets_criteria,
    milan_criteria,
    unos_criteria,
)
from ..thresholds import Thresholds
from .model import BoardOption
from .surgery import option_from

if TYPE_CHECKING:  # pragma: no cover
    from ..case import Case

__all__ = ["transplant_options"]


def transplant_options(case: Case, th: Thresholds) -> list[BoardOption]:
    ok = "every criterion met: refer for a transplant evaluation at a NET transplant centre"
    return [
        option_from("transplant_milan", "Liver transplant: Milan-NET criteria", milan_criteria(case, th),
                    citations=[MAZZAFERRO_2007_2016], reason_ok=ok),
        option_from("transplant_enets", "Liver transplant: ENETS 2016 criteria", enets_criteria(case, th),
                    citations=[ENETS_2016], reason_ok=ok),
        option_from("transplant_unos", "Liver transplant: OPTN/UNOS MELD-exception criteria", unos_criteria(case, th),
                    citations=[OPTN_2015], reason_ok=ok),
    ]
