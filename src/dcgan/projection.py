"""Find a real image in z: the z whose G(z) reconstructs it, by optimisation.

Adam on z (G and D frozen, in inference mode) minimises the pixel MSE plus, when D is at hand, the
distance between D's feature maps of G(z) and of the image (each conv layer's MSE divided by the
image's mean squared activation there, so every layer counts alike): pixels alone pull towards a
blurred average, D's features towards the same structure. Several restarts from prior draws run
as one batch; the best per image is kept. z stays where the prior puts mass: clipped to [-1, 1]
after every step for the uniform prior; for the Gaussian one, a penalty on how far |z|^2 / nz
strays from 1 beyond two of its standard deviations (sqrt(2 / nz) each) keeps |z| in the shell
around sqrt(nz) where draws from N(0, I) lie, without pulling typical z towards its centre.

The result is a latents file (`dcgan.latent.save_latents`): `dcgan sample --latents`, `walk --latents`,
`arithmetic --latents` and `directions --latents` use its rows wherever they take sample numbers.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import torch

from dcgan.checkpoint import load_networks
from dcgan.config import MAX_SEED, check_count, check_number, check_seed
from dcgan.data import decode_image, to_float
from dcgan.errors import DCGANError, check_regular_file
from dcgan.latent import save_latents
from dcgan.models import Discriminator, Generator, eval_mode
from dcgan.outputs import check_out_dir, write_image, write_json
from dcgan.progress import Progress
from dcgan.visualize import annotate, grid

__all__ = ["project_report"]  # public: dcgan.NAME

MAX_IMAGES = 256  # per call: every image and restart is one row of the optimised batch


def _frozen(stack: ExitStack, net: torch.nn.Module) -> None:
    """net in eval mode with no parameter gradients, both restored when `stack` closes."""
    stack.enter_context(eval_mode(net))
    flags = [p.requires_grad for p in net.parameters()]
    net.requires_grad_(False)
    stack.callback(lambda: [p.requires_grad_(f) for p, f in zip(net.parameters(), flags, strict=True)])


def _feature_distance(d: Discriminator, x: torch.Tensor, target_maps: list[torch.Tensor]) -> torch.Tensor:
    """Per image: the mean over D's conv layers of MSE(maps(x), target maps) / mean target energy."""
    _, maps = d(x, return_features=True)
    terms = [((m - t) ** 2).flatten(1).mean(1) / t.pow(2).flatten(1).mean(1).clamp_min(1e-8)
             for m, t in zip(maps, target_maps, strict=True)]
    return torch.stack(terms).mean(0)


def project(g: Generator, targets: torch.Tensor, d: Discriminator | None = None, steps: int = 500,
            restarts: int = 4, lr: float = 0.05, feature_weight: float = 1.0, norm_weight: float = 1.0,
            seed: int = 0, progress: str | None = None) -> dict:
    """targets: (N, C, S, S) in [-1, 1] at G's size. Returns z (N, nz), the reconstructions and,
    per image, the pixel MSE and D-feature distance of the kept restart."""
    if steps < 1 or restarts < 1 or not (lr > 0 and np.isfinite(lr)):
        raise DCGANError(f"need steps >= 1, restarts >= 1 and a finite lr > 0, got {steps}, {restarts}, {lr}")
    if not 1 <= len(targets) * restarts <= MAX_IMAGES * 4:
        raise DCGANError(f"{len(targets)} image(s) x {restarts} restart(s) is more than one batch of "
                         f"{MAX_IMAGES * 4}: project fewer images per call")
    c = g.config
    if targets.shape[1:] != (c.channels, c.image_size, c.image_size):
        raise DCGANError(f"targets must be (N, {c.channels}, {c.image_size}, {c.image_size}) for this "
                         f"generator, got {tuple(targets.shape)}")
    device = next(g.parameters()).device
    n = len(targets)
    t = targets.to(device).float().repeat(restarts, 1, 1, 1)  # row r * n + i: restart r of image i
    z = g.sample_latent(n * restarts, torch.Generator().manual_seed(seed), device).requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    with ExitStack() as stack:
        bar = stack.enter_context(Progress(steps, progress, "steps"))
        _frozen(stack, g)
        if d is not None:
            _frozen(stack, d)
            with torch.no_grad():
                target_maps = d(t, return_features=True)[1]
        for i in range(steps + 1):
            x = g(z)
            pixel = (x - t).pow(2).flatten(1).mean(1)
            feature = _feature_distance(d, x, target_maps) if d is not None else torch.zeros_like(pixel)
            loss = pixel + feature_weight * feature
            if c.latent == "normal":  # only outside the band where draws of N(0, I) lie
                band = 2 * (2 / c.nz) ** 0.5  # two standard deviations of |z|^2 / nz
                loss = loss + norm_weight * ((z.pow(2).mean(1) - 1).abs() - band).clamp_min(0).pow(2)
            if i == steps:  # the final evaluation, no update
                break
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            opt.step()
            bar.update()
            if c.latent == "uniform":
                with torch.no_grad():
                    z.clamp_(-1, 1)
    best = loss.detach().view(restarts, n).argmin(0)  # per image, the restart with the lowest loss
    rows = best * n + torch.arange(n, device=best.device)
    return {"z": z.detach()[rows].cpu(), "reconstructions": x.detach()[rows].cpu(),
            "pixel_mse": pixel.detach()[rows].cpu(), "feature_distance":
            feature.detach()[rows].cpu() if d is not None else None, "restart": best.cpu()}


def project_report(source: str | Path, images: list[str | Path], *, out: str | Path, steps: int = 500,
                   restarts: int = 4, lr: float = 0.05, feature_weight: float = 1.0, seed: int = 0,
                   generator: str | None = None) -> dict:
    """Project image files into G's z: OUT/projection.png (each target beside its reconstruction),
    OUT/latents.json (z, usable with --latents) and OUT/projection.json (errors, settings)."""
    if not images:
        raise DCGANError("give at least one image to project")
    if len(images) > MAX_IMAGES:
        raise DCGANError(f"{len(images)} images: project at most {MAX_IMAGES} per call")
    check_seed(seed, "seed", MAX_SEED)
    check_count(steps, "steps", 100_000)
    check_count(restarts, "restarts", 64)
    check_number(lr, "lr", positive=True)
    check_number(feature_weight, "feature-weight")
    check_out_dir(out, inputs=[source, *images])
    g, d = load_networks(source, generator=generator)
    c = g.config
    targets = []
    for path in images:
        check_regular_file(path, "image")
        try:  # converted exactly as training converts its images
            targets.append(to_float(decode_image(Path(path), c.image_size, c.channels)))
        except DCGANError:
            raise
        except Exception as e:
            raise DCGANError(f"cannot read image {path} ({type(e).__name__}: {e})") from None
    tick = time.perf_counter()
    r = project(g, torch.stack(targets), d, steps, restarts, lr, feature_weight, seed=seed,
                progress=f"projecting {len(images)} image(s)")
    seconds = time.perf_counter() - tick
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pairs = torch.stack([torch.stack(targets), r["reconstructions"]], 1).flatten(0, 1)
    labels = [f"{kind} {i}" for i in range(len(images)) for kind in ("target", "G(z)")]
    write_image(grid(annotate(pairs, labels), nrow=min(8, len(pairs))), out / "projection.png")
    save_latents(out / "latents.json", r["z"], source=str(source), images=[str(p) for p in images])
    report = {"source": str(source), "images": [str(p) for p in images], "steps": steps, "restarts": restarts,
              "lr": lr, "feature_weight": feature_weight if d is not None else None, "seed": seed,
              "pixel_mse": r["pixel_mse"].tolist(),
              "feature_distance": r["feature_distance"].tolist() if d is not None else None,
              "seconds_per_image": seconds / len(images), "latents": str(out / "latents.json"),
              "z_norm": r["z"].norm(dim=1).tolist()}
    write_json(out / "projection.json", report)
    return report
