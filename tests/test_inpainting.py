"""Inpainting: masks, the error/PSNR numbers, the classical baselines and the learned routes,
each against something independent (hand-computed values, scikit-image, closed forms)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy.signal import convolve2d
from skimage.metrics import peak_signal_noise_ratio

from conftest import run_cli, train_tiny_run
from coop_metrics.classical_inpainting import CLASSICAL_METHODS
from coop_metrics.inpainting import (
    complete_with_descriptor,
    complete_with_generator,
    inpainting_error,
    inpainting_psnr,
)
from coopcore.masks import make_mask, mask_from_name, parse_mask_name
from coopcore import ConfigError, EnergyModelBase, EvalContext, GeneratorBase, UsageError


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------
# Masks
def test_mask_names_parse():
    assert parse_mask_name("M30").kind == "square" and parse_mask_name("M30").size == 30
    assert parse_mask_name("B20").kind == "square"
    assert parse_mask_name("B20c").kind == "centre"
    mb = parse_mask_name("MB10")
    assert (mb.kind, mb.size, mb.count) == ("multi_block", 10, 10)
    assert parse_mask_name("MB3x4").count == 3 and parse_mask_name("MB3x4").size == 4
    assert parse_mask_name("P.5").size == 0.5 and parse_mask_name("P0.7").size == 0.7
    assert parse_mask_name("pepper").size == 0.6 and parse_mask_name("pepper").kind == "salt_pepper"
    assert parse_mask_name("doodle").size == 0.25 and parse_mask_name("doodle.3").size == 0.3
    for bad in ("X3", "M", "P5", "doodle3", ""):
        with pytest.raises(ValueError):
            parse_mask_name(bad)


def test_square_mask_has_exact_side_and_uniform_position():
    h, w, k = 20, 24, 7
    m = mask_from_name(f"M{k}", 3000, (3, h, w), gen(1))
    assert m.shape == (3000, 1, h, w) and m.dtype == torch.float32
    assert set(m.unique().tolist()) == {0.0, 1.0}
    missing = m[:, 0] == 0
    assert (missing.flatten(1).sum(1) == k * k).all()
    rows = missing.any(2).float().argmax(1)  # top row of the hole
    cols = missing.any(1).float().argmax(1)
    # The hole is one k x k square: its bounding box has side k.
    assert (missing.any(2).sum(1) == k).all() and (missing.any(1).sum(1) == k).all()
    # Every position inside the image occurs (uniform over (h-k+1) x (w-k+1) = 252 positions).
    assert rows.min() == 0 and rows.max() == h - k and cols.min() == 0 and cols.max() == w - k
    counts = torch.bincount(rows, minlength=h - k + 1).float()
    assert counts.min() > 0.5 * counts.mean()


def test_centred_block():
    m = mask_from_name("B4c", 2, (1, 10, 9), gen())
    expected = torch.ones(10, 9)
    expected[3:7, 2:6] = 0
    assert torch.equal(m[0, 0], expected) and torch.equal(m[1, 0], expected)


def test_multi_block_is_a_union_of_at_most_ten_blocks():
    m = mask_from_name("MB10", 200, (64, 64), gen(2))
    missing = (m[:, 0] == 0).numpy()
    sizes = missing.reshape(200, -1).sum(1)
    assert sizes.max() <= 1000 and sizes.min() >= 100
    for hole in missing[:50]:
        # every missing pixel lies in a fully missing 10x10 window
        full = convolve2d(hole.astype(int), np.ones((10, 10), int), mode="valid") == 100
        covered = convolve2d(full.astype(int), np.ones((10, 10), int), mode="full") > 0
        assert np.array_equal(covered, hole)
    assert sizes.mean() > 800  # ten blocks on 64x64 rarely overlap much


def test_salt_and_pepper_fraction():
    for name, frac in (("P.5", 0.5), ("P.7", 0.7), ("pepper", 0.6)):
        m = mask_from_name(name, 400, (32, 32), gen(3))
        missing = 1.0 - m
        assert torch.all(missing.flatten(1).sum(1) == round(frac * 1024))
        per_pixel = missing.mean(0)  # 400 draws per pixel
        assert abs(float(per_pixel.mean()) - round(frac * 1024) / 1024) < 1e-6
        assert float((per_pixel - frac).abs().max()) < 0.12


def test_doodle_fraction_and_determinism():
    m = mask_from_name("doodle", 20, (3, 64, 64), gen(4))
    frac = 1.0 - m.flatten(1).mean(1)
    # brush radius 3 at 64x64: at most one disc (29 pixels) over the 25% target
    assert float(frac.min()) >= 0.25 and float(frac.max()) <= 0.25 + 29 / 4096
    assert not torch.equal(m[0], m[1])
    assert torch.equal(m, mask_from_name("doodle", 20, (3, 64, 64), gen(4)))
    small = make_mask("doodle", 0.25, 50, (16, 16), gen(5))
    f = 1.0 - small.flatten(1).mean(1)
    assert float(f.min()) >= 0.2 and float(f.max()) <= 0.3


# ---------------------------------------------------------------------------------------
# The numbers
def test_error_and_psnr_by_hand():
    truth = torch.tensor([[[[1.0, -1.0], [0.5, 0.0]]]])
    done = torch.tensor([[[[1.0, 1.0], [0.5, -1.0]]]])
    mask = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])
    # missing entries differ by 2 and 1: mean 1.5, range 2 -> 0.75; MSE 2.5 -> 10 log10(4 / 2.5)
    assert inpainting_error(truth, done, mask).item() == pytest.approx(0.75)
    assert inpainting_psnr(truth, done, mask).item() == pytest.approx(10 * math.log10(4 / 2.5))
    # Observed pixels do not count, however wrong; the range rescales the error.
    done2 = done.clone()
    done2[0, 0, 0, 0] = 100.0
    assert inpainting_error(truth, done2, mask, pixel_range=1.0).item() == pytest.approx(1.5)


def test_psnr_on_missing_pixels_matches_scikit_image():
    rng = np.random.default_rng(0)
    truth = torch.from_numpy(rng.uniform(-1, 1, (4, 3, 16, 16)))
    done = (truth + torch.from_numpy(rng.normal(0, 0.2, truth.shape))).clamp(-1, 1)
    mask = mask_from_name("M9", 4, (16, 16), gen())
    ours = inpainting_psnr(truth, done, mask).numpy()
    err = inpainting_error(truth, done, mask).numpy()
    for i in range(4):
        miss = (mask[i, 0] == 0).numpy()
        t, d = truth[i].numpy()[:, miss], done[i].numpy()[:, miss]
        assert ours[i] == pytest.approx(peak_signal_noise_ratio(t, d, data_range=2.0), abs=1e-6)
        assert err[i] == pytest.approx(np.abs(t - d).mean() / 2.0, abs=1e-12)


# ---------------------------------------------------------------------------------------
# Classical baselines
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    return np.meshgrid(np.arange(h, dtype=float), np.arange(w, dtype=float), indexing="ij")


def _hole(h: int, w: int, rows: slice, cols: slice) -> np.ndarray:
    known = np.ones((h, w), bool)
    known[rows, cols] = False
    return known


def test_constant_image_is_filled_exactly_by_every_method():
    img = np.full((2, 14, 15), 0.37)
    masks = [_hole(14, 15, slice(3, 9), slice(4, 11)), _hole(14, 15, slice(0, 6), slice(9, 15)),
             mask_from_name("P.5", 1, (14, 15), gen())[0, 0].numpy() > 0]
    for name, fn in CLASSICAL_METHODS.items():
        for known in masks:
            np.testing.assert_allclose(fn(img, known), img, atol=1e-9, err_msg=name)


def test_linear_ramp_is_filled_exactly():
    i, j = _grid(18, 20)
    ramp = (0.3 * i - 0.2 * j + 1.0)[None] / 10
    interior = _hole(18, 20, slice(4, 13), slice(5, 16))
    for name in ("mrf_l2", *[f"inpaint_nans_{k}" for k in range(6)]):
        np.testing.assert_allclose(CLASSICAL_METHODS[name](ramp, interior), ramp, atol=1e-6, err_msg=name)
    # The del^2 / del^4 methods extrapolate linearly: holes on the border and on a corner too.
    for known in (_hole(18, 20, slice(0, 7), slice(5, 12)), _hole(18, 20, slice(10, 18), slice(12, 20))):
        for name in ("inpaint_nans_0", "inpaint_nans_1", "inpaint_nans_2", "inpaint_nans_3"):
            np.testing.assert_allclose(CLASSICAL_METHODS[name](ramp, known), ramp, atol=1e-6, err_msg=name)


def test_del4_least_squares_reproduces_a_quartic_but_del2_does_not():
    i, j = _grid(20, 20)
    # Least squares on the del^2 rows has normal equations del^2 del^2 u = 0 inside the hole
    # (A^T r is the Laplacian of the residual), so it reproduces biharmonic functions such as
    # cubics.  On del^4 rows it reproduces anything with a constant del^4, e.g. this quartic.
    quartic = ((i - 9.0) ** 4 + 0.5 * (j - 8) ** 4 + 3 * (i - 9) ** 2 * (j - 8))[None] / 2000
    cubic = ((i - 9.0) ** 3 + 3 * (i - 9) * (j - 8) ** 2 - 2 * (j - 8) ** 3)[None] / 200
    known = _hole(20, 20, slice(7, 13), slice(6, 12))  # >= 4 pixels from the border
    np.testing.assert_allclose(CLASSICAL_METHODS["inpaint_nans_3"](quartic, known), quartic, atol=1e-6)
    assert np.abs(CLASSICAL_METHODS["inpaint_nans_0"](quartic, known) - quartic).max() > 1e-3
    np.testing.assert_allclose(CLASSICAL_METHODS["inpaint_nans_0"](cubic, known), cubic, atol=1e-6)
    assert np.abs(CLASSICAL_METHODS["inpaint_nans_2"](cubic, known) - cubic).max() > 1e-3


def test_single_missing_pixel_closed_forms():
    rng = np.random.default_rng(1)
    img = rng.uniform(size=(1, 5, 5))
    known = _hole(5, 5, slice(2, 3), slice(2, 3))
    n4 = np.array([img[0, 1, 2], img[0, 3, 2], img[0, 2, 1], img[0, 2, 3]])
    diag = np.array([img[0, 1, 1], img[0, 1, 3], img[0, 3, 1], img[0, 3, 3]])
    got = {name: fn(img, known)[0, 2, 2] for name, fn in CLASSICAL_METHODS.items()}
    assert got["mrf_l2"] == pytest.approx(n4.mean())  # mean minimises the sum of squares
    assert got["inpaint_nans_2"] == pytest.approx(n4.mean())  # 5-point Laplacian = 0
    assert got["inpaint_nans_5"] == pytest.approx(np.concatenate([n4, diag]).mean())
    assert got["inpaint_nans_4"] == pytest.approx((n4.sum() + 0.5 * diag.sum()) / 6.0)
    s = np.sort(n4)  # any point between the two middle values minimises the sum of |.|
    assert s[1] - 1e-9 <= got["mrf_l1_lp"] <= s[2] + 1e-9
    assert s[1] - 1e-3 <= got["mrf_l1"] <= s[2] + 1e-3
    for fn in CLASSICAL_METHODS.values():
        out = fn(img, known)
        assert np.array_equal(out[:, known], img[:, known])


def test_mrf_l1_keeps_a_sharp_edge_where_l2_blurs():
    step = np.where(_grid(20, 20)[1] < 10, -1.0, 1.0)[None]
    known = _hole(20, 20, slice(5, 15), slice(4, 16))
    # Exact l1: the sharp edge is the unique minimiser (every row must jump by 2 somewhere, and
    # only the observed edge's column costs nothing vertically).
    np.testing.assert_allclose(CLASSICAL_METHODS["mrf_l1_lp"](step, known), step, atol=1e-6)
    # Smoothed l1 (eps = 0.002 here): sharp up to the smoothing.
    np.testing.assert_allclose(CLASSICAL_METHODS["mrf_l1"](step, known), step, atol=0.02)
    l2 = CLASSICAL_METHODS["mrf_l2"](step, known)
    assert np.abs(l2 - step).max() > 0.3


def test_smoothed_l1_is_near_the_exact_l1_optimum():
    rng = np.random.default_rng(3)
    img = rng.uniform(-1, 1, (1, 12, 12))
    known = _hole(12, 12, slice(3, 9), slice(2, 8))

    def tv(u):
        d = [np.abs(np.diff(u, axis=k)) for k in (0, 1)]
        touch = [~(known[1:, :] & known[:-1, :]), ~(known[:, 1:] & known[:, :-1])]
        return sum(float((dk * t).sum()) for dk, t in zip(d, touch))

    exact = tv(CLASSICAL_METHODS["mrf_l1_lp"](img, known)[0])
    smooth = tv(CLASSICAL_METHODS["mrf_l1"](img, known)[0])
    # |d| <= sqrt(d^2 + eps^2) <= |d| + eps, so the smoothed minimiser's l1 cost exceeds the
    # optimum by at most (number of pairs) x eps = 84 pairs x 1e-3 x the observed range.
    eps = 1e-3 * np.ptp(img[0][known])
    assert exact - 1e-9 <= smooth <= exact + 84 * eps
    assert exact < tv(CLASSICAL_METHODS["mrf_l2"](img, known)[0])


def test_methods_0_and_1_solve_the_same_problem_and_colour_is_per_channel():
    rng = np.random.default_rng(2)
    img = rng.uniform(size=(3, 16, 16))
    known = mask_from_name("doodle", 1, (16, 16), gen(6))[0, 0].numpy() > 0
    a = CLASSICAL_METHODS["inpaint_nans_0"](img, known)
    b = CLASSICAL_METHODS["inpaint_nans_1"](img, known)
    np.testing.assert_allclose(a, b, atol=1e-9)
    np.testing.assert_allclose(CLASSICAL_METHODS["inpaint_nans_3"](img[1:2], known)[0],
                               CLASSICAL_METHODS["inpaint_nans_3"](img, known)[1], atol=1e-9)


# ---------------------------------------------------------------------------------------
# Learned routes
class LinearGenerator(GeneratorBase):
    """g(z) = A z + b: the posterior given observed pixels is Gaussian with a closed form."""

    def __init__(self, latent: int, shape: tuple[int, ...], sigma: float, seed: int = 0) -> None:
        super().__init__((latent,), shape, sigma)
        g = torch.Generator().manual_seed(seed)
        d = int(np.prod(shape))
        self.a = torch.nn.Parameter(torch.randn(d, latent, generator=g, dtype=torch.float64) * 0.3)
        self.b = torch.nn.Parameter(torch.randn(d, generator=g, dtype=torch.float64) * 0.1)

    def sample_latent(self, n, generator=None):
        return torch.randn((n, *self.latent_shape), generator=generator, dtype=self.a.dtype)

    def forward(self, z):
        return (z @ self.a.T + self.b).view(z.shape[0], *self.output_shape)


def _langevin(registries, steps: int, step: float, noise: bool):
    entry = registries.sampler.get("langevin")
    return registries.sampler.create("langevin", entry.options(n_steps=steps, step_size=step, noise=noise))


def test_generator_route_recovers_a_linear_generator_image(registries):
    net = LinearGenerator(4, (1, 8, 8), sigma=0.05)
    with torch.no_grad():
        z_true = torch.randn(6, 4, generator=gen(7), dtype=torch.float64)
        y = net(z_true)
    mask = mask_from_name("M4", 6, (8, 8), gen(8)).double()
    # Closed-form posterior mode per image: (A_M^T A_M / s^2 + I)^-1 A_M^T (y_M - b_M) / s^2.
    a, b, s2 = net.a.detach(), net.b.detach(), net.sigma**2
    modes, lam_max = [], 0.0
    for k in range(6):
        obs = mask[k].flatten() > 0
        am = a[obs]
        prec = am.T @ am / s2 + torch.eye(4, dtype=torch.float64)
        modes.append(torch.linalg.solve(prec, am.T @ (y[k].flatten()[obs] - b[obs]) / s2))
        lam_max = max(lam_max, float(torch.linalg.eigvalsh(prec).max()))
    step = math.sqrt(2 * 0.5 / lam_max)  # (delta^2 / 2) * lambda_max = 0.5: stable, fast
    done = complete_with_generator(net, y, mask, _langevin(registries, 300, step, False), gen(9))
    with torch.no_grad():
        expected = mask * y + (1 - mask) * net(torch.stack(modes))
    torch.testing.assert_close(done, expected, atol=1e-6, rtol=0)
    assert float(inpainting_error(y, done, mask).mean()) < 0.01
    noisy = complete_with_generator(net, y, mask, _langevin(registries, 300, step, True), gen(9))
    assert float(inpainting_error(y, noisy, mask).mean()) < 0.03
    full = complete_with_generator(net, y, torch.ones_like(mask), _langevin(registries, 5, step, True), gen(9))
    assert torch.equal(full, y)


class QuadraticDescriptor(EnergyModelBase):
    """f = 0 with reference N(0, 1): E(Y) = ||Y||^2 / 2, so noiseless Langevin decays geometrically."""

    def __init__(self, shape) -> None:
        super().__init__(shape, reference_std=1.0)
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def score(self, x):
        return x.flatten(1).sum(1) * 0.0 + self.unused.sum() * 0.0


def test_descriptor_route_moves_only_missing_pixels(registries):
    y = torch.rand(5, 3, 8, 8, generator=gen(10)) * 2 - 1
    mask = mask_from_name("M4", 5, (8, 8), gen(11))
    d = QuadraticDescriptor((3, 8, 8))
    steps, delta = 7, 0.3
    out = complete_with_descriptor(d, y, mask, _langevin(registries, steps, delta, False), gen(12), init="mean")
    obs = mask.expand_as(y) > 0
    assert torch.equal(out[obs], y[obs])
    # Missing pixels start at the observed mean of their channel and shrink by (1 - delta^2 / 2) per step.
    start = (y * mask).flatten(2).sum(2) / mask.flatten(2).sum(2)
    expected = start[..., None, None].expand_as(y) * (1 - delta**2 / 2) ** steps
    torch.testing.assert_close(out[~obs], expected[~obs], atol=1e-6, rtol=1e-5)
    # With noise and clipping inside the sampler, observed pixels still never change.
    entry = registries.sampler.get("langevin")
    clipper = registries.sampler.create("langevin", entry.options(n_steps=3, step_size=0.5, clip=(-0.2, 0.2)))
    out2 = complete_with_descriptor(d, y, mask, clipper, gen(13), init="noise")
    assert torch.equal(out2[obs], y[obs]) and not torch.equal(out2[~obs], y[~obs])


# ---------------------------------------------------------------------------------------
# The registered metric
class _NoObjective:
    def samples(self, n, generator):  # pragma: no cover - not used by inpainting
        raise AssertionError


def _context(registries, models) -> EvalContext:
    return EvalContext(objective=_NoObjective(), models=models, registries=registries, data_root=None,
                       device=torch.device("cpu"), generator=gen(14))


def _metric(registries, **options):
    from coopcore.build import build_metric

    base = {"data": {"name": "digits", "options": {"split": "test", "size": 8}}, "n_images": 12, "mask": "M3"}
    return build_metric(registries, "inpainting", {**base, **options})


def test_metric_classical_and_generator_routes(registries):
    res = _metric(registries, route="mrf_l2").compute(_context(registries, {}))
    assert res.n_samples == 12 and res.higher_is_better is False
    assert res.details["route"] == "mrf_l2" and res.details["mask"] == "M3" and res.details["n_images"] == 12
    assert 0 < res.value < 0.5 and math.isfinite(res.details["psnr"]) and "mrf_l2" in res.backend
    assert res.details["missing_fraction"] == pytest.approx(9 / 64)
    net = LinearGenerator(4, (1, 8, 8), sigma=0.3).float()
    res_g = _metric(registries, route="generator", steps=3).compute(_context(registries, {"generator": net}))
    assert res_g.n_samples == 12 and "3 steps" in res_g.backend and "sigma=0.3" in res_g.backend
    # Same seed, same masks: the routes are compared on identical holes.
    assert res_g.details["missing_fraction"] == res.details["missing_fraction"]


def test_metric_refuses_what_it_cannot_do(registries):
    with pytest.raises(UsageError, match="role 'descriptor'"):
        _metric(registries, route="descriptor").compute(_context(registries, {}))
    with pytest.raises(UsageError, match="test images"):
        net = LinearGenerator(4, (1, 16, 16), sigma=0.3).float()
        _metric(registries, route="generator").compute(_context(registries, {"generator": net}))
    with pytest.raises(ConfigError, match="route"):
        _metric(registries, route="nope")
    with pytest.raises(ConfigError, match="mask"):
        _metric(registries, mask="Q7")


# ---------------------------------------------------------------------------------------
# End to end: a tiny trained run evaluated from the command line
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("inpaint") / "run")


@pytest.mark.parametrize("route", ["generator", "descriptor", "inpaint_nans_3"])
def test_coop_eval_inpainting(tiny_run, capsys, route):
    code = run_cli(["eval", tiny_run, "--metric", "inpainting", "--json",
                    "--set", "data={name='digits', options={split='test', size=16}}",
                    "--set", "mask='M6'", "--set", "n_images=8", "--set", "steps=4", "--set", f"route='{route}'"])
    assert code == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["n_samples"] == 8 and rec["details"]["route"] == route and rec["details"]["mask"] == "M6"
    assert 0 <= rec["value"] < 1 and math.isfinite(rec["details"]["psnr"])
    assert rec["details"]["missing_fraction"] == pytest.approx(36 / 256)
