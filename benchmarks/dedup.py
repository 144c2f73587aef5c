"""Deduplication quality: Fashion-MNIST with injected near-duplicates, as a folder of PNG files.

N originals (the first N training images) plus `copies` transformed copies of randomly chosen
originals, split evenly over five transforms: a 1-2 pixel shift, JPEG re-encoding (quality 75),
Gaussian noise (std 6 grey levels), a resize round trip (28 -> 20 -> 28), a brightness change (x1.1).
`dcgan dedup` runs on the folder exactly as a user runs it. Reported:
- recall: the fraction of injected copies grouped with their original (per transform too);
- pair precision: of all pairs inside reported groups, the fraction that are an original and its
  copy (or two copies of one original);
- false-positive rate: the fraction of originals grouped with another original (the paper's bar:
  under 1 in 100; Fashion-MNIST holds a few real duplicates, which count against us here).

    python benchmarks/dedup.py                   # 5,000 originals, 500 copies, hamming radii 0, 1, 2
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import record
from PIL import Image, ImageEnhance

from dcgan.datasets import read_mnist
from dcgan.dedup import dedup

TRANSFORMS = ("shift", "jpeg", "noise", "resize", "brightness")


def transform(img: Image.Image, kind: str, rng: np.random.Generator) -> Image.Image:
    if kind == "shift":
        dx, dy = rng.choice([-2, -1, 1, 2], size=2)
        return img.transform(img.size, Image.AFFINE, (1, 0, dx, 0, 1, dy))
    if kind == "jpeg":
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=75)
        return Image.open(io.BytesIO(buf.getvalue()), formats=["JPEG"]).convert("L")
    if kind == "noise":
        a = np.asarray(img, dtype=np.float64) + rng.normal(0, 6, img.size[::-1])
        return Image.fromarray(a.clip(0, 255).round().astype(np.uint8))
    if kind == "resize":
        return img.resize((20, 20), Image.BILINEAR).resize(img.size, Image.BILINEAR)
    return ImageEnhance.Brightness(img).enhance(1.1)


def build(folder: Path, n: int, copies: int, seed: int) -> dict[str, tuple[int, str]]:
    """Writes the folder; returns copy file name -> (original index, transform)."""
    images, _ = read_mnist("fashion-mnist", None, "train")
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(images[i]).save(folder / f"orig_{i:05d}.png")
    truth = {}
    for k, j in enumerate(rng.choice(n, size=copies, replace=False)):
        kind = TRANSFORMS[k % len(TRANSFORMS)]
        name = f"copy_{k:05d}.png"
        transform(Image.fromarray(images[j]), kind, rng).save(folder / name)
        truth[name] = (int(j), kind)
    return truth


def score(result, truth: dict[str, tuple[int, str]], n: int) -> dict:
    def source(name: str) -> int:  # which original an image shows
        return truth[name][0] if name in truth else int(name[5:10])

    group_of = {result.names[i]: gi for gi, g in enumerate(result.groups) for i in g}
    found = {kind: [0, 0] for kind in TRANSFORMS}
    for name, (j, kind) in truth.items():
        found[kind][1] += 1
        if name in group_of and group_of.get(f"orig_{j:05d}.png") == group_of[name]:
            found[kind][0] += 1
    pairs = [(result.names[a], result.names[b])
             for g in result.groups for a, b in itertools.combinations(g, 2)]
    true_pairs = sum(source(a) == source(b) for a, b in pairs)
    false_originals = set()
    for g in result.groups:
        origs = [result.names[i] for i in g if result.names[i].startswith("orig_")]
        if len(origs) > 1:
            false_originals.update(origs)
    return {
        "recall": sum(f[0] for f in found.values()) / len(truth),
        "recall_by_transform": {k: f[0] / f[1] for k, f in found.items()},
        "pair_precision": true_pairs / len(pairs) if pairs else 1.0,
        "false_positive_rate": len(false_originals) / n,
        "groups": len(result.groups),
        "flagged": len(result.duplicates),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=5000)
    p.add_argument("--copies", type=int, default=500)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        truth = build(folder, a.n, a.copies, a.seed)
        for hamming in (0, 1, 2):
            t = time.perf_counter()
            result = dedup(str(folder), out=Path(tmp) / f"report{hamming}", channels=1,
                           epochs=a.epochs, hamming=hamming, seed=a.seed)
            runs.append({"hamming": hamming, "seconds": time.perf_counter() - t,
                         **score(result, truth, a.n)})
            print(json.dumps(runs[-1]), flush=True)
    out = {**record.header(), "config": vars(a), "runs": runs}
    lines = [f"  {a.n} Fashion-MNIST originals + {a.copies} transformed copies:"]
    for r in runs:
        by = ", ".join(f"{k} {v:.0%}" for k, v in r["recall_by_transform"].items())
        lines.append(f"  hamming {r['hamming']}: recall {r['recall']:.1%} ({by}), pair precision "
                     f"{r['pair_precision']:.1%}, false-positive rate {r['false_positive_rate']:.2%} "
                     f"of originals, {r['seconds']:.0f} s")
    record.save("dedup", out, lines)

if __name__ == "__main__":
    main()
