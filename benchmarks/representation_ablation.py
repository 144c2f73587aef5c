"""What makes D's features good or bad on Fashion-MNIST: the few-label probe (100 labels per class,
C chosen on a validation split) over training length, which D layers, pooling, and BN statistics.

Runs on a run directory with snapshots (a `dcgan train` run keeps one every 1,000 steps):

    python benchmarks/representation_ablation.py --run runs/fmnist --draws 3
    python benchmarks/representation_ablation.py --run runs/base --compare runs/smooth runs/dsteps2
        # the final D of runs trained with one setting changed (e.g. `dcgan train --config
        # runs/base/config.json --label-smoothing 0.1 --out runs/smooth`), beside the base run's

Every row uses the same training subset, label draws, validation split and test subset; only the
features change. Any choice among the rows (snapshot, layers, pooling grid) is made on the
validation error (the mean over draws of the chosen C's validation error), never on the test error.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import record
import torch

from dcgan.checkpoint import load_discriminator
from dcgan.data import labelled_splits
from dcgan.models import Discriminator
from dcgan.probe import VAL_SIZE, describe_probe, few_protocol, paired
from dcgan.representation import average_bn_statistics, pooled_features


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="a Fashion-MNIST run directory with snapshots/")
    p.add_argument("--max-train", type=int, default=10000)
    p.add_argument("--max-test", type=int, default=5000)
    p.add_argument("--draws", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--snapshots-only", dest="snapshots_only", action="store_true",
                   help="only the training-length rows (every snapshot and the random D, all layers)")
    p.add_argument("--compare", nargs="+", type=Path, default=[],
                   help="runs of the same data and image size whose final D is probed beside --run's final "
                        "D (training variants); only all-layer rows, paired with --run's")
    p.add_argument("--steps", help="comma list of the snapshot steps to probe (default: every snapshot); "
                   "the layer and pooling rows use the last of them")
    a = p.parse_args()
    run = Path(a.run)
    final = load_discriminator(run)
    c = final.config
    train, test = labelled_splits("fashion-mnist", c.image_size, c.channels)
    gen = torch.Generator().manual_seed(a.seed)
    order = torch.randperm(len(train.images), generator=gen)
    va, tr = order[:VAL_SIZE], order[VAL_SIZE:VAL_SIZE + a.max_train]  # validation, then the label pool
    te = torch.randperm(len(test.images), generator=gen)[:a.max_test]
    bn_images = train.images[torch.randperm(len(train.images), generator=gen)[:10000]]
    train_x_img, train_y = train.images[tr], train.labels[tr].numpy()
    val_x_img, val_y = train.images[va], train.labels[va].numpy()
    test_x_img, test_y = test.images[te], test.labels[te].numpy()
    widths = [16 * b[0].out_channels for b in final.blocks]
    bounds = np.cumsum([0, *widths])

    torch.manual_seed(a.seed)
    untrained = Discriminator(c).eval()  # first: loading snapshots draws initial weights too
    if a.compare:
        networks = {run.name: final}
        for other in a.compare:
            d = load_discriminator(other)
            if (d.config.image_size, d.config.channels) != (c.image_size, c.channels):
                raise SystemExit(f"--compare {other}: {d.config.image_size}x{d.config.image_size}x"
                                 f"{d.config.channels} images, not {run}'s")
            networks[other.name] = d
    else:
        snapshots = sorted((run / "snapshots").glob("step_*.pt"))
        if a.steps:
            wanted = {int(s) for s in a.steps.split(",")}
            snapshots = [s for s in snapshots if int(s.stem.split("_")[1]) in wanted]
            if len(snapshots) != len(wanted):
                raise SystemExit(f"--steps {a.steps}: {run / 'snapshots'} has no snapshot of some of these "
                                 "steps")
        networks = {f"step {int(s.stem.split('_')[1])}": load_discriminator(s) for s in snapshots}
    networks["random init"] = untrained
    last = list(networks)[-2]
    # (row name, network, layers, grid, pool, BN statistics)
    rows = [(f"{name}, all layers", name, None, 4, "max", "averaged") for name in networks]
    if not (a.snapshots_only or a.compare):
        layer_ids = range(len(widths))
        rows += [(f"{last}, layer {i} only", last, [i], 4, "max", "averaged") for i in layer_ids]
        rows += [(f"random init, layer {i} only", "random init", [i], 4, "max", "averaged")
                 for i in layer_ids]
        rows += [(f"{last}, all layers, 1x1 max pooling", last, None, 1, "max", "averaged"),
                 (f"{last}, all layers, 2x2 max pooling", last, None, 2, "max", "averaged"),
                 (f"{last}, all layers, 4x4 average pooling", last, None, 4, "avg", "averaged"),
                 (f"{last}, all layers, running BN statistics from training", last, None, 4, "max",
                  "running")]
    cache, results = {}, []
    last_use = {(name, grid, pool, bn): i for i, (_, name, _, grid, pool, bn) in enumerate(rows)}
    for i, (label, name, layers, grid, pool, bn) in enumerate(rows):
        t = time.perf_counter()
        key = (name, grid, pool, bn)
        if key not in cache:
            d = networks[name]
            d = average_bn_statistics(d, bn_images) if bn == "averaged" else d.eval()
            cache[key] = tuple(pooled_features(d, x, grid=grid, pool=pool)
                               for x in (train_x_img, val_x_img, test_x_img))
        tx, vx, sx = cache[key]
        if layers is not None:  # grid is 4 here: the layer bounds of the default features
            cols = np.concatenate([np.arange(bounds[i], bounds[i + 1]) for i in layers])
            tx, vx, sx = tx[:, cols], vx[:, cols], sx[:, cols]
        if last_use[key] == i:  # 25,000 x 28,672 float32 is 2.9 GiB: hold one network's features at a time
            del cache[key]
        r = few_protocol(tx, train_y, vx, val_y, sx, test_y, per_class=100, draws=a.draws, seed=a.seed)
        results.append({"features": label, "dim": int(tx.shape[1]), **r, "seconds": time.perf_counter() - t})
        print(f"{label:60s} {tx.shape[1]:>6,d}  {describe_probe(r)}", flush=True)
    rand = next(r for r in results if r["features"] == "random init, all layers")["errors"]
    for r in results:  # the same draws for every row: a paired difference with the random D
        r["random_minus_this"] = paired(r["errors"], rand)
        r["first_minus_this"] = paired(r["errors"], results[0]["errors"])
    trained_rows = [r for r in results if not r["features"].startswith("random init")]
    chosen = min(trained_rows, key=lambda r: r["validation_error"])
    config = {**vars(a), "compare": [str(r) for r in a.compare]}
    out = {**record.header(), "config": config, "rows": results, "chosen_on_validation": chosen["features"]}
    lines = [f"  Fashion-MNIST few-label probe (100 labels/class, {a.draws} draws, {a.max_train} train / "
             f"{VAL_SIZE} validation / {a.max_test} test images), D of {run.name}:"]
    for r in results:
        line = (f"  {r['features']} ({r['dim']:,} dims): validation error {r['validation_error']:.2%}; test "
                f"{describe_probe(r)}; random D's all-layer error minus this, paired: "
                f"{r['random_minus_this']['mean']:+.2%} ± {r['random_minus_this']['ci95']:.2%}")
        if a.compare and r is not results[0]:
            line += (f"; error of {results[0]['features']} minus this, paired: "
                     f"{r['first_minus_this']['mean']:+.2%} ± {r['first_minus_this']['ci95']:.2%}")
        lines.append(line)
    lines.append(f"  chosen on validation error among the trained D's rows: {chosen['features']}")
    record.save("representation_ablation", out, lines, title="Representation learning: ablation")


if __name__ == "__main__":
    main()
