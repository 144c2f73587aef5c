"""Representation learning (paper §5): D's pooled features, the L2-SVM protocols, the baselines."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from dcgan import probe as probe_module
from dcgan.config import resolve
from dcgan.features import KMeansFeatures, average_bn_statistics, dcgan_features, feature_dim, pooled_features
from dcgan.models import Discriminator
from dcgan.probe import LinearSVM, add_paired, balanced_draw, few_protocol, full_protocol


@pytest.mark.parametrize("preset,dim", [("imagenet32", 28672), ("pytorch", 16 * (64 + 128 + 256 + 512)),
                                        ("paper", 16 * (128 + 256 + 512 + 1024))])
def test_feature_dimension_of_each_preset(preset, dim):
    assert feature_dim(resolve({"preset": preset, "channels": 3}).model) == dim


def test_pooled_features_have_that_dimension_and_are_deterministic():
    config = resolve({"preset": "imagenet32", "ndf": 8, "channels": 1}).model
    torch.manual_seed(0)
    d = Discriminator(config)
    images = torch.randint(0, 256, (10, 1, 32, 32), dtype=torch.uint8)
    a = dcgan_features(d, images, images[:6])
    assert a.shape == (6, feature_dim(config)) == (6, 16 * 8 * (1 + 1 + 2 + 2 + 4 + 4))
    assert np.array_equal(a, dcgan_features(d, images, images[:6]))
    # one image's features do not depend on the batch it is in (BN in inference mode)
    assert np.allclose(pooled_features(average_bn_statistics(d, images), images[:1]), a[:1], atol=1e-5)


def test_bn_statistics_are_the_training_set_average():
    torch.manual_seed(0)
    d = Discriminator(resolve({"image_size": 16, "channels": 1, "ndf": 4}).model)
    images = torch.randint(0, 256, (40, 1, 16, 16), dtype=torch.uint8)
    avg = average_bn_statistics(d, images, batch_size=10)
    bn = avg.blocks[1][1]
    assert int(bn.num_batches_tracked) == 4
    with torch.no_grad():  # the mean of the BN layer's input over the 4 batches
        x = d.blocks[1][0](d.blocks[0](images.float() / 127.5 - 1))
    assert torch.allclose(bn.running_mean, x.mean((0, 2, 3)), atol=1e-5)
    assert not torch.equal(bn.running_mean, d.blocks[1][1].running_mean)  # D itself is untouched


def test_few_label_draws_are_class_balanced_and_from_the_pool():
    labels = np.arange(500) % 10
    pool = np.arange(100, 500)
    idx = balanced_draw(labels, 7, pool, np.random.default_rng(0))
    assert np.bincount(labels[idx]).tolist() == [7] * 10
    assert len(set(idx)) == 70 and set(idx) <= set(pool)


def synthetic(seed=0, n=600, d=20):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 4
    x = rng.normal(size=(n, d)) + y[:, None] * 0.8
    return x.astype(np.float32), y


def test_c_is_never_chosen_on_the_test_split(monkeypatch):
    train_x, train_y = synthetic(0)
    test_x, test_y = synthetic(1, n=200)
    test_x = test_x + 1000  # test rows are recognisable
    seen = []
    real = probe_module.select_c

    def spy(x, y, val_x, val_y, *a, **k):
        seen.append(val_x)
        return real(x, y, val_x, val_y, *a, **k)

    monkeypatch.setattr(probe_module, "select_c", spy)
    full = full_protocol(train_x, train_y, test_x - 1000, test_y)
    few = few_protocol(train_x, train_y, test_x - 1000, test_y, per_class=10, draws=3, val_size=100)
    assert len(seen) == 4 and all(v.max() < 500 for v in seen)
    assert 0.5 < full["accuracy"] <= 1 and 0 <= few["error"] < 0.5 and len(few["errors"]) == 3
    assert few["ci95"] == pytest.approx(1.96 * np.std(few["errors"]))


def test_svm_fit_in_the_row_span_equals_liblinear_on_all_features():
    """Fewer samples than features: the fast fit solves the same problem as a plain LinearSVC."""
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    x, y = synthetic(0, n=120, d=400)
    fast = LinearSVM(1e-2).fit(x, y)
    assert fast.basis is not None and fast.basis.shape == (401, 120)
    plain = LinearSVC(C=1e-2, loss="squared_hinge", penalty="l2", max_iter=20000, tol=1e-8)
    plain.fit(StandardScaler().fit_transform(x), y)
    scale = np.abs(plain.coef_).max()
    assert np.abs(fast.coef_[:, :-1] - plain.coef_).max() < 1e-3 * scale
    assert np.abs(fast.coef_[:, -1] - plain.intercept_).max() < 1e-3 * scale
    test_x, test_y = synthetic(1, n=200, d=400)
    assert (fast.predict(test_x) == plain.predict(StandardScaler().fit(x).transform(test_x))).mean() > 0.99
    assert LinearSVM(1e-2).fit(x[:, :50], y).basis is None  # more samples than features: no projection


def test_paired_comparison_over_the_same_draws():
    rows = [{"errors": [0.10, 0.20, 0.30]}, {"errors": [0.12, 0.21, 0.29]}]
    add_paired(rows)
    paired = rows[1]["paired_vs_first"]
    assert paired["mean"] == pytest.approx(0.02 / 3) and paired["first_better"] == 2 and paired["draws"] == 3
    assert paired["ci95"] == pytest.approx(1.96 * np.std([0.02, 0.01, -0.01], ddof=1) / np.sqrt(3))
    assert "paired_vs_first" not in rows[0]


def test_kmeans_features_shape_and_determinism():
    images = torch.randint(0, 256, (30, 1, 16, 16), dtype=torch.uint8)
    km = KMeansFeatures(k=8, patches=2000, seed=0).fit(images)
    a = km(images[:5])
    assert a.shape == (5, 4 * 8) and (a >= 0).all() and a.sum() > 0
    assert np.array_equal(a, KMeansFeatures(k=8, patches=2000, seed=0).fit(images)(images[:5]))


def dcgan(*args):
    proc = subprocess.run([sys.executable, "-m", "dcgan", *map(str, args)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_probe_both_protocols_with_baselines_through_the_cli(tmp_path):
    run = tmp_path / "run"
    dcgan("train", "--image-size", 16, "--ngf", 8, "--ndf", 8, "--nz", 16, "--batch-size", 64, "--steps", 5,
          "--tensorboard", "false", "--out", run)
    dcgan("probe", run, "--data", "digits", "--protocol", "few", "--per-class", 5, "--draws", 2,
          "--kmeans-k", 16, "--out", tmp_path / "few")
    rows = json.loads((tmp_path / "few" / "probe.json").read_text())
    assert [r["method"] for r in rows] == ["DCGAN discriminator", "same D, random init", "raw pixels",
                                           "K-means, K=16 (Coates & Ng)"]
    assert [r["dim"] for r in rows] == [16 * (8 + 16), 16 * (8 + 16), 256, 64]
    assert all(r["labels"] == 50 and len(r["errors"]) == 2 and 0 <= r["error"] < 0.9 for r in rows)
    assert "± " in (tmp_path / "few" / "probe.md").read_text()
    assert all(r["paired_vs_first"]["draws"] == 2 for r in rows[1:])
    dcgan("probe", run, "--data", "digits", "--protocol", "full", "--baselines", "pixels", "--max-train", 600,
          "--out", tmp_path / "full")
    rows = json.loads((tmp_path / "full" / "probe.json").read_text())
    assert len(rows) == 2 and all(r["accuracy"] > 0.5 and r["test"] == 360 for r in rows)
    dcgan("features", run, "--data", "digits", "--split", "test", "--out", tmp_path / "f.npz")
    saved = np.load(tmp_path / "f.npz")
    assert saved["features"].shape == (360, 384) and saved["labels"].shape == (360,)
    dcgan("features", run, "--data", "digits", "--split", "test", "--grid", 2, "--out", tmp_path / "g.npz")
    coarse = np.load(tmp_path / "g.npz")["features"]
    assert coarse.shape == (360, 4 * (8 + 16))
    # a 2x2 max-pool is the max over 2x2 blocks of the 4x4 one (16x16 input: every map divides evenly)
    fine = saved["features"][:, :8 * 16].reshape(360, 8, 2, 2, 2, 2).max((3, 5))
    assert np.allclose(coarse[:, :8 * 4], fine.reshape(360, 32), atol=1e-5)
