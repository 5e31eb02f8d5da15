"""Fixtures of the verification tests: a small phantom plan (8 mm voxels, local deposition) and PET/CT writers."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

import embplan
from embplan.imaging.phantom_dicom import _write_ct, _Writer
from embplan.imaging.registration import RigidTransform, write_transform
from embplan.synthetic.post_treatment import _write_pet
from tests.plan_factory import demo_case_dict

ADMIN = datetime(2026, 12, 20, 10, 0, 0)


def small_case_dict() -> dict:
    d = demo_case_dict()
    d["dosimetry"]["images"]["phantom"]["voxel_mm"] = 8.0  # 38 x 38 x 50 voxels
    d["dosimetry"]["dose_method"] = "ldm"
    return d


@pytest.fixture(scope="session")
def small_plan_file(tmp_path_factory) -> tuple[Path, object]:
    plan = embplan.plan(embplan.load_case(small_case_dict()))
    path = tmp_path_factory.mktemp("plan") / "plan.h5"
    embplan.save_plan(plan, path)
    return path, embplan.load_plan(path)


def write_post_set(folder: Path, plan, bq_ml: np.ndarray, *, acquisition: datetime, admin: datetime = ADMIN,
                   total_dose_bq: float = 3.0e9, frame_duration_s: float = 1200.0,
                   delivery: dict | None = None, extra: dict | None = None,
                   frame_of_reference_uid: str | None = None) -> Path:
    """A post CT (the plan's CT numbers) and a PET (``bq_ml`` on the plan's grid) in one new frame of reference
    that coincides with the planning frame, an identity transform file, and post.json."""
    grid = plan.voxel.grid
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ct").mkdir()
    (folder / "pet").mkdir()
    w = _Writer(f"test-{folder.name}", plan.case.patient.id, "Test^Post", acquisition, "HFS")
    if frame_of_reference_uid is not None:  # the planning CT's frame: no transform needed
        w.for_uid = frame_of_reference_uid
    _write_ct(w, folder / "ct", grid, np.asarray(plan.voxel.arrays["ct_hu"], dtype=np.float64))
    _write_pet(w, folder / "pet", grid, bq_ml, acquisition=acquisition, administration=admin,
               total_dose_bq=total_dose_bq, frame_duration_s=frame_duration_s)
    write_transform(RigidTransform(), folder / "identity.tfm")
    post = {
        "schema_version": 1,
        "administration_datetime": admin.isoformat(),
        "pet": "pet",
        "ct": "ct",
        "delivery": delivery or {"vial_activity_gbq": 3.0, "vial_reference_datetime": admin.isoformat(),
                                 "residual_fraction": 0.0},
    }
    if frame_of_reference_uid is None:
        post["transform"] = "identity.tfm"
    post.update(extra or {})
    (folder / "post.json").write_text(json.dumps(post))
    return folder / "post.json"
