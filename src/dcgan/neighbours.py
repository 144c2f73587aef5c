"""Memorisation check (paper §6.1): the nearest training images of generated samples.

For n samples of (seed, 0..n-1), the k nearest training images in pixel space (RMS over [-1, 1]
pixels) and in D's feature space (pooled conv features, L2-normalised, BN statistics averaged over
the training set). The summary compares each sample's distance to its nearest training image with
the distance of a training image to its nearest *other* training image: a model that copies its
training set has samples much closer to the data than the data is to itself (ratio well below 1).
The training set is embedded chunk by chunk, so memory stays bounded for large datasets.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from dcgan.checkpoint import load_networks, run_data
from dcgan.config import MAX_SEED, check_count, check_seed
from dcgan.data import open_dataset, to_float, to_uint8
from dcgan.errors import DCGANError
from dcgan.outputs import check_out_dir, write_image, write_json
from dcgan.progress import Progress
from dcgan.representation import bn_averaged, pooled_features
from dcgan.visualize import annotate, grid

__all__ = ["neighbours_report"]  # public: dcgan.NAME

Embed = Callable[[torch.Tensor], torch.Tensor]  # uint8 images (n, C, S, S) -> (n, d) float


def pixel_embedding(images: torch.Tensor) -> torch.Tensor:
    """RMS pixel distance = L2 distance of these vectors."""
    x = to_float(images).flatten(1)
    return x / x.shape[1] ** 0.5


def feature_embedding(d, train: torch.Tensor, seed: int = 0) -> Embed:
    """D's pooled features, L2-normalised, BN statistics averaged over (up to 10,000) training images."""
    averaged = bn_averaged(d, train, seed=seed)

    def embed(images: torch.Tensor) -> torch.Tensor:
        f = torch.from_numpy(pooled_features(averaged, images))
        return f / f.norm(dim=1, keepdim=True).clamp_min(1e-12)

    return embed


@torch.no_grad()
def nearest(queries: torch.Tensor, bank: torch.Tensor, embed: Embed, k: int,
            query_index: torch.Tensor | None = None, chunk: int = 2048,
            progress: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Distances (n, k) and indices (n, k) of the k nearest `bank` images (uint8) to the embedded
    queries (n, d), ascending. query_index[i] >= 0 excludes that bank image from query i's list
    (a training image is not its own neighbour); -1 excludes nothing."""
    if k > len(bank) - (query_index is not None):
        raise DCGANError(f"k={k} neighbours asked for but the training set has {len(bank)} images")
    best_d = torch.full((len(queries), k), float("inf"))
    best_i = torch.zeros((len(queries), k), dtype=torch.long)
    with Progress(len(bank), progress) as bar:
        for start in range(0, len(bank), chunk):
            dist = torch.cdist(queries, embed(bank[start:start + chunk]))
            ids = torch.arange(start, start + dist.shape[1])
            if query_index is not None:
                dist[query_index[:, None] == ids[None]] = float("inf")
            all_d = torch.cat([best_d, dist], 1)
            all_i = torch.cat([best_i, ids.expand(len(queries), -1)], 1)
            best_d, pos = all_d.topk(k, dim=1, largest=False)
            best_i = all_i.gather(1, pos)
            bar.update(dist.shape[1])
    return best_d, best_i


def summary(sample_nn: torch.Tensor, train_nn: torch.Tensor) -> dict:
    """Nearest-neighbour distances of samples vs. of training images to other training images."""
    s, t = sample_nn.numpy(), train_nn.numpy()
    floor = float(np.quantile(t, 0.01))
    return {"sample_to_train_median": float(np.median(s)), "train_to_train_median": float(np.median(t)),
            "ratio": float(np.median(s) / max(np.median(t), 1e-12)),
            "train_to_train_1st_percentile": floor,
            "samples_closer_than_that": int((s < floor).sum()),
            "reading": "ratio well below 1, or many samples closer than the 1st percentile of "
                       "train-to-train distances, means samples copy training images"}


def neighbours_report(source: str | Path, *, data: str | None = None, out: str | Path, n: int = 8, k: int = 5,
                      seed: int = 0, data_dir: str | None = None, reference: int = 500,
                      generator: str | None = None) -> dict:
    """neighbours_pixels.png and neighbours_features.png (rows: sample | its k neighbours, distances
    printed on them) and neighbours.json."""
    check_count(n, "n", 256)
    check_count(k, "k", 64)
    check_seed(seed, "seed", MAX_SEED)
    data, data_dir, exclude = run_data(source, data, data_dir, what="the training-image search")
    check_out_dir(out, inputs=[source, data, data_dir])
    g, d = load_networks(source, generator=generator)
    c = g.config
    train = open_dataset(data, c.image_size, c.channels, data_dir, exclude=exclude)
    if train.images is None:
        raise DCGANError(f"{data} is streamed (too large to hold in memory); give a smaller folder "
                         "of training images (e.g. a random subset) for the neighbour search")
    samples = to_uint8(g.sample(n, seed=seed).cpu())
    ref = torch.randperm(len(train.images), generator=torch.Generator().manual_seed(seed))
    ref = ref[:min(reference, len(train.images) - 1)]
    spaces = {"pixels": pixel_embedding}
    if d is not None:
        spaces["features"] = feature_embedding(d, train.images, seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"samples": n, "k": k, "seed": seed, "training_images": len(train.images),
              "reference_images": len(ref)}
    for space, embed in spaces.items():
        queries = torch.cat([embed(samples), embed(train.images[ref])])  # one pass over the training set
        exclude = torch.cat([torch.full((n,), -1), ref])
        dist, idx = nearest(queries, train.images, embed, k, query_index=exclude,
                            progress=f"nearest training images in {space}")
        dist, idx, ref_dist = dist[:n], idx[:n], dist[n:]
        labels = []
        for i in range(n):
            labels += [f"G#{i}"] + [f"{v:.2f}" for v in dist[i].tolist()]
        rows = torch.cat([torch.cat([to_float(samples[i:i + 1]), to_float(train.images[idx[i]])])
                          for i in range(n)])
        write_image(grid(annotate(rows, labels), nrow=k + 1), out / f"neighbours_{space}.png")
        report[space] = {"distances": dist.tolist(),
                         "neighbours": [[train.name(int(j)) for j in row] for row in idx],
                         **summary(dist[:, 0], ref_dist[:, 0])}
    write_json(out / "neighbours.json", report)
    return report
