"""The slice viewer inside the report: the plan's CT (or density), dose and masks, embedded in the HTML.

The arrays are turned to a canonical orientation (array axes (z, y, x) with every index increasing towards patient
left, posterior and superior: DICOM LPS), quantised (CT to uint8 over :data:`CT_RANGE_HU`, density over
:data:`DENSITY_RANGE_G_CM3`, dose to uint16 with a stated step, each mask to one bit per voxel), byte-shuffled,
deflated (zlib) and base64-encoded into one ``<script type="application/json">`` block. The viewer's JavaScript
(package data ``static/viewer.js``) inflates them with the browser's ``DecompressionStream`` (no library, no network)
and draws axial, coronal and sagittal slices on canvases, in the radiological convention (patient right on the
screen's left; anterior up on axial, superior up on coronal and sagittal).

Size budget: the embedded payload stays under :data:`VIEWER_BUDGET_BYTES`; when the full-resolution arrays would
exceed it the grid is downsampled by an integer factor (block means; a mask keeps a voxel when at least half the
block is inside) and the viewer says so. A 128^3 SPECT-grid plan fits in 5 MB of HTML in all (tested).
"""

from __future__ import annotations

import base64
import html
import json
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..grid import Grid
from .doses import dose_marks
from .fmt import method_label, structure_label

if TYPE_CHECKING:  # pragma: no cover
    from ..plan_model import Plan

__all__ = ["VIEWER_BUDGET_BYTES", "CT_RANGE_HU", "DENSITY_RANGE_G_CM3", "ViewerInput", "plan_viewer_input",
           "viewer_payload", "viewer_html", "canonical_orientation"]

#: Largest embedded viewer payload (base64 text, bytes) before the grid is downsampled.
VIEWER_BUDGET_BYTES = 4_000_000
#: HU range of the embedded CT (uint8, about 4 HU per step): lung, soft tissue and bone stay distinguishable.
CT_RANGE_HU = (-1000.0, 1000.0)
#: Range of the embedded density map when the plan has no CT (uint8).
DENSITY_RANGE_G_CM3 = (0.0, 2.0)
#: Structures shown when the viewer opens (the others are listed, unticked).
DEFAULT_VISIBLE = ("liver", "perfused", "tumors", "tumor", "tumour", "lungs", "lung")
_COLOURS = ("#00e5ff", "#76ff03", "#ff4081", "#ffea00", "#e040fb", "#ff9100", "#18ffff", "#b388ff", "#ffd180",
            "#69f0ae", "#ff8a80", "#80d8ff", "#f4ff81", "#ea80fc", "#a7ffeb", "#ffab40")
_ISO_COLOURS = ("#ff6d00", "#ffffff", "#b388ff", "#ff1744", "#c6ff00", "#a1887f")


@dataclass(frozen=True)
class Canonical:
    """How the plan's arrays become canonical: ``axes`` for np.transpose, then flips along ``flip`` (canonical
    axes); ``affine`` (3x4) maps a canonical (i, j, k) index (x fastest) to patient LPS mm."""

    axes: tuple[int, int, int]
    flip: tuple[bool, bool, bool]
    spacing_mm: tuple[float, float, float]  # canonical (dz, dy, dx)
    affine: np.ndarray
    oblique: bool

    def apply(self, array: np.ndarray) -> np.ndarray:
        out = np.transpose(array, self.axes)
        for ax, f in enumerate(self.flip):
            if f:
                out = np.flip(out, axis=ax)
        return np.ascontiguousarray(out)

    def index(self, zyx: tuple[int, int, int], shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """A (z, y, x) index of the plan's array in canonical (z, y, x) order."""
        moved = [zyx[a] for a in self.axes]
        cshape = [shape[a] for a in self.axes]
        return tuple(cshape[i] - 1 - moved[i] if self.flip[i] else moved[i] for i in range(3))  # type: ignore[return-value]


def canonical_orientation(grid: Grid) -> Canonical:
    """The transpose and flips that bring ``grid``'s arrays to LPS-increasing (z, y, x) order.

    Each array axis goes to the patient axis its direction cosine points at most; a grid whose direction is not a
    signed permutation (oblique) is shown on its nearest axes (``oblique`` True) and the cursor's patient
    position still uses the exact affine."""
    d = np.asarray(grid.direction, dtype=float).reshape(3, 3)  # columns: patient directions of i, j, k
    a = grid.affine  # (k, j, i, 1) -> patient
    patient_of_array_axis = []
    signs = []
    for array_axis in range(3):  # 0 = k, 1 = j, 2 = i
        col = d[:, 2 - array_axis]
        p = int(np.argmax(np.abs(col)))
        patient_of_array_axis.append(p)
        signs.append(col[p] >= 0)
    if len(set(patient_of_array_axis)) != 3:  # degenerate nearest-axis choice: keep the array as it is
        patient_of_array_axis, signs = [2, 1, 0], [True, True, True]
    # canonical axis c (0 = z, 1 = y, 2 = x) holds patient axis 2 - c
    axes = tuple(patient_of_array_axis.index(2 - c) for c in range(3))
    flip = tuple(not signs[axes[c]] for c in range(3))
    spacing = tuple(float(grid.spacing_mm[axes[c]]) for c in range(3))
    # affine of canonical (k', j', i') via three unit steps of the original index
    shape = grid.shape
    cshape = [shape[a_] for a_ in axes]

    def original(cidx: np.ndarray) -> np.ndarray:
        o = np.zeros(3)
        for c in range(3):
            v = cidx[c]
            o[axes[c]] = (cshape[c] - 1 - v) if flip[c] else v
        return o

    base = original(np.zeros(3))
    origin = a[:3, :3] @ base + a[:3, 3]
    cols = []
    for c in (2, 1, 0):  # i (x), j (y), k (z) of the canonical array
        e = np.zeros(3)
        e[c] = 1.0
        cols.append(a[:3, :3] @ (original(e) - base))
    affine = np.column_stack([*cols, origin])
    oblique = bool(np.max(np.abs(d - np.round(d))) > 1e-3)
    return Canonical(axes, flip, spacing, affine, oblique)  # type: ignore[arg-type]


def _block(array: np.ndarray, f: int, how: str) -> np.ndarray:
    if f == 1:
        return array
    nz, ny, nx = (n // f * f if n >= f else n for n in array.shape)
    a = array[:nz, :ny, :nx]
    fz, fy, fx = (f if n >= f else 1 for n in a.shape)
    a = a.reshape(a.shape[0] // fz, fz, a.shape[1] // fy, fy, a.shape[2] // fx, fx).astype(np.float64)
    mean = a.mean(axis=(1, 3, 5))
    return mean >= 0.5 if how == "mask" else mean


def _pack(raw: bytes) -> str:
    return base64.b64encode(zlib.compress(raw, 6)).decode("ascii")


def _shuffle16(a: np.ndarray) -> bytes:
    """uint16 little-endian split into byte planes (all low bytes, then all high bytes): deflates far better."""
    b = np.ascontiguousarray(a.astype("<u2")).view(np.uint8).reshape(-1, 2)
    return b[:, 0].tobytes() + b[:, 1].tobytes()


@dataclass(frozen=True)
class ViewerInput:
    """What the viewer shows, independent of a Plan (so that other reports, e.g. planned vs delivered, reuse it).

    ``doses``: (name, label, Gy array) in order, the first shown as the wash; the read-out lists all of them.
    ``background``: ("CT", HU array) or ("density", g/cm3 array) or None. ``masks``: name -> bool array.
    ``marks``: (Gy, label) isodose levels. ``centre_zyx``: the voxel the views open on (plan index order).
    """

    grid: Grid
    doses: list[tuple[str, str, np.ndarray]]
    background: tuple[str, np.ndarray] | None
    masks: dict[str, np.ndarray]
    marks: list[tuple[float, str]]
    centre_zyx: tuple[int, int, int] | None = None


def plan_viewer_input(plan: Plan) -> ViewerInput | None:
    """The viewer input of a plan: its dose map in force, CT (else density), masks, and every limit and target in
    force as isodose levels."""
    from .figures import DEFAULT_ISODOSE_LEVELS_GY, _centre_index, _pick_dose

    voxel = plan.voxel
    if voxel is None:
        return None
    picked = _pick_dose(plan, None)
    doses: list[tuple[str, str, np.ndarray]] = []
    if picked is not None:
        method, main = picked
        doses.append((method, f"Dose ({method_label(method)})", main))  # the map in force only: the others are in the tables
    background: tuple[str, np.ndarray] | None = None
    if "ct_hu" in voxel.arrays:
        background = ("CT", np.asarray(voxel.arrays["ct_hu"]))
    elif "density_g_cm3" in voxel.arrays:
        background = ("density", np.asarray(voxel.arrays["density_g_cm3"]))
    masks = voxel.masks()
    marks = dose_marks(plan) or [(v, "reference level") for v in DEFAULT_ISODOSE_LEVELS_GY]
    centre = _centre_index(np.asarray(doses[0][2], dtype=float), masks) if doses else None
    return ViewerInput(voxel.grid, doses, background, masks, marks, centre)


def _encode(vi: ViewerInput, f: int, can: Canonical) -> dict[str, Any]:
    out: dict[str, Any] = {}
    shape: tuple[int, ...] | None = None
    if vi.background is not None:
        kind, arr = vi.background
        lo, hi = CT_RANGE_HU if kind == "CT" else DENSITY_RANGE_G_CM3
        bg = _block(can.apply(np.asarray(arr, dtype=np.float64)), f, "mean")
        q = np.clip(np.rint((np.nan_to_num(bg, nan=lo) - lo) / (hi - lo) * 255.0), 0, 255).astype(np.uint8)
        out["background"] = {
            "kind": kind, "unit": "HU" if kind == "CT" else "g/cm³", "lo": lo, "hi": hi,
            "window": [-160.0, 240.0] if kind == "CT" else [0.0, 1.6], "data": _pack(q.tobytes()),
        }
        shape = q.shape
    doses: list[dict[str, Any]] = []
    for name, label, arr in vi.doses:
        dz = _block(can.apply(np.clip(np.nan_to_num(np.asarray(arr, dtype=np.float64)), 0.0, None)), f, "mean")
        peak = float(dz.max(initial=0.0))
        step = max(peak / 65535.0, 1e-6)
        q16 = np.clip(np.rint(dz / step), 0, 65535).astype(np.uint16)
        doses.append({"method": name, "label": label, "step_gy": step, "max_gy": peak,
                      "data": _pack(_shuffle16(q16))})
        shape = q16.shape
    out["doses"] = doses
    if doses:
        out["dose"] = {k: v for k, v in doses[0].items() if k != "data"}  # the one in force: wash, isodoses
    structures = []
    masks_raw = vi.masks
    for i, name in enumerate(sorted(masks_raw, key=_structure_order)):
        m = _block(can.apply(np.asarray(masks_raw[name], dtype=bool)), f, "mask")
        shape = m.shape
        structures.append({
            "name": name, "label": structure_label(name), "colour": _COLOURS[i % len(_COLOURS)],
            "visible": name in DEFAULT_VISIBLE or (name.startswith("tumo") and not any(
                n in masks_raw for n in ("tumors", "tumor", "tumour"))),
            "data": _pack(np.packbits(m.ravel()).tobytes()),
        })
    out["structures"] = structures
    if shape is None:
        return {}
    # spacing and affine of the (downsampled) canonical grid: a block's centre sits (f - 1) / 2 voxels in
    spacing = [s * f for s in can.spacing_mm]
    aff = can.affine.copy()
    shift = (f - 1) / 2.0
    aff[:, 3] = aff[:, 3] + aff[:, :3] @ np.array([shift, shift, shift])
    aff[:, :3] = aff[:, :3] * f
    peak = float(doses[0]["max_gy"]) if doses else 0.0
    levels = [{"gy": value, "label": label, "colour": _ISO_COLOURS[i % len(_ISO_COLOURS)],
               "visible": bool(value < peak)} for i, (value, label) in enumerate(vi.marks)]
    centre = [n // 2 for n in shape]
    if vi.centre_zyx is not None:
        centre = [min(int(v) // f, n - 1)
                  for v, n in zip(can.index(vi.centre_zyx, vi.grid.shape), shape, strict=True)]
    out.update(
        shape=list(shape), spacing_mm=spacing, affine=aff.tolist(), downsample=f, oblique=can.oblique,
        isodoses=levels, centre=centre,
    )
    return out


def _structure_order(name: str) -> tuple[int, str]:
    pri = ("liver", "perfused", "tumors", "lungs", "normal_liver", "perfused_normal_liver", "perfused_tumors")
    return (pri.index(name) if name in pri else len(pri), name)


def viewer_payload(plan: Plan | ViewerInput, *, budget_bytes: int = VIEWER_BUDGET_BYTES) -> dict[str, Any] | None:
    """The viewer's data (JSON-ready) for a plan or a :class:`ViewerInput`; None when there is nothing to show.
    Downsamples by 2, 3, ... until the payload fits ``budget_bytes``."""
    vi = plan if isinstance(plan, ViewerInput) else plan_viewer_input(plan)
    if vi is None:
        return None
    can = canonical_orientation(vi.grid)
    f = 1
    while True:
        data = _encode(vi, f, can)
        if not data:
            return None
        size = sum(len(s["data"]) for s in data["structures"]) + sum(len(d["data"]) for d in data["doses"]) + len(
            data.get("background", {}).get("data", ""))
        if size <= budget_bytes or min(data["shape"]) <= 8:
            data["payload_bytes"] = size
            return data
        f += 1


def _json_for_script(obj: Any) -> str:
    """JSON safe inside a <script> element: no '<' (so no '</script>'), no '&'."""
    text = json.dumps(obj, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def viewer_html(plan: Plan | ViewerInput, *, budget_bytes: int = VIEWER_BUDGET_BYTES) -> str:
    """The viewer section's body (controls, canvases, data, script) for a plan or a :class:`ViewerInput`; empty
    when there is nothing to show. One viewer per HTML document (it is found by its element ids)."""
    from importlib import resources

    data = viewer_payload(plan, budget_bytes=budget_bytes)
    if data is None:
        return ""
    js = resources.files("embplan.report").joinpath("static/viewer.js").read_text(encoding="utf-8")
    notes = []
    if data["downsample"] > 1:
        notes.append(f"Shown at {data['downsample']}x coarser voxels than the plan (size budget); the plan file "
                     "holds the full grid.")
    if data.get("oblique"):
        notes.append("The grid is oblique to the patient axes: slices follow its nearest axes.")
    bg = data.get("background", {}).get("kind")
    if bg == "density":
        notes.append("No CT in the plan: the background is the density map.")
    for k, dose in enumerate(data["doses"]):
        role = "shown as the wash and isodoses" if k == 0 else "read under the cursor"
        notes.append(f"{html.escape(str(dose['label']))}: max {dose['max_gy']:.1f} Gy ({role}; to 0.1 Gy).")
    note = "".join(f"<p class='note'>{n}</p>" for n in notes)
    return (
        '<div id="viewer" class="viewer">'
        '<div class="viewer-controls">'
        '<fieldset class="v-structures"><legend>Structures</legend></fieldset>'
        '<fieldset class="v-isodoses"><legend>Isodoses</legend></fieldset>'
        '<fieldset class="v-display"><legend>Display</legend>'
        '<label><input type="checkbox" class="v-wash" checked> dose wash</label>'
        '<label>opacity <input type="range" class="v-opacity" min="0" max="100" value="45"></label>'
        '<label>window <select class="v-window"></select></label>'
        '</fieldset></div>'
        '<div class="viewer-views"></div>'
        '<div class="viewer-readout" aria-live="polite">Move the cursor over an image to read the dose; '
        'scroll (or use the slider, or the arrow keys) to change the slice; click to centre the other views.</div>'
        '<div class="viewer-colourbar"></div>'
        f"{note}"
        f'<script type="application/json" id="viewer-data">{_json_for_script(data)}</script>'
        f"<script>{js}</script>"
        "</div>"
    )
