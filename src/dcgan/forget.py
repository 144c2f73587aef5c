"""Forgetting to draw an object (paper §6.2).

The paper drew window boxes on 150 bedroom samples, fit a logistic regression on the activations
of G's second-highest conv layer (positives: locations inside the boxes; negatives: random other
locations of the same images) and dropped every feature map with a positive weight at every
location: the same z then drew bedrooms without windows. This module does that for any run.

Which layer: the paper dropped "about 200" maps, but the last hidden layer of its 1024-512-256-128
G (32x32x128) has only 128, so "second-highest" counts conv layers below the output: the 16x16x256
layer. `layer` indexes G's feature maps as `G(z, return_features=True)` lists them (the projection
first, the image last): -3, the default, is that layer (8x8 of a 32x32 G); -2 is the last hidden one.

Beyond the paper: `erase="local"` zeroes the maps only at the layer locations inside each boxed
sample's boxes, and the effect curve measures, for k maps dropped, the pixel change inside and
outside the boxes with the k largest-weight maps against k random ones (a pixel measure: the
detector's own score on the dropped layer would fall by construction).

Boxes file (JSON), in the pixel coordinates of G's own images (0..image_size; x right, y down;
x1 and y1 exclusive), each sample named by (seed, index) as `dcgan sample --numbered` prints it:

    {"boxes": [{"seed": 0, "index": 3, "boxes": [[4, 10, 12, 20]]},
               {"seed": 0, "index": 17, "boxes": [[20, 2, 30, 9], [1, 1, 5, 5]]}]}

A synthetic dataset with an object of known appearance (a bright square "window" on varied dark
backgrounds) makes the effect measurable: boxes come from thresholding, and dropping the fitted
maps must remove the bright pixels inside the boxes while leaving the rest of the image nearly as
it was (benchmarks/forget.py, tests/test_inspect.py).
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dcgan.checkpoint import load_generator
from dcgan.config import MAX_SEED, check_count, check_seed
from dcgan.errors import DCGANError, check_regular_file
from dcgan.models import Generator, eval_mode
from dcgan.outputs import check_out_dir, write_bytes, write_json, write_text
from dcgan.visualize import save_figure

__all__ = ["forget"]  # public: dcgan.NAME

MAX_BOXED = 1024  # boxed samples: G runs on them in one batch, the detector on all their locations
MAX_BOXES = 64  # boxes per sample
MAX_BOXES_BYTES = 16 << 20
PAPER_LAYER = -3  # the second-highest conv layer below G's output layer (16x16x256 in the paper)


@dataclass
class Boxed:
    seed: int
    index: int
    boxes: list[tuple[int, int, int, int]]  # x0, y0, x1, y1 in image pixels, x1/y1 exclusive


def read_boxes(path: str | Path, image_size: int) -> list[Boxed]:
    path = Path(path)
    if not path.exists():
        raise DCGANError(f"boxes file {path} not found (format: see `dcgan forget --help`)")
    check_regular_file(path, "boxes file")
    if path.stat().st_size > MAX_BOXES_BYTES:
        raise DCGANError(f"boxes file {path} is larger than {MAX_BOXES_BYTES >> 20} MiB")
    try:
        entries = json.loads(path.read_bytes().decode("utf-8"))["boxes"]
        if not isinstance(entries, list):
            raise TypeError(f"boxes is a {type(entries).__name__}, not a list")
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError, RecursionError) as e:
        raise DCGANError(f"{path} is not a boxes file: expected UTF-8 JSON "
                         '{"boxes": [{"seed": S, "index": I, "boxes": [[x0, y0, x1, y1]]}]} '
                         f"({type(e).__name__}: {' '.join(str(e).split())[:120]})") from None
    if len(entries) > MAX_BOXED:
        raise DCGANError(f"{path} boxes {len(entries)} samples; at most {MAX_BOXED} are allowed")
    out = []
    for n, e in enumerate(entries):
        where = f"{path}, entry {n}"
        try:
            if not isinstance(e["boxes"], list) or len(e["boxes"]) > MAX_BOXES:
                raise ValueError
            seed, index = _integer(e["seed"]), _integer(e["index"])
            boxes = [tuple(_integer(v) for v in b) for b in e["boxes"]]
            check_seed(seed, "seed", MAX_SEED)
            check_count(index, "index", 2**31 - 1, 0)
        except (KeyError, TypeError, ValueError, DCGANError):
            raise DCGANError(f"{where}: needs an integer seed (0..{MAX_SEED}) and index (0..{2**31 - 1}) and "
                             f"a list of at most {MAX_BOXES} [x0, y0, x1, y1] boxes") from None
        for b in boxes:
            if len(b) != 4 or not (0 <= b[0] < b[2] <= image_size and 0 <= b[1] < b[3] <= image_size):
                raise DCGANError(f"{where}: box {list(b)} must be [x0, y0, x1, y1] with 0 <= x0 < x1 <= "
                                 f"{image_size} and 0 <= y0 < y1 <= {image_size} (G's image pixels)")
        out.append(Boxed(seed, index, boxes))
    if not out:
        raise DCGANError(f"{path} holds no boxes")
    return out


def _integer(v) -> int:
    """A JSON integer (an integral float such as 3.0 too); anything else is a ValueError."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or int(v) != v:
        raise ValueError(v)
    return int(v)


def write_boxes(path: str | Path, boxed: list[Boxed]) -> Path:
    write_text(path, json.dumps({"boxes": [{"seed": b.seed, "index": b.index,
                                                  "boxes": [list(x) for x in b.boxes]} for b in boxed]}))
    return Path(path)


def box_mask(boxes, size: int) -> torch.Tensor:
    """(size, size) bool, True inside any box (in pixels of an image of `size`)."""
    m = torch.zeros(size, size, dtype=torch.bool)
    for x0, y0, x1, y1 in boxes:
        m[y0:y1, x0:x1] = True
    return m


def layer_mask(boxes, image_size: int, grid_size: int) -> torch.Tensor:
    """(grid_size, grid_size) bool: the layer locations whose receptive-field centre is in a box."""
    centres = (torch.arange(grid_size) + 0.5) * image_size / grid_size
    pixel = box_mask(boxes, image_size)
    ij = centres.long()
    return pixel[ij][:, ij]


def layer_module(g: Generator, layer: int) -> torch.nn.Module:
    """The module whose output is G's feature map number `layer` (the projection is 0, the image -1);
    any hidden layer may be chosen, the image layer may not."""
    modules = [g.project_and_reshape, *g.blocks]
    if not -len(modules) <= layer < len(modules) - 1 or layer == -1:
        raise DCGANError(f"--layer {layer}: G of {g.config.image_size}x{g.config.image_size} images has "
                         f"hidden layers -{len(modules)}..-2 (or 0..{len(modules) - 2}); -1 is the image")
    return modules[layer]


def activations(g: Generator, z: torch.Tensor, layer: int = PAPER_LAYER) -> torch.Tensor:
    """G's feature map number `layer` for z: (n, C, s, s)."""
    layer_module(g, layer)
    with torch.no_grad(), eval_mode(g):
        _, maps = g(z, return_features=True)
    return maps[layer]


def fit_window_detector(g: Generator, boxed: list[Boxed], negatives: int = 1, seed: int = 0,
                        layer: int = PAPER_LAYER) -> dict:
    """Logistic regression on the activation vectors at layer locations: inside a box -> 1, random
    locations outside every box of the same image (`negatives` per positive) -> 0."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    xs, ys = [], []
    maps = activations(g, torch.cat([g.latent(b.seed, [b.index]) for b in boxed]), layer).cpu()
    for b, h in zip(boxed, maps, strict=True):  # h: (C, s, s)
        inside = layer_mask(b.boxes, g.config.image_size, h.shape[-1])
        pos = inside.flatten().nonzero().flatten().numpy()
        neg = (~inside).flatten().nonzero().flatten().numpy()
        if len(pos) == 0:
            raise DCGANError(f"sample (seed {b.seed}, index {b.index}): its boxes cover no location of G's "
                             f"{h.shape[-1]}x{h.shape[-1]} layer; draw larger boxes")
        neg = rng.choice(neg, min(len(neg), negatives * len(pos)), replace=False)
        flat = h.flatten(1).T.numpy()  # (s*s, C)
        xs += [flat[pos], flat[neg]]
        ys += [np.ones(len(pos)), np.zeros(len(neg))]
    x, y = np.concatenate(xs), np.concatenate(ys)
    if y.min() == y.max():
        raise DCGANError("the boxes cover whole images: the detector needs locations outside them too")
    x = StandardScaler().fit_transform(x)  # per-map positive scaling: the weights' signs are unchanged
    model = LogisticRegression(max_iter=2000).fit(x, y)
    return {"weights": model.coef_[0], "accuracy": float(model.score(x, y)),
            "positives": int(y.sum()), "negatives": int(len(y) - y.sum())}


def choose_maps(weights: np.ndarray, rule: str = "positive") -> list[int]:
    """positive: every map with weight > 0 (the paper); threshold:T: weight > T; top:K: the K largest."""
    kind, _, value = rule.partition(":")
    try:
        if kind == "positive" and not value:
            return [int(i) for i in np.flatnonzero(weights > 0)]
        if kind == "threshold":
            t = float(value)
            if t != t or t in (float("inf"), float("-inf")):
                raise ValueError
            return [int(i) for i in np.flatnonzero(weights > t)]
        if kind == "top":
            k = int(value)
            if k < 1:
                raise ValueError
            return [int(i) for i in np.argsort(-weights)[:k]]
    except ValueError:
        pass
    raise DCGANError(f"--drop must be positive, threshold:T (T finite) or top:K (K >= 1), got {rule[:80]!r}")


def generate_without(g: Generator, z: torch.Tensor, maps: list[int], layer: int = PAPER_LAYER,
                     where: torch.Tensor | None = None) -> torch.Tensor:
    """G(z) with the given maps of layer `layer` set to 0 at every location, or, with `where`
    ((n, s, s) bool, one per z), only at the layer locations where it is True (a local erase)."""
    module = layer_module(g, layer)
    if where is not None and len(where) != len(z):
        raise ValueError(f"where has {len(where)} masks for {len(z)} latents")
    done = 0  # G.generate runs z in batches: the rows of `where` already used

    def drop(module, inputs, output):
        nonlocal done
        dropped = torch.zeros(output.shape[1], dtype=torch.bool, device=output.device)
        dropped[maps] = True
        dropped = dropped.view(1, -1, 1, 1)
        if where is not None:  # (batch, C, s, s): the dropped maps at the chosen locations only
            dropped = dropped & where[done:done + len(output), None].to(output.device)
            done += len(output)
        return output.masked_fill(dropped, 0)

    handle = module.register_forward_hook(drop)
    try:
        return g.generate(z)
    finally:
        handle.remove()


def change_in_boxes(before: torch.Tensor, after: torch.Tensor, boxed: list[Boxed]) -> dict:
    """Mean absolute pixel change (in [0, 1] units) inside and outside the boxes."""
    size = before.shape[-1]
    masks = torch.stack([box_mask(b.boxes, size) for b in boxed])[:, None].expand_as(before)
    diff = (after - before).abs() / 2
    inside, outside = float(diff[masks].mean()), float(diff[~masks].mean()) if (~masks).any() else 0.0
    return {"inside": inside, "outside": outside, "ratio": inside / max(outside, 1e-12)}


ERASE_MODES = ("global", "local")  # the paper's drop at every location; zero only inside the boxes
CURVE_DRAWS = 5  # random-map draws averaged per point of the effect curve


def check_erase(erase: str) -> None:
    if erase not in ERASE_MODES:
        raise DCGANError(f"--erase must be global (the paper's drop at every location) or local (inside the "
                         f"boxes only), got {str(erase)[:80]!r}")


def parse_curve(curve: str | list[int] | None) -> list[int] | str | None:
    """--curve: "auto", "none" (or None), a list of map counts or a comma-separated one such as "0,4,16"."""
    if curve is None or (isinstance(curve, str) and curve in ("auto", "none")):
        return None if curve in (None, "none") else "auto"
    bad = DCGANError(f"--curve must be auto, none or comma-separated map counts >= 0 such as 0,4,16, got "
                     f"{str(curve)[:80]!r}")
    try:
        points = [int(v) for v in curve.split(",")] if isinstance(curve, str) else list(curve)
    except (ValueError, TypeError):
        raise bad from None
    if not points or any(isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 0 for k in points):
        raise bad
    return [int(k) for k in points]


def curve_points(maps_in_layer: int, chosen: int) -> list[int]:
    """0, 1, 2, 4, ... up to the maps in the layer, and the count the --drop rule chose."""
    points = {0, maps_in_layer, chosen}
    k = 1
    while k < maps_in_layer:
        points.add(k)
        k *= 2
    return sorted(points)


def effect_curve(g: Generator, boxed: list[Boxed], weights: np.ndarray, points: list[int],
                 layer: int = PAPER_LAYER, erase: str = "global", seed: int = 0,
                 draws: int = CURVE_DRAWS) -> list[dict]:
    """For each k of `points`: the mean absolute pixel change (in [0, 1] units) inside and outside the
    boxes of the boxed samples when the k maps with the largest detector weights are dropped ("top"),
    and when k random maps are (mean over `draws` seeded draws: "random")."""
    z = torch.cat([g.latent(b.seed, [b.index]) for b in boxed])
    where = local_masks(g, boxed, layer) if erase == "local" else None
    before = g.generate(z).cpu()
    order = np.argsort(-weights)
    rng = np.random.default_rng(seed)
    rows = []
    for k in points:
        top = change_in_boxes(before, generate_without(g, z, order[:k].tolist(), layer, where).cpu(), boxed)
        rand = [change_in_boxes(before, generate_without(
            g, z, rng.choice(len(weights), k, replace=False).tolist(), layer, where).cpu(), boxed)
            for _ in range(draws)]
        sides = ("inside", "outside")
        rows.append({"k": k, "top": {side: top[side] for side in sides},
                     "random": {side: float(np.mean([r[side] for r in rand])) for side in sides}})
    return rows


def local_masks(g: Generator, boxed: list[Boxed], layer: int, extra: int = 0) -> torch.Tensor:
    """(len(boxed) + extra, s, s) bool: each boxed sample's layer locations inside its boxes; none for
    the extra samples."""
    size = activations(g, g.latent(0, [0]), layer).shape[-1]
    masks = [layer_mask(b.boxes, g.config.image_size, size) for b in boxed]
    return torch.stack(masks + [torch.zeros(size, size, dtype=torch.bool)] * extra)


def plot_curve(rows: list[dict], path: Path, title: str, chosen: int) -> Path:
    """forget_curve.png: the change inside and outside the boxes against the maps dropped, for the
    detector's top maps and for random ones; the series are in the PNG's text chunk `layout`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = [r["k"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    series = []
    for which, colour in (("top", "tab:red"), ("random", "tab:blue")):
        for side, style in (("inside", "o-"), ("outside", "s--")):
            label = f"{'top-weight' if which == 'top' else 'random'} maps, {side} the boxes"
            ax.plot(ks, [r[which][side] for r in rows], style, color=colour, label=label)
            series.append(label)
    ax.axvline(chosen, color="grey", lw=0.8, ls=":", label=f"--drop chose {chosen}")
    ax.set_xscale("symlog", linthresh=1)  # 0, 1, 2, 4, ...: evenly spaced from 1 on
    ax.set_xticks(ks, [str(k) for k in ks], fontsize=8)
    ax.set(xlabel="feature maps dropped (k)", ylabel="mean |pixel change| (0..1)", title=title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=100, format="png", metadata={"layout": json.dumps({"series": series, "k": ks})})
    plt.close(fig)
    return write_bytes(path, buffer.getvalue())


def forget(source: str | Path, *, boxes: str | Path, out: str | Path, drop: str = "positive", n: int = 8,
           seed: int = 0, layer: int = PAPER_LAYER, generator: str | None = None, erase: str = "global",
           curve: str | list[int] | None = "auto") -> dict:
    """Fit the detector, drop its maps, and show the same z with and without them: forget.png (pairs
    of rows: original, then forgotten; the boxed samples first, then n samples of `seed`),
    forget_curve.png (unless curve is None) and forget.json."""
    check_seed(seed, "seed", MAX_SEED)
    check_count(n, "n", 256, 0)
    choose_maps(np.zeros(1), drop)  # the rule, erase mode and curve are checked before any work
    check_erase(erase)
    curve = parse_curve(curve)
    check_out_dir(out, inputs=[source, boxes])
    g = load_generator(source, generator=generator)
    report = forget_maps(g, read_boxes(boxes, g.config.image_size), out, drop, n, seed, layer,
                         erase=erase, curve=curve)
    write_json(Path(out) / "forget.json", report)
    return report


def forget_maps(g: Generator, boxed: list[Boxed], out: str | Path, drop: str = "positive", n: int = 8,
                seed: int = 0, layer: int = PAPER_LAYER, *, erase: str = "global",
                curve: str | list[int] | None = "auto") -> dict:
    """`forget` for a loaded G and its boxes: writes forget.png (and forget_curve.png with a curve)
    and returns the report. erase: "global" drops the maps at every location (the paper), "local"
    only at the layer locations inside each boxed sample's boxes (the extra samples stay unchanged).
    curve: "auto" (0, 1, 2, 4, ... the maps in the layer, and the chosen count), a list of map counts,
    or None for no curve."""
    check_erase(erase)
    curve = parse_curve(curve)
    maps_in_layer = activations(g, g.latent(0, [0]), layer).shape[1]
    if isinstance(curve, list) and max(curve) > maps_in_layer:
        raise DCGANError(f"--curve point {max(curve)}: layer {layer} of G has {maps_in_layer} feature maps; "
                         f"points must be 0..{maps_in_layer}")
    fit = fit_window_detector(g, boxed, seed=seed, layer=layer)
    maps = choose_maps(fit["weights"], drop)
    z_boxed = torch.cat([g.latent(b.seed, [b.index]) for b in boxed])
    z = torch.cat([z_boxed, g.latent(seed, range(n))]) if n > 0 else z_boxed
    where = local_masks(g, boxed, layer, extra=n) if erase == "local" else None
    before, after = g.generate(z).cpu(), generate_without(g, z, maps, layer, where).cpu()
    change = change_in_boxes(before[:len(boxed)], after[:len(boxed)], boxed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    size = activations(g, z[:1], layer).shape[-1]
    rows, labels, tiles, drawn = [], [], [], {}
    groups = [("boxed", 0, len(boxed), [f"{b.seed}:{b.index}" for b in boxed]),
              (f"seed {seed}", len(boxed), len(z), [f"{seed}:{i}" for i in range(n)])]
    for name, first, last, names in groups:  # the boxed samples, then the extra ones: never mixed
        for s in range(first, last, 8):
            chunk = range(s, min(s + 8, last))
            for i in chunk:
                if i < len(boxed):
                    drawn[(len(rows), i - s)] = boxed[i].boxes
            rows += [[before[i] for i in chunk], [after[i] for i in chunk]]
            tiles += [[names[i - first] for i in chunk], [""] * len(chunk)]
            labels += [f"{name}: original", f"{name}: maps dropped"]
    where_text = ("at every location" if erase == "global" else
                  "only inside the boxes (local erase: the extra samples, without boxes, are unchanged)")
    title = (f"G without {len(maps)} of {len(fit['weights'])} feature maps of layer {layer} ({size}x{size}; "
             f"drop {drop}; detector accuracy {fit['accuracy']:.2f}) {where_text}; yellow: the boxes")
    save_figure(rows, out / "forget.png", title, labels, tile_labels=tiles, boxes=drawn)
    report = {"drop": drop, "erase": erase, "layer": layer, "layer_size": size, "dropped_maps": maps,
              "dropped": len(maps), "maps_in_layer": int(len(fit["weights"])),
              "detector_accuracy": fit["accuracy"],
              "positives": fit["positives"], "negatives": fit["negatives"], "boxed_samples": len(boxed),
              "mean_abs_change_in_boxes": change["inside"], "mean_abs_change_outside": change["outside"],
              "layout": "pairs of rows of 8: original G(z), then G(z) without the dropped maps"}
    if n > 0:
        report["mean_abs_change_extra"] = float((after[len(boxed):] - before[len(boxed):]).abs().mean() / 2)
    if curve is not None:
        points = curve_points(maps_in_layer, len(maps)) if curve == "auto" else sorted(set(curve))
        report["curve"] = effect_curve(g, boxed, fit["weights"], points, layer, erase, seed)
        report["curve_random_draws"] = CURVE_DRAWS
        report["curve_measure"] = (
            "mean absolute pixel change (0..1) of the boxed samples inside and outside their boxes when the "
            f"k maps of largest detector weight (top) or k random maps (random, mean of {CURVE_DRAWS} draws) "
            f"are dropped ({erase} erase)")
        plot_curve(report["curve"], out / "forget_curve.png",
                   f"Dropping maps of layer {layer} ({erase} erase), {len(boxed)} boxed samples", len(maps))
    return report


# ---- a synthetic object with known boxes ----------------------------------------------------
