"""Walking the latent space (paper §6.1) and vector arithmetic on z (paper §6.3).

Every z here is named by (seed, index), the numbers printed by `dcgan sample --numbered`, so an
exemplar a user picked from a sample sheet is the same vector in a walk or a sum.

- Walks: K latent points joined by M interpolation steps each, linear or spherical. The smoothness
  report measures the distance between consecutive frames in pixel space and in D's feature space
  and flags steps whose jump exceeds `factor` x the walk's median step: the paper's "sharp
  transition" sign that a model memorised rather than learned a smooth manifold.
- Arithmetic: Y = mean z(A) - mean z(B) + mean z(C) over a few exemplars per concept (one exemplar
  is unstable, the paper found three are not), G(Y) with 8 neighbours Y + U(-0.25, 0.25) noise, and
  the same sum done on pixels for comparison.
- Directions: v = mean z(to) - mean z(from) (the paper's "turn" vector), added in steps to samples.
"""

from __future__ import annotations

import json
import reprlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from dcgan.checkpoint import load_generator, load_networks
from dcgan.config import MAX_SEED, check_count, check_number, check_seed
from dcgan.data import to_uint8
from dcgan.distributed import pick_device
from dcgan.errors import DCGANError, check_regular_file
from dcgan.models import Discriminator, Generator
from dcgan.outputs import (
    IMAGE_SUFFIXES,
    check_out_dir,
    check_output_file,
    write_bytes,
    write_image,
    write_json,
)
from dcgan.representation import pooled_features
from dcgan.visualize import annotate, grid, save_figure, save_individual

__all__ = ["arithmetic_report", "choose_class", "direction_report", "sample_sheet",
           "walk_report"]  # public: dcgan.NAME

MODES = ("slerp", "linear")
LATENTS_FORMAT = "dcgan-latents"
DIRECTION_FORMAT = "dcgan-direction"
MAX_FRAMES = 4096  # images in one walk figure: G runs on them in batches, the grid holds them all
MAX_EXEMPLARS = 64  # sample numbers per concept
MAX_INDEX = 2**31 - 1
MAX_SAMPLES = 4096  # images of one sample sheet


# ---- interpolation --------------------------------------------------------------------------

def lerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(nz,), (nz,), (T,) -> (T, nz): the straight line from a to b."""
    t = t.view(-1, 1).to(a)
    return a + (b - a) * t


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(nz,), (nz,), (T,) -> (T, nz): the direction moves along the great circle from a to b at
    constant angular speed and the norm moves linearly from |a| to |b|. A straight line between two
    Gaussian draws passes through norms no training z ever had (its midpoint is ~0.7x as long);
    this path keeps every frame on the shell where the prior's mass is."""
    na, nb = a.norm(), b.norm()
    ua, ub = a / na, b / nb
    omega = torch.acos((ua * ub).sum().clamp(-1, 1))
    tt = t.view(-1, 1).to(a)
    if omega < 1e-6:  # (anti-)parallel to numerical precision: the chord is the arc
        direction = lerp(ua, ub, t)
        direction = direction / direction.norm(dim=1, keepdim=True)
    else:
        direction = (torch.sin((1 - tt) * omega) * ua + torch.sin(tt * omega) * ub) / torch.sin(omega)
    return direction * lerp(na.view(1), nb.view(1), t)


def walk_path(points: torch.Tensor, steps: int, mode: str = "slerp") -> torch.Tensor:
    """(K, nz) points -> ((K - 1) * steps + 1, nz): `steps` frames from each point towards the next
    (the point itself first), then the last point."""
    if mode not in MODES:
        raise DCGANError(f"interpolation must be one of {', '.join(MODES)}, got {mode!r}")
    if steps < 1 or len(points) < 2:
        raise DCGANError(f"a walk needs at least 2 points and 1 step, got {len(points)} and {steps}")
    interp = slerp if mode == "slerp" else lerp
    t = torch.arange(steps) / steps
    return torch.cat([interp(a, b, t) for a, b in zip(points[:-1], points[1:], strict=True)] + [points[-1:]])


# ---- smoothness -----------------------------------------------------------------------------

def _flags(distances: np.ndarray, factor: float) -> tuple[float, list[int]]:
    median = float(np.median(distances))
    return median, [int(i) for i in np.flatnonzero(distances > factor * max(median, 1e-12))]


def smoothness(frames: torch.Tensor, features: Callable[[torch.Tensor], np.ndarray] | None = None,
               factor: float = 3.0) -> dict:
    """frames (R, T, C, H, W) in [-1, 1]: per walk, the RMS distance between consecutive frames in
    pixel space (and in `features` space, images -> (n, d)), and the steps s (frame s -> s + 1)
    whose distance exceeds factor x that walk's median step."""
    rows = []
    for walk in frames.detach().float().cpu():
        pixel = (walk[1:] - walk[:-1]).flatten(1).pow(2).mean(1).sqrt().numpy()
        median, flagged = _flags(pixel, factor)
        row = {"pixel": pixel.round(6).tolist(), "pixel_median": median, "flagged_pixel": flagged,
               "max_over_median_pixel": float(pixel.max() / max(median, 1e-12))}
        if features is not None:
            f = features(walk)
            feature = np.sqrt(((f[1:] - f[:-1]) ** 2).mean(1))
            median, flagged_f = _flags(feature, factor)
            row.update({"feature": feature.round(6).tolist(), "feature_median": median,
                        "flagged_feature": flagged_f,
                        "max_over_median_feature": float(feature.max() / max(median, 1e-12))})
            flagged = sorted(set(flagged) | set(flagged_f))
        row["flagged"] = flagged
        rows.append(row)
    return {"factor": factor, "walks": rows, "flagged_steps": sum(len(r["flagged"]) for r in rows)}


def d_features(d: Discriminator) -> Callable[[torch.Tensor], np.ndarray]:
    """Images in [-1, 1] -> D's pooled conv features (the representation of paper §5)."""
    return lambda images: pooled_features(d, to_uint8(images))


# ---- loading --------------------------------------------------------------------------------

def _save_record(path: Path, record: dict) -> Path:
    return write_bytes(path, json.dumps(record, indent=2).encode())


def _read_record(path: str | Path, fmt: str, key: str, what: str) -> tuple[Path, dict, torch.Tensor]:
    """A JSON file of format `fmt` (a `what` file), and its `key` as a float tensor."""
    path = check_regular_file(path, f"{what} file")
    writer = "dcgan project" if what == "latents" else "dcgan directions"
    problem = f"{path} is not a {what} file written by `{writer}`"
    try:
        record = json.loads(path.read_bytes().decode("utf-8"))
        values = torch.tensor(record[key], dtype=torch.float32)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise DCGANError(f"{problem} ({reprlib.repr(str(e))})") from None
    if not isinstance(record, dict) or record.get("format") != fmt or not values.numel():
        raise DCGANError(problem)
    if not torch.isfinite(values).all():
        raise DCGANError(f"{path} holds non-finite values")
    return path, record, values


def save_latents(path: Path, z: torch.Tensor, **meta) -> Path:
    return _save_record(path, {"format": LATENTS_FORMAT, "z": z.tolist(), **meta})


def load_latents(path: str | Path, nz: int | None = None) -> torch.Tensor:
    """(N, nz) latents of a file written by `dcgan project` (or any JSON {"format": "dcgan-latents",
    "z": [[...], ...]}): with --latents, sample numbers index its rows instead of a seed's sheet."""
    path, _, z = _read_record(path, LATENTS_FORMAT, "z", "latents")
    if z.ndim != 2:
        raise DCGANError(f"{path}: z must be a list of latent vectors")
    if nz is not None and z.shape[1] != nz:
        raise DCGANError(f"{path} holds {z.shape[1]}-d latents; this generator's z has {nz} dimensions")
    return z


def save_direction(path: Path, u: torch.Tensor, sigma: float, **meta) -> Path:
    return _save_record(path, {"format": DIRECTION_FORMAT, "vector": u.tolist(), "sigma": sigma, **meta})


def load_direction(path: str | Path, nz: int | None = None) -> tuple[torch.Tensor, float, dict]:
    """(unit vector, sigma, the whole record) of a direction file written by `dcgan directions`."""
    path, record, u = _read_record(path, DIRECTION_FORMAT, "vector", "direction")
    sigma = record.get("sigma")
    if u.ndim != 1 or isinstance(sigma, bool) or not isinstance(sigma, (int, float)) \
            or not np.isfinite(sigma) or sigma <= 0 or u.norm() == 0:
        raise DCGANError(f"{path}: the vector must be one non-zero list and sigma a finite number > 0")
    if nz is not None and len(u) != nz:
        raise DCGANError(f"{path} is a direction in a {len(u)}-d latent space; this generator's z has "
                         f"{nz} dimensions")
    return u / u.norm(), float(sigma), record


def pick(g: Generator, seed: int, indices, latents: torch.Tensor | None = None) -> torch.Tensor:
    """z of each sample number: of seed's numbered sheet, or rows of `latents` (a latents file)."""
    if latents is None:
        return g.latent(seed, indices, "cpu")
    indices = [int(i) for i in indices]
    bad = [i for i in indices if not 0 <= i < len(latents)]
    if bad:
        raise DCGANError(f"sample number(s) {bad} out of range: the latents file holds {len(latents)} "
                         f"latents (0..{len(latents) - 1})")
    return latents[indices]


def choose_class(g: Generator, value: int | str | None) -> int | None:
    """A conditional G's class given by index or name -> its index; it becomes the class G(z) draws
    (g.class_index). None keeps class 0 (or means nothing for an unconditional G)."""
    if value is None:
        return g.class_index if g.config.classes else None
    classes = g.config.classes
    if not classes:
        raise DCGANError(f"--class {value}: {g.origin['file']} holds an unconditional generator (trained "
                         "without --conditional): it has no classes")
    text = str(value)
    if text in classes:
        index = classes.index(text)
    elif text.isascii() and text.isdigit() and int(text) < len(classes):
        index = int(text)
    else:
        listed = ", ".join(f"{i} ({name})" for i, name in enumerate(classes))
        raise DCGANError(f"--class {reprlib.repr(value)} is not a class of {g.origin['file']}: give an index "
                         f"or a name of one of its {len(classes)} classes: {listed}")
    g.class_index = index
    return index


def _check_indices(values: list[int] | None, name: str) -> None:
    if values is None:
        return
    if not 1 <= len(values) <= MAX_EXEMPLARS:
        raise DCGANError(f"{name} lists {len(values)} sample numbers; give 1 to {MAX_EXEMPLARS}")
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_INDEX for v in values):
        raise DCGANError(f"{name} must be sample numbers from 0 to {MAX_INDEX} (`dcgan sample --numbered`), "
                         f"got {reprlib.repr(values)}")


# ---- sample sheets --------------------------------------------------------------------------

def sample_sheet(source: str | Path, *, out: str | Path | None = "samples.png", n: int = 64, seed: int = 0,
                 start: int = 0, nrow: int | None = None, numbered: bool = False,
                 individual: str | Path | None = None, latents: str | Path | None = None,
                 which: str = "latest", device: str = "cpu", generator: str | None = None,
                 class_: int | str | None = None) -> dict:
    """Samples start..start+n-1 of `seed` (or rows start.. of a latents file from `dcgan project`)
    as one grid image `out` (numbered: each tile shows its sample number, which names its z for
    walk, arithmetic and forget) and/or one PNG per sample in the folder `individual`. `which`
    picks a run directory's checkpoint: latest, best or a snapshot step, and `generator` its G: ema
    (the moving average, the default where there is one) or raw; the report names the checkpoint
    file, its step and which G. A conditional G draws class `class_` (an index or a name; default
    0), or with class_="all" every class: one grid row per class, the same n z in each."""
    check_count(n, "--n", MAX_SAMPLES)
    check_count(start, "--start", MAX_INDEX, minimum=0)
    check_seed(seed)
    if nrow is not None:
        check_count(nrow, "--nrow", MAX_SAMPLES)
    if out is None and individual is None:
        raise DCGANError("give --out (a grid image) or --individual (a folder), or both")
    if out is not None:
        out = check_output_file(out, inputs=[source, latents], suffixes=IMAGE_SUFFIXES)
    if individual is not None:
        check_out_dir(individual, inputs=[source, latents], what="--individual")
    g = load_generator(source, pick_device(device), which=which, generator=generator)
    every = class_ == "all"
    if every and (individual is not None or not g.config.classes):
        raise DCGANError("--class all draws a grid with one row per class of a conditional generator: "
                         + ("give --out, not --individual" if g.config.classes
                            else f"{g.origin['file']} is unconditional"))
    drawn = None if every else choose_class(g, class_)
    if latents is not None:
        rows = load_latents(latents, g.config.nz)
        z = rows[start: start + n]
        if not len(z):
            raise DCGANError(f"--start {start} is past the {len(rows)} latents of {latents}")
    else:
        z = g.latent(seed, range(start, start + n))
    if every:  # row c: the same z, class c
        classes = g.config.num_classes
        check_count(classes * len(z), "--n x classes", MAX_SAMPLES)
        labels = torch.arange(classes).repeat_interleave(len(z))
        images = g.generate(z.repeat(classes, 1), labels=labels).cpu()
        nrow = len(z)
    else:
        images = g.generate(z).cpu()
    report = {"images": len(images), "start": start, "seed": None if latents is not None else seed,
              "checkpoint": g.origin["file"], "step": g.origin["step"], "generator": g.origin["generator"],
              "class": "all" if every else (None if drawn is None else g.config.classes[drawn])}
    if individual is not None:
        report["individual"] = [str(p) for p in save_individual(images, Path(individual), start=start)]
    if out is not None:
        if numbered:
            images = annotate(images, [str(start + i % len(z)) for i in range(len(images))])
        report["out"] = str(write_image(grid(images, nrow), out))
    return report


# ---- walks ----------------------------------------------------------------------------------

def walk(g: Generator, seed: int = 0, walks: int = 4, points: int = 9, steps: int = 8,
         mode: str = "slerp", through: list[int] | None = None,
         latents: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames (R, T, C, H, W) and their latents (R, T, nz). Walk r passes through samples
    r*K .. r*K + K - 1 of `seed`, or, with `through`, one walk passes through those samples. With
    `latents` (rows of a latents file), the numbers index its rows, and without `through` one walk
    passes through all of them."""
    if walks < 1 or points < 2:
        raise DCGANError(f"--walks must be >= 1 and --points >= 2, got {walks} and {points}")
    if latents is not None and not through:
        through = list(range(len(latents)))
    stops = [through] if through else [range(r * points, (r + 1) * points) for r in range(walks)]
    latents = torch.stack([walk_path(pick(g, seed, idx, latents), steps, mode) for idx in stops])
    images = g.generate(latents.flatten(0, 1)).cpu()
    return images.view(*latents.shape[:2], *images.shape[1:]), latents


def save_gif(frames: torch.Tensor, path: Path, fps: int = 12, min_tile: int = 64) -> Path:
    """frames (R, T, C, H, W): an animated GIF whose frame t shows every walk's frame t side by side,
    each upscaled (nearest) to at least min_tile pixels."""
    import imageio.v3 as iio

    factor = max(1, -(-min_tile // frames.shape[-1]))
    frames = frames.repeat_interleave(factor, -1).repeat_interleave(factor, -2)
    pictures = [grid(frames[:, t], nrow=len(frames)).mul(255).round().byte().permute(1, 2, 0).numpy()
                for t in range(frames.shape[1])]
    data = iio.imwrite("<bytes>", np.stack(pictures), extension=".gif", duration=1000 / fps, loop=0)
    write_bytes(path, data)
    return path


def save_frames(frames: torch.Tensor, path: Path) -> Path:
    """frames (R, T, C, H, W) in [-1, 1] as one plain PNG at G's resolution, unlabelled: row r is walk
    (or target) r, column t its frame t, every tile with 2 px of padding, so that a viewer can cut
    frame (r, t) out at x = 2 + t (W + 2), y = 2 + r (H + 2)."""
    return write_image(grid(frames.flatten(0, 1), nrow=frames.shape[1]), path)


def walk_report(source: str | Path, *, out: str | Path, walks: int = 4, points: int = 9, steps: int = 8,
                mode: str = "slerp", seed: int = 0, through: list[int] | None = None, gif: bool = False,
                factor: float = 3.0, latents: str | Path | None = None, generator: str | None = None,
                class_: int | str | None = None, frames: bool = False) -> dict:
    """walk.png (one row per walk), walk.json (smoothness report), optionally walk.gif and the plain
    frames walk_frames.png (see save_frames). With `latents` (a latents file of `dcgan project`), the
    walk passes through its rows. A conditional G walks within class `class_` (an index or a name;
    default 0)."""
    check_seed(seed, "seed", MAX_SEED)
    _check_indices(through, "--through")
    check_count(walks, "walks", 64)
    check_count(points, "points", 256, 2)
    check_count(steps, "steps", 256)
    check_number(factor, "factor", positive=True)
    if mode not in MODES:
        raise DCGANError(f"interpolation must be one of {', '.join(MODES)}, got {reprlib.repr(mode)}")
    count = (1 if through else walks) * ((len(through) if through else points) - 1) * steps + 1
    if through is not None and len(through) < 2:
        raise DCGANError(f"a walk through samples needs at least 2 sample numbers, got {through}")
    if count > MAX_FRAMES:
        raise DCGANError(f"{count} frames asked for (walks x (points - 1) x steps); at most {MAX_FRAMES} "
                         "fit one figure: lower --walks, --points or --steps")
    check_out_dir(out, inputs=[source, *([latents] if latents else [])])
    g, d = load_networks(source, generator=generator)
    drawn = choose_class(g, class_)
    z = load_latents(latents, g.config.nz) if latents else None
    if z is not None and not through:
        through = list(range(len(z)))
        if len(z) < 2 or (len(z) - 1) * steps + 1 > MAX_FRAMES:
            raise DCGANError(f"a walk through the {len(z)} latents of {latents} needs 2 to "
                             f"{(MAX_FRAMES - 1) // steps + 1} of them at --steps {steps}")
    images, path = walk(g, seed, walks, points, steps, mode, through, z)
    report = smoothness(images, d_features(d) if d is not None else None, factor)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stops = [list(through)] if through else [list(range(r * points, (r + 1) * points)) for r in range(walks)]
    tiles = [[f"#{row[t // steps]}" if t % steps == 0 else "" for t in range(images.shape[1])]
             for row in stops]  # the waypoints, by sample number
    marked = {(r, s + 1) for r, w in enumerate(report["walks"]) for s in w["flagged"]}  # frames after a jump
    for r, s in marked:
        tiles[r][s] = tiles[r][s] or "jump"
    numbers = f"rows of {latents}" if latents else f"samples of seed {seed}"
    save_figure([list(row) for row in images], out / "walk.png",
                f"{mode} walks through {numbers}, {steps} steps between points; red: a step over "
                f"{factor:g}x the median", [" -> ".join(map(str, row)) for row in stops], tile_labels=tiles,
                marked=marked)
    if gif:
        save_gif(images, out / "walk.gif")
    if frames:
        save_frames(images, out / "walk_frames.png")
    report.update({"mode": mode, "seed": seed, "steps": steps, "frames": images.shape[1], "through": stops,
                   "latent_norms": path.norm(dim=-1).round(decimals=4).tolist(),
                   "feature_space": "D pooled conv features" if d is not None else None,
                   "class": None if drawn is None else g.config.classes[drawn]})
    write_json(out / "walk.json", report)
    return report


# ---- arithmetic -----------------------------------------------------------------------------

def arithmetic(g: Generator, seed: int, a: list[int], b: list[int], c: list[int], noise: float = 0.25,
               neighbours: int = 8, latents: torch.Tensor | None = None) -> dict:
    """Y = mean z(A) - mean z(B) + mean z(C); G(Y), G(Y + U(-noise, noise)) x neighbours, and
    mean G(A) - mean G(B) + mean G(C) on pixels. Tensors are on the CPU. With `latents`, the numbers
    index its rows instead of seed's samples."""
    za, zb, zc = (pick(g, seed, idx, latents) for idx in (a, b, c))
    means = torch.stack([za.mean(0), zb.mean(0), zc.mean(0)])
    y = means[0] - means[1] + means[2]
    gen = torch.Generator().manual_seed(seed)
    near = y + (torch.rand(neighbours, y.numel(), generator=gen) * 2 - 1) * noise
    out = g.generate(torch.cat([za, zb, zc, means, y[None], near])).cpu()
    xa, xb, xc, rest = out.split([len(a), len(b), len(c), len(out) - len(a) - len(b) - len(c)])
    pixel = (xa.mean(0) - xb.mean(0) + xc.mean(0)).clamp(-1, 1)
    return {"y": y, "neighbour_latents": near, "exemplars": (xa, xb, xc), "mean_images": rest[:3],
            "result": rest[3], "neighbours": rest[4:], "pixel_result": pixel}


def _rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).pow(2).mean().sqrt())


def arithmetic_report(source: str | Path, *, out: str | Path, a: list[int], b: list[int], c: list[int],
                      seed: int = 0, noise: float = 0.25, neighbours: int = 8,
                      latents: str | Path | None = None, generator: str | None = None,
                      class_: int | str | None = None) -> dict:
    """arithmetic.png: a row per concept (exemplars, then G(mean z)), then G(Y), its noise
    neighbours and the pixel-space sum (last); arithmetic.json with the numbers. A conditional G
    draws every image in class `class_` (an index or a name; default 0)."""
    check_seed(seed, "seed", MAX_SEED)
    for name, values in (("a", a), ("b", b), ("c", c)):
        _check_indices(values, f"--{name}")
    check_number(noise, "noise")
    check_count(neighbours, "neighbours", 64)
    check_out_dir(out, inputs=[source, *([latents] if latents else [])])
    g = load_generator(source, generator=generator)
    drawn = choose_class(g, class_)
    z = load_latents(latents, g.config.nz) if latents else None
    r = arithmetic(g, seed, a, b, c, noise, neighbours, z)
    k = max(len(a), len(b), len(c))  # the G(mean z) column, aligned under every concept
    rows, tiles, labels = [], [], []
    for name, idx, x, m in zip("ABC", (a, b, c), r["exemplars"], r["mean_images"], strict=True):
        rows.append([*x, *[None] * (k - len(idx)), m])
        tiles.append([*(f"#{i}" for i in idx), *[""] * (k - len(idx)), "G(mean z)"])
        labels.append(f"{name}: {', '.join(map(str, idx))}")
    rows.append([r["result"], *r["neighbours"], r["pixel_result"]])
    tiles.append(["G(Y)", *[f"Y+noise {i + 1}" for i in range(len(r["neighbours"]))], "pixels A-B+C"])
    labels.append("Y = A - B + C")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    source_of = f"rows of {latents}" if latents else f"samples of seed {seed}"
    save_figure(rows, out / "arithmetic.png", f"vector arithmetic on z ({source_of}); neighbours: "
                f"Y + U(-{noise:g}, {noise:g})", labels, tile_labels=tiles)
    report = {"seed": seed, "a": a, "b": b, "c": c, "noise": noise, "y_norm": float(r["y"].norm()),
              "y": r["y"].tolist(),
              "neighbour_rms_to_result": [_rms(x, r["result"]) for x in r["neighbours"]],
              "pixel_result_rms_to_result": _rms(r["pixel_result"], r["result"]),
              "class": None if drawn is None else g.config.classes[drawn],
              "layout": "rows A, B, C: exemplars then G(mean z); last row: G(Y), noise neighbours, "
                        "pixel-space A - B + C"}
    write_json(out / "arithmetic.json", report)
    return report


def direction_report(source: str | Path, *, out: str | Path, start: list[int] | None = None,
                     end: list[int] | None = None, seed: int = 0, targets: list[int] | None = None,
                     n: int = 8, steps: int = 7, scale: float = 1.0, direction: str | Path | None = None,
                     latents: str | Path | None = None, generator: str | None = None,
                     class_: int | str | None = None, frames: bool = False) -> dict:
    """v = mean z(end) - mean z(start), added in `steps` even steps from 0 to scale x v to each
    target (samples of `seed`, default n samples of seed + 1): direction.png, one row per target
    (and with `frames`, the plain frames direction_frames.png, see save_frames).
    With `direction` (a file of `dcgan directions`), v is its unit vector times its sigma and the
    steps go from -scale to +scale sigma. With `latents`, the numbers index its rows."""
    check_seed(seed, "seed", MAX_SEED - 1)  # the default targets are samples of seed + 1
    for name, values in (("from", start), ("to", end), ("targets", targets)):
        _check_indices(values, f"--{name}")
    check_count(n, "n", 256)
    check_count(steps, "steps", 64, 2)
    check_number(scale, "scale", minimum=-1e6)
    if scale > 1e6:
        raise DCGANError(f"scale must be a finite number from -1e6 to 1e6, got {scale!r}")
    check_out_dir(out, inputs=[source, *[f for f in (latents, direction) if f]])
    g = load_generator(source, generator=generator)
    drawn = choose_class(g, class_)  # a conditional G: every image of this class (default 0)
    z_file = load_latents(latents, g.config.nz) if latents else None
    if direction is not None:
        u, sigma, _ = load_direction(direction, g.config.nz)
        v, alphas = u * sigma, torch.linspace(-scale, scale, steps)
    elif start and end:
        v = pick(g, seed, end, z_file).mean(0) - pick(g, seed, start, z_file).mean(0)
        alphas = torch.linspace(0, scale, steps)
    else:
        raise DCGANError("a direction needs --from and --to sample numbers, or --direction FILE")
    if targets:
        z = pick(g, seed, targets, z_file)
    else:
        z = z_file[:n] if z_file is not None else g.latent(seed + 1, range(n), "cpu")
    moved = z[:, None] + alphas[None, :, None] * v  # (targets, steps, nz)
    images = g.generate(moved.flatten(0, 1)).cpu()
    images = images.view(*moved.shape[:2], *images.shape[1:])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if direction is not None:
        what, columns = f"direction {Path(direction).name}", [f"{a:+.2f} sd" for a in alphas.tolist()]
    else:
        what = f"v = mean z({', '.join(map(str, end))}) - mean z({', '.join(map(str, start))})"
        columns = [f"{a:+.2f} v" for a in alphas.tolist()]
    if targets:
        names = [f"#{i}" for i in targets]
    else:
        names = [f"row {i}" if z_file is not None else f"#{i} of seed {seed + 1}" for i in range(len(z))]
    save_figure([list(row) for row in images], out / "direction.png", f"{what}, added to each row",
                names, column_labels=columns)
    if frames:
        save_frames(images, out / "direction_frames.png")
    base = g.generate(z).cpu()  # the unchanged samples
    change = (images - base[:, None]).flatten(2).pow(2).mean(2).sqrt().mean(0)
    report = {"seed": seed, "from": start, "to": end, "direction": str(direction) if direction else None,
              "targets": targets or (f"rows 0..{len(z) - 1} of {latents}" if z_file is not None
                                     else f"0..{n - 1} of seed {seed + 1}"),
              "alphas": alphas.tolist(), "v_norm": float(v.norm()), "mean_rms_change": change.tolist(),
              "class": None if drawn is None else g.config.classes[drawn]}
    write_json(out / "direction.json", report)
    return report
