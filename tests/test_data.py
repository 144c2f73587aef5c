"""Data sources -> uint8 (N, C, S, S): folders, the on-disk cache, streaming, and the named datasets'
own file formats (IDX, CIFAR-10 pickles, SVHN .mat, CelebA, LSUN LMDB), all written for real into
tmp_path."""

from __future__ import annotations

import builtins
import gzip
import io
import os
import pickle
import re
import shlex
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dcgan import cache, data, datasets
from dcgan.data import ImageData, batches, decode_image, epoch_order, open_dataset, to_float, to_uint8
from dcgan.datasets import read_cifar10, read_idx, read_mnist, read_svhn
from dcgan.errors import DCGANError

RED, GREEN, BLUE = (220, 30, 40), (20, 200, 60), (30, 40, 210)


# ---- helpers that write real files ----------------------------------------------------------

def write_image(path: Path, size=(16, 16), color=RED, mode="RGB", **save_kw) -> Path:
    """A solid-colour image in `mode`, saved in the format its extension names."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".bmp": "BMP"}
    kw = {"JPEG": {"quality": 95}, "WEBP": {"lossless": True}}.get(fmt[path.suffix.lower()], {})
    Image.new(mode, size, color).save(path, fmt[path.suffix.lower()], **{**kw, **save_kw})
    return path


def save_array(path: Path, a: np.ndarray, **save_kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path, **save_kw)
    return path


def noise_png_bytes(size=64, seed=0) -> bytes:
    """A PNG that does not compress well, so cutting it in half really loses pixel data."""
    a = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


def noise_jpeg_bytes(size=64, seed=0) -> bytes:
    a = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def idx_bytes(a: np.ndarray) -> bytes:
    """The IDX (MNIST) binary format: 0, 0, dtype code, ndim, big-endian u32 dims, big-endian data."""
    code = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(">i2"): 0x0B,
            np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}[a.dtype]
    header = bytes([0, 0, code, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape)
    return header + a.tobytes()


def write_idx(path: Path, a: np.ndarray, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = idx_bytes(a)
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def write_mnist(root: Path, n_train=6, n_test=4, gz=True, seed=0, naming="dashed") -> dict:
    """The four MNIST files. Image n is a solid grey (so its resized value is known) plus noise on row 0
    (so read_mnist can be checked exactly); labels are random 0..9."""
    rng = np.random.default_rng(seed)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = np.repeat(rng.integers(0, 256, n, dtype=np.uint8), 28 * 28).reshape(n, 28, 28)
        images[:, 0, :] = rng.integers(0, 256, (n, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        for kind, idx, a in (("images", "idx3", images), ("labels", "idx1", labels)):
            stem = f"{prefix}-{kind}-{idx}-ubyte"
            if naming == "dotted":
                stem = stem.replace("-idx", ".idx")
            write_idx(root / (stem + (".gz" if gz else "")), a, gz=gz)
        out[prefix] = (images, labels)
    return out


CIFAR_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]


def cifar_batch(n: int, seed: int, label_offset: int = 0) -> dict:
    """One batch in the real CIFAR-10 python format (bytes keys, channel-major N x 3072 uint8)."""
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": f"batch {seed}".encode(),
        b"labels": [(label_offset + j) % 10 for j in range(n)],
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{seed}_{j}.png".encode() for j in range(n)],
    }


def write_pickle(path: Path, obj, protocol: int = 2) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)  # the real CIFAR-10 files are protocol 2
    return path


def write_cifar10(root: Path, n: int = 3) -> dict[str, dict]:
    """data_batch_1..5 and test_batch under root/cifar-10-batches-py; returns the batches by name."""
    written = {}
    for i, name in enumerate([*CIFAR_TRAIN, "test_batch"]):
        written[name] = cifar_batch(n, seed=i, label_offset=i * n)
        write_pickle(root / "cifar-10-batches-py" / name, written[name])
    return written


def write_svhn(root: Path, name: str = "train_32x32.mat", n: int = 5, seed: int = 0):
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
    y = (np.arange(n, dtype=np.uint8) % 10 + 1).reshape(n, 1)  # 1..10: 10 is digit 0
    root.mkdir(parents=True, exist_ok=True)
    savemat(root / name, {"X": x, "y": y})
    return x, y


def encoded(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **({"lossless": True} if fmt == "WEBP" else {"quality": 95}))
    return buf.getvalue()


def write_lmdb(path: Path, values: list[bytes]) -> Path:
    import lmdb

    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i, v in enumerate(values):
            txn.put(f"{i:08d}".encode(), v)
    env.close()
    return path


def colours(images: torch.Tensor) -> list[tuple[int, ...]]:
    """The mean colour of each image, rounded."""
    return [tuple(int(round(v)) for v in im.float().mean(dim=(1, 2)).tolist()) for im in images]


def assert_solid(image: torch.Tensor, color, tol=2):
    """Every pixel of uint8 (C, S, S) is within tol of color."""
    want = torch.tensor(color, dtype=torch.int16).view(-1, 1, 1)
    diff = (image.to(torch.int16) - want).abs().max().item()
    assert diff <= tol, f"pixels differ from {color} by up to {diff}"


# ---- folders: discovery, shape, crop, pixel values --------------------------------------------

FOLDER_FILES = {  # relative path -> colour; mixed formats, upper-case extensions, nested folders
    "a.jpg": (250, 10, 10), "B.PNG": (200, 120, 10), "c.jpeg": (150, 250, 20),
    "sub/d.webp": (100, 20, 220), "sub/E.JPG": (50, 200, 200), "sub/deeper/f.bmp": (10, 90, 160),
    "sub/deeper/G.WEBP": (180, 180, 180), "h.BMP": (120, 60, 240),
}


def make_folder(root: Path, files=FOLDER_FILES, size=(40, 30)) -> Path:
    for rel, color in files.items():
        write_image(root / rel, size=size, color=color)
    (root / "notes.txt").write_text("not an image")
    (root / "sub" / "readme.md").write_text("neither")
    return root


def test_list_images_finds_every_image_recursively_whatever_the_extension_case(tmp_path):
    root = make_folder(tmp_path / "imgs")
    found = data.list_images(root)
    assert sorted(p.relative_to(root).as_posix() for p in found) == sorted(FOLDER_FILES)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [16, 32, 64])
def test_folder_gives_uint8_n_c_s_s(tmp_path, size, channels):
    root = make_folder(tmp_path / "imgs")
    d = open_dataset(str(root), size, channels)
    assert isinstance(d, ImageData) and d.stream is None and d.labels is None
    assert d.images.dtype == torch.uint8
    assert d.images.shape == (len(FOLDER_FILES), channels, size, size)
    assert len(d) == len(FOLDER_FILES)


def test_folder_keeps_each_files_solid_colour(tmp_path):
    root = make_folder(tmp_path / "imgs")
    d = open_dataset(str(root), 16, 3)
    got = sorted(colours(d.images))
    want = sorted(FOLDER_FILES.values())
    for g, w in zip(got, want, strict=True):
        assert max(abs(a - b) for a, b in zip(g, w, strict=True)) <= 2, (got, want)
    for im in d.images:  # solid in, solid out: no pixel strays
        assert_solid(im, colours(im[None])[0], tol=2)


def test_folder_grey_is_the_luminance_of_the_colour(tmp_path):
    write_image(tmp_path / "imgs" / "a.png", color=(255, 0, 0))
    d = open_dataset(str(tmp_path / "imgs"), 16, 1)
    assert_solid(d.images[0], (76,), tol=1)  # ITU-R 601-2 luma of pure red


@pytest.mark.parametrize("orientation", ["wide", "tall"])
def test_non_square_image_is_centre_cropped(tmp_path, orientation):
    a = np.empty((20, 40, 3), np.uint8)  # 40 wide, 20 high: outer quarters blue, centre red
    a[:] = BLUE
    a[:, 10:30] = RED
    if orientation == "tall":
        a = np.ascontiguousarray(a.transpose(1, 0, 2))
    save_array(tmp_path / "imgs" / "x.png", a)
    d = open_dataset(str(tmp_path / "imgs"), 16, 3)
    assert_solid(d.images[0], RED, tol=2)


def _mode_image(mode: str) -> tuple[Image.Image, dict, tuple, tuple]:
    """(image, save kwargs, expected grey, expected RGB) for one PIL mode."""
    if mode == "L":
        return Image.new("L", (16, 16), 77), {}, (77,), (77, 77, 77)
    if mode == "LA":
        return Image.new("LA", (16, 16), (77, 255)), {}, (77,), (77, 77, 77)
    if mode == "RGBA":  # fully transparent: composited over white
        return Image.new("RGBA", (16, 16), (10, 200, 30, 0)), {}, (255,), (255, 255, 255)
    if mode == "RGBA-opaque":
        return Image.new("RGBA", (16, 16), (10, 200, 30, 255)), {}, (124,), (10, 200, 30)
    if mode in ("P", "P-transparent"):
        img = Image.new("P", (16, 16), 1)
        img.putpalette([0, 0, 0, 10, 200, 30] + [0] * (256 * 3 - 6))
        if mode == "P":
            return img, {}, (124,), (10, 200, 30)
        return img, {"transparency": 1}, (255,), (255, 255, 255)
    if mode == "CMYK":  # CMYK red, as a CMYK JPEG
        return Image.new("CMYK", (16, 16), (0, 255, 255, 0)), {}, (76,), (255, 0, 0)
    raise AssertionError(mode)


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "RGBA-opaque", "P", "P-transparent", "CMYK"])
@pytest.mark.parametrize("channels", [1, 3])
def test_every_pil_mode_decodes_to_the_requested_mode(tmp_path, mode, channels):
    img, kw, grey, rgb = _mode_image(mode)
    path = tmp_path / ("x.jpg" if mode == "CMYK" else "x.png")
    img.save(path, **kw)
    with Image.open(path) as check:  # the file really is in that mode
        assert check.mode == mode.split("-")[0]
    t = decode_image(path, 16, channels)
    assert t.dtype == torch.uint8 and t.shape == (channels, 16, 16)
    assert_solid(t, grey if channels == 1 else rgb, tol=3)


@pytest.mark.parametrize("channels", [1, 3])
def test_16_bit_grey_is_rescaled_not_clipped(tmp_path, channels):
    ramp = np.tile(np.linspace(0, 65535, 16).astype(np.uint16), (16, 1))  # 0 left .. 65535 right
    save_array(tmp_path / "x.png", ramp)
    with Image.open(tmp_path / "x.png") as check:
        assert check.mode == "I;16"
    t = decode_image(tmp_path / "x.png", 16, channels)
    assert t.shape == (channels, 16, 16)
    row = t[0, 8].to(torch.int16)
    assert row[0] <= 3 and row[-1] >= 252  # the full 8-bit range, not all white
    assert bool((row[1:] >= row[:-1]).all())  # still a left-to-right ramp
    assert len(set(row.tolist())) >= 12


def test_mixed_mode_folder_loads_every_file(tmp_path, capsys):
    root = tmp_path / "imgs"
    root.mkdir()
    for mode in ["L", "LA", "RGBA", "P", "P-transparent", "CMYK"]:
        img, kw, _, _ = _mode_image(mode)
        img.save(root / (f"{mode}.jpg" if mode == "CMYK" else f"{mode}.png"), **kw)
    save_array(root / "i16.png", np.tile(np.linspace(0, 65535, 16).astype(np.uint16), (16, 1)))
    d = open_dataset(str(root), 16, 3)
    assert d.images.shape == (7, 3, 16, 16)
    assert "skipped" not in capsys.readouterr().err


# ---- folders: unreadable files and bad paths -------------------------------------------------

def _write_bad(kind: str, root: Path, monkeypatch) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    if kind == "truncated-png":
        path = root / "bad.png"
        path.write_bytes(noise_png_bytes()[:6000])
    elif kind == "truncated-jpeg":
        path = root / "bad.jpg"
        path.write_bytes(noise_jpeg_bytes()[:3000])
    elif kind == "zero-bytes":
        path = root / "bad.png"
        path.write_bytes(b"")
    elif kind == "random-bytes":
        path = root / "bad.png"
        path.write_bytes(np.random.default_rng(1).integers(0, 256, 500, dtype=np.uint8).tobytes())
    elif kind == "decompression-bomb":  # a valid 40x40 image over a (lowered) pixel limit
        path = write_image(root / "bad.png", size=(40, 40))
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    else:
        raise AssertionError(kind)
    return path


BAD_KINDS = ["truncated-png", "truncated-jpeg", "zero-bytes", "random-bytes", "decompression-bomb"]
quiet_bomb = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")


@quiet_bomb
@pytest.mark.parametrize("kind", BAD_KINDS)
def test_unreadable_file_is_skipped_with_a_warning(tmp_path, monkeypatch, capsys, kind):
    root = tmp_path / "imgs"
    write_image(root / "good1.png", color=RED)
    write_image(root / "good2.jpg", color=GREEN)
    bad = _write_bad(kind, root, monkeypatch)
    d = open_dataset(str(root), 16, 3)
    assert d.images.shape == (2, 3, 16, 16)
    err = capsys.readouterr().err
    assert "skipped 1 unreadable" in err and str(bad) in err


@quiet_bomb
def test_warning_counts_every_skipped_file(tmp_path, monkeypatch, capsys):
    root = tmp_path / "imgs"
    write_image(root / "good.png")
    bad = [_write_bad(kind, root / kind, monkeypatch) for kind in BAD_KINDS]
    d = open_dataset(str(root), 16, 3)
    assert len(d) == 1
    err = capsys.readouterr().err
    assert "skipped 5 unreadable" in err and str(root) in err
    assert any(str(p) in err for p in bad)


@quiet_bomb
def test_decompression_bomb_limit_is_what_rejects_the_large_image(tmp_path, monkeypatch):
    root = tmp_path / "imgs"
    write_image(root / "small.png", size=(16, 16))
    write_image(root / "large.png", size=(40, 40))
    assert len(open_dataset(str(root), 16, 3)) == 2  # under PIL's default limit both load
    monkeypatch.setenv("DCGAN_CACHE_DIR", str(tmp_path / "other-cache"))  # the limit is not in the key
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    assert len(open_dataset(str(root), 16, 3)) == 1


@quiet_bomb
def test_folder_of_only_unreadable_files_names_the_folder(tmp_path, monkeypatch):
    root = tmp_path / "imgs"
    root.mkdir()
    for kind in BAD_KINDS:
        _write_bad(kind, root / kind, monkeypatch)
    with pytest.raises(DCGANError, match=re.escape(str(root))):
        open_dataset(str(root), 16, 3)


def test_empty_folder_is_an_error_naming_it(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DCGANError, match=re.escape(str(tmp_path / "empty"))):
        open_dataset(str(tmp_path / "empty"), 16, 3)


def test_folder_without_image_files_is_an_error_naming_it(tmp_path):
    root = tmp_path / "docs"
    root.mkdir()
    (root / "a.txt").write_text("x")
    (root / "b.gif.bak").write_bytes(b"GIF89a")
    with pytest.raises(DCGANError, match=re.escape(str(root))):
        open_dataset(str(root), 16, 3)


def test_missing_path_is_an_error_naming_it(tmp_path):
    with pytest.raises(DCGANError, match=re.escape(str(tmp_path / "nope")) + ".*does not exist"):
        open_dataset(str(tmp_path / "nope"), 16, 3)


def test_path_that_is_a_file_is_an_error_naming_it(tmp_path):
    f = write_image(tmp_path / "one.png")
    with pytest.raises(DCGANError, match=re.escape(str(f)) + ".*not a folder"):
        open_dataset(str(f), 16, 3)


# ---- the on-disk cache ----------------------------------------------------------------------

def _cache_files() -> list[Path]:
    return sorted(p for p in cache.cache_dir().glob("*") if p.is_dir())  # one folder per finished entry


def _forbid_decoding(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(data, "decode_image", fail)


def test_second_open_reads_the_cache(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "imgs")
    first = open_dataset(str(root), 16, 3)
    assert len(_cache_files()) == 1 and first.built
    _forbid_decoding(monkeypatch)
    second = open_dataset(str(root), 16, 3)
    assert torch.equal(first.images, second.images) and not second.built


def test_cache_is_per_size_and_channels(tmp_path):
    root = make_folder(tmp_path / "imgs")
    open_dataset(str(root), 16, 3)
    assert open_dataset(str(root), 32, 3).images.shape[-1] == 32
    assert open_dataset(str(root), 16, 1).images.shape[1] == 1
    assert len(_cache_files()) == 3


def test_changed_file_invalidates_the_cache(tmp_path):
    root = tmp_path / "imgs"
    path = write_image(root / "a.png", color=RED)
    assert_solid(open_dataset(str(root), 16, 3).images[0], RED)
    write_image(path, color=GREEN)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # the new mtime, for sure
    assert_solid(open_dataset(str(root), 16, 3).images[0], GREEN)


def test_added_file_invalidates_the_cache(tmp_path):
    root = make_folder(tmp_path / "imgs")
    n = len(open_dataset(str(root), 16, 3))
    write_image(root / "new.png")
    assert len(open_dataset(str(root), 16, 3)) == n + 1


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_cache_file_is_rebuilt(tmp_path, monkeypatch, capsys, damage):
    root = make_folder(tmp_path / "imgs")
    first = open_dataset(str(root), 16, 3)
    (entry,) = _cache_files()
    blob = (entry / "images.npy").read_bytes()
    damaged = {"garbage": b"\x00not an array" * 50, "truncated": blob[: len(blob) // 2], "empty": b""}
    (entry / "images.npy").write_bytes(damaged[damage])
    calls = []
    real = data.decode_image
    monkeypatch.setattr(data, "decode_image", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = open_dataset(str(root), 16, 3)
    assert len(calls) == len(FOLDER_FILES)  # rebuilt, not trusted
    assert f"dataset cache {entry} is damaged" in capsys.readouterr().err
    assert torch.equal(first.images, again.images)
    assert np.array_equal(np.load(entry / "images.npy"), first.images.numpy())  # and the entry is good again


def test_unwritable_cache_warns_and_still_returns_the_data(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "cache-is-a-file"
    blocker.write_text("")
    monkeypatch.setenv("DCGAN_CACHE_DIR", str(blocker))
    root = make_folder(tmp_path / "imgs")
    d = open_dataset(str(root), 16, 3)
    assert len(d) == len(FOLDER_FILES)
    assert "could not write the dataset cache" in capsys.readouterr().err


def test_named_dataset_is_read_from_the_cache_the_second_time(tmp_path, monkeypatch):
    write_mnist(tmp_path / "mnist")
    first = open_dataset("mnist", 32, 1, data_dir=str(tmp_path / "mnist"))

    def fail(*args, **kwargs):
        raise AssertionError("read the IDX files again instead of the cache")

    monkeypatch.setattr(datasets, "read_mnist", fail)
    second = open_dataset("mnist", 32, 1, data_dir=str(tmp_path / "mnist"))
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)


def test_named_dataset_cache_tells_apart_relative_data_dirs(tmp_path, monkeypatch):
    a = write_mnist(tmp_path / "a" / "data", seed=1)
    b = write_mnist(tmp_path / "b" / "data", seed=2)
    monkeypatch.chdir(tmp_path / "a")
    open_dataset("mnist", 32, 1, data_dir="data")
    monkeypatch.chdir(tmp_path / "b")
    d = open_dataset("mnist", 32, 1, data_dir="data")
    assert a["train"][1].tolist() != b["train"][1].tolist()
    assert d.labels.tolist() == b["train"][1].tolist()


def test_named_dataset_cache_is_invalidated_when_its_files_change(tmp_path):
    write_mnist(tmp_path / "mnist", seed=1)
    open_dataset("mnist", 32, 1, data_dir=str(tmp_path / "mnist"))
    new = write_mnist(tmp_path / "mnist", n_train=9, seed=2)
    d = open_dataset("mnist", 32, 1, data_dir=str(tmp_path / "mnist"))
    assert d.labels.tolist() == new["train"][1].tolist()


# ---- exclude lists --------------------------------------------------------------------------

def test_exclude_list_of_paths_relative_to_the_folder(tmp_path):
    root = make_folder(tmp_path / "imgs")
    full = open_dataset(str(root), 16, 3)  # cached without the exclude list first
    ex = tmp_path / "exclude.txt"
    ex.write_text("a.jpg\n\n  sub/deeper/f.bmp  \nnot/there.png\n")
    d = open_dataset(str(root), 16, 3, exclude=str(ex))
    assert len(d) == len(full) - 2
    got = colours(d.images)
    for gone in (FOLDER_FILES["a.jpg"], FOLDER_FILES["sub/deeper/f.bmp"]):
        assert all(max(abs(x - y) for x, y in zip(g, gone, strict=True)) > 5 for g in got)


def test_exclude_list_of_absolute_paths(tmp_path):
    root = make_folder(tmp_path / "imgs")
    ex = tmp_path / "exclude.txt"
    ex.write_text(f"{root / 'B.PNG'}\n{root / 'sub' / 'd.webp'}\n")
    d = open_dataset(str(root), 16, 3, exclude=str(ex))
    assert len(d) == len(FOLDER_FILES) - 2
    got = colours(d.images)
    for gone in (FOLDER_FILES["B.PNG"], FOLDER_FILES["sub/d.webp"]):
        assert all(max(abs(x - y) for x, y in zip(g, gone, strict=True)) > 5 for g in got)


def test_exclude_list_of_absolute_paths_with_a_relative_folder(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "imgs")
    ex = tmp_path / "exclude.txt"
    ex.write_text(f"{root / 'B.PNG'}\n")
    monkeypatch.chdir(tmp_path)
    assert len(open_dataset("imgs", 16, 3, exclude=str(ex))) == len(FOLDER_FILES) - 1


def test_exclude_list_that_excludes_everything_is_an_error(tmp_path):
    root = tmp_path / "imgs"
    write_image(root / "a.png")
    ex = tmp_path / "exclude.txt"
    ex.write_text("a.png\n")
    with pytest.raises(DCGANError, match="excluded"):
        open_dataset(str(root), 16, 3, exclude=str(ex))


def test_missing_exclude_list_is_an_error_naming_it(tmp_path):
    root = make_folder(tmp_path / "imgs")
    with pytest.raises(DCGANError, match=re.escape(str(tmp_path / "nope.txt"))):
        open_dataset(str(root), 16, 3, exclude=str(tmp_path / "nope.txt"))


def test_exclude_indices_of_digits(tmp_path):
    full = open_dataset("digits", 32, 1)
    ex = tmp_path / "exclude.txt"
    ex.write_text("0\n5\n1796\n")
    d = open_dataset("digits", 32, 1, exclude=str(ex))
    keep = [i for i in range(1797) if i not in (0, 5, 1796)]
    assert d.images.shape == (1794, 1, 32, 32)
    assert torch.equal(d.images, full.images[keep]) and torch.equal(d.labels, full.labels[keep])


def test_exclude_indices_of_mnist_are_part_of_the_cache_key(tmp_path):
    written = write_mnist(tmp_path / "mnist")
    open_dataset("mnist", 32, 1, data_dir=str(tmp_path / "mnist"))  # cached in full first
    ex = tmp_path / "exclude.txt"
    ex.write_text("1\n3\n")
    d = open_dataset("mnist", 32, 1, data_dir=str(tmp_path / "mnist"), exclude=str(ex))
    labels = written["train"][1]
    assert d.labels.tolist() == [int(labels[i]) for i in (0, 2, 4, 5)]


# ---- streaming ------------------------------------------------------------------------------

STREAM_COLOURS = [(10 + 40 * i, 200 - 25 * i, 30 * i) for i in range(7)]


def test_large_folder_streams(tmp_path, monkeypatch):
    root = tmp_path / "imgs"
    for i, c in enumerate(STREAM_COLOURS):
        write_image(root / f"{i}.png", size=(24, 20), color=c)
    monkeypatch.setattr(data, "MAX_IN_MEMORY_BYTES", 0)
    d = open_dataset(str(root), 16, 3, use_cache=False)
    assert d.images is None and d.stream is not None and len(d) == 7
    assert _cache_files() == []  # nothing decoded up front
    out = list(batches(d, 2, seed=0, epoch=0, workers=0))
    assert len(out) == 3  # 7 // 2, last partial batch dropped
    for b in out:
        assert b.dtype == torch.uint8 and b.shape == (2, 3, 16, 16)
    got = colours(torch.cat(out))
    order = epoch_order(7, 0, 0)[:6].tolist()
    for g, i in zip(got, order, strict=True):
        assert max(abs(x - y) for x, y in zip(g, STREAM_COLOURS[i], strict=True)) <= 2


def test_streamed_corrupt_file_is_dropped_from_its_batch(tmp_path, monkeypatch):
    root = tmp_path / "imgs"
    for i in range(3):
        write_image(root / f"{i}.png", color=STREAM_COLOURS[i])
    (root / "3.png").write_bytes(noise_png_bytes()[:500])
    monkeypatch.setattr(data, "MAX_IN_MEMORY_BYTES", 0)
    d = open_dataset(str(root), 16, 3, use_cache=False)
    assert d.stream is not None and len(d) == 4
    assert d.stream[3] is None
    (batch,) = list(batches(d, 4, seed=0, epoch=0, workers=0))
    assert batch.shape == (3, 3, 16, 16)


def test_streamed_batch_of_only_unreadable_files_is_skipped(tmp_path, monkeypatch):
    root = tmp_path / "imgs"
    for i in range(2):
        (root / f"bad{i}.png").parent.mkdir(parents=True, exist_ok=True)
        (root / f"bad{i}.png").write_bytes(b"")
    monkeypatch.setattr(data, "MAX_IN_MEMORY_BYTES", 0)
    d = open_dataset(str(root), 16, 3, use_cache=False)
    assert list(batches(d, 2, seed=0, epoch=0, workers=0)) == []


# ---- IDX ------------------------------------------------------------------------------------

@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype", [np.uint8, ">i2", ">f4"])
def test_read_idx(tmp_path, gz, dtype):
    a = (np.arange(2 * 3 * 4) * 7 - 20).reshape(2, 3, 4)
    a = a.astype(dtype) if dtype != np.uint8 else (a % 256).astype(np.uint8)
    got = read_idx(write_idx(tmp_path / ("x.gz" if gz else "x"), a, gz=gz))
    assert got.shape == (2, 3, 4) and got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got, a)


def _bad_idx(kind: str) -> bytes:
    good = idx_bytes(np.zeros((3, 28, 28), np.uint8))
    return {
        "bad-magic": b"\x08\x03\x00\x00" + good[4:],
        "unknown-dtype": b"\x00\x00\x07\x03" + good[4:],
        "too-short": b"\x00\x00",
        "truncated-payload": good[:-100],
        "extra-bytes": good + b"\x00",
        "truncated-gzip": gzip.compress(good)[:40],
        "corrupt-gzip": b"\x1f\x8b" + b"\x00garbage" * 10,
    }[kind]


@pytest.mark.parametrize("kind", ["bad-magic", "unknown-dtype", "too-short", "truncated-payload",
                                  "extra-bytes", "truncated-gzip", "corrupt-gzip"])
def test_read_idx_rejects_bad_files_naming_them(tmp_path, kind):
    path = tmp_path / f"{kind}-idx3-ubyte"
    path.write_bytes(_bad_idx(kind))
    with pytest.raises(DCGANError, match=re.escape(str(path))):
        read_idx(path)


def test_read_idx_rejects_header_cut_mid_dimension(tmp_path):
    path = tmp_path / "cut-idx3-ubyte"
    path.write_bytes(idx_bytes(np.zeros((3, 28, 28), np.uint8))[:10])
    with pytest.raises(DCGANError, match=re.escape(str(path))):
        read_idx(path)


def test_read_idx_missing_file_is_an_error_naming_it(tmp_path):
    with pytest.raises(DCGANError, match=re.escape(str(tmp_path / "nope"))):
        read_idx(tmp_path / "nope")


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
@pytest.mark.parametrize("layout", [("", True, "dashed"), ("", False, "dashed"), ("raw", False, "dotted"),
                                    ("MNIST/raw", True, "dashed"), ("FashionMNIST/raw", False, "dashed")])
def test_read_mnist(tmp_path, name, layout):
    sub, gz, naming = layout
    written = write_mnist(tmp_path / "d" / sub, gz=gz, naming=naming)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = read_mnist(name, str(tmp_path / "d"), split)
        np.testing.assert_array_equal(images, written[prefix][0])
        np.testing.assert_array_equal(labels, written[prefix][1])
        assert images.dtype == np.uint8 and labels.dtype == np.int64


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_read_mnist_missing_files_say_what_to_get(tmp_path, name):
    (tmp_path / "d").mkdir()
    with pytest.raises(DCGANError, match="train-images-idx3-ubyte.gz") as e:
        read_mnist(name, str(tmp_path / "d"), "train")
    assert str(tmp_path / "d") in str(e.value) and "--data-dir" in str(e.value)


def test_read_mnist_missing_labels_file_is_named(tmp_path):
    write_mnist(tmp_path / "d")
    (tmp_path / "d" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DCGANError, match="t10k-labels-idx1-ubyte"):
        read_mnist("mnist", str(tmp_path / "d"), "test")


def test_read_mnist_label_count_mismatch(tmp_path):
    write_mnist(tmp_path / "d")
    write_idx(tmp_path / "d" / "train-labels-idx1-ubyte.gz", np.zeros(2, np.uint8), gz=True)
    with pytest.raises(DCGANError, match="labels"):
        read_mnist("mnist", str(tmp_path / "d"), "train")


def test_mnist_without_data_dir_is_an_error():
    with pytest.raises(DCGANError, match="--data-dir"):
        open_dataset("mnist", 32, 1)


def test_fashion_mnist_without_data_dir_or_system_copy_suggests_the_package(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "FASHION_MNIST_SYSTEM_DIR", str(tmp_path / "not-installed"))
    with pytest.raises(DCGANError, match="dataset-fashion-mnist"):
        open_dataset("fashion-mnist", 32, 1)


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_open_mnist_resizes_to_32_and_keeps_labels(tmp_path, name):
    written = write_mnist(tmp_path / "d", n_train=6, n_test=4)
    d = open_dataset(name, 32, 1, data_dir=str(tmp_path / "d"))
    images, labels = written["train"]
    assert d.images.shape == (6, 1, 32, 32) and d.images.dtype == torch.uint8
    assert d.labels.dtype == torch.int64 and d.labels.tolist() == labels.tolist()
    for out, src in zip(d.images, images, strict=True):  # below the noisy top row: the solid grey
        assert_solid(out[:, 8:, :], (int(src[14, 14]),), tol=1)
    t = open_dataset(name, 32, 3, data_dir=str(tmp_path / "d"), split="test")
    assert t.images.shape == (4, 3, 32, 32)
    assert t.labels.tolist() == written["t10k"][1].tolist()


@pytest.mark.extra("fashion-mnist")
def test_fashion_mnist_system_copy_is_found_without_data_dir():
    d = open_dataset("fashion-mnist", 32, 1, split="test")
    assert d.images.shape == (10000, 1, 32, 32) and d.images.dtype == torch.uint8
    assert sorted(set(d.labels.tolist())) == list(range(10))
    assert d.images.max() > 200 and d.images.min() == 0


# ---- CIFAR-10 -------------------------------------------------------------------------------

def test_read_cifar10_decodes_channel_major_rows(tmp_path):
    written = write_cifar10(tmp_path)
    raw = written["test_batch"][b"data"]
    raw[1, :] = 0
    raw[1, 0 * 1024 + 5 * 32 + 7] = 11  # R at row 5, column 7
    raw[1, 1 * 1024 + 5 * 32 + 7] = 22  # G
    raw[1, 2 * 1024 + 5 * 32 + 7] = 33  # B
    raw[1, 2 * 1024 + 31 * 32 + 0] = 44  # B at row 31, column 0
    write_pickle(tmp_path / "cifar-10-batches-py" / "test_batch", written["test_batch"])
    images, labels = read_cifar10(str(tmp_path), "test")
    assert images.shape == (3, 32, 32, 3) and images.dtype == np.uint8
    assert images[1, 5, 7].tolist() == [11, 22, 33]
    assert images[1, 31, 0].tolist() == [0, 0, 44]
    assert int(images[1].sum()) == 11 + 22 + 33 + 44
    for n in (0, 2):
        for k in range(3):
            for r, c in ((0, 0), (3, 30), (31, 31)):
                assert images[n, r, c, k] == raw[n, k * 1024 + r * 32 + c]
    assert labels.tolist() == written["test_batch"][b"labels"] and labels.dtype == np.int64


def test_read_cifar10_train_concatenates_the_five_batches_in_order(tmp_path):
    written = write_cifar10(tmp_path, n=2)
    images, labels = read_cifar10(str(tmp_path), "train")
    assert images.shape == (10, 32, 32, 3)
    assert labels.tolist() == sum((written[n][b"labels"] for n in CIFAR_TRAIN), [])
    for i, name in enumerate(CIFAR_TRAIN):
        raw = written[name][b"data"]
        assert images[2 * i + 1, 0, 1, 2] == raw[1, 2 * 1024 + 1]


def test_read_cifar10_accepts_the_batches_folder_itself(tmp_path):
    write_cifar10(tmp_path)
    images, _ = read_cifar10(str(tmp_path / "cifar-10-batches-py"), "test")
    assert images.shape == (3, 32, 32, 3)


def test_read_cifar10_reads_numpy_1_pickles(tmp_path):
    """The downloaded files name numpy.core.multiarray (numpy 1.x), not numpy._core."""
    batch = cifar_batch(2, seed=3)
    blob = pickle.dumps(batch, protocol=2)
    assert b"numpy._core.multiarray" in blob
    path = tmp_path / "test_batch"
    path.write_bytes(blob.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    images, labels = read_cifar10(str(tmp_path), "test")
    assert images[1, 0, 0].tolist() == batch[b"data"][1, [0, 1024, 2048]].tolist()
    assert labels.tolist() == batch[b"labels"]


@pytest.mark.parametrize("protocol", [2, 3, 4])
def test_read_cifar10_any_classic_pickle_protocol(tmp_path, protocol):
    batch = cifar_batch(2, seed=4)
    write_pickle(tmp_path / "test_batch", batch, protocol=protocol)
    images, _ = read_cifar10(str(tmp_path), "test")
    assert images[0, 0, 0].tolist() == batch[b"data"][0, [0, 1024, 2048]].tolist()


def test_read_cifar10_pickle_protocol_5(tmp_path):
    batch = cifar_batch(2, seed=4)
    write_pickle(tmp_path / "test_batch", batch, protocol=5)
    images, _ = read_cifar10(str(tmp_path), "test")
    assert images[0, 0, 0].tolist() == batch[b"data"][0, [0, 1024, 2048]].tolist()


def test_open_cifar10(tmp_path):
    written = write_cifar10(tmp_path)
    d = open_dataset("cifar10", 32, 3, data_dir=str(tmp_path), split="test")
    raw = written["test_batch"][b"data"]
    assert d.images.shape == (3, 3, 32, 32) and d.images.dtype == torch.uint8
    assert torch.equal(d.images, torch.from_numpy(raw.reshape(3, 3, 32, 32)))
    assert d.labels.tolist() == written["test_batch"][b"labels"]
    assert open_dataset("cifar10", 16, 1, data_dir=str(tmp_path)).images.shape == (15, 1, 16, 16)


def test_read_cifar10_missing_batches_are_named(tmp_path):
    write_cifar10(tmp_path)
    for name in ("data_batch_2", "data_batch_5"):
        (tmp_path / "cifar-10-batches-py" / name).unlink()
    with pytest.raises(DCGANError, match="data_batch_2, data_batch_5 not found"):
        read_cifar10(str(tmp_path), "train")
    with pytest.raises(DCGANError, match="test_batch"):
        read_cifar10(str(tmp_path / "empty"), "test")


def test_cifar10_without_data_dir_is_an_error():
    with pytest.raises(DCGANError, match="--data-dir"):
        open_dataset("cifar10", 32, 3)


@pytest.mark.parametrize("content", ["list", "no-data", "no-labels", "wrong-width", "label-count",
                                     "not-a-pickle", "empty"])
def test_read_cifar10_rejects_badly_formatted_batches(tmp_path, content):
    good = cifar_batch(2, seed=0)
    path = tmp_path / "test_batch"
    if content == "not-a-pickle":
        path.write_bytes(b"this is not a pickle")
    elif content == "empty":
        path.write_bytes(b"")
    else:
        obj = {
            "list": [good[b"data"], good[b"labels"]],
            "no-data": {k: v for k, v in good.items() if k != b"data"},
            "no-labels": {k: v for k, v in good.items() if k != b"labels"},
            "wrong-width": {**good, b"data": np.zeros((2, 1024), np.uint8)},
            "label-count": {**good, b"labels": [1, 2, 3]},
        }[content]
        write_pickle(path, obj)
    with pytest.raises(DCGANError, match=re.escape(str(path))):
        read_cifar10(str(tmp_path), "test")


class _RunsShell:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


class _RunsExec:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",)


@pytest.mark.parametrize("payload", [_RunsShell, _RunsExec])
def test_hostile_cifar10_pickle_is_refused_and_never_runs(tmp_path, payload):
    control = tmp_path / "control-marker"
    pickle.loads(pickle.dumps({b"data": payload(control)}, protocol=2))  # the payload does work...
    assert control.exists()
    marker = tmp_path / "marker"
    batch = {**cifar_batch(2, seed=0), b"data": payload(marker)}
    write_pickle(tmp_path / "d" / "test_batch", batch)
    with pytest.raises(DCGANError, match="test_batch"):
        read_cifar10(str(tmp_path / "d"), "test")
    assert not marker.exists()  # ...but not when read as a CIFAR-10 batch


# ---- SVHN -----------------------------------------------------------------------------------

def test_read_svhn(tmp_path):
    x, y = write_svhn(tmp_path)
    images, labels = read_svhn(str(tmp_path), "train")
    assert images.shape == (5, 32, 32, 3) and images.dtype == np.uint8
    assert images[3, 4, 5].tolist() == x[4, 5, :, 3].tolist()
    np.testing.assert_array_equal(images, x.transpose(3, 0, 1, 2))
    assert labels.tolist() == [1, 2, 3, 4, 5]


def test_read_svhn_label_10_is_digit_0(tmp_path):
    write_svhn(tmp_path, n=10)
    _, labels = read_svhn(str(tmp_path), "train")
    assert labels.tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]
    assert labels.dtype == np.int64


def test_open_svhn(tmp_path):
    x, _ = write_svhn(tmp_path / "d", name="test_32x32.mat", n=10, seed=3)
    d = open_dataset("svhn", 32, 3, data_dir=str(tmp_path / "d"), split="test")
    assert d.images.shape == (10, 3, 32, 32) and d.images.dtype == torch.uint8
    assert torch.equal(d.images, torch.from_numpy(x.transpose(3, 2, 0, 1).copy()))
    assert d.labels.tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]


def test_svhn_missing_file_is_named(tmp_path):
    write_svhn(tmp_path, name="test_32x32.mat")
    with pytest.raises(DCGANError, match="train_32x32.mat"):
        open_dataset("svhn", 32, 3, data_dir=str(tmp_path))
    with pytest.raises(DCGANError, match="train_32x32.mat"):
        open_dataset("svhn", 32, 3)


def test_svhn_not_a_mat_file(tmp_path):
    (tmp_path / "train_32x32.mat").write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(DCGANError, match="train_32x32.mat"):
        read_svhn(str(tmp_path), "train")


# ---- digits ---------------------------------------------------------------------------------

def test_digits():
    d = open_dataset("digits", 32, 1)
    assert d.images.shape == (1797, 1, 32, 32) and d.images.dtype == torch.uint8
    assert sorted(set(d.labels.tolist())) == list(range(10))
    assert int(d.images.min()) == 0 and int(d.images.max()) == 255


# ---- CelebA ---------------------------------------------------------------------------------

def _celeba_face() -> np.ndarray:
    """178x218 with a 124x124 red centre (the 108x108 face crop plus 8 px) on a blue border."""
    a = np.empty((218, 178, 3), np.uint8)
    a[:] = BLUE
    a[47:171, 27:151] = RED
    return a


def test_celeba_uses_the_108_centre_crop(tmp_path):
    root = tmp_path / "celeba" / "img_align_celeba"
    for i in range(3):
        save_array(root / f"{i:06d}.png", _celeba_face())
    d = open_dataset("celeba", 64, 3, data_dir=str(tmp_path / "celeba"))
    assert d.images.shape == (3, 3, 64, 64)
    for im in d.images:
        assert_solid(im, RED, tol=2)
    # the folder itself also works as data_dir
    assert len(open_dataset("celeba", 64, 3, data_dir=str(root))) == 3


@pytest.mark.parametrize("size", [64, 32])
def test_celeba_jpeg_uses_the_108_centre_crop(tmp_path, size):
    root = tmp_path / "celeba" / "img_align_celeba"
    for i in range(3):
        save_array(root / f"{i:06d}.jpg", _celeba_face(), quality=100, subsampling=0)
    d = open_dataset("celeba", size, 3, data_dir=str(tmp_path / "celeba"))
    assert d.images.shape == (3, 3, size, size)
    for im in d.images:
        assert_solid(im, RED, tol=6)


def test_celeba_without_data_dir_is_an_error():
    with pytest.raises(DCGANError, match="--data-dir"):
        open_dataset("celeba", 64, 3)


def test_celeba_missing_data_dir_is_named(tmp_path):
    with pytest.raises(DCGANError, match=re.escape(str(tmp_path / "nope"))):
        open_dataset("celeba", 64, 3, data_dir=str(tmp_path / "nope"))


# ---- LSUN (LMDB) ----------------------------------------------------------------------------

LSUN_COLOURS = [RED, GREEN, BLUE, (200, 200, 40), (90, 90, 90)]


def _lsun(tmp_path: Path, extra: list[bytes] = ()) -> Path:
    values = [encoded(Image.new("RGB", (48, 40), c), "WEBP" if i % 2 == 0 else "JPEG")
              for i, c in enumerate(LSUN_COLOURS)]
    return write_lmdb(tmp_path / "bedroom_train_lmdb", values + list(extra))


@pytest.mark.extra("lmdb")
def test_lsun_is_decoded_once_into_the_cache_without_its_undecodable_values(tmp_path, monkeypatch, capsys):
    d = open_dataset("lsun", 32, 3, data_dir=str(_lsun(tmp_path, extra=[b"not an image"])))
    assert d.stream is None and d.cached is not None and len(d) == len(LSUN_COLOURS)
    for im, c in zip(d.images, LSUN_COLOURS, strict=True):
        assert_solid(im, c, tol=3)
    assert "skipped 1 unreadable image(s)" in capsys.readouterr().err
    _forbid_decoding(monkeypatch)
    assert torch.equal(open_dataset("lsun", 32, 3, data_dir=str(tmp_path / "bedroom_train_lmdb")).images,
                       d.images)


@pytest.mark.extra("lmdb")
def test_lsun_streams_from_lmdb(tmp_path):
    d = open_dataset("lsun", 32, 3, data_dir=str(_lsun(tmp_path)), use_cache=False)
    assert isinstance(d, ImageData) and d.images is None and d.stream is not None
    assert len(d) == len(LSUN_COLOURS)
    for i, c in enumerate(LSUN_COLOURS):
        item = d.stream[i]
        assert item.dtype == torch.uint8 and item.shape == (3, 32, 32)
        assert_solid(item, c, tol=3)


@pytest.mark.extra("lmdb")
def test_lsun_batches_drop_undecodable_values(tmp_path):
    d = open_dataset("lsun", 16, 3, data_dir=str(_lsun(tmp_path, extra=[b"not an image"])),
                     use_cache=False)
    assert len(d) == 6 and d.stream[5] is None
    (batch,) = list(batches(d, 6, seed=0, epoch=0, workers=0))
    assert batch.shape == (5, 3, 16, 16) and batch.dtype == torch.uint8


@pytest.mark.extra("lmdb")
def test_lsun_stream_pickles_without_its_open_environment(tmp_path):
    d = open_dataset("lsun", 16, 3, data_dir=str(_lsun(tmp_path)), use_cache=False)
    first = d.stream[1]  # opens the environment in this process
    assert d.stream.env is not None
    blob = pickle.dumps(d.stream)  # what a spawned DataLoader worker receives
    d.stream.env.close()  # LMDB allows one open environment per database and process
    clone = pickle.loads(blob)
    assert clone.env is None and len(clone) == len(LSUN_COLOURS)
    assert torch.equal(clone[1], first)


@pytest.mark.extra("lmdb")
def test_lsun_batches_with_worker_processes(tmp_path):
    d = open_dataset("lsun", 16, 3, data_dir=str(_lsun(tmp_path)), use_cache=False)
    out = list(batches(d, 2, seed=0, epoch=0, workers=2))
    assert [b.shape for b in out] == [(2, 3, 16, 16)] * 2
    got = colours(torch.cat(out))
    for g, i in zip(got, epoch_order(5, 0, 0)[:4].tolist(), strict=True):
        assert max(abs(x - y) for x, y in zip(g, LSUN_COLOURS[i], strict=True)) <= 3


def test_lsun_without_the_lmdb_extra_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "lmdb", None)  # as if the extra were not installed
    with pytest.raises(DCGANError, match=re.escape("pip install 'dcgan[lmdb]'")):
        open_dataset("lsun", 32, 3, data_dir=str(tmp_path))


@pytest.mark.extra("lmdb")
def test_lsun_missing_path_is_an_error(tmp_path):
    with pytest.raises(DCGANError, match=re.escape(str(tmp_path / "nope"))):
        open_dataset("lsun", 32, 3, data_dir=str(tmp_path / "nope"))


@pytest.mark.extra("lmdb")
def test_lsun_folder_that_is_not_lmdb_is_an_error(tmp_path):
    (tmp_path / "plain").mkdir()
    with pytest.raises(DCGANError, match="LMDB"):
        open_dataset("lsun", 32, 3, data_dir=str(tmp_path / "plain"))


# ---- pixels <-> floats, epoch order, batches ----------------------------------------------

def test_to_float_and_back():
    x = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    f = to_float(x)
    assert f.dtype == torch.float32
    assert f.min().item() == -1.0 and f.max().item() == 1.0
    assert torch.equal(to_uint8(f), x)
    assert x.dtype == torch.uint8 and int(x.max()) == 255  # input untouched


def test_to_uint8_clamps_out_of_range():
    assert to_uint8(torch.tensor([-3.0, -1.0, 0.0, 1.0, 2.5])).tolist() == [0, 0, 128, 255, 255]


def test_epoch_order_is_a_function_of_seed_and_epoch():
    a = epoch_order(100, seed=3, epoch=4)
    assert sorted(a.tolist()) == list(range(100))
    assert torch.equal(a, epoch_order(100, seed=3, epoch=4))
    torch.manual_seed(123)  # the global RNG plays no part
    assert torch.equal(a, epoch_order(100, seed=3, epoch=4))
    assert not torch.equal(a, epoch_order(100, seed=3, epoch=5))
    assert not torch.equal(a, epoch_order(100, seed=4, epoch=4))


def _numbered(n: int) -> ImageData:
    """n images whose every pixel is the image's index."""
    return ImageData("numbered", images=torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1)
                     .expand(n, 1, 4, 4).contiguous())


def test_batches_follow_the_epoch_order_and_drop_the_partial_batch():
    d = _numbered(10)
    out = list(batches(d, 3, seed=7, epoch=2))
    assert [b.shape for b in out] == [(3, 1, 4, 4)] * 3
    assert all(b.dtype == torch.uint8 for b in out)
    ids = torch.cat([b[:, 0, 0, 0] for b in out]).tolist()
    assert ids == epoch_order(10, 7, 2)[:9].tolist()


@pytest.mark.parametrize("start", [0, 1, 2, 4])
def test_batches_start_skips_exactly_the_first_batches(start):
    d = _numbered(11)
    full = list(batches(d, 2, seed=1, epoch=0))
    assert len(full) == 5
    part = list(batches(d, 2, seed=1, epoch=0, start=start))
    assert len(part) == 5 - start
    for a, b in zip(part, full[start:], strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("n, start", [(11, 5), (11, 9), (1, 0)])
def test_batches_yield_nothing_when_no_full_batch_is_left(n, start):
    assert list(batches(_numbered(n), 2, seed=1, epoch=0, start=start)) == []


def test_batches_start_in_a_streamed_folder(tmp_path, monkeypatch):
    root = tmp_path / "imgs"
    for i, c in enumerate(STREAM_COLOURS):
        write_image(root / f"{i}.png", color=c)
    monkeypatch.setattr(data, "MAX_IN_MEMORY_BYTES", 0)
    d = open_dataset(str(root), 16, 3, use_cache=False)
    full = list(batches(d, 2, seed=5, epoch=1, workers=0))
    part = list(batches(d, 2, seed=5, epoch=1, start=1, workers=0))
    assert len(full) == 3 and len(part) == 2
    for a, b in zip(part, full[1:], strict=True):
        assert torch.equal(a, b)


def test_pil_limit_disabled_still_decodes(tmp_path, monkeypatch):
    write_image(tmp_path / "a.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    assert decode_image(tmp_path / "a.png", 16, 3).shape == (3, 16, 16)


def test_a_jpeg_decodes_like_the_png_of_the_same_picture(tmp_path):
    """Full-resolution decoding: JPEG's reduced-scale (draft) decoding shifted pixels by up to 11 grey
    levels at 32x32 and made exact dedup miss a JPEG copy of a PNG."""
    rng = np.random.default_rng(0)
    x = np.linspace(0, 8 * np.pi, 512)
    picture = (127 + 60 * np.sin(x)[None, :] * np.cos(x / 3)[:, None])[..., None]
    picture = picture + rng.normal(0, 25, (512, 512, 3))
    img = Image.fromarray(picture.clip(0, 255).astype(np.uint8), "RGB")
    img.save(tmp_path / "a.png")
    img.save(tmp_path / "a.jpg", quality=100, subsampling=0)
    for size, channels in ((32, 3), (64, 1)):
        png = decode_image(tmp_path / "a.png", size, channels).int()
        jpg = decode_image(tmp_path / "a.jpg", size, channels).int()
        assert (png - jpg).abs().max() <= 2, (size, channels)
