"""Representation learning (paper §5): D's pooled features, the L2-SVM protocols, the baselines."""

import importlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from clirun import dcgan, train_tiny

from dcgan.config import resolve
from dcgan.models import Discriminator
from dcgan.probe import (
    CS,
    LinearSVM,
    add_paired,
    balanced_draw,
    describe_paired,
    describe_probe,
    few_protocol,
    full_protocol,
    mean_of_inits,
    paired,
    select_c,
    t_interval,
)
from dcgan.representation import (
    KMeansFeatures,
    average_bn_statistics,
    dcgan_features,
    feature_dim,
    pooled_features,
)


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
    """Test rows are recognisable (offset by 1000); every SVM that sees them must be the one whose C
    was already chosen, once per protocol run or draw. A protocol that scores several C on the test
    split (to pick one) hands test rows to an SVM of another C, or to the shared C search."""
    train_x, train_y = synthetic(0)
    val_x, val_y = synthetic(2, n=200)
    test_x, test_y = synthetic(1, n=200)
    test_x = test_x + 1000
    seen = []  # (C of the SVM, whether the rows were test rows)
    real_rows = LinearSVM._rows

    def spy(self, x):
        seen.append((self.c, bool(x.min() > 500)))
        return real_rows(self, x)

    monkeypatch.setattr(LinearSVM, "_rows", spy)
    full = full_protocol(train_x, train_y, test_x, test_y)
    assert [c for c, is_test in seen if is_test] == [full["C"]]
    assert sum(1 for _, is_test in seen if not is_test) >= 3  # the search ran, on other rows
    seen.clear()
    few = few_protocol(train_x, train_y, val_x, val_y, test_x, test_y, per_class=10, draws=3)
    assert [c for c, is_test in seen if is_test] == few["C"] and len(few["C"]) == 3
    assert len(few["errors"]) == 3 and few["validation"] == 200


def test_c_is_the_best_on_validation_and_edges_are_counted():
    """The chosen C is the validation argmax over the whole grid, recomputed here fit by fit; with a
    grid of one value every choice is at its edge."""
    train_x, train_y = synthetic(0)
    val_x, val_y = synthetic(2, n=200)
    test_x, test_y = synthetic(1, n=200)
    few = few_protocol(train_x, train_y, val_x, val_y, test_x, test_y, per_class=5, draws=4)
    rng = np.random.default_rng(0)
    for c, val_error in zip(few["C"], few["validation_errors"], strict=True):
        idx = balanced_draw(train_y, 5, np.arange(len(train_y)), rng)
        accs = {cc: LinearSVM(cc).fit(train_x[idx], train_y[idx]).score(val_x, val_y) for cc in CS}
        best = max(accs.values())
        assert c == min(cc for cc, a in accs.items() if a == best)
        assert val_error == pytest.approx(1 - best)
    assert few["C_grid"] == list(CS) and CS[0] == 1e-5 and CS[-1] == 1.0
    assert few["C_at_edge"] == sum(c in (CS[0], CS[-1]) for c in few["C"])
    one = few_protocol(train_x, train_y, val_x, val_y, test_x, test_y, per_class=5, draws=4, cs=(1e-2,))
    assert one["C_at_edge"] == 4


def test_t_interval_uses_n_minus_1_degrees_of_freedom():
    """Against the t table: t(0.975, 2) = 4.303, t(0.975, 9) = 2.262 (not the normal 1.96)."""
    t = t_interval([0.1, 0.2, 0.3])
    assert t["mean"] == pytest.approx(0.2) and t["spread"] == pytest.approx(0.1)
    assert t["ci95"] == pytest.approx(4.303 * 0.1 / np.sqrt(3), rel=1e-3)
    ten = np.arange(10) / 100
    assert t_interval(ten)["ci95"] == pytest.approx(2.262 * np.std(ten, ddof=1) / np.sqrt(10), rel=1e-3)


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


@pytest.mark.parametrize("c", [1e-3, 1e-1])
def test_svm_on_more_rows_than_features_equals_liblinear(c):
    """The full-protocol path (float32 features, standardisation folded into the weights, no row-span
    basis) solves LinearSVC's problem: same weights and intercepts, same predictions."""
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    x, y = synthetic(0, n=600, d=40)
    x = (x * np.linspace(0.5, 5, 40) + 3).astype(np.float32)  # unequal scales and offsets to fold in
    fast = LinearSVM(c).fit(x, y)
    assert fast.basis is None and fast.w.dtype == torch.float32
    plain = LinearSVC(C=c, loss="squared_hinge", penalty="l2", max_iter=50000, tol=1e-10)
    scaler = StandardScaler().fit(x)
    plain.fit(scaler.transform(x), y)
    scale = np.abs(plain.coef_).max()
    assert np.abs(fast.coef_[:, :-1] - plain.coef_).max() < 1e-3 * scale
    # to 0.1% of the larger of the weights and the intercepts (here 10x the weights; float32 features)
    size = max(scale, np.abs(plain.intercept_).max())
    assert np.abs(fast.coef_[:, -1] - plain.intercept_).max() < 1e-3 * size
    test_x, _ = synthetic(1, n=300, d=40)
    test_x = (test_x * np.linspace(0.5, 5, 40) + 3).astype(np.float32)
    assert (fast.predict(test_x) == plain.predict(scaler.transform(test_x))).mean() > 0.99


@pytest.fixture
def passes(monkeypatch) -> list:
    """One entry per product of the full-protocol path's features with weights (a pass over them)."""
    probe_module = importlib.import_module("dcgan.probe")
    counted = []
    mv = probe_module._Rows.mv
    monkeypatch.setattr(probe_module._Rows, "mv", lambda self, w: counted.append(1) or mv(self, w))
    return counted


def test_the_float32_solver_stops_at_its_precision_instead_of_stepping_in_place(passes):
    """At float32's floor the gradient cannot reach tol and a zero change in the objective still
    passed Armijo's test: the solver stepped in place until max_iter (200 products with the
    features where 8 suffice; hours on the full protocol's 54,000 x 28,672). Same solution as
    LinearSVC, in a few passes over the features."""
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 3000)
    x = (rng.normal(size=(10, 400))[y] * 0.3 + rng.normal(size=(3000, 400)) * 3 + 5).astype(np.float32)
    fast = LinearSVM(1e-5).fit(x, y)
    assert len(passes) < 40
    plain = LinearSVC(C=1e-5, loss="squared_hinge", penalty="l2", max_iter=50000, tol=1e-10)
    plain.fit(StandardScaler().fit_transform(x), y)
    scale = np.abs(plain.coef_).max()
    assert np.abs(fast.coef_[:, :-1] - plain.coef_).max() < 1e-3 * scale


def test_the_preconditioner_cuts_the_passes_on_correlated_features_to_the_same_optimum(passes):
    """A deep network's features are strongly correlated: a few huge eigenvalues of A^T A make plain
    conjugate gradients crawl at large C (hours on 54,000 x 28,672 features). The preconditioner,
    exact on the top singular subspace, reaches LinearSVC's weights in a fraction of the passes."""
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 3000)
    x = rng.normal(size=(10, 400))[y] * 0.3 + rng.normal(size=(3000, 400)) * 3 + 5
    shared = rng.normal(size=(3000, 8)) @ rng.normal(size=(8, 400))  # 8 factors behind every feature
    x = (x + 4 * shared).astype(np.float32)
    plain = LinearSVC(C=0.1, loss="squared_hinge", penalty="l2", max_iter=50000, tol=1e-10)
    plain.fit(StandardScaler().fit_transform(x), y)
    scale = np.abs(plain.coef_).max()
    counts = {}
    for rank in (0, 512):  # 512: capped at 400 // 32 = 12 dimensions here
        passes.clear()
        fast = LinearSVM(0.1, rank=rank).fit(x, y)
        assert (fast.deflation is not None) == (rank > 0)
        counts[rank] = len(passes)
        assert np.abs(fast.coef_[:, :-1] - plain.coef_).max() < 1e-3 * scale
    assert counts[512] * 3 < counts[0]  # measured: 70 against 261


def test_the_c_search_stops_once_validation_accuracy_has_peaked():
    """The full protocol's search (patience 2) skips the largest C, its slowest fits, once two
    successive C score below the best, and chooses the C that the whole grid would."""
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 1500)
    x = (rng.normal(size=(1500, 60)) + 1.5 * np.eye(4, 60)[y]).astype(np.float32)
    y = np.where(rng.random(1500) < 0.3, rng.integers(0, 4, 1500), y)  # noisy labels: large C overfits
    whole = select_c(x[:1200], y[:1200], x[1200:], y[1200:])
    patient = select_c(x[:1200], y[:1200], x[1200:], y[1200:], patience=2)
    assert whole[3] == len(CS) and whole[0] == 1e-4  # the peak, then four C scoring lower
    assert patient[:2] == whole[:2] and patient[3] == CS.index(whole[0]) + 1 + 2


@pytest.mark.parametrize("d", [40, 400])  # both paths: more rows than features, and the row span
@pytest.mark.parametrize("rows", [300, 270])  # the start fitted on the same rows, or on 90% of them
def test_a_warm_started_svm_reaches_the_same_optimum(d, rows):
    """The C search starts each C from the previous C's solution, the full protocol's last fit from the
    chosen C's on 90% of the rows (another row span): the same weights as a cold start."""
    x, y = synthetic(0, n=300, d=d)
    previous = LinearSVM(1e-3).fit(x[:rows], y[:rows])
    warm = LinearSVM(1e-1).prepare(x)
    warm.fit_rows(warm._rows(x), y, start=previous)
    cold = LinearSVM(1e-1).fit(x, y)
    scale = np.abs(cold.coef_).max()
    assert np.abs(warm.coef_ - cold.coef_).max() < 2e-3 * scale
    assert (warm.predict(x) == cold.predict(x)).mean() > 0.99


def test_a_start_without_every_class_is_not_used():
    """A class absent from the start's rows (the search's 90% of a tiny training set) has no weights to
    start from: the fit starts cold and still learns every class."""
    x, y = synthetic(0, n=300, d=40)
    partial = LinearSVM(1e-1).fit(x[y != 3], y[y != 3])
    warm = LinearSVM(1e-1).prepare(x)
    warm.fit_rows(warm._rows(x), y, start=partial)
    assert np.array_equal(warm.coef_, LinearSVM(1e-1).fit(x, y).coef_)


def test_the_final_fit_starts_from_the_chosen_c_solution(passes):
    """The full protocol's last fit, on all training rows at the chosen C, starts from the solution the
    C search found on 90% of them: the same classifier as a cold fit, in fewer passes over the
    features (on 60,000 x 28,672 each pass is seconds of CPU)."""
    rng = np.random.default_rng(2)
    y = rng.integers(0, 10, 4000)
    x = rng.normal(size=(10, 300))[y] * 0.3 + rng.normal(size=(4000, 300)) * 3 + 5
    x = (x + 8 * rng.normal(size=(4000, 8)) @ rng.normal(size=(8, 300))).astype(np.float32)  # correlated
    (x, test_x), (y, test_y) = np.split(x, [3000]), np.split(y, [3000])
    r = full_protocol(x, y, test_x, test_y)
    whole = len(passes)
    val, fit = np.split(np.random.default_rng(0).permutation(3000), [300])  # full_protocol's split
    passes.clear()
    select_c(x[fit], y[fit], x[val], y[val], patience=2)
    search = len(passes)
    passes.clear()
    cold = LinearSVM(r["C"]).fit(x, y)
    assert whole - search - 1 < 0.85 * len(passes)  # 1: the test predictions; measured 29 against 40
    cold_wrong = cold.predict(test_x) != test_y
    assert (np.array(r["test_errors"]) == cold_wrong).mean() > 0.99


def test_svm_reads_the_callers_float32_features_in_place():
    """The solver multiplies the caller's array itself: no float64 or standardised copy of it."""
    x, y = synthetic(0, n=300, d=20)
    x = x.astype(np.float32)
    before = x.copy()
    svm = LinearSVM(1e-2).fit(x, y)
    rows = svm._rows(x)
    assert rows.x.dtype == torch.float32 and rows.x.data_ptr() == x.ctypes.data
    assert np.array_equal(x, before)  # and never writes to it


MEMORY_CHILD = """
import resource, sys
import numpy as np
from dcgan.probe import LinearSVM
rng = np.random.default_rng(0)
x = rng.standard_normal((20000, 2000), dtype=np.float32)  # 160 MB of features
y = rng.integers(0, 10, len(x))
x[np.arange(len(x)), y] += 3  # learnable
LinearSVM(1e-4).fit(x[:600, :700], y[:600])  # loads torch's kernels: their pages are not the fit's
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
acc = LinearSVM(1e-4).fit(x, y).score(x, y)  # a small C: few Newton steps, seconds
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024 / x.nbytes, acc)
"""


def test_svm_fit_needs_a_fraction_of_the_features_memory():
    """Peak memory of a fit above the features themselves, in a fresh process: under half the
    features' size (BLAS buffers and per-class vectors; liblinear needed a float64 copy of the
    features plus its own 16-byte-per-value rows: over 6x). glibc's malloc gets a fixed mmap
    threshold: with its default, a dynamic one, heap pages freed by the fit's temporaries stay
    resident at random, which moved this measure between 0.17x and 0.73x from run to run."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(2**20)}
    proc = subprocess.run([sys.executable, "-c", MEMORY_CHILD], capture_output=True, text=True, timeout=300,
                          env=env)
    assert proc.returncode == 0, proc.stderr
    extra, acc = map(float, proc.stdout.split())
    assert extra < 0.5 and acc > 0.9


def test_paired_comparison_over_the_same_draws():
    rows = [{"protocol": "few", "errors": [0.10, 0.20, 0.30, 0.40]},
            {"protocol": "few", "errors": [0.12, 0.21, 0.29, 0.40]}]
    add_paired(rows)
    p = rows[1]["paired_vs_first"]
    diff = np.array([0.02, 0.01, -0.01, 0.0])
    assert p["mean"] == pytest.approx(diff.mean()) and p["draws"] == 4
    assert (p["first_better"], p["first_worse"], p["ties"]) == (2, 1, 1)
    assert p["ci95"] == pytest.approx(3.182 * diff.std(ddof=1) / 2, rel=1e-3)  # t(0.975, 3)
    # the paired t statistic by hand, and its two-sided p from the t distribution with 3 dof
    t_stat = diff.mean() / (diff.std(ddof=1) / 2)
    from scipy import stats
    assert p["p_value"] == pytest.approx(2 * stats.t.sf(abs(t_stat), 3))
    assert p["sign_p_value"] == pytest.approx(1.0)  # 2 of 3 non-tied draws: P = 2 * (1/8 + 3/8)
    assert "paired_vs_first" not in rows[0]
    # ten wins of ten: the sign test's exact two-sided p is 2 / 2^10
    assert paired(np.zeros(10), np.arange(1, 11) / 100)["sign_p_value"] == pytest.approx(2 / 1024)


def test_the_full_protocol_compares_methods_image_by_image():
    """One train/test split, so the comparison pairs the test images: the error difference over
    them with its t-interval, and the sign test over the images one method alone got right, which
    is McNemar's exact test."""
    first = np.zeros(100, dtype=int)
    first[:10] = 1  # wrong on images 0-9
    other = np.zeros(100, dtype=int)
    other[5:25] = 1  # wrong on 5-24: both wrong on 5-9, first alone on 0-4, other alone on 10-24
    rows = [{"protocol": "full", "test_errors": first.tolist()},
            {"protocol": "full", "test_errors": other.tolist()}]
    add_paired(rows)
    p = rows[1]["paired_vs_first"]
    assert p["unit"] == "test images" and p["draws"] == 100
    assert p["mean"] == pytest.approx(0.10)  # 20% - 10%
    assert (p["first_better"], p["first_worse"], p["ties"]) == (15, 5, 80)
    from scipy import stats
    assert p["sign_p_value"] == pytest.approx(stats.binomtest(15, 20).pvalue)  # McNemar, exact
    assert "McNemar" in describe_paired(p, "DCGAN") and "over 100 test images" in describe_paired(p, "DCGAN")


def test_random_baseline_is_the_mean_of_its_inits():
    a = {"protocol": "few", "error": 0.2, "errors": [0.1, 0.3], "validation_error": 0.2,
         "validation_errors": [0.2, 0.2], "C": [1e-3, 1e-2], "C_at_edge": 0}
    b = {**a, "error": 0.3, "errors": [0.2, 0.4], "C": [1e-5, 1e-2], "C_at_edge": 1}
    m = mean_of_inits([a, b])
    assert m["errors"] == pytest.approx([0.15, 0.35]) and m["error"] == pytest.approx(0.25)
    assert m["inits"] == 2 and m["init_spread"] == pytest.approx(np.std([0.2, 0.3], ddof=1))
    assert m["C_at_edge"] == 1 and len(m["C"]) == 4
    full = {"protocol": "full", "accuracy": 0.9, "C": 1e-3, "C_tried": 4, "C_grid": [1e-3, 1e-2],
            "validation_accuracy": 0.8, "C_at_edge": 0, "test_errors": [0, 1, 1, 0]}
    m = mean_of_inits([full, {**full, "accuracy": 0.8, "C": 1e-2, "C_tried": 5, "validation_accuracy": 0.9,
                              "test_errors": [1, 1, 0, 0]}])
    assert m["accuracy"] == pytest.approx(0.85) and m["test_errors"] == pytest.approx([0.5, 1, 0.5, 0])
    assert m["validation_accuracy"] == pytest.approx(0.85) and m["C_tried"] == [4, 5]
    assert "C 0.001, 0.01 chosen on mean validation accuracy 85.00%; 4, 5 of 2 C fitted" in describe_probe(m)


def test_kmeans_features_shape_and_determinism():
    images = torch.randint(0, 256, (30, 1, 16, 16), dtype=torch.uint8)
    km = KMeansFeatures(k=8, patches=2000, seed=0).fit(images)
    a = km(images[:5])
    assert a.shape == (5, 4 * 8) and (a >= 0).all() and a.sum() > 0
    assert np.array_equal(a, KMeansFeatures(k=8, patches=2000, seed=0).fit(images)(images[:5]))


def test_probe_both_protocols_with_baselines_through_the_cli(tmp_path):
    """D is trained without the images it is probed on (digits' test split, every fifth image, is
    excluded); on this easy data every feature set must beat chance (90% error) by a wide margin."""
    run = tmp_path / "run"
    held_out = tmp_path / "test_split.txt"
    held_out.write_text("\n".join(str(i) for i in range(0, 1797, 5)) + "\n")
    train_tiny(run, 5, "--exclude", held_out)
    dcgan("probe", run, "--data", "digits", "--protocol", "few", "--per-class", 5, "--draws", 3,
          "--kmeans-k", 16, "--random-inits", 2, "--out", tmp_path / "few")
    rows = json.loads((tmp_path / "few" / "probe.json").read_text())
    assert [r["method"] for r in rows] == ["DCGAN discriminator", "same D, random init (mean of 2)",
                                           "raw pixels", "K-means, K=16 (Coates & Ng)"]
    assert [r["dim"] for r in rows] == [16 * (8 + 16), 16 * (8 + 16), 256, 64]
    # 50 labels, C chosen on half the 1,437 training images, 360 test images
    assert all(r["labels"] == 50 and r["validation"] == 718 and r["test"] == 360 for r in rows)
    assert all(len(r["errors"]) == 3 and r["error"] < 0.45 for r in rows), [r["error"] for r in rows]
    random = rows[1]
    assert random["inits"] == 2 and len(random["init_errors"]) == 2 and random["init_spread"] >= 0
    assert random["error"] == pytest.approx(np.mean(random["init_errors"]))  # the mean over inits
    assert random["init_errors"][0] != random["init_errors"][1]  # two different initialisations
    assert all(r["paired_vs_first"]["draws"] == 3 and 0 <= r["paired_vs_first"]["p_value"] <= 1
               for r in rows[1:])
    assert "Student-t" in (tmp_path / "few" / "probe.md").read_text()
    dcgan("probe", run, "--data", "digits", "--protocol", "full", "--baselines", "pixels", "--max-train", 600,
          "--out", tmp_path / "full")
    rows = json.loads((tmp_path / "full" / "probe.json").read_text())
    assert len(rows) == 2 and all(r["accuracy"] > 0.8 and r["test"] == 360 for r in rows)
    assert all(r["accuracy"] == pytest.approx(1 - np.mean(r["test_errors"])) for r in rows)
    p = rows[1]["paired_vs_first"]  # pixels against D, image by image
    assert p["draws"] == 360 and p["mean"] == pytest.approx(rows[0]["accuracy"] - rows[1]["accuracy"])
    table = (tmp_path / "full" / "probe.md").read_text()  # 10% of the 600 training images validate C
    assert "chosen on 60 validation images" in table and f"{100 * p['mean']:+.2f}%" in table
    dcgan("features", run, "--data", "digits", "--split", "test", "--out", tmp_path / "f.npz")
    saved = np.load(tmp_path / "f.npz")
    assert saved["features"].shape == (360, 384) and saved["labels"].shape == (360,)
    dcgan("features", run, "--data", "digits", "--split", "test", "--grid", 2, "--out", tmp_path / "g.npz")
    coarse = np.load(tmp_path / "g.npz")["features"]
    assert coarse.shape == (360, 4 * (8 + 16))
    # a 2x2 max-pool is the max over 2x2 blocks of the 4x4 one (16x16 input: every map divides evenly)
    fine = saved["features"][:, :8 * 16].reshape(360, 8, 2, 2, 2, 2).max((3, 5))
    assert np.allclose(coarse[:, :8 * 4], fine.reshape(360, 32), atol=1e-5)
