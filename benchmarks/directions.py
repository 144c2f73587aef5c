"""Directions and projection, measured on a trained Fashion-MNIST run.

- SeFa: time for the closed-form factorisation (median of 5).
- Meaning: for the top SeFa and PCA directions and for random unit directions, how much moving a
  sample from -1 to +1 sigma changes a fixed domain classifier's prediction (total variation
  between the two class distributions, and the share of samples whose predicted class changes),
  over the same samples. A direction that means something moves the class more than a random one.
- Projection: 100 held-out test images (a seeded draw) projected into z; pixel MSE and distance in
  the classifier's feature space, against two references: the nearest training image in pixel
  space, and G of a random z; time per image.

    python benchmarks/directions.py --run RUN [--classifier clf.safetensors]

Without --classifier, a classifier is trained first (dcgan train-classifier, 2 epochs).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import record
import torch
from scipy import stats

from dcgan.checkpoint import load_discriminator, load_generator
from dcgan.data import labelled_splits, to_float, to_uint8
from dcgan.directions import pca, prior_sigma, sefa
from dcgan.metrics import load_classifier, train_classifier
from dcgan.projection import project

PCA_N = 5000  # sampled z of the PCA method


def t_interval(x) -> tuple[float, float]:
    """Mean and the half-width of its 95% Student-t interval."""
    x = np.asarray(x, dtype=np.float64)
    half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)) if len(x) > 1 else float("nan")
    return float(x.mean()), float(half)


@torch.no_grad()
def class_change(g, clf, u: torch.Tensor, z: torch.Tensor) -> tuple[float, float]:
    """Mean total variation between p(class | G(z - sigma u)) and p(class | G(z + sigma u)), and the
    share of samples whose argmax class differs."""
    sigma = prior_sigma(g, u)
    p = [torch.softmax(clf(to_float(to_uint8(g.generate(z + s * sigma * u)))), 1) for s in (-1.0, 1.0)]
    tv = 0.5 * (p[0] - p[1]).abs().sum(1).mean()
    flipped = (p[0].argmax(1) != p[1].argmax(1)).float().mean()
    return float(tv), float(flipped)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    ap.add_argument("--classifier")
    ap.add_argument("--k", type=int, default=5, help="top SeFa and PCA directions measured")
    ap.add_argument("--random", type=int, default=20, help="random directions")
    ap.add_argument("--samples", type=int, default=500)
    ap.add_argument("--images", type=int, default=100, help="test images projected")
    ap.add_argument("--steps", type=int, default=300)
    args = ap.parse_args()

    g, d = load_generator(args.run), load_discriminator(args.run)
    clf_path, acc = args.classifier, None
    if clf_path is None:
        clf_path = str(Path(tempfile.mkdtemp()) / "clf.safetensors")
        acc = train_classifier("fashion-mnist", out=clf_path, epochs=2)["test_accuracy"]
        print(f"classifier: test accuracy {acc:.4f}")
    clf = load_classifier(clf_path)
    c = g.config

    times = []
    for _ in range(5):
        tick = time.perf_counter()
        sefa(g, args.k)
        times.append(time.perf_counter() - tick)
    sefa_dirs, _ = sefa(g, args.k)
    tick = time.perf_counter()
    pca_out = pca(g, args.k, layer=1, n=PCA_N)
    pca_seconds = time.perf_counter() - tick
    rng = torch.Generator().manual_seed(1)
    random_dirs = torch.nn.functional.normalize(torch.randn(args.random, c.nz, generator=rng), dim=1)
    z = g.sample_latent(args.samples, torch.Generator().manual_seed(2), "cpu")
    methods = (("sefa", sefa_dirs), ("pca", pca_out["directions"]), ("random", random_dirs))
    effect = {name: [class_change(g, clf, u, z) for u in dirs] for name, dirs in methods}
    summary = {}
    for name, rows in effect.items():
        tv, flipped = np.array(rows).T
        summary[name] = {"tv": t_interval(tv), "flipped": t_interval(flipped), "per_direction": rows}
    for name in ("sefa", "pca"):  # Welch's t-test: the method's directions vs the random ones
        summary[name]["vs_random_p"] = float(stats.ttest_ind(np.array(effect[name])[:, 0],
                                                             np.array(effect["random"])[:, 0],
                                                             equal_var=False).pvalue)

    train, test = labelled_splits("fashion-mnist", c.image_size, c.channels)
    pick = torch.randperm(len(test.images), generator=torch.Generator().manual_seed(3))[:args.images]
    targets = to_float(test.images[pick])
    tick = time.perf_counter()
    proj = project(g, targets, d, steps=args.steps, restarts=4, seed=0)
    per_image = (time.perf_counter() - tick) / args.images
    with torch.no_grad():
        feats = lambda x: clf.features(to_float(to_uint8(x)))  # noqa: E731
        target_f = feats(targets)
        flat_train = to_float(train.images).flatten(1)
        nearest = torch.cat([torch.cdist(t[None].flatten(1), flat_train).argmin(1) for t in targets])
        near_images = to_float(train.images[nearest])
        random_z = g.sample_latent(args.images, torch.Generator().manual_seed(4), "cpu")
        random_images = g.generate(random_z).cpu()

    @torch.no_grad()
    def errors(images: torch.Tensor) -> dict:
        mse = (images - targets).pow(2).flatten(1).mean(1)
        dist = (feats(images) - target_f).norm(dim=1)
        return {"pixel_mse": t_interval(mse.numpy()), "feature_distance": t_interval(dist.numpy())}

    projection = {"projected": errors(proj["reconstructions"]), "nearest_train": errors(near_images),
                  "random_z": errors(random_images), "seconds_per_image": per_image,
                  "images": args.images, "steps": args.steps, "restarts": 4}
    out = {**record.header(), "config": {**vars(args), "pca_n": PCA_N}, "run": args.run,
           "classifier": clf_path, "classifier_test_accuracy": acc, "model": c.to_dict(),
           "sefa_seconds_median": float(np.median(times)), "sefa_ms_median": 1000 * float(np.median(times)),
           "pca_seconds": pca_seconds,
           "pca_explained": pca_out["explained"], "pca_random_explained": pca_out["random_explained"],
           "effect": summary, "projection": projection}

    def fmt(pair, pct=False):
        m, h = pair
        return f"{100 * m:.1f}% ± {100 * h:.1f}" if pct else f"{m:.4f} ± {h:.4f}"

    lines = [f"  SeFa {out['sefa_ms_median']:.1f} ms (median of 5); PCA of layer 1 over {PCA_N:,} z "
             f"{pca_seconds:.1f} s, top-{args.k} variance explained "
             f"{', '.join(f'{100 * v:.1f}%' for v in pca_out['explained'])} vs a random direction "
             f"{100 * pca_out['random_explained']:.2f}%"]
    for name in ("sefa", "pca", "random"):
        s = summary[name]
        p = f", Welch p vs random {s['vs_random_p']:.2g}" if "vs_random_p" in s else ""
        lines.append(f"  {name} (n={len(s['per_direction'])} directions): class TV per 2 sigma "
                     f"{fmt(s['tv'])}, predictions changed {fmt(s['flipped'], pct=True)}{p}")
    for name in ("projected", "nearest_train", "random_z"):
        e = projection[name]
        lines.append(f"  {name} ({args.images} test images): pixel MSE {fmt(e['pixel_mse'])}, "
                     f"classifier-feature distance {fmt(e['feature_distance'])}")
    lines.append(f"  projection: {args.steps} steps x 4 restarts, {per_image:.2f} s per image")
    record.save("directions", out, lines, title="Directions and projection")


if __name__ == "__main__":
    main()
