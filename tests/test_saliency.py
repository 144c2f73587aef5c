"""Guided backpropagation of D's features (paper §6.2) and feature-map views of G and D."""

import json

import pytest
import torch
from clirun import train_tiny
from PIL import Image

from dcgan import saliency
from dcgan.checkpoint import export
from dcgan.data import open_dataset, to_float
from dcgan.errors import DCGANError
from dcgan.models import Discriminator, Generator, ModelConfig
from dcgan.representation import average_bn_statistics

CONFIG = ModelConfig(image_size=16, channels=1, ngf=8, ndf=8, nz=16)


def images(n=40, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, 16, 16), dtype=torch.uint8, generator=gen)


@pytest.fixture(scope="module")
def d():
    """A random D (2 blocks: 8x8x8, 16x4x4) in eval mode with BN statistics of some images."""
    torch.manual_seed(0)
    return average_bn_statistics(Discriminator(CONFIG), images(64, seed=1))


def test_guided_rule_passes_only_positive_gradient_where_the_input_was_positive():
    x = torch.tensor([-1.0, 2.0, 3.0, 0.5, -2.0], requires_grad=True)
    y = saliency._GuidedRectifier.apply(x, 0.2)
    assert torch.allclose(y, torch.tensor([-0.2, 2.0, 3.0, 0.5, -0.4]))
    (g,) = torch.autograd.grad(y, x, torch.tensor([1.0, -1.0, 2.0, 0.0, 3.0]))
    assert g.tolist() == [0.0, 0.0, 2.0, 0.0, 0.0]


def test_top_activating_is_the_brute_force_ranking(d):
    x = images()
    with torch.no_grad():  # one image at a time through D's own forward
        per_image = [d(to_float(im[None]), return_features=True)[1] for im in x]
    for layer in (-1, 0):
        idx, act = saliency.top_activating(d, x, [0, 3, 5], top=5, layer=layer, batch_size=7)
        assert idx.shape == act.shape == (3, 5) and idx.dtype == torch.long
        maps = torch.stack([m[layer][0] for m in per_image])
        for row, f in enumerate([0, 3, 5]):
            peak = maps[:, f].flatten(1).amax(1)
            expected = sorted(range(len(x)), key=lambda i: -peak[i].item())[:5]
            assert idx[row].tolist() == expected
            assert torch.allclose(act[row], peak[expected], atol=1e-5)
    assert saliency.top_activating(d, x[:3], [0], top=8)[0].shape == (1, 3)  # capped at N


def test_guided_backprop_matches_a_reference_from_plain_autograd(d):
    """Two blocks by hand: conv0 -> leaky -> conv1 -> BN -> leaky, the guided rule at each rectifier."""
    x, f = to_float(images(6, seed=2)).requires_grad_(True), 4
    conv0, (conv1, bn1, _) = d.blocks[0][0], d.blocks[1]
    pre0 = conv0(x)
    a0 = torch.nn.functional.leaky_relu(pre0, 0.2).detach().requires_grad_(True)
    pre1 = bn1(conv1(a0))[:, f].flatten(1)
    peak = pre1.argmax(1)
    mask = torch.zeros_like(pre1)
    mask[torch.arange(6), peak] = (pre1[torch.arange(6), peak] > 0).float()  # incoming 1 > 0, input > 0?
    (g_a0,) = torch.autograd.grad((pre1 * mask).sum(), a0)
    g_pre0 = g_a0 * ((pre0 > 0) & (g_a0 > 0))
    (expected,) = torch.autograd.grad((pre0 * g_pre0.detach()).sum(), x)
    got = saliency.guided_backprop(d, x.detach(), f, layer=1)
    assert got.shape == x.shape and expected.abs().sum() > 0
    assert torch.allclose(got, expected, atol=1e-6)


def test_plain_gradient_matches_d_own_forward_and_differs_from_the_guided_map(d):
    x, f = to_float(images(6, seed=3)).requires_grad_(True), 2
    _, maps = d(x, return_features=True)
    (vanilla,) = torch.autograd.grad(maps[-1][:, f].flatten(1).max(1).values.sum(), x)
    assert torch.allclose(saliency.guided_backprop(d, x.detach(), f, guided=False), vanilla, atol=1e-6)
    guided = saliency.guided_backprop(d, x.detach(), f)
    assert not torch.allclose(guided, vanilla, atol=1e-4)


@pytest.mark.parametrize("layer,stride,reach", [(0, 2, (1, 2)), (-1, 4, (3, 6))])
def test_gradient_is_zero_outside_the_receptive_field_of_the_peak(d, layer, stride, reach):
    """A unit at (i, j) of block 0 sees input rows 2i-1..2i+2; of block 1, rows 4i-3..4i+6."""
    x, f = to_float(images(8, seed=4)), 1
    with torch.no_grad():
        h = d(x, return_features=True)[1][layer][:, f]
    g = saliency.guided_backprop(d, x, f, layer).abs().sum(1)
    lit = 0
    for n in range(len(x)):
        i, j = divmod(int(h[n].flatten().argmax()), h.shape[-1])
        inside = torch.zeros(16, 16, dtype=torch.bool)
        inside[max(0, stride * i - reach[0]): stride * i + reach[1] + 1,
               max(0, stride * j - reach[0]): stride * j + reach[1] + 1] = True
        assert g[n][~inside].abs().max() == 0
        lit += bool(g[n][inside].abs().max() > 0)
    assert lit >= 6  # most peaks are positive, so their maps are not empty


def test_guided_backprop_leaves_d_as_it_was():
    torch.manual_seed(0)
    d = Discriminator(CONFIG)  # in training mode: BN would update its statistics if run as is
    state = {k: v.clone() for k, v in d.state_dict().items()}
    modules = repr(d)
    x = to_float(images(4))
    d.eval()
    with torch.no_grad():
        before = d(x)
    d.train()
    saliency.guided_backprop(d, x, 0)
    saliency.top_activating(d, images(4), [0], top=2)
    assert d.training and repr(d) == modules
    assert all(m.inplace for m in d.modules() if isinstance(m, torch.nn.LeakyReLU))
    assert all(p.requires_grad and p.grad is None for p in d.parameters())
    assert all(torch.equal(v, state[k]) for k, v in d.state_dict().items())
    d.eval()
    with torch.no_grad():
        assert torch.equal(d(x), before)


def test_bad_feature_layer_or_count_is_a_clear_error(d):
    with pytest.raises(DCGANError, match="feature 16 is out of range.*16 channels"):
        saliency.guided_backprop(d, to_float(images(2)), 16)
    with pytest.raises(DCGANError, match="feature 8 is out of range.*block0 has 8"):
        saliency.top_activating(d, images(2), [0, 8], layer=0)
    for layer in (2, -3):
        with pytest.raises(DCGANError, match=f"layer {layer} is out of range.*2 conv blocks"):
            saliency.guided_backprop(d, to_float(images(2)), 0, layer)
    with pytest.raises(DCGANError, match="filters must be at least 1"):
        saliency.saliency_figure(d, d, images(4), filters=0)


def test_saliency_figure_layout_and_info(d):
    torch.manual_seed(1)
    random_d = average_bn_statistics(Discriminator(CONFIG), images(64, seed=1))
    x = images()
    fig, info = saliency.saliency_figure(d, random_d, x, filters=3, top=4)
    half = 2 * (4 * 18 + 2) + 4  # images, a 4-pixel gap, maps; 2-pixel padding around 16-pixel tiles
    assert fig.shape == (3, 3 * 18 + 2, 2 * half + 16) and 0 <= fig.min() and fig.max() <= 1
    assert (fig[:, :, half: half + 16] == 1).all()  # the band between trained and random D
    assert info["layer"] == "D.block1 (16x4x4)"
    for net, model in (("trained", d), ("random", random_d)):
        idx, act = saliency.top_activating(model, x, [0, 1, 2], top=4)
        assert [r["feature"] for r in info[net]["features"]] == [0, 1, 2]
        assert [r["indices"] for r in info[net]["features"]] == idx.tolist()
        assert torch.allclose(torch.tensor([r["activations"] for r in info[net]["features"]]), act, atol=1e-5)
        assert 0.1 <= info[net]["structure"] <= 1 and -1 <= info[net]["image_correlation"] <= 1
    # row 0 of the trained half: feature 0's top image, then (after the gap) its map, grey at 0
    top = info["trained"]["features"][0]["indices"][0]
    assert torch.allclose(fig[0, 2:18, 2:18], x[top, 0] / 255, atol=1e-6)
    m = saliency.guided_backprop(d, to_float(x[top: top + 1]), 0)[0, 0]
    tile = fig[0, 2:18, 4 * 18 + 2 + 4 + 2:][:, :16]
    assert torch.allclose(tile, (m / m.abs().max() + 1) / 2, atol=1e-6)


def test_concentration_of_flat_and_peaked_maps():
    flat, peaked = torch.ones(1, 1, 10, 10), torch.zeros(1, 3, 10, 10)
    peaked[0, :, 2, 3] = 1
    assert saliency.concentration(flat).item() == pytest.approx(0.1)
    assert saliency.concentration(peaked).item() == pytest.approx(1.0)
    assert saliency.concentration(torch.zeros(1, 1, 4, 4)).isnan().all()


def test_image_correlation_of_a_copy_an_inverse_and_a_flat_map():
    x = to_float(images(3))
    maps = torch.stack([x[0], -3 * x[1], torch.zeros_like(x[2])])
    assert torch.allclose(saliency.image_correlation(maps, x)[:2], torch.tensor([1.0, -1.0]), atol=1e-6)
    assert saliency.image_correlation(maps, x)[2].isnan()


def test_feature_maps_one_entry_per_layer_with_shapes():
    torch.manual_seed(0)
    g, d = Generator(CONFIG), Discriminator(CONFIG)
    g.train()
    z = g.latent(0, [0, 1])
    maps = saliency.feature_maps(g, z)
    assert [name for name, _ in maps] == ["G.project (16x4x4)", "G.block0 (8x8x8)"]
    assert [m.shape for _, m in maps] == [(2, 16, 4, 4), (2, 8, 8, 8)]
    assert g.training  # mode restored
    with torch.no_grad():
        assert torch.equal(maps[1][1], g.eval()(z, return_features=True)[1][1])
    d_maps = saliency.feature_maps(d, to_float(images(2)))
    assert [name for name, _ in d_maps] == ["D.block0 (8x8x8)", "D.block1 (16x4x4)"]
    fig = saliency.feature_map_figure(maps, max_channels=32)
    assert fig.shape == (3, 2 * 34 + 2, 16 * 34 + 2)  # 16 channels wide at most, tiles of 32
    assert (fig[:, 36:68, 2 + 8 * 34: 34 * 16] == 1).all()  # G.block0 has 8 channels: white beyond
    assert saliency.feature_map_figure(maps, max_channels=4).shape == (3, 70, 4 * 34 + 2)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny run on the built-in digits, trained once for this file."""
    out = tmp_path_factory.mktemp("saliency") / "run"
    return train_tiny(out, 5, env={"DCGAN_CACHE_DIR": str(out.parent / "cache")})


def test_guided_backprop_report_writes_figure_and_json(run, tmp_path):
    report = saliency.guided_backprop_report(run, data="digits", out=tmp_path, filters=3, top=4,
                                             max_images=300)
    assert json.loads((tmp_path / "guided_backprop.json").read_text()) == report
    with Image.open(tmp_path / "guided_backprop.png") as im:  # 16-pixel tiles drawn 4x larger
        layout = json.loads(im.text["layout"])
        assert im.size == (layout["left"] + layout["width"], layout["top"] + layout["height"])
    assert (layout["width"], layout["height"]) == (4 * (2 * (2 * (4 * 18 + 2) + 4) + 16), 4 * (3 * 18 + 2))
    assert layout["rows"] == ["filter 0", "filter 1", "filter 2"]
    half = 4 * (2 * (4 * 18 + 2) + 4 + 16)  # the random D's half starts after the trained one and a band
    assert layout["headers"] == [["trained D: top images", 0], ["trained D: maps", 4 * (4 * 18 + 6)],
                                 ["random D: top images", half], ["random D: maps", half + 4 * (4 * 18 + 6)]]
    labels = open_dataset("digits", 16, 1).labels
    assert report["images"] == 300 and report["layer"] == "D.block1 (16x4x4)"
    for net in ("trained", "random"):
        rows = report[net]["features"]
        assert len(rows) == 3 and isinstance(report[net]["structure"], float)
        for r in rows:
            assert len(set(r["indices"])) == 4 and all(0 <= i < len(labels) for i in r["indices"])
            assert r["labels"] == labels[r["indices"]].tolist()
            assert r["activations"] == sorted(r["activations"], reverse=True)
    assert report["trained"]["features"] != report["random"]["features"]


@pytest.mark.parametrize("kwargs,message", [
    (dict(filters=17), "filters=17 .* 16 channels"),
    (dict(filters=0), "filters must be at least 1"),
    (dict(layer=2), "layer 2 is out of range"),
])
def test_guided_backprop_report_rejects_bad_requests(run, tmp_path, kwargs, message):
    with pytest.raises(DCGANError, match=message):
        saliency.guided_backprop_report(run, data="digits", out=tmp_path, **kwargs)
    assert not (tmp_path / "guided_backprop.png").exists()


def test_feature_map_report_for_g_and_d(run, tmp_path):
    g_file = export(run, out=tmp_path / "g.safetensors")  # G alone is enough for net=g
    rep = saliency.feature_map_report(g_file, out=tmp_path / "g", net="g", seed=3, index=2)
    assert json.loads((tmp_path / "g" / "feature_maps_g.json").read_text()) == rep
    assert {p.name for p in (tmp_path / "g").iterdir()} == {"feature_maps_g.png", "feature_maps_g_image.png",
                                                             "feature_maps_g.json"}
    assert [r["shape"] for r in rep["layers"]] == [[16, 4, 4], [8, 8, 8]]
    assert all(0 <= r["inactive_fraction"] <= 1 for r in rep["layers"])
    assert rep["input"] == {"seed": 3, "index": 2}
    with Image.open(tmp_path / "g" / "feature_maps_g.png") as im:
        layout = json.loads(im.text["layout"])
    assert layout["rows"] == ["G(z)", "G.project (16x4x4)", "G.block0 (8x8x8)"]
    assert "sample 2 of seed 3" in layout["title"] and layout["channels"] == 16

    pixels = (torch.arange(64 * 48) % 256).to(torch.uint8).view(48, 64)  # not square, not 16 pixels
    Image.fromarray(pixels.numpy()).save(tmp_path / "x.png")
    rep = saliency.feature_map_report(run, out=tmp_path / "d", net="d", image=tmp_path / "x.png")
    assert [r["name"] for r in rep["layers"]] == ["D.block0 (8x8x8)", "D.block1 (16x4x4)"]
    assert 0 < rep["d_probability"] < 1
    assert {p.name for p in (tmp_path / "d").iterdir()} == {"feature_maps_d.png", "feature_maps_d_input.png",
                                                             "feature_maps_d.json"}
    sampled = saliency.feature_map_report(run, out=tmp_path / "d2", net="d", seed=3, index=2)
    assert sampled["input"] == {"seed": 3, "index": 2} and sampled["layers"] != rep["layers"]

    with pytest.raises(DCGANError, match="net must be g .* or d"):
        saliency.feature_map_report(run, out=tmp_path / "x", net="x")
    with pytest.raises(DCGANError, match="image .*missing.png not found"):
        saliency.feature_map_report(run, out=tmp_path / "x", net="d", image=tmp_path / "missing.png")
    with pytest.raises(DCGANError, match="generator only"):
        saliency.feature_map_report(g_file, out=tmp_path / "x", net="d")
