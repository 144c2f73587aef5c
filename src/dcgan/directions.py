"""Directions in z that mean something, found without hand-picked exemplars (beyond paper §6.3).

- `sefa` (Shen & Zhou 2021, closed form): G's first layer is linear in z, h = W^T z with W of shape
  (nz, units). The columns of W are normalised (which also cancels the per-channel scale of the
  BatchNorm that follows) and the top eigenvectors of W W^T are the directions that move that
  layer's pre-activations most.
- `pca` (GANSpace, Härkönen et al. 2020): principal components of one G layer's activations over
  sampled z, carried back to z by least squares (z ~ V x, x the PCA coordinates).
- `svm` (InterFaceGAN, Shen et al. 2020): the normal of a linear SVM separating samples a user
  labelled on a numbered sample sheet, optionally made orthogonal to another saved direction.

A direction is a unit vector u in z; it is applied as z + a * sigma * u, where sigma is the
standard deviation of u . z under the prior (1 for N(0, I), 1/sqrt(3) for U(-1, 1)), so a = +-3 is
"three sigmas" for any prior. Each is saved as JSON (`save_direction`) that `dcgan arithmetic
--direction` and the Python API read back.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dcgan.checkpoint import load_generator
from dcgan.config import MAX_SEED, check_count, check_number, check_seed
from dcgan.errors import DCGANError
from dcgan.latent import load_direction, load_latents, pick, save_direction
from dcgan.models import Generator
from dcgan.outputs import check_out_dir, write_image, write_json
from dcgan.visualize import annotate, grid

__all__ = ["directions_report"]  # public: dcgan.NAME

METHODS = ("sefa", "pca", "svm")
MAX_ACTIVATION_BYTES = 4 * 2**30  # pca holds one layer's activations for every sample


def first_layer_weight(g: Generator) -> torch.Tensor:
    """G's projection of z as a (nz, units) matrix: the 4x4 transposed conv's (nz, c, 4, 4) weight
    or the linear layer's (units, nz) weight, transposed. A conditional G's class inputs (the rows
    after nz) are left out: directions live in z."""
    project = g.project_and_reshape.project
    w = project.weight.detach().float().cpu()
    w = w.t().contiguous() if isinstance(project, nn.Linear) else w.flatten(1)
    return w[:g.config.nz]


def sefa(g: Generator, k: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """(k, nz) unit directions and the full eigenvalue spectrum (nz,), largest first."""
    w = first_layer_weight(g).double()
    w = w / w.norm(dim=0, keepdim=True).clamp_min(1e-12)  # each output unit's column to unit length
    values, vectors = torch.linalg.eigh(w @ w.t())  # symmetric: real, ascending
    values, vectors = values.flip(0), vectors.flip(1)
    return vectors[:, :k].t().float().contiguous(), values.float()


@torch.no_grad()
def layer_activations(g: Generator, z: torch.Tensor, layer: int, batch_size: int = 256) -> torch.Tensor:
    """G's feature maps at `layer` (0: after project-and-reshape), flattened: (N, C*H*W)."""
    n_layers = len(g.blocks) + 1
    if not 0 <= layer < n_layers - 1:
        raise DCGANError(f"layer must lie in 0..{n_layers - 2} (the hidden layers of G; "
                         f"0 is the 4x4 map after the projection), got {layer}")
    device = next(g.parameters()).device
    out = []
    was_training = g.training
    g.eval()
    try:
        for chunk in z.split(batch_size):
            _, maps = g(chunk.to(device), return_features=True)
            out.append(maps[layer].flatten(1).float().cpu())
    finally:
        g.train(was_training)
    return torch.cat(out)


def pca(g: Generator, k: int = 10, layer: int = 1, n: int = 5000, seed: int = 0) -> dict:
    """GANSpace: the top-k principal components of layer `layer` over n sampled z, regressed back
    to z. Returns directions (k, nz), the share of the layer's variance each component explains,
    and the share a random unit direction in activation space explains (mean over 100)."""
    from sklearn.decomposition import PCA

    if n < 2 * k:
        raise DCGANError(f"pca needs at least 2 x k = {2 * k} samples, got n={n}")
    with torch.no_grad():
        units = layer_activations(g, g.sample_latent(1, device="cpu"), layer).shape[1]
    if n * units * 4 > MAX_ACTIVATION_BYTES:
        raise DCGANError(f"pca of layer {layer} over {n} samples needs {n * units * 4 / 2**30:.1f} GiB of "
                         f"activations (limit {MAX_ACTIVATION_BYTES / 2**30:.0f} GiB): lower --n to at most "
                         f"{MAX_ACTIVATION_BYTES // (units * 4)} or use an earlier --layer")
    z = g.sample_latent(n, torch.Generator().manual_seed(seed), "cpu")
    x = layer_activations(g, z, layer).numpy()
    fit = PCA(n_components=k, svd_solver="randomized", random_state=seed % 2**32).fit(x)
    coords = fit.transform(x)  # (n, k)
    v, *_ = np.linalg.lstsq(coords, z.numpy() - z.numpy().mean(0), rcond=None)  # z - mean ~ coords @ v
    directions = torch.from_numpy(v).float()
    directions = directions / directions.norm(dim=1, keepdim=True).clamp_min(1e-12)
    total = float(x.var(0, ddof=1).sum())
    rng = np.random.default_rng(seed)
    random = rng.standard_normal((100, x.shape[1])).astype(np.float32)
    random /= np.linalg.norm(random, axis=1, keepdims=True)
    random_share = float(((x - x.mean(0)) @ random.T).var(0, ddof=1).mean() / total)
    return {"directions": directions, "explained": fit.explained_variance_ratio_.tolist(),
            "random_explained": random_share, "layer": layer, "n": n}


def svm(g: Generator, positive: list[int], negative: list[int], seed: int = 0,
        condition: torch.Tensor | None = None, latents: torch.Tensor | None = None) -> dict:
    """InterFaceGAN: the unit normal of a linear SVM in z separating samples `positive` from
    `negative` (numbers of seed's sample sheet), pointing towards the positives; with `condition`
    (a unit vector), its component along that direction is removed. Held-out accuracy by
    stratified k-fold cross-validation (k = min(5, smaller class))."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.svm import LinearSVC

    if len(positive) < 2 or len(negative) < 2:
        raise DCGANError(f"svm needs at least 2 positive and 2 negative samples, got {len(positive)} "
                         f"and {len(negative)}")
    if set(positive) & set(negative):
        raise DCGANError(f"samples {sorted(set(positive) & set(negative))} are both positive and negative")
    z = pick(g, seed, positive + negative, latents).numpy()
    y = np.r_[np.ones(len(positive)), np.zeros(len(negative))]
    clf = LinearSVC(C=1.0, max_iter=10000)
    folds = min(5, len(positive), len(negative))
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed % 2**32)  # sklearn seeds are 32-bit
    accuracy = cross_val_score(clf, z, y, cv=cv)
    u = torch.from_numpy(clf.fit(z, y).coef_[0]).float()
    if condition is not None:
        c = condition / condition.norm()
        u = u - (u @ c) * c
    if u.norm() < 1e-8:
        raise DCGANError("the direction vanishes after removing the --condition direction: the two "
                         "directions are the same")
    return {"directions": (u / u.norm())[None], "heldout_accuracy": float(accuracy.mean()),
            "folds": folds, "train_accuracy": float(clf.score(z, y))}


def prior_sigma(g: Generator, u: torch.Tensor, n: int = 10000, seed: int = 0) -> float:
    """Standard deviation of u . z for z drawn from G's prior."""
    z = g.sample_latent(n, torch.Generator().manual_seed(seed), "cpu")
    return float((z @ (u / u.norm())).std())


@torch.no_grad()
def strip(g: Generator, u: torch.Tensor, sigma: float, z: torch.Tensor,
          sigmas: torch.Tensor) -> torch.Tensor:
    """Images (len(z), len(sigmas), C, H, W): each z moved by s * sigma * u for s in `sigmas`."""
    latents = z[:, None] + sigmas[None, :, None] * sigma * u
    images = g.generate(latents.flatten(0, 1)).cpu()
    return images.view(*latents.shape[:2], *images.shape[1:])


def directions_report(source: str | Path, *, out: str | Path, method: str = "sefa", k: int = 10,
                      layer: int = 1, n: int = 5000, seed: int = 0, positive: list[int] | None = None,
                      negative: list[int] | None = None, condition: str | Path | None = None,
                      latents: str | Path | None = None, samples: int = 4, span: float = 3.0,
                      columns: int = 7, generator: str | None = None) -> dict:
    """Find directions with `method`, save each as OUT/direction_KK.json with its strip
    (OUT/direction_KK.png: `samples` samples of seed, moved from -span to +span sigma), an
    overview OUT/directions.png (one row per direction, sample 0) and OUT/directions.json."""
    if method not in METHODS:
        raise DCGANError(f"unknown method {method!r}: use one of {', '.join(METHODS)}")
    check_seed(seed, "seed", MAX_SEED)
    check_count(k, "k", 512)
    check_count(n, "n", 1_000_000)
    check_count(samples, "samples", 64)
    check_count(columns, "columns", 64, 2)
    check_number(span, "span", positive=True)
    for name, values in (("positive", positive), ("negative", negative)):
        if values is not None:
            check_count(len(values), f"the number of {name} samples", 10_000)
            for v in values:
                check_count(v, f"{name} sample number", 2**31 - 1, 0)
    check_out_dir(out, inputs=[source, *[f for f in (condition, latents) if f]])
    g = load_generator(source, generator=generator)
    nz = g.config.nz
    tick = time.perf_counter()
    summary: dict = {"method": method, "source": str(source), "seed": seed}
    if method == "sefa":
        if k > nz:
            raise DCGANError(f"sefa finds at most nz = {nz} directions, got k={k}")
        directions, values = sefa(g, k)
        summary.update(layer="project_and_reshape", eigenvalues=values.tolist(),
                       eigenvalue_share=(values[:k] / values.sum()).tolist())
        scores = values[:k].tolist()
    elif method == "pca":
        r = pca(g, k, layer, n, seed)
        directions = r.pop("directions")
        summary.update(r)
        scores = r["explained"]
    else:
        if not positive or not negative:
            raise DCGANError("svm needs --positive and --negative sample numbers from "
                             "`dcgan sample --numbered --seed S`")
        cond = load_direction(condition, nz)[0] if condition else None
        r = svm(g, positive, negative, seed, cond, load_latents(latents, nz) if latents else None)
        directions = r.pop("directions")
        summary.update(r, layer="z", positive=positive, negative=negative,
                       condition=str(condition) if condition else None,
                       latents=str(latents) if latents else None)
        scores = [r["heldout_accuracy"]]
    summary["seconds"] = time.perf_counter() - tick
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    z = g.latent(seed, range(samples), "cpu")
    sigmas = torch.linspace(-span, span, columns)
    files, overview = [], []
    for i, u in enumerate(directions):
        sigma = prior_sigma(g, u, seed=seed)
        path = save_direction(out / f"direction_{i:02d}.json", u, sigma, method=method, index=i,
                              score=scores[i], source=str(source), layer=summary.get("layer"), seed=seed)
        images = strip(g, u, sigma, z, sigmas)
        labels = [f"{s:+.1f}sd" for s in sigmas.tolist()] * samples
        write_image(grid(annotate(images.flatten(0, 1), labels), nrow=columns), path.with_suffix(".png"))
        overview.append(images[0])
        files.append(str(path))
    labels = [f"#{i} {s:+.1f}sd" for i in range(len(overview)) for s in sigmas.tolist()]
    write_image(grid(annotate(torch.cat(overview), labels), nrow=columns), out / "directions.png")
    summary.update(files=files, sigmas=sigmas.tolist(), samples=samples)
    write_json(out / "directions.json", summary)
    return summary
