"""The one place a dataset becomes tensors: any source -> uint8 (N, C, S, S), batched.

Every source (a folder, CelebA, LSUN, the named datasets) is decoded once (centre crop, resize to the
model size) into the on-disk cache (`dcgan.cache`) and batched by indexing one uint8 array: no
per-image decoding while training. A dataset that fits in memory (DCGAN_MAX_MEMORY_GB) is read into
it (and onto the training device); a larger one is memory-mapped, each batch read from the page
cache. With the cache off, images that do not fit stream through a DataLoader. Pixels become [-1, 1]
floats on the training device (`to_float`).
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from PIL import Image

from dcgan import cache, seeds
from dcgan.config import check_count
from dcgan.datasets import NAMED, labelled_names, natural_shape
from dcgan.errors import DCGANError, check_regular_file, describe_os_error

__all__ = ["open_dataset", "prepare"]  # public: dcgan.NAME

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
# The only decoders PIL may use, whatever a file's name or first bytes say: never EPS (Ghostscript)
# or any of PIL's other plugins for untrusted files.
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP")
CELEBA_FACE_CROP = 108  # centre 108x108 of the 178x218 aligned CelebA images
MAX_IN_MEMORY_BYTES: int | None = None  # None: $DCGAN_MAX_MEMORY_GB (default 8) GiB


def max_in_memory_bytes() -> int:
    """Decoded datasets up to this size are held in memory; larger ones are memory-mapped from the
    cache (or stream, without it)."""
    if MAX_IN_MEMORY_BYTES is not None:
        return MAX_IN_MEMORY_BYTES
    text = os.environ.get("DCGAN_MAX_MEMORY_GB", "8")
    try:
        gb = float(text)
    except ValueError:
        gb = float("nan")
    if not 0 <= gb <= 2**20:  # NaN fails too
        raise DCGANError(f"DCGAN_MAX_MEMORY_GB must be a number of GiB from 0 to {2**20}, got {text!r}")
    return int(gb * 2**30)


@dataclass
class ImageData:
    """Images of one size and channel count, in memory or streamed."""

    source: str
    images: torch.Tensor | None = None  # uint8 (N, C, S, S) when in memory
    labels: torch.Tensor | None = None  # int64 (N,) where the dataset has labels
    stream: torch.utils.data.Dataset | None = None  # yields uint8 (C, S, S) or None if unreadable
    names: list[str] | None = None  # per image: its path relative to the folder (None: indices)
    fingerprint: dict | None = None  # what was read: files (names, sizes, times), count, size, channels
    mapped: bool = False  # images is a memory map of the cache entry (larger than DCGAN_MAX_MEMORY_GB)
    cached: str | None = None  # the cache entry's folder, when read from the cache
    built: bool = False  # ... and the entry was decoded just now

    def name(self, i: int) -> str:
        return self.names[i] if self.names is not None else str(i)

    def __len__(self) -> int:
        return len(self.images) if self.images is not None else len(self.stream)

    def reading(self) -> str:
        """How batches are read: 'in memory', 'memory-mapped from ENTRY' or 'streamed'."""
        if self.mapped:
            return f"memory-mapped from {self.cached}"
        return "in memory" if self.images is not None else "decoded while training"


# ---- decoding -----------------------------------------------------------------------------

def _to_mode(img: Image.Image, mode: str) -> Image.Image:
    """Any PIL mode -> 'RGB' or 'L'; 16/32-bit and float images are rescaled to 8 bits."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        a = np.asarray(img, dtype=np.float64)
        if not np.isfinite(a).all():
            raise ValueError("NaN or infinite pixel values")  # refused, never cast to garbage
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
        img = Image.fromarray(a.round().astype(np.uint8), "L")
    elif img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")  # transparent pixels over white
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
    return img.convert(mode)


def decode_image(path: Path, size: int, channels: int, crop: int | None = None) -> torch.Tensor:
    """One image file -> uint8 (C, size, size): decoded at full resolution (a JPEG and a PNG of the
    same picture give the same pixels), centre crop to a square (or to `crop` pixels), then resize."""
    mode = "RGB" if channels == 3 else "L"
    with Image.open(path, formats=IMAGE_FORMATS) as img:
        w, h = img.size
        if Image.MAX_IMAGE_PIXELS and w * h > Image.MAX_IMAGE_PIXELS:
            raise Image.DecompressionBombError(f"{w}x{h} pixels exceeds PIL's limit")
        img = _to_mode(img, mode)
        img = TF.center_crop(img, crop or min(w, h))
        img = TF.resize(img, [size, size], interpolation=TF.InterpolationMode.BICUBIC,
                        antialias=True)
        return TF.pil_to_tensor(img)


def _try_decode(args) -> torch.Tensor | None:
    try:
        return decode_image(*args)
    except Exception:  # corrupt, truncated, unsupported, too large: reported by the caller
        return None


def list_images(root: Path) -> list[Path]:
    if not root.exists():
        raise DCGANError(f"data path {root} does not exist: give a folder of images or one of "
                         f"{', '.join(sorted(NAMED))}")
    if not root.is_dir():
        raise DCGANError(f"data path {root} is not a folder: give a folder of images")
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS
                   and p.is_file())
    if not paths:
        raise DCGANError(f"no images in {root}: expected files ending in "
                         f"{', '.join(sorted(IMAGE_EXTENSIONS))} (searched recursively)")
    return paths


def report_skipped(root, skipped: list[Path]) -> None:
    if skipped:
        shown = ", ".join(str(p) for p in skipped[:5])
        more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        print(f"warning: skipped {len(skipped)} unreadable image(s) in {root}: {shown}{more}",
              file=sys.stderr)


def decode_folder(paths: list[Path], root: Path, size: int, channels: int,
                  crop: int | None = None) -> tuple[torch.Tensor, list[Path]]:
    """Decode every file in threads (PIL releases the GIL); unreadable ones are skipped.
    Returns the images and the paths they came from."""
    with ThreadPoolExecutor(max_workers=cache.cores()) as pool:
        decoded = list(pool.map(_try_decode, [(p, size, channels, crop) for p in paths],
                                chunksize=64))
    skipped = [p for p, x in zip(paths, decoded, strict=True) if x is None]
    report_skipped(root, skipped)
    kept = [x for x in decoded if x is not None]
    if not kept:
        raise DCGANError(f"none of the {len(paths)} image file(s) in {root} could be read")
    return torch.stack(kept), [p for p, x in zip(paths, decoded, strict=True) if x is not None]


def resize_array(images: np.ndarray, size: int, channels: int) -> torch.Tensor:
    """uint8 (N, H, W[, C]) -> uint8 (N, channels, size, size), antialiased bilinear resize."""
    x = torch.from_numpy(np.ascontiguousarray(images))
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
    if x.shape[1] != channels:
        x = x.expand(-1, 3, -1, -1) if channels == 3 else TF.rgb_to_grayscale(x)
    s = min(x.shape[-2:])
    x = TF.center_crop(x, [s, s])
    if s == size:
        return x.contiguous()
    out = []
    for chunk in x.split(4096):
        y = F.interpolate(chunk.float(), size=(size, size), mode="bilinear", antialias=True,
                          align_corners=False)
        out.append(y.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out)


# ---- streaming ----------------------------------------------------------------------------

class FolderStream(torch.utils.data.Dataset):
    """Image files decoded on access; unreadable ones come back as None and are dropped."""

    def __init__(self, paths: list[Path], size: int, channels: int, crop: int | None = None):
        self.paths, self.size, self.channels, self.crop = paths, size, channels, crop

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor | None:
        return _try_decode((self.paths[i], self.size, self.channels, self.crop))


class LMDBStream(torch.utils.data.Dataset):
    """LSUN's LMDB databases: each value is an encoded image (webp or jpeg)."""

    def __init__(self, path: Path, size: int, channels: int):
        try:
            import lmdb
        except ImportError:
            raise DCGANError("lsun needs the lmdb package: pip install 'dcgan[lmdb]'") from None
        if not path.is_dir():
            raise DCGANError(f"lsun: LMDB folder {path} not found. Download a category with LSUN's "
                             "download.py, unzip it and pass the *_lmdb folder with --data-dir")
        self.path, self.size, self.channels, self.env = path, size, channels, None
        try:
            env = lmdb.open(str(path), readonly=True, lock=False, readahead=False)
            with env.begin() as txn:
                self.keys = list(txn.cursor().iternext(values=False))
            env.close()
        except lmdb.Error as e:
            raise DCGANError(f"lsun: {path} is not a readable LMDB database ({e})") from None
        if not self.keys:
            raise DCGANError(f"lsun: LMDB database {path} is empty")

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> torch.Tensor | None:
        import lmdb

        if self.env is None:  # opened lazily, once per DataLoader worker
            self.env = lmdb.open(str(self.path), readonly=True, lock=False, readahead=False)
        with self.env.begin() as txn:
            value = txn.get(self.keys[i])
        return _try_decode((io.BytesIO(value), self.size, self.channels, None))

    def __getstate__(self):
        return {**self.__dict__, "env": None}


# ---- opening a dataset --------------------------------------------------------------------

def _read_exclude(path: str | None) -> set[str]:
    if path is None:
        return set()
    check_regular_file(path, "exclude list")
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise DCGANError(f"cannot read exclude list {path}: {describe_os_error(e)}") from None
    # file names are bytes on POSIX: undecodable ones round-trip as the names os.listdir gives
    return {line.strip() for line in os.fsdecode(data).splitlines() if line.strip()}


def _tree_signature(data_dir: str | None, depth: int = 3) -> str | None:
    """A hash of the names, sizes and times of the files under data_dir (a few levels deep), so
    that a cached dataset is decoded again when its files change or another folder is meant."""
    if data_dir is None:
        return None
    root = Path(data_dir).resolve()
    entries = [str(root)]
    for dirpath, dirnames, filenames in os.walk(root):
        if len(Path(dirpath).relative_to(root).parts) >= depth:
            dirnames.clear()
        for name in sorted(filenames):
            st = (Path(dirpath) / name).stat()
            entries.append(f"{Path(dirpath) / name}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256(b"\n".join(os.fsencode(e) for e in sorted(entries))).hexdigest()


def _files_signature(root: Path, paths: list[Path] | None = None, depth: int = 3) -> str:
    """A hash of the names (relative to root), sizes and modification times of `paths`, or of
    the files under root (a few levels deep): the same for a copy that keeps the times."""
    if paths is None:
        paths = []
        for dirpath, dirnames, filenames in os.walk(root):
            if len(Path(dirpath).relative_to(root).parts) >= depth:
                dirnames.clear()
            paths += [Path(dirpath) / name for name in filenames]
    entries = sorted(f"{p.relative_to(root)}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in paths)
    return hashlib.sha256(os.fsencode("\n".join(entries))).hexdigest()  # names need not be UTF-8


def fingerprint_changes(old: dict | None, new: dict | None) -> list[str]:
    """'name: old -> new' for each part of two dataset fingerprints that differs (none when the
    old one was not recorded)."""
    if old is None or new is None:
        return []
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k)]


def _fingerprint(data: ImageData, size: int, channels: int, files: str | None,
                 excluded: set[str]) -> ImageData:
    data.fingerprint = dict(images=len(data), image_size=size, channels=channels, files=files,
                            exclude=hashlib.sha256(os.fsencode("\n".join(sorted(excluded)))).hexdigest()[:16]
                            if excluded else None)
    return data


def _from_cache(key: dict, make_source, shape: tuple[int, int, int], source: str, root, what: str,
                workers: int | None) -> ImageData | None:
    """The dataset from its cache entry (built now if missing): in memory when it fits
    (DCGAN_MAX_MEMORY_GB), memory-mapped otherwise. None when the cache cannot be written."""
    entry, skipped = cache.load(key, make_source, shape, what=what, workers=workers)
    if entry is None:
        return None
    report_skipped(root, [Path(root) / name for name in skipped])
    if len(entry.images) == 0:
        raise DCGANError(f"none of the {len(skipped)} image file(s) in {root} could be read")
    images = torch.from_numpy(entry.images)
    mapped = images.nbytes > max_in_memory_bytes()
    return ImageData(source, images=images if mapped else images.clone(), mapped=mapped, names=entry.names,
                     labels=None if entry.labels is None else torch.from_numpy(entry.labels),
                     cached=str(entry.folder), built=entry.built)


def open_dataset(spec: str, image_size: int, channels: int, data_dir: str | None = None,
                 split: str = "train", exclude: str | None = None, *, use_cache: bool = True,
                 workers: int | None = None) -> ImageData:
    """`spec` is a named dataset or a folder of images; see README for the accepted layouts. Decoded
    once into the cache (`dcgan.cache`, in `workers` processes, default all cores) unless
    use_cache=False, which decodes into memory when the images fit and streams them otherwise."""
    if split not in ("train", "test"):
        raise DCGANError(f"split must be train or test, got {split!r}")
    if not isinstance(spec, str) or not spec or "\0" in spec:
        raise DCGANError(f"data must be a folder or one of {', '.join(sorted(NAMED))}, got {spec!r}")
    excluded = _read_exclude(exclude)
    shape = (channels, image_size, image_size)
    key = dict(spec=spec, data_dir=data_dir, split=split, size=image_size, channels=channels,
               exclude=sorted(excluded), version=4)  # 4: the memory-mapped .npy entries
    if spec == "lsun":
        stream = LMDBStream(Path(data_dir or ""), image_size, channels)
        key["files"] = files = _files_signature(Path(data_dir).resolve())
        data = _from_cache(key, lambda: cache.Source(stream), shape, spec, data_dir, f"lsun {data_dir}",
                           workers) if use_cache else None
        return _fingerprint(data or ImageData(spec, stream=stream), image_size, channels, files, excluded)
    named = NAMED.get(spec)
    if named is not None and named.read is not None:
        key["files"] = _tree_signature(data_dir)

        def read() -> cache.Source:
            x, y = named.read(data_dir, split)
            keep = np.array([str(i) not in excluded for i in range(len(x))], dtype=bool)
            names = None if not excluded else [str(i) for i in np.flatnonzero(keep)]
            return cache.Source(resize_array(x[keep], image_size, channels), names, y[keep])

        data = _from_cache(key, read, shape, spec, spec, f"{spec} ({split})", workers) \
            if use_cache and named.cache else None
        if data is None:
            s = read()
            data = ImageData(spec, images=s.items, labels=torch.from_numpy(s.labels), names=s.names)
        files = _files_signature(Path(data_dir).resolve()) if data_dir else None
        return _fingerprint(data, image_size, channels, files, excluded)

    crop = None
    if spec == "celeba":
        if data_dir is None:
            raise DCGANError("celeba: no --data-dir given. Download img_align_celeba.zip from the "
                             "CelebA page, unzip it and pass the folder with --data-dir")
        root = Path(data_dir)
        root = root / "img_align_celeba" if (root / "img_align_celeba").is_dir() else root
        crop = CELEBA_FACE_CROP
    else:
        root = Path(spec)
    paths = list_images(root)
    absolute = {str(Path(e).resolve()) for e in excluded if Path(e).is_absolute()}
    paths = [p for p in paths if str(p.relative_to(root)) not in excluded and str(p) not in excluded
             and str(p.resolve()) not in absolute]
    if not paths:
        raise DCGANError(f"every image in {root} is excluded by {exclude}")
    files = _files_signature(root, paths)
    key["files"] = hashlib.sha256(b"\n".join(
        os.fsencode(f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}") for p in paths)).hexdigest()
    names = [str(p.relative_to(root)) for p in paths]
    stream = FolderStream(paths, image_size, channels, crop)
    data = _from_cache(key, lambda: cache.Source(stream, names), shape, str(root), root, str(root),
                       workers) if use_cache else None
    if data is None and len(paths) * channels * image_size**2 > max_in_memory_bytes():
        data = ImageData(str(root), stream=stream, names=names)
    elif data is None:
        images, kept = decode_folder(paths, root, image_size, channels, crop)
        data = ImageData(str(root), images=images, names=[str(p.relative_to(root)) for p in kept])
    return _fingerprint(data, image_size, channels, files, excluded)


def prepare(data: str, *, image_size: int | None = None, channels: int | None = None,
            data_dir: str | None = None, split: str = "train", exclude: str | None = None,
            workers: int | None = None) -> dict:
    """Decode `data` into the cache now, in `workers` processes (default: all cores), as `dcgan train`
    would on first use: the entry, its size on disk and how fast it was made."""
    default_channels, default_size = natural_shape(data)
    image_size = check_count(image_size or default_size, "image size", 4096, 4)
    channels = check_count(channels or default_channels, "channels", 3)
    if channels == 2:
        raise DCGANError("channels must be 1 (grey) or 3 (colour), got 2")
    if workers is not None:
        check_count(workers, "workers", 1024, 0)
    start = time.perf_counter()
    ds = open_dataset(data, image_size, channels, data_dir, split, exclude, workers=workers)
    seconds = time.perf_counter() - start
    if ds.cached is None:
        raise DCGANError(f"{data} was not cached: " + ("it ships with scikit-learn and needs no decoding"
                         if data in NAMED and not NAMED[data].cache else "see the warning above"))
    size = (Path(ds.cached) / "images.npy").stat().st_size
    return dict(data=data, split=split, cache=ds.cached, images=len(ds), image_size=image_size,
                channels=channels, bytes=size, bytes_per_image=size / len(ds), seconds=seconds,
                images_per_second=len(ds) / max(seconds, 1e-9), built=ds.built, mapped=ds.mapped)


def labelled_splits(spec: str, image_size: int, channels: int,
                    data_dir: str | None = None) -> tuple[ImageData, ImageData]:
    """(train, test) of a labelled dataset, for classifiers and probes. digits has one split:
    every fifth image is held out as its test set."""
    train = open_dataset(spec, image_size, channels, data_dir, split="train")
    if train.labels is None or train.images is None:
        raise DCGANError(f"{spec} must be a labelled dataset that fits in memory ({labelled_names()})")
    if not NAMED[spec].held_out:
        return train, open_dataset(spec, image_size, channels, data_dir, split="test")
    held = torch.arange(len(train)) % 5 == 0
    return (ImageData(spec, images=train.images[~held], labels=train.labels[~held]),
            ImageData(spec, images=train.images[held], labels=train.labels[held]))


# ---- batching -----------------------------------------------------------------------------

def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled order of epoch `epoch`: a function of (seed, epoch) alone, so resume is exact."""
    return torch.randperm(n, generator=seeds.generator(seed, "order", epoch))


def _drop_unreadable(items: list) -> torch.Tensor:
    kept = [x for x in items if x is not None]
    return torch.stack(kept) if kept else torch.empty(0, dtype=torch.uint8)


def batches(data: ImageData, batch_size: int, seed: int, epoch: int, start: int = 0,
            device: torch.device | str = "cpu", workers: int | None = None, rank: int = 0,
            world_size: int = 1) -> Iterator[torch.Tensor]:
    """uint8 batches of one epoch, skipping its first `start` batches; the last partial batch is
    dropped so every step sees `batch_size` images. With several ranks, rank r takes every
    world_size-th image of the epoch's order, so one step's batches together are a contiguous
    slice of it."""
    order = epoch_order(len(data), seed, epoch)
    order = order[: len(order) // world_size * world_size][rank::world_size]
    order = order[start * batch_size: (len(order) // batch_size) * batch_size]
    if len(order) == 0:
        return
    if data.mapped:  # each batch read from the memory map in file order, then put in the epoch's
        mapped = data.images.numpy()  # (numpy's row copies: torch's indexing waits on busy cores)
        for idx in order.split(batch_size):
            where = idx.numpy().argsort(kind="stable")
            rows = np.take(mapped, idx.numpy()[where], axis=0)
            batch = torch.empty((len(idx), *mapped.shape[1:]), dtype=torch.uint8,
                                pin_memory=torch.device(device).type == "cuda")
            np.take(rows, where.argsort(kind="stable"), axis=0, out=batch.numpy())
            yield batch.to(device, non_blocking=True)
        return
    if data.images is not None:
        images = data.images
        if images.device != torch.device(device):
            images = data.images = images.to(device)  # once: the dataset lives on the device
        for idx in order.split(batch_size):
            if images.device.type == "cpu":
                yield torch.from_numpy(np.take(images.numpy(), idx.numpy(), axis=0))
            else:
                yield torch.index_select(images, 0, idx.to(images.device))
        return
    loader = torch.utils.data.DataLoader(
        data.stream, batch_size=batch_size, sampler=order.tolist(),
        num_workers=cache.cores() if workers is None else workers,
        collate_fn=_drop_unreadable, pin_memory=torch.device(device).type == "cuda",
        persistent_workers=False)
    for batch in loader:
        if len(batch):
            yield batch.to(device, non_blocking=True)


def stream_batches(data: ImageData, batch_size: int, seed: int, device: torch.device | str = "cpu",
                   start_batch: int = 0, rank: int = 0, world_size: int = 1,
                   workers: int | None = None) -> Iterator[torch.Tensor]:
    """uint8 batches forever, epoch after epoch, from batch index `start_batch` on."""
    epoch, position = divmod(start_batch, len(data) // world_size // batch_size)
    while True:
        yield from batches(data, batch_size, seed, epoch, position, device, workers=workers, rank=rank,
                           world_size=world_size)
        epoch, position = epoch + 1, 0


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1] (paper §4: G ends in tanh). `x` itself is never changed."""
    return x.to(torch.float32).div(127.5).sub_(1.0)  # div makes the copy: x.float() may be x


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255]."""
    return x.add(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)


def first_images(data, n: int) -> torch.Tensor:
    """The first n readable images, in memory or decoded from the stream (stopping at n)."""
    return _readable(data, torch.arange(len(data)), n)


def sample_images(data, n: int, generator: torch.Generator) -> torch.Tensor:
    """n readable images drawn at random from the whole dataset (file order may be sorted by
    class: its first n would be a biased sample)."""
    return _readable(data, torch.randperm(len(data), generator=generator), n)


def _readable(data, order: torch.Tensor, n: int) -> torch.Tensor:
    """The first n readable images in `order`; a stream is decoded only until n are found."""
    if data.images is not None:
        return data.images[order[:n]]
    kept = []
    for i in order.tolist():
        if len(kept) == n:
            break
        x = data.stream[i]
        if x is not None:
            kept.append(x)
    return torch.stack(kept)
