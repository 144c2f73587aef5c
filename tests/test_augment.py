"""Differentiable augmentation (DiffAugment): each transform does what it says, lets gradients
through, and is a function of its generator."""

import pytest
import torch

from dcgan.augment import augment, color, cutout, parse_policy, translation
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
