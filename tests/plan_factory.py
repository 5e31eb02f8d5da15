"""A Plan built by hand (no planner): the fixture of the io, report and CLI tests.

It uses the real case model, thresholds, flags and limits, and small synthetic voxel arrays of every kind a plan
holds (CT, density, activity, cumulated activity, two dose maps, masks) on an off-origin, anisotropic grid.
Values are arbitrary but deterministic; nothing here is physics under test.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import numpy as np


def demo_case_dict() -> dict[str, Any]:
    return json.loads(resources.files("embplan").joinpath("data/demo_tare_phantom.json").read_text("utf-8"))


def build_plan(*, with_voxels: bool = True, with_dosimetry: bool = True, patient_id: str | None = None,
               shape: tuple[int, int, int] = (12, 10, 8), threshold_overrides: dict[str, float] | None = None):
    from embplan.case import load_case
    from embplan.grid import Grid
    from embplan.plan_model import (
        CompartmentDoses,
        DosimetryResult,
        DVHRecord,
        Plan,
        PrescriptionRecord,
        ProcedureSummary,
        Provenance,
        SequenceSummary,
        StructureDose,
        VoxelData,
    )
    from embplan.risk import Flag, Severity, dose_limits

    data = demo_case_dict()
    if patient_id is not None:
        data["patient"]["id"] = patient_id
    overrides = {"lung_dose_session_limit_gy": 25.0} if threshold_overrides is None else threshold_overrides
    data["thresholds"] = dict(overrides)
    case = load_case(data)
    thresholds = case.effective_thresholds()

    flags = [
        Flag(code="SEQUENCE_DEVIATION", severity=Severity.INFO, message="TARE third, after TAE and TACE.",
             evidence="RETNET working sequence", context={"prior": ["TAE", "TACE"]}),
        Flag(code="LUNG_DOSE_LIMIT", severity=Severity.WARNING, message="Lung dose 21.0 Gy is near the 25 Gy limit.",
             evidence="EANM 2022 (30 Gy per session)", context={"lung_dose_gy": 21.0, "limit_gy": 25.0}),
        Flag(code="TUMOR_DOSE_LOW", severity=Severity.CAUTION, message="Tumour D70 below target <script>x</script>",
             evidence="EANM 2022 Table 2", context={"d70_gy": 150.5}),
    ]
    dosimetry = None
    voxel = None
    if with_voxels:
        grid = Grid(shape=shape, spacing_mm=(4.0, 3.5, 3.0), origin_mm=(-12.5, 30.0, -7.25))
        rng = np.random.default_rng(20260105)
        zz, yy, xx = np.indices(shape)
        c = np.array(shape) / 2.0
        r2 = ((zz - c[0]) / shape[0]) ** 2 + ((yy - c[1]) / shape[1]) ** 2 + ((xx - c[2]) / shape[2]) ** 2
        liver = r2 < 0.16
        tumors = r2 < 0.02
        lungs = zz >= shape[0] - 2
        dose = np.where(tumors, 240.0, np.where(liver, 60.0, 2.0)) + rng.random(shape)
        arrays = {
            "ct_hu": np.where(liver, 55.0, -100.0).astype(np.float32),
            "density_g_cm3": np.where(liver, 1.06, 0.95).astype(np.float32),
            "activity_mbq": rng.random(shape) * 3.0,
            "tia_mbq_s": rng.random(shape) * 1.0e6,
            "dose_vsv_density_gy": dose,
            "dose_ldm_gy": dose * 1.01,
            "mask_liver": liver,
            "mask_tumors": tumors,
            "mask_lungs": lungs,
        }
        units = {"ct_hu": "HU", "density_g_cm3": "g/cm3", "activity_mbq": "MBq", "tia_mbq_s": "MBq s",
                 "dose_vsv_density_gy": "Gy", "dose_ldm_gy": "Gy", "mask_liver": "1", "mask_tumors": "1",
                 "mask_lungs": "1"}
        voxel = VoxelData(grid=grid, arrays=arrays, units=units,
                          attributes={"phantom": {"seed": 7, "voxel_mm": [4.0, 3.5, 3.0]}, "k": 49.67})
    if with_dosimetry:
        limits = dose_limits(case)
        comp = CompartmentDoses(source="mird", tumor_gy=None, normal_liver_gy=48.2, perfused_gy=120.0,
                                perfused_normal_liver_gy=95.3, lung_gy=21.0)
        vox = CompartmentDoses(source="voxel", tumor_gy=241.7, normal_liver_gy=50.1, perfused_gy=118.9,
                               perfused_normal_liver_gy=93.0, lung_gy=20.4)
        dvh_dose = [0.0, 50.0, 100.0, 150.0, 200.0, 250.0, 300.0]
        dvh = {
            "tumors": DVHRecord(structure="tumors", volume_ml=120.5, dose_gy=dvh_dose,
                                volume_fraction=[1.0, 1.0, 0.98, 0.9, 0.7, 0.3, 0.0], mean_gy=241.7,
                                min_gy=101.2, max_gy=290.1, d_gy={"D70": 200.0, "D50": 225.1},
                                v_percent={"V100Gy": 98.0, "V205Gy": 65.2}),
            "normal_liver": DVHRecord(structure="normal_liver", volume_ml=1500.0, dose_gy=dvh_dose,
                                      volume_fraction=[1.0, 0.45, 0.1, 0.02, 0.0, 0.0, 0.0], mean_gy=50.1,
                                      min_gy=0.5, max_gy=160.0, d_gy={"D70": 20.0}, v_percent={"V70Gy": 30.0}),
        }
        dosimetry = DosimetryResult(
            activity_gbq=3.42, tumor_dose_gy=241.7, normal_liver_dose_gy=50.1, lung_dose_gy=20.4,
            perfused_dose_gy=118.9, source="voxel" if with_voxels else "compartment",
            method="vsv_density" if with_voxels else "mird",
            prescription=PrescriptionRecord(
                method="mird", activity_gbq=3.42, activity_for_target_gbq=3.42, max_safe_activity_gbq=4.1,
                binding_constraint="perfused dose target", k_gy_kg_per_gbq=49.67,
                inputs={"perfused_dose_target_gy": 120.0, "perfused_mass_kg": 1.35, "lung_shunt_fraction": 0.08},
                explanation="MIRD single compartment: A = D M / (K (1 - LSF)).",
            ),
            limits=limits, compartment=comp, voxel=vox if with_voxels else None,
            structures=[StructureDose(structure="tumors", volume_ml=120.5, mass_kg=0.1277, mean_gy=241.7,
                                      bed_gy=310.2)],
            dvh=dvh if with_voxels else {}, lung_shunt_fraction=0.08, tumor_to_normal_ratio=4.0,
            volumes_ml={"liver": 1650.0, "perfused": 1100.0}, notes=["synthetic test plan"],
        )
    proc = ProcedureSummary(kind="TARE", territory="lobar (right)", device="glass",
                            parameters={"activity_gbq": 3.42, "segments": [5, 6, 7, 8]},
                            standard_protocol="TARE lobar, glass microspheres", deviations=[])
    seq = SequenceSummary(follows_ladder=True, skipped=[], justifications=[], suggested_next="response imaging",
                          explanation="TAE, then TACE, then TARE.")
    prov = Provenance(embplan_version="0.1.0", python_version="3.11", dependency_versions={"numpy": "2"},
                      created_utc="2026-01-05T10:00:00Z",
                      kernel={"source": "Graves 2019", "voxel_mm": [4.0, 3.5, 3.0]} if with_voxels else None,
                      rules_run=["rule_a", "rule_b"])
    return Plan(case=case, case_source=data, procedure=proc, sequence=seq, flags=flags, thresholds=thresholds,
                dosimetry=dosimetry, provenance=prov, voxel=voxel)
