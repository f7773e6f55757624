"""Learning from incomplete images with the divergence triangle (Section 4.4, Table 3): fixed
per-example masks, zero-filled holes replaced by reconstructions, observed pixels never changed,
the holes' ground truth never used for training, the recovery error against a hand computation,
and the occlusion state through a checkpoint round trip."""
from __future__ import annotations

import io

import pytest
import torch

from coopcore import Batch, EvalContext, Parts, TensorImageDataset, UsageError
from coopcore.config import structure
from coopcore.plugin_manager import get_registries

SHAPE = (1, 8, 8)
N = 12
TINY = {  # 8x8 nets without BatchNorm, so G(mu(x)) of any subset of a batch is the same
    "descriptor": ("energy", "triangle.ebm", {"in_channels": 1, "input_size": 8, "channels": [4, 8], "sizes": [4, 2],
                                              "kernels": [4, 4], "strides": [2, 2], "head_kernel": 2}),
    "generator": ("generator", "triangle.generator", {"latent_dim": 4, "out_channels": 1, "channels": [8, 4],
                                                      "sizes": [2, 4, 8], "kernels": [2, 4, 4], "strides": [1, 2, 2],
                                                      "batch_norm": False}),
    "encoder": ("encoder", "triangle.encoder", {"in_channels": 1, "input_size": 8, "channels": [4, 8], "sizes": [4, 2],
                                                "kernels": [4, 4], "strides": [2, 2], "head_kernel": 2, "latent_dim": 4}),
}


def _data(seed: int = 0) -> torch.Tensor:
    return torch.rand(N, *SHAPE, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _objective(seed: int = 0, n_train: int = N, data_shape=SHAPE, **options):
    regs = get_registries()
    torch.manual_seed(seed)
    models = {}
    for role, (fam, name, opts) in TINY.items():
        f = regs.family(fam)
        models[role] = f.create(name, structure(f.get(name).options, opts, role))
    optim = {r: torch.optim.Adam(m.parameters(), lr=1e-2, betas=(0.5, 0.999)) for r, m in models.items()}
    parts = Parts(models=models, samplers={}, optimizers=optim, n_train=n_train, device=torch.device("cpu"),
                  data_shape=tuple(data_shape))
    entry = regs.objective.get("triangle")
    opts = structure(entry.options, {"occlusion": "B4", **options}, "objective.options")
    return regs.objective.create("triangle", opts, parts=parts)


def _params(obj) -> list[torch.Tensor]:
    return [p.detach().clone() for m in (obj.ebm, obj.generator, obj.encoder) for p in m.parameters()]


# ---------------------------------------------------------------------------------------
def test_masks_are_fixed_per_example_and_depend_only_on_seed_and_index():
    from coop_triangle.occlusion import example_masks

    all_masks = example_masks("B4", range(N), SHAPE, seed=3)
    torch.testing.assert_close(example_masks("B4", [5, 2], SHAPE, seed=3), all_masks[[5, 2]])
    assert not torch.equal(example_masks("B4", range(N), SHAPE, seed=4), all_masks)
    assert ((~all_masks).flatten(1).sum(1) == 16).all()  # one 4x4 block each
    assert len({m.numpy().tobytes() for m in all_masks}) > 1  # blocks are placed at random
    big = (3, 64, 64)
    missing = {name: (~example_masks(name, range(6), big, seed=0)).flatten(1).sum(1) for name in
               ("P.5", "P.7", "MB10", "B20", "B30")}
    assert (missing["P.5"] == 2048).all() and (missing["P.7"] == round(0.7 * 4096)).all()
    assert (missing["B20"] == 400).all() and (missing["B30"] == 900).all()
    assert ((missing["MB10"] >= 100) & (missing["MB10"] <= 1000)).all()
    # the objective's masks are these, identical in a second build (re-runs and resumes agree)
    a, b = _objective(occlusion_seed=3), _objective(seed=1, occlusion_seed=3)
    assert torch.equal(a.occlusion.masks, all_masks) and torch.equal(b.occlusion.masks, all_masks)
    assert a.occlusion.masks.shape == (N, 1, 8, 8) and a.occlusion.masks.dtype == torch.bool


def test_holes_start_at_zero_and_are_replaced_by_reconstructions_observed_pixels_never_change():
    obj = _objective()
    x = _data()
    occ = obj.occlusion
    masks = occ.masks
    idx = torch.arange(N)
    start = occ.compose(x, idx)
    assert torch.equal(start[masks.expand_as(x)], x[masks.expand_as(x)])
    assert bool((start[~masks.expand_as(x)] == 0).all())  # zero-fill

    g = torch.Generator().manual_seed(0)
    batch = torch.tensor([1, 4, 6, 9])
    res = obj.step(Batch(x[batch], batch), g)
    m = masks[batch].expand(-1, *SHAPE)
    with torch.no_grad():  # the reconstruction of the zero-filled batch by the updated models
        x_train = torch.where(masks[batch], x[batch], torch.zeros(()))
        expected = obj.generator(obj.encoder(x_train)[0])
    now = occ.compose(x, idx)
    torch.testing.assert_close(now[batch][~m], expected[~m])
    assert torch.equal(now[masks.expand_as(x)], x[masks.expand_as(x)])
    others = torch.tensor([i for i in range(N) if i not in batch.tolist()])
    assert bool((now[others][~masks[others].expand(-1, *SHAPE)] == 0).all())  # not visited: still zero
    assert bool((now[batch][~m] != 0).any())
    assert "recovery_error" in res.scalars

    # further iterations, reconstructions from G(z~) too: observed pixels stay the data's
    for it in range(4):
        obj2 = obj if it % 2 else _objective(impute_with="sample")
        b = torch.randperm(N, generator=torch.Generator().manual_seed(it))[:4]
        obj2.step(Batch(x[b], b), g)
        full = obj2.occlusion.compose(x, idx)
        assert torch.equal(full[masks.expand_as(x)], x[masks.expand_as(x)])
        # the buffer is only ever written in the holes
        assert bool((obj2.occlusion.imputed[masks.expand_as(x)] == 0).all())


def test_the_ground_truth_of_the_holes_is_never_used_for_training():
    """Two runs whose data differ only in the occluded pixels train identically."""
    a, b = _objective(), _objective()
    x = _data()
    masks = a.occlusion.masks
    x_other = torch.where(masks, x, _data(seed=7))
    assert not torch.equal(x, x_other)
    ga, gb = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    for it in range(3):
        idx = torch.arange(4 * it, 4 * it + 4)
        ra = a.step(Batch(x[idx], idx), ga)
        rb = b.step(Batch(x_other[idx], idx), gb)
    assert all(torch.equal(p, q) for p, q in zip(_params(a), _params(b)))
    assert torch.equal(a.occlusion.imputed, b.occlusion.imputed)
    assert not torch.equal(ra.scalars["recovery_error"], rb.scalars["recovery_error"])  # only the metric sees it


def test_recovery_error_matches_a_hand_computation():
    from coop_triangle.occlusion import recovery_error, recovery_error_per_image

    truth = torch.tensor([[[[0.0, 0.5], [1.0, -1.0]]],
                          [[[0.0, 0.0], [0.0, 0.0]]],
                          [[[0.3, 0.3], [0.3, 0.3]]]])
    recovered = torch.tensor([[[[0.2, 0.5], [0.0, -1.0]]],
                              [[[0.5, 0.5], [0.5, 0.5]]],
                              [[[0.0, 0.0], [0.0, 0.0]]]])
    observed = torch.tensor([[[[0, 1], [0, 1]]],
                             [[[1, 1], [1, 0]]],
                             [[[1, 1], [1, 1]]]], dtype=torch.bool)
    # image 0: holes (0,0), (1,0): (0.2 + 1.0) / 2 / 2 = 0.3; image 1: hole (1,1): 0.5 / 1 / 2 = 0.25;
    # image 2 has no hole and does not count.
    per_image = recovery_error_per_image(truth, recovered, observed)
    torch.testing.assert_close(per_image[:2], torch.tensor([0.3, 0.25], dtype=torch.float64))
    assert torch.isnan(per_image[2])
    torch.testing.assert_close(recovery_error(truth, recovered, observed), torch.tensor(0.275, dtype=torch.float64))
    torch.testing.assert_close(recovery_error(truth, recovered, observed, pixel_range=1.0),
                               torch.tensor(0.55, dtype=torch.float64))
    # three channels share the mask: image 0 with channels 0.2/1.0, 0.4/1.0, 0.0/1.0 off in its holes
    t3 = truth[:1].expand(1, 3, 2, 2).clone()
    r3 = t3.clone()
    r3[0, :, 0, 0] += torch.tensor([0.2, 0.4, 0.0])
    r3[0, :, 1, 0] -= 1.0
    # (0.2 + 0.4 + 0.0 + 3 x 1.0) / 6 entries / 2 = 0.3
    torch.testing.assert_close(recovery_error(t3, r3, observed[:1]), torch.tensor(0.3, dtype=torch.float64))
    assert float(recovery_error(truth[2:], recovered[2:], observed[2:])) == 0.0  # nothing to measure: finite


def test_recovery_error_scalar_set_value_and_metric():
    obj = _objective()
    x = _data()
    g = torch.Generator().manual_seed(0)
    idx = torch.arange(4)
    res = obj.step(Batch(x[idx], idx), g)
    masks = obj.occlusion.masks
    rec = obj.recovered_images(x[idx], idx)
    miss = ~masks[idx].expand(-1, *SHAPE)
    by_hand = torch.stack([(rec[i] - x[i]).abs()[miss[i]].mean() / 2 for i in range(4)]).mean()
    torch.testing.assert_close(res.scalars["recovery_error"], by_hand.float())

    dataset = TensorImageDataset(x, name="toy")
    mean, per_image = obj.recovery_error_on(dataset, batch_size=5)
    full = obj.recovered_images(x, torch.arange(N))
    miss_all = ~masks.expand(-1, *SHAPE)
    hand = torch.stack([(full[i] - x[i]).abs()[miss_all[i]].double().mean() / 2 for i in range(N)])
    torch.testing.assert_close(per_image, hand)
    torch.testing.assert_close(mean, hand.mean())
    # unvisited images are still zero-filled: their error is the data's |x| in the holes
    torch.testing.assert_close(per_image[5], x[5][miss_all[5]].abs().double().mean() / 2)

    regs = get_registries()
    metric = regs.metric.create("triangle.recovery_error")
    ctx = EvalContext(objective=obj, models={}, registries=regs, data_root=None, device=torch.device("cpu"),
                      generator=torch.Generator().manual_seed(0), train_dataset=dataset)
    result = metric.compute(ctx)
    assert result.n_samples == N and not result.higher_is_better and result.details["occlusion"] == "B4"
    assert result.value == pytest.approx(float(hand.mean()))
    refreshed = regs.metric.create("triangle.recovery_error",
                                   structure(regs.metric.get("triangle.recovery_error").options, {"source": "refresh"}))
    assert refreshed.compute(ctx).value != result.value
    assert torch.equal(obj.recovery_error_on(dataset)[1], per_image)  # refresh left the buffer alone


def test_occlusion_state_round_trip_and_resume():
    obj = _objective()
    x = _data()
    g = torch.Generator().manual_seed(0)
    for it in range(2):
        idx = torch.arange(4 * it, 4 * it + 4)
        obj.step(Batch(x[idx], idx), g)
    buf = io.BytesIO()
    torch.save({"objective": obj.state_dict(),
                "models": {r: m.state_dict() for r, m in (("e", obj.ebm), ("g", obj.generator), ("i", obj.encoder))},
                "optim": {r: o.state_dict() for r, o in (("e", obj.opt_e), ("g", obj.opt_g), ("i", obj.opt_i))},
                "rng": g.get_state()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=False)
    fresh = _objective(seed=5)  # different initial weights, then everything restored
    for r, m in (("e", fresh.ebm), ("g", fresh.generator), ("i", fresh.encoder)):
        m.load_state_dict(saved["models"][r])
    for r, o in (("e", fresh.opt_e), ("g", fresh.opt_g), ("i", fresh.opt_i)):
        o.load_state_dict(saved["optim"][r])
    fresh.load_state_dict(saved["objective"])
    assert torch.equal(fresh.occlusion.masks, obj.occlusion.masks)
    assert torch.equal(fresh.occlusion.imputed, obj.occlusion.imputed)
    g2 = torch.Generator()
    g2.set_state(saved["rng"])
    idx = torch.arange(8, 12)
    ra, rb = obj.step(Batch(x[idx], idx), g), fresh.step(Batch(x[idx], idx), g2)
    assert all(torch.equal(ra.scalars[k], rb.scalars[k]) for k in ra.scalars)
    assert torch.equal(fresh.occlusion.imputed, obj.occlusion.imputed)

    state = obj.state_dict()
    with pytest.raises(UsageError, match="occlusion"):
        _objective(occlusion="B3").load_state_dict(state)
    with pytest.raises(UsageError, match="occlusion"):
        _objective(occlusion="none").load_state_dict(state)
    with pytest.raises(UsageError, match="no occlusion state"):
        _objective().load_state_dict({})


def test_reconstruction_over_observed_pixels_and_fitting_checks():
    obj = _objective(recon_pixels="observed")
    x = _data()[:3]
    z = torch.randn(3, 4, generator=torch.Generator().manual_seed(2))
    observed = obj.occlusion.masks[:3]
    with torch.no_grad():
        out = obj.generator(z)
    by_hand = sum(((x[i] - out[i]) ** 2)[observed[i].expand(*SHAPE)].sum() for i in range(3)) / 3
    torch.testing.assert_close(obj.recon_term(x, z, observed), by_hand)
    with pytest.raises(UsageError, match="does not fit"):
        _objective(occlusion="B20")
    with pytest.raises(UsageError, match="does not fit"):
        _objective(data_shape=(64,))
