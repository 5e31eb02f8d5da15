"""TARE: prescription methods, times, and no protocol deviation beyond the territory."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from embplan.protocols import TARE_STANDARD, TAREPrescription, TAREProcedure, TAREStandard


def _tare(**changes: Any) -> TAREProcedure:
    data: dict[str, Any] = {
        "kind": "TARE", "date": "2026-12-10", "territory": {"scope": "lobar", "lobe": "right"}, "device": "resin",
        "prescription": {"method": "partition", "tumor_dose_target_gy": 120.0, "normal_liver_dose_limit_gy": 40.0},
    }
    data.update(changes)
    return TAREProcedure.model_validate(data)


@pytest.mark.parametrize("scope", [{"scope": "segmental", "segments": [2, 3]}, {"scope": "lobar", "lobe": "left"},
                                   {"scope": "whole_liver"}])
@pytest.mark.parametrize("device", ["resin", "glass"])
def test_no_deviation_for_any_standard_territory_or_device(scope: dict[str, Any], device: str) -> None:
    proc = _tare(territory=scope, device=device)
    assert proc.deviations() == []
    assert proc.is_whole_liver == (scope["scope"] == "whole_liver")


def test_standard_and_narrowed_site_standard() -> None:
    assert set(TARE_STANDARD.devices) == {"resin", "glass"}
    assert set(TARE_STANDARD.scopes) == {"segmental", "lobar", "whole_liver"}
    site = TAREStandard(scopes=("segmental", "lobar"))
    (dev,) = _tare(territory={"scope": "whole_liver"}).deviations(site)
    assert dev.parameter == "territory.scope" and dev.value == "whole_liver"


@pytest.mark.parametrize(("prescription", "ok"), [
    ({"method": "partition", "tumor_dose_target_gy": 120}, True),
    ({"method": "partition", "activity_gbq": 1.5}, True),
    ({"method": "partition", "normal_liver_dose_limit_gy": 40}, False),
    ({"method": "mird", "perfused_dose_target_gy": 120}, True),
    ({"method": "mird", "activity_gbq": 2.0}, True),
    ({"method": "mird", "tumor_dose_target_gy": 120}, False),
    ({"method": "bsa"}, True),
    ({"method": "bsa", "activity_gbq": 0}, False),
    ({"method": "bsa", "activity_gbq": 30.5}, False),
    ({"method": "partition", "tumor_dose_target_gy": -120}, False),
    ({"method": "partition", "tumor_dose_target_gy": 120, "lung_dose_limit_gy": 201}, False),
    ({"method": "voxel"}, False),
])
def test_prescription_method_needs(prescription: dict[str, Any], ok: bool) -> None:
    if ok:
        assert TAREPrescription.model_validate(prescription).method == prescription["method"]
    else:
        with pytest.raises(ValidationError):
            TAREPrescription.model_validate(prescription)


def test_times_and_residual() -> None:
    proc = _tare(calibration_datetime="2026-12-09T18:00:00+00:00", administration_datetime="2026-12-10T10:30:00+01:00",
                 residual_fraction=0.03)
    assert proc.administration_datetime is not None and proc.administration_datetime.hour == 10
    with pytest.raises(ValidationError, match="both times"):
        _tare(calibration_datetime="2026-12-09T18:00:00+00:00", administration_datetime="2026-12-10T10:30:00")
    with pytest.raises(ValidationError):
        _tare(administration_datetime="10 Dec 2026 10:30")
    with pytest.raises(ValidationError):
        _tare(administration_datetime="2026-12-10")  # a date without a time
    with pytest.raises(ValidationError):
        _tare(residual_fraction=1.0)
    with pytest.raises(ValidationError):
        _tare(residual_fraction=-0.1)


def test_required_fields() -> None:
    for key in ("device", "prescription", "territory"):
        data = _tare().model_dump(mode="json", exclude_none=True)
        del data[key]
        with pytest.raises(ValidationError, match=key):
            TAREProcedure.model_validate(data)


def test_describe() -> None:
    assert _tare().describe() == "TARE (resin Y-90) of the right lobe: partition model, tumour 120 Gy"
