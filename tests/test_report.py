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
    for sid in ("page-one", "flags", "case", "procedure", "prescription", "doses", "dvh", "slices", "thresholds",
                "provenance"):
        assert sid in doc.sections, sid
    assert doc.sections[0] == "page-one"  # the answer comes first
    assert "board" not in doc.sections  # no board review in this plan
    assert "header" in doc.tags and "footer" in doc.tags
    assert "research software, not a medical device" in doc.all_text.lower()  # the disclaimer


def test_self_contained(html_text, doc):
    """No external resource: scripts are inline, the DVH is an embedded PNG, the viewer's data is embedded."""
    assert all(not link for link in doc.links if link)  # no src/href on script/link/a/iframe
    assert "<link" not in html_text and "<iframe" not in html_text
    assert "http://" not in html_text.replace("http://www.w3.org", "") and "https://" not in html_text
    assert len(doc.images) == 1  # the DVH
    for img in doc.images:
        assert img["alt"]
        prefix = "data:image/png;base64,"
        assert img["src"].startswith(prefix)
        png = base64.b64decode(img["src"][len(prefix):], validate=True)
        assert png.startswith(_PNG_SIGNATURE)
        assert len(png) > 5000  # a drawn figure, not an empty canvas
    assert 'id="viewer-data"' in html_text and "DecompressionStream" in html_text


def _page_one_text(html_text: str) -> str:
    start = html_text.index('<section id="page-one"')
    return _parse(html_text[start: html_text.index("</section>", start) + 10]).all_text


def test_page_one_holds_the_answer(plan, html_text):
    text = _page_one_text(html_text)
    assert f"patient {plan.case.patient.id}" in text
    assert "Y-90 radioembolization (TARE)" in text and "2026-12-20" in text
    assert "highest severity: warning" in text
    assert "Prescribed 3.42 GBq" in text  # activity to 0.01 GBq
    assert "No tumour-board review is recorded with this plan." in text
    for field in ("Prepared by", "Checked by (physicist)", "Date"):
        assert field in text
    assert "Research software, not a medical device" in text
    # flags by severity with one line of evidence, human titles
    assert text.index("Lung dose limit.") < text.index("Tumour dose low.") < text.index("Sequence deviation.")
    assert "Evidence: EANM 2022 (30 Gy per session)" in text
    assert "LUNG_DOSE_LIMIT" not in text  # no raw codes on page one


def test_key_doses_against_hand_judgement(plan):
    """Each key dose is the plan's field for the dose set in force, judged against the limit in force by hand."""
    kd = {k.key: k for k in report.key_doses(plan)}
    v, lim = plan.dosimetry.voxel, plan.dosimetry.limits
    assert plan.dosimetry.source == "voxel"
    assert kd["tumor"].value_gy == v.tumor_gy == 241.7 and kd["tumor"].bound_gy == lim.tumor_target_gy == 205.0
    assert kd["tumor"].status == "pass" and kd["tumor"].status_text == "meets target"
    assert kd["tumor"].bound_label == "glass tumour target (not validated in NET)"  # the source's caveat, shown
    assert kd["normal_liver"].value_gy == 50.1 and kd["normal_liver"].bound_gy == 75.0
    assert kd["normal_liver"].status == "pass"
    assert kd["lung"].value_gy == 20.4 and kd["lung"].bound_gy == 25.0  # the case's override of 30 Gy
    assert kd["lung"].status == "pass"
    assert kd["perfused_normal_liver"].status == "na" and kd["perfused_normal_liver"].bound_gy is None
    assert kd["perfused"].bound_kind == "prescribed" and kd["perfused"].bound_gy == 120.0
    assert "lung_cumulative" not in kd  # no prior radioembolization
    # over the limit / under the target
    d = plan.dosimetry
    hot = d.voxel.model_copy(update={"lung_gy": 25.04, "normal_liver_gy": 75.0, "tumor_gy": 204.9})
    p2 = plan.model_copy(update={"dosimetry": d.model_copy(update={"voxel": hot})})
    kd2 = {k.key: k for k in report.key_doses(p2)}
    assert kd2["lung"].status == "fail" and kd2["lung"].status_text == "over limit"
    assert kd2["normal_liver"].status == "pass"  # at the limit is within it
    assert kd2["tumor"].status == "fail" and kd2["tumor"].status_text == "below target"
    # a compartment-only plan reads the compartment model's fields
    comp = build_plan(with_voxels=False)
    kd3 = {k.key: k for k in report.key_doses(comp)}
    assert kd3["normal_liver"].value_gy == comp.dosimetry.compartment.normal_liver_gy == 48.2
    assert kd3["tumor"].value_gy is None and kd3["tumor"].status == "na"


def test_cumulative_lung_dose_after_a_prior_session(plan):
    """With a prior radioembolization the lung's cumulative dose (this session + prior) is judged against the
    cumulative limit, and the session's lung dose against the smaller of the session limit and what remains."""
    d = plan.dosimetry
    lim = d.limits.model_copy(update={"prior_lung_dose_gy": 32.0, "lung_remaining_gy": 18.0})
    p = plan.model_copy(update={"dosimetry": d.model_copy(update={"limits": lim})})
    kd = {k.key: k for k in report.key_doses(p)}
    assert kd["lung"].bound_gy == 18.0 and kd["lung"].bound_label == "remaining cumulative allowance"
    assert kd["lung"].status == "fail"  # 20.4 Gy > 18 Gy left
    assert kd["lung_cumulative"].value_gy == pytest.approx(52.4) and kd["lung_cumulative"].bound_gy == 50.0
    assert kd["lung_cumulative"].status == "fail"
    one = _page_one_text(report.render_report(p))
    assert "Lungs (cumulative, all sessions) cumulative limit 52.4 ≤ 50.0 Gy over limit" in one


def test_headline_and_tables_print_the_same_numbers(plan, html_text):
    """Every key dose reads the same on page one, in the detail table and as the plan field rounded to 0.1 Gy."""
    for k in report.key_doses(plan):
        expected = "–" if k.value_gy is None else f"{k.value_gy:.1f}"
        cells = []
        for cls in ('<tr class="key-dose" data-key="' + k.key + '"', '<tr data-key="' + k.key + '"'):
            row = html_text[html_text.index(cls):]
            row = row[: row.index("</tr>")]
            cell = row[row.index('class="num dose-value">') + len('class="num dose-value">'):]
            cells.append(cell[: cell.index("</td>")])
        assert cells == [expected, expected], k.key


def test_numbers_rounded_for_reading(html_text):
    text = _page_one_text(html_text)
    import re

    long_numbers = re.findall(r"\d+\.\d{3,}", text)
    assert long_numbers == []
    assert "Lung shunt 8.0 %" in text  # a fraction as a percent
    assert "ratio 4" in text


def test_flags_in_full_by_severity_with_evidence(plan, doc):
    assert len(doc.flag_rows) == len(plan.flags) == 3
    severities = [row[1] for row in doc.flag_rows]
    assert severities == ["warning", "caution", "info"]  # most severe first
    by_code = {row[3]: " ".join(row[4:]) for row in doc.flag_rows}
    for flag in plan.flags:
        assert flag.message in by_code[flag.code]
        assert f"Evidence: {flag.evidence}" in by_code[flag.code]
    # the values that triggered it, in words, not JSON
    assert "Values: lung dose (Gy): 21.0; limit (Gy): 25.0" in by_code["LUNG_DOSE_LIMIT"]
    assert "{" not in by_code["LUNG_DOSE_LIMIT"]


def test_case_text_is_escaped(html_text, doc):
    # the flag message holds "<script>x</script>": it shows as text and never becomes a tag
    assert "<script>x" not in html_text
    assert "&lt;script&gt;x&lt;/script&gt;" in html_text
    assert "Tumour D70 below target <script>x</script>" in doc.all_text


def test_patient_id_is_escaped():
    p = build_plan(patient_id='<img src=x onerror="alert(1)">&</script>')
    text = report.render_report(p)
    assert "<img src=x" not in text
    d = _parse(text)
    assert all(i["src"].startswith("data:image/png") for i in d.images)
    assert '<img src=x onerror="alert(1)">&</script>' in d.all_text
    assert text.count("</script>") == 2  # the viewer's data block and its code: nothing closed early


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


def test_structure_table_with_partial_volume_note():
    from embplan.plan_model import StructureDose

    p = build_plan()
    d = p.dosimetry
    small = StructureDose(structure="tumor_2", volume_ml=4.19, mass_kg=0.0044, mean_gy=180.26, bed_gy=250.0)
    p = p.model_copy(update={"dosimetry": d.model_copy(update={"structures": [*d.structures, small]})})
    text = _parse(report.render_report(p)).all_text
    # 4.19 mL (a 20 mm sphere) is under the plan's partial_volume_warning_ml (10 mL): the note; the 120.5 mL
    # union is not noted
    assert p.thresholds.partial_volume_warning_ml == 10.0
    assert "Tumour 2 4.19 0.004 180.3" in text
    assert "4.19 mL (20 mm equivalent sphere): partial-volume effect likely" in text
    assert text.count("partial-volume effect likely") == 1
    assert "All tumours 120 0.128 241.7 – 200.0 225.1 – 310.2" in text  # D95 absent, D70, D50, D2 absent, BED


def test_prescription_thresholds_provenance(plan, doc):
    text = doc.all_text
    rx = plan.dosimetry.prescription
    assert "Prescribed activity (GBq) 3.42" in text
    assert "Binding constraint perfused dose target" in text
    assert "K (Gy kg / GBq) 49.67" in text
    assert "Perfused dose target (Gy) 120.0" in text  # model inputs, labelled
    assert "Lung shunt fraction 8.0 %" in text
    assert rx.explanation in text
    n = len(plan.thresholds.describe())
    assert f"{n} thresholds, 1 overridden" in text
    assert "Lung dose session limit" in text and "lung_dose_session_limit_gy" in text
    assert "thresholds" in doc.table_classes and "dvh-dose" in " ".join(doc.table_classes)
    assert "embplan version 0.1.0" in text
    assert "The case as given" in text


def test_relevant_thresholds_first():
    from embplan.report.detail import relevant_thresholds

    p = build_plan(with_voxels=False)
    rel = relevant_thresholds(p)
    assert {"glass_normal_liver_limit_gy", "lung_dose_session_limit_gy", "glass_tumor_dose_target_gy",
            "lsf_glass_caution_fraction", "bilirubin_high_mg_dl"} <= rel
    assert not rel & {"resin_normal_liver_limit_gy", "protocol_doxorubicin_mg", "doxorubicin_lifetime_limit_mg_m2",
                      "lsf_resin_contraindication_fraction"}
    text = report.render_report(p)
    shown = text[text.index('<div class="relevant-thresholds">'): text.index("<details class='all-thresholds'>")]
    assert "Glass non-tumour liver limit" in shown and "Resin non-tumour liver limit" not in shown
    folded = text[text.index("<details class='all-thresholds'>"):]
    assert "Resin non-tumour liver limit" in folded[: folded.index("</details>")]
    # a fraction threshold reads as a percent
    assert "<td class='num'>10</td><td>%</td>" in shown  # lsf_glass_caution_fraction 0.1


def test_without_voxels_or_dosimetry():
    p = build_plan(with_voxels=False)
    d = _parse(report.render_report(p))
    assert "slices" not in d.sections and "dvh" not in d.sections
    assert "doses" in d.sections and d.images == []
    q = build_plan(with_voxels=False, with_dosimetry=False)
    d = _parse(report.render_report(q))
    assert "doses" not in d.sections
    assert "No radioembolization" in d.all_text
    assert "no activity and no radiation dose" in d.all_text
    one = _page_one_text(report.render_report(q))
    assert "Procedure Activity (GBq): 3.42 · Segments: 5, 6, 7, 8 No deviation from the standard protocol." in one
    assert len(d.flag_rows) == 3


def test_no_flags_badge():
    p = build_plan(with_voxels=False).model_copy(update={"flags": []})
    d = _parse(report.render_report(p))
    assert "No rule raised a flag." in d.all_text
    assert "no flags" in d.all_text


# --------------------------------------------------------------------------------------------- board
def _board():
    import datetime as dt

    from embplan.board.model import (
        BoardOption,
        BoardReview,
        Criterion,
        CriterionStatus,
        OptionStatus,
        Recommendation,
        RecommendationStep,
        StagedStep,
        TerritoryCourse,
    )

    return BoardReview(
        case_id="demo-phantom",
        reference_date=dt.date(2026, 12, 20),
        options=[
            BoardOption(key="resection", title="Resection", status=OptionStatus.NOT_ELIGIBLE,
                        reason="R0 resection not feasible",
                        criteria=[Criterion(key="r0", label="R0 resection feasible", status=CriterionStatus.UNMET,
                                            value="no", threshold="feasible", source="ENETS 2023")]),
            BoardOption(key="intra_arterial_right_lobe", title="Intra-arterial therapy, right lobe",
                        status=OptionStatus.RECOMMENDED, reason="progression after TACE", procedure="TARE",
                        territory="right lobe"),
        ],
        recommendation=Recommendation(
            summary="Radioembolization of the right lobe now; the left lobe after 6-8 weeks.",
            steps=[RecommendationStep(order=1, option_key="intra_arterial_right_lobe", action="TARE right lobe",
                                      reason="progression after TAE and TACE"),
                   RecommendationStep(order=2, option_key="intra_arterial_left_lobe", action="TAE left lobe",
                                      reason="untreated disease, ladder step one")],
            would_change=["future liver remnant volumetry"],
        ),
        course=[TerritoryCourse(territory="right lobe", disease_present=True, history=["TAE 2024-02", "TACE 2025-01"],
                                last_response="progression", next_step="TARE"),
                TerritoryCourse(territory="left lobe", disease_present=True, history=[], next_step=None)],
        staged_plan=[StagedStep(order=1, territory="right lobe", procedure="TARE", earliest_date=dt.date(2026, 12, 20)),
                     StagedStep(order=2, territory="left lobe", procedure="TAE", interval_days=42)],
    )


def test_board_on_page_one_and_in_detail():
    p = build_plan().model_copy(update={"board": _board()})
    html_text = report.render_report(p)
    one = _page_one_text(html_text)
    assert "Radioembolization of the right lobe now; the left lobe after 6-8 weeks." in one
    assert one.index("TARE right lobe") < one.index("TAE left lobe")
    assert "Disease left untreated: left lobe." in one
    assert "Staged plan TARE right lobe, from 2026-12-20 TAE left lobe (42 days after the previous step)" in one
    assert "Would change with: future liver remnant volumetry" in one
    assert "No tumour-board review" not in one
    assert "Other options: 1 not eligible (each with its criteria under Tumour board )." in one  # recommended: steps
    d = _parse(html_text)
    assert "board" in d.sections
    assert "Resection: not eligible" in d.all_text and "R0 resection feasible unmet no feasible ENETS 2023" in d.all_text
    assert "What would change the recommendation future liver remnant volumetry" in d.all_text
    # many gaps and long reasons: page one counts and clips them, the detail lists them whole
    b = _board()
    long_reason = "untreated disease, ladder step one, " + "with a long explanation " * 12
    steps = [b.recommendation.steps[0], b.recommendation.steps[1].model_copy(update={"reason": long_reason})]
    b = b.model_copy(update={"recommendation": b.recommendation.model_copy(update={"steps": steps}),
                             "data_gaps": [f"gap {i}" for i in range(6)]})
    text = report.render_report(p.model_copy(update={"board": b}))
    one = _page_one_text(text)
    assert "7 missing data or findings would change the recommendation" in one and "gap 3" not in one
    assert " …" in one and long_reason.strip() not in one
    full = _parse(text).all_text
    assert "gap 3" in full and long_reason.strip() in " ".join(full.split())


# --------------------------------------------------------------------------------------------- viewer
def _decode_viewer(html_text: str) -> dict:
    import json
    import zlib

    start = html_text.index('<script type="application/json" id="viewer-data">') + len(
        '<script type="application/json" id="viewer-data">')
    data = json.loads(html_text[start: html_text.index("</script>", start)])
    shape = tuple(data["shape"])
    n = int(np.prod(shape))
    out = {"meta": data, "masks": {}}
    raw = zlib.decompress(base64.b64decode(data["doses"][0]["data"]))
    lo, hi = np.frombuffer(raw[:n], np.uint8), np.frombuffer(raw[n:], np.uint8)
    out["dose"] = ((hi.astype(np.uint32) << 8) | lo).reshape(shape) * data["doses"][0]["step_gy"]
    bg = np.frombuffer(zlib.decompress(base64.b64decode(data["background"]["data"])), np.uint8).reshape(shape)
    b = data["background"]
    out["background"] = b["lo"] + bg / 255.0 * (b["hi"] - b["lo"])
    for s in data["structures"]:
        bits = np.unpackbits(np.frombuffer(zlib.decompress(base64.b64decode(s["data"])), np.uint8))[:n]
        out["masks"][s["name"]] = bits.reshape(shape).astype(bool)
    return out


def test_viewer_data_equals_the_plan(plan, html_text):
    """Decoded independently (zlib, base64, numpy), the embedded arrays are the plan's, in LPS order."""
    v = _decode_viewer(html_text)
    meta = v["meta"]
    assert meta["downsample"] == 1 and tuple(meta["shape"]) == plan.voxel.grid.shape  # identity direction
    dose = plan.voxel.arrays["dose_vsv_density_gy"]
    assert np.max(np.abs(v["dose"] - dose)) <= meta["dose"]["step_gy"] / 2 + 1e-9
    assert meta["dose"]["method"] == "vsv_density" and "data" not in meta["dose"]  # embedded once
    assert [d["method"] for d in meta["doses"]] == ["vsv_density"]  # the map in force only
    for name, m in plan.voxel.masks().items():
        assert np.array_equal(v["masks"][name], m), name
    ct = plan.voxel.arrays["ct_hu"]
    assert np.max(np.abs(v["background"] - ct)) <= (2000.0 / 255) / 2 + 1e-6
    np.testing.assert_allclose(np.asarray(meta["affine"]), plan.voxel.grid.affine[:3][:, [2, 1, 0, 3]])
    # isodose levels are the limits and targets in force, with labels
    assert [(lv["gy"], lv["label"]) for lv in meta["isodoses"]] == report.dose_marks(plan)


def test_viewer_orientation_on_a_flipped_grid():
    """A feet-first-like grid (z and x index axes reversed) is shown in LPS order: a marker voxel keeps its
    patient-space position through the payload's affine."""
    from embplan.grid import Grid
    from embplan.plan_model import VoxelData

    p = build_plan(shape=(10, 8, 6))
    v = p.voxel
    grid = Grid(shape=(10, 8, 6), spacing_mm=(4.0, 3.5, 3.0), origin_mm=(50.0, -20.0, 100.0),
                direction=(-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0))
    marker = np.zeros(grid.shape, bool)
    marker[1, 2, 4] = True  # one corner-ish voxel: asymmetric on every axis
    arrays = dict(v.arrays)
    arrays["mask_marker"] = marker
    units = dict(v.units) | {"mask_marker": "1"}
    p = p.model_copy(update={"voxel": VoxelData(grid, arrays, units, dict(v.attributes))})
    decoded = _decode_viewer(report.render_report(p))
    m = decoded["masks"]["marker"]
    (k, j, i), = np.argwhere(m)
    aff = np.asarray(decoded["meta"]["affine"])
    where = aff[:, :3] @ np.array([i, j, k], float) + aff[:, 3]
    np.testing.assert_allclose(where, grid.index_to_patient_mm(np.array([1, 2, 4])), atol=1e-9)
    assert np.all(np.diag(aff[:, :3]) > 0)  # every canonical index axis points to +L, +P, +S


def test_viewer_size_budget_128_cubed():
    """A 128^3 SPECT-grid plan with a noisy (incompressible) dose stays under 5 MB in all; the viewer says when it
    had to show coarser voxels."""
    from embplan.plan_model import VoxelData

    p = build_plan(shape=(128, 128, 128))
    v = p.voxel
    rng = np.random.default_rng(15)
    arrays = dict(v.arrays)
    arrays["dose_vsv_density_gy"] = arrays["dose_vsv_density_gy"] + rng.normal(0, 5.0, v.grid.shape).clip(0)
    arrays["ct_hu"] = (arrays["ct_hu"] + rng.normal(0, 20.0, v.grid.shape)).astype(np.float32)
    p = p.model_copy(update={"voxel": VoxelData(v.grid, arrays, dict(v.units), dict(v.attributes))})
    text = report.render_report(p)
    size = len(text.encode("utf-8"))
    assert size <= 5_000_000, size
    meta = _decode_viewer(text)["meta"]
    assert meta["payload_bytes"] <= report.VIEWER_BUDGET_BYTES
    if meta["downsample"] > 1:
        assert f"Shown at {meta['downsample']}x coarser voxels" in text


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
    assert not any(ax.texts for ax in fig.axes)  # isodoses named in the legend, never as inline labels


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
    lines = [ln for ln in fig.axes[0].get_lines() if ln.get_label().startswith(("All tumours ", "Non-tumour liver "))]
    assert len(lines) == 2
    rec = plan.dosimetry.dvh["tumors"]
    tumour_line = next(ln for ln in lines if ln.get_label().startswith("All tumours"))
    assert list(tumour_line.get_xdata()) == rec.dose_gy
    assert list(tumour_line.get_ydata()) == [100 * f for f in rec.volume_fraction]
    assert report.dvh_figure(build_plan(with_voxels=False)) is None


def test_dvh_draws_every_limit_and_target_labelled_without_overlap(plan):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = report.dvh_figure(plan)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    ax = fig.axes[0]
    marks = report.dose_marks(plan)
    assert [v for v, _ in marks] == [25.0, 75.0, 120.0, 205.0]  # lung (override), liver, prescription, tumour
    texts = [t for t in ax.texts if t.get_text().strip()]
    for value, label in marks:
        assert any(t.get_text().strip() == f"{label} {value:.0f} Gy" for t in texts), label
    boxes = [t.get_window_extent(renderer=canvas.get_renderer()) for t in texts]
    for a in range(len(boxes)):
        for b in range(a + 1, len(boxes)):
            assert not boxes[a].overlaps(boxes[b]), (texts[a].get_text(), texts[b].get_text())
    # two limits 1 Gy apart still get readable, separate labels
    lim = plan.dosimetry.limits.model_copy(update={"normal_liver_limit_gy": 76.0, "guideline_normal_liver_limit_gy": 76.0,
                                                    "lung_session_limit_gy": 75.0})
    p2 = plan.model_copy(update={"dosimetry": plan.dosimetry.model_copy(update={"limits": lim})})
    fig2 = report.dvh_figure(p2)
    canvas2 = FigureCanvasAgg(fig2)
    canvas2.draw()
    t2 = [t for t in fig2.axes[0].texts if t.get_text().strip()]
    b2 = [t.get_window_extent(renderer=canvas2.get_renderer()) for t in t2]
    assert len(t2) == 4
    assert not any(b2[a].overlaps(b2[b]) for a in range(len(b2)) for b in range(a + 1, len(b2)))


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


def test_viewer_reusable_for_planned_and_delivered(plan):
    """A report other than the plan's (e.g. planned vs delivered) gives the viewer its own arrays and labels."""
    from embplan.report.viewer import ViewerInput

    v = plan.voxel
    planned = v.arrays["dose_vsv_density_gy"]
    delivered = planned * 0.9
    vi = ViewerInput(grid=v.grid, doses=[("delivered", "delivered dose", delivered), ("planned", "planned dose", planned)],
                     background=("CT", v.arrays["ct_hu"]), masks=v.masks(), marks=[(75.0, "non-tumour liver limit")])
    body = report.viewer_html(vi)
    text = report.render_document("planned vs delivered", [f'<section id="slices">{body}</section>'],
                                  generator="test")
    decoded = _decode_viewer(text)
    assert [d["label"] for d in decoded["meta"]["doses"]] == ["delivered dose", "planned dose"]
    assert np.max(np.abs(decoded["dose"] - delivered)) <= decoded["meta"]["doses"][0]["step_gy"] / 2 + 1e-9
    assert decoded["meta"]["isodoses"][0]["label"] == "non-tumour liver limit"
    assert "research software, not a medical device" in text


def test_doses_follow_the_delivered_meaning_when_the_plan_has_it(plan):
    """Plans with issue 13's meaning (``dose_activity == "delivered"``: the rules check the compartment model at
    the delivered activity) print the compartment model's doses, even with images; older plans the voxel map's."""
    from types import SimpleNamespace

    from embplan.report.doses import chosen_doses, dose_definition

    d = plan.dosimetry
    assert chosen_doses(plan) is d.voxel  # this (older) plan: the voxel map, as its rules read it
    newer = SimpleNamespace(dosimetry=SimpleNamespace(**(dict(d) | {"dose_activity": "delivered"})))
    assert chosen_doses(newer) is d.compartment
    kd = {k.key: k for k in report.key_doses(newer)}
    assert kd["normal_liver"].value_gy == d.compartment.normal_liver_gy == 48.2
    assert kd["lung"].value_gy == d.compartment.lung_gy == 21.0
    assert dose_definition(newer).endswith(f"for the delivered activity {d.activity_gbq:.2f} GBq.")


def test_lesion_table_from_the_plans_lesion_records():
    """Issue 13's lesion records (when a plan has them) give the per-lesion table and the lesions outside the
    treated territory; the report adds no partial-volume note of its own then."""
    from types import SimpleNamespace

    from embplan.report.detail import lesion_table
    from embplan.report.page_one import untreated_lesions

    lesions = [
        SimpleNamespace(name="tumor_1", volume_ml=79.27, equivalent_diameter_mm=53.3, perfused_fraction=1.0,
                        mean_gy=342.67, local_deposition_gy=367.01, recovery_corrected_gy=None,
                        partial_volume_warning=False, note=""),
        SimpleNamespace(name="tumor_5", volume_ml=1.554, equivalent_diameter_mm=14.4, perfused_fraction=0.0,
                        mean_gy=0.0, local_deposition_gy=0.0, recovery_corrected_gy=None,
                        partial_volume_warning=True, note="outside the perfused territory"),
    ]
    text = _parse(lesion_table(lesions)).all_text
    assert "Tumour 1 79.3 53.3 100 % 342.7 367.0 –" in text
    assert "Tumour 5 1.55 14.4 0 % 0.0 0.0 – outside the perfused territory" in text  # the plan's own note
    lesions[1].note = ""
    assert "Tumour 5 1.55 14.4 0 % 0.0 0.0 – partial-volume effect: mean dose underestimated" in _parse(
        lesion_table(lesions)).all_text
    fake = SimpleNamespace(dosimetry=SimpleNamespace(lesions=lesions), voxel=None)
    assert untreated_lesions(fake) == [("tumor_5", 1.554, 0.0)]
