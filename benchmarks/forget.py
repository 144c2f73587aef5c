"""Forgetting an object, measured (paper §6.2) on a synthetic dataset whose object has known boxes.

Images: smooth dark backgrounds (values <= 0.45) with one bright square "window" (side size/4) at a
random position, written as a folder of PNGs. A DCGAN trains on the folder as a user's would; the
windows G draws are found by thresholding; `dcgan.forget` fits the logistic regression on one G
layer (each of --layers: -3 is the paper's second-highest conv layer, -2 the last hidden one) with
the first --boxes-from of them, drops the chosen maps and measures, on the other samples with a
window:
- window presence: the share of in-box pixels brighter than 0.75 (in [0, 1]), before and after;
- mean absolute pixel change inside the boxes and outside them, and their ratio;
- the same for a control that drops as many *random* maps (mean over 10 draws), so the effect can
  be told apart from "dropping maps breaks images".

    python benchmarks/forget.py      # 32x32, 5,000 images, 2,000 steps (a few min on 2 cores)
    python benchmarks/forget.py --run RUN    # measure a run trained on the windows already

The first 16 fitted samples with and without the dropped maps go to docs/forget_windows.png.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import record
import torch
from PIL import Image
from torchvision.utils import save_image

from dcgan import windows
from dcgan.checkpoint import load, load_generator
from dcgan.forget import Boxed, box_mask, change_in_boxes, generate_without
from dcgan.train import train


def random_control(run: Path, report: dict, seed: int, layer: int, draws: int = 10) -> dict:
    """Drop as many random maps as the detector chose, on the same evaluation samples."""
    g = load_generator(run)
    boxed = [Boxed(seed, i, [tuple(b)]) for i, b in report["evaluated"]]
    z = torch.cat([g.latent(seed, [b.index]) for b in boxed])
    masks = torch.stack([box_mask(b.boxes, g.config.image_size) for b in boxed])
    before = g.generate(z)
    rng = np.random.default_rng(seed)
    presence, ratio = [], []
    for _ in range(draws):
        maps = rng.choice(report["maps_in_layer"], report["dropped"], replace=False).tolist()
        after = generate_without(g, z, maps, layer)
        presence.append(windows.window_presence(after, masks))
        ratio.append(change_in_boxes(before, after, boxed)["ratio"])
    return {"presence_after": float(np.mean(presence)), "eval_change_ratio": float(np.mean(ratio))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--images", type=int, default=5000)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--width", type=int, default=32, help="ngf = ndf")
    p.add_argument("--samples", type=int, default=400, help="samples searched for windows to evaluate on")
    p.add_argument("--boxes-from", dest="boxes_from", type=int, default=100, help="boxed samples to fit on")
    p.add_argument("--drop", default="positive")
    p.add_argument("--layers", default="-3,-2", help="G layers to drop maps from (first: the docs picture)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run", help="a run already trained on the synthetic windows: measure it, train nothing")
    a = p.parse_args()
    layers = [int(v) for v in a.layers.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "windows"
        data.mkdir()
        images, _ = windows.synthetic_windows(a.images, a.size, seed=a.seed) if not a.run else (None, None)
        for i, x in enumerate(images if images is not None else []):
            save_image(x.float() / 255, data / f"{i:05d}.png")
        t = time.perf_counter()
        run = Path(a.run) if a.run else train({
            "data": str(data), "image_size": a.size, "channels": 1, "ngf": a.width, "ndf": a.width, "nz": 32,
            "batch_size": 64, "steps": a.steps, "seed": a.seed, "tensorboard": False,
            "out": str(Path(tmp) / "run")})
        train_s = time.perf_counter() - t
        if a.run:  # the run's own settings, for the record
            ckpt = load(run)
            model = ckpt["config"]["model"]
            a.steps, a.width, a.size = ckpt["step"], model["ngf"], model["image_size"]
        per_layer = {}
        for layer in layers:
            out = Path(tmp) / f"forget{layer}"
            r = windows.forget_synthetic(run, out, samples=a.samples, boxes_from=a.boxes_from, drop=a.drop,
                                    seed=a.seed, layer=layer)
            per_layer[layer] = {"forget": r, "random_maps_control": random_control(run, r, a.seed, layer)}
            if layer == layers[0]:
                docs = Path(__file__).resolve().parent.parent / "docs"
                sheet = Image.open(out / "forget.png", formats=["PNG"])  # pairs of rows: original, forgotten
                layout = json.loads(sheet.text["layout"])  # the first two pairs of rows
                bottom = layout["top"] + 4 * layout["step"]
                sheet.crop((0, 0, sheet.width, bottom)).save(docs / "forget_windows.png")
    first = per_layer[layers[0]]["forget"]
    result = {**record.header(), "config": vars(a), "train_seconds": train_s,
              "layers": {str(k): v for k, v in per_layer.items()}}
    took = f"run {a.run}, trained before" if a.run else f"{train_s / 60:.1f} min"
    lines = [f"  {a.size}x{a.size} windows, {a.images} images, {a.steps} steps ({took}), "
             f"width {a.width}: G drew a window in {first['samples_with_window']} of "
             f"{first['samples_searched']} samples; detector fit on {first['fit_on']}, evaluated on "
             f"{first['evaluated_on']} others ({a.drop})."]
    for layer, v in per_layer.items():
        r, c = v["forget"], v["random_maps_control"]
        side = r["layer_size"]
        lines.append(
            f"  layer {layer} ({side}x{side}x{r['maps_in_layer']}): detector accuracy "
            f"{r['detector_accuracy']:.2f}, dropped {r['dropped']} maps; window presence "
            f"{r['presence_before']:.2f} -> {r['presence_after']:.2f}; change inside boxes "
            f"{r['eval_change_in_boxes']:.3f} vs outside {r['eval_change_outside']:.3f} "
            f"(ratio {r['eval_change_ratio']:.1f}). Control, as many random maps: presence -> "
            f"{c['presence_after']:.2f}, ratio {c['eval_change_ratio']:.1f}.")
    name = "forget"  # record.save date-stamps the file: earlier results stay
    record.save(name, result, title="Forgetting an object", lines=lines)


if __name__ == "__main__":
    main()
