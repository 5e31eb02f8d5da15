"""What a dose number means: the conventions of the planner's dose numbers, each a named, overridable parameter
with its source.

One meaning per dose number (DESIGN.md, conventions): every dose the plan reports states its structure, its
definition and the activity it assumes. The definitions used by the planner:

- ``compartment``: the mean absorbed dose of a compartment by the MIRD / partition model (Ho 1996), local
  deposition, ``D = K A_compartment / M``, with the masses = :data:`NOMINAL_TISSUE_DENSITY_G_CM3` x contoured
  volume. This is the definition of the prescription models and of the published dose-response thresholds
  (EANM 2022 targets and limits), so the dose rules check it. With images, the compartment volumes, the T/N ratio
  and the lung shunt are measured on the images (the same counts as the voxel map).
- ``voxel``: the mass-weighted mean of a voxel dose map (deposited energy / mass) over the structure, with the dose
  method named (``ldm``, ``vsv``, ``vsv_density``). With ``ldm`` and nominal soft-tissue density in the liver it
  equals the compartment dose of the same structure when all liver counts lie in the perfused territory.
- ``activity``: ``delivered`` (what reaches the patient: the vial at administration less the residual) or
  ``prescribed`` (what the prescription model asked for). The plan's headline doses assume the delivered activity.

Masses
------
A mass is nominal tissue density x contoured volume for the liver, its tumours and the perfused territory: what the
vendor calculators and the published thresholds use. The CT density enters only where the transport needs it (the
lung, air, bone; the voxel map outside the liver). Inside the liver the dose engine uses the nominal density too: a
contrast-enhanced CT raises the liver's CT number by iodine attenuation (portal-venous phase about +50 HU, to
100-150 HU), which the HU calibration would read as +4 to +12 % mass (110 / 150 / 250 HU -> 1.105 / 1.127 /
1.182 g/cm3), lowering every voxel dose and raising the prescribed activity, without a change in tissue.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..errors import DosimetryError

__all__ = [
    "NOMINAL_TISSUE_DENSITY_G_CM3",
    "NOMINAL_TISSUE_DENSITY_SOURCE",
    "ICRU46_LIVER_DENSITY_G_CM3",
    "DENSITY_FLOOR_G_CM3",
    "DENSITY_FLOOR_SOURCE",
    "CONTRAST_LIVER_HU",
    "CONTRAST_LIVER_HU_SOURCE",
    "PARTIAL_VOLUME_WARNING_ML",
    "PARTIAL_VOLUME_SOURCE",
    "LUNG_SHUNT_DISCREPANCY_FRACTION",
    "LUNG_DOME_MARGIN_MM",
    "LUNG_DOME_MARGIN_SOURCE",
    "DOSE_METHOD_SOURCE",
    "RecoveryCoefficients",
    "default_dose_method",
    "dose_density_g_cm3",
    "dome_excluded_lung",
    "equivalent_sphere_diameter_mm",
]

#: Nominal soft-tissue density of liver and tumour for compartment masses and the dose in the liver, g/mL. The
#: glass-microsphere package insert converts CT liver volumes to mass with 1.03 g/cc (TheraSphere US package
#: insert; the "standard model" of Mikell et al., IJROBP 96:888, 2016) [U: the insert's dosimetry section not read
#: verbatim here], and the glass thresholds (EANM 2022, DOSISPHERE-01) were set with that convention; ICRU Report
#: 46 gives 1.06 for adult liver (2.9 % more mass, 2.9 % more activity for the same dose). Chosen: 1.03, the
#: convention of the vendors' calculators and the dose-response data the rules compare against.
NOMINAL_TISSUE_DENSITY_G_CM3: float = 1.03
NOMINAL_TISSUE_DENSITY_SOURCE = (
    "1.03 g/mL: TheraSphere US package insert liver volume-to-mass convention (also the glass standard model, "
    "Mikell IJROBP 2016) [U: not read verbatim]; alternative ICRU Report 46 adult liver 1.06 g/mL"
)
#: ICRU Report 46 (1992) adult liver density, g/cm3: the alternative to :data:`NOMINAL_TISSUE_DENSITY_G_CM3`.
ICRU46_LIVER_DENSITY_G_CM3: float = 1.06

#: Lowest density a voxel may have in the dose engine, g/cm3: -950 HU on the air-water line, the CT threshold
#: below which lung voxels are air spaces rather than parenchyma (the emphysema threshold of Gevenois PA et al., Am
#: J Respir Crit Care Med 154:187, 1996 [U: not read at the source]). Below it the local-deposition mass is not
#: where the beta energy stops (the electron range in air is metres), and 1/density would turn spill-in counts
#: into kGy "doses" (2 % air voxels in a lung gave D2 = 3,188 Gy at 0.0012 g/cm3).
DENSITY_FLOOR_G_CM3: float = 0.05
DENSITY_FLOOR_SOURCE = (
    "0.05 g/cm3 = -950 HU, the CT emphysema (air-space) threshold (Gevenois AJRCCM 1996) [U]: voxels below are air"
)

#: Median CT number of the liver above which the CT is taken as contrast-enhanced, HU. Unenhanced liver reads about
#: 50-65 HU; portal-venous-phase liver about 100-130 HU (typical values [U: textbook ranges, not a cited series]).
CONTRAST_LIVER_HU: float = 90.0
CONTRAST_LIVER_HU_SOURCE = "unenhanced liver 50-65 HU, portal-venous phase 100-130 HU [U: typical ranges]"

#: Tumours below this volume get a partial-volume warning, mL (the planner reads
#: ``Thresholds.partial_volume_warning_ml``, same default and source, overridable per case). Objects smaller than about 2-3 times the image
#: resolution (FWHM) lose mean activity to spill-out (Soret M, Bacharach SL, Buvat I, J Nucl Med 48:932, 2007);
#: with a 12 mm SPECT resolution 3 FWHM is a 36 mm sphere (24 mL). Measured here on a 4.42 mm grid without blur
#: (vsv_density, uniform sphere in uniform liver): -16 % at 5 mL, -27 % at 1 mL (see README). Taranis warns below
#: 2 mL (EVIDENCE.md 5). A site choice [U].
PARTIAL_VOLUME_WARNING_ML: float = 10.0
PARTIAL_VOLUME_SOURCE = (
    "objects below 2-3 x FWHM suffer partial volume (Soret, J Nucl Med 2007); Taranis warns below 2 mL; 10 mL is a "
    "site choice [U]"
)

#: Absolute difference of two lung shunt fractions (case vs images) above which the plan says so and flags it (the
#: planner reads ``Thresholds.lung_shunt_discrepancy_fraction``, same default):
#: 0.02 = 2 percentage points, about the 95 % repeatability of SPECT/CT LSF [U: site choice; Allred et al., EJNMMI
#: Res 8:50, 2018 report SPECT/CT LSF within 13 % of truth and planar up to 44 % over].
LUNG_SHUNT_DISCREPANCY_FRACTION: float = 0.02

#: Margin above the liver dome excluded from the lung's DVH (not from its mean dose) on SPECT, mm: Tc-99m SPECT
#: resolution (12-15 mm FWHM) spills liver counts into the lung bases; SPECT/CT lung-shunt practice excludes about
#: 2 cm of lung above the dome (Allred et al., EJNMMI Res 8:50, 2018; EANM dosimetry SOP, Chiesa et al., EJNMMI
#: Phys 8:77, 2021) [U: margin value not read at the source]. 0 disables it.
LUNG_DOME_MARGIN_MM: float = 20.0
LUNG_DOME_MARGIN_SOURCE = (
    "about 2 cm of lung above the liver dome excluded against SPECT spill-in (Allred EJNMMI Res 2018; Chiesa EANM "
    "SOP 2021) [U]"
)

#: Why local deposition is the default on emission images.
DOSE_METHOD_SOURCE = (
    "EANM dosimetry SOP (Chiesa et al., EJNMMI Phys 8:77, 2021): local deposition as the baseline for Tc-99m MAA "
    "SPECT and Y-90 PET/SPECT, since the image resolution (SPECT 12-15 mm, PET 5-8 mm FWHM) already spreads the "
    "activity further than the Y-90 beta range (mean 2.5 mm); a kernel on top blurs twice (Pasciak AS et al., "
    "Front Oncol 4:121, 2014 [U])"
)


def default_dose_method(
    modality: str, voxel_mm: Sequence[float] | float
) -> tuple[Literal["ldm", "vsv", "vsv_density"], str]:
    """The dose method used when the case names none, and why: ``(method, reason)``.

    ``modality``: ``"NM"`` (Tc-99m MAA or Y-90 bremsstrahlung SPECT), ``"PT"`` (Y-90 PET) or ``"phantom"`` (the
    synthetic MAA map, which stands for a SPECT). Emission images: ``ldm`` (:data:`DOSE_METHOD_SOURCE`) on any
    grid at least as coarse as 1 mm; on a grid finer than 1 mm (a resolution the emission images never have:
    the map is then a model of the sphere distribution, not an image) ``vsv_density``, since the beta range
    (mean 2.5 mm) then spans several voxels.
    """
    vox = (float(voxel_mm),) * 3 if isinstance(voxel_mm, int | float) else tuple(float(v) for v in voxel_mm)
    if modality not in ("NM", "PT", "phantom"):
        raise DosimetryError(f"modality: must be 'NM', 'PT' or 'phantom', got {modality!r}")
    if min(vox) < 1.0:
        return "vsv_density", (
            f"grid {min(vox):g} mm finer than 1 mm: the Y-90 beta range spans several voxels, so the density-"
            "corrected kernel (Mikell, EJNMMI Phys 2015)"
        )
    what = {"NM": "SPECT", "PT": "PET", "phantom": "the synthetic MAA map (stands for a Tc-99m MAA SPECT)"}[modality]
    return "ldm", f"local deposition on {what}: {DOSE_METHOD_SOURCE}"


def dose_density_g_cm3(
    density_g_cm3: np.ndarray,
    liver: np.ndarray,
    *,
    nominal_g_cm3: float = NOMINAL_TISSUE_DENSITY_G_CM3,
    floor_g_cm3: float = DENSITY_FLOOR_G_CM3,
) -> np.ndarray:
    """The density map the dose engine uses: the CT-derived ``density_g_cm3`` with every voxel of ``liver``
    (tumours included) at ``nominal_g_cm3`` and every density below ``floor_g_cm3`` raised to it (float32)."""
    for nm, v in (("nominal_g_cm3", nominal_g_cm3), ("floor_g_cm3", floor_g_cm3)):
        if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
            raise DosimetryError(f"{nm}: must be a finite number > 0, got {v!r}")
    rho = np.array(density_g_cm3, dtype=np.float32, copy=True)
    if rho.shape != np.shape(liver):
        raise DosimetryError(f"liver: shape {np.shape(liver)} does not match the density shape {rho.shape}")
    np.maximum(rho, np.float32(floor_g_cm3), out=rho)
    rho[np.asarray(liver, dtype=bool)] = np.float32(nominal_g_cm3)
    return rho


def dome_excluded_lung(lungs: np.ndarray, liver: np.ndarray, voxel_mm: Sequence[float],
                       margin_mm: float) -> np.ndarray:
    """The lung mask less every lung voxel within ``margin_mm`` (Euclidean, in mm) of the liver: the lung away from
    the dome, where SPECT spill-in from the liver does not reach. ``margin_mm`` = 0 returns the lung unchanged."""
    if not (math.isfinite(margin_mm) and margin_mm >= 0):
        raise DosimetryError(f"margin_mm: must be a finite number >= 0, got {margin_mm!r}")
    lungs = np.asarray(lungs, dtype=bool)
    if margin_mm == 0 or not np.any(liver):
        return lungs.copy()
    from scipy import ndimage

    liv = np.asarray(liver, dtype=bool)
    sampling = tuple(float(v) for v in voxel_mm)
    out = lungs.copy()
    if not lungs.any():
        return out
    # b16: a lung voxel is removed only when a liver voxel lies within margin_mm of it, and both then lie in the
    # intersection of the liver's and the lung's bounding boxes, each widened by the margin. The distance transform
    # runs in that box: a lung voxel's nearest liver voxel, when within the margin, is in it (so the decision is
    # the whole grid's), and every lung voxel outside it is kept.
    reach = [int(math.ceil(margin_mm / sp)) + 1 for sp in sampling]
    box = []
    for axis, (n, r) in enumerate(zip(liv.shape, reach, strict=True)):
        other = tuple(a for a in range(3) if a != axis)
        liv_ix = np.flatnonzero(liv.any(axis=other))
        lung_ix = np.flatnonzero(lungs.any(axis=other))
        lo = max(0, int(liv_ix[0]) - r, int(lung_ix[0]) - r)
        hi = min(n, int(liv_ix[-1]) + r + 1, int(lung_ix[-1]) + r + 1)
        if hi <= lo:
            return out
        box.append(slice(lo, hi))
    crop = liv[tuple(box)]
    if not crop.any():
        return out
    dist = ndimage.distance_transform_edt(~crop, sampling=sampling)
    out[tuple(box)] &= dist > margin_mm
    return out


def equivalent_sphere_diameter_mm(volume_ml: float) -> float:
    """Diameter (mm) of the sphere of ``volume_ml`` mL."""
    if not (math.isfinite(volume_ml) and volume_ml >= 0):
        raise DosimetryError(f"volume_ml: must be a finite number >= 0, got {volume_ml!r}")
    return 2.0 * (3.0 * volume_ml * 1000.0 / (4.0 * math.pi)) ** (1.0 / 3.0)


@dataclass(frozen=True)
class RecoveryCoefficients:
    """Recovery coefficients of one imaging modality (measured by the site, e.g. NEMA IEC spheres): the ratio of
    imaged to true mean activity concentration as a function of object volume. Interpolated linearly in log
    volume between the points, constant beyond them. ``source`` says where they were measured."""

    modality: str
    volume_ml: tuple[float, ...]
    coefficient: tuple[float, ...]
    source: str = ""

    def __post_init__(self) -> None:
        if len(self.volume_ml) != len(self.coefficient) or len(self.volume_ml) < 1:
            raise DosimetryError("RecoveryCoefficients: volume_ml and coefficient must be non-empty and equally long")
        v = [float(x) for x in self.volume_ml]
        c = [float(x) for x in self.coefficient]
        if any(not (math.isfinite(x) and x > 0) for x in v) or any(b <= a for a, b in zip(v, v[1:], strict=False)):
            raise DosimetryError("RecoveryCoefficients.volume_ml: must be finite, > 0 and strictly increasing")
        if any(not (math.isfinite(x) and 0 < x <= 1.5) for x in c):
            raise DosimetryError("RecoveryCoefficients.coefficient: must be finite and within (0, 1.5]")
        object.__setattr__(self, "volume_ml", tuple(v))
        object.__setattr__(self, "coefficient", tuple(c))

    def at(self, volume_ml: float) -> float:
        """The recovery coefficient for an object of ``volume_ml`` mL."""
        if not (math.isfinite(volume_ml) and volume_ml > 0):
            raise DosimetryError(f"volume_ml: must be a finite number > 0, got {volume_ml!r}")
        return float(np.interp(math.log(volume_ml), np.log(self.volume_ml), self.coefficient))
