"""Generator and discriminator: shapes, the architecture guidelines, init, presets (PAPER.md §1-3)."""

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dcgan.config import PRESETS, resolve
from dcgan.errors import DCGANError
from dcgan.models import ModelConfig, build
from dcgan.step import Networks, train_step

SMALL = dict(ngf=8, ndf=8)  # widths that keep every size fast
WEIGHTED = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
ARCH_CASES = [(p, s, c) for p in PRESETS for s in (16, 64) for c in (1, 3)]
ARCH_IDS = [f"{p}-{s}px-{c}ch" for p, s, c in ARCH_CASES]


def model_config(preset: str, **overrides) -> ModelConfig:
    """The ModelConfig a run with this preset and these settings would get."""
    return resolve({"preset": preset, **overrides}).model


def small_nets(preset: str, size: int = 16, channels: int = 3, **overrides):
    torch.manual_seed(0)
    return build(model_config(preset, image_size=size, channels=channels, **{**SMALL, **overrides}))


def latent(G, n: int, seed: int = 0) -> torch.Tensor:
    return G.sample_latent(n, torch.Generator().manual_seed(seed))


def images(config: ModelConfig, n: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    shape = (n, config.channels, config.image_size, config.image_size)
    return torch.rand(shape, generator=gen) * 2 - 1


@dataclass
class Call:
    module: nn.Module
    shape_in: torch.Size
    shape_out: torch.Size


def trace(net: nn.Module, x: torch.Tensor) -> list[Call]:
    """The leaf modules in the order the forward pass runs them, with input and output shapes."""
    calls = []

    def hook(module, inputs, output):
        calls.append(Call(module, inputs[0].shape, output.shape))

    handles = [m.register_forward_hook(hook) for m in net.modules() if not any(m.children())]
    try:
        with torch.no_grad():
            net(x)
    finally:
        for h in handles:
            h.remove()
    return calls


def is_activation(m: nn.Module) -> bool:
    return type(m).__module__ == "torch.nn.modules.activation"


@pytest.fixture(scope="module", params=ARCH_CASES, ids=ARCH_IDS)
def traced(request):
    """(G, D, G's calls, D's calls) for a small pair of every preset, size and channel count.

    Built once per case: the architecture tests only read the modules and the recorded calls."""
    preset, size, channels = request.param
    G, D = small_nets(preset, size, channels)
    return G, D, trace(G, latent(G, 2)), trace(D, images(G.config, 2))


# ---------------------------------------------------------------- shapes


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [16, 32, 64, 128, 256])
@pytest.mark.parametrize("preset", PRESETS)
def test_output_shapes(preset, size, channels):
    G, D = small_nets(preset, size, channels)
    fake = G(latent(G, 2))
    assert fake.shape == (2, channels, size, size)
    assert fake.min() >= -1 and fake.max() <= 1
    logits = D(fake)
    assert logits.shape == (2,)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("preset", PRESETS)
def test_generator_output_is_squashed_by_tanh(preset):
    G, _ = small_nets(preset)
    last = [m for m in G.modules() if isinstance(m, nn.ConvTranspose2d)][-1]
    with torch.no_grad():
        last.weight.mul_(1000)  # pre-activations far outside [-1, 1]
        fake = G(latent(G, 4))
    assert fake.min() >= -1 and fake.max() <= 1
    assert fake.abs().max() > 0.99  # saturated: the bound comes from tanh, not from small weights


# ---------------------------------------------------------------- architecture guidelines (§1)


def test_no_pooling_or_resizing_layers(traced):
    G, D, _, _ = traced
    for net in (G, D):
        kinds = {type(m).__module__ for m in net.modules()}
        assert "torch.nn.modules.pooling" not in kinds
        assert "torch.nn.modules.upsampling" not in kinds


def test_discriminator_downsamples_only_with_stride_2_convs(traced):
    _, D, _, calls = traced
    head = {id(m) for m in D.head.modules()}
    body = [c for c in calls if id(c.module) not in head]
    for before, after in zip(body, body[1:], strict=False):
        assert after.shape_in == before.shape_out  # nothing resizes between layers
    halvings = 0
    for c in body:
        size_in, size_out = c.shape_in[-1], c.shape_out[-1]
        if isinstance(c.module, nn.Conv2d):
            assert c.module.stride in ((1, 1), (2, 2))
            assert size_out == size_in // c.module.stride[0]
            halvings += c.module.stride[0] == 2
        else:
            assert c.shape_out == c.shape_in
    assert halvings == D.config.levels
    assert body[-1].shape_out[-2:] == (4, 4)


def test_generator_upsamples_only_with_stride_2_transposed_convs(traced):
    G, _, calls, _ = traced
    assert not any(isinstance(m, nn.Conv2d) for m in G.modules())
    projection = {id(m) for m in G.project_and_reshape.modules()}
    body = [c for c in calls if id(c.module) not in projection]
    assert body[0].shape_in[-2:] == (4, 4)
    for before, after in zip(body, body[1:], strict=False):
        assert after.shape_in == before.shape_out
    doublings = 0
    for c in body:
        size_in, size_out = c.shape_in[-1], c.shape_out[-1]
        if isinstance(c.module, nn.ConvTranspose2d):
            assert c.module.stride in ((1, 1), (2, 2))
            assert size_out == size_in * c.module.stride[0]
            doublings += c.module.stride[0] == 2
        else:
            assert c.shape_out == c.shape_in
    assert doublings == G.config.levels
    assert body[-1].shape_out[1:] == (G.config.channels, G.config.image_size, G.config.image_size)


def test_batchnorm_everywhere_but_generator_output_and_discriminator_input(traced):
    G, D, g_calls, d_calls = traced
    g_layers = [i for i, c in enumerate(g_calls) if isinstance(c.module, WEIGHTED)]
    for i in g_layers[:-1]:
        assert isinstance(g_calls[i + 1].module, BATCHNORMS)
    assert isinstance(g_calls[g_layers[-1] + 1].module, nn.Tanh)  # G's output layer: no BN

    head = {id(m) for m in D.head.modules()}
    d_layers = [i for i, c in enumerate(d_calls)
                if isinstance(c.module, nn.Conv2d) and id(c.module) not in head]
    assert isinstance(d_calls[d_layers[0] + 1].module, nn.LeakyReLU)  # D's input layer: no BN
    for i in d_layers[1:]:
        assert isinstance(d_calls[i + 1].module, BATCHNORMS)


def test_generator_uses_relu_and_a_final_tanh(traced):
    G, _, calls, _ = traced
    activations = [c.module for c in calls if is_activation(c.module)]
    assert {type(m) for m in activations[:-1]} == {nn.ReLU}
    assert isinstance(activations[-1], nn.Tanh)
    assert calls[-1].module is activations[-1]  # Tanh is the very last operation
    assert sum(isinstance(m, nn.Tanh) for m in G.modules()) == 1


def test_discriminator_uses_only_leaky_relu_with_slope_0_2(traced):
    _, D, _, calls = traced
    activations = [m for m in D.modules() if is_activation(m)]
    assert activations
    for m in activations:
        assert type(m) is nn.LeakyReLU
        assert m.negative_slope == 0.2
    assert not is_activation(calls[-1].module)  # D returns logits, no sigmoid


def test_no_bias_in_layers_followed_by_batchnorm(traced):
    _, _, g_calls, d_calls = traced
    for calls in (g_calls, d_calls):
        pairs = [(a.module, b.module) for a, b in zip(calls, calls[1:], strict=False)
                 if isinstance(a.module, WEIGHTED) and isinstance(b.module, BATCHNORMS)]
        assert pairs
        for layer, _bn in pairs:
            assert layer.bias is None


def test_no_fully_connected_hidden_layers(traced):
    G, D, _, _ = traced
    g_linear = [m for m in G.modules() if isinstance(m, nn.Linear)]
    assert g_linear == ([G.project_and_reshape.project] if G.config.projection == "linear" else [])
    for m in D.modules():
        if isinstance(m, nn.Linear):
            assert any(m is h for h in D.head.modules())
            assert m.out_features == 1


# ---------------------------------------------------------------- weight init (§2)


@pytest.mark.parametrize("preset", PRESETS)
def test_weight_init_statistics(preset):
    torch.manual_seed(0)
    G, D = build(model_config(preset, image_size=32))  # the preset's real widths: many weights
    gains = []
    for net in (G, D):
        for m in net.modules():
            if isinstance(m, WEIGHTED):
                assert m.weight.numel() >= 1000
                assert abs(m.weight.mean().item()) < 2e-3
                assert m.weight.std().item() == pytest.approx(0.02, abs=2e-3)
                if m.bias is not None:
                    assert torch.all(m.bias == 0)
            elif isinstance(m, BATCHNORMS):
                gains.append(m.weight.detach())
                assert torch.all(m.bias == 0)
    gains = torch.cat(gains)
    assert gains.numel() >= 700
    assert gains.mean().item() == pytest.approx(1.0, abs=3e-3)
    assert gains.std().item() == pytest.approx(0.02, abs=2e-3)


# ---------------------------------------------------------------- presets (§3)


def kernel_sizes(*nets) -> set:
    return {m.kernel_size for net in nets for m in net.modules()
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))}


def test_pytorch_preset_is_the_torch_lineage_64x64():
    config = model_config("pytorch")
    assert (config.kernel_size, config.ngf, config.ndf, config.nz) == (4, 64, 64, 100)
    assert config.image_size == 64
    torch.manual_seed(0)
    G, D = build(config)
    assert kernel_sizes(G, D) == {(4, 4)}
    calls = trace(G, latent(G, 2))
    first = calls[0]
    assert type(first.module) is nn.ConvTranspose2d  # projection: a 4x4 transposed conv from 1x1
    assert first.shape_in == (2, 100, 1, 1)
    assert first.shape_out == (2, 512, 4, 4)
    assert D.blocks[-1][0].out_channels == 512
    assert isinstance(D.head[0], nn.Conv2d) and D.head[0].kernel_size == (4, 4)


def test_pytorch_preset_draws_z_from_a_standard_normal():
    G, _ = small_nets("pytorch")
    z = latent(G, 2000)
    assert z.shape == (2000, 100)
    assert z.min() < -1 and z.max() > 1
    assert abs(z.mean().item()) < 0.02
    assert z.std().item() == pytest.approx(1.0, abs=0.02)


def test_paper_preset_is_the_papers_64x64_model():
    config = model_config("paper")
    assert (config.kernel_size, config.ngf, config.ndf, config.nz) == (5, 128, 128, 100)
    assert config.image_size == 64
    torch.manual_seed(0)
    G, D = build(config)
    assert kernel_sizes(G, D) == {(5, 5)}
    project = G.project_and_reshape
    assert type(project.project) is nn.Linear
    assert (project.project.in_features, project.project.out_features) == (100, 1024 * 16)
    assert type(project.bn) is nn.BatchNorm1d and project.bn.num_features == 1024 * 16
    calls = trace(G, latent(G, 2))
    assert [type(c.module) for c in calls[:2]] == [nn.Linear, nn.BatchNorm1d]
    _, maps = G(latent(G, 2), return_features=True)
    assert [tuple(m.shape[1:]) for m in maps] == [
        (1024, 4, 4), (512, 8, 8), (256, 16, 16), (128, 32, 32), (3, 64, 64)]
    _, d_maps = D(images(config, 2), return_features=True)
    assert [tuple(m.shape[1:]) for m in d_maps] == [
        (128, 32, 32), (256, 16, 16), (512, 8, 8), (1024, 4, 4)]
    assert type(D.head[1]) is nn.Linear and D.head[1].in_features == 1024 * 16


def test_paper_preset_draws_z_from_uniform_minus_one_to_one():
    G, _ = small_nets("paper")
    z = latent(G, 2000)
    assert z.min() >= -1 and z.max() <= 1
    assert z.min() < -0.99 and z.max() > 0.99
    assert abs(z.mean().item()) < 0.01
    assert z.std().item() == pytest.approx(1 / 3**0.5, abs=0.01)  # not N(0, 1)


@pytest.mark.parametrize("preset, weight_decay", [("pytorch", 0.0), ("paper", 1e-5), ("imagenet32", 1e-5)])
def test_preset_weight_decay(preset, weight_decay):
    assert resolve({"preset": preset}).weight_decay == weight_decay


def test_imagenet32_discriminator_layers():
    config = model_config("imagenet32")
    assert (config.image_size, config.kernel_size, config.nz) == (32, 3, 256)
    torch.manual_seed(0)
    G, D = build(config)
    assert kernel_sizes(G, D) == {(3, 3)}
    convs = [(c.module.in_channels, c.module.out_channels, c.module.stride[0], c.shape_out[-1])
             for c in trace(D, images(config, 2)) if isinstance(c.module, nn.Conv2d)]
    assert convs == [(3, 128, 1, 32), (128, 128, 2, 16), (128, 256, 1, 16),
                     (256, 256, 2, 8), (256, 512, 1, 8), (512, 512, 2, 4)]
    assert latent(G, 3).shape == (3, 256)
    assert G(latent(G, 2)).shape == (2, 3, 32, 32)


def test_imagenet32_features_pooled_to_4x4_give_28672_dims():
    torch.manual_seed(0)
    _, D = build(model_config("imagenet32"))
    _, maps = D(images(D.config, 2), return_features=True)
    assert len(maps) == 6
    features = torch.cat([F.adaptive_max_pool2d(m, 4).flatten(1) for m in maps], dim=1)
    assert features.shape == (2, 28_672)


# ---------------------------------------------------------------- feature maps


@pytest.mark.parametrize("size", [16, 64])
@pytest.mark.parametrize("preset", PRESETS)
def test_discriminator_returns_one_feature_map_per_conv_layer(preset, size):
    _, D = small_nets(preset, size)
    x = images(D.config, 2)
    convs = [m for m in D.modules() if isinstance(m, nn.Conv2d)]
    head_convs = [m for m in D.head.modules() if isinstance(m, nn.Conv2d)]  # the 4x4 -> 1x1 head
    assert len(head_convs) == (1 if D.config.projection == "conv" else 0)
    layer_convs = [m for m in convs if not any(m is h for h in head_convs)]
    logits, maps = D(x, return_features=True)
    assert torch.equal(logits, D(x))
    assert isinstance(maps, list) and len(maps) == len(layer_convs)
    assert [m.shape[1] for m in maps] == [c.out_channels for c in layer_convs]
    assert maps[-1].shape[-2:] == (4, 4)


@pytest.mark.parametrize("size", [16, 64])
@pytest.mark.parametrize("preset", PRESETS)
def test_generator_returns_one_feature_map_per_layer(preset, size):
    G, _ = small_nets(preset, size)
    z = latent(G, 2)
    layers = [m for m in G.modules() if isinstance(m, (nn.ConvTranspose2d, nn.Linear))]
    out, maps = G(z, return_features=True)
    assert isinstance(maps, list) and len(maps) == len(layers)
    assert maps[0].shape[-2:] == (4, 4)  # the projection, reshaped
    assert torch.equal(maps[-1], out)
    assert out.shape == (2, G.config.channels, size, size)
    assert torch.equal(out, G(z))


# ---------------------------------------------------------------- overrides


@pytest.mark.parametrize("preset, kernel_size", [("pytorch", 5), ("pytorch", 3), ("paper", 4),
                                                 ("paper", 3), ("imagenet32", 5)])
def test_kernel_size_override(preset, kernel_size):
    G, D = small_nets(preset, 32, kernel_size=kernel_size)
    assert G.config.kernel_size == kernel_size
    fixed = {id(m) for m in [*G.project_and_reshape.modules(), *D.head.modules()]}  # 4x4 by design
    sizes = {m.kernel_size for net in (G, D) for m in net.modules()
             if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and id(m) not in fixed}
    assert sizes == {(kernel_size, kernel_size)}
    assert G(latent(G, 2)).shape == (2, 3, 32, 32)
    assert D(images(G.config, 2)).shape == (2,)


@pytest.mark.parametrize("preset", PRESETS)
def test_nz_ngf_ndf_overrides(preset):
    G, D = small_nets(preset, 32, nz=17, ngf=12, ndf=10)
    assert (G.config.nz, G.config.ngf, G.config.ndf) == (17, 12, 10)
    assert latent(G, 3).shape == (3, 17)
    project = G.project_and_reshape.project
    assert (project.in_features if isinstance(project, nn.Linear) else project.in_channels) == 17
    g_convs = [m for m in G.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert g_convs[-1].in_channels == 12  # G's last hidden layer has ngf channels
    d_convs = [m for m in D.modules() if isinstance(m, nn.Conv2d)]
    assert d_convs[0].out_channels == 10  # D's first layer has ndf channels
    assert G(latent(G, 2)).shape == (2, 3, 32, 32)
    assert D(images(G.config, 2)).shape == (2,)


# ---------------------------------------------------------------- invalid configs


@pytest.mark.parametrize("size", [28, 8, 512, 100])
def test_unsupported_image_size_is_rejected(size):
    with pytest.raises(DCGANError, match=rf"image size {size}.*power of two from 16 to 256"):
        resolve({"image_size": size})


@pytest.mark.parametrize("settings, message", [
    ({"channels": 2}, r"channel count 2.*1 \(grey\) or 3 \(RGB\)"),
    ({"preset": "imagenet32", "kernel_size": 4}, r"alternate_strides needs an odd kernel_size.*4"),
    ({"alternate_strides": True, "kernel_size": 4}, r"alternate_strides needs an odd kernel_size"),
    ({"projection": "dense"}, r"projection must be one of \('conv', 'linear'\), got 'dense'"),
    ({"latent": "gaussian"}, r"latent must be one of \('normal', 'uniform'\), got 'gaussian'"),
    ({"ngf": 0}, r"ngf must be a positive integer"),
], ids=["channels", "imagenet32-even-kernel", "even-kernel", "projection", "latent", "ngf"])
def test_invalid_model_config_is_rejected(settings, message):
    with pytest.raises(DCGANError, match=message):
        resolve(settings)


def test_model_config_validates_on_construction():
    with pytest.raises(DCGANError, match="unsupported image size 48"):
        ModelConfig(image_size=48)


# ---------------------------------------------------------------- Generator.sample


@pytest.mark.parametrize("preset", PRESETS)
def test_sample_is_reproducible_for_a_seed(preset):
    G, _ = small_nets(preset)
    a = G.sample(4, seed=7)
    assert a.shape == (4, 3, 16, 16)
    assert torch.equal(a, G.sample(4, seed=7))
    assert not torch.allclose(a, G.sample(4, seed=8))


@pytest.mark.parametrize("training", [True, False])
def test_sample_leaves_the_training_flag_as_it_was(training):
    G, _ = small_nets("paper")
    G.train(training)
    G.sample(3, seed=0)
    assert all(m.training == training for m in G.modules())


@pytest.mark.parametrize("preset", PRESETS)
def test_sample_uses_batchnorm_in_inference_mode(preset):
    G, _ = small_nets(preset)
    G.train()
    stats = {k: v.clone() for k, v in G.state_dict().items() if "running" in k}
    samples = G.sample(4, seed=3)
    assert all(torch.equal(v, G.state_dict()[k]) for k, v in stats.items())  # running stats untouched
    z = G.latent(3, range(4))  # the z that sample(4, seed=3) draws
    with torch.no_grad():
        G.eval()
        expected = G(z)
        G.train()
        with_batch_stats = G(z)
    assert torch.allclose(samples, expected, atol=1e-6)
    assert not torch.allclose(samples, with_batch_stats, atol=1e-3)  # the mode matters


@pytest.mark.parametrize("preset", PRESETS)
def test_sample_of_one_image_works_in_training_mode(preset):
    G, _ = small_nets(preset)
    G.train()
    one = G.sample(1, seed=0)  # BatchNorm1d in training mode would reject a batch of one
    assert one.shape == (1, 3, 16, 16)
    assert G.training


@pytest.mark.parametrize("preset", PRESETS)
def test_sample_images_do_not_depend_on_batch_size(preset):
    G, _ = small_nets(preset)
    G.train()
    assert torch.allclose(G.sample(5, seed=1, batch_size=2), G.sample(5, seed=1, batch_size=5), atol=1e-6)


@pytest.mark.parametrize("preset", PRESETS)
def test_sample_is_named_by_seed_and_index(preset):
    """Image i of seed s is the same however many images are drawn (exemplars can be picked)."""
    G, _ = small_nets(preset)
    assert torch.equal(G.latent(5, [3]), G.latent(5, range(10))[3:4])
    assert torch.allclose(G.sample(1, seed=5)[0], G.sample(7, seed=5)[0], atol=1e-6)
    assert not torch.equal(G.latent(5, [0]), G.latent(6, [0]))


# ---------------------------------------------------------------- one training step


def snapshot(net: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in net.named_parameters()}


def changed(net: nn.Module, before: dict) -> list[str]:
    return [k for k, v in net.named_parameters() if not torch.equal(v, before[k])]


@pytest.mark.parametrize("preset", PRESETS)
def test_one_training_step_updates_both_networks(preset):
    """train_step itself: the D update moves every D parameter and no G parameter; the G update then
    moves every G parameter and leaves D's weights and gradients as the D update left them; each
    optimizer stepped once."""
    config = resolve({"preset": preset, "image_size": 16, "channels": 3, **SMALL, "batch_size": 8})
    G, D = small_nets(preset, 16)
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    real = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(1))
    g_before, d_before = snapshot(G), snapshot(D)
    between = {}
    d_update = opt_d.step

    def spy(*args, **kwargs):  # the moment between the two updates: right after D's
        result = d_update(*args, **kwargs)
        between.update(D=snapshot(D), G=snapshot(G),
                       D_grad={k: p.grad.clone() for k, p in D.named_parameters()})
        return result

    opt_d.step = spy
    out = train_step(Networks(G, D, opt_g, opt_d), iter([real]), torch.Generator().manual_seed(0), config)
    every_d, every_g = list(dict(D.named_parameters())), list(dict(G.named_parameters()))
    assert changed(D, d_before) == every_d
    assert all(torch.equal(between["G"][k], g_before[k]) for k in every_g)  # the D update left G alone
    assert changed(D, between["D"]) == []  # the G update left D's weights alone ...
    assert all(torch.equal(p.grad, between["D_grad"][k]) for k, p in D.named_parameters())  # ... and grads
    assert changed(G, between["G"]) == every_g
    assert [s["step"].item() for s in opt_d.state.values()] == [1] * len(every_d)
    assert [s["step"].item() for s in opt_g.state.values()] == [1] * len(every_g)
    assert torch.isfinite(out).all()
