"""The paper's representation-learning claim (§5) on Fashion-MNIST, within a 2-core CPU's budget.

Trains a DCGAN without labels on Fashion-MNIST at 32x32 (or takes --run, so that a long training
run and its probes are separate steps), then runs `dcgan probe`: the few-label protocol (100 labels
per class, 10 draws, C chosen on a labelled validation split of 10,000 training images) and the
full-label protocol, each against raw pixels, the same D untrained (3 independent initialisations,
averaged), and K-means features. The claim to check: DCGAN features beat the untrained D, raw
pixels and K-means (paired over the same label draws).

Also reported: the run's training time (the compute time its metrics.jsonl logged, resumes
included), and each command's wall time and peak resident memory.

    python benchmarks/representation.py                     # trains 3,000 steps (about 15 min)
    python benchmarks/representation.py --run runs/fmnist   # probes an existing run (or a checkpoint)
    python benchmarks/representation.py --run runs/fm --features-dir /big/disk/fm-features
        # D's features written once to disk by `dcgan features`, read memory-mapped by the probes
    python benchmarks/representation.py --run runs/fm --snapshots --protocols few
        # few-label error of every snapshot: the curve of error vs training steps, beside the
        # untrained D and K-means (docs/representation_steps.png)
    python benchmarks/representation.py --run runs/fm --transfer digits
        # also D probed on another labelled dataset (full protocol), beside its baselines
    python benchmarks/representation.py --run runs/fm/snapshots/step_00004000.pt --snapshots
        # a snapshot of a run that trains on: the curve stops at its step
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import record
from record import dcgan, measured

from dcgan import checkpoint
from dcgan.checkpoint import load_discriminator
from dcgan.probe import describe_paired, describe_probe
from dcgan.representation import fingerprint

DOCS = Path(__file__).resolve().parent.parent / "docs"


def training_seconds(run: Path, until_step: int | None = None) -> float:
    """The compute time a run's metrics.jsonl logged up to `until_step` (default: all of it): each
    row's images over its images per second, summed; the gaps between sessions of a resumed run are
    not counted, work redone after a rollback or a resume from an earlier checkpoint is."""
    total, seen = 0.0, 0.0
    for line in (run / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line) if line.strip() else {}
        if until_step is not None and row.get("step", 0) > until_step:
            continue
        if row.get("img_per_s") and row.get("kimg") is not None:
            if row["kimg"] > seen:
                total += (row["kimg"] - seen) * 1000 / row["img_per_s"]
            seen = row["kimg"]
    return total


def written_features(folder: Path, run: Path, grid: int) -> bool:
    """Whether `folder` already holds this D's Fashion-MNIST features at this grid (seed 0): the probes
    check every detail again when they read them."""
    try:
        meta = json.loads((folder / "features.json").read_text())
    except (OSError, ValueError):
        return False
    return (meta.get("d_sha256") == fingerprint(load_discriminator(run)) and meta.get("grid") == grid
            and meta.get("data") == "fashion-mnist" and meta.get("seed") == 0)


def probe_table(source, out: Path, *args) -> dict:
    m = measured("probe", source, *args, "--out", out)
    return {"rows": json.loads((out / "probe.json").read_text()), "markdown": (out / "probe.md").read_text(),
            "seconds": m["seconds"], "peak_bytes": m["peak_bytes"], "peak_gib": m["peak_bytes"] / 2**30}


def describe_rows(name: str, rows: list[dict]) -> list[str]:
    lines = []
    for r in rows:
        lines.append(f"  {name}: {r['method']} ({r['dim']:,} dims): {describe_probe(r)}")
        if "paired_vs_first" in r:
            lines.append(f"    {describe_paired(r['paired_vs_first'], rows[0]['method'])}")
    return lines


def figure(curve: list[dict], baselines: list[dict], path: Path) -> None:
    """Few-label test error vs training steps for DCGAN (mean, t 95% bars) and the step-free
    baselines as bands."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4))
    steps = [c["step"] for c in curve]
    ax.errorbar(steps, [100 * c["error"] for c in curve], yerr=[100 * c["ci95"] for c in curve], marker="o",
                capsize=3, label="DCGAN discriminator")
    for r, colour in zip(baselines, ("tab:orange", "tab:green", "tab:red", "tab:purple"), strict=False):
        lo, hi = 100 * (r["error"] - r["ci95"]), 100 * (r["error"] + r["ci95"])
        ax.axhspan(lo, hi, color=colour, alpha=0.25)
        ax.axhline(100 * r["error"], color=colour, label=r["method"])
    ax.set_xlabel("training steps of D")
    ax.set_ylabel("test error, %  (mean ± t 95%)")
    ax.set_title("Fashion-MNIST, 100 labels per class")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, help="an existing Fashion-MNIST run to probe instead of training one")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--max-train", type=int, default=10000, help="training images featurized (few)")
    p.add_argument("--full-max-train", type=int, default=5000, help="training images of the full protocol")
    p.add_argument("--max-test", type=int, default=5000)
    p.add_argument("--kmeans-k", type=int, default=400)
    p.add_argument("--draws", type=int, default=10, help="label draws of the few-label protocol")
    p.add_argument("--protocols", default="few,full", help="comma list of few, full")
    p.add_argument("--random-inits", type=int, default=3, help="initialisations of the random-D baseline")
    p.add_argument("--features-dir", type=Path, help="write D's features here once (`dcgan features`) and "
                   "let the probes read them memory-mapped")
    p.add_argument("--snapshots", action="store_true", help="also the few-label error of every snapshot of "
                   "--run (DCGAN features only; the baselines do not depend on the step)")
    p.add_argument("--transfer", help="also probe D on this labelled dataset (full protocol), e.g. digits")
    p.add_argument("--full-baselines", default="pixels,random,kmeans",
                   help="baselines of the full protocol (each random init is another full-size SVM search)")
    p.add_argument("--grid", type=int, default=4, help="D's features: each layer max-pooled to grid x grid "
                   "(paper: 4)")
    a = p.parse_args()
    out: dict = {**record.header(), "config": {**vars(a), "image_size": 32, "run": str(a.run),
                                                "features_dir": str(a.features_dir)}}
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        run = a.run
        if run is None:
            run = Path(tmp) / "run"
            dcgan("train", "--data", "fashion-mnist", "--steps", a.steps, "--tensorboard", "false",
                  "--out", run)
        state = checkpoint.load(run)
        step, preset = state["step"], state["config"].get("preset")
        out.update(probed_step=step, preset=preset)
        folder = run if run.is_dir() else run.parent
        folder = folder.parent if folder.name == "snapshots" else folder  # a snapshot of a run
        out["train_seconds"] = training_seconds(folder, until_step=step)
        out["train_hours"] = out["train_seconds"] / 3600
        lines.append(f"  Fashion-MNIST 32x32, {preset} preset, D after {step:,} steps "
                     f"({a.run or 'trained here'}; {out['train_hours']:.1f} h of logged training compute); "
                     f"{a.max_train} (few) or {a.full_max_train} (full) train images, {a.max_test} test "
                     "images:")
        stored = []
        if a.features_dir is not None:
            if written_features(a.features_dir, run, a.grid):
                meta = json.loads((a.features_dir / "features.json").read_text())
                f = out["features"] = {"reused": True, "dim": meta["dim"],
                                       "images": meta["train"] + meta["test"]}
                lines.append(f"  D's features: {f['images']:,} x {f['dim']:,} float32, read from "
                             f"{a.features_dir} (written there for this D by an earlier run)")
            else:
                m = measured("features", run, "--data", "fashion-mnist", "--grid", a.grid, "--out",
                             a.features_dir)
                meta = json.loads((a.features_dir / "features.json").read_text())
                images = meta["train"] + meta["test"]
                f = out["features"] = {"seconds": m["seconds"], "peak_gib": m["peak_bytes"] / 2**30,
                                       "dim": meta["dim"], "images": images,
                                       "gib": 4 * meta["dim"] * images / 2**30}
                lines.append(f"  `dcgan features`: {images:,} x {f['dim']:,} float32 ({f['gib']:.1f} GiB on "
                             f"disk) in {f['seconds'] / 60:.1f} min, peak memory {f['peak_gib']:.2f} GiB")
            stored = ["--features", a.features_dir]
        common = ["--data", "fashion-mnist", "--max-test", a.max_test, "--kmeans-k", a.kmeans_k, "--draws",
                  a.draws, "--random-inits", a.random_inits, "--grid", a.grid]
        tables = {}
        for protocol in a.protocols.split(","):
            n_train = a.max_train if protocol == "few" else a.full_max_train
            chosen = ["--baselines", a.full_baselines] if protocol == "full" else []
            tables[protocol] = probe_table(run, Path(tmp) / protocol, *common, "--protocol", protocol,
                                           "--max-train", n_train, *chosen, *stored)
            t = tables[protocol]
            lines += describe_rows(protocol, t["rows"])
            lines.append(f"    ({protocol}: {t['seconds'] / 60:.1f} min, peak memory "
                         f"{t['peak_gib']:.2f} GiB)")
        out.update(tables)
        if a.snapshots:
            if "few" not in tables:
                raise SystemExit("--snapshots needs the few protocol (its baselines are drawn beside the "
                                 "curve)")
            curve = []
            for snap in sorted((folder / "snapshots").glob("step_*.pt")):
                if int(snap.stem.split("_")[1]) >= step:
                    continue  # the run's own checkpoint is the last point
                t = probe_table(snap, Path(tmp) / snap.stem, *common, "--protocol", "few", "--max-train",
                                a.max_train, "--baselines", "")
                r = t["rows"][0]
                curve.append({"step": int(snap.stem.split("_")[1]), "error": r["error"], "ci95": r["ci95"],
                              "validation_error": r["validation_error"], "errors": r["errors"],
                              "seconds": t["seconds"]})
            few = tables["few"]["rows"]
            curve.append({"step": step, "error": few[0]["error"], "ci95": few[0]["ci95"],
                          "validation_error": few[0]["validation_error"], "errors": few[0]["errors"]})
            out["curve"] = curve
            figure(curve, few[1:], DOCS / "representation_steps.png")
            shown = "; ".join(f"{c['step']:,}: {100 * c['error']:.2f}% ± {100 * c['ci95']:.2f}%"
                              for c in curve)
            lines.append(f"  few-label test error of D by training step ({a.draws} draws, mean ± t 95%): "
                         f"{shown}")
        if a.transfer:
            t = probe_table(run, Path(tmp) / "transfer", "--data", a.transfer, "--protocol", "full",
                            "--kmeans-k", a.kmeans_k, "--random-inits", a.random_inits, "--grid", a.grid)
            out["transfer"] = {"data": a.transfer, **t}
            lines += describe_rows(f"transfer to {a.transfer} (full protocol)", t["rows"])
    record.save("representation", out, lines)


if __name__ == "__main__":
    main()
