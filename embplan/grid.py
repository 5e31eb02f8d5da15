"""Immutable voxel geometry.

Arrays are (z, y, x). A :class:`Grid` holds the shape, the voxel spacing in mm in (z, y, x) order, and a 4x4
affine that maps a homogeneous *index* vector ``(k, j, i, 1)`` -- that is (z, y, x) index order -- to patient
coordinates in mm (DICOM LPS, ``(x, y, z, 1)`` order of the patient axes). The default affine is axis aligned with
the origin at voxel (0, 0, 0): ``x_mm = i*dx + ox`` etc.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .errors import EmbplanError

__all__ = ["Grid"]

PositiveMm = Annotated[float, Field(gt=0.0, le=1.0e4)]


class Grid(BaseModel):
    """Voxel geometry: ``shape`` (nz, ny, nx), ``spacing_mm`` (dz, dy, dx), ``origin_mm`` (x, y, z of voxel 0 in
    patient coordinates), ``direction`` (3x3 row-major cosines mapping the (x, y, z)-ordered index axes (i, j, k)
    to patient axes, as in ITK). Immutable and hashable."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    shape: tuple[int, int, int]
    spacing_mm: tuple[PositiveMm, PositiveMm, PositiveMm]
    origin_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, float, float, float, float, float, float, float, float] = (
        1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0,
    )

    def __init__(self, **data):
        try:
            super().__init__(**data)
        except Exception as exc:  # pydantic.ValidationError -> EmbplanError, field named
            if isinstance(exc, EmbplanError):
                raise
            raise EmbplanError(f"Grid: {_first_error(exc)}") from exc

    @field_validator("shape")
    @classmethod
    def _shape_positive(cls, v: tuple[int, int, int]) -> tuple[int, int, int]:
        if any(n < 1 for n in v):
            raise ValueError(f"every dimension must be >= 1, got {v}")
        return v

    @model_validator(mode="after")
    def _direction_orthonormal(self) -> Grid:
        d = np.asarray(self.direction, dtype=float).reshape(3, 3)
        if not np.allclose(d @ d.T, np.eye(3), atol=1e-4):
            raise ValueError("direction must be an orthonormal 3x3 matrix (row-major)")
        return self

    # ------------------------------------------------------------------ derived geometry
    @property
    def voxel_volume_ml(self) -> float:
        """Voxel volume in mL (cm^3)."""
        dz, dy, dx = self.spacing_mm
        return dz * dy * dx / 1000.0

    @property
    def voxel_volume_mm3(self) -> float:
        dz, dy, dx = self.spacing_mm
        return dz * dy * dx

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def affine(self) -> np.ndarray:
        """4x4 matrix mapping (k, j, i, 1) -- z, y, x index order -- to patient (x, y, z, 1) in mm."""
        d = np.asarray(self.direction, dtype=float).reshape(3, 3)
        dz, dy, dx = self.spacing_mm
        # columns of d are the patient-space directions of the index axes i (x), j (y), k (z)
        a = np.zeros((4, 4))
        a[:3, 0] = d[:, 2] * dz
        a[:3, 1] = d[:, 1] * dy
        a[:3, 2] = d[:, 0] * dx
        a[:3, 3] = self.origin_mm
        a[3, 3] = 1.0
        return a

    def index_to_patient_mm(self, index_zyx: np.ndarray) -> np.ndarray:
        """Map (..., 3) arrays of (z, y, x) indices (fractional allowed) to patient (x, y, z) mm."""
        idx = np.asarray(index_zyx, dtype=float)
        a = self.affine
        return idx @ a[:3, :3].T + a[:3, 3]

    def patient_mm_to_index(self, points_xyz_mm: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`index_to_patient_mm`: (..., 3) patient (x, y, z) mm -> (z, y, x) fractional index."""
        p = np.asarray(points_xyz_mm, dtype=float)
        a = self.affine
        return (p - a[:3, 3]) @ np.linalg.inv(a[:3, :3]).T

    def check_array(self, array: np.ndarray, name: str = "array") -> None:
        """Raise EmbplanError unless ``array`` has this grid's shape."""
        if tuple(np.shape(array)) != self.shape:
            raise EmbplanError(f"{name}: shape {tuple(np.shape(array))} does not match the grid shape {self.shape}")

    @classmethod
    def cubic(cls, shape: tuple[int, int, int], voxel_mm: float, **kw: Any) -> Grid:
        return cls(shape=shape, spacing_mm=(voxel_mm, voxel_mm, voxel_mm), **kw)


def _first_error(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        e = errors()[0]
        loc = ".".join(str(p) for p in e.get("loc", ())) or "(root)"
        return f"{loc}: {e.get('msg')}, got {e.get('input')!r}"
    return str(exc)
