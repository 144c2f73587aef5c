"""Sample-quality metrics: correctness against known values, and the commands that use them."""

import hashlib
import json
import math

import numpy as np
import pytest
import torch
from clirun import dcgan
from scipy import linalg

from dcgan.data import open_dataset
from dcgan.errors import DCGANError
from dcgan.metrics import (
    Extractor,
    describe_quality,
    extract,
    frechet_distance,
    kernel_distance,
    precision_recall,
    train_classifier,
)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    path = tmp_path_factory.mktemp("clf") / "clf.safetensors"
    result = train_classifier("digits", out=path, epochs=3)
    assert result["test_accuracy"] > 0.9  # a usable extractor
    return path


@pytest.fixture(scope="module")
def digits():
    return open_dataset("digits", 32, 1).images


def gaussian(n, mean, cov, seed):
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.multivariate_normal(mean, cov, size=n))


def test_fid_of_a_set_against_itself_is_zero():
    x = torch.randn(500, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert abs(frechet_distance(x, x)) < 1e-6


def test_fid_matches_the_closed_form_between_gaussians():
    m1, m2 = np.zeros(3), np.array([1.0, -0.5, 0.0])
    c1 = np.diag([1.0, 2.0, 3.0])
    a = np.array([[1.0, 0.3, 0.0], [0.3, 1.5, 0.2], [0.0, 0.2, 0.5]])
    c2 = a @ a.T
    closed = float(np.sum((m1 - m2) ** 2) + np.trace(c1 + c2 - 2 * linalg.sqrtm(c1 @ c2).real))
    fid = frechet_distance(gaussian(100_000, m1, c1, 0), gaussian(100_000, m2, c2, 1))
    assert fid == pytest.approx(closed, rel=0.02)


def test_fid_is_stable_with_fewer_samples_than_dimensions():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(10, 64, generator=gen), torch.randn(10, 64, generator=gen) + 1
    fid = frechet_distance(a.double(), b.double())
    assert fid == pytest.approx(numpy_fid(a.double(), b.double()), rel=1e-3)  # singular covariances
    assert fid >= float(((a.mean(0) - b.mean(0)) ** 2).sum())  # the trace term is never negative
    assert abs(frechet_distance(a.double(), a.double())) < 1e-4


def test_features_do_not_depend_on_batch_size(classifier, digits):
    f = Extractor(f"classifier:{classifier}")
    small, _ = extract(digits[:300], f, batch_size=7)
    large, _ = extract(digits[:300], f, batch_size=300)
    assert torch.allclose(small, large, atol=1e-5)
    other, _ = extract(digits[300:600], f)
    assert frechet_distance(small, other) == pytest.approx(frechet_distance(large, other), rel=1e-6)


def test_fid_and_kid_rise_with_noise(classifier, digits):
    f = Extractor(f"classifier:{classifier}")
    real, _ = extract(digits[:800], f)
    gen = torch.Generator().manual_seed(0)
    fids, kids = [], []
    for sigma in (0, 10, 25, 50, 100):
        noisy = (digits[800:1600].float() + sigma * torch.randn(800, 1, 32, 32, generator=gen))
        feats, _ = extract(noisy.clamp(0, 255).round().to(torch.uint8), f)
        fids.append(frechet_distance(real, feats))
        kids.append(kernel_distance(real, feats, subsets=20, subset_size=400)[0])
    assert fids == sorted(fids) and fids[-1] > 5 * fids[0], fids
    assert kids == sorted(kids), kids


def test_precision_and_recall_see_mode_collapse():
    gen = torch.Generator().manual_seed(0)
    real = torch.randn(1000, 8, generator=gen)
    assert precision_recall(real, real.clone()) == (1.0, 1.0)
    collapsed = real[:1] + 0.01 * torch.randn(1000, 8, generator=gen)  # one mode, faithful
    precision, recall = precision_recall(real, collapsed)
    assert precision > 0.9 and recall < 0.05


def test_missing_or_hostile_inception_weights_are_clear_errors(tmp_path):
    with pytest.raises(DCGANError, match="pt_inception-2015-12-05"):
        Extractor("inception", str(tmp_path / "nothing.pth"))
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"x": Exploit()}, tmp_path / "evil.pth")
    with pytest.raises(DCGANError, match="not a plain"):
        Extractor("inception", str(tmp_path / "evil.pth"))
    assert not marker.exists()


def test_inception_features_from_a_local_weights_file(tmp_path, monkeypatch):
    """A weights file in the standard format (random values here): 2048 features and 1008 logits."""
    from torch import nn
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    with monkeypatch.context() as m:  # build the network once without weights, to write its file
        m.setattr(torch, "load", lambda *a, **k: {})
        m.setattr(nn.Module, "load_state_dict", lambda self, *a, **k: None)
        net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], "unused")
    torch.save(net.state_dict(), tmp_path / "pt_inception.pth")
    f = Extractor("inception", str(tmp_path / "pt_inception.pth"))
    gen = torch.Generator().manual_seed(0)
    grey = torch.randint(0, 256, (40, 1, 32, 32), dtype=torch.uint8, generator=gen)
    feats, logits = f.features_and_logits(grey)
    assert feats.shape == (40, 2048) and logits.shape == (40, 1008)
    # the resize path: a grey image is its three-channel copy; one image's features do not depend on its batch
    rgb, _ = f.features_and_logits(grey.expand(-1, 3, -1, -1))
    assert torch.allclose(feats, rgb) and torch.allclose(f(grey[:1]), feats[:1], atol=1e-6)
    # FID on these features against numpy + scipy.linalg.sqrtm on the same features
    other, _ = extract(255 - grey, f, batch_size=16)
    assert frechet_distance(feats, other) == pytest.approx(numpy_fid(feats, other), rel=1e-4)
    assert protocol_hash(f) == hashlib.sha256((tmp_path / "pt_inception.pth").read_bytes()).hexdigest()


def protocol_hash(f):
    return f.protocol(32, 1)["weights_sha256"]


def numpy_fid(a, b):
    """FID by its definition, independently of torchmetrics: |mu_a - mu_b|^2 + Tr(Ca + Cb - 2 (Ca Cb)^1/2)."""
    a, b = a.numpy(), b.numpy()
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(ca @ cb).real
    return float(np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(ca + cb - 2 * root))


def test_fid_matches_numpy_and_scipy_on_the_same_features():
    """Exact on finite samples (the closed-form test above is up to sampling error)."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(400, 12, generator=gen, dtype=torch.float64)
    mix = torch.randn(12, 12, generator=gen, dtype=torch.float64)
    b = torch.randn(400, 12, generator=gen, dtype=torch.float64) @ mix * 0.5 + 0.3
    assert frechet_distance(a, b) == pytest.approx(numpy_fid(a, b), rel=1e-6)


def test_training_evaluates_and_keeps_the_best(classifier, tmp_path):
    run = tmp_path / "run"
    dcgan("train", "--image-size", 32, "--ngf", 8, "--ndf", 8, "--nz", 16, "--batch-size", 32,
          "--steps", 6, "--eval-every", 3, "--eval-extractor", f"classifier:{classifier}",
          "--eval-n", 200, "--tensorboard", "false", "--log-every", 100, "--out", run)
    rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    evaluated = [r for r in rows if "fid" in r]
    assert [r["step"] for r in evaluated] == [3, 6]
    best = min(evaluated, key=lambda r: r["fid"])
    assert torch.load(run / "best.pt", weights_only=True)["step"] == best["step"]
    # the logged numbers are the metric of the network kept: recomputed from best.pt, they agree
    from dcgan import seeds
    from dcgan.checkpoint import load_generator
    from dcgan.data import open_dataset, sample_images
    from dcgan.metrics import Evaluator

    reference = sample_images(open_dataset("digits", 32, 1), 200, seeds.generator(0, "reference"))
    again = Evaluator(f"classifier:{classifier}", reference, 200, 0)(load_generator(run / "best.pt"))
    for key in ("fid", "kid", "kid_std", "precision", "recall"):
        assert again[key] == pytest.approx(best[key], rel=1e-9, abs=1e-12, nan_ok=True), key  # same z


def test_evaluate_command_writes_every_number(classifier, tmp_path):
    run = tmp_path / "run"
    dcgan("train", "--image-size", 32, "--ngf", 8, "--ndf", 8, "--nz", 16, "--batch-size", 32,
          "--steps", 2, "--tensorboard", "false", "--out", run)
    proc = dcgan("evaluate", run, "--data", "digits", "--split", "train", "--n", 300,
                 "--extractor", f"classifier:{classifier}", "--out", tmp_path / "q.json")
    result = json.loads((tmp_path / "q.json").read_text())
    assert {"fid", "kid", "kid_std", "precision", "recall", "n_real", "n_fake"} <= set(result)
    assert result["n_fake"] == result["n_real"] == 300
    # the protocol beside the numbers: sizes, reference split, resize path, extractor and its weights
    p = result["protocol"]
    assert p["n_real"] == p["n_generated"] == 300
    assert p["reference"].startswith("digits train split, 300 images")
    assert p["weights_sha256"] == hashlib.sha256(classifier.read_bytes()).hexdigest()
    assert str(classifier) in p["feature_extractor"] and "no resize" in p["resize"]
    assert "300 < 10,000" in p["note"]
    out = proc.stdout
    assert math.isnan(result["kid_std"])  # 300 images: every KID subset is the whole set, no spread
    assert f"KID {result['kid']:.5f} +- n/a" in out and p["weights_sha256"] in out
    assert "biased" in out and "reference: digits train split" in out


def test_kid_spread_is_undefined_only_when_each_subset_is_the_whole_set():
    gen = torch.Generator().manual_seed(0)
    real, fake = torch.randn(60, 8, generator=gen).double(), torch.randn(60, 8, generator=gen).double() + 0.5
    mean, std = kernel_distance(real, fake, subsets=20, subset_size=30)
    assert mean > 0 and std > 0  # subsets of 30 of 60 differ
    whole_mean, whole_std = kernel_distance(real, fake, subsets=20, subset_size=1000)
    assert math.isnan(whole_std) and whole_mean == pytest.approx(kernel_distance(real, fake, subsets=3)[0])
    assert "+- n/a" in describe_quality({"kid": whole_mean, "kid_std": whole_std})
