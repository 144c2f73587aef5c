"""Near-duplicate removal by semantic hashing (paper §4.1.1).

Two passes, both linear in the number of images (hash buckets, never all pairs):
1. exact: images whose decoded 32x32 pixels are identical;
2. semantic: a 3072-128-3072 denoising, dropout-regularised ReLU autoencoder (1024-128-1024 for
   grey data) is trained on the 32x32 centre crops (centred by the mean image, so that no code unit
   starts dead); its 128-d code, binarised by thresholding the ReLU (code > 0), is a hash. Images
   sharing a hash are near-duplicates (the paper's rule, hamming=0). With hamming=R, codes at most
   R bits apart also match: multi-index hashing splits the code into R+1 bands, two codes within R
   bits agree exactly on at least one band, and candidates from the band buckets are verified.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torchvision.utils import save_image

from dcgan.data import ImageData, open_dataset, to_float
from dcgan.errors import DCGANError

SIZE = 32  # the paper hashes 32x32 downsampled centre crops


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

    @property
    def duplicates(self) -> list[int]:
        """Every image of a group but its first: what to leave out."""
        return sorted(i for g in self.groups for i in g[1:])


def train_autoencoder(x: torch.Tensor, config: DedupConfig) -> tuple[HashingAutoencoder, float]:
    """Denoising training on flattened images in [-1, 1]; returns the model and its final MSE."""
    gen = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    model = HashingAutoencoder(x.shape[1], config.bits, config.dropout)
    model.center.copy_(x.mean(0))
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    model.train()
    loss = torch.tensor(0.0)
    for _ in range(config.epochs):
        for idx in torch.randperm(len(x), generator=gen).split(config.batch_size):
            clean = x[idx]
            noisy = clean + config.noise * torch.randn(clean.shape, generator=gen)
            loss = nn.functional.mse_loss(model(noisy), clean)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval(), float(loss.detach())


@torch.no_grad()
def hash_codes(model: HashingAutoencoder, x: torch.Tensor) -> torch.Tensor:
    """The binarised codes (ReLU > 0): bool (N, bits)."""
    return torch.cat([model.code(chunk) > 0 for chunk in x.split(4096)])


def near_pairs(codes: torch.Tensor, radius: int) -> list[list[int]]:
    """Groups of rows whose codes are at most `radius` bits apart (multi-index hashing)."""
    bands = torch.arange(codes.shape[1]).tensor_split(radius + 1)
    found = []
    for band in bands:
        keys = [bytes(row) for row in codes[:, band].to(torch.uint8).tolist()]
        for bucket in _buckets(keys, list(range(len(codes)))):
            b = codes[bucket].float()
            dist = torch.cdist(b, b, p=1)  # Hamming distances inside the bucket
            for i, j in (dist <= radius).triu(1).nonzero().tolist():
                found.append([bucket[i], bucket[j]])
    return found


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
                    names: list[str] | None = None) -> DedupResult:
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
    model, mse = train_autoencoder(x, config)
    codes = hash_codes(model, x)
    for pair in near_pairs(codes, config.hamming):
        groups.join([firsts[k] for k in pair])
    return DedupResult(names, groups.groups(), exact, mse)


def dedup(data: str, out: str | Path, data_dir: str | None = None, channels: int | None = None,
          config: DedupConfig | None = None, copy_to: str | Path | None = None) -> DedupResult:
    """Find the near-duplicates of a dataset and write REPORT_DIR/{duplicates.json, duplicates.txt,
    keep.txt, groups.png}; optionally copy the kept files of a folder to `copy_to`."""
    from dcgan.config import check_count
    from dcgan.data import natural_shape
    from dcgan.outputs import check_out_dir

    if channels is not None and channels not in (1, 3):
        raise DCGANError(f"--channels must be 1 or 3, got {channels}")
    config = config or DedupConfig()
    check_count(config.epochs, "epochs", 10_000)
    check_out_dir(out, inputs=[data, data_dir])
    if copy_to is not None:
        check_out_dir(copy_to, inputs=[data, data_dir, out], what="--copy-to")
    channels = channels or natural_shape(data)[0]
    ds: ImageData = open_dataset(data, SIZE, channels, data_dir)
    if ds.images is None:
        raise DCGANError(f"{data} is too large to hash in memory: raise DCGAN_MAX_MEMORY_GB")
    names = [ds.name(i) for i in range(len(ds))]
    result = find_duplicates(ds.images, config, names)
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
    }
    (out / "duplicates.json").write_text(json.dumps(report, indent=2))
    # file names are bytes: ones that are not UTF-8 are written back as the bytes they were
    (out / "duplicates.txt").write_text("".join(result.names[i] + "\n" for i in sorted(dup)),
                                        errors="surrogateescape")
    (out / "keep.txt").write_text("".join(n + "\n" for i, n in enumerate(result.names) if i not in dup),
                                  errors="surrogateescape")
    if result.groups:  # one row per group: the kept image first, then its duplicates
        rows = result.groups[:sheet_groups]
        width = min(max(len(g) for g in rows), 12)
        blank = torch.zeros_like(images[0])
        cells = [images[g[k]] if k < len(g) else blank for g in rows for k in range(width)]
        save_image(torch.stack(cells).float() / 255, out / "groups.png", nrow=width, padding=2)
