"""Linear L2-SVM probes of image features (paper §5), with the paper's two protocols.

- full (CIFAR-10 style): all training labels; C is chosen on a validation split carved from the
  training set, the SVM is refit on all training labels, and test accuracy is reported.
- few (SVHN style): N labels per class, class-balanced, drawn R times from a pool; C is chosen on
  a fixed labelled validation split of 10,000 training images (the paper's; half the training
  split where it is smaller), disjoint from the pool; the mean test error over the draws with a
  Student-t 95% interval (R - 1 degrees of freedom), and the draw-to-draw spread (sample sd).
  Methods see the same draws, so they are compared pairwise: the mean paired difference with its
  t-interval, the paired t-test's p-value, and the sign test.
The test split never chooses anything. The SVM is the L2-SVM of scikit-learn's LinearSVC (squared
hinge, L2 penalty) on standardised features, solved in float32 without copying the features (see
LinearSVM), on the CPU or a GPU.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from dcgan import representation as feats
from dcgan.checkpoint import load_discriminator, run_data
from dcgan.config import MAX_SEED, check_count, check_seed
from dcgan.data import labelled_splits
from dcgan.distributed import pick_device
from dcgan.errors import DCGANError
from dcgan.models import Discriminator
from dcgan.outputs import check_out_dir, write_json, write_text
from dcgan.progress import Progress

__all__ = ["describe_paired", "describe_probe", "probe"]  # public: dcgan.NAME

# the C grid searched on validation, log-spaced and wide enough that the choice is rarely at an
# edge (the paper's released SVHN script searched 1e-4..1e-2); how often it was is reported
CS = tuple(10.0 ** k for k in range(-5, 1))
VAL_SIZE = 10000  # the few-label protocol's validation split (paper §5.2, SVHN)
# the full protocol's C search stops once this many successive C score below the best on validation:
# the largest C, the slowest fits on a large training set, are skipped when accuracy has peaked
PATIENCE = 2
RANK = 512  # the preconditioner's subspace on the full protocol's path (_Deflation)


def t_interval(values) -> dict:
    """Mean of `values` (one per draw) with the half-width of its Student-t 95% interval (n - 1
    degrees of freedom), and the spread: the sample standard deviation of one draw."""
    v = np.asarray(values, dtype=np.float64)
    n = len(v)
    sd = float(v.std(ddof=1)) if n > 1 else float("nan")
    half = float(stats.t.ppf(0.975, n - 1) * sd / np.sqrt(n)) if n > 1 else float("nan")
    return {"mean": float(v.mean()), "ci95": half, "spread": sd, "n": n}


def paired(first, other) -> dict:
    """other - first, draw by draw: the mean with its t-interval, the paired t-test's two-sided
    p-value, and the sign test (draws where `first` is lower, ties dropped, exact binomial p)."""
    diff = np.asarray(other, dtype=np.float64) - np.asarray(first, dtype=np.float64)
    t = t_interval(diff)
    wins, losses = int((diff > 0).sum()), int((diff < 0).sum())
    degenerate = len(diff) < 2 or not np.any(diff != diff[0])
    p_t = float("nan") if degenerate else float(stats.ttest_rel(other, first).pvalue)
    p_sign = float(stats.binomtest(wins, wins + losses).pvalue) if wins + losses else 1.0
    return {"mean": t["mean"], "ci95": t["ci95"], "p_value": p_t, "first_better": wins,
            "first_worse": losses, "ties": len(diff) - wins - losses, "sign_p_value": p_sign,
            "draws": len(diff), "confidence": 0.95}


def _tmv(m: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """m^T r for a tall m and a few columns r, as (r^T m)^T: the same product, but the CPU BLAS
    reads m row by row instead of column by column (about 10x faster on 54,000 x 28,672 features,
    benchmarks/probe_speed.py)."""
    return (r.T @ m).T


class _Rows:
    """The rows [(x - mean) / scale, 1] of a float32 feature matrix as a linear operator: products
    with weights fold the standardisation in, so the (possibly huge) features are never copied."""

    def __init__(self, x: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor):
        self.x, self.mean, self.scale = x, mean, scale
        self.width = x.shape[1] + 1

    def mv(self, w: torch.Tensor) -> torch.Tensor:  # (d + 1, K) -> (n, K)
        v = w[:-1] / self.scale[:, None]
        return self.x @ v + (w[-1] - self.mean @ v)

    def rmv(self, r: torch.Tensor) -> torch.Tensor:  # (n, K) -> (d + 1, K)
        total = r.sum(0)
        top = (_tmv(self.x, r) - self.mean[:, None] * total) / self.scale[:, None]
        return torch.cat([top, total[None]])


class _Matrix:
    """A small explicit design matrix (the row-span coordinates) as the same operator."""

    def __init__(self, m: torch.Tensor):
        self.m, self.width = m, m.shape[1]

    def mv(self, w: torch.Tensor) -> torch.Tensor:
        return self.m @ w

    def rmv(self, r: torch.Tensor) -> torch.Tensor:
        return _tmv(self.m, r)


def _column_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """StandardScaler's mean and scale (population sd, 1 where a feature is constant), accumulated
    in float64 over row chunks of about a million values: two passes, no full-size temporary."""
    chunk = max(1, 2**20 // max(1, x.shape[1]))
    mean = sum(part.double().sum(0) for part in x.split(chunk)) / len(x)
    var = sum(((part.double() - mean) ** 2).sum(0) for part in x.split(chunk)) / len(x)
    scale = var.sqrt()
    scale[scale < 10 * np.finfo(np.float64).eps] = 1.0
    return mean.float(), scale.float()


class _Deflation:
    """A preconditioner for the Newton systems (I + 2C A^T D_k A) d_k = -g_k of one SVM. The features
    of a deep network are strongly correlated, so A^T A has a few huge eigenvalues and conjugate
    gradients crawl at large C. On the span of A's top right singular vectors V the system is small
    (r x r per class) and is solved outright; on the rest the preconditioner is the Hessian's mean
    eigenvalue there, from the active rows' squared norms (what is left of the trace):

    M_k^-1 = V (I + 2C U^T D_k U)^-1 V^T + (I - V V^T) / (1 + 2C t_k),
    t_k = (sum_i D_ik |row_i|^2 - trace(U^T D_k U)) / (width - r), with U = A V kept from the sketch."""

    def __init__(self, op: _Rows, rank: int, seed: int = 0):
        # a randomized range finder with one power iteration (Halko, Martinsson & Tropp 2011): four
        # products of the features with rank + 10 columns, and one pass for the rows' norms
        gen = torch.Generator(device="cpu").manual_seed(seed)
        probe = torch.randn(op.width, rank + 10, generator=gen).to(op.mean.device)
        q = torch.linalg.qr(op.mv(probe))[0]
        q = torch.linalg.qr(op.mv(op.rmv(q)))[0]
        left, sv, vt = torch.linalg.svd(op.rmv(q).T, full_matrices=False)  # A ~ Q (A^T Q)^T
        self.v = vt[:rank].T.contiguous()  # (width, r)
        self.u = (q @ left[:, :rank]) * sv[:rank]  # A V, (n, r)
        chunk = max(1, 2**20 // max(1, op.x.shape[1]))
        self.norms = torch.cat([((part - op.mean) / op.scale).square().sum(1) + 1
                                for part in op.x.split(chunk)])  # |row_i|^2, the bias's 1 included

    def prepare(self, active: torch.Tensor, c: float) -> None:
        """The small systems and the rest's scale for this Newton step's active sets (a column per class)."""
        rank = self.v.shape[1]
        grams = torch.stack([(self.u * a[:, None]).T @ self.u for a in active.T])  # (K, r, r)
        eye = torch.eye(rank, dtype=self.u.dtype, device=self.u.device)
        self.small = torch.linalg.inv(eye + 2 * c * grams)
        rest = (self.norms @ active - grams.diagonal(dim1=1, dim2=2).sum(1)).clamp_min(0)
        self.rest = 1 / (1 + 2 * c * rest / (len(self.v) - rank))  # (K,)

    def __call__(self, r: torch.Tensor) -> torch.Tensor:  # (width, K) -> (width, K)
        coords = self.v.T @ r  # (r, K)
        return (r - self.v @ coords) * self.rest + self.v @ torch.einsum("krs,sk->rk", self.small, coords)


def _newton(op, y: torch.Tensor, c: float, tol: float = 1e-5, max_iter: int = 100,
            start: torch.Tensor | None = None, precondition: _Deflation | None = None) -> torch.Tensor:
    """Minimise sum_k 0.5 |w_k|^2 + C sum_i max(0, 1 - y_ik <w_k, row_i>)^2 (one-vs-rest L2-SVM, all
    classes at once: the problem is separable in k) by Newton-CG with the generalised Hessian
    I + 2C A^T D A and an Armijo line search, as liblinear's primal solver does. Stops when the
    gradient norm falls below tol times its value at w = 0 (1e-5: above the noise of float32
    products, whose floor is near 1e-6), or when no step lowers the objective (summed in float64).
    `start`: the solution of a nearby problem (the previous C of a search), a warm start.
    `precondition`: a _Deflation for the conjugate gradients."""
    w = torch.zeros(op.width, y.shape[1], dtype=y.dtype, device=y.device) if start is None else start.clone()
    z = torch.zeros_like(y) if start is None else op.mv(w)

    def objective(w, z):
        slack = (1 - y * z).clamp_min(0)  # summed in float64: the line search compares these sums
        return 0.5 * w.double().square().sum() + c * slack.double().square().sum(), slack

    f, slack = objective(w, z)
    g = w - 2 * c * op.rmv(y * slack)
    g0 = float(g.norm()) if start is None else float((2 * c * op.rmv(y)).norm())  # the gradient at w = 0
    for _ in range(max_iter):
        if float(g.norm()) <= tol * g0:
            break
        active = (slack > 0).to(y.dtype)
        # (preconditioned) conjugate gradients on H d = -g, to a relative residual of 0.1 (a
        # truncated Newton step); any symmetric positive definite preconditioner keeps d a descent
        # direction and leaves the optimum as it is
        if precondition is not None:
            precondition.prepare(active, c)
        apply = precondition or (lambda v: v)
        d, r = torch.zeros_like(g), -g
        pr = apply(r)
        p, rz = pr.clone(), float((r * pr).sum())
        for _ in range(250):
            hp = p + 2 * c * op.rmv(active * op.mv(p))
            alpha = rz / float((p * hp).sum())
            d, r = d + alpha * p, r - alpha * hp
            if float((r * r).sum()) <= 0.01 * float((g * g).sum()):
                break
            pr = apply(r)
            rz_new = float((r * pr).sum())
            p, rz = pr + (rz_new / rz) * p, rz_new
        ad, slope, step = op.mv(d), float((g * d).sum()), 1.0
        while step > 1e-8:  # the objective along d is a cheap function of z + step * ad
            f_new, slack_new = objective(w + step * d, z + step * ad)
            # Armijo, and a decrease the objective's precision can show: at float32's floor a zero
            # change passes Armijo's test, and the search would step in place until max_iter
            if float(f_new) <= float(f) + 0.01 * step * slope and float(f_new) < float(f):
                break
            step /= 2
        else:
            break  # no decrease left at this precision: converged
        w, z, f, slack = w + step * d, z + step * ad, f_new, slack_new
        g = w - 2 * c * op.rmv(y * slack)
    return w


class LinearSVM:
    """One-vs-rest linear L2-SVM on standardised features: squared hinge, L2 penalty on the weights
    and the intercept, i.e. the problem scikit-learn's LinearSVC hands liblinear (same weights to
    solver tolerance, tested), solved by a primal Newton-CG method in PyTorch on any device.

    Memory: features stay float32 and are never copied. Standardisation is folded into the weights
    (((x - mean) / scale) . w = x . (w / scale) - mean . (w / scale)), so the solver touches the
    caller's array only through matrix products; beside it live O((n + d) x classes) values. With
    fewer rows than features (the few-label protocol) the problem is solved in the span of the
    standardised, bias-augmented training rows: by the representer theorem the L2 solution lies
    there, so it is the same problem in n instead of d unknowns per class.
    """

    def __init__(self, c: float | None, device: str | torch.device = "cpu", rank: int = RANK):
        self.c, self.device, self.rank = c, torch.device(device), rank

    def _features(self, x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(x, dtype=torch.float32).to(self.device)  # no copy for float32 on the CPU

    def _rows(self, x: np.ndarray) -> _Rows:
        return _Rows(self._features(x), self.mean, self.scale)

    def prepare(self, x: np.ndarray) -> LinearSVM:
        """The standardisation and, with fewer rows than features, the row-span basis: they depend on
        the training rows only, so every C of a search shares them."""
        feats = self._features(x)
        self.mean, self.scale = _column_stats(feats)
        self.basis = self.span = None
        if feats.shape[0] < feats.shape[1] + 1:  # small: the standardised rows can be materialised
            rows = torch.cat([(feats.double() - self.mean.double()) / self.scale.double(),
                              torch.ones(len(feats), 1, dtype=torch.float64, device=self.device)], 1)
            self.basis, upper = torch.linalg.qr(rows.T)  # rows^T = Q R: the rows are R^T in basis Q
            self.span = _Matrix(upper.T)
        self.deflation = None
        rank = min(self.rank, feats.shape[1] // 32)  # its memory: a few n x rank, small beside x
        if self.span is None and rank >= 8:
            self.deflation = _Deflation(self._rows(x), rank)
        return self

    def fit_rows(self, rows: _Rows, y: np.ndarray, start: LinearSVM | None = None) -> LinearSVM:
        """Fit on the training rows of this (prepared) SVM; `start`: a nearby SVM (another C, or the same
        C on other rows of the same features) whose solution starts the solver (a warm start: same
        optimum, fewer steps)."""
        self.classes = np.unique(y)
        signs = torch.as_tensor(np.where(y[:, None] == self.classes[None], 1.0, -1.0), device=self.device)
        if start is None or not np.array_equal(start.classes, self.classes):
            warm = None  # (a class missing from the start's rows: no start for its weights)
        elif self.span is None:  # the weights on standardised features are the primal unknowns
            warm = start.w
        elif start.basis is self.basis:  # another C on the same rows: the same row-span coordinates
            warm = start.solution
        else:  # other rows: the start's weights projected on this row span, where the optimum lies
            warm = self.basis.T @ start.w.double()
        if self.span is not None:
            self.solution = _newton(self.span, signs, self.c, start=warm)
            self.w = (self.basis @ self.solution).float()
        else:
            self.solution = _newton(rows, signs.float(), self.c, start=warm, precondition=self.deflation)
            self.w = self.solution
        return self

    def fit(self, x: np.ndarray, y: np.ndarray, start: LinearSVM | None = None) -> LinearSVM:
        return self.prepare(x).fit_rows(self._rows(x), y, start)

    @property
    def coef_(self) -> np.ndarray:
        """Weights on the standardised features, the intercept last: (classes, d + 1)."""
        return self.w.T.cpu().numpy()

    def decision(self, rows: _Rows) -> torch.Tensor:
        return rows.mv(self.w)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.classes[self.decision(self._rows(x)).argmax(1).cpu().numpy()]

    def score(self, x: np.ndarray, y: np.ndarray) -> float:
        return float((self.predict(x) == y).mean())


def select_c(x, y, val_x, val_y, cs=CS, device="cpu", patience: int | None = None
             ) -> tuple[float, float, LinearSVM, int]:
    """The C with the best validation accuracy (ties: the smaller C), its accuracy, its SVM and how
    many C were fitted. `patience`: stop the search, in increasing C, once that many successive C
    score no better than the best (the larger C cost the most passes over the features)."""
    prepared = LinearSVM(None, device).prepare(x)
    rows, val_rows = prepared._rows(x), prepared._rows(val_x)
    best = model = None
    worse = tried = 0
    for c in sorted(cs):
        previous, model = model, copy.copy(prepared)
        model.c = c
        model.fit_rows(rows, y, start=previous)  # each C starts from the last one's solution
        tried += 1
        acc = float((model.classes[model.decision(val_rows).argmax(1).cpu().numpy()] == val_y).mean())
        if best is None or acc > best[1]:
            best, worse = (c, acc, model), 0
        else:
            worse += 1
            if patience is not None and worse >= patience:
                break
    return (*best, tried)


def at_edge(c: float, cs=CS) -> bool:
    return c in (min(cs), max(cs))


def full_protocol(train_x, train_y, test_x, test_y, val_fraction: float = 0.1, cs=CS, seed: int = 0,
                  device="cpu") -> dict:
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(train_x))
    n_val = max(1, int(len(order) * val_fraction))
    val, fit = order[:n_val], order[n_val:]
    c, val_acc, chosen, tried = select_c(train_x[fit], train_y[fit], train_x[val], train_y[val], cs, device,
                                         patience=PATIENCE)
    model = LinearSVM(c, device).fit(train_x, train_y, start=chosen)  # all rows, from the 90%'s fit
    wrong = model.predict(test_x) != test_y
    return {"protocol": "full", "accuracy": float(1 - wrong.mean()), "C": c,
            "C_grid": list(cs), "C_tried": tried, "C_at_edge": int(at_edge(c, cs)),
            "validation_accuracy": val_acc, "validation": n_val, "train": len(train_x), "test": len(test_x),
            "test_errors": wrong.astype(int).tolist()}


def balanced_draw(labels: np.ndarray, per_class: int, pool: np.ndarray, rng) -> np.ndarray:
    """per_class indices of every class, from `pool`."""
    picks = []
    for k in np.unique(labels[pool]):
        members = pool[labels[pool] == k]
        if len(members) < per_class:
            raise DCGANError(f"class {k} has {len(members)} training images, fewer than {per_class} "
                             "per class: lower --per-class")
        picks.append(rng.choice(members, per_class, replace=False))
    return np.concatenate(picks)


def few_protocol(pool_x, pool_y, val_x, val_y, test_x, test_y, per_class: int = 100, draws: int = 10,
                 cs=CS, seed: int = 0, device="cpu") -> dict:
    """R class-balanced draws of per_class labels from the pool; per draw, C chosen on (val_x, val_y)
    and the test error of that C's SVM. The draws depend on (pool_y, per_class, draws, seed) only, so
    every method given the same pool labels sees the same draws."""
    rng = np.random.default_rng(seed)
    pool = np.arange(len(pool_x))
    errors, val_errors, chosen = [], [], []
    for _ in range(draws):
        idx = balanced_draw(pool_y, per_class, pool, rng)
        c, val_acc, model, _ = select_c(pool_x[idx], pool_y[idx], val_x, val_y, cs, device)
        errors.append(1 - model.score(test_x, test_y))
        val_errors.append(1 - val_acc)
        chosen.append(c)
    t = t_interval(errors)
    return {"protocol": "few", "error": t["mean"], "ci95": t["ci95"], "confidence": 0.95,
            "spread": t["spread"],
            "errors": [float(e) for e in errors], "validation_error": float(np.mean(val_errors)),
            "validation_errors": val_errors, "C": chosen, "C_grid": list(cs),
            "C_at_edge": sum(at_edge(c, cs) for c in chosen),
            "labels": per_class * len(np.unique(pool_y)), "validation": len(val_x), "test": len(test_x)}


def mean_of_inits(results: list[dict]) -> dict:
    """One row from the same protocol run on N independently initialised networks: per draw, the
    mean error over the inits (the paired comparison uses it), and the init-to-init spread (the
    sample sd of the N per-init mean errors)."""
    first = results[0]
    if first["protocol"] == "full":
        acc = t_interval([r["accuracy"] for r in results])
        return {**first, "accuracy": acc["mean"], "ci95": acc["ci95"], "init_spread": acc["spread"],
                "accuracies": [r["accuracy"] for r in results], "C": [r["C"] for r in results],
                "test_errors": np.mean([r["test_errors"] for r in results], axis=0).tolist(),
                "validation_accuracy": float(np.mean([r["validation_accuracy"] for r in results])),
                "C_tried": [r["C_tried"] for r in results],
                "C_at_edge": sum(r["C_at_edge"] for r in results), "inits": len(results)}
    errors = np.mean([r["errors"] for r in results], axis=0)
    t = t_interval(errors)
    per_init = [r["error"] for r in results]
    return {**first, "error": t["mean"], "ci95": t["ci95"], "spread": t["spread"],
            "errors": errors.tolist(),
            "validation_error": float(np.mean([r["validation_error"] for r in results])),
            "validation_errors": np.mean([r["validation_errors"] for r in results], axis=0).tolist(),
            "C": [c for r in results for c in r["C"]], "C_at_edge": sum(r["C_at_edge"] for r in results),
            "inits": len(results), "init_errors": per_init,
            "init_spread": float(np.std(per_init, ddof=1)) if len(results) > 1 else None}


def probe(source: str | Path, *, data: str | None = None, protocol: str = "few",
          baselines: tuple[str, ...] = (), data_dir: str | None = None, per_class: int = 100, draws: int = 10,
          kmeans_k: int = 400,
          max_train: int | None = None, max_test: int | None = None, seed: int = 0,
          out: str | Path | None = None, grid: int = 4, random_inits: int = 3,
          val_size: int = VAL_SIZE, device: str | torch.device = "auto",
          features: str | Path | None = None) -> list[dict]:
    """DCGAN features of a trained D, and any baselines (pixels, random, kmeans), through one
    protocol on the same splits; a table in the shape of the paper's Tables 1-2. The random
    baseline is `random_inits` independently initialised copies of D's architecture, averaged.
    D's features are computed on `device`, or read memory-mapped from `features`, a folder written
    by `dcgan features RUN --out FOLDER` for this D, data, grid and seed."""
    if protocol not in ("full", "few"):
        raise DCGANError(f"protocol must be full or few, got {protocol!r}")
    check_seed(seed, "seed", MAX_SEED)
    check_count(per_class, "per_class", 100_000)
    check_count(draws, "draws", 1000)
    check_count(kmeans_k, "kmeans_k", 10_000)
    for name, value in (("max_train", max_train), ("max_test", max_test)):
        if value is not None:
            check_count(value, name, 10**8)
    unknown = set(baselines) - {"pixels", "random", "kmeans"}
    if unknown:
        raise DCGANError(f"unknown baseline(s) {', '.join(sorted(unknown))}: use pixels, random, kmeans")
    if "random" in baselines and random_inits < 1:
        raise DCGANError(f"--random-inits must be at least 1, got {random_inits}")
    device = pick_device(device)
    data, data_dir, _ = run_data(source, data, data_dir)
    if out is not None:
        check_out_dir(out, inputs=[source, data, data_dir])
    d = load_discriminator(source, device)
    feats.check_grid(grid, d)
    c = d.config
    train, test = labelled_splits(data, c.image_size, c.channels, data_dir)
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(train.images), generator=gen)
    te = torch.randperm(len(test.images), generator=gen)[:max_test or len(test.images)]
    # few: a validation split of val_size training images (half the split if it is smaller),
    # then the label pool; full: the protocol carves its own validation part from the pool
    n_val = min(val_size, len(order) // 2) if protocol == "few" else 0
    va, tr = order[:n_val], order[n_val:][:max_train or len(order)]
    if protocol == "full":  # the set of training rows matters, not their order: stored features are
        tr = tr.sort().values  # then read in file order (all of them: the file itself, no copy)
    images = {"train": train.images[tr], "val": train.images[va], "test": test.images[te]}
    ys = {"train": train.labels[tr].numpy(), "val": train.labels[va].numpy(), "test": test.labels[te].numpy()}

    def on_images(extract):  # every feature set is a function of the split's name
        return lambda split: extract(images[split])

    if features is not None:
        stored = feats.read_feature_folder(features, d, data, data_dir, grid, seed,
                                           {"train": train.labels, "test": test.labels})
        rows_of = {"train": ("train", tr), "val": ("train", va), "test": ("test", te)}
        extractors = {"DCGAN discriminator": [lambda split: _stored_rows(stored, *rows_of[split])]}
    else:
        trained = feats.bn_averaged(d, train.images, seed=seed)  # once per D, for every split
        extractors = {"DCGAN discriminator": [on_images(lambda x: feats.pooled_features(trained, x,
                                                                                       grid=grid))]}
    if "random" in baselines:
        inits = []
        for i in range(random_inits):
            with torch.random.fork_rng(devices=[]):  # seeded inits, the caller's RNG untouched
                torch.manual_seed(seed + i)
                net = Discriminator(c)  # same architecture, its own initialisation
            inits.append(feats.bn_averaged(net.to(device), train.images, seed=seed))
        name = "same D, random init" + (f" (mean of {random_inits})" if random_inits > 1 else "")
        extractors[name] = [on_images(lambda x, net=net: feats.pooled_features(net, x, grid=grid))
                            for net in inits]
    if "pixels" in baselines:
        extractors["raw pixels"] = [on_images(feats.pixel_features)]
    if "kmeans" in baselines:
        km = feats.KMeansFeatures(k=kmeans_k, seed=seed).fit(images["train"])
        extractors[f"K-means, K={kmeans_k} (Coates & Ng)"] = [on_images(km)]
    rows = []
    jobs = sum(len(extracts) for extracts in extractors.values())  # features, then the SVMs, of each
    with Progress(jobs, f"probe ({protocol}) on {data}", "feature sets") as bar:
        for method, extracts in extractors.items():
            results = []
            for extract in extracts:
                x = {split: extract(split) if len(imgs) else None for split, imgs in images.items()}
                if protocol == "full":
                    results.append(full_protocol(x["train"], ys["train"], x["test"], ys["test"], seed=seed,
                                                 device=device))
                else:
                    results.append(few_protocol(x["train"], ys["train"], x["val"], ys["val"], x["test"],
                                                ys["test"], per_class, draws, seed=seed, device=device))
                dim = int(x["train"].shape[1])
                bar.update()
            result = results[0] if len(results) == 1 else mean_of_inits(results)
            rows.append({"method": method, "dim": dim, **result})
    add_paired(rows)
    if out is not None:
        write_table(rows, Path(out), data)
    return rows


def _stored_rows(stored: dict[str, np.ndarray], split: str, rows: torch.Tensor) -> np.ndarray:
    """Rows of a memory-mapped feature file: the file itself when all of them are wanted in order,
    otherwise a copy of the chosen rows."""
    x = stored[split]
    if len(rows) == len(x) and bool((rows == torch.arange(len(x))).all()):
        return x
    return x[rows.numpy()]


def add_paired(rows: list[dict]) -> None:
    """Every method saw the same label draws and the same test images, so each baseline is compared
    with the first row (the DCGAN features) draw by draw (few) or test image by test image (full,
    where the sign test over images is McNemar's exact test): much tighter than comparing the two
    intervals."""
    key, unit = ("errors", "draws") if rows[0]["protocol"] == "few" else ("test_errors", "test images")
    for r in rows[1:]:
        r["paired_vs_first"] = {**paired(rows[0][key], r[key]), "unit": unit}


def describe_probe(r: dict) -> str:
    """One row's numbers in words: mean error, its t-interval and spread (few), or accuracy (full);
    the random-init spread; how often C sat at an edge of its grid."""
    n_c = len(r["C"]) if isinstance(r["C"], list) else 1
    if r["protocol"] == "few":
        text = (f"error {r['error']:.2%} ± {r['ci95']:.2%} (t 95%, {len(r['errors'])} draws; "
                f"spread {r['spread']:.2%})")
    else:
        text = f"accuracy {r['accuracy']:.2%}"
        text += f" ± {r['ci95']:.2%} (t 95% over inits)" if r.get("inits", 1) > 1 else ""
        if "C_tried" in r:  # results from before the C search recorded it have neither
            inits = isinstance(r["C"], list)
            cs, tried = (r["C"], r["C_tried"]) if inits else ([r["C"]], [r["C_tried"]])
            text += (f" (C {', '.join(f'{c:g}' for c in cs)} chosen on {'mean ' if inits else ''}"
                     f"validation accuracy {r['validation_accuracy']:.2%}; "
                     f"{', '.join(map(str, tried))} of {len(r['C_grid'])} C fitted)")
    if r.get("inits", 1) > 1:
        text += f"; init-to-init spread {r['init_spread']:.2%} over {r['inits']} inits"
    return text + f"; C at a grid edge {r['C_at_edge']}/{n_c}"


def describe_paired(p: dict, first: str) -> str:
    """A paired comparison in words: the error difference (this row's minus the first's) over the
    label draws (few) or over the test images (full: the sign test there is McNemar's)."""
    unit = p.get("unit", "draws")
    return (f"error minus {first}'s, paired over {p['draws']:,} {unit}: {p['mean']:+.2%} ± {p['ci95']:.2%} "
            f"(t 95%), p = {p['p_value']:.2g}; {first} lower on {p['first_better']:,}, higher on "
            f"{p['first_worse']:,} ({p['ties']:,} ties), sign test p = {p['sign_p_value']:.2g}"
            + (" (McNemar)" if unit == "test images" else ""))


def write_table(rows: list[dict], out: Path, data: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "probe.json", rows)
    few = rows[0]["protocol"] == "few"
    head = (f"| method | feature dim | test error ({rows[0]['labels']} labels, "
            f"{len(rows[0]['errors'])} draws: mean ± Student-t 95%; spread = sd of a draw) | "
            f"error − {rows[0]['method']}'s, paired: mean ± t 95%, p (paired t) | "
            "draws it wins, sign-test p | C at grid edge |"
            if few else f"| method | feature dim | test accuracy ({rows[0]['test']:,} images) | "
            f"error − {rows[0]['method']}'s, paired over the test images: mean ± t 95%, McNemar p | "
            "C at grid edge |")
    lines = [f"{data}, {'few-label' if few else 'full-label'} protocol; C grid "
             f"{', '.join(f'{c:g}' for c in rows[0]['C_grid'])}, chosen on {rows[0]['validation']:,} "
             "validation images", "", head, "|---|---|---|---|---|---|" if few else "|---|---|---|---|---|"]
    for r in rows:
        n_c = len(r["C"]) if isinstance(r["C"], list) else 1
        inits = (f"; {r['inits']} inits, init-to-init spread {r['init_spread']:.2%}"
                 if r.get("inits", 1) > 1 else "")
        p = r.get("paired_vs_first")
        if not few:
            vs = f"{p['mean']:+.2%} ± {p['ci95']:.2%}, p = {p['sign_p_value']:.2g}" if p else ""
            lines.append(f"| {r['method']} | {r['dim']:,} | {r['accuracy']:.2%}{inits} | {vs} | "
                         f"{r['C_at_edge']}/{n_c} |")
            continue
        vs = (f"{p['mean']:+.2%} ± {p['ci95']:.2%}, p = {p['p_value']:.2g} | "
              f"{p['first_better']}/{p['draws']} ({p['ties']} ties), p = {p['sign_p_value']:.2g}"
              if p else " | ")
        lines.append(f"| {r['method']} | {r['dim']:,} | {r['error']:.2%} ± {r['ci95']:.2%} "
                     f"(spread {r['spread']:.2%}{inits}) | {vs} | {r['C_at_edge']}/{n_c} |")
    write_text(out / "probe.md", "\n".join(lines) + "\n")
