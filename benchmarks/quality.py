"""Sample quality of a Fashion-MNIST DCGAN on a CPU, measured with a domain classifier's features.

1. `dcgan train-classifier` on Fashion-MNIST (its test accuracy is reported: the extractor's worth);
2. the real-vs-real floor: FID/KID/precision/recall between the train and the test split;
3. `dcgan train` at 32x32 with `--eval-every`: the FID trajectory over training (n per evaluation);
4. `dcgan evaluate` of the final and the best checkpoint against the test split.

    python benchmarks/quality.py                          # 2,000 steps, evaluated every 250
    python benchmarks/quality.py --steps 6000 --eval-every 500 --n 5000
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import record
import torch
from record import dcgan

from dcgan.data import open_dataset
from dcgan.metrics import Extractor, compare, extract


def evaluate(source: Path, n: int, features: str, out: Path) -> dict:
    dcgan("evaluate", source, "--data", "fashion-mnist", "--n", n, "--extractor", features, "--out", out)
    return json.loads(out.read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--eval-n", type=int, default=2000)
    p.add_argument("--n", type=int, default=5000, help="images for the final evaluations and the floor")
    p.add_argument("--classifier-epochs", type=int, default=3)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        clf = Path(tmp) / "clf.safetensors"
        accuracy = float(dcgan("train-classifier", "--data", "fashion-mnist", "--out", clf, "--epochs",
                               a.classifier_epochs).split("test accuracy ")[1].split()[0])
        features = f"classifier:{clf}"
        extractor = Extractor(features)
        gen = torch.Generator().manual_seed(0)
        train = open_dataset("fashion-mnist", 32, 1, split="train").images
        test = open_dataset("fashion-mnist", 32, 1, split="test").images
        floor = compare(extract(train[torch.randperm(len(train), generator=gen)[:a.n]], extractor)[0],
                        extract(test[torch.randperm(len(test), generator=gen)[:a.n]], extractor)[0])
        run = Path(tmp) / "run"
        t = time.perf_counter()
        dcgan("train", "--data", "fashion-mnist", "--steps", a.steps, "--eval-every", a.eval_every,
              "--eval-extractor", features, "--eval-n", a.eval_n, "--tensorboard", "false", "--out", run)
        train_s = time.perf_counter() - t
        rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
        trajectory = [{k: r[k] for k in ("step", "kimg", "fid", "kid", "precision", "recall")}
                      for r in rows if "fid" in r]
        final, best = (evaluate(src, a.n, features, Path(tmp) / "q.json") for src in (run, run / "best.pt"))
    out = {**record.header(), "config": vars(a), "classifier_test_accuracy": accuracy,
           "real_vs_real_floor": floor, "trajectory": trajectory, "final": final, "best": best,
           "best_step": min(trajectory, key=lambda r: r["fid"])["step"], "train_seconds": train_s}
    steps = ", ".join(f"{r['step']}: {r['fid']:.1f}" for r in trajectory)
    protocol = final["protocol"]
    record.save("quality", out, [
        f"  Fashion-MNIST 32x32, pytorch preset, batch 128, {a.steps} steps ({train_s / 60:.0f} min on CPU); "
        f"features: a classifier with {accuracy:.1%} test accuracy (penultimate layer, 256-d, weights sha256 "
        f"{protocol.get('weights_sha256', '?')[:12]}), images {protocol.get('resize', 'at their size')}",
        f"  real-vs-real floor (train vs test, {floor['n_real']} vs {floor['n_fake']} images): "
        f"{scores(floor)}",
        f"  FID during training ({a.eval_n} generated vs {a.eval_n} random train images): {steps}",
        f"  final vs test split ({final['n_fake']} generated vs {final['n_real']} test images): "
        f"{scores(final)}; best.pt (step {out['best_step']}): {scores(best)}",
        "  (KID ± its sd over subsets; KID is unbiased, FID is biased upward at these n (below ten thousand):"
        " compare FIDs only at equal n)"])


def scores(r: dict) -> str:
    return (f"FID {r['fid']:.2f}, KID {r['kid']:.4f} ± {r['kid_std']:.4f}, precision {r['precision']:.3f}, "
            f"recall {r['recall']:.3f}")


if __name__ == "__main__":
    main()
