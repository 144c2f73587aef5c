"""Near-duplicate removal by semantic hashing (paper §4.1.1).

Two passes, both linear in the number of images (hash buckets, never all pairs):
1. exact: images whose decoded 32x32 pixels are identical;
2. semantic: a 3072-128-3072 denoising, dropout-regularised ReLU autoencoder (1024-128-1024 for
   grey data) is trained on the 32x32 centre crops (centred by the mean image, so that no code unit
   starts dead); its 128-d code, binarised by thresholding the ReLU (code > 0), is a hash. Images
   sharing a hash are near-duplicates (the paper's rule, hamming=0). With hamming=R, codes at most
   R bits apart also match: multi-index hashing splits the code into R+1 bands, two codes within R
   bits agree exactly on at least one band, and candidates from the band buckets are verified.

Equal codes are grouped in one pass over a dict, whatever the radius; only distinct codes are
compared pairwise, at most MAX_BUCKET of them per band bucket (a larger bucket matches equal codes
only, and is reported). A code shared by more than DEGENERATE_SHARE of the images is reported too:
the autoencoder has collapsed there, and its group is not a set of duplicates.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from dcgan import seeds
from dcgan.config import check_count
from dcgan.data import ImageData, open_dataset, to_float
from dcgan.datasets import natural_shape
from dcgan.errors import DCGANError
from dcgan.outputs import check_out_dir, write_json, write_text
from dcgan.progress import Progress
from dcgan.visualize import save_figure

__all__ = ["dedup"]  # public: dcgan.NAME

SIZE = 32  # the paper hashes 32x32 downsampled centre crops
MAX_BUCKET = 2048  # distinct codes compared pairwise in one band bucket (hamming > 0)
DEGENERATE_SHARE = 0.01  # a code shared by more than this share of the images (and > 20) is reported


class HashingAutoencoder(nn.Module):
    """x (N, C*32*32) in [-1, 1] -> ReLU code (N, bits) -> reconstruction."""

    def __init__(self, dim: int, bits: int = 128, dropout: float = 0.3):
        super().__init__()
        self.register_buffer("center", torch.zeros(dim))  # the mean image, subtracted first
        self.encoder = nn.Linear(dim, bits)
        self.dropout = nn.Dropout(dropout)
        self.decoder = nn.Linear(bits, dim)

    def code(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.encoder(x - self.center))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.dropout(self.code(x))) + self.center


@dataclass
class DedupConfig:
    bits: int = 128  # code size (paper: 128)
    epochs: int = 30  # autoencoder training epochs
    batch_size: int = 256
    lr: float = 1e-3
    noise: float = 0.5  # std of the Gaussian input corruption (denoising), pixels in [-1, 1]
    dropout: float = 0.3  # on the code units
    hamming: int = 0  # 0: equal codes only (the paper); R: codes at most R bits apart match
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.bits, int) or not 8 <= self.bits <= 4096:
            raise DCGANError(f"bits must be an integer from 8 to 4096 (128 in the paper), got {self.bits!r}")
        if not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            raise DCGANError(f"seed must be an integer from 0 to {2**63 - 1}, got {self.seed!r}")
        if not 0 <= self.hamming < self.bits // 4:
            raise DCGANError(f"hamming radius must lie in [0, {self.bits // 4}) for {self.bits}-bit codes, "
                             f"got {self.hamming}")


@dataclass
class DedupResult:
    names: list[str]  # per image
    groups: list[list[int]]  # near-duplicate groups of two or more images, largest first
    exact_groups: list[list[int]] = field(default_factory=list)
    reconstruction_mse: float = 0.0
    warnings: list[str] = field(default_factory=list)

    @property
    def duplicates(self) -> list[int]:
        """Every image of a group but its first: what to leave out."""
        return sorted(i for g in self.groups for i in g[1:])


def train_autoencoder(x: torch.Tensor, config: DedupConfig,
                      progress: str | None = None) -> tuple[HashingAutoencoder, float]:
    """Denoising training on flattened images in [-1, 1]; returns the model and its final MSE."""
    gen = torch.Generator().manual_seed(config.seed)
    with seeds.global_seed(config.seed):  # init and dropout draw from it
        model = HashingAutoencoder(x.shape[1], config.bits, config.dropout)
        model.center.copy_(x.mean(0))
        opt = torch.optim.Adam(model.parameters(), lr=config.lr)
        model.train()
        loss = torch.tensor(0.0)
        with Progress(config.epochs, progress, "epochs") as bar:
            for _ in range(config.epochs):
                for idx in torch.randperm(len(x), generator=gen).split(config.batch_size):
                    clean = x[idx]
                    noisy = clean + config.noise * torch.randn(clean.shape, generator=gen)
                    loss = nn.functional.mse_loss(model(noisy), clean)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                bar.update()
    return model.eval(), float(loss.detach())


@torch.no_grad()
def hash_codes(model: HashingAutoencoder, x: torch.Tensor) -> torch.Tensor:
    """The binarised codes (ReLU > 0): bool (N, bits)."""
    return torch.cat([model.code(chunk) > 0 for chunk in x.split(4096)])


def code_groups(codes: torch.Tensor, radius: int,
                max_bucket: int = MAX_BUCKET) -> tuple[list[list[int]], dict]:
    """Groups (two or more rows, joined transitively) of codes at most `radius` bits apart, and
    {"largest_code": rows sharing the most common code, "buckets_over_limit": band buckets of more
    than max_bucket distinct codes, matched by equal codes only}. Time and memory grow linearly
    with the rows for equal codes, and by at most max_bucket^2 per band bucket otherwise."""
    n = len(codes)
    unique, inverse, counts = torch.unique(codes.to(torch.uint8), dim=0, return_inverse=True,
                                           return_counts=True)
    groups = _Groups(n)
    for members in _buckets(inverse.tolist(), list(range(n))):  # equal codes: one group each
        groups.join(members)
    first = torch.full((len(unique),), n, dtype=torch.long).scatter_reduce_(
        0, inverse, torch.arange(n), "amin").tolist()  # a row of each distinct code
    over = 0
    for band in (torch.arange(codes.shape[1]).tensor_split(radius + 1) if radius else []):
        keys = [bytes(row) for row in unique[:, band].tolist()]
        for bucket in _buckets(keys, list(range(len(unique)))):
            if len(bucket) > max_bucket:
                over += 1
                continue
            b = unique[bucket].float()
            for start in range(0, len(b), 512):  # Hamming distances, 512 rows at a time
                close = torch.cdist(b[start:start + 512], b, p=1) <= radius
                for i, j in close.nonzero().tolist():
                    if start + i < j:
                        groups.join([first[bucket[start + i]], first[bucket[j]]])
    return groups.groups(), {"largest_code": int(counts.max()) if n else 0, "buckets_over_limit": over}


class _Groups:
    """Union-find over image indices."""

    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def join(self, members: list[int]) -> None:
        root = self.find(members[0])
        for m in members[1:]:
            self.parent[self.find(m)] = root

    def groups(self) -> list[list[int]]:
        out: dict[int, list[int]] = {}
        for i in range(len(self.parent)):
            out.setdefault(self.find(i), []).append(i)
        return sorted((g for g in out.values() if len(g) > 1), key=lambda g: (-len(g), g[0]))


def _buckets(keys: list, indices: list[int]) -> list[list[int]]:
    table: dict = {}
    for k, i in zip(keys, indices, strict=True):
        table.setdefault(k, []).append(i)
    return [v for v in table.values() if len(v) > 1]


def find_duplicates(images: torch.Tensor, config: DedupConfig | None = None,
                    names: list[str] | None = None, progress: str | None = None) -> DedupResult:
    """images: uint8 (N, C, 32, 32). Exact duplicates first, then equal (or near) hash codes."""
    config = config or DedupConfig()
    n = len(images)
    names = names or [str(i) for i in range(n)]
    groups = _Groups(n)
    exact = _buckets([hashlib.sha1(img.numpy().tobytes()).digest() for img in images], list(range(n)))
    for g in exact:
        groups.join(g)
    firsts = sorted({groups.find(i) for i in range(n)})  # one image per exact group
    x = to_float(images[firsts]).flatten(1)
    model, mse = train_autoencoder(x, config, progress)
    codes = hash_codes(model, x)
    found, info = code_groups(codes, config.hamming)
    for g in found:
        groups.join([firsts[k] for k in g])
    warnings = []
    if info["largest_code"] > max(20, DEGENERATE_SHARE * len(codes)):
        warnings.append(f"one hash code is shared by {info['largest_code']} of {len(codes)} distinct images: "
                        "the autoencoder's code is degenerate there and that group is not a set of "
                        "duplicates (train it longer with --epochs, or use more --bits)")
    if info["buckets_over_limit"]:
        warnings.append(f"{info['buckets_over_limit']} hash band bucket(s) held more than {MAX_BUCKET} "
                        "codes: there only equal codes were matched (--hamming had no effect)")
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    return DedupResult(names, groups.groups(), exact, mse, warnings)


def dedup(data: str, *, out: str | Path, data_dir: str | None = None, channels: int | None = None,
          bits: int = 128, epochs: int = 30, hamming: int = 0, seed: int = 0,
          copy_to: str | Path | None = None) -> DedupResult:
    """Find the near-duplicates of a dataset and write OUT/{duplicates.json, duplicates.txt, keep.txt,
    groups.png}; optionally copy the kept files of a folder to `copy_to`. `bits`, `epochs`, `hamming`
    and `seed` are those of DedupConfig."""
    if channels is not None and channels not in (1, 3):
        raise DCGANError(f"--channels must be 1 or 3, got {channels}")
    config = DedupConfig(bits=bits, epochs=epochs, hamming=hamming, seed=seed)
    check_count(config.epochs, "epochs", 10_000)
    check_out_dir(out, inputs=[data, data_dir])
    if copy_to is not None:
        check_out_dir(copy_to, inputs=[data, data_dir, out], what="--copy-to")
    channels = channels or natural_shape(data)[0]
    ds: ImageData = open_dataset(data, SIZE, channels, data_dir)
    if ds.images is None:
        raise DCGANError(f"{data} is too large to hash in memory: raise DCGAN_MAX_MEMORY_GB")
    names = [ds.name(i) for i in range(len(ds))]
    result = find_duplicates(ds.images, config, names, progress=f"hashing autoencoder on {data}")
    write_report(result, ds.images, Path(out))
    if copy_to is not None:
        if ds.names is None:
            raise DCGANError("--copy-to needs a folder of images; for a named dataset use "
                             "duplicates.txt with dcgan train --exclude")
        dropped = set(result.duplicates)
        for i, name in enumerate(result.names):
            if i not in dropped:
                target = Path(copy_to) / name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(Path(ds.source) / name, target)
    return result


def write_report(result: DedupResult, images: torch.Tensor, out: Path, sheet_groups: int = 16) -> None:
    out.mkdir(parents=True, exist_ok=True)
    dup = set(result.duplicates)
    report = {
        "images": len(result.names),
        "duplicates": len(dup),
        "groups": [[result.names[i] for i in g] for g in result.groups],
        "exact_groups": len(result.exact_groups),
        "autoencoder_mse": result.reconstruction_mse,
        "warnings": result.warnings,
    }
    write_json(out / "duplicates.json", report)
    # file names are bytes: ones that are not UTF-8 are written back as the bytes they were
    write_text(out / "duplicates.txt", "".join(result.names[i] + "\n" for i in sorted(dup)),
               errors="surrogateescape")
    write_text(out / "keep.txt", "".join(n + "\n" for i, n in enumerate(result.names) if i not in dup),
               errors="surrogateescape")
    if result.groups:  # one row per group: the kept image first, then its duplicates
        groups = [g[:12] for g in result.groups[:sheet_groups]]
        short = [[_short(result.names[i]) for i in g] for g in groups]
        save_figure([[to_float(images[i]) for i in g] for g in groups], out / "groups.png",
                    f"{len(result.groups)} groups of near-duplicates (the first {len(groups)}): the framed "
                    "image is kept, the others are listed in duplicates.txt",
                    [f"group {n} ({len(g)})" for n, g in enumerate(result.groups[:sheet_groups])],
                    tile_labels=short, marked={(n, 0) for n in range(len(groups))})


def _short(name: str, chars: int = 10) -> str:
    """A file name that fits a 64-pixel tile: its end, which tells copies apart (ASCII: a name need not
    be UTF-8)."""
    name = name.encode("ascii", "replace").decode()
    return name if len(name) <= chars else ".." + name[-(chars - 2):]
