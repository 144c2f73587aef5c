"""Readers for the named datasets' own file formats -> uint8 numpy arrays (N, H, W[, C]).

Nothing here downloads: a missing file is an error that says what to get and where to put it.
Pickled CIFAR-10 batches are read with an unpickler that only rebuilds numpy arrays and plain
containers, so a hostile file cannot run code.
"""

from __future__ import annotations

import gzip
import io
import pickle
import zlib
from pathlib import Path

import numpy as np

from dcgan.errors import DCGANError

FASHION_MNIST_SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"
IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format), raw or gzip-compressed."""
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except OSError as e:  # includes gzip.BadGzipFile
        raise DCGANError(f"cannot read IDX file {path}: {e}") from None
    except (EOFError, zlib.error) as e:
        raise DCGANError(f"IDX file {path} is a truncated or corrupt gzip file ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise DCGANError(f"{path} is not an IDX file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DCGANError(f"IDX file {path} is truncated: its header needs {header} bytes, found {len(raw)}")
    dims = tuple(int(d) for d in np.frombuffer(raw[4:header], dtype=">u4"))
    dtype = np.dtype(IDX_DTYPES[raw[2]])
    expected = header + int(np.prod(dims)) * dtype.itemsize
    if len(dims) != ndim or len(raw) != expected:
        raise DCGANError(
            f"IDX file {path} is truncated or malformed: header says {dims}, "
            f"expected {expected} bytes, found {len(raw)}"
        )
    return np.frombuffer(raw[header:], dtype=dtype).reshape(dims)


def _find(data_dir: Path, names: list[str], dataset: str, hint: str) -> Path:
    for sub in ("", "raw", "MNIST/raw", "FashionMNIST/raw"):
        for name in names:
            if (data_dir / sub / name).is_file():
                return data_dir / sub / name
    raise DCGANError(f"{dataset}: none of {', '.join(names)} found in {data_dir}. {hint}")


def read_mnist(name: str, data_dir: str | None, split: str) -> tuple[np.ndarray, np.ndarray]:
    """mnist or fashion-mnist: (images uint8 (N, 28, 28), labels)."""
    if data_dir is None and name == "fashion-mnist" and Path(FASHION_MNIST_SYSTEM_DIR).is_dir():
        data_dir = FASHION_MNIST_SYSTEM_DIR
    hint = (
        "Put the four IDX files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
        "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) in a folder and pass it with "
        "--data-dir"
        + (" (or `apt-get install dataset-fashion-mnist`)" if name == "fashion-mnist" else "")
    )
    if data_dir is None:
        raise DCGANError(f"{name}: no --data-dir given. {hint}")
    root = Path(data_dir)
    prefix = "train" if split == "train" else "t10k"
    found = {}
    for kind, idx in (("images", "idx3"), ("labels", "idx1")):
        stem = f"{prefix}-{kind}-{idx}-ubyte"
        found[kind] = read_idx(_find(root, [stem + ".gz", stem, stem.replace("-idx", ".idx")],
                                     name, hint))
    images, labels = found["images"], found["labels"]
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DCGANError(f"{name} images in {root} must be a uint8 array (N, H, W), got "
                         f"{images.dtype} {images.shape}")
    if labels.shape != (len(images),):
        raise DCGANError(f"{name} in {root}: {len(images)} images but labels of shape {labels.shape}")
    return images, labels.astype(np.int64)


class _ArrayUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays and builtin containers; refuses every other global."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),  # protocol 5
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_cifar10(data_dir: str | None, split: str) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 python batches: (images uint8 (N, 32, 32, 3), labels)."""
    hint = ("Download cifar-10-python.tar.gz from the CIFAR-10 page, extract it, and pass the "
            "folder holding cifar-10-batches-py with --data-dir")
    if data_dir is None:
        raise DCGANError(f"cifar10: no --data-dir given. {hint}")
    root = Path(data_dir)
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    missing = [n for n in names if not (root / n).is_file()]
    if missing:
        raise DCGANError(f"cifar10: {', '.join(missing)} not found in {root}. {hint}")
    images, labels = [], []
    for n in names:
        path = root / n
        try:
            batch = _ArrayUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
        except Exception as e:  # any unpickling failure is a bad file
            raise DCGANError(f"{path} is not a CIFAR-10 python batch ({type(e).__name__}: {e})") \
                from None
        if not isinstance(batch, dict):
            raise DCGANError(f"{path} is not a CIFAR-10 python batch (holds {type(batch).__name__})")
        batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
        data, lab = batch.get("data"), batch.get("labels")
        if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072 \
                or lab is None or len(lab) != len(data):
            raise DCGANError(f"{path} is not a CIFAR-10 python batch: expected `data` of shape "
                             "(N, 3072) and N `labels`")
        images.append(data.astype(np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(np.asarray(lab, dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


def read_svhn(data_dir: str | None, split: str) -> tuple[np.ndarray, np.ndarray]:
    """SVHN cropped digits (.mat): (images uint8 (N, 32, 32, 3), labels with 0 for digit 0)."""
    from scipy.io import loadmat

    name = f"{'train' if split == 'train' else 'test'}_32x32.mat"
    hint = f"Download {name} from the SVHN page (format 2, cropped digits) into a folder and " \
           "pass it with --data-dir"
    if data_dir is None or not (Path(data_dir) / name).is_file():
        raise DCGANError(f"svhn: {name} not found in {data_dir}. {hint}")
    path = Path(data_dir) / name
    try:
        mat = loadmat(path)
        x, y = mat["X"], mat["y"]
    except Exception as e:
        raise DCGANError(f"{path} is not an SVHN .mat file ({type(e).__name__}: {e})") from None
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or y.size != x.shape[3]:
        raise DCGANError(f"{path}: expected X of shape (32, 32, 3, N) and N labels y")
    labels = y.reshape(-1).astype(np.int64) % 10  # SVHN stores digit 0 as label 10
    return np.ascontiguousarray(x.transpose(3, 0, 1, 2)).astype(np.uint8), labels


def read_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits (1,797 images, shipped with the package): values 0..16 -> 0..255."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)
    return images, d.target.astype(np.int64)
