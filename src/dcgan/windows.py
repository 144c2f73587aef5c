"""A synthetic scene whose object has known boxes, for measuring forgetting (paper §6.2) in the
tests and benchmarks/forget.py: dark smooth backgrounds with one bright square window.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from dcgan.checkpoint import load_generator
from dcgan.errors import DCGANError
from dcgan.forget import (
    PAPER_LAYER,
    Boxed,
    box_mask,
    change_in_boxes,
    forget_maps,
    generate_without,
    write_boxes,
)
from dcgan.outputs import write_json


def synthetic_windows(n: int, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, list[tuple]]:
    """n grey images (n, 1, size, size) uint8: a smooth random background in [0, 0.45] and one
    bright square "window" (value 1, side size/4) at a random position; returns the window boxes."""
    gen = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 1, 4, 4, generator=gen)
    background = torch.nn.functional.interpolate(low, size=size, mode="bicubic", align_corners=False)
    background = background.clamp(0, 1) * 0.45
    side = size // 4
    xy = torch.randint(0, size - side + 1, (n, 2), generator=gen)
    boxes = []
    for img, (x, y) in zip(background, xy.tolist(), strict=True):
        img[:, y:y + side, x:x + side] = 1.0
        boxes.append((x, y, x + side, y + side))
    return background.mul(255).round().byte(), boxes


def find_windows(images: torch.Tensor, threshold: float = 0.5, min_pixels: int = 4) -> list[tuple | None]:
    """Images in [-1, 1] -> per image the bounding box of its largest region brighter than
    `threshold` (in [-1, 1]; the synthetic background never exceeds -0.1), or None."""
    boxes = []
    for img in images.detach().cpu().mean(1):
        labels, count = ndimage.label((img > threshold).numpy())
        if count == 0:
            boxes.append(None)
            continue
        sizes = ndimage.sum(np.ones_like(labels), labels, range(1, count + 1))
        biggest = int(np.argmax(sizes)) + 1
        if sizes[biggest - 1] < min_pixels:
            boxes.append(None)
            continue
        ys, xs = np.nonzero(labels == biggest)
        boxes.append((int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1))
    return boxes


def window_presence(images: torch.Tensor, boxed_masks: torch.Tensor, threshold: float = 0.5) -> float:
    """Share of in-box pixels brighter than `threshold`: 1 where the window is drawn, ~0 without."""
    bright = images.detach().cpu().mean(1) > threshold
    return float(bright[boxed_masks].float().mean())


def forget_synthetic(run: str | Path, out: str | Path, samples: int = 200, boxes_from: int = 60,
                     drop: str = "positive", seed: int = 0, layer: int = PAPER_LAYER) -> dict:
    """The measurable check: among boxes_from + samples samples of `seed`, the windows G draws are
    found by thresholding; the detector is fit on the first `boxes_from` of them, and the effect of
    dropping its maps is measured on the others: window presence inside their boxes before and
    after, and the pixel change inside vs. outside the boxes."""
    g = load_generator(run)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    candidates = g.sample(boxes_from + samples, seed=seed).cpu()
    found = find_windows(candidates)
    boxed = [Boxed(seed, i, [b]) for i, b in enumerate(found) if b is not None]
    fit_set, eval_set = boxed[:boxes_from], boxed[boxes_from:]
    if len(eval_set) < 2:
        raise DCGANError(f"G drew a window in only {len(boxed)} of {len(found)} samples: train it longer")
    write_boxes(out / "boxes.json", fit_set)  # what `dcgan forget --boxes` would take
    report = forget_maps(g, fit_set, out, drop, n=0, seed=seed, layer=layer)
    z = torch.cat([g.latent(b.seed, [b.index]) for b in eval_set])
    before = candidates[[b.index for b in eval_set]]
    after = generate_without(g, z, report["dropped_maps"], layer).cpu()
    masks = torch.stack([box_mask(b.boxes, g.config.image_size) for b in eval_set])
    change = change_in_boxes(before, after, eval_set)
    report.update({"samples_with_window": len(boxed), "samples_searched": len(found),
                   "fit_on": len(fit_set), "evaluated_on": len(eval_set),
                   "presence_before": window_presence(before, masks),
                   "presence_after": window_presence(after, masks),
                   "eval_change_in_boxes": change["inside"], "eval_change_outside": change["outside"],
                   "eval_change_ratio": change["ratio"],
                   "evaluated": [[b.index, list(b.boxes[0])] for b in eval_set]})
    write_json(out / "forget.json", report)
    return report
