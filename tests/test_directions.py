"""Directions in z (SeFa, GANSpace PCA, InterFaceGAN SVM) and projecting images into z."""

import json

import numpy as np
import pytest
import torch
from clirun import dcgan, train_tiny
from PIL import Image

from dcgan.directions import first_layer_weight, pca, prior_sigma, sefa, svm
from dcgan.errors import DCGANError
from dcgan.latent import load_direction, load_latents, save_direction
from dcgan.models import Generator, ModelConfig
from dcgan.projection import project


def one_error(proc):
    """A failed command's stderr holds exactly one `error:` line."""
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    return proc


def tiny(projection="conv", latent="normal", nz=8) -> Generator:
    torch.manual_seed(0)
    return Generator(ModelConfig(image_size=16, channels=1, nz=nz, ngf=8, projection=projection,
                                 latent=latent))


def unit(seed: int, n: int = 8) -> torch.Tensor:
    v = torch.randn(n, generator=torch.Generator().manual_seed(seed))
    return v / v.norm()


def set_first_layer(g: Generator, w: torch.Tensor) -> None:
    """Set G's projection to the (nz, units) matrix w."""
    p = g.project_and_reshape.project
    with torch.no_grad():
        p.weight.copy_(w.t() if isinstance(p, torch.nn.Linear) else w.view_as(p.weight))


# ---- SeFa -----------------------------------------------------------------------------------

@pytest.mark.parametrize("projection", ["conv", "linear"])
def test_sefa_recovers_planted_principal_directions(projection):
    g = tiny(projection)
    units = first_layer_weight(g).shape[1]
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=torch.Generator().manual_seed(1)))
    scales = torch.tensor([10.0, 4, 1, 1, 1, 1, 1, 1])  # column energy mostly along q0, then q1
    set_first_layer(g, q @ (torch.randn(units, 8, generator=torch.Generator().manual_seed(2)) * scales).t())
    u, values = sefa(g, k=3)
    assert u.shape == (3, 8) and torch.allclose(u.norm(dim=1), torch.ones(3), atol=1e-5)
    assert abs(float(u[0] @ q[:, 0])) > 0.99 and abs(float(u[1] @ q[:, 1])) > 0.99
    assert values[0] > values[1] > 2 * values[2]  # the spectrum shows the two planted directions
    assert torch.all(values[:-1] >= values[1:])


def test_sefa_ignores_the_per_channel_scale_that_batchnorm_undoes():
    g = tiny("conv")
    before, values = sefa(g, k=4)
    with torch.no_grad():  # scale each output channel of the projection differently
        g.project_and_reshape.project.weight.mul_(torch.rand(1, g.project_and_reshape.c, 1, 1) * 5 + 0.1)
    after, values_after = sefa(g, k=4)
    assert torch.allclose((before * after).sum(1).abs(), torch.ones(4), atol=1e-4)
    assert torch.allclose(values, values_after, rtol=1e-4)


# ---- PCA (GANSpace) -------------------------------------------------------------------------

def test_pca_regression_recovers_a_planted_direction():
    g = tiny("conv")
    d = unit(3)
    units = first_layer_weight(g).shape[1]
    r = torch.randn(units, generator=torch.Generator().manual_seed(4))
    noise = 0.02 * torch.randn(8, units, generator=torch.Generator().manual_seed(5))
    set_first_layer(g, d[:, None] * r[None] + noise)  # layer 0 varies with z . d only, nearly
    out = pca(g, k=3, layer=0, n=1000)
    assert abs(float(out["directions"][0] @ d)) > 0.95
    assert out["explained"][0] > 20 * out["random_explained"]
    assert out["explained"] == sorted(out["explained"], reverse=True)


def test_pca_on_an_unplanted_generator_finds_no_such_direction():
    """The planted test is not passed by chance: without the plant, no direction lines up with d."""
    out = pca(tiny("conv"), k=3, layer=0, n=1000)
    assert abs(float(out["directions"][0] @ unit(3))) < 0.9


def test_pca_layer_out_of_range_or_too_many_activations_is_an_error(monkeypatch):
    with pytest.raises(DCGANError, match="layer must lie in 0..1"):
        pca(tiny(), k=2, layer=5, n=100)
    monkeypatch.setattr("dcgan.directions.MAX_ACTIVATION_BYTES", 100 * 256 * 4)  # 100 samples of layer 0
    with pytest.raises(DCGANError, match="lower --n to at most 100"):
        pca(tiny(), k=2, layer=0, n=101)


# ---- SVM (InterFaceGAN) ---------------------------------------------------------------------

def planted_labels(g: Generator, d: torch.Tensor, seed: int, n: int = 300) -> tuple[list[int], list[int]]:
    s = g.latent(seed, range(n), "cpu") @ d
    return ([i for i in range(n) if s[i] > 0.5][:40], [i for i in range(n) if s[i] < -0.5][:40])


def test_svm_direction_separates_planted_positives_and_negatives():
    g, d, seed = tiny(), unit(3), 2**40  # a seed beyond the 32 bits scikit-learn takes
    positive, negative = planted_labels(g, d, seed)
    out = svm(g, positive, negative, seed=seed)
    u = out["directions"][0]
    assert float(u @ d) > 0.9  # towards the positives
    assert out["heldout_accuracy"] > 0.9
    z = g.latent(seed, positive + negative, "cpu")
    labels = torch.tensor([True] * len(positive) + [False] * len(negative))
    assert ((z @ u > 0) == labels).float().mean() > 0.95
    conditioned = svm(g, positive, negative, seed=seed, condition=d)["directions"][0]
    assert abs(float(conditioned @ d)) < 1e-5 and abs(float(conditioned.norm()) - 1) < 1e-5


def test_svm_rejects_overlapping_or_too_few_labels():
    g = tiny()
    with pytest.raises(DCGANError, match="both positive and negative"):
        svm(g, [1, 2, 3], [3, 4, 5])
    with pytest.raises(DCGANError, match="at least 2 positive"):
        svm(g, [1], [3, 4])


# ---- direction files ------------------------------------------------------------------------

def test_direction_file_round_trip_and_sigma_of_each_prior(tmp_path):
    d = unit(3)
    assert prior_sigma(tiny(latent="normal"), d) == pytest.approx(1.0, abs=0.03)
    assert prior_sigma(tiny(latent="uniform"), d) == pytest.approx(1 / 3**0.5, abs=0.02)
    path = save_direction(tmp_path / "d.json", d, 0.58, method="svm")
    u, sigma, record = load_direction(path, nz=8)
    assert torch.allclose(u, d) and sigma == 0.58 and record["method"] == "svm"
    with pytest.raises(DCGANError, match="16 dimensions"):
        load_direction(path, nz=16)
    zero = {"format": "dcgan-direction", "vector": [0, 0], "sigma": 1}
    (tmp_path / "bad.json").write_text(json.dumps(zero))
    with pytest.raises(DCGANError, match="sigma a finite number"):
        load_direction(tmp_path / "bad.json")


# ---- projection -----------------------------------------------------------------------------

@pytest.mark.parametrize("latent", ["normal", "uniform"])
def test_projection_recovers_the_z_of_an_image_g_generated(latent):
    g = tiny(latent=latent).eval()
    with torch.no_grad():  # outputs that span [-1, 1], as a trained G's do
        for m in g.modules():
            if isinstance(m, torch.nn.ConvTranspose2d):
                m.weight.mul_(10)
    z_true = g.latent(7, range(2), "cpu")
    target = g.generate(z_true)
    out = project(g, target, steps=150, restarts=3, seed=1)
    assert (out["z"] - z_true).norm(dim=1).max() < 0.05
    assert out["pixel_mse"].max() < 1e-5
    assert torch.allclose(out["reconstructions"], target, atol=0.01)
    start = project(g, target, steps=1, restarts=1, seed=1)["pixel_mse"]
    assert (start > 100 * out["pixel_mse"]).all()  # the optimisation, not the start, found it
    if latent == "uniform":
        assert out["z"].abs().max() <= 1.0


def test_projection_keeps_uniform_z_in_its_support_and_gaussian_z_in_its_shell():
    g = tiny(latent="uniform").eval()
    far = torch.ones(1, 1, 16, 16)  # all white: pulls z outwards
    assert project(g, far, steps=40, restarts=2, lr=0.5)["z"].abs().max() <= 1.0
    g = tiny(latent="normal", nz=32).eval()
    z = project(g, far, steps=80, restarts=2, lr=0.5)["z"]
    band = 2 * (2 / 32) ** 0.5
    assert ((z.pow(2).mean(1) - 1).abs() < band + 0.1).all()


def test_projection_leaves_the_networks_untouched():
    g = tiny().train()
    before = {k: v.clone() for k, v in g.state_dict().items()}
    project(g, torch.zeros(1, 1, 16, 16), steps=5, restarts=1)
    assert g.training and all(p.requires_grad for p in g.parameters())
    assert all(torch.equal(before[k], v) for k, v in g.state_dict().items())  # BN buffers too


# ---- through the command line -----------------------------------------------------------------

@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("directions") / "run", 30)


def test_directions_cli_sefa_pca_svm_and_arithmetic_applies_a_saved_direction(run, tmp_path):
    out = tmp_path / "sefa"
    proc = dcgan("directions", run, "--method", "sefa", "--k", 3, "--out", out)
    assert "top eigenvalues" in proc.stdout
    summary = json.loads((out / "directions.json").read_text())
    assert len(summary["eigenvalues"]) == 16 and len(summary["files"]) == 3
    first = json.loads((out / "direction_00.json").read_text())
    assert first["method"] == "sefa" and first["sigma"] == pytest.approx(1.0, abs=0.05)
    assert np.linalg.norm(first["vector"]) == pytest.approx(1.0, abs=1e-5)
    strip = Image.open(out / "direction_00.png")
    assert strip.size[0] >= 7 * 64  # 7 columns, tiles upscaled to >= 64 px for the labels
    assert (out / "directions.png").is_file()

    dcgan("directions", run, "--method", "pca", "--k", 2, "--n", 200, "--layer", 0, "--out", tmp_path / "pca")
    assert len(json.loads((tmp_path / "pca" / "directions.json").read_text())["explained"]) == 2
    proc = dcgan("directions", run, "--method", "svm", "--positive", "0,1,2,3", "--negative", "4,5,6,7",
                 "--out", tmp_path / "svm")
    assert "held-out accuracy" in proc.stdout

    proc = dcgan("arithmetic", run, "--direction", out / "direction_00.json", "--steps", 5, "--n", 2,
                 "--out", tmp_path / "apply")
    report = json.loads((tmp_path / "apply" / "direction.json").read_text())
    assert report["alphas"] == pytest.approx([-1.0, -0.5, 0.0, 0.5, 1.0])
    change = report["mean_rms_change"]
    assert change[2] == pytest.approx(0.0, abs=1e-6)  # alpha 0 is the sample itself
    assert change[0] > change[1] > 1e-3 and change[4] > change[3] > 1e-3  # further along, larger change


def test_project_cli_writes_latents_that_sample_walk_and_arithmetic_use(run, tmp_path):
    from dcgan.checkpoint import load_generator

    g = load_generator(run)
    images = []
    for i, x in enumerate(g.sample(2, seed=3)):  # images G made, saved as PNG files
        path = tmp_path / f"img{i}.png"
        Image.fromarray(((x[0] + 1) * 127.5).round().byte().numpy()).save(path)
        images.append(path)
    rgb = tmp_path / "photo.jpg"  # another size and mode: converted as training converts
    Image.new("RGB", (50, 30), (200, 30, 30)).save(rgb)
    out = tmp_path / "proj"
    proc = dcgan("project", run, *images, rgb, "--steps", 60, "--restarts", 2, "--out", out)
    assert "pixel MSE" in proc.stdout
    report = json.loads((out / "projection.json").read_text())
    assert len(report["pixel_mse"]) == 3 and max(report["pixel_mse"][:2]) < 0.05
    z = load_latents(out / "latents.json", nz=16)
    assert z.shape == (3, 16)
    dcgan("sample", run, "--latents", out / "latents.json", "--n", 3, "--out", tmp_path / "s.png")
    assert Image.open(tmp_path / "s.png").size[0] > 16 * 2
    dcgan("walk", run, "--latents", out / "latents.json", "--steps", 3, "--out", tmp_path / "walk")
    assert json.loads((tmp_path / "walk" / "walk.json").read_text())["through"] == [[0, 1, 2]]
    dcgan("arithmetic", run, "--latents", out / "latents.json", "--a", 0, "--b", 1, "--c", 2,
          "--out", tmp_path / "arith")
    proc = one_error(dcgan("arithmetic", run, "--latents", out / "latents.json", "--a", 0, "--b", 1, "--c", 7,
                           "--out", tmp_path / "arith2", ok=False))
    assert "out of range" in proc.stderr and "holds 3 latents" in proc.stderr


@pytest.mark.parametrize("args, message", [
    (["directions", "{run}", "--method", "bogus"], "unknown method 'bogus'"),
    (["directions", "{run}", "--method", "svm", "--positive", "1,2"], "--negative"),
    (["directions", "{run}", "--method", "sefa", "--k", "99"], "at most nz = 16"),
    (["directions", "{run}", "--method", "svm", "--positive", "1,x", "--negative", "3,4"], "--positive"),
    (["project", "{run}", "{tmp}/missing.png"], "missing.png: no such file"),
    (["project", "{run}", "{tmp}/notimage.png"], "notimage.png"),
    (["project", "{run}", "{tmp}/x.png", "--steps", "0"], "steps must be at least 1"),
    (["arithmetic", "{run}", "--direction", "{tmp}/notimage.png"], "not a direction file"),
    (["sample", "{run}", "--latents", "{tmp}/notimage.png"], "not a latents file"),
])
def test_bad_direction_and_projection_input_is_one_error_line(run, tmp_path, args, message):
    (tmp_path / "notimage.png").write_bytes(b"this is not an image")
    Image.new("L", (16, 16), 128).save(tmp_path / "x.png")
    proc = one_error(dcgan(*[a.format(run=run, tmp=tmp_path) for a in args], ok=False))
    assert message in proc.stderr
