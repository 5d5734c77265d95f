"""The value function from logits, the two G losses, and one iteration of k D updates + one G update."""
import io
import math

import pytest
import torch

from gan_core import Game, GameOptions, ModelSpec, adam_pair, build_models, losses
from gan_core.augment import jitter


def test_value_matches_the_definition_and_stays_finite():
    real, fake = torch.tensor([2.0, -1.0, 0.3]), torch.tensor([-0.5, 1.5, 0.0])
    direct = torch.log(torch.sigmoid(real)).mean() + torch.log(1 - torch.sigmoid(fake)).mean()
    assert losses.value(real, fake).item() == pytest.approx(direct.item(), abs=1e-6)
    big = torch.tensor([1e4, -1e4], requires_grad=True)
    v = losses.value(big, big)
    v.backward()
    assert math.isfinite(v.item()) and v.item() == pytest.approx(-1e4, rel=1e-6)  # -5e3 from each term
    assert torch.isfinite(big.grad).all()
    assert losses.value(torch.zeros(4), torch.zeros(4)).item() == pytest.approx(-math.log(4))


def test_minimax_saturates_and_non_saturating_does_not():
    """Early in training D(G(z)) ~ 0: log(1 - D) has a vanishing gradient, -log D a strong one."""
    logit = torch.tensor([-8.0], requires_grad=True)
    losses.generator_loss(logit, "minimax").backward()
    g_mm = logit.grad.item()
    logit.grad = None
    losses.generator_loss(logit, "non_saturating").backward()
    g_ns = logit.grad.item()
    assert abs(g_mm) < 1e-3 and g_ns == pytest.approx(-1.0, abs=1e-3)
    assert losses.generator_loss(logit, "minimax").item() == pytest.approx(math.log(1 - torch.sigmoid(logit).item()), abs=1e-6)
    with pytest.raises(ValueError, match="g_loss='wgan'"):
        losses.generator_loss(logit, "wgan")


def _game(k=1, ema=None, arch="mlp", num_classes=3, **kw):
    g, d = build_models(ModelSpec(arch, 8, (1, 28, 28), num_classes=num_classes, g_width=16, d_width=16))
    opt_g, opt_d = adam_pair(g, d, 1e-3, 1e-3)
    return Game(g, d, opt_g, opt_d, GameOptions(k=k, ema_beta=ema, **kw), label_prior=torch.tensor([0.5, 0.3, 0.2]))


@pytest.mark.parametrize("k", [1, 3])
def test_one_iteration_is_k_d_updates_on_fresh_batches_then_one_g_update(k):
    game = _game(k=k)
    seen = []

    def next_real():
        x = torch.rand(8, 1, 28, 28) * 2 - 1
        seen.append(x)
        return x, torch.randint(0, 3, (8,))

    stats = game.step(next_real)
    assert len(seen) == k and all(not torch.equal(seen[0], s) for s in seen[1:])
    assert game.opt_d.state_dict()["state"][0]["step"].item() == k
    assert game.opt_g.state_dict()["state"][0]["step"].item() == 1
    s = stats.as_dict()
    assert set(s) == {"loss_d", "loss_g", "d_real", "d_fake", "value"}
    assert 0 < s["d_real"] < 1 and 0 < s["d_fake"] < 1
    assert s["value"] == pytest.approx(-s["loss_d"])


def test_generated_labels_follow_the_label_prior():
    game = _game()
    torch.manual_seed(0)
    _, y = game.sample_latent(20000)
    freq = torch.bincount(y, minlength=3).float() / 20000
    assert torch.allclose(freq, torch.tensor([0.5, 0.3, 0.2]), atol=0.015)


def test_ema_tracks_generator_weights():
    game = _game(ema=0.9)
    before = [p.detach().clone() for p in game.ema.model.parameters()]
    game.step(lambda: (torch.rand(8, 1, 28, 28) * 2 - 1, torch.randint(0, 3, (8,))))
    for b, e, p in zip(before, game.ema.model.parameters(), game.G.parameters()):
        assert torch.allclose(e, 0.9 * b + 0.1 * p.detach(), atol=1e-6)


def test_state_dict_round_trip_continues_identically():
    torch.manual_seed(0)
    a = _game(k=2, ema=0.99, arch="dcgan")
    batch = lambda: (torch.rand(8, 1, 28, 28) * 2 - 1, torch.randint(0, 3, (8,)))  # noqa: E731
    a.step(batch)
    b = _game(k=2, ema=0.99, arch="dcgan")
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b.load_state_dict(torch.load(buf, weights_only=True))
    torch.manual_seed(5)
    sa = a.step(batch)
    torch.manual_seed(5)
    sb = b.step(batch)
    assert sa == sb
    for pa, pb in zip(a.G.parameters(), b.G.parameters()):
        assert torch.equal(pa, pb)


def test_k_must_be_positive():
    g, d = build_models(ModelSpec("mlp", 8, (1, 28, 28)))
    with pytest.raises(ValueError, match="k=0"):
        Game(g, d, *adam_pair(g, d, 1e-3, 1e-3), GameOptions(k=0))


@pytest.mark.parametrize("k", [1, 2])
def test_reusing_the_last_d_batch_for_g_is_the_same_d_update_and_a_g_update_on_that_batch(k):
    """reuse_fake: D's updates are exactly the fresh-batch game's; the G update is the one made on the
    last D update's generated batch (same z and labels) against the updated D, to float tolerance."""
    import copy

    torch.manual_seed(0)
    reuse = _game(k=k, arch="dcgan")
    reuse.reuse_fake = True
    fresh = copy.deepcopy(reuse)
    fresh.reuse_fake = False
    g0 = copy.deepcopy(reuse.G)
    opt_state = copy.deepcopy(reuse.opt_g.state_dict())
    real = [(torch.rand(16, 1, 28, 28) * 2 - 1, torch.randint(0, 3, (16,))) for _ in range(k)]

    torch.manual_seed(5)
    s_reuse = reuse.step(iter(real))
    torch.manual_seed(5)
    s_fresh = fresh.step(iter(real))
    assert s_reuse.loss_d == pytest.approx(s_fresh.loss_d, abs=1e-6)
    for a, b in zip(reuse.D.parameters(), fresh.D.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    # The reference G update: G0 on the noise the last D update drew, against the updated D.
    torch.manual_seed(5)
    for _ in range(k):  # the noise of each D update, in order; the last one is the G update's
        z, y = reuse.sample_latent(16)
    opt_g = torch.optim.Adam(g0.parameters(), lr=1e-3, betas=(0.5, 0.999))
    opt_g.load_state_dict(opt_state)
    reuse.D.requires_grad_(False)
    loss = losses.generator_loss(reuse.D(g0(z, y), y), "non_saturating")
    opt_g.zero_grad()
    loss.backward()
    opt_g.step()
    assert s_reuse.loss_g == pytest.approx(loss.item(), abs=1e-5)
    for a, b in zip(reuse.G.parameters(), g0.parameters()):
        assert torch.allclose(a, b, atol=1e-5)
    for a, b in zip(reuse.D.parameters(), fresh.D.parameters()):  # D stays frozen in the G update
        assert torch.equal(a.grad, b.grad)


def test_channels_last_plays_the_same_game_to_float_tolerance():
    """The NHWC layout changes only the order of float sums: the same losses and weights after steps."""
    torch.manual_seed(0)
    nchw = _game(k=2, arch="dcgan")
    torch.manual_seed(0)
    nhwc = _game(k=2, arch="dcgan", channels_last=True)
    real = [(torch.rand(16, 1, 28, 28) * 2 - 1, torch.randint(0, 3, (16,))) for _ in range(6)]
    for step in range(3):
        torch.manual_seed(step)
        a = nchw.step(iter(real[2 * step:2 * step + 2]))
        torch.manual_seed(step)
        b = nhwc.step(iter(real[2 * step:2 * step + 2]))
        assert a.loss_d == pytest.approx(b.loss_d, abs=1e-4) and a.loss_g == pytest.approx(b.loss_g, abs=1e-4)
    for p, q in zip(nchw.G.parameters(), nhwc.G.parameters()):
        assert torch.allclose(p, q, atol=1e-4)
    w = next(p for p in nhwc.D.parameters() if p.dim() == 4 and p.shape[1] > 1)  # a conv past the first
    assert w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()


def test_bf16_runs_the_step_in_bfloat16_and_keeps_weights_and_losses_fp32():
    """precision=bf16: G's and D's convolutions compute in bfloat16 during the step (outside it, fp32);
    the weights, the optimizer's state and the logits the losses read stay fp32, and the step plays
    the fp32 game to bfloat16's tolerance."""
    torch.manual_seed(0)
    full = _game(k=1, arch="dcgan", channels_last=True)
    torch.manual_seed(0)
    half = _game(k=1, arch="dcgan", channels_last=True, precision="bf16")
    dtypes = {"fp32": [], "bf16": []}
    for name, game in (("fp32", full), ("bf16", half)):
        for m in list(game.G.modules()) + list(game.D.modules()):
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                m.register_forward_hook(lambda mod, inp, out, seen=dtypes[name]: seen.append(out.dtype))
    real = [(torch.rand(16, 1, 28, 28) * 2 - 1, torch.randint(0, 3, (16,))) for _ in range(3)]
    for step in range(3):
        torch.manual_seed(step)
        a = full.step(iter(real[step:step + 1]))
        torch.manual_seed(step)
        b = half.step(iter(real[step:step + 1]))
        assert a.loss_d == pytest.approx(b.loss_d, abs=0.05) and a.loss_g == pytest.approx(b.loss_g, abs=0.05)
    assert dtypes["bf16"] and set(dtypes["bf16"]) == {torch.bfloat16}
    assert set(dtypes["fp32"]) == {torch.float32}
    assert all(p.dtype == torch.float32 for p in list(half.G.parameters()) + list(half.D.parameters()))
    assert all(v.dtype == torch.float32 for st in half.opt_g.state.values() for v in st.values() if v.dim())
    moved = max((p - q).abs().max().item() for p, q in zip(full.G.parameters(), half.G.parameters()))
    assert 0 < moved < 0.05  # Adam's first steps are the same size; bfloat16 rounds what they follow
    dtypes["bf16"].clear()
    with torch.no_grad():  # sampling and evaluation outside the step: fp32
        z, y = half.sample_latent(4)
        half.D(half.G(z, y), y)
    assert set(dtypes["bf16"]) == {torch.float32}
    with pytest.raises(ValueError, match="precision='fp16'"):
        _game(precision="fp16")


def test_translation_shifts_each_image_by_at_most_an_eighth_and_cutout_zeroes_one_square():
    from gan_core.augment import cutout, translation

    torch.manual_seed(0)
    x = torch.zeros(64, 1, 28, 28)
    x[:, 0, 14, 14] = 1.0  # one lit pixel in the middle of each image
    moved = translation(x)
    assert moved.shape == x.shape and torch.equal(moved.sum((1, 2, 3)), torch.ones(64))  # shifted, not lost
    where = moved[:, 0].flatten(1).argmax(1)
    dy, dx = where // 28 - 14, where % 28 - 14
    assert dy.abs().max() <= 4 and dx.abs().max() <= 4  # int(28 / 8 + 0.5) = 4 pixels at most
    assert len(set(zip(dy.tolist(), dx.tolist()))) > 20  # each image its own offset
    ones = torch.ones(64, 1, 28, 28)
    cut = cutout(ones)
    zeroed = (cut == 0).sum((1, 2, 3))
    assert zeroed.max() == 14 * 14 and zeroed.min() >= 7 * 7  # a 14 x 14 square, clipped at the borders
    assert set(cut.unique().tolist()) == {0.0, 1.0}
    # Both are differentiable: G's gradient passes through them.
    img = torch.rand(4, 1, 28, 28, requires_grad=True)
    cutout(translation(img)).sum().backward()
    assert img.grad is not None and img.grad.abs().sum() > 0


def test_diffaugment_transforms_what_d_sees_of_real_and_generated_batches_in_both_updates():
    torch.manual_seed(0)
    game = _game(augment="translation,cutout")
    plain = _game()
    seen = []
    hook = game.D.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    real = torch.rand(8, 1, 28, 28) * 2 - 1
    game.step(lambda: (real.clone(), torch.randint(0, 3, (8,))))
    hook.remove()
    assert len(seen) == 3  # the real and the generated batch of the D update, the generated one of G's
    # The real batch reached D transformed: a quarter of each image or so is cut out (zeros).
    assert not torch.equal(seen[0], real) and ((seen[0] == 0).float().mean((1, 2, 3)) > 0.05).all()
    assert all(((s == 0).float().mean((1, 2, 3)) > 0.05).all() for s in seen[1:])
    assert plain.augment == () and game.augment == ("translation", "cutout")
    with pytest.raises(ValueError, match="flip is not one of translation, cutout"):
        _game(augment="flip")


def _bar_angle(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each image's principal axis in degrees from the vertical, and its ink's centre (row, column)."""
    w = (images[:, 0] + 1).clamp(min=0)
    h, wd = w.shape[1:]
    yy, xx = torch.meshgrid(torch.arange(h, dtype=w.dtype), torch.arange(wd, dtype=w.dtype), indexing="ij")
    m = w.sum((1, 2))
    cy, cx = (w * yy).sum((1, 2)) / m, (w * xx).sum((1, 2)) / m
    dy, dx = yy - cy[:, None, None], xx - cx[:, None, None]
    syy, sxx, sxy = (w * dy * dy).sum((1, 2)), (w * dx * dx).sum((1, 2)), (w * dx * dy).sum((1, 2))
    return torch.rad2deg(0.5 * torch.atan2(2 * sxy, syy - sxx)), cy, cx


def test_jitter_tilts_scales_and_shears_each_image_within_its_strength():
    bar = torch.full((400, 1, 28, 28), -1.0)
    bar[:, :, 6:22, 13:15] = 1.0  # a vertical bar through the centre
    assert jitter(bar, 0.0) is bar
    g = torch.Generator().manual_seed(0)
    out = jitter(bar, 1.0, g)
    assert out.shape == bar.shape and out.dtype == bar.dtype
    assert out.min() >= -1 - 1e-6 and out.max() <= 1 + 1e-6  # bilinear, the border's background extended
    angle, cy, cx = _bar_angle(out)
    # Rotation up to 20 degrees and shear up to 0.2 (11.3 degrees) at strength 1: within about 32
    # degrees of the vertical, spread over both sides, and about the centre (the bar stays in place).
    assert angle.abs().max() < 33 and angle.std() > 8 and (angle > 5).any() and (angle < -5).any()
    assert (cy - 13.5).abs().max() < 0.6 and (cx - 13.5).abs().max() < 0.6
    half = _bar_angle(jitter(bar, 0.5, torch.Generator().manual_seed(0)))[0]
    assert half.abs().max() < 17 and half.std().item() == pytest.approx(angle.std().item() / 2, rel=0.2)
    with pytest.raises(ValueError, match="strength=-1"):
        jitter(bar, -1.0)


def test_real_jitter_changes_the_real_images_d_sees_and_nothing_else():
    torch.manual_seed(0)
    game, plain = _game(real_jitter=1.0), _game()
    seen = {id(game): [], id(plain): []}
    real = torch.full((8, 1, 28, 28), -1.0)
    real[:, :, 6:22, 13:15] = 1.0
    for gm in (game, plain):
        hook = gm.D.register_forward_pre_hook(lambda m, args, key=id(gm): seen[key].append(args[0].detach().clone()))
        gm.step(lambda: (real.clone(), torch.randint(0, 3, (8,))))
        hook.remove()
    jittered, untouched = seen[id(game)], seen[id(plain)]
    assert len(jittered) == len(untouched) == 3  # the D update's real and generated batches, G's generated one
    assert torch.equal(untouched[0], real) and not torch.equal(jittered[0], real)
    assert (_bar_angle(jittered[0])[0].abs() > 0.5).any()
    with pytest.raises(ValueError, match="real_jitter=-0.5"):
        _game(real_jitter=-0.5)


def test_the_mode_seeking_term_is_the_reciprocal_of_image_over_latent_distance():
    z = torch.zeros(4, 3)
    z[2:] = 2.0  # |z1 - z2| = 2 everywhere
    fake = torch.zeros(4, 1, 2, 2)
    fake[2:] = 0.5  # |G(z1) - G(z2)| = 0.5 everywhere
    assert losses.mode_seeking(fake, z, eps=0.0).item() == pytest.approx(4.0)  # 1 / (0.5 / 2)
    odd_z, odd_fake = torch.cat([z, torch.full((1, 3), 9.0)]), torch.cat([fake, torch.full((1, 1, 2, 2), 9.0)])
    assert losses.mode_seeking(odd_fake, odd_z, eps=0.0).item() == pytest.approx(4.0)  # the last row is unpaired
    with pytest.raises(ValueError, match="two generated rows"):
        losses.mode_seeking(fake[:1], z[:1])


def test_mode_seeking_pairs_labels_and_keeps_same_label_samples_apart():
    """With the term, the G batch's second half repeats the first half's labels; trained against the same
    frozen D from the same start, G's outputs for one label and two z end further apart than without."""
    def spread(game):
        torch.manual_seed(123)
        z, y = torch.randn(200, 8), torch.full((200,), 1)
        with torch.no_grad():
            out = game.G(z, y)
        return (out[:100] - out[100:]).abs().mean().item()

    runs = {}
    for weight in (0.0, 5.0):
        torch.manual_seed(0)
        game = _game(mode_seeking=weight)
        torch.manual_seed(1)
        z, y = game._g_batch(10)
        if weight:
            assert torch.equal(y[:5], y[5:])
        for _ in range(60):
            game.generator_step(32)
        runs[weight] = spread(game)
    assert runs[5.0] > 2 * runs[0.0]
    with pytest.raises(ValueError, match="mode_seeking=-1"):
        _game(mode_seeking=-1.0)


def test_the_r1_penalty_is_the_squared_input_gradient_of_d():
    """For a linear logit w.x the input gradient is w at every row: the penalty is |w|^2, and its own
    gradient reaches w (2w), so descending it shrinks D's slope."""
    w = torch.tensor([3.0, -4.0], requires_grad=True)
    x = torch.randn(5, 2, requires_grad=True)
    penalty = losses.r1_penalty(x @ w, x)
    assert penalty.item() == pytest.approx(25.0)
    penalty.backward()
    assert torch.allclose(w.grad, 2 * w.detach())


def _d_batch():
    """One fixed real batch of 32 images in [-1, 1] with labels of three classes."""
    torch.manual_seed(5)
    return torch.rand(32, 1, 28, 28) * 2 - 1, torch.randint(0, 3, (32,))


def _d_trained(x, y, steps=40, **kw):
    """A game (built from seed 0 with the options `kw`) after `steps` D updates on the batch (x, y)."""
    torch.manual_seed(0)
    game = _game(**kw)
    for _ in range(steps):
        game.discriminator_step(x, y)
    return game


def _input_slope(game, x, y):
    x = x.clone().requires_grad_(True)
    return losses.r1_penalty(game.D(x, y), x).item()


def test_r1_flattens_d_on_the_real_images_and_the_lazy_interval_penalizes_every_nth_update(monkeypatch):
    """Trained on the same batches from the same start, D's input gradient on the real images ends
    smaller with R1 than without; with `r1_every` 4, ten D updates take the penalty at updates 0, 4, 8."""
    x, y = _d_batch()
    slopes = {gamma: _input_slope(_d_trained(x, y, r1=gamma), x, y) for gamma in (0.0, 10.0)}
    assert slopes[10.0] < 0.5 * slopes[0.0]

    calls = []
    real = losses.r1_penalty
    monkeypatch.setattr(losses, "r1_penalty", lambda logits, xs: calls.append(len(xs)) or real(logits, xs))
    game = _game(r1=1.0, r1_every=4)
    for _ in range(10):
        game.discriminator_step(x, y)
    assert calls == [32, 32, 32]
    resumed = _game(r1=1.0, r1_every=4)  # a game resumed from the state keeps the penalty's schedule
    resumed.load_state_dict(game.state_dict())
    calls.clear()
    for _ in range(3):
        resumed.discriminator_step(x, y)
    assert calls == [32]  # updates 10, 11, 12: the penalty at 12
    with pytest.raises(ValueError, match="r1=-1"):
        _game(r1=-1.0)


def test_the_consistency_penalty_is_the_mean_squared_logit_change():
    a, b = torch.tensor([1.0, 2.0], requires_grad=True), torch.tensor([0.0, 4.0])
    penalty = losses.consistency_penalty(a, b)
    assert penalty.item() == pytest.approx(2.5)  # (1 + 4) / 2
    penalty.backward()
    assert torch.allclose(a.grad, torch.tensor([1.0, -2.0]))


def _shift_change(game, x, y):
    from gan_core.augment import translation

    torch.manual_seed(1)
    with torch.no_grad():
        return losses.consistency_penalty(game.D(x, y), game.D(translation(x), y)).item()


def test_consistency_regularization_makes_d_agree_on_translated_copies(monkeypatch):
    """Trained on the same batches from the same start, D's logits move less under a translation with
    the penalty than without; each D update takes it once for the real and once for the generated batch."""
    x, y = _d_batch()
    change = {weight: _shift_change(_d_trained(x, y, consistency=weight), x, y) for weight in (0.0, 10.0)}
    assert change[10.0] < 0.5 * change[0.0]
    calls = []
    real = losses.consistency_penalty
    monkeypatch.setattr(losses, "consistency_penalty", lambda a, b: calls.append(len(a)) or real(a, b))
    game = _game(consistency=1.0)
    game.discriminator_step(x, y)
    _game().discriminator_step(x, y)
    assert calls == [32, 32]
    with pytest.raises(ValueError, match="consistency=-1"):
        _game(consistency=-1.0)


def test_one_sided_label_smoothing_moves_ds_target_for_real_images():
    """The real term's optimum is D(x) = 1 - s (its gradient vanishes at that logit); s = 0 is -V; a D
    trained on the same batches ends near 1 - s on the real batch, not near 1."""
    s = 0.2
    logit = torch.tensor([math.log((1 - s) / s)], requires_grad=True)
    losses.discriminator_loss(logit, torch.tensor([-50.0]), smoothing=s).backward()
    assert abs(logit.grad.item()) < 1e-6
    r, f = torch.tensor([0.3, -1.0]), torch.tensor([0.5, 2.0])
    assert losses.discriminator_loss(r, f, 0.0).item() == pytest.approx(-losses.value(r, f).item())
    assert losses.discriminator_loss(r, f, s).item() != pytest.approx(losses.discriminator_loss(r, f).item())
    x, y = _d_batch()
    d_real = {}
    for smoothing in (0.0, s):
        game = _d_trained(x, y, steps=120, label_smoothing=smoothing)
        with torch.no_grad():
            d_real[smoothing] = torch.sigmoid(game.D(x, y)).mean().item()
    assert d_real[0.0] > 0.95 and abs(d_real[s] - (1 - s)) < 0.05
    with pytest.raises(ValueError, match="label_smoothing=0.5"):
        _game(label_smoothing=0.5)


def test_the_reported_value_is_v_without_the_penalties_or_the_smoothed_target():
    """With R1 and label smoothing in D's loss, the step still reports V(D, G) on its batches, and
    loss_d (what D descends) differs from -V. A learning rate of 0 keeps D as it was for the check."""
    x, y = _d_batch()
    game = _d_trained(x, y, r1=10.0, label_smoothing=0.2)  # D's logits away from 0, where the terms differ
    torch.manual_seed(0)
    fake = torch.rand(32, 1, 28, 28) * 2 - 1
    for group in game.opt_d.param_groups:
        group["lr"] = 0.0
    with torch.no_grad():
        v = losses.value(game.D(x, y), game.D(fake, y)).item()
    loss_d, _, _, reported = game.discriminator_step(x, y, (fake, y))
    assert reported == pytest.approx(v, abs=1e-5)
    assert abs(loss_d + v) > 0.05


def _aux_game(aux_weight=1.0, lr=1e-3):
    torch.manual_seed(0)
    g, d = build_models(ModelSpec("dcgan", 8, (1, 28, 28), num_classes=3, g_width=8, d_width=8,
                                  d_conditioning="aux"))
    opt_g, opt_d = adam_pair(g, d, lr, lr)
    return Game(g, d, opt_g, opt_d, GameOptions(aux_weight=aux_weight), label_prior=torch.tensor([0.5, 0.3, 0.2]))


def test_the_aux_discriminator_classifies_with_a_second_head_and_its_logit_ignores_the_label():
    """AC-GAN's D: the real/fake logit is the same for any label; `classes=True` adds one logit per
    class; D's class head learns the real batch's labels under the game's D updates; other
    conditionings have no class head, and the MLP none at all."""
    game = _aux_game()
    x, y = _d_batch()
    d = game.D.eval()
    with torch.no_grad():
        assert torch.equal(d(x, y), d(x, (y + 1) % 3))
        logit, classes = d(x, y, classes=True)
    assert torch.equal(logit, d(x, y)) and classes.shape == (32, 3)
    d.train()
    accuracy = lambda: (game.D(x, y, classes=True)[1].argmax(1) == y).float().mean().item()  # noqa: E731
    before = accuracy()
    for _ in range(40):
        game.discriminator_step(x, y)
    assert before < 0.6 and accuracy() == 1.0
    plain = build_models(ModelSpec("dcgan", 8, (1, 28, 28), num_classes=3, g_width=8, d_width=8))[1]
    with pytest.raises(ValueError, match="d_conditioning='aux'"):
        plain(x, y, classes=True)
    with pytest.raises(ValueError, match="d_conditioning='aux' is built for model.arch='dcgan'"):
        build_models(ModelSpec("mlp", 8, (1, 28, 28), num_classes=3, d_conditioning="aux"))
    assert _game(arch="dcgan").aux_weight == 0.0  # concat: no class head, no class loss
    with pytest.raises(ValueError, match="aux_weight=-1"):
        _aux_game(aux_weight=-1.0)


@pytest.mark.parametrize("weight", [0.0, 2.0])
def test_the_aux_game_adds_the_class_cross_entropy_to_both_losses(weight):
    """D descends -V + w CE(D's class logits on the real batch, its labels); G descends its game loss
    + w CE(D's class logits on its samples, the labels asked for), and reports the game loss alone.
    Learning rates of 0 keep both players as they were for the check."""
    x, y = _d_batch()
    game = _aux_game(weight, lr=0.0)
    with torch.no_grad():
        logits, classes = game.D(x, y, classes=True)
    expected = torch.nn.functional.cross_entropy(classes, y).item()
    torch.manual_seed(1)
    loss_d, _, _, v = game.discriminator_step(x, y)
    assert loss_d == pytest.approx(-v + weight * expected, abs=1e-5)
    torch.manual_seed(2)
    loss_g = game.generator_step(16)
    grads = [p.grad.clone() for p in game.G.parameters()]
    torch.manual_seed(2)
    z, y_fake = game._g_batch(16)
    fake = game.G(z, y_fake)
    fake_logits, fake_classes = game.D(fake, y_fake, classes=True)
    game_loss = losses.generator_loss(fake_logits)
    assert loss_g == pytest.approx(game_loss.item(), abs=1e-5)
    total = game_loss + weight * torch.nn.functional.cross_entropy(fake_classes, y_fake)
    manual = torch.autograd.grad(total, list(game.G.parameters()))
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads, manual))
    _, fake_classes = game.D(game.G(z, y_fake), y_fake, classes=True)
    class_only = torch.autograd.grad(torch.nn.functional.cross_entropy(fake_classes, y_fake),
                                     list(game.G.parameters()))
    assert max(g.abs().max().item() for g in class_only) > 1e-4  # the class term moves G when weighted
