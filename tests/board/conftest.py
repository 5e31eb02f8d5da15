"""Case builders for the tumour-board tests: self-contained cases (no ../shared), edited by dotted paths."""

from __future__ import annotations

import copy
from typing import Any

import pytest

import embplan

BASE: dict[str, Any] = {
    "schema_version": 1,
    "patient": {
        "id": "board-base",
        "age_years": 50,
        "sex": "female",
        "weight_kg": 70.0,
        "height_cm": 168.0,
        "ecog": 1,
        "labs": {"bilirubin_mg_dl": 0.6, "albumin_g_dl": 4.2, "inr": 1.0, "platelets_10e9_per_l": 220,
                 "wbc_10e9_per_l": 6.0, "egfr_ml_min": 90},
        "disease": {
            "primary_site": "small_intestine", "grade": "G2", "ki67_percent": 5.0, "differentiation": "well",
            "functional_syndrome": "none", "carcinoid_heart_disease": False, "primary_resected": True,
            "liver_tumor_burden_percent": 20.0, "liver_distribution": "bilobar", "extrahepatic_disease": False,
            "main_portal_vein_thrombosis": False,
        },
        "liver": {"cirrhosis": False, "r0_resection_feasible": False, "future_liver_remnant_percent": None},
        "biliary": {"biliary_enteric_anastomosis": False, "sphincter_of_oddi_intact": True, "biliary_stent": False},
        "prior_treatments": [],
    },
    "procedure": {
        "kind": "TAE", "date": "2026-06-01", "territory": {"scope": "lobar", "lobe": "right"},
        "embolic": {"agent": "microspheres", "size_min_um": 50, "size_max_um": 500},
        "endpoint": {"stasis_heartbeats": 3},
    },
}

TACE_PROC = {
    "kind": "TACE", "date": "2026-06-01", "territory": {"scope": "lobar", "lobe": "right"},
    "drug": {"name": "doxorubicin", "dose_mg": 50.0}, "contrast_ml": 10.0, "lipiodol_ml": 15.0,
    "embolic": {"agent": "microspheres", "size_min_um": 50, "size_max_um": 500}, "endpoint": {"stasis_heartbeats": 3},
}

TARE_PROC = {
    "kind": "TARE", "date": "2026-06-01", "territory": {"scope": "lobar", "lobe": "right"}, "device": "resin",
    "prescription": {"method": "mird", "perfused_dose_target_gy": 100.0},
}
TARE_DOSIMETRY = {"lung_shunt_fraction": 0.05, "lung_mass_kg": 1.0, "liver_volume_ml": 1600.0,
                  "perfused_volume_ml": 1000.0, "tumor_volume_ml": 200.0, "perfused_tumor_volume_ml": 150.0,
                  "tumor_to_normal_ratio": 3.0}


def set_path(data: dict[str, Any], path: str, value: Any) -> None:
    keys = path.split(".")
    node: Any = data
    for k in keys[:-1]:
        node = node[int(k)] if isinstance(node, list) else node[k]
    last = keys[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def case_dict(edits: dict[str, Any] | None = None, *, procedure: str = "TAE", lobe: str = "right") -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    if procedure == "TACE":
        data["procedure"] = copy.deepcopy(TACE_PROC)
    elif procedure == "TARE":
        data["procedure"] = copy.deepcopy(TARE_PROC)
        data["dosimetry"] = copy.deepcopy(TARE_DOSIMETRY)
    data["procedure"]["territory"] = {"scope": "lobar", "lobe": lobe}
    for path, value in (edits or {}).items():
        set_path(data, path, copy.deepcopy(value))
    return data


def make(edits: dict[str, Any] | None = None, **kw: Any) -> Any:
    return embplan.load_case(case_dict(edits, **kw))


def rec(kind: str, date: str, lobe: str | None = None, response: str | None = None, **extra: Any) -> dict[str, Any]:
    r: dict[str, Any] = {"kind": kind, "date": date}
    if lobe == "whole":
        r["territory"] = {"scope": "whole_liver"}
    elif lobe is not None:
        r["territory"] = {"scope": "lobar", "lobe": lobe}
    if response is not None:
        r["response"] = response
    r.update(extra)
    return r


@pytest.fixture
def build():
    return make
