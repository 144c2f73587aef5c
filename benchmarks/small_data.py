"""Small datasets and steadier samples, measured on Fashion-MNIST at 32x32 (grey).

Quality is the domain classifier's FID/KID and precision/recall (`dcgan train-classifier` on the
Fashion-MNIST training split; its test accuracy is reported) of 5,000 generated images against a
fixed evaluation set: 5,000 images of the test split drawn with seed 0, the same for every run.
Each setting is trained with --seeds seeds; means get Student-t 95% intervals and comparisons are
paired by seed. Nothing is chosen on the test numbers: steps, widths and options are fixed up front,
and the curves that show how long to train are measured on a validation set, 2,000 training-split
images outside the 1,000 (drawn with seed 1).

1. 1,000 training images (100 per class, a seeded draw from the training split, written as a
   folder of PNGs with one subfolder per class, as a user's own images would be): the baseline
   (the paper's recipe), `--augment translation,cutout`, and `--augment translation,cutout`
   + `--ema-decay`. EMA leaves training bit-identical (tests/test_ema.py), so the augmented run's
   trained G *is* the augment-only run: its raw G and its EMA G are compared at the same step.
2. All 60,000 training images: the moving average of G vs the trained G of the same run.
3. Class-conditional on all 60,000 (`--conditional`): for each class K, 1,000 samples of
   `--class K` (the same z for every class); the share the classifier calls K, and the FID of those
   samples against the 1,000 test images of class K.

    python benchmarks/small_data.py                 # 3 seeds, 2,000 steps each (about 1 h on 2 cores)
    python benchmarks/small_data.py --seeds 1 --steps 300 --full-steps 300    # a smoke run
    python benchmarks/small_data.py --classifier clf.safetensors --skip full conditional   # one part
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import record
import torch
from PIL import Image
from record import dcgan

from dcgan.checkpoint import load_generator
from dcgan.data import open_dataset, to_float, to_uint8
from dcgan.datasets import FASHION_MNIST_CLASSES
from dcgan.metrics import Evaluator, Extractor, compare, evaluate, extract, load_classifier
from dcgan.probe import paired, t_interval

N_EVAL = 5000  # generated and test images per FID
N_VALID = 2000  # generated and validation images per point of a curve
AUGMENT = "translation,cutout"
METRICS = ("fid", "kid", "precision", "recall")
PARTS = ("small", "long", "sizes", "full", "conditional")
DOCS = Path(__file__).resolve().parent.parent / "docs"


def write_subset(folder: Path, per_class: int, seed: int) -> None:
    """`per_class` training images of each class, a seeded draw, as class-named PNG subfolders."""
    data = open_dataset("fashion-mnist", 32, 1, split="train")
    gen = torch.Generator().manual_seed(seed)
    for k, name in enumerate(FASHION_MNIST_CLASSES):
        name = name.replace("/", "-")  # T-shirt/top
        (folder / name).mkdir(parents=True)
        members = (data.labels == k).nonzero().flatten()
        for i in members[torch.randperm(len(members), generator=gen)[:per_class]].tolist():
            Image.fromarray(data.images[i, 0].numpy(), mode="L").save(folder / name / f"{i:05d}.png")


def subset(folder: Path) -> Path:
    """The 1,000-image folder (100 per class, seed 0), written once and shared by the parts."""
    if not folder.exists():
        write_subset(folder, 100, seed=0)
    return folder


def train(out: Path, data: str | Path, seed: int, steps: int, *options, size: int = 32,
          every: int | None = None) -> float:
    """`dcgan train` as a user would; its wall time in seconds. A finished run kept with --keep is
    reused: its time is then the span of its metrics.jsonl rows."""
    if (out / "checkpoint.pt").exists():
        rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
        if rows[-1]["step"] == steps:
            return rows[-1]["time"] - rows[0]["time"]
    t = time.perf_counter()
    dcgan("train", "--data", data, "--image-size", size, "--channels", 1, "--ngf", 32, "--ndf", 32,
          "--batch-size", 64, "--steps", steps, "--seed", seed, "--sample-every", every or 500,
          "--checkpoint-every", every or steps, "--snapshot-every", every or steps, "--tensorboard", "false",
          "--out", out, *options)
    return time.perf_counter() - t


def quality(run: Path, extractor: str, generator: str, n: int = N_EVAL) -> dict:
    r = evaluate(run, data="fashion-mnist", split="test", n=n, extractor=extractor, generator=generator)
    return {k: r[k] for k in METRICS}


def validation(folder: Path, extractor: str, n: int = N_VALID) -> Evaluator:
    """The metrics against n training-split images that are not among the 1,000 in `folder` (a draw
    with seed 1): the set that curves over training steps are read on."""
    data = open_dataset("fashion-mnist", 32, 1, split="train")
    used = {int(f.stem) for f in folder.glob("*/*.png")}
    rest = torch.tensor([i for i in range(len(data)) if i not in used])
    return Evaluator(extractor, data.images[rest], n, seed=1)


def curve(runs: dict[str, tuple[Path, str]], steps: int, every: int, valid: Evaluator) -> list[dict]:
    """Validation metrics of each named (run, generator) at every snapshot."""
    rows = []
    for step in range(every, steps + 1, every):
        name = f"snapshots/step_{step:08d}.pt"
        row = {"step": step}
        for k, (run, which) in runs.items():
            r = valid(load_generator(run / name, generator=which))
            row[k] = {m: r[m] for m in METRICS}
        rows.append(row)
        print(rows[-1], flush=True)
    return rows


def fid_steps(trajectory: list[dict]) -> str:
    return "; ".join(f"{r['step']}: {r['baseline']['fid']:.1f} / {r['augment']['fid']:.1f} / "
                     f"{r['augment_ema']['fid']:.1f}" for r in trajectory)


@torch.no_grad()
def per_class(run: Path, clf_path: Path, extractor: Extractor, n: int = 1000) -> list[dict]:
    """For each class K: the share of G(z, K) the classifier calls K, and their FID against the test
    images of K."""
    g = load_generator(run)
    clf = load_classifier(clf_path).eval()
    test = open_dataset("fashion-mnist", 32, 1, split="test")
    z = g.latent(0, range(n))
    rows = []
    for k, name in enumerate(g.config.classes):
        fake = to_uint8(g.generate(z, labels=torch.full((n,), k, dtype=torch.long)))
        predicted = torch.cat([clf(to_float(chunk)).argmax(1) for chunk in fake.split(500)])
        real = test.images[test.labels == k]
        r = compare(extract(real, extractor)[0], extract(fake, extractor)[0])
        rows.append({"class": name, "accuracy": float((predicted == k).float().mean()), "fid": r["fid"],
                     "n_fake": n, "n_real": len(real)})
    return rows


@torch.no_grad()
def classifier_accuracy(path: Path) -> float:
    clf = load_classifier(path).eval()
    test = open_dataset("fashion-mnist", 32, 1, split="test")
    predicted = torch.cat([clf(to_float(chunk)).argmax(1) for chunk in test.images.split(1000)])
    return float((predicted == test.labels).float().mean())


def summary(runs: list[dict], key: str) -> dict:
    return {m: t_interval([r[key][m] for r in runs]) for m in METRICS}


def ci(t: dict, digits: int = 1) -> str:
    return f"{t['mean']:.{digits}f} ± {t['ci95']:.{digits}f}"


def line(name: str, s: dict) -> str:
    return (f"    {name}: FID {ci(s['fid'])}, KID {ci(s['kid'], 2)}, precision {ci(s['precision'], 3)}, "
            f"recall {ci(s['recall'], 3)}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=2000, help="G steps of each 1,000-image run (batch 64)")
    p.add_argument("--full-steps", type=int, default=2000, help="G steps of each 60,000-image run")
    p.add_argument("--size-steps", type=int, default=1000, help="G steps of the 32 vs 64 px runs")
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    p.add_argument("--long-steps", type=int, default=8000, help="G steps of the long 1,000-image runs")
    p.add_argument("--long-seed", type=int, default=0, help="the training seed of the long runs")
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--classifier-epochs", type=int, default=3)
    p.add_argument("--classifier", type=Path, help="a `dcgan train-classifier` file to reuse (trained and "
                   "written there if missing), so that parts run separately share one feature extractor")
    p.add_argument("--keep", type=Path, help="keep the runs in this new folder, not a temporary one")
    p.add_argument("--skip", nargs="*", default=[], choices=PARTS)
    a = p.parse_args()
    seeds = list(range(a.seeds))
    config = {**vars(a), "classifier": str(a.classifier), "keep": str(a.keep)}
    out: dict = {**record.header(), "config": config,
                 "protocol": {"image_size": 32, "channels": 1, "ngf": 32, "ndf": 32, "batch_size": 64,
                              "small_train_images": 1000, "small_per_class": 100, "full_train_images": 60000,
                              "n_eval": N_EVAL, "n_eval_sizes": 2000, "samples_per_class": 1000,
                              "augment": AUGMENT, "interval": "Student-t 95%, paired by seed",
                              "eval_set": f"fashion-mnist test split, {N_EVAL} images drawn with seed 0"}}
    lines = []
    with tempfile.TemporaryDirectory() as scratch:
        tmp = a.keep or Path(scratch)
        clf = a.classifier or tmp / "clf.safetensors"
        if not clf.exists():
            dcgan("train-classifier", "--data", "fashion-mnist", "--out", clf, "--epochs",
                  a.classifier_epochs)
        accuracy = classifier_accuracy(clf)
        features = f"classifier:{clf}"
        out["classifier_test_accuracy"] = accuracy
        lines.append(f"  Fashion-MNIST grey, ngf = ndf = 32, batch 64; features: a classifier with "
                     f"{accuracy:.1%} test accuracy; means ± t 95% over seeds")
        if "small" not in a.skip:
            folder = subset(tmp / "fm1000")
            valid = validation(folder, features)
            runs, every = [], a.steps // 8
            for s in seeds:
                base, aug = tmp / f"base{s}", tmp / f"aug{s}"
                with ThreadPoolExecutor(2) as pool:  # side by side: one core each with OMP_NUM_THREADS=1
                    jobs = {"baseline_seconds": pool.submit(train, base, folder, s, a.steps, every=every),
                            "augment_ema_seconds": pool.submit(train, aug, folder, s, a.steps, "--augment",
                                                               AUGMENT, "--ema-decay", a.ema_decay,
                                                               every=every)}
                    row = {"seed": s, **{k: job.result() for k, job in jobs.items()}}
                row.update(baseline=quality(base, features, "raw"), augment=quality(aug, features, "raw"),
                           augment_ema=quality(aug, features, "ema"))
                row["validation"] = curve({"baseline": (base, "raw"), "augment": (aug, "raw"),
                                           "augment_ema": (aug, "ema")}, a.steps, every, valid)
                runs.append(row)
                print({k: v for k, v in row.items() if k != "validation"}, flush=True)
            fid = {k: [r[k]["fid"] for r in runs] for k in ("baseline", "augment", "augment_ema")}
            small = {"runs": runs, **{k: summary(runs, k) for k in fid},
                     "augment_vs_baseline_fid": paired(fid["augment"], fid["baseline"]),
                     "ema_vs_raw_fid": paired(fid["augment_ema"], fid["augment"]),
                     "augment_fid_improvement": t_interval(
                         [1 - x / b for x, b in zip(fid["augment"], fid["baseline"], strict=True)])}
            out["small"] = small
            imp, d_ema = small["augment_fid_improvement"], small["ema_vs_raw_fid"]
            lines += [f"  1,000 training images at 32x32, {a.steps} steps each, {len(seeds)} seeds, {N_EVAL} "
                      f"generated vs {N_EVAL} test images:",
                      line("baseline", small["baseline"]),
                      line(f"--augment {AUGMENT}", small["augment"]),
                      line(f"--augment {AUGMENT} --ema-decay {a.ema_decay:g} (its EMA G)",
                           small["augment_ema"]),
                      f"    augment's FID improvement over the baseline: {imp['mean']:.1%} ± "
                      f"{imp['ci95']:.1%}; "
                      f"EMA G's FID below raw G's by {d_ema['mean']:.1f} ± {d_ema['ci95']:.1f} "
                      f"(paired, lower in {d_ema['first_better']}/{d_ema['draws']} seeds)"]
            lines += [f"    validation FID ({N_VALID} vs {N_VALID} training images outside the 1,000) by "
                      f"step, baseline / augment / its EMA G, seed {r['seed']}: {fid_steps(r['validation'])}"
                      for r in runs]
        if "sizes" not in a.skip:  # how soon samples become recognisable at 32 and 64 px
            folder = subset(tmp / "fm1000")
            out["sizes"] = {}
            for size in a.sizes:
                run = tmp / f"size{size}"
                seconds = train(run, folder, 0, a.size_steps, "--augment", AUGMENT, "--ema-decay",
                                a.ema_decay, size=size, every=a.size_steps // 4)
                trajectory = [{"step": int(f.stem.split("_")[1]), **quality(f, features, "ema", n=2000)}
                              for f in sorted((run / "snapshots").glob("step_*.pt"))]
                out["sizes"][str(size)] = {"seconds": seconds, "trajectory": trajectory}
                samples = sorted((run / "samples").glob("*.png"))
                if samples:  # the last fixed-noise grid, for the README
                    shutil.copy(samples[-1], DOCS / f"small_data_{size}px.png")
                print(size, out["sizes"][str(size)], flush=True)
                fids = ", ".join(f"{r['step']}: {r['fid']:.1f}" for r in trajectory)
                lines.append(f"  1,000 images at {size}x{size} (upscaled), --augment {AUGMENT} --ema-decay "
                             f"{a.ema_decay:g}, seed 0, {seconds / 60:.0f} min: FID of the EMA G (2,000 vs "
                             f"2,000 test images) by step: {fids}")
        if "long" not in a.skip:  # does augmentation pay off once the baseline's D has memorised the data?
            folder = subset(tmp / "fm1000")
            every = a.long_steps // 8
            base, aug = tmp / "long_base", tmp / "long_aug"
            with ThreadPoolExecutor(2) as pool:  # side by side: one core each with OMP_NUM_THREADS=1
                seed, steps = a.long_seed, a.long_steps
                jobs = {"baseline": pool.submit(train, base, folder, seed, steps, every=every),
                        "augment_ema": pool.submit(train, aug, folder, seed, steps, "--augment", AUGMENT,
                                                   "--ema-decay", a.ema_decay, every=every)}
                seconds = {k: job.result() for k, job in jobs.items()}
            arms = {"baseline": (base, "raw"), "augment": (aug, "raw"), "augment_ema": (aug, "ema")}
            trajectory = curve(arms, a.long_steps, every, validation(folder, features))
            out["long"] = {"seed": a.long_seed, "seconds": seconds, "trajectory": trajectory,
                           "evaluated_on": f"validation: {N_VALID} training-split images outside the 1,000"}
            lines += [f"  1,000 images at 32x32, seed {a.long_seed}, {a.long_steps} steps, validation FID "
                      f"({N_VALID} vs {N_VALID} training images outside the 1,000) by step, baseline / "
                      f"--augment {AUGMENT} / its EMA G: {fid_steps(trajectory)}"]
        if "full" not in a.skip:
            with ThreadPoolExecutor(2) as pool:  # two runs at a time: one core each with OMP_NUM_THREADS=1
                jobs = [pool.submit(train, tmp / f"full{s}", "fashion-mnist", s, a.full_steps, "--ema-decay",
                                    a.ema_decay) for s in seeds]
                runs = [{"seed": s, "seconds": job.result()} for s, job in zip(seeds, jobs, strict=True)]
            for row in runs:
                run = tmp / f"full{row['seed']}"
                row.update(raw=quality(run, features, "raw"), ema=quality(run, features, "ema"))
                print(row, flush=True)
            d = paired([r["ema"]["fid"] for r in runs], [r["raw"]["fid"] for r in runs])
            out["full"] = {"runs": runs, "raw": summary(runs, "raw"), "ema": summary(runs, "ema"),
                           "ema_vs_raw_fid": d}
            lines += [f"  all 60,000 training images at 32x32, {a.full_steps} steps, --ema-decay "
                      f"{a.ema_decay:g}, {len(seeds)} seeds, {N_EVAL} generated vs {N_EVAL} test images:",
                      line("trained G", out["full"]["raw"]), line("EMA G", out["full"]["ema"]),
                      f"    EMA G's FID below the trained G's by {d['mean']:.1f} ± {d['ci95']:.1f} "
                      f"(paired, lower in {d['first_better']}/{d['draws']} seeds)"]
        if "conditional" not in a.skip:
            extractor = Extractor(features)
            runs = []
            for s in seeds:
                run = tmp / f"cond{s}"
                seconds = train(run, "fashion-mnist", s, a.full_steps, "--conditional")
                rows = per_class(run, clf, extractor)
                runs.append({"seed": s, "seconds": seconds, "classes": rows,
                             "accuracy": sum(r["accuracy"] for r in rows) / len(rows)})
                print(runs[-1], flush=True)
            names = [r["class"] for r in runs[0]["classes"]]
            classes = [{"class": name, "accuracy": t_interval([r["classes"][k]["accuracy"] for r in runs]),
                        "fid": t_interval([r["classes"][k]["fid"] for r in runs])}
                       for k, name in enumerate(names)]
            overall = t_interval([r["accuracy"] for r in runs])
            out["conditional"] = {"runs": runs, "classes": classes, "accuracy": overall}
            shown = ", ".join(f"{c['class']} {c['accuracy']['mean']:.0%} / {c['fid']['mean']:.1f}"
                              for c in classes)
            lines += [f"  --conditional, all 60,000 training images at 32x32, {a.full_steps} steps, "
                      f"{len(seeds)} seeds: samples of "
                      f"--class K classified as K: {overall['mean']:.1%} ± {overall['ci95']:.1%} "
                      "(1,000 per class)",
                      f"    per class (accuracy; FID vs the class's 1,000 test images): {shown}"]
    record.save("small_data", out, lines)


if __name__ == "__main__":
    main()
