"""The HTML report: structure, embedded figures, flags with evidence, escaping, atomic writing."""

from __future__ import annotations

import base64
import stat
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from embplan import report
from embplan.errors import EmbplanError
from tests.plan_factory import build_plan

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class _Doc(HTMLParser):
    """Collects what the tests look at: tags, section ids, tables, images, flag rows and all text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.sections: list[str] = []
        self.table_classes: list[str] = []
        self.images: list[dict[str, str]] = []
        self.links: list[str] = []
        self.flag_rows: list[list[str]] = []
        self.text: list[str] = []
        self._in_flag_row = 0
        self._stack: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        self.tags.append(tag)
        if tag not in ("meta", "img", "br", "link"):
            self._stack.append(tag)
        if tag == "section":
            self.sections.append(a.get("id", ""))
        if tag == "table":
            self.table_classes.append(a.get("class", ""))
        if tag == "img":
            self.images.append(a)
        if tag in ("a", "link", "script", "iframe"):
            self.links.append(a.get("href", a.get("src", "")))
        if tag == "tr" and "flag" in a.get("class", "").split():
            self.flag_rows.append([a["class"]])
            self._in_flag_row = len(self._stack)

    def handle_endtag(self, tag):
        if self._stack and self._stack[-1] == tag:
            self._stack.pop()
        if tag == "tr" and self._in_flag_row and len(self._stack) < self._in_flag_row:
            self._in_flag_row = 0

    def handle_data(self, data):
        self.text.append(data)
        if self._in_flag_row and data.strip():
            self.flag_rows[-1].append(data.strip())

    @property
    def all_text(self) -> str:
        return " ".join(" ".join(self.text).split())


def _parse(text: str) -> _Doc:
    doc = _Doc()
    doc.feed(text)
    doc.close()
    return doc


@pytest.fixture(scope="module")
def plan():
    return build_plan(shape=(24, 20, 18))


@pytest.fixture(scope="module")
def html_text(plan) -> str:
    return report.render_report(plan, generated_utc="2026-01-05T12:00:00Z")


@pytest.fixture(scope="module")
def doc(html_text) -> _Doc:
    return _parse(html_text)


def test_document_and_sections(html_text, doc):
    assert html_text.startswith("<!DOCTYPE html>")
    assert doc.tags[0] == "html" and "head" in doc.tags and "body" in doc.tags and "style" in doc.tags
    for sid in ("flags", "case", "procedure", "prescription", "doses", "dvh", "slices", "thresholds", "provenance"):
        assert sid in doc.sections, sid
    assert "header" in doc.tags and "footer" in doc.tags
    assert "research software" in doc.all_text  # the disclaimer


def test_self_contained(doc):
    """No script, no external resource: the images are embedded PNGs."""
    assert "script" not in doc.tags
    assert all(not link.startswith(("http:", "https:", "//")) for link in doc.links)
    assert len(doc.images) == 2  # DVH, dose slices
    for img in doc.images:
        assert img["alt"]
        prefix = "data:image/png;base64,"
        assert img["src"].startswith(prefix)
        png = base64.b64decode(img["src"][len(prefix):], validate=True)
        assert png.startswith(_PNG_SIGNATURE)
        assert len(png) > 5000  # a drawn figure, not an empty canvas


def test_header(plan, doc):
    text = doc.all_text
    assert f"patient {plan.case.patient.id}" in text
    assert "TARE" in text and "2026-12-20" in text
    assert "highest severity: warning" in text


def test_flags_by_severity_with_evidence(plan, doc):
    assert len(doc.flag_rows) == len(plan.flags) == 3
    severities = [row[1] for row in doc.flag_rows]
    assert severities == ["warning", "caution", "info"]  # most severe first
    by_code = {row[2]: " ".join(row[3:]) for row in doc.flag_rows}
    for flag in plan.flags:
        assert flag.message in by_code[flag.code]
        assert f"Evidence: {flag.evidence}" in by_code[flag.code]
    assert '"lung_dose_gy": 21.0' in by_code["LUNG_DOSE_LIMIT"]  # the values that triggered it


def test_case_text_is_escaped(html_text, doc):
    # the flag message holds "<script>x</script>": it shows as text and never becomes a tag
    assert "<script>" not in html_text
    assert "&lt;script&gt;x&lt;/script&gt;" in html_text
    assert "Tumour D70 below target <script>x</script>" in doc.all_text


def test_patient_id_is_escaped():
    p = build_plan(with_voxels=False, patient_id='<img src=x onerror="alert(1)">&')
    text = report.render_report(p)
    assert "<img src=x" not in text
    d = _parse(text)
    assert d.images == [] or all(i["src"].startswith("data:image/png") for i in d.images)
    assert '<img src=x onerror="alert(1)">&' in d.all_text


def test_dose_table_compartment_and_voxel_side_by_side(plan, doc, html_text):
    assert "doses" in doc.table_classes
    start = html_text.index('<table class="doses">')
    table = _parse(html_text[start: html_text.index("</table>", start) + 8]).all_text
    assert "compartment (mird)" in table and "voxel (vsv_density)" in table
    c, v = plan.dosimetry.compartment, plan.dosimetry.voxel
    for name, a, b in (("non-tumour liver", c.normal_liver_gy, v.normal_liver_gy), ("lung", c.lung_gy, v.lung_gy),
                       ("perfused liver", c.perfused_gy, v.perfused_gy)):
        assert f"{name} {a:.1f} {b:.1f}" in table
    assert f"tumour – {v.tumor_gy:.1f}" in table  # no compartment tumour dose in a MIRD plan


def test_prescription_thresholds_provenance(plan, doc):
    text = doc.all_text
    rx = plan.dosimetry.prescription
    assert "prescribed activity (GBq) 3.42" in text
    assert "binding constraint perfused dose target" in text
    assert "K (Gy kg / GBq) 49.67" in text
    assert "perfused dose target gy 120" in text  # model inputs
    assert rx.explanation in text
    assert "37 thresholds, 1 overridden" in text or f"{len(plan.thresholds.describe())} thresholds, 1 overridden" in text
    assert "lung_dose_session_limit_gy" in text
    assert "thresholds" in doc.table_classes and "dvh-dose" in " ".join(doc.table_classes)
    assert "embplan version 0.1.0" in text
    assert "The case as given" in text


def test_without_voxels_or_dosimetry():
    p = build_plan(with_voxels=False)
    d = _parse(report.render_report(p))
    assert "slices" not in d.sections and "dvh" not in d.sections
    assert "doses" in d.sections and d.images == []
    q = build_plan(with_voxels=False, with_dosimetry=False)
    d = _parse(report.render_report(q))
    assert "doses" not in d.sections
    assert "No radioembolization" in d.all_text
    assert len(d.flag_rows) == 3


def test_no_flags_badge():
    p = build_plan(with_voxels=False).model_copy(update={"flags": []})
    d = _parse(report.render_report(p))
    assert "No rule raised a flag." in d.all_text
    assert "no flags" in d.all_text


# --------------------------------------------------------------------------------------------- figures
def test_slice_centre_is_the_tumour(plan):
    """The slices go through the dose-weighted tumour centre, not the middle of the grid."""
    from embplan.plan_model import VoxelData

    v = plan.voxel
    shape = v.grid.shape
    tumour = np.zeros(shape, bool)
    tumour[3:6, 13:16, 2:5] = True  # off-centre block, centre (4, 14, 3)
    arrays = dict(v.arrays)
    arrays["mask_tumors"] = tumour
    dose = np.full(shape, 5.0)
    dose[tumour] = 100.0
    arrays["dose_vsv_density_gy"] = dose
    assert report._centre_index(dose, {"tumors": tumour}) == (4, 14, 3)
    p = plan.model_copy(update={"voxel": VoxelData(v.grid, arrays, dict(v.units), dict(v.attributes))})
    fig = report.dose_slice_figure(p)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["axial, slice z = 4", "coronal, slice y = 14"]


def test_isodose_levels_come_from_the_plan(plan):
    levels = report._isodose_levels(plan, None, max_dose=1000.0)
    limits = plan.dosimetry.limits
    assert limits.normal_liver_limit_gy in levels and limits.tumor_target_gy in levels
    assert 120.0 in levels  # the perfused dose target in the prescription inputs
    assert report._isodose_levels(plan, [10, 500, 2000], max_dose=1000.0) == [10.0, 500.0]
    bare = build_plan(with_voxels=False, with_dosimetry=False)
    assert report._isodose_levels(bare, None, 1000.0) == list(report.DEFAULT_ISODOSE_LEVELS_GY)


def test_dvh_figure_draws_the_records(plan):
    fig = report.dvh_figure(plan)
    lines = [ln for ln in fig.axes[0].get_lines() if ln.get_label().startswith(("tumors", "normal_liver"))]
    assert len(lines) == 2
    rec = plan.dosimetry.dvh["tumors"]
    tumour_line = next(ln for ln in lines if ln.get_label().startswith("tumors"))
    assert list(tumour_line.get_xdata()) == rec.dose_gy
    assert list(tumour_line.get_ydata()) == [100 * f for f in rec.volume_fraction]
    assert report.dvh_figure(build_plan(with_voxels=False)) is None


# --------------------------------------------------------------------------------------------- writing
def test_write_report_atomic(plan, tmp_path, monkeypatch):
    path = tmp_path / "report.html"
    assert report.write_report(plan, path) == path
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    mode = stat.S_IMODE(path.stat().st_mode)
    assert mode & stat.S_IRUSR and mode & stat.S_IWUSR
    assert mode != 0o600 or (0o066 & ~_umask()) == 0  # the mode of a plain open(), not mkstemp's 0600

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(EmbplanError, match="No space left"):
        report.write_report(build_plan(with_voxels=False), path)
    monkeypatch.undo()
    assert path.read_text(encoding="utf-8") == text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


def test_write_report_to_missing_folder(plan, tmp_path):
    with pytest.raises(EmbplanError, match="does not exist"):
        report.write_report(plan, tmp_path / "missing" / "r.html")
    assert list(tmp_path.iterdir()) == []


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_report_path_type(plan, tmp_path):
    assert isinstance(report.write_report(build_plan(with_voxels=False), str(tmp_path / "r.html")), Path)
