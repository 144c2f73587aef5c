"""The paper's representation-learning claim (§5) on Fashion-MNIST, within a 2-core CPU's budget.

Trains a DCGAN without labels on Fashion-MNIST at 32x32 (or takes --run), then runs `dcgan probe`:
the few-label protocol (100 labels per class, 10 draws, C chosen on a labelled validation split of
10,000 training images) and the full-label protocol, each against raw pixels, the same D untrained
(3 independent initialisations, averaged), and K-means features. The claim to check: DCGAN
features beat the untrained D and raw pixels with few labels (paired over the same label draws).

    python benchmarks/representation.py                     # trains 3,000 steps (about 15 min)
    python benchmarks/representation.py --run runs/fmnist   # probes an existing run (or a checkpoint)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import record
from record import dcgan

from dcgan import checkpoint
from dcgan.probe import describe_paired, describe_probe


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", help="an existing Fashion-MNIST run to probe instead of training one")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--max-train", type=int, default=10000, help="training images featurized (few)")
    p.add_argument("--full-max-train", type=int, default=5000, help="training images of the full protocol")
    p.add_argument("--max-test", type=int, default=5000)
    p.add_argument("--kmeans-k", type=int, default=400)
    p.add_argument("--draws", type=int, default=10, help="label draws of the few-label protocol")
    p.add_argument("--protocols", default="few,full", help="comma list of few, full")
    p.add_argument("--random-inits", type=int, default=3, help="initialisations of the random-D baseline")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run, train_s = a.run, 0.0
        if run is None:
            run = Path(tmp) / "run"
            t = time.perf_counter()
            dcgan("train", "--data", "fashion-mnist", "--steps", a.steps, "--tensorboard", "false",
                  "--out", run)
            train_s = time.perf_counter() - t
        tables = {}
        for protocol in a.protocols.split(","):
            t = time.perf_counter()
            n_train = a.max_train if protocol == "few" else a.full_max_train
            dcgan("probe", run, "--data", "fashion-mnist", "--protocol", protocol, "--max-train", n_train,
                  "--max-test", a.max_test, "--kmeans-k", a.kmeans_k, "--draws", a.draws,
                  "--random-inits", a.random_inits,
                  "--out", Path(tmp) / protocol)
            tables[protocol] = {"rows": json.loads((Path(tmp) / protocol / "probe.json").read_text()),
                                "markdown": (Path(tmp) / protocol / "probe.md").read_text(),
                                "seconds": time.perf_counter() - t}
    out = {**record.header(), "config": {**vars(a), "image_size": 32}, "train_seconds": train_s, **tables}
    step = checkpoint.load(a.run)["step"] if a.run else a.steps
    out["probed_step"] = step
    trained = f"{step} steps ({train_s / 60:.0f} min)" if a.run is None else f"{step} steps ({a.run})"
    lines = [f"  Fashion-MNIST 32x32, pytorch preset, D after {trained}; {a.max_train} (few) or "
             f"{a.full_max_train} (full) train images, {a.max_test} test images:"]
    for protocol, table in tables.items():
        first = table["rows"][0]["method"]
        for r in table["rows"]:
            lines.append(f"  {protocol}: {r['method']} ({r['dim']:,} dims): {describe_probe(r)}")
            if "paired_vs_first" in r:
                lines.append(f"    {describe_paired(r['paired_vs_first'], first)}")
    record.save("representation", out, lines)


if __name__ == "__main__":
    main()
