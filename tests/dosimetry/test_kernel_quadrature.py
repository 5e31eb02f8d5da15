"""The voxel-kernel quadrature (``kernels._octant_energy``, vectorised numpy) against the scalar loops it
replaced (the numba code of embplan 7ee6fdf, here as plain Python: same nodes, same operations, same order;
the one edit: ``length**3`` is written as the products numba compiled it to, since CPython's ``pow`` can differ in
the last bit).

The vectorised version was written to do every floating-point operation of the loops in their order, and to
accumulate each sum node after node, so the two agree bit for bit; a coarse quadrature keeps the plain-Python
reference fast while exercising every branch (the corner integrals, sub-boxes clipped by the truncation sphere,
the skipped lower halves at index 0, anisotropic voxels, other densities). The kernel's physics (reference tables,
closed form, Monte Carlo, energy balance) is tested in test_kernels.py."""

from __future__ import annotations

import math

import numpy as np
import pytest

from embplan.dosimetry import kernels as km


# ------------------------------------------------------------------------- the former compiled loops, verbatim
def _de_dr_loops(r, breaks, coefs, r_max):
    """dE/dr at r (MeV/mm) from the piecewise quadratic; 0 beyond r_max (the truncation radius)."""
    if r > r_max or r > breaks[-1]:
        return 0.0
    m = np.searchsorted(breaks, r, side="right") - 1
    if m < 0:
        m = 0
    elif m > coefs.shape[0] - 1:
        m = coefs.shape[0] - 1
    dx = r - breaks[m]
    val = (coefs[m, 0] * dx + coefs[m, 1]) * dx + coefs[m, 2]
    return val if val > 0.0 else 0.0


def _corner_integrals_loops(s, breaks, coefs, r_max, cell_mm, x3, w3, xf, wf):
    """I[e] = integral over the box [0, s0] x [0, s1] x [0, s2] of prod_d g_d(u_d) * k(|u|), MeV, for the 8 choices
    g_d = 1 - u_d/s_d (e_d = 0) or u_d/s_d (e_d = 1); k = (dE/dr) / (4 pi r^2).

    Duffy coordinates: the box is 3 pyramids with apex at the origin, one per far face; on each, the rays to a
    Gauss-Legendre grid on the face, and along each ray the exact integral of the polynomial weight times dE/dr
    (Gauss-Legendre(3) on every interval of the E(r) table). The 1/r^2 is cancelled by the Jacobian.
    """
    out = np.zeros((2, 2, 2))
    v = np.empty(3)
    n_eval = 0
    nb = breaks.size
    for face in range(3):
        a = (face + 1) % 3
        b = (face + 2) % 3
        # face cells no larger than the apex distance: the ray density ~ 1/L^3 stays resolved for long voxels
        h_face = min(cell_mm, s[face])
        na = max(1, int(math.ceil(s[a] / h_face - 1e-9)))
        nbb = max(1, int(math.ceil(s[b] / h_face - 1e-9)))
        ha = s[a] / na
        hb = s[b] / nbb
        for ca in range(na):
            for ia in range(xf.size):
                pa = (ca + 0.5 * (xf[ia] + 1.0)) * ha
                wa = 0.5 * ha * wf[ia]
                for cb in range(nbb):
                    for ib in range(xf.size):
                        pb = (cb + 0.5 * (xf[ib] + 1.0)) * hb
                        wb = 0.5 * hb * wf[ib]
                        v[face] = s[face]
                        v[a] = pa
                        v[b] = pb
                        length = math.sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2])
                        wray = wa * wb * s[face] / (4.0 * math.pi * (length * length * length))  # numba: x**3 as products
                        rend = min(length, r_max)
                        for m in range(nb - 1):
                            lo = breaks[m]
                            if lo >= rend:
                                break
                            hi = min(breaks[m + 1], rend)
                            for q in range(3):
                                r = lo + 0.5 * (x3[q] + 1.0) * (hi - lo)
                                dx = r - lo
                                de = (coefs[m, 0] * dx + coefs[m, 1]) * dx + coefs[m, 2]
                                if de <= 0.0:
                                    continue
                                w = wray * 0.5 * (hi - lo) * w3[q] * de
                                t = r / length
                                g1z = t * v[0] / s[0]
                                g1y = t * v[1] / s[1]
                                g1x = t * v[2] / s[2]
                                n_eval += 1
                                for ez in range(2):
                                    gz = g1z if ez == 1 else 1.0 - g1z
                                    for ey in range(2):
                                        gy = g1y if ey == 1 else 1.0 - g1y
                                        for ex in range(2):
                                            gx = g1x if ex == 1 else 1.0 - g1x
                                            out[ez, ey, ex] += w * gz * gy * gx
    return out, n_eval


def _box_integral_loops(lo, hi, up, s, o, breaks, coefs, r_max, cell_mm, xf, wf):
    """Integral over the box [lo, hi] (positive octant, away from the origin) intersected with the ball |u| <= r_max
    of prod_d g_d(u_d) k(|u|), with g_d = 1 - (u_d - o_d)/s_d on the upper half (up[d]) and 1 + (u_d - o_d)/s_d on
    the lower half. Nested Gauss-Legendre: the x range is clipped to the ball for each (z, y) node and the y range
    for each z node, so the truncation sphere is a boundary of the domain, never a jump inside a cell."""
    nq = xf.size
    rr = r_max * r_max
    total = 0.0
    n_eval = 0
    # cells no larger than the distance to the singularity, so that 1/r^2 stays resolved for long voxels
    cell_mm = min(cell_mm, math.sqrt(lo[0] * lo[0] + lo[1] * lo[1] + lo[2] * lo[2]))
    z_top = min(hi[0], math.sqrt(max(0.0, rr - lo[1] * lo[1] - lo[2] * lo[2])))
    if z_top <= lo[0]:
        return 0.0, 0
    nz = max(1, int(math.ceil((z_top - lo[0]) / cell_mm - 1e-9)))
    hz = (z_top - lo[0]) / nz
    for cz in range(nz):
        for iz in range(nq):
            uz = lo[0] + (cz + 0.5 * (xf[iz] + 1.0)) * hz
            gz = 1.0 - (uz - o[0]) / s[0] if up[0] else 1.0 + (uz - o[0]) / s[0]
            wz = 0.5 * hz * wf[iz] * gz
            y_top = min(hi[1], math.sqrt(max(0.0, rr - uz * uz - lo[2] * lo[2])))
            if y_top <= lo[1]:
                continue
            ny = max(1, int(math.ceil((y_top - lo[1]) / cell_mm - 1e-9)))
            hy = (y_top - lo[1]) / ny
            for cy in range(ny):
                for iy in range(nq):
                    uy = lo[1] + (cy + 0.5 * (xf[iy] + 1.0)) * hy
                    gy = 1.0 - (uy - o[1]) / s[1] if up[1] else 1.0 + (uy - o[1]) / s[1]
                    wy = wz * 0.5 * hy * wf[iy] * gy
                    r2zy = uz * uz + uy * uy
                    x_top = min(hi[2], math.sqrt(max(0.0, rr - r2zy)))
                    if x_top <= lo[2]:
                        continue
                    nx = max(1, int(math.ceil((x_top - lo[2]) / cell_mm - 1e-9)))
                    hx = (x_top - lo[2]) / nx
                    for cx in range(nx):
                        for ix in range(nq):
                            ux = lo[2] + (cx + 0.5 * (xf[ix] + 1.0)) * hx
                            r = math.sqrt(r2zy + ux * ux)
                            gx = 1.0 - (ux - o[2]) / s[2] if up[2] else 1.0 + (ux - o[2]) / s[2]
                            n_eval += 1
                            de = _de_dr_loops(r, breaks, coefs, r_max * (1.0 + 1e-12))
                            total += wy * 0.5 * hx * wf[ix] * gx * de / (4.0 * math.pi * r * r)
    return total, n_eval


def _octant_energy_loops(s, breaks, coefs, r_max, cell_mm, x3, w3, xf, wf, out):
    """Energy (MeV per decay) deposited in every target voxel (i, j, k) >= 0 of ``out`` (the octant)."""
    corner, n_eval = _corner_integrals_loops(s, breaks, coefs, r_max, cell_mm, x3, w3, xf, wf)
    lo = np.empty(3)
    hi = np.empty(3)
    o = np.empty(3)
    up = np.zeros(3, dtype=np.bool_)
    idx = np.empty(3, dtype=np.int64)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            for k in range(out.shape[2]):
                idx[0] = i
                idx[1] = j
                idx[2] = k
                total = 0.0
                for half_code in range(8):
                    # bit d set: the upper half [o_d, o_d + s_d] in dimension d, else the lower [o_d - s_d, o_d].
                    # For index 0 the lower half mirrors the upper one (k depends on |u|): counted twice instead.
                    skip = False
                    mult = 1.0
                    cornered = True
                    dist2 = 0.0
                    for d in range(3):
                        upper = (half_code >> d) & 1 == 1
                        o[d] = idx[d] * s[d]
                        if idx[d] == 0:
                            if not upper:
                                skip = True
                            mult *= 2.0
                        up[d] = upper
                        if upper:
                            lo[d] = o[d]
                            hi[d] = o[d] + s[d]
                        else:
                            lo[d] = o[d] - s[d]
                            hi[d] = o[d]
                        if lo[d] != 0.0:
                            cornered = False
                        dist2 += lo[d] * lo[d]
                    if skip or dist2 >= r_max * r_max:
                        continue
                    if cornered:
                        # [0, s_d] in every dimension: g_d = 1 - u/s (index 0, upper half) or u/s (index 1, lower)
                        total += mult * corner[min(idx[0], 1), min(idx[1], 1), min(idx[2], 1)]
                    else:
                        value, ne = _box_integral_loops(lo, hi, up, s, o, breaks, coefs, r_max, cell_mm, xf, wf)
                        total += mult * value
                        n_eval += ne
                out[i, j, k] = total
    return n_eval


# --------------------------------------------------------------------------------------------------------- tests
def _inputs(voxel, density, cell_water_mm, nodes, trunc_mm=11.0):
    pk = km.graves2019_y90_point_kernel()
    scale = pk.density_g_cm3 / density
    radius = trunc_mm * scale
    half = tuple(max(1, math.ceil(radius / s - 1.0e-9)) for s in voxel)
    deriv = pk._interpolant.derivative()
    breaks = np.ascontiguousarray(deriv.x * scale)
    coefs = np.ascontiguousarray((deriv.c * np.array([scale**-3, scale**-2, scale**-1])[:, None]).T)
    x3, w3 = np.polynomial.legendre.leggauss(3)
    xf, wf = np.polynomial.legendre.leggauss(nodes)
    args = (np.asarray(voxel, dtype=float), breaks, coefs, radius, cell_water_mm * scale, x3, w3, xf, wf)
    return tuple(h + 1 for h in half), args


@pytest.mark.parametrize(
    ("voxel", "density", "cell_water_mm", "nodes"),
    [
        ((4.42, 4.42, 4.42), 1.04, 4.0, 2),  # the SPECT grid of the clinical case
        ((2.5, 4.0, 4.0), 1.04, 4.0, 2),  # anisotropic, long voxels
        ((4.42, 4.42, 4.42), 0.3, 8.0, 2),  # lung: a wider kernel
        ((6.0, 5.0, 7.0), 2.0, 3.0, 3),  # dense medium, odd node count
    ],
)
def test_vectorised_quadrature_equals_the_former_loops_bit_for_bit(voxel, density, cell_water_mm, nodes):
    shape, args = _inputs(voxel, density, cell_water_mm, nodes)
    corner_ref, n_ref = _corner_integrals_loops(*args)
    corner, n_corner = km._corner_integrals(*args)
    assert n_corner == n_ref > 0
    np.testing.assert_array_equal(corner, corner_ref)
    ref = np.zeros(shape)
    new = np.zeros(shape)
    n_eval_ref = _octant_energy_loops(*args, ref)
    n_eval = km._octant_energy(*args, new)
    assert n_eval == n_eval_ref
    assert np.count_nonzero(ref) > ref.size // 2  # a real kernel, not an empty octant
    np.testing.assert_array_equal(new, ref)


def test_de_dr_matches_the_scalar_evaluation_at_breaks_and_beyond():
    _, (_, breaks, coefs, r_max, *_rest) = _inputs((4.42, 4.42, 4.42), 1.04, 1.5, 4)
    r = np.concatenate([breaks, 0.5 * (breaks[1:] + breaks[:-1]), [r_max, r_max * (1 + 1e-13), breaks[-1] + 1.0]])
    got = km._de_dr(r, breaks, coefs, r_max)
    want = np.array([_de_dr_loops(x, breaks, coefs, r_max) for x in r])
    np.testing.assert_array_equal(got, want)
    assert got[-1] == 0.0 and got[-2] == 0.0  # beyond the truncation radius
