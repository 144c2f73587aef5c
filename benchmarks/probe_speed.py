"""Speed of the products the linear probe's solver is made of, on N x D float32 features.

Each Newton-CG step of `dcgan probe`'s SVM multiplies the features by a few columns (x @ v, one per
class) and their transpose by a few columns (x^T r). On the full-label protocol's 54,000 x 28,672
features these products are the whole cost. `x^T r` written as `x.T @ r` makes the CPU BLAS walk
x column by column; the solver computes it as `(r^T x)^T` (`probe._tmv`), the same numbers in a
row-by-row walk. This script times both forms side by side, alternating, on the same
standard-normal features (time depends on the shape, not the values), and `x @ v` for scale.

With --features, it also fits the SVM on the first N rows of features written by `dcgan
features` at each C, at each rank of the solver's preconditioner (probe._Deflation; 0: none),
and reports the passes over the features, the time and the largest weight difference from the
first rank's (the same optimum). Deep features are strongly correlated, which is what the
preconditioner is for. N must exceed the feature dimension (the full protocol's path).

    python benchmarks/probe_speed.py --n 54000 --dim 7168
    python benchmarks/probe_speed.py --n 30000 --features FEATURES --cs 1e-4 --ranks 0,128
"""

from __future__ import annotations

import argparse
import importlib
import time

import numpy as np
import record
import torch

from dcgan.probe import _tmv, t_interval

probe = importlib.import_module("dcgan.probe")  # the module (dcgan.probe is also the function)


def seconds(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=20000, help="feature vectors (rows)")
    p.add_argument("--dim", type=int, default=7168)
    p.add_argument("--classes", type=int, default=10, help="columns of v and r")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--features", help="a folder written by `dcgan features`: also time SVM fits on it")
    p.add_argument("--cs", default="1e-4,1e-3", help="comma list of C for --features")
    p.add_argument("--ranks", default=f"0,{probe.RANK}", help="preconditioner ranks for --features (0: none)")
    a = p.parse_args()
    if a.features:
        return fits(a)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(a.n, a.dim, generator=gen)
    r = torch.randn(a.n, a.classes, generator=gen)
    v = torch.randn(a.dim, a.classes, generator=gen)
    plain, rows, forward = [], [], []
    _tmv(x, r), x.T @ r  # warm-up: BLAS threads and buffers
    for _ in range(a.repeats):
        plain.append(seconds(lambda: x.T @ r))
        rows.append(seconds(lambda: _tmv(x, r)))
        forward.append(seconds(lambda: x @ v))
    reference = (x.double().T @ r.double()).float()
    error = {name: float((out - reference).norm() / reference.norm())
             for name, out in (("x.T @ r", x.T @ r), ("(r.T @ x).T", _tmv(x, r)))}
    speedup = t_interval(np.asarray(plain) / np.asarray(rows))
    result = {**record.header(), "config": vars(a), "seconds_xT_r": plain, "seconds_rT_x_T": rows,
              "seconds_x_v": forward, "speedup": speedup,
              "interval": "Student-t 95% over the paired repeats", "relative_error_vs_float64": error}
    record.save("probe_speed", result, title="Speed of the probe's solver", lines=[
        f"  x^T r on {a.n:,} x {a.dim:,} float32 features and {a.classes} columns, {a.repeats} paired "
        f"repeats: `x.T @ r` {np.median(plain):.3f} s, `(r.T @ x).T` {np.median(rows):.3f} s (medians), "
        f"{speedup['mean']:.1f}x ± {speedup['ci95']:.1f} faster (per-repeat ratio, t 95%); "
        f"`x @ v` {np.median(forward):.3f} s. Relative error against float64: "
        f"{error['x.T @ r']:.1e} and {error['(r.T @ x).T']:.1e}."])


def fits(a) -> None:
    """The SVM at each C on the first a.n stored training rows, at each preconditioner rank."""
    x = np.ascontiguousarray(np.load(f"{a.features}/train.npy", mmap_mode="r")[: a.n])
    y = np.load(f"{a.features}/train_labels.npy")[: a.n]
    passes = []
    mv = probe._Rows.mv
    probe._Rows.mv = lambda self, w: passes.append(1) or mv(self, w)
    rows = []
    for c in [float(v) for v in a.cs.split(",")]:
        row, first = {"C": c, "fits": []}, None
        for rank in [int(v) for v in a.ranks.split(",")]:
            passes.clear()
            svm = probe.LinearSVM(c, rank=rank)
            t = time.perf_counter()
            svm.fit(x, y)
            fit = {"rank": rank, "passes": len(passes), "seconds": time.perf_counter() - t,
                   "train_accuracy": svm.score(x, y), "max_weight": float(np.abs(svm.coef_).max())}
            first = svm.coef_ if first is None else first
            fit["max_weight_difference_vs_first"] = float(np.abs(svm.coef_ - first).max())
            row["fits"].append(fit)
            print(c, fit, flush=True)
        rows.append(row)
    result = {**record.header(), "config": vars(a), "shape": list(x.shape), "fits": rows}
    record.save("probe_speed", result, title="Speed of the probe's solver", lines=[
        f"  SVM fits on {x.shape[0]:,} x {x.shape[1]:,} stored D features ({a.features}) by "
        "preconditioner rank (0: none): " + "; ".join(map(describe, rows)) + "."])


def describe(row: dict) -> str:
    fits, first = row["fits"], row["fits"][0]
    worst = max(f["max_weight_difference_vs_first"] for f in fits)
    return (f"C = {row['C']:g}: " + ", ".join(f"rank {f['rank']} {f['passes']} passes in {f['seconds']:.0f} s"
                                              for f in fits)
            + f" (largest weight {first['max_weight']:.2f}; largest difference from rank {first['rank']}'s "
            f"weights {worst:.1e})")


if __name__ == "__main__":
    main()
