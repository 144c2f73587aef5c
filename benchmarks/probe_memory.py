"""Peak memory of the full-label probe (paper §5.1's CIFAR-10 protocol) at a stated size.

The full protocol fits the L2-SVM on every training feature vector: C chosen on a validation
split, then a refit on all. Features are float32 from extraction to the solver, which multiplies
them in place (standardisation folded into the weights), so what a fit adds is per-class vectors,
column statistics and BLAS buffers. This script runs
`probe.full_protocol` on N x D standard-normal float32 features with 10 classes, each shifting one
feature (memory depends on the shape, not the values; every value is nonzero, as D's max-pooled
features are). With 4/5 N > D the full-protocol path runs (no row-span basis)
in a fresh process and reports its peak resident memory, and that per feature value.

    python benchmarks/probe_memory.py --n 20000 --dim 7168    # Fashion-MNIST's 7,168 dims
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import record

CHILD = """
import json, resource, sys, time
import numpy as np
from dcgan.probe import full_protocol
n, dim = int(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
x = rng.standard_normal((n, dim), dtype=np.float32)
y = rng.integers(0, 10, n)
x[:, :10] += 2 * np.eye(10, dtype=np.float32)[y]  # learnable classes, so the solver converges as on real data
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
t = time.perf_counter()
r = full_protocol(x[: n * 4 // 5], y[: n * 4 // 5], x[n * 4 // 5:], y[n * 4 // 5:])
print(json.dumps({"peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "before_fit_bytes": base, "seconds": time.perf_counter() - t, "accuracy": r["accuracy"]}))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=5000, help="feature vectors (4/5 train, 1/5 test)")
    p.add_argument("--dim", type=int, default=7168)
    a = p.parse_args()
    proc = subprocess.run([sys.executable, "-c", CHILD, str(a.n), str(a.dim)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    m = json.loads(proc.stdout)
    train_values = a.n * 4 // 5 * (a.dim + 1)
    per_value = (m["peak_bytes"] - m["before_fit_bytes"]) / train_values
    cifar = 50000 * 28673 * per_value / 2**30
    above = (m["peak_bytes"] - m["before_fit_bytes"]) / 2**30
    result = {**record.header(), "config": vars(a), **m, "train_values": train_values,
              "train_rows": a.n * 4 // 5, "test_rows": a.n // 5, "peak_gib": m["peak_bytes"] / 2**30,
              "above_features_gib": above, "fit_bytes_per_train_value": per_value,
              "cifar10_shape": [50000, 28673], "cifar10_features_gib": 50000 * 28673 * 4 / 2**30,
              "cifar10_full_estimate_gib": cifar}
    record.save("probe_memory", result, title="Memory of the full-label probe", lines=[
        f"  full protocol on {a.n * 4 // 5:,} x {a.dim:,} float32 training features (+ {a.n // 5:,} test): "
        f"peak {m['peak_bytes'] / 2**30:.2f} GiB, {above:.2f} GiB "
        f"above the features ({per_value:.1f} bytes per training value), {m['seconds']:.0f} s. At that rate "
        f"CIFAR-10's 50,000 x 28,673 needs about {cifar:.0f} GiB on top of its "
        f"{result['cifar10_features_gib']:.1f} GiB of features."])


if __name__ == "__main__":
    main()
