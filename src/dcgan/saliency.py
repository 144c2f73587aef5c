"""What D's features respond to (paper §6.2), and what every layer of G or D computes.

Guided backpropagation (Springenberg et al. 2014): the gradient of one feature's activation with
respect to the input image, where every rectifier passes the gradient back only where both its
forward input and the incoming gradient are positive. The paper shows, for the first features of
D's last conv layer, the images that activate them most and these maps, beside the same D randomly
initialised. Feature-map views show the channels of every layer of G (for one z) or D (for one
image).

Nothing here changes a network: the guided pass runs D's blocks module by module with a custom
autograd function in place of each rectifier, so the modules, their `inplace` flags, the parameters'
`requires_grad` and `.grad` are never touched, and the train/eval mode is restored afterwards.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.utils import make_grid

from dcgan.checkpoint import load_discriminator, load_generator, run_data
from dcgan.config import MAX_SEED, check_count, check_seed
from dcgan.data import decode_image, first_images, open_dataset, to_float
from dcgan.errors import DCGANError, check_regular_file
from dcgan.latent import load_latents, pick
from dcgan.models import Discriminator, Generator, eval_mode
from dcgan.outputs import check_out_dir, write_image, write_json
from dcgan.representation import average_bn_statistics
from dcgan.visualize import save_labelled

__all__ = ["feature_map_report", "guided_backprop_report"]  # public: dcgan.NAME

NETWORKS = ("trained", "random")
STRUCTURE_METRIC = ("structure: mean over the shown maps of the share of a map's squared-gradient energy "
                    "(summed over channels) held by its top 10% of pixels; 0.1 for a flat map, 1 when all "
                    "of it sits in a tenth of the image. image_correlation: mean Pearson correlation between "
                    "a map (summed over channels) and its input image (channel mean)")


# ---- running D block by block ------------------------------------------------------------

class _GuidedRectifier(torch.autograd.Function):
    """ReLU (slope 0) or LeakyReLU forward; backward passes the gradient only where the forward
    input and the incoming gradient are both positive (the guided rule)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, slope: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        return F.leaky_relu(x, slope)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        return grad * ((x > 0) & (grad > 0)).to(grad.dtype), None


def _slope(m: nn.Module) -> float | None:
    """The negative slope of a rectifier module, None for anything else."""
    if isinstance(m, nn.LeakyReLU):
        return float(m.negative_slope)
    return 0.0 if isinstance(m, nn.ReLU) else None


def _run_blocks(d: Discriminator, x: torch.Tensor, last: int, guided: bool = False) -> torch.Tensor:
    """D's blocks 0..last on x, module by module; rectifiers run out of place (guided if asked), so
    autograd works without changing D's inplace modules."""
    h = x
    for block in d.blocks[: last + 1]:
        for m in block:
            slope = _slope(m)
            if slope is None:
                h = m(h)
            else:
                h = _GuidedRectifier.apply(h, slope) if guided else F.leaky_relu(h, slope)
    return h


def _layer_index(d: Discriminator, layer: int) -> int:
    n = len(d.blocks)
    if not isinstance(layer, int) or not -n <= layer < n:
        raise DCGANError(f"layer {layer!r} is out of range: this D has {n} conv blocks, use 0..{n - 1} "
                         f"(or -1 for the last)")
    return layer % n


def _channels(d: Discriminator, idx: int) -> int:
    return d.blocks[idx][0].out_channels


def _check_features(d: Discriminator, features: list[int], idx: int) -> None:
    c = _channels(d, idx)
    for f in features:
        if not 0 <= f < c:
            raise DCGANError(f"feature {f} is out of range: D.block{idx} has {c} channels, use features "
                             f"0..{c - 1} (fewer features, or another layer)")


def layer_name(d: Discriminator, layer: int = -1) -> str:
    """'D.block3 (512x4x4)': the block's index and the shape of its output."""
    idx = _layer_index(d, layer)
    side = d.config.image_size
    for block in d.blocks[: idx + 1]:
        side //= block[0].stride[0]
    return f"D.block{idx} ({_channels(d, idx)}x{side}x{side})"


# ---- top-activating images and guided backpropagation ------------------------------------

@torch.no_grad()
def top_activating(d: Discriminator, images: torch.Tensor, features: list[int], top: int = 8, layer: int = -1,
                   batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, C, S, S) -> (indices, activations), both (len(features), top), descending:
    the images whose activation of each feature is largest. A feature's activation is the spatial max
    of its channel in block `layer` (after the rectifier). D runs in eval mode, so pass one whose
    BatchNorm statistics are averaged over the data (representation.average_bn_statistics). `top` is capped
    at N."""
    idx = _layer_index(d, layer)
    features = list(features)
    _check_features(d, features, idx)
    if top < 1:
        raise DCGANError(f"top must be at least 1, got {top}")
    device = next(d.parameters()).device
    acts = []
    with eval_mode(d):
        for chunk in images.split(batch_size):
            h = _run_blocks(d, to_float(chunk.to(device)), idx)
            acts.append(h[:, features].flatten(2).amax(2).float().cpu())
    values, indices = torch.cat(acts).topk(min(top, len(images)), dim=0)  # (top, F), descending
    return indices.T.contiguous(), values.T.contiguous()


def guided_backprop(d: Discriminator, images: torch.Tensor, feature: int, layer: int = -1,
                    guided: bool = True) -> torch.Tensor:
    """d(spatial max of channel `feature` of block `layer`) / d(input) for images in [-1, 1]
    (n, C, S, S), one map per image, same shape. With guided=True every ReLU/LeakyReLU backward
    follows the guided rule; guided=False gives the plain gradient, for comparison. Only blocks up to
    `layer` run; D runs in eval mode and is left as it was."""
    idx = _layer_index(d, layer)
    _check_features(d, [feature], idx)
    x = images.detach().clone().requires_grad_(True)
    with torch.enable_grad(), eval_mode(d):
        h = _run_blocks(d, x, idx, guided)
        peak = h[:, feature].flatten(1).max(1).values  # one location per image gets the gradient
        (grad,) = torch.autograd.grad(peak.sum(), x)
    return grad


# ---- the §6.2 figure ---------------------------------------------------------------------

def _display_maps(maps: torch.Tensor) -> torch.Tensor:
    """Gradient maps -> [0, 1] for display, per image: 0 is mid-grey, the largest |value| is 0 or 1."""
    scale = maps.abs().flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1, 1)
    return (maps / scale + 1) / 2


def concentration(maps: torch.Tensor, share: float = 0.1) -> torch.Tensor:
    """Per map (n, C, S, S): the fraction of its squared-gradient energy (summed over channels) in its
    `share` highest-energy pixels; NaN for an all-zero map."""
    energy = maps.double().pow(2).sum(1).flatten(1)
    k = max(1, math.ceil(share * energy.shape[1]))
    return (energy.topk(k, dim=1).values.sum(1) / energy.sum(1)).float()


def image_correlation(maps: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Per map: Pearson correlation over pixels between the map (summed over channels) and its input
    image in [-1, 1] (channel mean); NaN where either is flat. High: the map mostly reproduces the
    input, as guided backprop does even with random weights (Nie et al. 2018)."""
    m = maps.double().sum(1).flatten(1)
    x = images.double().mean(1).flatten(1)
    m, x = m - m.mean(1, keepdim=True), x - x.mean(1, keepdim=True)
    return ((m * x).sum(1) / (m.norm(dim=1) * x.norm(dim=1))).float()


def _mean(values: torch.Tensor) -> float | None:
    """Mean of the non-NaN values, None if there are none."""
    kept = values[~values.isnan()]
    return round(float(kept.mean()), 6) if len(kept) else None


def saliency_figure(d_trained: Discriminator, d_random: Discriminator, images_uint8: torch.Tensor,
                    filters: int = 8, top: int = 6, layer: int = -1) -> tuple[torch.Tensor, dict]:
    """Paper §6.2, figure 5: filters 0..filters-1 of block `layer` of a trained and a random D.

    Returns (grid, info). The grid (3, H, W) in [0, 1] has one row per feature: on the left the
    trained D's `top` most activating images, then their guided-backprop maps; a white band one image
    wide; then the same for the random D. Each map is scaled on its own (grey is 0, the largest |value|
    is black or white); channels are kept, so RGB data give coloured maps.

    info[net] for net in ("trained", "random") holds "features" (per feature: "feature", "indices"
    into images_uint8, "activations") and two numbers over the shown maps:
    - "structure": the mean share of a map's squared-gradient energy in its top 10% pixels (0.1 for a
      flat map, 1 for one concentrated in a tenth of the image): how localised the maps are. It is only
      informative where the layer's receptive field is much larger than a tenth of the image (D's last
      layer), and it is a weak signal: random networks give localised maps too (Adebayo et al. 2018),
      so a trained D should score higher, by a margin that is small, not a proof of learned features;
    - "image_correlation": the mean correlation between a map and its input image. Guided backprop
      partly reconstructs the input whatever the weights (Nie et al. 2018); a random D's maps are
      closer to plain copies of the image, so a trained D should score lower.
    Read both beside the picture. Pass networks with averaged BN statistics.
    """
    if filters < 1:
        raise DCGANError(f"filters must be at least 1, got {filters}")
    features = list(range(filters))
    info: dict = {"layer": layer_name(d_trained, layer), "structure_metric": STRUCTURE_METRIC}
    halves = []
    for net, d in zip(NETWORKS, (d_trained, d_random), strict=True):
        device = next(d.parameters()).device
        indices, activations = top_activating(d, images_uint8, features, top, layer)
        shown, maps, rows = [], [], []
        for f in features:
            x = to_float(images_uint8[indices[f]].to(device))
            m = guided_backprop(d, x, f, layer).cpu()
            shown.append(x.cpu())
            maps.append(m)
            rows.append({"feature": f, "indices": indices[f].tolist(),
                         "activations": [round(v, 6) for v in activations[f].tolist()]})
        maps = torch.cat(maps)
        info[net] = {"structure": _mean(concentration(maps)),
                     "image_correlation": _mean(image_correlation(maps, torch.cat(shown))), "features": rows}
        k = indices.shape[1]
        image_block = make_grid(torch.cat(shown).add(1).div(2), nrow=k, padding=2, pad_value=1.0)
        map_block = make_grid(_display_maps(maps), nrow=k, padding=2, pad_value=1.0)
        gap = torch.ones(3, image_block.shape[1], 4)
        halves.append(torch.cat([image_block, gap, map_block], 2))
    band = torch.ones(3, halves[0].shape[1], images_uint8.shape[-1])
    return torch.cat([halves[0], band, halves[1]], 2), info


def guided_backprop_report(source: str | Path, *, data: str | None = None, out: str | Path, filters: int = 8,
                           top: int = 6, layer: int = -1, max_images: int = 5000, data_dir: str | None = None,
                           seed: int = 0) -> dict:
    """Paper §6.2 for a run: the trained D of `source` (run directory or .pt) against the same
    architecture randomly initialised (seed `seed`), over up to max_images training images of `data`
    (a random subset with `seed`; the first readable ones for streamed data), BN statistics averaged
    over those images for both. Writes out/guided_backprop.png (images scaled up to at least 64
    pixels) and out/guided_backprop.json; returns the JSON's content. Image indices are positions in
    the dataset (in the stream's readable images for streamed data)."""
    if filters < 1:
        raise DCGANError(f"filters must be at least 1, got {filters}: ask for one filter or more")
    check_count(top, "top", 64)
    check_count(max_images, "max_images", 10**6)
    check_seed(seed, "seed", MAX_SEED)
    data, data_dir, exclude = run_data(source, data, data_dir, what="the image search")
    check_out_dir(out, inputs=[source, data, data_dir])
    d = load_discriminator(source)
    idx = _layer_index(d, layer)
    c = _channels(d, idx)
    if filters > c:
        raise DCGANError(f"filters={filters} asks for filters up to {filters - 1}, but "
                         f"{layer_name(d, idx)} has {c} channels: use at most {c} features")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        random_d = Discriminator(d.config)
    dataset = open_dataset(data, d.config.image_size, d.config.channels, data_dir, exclude=exclude)
    if dataset.images is not None:
        pick = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:max_images]
        images = dataset.images[pick]
    else:
        images = first_images(dataset, max_images)
        pick = torch.arange(len(images))
    figure, info = saliency_figure(average_bn_statistics(d, images), average_bn_statistics(random_d, images),
                                   images, filters, top, idx)
    for net in NETWORKS:
        for row in info[net]["features"]:
            row["indices"] = [int(pick[i]) for i in row["indices"]]
            if dataset.labels is not None:
                row["labels"] = [int(dataset.labels[i]) for i in row["indices"]]
            if dataset.names is not None and dataset.images is not None:
                row["names"] = [dataset.name(i) for i in row["indices"]]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    scale = max(1, 64 // d.config.image_size)
    if scale > 1:
        figure = F.interpolate(figure[None], scale_factor=scale, mode="nearest")[0]
    report = {"source": str(source), "data": data, "images": len(images), "seed": seed, "top": top,
              **info, "png": str(out / "guided_backprop.png")}
    side, k = d.config.image_size, min(top, len(images))  # the grid of saliency_figure, scaled
    maps_at = (k * (side + 2) + 2 + 4) * scale
    random_at = (2 * (k * (side + 2) + 2) + 4 + side) * scale
    save_labelled(figure, out / "guided_backprop.png",
                  f"guided backprop, {info['layer']}: each filter's top {k} images, then their maps",
                  [f"filter {f}" for f in range(filters)], (side + 2) * scale, first_row=2 * scale,
                  headers=[("trained D: top images", 0), ("trained D: maps", maps_at),
                           ("random D: top images", random_at), ("random D: maps", random_at + maps_at)])
    write_json(out / "guided_backprop.json", report)
    return report


# ---- feature maps of every layer ---------------------------------------------------------

def _shape(t: torch.Tensor) -> str:
    return "x".join(str(s) for s in t.shape[1:])


@torch.no_grad()
def feature_maps(net: Generator | Discriminator, x: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """Every layer's output, named with its shape, in eval mode. G: x is z (n, nz); the entries are
    G.project and each hidden block, not the final Tanh image (that is G's output, not a feature map).
    D: x is images in [-1, 1]; one entry per conv block (post-activation), not the logit head."""
    with eval_mode(net):
        if isinstance(net, Generator):
            _, maps = net(x, return_features=True)
            names = ["G.project"] + [f"G.block{i}" for i in range(len(maps) - 2)]
            maps = maps[:-1]
        elif isinstance(net, Discriminator):
            _, maps = net(x, return_features=True)
            names = [f"D.block{i}" for i in range(len(maps))]
        else:
            raise DCGANError(f"feature maps need a Generator or a Discriminator, got {type(net).__name__}")
    return [(f"{name} ({_shape(m)})", m) for name, m in zip(names, maps, strict=True)]


def feature_map_figure(maps: list[tuple[str, torch.Tensor]], max_channels: int = 32) -> torch.Tensor:
    """One row per layer for the first input: its first max_channels channels, each scaled to [0, 1]
    on its own (a constant channel is black), enlarged (nearest) to one common size (the largest map,
    at least 32 pixels) so the rows align; white where a layer has fewer channels. (3, H, W) in [0, 1]."""
    if max_channels < 1:
        raise DCGANError(f"max_channels must be at least 1, got {max_channels}")
    side = max(32, max(m.shape[-1] for _, m in maps))
    width = min(max_channels, max(m.shape[1] for _, m in maps))
    tiles = []
    for _, m in maps:
        ch = m[0, :width].detach().float().cpu()
        lo = ch.flatten(1).amin(1).view(-1, 1, 1)
        hi = ch.flatten(1).amax(1).view(-1, 1, 1)
        ch = (ch - lo) / (hi - lo).clamp_min(1e-12)
        ch = F.interpolate(ch[:, None], size=(side, side), mode="nearest")
        blank = torch.ones(width - len(ch), 1, side, side)
        tiles.append(torch.cat([ch, blank]))
    return make_grid(torch.cat(tiles), nrow=width, padding=2, pad_value=1.0)


def _layer_stats(maps: list[tuple[str, torch.Tensor]]) -> list[dict]:
    """Per layer, for the first input: shape, mean activation, the fraction of units <= 0 (exactly 0
    after G's ReLUs, on the leaky side for D) and how many channels have no positive unit."""
    rows = []
    for name, m in maps:
        a = m[0].float()
        rows.append({"name": name, "shape": list(a.shape), "mean": round(float(a.mean()), 6),
                     "inactive_fraction": round(float((a <= 0).float().mean()), 6),
                     "inactive_channels": int((a.flatten(1).amax(1) <= 0).sum())})
    return rows


def _save_image(x: torch.Tensor, path: Path, min_side: int = 64) -> None:
    """One image in [-1, 1], scaled up (nearest) to at least min_side pixels."""
    scale = max(1, min_side // x.shape[-1])
    x = x[None].add(1).div(2).clamp(0, 1).cpu()
    write_image(F.interpolate(x, scale_factor=scale, mode="nearest"), path)


def feature_map_report(source: str | Path, *, out: str | Path, net: str = "g", seed: int = 0, index: int = 0,
                       image: str | Path | None = None, max_channels: int = 32,
                       generator: str | None = None, latents: str | Path | None = None) -> dict:
    """The feature maps of every layer for one input, as a picture and per-layer statistics.

    net="g": G of `source` (run directory, .pt or exported .safetensors) on z = G.latent(seed, [index]);
    writes out/feature_maps_g.png, out/feature_maps_g_image.png (the generated image) and
    out/feature_maps_g.json. net="d": D of `source` (run directory or .pt) on the image file `image`,
    or if none on G's sample (seed, index); writes feature_maps_d.png, feature_maps_d_input.png and
    feature_maps_d.json. With `latents` (a latents file of `dcgan project`), `index` numbers its
    rows instead of seed's samples. D uses the BN statistics stored by training. Returns the JSON's content:
    per layer (first input) name, shape, mean, inactive_fraction (units <= 0) and inactive_channels."""
    if net not in ("g", "d"):
        raise DCGANError(f"net must be g (generator) or d (discriminator), got {net!r}")
    if image is not None and net == "g":
        raise DCGANError("an input image is for net=d only: G's input is z, chosen by seed and index")
    check_seed(seed, "seed", MAX_SEED)
    check_count(index, "index", 2**31 - 1, 0)
    check_count(max_channels, "max_channels", 1024)
    if image is not None and latents is not None:
        raise DCGANError("give an input image or a latents file, not both")
    out = check_out_dir(out, inputs=[source, image, latents])
    report: dict = {"net": net, "source": str(source)}
    sample = {"seed": seed, "index": index} if latents is None else {"latents": str(latents), "row": index}
    if net == "g":
        g = load_generator(source, generator=generator)
        z = pick(g, seed, [index], load_latents(latents, g.config.nz) if latents else None)
        maps = feature_maps(g, z)
        x = g.generate(z)
        report["input"] = sample
    else:
        d = load_discriminator(source)
        c = d.config
        if image is not None:
            if not Path(image).exists():
                raise DCGANError(f"image {image} not found: give the path of an image file (png, jpg, ...)")
            check_regular_file(image, "image")
            try:
                x = to_float(decode_image(Path(image), c.image_size, c.channels))[None]
            except Exception as e:  # unreadable or not an image
                raise DCGANError(f"cannot read image {image} ({type(e).__name__}: {e})") from None
            report["input"] = {"image": str(image)}
        else:
            g = load_generator(source, generator=generator)
            x = g.generate(pick(g, seed, [index], load_latents(latents, g.config.nz) if latents else None))
            report["input"] = sample
        maps = feature_maps(d, x)
        with torch.no_grad(), eval_mode(d):
            report["d_probability"] = round(float(torch.sigmoid(d(x))[0]), 6)
    out.mkdir(parents=True, exist_ok=True)
    png = out / f"feature_maps_{net}.png"
    picture = out / (f"feature_maps_{net}_image.png" if net == "g" else f"feature_maps_{net}_input.png")
    figure = feature_map_figure(maps, max_channels)
    side = max(32, max(m.shape[-1] for _, m in maps))  # feature_map_figure's tile
    shown = F.interpolate(x[:1].detach().float().cpu().add(1).div(2).clamp(0, 1), size=(side, side),
                          mode="nearest")[0].expand(3, -1, -1)
    first = torch.ones(3, side + 2, figure.shape[-1])  # D's input, or G's image, as a row of its own
    first[:, 2:2 + side, 2:2 + side] = shown
    what = (report["input"]["image"] if "image" in report["input"] else f"sample {index} of seed {seed}"
            if latents is None else f"row {index} of {Path(latents).name}")
    title = f"{net.upper()}'s feature maps for {what}: each channel scaled to its own range"
    shown_as = "G(z)" if net == "g" else "input"
    save_labelled(torch.cat([first, figure], 1), png, title, [shown_as, *(name for name, _ in maps)],
                  side + 2, first_row=2,
                  channels=min(max_channels, max(m.shape[1] for _, m in maps)))
    _save_image(x[0], picture)
    report.update(layers=_layer_stats(maps), png=str(png), image_png=str(picture))
    write_json(out / f"feature_maps_{net}.json", report)
    return report
