"""Representation learning (paper §5): the discriminator as a feature extractor, and baselines.

DCGAN features: the feature maps of every D conv layer, max-pooled to a 4x4 grid, flattened and
concatenated (28,672 dimensions for the imagenet32 preset). BatchNorm runs in inference mode with
statistics averaged over the training set (as the paper's released code does), not the running
averages left by training. Baselines: raw pixels, the same D untrained, and single-layer K-means
features (Coates & Ng 2011).
"""

from __future__ import annotations

import copy
import io
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dcgan import seeds
from dcgan.checkpoint import load_discriminator, run_data
from dcgan.config import check_seed
from dcgan.data import labelled_splits, to_float
from dcgan.distributed import pick_device
from dcgan.errors import DCGANError
from dcgan.models import Discriminator, ModelConfig
from dcgan.outputs import check_output_file, write_bytes
from dcgan.progress import Progress

__all__ = ["write_features"]  # public: dcgan.NAME


def feature_dim(config: ModelConfig) -> int:
    """Length of the pooled feature vector: 16 per channel of every conv layer."""
    with seeds.global_seed(0):
        return 16 * sum(block[0].out_channels for block in Discriminator(config).blocks)


@torch.no_grad()
def average_bn_statistics(d: Discriminator, images: torch.Tensor, batch_size: int = 256) -> Discriminator:
    """A copy of D whose BatchNorm statistics are the plain average over `images` (uint8), on D's
    device."""
    d = copy.deepcopy(d)
    device = next(d.parameters()).device
    for m in d.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over every batch seen
    d.train()
    for chunk in images.split(batch_size):
        d(to_float(chunk.to(device)))
    return d.eval()


@torch.no_grad()
def pooled_features(d: Discriminator, images: torch.Tensor, batch_size: int = 256, grid: int = 4,
                    pool: str = "max", progress: str | None = None) -> np.ndarray:
    """uint8 images (N, C, S, S) -> float32 (N, feature_dim): every conv layer max-pooled to 4x4
    (the paper; `grid` and `pool="avg"` for ablations), layer by layer in D's order.
    Batched on D's device: only one batch of full-resolution feature maps exists at a time, and
    the result is filled in place (float32, one copy). `progress` names the work for a progress bar."""
    check_grid(grid, d)
    reduce = {"max": F.adaptive_max_pool2d, "avg": F.adaptive_avg_pool2d}[pool]
    device = next(d.parameters()).device
    out = None
    with Progress(len(images), progress) as bar:
        for start in range(0, len(images), batch_size):
            _, maps = d(to_float(images[start:start + batch_size].to(device)), return_features=True)
            x = torch.cat([reduce(m, grid).flatten(1) for m in maps], 1).float().cpu().numpy()
            if out is None:
                out = np.empty((len(images), x.shape[1]), dtype=np.float32)
            out[start:start + len(x)] = x
            bar.update(len(x))
    return out if out is not None else np.empty((0, 0), dtype=np.float32)


def check_grid(grid, d: Discriminator) -> int:
    """The pooling grid: 1 up to D's largest feature map (half the image side); more only repeats values."""
    top = d.config.image_size // 2
    if not isinstance(grid, int) or isinstance(grid, bool) or not 1 <= grid <= top:
        raise DCGANError(f"the pooling grid must be an integer from 1 to {top} (half the image side; 4 in "
                         f"the paper), got {grid!r}")
    return grid


def bn_averaged(d: Discriminator, train: torch.Tensor, bn_images: int = 10000,
                seed: int = 0) -> Discriminator:
    """A copy of D whose BN statistics are averaged over up to bn_images training images (a seeded pick)."""
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:bn_images]
    return average_bn_statistics(d, train[pick])


def dcgan_features(d: Discriminator, train: torch.Tensor, images: torch.Tensor, bn_images: int = 10000,
                   seed: int = 0, grid: int = 4, device: str | torch.device | None = None,
                   progress: str | None = None) -> np.ndarray:
    """Pooled features of `images` (each layer max-pooled to grid x grid, 4 in the paper), with BN
    statistics averaged over up to bn_images training images; computed on `device` (default: D's)."""
    d = copy.deepcopy(d).to(device) if device is not None else d  # the caller's D stays where it is
    return pooled_features(bn_averaged(d, train, bn_images, seed), images, grid=grid, progress=progress)


def write_features(source: str | Path, *, data: str | None = None, out: str | Path, split: str = "train",
                   data_dir: str | None = None, grid: int = 4, seed: int = 0, device: str = "auto") -> dict:
    """D's pooled features of every image of a labelled dataset's split (BN statistics averaged over
    its train split), written with the labels to `out` (.npz: features, labels) for any classifier."""
    if split not in ("train", "test"):
        raise DCGANError(f"--split must be train or test, got {split!r}")
    check_seed(seed)
    data, data_dir, _ = run_data(source, data, data_dir)
    out = check_output_file(out, inputs=[source, data, data_dir], suffixes=(".npz",))
    d = load_discriminator(source)
    check_grid(grid, d)
    train, test = labelled_splits(data, d.config.image_size, d.config.channels, data_dir)
    chosen = train if split == "train" else test
    x = dcgan_features(d, train.images, chosen.images, seed=seed, grid=grid, device=pick_device(device),
                       progress=f"D features of {data} {split}")
    buffer = io.BytesIO()
    np.savez(buffer, features=x, labels=chosen.labels.numpy())
    write_bytes(out, buffer.getvalue())
    return {"out": str(out), "images": x.shape[0], "dim": x.shape[1], "data": data, "split": split}


def pixel_features(images: torch.Tensor) -> np.ndarray:
    return to_float(images).flatten(1).numpy()


class KMeansFeatures:
    """Single-layer K-means features (Coates & Ng 2011): 6x6 patches normalised and ZCA-whitened,
    K-means centroids, the triangle activation max(0, mean(z) - z_k), summed over 4 quadrants."""

    def __init__(self, k: int = 400, patch: int = 6, stride: int = 1, patches: int = 100_000, seed: int = 0):
        self.k, self.patch, self.stride, self.patches, self.seed = k, patch, stride, patches, seed

    def _patches(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, S, S) uint8 -> (N, L, C*p*p) normalised patches on a stride grid."""
        x = images.float() / 255
        cols = F.unfold(x, self.patch, stride=self.stride).transpose(1, 2)
        cols = cols - cols.mean(-1, keepdim=True)
        return cols / torch.sqrt(cols.var(-1, keepdim=True) + 10 / 255**2)  # brightness/contrast

    def fit(self, images: torch.Tensor) -> KMeansFeatures:
        from sklearn.cluster import MiniBatchKMeans

        gen = torch.Generator().manual_seed(self.seed)
        cols = self._patches(images[torch.randperm(len(images), generator=gen)[:max(1, self.patches // 50)]])
        cols = cols.reshape(-1, cols.shape[-1])
        cols = cols[torch.randperm(len(cols), generator=gen)[: self.patches]].double()
        self.mean = cols.mean(0)
        cov = torch.cov((cols - self.mean).T)
        evals, evecs = torch.linalg.eigh(cov)
        self.whiten = (evecs @ torch.diag(1 / torch.sqrt(evals + 0.1)) @ evecs.T).float()  # ZCA, eps 0.1
        white = ((cols - self.mean).float() @ self.whiten).numpy()
        km = MiniBatchKMeans(self.k, random_state=self.seed, n_init=3, batch_size=4096).fit(white)
        self.centroids = torch.from_numpy(km.cluster_centers_).float()
        return self

    def __call__(self, images: torch.Tensor, batch_size: int = 256) -> np.ndarray:
        out = []
        for chunk in images.split(batch_size):
            cols = (self._patches(chunk) - self.mean.float()) @ self.whiten  # (n, L, D)
            z = torch.cdist(cols, self.centroids.expand(len(cols), -1, -1))  # distances to centroids
            act = (z.mean(-1, keepdim=True) - z).clamp_min(0)  # triangle activation
            side = int(round(act.shape[1] ** 0.5))
            act = act.transpose(1, 2).reshape(len(chunk), self.k, side, side)
            out.append(F.adaptive_avg_pool2d(act, 2).mul(side * side / 4).flatten(1).numpy())  # quadrant sums
        return np.concatenate(out).astype(np.float32)
