"""Rigid registration of two images in different frames of reference (SimpleITK), and the rigid transform itself.

:func:`register_rigid` finds the rigid transform (3 rotations, 3 translations) that best aligns a *moving* image
(e.g. the post-treatment CT, or a CT beside a SPECT) with a *fixed* image (the planning CT, or the SPECT): Mattes
mutual information (Mattes et al., IEEE TMI 22:120, 2003; Mattes MI is the ITK/SimpleITK standard metric for
mono- and multi-modal rigid registration), a regular-step gradient descent over an Euler 3D transform with scales
from the physical shift, on a multi-resolution pyramid (shrink 4, 2, 1 with Gaussian smoothing 2, 1, 0 voxels),
initialised by the centres of the two fields of view. Every parameter is a field of :class:`RegistrationSettings`
(defaults below; seeded sampling, so the result is reproducible for one thread count).

A transform may also be given as a file (:func:`read_transform`, an ITK/SimpleITK ``.tfm`` or ``.txt`` file:
Euler3DTransform, VersorRigid3DTransform, TranslationTransform, or an affine/similarity whose matrix is a rotation);
:func:`evaluate_transform` then measures the same quality figures and applies the same plausibility checks.

Convention (ITK's): a transform maps a point of the **fixed** frame to the corresponding point of the **moving**
frame, ``T(p) = R (p - c) + c + t`` (patient mm, DICOM LPS). Resampling the moving image onto a fixed grid samples
it at ``T(p)``. :meth:`RigidTransform.grid_in_fixed_frame` re-expresses a moving image's grid in the fixed frame
(a rigid transform of an orthonormal grid is an orthonormal grid), so that every resampler of
:mod:`embplan.imaging.resample` -- the total-conserving activity resampling included -- works across frames
unchanged.

Quality figures (:class:`RegistrationQuality`) are recorded with every result: the Mattes MI before and after
(lower is better; ITK reports the negative MI), the Pearson correlation of the two images over their overlap before
and after, the overlap fraction, the rotation angle and the translation, and, when both images come with a liver
mask, the liver mean surface distance (symmetric) and Dice before/after. The result is an
:class:`~embplan.errors.ImagingError` (naming the figure and its limit) when it is implausible: the metric did not
improve, the overlap is too small, the rotation or translation is beyond what a patient on a couch can do, the
correlation after registration is too low for images of one modality, or the liver surfaces stay too far apart.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import SimpleITK as sitk
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from scipy import ndimage

from ..errors import EmbplanError, ImagingError
from ..grid import Grid
from .resample import array_to_sitk, resample_to_grid

__all__ = [
    "RegistrationSettings",
    "RigidTransform",
    "RegistrationQuality",
    "RegistrationResult",
    "register_rigid",
    "evaluate_transform",
    "read_transform",
    "write_transform",
    "mean_surface_distance_mm",
    "dice",
]

log = logging.getLogger(__name__)


class RegistrationSettings(BaseModel):
    """The parameters of :func:`register_rigid` and of its plausibility checks (all overridable).

    Defaults: Mattes MI with 32 histogram bins (ITK examples use 32-50; Mattes 2003 used 50 [U]) on a random 20 %
    of the fixed voxels per level (seeded); three levels (shrink 4, 2, 1; smoothing 2, 1, 0 voxels); regular-step
    gradient descent (first step 2 mm or the equivalent rotation, at most ``iterations`` per level). The limits are
    engineering bounds, not clinical numbers: a patient repositioned on a couch moves by centimetres and rotates by
    a few degrees; 45 degrees or 300 mm means the optimiser went astray [U]."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    histogram_bins: int = Field(default=32, ge=8, le=256, description="Mattes MI histogram bins")
    sampling_fraction: float = Field(default=0.2, gt=0, le=1, description="fraction of fixed voxels sampled per level")
    shrink_factors: tuple[int, ...] = Field(default=(4, 2, 1), min_length=1, max_length=6)
    smoothing_sigmas_voxels: tuple[float, ...] = Field(default=(2.0, 1.0, 0.0), min_length=1, max_length=6)
    learning_rate: float = Field(default=2.0, gt=0, le=100, description="first optimiser step (mm)")
    min_step: float = Field(default=1e-3, gt=0, le=1)
    iterations: int = Field(default=200, ge=1, le=10000, description="iterations per level at most")
    seed: int = Field(default=20261206, ge=0, le=2**31 - 1, description="seed of the metric sampling")
    initialization: Literal["geometry", "moments", "identity"] = Field(
        default="geometry", description="initial translation: centres of the fields of view, centres of mass, or none"
    )
    threads: int | None = Field(default=None, ge=1, le=256, description="SimpleITK threads (None: its default)")
    max_rotation_deg: float = Field(default=45.0, gt=0, le=180, description="largest plausible rotation [U]")
    max_translation_mm: float = Field(default=300.0, gt=0, le=2000, description="largest plausible translation [U]")
    min_overlap_fraction: float = Field(
        default=0.5, ge=0, le=1, description="smallest plausible fraction of the fixed body inside the moving image [U]"
    )
    min_correlation: float = Field(
        default=0.5, ge=-1, le=1,
        description="smallest plausible Pearson correlation after registration, images of one modality (CT-CT) [U]",
    )
    max_liver_msd_mm: float = Field(
        default=10.0, gt=0, le=200, description="largest plausible liver mean surface distance after registration [U]"
    )
    min_mutual_information_multimodal: float = Field(
        default=0.3, ge=0, le=10,
        description="smallest plausible mutual information (minus the Mattes metric) after registering images of two "
                    "modalities (emission to CT); set from the phantom, where a correct SPECT-CT alignment gives about "
                    "0.9 and a wrong one 0.05-0.2 [U]",
    )
    body_threshold: float | None = Field(
        default=-500.0, description="fixed voxels above this value are the body (overlap fraction); None: all voxels"
    )

    def model_post_init(self, __context: Any) -> None:
        if len(self.shrink_factors) != len(self.smoothing_sigmas_voxels):
            raise ValueError("shrink_factors and smoothing_sigmas_voxels must have the same length")


def settings_from(overrides: dict[str, Any] | RegistrationSettings | None, where: str = "registration") -> RegistrationSettings:
    """:class:`RegistrationSettings` from a mapping of overrides; ImagingError naming the field otherwise."""
    if overrides is None:
        return RegistrationSettings()
    if isinstance(overrides, RegistrationSettings):
        return overrides
    try:
        return RegistrationSettings(**dict(overrides))
    except (ValidationError, ValueError, TypeError) as exc:
        errors = getattr(exc, "errors", None)
        if callable(errors):
            e = errors()[0]
            loc = ".".join(str(p) for p in e.get("loc", ()))
            raise ImagingError(f"{where}.{loc}: {e.get('msg')}") from None
        raise ImagingError(f"{where}: {exc}") from None


# ================================================================================================ the transform
def _rotation_matrix_xyz(angles_rad: tuple[float, float, float]) -> np.ndarray:
    """ITK Euler3D rotation (ComputeZYX off): R = Rz @ Rx @ Ry."""
    ax, ay, az = angles_rad
    cx, sx, cy, sy, cz, sz = math.cos(ax), math.sin(ax), math.cos(ay), math.sin(ay), math.cos(az), math.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ rx @ ry


@dataclass(frozen=True)
class RigidTransform:
    """``T(p) = R (p - c) + c + t``: fixed-frame point ``p`` (patient mm, x, y, z) -> moving-frame point."""

    rotation: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)  # row-major 3x3
    translation_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    center_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        r = self.matrix
        if r.shape != (3, 3) or not np.all(np.isfinite(r)) or not np.allclose(r @ r.T, np.eye(3), atol=1e-5) \
                or np.linalg.det(r) < 0:
            raise ImagingError("transform: the matrix is not a proper rotation (orthonormal, determinant +1)")
        for name in ("translation_mm", "center_mm"):
            v = np.asarray(getattr(self, name), dtype=float)
            if v.shape != (3,) or not np.all(np.isfinite(v)):
                raise ImagingError(f"transform.{name}: must be three finite numbers")

    @classmethod
    def from_euler(cls, angles_deg: tuple[float, float, float], translation_mm: tuple[float, float, float],
                   center_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> RigidTransform:
        """From ITK Euler3D angles (degrees about x, y, z; R = Rz Rx Ry), translation and centre."""
        r = _rotation_matrix_xyz(tuple(math.radians(a) for a in angles_deg))  # type: ignore[arg-type]
        return cls(tuple(float(v) for v in r.reshape(-1)), tuple(float(v) for v in translation_mm),  # type: ignore[arg-type]
                   tuple(float(v) for v in center_mm))  # type: ignore[arg-type]

    @property
    def matrix(self) -> np.ndarray:
        return np.asarray(self.rotation, dtype=float).reshape(3, 3)

    @property
    def offset_mm(self) -> np.ndarray:
        """``T(p) = R p + offset``."""
        c = np.asarray(self.center_mm, dtype=float)
        return c + np.asarray(self.translation_mm, dtype=float) - self.matrix @ c

    @property
    def rotation_deg(self) -> float:
        """The rotation angle (degrees, about the rotation axis)."""
        cos = (float(np.trace(self.matrix)) - 1.0) / 2.0
        return math.degrees(math.acos(min(1.0, max(-1.0, cos))))

    @property
    def translation_magnitude_mm(self) -> float:
        return float(np.linalg.norm(self.translation_mm))

    def apply(self, points_xyz_mm: np.ndarray) -> np.ndarray:
        """Map (..., 3) fixed-frame points to the moving frame."""
        p = np.asarray(points_xyz_mm, dtype=float)
        return p @ self.matrix.T + self.offset_mm

    def inverse(self) -> RigidTransform:
        """The moving -> fixed transform (same centre convention: about the image of the centre)."""
        rt = self.matrix.T
        c_new = self.apply(np.asarray(self.center_mm, dtype=float))
        # T^-1(q) = R^T (q - offset) = R^T (q - c') + c' + t'  with  t' = R^T (c' - offset) - c'
        t_new = rt @ (c_new - self.offset_mm) - c_new
        return RigidTransform(tuple(float(v) for v in rt.reshape(-1)), tuple(float(v) for v in t_new),  # type: ignore[arg-type]
                              tuple(float(v) for v in c_new))  # type: ignore[arg-type]

    def to_sitk(self) -> sitk.Euler3DTransform:
        t = sitk.Euler3DTransform()
        t.SetCenter(tuple(float(v) for v in self.center_mm))
        t.SetMatrix(tuple(float(v) for v in self.matrix.reshape(-1)), 1e-5)
        t.SetTranslation(tuple(float(v) for v in self.translation_mm))
        return t

    @classmethod
    def from_sitk(cls, transform: sitk.Transform) -> RigidTransform:
        """From a SimpleITK transform: Euler3D, VersorRigid3D, Translation, Similarity/Affine with a rotation
        matrix, or a composite of such transforms; ImagingError otherwise."""
        return _rigid_from_sitk(transform)

    def grid_in_fixed_frame(self, moving_grid: Grid) -> Grid:
        """The grid of a moving-frame image re-expressed in the fixed frame (same voxels, same array): voxel
        centre ``q`` of the moving image lies at ``T^-1(q)`` in the fixed frame."""
        inv = self.inverse()
        rt = inv.matrix
        d = np.asarray(moving_grid.direction, dtype=float).reshape(3, 3)
        origin = inv.apply(np.asarray(moving_grid.origin_mm, dtype=float))
        new_d = rt @ d
        # re-orthonormalise against rounding (Grid checks orthonormality to 1e-4)
        u, _, vt = np.linalg.svd(new_d)
        new_d = u @ vt
        return Grid(shape=moving_grid.shape, spacing_mm=moving_grid.spacing_mm,
                    origin_mm=tuple(float(v) for v in origin), direction=tuple(float(v) for v in new_d.reshape(-1)))

    def as_dict(self) -> dict[str, Any]:
        angles = _euler_angles_deg(self.matrix)
        return {
            "convention": "T(p) = R (p - c) + c + t maps a point of the fixed (reference) frame to the moving frame "
                          "(ITK), patient mm, DICOM LPS",
            "rotation_matrix": [list(row) for row in self.matrix.tolist()],
            "euler_angles_deg_xyz": list(angles),
            "translation_mm": list(self.translation_mm),
            "center_mm": list(self.center_mm),
            "rotation_deg": self.rotation_deg,
            "translation_magnitude_mm": self.translation_magnitude_mm,
        }

    def max_displacement_error_mm(self, other: RigidTransform, points_xyz_mm: np.ndarray) -> float:
        """Largest distance between where the two transforms send ``points`` (a target registration error)."""
        p = np.asarray(points_xyz_mm, dtype=float).reshape(-1, 3)
        if p.size == 0:
            return 0.0
        return float(np.max(np.linalg.norm(self.apply(p) - other.apply(p), axis=1)))


def _euler_angles_deg(r: np.ndarray) -> tuple[float, float, float]:
    """ITK Euler3D angles (x, y, z; R = Rz Rx Ry) of a rotation matrix."""
    ax = math.asin(max(-1.0, min(1.0, float(r[2, 1]))))
    if abs(math.cos(ax)) > 1e-9:
        ay = math.atan2(-float(r[2, 0]), float(r[2, 2]))
        az = math.atan2(-float(r[0, 1]), float(r[1, 1]))
    else:  # gimbal lock
        ay = 0.0
        az = math.atan2(float(r[1, 0]), float(r[0, 0]))
    return (math.degrees(ax), math.degrees(ay), math.degrees(az))


def _rigid_from_sitk(transform: sitk.Transform) -> RigidTransform:
    name = transform.GetName()
    if name == "CompositeTransform":
        comp = sitk.CompositeTransform(transform)
        out = RigidTransform()
        # a composite applies its last-added transform first: T(p) = T0(T1(...Tn(p)))
        for i in range(comp.GetNumberOfTransforms() - 1, -1, -1):
            step = _rigid_from_sitk(comp.GetNthTransform(i))
            out = _compose(step, out)
        return out
    if name == "IdentityTransform":
        return RigidTransform()
    if name == "TranslationTransform":
        off = sitk.TranslationTransform(transform).GetOffset()
        return RigidTransform(translation_mm=tuple(float(v) for v in off))  # type: ignore[arg-type]
    if transform.GetDimension() != 3:
        raise ImagingError(f"transform: a 3D transform is needed, got {transform.GetDimension()}D {name}")
    known = {
        "Euler3DTransform": sitk.Euler3DTransform,
        "VersorRigid3DTransform": sitk.VersorRigid3DTransform,
        "Similarity3DTransform": sitk.Similarity3DTransform,
        "AffineTransform": sitk.AffineTransform,
        "ScaleVersor3DTransform": sitk.ScaleVersor3DTransform,
    }
    if name not in known:
        raise ImagingError(f"transform: {name} is not rigid (Euler3D, VersorRigid3D, Translation or a rotation-only "
                           "affine are accepted)")
    t: Any = known[name](transform)
    matrix: np.ndarray = np.asarray(t.GetMatrix(), dtype=np.float64).reshape(3, 3)
    if not np.allclose(matrix @ matrix.T, np.eye(3), atol=1e-4) or np.linalg.det(matrix) <= 0:
        raise ImagingError(f"transform: the {name} matrix is not a rotation (scaling, shear or reflection): not rigid")
    u, _, vt = np.linalg.svd(matrix)
    matrix = u @ vt
    return RigidTransform(tuple(float(v) for v in matrix.reshape(-1)),
                          tuple(float(v) for v in t.GetTranslation()),  # type: ignore[arg-type]
                          tuple(float(v) for v in t.GetCenter()))  # type: ignore[arg-type]


def _compose(outer: RigidTransform, inner: RigidTransform) -> RigidTransform:
    """outer(inner(p)), about the origin."""
    r = outer.matrix @ inner.matrix
    off = outer.matrix @ inner.offset_mm + outer.offset_mm
    return RigidTransform(tuple(float(v) for v in r.reshape(-1)), tuple(float(v) for v in off))  # type: ignore[arg-type]


def read_transform(path: str | os.PathLike[str]) -> RigidTransform:
    """A rigid transform from an ITK transform file (``.tfm``/``.txt``/``.h5``), fixed -> moving (ITK convention)."""
    p = Path(path)
    if not p.is_file():
        raise ImagingError(f"{p}: transform file not found")
    try:
        t = sitk.ReadTransform(str(p))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ImagingError(f"{p}: not a readable ITK transform file ({first})") from None
    try:
        return _rigid_from_sitk(t)
    except ImagingError as exc:
        raise ImagingError(f"{p}: {exc}") from None


def write_transform(transform: RigidTransform, path: str | os.PathLike[str]) -> Path:
    """Write ``transform`` as an ITK Euler3DTransform file (``.tfm``/``.txt``), atomically (a temporary file beside
    it, then renamed)."""
    target = Path(path)
    if not target.parent.is_dir():
        raise ImagingError(f"{target}: cannot write the transform: folder {target.parent} does not exist")
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp{target.suffix}")
    try:
        sitk.WriteTransform(transform.to_sitk(), str(tmp))
        os.replace(tmp, target)
    except (RuntimeError, OSError) as exc:
        raise ImagingError(f"{target}: cannot write the transform ({exc})") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return target


# ================================================================================================ quality
class RegistrationQuality(BaseModel):
    """How well two images agree under a transform (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    mattes_mi_before: float = Field(description="Mattes MI metric at the initial transform (negative MI; lower is better)")
    mattes_mi_after: float
    correlation_before: float | None = Field(default=None, description="Pearson r over the overlap, identity/initial")
    correlation_after: float | None = None
    overlap_fraction: float = Field(ge=0, le=1, description="fraction of the fixed body inside the moving image")
    rotation_deg: float
    translation_mm: float
    liver_msd_before_mm: float | None = None
    liver_msd_after_mm: float | None = None
    liver_dice_before: float | None = None
    liver_dice_after: float | None = None
    same_modality: bool
    iterations: int | None = None
    stop_condition: str | None = None


@dataclass(frozen=True)
class RegistrationResult:
    """A transform (fixed -> moving) with where it came from and its quality figures."""

    transform: RigidTransform
    quality: RegistrationQuality
    source: Literal["registered", "file", "identity"]
    settings: RegistrationSettings
    notes: tuple[str, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "transform": self.transform.as_dict(),
            "quality": self.quality.model_dump(mode="json"),
            "settings": self.settings.model_dump(mode="json"),
            "method": "rigid (Euler 3D), Mattes mutual information, regular-step gradient descent, multi-resolution "
                      "(SimpleITK)" if self.source == "registered" else f"transform {self.source}",
            "notes": list(self.notes),
        }


def _image(array: np.ndarray, grid: Grid) -> sitk.Image:
    return sitk.Cast(array_to_sitk(np.asarray(array, dtype=np.float32), grid), sitk.sitkFloat32)


def _method(settings: RegistrationSettings, fixed_mask: sitk.Image | None) -> sitk.ImageRegistrationMethod:
    r = sitk.ImageRegistrationMethod()
    r.SetMetricAsMattesMutualInformation(numberOfHistogramBins=settings.histogram_bins)
    r.SetMetricSamplingStrategy(r.RANDOM)
    r.SetMetricSamplingPercentage(settings.sampling_fraction, settings.seed)
    if fixed_mask is not None:
        r.SetMetricFixedMask(fixed_mask)
    r.SetInterpolator(sitk.sitkLinear)
    if settings.threads is not None:
        r.SetNumberOfThreads(settings.threads)
    return r


def _metric_value(fixed: sitk.Image, moving: sitk.Image, transform: sitk.Transform, settings: RegistrationSettings,
                  fixed_mask: sitk.Image | None) -> float:
    r = _method(settings, fixed_mask)
    r.SetMetricSamplingStrategy(r.NONE)  # every voxel: a number comparable before and after
    r.SetInitialTransform(transform, inPlace=False)
    try:
        return float(r.MetricEvaluate(fixed, moving))
    except RuntimeError as exc:  # "All samples map outside moving image buffer"
        raise ImagingError(f"registration: the images do not overlap under the transform ({_short(exc)})") from None


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    for line in text:
        if "Description:" in line:
            return line.split("Description:", 1)[1].strip()
    return text[-1] if text else type(exc).__name__


def _moved_on_fixed(moving: np.ndarray, moving_grid: Grid, fixed_grid: Grid, transform: RigidTransform
                    ) -> tuple[np.ndarray, np.ndarray]:
    """The moving image resampled onto the fixed grid under ``transform`` (linear), and where it was inside."""
    g = transform.grid_in_fixed_frame(moving_grid)
    vals = resample_to_grid(np.asarray(moving, dtype=np.float64), g, fixed_grid, "linear")
    inside = np.asarray(resample_to_grid(np.ones(moving_grid.shape, np.float32), g, fixed_grid, "linear")) > 0.999
    return np.asarray(vals), np.asarray(inside)


def _correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    if a.size < 10:
        return None
    sa, sb = float(a.std()), float(b.std())
    if sa <= 0 or sb <= 0:
        return None
    return float(np.mean((a - a.mean()) * (b - b.mean())) / (sa * sb))


def _mask_on_fixed(mask: np.ndarray, moving_grid: Grid, fixed_grid: Grid, transform: RigidTransform) -> np.ndarray:
    g = transform.grid_in_fixed_frame(moving_grid)
    return np.asarray(resample_to_grid(np.asarray(mask, dtype=np.float32), g, fixed_grid, "linear")) >= 0.5


def mean_surface_distance_mm(a: np.ndarray, b: np.ndarray, grid: Grid) -> float:
    """Symmetric mean surface distance (mm) between two boolean masks on one grid: the mean, over the surface
    voxels of each mask, of the distance to the other mask's surface (Euclidean distance transform, anisotropic
    spacing). ImagingError when a mask is empty."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if not a.any() or not b.any():
        raise ImagingError("mean_surface_distance_mm: a mask is empty")
    sa = a & ~ndimage.binary_erosion(a)
    sb = b & ~ndimage.binary_erosion(b)
    spacing = tuple(float(s) for s in grid.spacing_mm)
    da = ndimage.distance_transform_edt(~sa, sampling=spacing)
    db = ndimage.distance_transform_edt(~sb, sampling=spacing)
    return float((db[sa].sum() + da[sb].sum()) / (sa.sum() + sb.sum()))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap 2|A&B| / (|A| + |B|) of two boolean masks (1.0 for two empty masks)."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    n = int(a.sum()) + int(b.sum())
    return 1.0 if n == 0 else 2.0 * float(np.count_nonzero(a & b)) / n


def _mask_image(mask: np.ndarray | None, grid: Grid) -> sitk.Image | None:
    if mask is None:
        return None
    m = np.asarray(mask, dtype=bool)
    if m.shape != grid.shape or not m.any():
        raise ImagingError("fixed_mask: must be a non-empty boolean mask of the fixed image's shape")
    return sitk.Cast(array_to_sitk(m.astype(np.uint8), grid), sitk.sitkUInt8)


def _quality(fixed: np.ndarray, fixed_grid: Grid, moving: np.ndarray, moving_grid: Grid, initial: RigidTransform,
             final: RigidTransform, settings: RegistrationSettings, same_modality: bool,
             fixed_liver: np.ndarray | None, moving_liver: np.ndarray | None,
             iterations: int | None = None, stop: str | None = None,
             fixed_mask: np.ndarray | None = None) -> RegistrationQuality:
    f_img, m_img = _image(fixed, fixed_grid), _image(moving, moving_grid)
    mask_img = _mask_image(fixed_mask, fixed_grid)
    mi_before = _metric_value(f_img, m_img, initial.to_sitk(), settings, mask_img)
    mi_after = _metric_value(f_img, m_img, final.to_sitk(), settings, mask_img)
    body = np.asarray(fixed) > settings.body_threshold if settings.body_threshold is not None else \
        np.ones(fixed_grid.shape, dtype=bool)
    if not body.any():
        body = np.ones(fixed_grid.shape, dtype=bool)
    v0, in0 = _moved_on_fixed(moving, moving_grid, fixed_grid, initial)
    v1, in1 = _moved_on_fixed(moving, moving_grid, fixed_grid, final)
    overlap = float(np.count_nonzero(in1 & body) / np.count_nonzero(body))
    fx = np.asarray(fixed, dtype=np.float64)
    r0 = _correlation(fx[in0 & body], v0[in0 & body]) if same_modality else None
    r1 = _correlation(fx[in1 & body], v1[in1 & body]) if same_modality else None
    msd0 = msd1 = dice0 = dice1 = None
    if fixed_liver is not None and moving_liver is not None:
        l0 = _mask_on_fixed(moving_liver, moving_grid, fixed_grid, initial)
        l1 = _mask_on_fixed(moving_liver, moving_grid, fixed_grid, final)
        if l0.any():
            msd0 = mean_surface_distance_mm(fixed_liver, l0, fixed_grid)
        dice0 = dice(fixed_liver, l0)
        if l1.any():
            msd1 = mean_surface_distance_mm(fixed_liver, l1, fixed_grid)
        dice1 = dice(fixed_liver, l1)
    return RegistrationQuality(
        mattes_mi_before=mi_before, mattes_mi_after=mi_after, correlation_before=r0, correlation_after=r1,
        overlap_fraction=min(1.0, overlap), rotation_deg=final.rotation_deg,
        translation_mm=final.translation_magnitude_mm, liver_msd_before_mm=msd0, liver_msd_after_mm=msd1,
        liver_dice_before=dice0, liver_dice_after=dice1, same_modality=same_modality, iterations=iterations,
        stop_condition=stop,
    )


#: A registration that starts aligned may end with a Mattes metric a little above the start (sampling, interpolation):
#: only a worsening beyond this is implausible.
MI_WORSENING_TOLERANCE = 1.0e-3


def check_plausible(q: RegistrationQuality, settings: RegistrationSettings, *, what: str = "registration",
                    require_improvement: bool = True) -> None:
    """ImagingError naming every quality figure beyond its limit."""
    problems = []
    if require_improvement and q.mattes_mi_after > q.mattes_mi_before + MI_WORSENING_TOLERANCE:
        problems.append(f"the mutual information got worse (Mattes metric {q.mattes_mi_before:.4f} -> "
                        f"{q.mattes_mi_after:.4f})")
    if q.mattes_mi_after > -1e-3:
        problems.append(f"no mutual information between the images after registration (Mattes metric "
                        f"{q.mattes_mi_after:.4f})")
    if q.rotation_deg > settings.max_rotation_deg:
        problems.append(f"rotation {q.rotation_deg:.1f} deg > {settings.max_rotation_deg:g} deg")
    if q.translation_mm > settings.max_translation_mm:
        problems.append(f"translation {q.translation_mm:.1f} mm > {settings.max_translation_mm:g} mm")
    if q.overlap_fraction < settings.min_overlap_fraction:
        problems.append(f"only {q.overlap_fraction:.0%} of the reference body lies inside the moving image "
                        f"(< {settings.min_overlap_fraction:.0%})")
    if not q.same_modality and -q.mattes_mi_after < settings.min_mutual_information_multimodal:
        problems.append(f"mutual information after registration {-q.mattes_mi_after:.3f} < "
                        f"{settings.min_mutual_information_multimodal:g} (images of two modalities)")
    if q.same_modality and (q.correlation_after is None or q.correlation_after < settings.min_correlation):
        r = "undefined" if q.correlation_after is None else f"{q.correlation_after:.2f}"
        problems.append(f"correlation of the two images after registration {r} < {settings.min_correlation:g}")
    if q.liver_msd_after_mm is not None and q.liver_msd_after_mm > settings.max_liver_msd_mm:
        problems.append(f"liver mean surface distance {q.liver_msd_after_mm:.1f} mm > {settings.max_liver_msd_mm:g} mm")
    if problems:
        raise ImagingError(f"{what}: implausible result: " + "; ".join(problems) +
                           ". Check that the images show the same patient and region, or give a transform file.")


def _check_inputs(array: np.ndarray, grid: Grid, name: str) -> np.ndarray:
    if not isinstance(grid, Grid):
        raise ImagingError(f"{name}: expected a Grid, got {type(grid).__name__}")
    a = np.asarray(array)
    if a.shape != grid.shape:
        raise ImagingError(f"{name}: shape {a.shape} does not match its grid {grid.shape}")
    if not np.all(np.isfinite(a)):
        raise ImagingError(f"{name}: non-finite values")
    if min(grid.shape) < 4:
        raise ImagingError(f"{name}: too small to register ({grid.shape}; at least 4 voxels along each axis)")
    if float(a.max()) == float(a.min()):
        raise ImagingError(f"{name}: a constant image carries no information to register")
    return a


def _unpack(fixed: Any, fixed_grid: Any, moving: Any, moving_grid: Any) -> tuple[Any, Grid, Any, Grid]:
    """(array, grid, array, grid) from arrays with grids, or from two Volumes (``f(fixed_volume, moving_volume)``)."""
    from .volume import Volume

    if isinstance(fixed, Volume) and isinstance(fixed_grid, Volume) and moving is None and moving_grid is None:
        return fixed.array, fixed.grid, fixed_grid.array, fixed_grid.grid
    if isinstance(fixed, Volume) and isinstance(moving, Volume):
        return fixed.array, fixed.grid, moving.array, moving.grid
    if fixed_grid is None or moving is None or moving_grid is None:
        raise ImagingError("registration: give (fixed, fixed_grid, moving, moving_grid) arrays and grids, or two "
                           "Volumes (fixed, moving)")
    return fixed, fixed_grid, moving, moving_grid


def register_rigid(
    fixed: Any,
    fixed_grid: Any = None,
    moving: Any = None,
    moving_grid: Any = None,
    *,
    settings: RegistrationSettings | None = None,
    same_modality: bool | None = None,
    fixed_liver: np.ndarray | None = None,
    moving_liver: np.ndarray | None = None,
    check: bool = True,
    fixed_mask: np.ndarray | None = None,
) -> RegistrationResult:
    """Register ``moving`` (on ``moving_grid``) to ``fixed`` (on ``fixed_grid``): the rigid transform that maps
    fixed-frame points to moving-frame points, with its quality figures (and an ImagingError when implausible,
    unless ``check=False``). ``same_modality`` (CT-CT) enables the correlation check, else the mutual-information
    check; None: True, unless two Volumes of different units are given (e.g. HU and counts). ``fixed_liver`` / ``moving_liver``: liver masks on the two grids for the surface-distance figure.
    ``fixed_mask``: the metric samples only these fixed voxels. ``register_rigid(fixed_volume, moving_volume)``
    takes two :class:`~embplan.imaging.volume.Volume` objects instead."""
    s = settings or RegistrationSettings()
    if same_modality is None:
        units = {getattr(v, "units", None) for v in (fixed, moving if moving is not None else fixed_grid)}
        same_modality = len(units) == 1 or None in units
    fixed, fixed_grid, moving, moving_grid = _unpack(fixed, fixed_grid, moving, moving_grid)
    f_arr = _check_inputs(fixed, fixed_grid, "fixed")
    m_arr = _check_inputs(moving, moving_grid, "moving")
    f_img, m_img = _image(f_arr, fixed_grid), _image(m_arr, moving_grid)
    if s.initialization == "identity":
        init = sitk.Euler3DTransform()
        centre = fixed_grid.index_to_patient_mm(np.array(fixed_grid.shape, dtype=float) / 2.0 - 0.5)
        init.SetCenter(tuple(float(v) for v in centre))
    else:
        mode = (sitk.CenteredTransformInitializerFilter.GEOMETRY if s.initialization == "geometry"
                else sitk.CenteredTransformInitializerFilter.MOMENTS)
        try:
            init = sitk.CenteredTransformInitializer(f_img, m_img, sitk.Euler3DTransform(), mode)
        except RuntimeError as exc:
            raise ImagingError(f"registration: cannot initialise ({_short(exc)})") from None
    initial = RigidTransform.from_sitk(init)
    r = _method(s, _mask_image(fixed_mask, fixed_grid))
    r.SetOptimizerAsRegularStepGradientDescent(
        learningRate=s.learning_rate, minStep=s.min_step, numberOfIterations=s.iterations,
        relaxationFactor=0.5, gradientMagnitudeTolerance=1e-8,
    )
    r.SetOptimizerScalesFromPhysicalShift()
    r.SetShrinkFactorsPerLevel(list(s.shrink_factors))
    r.SetSmoothingSigmasPerLevel(list(s.smoothing_sigmas_voxels))
    r.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    r.SetInitialTransform(init, inPlace=False)
    try:
        out = r.Execute(f_img, m_img)
    except RuntimeError as exc:
        raise ImagingError(f"registration failed: {_short(exc)}") from None
    final = RigidTransform.from_sitk(out)
    stop = r.GetOptimizerStopConditionDescription()
    q = _quality(f_arr, fixed_grid, m_arr, moving_grid, initial, final, s, same_modality, fixed_liver, moving_liver,
                 iterations=int(r.GetOptimizerIteration()), stop=stop, fixed_mask=fixed_mask)
    log.info("registration: MI %.4f -> %.4f, rotation %.2f deg, translation %.1f mm (%s)", q.mattes_mi_before,
             q.mattes_mi_after, q.rotation_deg, q.translation_mm, stop)
    if check:
        check_plausible(q, s, require_improvement=True)
    return RegistrationResult(transform=final, quality=q, source="registered", settings=s)


def evaluate_transform(
    fixed: np.ndarray,
    fixed_grid: Grid,
    moving: np.ndarray,
    moving_grid: Grid,
    transform: RigidTransform,
    *,
    settings: RegistrationSettings | None = None,
    same_modality: bool = True,
    fixed_liver: np.ndarray | None = None,
    moving_liver: np.ndarray | None = None,
    source: Literal["file", "identity"] = "file",
    check: bool = True,
    fixed_mask: np.ndarray | None = None,
) -> RegistrationResult:
    """The quality figures of a given transform (e.g. from a file), "before" being the identity; the same
    plausibility checks as :func:`register_rigid` except that the metric need not improve on the identity."""
    s = settings or RegistrationSettings()
    f_arr = _check_inputs(fixed, fixed_grid, "fixed")
    m_arr = _check_inputs(moving, moving_grid, "moving")
    q = _quality(f_arr, fixed_grid, m_arr, moving_grid, RigidTransform(), transform, s, same_modality, fixed_liver,
                 moving_liver, fixed_mask=fixed_mask)
    if check:
        check_plausible(q, s, what=f"transform ({source})", require_improvement=False)
    return RegistrationResult(transform=transform, quality=q, source=source, settings=s)


def resample_moving(array: np.ndarray, moving_grid: Grid, fixed_grid: Grid, transform: RigidTransform,
                    kind: Literal["linear", "nearest", "activity"], *, default_value: float = 0.0) -> np.ndarray:
    """A moving-frame image resampled onto a fixed-frame grid under ``transform`` (see
    :func:`embplan.imaging.resample.resample_to_grid` for ``kind``; ``"activity"`` conserves the total)."""
    try:
        return np.asarray(resample_to_grid(array, transform.grid_in_fixed_frame(moving_grid), fixed_grid, kind,
                                           default_value=default_value))
    except EmbplanError:
        raise
    except Exception as exc:  # SimpleITK
        raise ImagingError(f"resampling across frames failed: {exc}") from None


# ================================================================================================ the planner's use
#: Emission voxels above this fraction of the maximum, dilated by EMISSION_MASK_DILATION voxels, are where the
#: mutual information of an emission image and a CT is sampled (the rest is empty background).
EMISSION_MASK_FRACTION = 0.01
EMISSION_MASK_DILATION = 3
#: The emission image is log-compressed, log(1 + x / (max / EMISSION_LOG_SCALE)), before the multi-modal
#: registration: tumour hot spots would otherwise take every histogram bin but one (on the phantom the MI of a
#: correct alignment rises from 0.05 to 0.9 with it).
EMISSION_LOG_SCALE = 1000.0


def emission_for_registration(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An emission image (counts, Bq/mL) prepared for registration to a CT: log-compressed, and the mask where
    the metric is sampled (see :data:`EMISSION_MASK_FRACTION`)."""
    a = np.clip(np.asarray(counts, dtype=np.float64), 0.0, None)
    top = float(a.max()) if a.size else 0.0
    if not top > 0:
        raise ImagingError("registration: the emission image is empty (no counts)")
    mask = ndimage.binary_dilation(a > EMISSION_MASK_FRACTION * top, iterations=EMISSION_MASK_DILATION)
    return np.log1p(a / (top / EMISSION_LOG_SCALE)), mask


def align_activity_to_ct(ct: Any, activity: Any, *, activity_name: str = "spect", transform_path: Path | None = None,
                         settings: RegistrationSettings | None = None, allow_registration: bool = True,
                         field: str = "dosimetry.images.dicom",
                         ) -> tuple[Grid, str, dict[str, Any] | None, list[str]]:
    """For the planner: the activity image's grid expressed in the CT's frame of reference, the frame of reference
    of the dosimetry (the CT's: the structures are drawn on it), the registration record (None when the frames are
    the same) and notes.

    Same Frame of Reference UID: the activity grid as it is. Different: the transform from ``transform_path`` (an ITK
    file mapping activity-frame points to CT-frame points) or, without one, :func:`register_rigid` of the CT
    (moving) to the activity image (fixed), multi-modal (no correlation check). An unknown frame of reference on
    either side is an error (nothing tells whether the images are aligned). With ``allow_registration`` false and
    no transform, different frames are an error naming ``field`` and the two ways to proceed (the case must say so
    explicitly: a pair of frames that differ by mistake would otherwise be silently registered)."""
    ct_for, act_for = ct.frame_of_reference_uid, activity.frame_of_reference_uid
    missing = [n for n, v in (("ct", ct_for), (activity_name, act_for)) if not v]
    if missing:
        raise ImagingError(f"frame of reference unknown for {', '.join(missing)} (FrameOfReferenceUID (0020,0052))")
    if ct_for == act_for and transform_path is None:
        return activity.grid, ct_for, None, []
    if transform_path is None and not allow_registration:
        raise ImagingError(
            f"{field}: the CT (Frame of Reference UID {ct_for}) and the {activity_name.upper()} ({act_for}) are in "
            f"different frames of reference; set {field}.register_activity_to_ct: true to register them rigidly "
            f"(the transform and its quality are recorded in the plan), or give {field}.transform (an ITK transform "
            "file)")
    s = settings or RegistrationSettings()
    act, mask = emission_for_registration(np.asarray(activity.array, dtype=np.float64))
    if transform_path is not None:
        t = read_transform(transform_path)
        res = evaluate_transform(act, activity.grid, ct.array, ct.grid, t, settings=s, same_modality=False,
                                 source="file", fixed_mask=mask)
    else:
        res = register_rigid(act, activity.grid, ct.array, ct.grid, settings=s, same_modality=False, fixed_mask=mask)
    q = res.quality
    note = (f"The CT ({ct_for}) and the {activity_name.upper()} ({act_for}) are in different frames of reference: "
            f"{'registered' if res.source == 'registered' else 'aligned by the given transform'} (rigid; rotation "
            f"{q.rotation_deg:.2f} deg, translation {q.translation_mm:.1f} mm; Mattes MI {q.mattes_mi_before:.3f} -> "
            f"{q.mattes_mi_after:.3f}); the dosimetry is in the CT's frame.")
    log.info("%s", note)
    # activity voxel p (activity frame) lies at T(p) in the CT frame
    grid = res.transform.inverse().grid_in_fixed_frame(activity.grid)
    record = res.as_dict() | {"fixed": activity_name, "moving": "ct", "fixed_frame_of_reference_uid": act_for,
                              "moving_frame_of_reference_uid": ct_for}
    return grid, ct_for, record, [note]
