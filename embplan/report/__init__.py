"""The plan report: one self-contained HTML file a tumour board reads in a minute and a physicist checks.

Page one is the answer (:mod:`embplan.report.page_one`); then the physicist's detail (:mod:`.detail`) with the
slice viewer (:mod:`.viewer`; its JavaScript and the report's CSS are package data under ``static/``, inlined) and
the figures (:mod:`.figures`). Every dose printed comes from :func:`embplan.report.doses.key_doses` or from the
plan's own records, rounded by :mod:`.fmt`. No network, no CDN: the file opens offline.

:func:`render_report` returns the HTML text; :func:`write_report` writes it atomically. Every piece of case text is
escaped. :func:`render_document` assembles a page one, detail sections and a title into the same shell (for other
reports, such as the verification report).
"""

from __future__ import annotations

import datetime as _dt
import html
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import EmbplanError
from .detail import PARTIAL_VOLUME_DIAMETER_MM, detail_sections
from .doses import KeyDose, dose_marks, key_doses
from .figures import (
    DEFAULT_ISODOSE_LEVELS_GY,
    DVH_PLOT_STRUCTURES,
    OUTLINE_STRUCTURES,
    _centre_index,
    _isodose_levels,
    dose_slice_figure,
    dvh_figure,
)
from .page_one import SHORT_DISCLAIMER, page_one
from .viewer import VIEWER_BUDGET_BYTES, viewer_html, viewer_payload

if TYPE_CHECKING:  # pragma: no cover
    from ..plan_model import Plan

__all__ = [
    "render_report",
    "write_report",
    "render_document",
    "report_css",
    "page_one",
    "key_doses",
    "KeyDose",
    "dose_marks",
    "viewer_html",
    "viewer_payload",
    "dvh_figure",
    "dose_slice_figure",
    "DEFAULT_ISODOSE_LEVELS_GY",
    "OUTLINE_STRUCTURES",
    "DVH_PLOT_STRUCTURES",
    "DISCLAIMER",
    "SHORT_DISCLAIMER",
    "VIEWER_BUDGET_BYTES",
    "PARTIAL_VOLUME_DIAMETER_MM",
    "_centre_index",
    "_isodose_levels",
]

DISCLAIMER = (
    "embplan is research software, not a medical device. This report supports, and does not replace, the "
    "judgement of the treating team: every dose, limit and flag must be checked against the patient's images, the "
    "device's instructions for use and local protocols before treatment. Doses are mean absorbed doses computed "
    "from the stated inputs and models; their uncertainty is not shown."
)


def report_css() -> str:
    """The reports' stylesheet (package data ``static/report.css``)."""
    return resources.files("embplan.report").joinpath("static/report.css").read_text(encoding="utf-8")


def render_document(title: str, body_sections: list[str], *, generator: str) -> str:
    """One self-contained HTML document: ``title``, the sections in order, the stylesheet inline, the disclaimer."""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="generator" content="{html.escape(generator)}">'
        f"<title>{html.escape(title)}</title><style>{report_css()}</style></head>\n<body>\n"
        + "\n".join(s for s in body_sections if s)
        + f'\n<footer id="disclaimer"><strong>Disclaimer.</strong> {html.escape(DISCLAIMER)}</footer>'
        + "\n</body></html>\n"
    )


def render_report(
    plan: Plan,
    *,
    generated_utc: str | None = None,
    viewer_budget_bytes: int = VIEWER_BUDGET_BYTES,
    pv_diameter_mm: float = PARTIAL_VOLUME_DIAMETER_MM,
) -> str:
    """The report of ``plan`` as one self-contained HTML document (UTF-8 text)."""
    generated = generated_utc or _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    sections = [page_one(plan, generated_utc=generated)]
    sections += detail_sections(plan, viewer_html(plan, budget_bytes=viewer_budget_bytes),
                                pv_diameter_mm=pv_diameter_mm)
    title = f"embplan plan - {plan.case.patient.id} - {plan.procedure.kind}"
    return render_document(title, sections, generator=f"embplan {plan.provenance.embplan_version}")


def write_report(plan: Plan, path: str | Path, *, generated_utc: str | None = None) -> Path:
    """Render the report and write it to ``path`` atomically; return the path."""
    from ..io import atomic_write_text, check_output_path

    check_output_path(path, error=EmbplanError, what="report")  # fail before rendering
    text = render_report(plan, generated_utc=generated_utc)
    return atomic_write_text(path, text, error=EmbplanError, what="report")
