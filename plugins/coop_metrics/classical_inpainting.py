"""Classical inpainting baselines of TPAMI Table 5 / AAAI Table 1, in numpy/scipy.

Each method fills the missing pixels of one image [C, H, W] (float) given the boolean map
`known` [H, W] of observed pixels; observed pixels are returned unchanged, and each channel is
solved independently (with one factorisation per image where the system does not depend on
the values).  All are boundary-value problems on the pixel lattice:

- ``mrf_l2``: minimise the sum over 4-neighbour pairs (at least one pixel missing) of
  (u_i - u_j)^2 with observed pixels fixed.  Its normal equations say: every missing pixel is
  the average of its existing 4 neighbours (harmonic / Laplace interpolation with natural,
  i.e. Neumann, conditions at the image border); solved as one sparse linear system.
- ``mrf_l1``: the same sum with |u_i - u_j| (anisotropic total variation).  Its minimiser is
  often not unique, so we minimise the Charbonnier-smoothed sum of sqrt((u_i - u_j)^2 + eps^2),
  eps = 1e-3 x the observed value range, which has one minimiser (Newton's method with
  backtracking from the MRF-l2 solution, continued from eps x 100 down to eps; the same fixed
  point as iteratively reweighted least squares, reached in tens instead of hundreds of solves).
- ``mrf_l1_lp``: the unsmoothed l1 problem solved exactly as a linear programme (scipy's HiGHS;
  variables u and t_ij >= |u_i - u_j|); it returns a vertex of the set of minimisers.

The interpolation methods follow the descriptions in the help text of John D'Errico's
MATLAB ``inpaint_nans`` (File Exchange 4551; our own implementation, written from those
descriptions, not from its code).  "Fits" below means that every pixel of a finite-difference
stencil lies inside the image; stencils that do not fit are left out, which is what makes the
del^2 methods extrapolate linearly towards the border:

- ``inpaint_nans_0``: least squares on the del^2 equations (second difference along rows
  where it fits + along columns where it fits) written at the missing pixels and their
  4-neighbours.
- ``inpaint_nans_1``: the same del^2 operator applied at every pixel of the image, keeping the
  equations that involve a missing pixel.  In 2-D this is the same least-squares problem as
  method 0 (the original builds it differently to save memory); both are kept so the table's
  columns exist.
- ``inpaint_nans_2``: a square system, one del^2 equation per missing pixel (the sparsest
  system; not least squares).  At the four corners, where no centred second difference fits,
  we use the zero-twist equation u_corner - u_right - u_below + u_diagonal = 0 (our choice;
  the help text does not say), which is exact for linear functions and keeps the system
  non-singular when a hole covers a corner.
- ``inpaint_nans_3``: least squares on del^4 (the 13-point biharmonic stencil, 20 at the centre,
  -8 at the 4 neighbours, 2 at the diagonals, 1 two pixels away) at the missing pixels and
  every pixel within two steps of one.  Where the biharmonic stencil does not fit, the order is
  reduced (our reading of "del^4" near the border): the 5-point Laplacian one pixel from the
  border, the second difference along the edge on the border, nothing at the corners.
- ``inpaint_nans_4``: springs of zero rest length between every missing pixel and each of its
  8 neighbours, least squares; diagonal springs have stiffness 1/2 (our choice: the squared
  slope along a diagonal of length sqrt(2)), axis springs 1.
- ``inpaint_nans_5``: every missing pixel equals the average of its existing 8 neighbours (a
  square system); the same as method 4 with diagonal stiffness 1.

A property worth knowing when reading the table: the normal equations of least squares on the
del^2 rows (methods 0 and 1) are del^2 applied to the residual, i.e. a biharmonic equation in
the hole, so methods 0/1 reproduce cubics there while the square del^2 system (method 2) and
MRF-l2 only reproduce harmonic functions; method 3's least squares reproduces quartics.

Every method reproduces a constant image exactly, and a linear ramp exactly when the hole does
not touch the image border; methods 0-3 also across the border (linear extrapolation).
"""
from __future__ import annotations

from functools import lru_cache
from typing import Callable, Iterable, Sequence

import numpy as np
import scipy.sparse as sp
from scipy.ndimage import binary_dilation
from scipy.optimize import linprog
from scipy.sparse.linalg import lsqr, splu

#: (di, dj, coefficient) of a finite-difference stencil around its centre.
Stencil = Sequence[tuple[int, int, float]]
Method = Callable[[np.ndarray, np.ndarray], np.ndarray]

ROW_SECOND: Stencil = ((-1, 0, 1.0), (0, 0, -2.0), (1, 0, 1.0))
COL_SECOND: Stencil = ((0, -1, 1.0), (0, 0, -2.0), (0, 1, 1.0))
LAPLACE_5: Stencil = ((-1, 0, 1.0), (1, 0, 1.0), (0, -1, 1.0), (0, 1, 1.0), (0, 0, -4.0))
BIHARMONIC_13: Stencil = (
    (0, 0, 20.0),
    (-1, 0, -8.0), (1, 0, -8.0), (0, -1, -8.0), (0, 1, -8.0),
    (-1, -1, 2.0), (-1, 1, 2.0), (1, -1, 2.0), (1, 1, 2.0),
    (-2, 0, 1.0), (2, 0, 1.0), (0, -2, 1.0), (0, 2, 1.0),
)
AXIS_NEIGHBOURS = ((1, 0), (0, 1))
DIAGONAL_NEIGHBOURS = ((1, 1), (1, -1))


# ---------------------------------------------------------------------------------------
# Building whole-image operators: one row per pixel (the equation centred there).
def _coordinates(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    return np.meshgrid(np.arange(h), np.arange(w), indexing="ij")


def _operator(h: int, w: int, parts: Iterable[tuple[np.ndarray, Stencil]]) -> sp.csr_matrix:
    """Sum of stencils, each applied at the pixels where its boolean map is true."""
    rows, cols, vals = [], [], []
    for where, stencil in parts:
        ii, jj = np.nonzero(where)
        for di, dj, c in stencil:
            rows.append(ii * w + jj)
            cols.append((ii + di) * w + (jj + dj))
            vals.append(np.full(ii.size, c))
    if not rows:
        return sp.csr_matrix((h * w, h * w))
    return sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(h * w, h * w)
    )


@lru_cache(maxsize=32)
def _del2(h: int, w: int) -> sp.csr_matrix:
    """Second difference along rows where it fits plus along columns where it fits."""
    i, j = _coordinates(h, w)
    return _operator(h, w, [((i >= 1) & (i <= h - 2), ROW_SECOND), ((j >= 1) & (j <= w - 2), COL_SECOND)])


@lru_cache(maxsize=32)
def _del2_with_corners(h: int, w: int) -> sp.csr_matrix:
    """`_del2` plus a zero-twist equation u_c - u_h - u_v + u_d = 0 at each corner (method 2's
    square system).  One-sided second differences would repeat the edges' own equations and
    leave the two edge slopes free when a hole covers a corner; the twist is independent of
    them and, like every other row, exact for linear functions."""
    i, j = _coordinates(h, w)
    parts = []
    for ci, cj in ((0, 0), (0, w - 1), (h - 1, 0), (h - 1, w - 1)):
        si, sj = (1 if ci == 0 else -1), (1 if cj == 0 else -1)
        stencil = ((0, 0, 1.0), (si, 0, -1.0), (0, sj, -1.0), (si, sj, 1.0))
        parts.append(((i == ci) & (j == cj), stencil))
    return (_del2(h, w) + _operator(h, w, parts)).tocsr()


@lru_cache(maxsize=32)
def _del4(h: int, w: int) -> sp.csr_matrix:
    """Biharmonic where it fits; Laplacian one pixel in; edge second difference on the border."""
    i, j = _coordinates(h, w)
    inner_i, inner_j = (i >= 1) & (i <= h - 2), (j >= 1) & (j <= w - 2)
    full = (i >= 2) & (i <= h - 3) & (j >= 2) & (j <= w - 3)
    ring = inner_i & inner_j & ~full
    top_bottom = ((i == 0) | (i == h - 1)) & inner_j
    left_right = ((j == 0) | (j == w - 1)) & inner_i
    return _operator(h, w, [(full, BIHARMONIC_13), (ring, LAPLACE_5), (top_bottom, COL_SECOND), (left_right, ROW_SECOND)])


def _neighbour_pairs(h: int, w: int, offsets: Sequence[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices (a, b) of every unordered pair of pixels at one of the given offsets."""
    i, j = _coordinates(h, w)
    a_all, b_all = [], []
    for di, dj in offsets:
        ok = (i + di >= 0) & (i + di < h) & (j + dj >= 0) & (j + dj < w)
        a_all.append((i * w + j)[ok])
        b_all.append(((i + di) * w + (j + dj))[ok])
    return np.concatenate(a_all), np.concatenate(b_all)


# ---------------------------------------------------------------------------------------
# Solvers.
def _check(image: np.ndarray, known: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    img = np.asarray(image, dtype=np.float64)
    if img.ndim == 2:
        img = img[None]
    if img.ndim != 3 or known.shape != img.shape[1:]:
        raise ValueError(f"expected image [C, H, W] and known [H, W], got {image.shape} and {known.shape}")
    if min(known.shape) < 3:
        raise ValueError(f"images must be at least 3x3, got {known.shape}")
    if not known.any():
        raise ValueError("no observed pixels: there is nothing to interpolate from")
    return img, known.astype(bool)


def _fill(img: np.ndarray, known: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Observed pixels kept, `values` [C, U] written into the missing ones (row-major order)."""
    out = img.copy()
    out[:, ~known] = values
    return out


def _solve_least_squares(a: sp.csr_matrix, b: np.ndarray) -> np.ndarray:
    """min ||A x - b|| for each column of b, through the augmented system
    [[I, A], [A^T, 0]] [r; x] = [b; 0], whose LU does not square A's condition number (the
    normal equations of del^4 would)."""
    r, u = a.shape
    kkt = sp.bmat([[sp.identity(r), a], [a.T, None]], format="csc")
    rhs = np.vstack([b, np.zeros((u, b.shape[1]))])
    try:
        lu = splu(kkt)
    except RuntimeError:  # rank deficient (a hole no equation pins down): minimum-norm fallback
        return _minimum_norm(a, b)
    pivots = np.abs(lu.U.diagonal())
    if pivots.min() <= 1e-10 * pivots.max():
        return _minimum_norm(a, b)
    return lu.solve(rhs)[r:]


def _minimum_norm(a: sp.csr_matrix, b: np.ndarray) -> np.ndarray:
    u = a.shape[1]
    return np.stack([lsqr(a, b[:, c], atol=1e-14, btol=1e-14, iter_lim=100 * u)[0] for c in range(b.shape[1])], 1)


def _solve_square(a: sp.csr_matrix, b: np.ndarray) -> np.ndarray:
    """Direct solve; a singular system (LU raises, or a pivot ~1e-10 of the largest: e.g.
    method 2 on a hole spanning a whole image side, where any linear function vanishing on
    the observed pixels can be added) gets the minimum-norm least-squares solution instead."""
    try:
        lu = splu(a.tocsc())
    except RuntimeError:
        return _minimum_norm(a, b)
    pivots = np.abs(lu.U.diagonal())
    if pivots.min() <= 1e-10 * pivots.max():
        return _minimum_norm(a, b)
    return lu.solve(b)


def _equations(op: sp.csr_matrix, rows: np.ndarray, img: np.ndarray, known: np.ndarray) -> tuple[sp.csr_matrix, np.ndarray]:
    """The rows of `op` at pixels `rows`, split into the unknowns' matrix and a right-hand side
    [R, C] (known pixels moved over); rows that involve no missing pixel are dropped."""
    flat_known = known.ravel()
    sub = op[rows]
    a = sub[:, np.flatnonzero(~flat_known)]
    rhs = -(sub[:, np.flatnonzero(flat_known)] @ img.reshape(img.shape[0], -1)[:, flat_known].T)
    keep = np.asarray(abs(a).sum(axis=1)).ravel() > 0
    return a[keep], rhs[keep]


def _least_squares_method(operator: Callable[[int, int], sp.csr_matrix], reach: np.ndarray | None) -> Method:
    """Least squares on `operator`'s equations at the missing pixels dilated by `reach`
    (None: at every pixel of the image)."""

    def method(image: np.ndarray, known: np.ndarray) -> np.ndarray:
        img, known = _check(image, known)
        if known.all():
            return img.copy()
        h, w = known.shape
        where = np.ones_like(known) if reach is None else binary_dilation(~known, structure=reach)
        a, rhs = _equations(operator(h, w), np.flatnonzero(where), img, known)
        return _fill(img, known, _solve_least_squares(a, rhs).T)

    return method


def _square_method(operator: Callable[[int, int], sp.csr_matrix]) -> Method:
    """One equation of `operator` per missing pixel, solved as a square system."""

    def method(image: np.ndarray, known: np.ndarray) -> np.ndarray:
        img, known = _check(image, known)
        if known.all():
            return img.copy()
        h, w = known.shape
        a, rhs = _equations(operator(h, w), np.flatnonzero(~known), img, known)
        if a.shape[0] != a.shape[1]:  # a missing pixel with no equation: not square any more
            return _fill(img, known, _solve_least_squares(a, rhs).T)
        return _fill(img, known, _solve_square(a, rhs).T)

    return method


def _spring_method(diagonal: float) -> Method:
    """Minimise the weighted sum of (u_i - u_j)^2 over pairs with a missing pixel: axis pairs
    weight 1, diagonal pairs weight `diagonal` (0 = 4-neighbour MRF-l2).  The minimiser solves
    L_UU u_U = -L_UK u_K with L the weighted graph Laplacian (symmetric positive definite
    whenever every hole touches an observed pixel through the graph)."""

    def method(image: np.ndarray, known: np.ndarray) -> np.ndarray:
        img, known = _check(image, known)
        if known.all():
            return img.copy()
        h, w = known.shape
        lap = _graph_laplacian(h, w, diagonal)
        # Rows of L at the missing pixels are exactly the normal equations of those pixels.
        a, rhs = _equations(lap, np.flatnonzero(~known), img, known)
        return _fill(img, known, _solve_square(a, rhs).T)

    return method


@lru_cache(maxsize=32)
def _graph_laplacian(h: int, w: int, diagonal: float) -> sp.csr_matrix:
    a, b = _neighbour_pairs(h, w, AXIS_NEIGHBOURS)
    weights = [np.ones(a.size)]
    if diagonal:
        da, db = _neighbour_pairs(h, w, DIAGONAL_NEIGHBOURS)
        a, b = np.concatenate([a, da]), np.concatenate([b, db])
        weights.append(np.full(da.size, float(diagonal)))
    wt = np.concatenate(weights)
    adj = sp.csr_matrix((np.concatenate([wt, wt]), (np.concatenate([a, b]), np.concatenate([b, a]))), shape=(h * w, h * w))
    return (sp.diags(np.asarray(adj.sum(axis=1)).ravel()) - adj).tocsr()


def _edge_differences(known: np.ndarray) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """The 4-neighbour pairs (a, b) with a missing pixel and the matrix D such that
    u_a - u_b = D u_U + c for each pair, u_U the missing pixels and c from the observed ones."""
    h, w = known.shape
    a, b = _neighbour_pairs(h, w, AXIS_NEIGHBOURS)
    flat_known = known.ravel()
    touches = ~(flat_known[a] & flat_known[b])
    a, b = a[touches], b[touches]
    n_unknown = int((~flat_known).sum())
    unknown_index = np.full(h * w, -1)
    unknown_index[~flat_known] = np.arange(n_unknown)
    rows, cols, vals = [], [], []
    for end, sign in ((a, 1.0), (b, -1.0)):
        free = ~flat_known[end]
        rows.append(np.flatnonzero(free))
        cols.append(unknown_index[end[free]])
        vals.append(np.full(int(free.sum()), sign))
    d = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(a.size, n_unknown))
    return d, a, b


def _edge_offsets(values: np.ndarray, known: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    v, k = values.ravel(), known.ravel()
    return np.where(k[a], v[a], 0.0) - np.where(k[b], v[b], 0.0)


def mrf_l1_lp(image: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Minimise sum |u_i - u_j| over 4-neighbour pairs with a missing pixel exactly, as a linear
    programme (HiGHS).  The minimiser is often not unique; this returns a vertex of the set."""
    img, known = _check(image, known)
    if known.all():
        return img.copy()
    d, a, b = _edge_differences(known)
    n_edges, n_unknown = d.shape
    eye = sp.identity(n_edges, format="csr")
    a_ub = sp.vstack([sp.hstack([d, -eye]), sp.hstack([-d, -eye])], format="csr")
    cost = np.concatenate([np.zeros(n_unknown), np.ones(n_edges)])
    out = img.copy()
    for ch in range(img.shape[0]):
        c = _edge_offsets(img[ch], known, a, b)
        lo, hi = float(img[ch][known].min()), float(img[ch][known].max())
        # Clipping to the observed range never increases the objective, so the bounds lose
        # no optimum and make the LP smaller for the solver.
        bounds = [(lo, hi)] * n_unknown + [(0.0, None)] * n_edges
        res = linprog(cost, A_ub=a_ub, b_ub=np.concatenate([-c, c]), bounds=bounds, method="highs")
        if res.status != 0:
            raise RuntimeError(f"mrf_l1_lp: the linear programme failed: {res.message}")
        out[ch][~known] = res.x[:n_unknown]
    return out


def _charbonnier_newton(d: sp.csr_matrix, c: np.ndarray, u: np.ndarray, eps: float, max_iter: int = 200) -> np.ndarray:
    """Minimise J(u) = sum sqrt((D u + c)^2 + eps^2) by Newton's method with backtracking.

    J is smooth and strictly convex (when every hole touches an observed pixel), so the
    minimiser is unique; Newton needs ~15-60 sparse solves where IRLS needs hundreds."""

    def objective(x: np.ndarray) -> float:
        r = d @ x + c
        return float(np.sqrt(r * r + eps * eps).sum())

    for _ in range(max_iter):
        r = d @ u + c
        s = np.sqrt(r * r + eps * eps)
        grad = d.T @ (r / s)
        hess = (d.T @ sp.diags(eps * eps / s**3) @ d).tocsc()
        try:
            step = -splu(hess).solve(grad)
        except RuntimeError:  # singular Hessian: fall back to steepest descent
            step = -grad
        decrement = -float(grad @ step)
        j0 = objective(u)
        if decrement <= 1e-12 * (1.0 + j0):
            break
        t = 1.0
        while objective(u + t * step) > j0 - 1e-4 * t * decrement and t > 1e-10:
            t *= 0.5
        u = u + t * step
    return u


def mrf_l1(image: np.ndarray, known: np.ndarray, eps_fraction: float = 1e-3) -> np.ndarray:
    """MRF-l1 with the Charbonnier potential sqrt(d^2 + eps^2) ~ |d| (eps = eps_fraction x the
    observed value range), minimised by Newton's method from the MRF-l2 solution.

    The plain l1 problem (`mrf_l1_lp`) usually has a whole set of minimisers (any monotone
    profile across a flat stretch costs the same); the smoothing picks one unique, central
    member of it.  On 64x64 digits with M30 holes the two differ by ~0.04 in error, so the choice
    matters and is stated."""
    img, known = _check(image, known)
    if known.all():
        return img.copy()
    start = CLASSICAL_METHODS["mrf_l2"](img, known)
    d, a, b = _edge_differences(known)
    out = img.copy()
    for ch in range(img.shape[0]):
        spread = float(np.ptp(img[ch][known]))
        if spread == 0.0:  # constant boundary: the constant is the unique minimiser
            out[ch][~known] = img[ch][known][0]
            continue
        c = _edge_offsets(img[ch], known, a, b)
        u = start[ch][~known]
        # Continuation: minimise with a 10x larger eps first (a smoother problem Newton solves
        # in a few steps) and warm-start each smaller eps from it; the last stage is the
        # problem stated above, solved to the same tolerance, with about half the solves.
        for eps in _eps_schedule(eps_fraction * spread, spread):
            u = _charbonnier_newton(d, c, u, eps)
        out[ch][~known] = u
    return out


def _eps_schedule(eps: float, spread: float) -> list[float]:
    """Decreasing smoothing levels from ~spread / 10 down to (and ending at) `eps`, x 0.1 apart."""
    levels = [eps]
    while levels[-1] * 10.0 <= 0.1 * spread:
        levels.append(levels[-1] * 10.0)
    return levels[::-1]


_CROSS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=bool)
_DIAMOND = np.array([[abs(i) + abs(j) <= 2 for j in range(-2, 3)] for i in range(-2, 3)], dtype=bool)

#: Route names of the inpainting metric -> method(image [C, H, W], known [H, W]) -> filled image.
CLASSICAL_METHODS: dict[str, Method] = {
    "mrf_l1": mrf_l1,
    "mrf_l1_lp": mrf_l1_lp,
    "mrf_l2": _spring_method(diagonal=0.0),
    "inpaint_nans_0": _least_squares_method(_del2, _CROSS),
    "inpaint_nans_1": _least_squares_method(_del2, None),
    "inpaint_nans_2": _square_method(_del2_with_corners),
    "inpaint_nans_3": _least_squares_method(_del4, _DIAMOND),
    "inpaint_nans_4": _spring_method(diagonal=0.5),
    "inpaint_nans_5": _spring_method(diagonal=1.0),
}


def inpaint_classical(method: str, images: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Apply a named classical method to a batch: images [N, C, H, W], known [N, H, W] (bool)."""
    try:
        fn = CLASSICAL_METHODS[method]
    except KeyError:
        raise ValueError(f"unknown classical inpainting method '{method}'; known: {', '.join(CLASSICAL_METHODS)}") from None
    return np.stack([fn(img, k) for img, k in zip(images, known)])
