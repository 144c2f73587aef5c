"""Differentiable augmentation (DiffAugment): each transform does what it says, lets gradients
through, and is a function of its generator."""

import pytest
import torch
from clirun import cli

from dcgan.augment import augment, color, cutout, translation
from dcgan.config import parse_policy
from dcgan.errors import DCGANError


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """x moved by (dy, dx) with zeros shifted in."""
    out = torch.zeros_like(x)
    h, w = x.shape[-2:]
    out[..., max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        x[..., max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def test_translation_shifts_each_image_by_at_most_an_eighth_with_zeros_filled_in():
    x = torch.rand(64, 3, 16, 16, generator=gen(1)) + 0.5  # no zeros of its own
    out = translation(x, gen())
    seen = set()
    for xi, oi in zip(x, out, strict=True):
        shifts = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)]
        matches = [s for s in shifts if torch.equal(oi, shifted(xi, *s))]
        assert len(matches) == 1  # exactly one shift within 1/8 of 16 = 2 pixels explains it
        seen.add(matches[0])
    assert len(seen) > 10  # the shift is drawn per image


def test_cutout_zeroes_one_square_of_half_the_side_and_nothing_else():
    x = torch.rand(64, 1, 16, 16, generator=gen(1)) + 0.5
    out = cutout(x, gen())
    full = 0
    for xi, oi in zip(x, out, strict=True):
        zero = oi[0] == 0
        assert torch.equal(oi[0][~zero], xi[0][~zero])  # the rest untouched
        ys, xs = zero.nonzero(as_tuple=True)
        height, width = int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1)
        assert height <= 8 and width <= 8 and zero.sum() == height * width  # one axis-aligned square
        full += height == width == 8
    assert 0 < full < 64  # fully inside for most, clipped at the border for some


def test_color_on_grey_shifts_brightness_and_scales_contrast_per_image():
    x = torch.rand(32, 1, 8, 8, generator=gen(1)) * 2 - 1
    out = color(x, gen())
    xc = x - x.mean(dim=(1, 2, 3), keepdim=True)
    oc = out - out.mean(dim=(1, 2, 3), keepdim=True)
    scale = (oc * xc).sum(dim=(1, 2, 3)) / xc.pow(2).sum(dim=(1, 2, 3))
    assert torch.allclose(oc, scale.view(-1, 1, 1, 1) * xc, atol=1e-5)  # grey: saturation changes nothing
    assert scale.min() >= 0.5 - 1e-5 and scale.max() <= 1.5 + 1e-5 and scale.std() > 0.1
    brightness = out.mean(dim=(1, 2, 3)) - x.mean(dim=(1, 2, 3))
    assert brightness.abs().max() <= 0.5 + 1e-5 and brightness.std() > 0.1


def test_color_changes_saturation_of_rgb_images():
    x = torch.rand(16, 3, 8, 8, generator=gen(1)) * 2 - 1
    out = color(x, gen())
    spread = lambda y: (y - y.mean(dim=1, keepdim=True)).abs().mean(dim=(1, 2, 3))  # noqa: E731
    ratio = spread(out) / spread(x)
    assert ratio.min() < 0.7 and ratio.max() > 1.3  # between U(0, 2) x U(0.5, 1.5) per image


@pytest.mark.parametrize("policy", ["translation", "cutout", "color", "color,translation,cutout"])
def test_gradients_flow_through_every_transform(policy):
    x = torch.rand(8, 3, 16, 16, generator=gen(1), requires_grad=True)
    out = augment(x, parse_policy(policy), gen())
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    if policy == "cutout":  # d out / d x is the mask: 1 outside the square, 0 inside
        assert torch.equal(x.grad, (out != 0).float())
    if policy == "translation":  # each pixel that stays in the picture counts once
        assert set(x.grad.unique().tolist()) <= {0.0, 1.0}
        assert torch.equal(x.grad.sum(dim=(1, 2, 3)), (out != 0).float().sum(dim=(1, 2, 3)))


def test_the_same_generator_state_gives_the_same_transform_and_empty_policy_is_identity():
    x = torch.rand(8, 3, 16, 16, generator=gen(1))
    policy = parse_policy("color,translation,cutout")
    assert torch.equal(augment(x, policy, gen(5)), augment(x, policy, gen(5)))
    assert not torch.equal(augment(x, policy, gen(5)), augment(x, policy, gen(6)))
    assert augment(x, parse_policy(""), gen()) is x and parse_policy(None) == ()


def test_unknown_policy_names_the_choices():
    with pytest.raises(DCGANError, match="unknown augmentation flip.*color, translation, cutout"):
        parse_policy("translation,flip")


# ---- inside the training step -----------------------------------------------------------------

def _step_setup(augment_policy):
    from dcgan.config import resolve
    from dcgan.models import build

    config = resolve({"image_size": 16, "channels": 1, "ngf": 8, "ndf": 8, "nz": 8, "batch_size": 8,
                      "augment": augment_policy})
    torch.manual_seed(0)
    G, D = build(config.model)
    adam = dict(lr=2e-4, betas=(0.5, 0.999))
    reals = iter([torch.randint(1, 256, (8, 1, 16, 16), dtype=torch.uint8) for _ in range(4)])
    opt_g, opt_d = torch.optim.Adam(G.parameters(), **adam), torch.optim.Adam(D.parameters(), **adam)
    return config, G, D, opt_g, opt_d, reals


def test_d_and_g_see_the_same_augmented_fakes_and_reals_are_augmented_too():
    from dcgan.step import Networks, train_step

    config, G, D, opt_g, opt_d, reals = _step_setup("translation,cutout")
    seen = []
    D.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].detach().clone()))
    train_step(Networks(G, D, opt_g, opt_d), reals, torch.Generator().manual_seed(1), config)
    real, fake_d, fake_g = seen  # D step: real, fake; G step: fake
    assert torch.equal(fake_d, fake_g)  # one draw of T for both passes
    for x in (real, fake_d):  # each image has its zeroed cutout square
        assert ((x == 0).flatten(1).sum(1) >= 16).all()


def test_g_gets_gradients_through_the_augmentation():
    from dcgan.step import Networks, train_step

    config, G, D, opt_g, opt_d, reals = _step_setup("translation,cutout,color")
    before = [p.detach().clone() for p in G.parameters()]
    train_step(Networks(G, D, opt_g, opt_d), reals, torch.Generator().manual_seed(1), config)
    assert all(not torch.equal(b, p) for b, p in zip(before, G.parameters(), strict=True))


def test_without_augmentation_the_step_draws_nothing_more_from_the_noise():
    """Off is today's step: the only draws from the noise generator are the latents."""
    from dcgan.step import Networks, train_step

    config, G, D, opt_g, opt_d, reals = _step_setup(None)
    noise = torch.Generator().manual_seed(1)
    train_step(Networks(G, D, opt_g, opt_d), reals, noise, config)
    expected = torch.Generator().manual_seed(1)
    G.sample_latent(8, expected, "cpu")
    assert torch.equal(noise.get_state(), expected.get_state())
    config, G, D, opt_g, opt_d, reals = _step_setup("cutout")
    noise = torch.Generator().manual_seed(1)
    train_step(Networks(G, D, opt_g, opt_d), reals, noise, config)
    assert not torch.equal(noise.get_state(), expected.get_state())


def test_cli_trains_with_augmentation_refuses_unknown_policies_and_changes_on_resume(tmp_path):
    run = tmp_path / "run"
    tiny = ["--image-size", 16, "--ngf", 8, "--ndf", 8, "--nz", 8, "--batch-size", 16,
            "--tensorboard", "false"]
    ok = cli("train", *tiny, "--steps", 2, "--augment", "translation,cutout", "--out", run)
    assert ok.returncode == 0, ok.stderr
    assert '"augment": "translation,cutout"' in (run / "config.json").read_text()
    bad = cli("train", *tiny, "--steps", 2, "--augment", "flip", "--out", tmp_path / "other")
    assert bad.returncode == 1 and bad.stderr.count("error:") == 1
    assert "unknown augmentation flip" in bad.stderr
    resumed = cli("train", "--resume", run, "--steps", 4, "--augment", "color")
    assert resumed.returncode == 1 and "augment" in resumed.stderr


def test_every_augmentation_a_config_accepts_has_a_transform():
    from dcgan.augment import TRANSFORMS
    from dcgan.config import AUGMENTATIONS

    assert set(TRANSFORMS) == set(AUGMENTATIONS)
