"""Body surface area against hand calculations of the published formulas."""

import math

import pytest

from embplan.anthropometry import body_surface_area_m2
from embplan.errors import EmbplanError


def test_du_bois_by_hand():
    # 0.007184 * 64^0.425 * 168^0.725 = 0.007184 * 5.85638 * 41.0540 = 1.72720
    assert body_surface_area_m2(64.0, 168.0) == pytest.approx(1.72720, abs=5e-5)


def test_mosteller_by_hand():
    assert body_surface_area_m2(81.0, 144.0, "mosteller") == pytest.approx(math.sqrt(81.0 * 144.0 / 3600.0))
    assert body_surface_area_m2(81.0, 144.0, "mosteller") == pytest.approx(1.8, rel=1e-12)


@pytest.mark.parametrize("w, h", [(0.0, 170.0), (-1.0, 170.0), (70.0, float("nan")), (70.0, float("inf")), (True, 170)])
def test_bad_input_names_the_argument(w, h):
    with pytest.raises(EmbplanError, match="weight_kg|height_cm"):
        body_surface_area_m2(w, h)


def test_unknown_formula():
    with pytest.raises(EmbplanError, match="formula"):
        body_surface_area_m2(70.0, 170.0, "haycock")
