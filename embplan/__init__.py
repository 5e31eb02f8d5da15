"""embplan: planning of liver-directed therapy for NET liver metastases, with Y-90 radioembolization dosimetry.

The public face re-exports the contract (see docs/architecture.md). Imports are lazy so that ``import embplan`` and the
command line start fast and the heavy numerical modules load only when used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import CaseError, EmbplanError, ImagingError, PlanFileError

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    "load_case": "embplan.case",
    "Case": "embplan.case",
    "plan": "embplan.planner",
    "Plan": "embplan.planner",
    "assess": "embplan.risk",
    "Flag": "embplan.risk",
    "Severity": "embplan.risk",
    "Thresholds": "embplan.thresholds",
    "save_plan": "embplan.io.hdf5",
    "load_plan": "embplan.io.hdf5",
    "Grid": "embplan.grid",
    "review": "embplan.board",
    "BoardReview": "embplan.board",
    # post-treatment verification (issue 14): plan file + post.json -> Verification (and its archive)
    "verify_files": "embplan.io.verification",
    "load_verification": "embplan.io.verification",
}

__all__ = ["__version__", "EmbplanError", "CaseError", "PlanFileError", "ImagingError", *_LAZY]

if TYPE_CHECKING:  # pragma: no cover
    from .board import BoardReview, review  # noqa: F401
    from .case import Case, load_case  # noqa: F401
    from .grid import Grid  # noqa: F401
    from .io.hdf5 import load_plan, save_plan  # noqa: F401
    from .io.verification import load_verification, verify_files  # noqa: F401
    from .planner import Plan, plan  # noqa: F401
    from .risk import Flag, Severity, assess  # noqa: F401
    from .thresholds import Thresholds  # noqa: F401


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'embplan' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
