"""Activity prescription for Y-90 radioembolization: BSA, MIRD single compartment, partition model, lung dose,
the largest safe activity, decay to the treatment time and the choice of a glass vial.

Pure functions and frozen result dataclasses. Activities in GBq, doses in Gy (mean absorbed dose of a
compartment, full decay in situ, local deposition), masses in kg, volumes in mL, densities in g/cm^3 (= g/mL).
``K`` (``k_gy_kg_per_gbq``) is the local-deposition constant: the dose to 1 kg from 1 GBq decaying completely in it
(default :data:`embplan.nuclides.K_GY_KG_PER_GBQ_DEFAULT`, 49.67 Gy kg/GBq; it is a parameter everywhere).

Formulas and their sources
--------------------------
- Body surface area, Du Bois & Du Bois, Arch Intern Med 17:863 (1916): ``BSA = 0.007184 W^0.425 H^0.725``
  (W kg, H cm), the formula of the resin package insert; Mosteller, N Engl J Med 317:1098 (1987):
  ``BSA = sqrt(W H / 3600)``.
- BSA method (resin, SIR-Spheres): ``A = (BSA - 0.2) + V_T / (V_T + V_N)`` GBq, times the perfused fraction of the
  liver for lobar/segmental delivery (Sirtex IFU via van Roekel thesis 2021, ch. 2 [U: IFU not read verbatim]).
  Lung-shunt reductions (resin): LSF < 10 % none; 10-15 % minus 20 %; 15-20 % minus 40 %; > 20 % no treatment
  (Sirtex IFU via van Roekel thesis p.41 [U]).
- MIRD single compartment (glass, TheraSphere IFU): ``D = K A (1 - LSF) / M``, hence
  ``A = D M / (K (1 - LSF))``. (A public calculator multiplies by (1 - LSF) instead of dividing: tests guard it.)
- Partition model (Ho et al., Eur J Nucl Med 23:947, 1996): T/N is the ratio of activity *concentrations*
  ``(C_T / M_T) / (C_N / M_N)`` (not of activities, as Kao's R = A_T/A_N in CVIR 2013);
  ``D_N = K A (1 - LSF) / (M_N + T/N M_T)``, ``D_T = T/N D_N``, ``D_L = K A LSF / M_L``.
- Lung: <= 30 Gy per session and <= 50 Gy cumulative over all radioembolizations (EANM 2022; van Roekel
  Table 1; Radiopaedia "lung shunt fraction").
- Glass vial sizes 3, 5, 7, 10, 15, 20 GBq at calibration (TheraSphere US package insert v12; WJH 2015 7(5)
  Table 1).

Which masses to pass: for lobar or segmental delivery the partition-model masses are those of the *perfused*
compartments (perfused tumour, perfused non-tumour liver); for whole-liver delivery, of the whole liver.

Convention of this module: every activity that a dose formula takes is the activity *administered to the patient*
(leaving the catheter). The vial activity that delivers it is found with :func:`required_vial_activity_gbq`
(residual in vial and tubing) and the decay helpers.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import ClassVar

from .. import nuclides
from ..anthropometry import BSA_FORMULAS
from ..anthropometry import body_surface_area_m2 as _bsa_m2
from ..errors import DosimetryError, EmbplanError
from ..nuclides import K_GY_KG_PER_GBQ_DEFAULT, Y90_HALF_LIFE_H

__all__ = [
    # constants
    "BSA_OFFSET_M2",
    "RESIN_LSF_REDUCTION_BANDS",
    "RESIN_LSF_MAX_FRACTION",
    "LUNG_SESSION_LIMIT_GY",
    "LUNG_CUMULATIVE_LIMIT_GY",
    "LUNG_MASS_CONVENTION_KG",
    "GLASS_VIAL_SIZES_GBQ",
    "VIAL_TOLERANCE_FRACTION",
    # densities and masses
    "TissueDensities",
    "mass_kg",
    "density_from_hu_g_cm3",
    # BSA
    "body_surface_area_m2",
    "bsa_activity_gbq",
    "lung_shunt_reduction_fraction",
    "BsaPrescription",
    "bsa_prescription",
    # MAA-derived compartment quantities
    "lung_shunt_fraction_from_counts",
    "tn_ratio_from_counts",
    # MIRD
    "mird_dose_gy",
    "mird_activity_gbq",
    # lung
    "lung_dose_gy",
    "lung_max_activity_gbq",
    # partition
    "PartitionDoses",
    "partition_doses",
    "partition_activity_for_tumor_dose_gbq",
    "partition_activity_for_normal_liver_dose_gbq",
    "MaxActivity",
    "partition_max_activity",
    "PartitionPrescription",
    "partition_prescription",
    # decay and vials
    "decay_factor",
    "activity_at_gbq",
    "hours_between",
    "activity_at_time_gbq",
    "delivered_activity_gbq",
    "required_vial_activity_gbq",
    "VialOption",
    "glass_vial_options",
    "glass_vial_choice",
    "GLASS_VIAL_SEARCH_STEP_H",
    "VialDelivery",
    "glass_vial_for_delivery",
]

# ----------------------------------------------------------------------------------------------------- constants
#: The constant subtracted from BSA in the resin BSA method, m^2 (Sirtex IFU via van Roekel thesis [U]).
BSA_OFFSET_M2: float = 0.2

#: Resin lung-shunt activity reductions: (lowest LSF of the band, inclusive; reduction fraction of the activity).
#: LSF < 0.10: no reduction; 0.10 <= LSF < 0.15: 20 %; 0.15 <= LSF <= 0.20: 40 %; LSF > 0.20: no treatment.
#: Source: Sirtex SIR-Spheres IFU as tabulated in van Roekel, PhD thesis Utrecht 2021, p.41 [U: IFU not read].
#: The bands read "10-15 %, 15-20 %, > 20 %": a boundary value belongs to the higher band, except 20 % itself,
#: which is the last treatable value (only "> 20 %" is excluded).
RESIN_LSF_REDUCTION_BANDS: tuple[tuple[float, float], ...] = ((0.10, 0.20), (0.15, 0.40))
#: Largest treatable LSF for resin (inclusive); above it the IFU advises against treatment (source as above).
RESIN_LSF_MAX_FRACTION: float = 0.20

#: Lung absorbed-dose limit per session, Gy (EANM 2022; van Roekel Table 1; Radiopaedia).
LUNG_SESSION_LIMIT_GY: float = 30.0
#: Cumulative lung absorbed-dose limit over all radioembolizations, Gy (same sources).
LUNG_CUMULATIVE_LIMIT_GY: float = 50.0
#: Lung mass conventionally assumed when no CT lung mass is available, kg (TheraSphere IFU; EVIDENCE.md 2.2).
LUNG_MASS_CONVENTION_KG: float = 1.0

#: TheraSphere vial sizes, GBq at calibration (TheraSphere US package insert v12; WJH 2015 7(5) Table 1).
#: Later product versions offer other sizes [U]: pass ``vial_sizes_gbq`` to use them.
GLASS_VIAL_SIZES_GBQ: tuple[float, ...] = (3.0, 5.0, 7.0, 10.0, 15.0, 20.0)
#: Default tolerance on the delivered activity against the prescription, beyond which the plan flags it: 10 %, the
#: accuracy the manufacturers state for a vial's labelled activity ("3.0 GBq +- 10 %", Selwyn R et al., Med Phys
#: 35:1278, 2008); the US NRC counts a 20 % difference as a medical event (10 CFR 35.1000 licensing guidance for
#: Y-90 microspheres) [U: guidance not read verbatim]. A site choice within those.
VIAL_TOLERANCE_FRACTION: float = 0.10
VIAL_TOLERANCE_SOURCE = (
    "10 %: vial label accuracy +-10 % (Selwyn, Med Phys 2008); NRC medical-event threshold 20 % (10 CFR 35.1000 "
    "guidance) [U]"
)


# ---------------------------------------------------------------------------------------------------- validation
def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise DosimetryError(f"{name}: must be a real number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise DosimetryError(f"{name}: must be finite, got {value!r}")
    return v


def _positive(name: str, value: object) -> float:
    v = _number(name, value)
    if v <= 0.0:
        raise DosimetryError(f"{name}: must be > 0, got {value!r}")
    return v


def _non_negative(name: str, value: object) -> float:
    v = _number(name, value)
    if v < 0.0:
        raise DosimetryError(f"{name}: must be >= 0, got {value!r}")
    return v


def _lsf(name: str, value: object) -> float:
    v = _number(name, value)
    if not 0.0 <= v < 1.0:
        raise DosimetryError(f"{name}: must be in [0, 1), got {value!r}")
    return v


def _unit_interval_open_low(name: str, value: object) -> float:
    v = _number(name, value)
    if not 0.0 < v <= 1.0:
        raise DosimetryError(f"{name}: must be in (0, 1], got {value!r}")
    return v


def _k(value: object) -> float:
    return _positive("k_gy_kg_per_gbq", value)


# ---------------------------------------------------------------------------------------- densities and masses
@dataclass(frozen=True)
class TissueDensities:
    """Mass densities (g/cm^3 = g/mL) used to turn compartment volumes into masses; every field overridable.

    Defaults and sources (see :attr:`SOURCES`): non-tumour liver and tumour 1.03 g/mL, the glass package insert's
    volume-to-mass convention that vendor calculators and the published thresholds use
    (:data:`embplan.dosimetry.conventions.NOMINAL_TISSUE_DENSITY_G_CM3`; ICRU Report 46 gives 1.06 for adult
    liver, +2.9 % mass and activity); tumour taken equal to liver (no tissue-specific reference [U]); lung 0.26 (ICRU 44/46 inflated lung [U: not read at the primary source]; the ICRP 89-based
    UF hybrid phantom uses 0.38 for lungs with blood). Where a CT exists, prefer the lung density measured on it
    (:func:`density_from_hu_g_cm3`), or the lung-mass convention of 1 kg (:data:`LUNG_MASS_CONVENTION_KG`).
    """

    normal_liver_g_cm3: float = 1.03
    tumor_g_cm3: float = 1.03
    lung_g_cm3: float = 0.26

    SOURCES: ClassVar[Mapping[str, str]] = MappingProxyType(
        {
            "normal_liver_g_cm3": "1.03 g/mL, TheraSphere package insert volume-to-mass convention [U: not read "
            "verbatim]; ICRU Report 46 (1992) adult liver is 1.06 g/cm3",
            "tumor_g_cm3": "assumed equal to liver (no tissue-specific reference) [U]",
            "lung_g_cm3": "ICRU Report 44/46, inflated lung, 0.26 g/cm3 [U]",
        }
    )

    def __post_init__(self) -> None:
        for name in ("normal_liver_g_cm3", "tumor_g_cm3", "lung_g_cm3"):
            v = _positive(name, getattr(self, name))
            if v > 25.0:
                raise DosimetryError(f"{name}: must be a tissue density in g/cm3 (<= 25), got {v!r}")
            object.__setattr__(self, name, v)


def mass_kg(volume_ml: float, density_g_cm3: float) -> float:
    """Mass in kg of ``volume_ml`` mL of tissue of density ``density_g_cm3`` (1 mL = 1 cm^3)."""
    v = _non_negative("volume_ml", volume_ml)
    rho = _positive("density_g_cm3", density_g_cm3)
    return v * rho / 1000.0


def density_from_hu_g_cm3(hu: float, *, min_density_g_cm3: float = 0.0012) -> float:
    """Density from CT number on the air-water line, rho = (HU + 1000) / 1000 g/cm^3 (EVIDENCE.md 2.2: lung mass
    from CT, as in Taranis). Valid from air to soft tissue (about -1000 to +100 HU), the range that lung spans;
    floored at ``min_density_g_cm3`` (dry air at 20 C, 0.0012 g/cm^3)."""
    h = _number("hu", hu)
    if h > 200.0:
        raise DosimetryError(f"hu: the air-water line is valid up to about +100 HU (lung, soft tissue), got {h!r}")
    return max((h + 1000.0) / 1000.0, _positive("min_density_g_cm3", min_density_g_cm3))


# -------------------------------------------------------------------------------------------------------- BSA
def body_surface_area_m2(weight_kg: float, height_cm: float, formula: str = "dubois") -> float:
    """Body surface area in m^2.

    ``formula="dubois"`` (default; Du Bois & Du Bois 1916, the resin package insert's formula):
    ``0.007184 * W^0.425 * H^0.725``; ``formula="mosteller"`` (Mosteller 1987): ``sqrt(W * H / 3600)``.
    """
    w = _positive("weight_kg", weight_kg)
    h = _positive("height_cm", height_cm)
    if w > 500.0:
        raise DosimetryError(f"weight_kg: must be <= 500 kg, got {weight_kg!r}")
    if h > 300.0:
        raise DosimetryError(f"height_cm: must be <= 300 cm (height in cm, not mm), got {height_cm!r}")
    if formula not in BSA_FORMULAS:
        raise DosimetryError(f"formula: must be one of {BSA_FORMULAS}, got {formula!r}")
    return _bsa_m2(w, h, formula)


def bsa_activity_gbq(
    weight_kg: float,
    height_cm: float,
    tumor_ml: float,
    liver_ml: float,
    lobe_fraction: float = 1.0,
    *,
    bsa_formula: str = "dubois",
    liver_ml_includes_tumor: bool = False,
    bsa_offset_m2: float = BSA_OFFSET_M2,
) -> float:
    """Resin BSA-method activity in GBq, **without** the lung-shunt reduction:
    ``A = [(BSA - 0.2) + V_T / (V_T + V_N)] * lobe_fraction``.

    ``liver_ml`` is the non-tumour liver volume V_N (the formula's V_liver); pass ``liver_ml_includes_tumor=True``
    when it is the whole liver volume including tumour (then ``V_T / V_liver`` is used). ``lobe_fraction`` is the
    perfused fraction of the (whole) liver volume for lobar or segmental delivery, in (0, 1].
    For the reduced activity and the no-treatment decision use :func:`bsa_prescription`.
    """
    bsa = body_surface_area_m2(weight_kg, height_cm, bsa_formula)
    t = _non_negative("tumor_ml", tumor_ml)
    v = _positive("liver_ml", liver_ml)
    f = _unit_interval_open_low("lobe_fraction", lobe_fraction)
    offset = _non_negative("bsa_offset_m2", bsa_offset_m2)
    if liver_ml_includes_tumor:
        if t > v:
            raise DosimetryError(
                f"tumor_ml: must be <= liver_ml when liver_ml includes tumour, got {tumor_ml!r} > {liver_ml!r}"
            )
        involvement = t / v
    else:
        involvement = t / (t + v)
    activity = ((bsa - offset) + involvement) * f
    if activity <= 0.0:
        raise DosimetryError(
            f"weight_kg/height_cm: BSA {bsa:.3f} m2 gives a non-positive BSA-method activity ({activity:.3f} GBq)"
        )
    return activity


def lung_shunt_reduction_fraction(
    lung_shunt_fraction: float,
    device: str = "resin",
    *,
    bands: Sequence[tuple[float, float]] = RESIN_LSF_REDUCTION_BANDS,
    max_lsf_fraction: float = RESIN_LSF_MAX_FRACTION,
) -> float | None:
    """Fraction by which the resin activity is reduced for a lung shunt: 0.0, 0.2 or 0.4 with the default bands,
    ``None`` when ``lung_shunt_fraction > max_lsf_fraction`` (no treatment advised).

    ``bands`` are (lowest LSF of the band, inclusive; reduction) pairs; the reduction of the highest band whose
    lower bound is <= LSF applies. Defaults: Sirtex IFU via van Roekel thesis p.41 [U] (see
    :data:`RESIN_LSF_REDUCTION_BANDS`). Only ``device="resin"`` has bands; for glass the lung dose limit is the
    constraint (use :func:`lung_dose_gy` / :func:`lung_max_activity_gbq`).
    """
    lsf = _lsf("lung_shunt_fraction", lung_shunt_fraction)
    if device != "resin":
        raise DosimetryError(
            f"device: lung-shunt activity reductions are defined for 'resin' only, got {device!r} "
            "(for glass, limit the lung dose instead)"
        )
    cap = _lsf("max_lsf_fraction", max_lsf_fraction)
    if lsf > cap:
        return None
    reduction = 0.0
    lower_prev = -math.inf
    for i, band in enumerate(bands):
        if len(band) != 2:
            raise DosimetryError(f"bands[{i}]: must be a (lower_lsf, reduction_fraction) pair, got {band!r}")
        lower = _lsf(f"bands[{i}][0]", band[0])
        red = _number(f"bands[{i}][1]", band[1])
        if not 0.0 <= red < 1.0:
            raise DosimetryError(f"bands[{i}][1]: reduction must be in [0, 1), got {band[1]!r}")
        if lower <= lower_prev:
            raise DosimetryError(f"bands[{i}][0]: band lower bounds must increase, got {lower!r}")
        lower_prev = lower
        if lsf >= lower:
            reduction = red
    return reduction


@dataclass(frozen=True)
class BsaPrescription:
    """Result of the resin BSA method: both the unreduced and the lung-shunt-reduced activity.

    ``reduction_fraction`` and ``reduced_activity_gbq`` are ``None`` and ``treatable`` is False when the lung
    shunt is above the largest treatable value (no resin treatment advised)."""

    bsa_m2: float
    tumor_involvement_fraction: float
    lobe_fraction: float
    activity_gbq: float
    lung_shunt_fraction: float
    reduction_fraction: float | None
    reduced_activity_gbq: float | None
    treatable: bool


def bsa_prescription(
    weight_kg: float,
    height_cm: float,
    tumor_ml: float,
    liver_ml: float,
    lung_shunt_fraction: float,
    lobe_fraction: float = 1.0,
    *,
    bsa_formula: str = "dubois",
    liver_ml_includes_tumor: bool = False,
    bsa_offset_m2: float = BSA_OFFSET_M2,
    bands: Sequence[tuple[float, float]] = RESIN_LSF_REDUCTION_BANDS,
    max_lsf_fraction: float = RESIN_LSF_MAX_FRACTION,
) -> BsaPrescription:
    """The resin BSA method with its lung-shunt reduction (arguments as :func:`bsa_activity_gbq` and
    :func:`lung_shunt_reduction_fraction`); ``reduced = activity * (1 - reduction)``."""
    activity = bsa_activity_gbq(
        weight_kg,
        height_cm,
        tumor_ml,
        liver_ml,
        lobe_fraction,
        bsa_formula=bsa_formula,
        liver_ml_includes_tumor=liver_ml_includes_tumor,
        bsa_offset_m2=bsa_offset_m2,
    )
    reduction = lung_shunt_reduction_fraction(
        lung_shunt_fraction, "resin", bands=bands, max_lsf_fraction=max_lsf_fraction
    )
    t, v = float(tumor_ml), float(liver_ml)
    involvement = t / v if liver_ml_includes_tumor else t / (t + v)
    return BsaPrescription(
        bsa_m2=body_surface_area_m2(weight_kg, height_cm, bsa_formula),
        tumor_involvement_fraction=involvement,
        lobe_fraction=float(lobe_fraction),
        activity_gbq=activity,
        lung_shunt_fraction=float(lung_shunt_fraction),
        reduction_fraction=reduction,
        reduced_activity_gbq=None if reduction is None else activity * (1.0 - reduction),
        treatable=reduction is not None,
    )


# ------------------------------------------------------------------------------- MAA-derived compartment numbers
def lung_shunt_fraction_from_counts(lung_counts: float, liver_counts: float) -> float:
    """LSF = lung counts / (lung counts + liver counts) (Radiopaedia "lung shunt fraction"; counts from Tc-99m MAA,
    geometric-mean planar or SPECT)."""
    lung = _non_negative("lung_counts", lung_counts)
    liver = _positive("liver_counts", liver_counts)
    return lung / (lung + liver)


def tn_ratio_from_counts(
    tumor_counts: float, tumor_mass_kg: float, normal_liver_counts: float, normal_liver_mass_kg: float
) -> float:
    """Tumour-to-normal ratio of activity *concentrations* (Ho 1996): ``(C_T / M_T) / (C_N / M_N)``.

    Not the ratio of activities (Kao's R = A_T/A_N, CVIR 2013) -- a common pitfall. Volumes may be passed instead
    of masses when both compartments have the same density (the ratio is the same)."""
    ct = _positive("tumor_counts", tumor_counts)
    mt = _positive("tumor_mass_kg", tumor_mass_kg)
    cn = _positive("normal_liver_counts", normal_liver_counts)
    mn = _positive("normal_liver_mass_kg", normal_liver_mass_kg)
    return (ct / mt) / (cn / mn)


# -------------------------------------------------------------------------------------------------------- MIRD
def mird_dose_gy(
    activity_gbq: float,
    perfused_mass_kg: float,
    lung_shunt_fraction: float,
    *,
    k_gy_kg_per_gbq: float = K_GY_KG_PER_GBQ_DEFAULT,
) -> float:
    """Mean dose to the perfused mass, MIRD single compartment: ``D = K A (1 - LSF) / M`` (TheraSphere IFU)."""
    a = _non_negative("activity_gbq", activity_gbq)
    m = _positive("perfused_mass_kg", perfused_mass_kg)
    lsf = _lsf("lung_shunt_fraction", lung_shunt_fraction)
    return _k(k_gy_kg_per_gbq) * a * (1.0 - lsf) / m


def mird_activity_gbq(
    target_dose_gy: float,
    perfused_mass_kg: float,
    lung_shunt_fraction: float,
    k_gy_kg_per_gbq: float = K_GY_KG_PER_GBQ_DEFAULT,
) -> float:
    """Administered activity that gives ``target_dose_gy`` to the perfused mass, MIRD single compartment:
    ``A = D M / (K (1 - LSF))`` -- the lung shunt *divides* (the activity lost to the lungs must be added)."""
    d = _non_negative("target_dose_gy", target_dose_gy)
    m = _positive("perfused_mass_kg", perfused_mass_kg)
    lsf = _lsf("lung_shunt_fraction", lung_shunt_fraction)
    return d * m / (_k(k_gy_kg_per_gbq) * (1.0 - lsf))


# -------------------------------------------------------------------------------------------------------- lung
def lung_dose_gy(
    activity_gbq: float,
    lung_shunt_fraction: float,
    lung_mass_kg: float = LUNG_MASS_CONVENTION_KG,
    *,
    k_gy_kg_per_gbq: float = K_GY_KG_PER_GBQ_DEFAULT,
) -> float:
    """Mean lung dose ``D_L = K A LSF / M_L`` (Ho 1996; lung mass 1 kg by convention, or from CT)."""
    a = _non_negative("activity_gbq", activity_gbq)
    lsf = _lsf("lung_shunt_fraction", lung_shunt_fraction)
    ml = _positive("lung_mass_kg", lung_mass_kg)
    return _k(k_gy_kg_per_gbq) * a * lsf / ml


def _lung_limits_gbq(
    lung_limit_gy: float,
    lung_shunt_fraction: float,
    lung_mass_kg: float,
    prior_lung_dose_gy: float,
    cumulative_lung_limit_gy: float,
    k: float,
) -> tuple[float, float]:
    """(max activity by the session limit, by the cumulative limit), GBq; inf when LSF = 0."""
    session = _non_negative("lung_limit_gy", lung_limit_gy)
    lsf = _lsf("lung_shunt_fraction", lung_shunt_fraction)
    ml = _positive("lung_mass_kg", lung_mass_kg)
    prior = _non_negative("prior_lung_dose_gy", prior_lung_dose_gy)
    cumulative = _non_negative("cumulative_lung_limit_gy", cumulative_lung_limit_gy)
    if lsf == 0.0:
        return math.inf, math.inf
    per_gbq = k * lsf / ml  # Gy per GBq administered
    remaining = max(cumulative - prior, 0.0)
    return session / per_gbq, remaining / per_gbq


def lung_max_activity_gbq(
    lung_shunt_fraction: float,
    lung_mass_kg: float = LUNG_MASS_CONVENTION_KG,
    *,
    lung_limit_gy: float = LUNG_SESSION_LIMIT_GY,
    prior_lung_dose_gy: float = 0.0,
    cumulative_lung_limit_gy: float = LUNG_CUMULATIVE_LIMIT_GY,
    k_gy_kg_per_gbq: float = K_GY_KG_PER_GBQ_DEFAULT,
) -> float:
    """Largest administered activity (GBq) that keeps the lung within ``lung_limit_gy`` this session and within
    ``cumulative_lung_limit_gy`` together with ``prior_lung_dose_gy`` (sum of the lung doses of all earlier
    radioembolizations). ``inf`` when LSF = 0; 0 when the cumulative budget is already spent."""
    a_session, a_cumulative = _lung_limits_gbq(
        lung_limit_gy, lung_shunt_fraction, lung_mass_kg, prior_lung_dose_gy, cumulative_lung_limit_gy,
        _k(k_gy_kg_per_gbq),
    )
    return min(a_session, a_cumulative)


# --------------------------------------------------------------------------------------------------- partition
@dataclass(frozen=True)
class PartitionDoses:
    """Mean absorbed doses of the partition model, Gy."""

    tumor_gy: float
    normal_liver_gy: float
    lung_gy: float


def _partition_inputs(
    lung_shunt_fraction: float, tn_ratio: float, tumor_mass_kg: float, normal_liver_mass_kg: float
) -> tuple[float, float, float, float]:
    lsf = _lsf("lung_shunt_fraction", lung_shunt_fraction)
    tn = _positive("tn_ratio", tn_ratio)
    mt = _positive("tumor_mass_kg", tumor_mass_kg)
    mn = _positive("normal_liver_mass_kg", normal_liver_mass_kg)
    return lsf, tn, mt, mn


def partition_doses(
    activity_gbq: float,
    lung_shunt_fraction: float,
    tn_ratio: float,
    tumor_mass_kg: float,
    normal_liver_mass_kg: float,
    lung_mass_kg: float,
    k_gy_kg_per_gbq: float = K_GY_KG_PER_GBQ_DEFAULT,
) -> PartitionDoses:
    """Partition-model doses for an administered activity (Ho et al. 1996):
    ``D_N = K A (1 - LSF) / (M_N + T/N M_T)``, ``D_T = T/N D_N``, ``D_L = K A LSF / M_L``."""
    a = _non_negative("activity_gbq", activity_gbq)
    lsf, tn, mt, mn = _partition_inputs(lung_shunt_fraction, tn_ratio, tumor_mass_kg, normal_liver_mass_kg)
    k = _k(k_gy_kg_per_gbq)
    d_n = k * a * (1.0 - lsf) / (mn + tn * mt)
    return PartitionDoses(
        tumor_gy=tn * d_n,
        normal_liver_gy=d_n,
        lung_gy=lung_dose_gy(a, lsf, lung_mass_kg, k_gy_kg_per_gbq=k),
    )


def partition_activity_for_tumor_dose_gbq(
    target_tumor_gy: float,
    lung_shunt_fraction: float,
    tn_ratio: float,
    tumor_mass_kg: float,
    normal_liver_mass_kg: float,
    *,
    k_gy_kg_per_gbq: float = K_GY_KG_PER_GBQ_DEFAULT,
) -> float:
    """Administered activity that gives the tumour ``target_tumor_gy``:
    ``A = D_T (M_N + T/N M_T) / (T/N K (1 - LSF))``."""
    d = _non_negative("target_tumor_gy", target_tumor_gy)
    lsf, tn, mt, mn = _partition_inputs(lung_shunt_fraction, tn_ratio, tumor_mass_kg, normal_liver_mass_kg)
    return d * (mn + tn * mt) / (tn * _k(k_gy_kg_per_gbq) * (1.0 - lsf))


def partition_activity_for_normal_liver_dose_gbq(
    normal_liver_gy: float,
    lung_shunt_fraction: float,
    tn_ratio: float,
    tumor_mass_kg: float,
    normal_liver_mass_kg: float,
    *,
    k_gy_kg_per_gbq: float = K_GY_KG_PER_GBQ_DEFAULT,
) -> float:
    """Administered activity that gives the non-tumour liver ``normal_liver_gy``:
    ``A = D_N (M_N + T/N M_T) / (K (1 - LSF))``."""
    d = _non_negative("normal_liver_gy", normal_liver_gy)
    lsf, tn, mt, mn = _partition_inputs(lung_shunt_fraction, tn_ratio, tumor_mass_kg, normal_liver_mass_kg)
    return d * (mn + tn * mt) / (_k(k_gy_kg_per_gbq) * (1.0 - lsf))


#: Names of the constraints a maximum activity can be bound by, in tie-break order.
_CONSTRAINTS = ("normal_liver", "lung_session", "lung_cumulative")


@dataclass(frozen=True)
class MaxActivity:
    """The largest administered activity within every limit.

    ``binding_constraint`` is the constraint that sets it: ``"normal_liver"``, ``"lung_session"`` or
    ``"lung_cumulative"`` (ties resolved in that order); ``activity_by_constraint_gbq`` gives the activity each
    constraint alone would allow (``inf`` for the lung when LSF = 0)."""

    activity_gbq: float
    binding_constraint: str
    activity_by_constraint_gbq: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "activity_by_constraint_gbq", MappingProxyType(dict(self.activity_by_constraint_gbq))
        )


def partition_max_activity(
    normal_liver_limit_gy: float,
    lung_limit_gy: float,
    lung_shunt_fraction: float,
    tn_ratio: float,
    tumor_mass_kg: float,
    normal_liver_mass_kg: float,
    lung_mass_kg: float,
    *,
    prior_lung_dose_gy: float = 0.0,
    cumulative_lung_limit_gy: float = LUNG_CUMULATIVE_LIMIT_GY,
    k_gy_kg_per_gbq: float = K_GY_KG_PER_GBQ_DEFAULT,
) -> MaxActivity:
    """Largest activity that keeps the non-tumour liver <= ``normal_liver_limit_gy``, the lung <= ``lung_limit_gy``
    this session and the lung <= ``cumulative_lung_limit_gy`` including ``prior_lung_dose_gy``; which one binds.

    The limits themselves are data (the Thresholds model, e.g. resin non-tumour liver 40 Gy, lung 30/50 Gy)."""
    k = _k(k_gy_kg_per_gbq)
    a_liver = partition_activity_for_normal_liver_dose_gbq(
        _non_negative("normal_liver_limit_gy", normal_liver_limit_gy),
        lung_shunt_fraction,
        tn_ratio,
        tumor_mass_kg,
        normal_liver_mass_kg,
        k_gy_kg_per_gbq=k,
    )
    a_session, a_cumulative = _lung_limits_gbq(
        lung_limit_gy, lung_shunt_fraction, lung_mass_kg, prior_lung_dose_gy, cumulative_lung_limit_gy, k
    )
    by = dict(zip(_CONSTRAINTS, (a_liver, a_session, a_cumulative), strict=True))
    binding = min(_CONSTRAINTS, key=lambda name: by[name])  # min() keeps the first of equal values
    return MaxActivity(activity_gbq=by[binding], binding_constraint=binding, activity_by_constraint_gbq=by)


@dataclass(frozen=True)
class PartitionPrescription:
    """A partition-model prescription.

    ``tumor_target_activity_gbq`` reaches the tumour target; ``max_safe_activity_gbq`` is the largest activity within
    the limits (bound by ``max_safe_binding_constraint``). ``activity_gbq`` is the chosen activity: the tumour
    target activity when it is safe, else the maximum safe activity; ``binding_constraint`` names what set it
    (``"tumor_target"`` or the binding limit). ``conflict`` is True when the target cannot be reached within the
    limits -- the plan must say so. ``doses`` are the doses at ``activity_gbq``."""

    activity_gbq: float
    tumor_target_activity_gbq: float
    max_safe_activity_gbq: float
    binding_constraint: str
    max_safe_binding_constraint: str
    conflict: bool
    doses: PartitionDoses
    target_tumor_gy: float
    activity_by_constraint_gbq: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "activity_by_constraint_gbq", MappingProxyType(dict(self.activity_by_constraint_gbq))
        )


def partition_prescription(
    target_tumor_gy: float,
    normal_liver_limit_gy: float,
    lung_shunt_fraction: float,
    tn_ratio: float,
    tumor_mass_kg: float,
    normal_liver_mass_kg: float,
    lung_mass_kg: float = LUNG_MASS_CONVENTION_KG,
    *,
    lung_limit_gy: float = LUNG_SESSION_LIMIT_GY,
    prior_lung_dose_gy: float = 0.0,
    cumulative_lung_limit_gy: float = LUNG_CUMULATIVE_LIMIT_GY,
    k_gy_kg_per_gbq: float = K_GY_KG_PER_GBQ_DEFAULT,
) -> PartitionPrescription:
    """Prescribe with the partition model: aim at ``target_tumor_gy`` but never exceed the limits
    (see :func:`partition_max_activity`); report a conflict when both cannot hold."""
    k = _k(k_gy_kg_per_gbq)
    a_target = partition_activity_for_tumor_dose_gbq(
        target_tumor_gy, lung_shunt_fraction, tn_ratio, tumor_mass_kg, normal_liver_mass_kg, k_gy_kg_per_gbq=k
    )
    limit = partition_max_activity(
        normal_liver_limit_gy,
        lung_limit_gy,
        lung_shunt_fraction,
        tn_ratio,
        tumor_mass_kg,
        normal_liver_mass_kg,
        lung_mass_kg,
        prior_lung_dose_gy=prior_lung_dose_gy,
        cumulative_lung_limit_gy=cumulative_lung_limit_gy,
        k_gy_kg_per_gbq=k,
    )
    conflict = a_target > limit.activity_gbq
    chosen = limit.activity_gbq if conflict else a_target
    return PartitionPrescription(
        activity_gbq=chosen,
        tumor_target_activity_gbq=a_target,
        max_safe_activity_gbq=limit.activity_gbq,
        binding_constraint=limit.binding_constraint if conflict else "tumor_target",
        max_safe_binding_constraint=limit.binding_constraint,
        conflict=conflict,
        doses=partition_doses(
            chosen, lung_shunt_fraction, tn_ratio, tumor_mass_kg, normal_liver_mass_kg, lung_mass_kg, k
        ),
        target_tumor_gy=float(target_tumor_gy),
        activity_by_constraint_gbq=limit.activity_by_constraint_gbq,
    )


# -------------------------------------------------------------------------------------------- decay and vials
def decay_factor(hours: float, *, half_life_h: float = Y90_HALF_LIFE_H) -> float:
    """A(t)/A(0) = 2^(-t / T1/2) for Y-90 (wraps :func:`embplan.nuclides.decay_factor`); negative ``hours`` go back
    in time (a factor > 1). Raises :class:`DosimetryError` on a non-finite time."""
    h = _number("hours", hours)
    try:
        return nuclides.decay_factor(h, half_life_h)
    except DosimetryError:
        raise
    except EmbplanError as exc:
        raise DosimetryError(str(exc)) from exc


def activity_at_gbq(activity_gbq: float, hours: float, *, half_life_h: float = Y90_HALF_LIFE_H) -> float:
    """Activity ``hours`` after a reference time at which it was ``activity_gbq`` (e.g. calibration ->
    administration); negative ``hours`` give the activity before the reference time."""
    a = _non_negative("activity_gbq", activity_gbq)
    return a * decay_factor(hours, half_life_h=half_life_h)


def _aware(name: str, value: object) -> datetime:
    if not isinstance(value, datetime):
        raise DosimetryError(f"{name}: must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise DosimetryError(f"{name}: must be timezone-aware (e.g. UTC), got a naive datetime {value.isoformat()}")
    return value


def hours_between(start: datetime, end: datetime) -> float:
    """Hours from ``start`` to ``end`` (negative when ``end`` is earlier); both must be timezone-aware."""
    s = _aware("start", start)
    e = _aware("end", end)
    return (e - s).total_seconds() / 3600.0


def activity_at_time_gbq(
    activity_gbq: float, reference_time: datetime, at_time: datetime, *, half_life_h: float = Y90_HALF_LIFE_H
) -> float:
    """Activity at ``at_time`` of a source that was ``activity_gbq`` at ``reference_time`` (timezone-aware)."""
    return activity_at_gbq(activity_gbq, hours_between(reference_time, at_time), half_life_h=half_life_h)


def delivered_activity_gbq(vial_activity_gbq: float, residual_fraction: float = 0.0) -> float:
    """Activity that reaches the patient: ``(1 - residual) x activity in the vial`` at administration; the residual
    is what stays in vial and tubing (measured by the site; Hoang et al. JVIR 2019: median 0.6 % glass,
    3 % resin, up to 16-20 % for small activities)."""
    a = _non_negative("vial_activity_gbq", vial_activity_gbq)
    r = _lsf("residual_fraction", residual_fraction)
    return a * (1.0 - r)


def required_vial_activity_gbq(delivered_gbq: float, residual_fraction: float = 0.0) -> float:
    """Vial activity at administration needed to deliver ``delivered_gbq``: ``delivered / (1 - residual)``."""
    a = _non_negative("delivered_gbq", delivered_gbq)
    r = _lsf("residual_fraction", residual_fraction)
    return a / (1.0 - r)


@dataclass(frozen=True)
class VialOption:
    """One (vial, treatment time) combination: the nominal vial activity at calibration, the treatment time
    (hours after calibration, and the datetime when calibration and treatment datetimes were given), the vial
    activity at treatment, the activity delivered after the residual, and its deviation from the prescription
    ``(delivered - required) / required``."""

    vial_gbq: float
    hours_after_calibration: float
    vial_activity_at_treatment_gbq: float
    delivered_gbq: float
    deviation_fraction: float
    treatment_time: datetime | None = None
    calibration_time: datetime | None = None


def glass_vial_options(
    required_gbq_at_treatment: float,
    *,
    hours_after_calibration: Sequence[float] | None = None,
    calibration_time: datetime | None = None,
    treatment_times: Sequence[datetime] | None = None,
    vial_sizes_gbq: Sequence[float] = GLASS_VIAL_SIZES_GBQ,
    residual_fraction: float = 0.0,
    half_life_h: float = Y90_HALF_LIFE_H,
) -> tuple[VialOption, ...]:
    """Every (vial size, candidate treatment time) with the activity it delivers, sorted by vial size then time.

    Candidate times are either ``hours_after_calibration`` or ``treatment_times`` together with
    ``calibration_time`` (all timezone-aware). The calibration datetime is an input: it is printed on the vial
    (it is commonly reported as 12:00 US Eastern on the Sunday of the calibration week [U: not verified here]).
    ``required_gbq_at_treatment`` is the activity to *deliver* into the patient.
    """
    required = _positive("required_gbq_at_treatment", required_gbq_at_treatment)
    r = _lsf("residual_fraction", residual_fraction)
    if (hours_after_calibration is None) == (treatment_times is None):
        raise DosimetryError(
            "hours_after_calibration/treatment_times: give exactly one of them (treatment_times with calibration_time)"
        )
    times: list[datetime | None]
    if treatment_times is not None:
        if calibration_time is None:
            raise DosimetryError("calibration_time: required with treatment_times")
        cal = _aware("calibration_time", calibration_time)
        aware = [_aware(f"treatment_times[{i}]", t) for i, t in enumerate(treatment_times)]
        hours = [hours_between(cal, t) for t in aware]
        times = list(aware)
    else:
        cal = _aware("calibration_time", calibration_time) if calibration_time is not None else None
        hours = [_number(f"hours_after_calibration[{i}]", h) for i, h in enumerate(hours_after_calibration or ())]
        times = [None if cal is None else cal + timedelta(hours=h) for h in hours]
    if not hours:
        raise DosimetryError("hours_after_calibration/treatment_times: no candidate treatment time given")
    sizes = sorted(_positive(f"vial_sizes_gbq[{i}]", v) for i, v in enumerate(vial_sizes_gbq))
    if not sizes:
        raise DosimetryError("vial_sizes_gbq: no vial size given")
    options = []
    for size in sizes:
        for h, t in sorted(zip(hours, times, strict=True), key=lambda p: p[0]):
            in_vial = activity_at_gbq(size, h, half_life_h=half_life_h)
            delivered = in_vial * (1.0 - r)
            options.append(
                VialOption(
                    vial_gbq=size,
                    hours_after_calibration=h,
                    vial_activity_at_treatment_gbq=in_vial,
                    delivered_gbq=delivered,
                    deviation_fraction=(delivered - required) / required,
                    treatment_time=t,
                    calibration_time=cal,
                )
            )
    return tuple(options)


def glass_vial_choice(
    required_gbq_at_treatment: float,
    *,
    hours_after_calibration: Sequence[float] | None = None,
    calibration_time: datetime | None = None,
    treatment_times: Sequence[datetime] | None = None,
    vial_sizes_gbq: Sequence[float] = GLASS_VIAL_SIZES_GBQ,
    tolerance_fraction: float = VIAL_TOLERANCE_FRACTION,
    residual_fraction: float = 0.0,
    half_life_h: float = Y90_HALF_LIFE_H,
) -> VialOption | None:
    """The smallest standard glass vial, and the candidate treatment time, that deliver the prescription within
    ``tolerance_fraction`` (|delivered - required| <= tolerance x required). Among the times that fit the smallest
    vial, the one closest to the prescription wins (the earliest on a tie). ``None`` when no combination fits.
    Arguments as :func:`glass_vial_options`."""
    tol = _number("tolerance_fraction", tolerance_fraction)
    if not 0.0 <= tol < 1.0:
        raise DosimetryError(f"tolerance_fraction: must be in [0, 1), got {tolerance_fraction!r}")
    options = glass_vial_options(
        required_gbq_at_treatment,
        hours_after_calibration=hours_after_calibration,
        calibration_time=calibration_time,
        treatment_times=treatment_times,
        vial_sizes_gbq=vial_sizes_gbq,
        residual_fraction=residual_fraction,
        half_life_h=half_life_h,
    )
    fitting = [o for o in options if abs(o.deviation_fraction) <= tol * (1.0 + 1e-12)]
    if not fitting:
        return None
    smallest = min(o.vial_gbq for o in fitting)
    return min(
        (o for o in fitting if o.vial_gbq == smallest),
        key=lambda o: (abs(o.deviation_fraction), o.hours_after_calibration),
    )


#: Step of the candidate treatment times when no administration time is given, hours: the vendor's decay tables
#: give the vial activity hour by hour after calibration (TheraSphere package insert: T1/2 64.1 h = 2.67 d) [U:
#: table layout not read verbatim]. One hour of Y-90 decay is 1.08 %.
GLASS_VIAL_SEARCH_STEP_H: float = 1.0


@dataclass(frozen=True)
class VialDelivery:
    """The vial chosen to deliver a prescription: the option, whether it is within the tolerance, and why."""

    option: VialOption
    within_tolerance: bool
    exact: bool
    tolerance_fraction: float
    rule: str


def glass_vial_for_delivery(
    required_gbq_at_treatment: float,
    *,
    hours_after_calibration: Sequence[float],
    vial_sizes_gbq: Sequence[float] = GLASS_VIAL_SIZES_GBQ,
    tolerance_fraction: float = VIAL_TOLERANCE_FRACTION,
    residual_fraction: float = 0.0,
    prefer: str = "over",
    match_fraction: float | None = None,
    half_life_h: float = Y90_HALF_LIFE_H,
) -> VialDelivery:
    """The glass vial and treatment time that deliver ``required_gbq_at_treatment``, as the vendor's decay tables
    are used: order the vial size whose activity at the treatment time is the prescription.

    1. *Exact*: the smallest vial that, at one of the candidate times, delivers the prescription to within
       ``match_fraction`` (default: the decay over one step of the candidate times, or 1.09 % for a single time) on
       the ``prefer`` side (``"over"``: never below, when the activity aims at a target; ``"under"``: never above,
       when a limit binds); the closest such time.
    2. Else the smallest vial within ``tolerance_fraction`` either side, at its closest time.
    3. Else the closest option of all, with ``within_tolerance`` False: the plan must flag it.

    (The earlier rule, the smallest vial within 10 % on whole days after calibration, chose a 7 GBq vial 96 h after
    calibration for a 2.62 GBq prescription; the 3 GBq vial delivers it 12.5 h after calibration.)
    """
    if prefer not in ("over", "under"):
        raise DosimetryError(f"prefer: must be 'over' or 'under', got {prefer!r}")
    tol = _number("tolerance_fraction", tolerance_fraction)
    if not 0.0 <= tol < 1.0:
        raise DosimetryError(f"tolerance_fraction: must be in [0, 1), got {tolerance_fraction!r}")
    hours = sorted(_number(f"hours_after_calibration[{i}]", h) for i, h in enumerate(hours_after_calibration))
    if match_fraction is None:
        step = min((b - a for a, b in zip(hours, hours[1:], strict=False) if b > a), default=GLASS_VIAL_SEARCH_STEP_H)
        # one step of decay seen from the lower activity: 2^(step / T1/2) - 1 (1.087 % for one hour), so that the
        # hour before the exact time always matches on the "over" side
        match = 1.0 / decay_factor(step, half_life_h=half_life_h) - 1.0
    else:
        match = _number("match_fraction", match_fraction)
        if not 0.0 <= match < 1.0:
            raise DosimetryError(f"match_fraction: must be in [0, 1), got {match_fraction!r}")
    options = glass_vial_options(
        required_gbq_at_treatment, hours_after_calibration=hours, vial_sizes_gbq=vial_sizes_gbq,
        residual_fraction=residual_fraction, half_life_h=half_life_h,
    )
    eps = 1e-12

    def on_side(o: VialOption) -> bool:
        d = o.deviation_fraction
        return (-eps <= d <= match + eps) if prefer == "over" else (-match - eps <= d <= eps)

    def best(cands: list[VialOption]) -> VialOption:
        smallest = min(o.vial_gbq for o in cands)
        return min((o for o in cands if o.vial_gbq == smallest),
                   key=lambda o: (abs(o.deviation_fraction), o.hours_after_calibration))

    exact = [o for o in options if on_side(o)]
    if exact:
        return VialDelivery(best(exact), True, True, tol,
                            f"smallest vial delivering the prescription within {match:.2%} ({prefer})")
    within = [o for o in options if abs(o.deviation_fraction) <= tol * (1.0 + eps)]
    if within:
        return VialDelivery(best(within), True, False, tol, f"smallest vial within the tolerance {tol:.0%}")
    closest = min(options, key=lambda o: (abs(o.deviation_fraction), o.vial_gbq, o.hours_after_calibration))
    return VialDelivery(closest, False, False, tol, f"no vial within the tolerance {tol:.0%}: the closest")
