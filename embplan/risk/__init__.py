"""embplan.risk: risk flags with their evidence.

- :func:`assess` runs every case-level rule (what the case alone decides);
- :func:`assess_dose` runs the dose rules on a dosimetry result (:class:`DoseFacts`), inside ``plan()``;
- :func:`dose_limits` gives the limits and targets the planner prescribes against;
- :func:`lung_shunt_reduction` the resin activity reduction for a lung shunt.

Every number comes from :class:`embplan.thresholds.Thresholds` (defaults with sources, overridable per case).
"""

from __future__ import annotations

from .dose_rules import DOSE_RULES, DoseFacts, assess_dose
from .flags import ALL_CODES, Flag, Severity, max_severity, sort_flags
from .limits import DoseLimits, dose_limits, lung_shunt_reduction
from .rules import CASE_RULES, assess, rule_names

__all__ = [
    "ALL_CODES",
    "CASE_RULES",
    "DOSE_RULES",
    "DoseFacts",
    "DoseLimits",
    "Flag",
    "Severity",
    "assess",
    "assess_dose",
    "dose_limits",
    "lung_shunt_reduction",
    "max_severity",
    "rule_names",
    "sort_flags",
]
