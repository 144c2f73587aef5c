"""`dcgan` command line: a thin layer over the Python API. Each subcommand's arguments sit beside the
handler that calls its API function by keyword and prints the result; a bad input is one `error:`
line and exit code 1. Parsing imports no torch (the API loads on first use), so --help is instant."""

from __future__ import annotations

import argparse
import json
import os
import reprlib
import socket
import sys
import types
import typing
from dataclasses import fields
from pathlib import Path

import dcgan
from dcgan.config import PRESETS, ModelConfig, TrainConfig, check_count, read_config_file
from dcgan.errors import DCGANError, TrainingInterrupted, describe_os_error

HINTS = {**typing.get_type_hints(ModelConfig), **typing.get_type_hints(TrainConfig)}
SOURCE = "run directory, checkpoint .pt or exported .safetensors"
GENERATOR = ("which G: ema (the moving average of its weights, the default where the run kept one with "
             "--ema-decay or --ema-kimg) | raw (the trained weights)")


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def indices(text: str | None, name: str) -> list[int] | None:
    """'3,17,42' -> [3, 17, 42]: sample numbers as `dcgan sample --numbered` prints them (None: not given).
    The API checks how many and how large."""
    if text is None:
        return None
    parts = [v.strip() for v in text.split(",") if v.strip()]
    if not parts or not all(p.isascii() and p.isdigit() and len(p) <= 10 for p in parts):
        raise DCGANError(f"{name} must be comma-separated sample numbers such as 3,17,42, "
                         f"got {reprlib.repr(text)}")
    return [int(p) for p in parts]


# ---- train ----------------------------------------------------------------------------------

def _add_train(sub) -> None:
    """`dcgan train`: one flag per setting of ModelConfig and TrainConfig (--name-with-dashes), its
    help and default read from the field, so each setting is written once, in its dataclass."""
    p = sub.add_parser("train", help="train a DCGAN", argument_default=argparse.SUPPRESS,
                       description="Train a DCGAN. Unset options take the preset's and the "
                                   "dataset's defaults; --dry-run shows the resolved settings.")
    length = p.add_mutually_exclusive_group()
    settings = [m for t in fields(TrainConfig) for m in (fields(ModelConfig) if t.name == "model" else [t])
                if m.metadata.get("flag", True)]
    for f in settings:
        hint = HINTS[f.name]
        kind = typing.get_args(hint)[0] if isinstance(hint, types.UnionType) else hint
        kw = dict(dest=f.name, help=f"{f.metadata['help']} (default: {_shown(f)})".replace("%", "%%"))
        if kind is bool:  # --flag alone means true; --flag false turns a default-on setting off
            kw.update(type=_bool, nargs="?", const=True, metavar="true|false")
        else:
            kw.update(type=kind, metavar={int: "N", float: "X"}.get(kind, f.name.upper()))
        add = length.add_argument if f.name in ("steps", "epochs") else p.add_argument
        add(f"--{f.name.replace('_', '-')}", **kw)
    p.add_argument("--no-cache", dest="cache", action="store_false",
                   help="the same as --cache false (default: the cache is used)")
    p.add_argument("--config", dest="config_file", help="YAML or JSON file of settings (flags override it)")
    p.add_argument("--resume", help="continue the run in this directory (or from one of its snapshots); "
                   "with --out NEW, a new run NEW branches from it")
    p.add_argument("--dry-run", dest="dry_run", action="store_true", help="print the resolved settings, exit")
    p.set_defaults(func=cmd_train)


def _shown(f) -> str:
    """A setting's default as --help states it: the preset's values for architecture fields."""
    shown = f.metadata.get("shown")
    if shown == "the preset's":
        return "the preset's: " + ", ".join(f"{name} {str(preset.get(f.name, f.default)).lower()}"
                                             for name, preset in PRESETS.items())
    return shown or ("none" if f.default is None else str(f.default).lower())


def cmd_train(args: argparse.Namespace) -> None:
    opts = {k: v for k, v in vars(args).items() if k not in ("command", "func")}
    config_file, resume = opts.pop("config_file", None), opts.pop("resume", None)
    dry_run = opts.pop("dry_run", False)
    overrides = {**(read_config_file(config_file) if config_file else {}), **opts}
    config = dcgan.configure(overrides, resume=resume)
    if dry_run:  # the resolved settings, and what they mean for this data (one process)
        print(json.dumps({**config.to_dict(), "plan": dcgan.plan(config)}, indent=2))
        return
    run = dcgan.train(config, resume=resume if resume is not None else False)
    print(f"done: {run} (samples in {run / 'samples'}, latest checkpoint {run / 'checkpoint.pt'})")


# ---- generating -----------------------------------------------------------------------------

def _add_sample(sub) -> None:
    s = sub.add_parser("sample", help="generate images from a trained generator")
    s.add_argument("source", help=SOURCE)
    s.add_argument("--n", type=int, default=64, help="number of images")
    s.add_argument("--out", help="grid PNG (default samples.png unless --individual)")
    s.add_argument("--nrow", type=int, help="images per grid row")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--individual", help="also write one PNG per sample into this folder")
    s.add_argument("--device", default="cpu")
    s.add_argument("--start", type=int, default=0, help="number of the first sample")
    s.add_argument("--numbered", action="store_true",
                   help="print each sample's number on it: (seed, number) names its z for walk, "
                        "arithmetic and forget")
    s.add_argument("--latents", help="generate the rows of this latents file (from `dcgan project`) "
                                     "instead of seed's samples")
    s.add_argument("--which", default="latest", help="a run directory's checkpoint: latest | best (the best "
                   "evaluated step) | a snapshot step")
    s.add_argument("--class", dest="class_", help="a conditional generator's class, by index or name "
                   "(default 0); all: one grid row per class, the same --n z in each")
    s.add_argument("--generator", choices=("ema", "raw"), help=GENERATOR)
    s.set_defaults(func=cmd_sample)


def cmd_sample(args: argparse.Namespace) -> None:
    out = args.out or (None if args.individual else "samples.png")
    r = dcgan.sample_sheet(args.source, out=out, n=args.n, seed=args.seed, start=args.start, nrow=args.nrow,
                           numbered=args.numbered, individual=args.individual, latents=args.latents,
                           which=args.which, device=args.device, generator=args.generator,
                           class_=args.class_)
    step = "an unknown step" if r["step"] is None else f"step {r['step']:,}"
    kind = "EMA generator (moving average)" if r["generator"] == "ema" else "generator"
    drawn = "" if r["class"] is None else (" (every class, a row each)" if r["class"] == "all"
                                           else f" (class {r['class']})")
    print(f"{kind} of {step}, from {r['checkpoint']}{drawn}")
    if "individual" in r:
        print(f"wrote {len(r['individual'])} images to {args.individual}")
    if "out" in r:
        note = f" (numbers are sample indices of seed {args.seed})" if args.numbered else ""
        print(f"wrote {r['out']}{note}")


def _add_export(sub) -> None:
    e = sub.add_parser("export", help="write G's weights and config to one safetensors file")
    e.add_argument("source", help="run directory or checkpoint .pt")
    e.add_argument("out", help="output .safetensors file")
    e.add_argument("--generator", choices=("ema", "raw"), help=GENERATOR)
    e.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> None:
    print(f"wrote {dcgan.export(args.source, out=args.out, generator=args.generator)}")


# ---- the latent space -----------------------------------------------------------------------

def _add_walk(sub) -> None:
    w = sub.add_parser("walk", help="latent walks with a smoothness report (paper 6.1)")
    w.add_argument("source", help=SOURCE)
    w.add_argument("--out", default="walk", help="folder for walk.png, walk.json (and walk.gif)")
    w.add_argument("--walks", type=int, default=4, help="rows: walk r passes samples r*K..r*K+K-1")
    w.add_argument("--points", type=int, default=9, help="K latent points per walk")
    w.add_argument("--steps", type=int, default=8, help="M frames from each point to the next")
    w.add_argument("--mode", default="slerp", help="slerp or linear")
    w.add_argument("--through", help="one walk through these sample numbers, e.g. 3,17,42")
    w.add_argument("--seed", type=int, default=0)
    w.add_argument("--gif", action="store_true", help="also write walk.gif")
    w.add_argument("--frames", action="store_true", help="also write walk_frames.png: every frame, "
                   "unlabelled, at G's resolution (row = walk, column = frame)")
    w.add_argument("--factor", type=float, default=3.0, help="flag steps jumping > factor x the median")
    w.add_argument("--latents", help="walk through the rows of this latents file (from `dcgan project`); "
                                     "--through then numbers its rows")
    w.add_argument("--class", dest="class_", help="a conditional generator's class, by index or name "
                   "(default 0)")
    w.add_argument("--generator", choices=("ema", "raw"), help=GENERATOR)
    w.set_defaults(func=cmd_walk)


def cmd_walk(args: argparse.Namespace) -> None:
    r = dcgan.walk_report(args.source, out=args.out, walks=args.walks, points=args.points, steps=args.steps,
                          mode=args.mode, seed=args.seed, through=indices(args.through, "--through"),
                          gif=args.gif, factor=args.factor, latents=args.latents, generator=args.generator,
                          class_=args.class_, frames=args.frames)
    print(f"wrote {Path(args.out) / 'walk.png'}: {len(r['walks'])} walk(s) of {r['frames']} frames "
          f"({args.mode}); {r['flagged_steps']} step(s) jump more than {args.factor:g}x the median "
          f"(details in walk.json)")


def _add_arithmetic(sub) -> None:
    ar = sub.add_parser("arithmetic", help="vector arithmetic on z: A - B + C, or a direction (paper 6.3)",
                        description="Sample numbers come from `dcgan sample --numbered --seed S`.")
    ar.add_argument("source", help=SOURCE)
    ar.add_argument("--a", help="exemplars of concept A, e.g. 3,17,42")
    ar.add_argument("--b", help="exemplars of concept B")
    ar.add_argument("--c", help="exemplars of concept C")
    ar.add_argument("--noise", type=float, default=0.25, help="uniform noise scale of the neighbours")
    ar.add_argument("--from", dest="start", help="direction mode: exemplars where the vector starts")
    ar.add_argument("--to", dest="end", help="direction mode: exemplars where it ends")
    ar.add_argument("--targets", help="direction mode: samples to move (default: --n samples of seed+1)")
    ar.add_argument("--n", type=int, default=8)
    ar.add_argument("--steps", type=int, default=7)
    ar.add_argument("--scale", type=float, default=1.0, help="last step adds scale x the vector "
                    "(with --direction: the steps go from -scale to +scale sigma)")
    ar.add_argument("--direction", help="direction mode with a saved direction (from `dcgan directions`)")
    ar.add_argument("--frames", action="store_true", help="direction mode: also write direction_frames.png, "
                    "every frame unlabelled at G's resolution (row = target, column = step)")
    ar.add_argument("--latents", help="sample numbers index the rows of this latents file (from "
                                      "`dcgan project`) instead of seed's samples")
    ar.add_argument("--class", dest="class_", help="a conditional generator's class, by index or name "
                   "(default 0)")
    ar.add_argument("--seed", type=int, default=0)
    ar.add_argument("--out", default="arithmetic")
    ar.add_argument("--generator", choices=("ema", "raw"), help=GENERATOR)
    ar.set_defaults(func=cmd_arithmetic)


def cmd_arithmetic(args: argparse.Namespace) -> None:
    if args.start or args.end or args.direction:
        start = None if args.direction else indices(args.start or "", "--from")
        end = None if args.direction else indices(args.end or "", "--to")
        r = dcgan.direction_report(args.source, out=args.out, start=start, end=end, seed=args.seed,
                                   targets=indices(args.targets, "--targets"), n=args.n, steps=args.steps,
                                   scale=args.scale, direction=args.direction, latents=args.latents,
                                   generator=args.generator, class_=args.class_, frames=args.frames)
        span = (f"from {-args.scale:g} to {args.scale:g} sigma" if args.direction
                else f"from 0 to {args.scale:g} v")
        print(f"wrote {Path(args.out) / 'direction.png'}: |v| = {r['v_norm']:.3f}, {args.steps} steps {span}")
        return
    if not (args.a and args.b and args.c):
        raise DCGANError("give --a, --b and --c (Y = A - B + C), or --from and --to (a direction)")
    r = dcgan.arithmetic_report(args.source, out=args.out, a=indices(args.a, "--a"), b=indices(args.b, "--b"),
                                c=indices(args.c, "--c"), seed=args.seed, noise=args.noise,
                                latents=args.latents, generator=args.generator, class_=args.class_)
    print(f"wrote {Path(args.out) / 'arithmetic.png'}: |Y| = {r['y_norm']:.3f}; pixel-space result differs "
          f"from G(Y) by RMS {r['pixel_result_rms_to_result']:.3f}")


def _add_directions(sub) -> None:
    p = sub.add_parser("directions", help="directions in z without exemplars: SeFa, PCA (GANSpace) or "
                       "an SVM on labelled samples (InterFaceGAN)",
                       description="Each direction is saved as JSON (unit vector, its sigma under the "
                                   "prior) with a strip from -span to +span sigma; `dcgan arithmetic "
                                   "--direction FILE` applies one.")
    p.add_argument("source", help="run directory, checkpoint .pt or exported .safetensors")
    p.add_argument("--method", default="sefa", help="sefa (closed form, G's first layer) | pca (one G "
                   "layer's activations) | svm (--positive/--negative samples)")
    p.add_argument("--k", type=int, default=10, help="number of directions (sefa, pca)")
    p.add_argument("--layer", type=int, default=1, help="pca: G layer, 0 = the 4x4 map after the projection")
    p.add_argument("--n", type=int, default=5000, help="pca: sampled z")
    p.add_argument("--positive", help="svm: sample numbers showing the attribute, e.g. 3,17,42")
    p.add_argument("--negative", help="svm: sample numbers without it")
    p.add_argument("--condition", help="svm: remove the component along this saved direction")
    p.add_argument("--latents", help="svm: sample numbers index the rows of this latents file")
    p.add_argument("--samples", type=int, default=4, help="samples in each direction's strip")
    p.add_argument("--span", type=float, default=3.0, help="strips go from -span to +span sigma")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="directions")
    p.add_argument("--generator", choices=("ema", "raw"), help=GENERATOR)
    p.set_defaults(func=cmd_directions)


def cmd_directions(args: argparse.Namespace) -> None:
    r = dcgan.directions_report(args.source, out=args.out, method=args.method, k=args.k, layer=args.layer,
                                n=args.n, seed=args.seed, positive=indices(args.positive, "--positive"),
                                negative=indices(args.negative, "--negative"), condition=args.condition,
                                latents=args.latents, samples=args.samples, span=args.span,
                                generator=args.generator)
    if args.method == "sefa":
        top = ", ".join(f"{v:.3g}" for v in r["eigenvalues"][:args.k])
        print(f"sefa: top eigenvalues {top} (of {len(r['eigenvalues'])}; {r['seconds']:.2f} s)")
    elif args.method == "pca":
        top = ", ".join(f"{100 * v:.1f}%" for v in r["explained"])
        print(f"pca of layer {args.layer}: variance explained {top}; a random direction "
              f"{100 * r['random_explained']:.2f}%")
    else:
        print(f"svm: held-out accuracy {100 * r['heldout_accuracy']:.1f}% ({r['folds']}-fold), "
              f"train {100 * r['train_accuracy']:.1f}%")
    print(f"wrote {len(r['files'])} direction(s) with strips to {args.out} (overview directions.png)")


def _add_project(sub) -> None:
    p = sub.add_parser("project", help="find real images in z: the z whose G(z) reconstructs each",
                       description="Adam on z with a pixel loss plus a D-feature loss, several "
                                   "restarts, z kept on the prior's support. Writes projection.png, "
                                   "latents.json (for --latents of sample, walk, arithmetic, "
                                   "directions) and projection.json.")
    p.add_argument("source", help="run directory or checkpoint .pt (exported .safetensors: pixel loss only)")
    p.add_argument("images", nargs="+", help="image files; converted as training converts them")
    p.add_argument("--steps", type=int, default=500, help="Adam steps")
    p.add_argument("--restarts", type=int, default=4, help="starting points per image; the best is kept")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--feature-weight", dest="feature_weight", type=float, default=1.0,
                   help="weight of D's feature distance beside the pixel MSE")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="projection")
    p.add_argument("--generator", choices=("ema", "raw"), help=GENERATOR)
    p.set_defaults(func=cmd_project)


def cmd_project(args: argparse.Namespace) -> None:
    r = dcgan.project_report(args.source, args.images, out=args.out, steps=args.steps, restarts=args.restarts,
                             lr=args.lr, feature_weight=args.feature_weight, seed=args.seed,
                             generator=args.generator)
    for path, mse in zip(r["images"], r["pixel_mse"], strict=True):
        print(f"{path}: pixel MSE {mse:.4f}")
    print(f"wrote {Path(args.out) / 'projection.png'} and {r['latents']} "
          f"({r['seconds_per_image']:.1f} s per image)")


def _add_forget(sub) -> None:
    fg = sub.add_parser("forget", help="drop the G feature maps that draw a boxed object (paper 6.2)",
                        description='Boxes file: {"boxes": [{"seed": 0, "index": 3, "boxes": [[x0, y0, x1, '
                                    'y1], ...]}, ...]} in pixels of G\'s images (x1, y1 exclusive); index is '
                                    'the number printed by `dcgan sample --numbered --seed S`.')
    fg.add_argument("source", help=SOURCE)
    fg.add_argument("--boxes", required=True, help="boxes JSON file")
    fg.add_argument("--drop", default="positive", help="positive (paper) | threshold:T | top:K")
    fg.add_argument("--layer", type=int, default=-3, help="G feature map to drop from, counted as "
                    "G(z, return_features=True) lists them (-1 is the image): -3 is the "
                    "paper's second-highest conv layer, -2 the last hidden one")
    fg.add_argument("--n", type=int, default=8, help="extra samples of --seed shown with and without")
    fg.add_argument("--seed", type=int, default=0)
    fg.add_argument("--out", default="forget")
    fg.add_argument("--generator", choices=("ema", "raw"), help=GENERATOR)
    fg.add_argument("--erase", default="global", choices=("global", "local"),
                    help="global: drop the maps at every location (the paper); local: only at the layer "
                    "locations inside each boxed sample's boxes (the --n extra samples, which have no boxes, "
                    "stay unchanged)")
    fg.add_argument("--curve", default="auto", help="effect curve in forget_curve.png and forget.json: the "
                    "pixel change inside and outside the boxes, k top-weight maps dropped vs k random "
                    "ones, for k in a comma-separated list such as 0,4,16; auto: 0, 1, 2, 4, ... the maps in "
                    "the layer, and the count --drop chose; none: no curve")
    fg.set_defaults(func=cmd_forget)


def cmd_forget(args: argparse.Namespace) -> None:
    r = dcgan.forget(args.source, boxes=args.boxes, out=args.out, drop=args.drop, n=args.n, seed=args.seed,
                     layer=args.layer, generator=args.generator, erase=args.erase, curve=args.curve)
    print(f"dropped ({r['erase']}) {r['dropped']} of {r['maps_in_layer']} feature maps of layer {r['layer']} "
          f"({r['layer_size']}x{r['layer_size']}; detector accuracy "
          f"{r['detector_accuracy']:.2f} on {r['positives']} + {r['negatives']} locations); mean pixel "
          f"change {r['mean_abs_change_in_boxes']:.3f} inside the boxes, {r['mean_abs_change_outside']:.3f} "
          f"outside; {Path(args.out) / 'forget.png'}")
    if "curve" in r:
        print(f"effect curve for k = {', '.join(str(row['k']) for row in r['curve'])}: "
              f"{Path(args.out) / 'forget_curve.png'}")


# ---- quality and memorisation ---------------------------------------------------------------

def _add_evaluate(sub) -> None:
    v = sub.add_parser("evaluate", help="FID, KID, precision/recall (and IS) of a trained generator")
    v.add_argument("source", help=SOURCE)
    v.add_argument("--data", help="the real images to compare with (default: the run's training data)")
    v.add_argument("--data-dir", dest="data_dir")
    v.add_argument("--split", default="test", help="test or train")
    v.add_argument("--n", type=int, default=10000, help="generated and real images")
    v.add_argument("--extractor", default="inception", help="the network whose features the metrics "
                   "compare: inception | classifier:PATH (from dcgan train-classifier)")
    v.add_argument("--inception-weights", dest="inception_weights",
                   help=TrainConfig.__dataclass_fields__["inception_weights"].metadata["help"])
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--out", help="also write the numbers to this JSON file")
    v.add_argument("--real-vs-real", dest="real_vs_real", action="store_true",
                   help="compare two disjoint draws of --n real images instead: the floor of every metric "
                        "at this n and size, which no generator can beat")
    v.add_argument("--generator", choices=("ema", "raw"), help=GENERATOR)
    v.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> None:
    r = dcgan.evaluate(args.source, data=args.data, n=args.n, extractor=args.extractor,
                       data_dir=args.data_dir, split=args.split, inception_weights=args.inception_weights,
                       seed=args.seed, out=args.out, real_vs_real=args.real_vs_real,
                       generator=args.generator)
    line = dcgan.describe_quality(r)
    print(f"{line}  ({r['n_fake']} generated vs {r['n_real']} real {r['data']} {r['split']} images, "
          f"{args.extractor} features)")
    for key, value in r["protocol"].items():
        print(f"  {key}: {value}")


def _add_train_classifier(sub) -> None:
    c = sub.add_parser("train-classifier", help="a small CNN whose features serve FID/KID on small data")
    c.add_argument("--data", required=True, help="a labelled dataset: fashion-mnist, mnist, cifar10, ...")
    c.add_argument("--data-dir", dest="data_dir")
    c.add_argument("--out", required=True, help="output .safetensors")
    c.add_argument("--epochs", type=int, default=3, help="passes over the training split")
    c.add_argument("--seed", type=int, default=0)
    c.set_defaults(func=cmd_train_classifier)


def cmd_train_classifier(args: argparse.Namespace) -> None:
    r = dcgan.train_classifier(args.data, out=args.out, data_dir=args.data_dir, epochs=args.epochs,
                               seed=args.seed)
    print(f"wrote {args.out}: test accuracy {r['test_accuracy']:.4f} ({r['test_images']} test images)")


def _add_neighbours(sub) -> None:
    nb = sub.add_parser("neighbours", help="nearest training images of samples (memorisation check)")
    nb.add_argument("source", help="run directory or checkpoint (exported .safetensors: pixels only)")
    nb.add_argument("--data", help="the training images (default: the run's training data)")
    nb.add_argument("--data-dir", dest="data_dir")
    nb.add_argument("--n", type=int, default=8, help="samples")
    nb.add_argument("--k", type=int, default=5, help="neighbours per sample")
    nb.add_argument("--seed", type=int, default=0)
    nb.add_argument("--out", default="neighbours")
    nb.add_argument("--generator", choices=("ema", "raw"), help=GENERATOR)
    nb.set_defaults(func=cmd_neighbours)


def cmd_neighbours(args: argparse.Namespace) -> None:
    r = dcgan.neighbours_report(args.source, data=args.data, out=args.out, n=args.n, k=args.k, seed=args.seed,
                                data_dir=args.data_dir, generator=args.generator)
    for space in ("pixels", "features"):
        if space in r:
            s = r[space]
            print(f"{space:8s}: median sample->train {s['sample_to_train_median']:.4f}, train->train "
                  f"{s['train_to_train_median']:.4f} (ratio {s['ratio']:.2f}); "
                  f"{s['samples_closer_than_that']} sample(s) closer than the 1st percentile of train->train")
    print(f"grids and numbers in {args.out}")


def _add_dedup(sub) -> None:
    d = sub.add_parser("dedup", help="find near-duplicate images by semantic hashing (paper 4.1.1)")
    d.add_argument("data", help="folder of images or a named dataset")
    d.add_argument("--out", required=True, help="report folder")
    d.add_argument("--data-dir", dest="data_dir")
    d.add_argument("--channels", type=int, help="1 or 3 (default: the data's own)")
    d.add_argument("--bits", type=int, default=128, help="hash code bits (paper: 128)")
    d.add_argument("--epochs", type=int, default=30, help="autoencoder training epochs")
    d.add_argument("--hamming", type=int, default=0,
                   help="0: equal codes (the paper); R: codes at most R bits apart also match")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--copy-to", dest="copy_to", help="copy the kept images of a folder here")
    d.set_defaults(func=cmd_dedup)


def cmd_dedup(args: argparse.Namespace) -> None:
    result = dcgan.dedup(args.data, out=args.out, data_dir=args.data_dir, channels=args.channels,
                         bits=args.bits, epochs=args.epochs, hamming=args.hamming, seed=args.seed,
                         copy_to=args.copy_to)
    print(f"{len(result.names)} images: {len(result.duplicates)} duplicates in {len(result.groups)} "
          f"groups ({len(result.exact_groups)} exact); report in {args.out}; leave them out with "
          f"dcgan train --exclude {Path(args.out) / 'duplicates.txt'}")


# ---- the discriminator's features (paper 5) -------------------------------------------------

def _add_features(sub) -> None:
    f = sub.add_parser("features", help="D's conv features max-pooled to 4x4 (paper 5.1): a folder of "
                       "memory-mappable .npy files for `dcgan probe --features`, or one split as .npz")
    f.add_argument("source", help="run directory or checkpoint .pt")
    f.add_argument("--data", help="a labelled dataset (default: the run's training data)")
    f.add_argument("--data-dir", dest="data_dir")
    f.add_argument("--split", default="train", help="train or test (an .npz --out holds one split)")
    f.add_argument("--out", required=True, help="a folder (no suffix): train.npy, test.npy (float32, one row "
                   "per image, written batch by batch), their labels and features.json; or FILE.npz: one "
                   "--split's features and labels in memory")
    f.add_argument("--grid", type=int, default=4, help="each layer max-pooled to grid x grid (paper: 4)")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--device", default="auto", help="where D computes the features: cpu | cuda | mps | "
                   "auto (a GPU when there is one)")
    f.set_defaults(func=cmd_features)


def cmd_features(args: argparse.Namespace) -> None:
    r = dcgan.write_features(args.source, data=args.data, out=args.out, split=args.split,
                             data_dir=args.data_dir, grid=args.grid, seed=args.seed, device=args.device)
    print(f"wrote {args.out}: {r['images']} x {r['dim']} features of {r['data']} {r['split']}")


def _add_probe(sub) -> None:
    r = sub.add_parser("probe", help="linear L2-SVM on D's features vs baselines (paper 5.1-5.2)")
    r.add_argument("source", help="run directory or checkpoint .pt")
    r.add_argument("--data", help="a labelled dataset with train and test splits (default: the run's "
                   "training data)")
    r.add_argument("--data-dir", dest="data_dir")
    r.add_argument("--protocol", default="few", help="few (N labels per class) or full")
    r.add_argument("--per-class", dest="per_class", type=int, default=100,
                   help="few: labelled training images per class")
    r.add_argument("--draws", type=int, default=10, help="few: random draws of the labelled images")
    r.add_argument("--baselines", default="pixels,random,kmeans", help="comma list, or empty")
    r.add_argument("--kmeans-k", dest="kmeans_k", type=int, default=400,
                   help="centroids of the K-means baseline")
    r.add_argument("--max-train", dest="max_train", type=int, help="use at most this many training images")
    r.add_argument("--max-test", dest="max_test", type=int, help="use at most this many test images")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--out", default="probe", help="folder for probe.md and probe.json")
    r.add_argument("--grid", type=int, default=4, help="D features: each layer max-pooled to grid x grid "
                   "(paper: 4)")
    r.add_argument("--random-inits", dest="random_inits", type=int, default=3,
                   help="the random baseline: this many independently initialised D, averaged")
    r.add_argument("--val-size", dest="val_size", type=int, default=10000,
                   help="few: validation images that choose C (paper: 10,000; at most half the train split)")
    r.add_argument("--device", default="auto", help="where D computes the features: cpu | cuda | mps | "
                   "auto (a GPU when there is one); the SVMs run there too")
    r.add_argument("--features", help="a folder from `dcgan features SOURCE --out FOLDER` (same --data, "
                   "--grid, --seed): D's features are read from it, memory-mapped, not recomputed")
    r.set_defaults(func=cmd_probe)


def cmd_probe(args: argparse.Namespace) -> None:
    rows = dcgan.probe(args.source, data=args.data, protocol=args.protocol,
                       baselines=tuple(b for b in (args.baselines or "").split(",") if b),
                       data_dir=args.data_dir, per_class=args.per_class, draws=args.draws,
                       kmeans_k=args.kmeans_k, max_train=args.max_train, max_test=args.max_test,
                       seed=args.seed, out=args.out, grid=args.grid, random_inits=args.random_inits,
                       val_size=args.val_size, device=args.device, features=args.features)
    for r in rows:
        print(f"{r['method']:40s} {r['dim']:>7,d} dims  {dcgan.describe_probe(r)}")
        if "paired_vs_first" in r:
            print(f"{'':58s}{dcgan.describe_paired(r['paired_vs_first'], rows[0]['method'])}")
    print(f"table: {Path(args.out) / 'probe.md'}")


# ---- inside the networks --------------------------------------------------------------------

def _add_guided_backprop(sub) -> None:
    gb = sub.add_parser("guided-backprop", help="top images and guided-backprop maps of D's filters, "
                        "trained vs random D (paper 6.2)")
    gb.add_argument("source", help="run directory or checkpoint .pt")
    gb.add_argument("--data", help="images to search for top activations (default: the run's training "
                   "data)")
    gb.add_argument("--data-dir", dest="data_dir")
    gb.add_argument("--filters", type=int, default=8, help="filters (channels) 0..N-1 of the layer")
    gb.add_argument("--top", type=int, default=6, help="top-activating images per filter")
    gb.add_argument("--layer", type=int, default=-1, help="D block (-1: the last conv layer)")
    gb.add_argument("--max-images", dest="max_images", type=int, default=5000)
    gb.add_argument("--seed", type=int, default=0)
    gb.add_argument("--out", default="guided-backprop")
    gb.set_defaults(func=cmd_guided_backprop)


def cmd_guided_backprop(args: argparse.Namespace) -> None:
    r = dcgan.guided_backprop_report(args.source, data=args.data, out=args.out, filters=args.filters,
                                     top=args.top, layer=args.layer, max_images=args.max_images,
                                     data_dir=args.data_dir, seed=args.seed)

    def both(key: str) -> str:
        values = (r[net][key] for net in ("trained", "random"))
        return " vs ".join("n/a" if v is None else f"{v:.3f}" for v in values)

    print(f"wrote {r['png']}: filters 0..{args.filters - 1} of {r['layer']}, trained vs random D; "
          f"structure {both('structure')}, image correlation {both('image_correlation')}")


def _add_feature_maps(sub) -> None:
    fm = sub.add_parser("feature-maps", help="every layer's feature maps of G for one z, or of D for "
                        "one image")
    fm.add_argument("source", help="run directory, checkpoint .pt (or exported .safetensors for G)")
    fm.add_argument("--net", default="g", help="g or d")
    fm.add_argument("--seed", type=int, default=0, help="G's input: sample (seed, index)")
    fm.add_argument("--index", type=int, default=0)
    fm.add_argument("--image", help="D's input image (default: G's sample (seed, index))")
    fm.add_argument("--latents", help="--index numbers the rows of this latents file (from `dcgan project`) "
                    "instead of seed's samples")
    fm.add_argument("--max-channels", dest="max_channels", type=int, default=32)
    fm.add_argument("--out", default="feature-maps")
    fm.add_argument("--generator", choices=("ema", "raw"), help=GENERATOR)
    fm.set_defaults(func=cmd_feature_maps)


def cmd_feature_maps(args: argparse.Namespace) -> None:
    r = dcgan.feature_map_report(args.source, out=args.out, net=args.net, seed=args.seed, index=args.index,
                                 image=args.image, max_channels=args.max_channels, generator=args.generator,
                                 latents=args.latents)
    print(f"wrote {r['png']}: {len(r['layers'])} layers of {args.net.upper()}")


# ---- housekeeping ---------------------------------------------------------------------------

def _add_explore(sub) -> None:
    p = sub.add_parser("explore", help="a local web page to explore trained models",
                       description="Serve a web page for one or more trained models: sample sheets, vector "
                                   "arithmetic and directions, walks, forgetting, projection, feature maps, "
                                   "D's scores and the training curves. Every view runs the same function as "
                                   "its command, offers the same PNG and JSON for download and keeps its "
                                   "state in the page's address.")
    p.add_argument("sources", nargs="+", metavar="SRC", help=SOURCE + "; several: switch between them")
    p.add_argument("--data", help="the training images, for the views that need them (default: the run's)")
    p.add_argument("--data-dir", dest="data_dir")
    p.add_argument("--host", default=LOCALHOST, help=f"address to listen on (default: {LOCALHOST}, this "
                   "machine only; 0.0.0.0 exposes the models and your files' names to the network)")
    p.add_argument("--port", type=int, default=8000, help="default: 8000")
    p.add_argument("--open", action="store_true", help="open the page in the default browser")
    p.set_defaults(func=cmd_explore)


LOCALHOST = "127.0.0.1"


def cmd_explore(args: argparse.Namespace) -> None:
    import uvicorn

    check_count(args.port, "--port", 65535)
    try:  # uvicorn would log a traceback and exit: say it in one line instead
        family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
        with socket.socket(family) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((args.host, args.port))
    except OSError as e:
        raise DCGANError(f"cannot listen on {args.host} port {args.port}: {describe_os_error(e)}; "
                         "give another --port") from None
    app = dcgan.explorer(args.sources, data=args.data, data_dir=args.data_dir)
    url = f"http://{'[' + args.host + ']' if ':' in args.host else args.host}:{args.port}/"
    if args.host in (LOCALHOST, "localhost", "::1"):
        print(f"serving {url} (this machine only; Ctrl-C stops it)", flush=True)
    else:
        print(f"warning: --host {args.host} lets other machines reach the explorer and run your models; "
              f"serving {url}", file=sys.stderr, flush=True)
    if args.open:
        import webbrowser

        webbrowser.open(url)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


def _add_prepare(sub) -> None:
    p = sub.add_parser("prepare", help="decode a dataset into the cache now, in parallel",
                       description="Decode every image of DATA once (centre crop, resize) into the dataset "
                                   "cache, as dcgan train does on first use; an interrupted run continues "
                                   "where it stopped. Larger than DCGAN_MAX_MEMORY_GB, training reads it "
                                   "memory-mapped.")
    p.add_argument("data", help="a folder of images or a named dataset (celeba, lsun, cifar10, ...)")
    p.add_argument("--data-dir", dest="data_dir", help="where a named dataset's files are")
    p.add_argument("--image-size", dest="image_size", type=int,
                   help="the size the model will train at (default: the dataset's, 64 for a folder)")
    p.add_argument("--channels", type=int, choices=[1, 3], help="default: the dataset's, 3 for a folder")
    p.add_argument("--split", choices=["train", "test"], default="train",
                   help="a named dataset's split (default: train)")
    p.add_argument("--exclude", help="text file of image paths (or dataset indices) to leave out")
    p.add_argument("--workers", type=int, help="decoding processes (default: all cores)")
    p.set_defaults(func=cmd_prepare)


def cmd_prepare(args: argparse.Namespace) -> None:
    r = dcgan.prepare(args.data, image_size=args.image_size, channels=args.channels, data_dir=args.data_dir,
                      split=args.split, exclude=args.exclude, workers=args.workers)
    shape = f"{r['image_size']}x{r['image_size']}x{r['channels']}"
    done = (f"decoded in {r['seconds']:.1f} s, {r['images_per_second']:,.0f} images/s" if r["built"]
            else "already decoded")
    how = "memory-mapped" if r["mapped"] else "read into memory"
    print(f"{r['images']:,} images {shape} in {r['cache']} ({r['bytes'] / 2**20:,.1f} MiB, "
          f"{r['bytes_per_image']:,.0f} bytes/image; {done}); training will read it {how}")


def _add_cache(sub) -> None:
    p = sub.add_parser("cache", help="list or clear the decoded-dataset cache",
                       description="Datasets are decoded once into $DCGAN_CACHE_DIR (default ~/.cache/dcgan) "
                                   "and reused while their files are unchanged. Only files the cache "
                                   "itself wrote are listed or deleted.")
    p.add_argument("action", choices=["list", "clear"])
    p.set_defaults(func=cmd_cache)


def cmd_cache(args: argparse.Namespace) -> None:
    if args.action == "clear":
        count, freed = dcgan.clear_cache()
        print(f"removed {count} cached dataset(s) from {dcgan.cache_dir()}, "
              f"{freed / 2**20:.1f} MiB freed")
        return
    entries = dcgan.cache_entries()
    for e in entries:
        what = e["source"] or "unknown (written by an older version)"
        if e.get("size"):
            what = (f"{what} {e['split']} {e['size']}x{e['size']}x{e['channels']}, {e['images']} images"
                    + (f", from {e['data_dir']}" if e.get("data_dir") else ""))
        print(f"{e['bytes'] / 2**20:9.1f} MiB  {Path(e['file']).name}  {what}")
    total = sum(e["bytes"] for e in entries)
    print(f"{len(entries)} dataset(s), {total / 2**20:.1f} MiB in {dcgan.cache_dir()}; "
          "free it with: dcgan cache clear")


# ---- the parser -----------------------------------------------------------------------------

SUBCOMMANDS = [_add_train, _add_sample, _add_export, _add_walk, _add_arithmetic, _add_directions,
               _add_project, _add_forget, _add_evaluate, _add_train_classifier, _add_neighbours, _add_dedup,
               _add_features, _add_probe, _add_guided_backprop, _add_feature_maps, _add_explore,
               _add_prepare, _add_cache]


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="dcgan", description="Deep Convolutional GANs (Radford, Metz, Chintala 2015): train, "
                                          "sample, reproduce the paper's experiments, look inside a model.")
    sub = p.add_subparsers(dest="command", required=True)
    for add in SUBCOMMANDS:
        add(sub)
    for command in sub.choices.values():
        _show_defaults(command)
    return p


# what an option without its own help text means, wherever it appears
SHARED_HELP = {"seed": "random seed: the same seed gives the same samples and draws",
               "out": "output folder", "data_dir": "where a named dataset's files are",
               "device": "cpu | cuda | cuda:N | mps | auto", "data": "folder of images or a named dataset"}


def _show_defaults(command: argparse.ArgumentParser) -> None:
    """Every option's help ends with its default (`dcgan train` states its own)."""
    for action in command._actions:
        if not action.option_strings or action.help == argparse.SUPPRESS:
            continue
        text = action.help or SHARED_HELP.get(action.dest, "")
        hidden = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if not hidden and "default" not in text:
            text += " (default: %(default)s)"
        action.help = text.strip() or None


class _Parser(argparse.ArgumentParser):
    """argparse, with a bad flag reported like every other bad input: one `error:` line, exit code 1."""

    def error(self, message: str):
        self.exit(1, f"error: {self.prog}: {' '.join(message.split())} (see {self.prog} --help)\n")


def _report_bug(exc: BaseException) -> None:
    """A genuine bug: one line saying so and where the traceback went; DCGAN_DEBUG=1 prints it inline."""
    import tempfile
    import traceback

    text = "".join(traceback.format_exception(exc))
    if os.environ.get("DCGAN_DEBUG") == "1":
        sys.stderr.write(text)
        where = "above"
    else:
        try:
            fd, where = tempfile.mkstemp(prefix="dcgan-bug-", suffix=".txt")
            with os.fdopen(fd, "w") as f:
                f.write(f"dcgan {' '.join(sys.argv[1:])}\n\n{text}")
        except OSError:
            where = "nowhere (the temp folder is not writable; rerun with DCGAN_DEBUG=1)"
    first = " ".join(str(exc).split())[:200]
    print(f"error: this is a bug in dcgan, not in your input ({type(exc).__name__}: {first}); the full "
          f"traceback is in {where}; please report it (DCGAN_DEBUG=1 prints it inline)", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        args.func(args)
    except TrainingInterrupted as e:  # a clean stop asked for by the user, not an error
        print("stopped: " + " ".join(str(e).split()), file=sys.stderr)
        return 130
    except DCGANError as e:
        print("error: " + " ".join(str(e).split()), file=sys.stderr)  # always one line
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the last line of defence: no traceback for a user
        _report_bug(e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
