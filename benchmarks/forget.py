"""Forgetting an object, measured (paper §6.2) on a synthetic dataset whose object has known boxes.

Images: smooth dark backgrounds (values <= 0.45) with one bright square "window" (side size/4) at a
random position, written as a folder of PNGs. A DCGAN trains on the folder as a user's would; the
windows G draws are found by thresholding; `dcgan.forget` fits the logistic regression on G's
second-highest conv layer with the first --boxes-from of them, drops the chosen maps and measures,
on the other samples with a window:
- window presence: the share of in-box pixels brighter than 0.75 (in [0, 1]), before and after;
- mean absolute pixel change inside the boxes and outside them, and their ratio;
- the same for a control that drops as many *random* maps (mean over 10 draws), so the effect can
  be told apart from "dropping maps breaks images".

    python benchmarks/forget.py      # 32x32, 5,000 images, 2,000 steps (a few min on 2 cores)

The first 16 fitted samples with and without the dropped maps go to docs/forget_windows.png.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import record
import torch
from PIL import Image
from torchvision.utils import save_image

from dcgan import forget as fg
from dcgan.checkpoint import load_generator
from dcgan.train import train


def random_control(run: Path, report: dict, seed: int, draws: int = 10) -> dict:
    """Drop as many random maps as the detector chose, on the same evaluation samples."""
    g = load_generator(run)
    boxed = [fg.Boxed(seed, i, [tuple(b)]) for i, b in report["evaluated"]]
    z = torch.cat([g.latent(seed, [b.index]) for b in boxed])
    masks = torch.stack([fg.box_mask(b.boxes, g.config.image_size) for b in boxed])
    before = g.generate(z)
    rng = np.random.default_rng(seed)
    presence, ratio = [], []
    for _ in range(draws):
        maps = rng.choice(report["maps_in_layer"], report["dropped"], replace=False).tolist()
        after = fg.generate_without(g, z, maps)
        presence.append(fg.window_presence(after, masks))
        ratio.append(fg.change_in_boxes(before, after, boxed)["ratio"])
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
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "windows"
        data.mkdir()
        images, _ = fg.synthetic_windows(a.images, a.size, seed=a.seed)
        for i, x in enumerate(images):
            save_image(x.float() / 255, data / f"{i:05d}.png")
        t = time.perf_counter()
        run = train({"data": str(data), "image_size": a.size, "channels": 1, "ngf": a.width, "ndf": a.width,
                     "nz": 32, "batch_size": 64, "steps": a.steps, "seed": a.seed, "tensorboard": False,
                     "out": str(Path(tmp) / "run")})
        train_s = time.perf_counter() - t
        r = fg.forget_synthetic(run, Path(tmp) / "forget", samples=a.samples, boxes_from=a.boxes_from,
                             drop=a.drop, seed=a.seed)
        control = random_control(run, r, a.seed)
        docs = Path(__file__).resolve().parent.parent / "docs"
        # pairs of rows: original, forgotten
        sheet = Image.open(Path(tmp) / "forget" / "forget.png", formats=["PNG"])
        sheet.crop((0, 0, sheet.width, 2 + 4 * (a.size + 2))).save(docs / "forget_windows.png")  # 2 pairs
    result = {**record.header(), "config": vars(a), "train_seconds": train_s, "forget": r,
              "random_maps_control": control}
    record.save("forget", result, title="Forgetting an object", lines=[
        f"  {a.size}x{a.size} windows, {a.images} images, {a.steps} steps ({train_s / 60:.1f} min), width "
        f"{a.width}: G drew a window in {r['samples_with_window']} of {r['samples_searched']} samples; "
        f"detector fit on {r['fit_on']} (accuracy {r['detector_accuracy']:.2f}), dropped {r['dropped']} of "
        f"{r['maps_in_layer']} maps ({a.drop}).",
        f"  On {r['evaluated_on']} other samples: window presence {r['presence_before']:.2f} -> "
        f"{r['presence_after']:.2f}; pixel change inside boxes {r['eval_change_in_boxes']:.3f} vs outside "
        f"{r['eval_change_outside']:.3f} (ratio {r['eval_change_ratio']:.1f}). Control, as many random maps "
        f"dropped: presence -> {control['presence_after']:.2f}, ratio {control['eval_change_ratio']:.1f}."])


if __name__ == "__main__":
    main()
