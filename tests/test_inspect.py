"""Looking inside a model (paper §6): walks, numbered sheets, neighbours, arithmetic, forgetting."""

import json

import numpy as np
import pytest
import torch
from clirun import dcgan, train_tiny
from PIL import Image
from torchvision.utils import save_image

from dcgan.checkpoint import load_generator, load_networks
from dcgan.data import to_float, to_uint8
from dcgan.forget import box_mask, choose_maps, generate_without, layer_mask
from dcgan.latent import d_features, slerp, smoothness, walk, walk_path
from dcgan.models import Generator
from dcgan.neighbours import nearest, pixel_embedding
from dcgan.train import train
from dcgan.windows import find_windows, forget_synthetic, synthetic_windows


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("inspect") / "run", 60)


def png(path):
    return np.asarray(Image.open(path))


# ---- walks --------------------------------------------------------------------------------------

def test_slerp_keeps_norms_and_hits_both_ends():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 100, generator=gen)
    b = b * a.norm() / b.norm()  # equal norms: every frame keeps that norm
    t = torch.linspace(0, 1, 11)
    path = slerp(a, b, t)
    assert torch.allclose(path.norm(dim=1), a.norm().expand(11), rtol=1e-5)
    assert torch.allclose(path[0], a, atol=1e-5) and torch.allclose(path[-1], b, atol=1e-5)
    line = a + (b - a) * t[:, None]
    assert line.norm(dim=1)[5] < 0.8 * a.norm()  # the straight line sags through the middle
    c = b * 2  # different norms: the norm moves linearly
    assert torch.allclose(slerp(a, c, t).norm(dim=1), a.norm() + (c.norm() - a.norm()) * t, rtol=1e-5)


def test_walk_path_frames():
    points = torch.randn(4, 8)
    for mode in ("slerp", "linear"):
        path = walk_path(points, 5, mode)
        assert path.shape == (3 * 5 + 1, 8)
        assert torch.allclose(path[::5], points, atol=1e-5)  # every 5th frame is a point


def test_smoothness_flags_a_discontinuity_made_on_purpose(run):
    g, d = load_networks(run)
    frames, _ = walk(g, seed=0, walks=2, points=3, steps=10)
    plain = smoothness(frames, d_features(d))
    spliced = torch.cat([frames[0, :12], frames[1, 12:]])[None]  # walk 0, then jump into walk 1
    report = smoothness(spliced, d_features(d))
    row = report["walks"][0]
    assert 11 in row["flagged_pixel"] and 11 in row["flagged_feature"] and 11 in row["flagged"]
    assert row["max_over_median_pixel"] > 3
    assert all(11 not in r["flagged"] for r in plain["walks"][:1])
    assert len(row["pixel"]) == len(row["feature"]) == frames.shape[1] - 1


def test_walk_cli_writes_grid_json_and_gif(run, tmp_path):
    import imageio.v3 as iio

    dcgan("walk", run, "--walks", 2, "--points", 3, "--steps", 4, "--gif", "--factor", 1.2,
          "--out", tmp_path / "w")
    report = json.loads((tmp_path / "w" / "walk.json").read_text())
    assert report["frames"] == 9 and len(report["walks"]) == 2 and report["through"] == [[0, 1, 2], [3, 4, 5]]
    with Image.open(tmp_path / "w" / "walk.png") as im:
        layout = json.loads(im.text["layout"])
    assert layout["rows"] == ["0 -> 1 -> 2", "3 -> 4 -> 5"] and layout["tile"] >= 64
    flagged = [[r, s + 1] for r, w in enumerate(report["walks"]) for s in w["flagged"]]
    assert flagged and layout["marked"] == sorted(flagged)  # every flagged jump is framed, nothing else
    for r, row in enumerate(layout["tiles"]):
        assert [row[t] for t in (0, 4, 8)] == [f"#{3 * r + k}" for k in range(3)]  # the waypoints
        assert all(row[t] in ("", "jump") for t in (1, 2, 3, 5, 6, 7))
    gif = iio.imread(tmp_path / "w" / "walk.gif")
    assert gif.shape[0] == 9 and gif.shape[1] >= 64  # every frame, upscaled like the sheets
    # slerp between prior draws keeps each frame's norm between its endpoints' norms
    norms = np.array(report["latent_norms"][0])
    for s in range(2):
        lo, hi = sorted((norms[4 * s], norms[4 * s + 4]))
        assert (norms[4 * s:4 * s + 5] >= lo - 1e-3).all() and (norms[4 * s:4 * s + 5] <= hi + 1e-3).all()
    dcgan("walk", run, "--through", "5,x", "--out", tmp_path / "bad", ok=False)


# ---- numbered sheets ----------------------------------------------------------------------------

def test_numbered_sheet_and_reproducing_a_sample_by_its_number(run, tmp_path):
    dcgan("sample", run, "--n", 8, "--numbered", "--out", tmp_path / "sheet.png")
    dcgan("sample", run, "--n", 8, "--out", tmp_path / "plain.png")
    sheet, plain = png(tmp_path / "sheet.png"), png(tmp_path / "plain.png")
    assert sheet.shape[0] > 3 * plain.shape[0]  # upscaled so the numbers are legible
    dcgan("sample", run, "--n", 8, "--individual", tmp_path / "all")
    dcgan("sample", run, "--n", 1, "--start", 5, "--individual", tmp_path / "one")
    assert np.array_equal(png(tmp_path / "all" / "000005.png"), png(tmp_path / "one" / "000005.png"))
    # the number is drawn on the image: the corner of a numbered image differs from the plain one
    g = load_generator(run)
    from dcgan.visualize import annotate

    x = g.sample(2, seed=0)
    marked = annotate(x, ["0", "1"], min_size=64)
    assert marked.shape == (2, 1, 64, 64)
    plain_big = x.repeat_interleave(4, -1).repeat_interleave(4, -2)
    assert not torch.allclose(marked[:, :, :8, :8], plain_big[:, :, :8, :8])
    assert torch.allclose(marked[:, :, 32:, 32:], plain_big[:, :, 32:, 32:], atol=1 / 127)


# ---- neighbours ---------------------------------------------------------------------------------

def test_nearest_matches_brute_force_and_excludes_self():
    bank = torch.randint(0, 256, (50, 1, 8, 8), dtype=torch.uint8)
    q = pixel_embedding(bank[:7])
    d, i = nearest(q, bank, pixel_embedding, 3, query_index=torch.arange(7), chunk=16)
    full = torch.cdist(q, pixel_embedding(bank))
    full[torch.arange(7), torch.arange(7)] = float("inf")
    want_d, want_i = full.topk(3, largest=False)
    assert torch.equal(i, want_i) and torch.allclose(d, want_d, atol=1e-5)


def test_neighbours_find_a_copied_sample(run, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    g = load_generator(run)
    rng = np.random.default_rng(0)
    for j in range(30):
        Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(data / f"noise{j:02d}.png")
    copy = to_uint8(g.sample(3, seed=0)[1])[0].numpy()  # sample 1, written as a training image
    Image.fromarray(copy).save(data / "copy.png")
    dcgan("neighbours", run, "--data", data, "--n", 3, "--k", 2, "--out", tmp_path / "nb")
    r = json.loads((tmp_path / "nb" / "neighbours.json").read_text())
    for space in ("pixels", "features"):
        assert r[space]["neighbours"][1][0] == "copy.png" and r[space]["distances"][1][0] < 1e-3
        assert r[space]["samples_closer_than_that"] >= 1
        assert png(tmp_path / "nb" / f"neighbours_{space}.png").shape[:2] == (2 + 3 * 66, 2 + 3 * 66)
    assert r["pixels"]["distances"][0][0] > r["pixels"]["distances"][1][0]  # sample 0 has no exact copy


# ---- arithmetic ---------------------------------------------------------------------------------

class AffineGenerator(Generator):
    """A generator whose output is a known affine function of z: G(z) = W z + c, in [-1, 1] for
    the z drawn here. Affine maps commute with combinations whose weights sum to 1, such as
    mean(A) - mean(B) + mean(C): so G(Y) must equal mean G(A) - mean G(B) + mean G(C)."""

    def __init__(self, config, seed=0):
        super().__init__(config)
        gen = torch.Generator().manual_seed(seed)
        pixels = config.channels * config.image_size ** 2
        self.w = torch.nn.Parameter(torch.randn(config.nz, pixels, generator=gen) * 0.02)
        self.c = torch.nn.Parameter(torch.randn(pixels, generator=gen) * 0.05)

    def forward(self, z):
        s = self.config.image_size
        return (z @ self.w + self.c).view(len(z), self.config.channels, s, s)


def test_arithmetic_of_an_affine_generator_is_the_pixel_arithmetic():
    from dcgan.config import resolve
    from dcgan.latent import arithmetic

    g = AffineGenerator(resolve({"image_size": 16, "channels": 1, "ngf": 8, "nz": 16}).model)
    a, b, c = [0, 1, 2], [3, 4, 5], [6, 7, 8]
    out = arithmetic(g, 3, a, b, c, noise=0.25, neighbours=50)
    with torch.no_grad():
        za, zb, zc = (g.latent(3, idx) for idx in (a, b, c))
        y = za.mean(0) - zb.mean(0) + zc.mean(0)
        expected = g(y[None])[0]
        assert torch.allclose(out["y"], y, atol=1e-6)
        assert torch.allclose(out["result"], expected, atol=1e-5)  # G of the exemplar-mean sum ...
        assert expected.abs().max() < 1  # (inside [-1, 1], so the pixel sum is not clamped)
        assert torch.allclose(out["pixel_result"], expected, atol=1e-5)  # ... is the pixel-space sum
        # the noise neighbours: uniform in the stated radius around Y, and G of exactly those
        offsets = out["neighbour_latents"] - y
        assert offsets.abs().max() <= 0.25 and offsets.abs().max() > 0.2
        assert torch.allclose(out["neighbours"], g(out["neighbour_latents"]), atol=1e-5)
    far = arithmetic(g, 3, a, b, c, noise=2.0, neighbours=50)["neighbour_latents"] - y
    assert far.abs().max() > 1.5  # the radius is the argument, not a constant


def test_arithmetic_cli_writes_what_the_function_computes(run, tmp_path):
    from dcgan.latent import arithmetic

    dcgan("arithmetic", run, "--a", "0,1,2", "--b", "3,4,5", "--c", "6,7,8", "--seed", 3, "--out", tmp_path)
    r = json.loads((tmp_path / "arithmetic.json").read_text())
    out = arithmetic(load_generator(run), 3, [0, 1, 2], [3, 4, 5], [6, 7, 8])
    assert torch.allclose(torch.tensor(r["y"]), out["y"], atol=1e-6)
    rms = [float((x - out["result"]).pow(2).mean().sqrt()) for x in out["neighbours"]]
    assert r["neighbour_rms_to_result"] == pytest.approx(rms, abs=1e-5)
    assert r["pixel_result_rms_to_result"] == pytest.approx(
        float((out["pixel_result"] - out["result"]).pow(2).mean().sqrt()), abs=1e-5)
    with Image.open(tmp_path / "arithmetic.png") as im:
        layout = json.loads(im.text["layout"])
    assert layout["rows"] == ["A: 0, 1, 2", "B: 3, 4, 5", "C: 6, 7, 8", "Y = A - B + C"]
    assert layout["tiles"][0] == ["#0", "#1", "#2", "G(mean z)"]  # the means in one column
    assert layout["tiles"][3] == ["G(Y)", *[f"Y+noise {i}" for i in range(1, 9)], "pixels A-B+C"]
    assert layout["tile"] >= 64 and "seed 3" in layout["title"]
    dcgan("arithmetic", run, "--a", "0", "--out", tmp_path / "bad", ok=False)


def test_direction_starts_from_the_unchanged_samples(run, tmp_path):
    dcgan("arithmetic", run, "--from", "0,1", "--to", "2,3", "--targets", "9,10", "--steps", 4,
          "--out", tmp_path)
    r = json.loads((tmp_path / "direction.json").read_text())
    assert r["mean_rms_change"][0] == 0 and r["mean_rms_change"][-1] > 0
    assert r["alphas"] == pytest.approx([0, 1 / 3, 2 / 3, 1])
    with Image.open(tmp_path / "direction.png") as im:
        layout = json.loads(im.text["layout"])
    assert layout["columns"] == ["+0.00 v", "+0.33 v", "+0.67 v", "+1.00 v"]
    assert layout["rows"] == ["#9", "#10"]
    assert layout["title"].startswith("v = mean z(2, 3) - mean z(0, 1)")
    sheet = to_float(torch.from_numpy(png(tmp_path / "direction.png").copy()).permute(2, 0, 1)[:1])
    factor = layout["tile"] // 16
    top, left, size = layout["top"], layout["left"], layout["tile"]
    tile = sheet[0, top:top + size:factor, left:left + size:factor]
    first = load_generator(run).sample(1, seed=0, start=9)[0, 0]
    assert (tile - first).abs().max() < 2 / 255 + 1e-6  # column 0 is the sample itself


# ---- forgetting ---------------------------------------------------------------------------------

def test_boxes_map_to_layer_locations_and_drop_rules():
    assert box_mask([(1, 2, 3, 5)], 8).sum() == 2 * 3
    m = layer_mask([(0, 0, 8, 8)], 16, 8)  # the top-left quarter of the image
    assert m[:4, :4].all() and m.sum() == 16
    w = np.array([0.5, -1.0, 2.0, 0.0, 0.1])
    assert choose_maps(w) == [0, 2, 4] and choose_maps(w, "top:2") == [2, 0]
    assert choose_maps(w, "threshold:0.3") == [0, 2]
    from dcgan.errors import DCGANError

    with pytest.raises(DCGANError, match="--drop"):
        choose_maps(w, "top:0")


def test_generate_without_zeroes_exactly_those_maps(run):
    g = load_generator(run)
    z = g.latent(0, range(4))
    assert torch.equal(generate_without(g, z, []), g.generate(z))
    seen = []
    handle = g.blocks[-1].register_forward_hook(lambda m, i, o: seen.append(i[0]))
    changed = generate_without(g, z, [0, 3], layer=-2)
    handle.remove()
    assert seen[0][:, [0, 3]].abs().max() == 0 and seen[0][:, 1].abs().max() > 0
    assert not torch.equal(changed, g.generate(z))
    assert len(g.blocks[-2]._forward_hooks) == 0  # the hook is gone


def test_forget_cli_with_a_boxes_file_and_bad_files(run, tmp_path):
    boxes = tmp_path / "boxes.json"
    entries = [{"seed": 0, "index": i, "boxes": [[0, 0, 8, 8]]} for i in range(6)]
    boxes.write_text(json.dumps({"boxes": entries}))
    dcgan("forget", run, "--boxes", boxes, "--n", 4, "--layer", -2, "--out", tmp_path / "f")
    r = json.loads((tmp_path / "f" / "forget.json").read_text())
    assert r["boxed_samples"] == 6 and r["maps_in_layer"] == 8 and r["dropped"] == len(r["dropped_maps"])
    assert r["positives"] == 6 * 16 and r["negatives"] == 6 * 16  # one random outside location per inside one
    assert r["detector_accuracy"] > 0.5  # better than the balanced classes' chance
    with Image.open(tmp_path / "f" / "forget.png") as im:
        layout = json.loads(im.text["layout"])
    assert layout["rows"] == ["boxed: original", "boxed: maps dropped", "seed 0: original",
                              "seed 0: maps dropped"]
    assert layout["tiles"][0] == [f"0:{i}" for i in range(6)]
    assert layout["tiles"][2] == [f"0:{i}" for i in range(4)]
    assert layout["boxes"] == [[0, j, [[0, 0, 8, 8]]] for j in range(6)]  # drawn on the boxed originals only
    assert f"G without {r['dropped']} of 8 feature maps of layer -2" in layout["title"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"boxes": [{"seed": 0, "index": 1, "boxes": [[0, 0, 40, 8]]}]}))
    err = dcgan("forget", run, "--boxes", bad, "--out", tmp_path / "g", ok=False).stderr
    assert "bad.json, entry 0" in err and "[0, 0, 40, 8]" in err and err.startswith("error:")
    assert "not found" in dcgan("forget", run, "--boxes", tmp_path / "none.json", ok=False).stderr
    bad.write_text("{not json")
    assert "is not a boxes file" in dcgan("forget", run, "--boxes", bad, ok=False).stderr


def test_synthetic_windows_have_known_boxes():
    images, boxes = synthetic_windows(20, 16, seed=0)
    found = find_windows(to_float(images))
    assert found == boxes
    x0, y0, x1, y1 = boxes[0]
    assert (images[0, 0, y0:y1, x0:x1] == 255).all() and images[0].float().mean() < 0.6 * 255


@pytest.fixture(scope="module")
def windows_run(tmp_path_factory):
    """A small G trained on bright windows in dark images (every box known)."""
    tmp = tmp_path_factory.mktemp("windows")
    data = tmp / "windows"
    data.mkdir()
    images, _ = synthetic_windows(1000, 16, seed=0)
    for i, x in enumerate(images):
        save_image(x.float() / 255, data / f"{i:04d}.png")
    return train({"data": str(data), "image_size": 16, "channels": 1, "ngf": 16, "ndf": 16, "nz": 32,
                  "batch_size": 64, "steps": 500, "seed": 0, "tensorboard": False, "log_every": 1000,
                  "sample_every": 10**6, "checkpoint_every": 10**6, "out": str(tmp / "run")})


def test_forgetting_removes_the_window_and_little_else(windows_run, tmp_path):
    """Dropping the maps the detector picks removes the window inside the boxes while the rest of
    the image changes far less."""
    r = forget_synthetic(windows_run, tmp_path / "forget", samples=100, boxes_from=40, layer=-2)
    assert r["samples_with_window"] >= 50
    assert r["presence_before"] > 0.4 and r["presence_after"] < 0.25 * r["presence_before"]
    assert r["eval_change_ratio"] > 2
    assert 0 < r["dropped"] < r["maps_in_layer"]


def test_forget_cli_removes_the_boxed_object(windows_run, tmp_path):
    """`dcgan forget` with a boxes file of G's own windows: the pixels change inside the boxes far
    more than outside, and on other samples (another seed) the windows are mostly gone."""
    g = load_generator(windows_run)
    found = find_windows(g.sample(60, seed=0))
    entries = [{"seed": 0, "index": i, "boxes": [list(b)]} for i, b in enumerate(found) if b is not None]
    assert len(entries) >= 25
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"boxes": entries[:25]}))
    dcgan("forget", windows_run, "--boxes", boxes, "--n", 4, "--layer", -2, "--out", tmp_path / "f")
    r = json.loads((tmp_path / "f" / "forget.json").read_text())
    assert r["mean_abs_change_in_boxes"] > 2 * r["mean_abs_change_outside"]
    z = g.latent(1, range(100))
    presence = [np.mean([w is not None for w in find_windows(x)])
                for x in (g.generate(z), generate_without(g, z, r["dropped_maps"], layer=-2))]
    assert presence[0] > 0.4 and presence[1] < 0.5 * presence[0], presence
