import itertools

import pytest
import torch
from torch import nn

from gan_core import Game, GameOptions, ModelSpec, adam_pair, build_models

CASES = list(itertools.product(["mlp", "dcgan"], [None, 10], [28, 32, 64], [1, 3], ["concat", "projection"]))


@pytest.mark.parametrize("arch,num_classes,size,channels,cond", CASES)
def test_every_model_builds_and_shapes_match(arch, num_classes, size, channels, cond):
    spec = ModelSpec(arch=arch, z_dim=16, image_shape=(channels, size, size), num_classes=num_classes,
                     g_width=8, d_width=8, d_conditioning=cond)
    g, d = build_models(spec)
    z = torch.randn(4, 16)
    y = torch.randint(0, num_classes, (4,)) if num_classes else None
    x = g(z, y)
    assert x.shape == (4, channels, size, size)
    assert x.min() >= -1 and x.max() <= 1  # tanh output
    assert d(x, y).shape == (4,)


def test_dcgan_follows_radford_guidelines():
    g, d = build_models(ModelSpec("dcgan", 32, (1, 64, 64), num_classes=None, g_width=16, d_width=16))
    for m in (g, d):
        kinds = {type(x) for x in m.modules()}
        assert not kinds & {nn.MaxPool2d, nn.AvgPool2d, nn.Linear}, "no pooling, no FC hidden layers"
    assert any(isinstance(x, nn.ConvTranspose2d) for x in g.modules())
    assert any(isinstance(x, nn.BatchNorm2d) for x in g.modules())
    assert isinstance(list(g.modules())[-1], nn.Tanh)
    assert sum(isinstance(x, nn.ReLU) for x in g.modules()) == 4  # depth 4 for 64x64
    body = list(d.body)
    assert isinstance(body[0], nn.Conv2d) and body[0].stride == (2, 2)
    assert isinstance(body[1], nn.LeakyReLU) and body[1].negative_slope == 0.2, "no BatchNorm on D's first layer"
    assert sum(isinstance(x, nn.BatchNorm2d) for x in d.modules()) == 3
    convs = [x for x in d.modules() if isinstance(x, nn.Conv2d)]
    w = torch.cat([c.weight.flatten() for c in convs])
    assert abs(w.std().item() - 0.02) < 0.002 and abs(w.mean().item()) < 0.002


def test_conditional_generator_uses_the_label():
    g, _ = build_models(ModelSpec("dcgan", 16, (1, 28, 28), num_classes=10, g_width=8, d_width=8))
    g.eval()
    z = torch.randn(1, 16).repeat(2, 1)
    out = g(z, torch.tensor([0, 7]))
    same = g(z, torch.tensor([7, 7]))
    assert torch.equal(same[0], same[1])
    assert (out[0] - out[1]).abs().mean() > 0.05 * out.abs().mean()


def test_labels_required_and_refused():
    g, d = build_models(ModelSpec("mlp", 8, (1, 28, 28), num_classes=3))
    with pytest.raises(ValueError, match="needs labels"):
        g(torch.randn(2, 8))
    g2, _ = build_models(ModelSpec("mlp", 8, (1, 28, 28)))
    with pytest.raises(ValueError, match="unconditional"):
        g2(torch.randn(2, 8), torch.tensor([0, 1]))


def test_bad_names_and_geometry_are_named():
    with pytest.raises(ValueError, match="model.arch='vae'"):
        build_models(ModelSpec("vae", 8, (1, 28, 28)))
    with pytest.raises(ValueError, match="model.depth=3"):
        build_models(ModelSpec("dcgan", 8, (1, 28, 28), depth=3))


def test_a_spec_comes_back_from_its_json_form():
    import dataclasses
    import json

    spec = ModelSpec("dcgan", 16, (1, 28, 28), num_classes=10, g_width=8, d_width=8, d_norm="spectral")
    kept = json.loads(json.dumps(dataclasses.asdict(spec)))  # as a checkpoint keeps it: the shape a list
    assert kept["image_shape"] == [1, 28, 28]
    assert ModelSpec.from_dict(kept) == spec
    g, d = build_models(ModelSpec.from_dict(kept))
    assert g.image_shape == (1, 28, 28) and not any(isinstance(m, nn.BatchNorm2d) for m in d.modules())


@pytest.mark.parametrize("arch", ["mlp", "dcgan"])
def test_spectral_discriminator_is_one_lipschitz_per_layer_and_keeps_its_state(arch):
    spec = ModelSpec(arch, 16, (1, 28, 28), num_classes=10, g_width=8, d_width=8, d_norm="spectral")
    torch.manual_seed(0)
    g, d = build_models(spec)
    assert not any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in d.modules())
    layers = [m for m in d.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert layers and all(m.bias is not None for m in layers), "BatchNorm's shift kept as a bias"
    x, y = torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))
    d.train()
    for _ in range(30):  # one power iteration per training forward
        d(x, y)
    sigmas = [torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2).item() for m in layers]
    assert all(abs(s - 1) < 0.05 for s in sigmas), sigmas
    # The effective weight is the raw weight over its norm: scaling the raw weights leaves D as it is,
    # while the BatchNorm D changes.
    d.eval()
    before = d(x, y)
    with torch.no_grad():
        for m in layers:
            m.parametrizations.weight.original.mul_(10)
    assert torch.allclose(d(x, y), before, rtol=1e-4, atol=1e-5)
    _, plain = build_models(ModelSpec(arch, 16, (1, 28, 28), num_classes=10, g_width=8, d_width=8))
    plain.eval()
    before = plain(x, y)
    with torch.no_grad():
        for m in plain.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.mul_(10)
    assert not torch.allclose(plain(x, y), before, rtol=1e-2)
    # a checkpoint's state loads into a D built from the same spec
    _, again = build_models(spec)
    again.load_state_dict(d.state_dict())
    again.eval()
    assert torch.equal(again(x, y), d(x, y))
    with pytest.raises(ValueError, match="model.d_norm='layer'"):
        build_models(ModelSpec(arch, 16, (1, 28, 28), d_norm="layer"))


def test_spectral_discriminator_trains_in_the_game():
    from pipelines.config import load_config
    from pipelines.config.build import model_spec

    cfg = load_config(None, ["model.d_norm=spectral"])
    spec = model_spec(cfg, (1, 28, 28), 10)
    assert spec.d_norm == "spectral"
    torch.manual_seed(0)
    g, d = build_models(spec)
    opt_g, opt_d = adam_pair(g, d, 2e-4, 2e-4)
    game = Game(g, d, opt_g, opt_d, GameOptions(k=1, channels_last=True))
    real = iter([(torch.rand(16, 1, 28, 28) * 2 - 1, torch.randint(0, 10, (16,))) for _ in range(3)])
    raw = [p.detach().clone() for p in d.parameters()]
    for _ in range(3):
        stats = game.step(real)
    assert all(torch.isfinite(torch.tensor([stats.loss_d, stats.loss_g])))
    assert any(not torch.equal(a, b) for a, b in zip(raw, d.parameters())), "D's raw weights are trained"


@pytest.mark.parametrize("arch", ["mlp", "dcgan"])
def test_generator_update_leaves_discriminator_without_gradients(arch):
    g, d = build_models(ModelSpec(arch, 16, (1, 28, 28), num_classes=10, g_width=8, d_width=8))
    opt_g, opt_d = adam_pair(g, d, 1e-3, 1e-3)
    game = Game(g, d, opt_g, opt_d, GameOptions(k=1))
    d_before = [p.detach().clone() for p in d.parameters()]
    opt_d.zero_grad(set_to_none=True)
    game.generator_step(8)
    assert all(p.grad is None for p in d.parameters()), "D received gradients during the G update"
    assert all(torch.equal(a, b) for a, b in zip(d_before, d.parameters()))
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in g.parameters() if p.requires_grad)
    assert all(p.requires_grad for p in d.parameters()), "D is unfrozen again after the G update"


@pytest.mark.parametrize("n,channels", [(10, 1), (64, 3), (3, 1)])
def test_grid_tiles_as_torchvision_make_grid_does(n, channels):
    from torchvision.utils import make_grid as tv_grid

    from gan_core.visual import make_grid

    x = torch.rand(n, channels, 7, 5) * 2.4 - 1.2  # a little outside [-1, 1]: clamped, as value_range does
    ours = make_grid(x, nrow=8)
    ref = tv_grid(x, nrow=8, normalize=True, value_range=(-1, 1), padding=2)
    assert ours.shape == ref.shape and torch.allclose(ours, ref, atol=1e-6)


@pytest.mark.parametrize("shape,cin,cout,k,stride,pad", [((1, 1), 80, 64, 7, 1, 0), ((1, 1), 80, 64, 4, 1, 0),
                                                        ((7, 7), 32, 1, 4, 2, 1), ((16, 16), 16, 3, 4, 2, 1),
                                                        ((7, 7), 64, 32, 4, 2, 1)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_generators_transposed_convolution_matches_torchs_forward_and_backward(shape, cin, cout, k, stride, pad,
                                                                                channels_last):
    """The matrix-product path (1x1 input, few output channels) and the kernel path (the rest) give
    torch's ConvTranspose2d: output, input gradient and weight and bias gradients."""
    from gan_core.models.dcgan import ConvTranspose2d

    torch.manual_seed(0)
    ref = nn.ConvTranspose2d(cin, cout, k, stride, pad)
    ours = ConvTranspose2d(cin, cout, k, stride, pad)
    ours.load_state_dict(ref.state_dict())
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    ref, ours = ref.to(memory_format=fmt), ours.to(memory_format=fmt)
    x = torch.randn(6, cin, *shape).contiguous(memory_format=fmt)
    xr, xo = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    yr, yo = ref(xr), ours(xo)
    assert yo.shape == yr.shape and torch.allclose(yo, yr, atol=1e-5)
    g = torch.randn_like(yr)
    yr.backward(g)
    yo.backward(g)
    assert torch.allclose(xo.grad, xr.grad, atol=1e-4)
    assert torch.allclose(ours.weight.grad, ref.weight.grad, atol=1e-4)
    assert torch.allclose(ours.bias.grad, ref.bias.grad, atol=1e-4)


@pytest.mark.parametrize("channels,classes,size", [(1, 10, 28), (3, 4, 32), (1, 3, 64)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_discriminators_label_channels_match_a_convolution_of_the_joined_input(channels, classes, size, channels_last):
    """D's first layer under concat conditioning, computed as conv(image) + a per-class map, gives
    nn.Conv2d over the image joined with its one-hot label channels: output, input gradient, weight
    and bias gradients. Without labels it is that plain layer."""
    from gan_core.models.base import one_hot_channels
    from gan_core.models.dcgan import LabelChannelsConv2d

    torch.manual_seed(0)
    ref = nn.Conv2d(channels + classes, 16, 4, 2, 1)
    ours = LabelChannelsConv2d(channels, classes, 16, 4, 2, 1)
    ours.load_state_dict(ref.state_dict())
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    ref, ours = ref.to(memory_format=fmt), ours.to(memory_format=fmt)
    x = torch.randn(12, channels, size, size).contiguous(memory_format=fmt)
    y = torch.arange(12) % classes
    xr, xo = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    yr = ref(torch.cat([xr, one_hot_channels(y, classes, size, size)], 1))
    yo = ours(xo, y)
    assert yo.shape == yr.shape and torch.allclose(yo, yr, atol=1e-5)
    assert (yo[0] - yo[1]).abs().max() > 1e-3  # the label changes the output
    g = torch.randn_like(yr)
    yr.backward(g)
    yo.backward(g)
    assert torch.allclose(xo.grad, xr.grad, atol=1e-5)
    for mine, theirs in ((ours.weight.grad, ref.weight.grad), (ours.bias.grad, ref.bias.grad)):
        assert (mine - theirs).abs().max() <= 1e-5 * theirs.abs().max()  # sums over many positions: relative
    joined = torch.cat([x, one_hot_channels(y, classes, size, size)], 1)
    assert torch.allclose(ours(joined), ref(joined), atol=1e-6)


def test_minibatch_std_lets_d_see_a_batch_without_variety():
    """The head sees one more map, the batch's mean feature standard deviation: with it, D's logit for
    a row depends on the other rows (a batch of copies of one image scores otherwise than that image
    among varied ones); without it, in eval mode, it does not. It trains in the game with channels-last."""
    from pipelines.config import load_config
    from pipelines.config.build import model_spec
    from gan_core.models.dcgan import with_minibatch_std

    h = torch.randn(8, 4, 3, 3)
    out = with_minibatch_std(h)
    assert out.shape == (8, 5, 3, 3) and torch.equal(out[:, :4], h)
    assert torch.allclose(out[:, 4], h.std(0, unbiased=False).mean().expand(8, 3, 3), atol=1e-4)
    assert with_minibatch_std(h[:1].expand(8, -1, -1, -1))[:, 4].abs().max() < 1e-3  # copies: about 0
    cfg = load_config(None, ["model.d_minibatch_std=true"])
    spec = model_spec(cfg, (1, 28, 28), 10)
    assert spec.d_minibatch_std
    torch.manual_seed(0)
    g, d = build_models(spec)
    assert d.head.in_channels == 2 * cfg.model.d_width + 1  # depth 2 at 28 px: 2 x width, and the map
    d.eval()
    x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    copies = x[:1].expand(16, -1, -1, -1)
    assert not torch.allclose(d(x, y)[0], d(copies, y[:1].expand(16))[0], atol=1e-4)
    _, plain = build_models(model_spec(load_config(None, []), (1, 28, 28), 10))
    plain.eval()
    assert torch.allclose(plain(x, y)[0], plain(copies, y[:1].expand(16))[0], atol=1e-5)
    opt_g, opt_d = adam_pair(g, d, 2e-4, 2e-4)
    game = Game(g, d, opt_g, opt_d, GameOptions(k=1, channels_last=True))
    before = [p.detach().clone() for p in d.head.parameters()]
    real = iter([(torch.rand(16, 1, 28, 28) * 2 - 1, torch.randint(0, 10, (16,))) for _ in range(3)])
    for _ in range(3):
        stats = game.step(real)
    assert all(torch.isfinite(torch.tensor([stats.loss_d, stats.loss_g])))
    assert not torch.equal(d.head.weight[:, -1], before[0][:, -1])  # the new map's weights learn
    with pytest.raises(ValueError, match="model.d_minibatch_std"):
        build_models(ModelSpec("mlp", 16, (1, 28, 28), d_minibatch_std=True))


def test_class_batchnorm_gives_each_label_its_own_scale_and_shift_in_g():
    """With `model.g_conditioning: batchnorm` every BatchNorm of G normalizes by the batch and then
    scales and shifts by the row's label: changing class 3's scale changes the rows labelled 3 and no
    other (same z, same batch); the input mode has no per-class parameters. It trains in the game with
    channels-last, its folded inference copy and its export compute the same images, and the mlp
    refuses it."""
    from pipelines.config import load_config
    from pipelines.config.build import model_spec
    from gan_core.models import for_inference
    from gan_core.models.base import ClassBatchNorm2d

    cfg = load_config(None, ["model.g_conditioning=batchnorm"])
    spec = model_spec(cfg, (1, 28, 28), 10)
    assert spec.g_conditioning == "batchnorm"
    torch.manual_seed(0)
    g, d = build_models(spec)
    norms = [m for m in g.modules() if isinstance(m, ClassBatchNorm2d)]
    assert len(norms) == 2 and all(m.scale.weight.shape[0] == 10 for m in norms)  # depth 2 at 28 px
    for m in norms:  # every class starts as DCGAN's BatchNorm: scale about 1, shift 0
        assert (m.scale.weight - 1).abs().max() < 0.2 and m.scale.weight.std() > 0 and not m.shift.weight.any()
    plain, _ = build_models(model_spec(load_config(None, []), (1, 28, 28), 10))
    assert not any(isinstance(m, ClassBatchNorm2d) for m in plain.modules())
    z, y = torch.randn(20, spec.z_dim), torch.arange(20) % 10
    g.eval()
    before = g(z, y).detach()
    with torch.no_grad():
        norms[-1].scale.weight[3] *= 1.5
    after = g(z, y).detach()
    moved = (after - before).flatten(1).abs().amax(1) > 1e-4
    assert torch.equal(moved, y == 3)
    assert torch.allclose(for_inference(g)(z, y), after, atol=1e-5)
    assert torch.allclose(torch.export.export(g, (z, y)).module()(z, y), after, atol=1e-5)
    g.train()
    opt_g, opt_d = adam_pair(g, d, 2e-4, 2e-4)
    game = Game(g, d, opt_g, opt_d, GameOptions(k=1, channels_last=True))
    shift = norms[0].shift.weight.detach().clone()
    real = iter([(torch.rand(16, 1, 28, 28) * 2 - 1, torch.randint(0, 10, (16,))) for _ in range(3)])
    for _ in range(3):
        stats = game.step(real)
    assert all(torch.isfinite(torch.tensor([stats.loss_d, stats.loss_g])))
    assert not torch.equal(norms[0].shift.weight, shift)  # the per-class shifts learn
    with pytest.raises(ValueError, match="model.g_conditioning"):
        build_models(ModelSpec("mlp", 16, (1, 28, 28), num_classes=10, g_conditioning="batchnorm"))
