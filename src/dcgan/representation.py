"""Representation learning (paper §5): the discriminator as a feature extractor, and baselines.

DCGAN features: the feature maps of every D conv layer, max-pooled to a 4x4 grid, flattened and
concatenated (28,672 dimensions for the imagenet32 preset). BatchNorm runs in inference mode with
statistics averaged over the training set (as the paper's released code does), not the running
averages left by training. Baselines: raw pixels, the same D untrained, and single-layer K-means
features (Coates & Ng 2011).
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dcgan import seeds
from dcgan.checkpoint import load_discriminator, run_data
from dcgan.config import check_seed
from dcgan.data import labelled_splits, to_float
from dcgan.distributed import pick_device
from dcgan.errors import DCGANError, describe_os_error
from dcgan.models import Discriminator, ModelConfig, averaged_bn_statistics
from dcgan.outputs import atomic_write, check_out_dir, check_output_file, write_bytes, write_json
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
    with averaged_bn_statistics(d):
        for chunk in images.split(batch_size):
            d(to_float(chunk.to(device)))
    return d


def pooled_dim(d: Discriminator, grid: int = 4) -> int:
    """Length of D's pooled feature vector at this grid."""
    return grid * grid * sum(block[0].out_channels for block in d.blocks)


@torch.no_grad()
def pooled_batches(d: Discriminator, images: torch.Tensor, batch_size: int = 256, grid: int = 4,
                   pool: str = "max", progress: str | None = None) -> Iterator[np.ndarray]:
    """uint8 images (N, C, S, S) -> float32 (n, feature_dim) per batch: every conv layer max-pooled to
    4x4 (the paper; `grid` and `pool="avg"` for ablations), layer by layer in D's order. Batched on
    D's device: only one batch of full-resolution feature maps exists at a time. `progress` names
    the work for a progress bar."""
    check_grid(grid, d)
    reduce = {"max": F.adaptive_max_pool2d, "avg": F.adaptive_avg_pool2d}[pool]
    device = next(d.parameters()).device
    with Progress(len(images), progress) as bar:
        for start in range(0, len(images), batch_size):
            _, maps = d(to_float(images[start:start + batch_size].to(device)), return_features=True)
            x = torch.cat([reduce(m, grid).flatten(1) for m in maps], 1).float().cpu().numpy()
            bar.update(len(x))
            yield x


def pooled_features(d: Discriminator, images: torch.Tensor, batch_size: int = 256, grid: int = 4,
                    pool: str = "max", progress: str | None = None) -> np.ndarray:
    """The batches of `pooled_batches` in one float32 (N, feature_dim) array, filled in place (one
    copy of the features)."""
    out = np.empty((len(images), pooled_dim(d, grid)), dtype=np.float32)
    start = 0
    for x in pooled_batches(d, images, batch_size, grid, pool, progress):
        out[start:start + len(x)] = x
        start += len(x)
    return out


def check_grid(grid, d: Discriminator) -> int:
    """The pooling grid: 1 up to D's largest feature map (half the image side); more only repeats values."""
    top = d.config.image_size // 2
    if not isinstance(grid, int) or isinstance(grid, bool) or not 1 <= grid <= top:
        raise DCGANError(f"the pooling grid must be an integer from 1 to {top} (half the image side; 4 in "
                         f"the paper), got {grid!r}")
    return grid


BN_IMAGES = 10000  # training images whose plain average is D's BN statistics


def bn_averaged(d: Discriminator, train: torch.Tensor, bn_images: int = BN_IMAGES,
                seed: int = 0) -> Discriminator:
    """A copy of D whose BN statistics are averaged over up to bn_images training images (a seeded pick)."""
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:bn_images]
    return average_bn_statistics(d, train[pick])


def dcgan_features(d: Discriminator, train: torch.Tensor, images: torch.Tensor, bn_images: int = BN_IMAGES,
                   seed: int = 0, grid: int = 4, device: str | torch.device | None = None,
                   progress: str | None = None) -> np.ndarray:
    """Pooled features of `images` (each layer max-pooled to grid x grid, 4 in the paper), with BN
    statistics averaged over up to bn_images training images; computed on `device` (default: D's)."""
    d = copy.deepcopy(d).to(device) if device is not None else d  # the caller's D stays where it is
    return pooled_features(bn_averaged(d, train, bn_images, seed), images, grid=grid, progress=progress)


def write_features(source: str | Path, *, data: str | None = None, out: str | Path, split: str = "train",
                   data_dir: str | None = None, grid: int = 4, seed: int = 0, device: str = "auto") -> dict:
    """D's pooled features of a labelled dataset (BN statistics averaged over its train split), with
    the labels, for any classifier. `out` ending in .npz: one split in one file (features, labels).
    `out` without a suffix is a folder: both splits as memory-mappable float32 .npy files written batch by
    batch (so the features never need to fit in memory), which `dcgan probe --features` reads."""
    suffix = Path(out).suffix.lower()
    if suffix not in ("", ".npz"):
        raise DCGANError(f"--out {out}: unsupported file type {suffix!r}; give FILE.npz (one --split in "
                         "memory) or a folder name without a suffix (both splits, memory-mappable .npy)")
    if suffix == "":
        return write_feature_folder(source, data=data, out=out, data_dir=data_dir, grid=grid, seed=seed,
                                    device=device)
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


FEATURES_FORMAT = "dcgan-features"
SPLITS = ("train", "test")


def fingerprint(d: Discriminator) -> str:
    """SHA-256 of D's weights and buffers: which D a feature folder was computed from."""
    h = hashlib.sha256()
    for name, t in sorted(d.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _write_npy(path: Path, shape: tuple[int, ...], dtype, batches) -> None:
    """A .npy file streamed from `batches` (arrays whose rows fill `shape` in order), atomically."""
    dtype = np.dtype(dtype)

    def write(f):
        np.lib.format.write_array_header_1_0(f, {"descr": dtype.str, "fortran_order": False, "shape": shape})
        rows = 0
        for x in batches:
            f.write(np.ascontiguousarray(x, dtype=dtype).tobytes())
            rows += len(x)
        if rows != shape[0]:
            raise DCGANError(f"internal: {path} got {rows} rows, expected {shape[0]}")

    atomic_write(path, write)


def write_feature_folder(source: str | Path, *, data: str | None = None, out: str | Path,
                         data_dir: str | None = None, grid: int = 4, seed: int = 0,
                         device: str = "auto") -> dict:
    """FOLDER/{train,test}.npy (float32, one row per image) and {train,test}_labels.npy (int64), and
    features.json naming the D (a SHA-256 of its weights), data, grid and seed. Written one batch at
    a time; features.json is written last and removed first, so a folder without it is incomplete."""
    check_seed(seed)
    data, data_dir, _ = run_data(source, data, data_dir)
    out = check_out_dir(out, inputs=[source, data, data_dir])
    d = load_discriminator(source)
    check_grid(grid, d)
    train, test = labelled_splits(data, d.config.image_size, d.config.channels, data_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "features.json").unlink(missing_ok=True)
    except OSError as e:
        raise DCGANError(f"cannot write the feature folder {out}: {describe_os_error(e)}") from None
    averaged = bn_averaged(copy.deepcopy(d).to(pick_device(device)), train.images, seed=seed)
    dim = pooled_dim(d, grid)
    for name, split in zip(SPLITS, (train, test), strict=True):
        _write_npy(out / f"{name}.npy", (len(split), dim), np.float32,
                   pooled_batches(averaged, split.images, grid=grid, progress=f"D features of {data} {name}"))
        _write_npy(out / f"{name}_labels.npy", (len(split),), np.int64, [split.labels.numpy()])
    meta = {"format": FEATURES_FORMAT, "version": 1, "source": str(source), "d_sha256": fingerprint(d),
            "data": data, "data_dir": data_dir, "grid": grid, "seed": seed, "dim": dim,
            "train": len(train), "test": len(test), "bn_images": min(BN_IMAGES, len(train)),
            "dtype": "float32", "layout": "one row per image: every D conv layer max-pooled to grid x grid, "
                                          "flattened, layer by layer in D's order"}
    write_json(out / "features.json", meta)
    return {"out": str(out), "images": len(train) + len(test), "dim": dim, "data": data,
            "split": "train,test"}


def read_feature_folder(folder: str | Path, d: Discriminator, data: str, data_dir: str | None, grid: int,
                        seed: int, labels: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """The splits of a `write_feature_folder` folder, memory-mapped read-only (never unpickled), after
    checking that they are D's features of `data` at this grid and seed with these labels."""
    folder = Path(folder)
    redo = f"make them with: dcgan features RUN --data {data} --grid {grid} --seed {seed} --out {folder}"
    try:
        meta = json.loads((folder / "features.json").read_text())
    except FileNotFoundError:
        raise DCGANError(f"--features {folder}: no features.json (not a feature folder, or its writing was "
                         f"interrupted); {redo}") from None
    except (OSError, ValueError) as e:
        raise DCGANError(f"--features {folder}: features.json is unreadable ({e}); {redo}") from None
    if not isinstance(meta, dict) or meta.get("format") != FEATURES_FORMAT:
        raise DCGANError(f"--features {folder}: features.json is not written by `dcgan features`; {redo}")
    wanted = {"data": data, "data_dir": data_dir, "grid": grid, "seed": seed, "d_sha256": fingerprint(d)}
    for key, value in wanted.items():
        if meta.get(key) != value:
            what = "another discriminator" if key == "d_sha256" else f"{key} {meta.get(key)!r}, not {value!r}"
            raise DCGANError(f"--features {folder} holds features of {what} (computed from "
                             f"{meta.get('source')}); {redo}")
    out = {}
    for name in SPLITS:
        n = len(labels[name])
        for key, shape, kind in ((name, (n, meta.get("dim")), np.float32),
                                 (f"{name}_labels", (n,), np.int64)):
            path = folder / f"{key}.npy"
            try:
                out[key] = np.load(path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as e:
                raise DCGANError(f"--features {path} is not a readable .npy file ({e}); {redo}") from None
            if out[key].dtype != kind or out[key].shape != shape:
                raise DCGANError(f"--features {path} is {out[key].dtype} {out[key].shape}, expected "
                                 f"{np.dtype(kind)} {shape}; {redo}")
        if not np.array_equal(out[f"{name}_labels"], labels[name].numpy()):
            raise DCGANError(f"--features {folder}: the {name} labels differ from {data}'s; {redo}")
    return {name: out[name] for name in SPLITS}


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
