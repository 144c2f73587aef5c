"""Readers for the named datasets' own file formats -> uint8 numpy arrays (N, H, W[, C]).

Nothing here downloads: a missing file is an error that says what to get and where to put it.
Pickled CIFAR-10 batches are read with an unpickler that only rebuilds numpy arrays and plain
containers, so a hostile file cannot run code.
"""

from __future__ import annotations

import gzip
import io
import math
import pickle
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from dcgan.errors import DCGANError

FASHION_MNIST_SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"
MAX_IDX_BYTES = 1 << 34  # 16 GiB: far above any IDX dataset, far below a decompression bomb's claim
CLASSES = 10  # mnist, fashion-mnist, cifar10 and svhn
IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format), raw or gzip-compressed. The header's dimensions fix the size:
    a file (or a gzip stream) holding more than they say is refused before it is all read."""
    try:
        with open(path, "rb") as f:
            gzipped = f.read(2) == b"\x1f\x8b"
        with (gzip.open(path, "rb") if gzipped else open(path, "rb")) as f:
            head = f.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in IDX_DTYPES:
                raise DCGANError(f"{path} is not an IDX file (bad magic number {head.hex()})")
            ndim = head[3]
            dims_raw = f.read(4 * ndim)
            if len(dims_raw) < 4 * ndim:
                raise DCGANError(f"IDX file {path} is truncated: its header needs {4 + 4 * ndim} bytes, "
                                 f"found {4 + len(dims_raw)}")
            dims = tuple(int(d) for d in np.frombuffer(dims_raw, dtype=">u4"))
            dtype = np.dtype(IDX_DTYPES[head[2]])
            if not 1 <= ndim <= 4 or 0 in dims:
                raise DCGANError(f"IDX file {path}: header says {ndim} dimension(s) {dims}; an image or "
                                 "label file has 1 to 4 dimensions, none of them zero")
            size = math.prod(dims) * dtype.itemsize  # exact: Python integers do not overflow
            if size > MAX_IDX_BYTES:
                raise DCGANError(f"IDX file {path}: header says {dims}, {size:,} bytes of data, more than "
                                 f"the {MAX_IDX_BYTES:,} any dataset here needs")
            body = f.read(size + 1)  # one byte more than stated reveals extra data
    except OSError as e:  # includes gzip.BadGzipFile
        raise DCGANError(f"cannot read IDX file {path}: {e}") from None
    except (EOFError, zlib.error) as e:
        raise DCGANError(f"IDX file {path} is a truncated or corrupt gzip file ({e})") from None
    header = 4 + 4 * ndim
    expected = header + size
    if len(body) != size:
        found = header + len(body) if len(body) <= size else f"more than {expected}"
        raise DCGANError(
            f"IDX file {path} is truncated or malformed: header says {dims}, "
            f"expected {expected} bytes, found {found}"
        )
    return np.frombuffer(body, dtype=dtype).reshape(dims)


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
    return images, _labels(labels, f"{name} labels in {root}")


def _labels(values, where: str) -> np.ndarray:
    """Class labels as int64 in 0..CLASSES-1; anything else (NaN, text, 11) is an error naming `where`."""
    try:
        a = np.asarray(values)
        if a.dtype.kind not in "iuf":
            raise TypeError(a.dtype)
        ok = a.ndim == 1 and np.isfinite(a).all() and (a == np.round(a)).all() \
            and (len(a) == 0 or (a.min() >= 0 and a.max() < CLASSES))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise DCGANError(f"{where} must be whole numbers from 0 to {CLASSES - 1}")
    return a.astype(np.int64)


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
                or not isinstance(lab, (list, tuple, np.ndarray)) or np.ndim(lab) != 1 \
                or len(lab) != len(data):
            raise DCGANError(f"{path} is not a CIFAR-10 python batch: expected `data` of shape "
                             "(N, 3072) and N `labels`")
        if data.dtype != np.uint8:
            raise DCGANError(f"{path}: `data` must hold uint8 pixels, got {data.dtype}")
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(_labels(lab, f"{path}: `labels`"))
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
    if not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray) or x.ndim != 4 \
            or x.shape[:3] != (32, 32, 3) or y.size != x.shape[3]:
        raise DCGANError(f"{path}: expected X of shape (32, 32, 3, N) and N labels y")
    if x.dtype != np.uint8:
        raise DCGANError(f"{path}: X must hold uint8 pixels, got {x.dtype}")
    y = y.reshape(-1)
    if y.dtype.kind not in "iuf" or not np.isfinite(y).all() or not ((y >= 1) & (y <= 10)).all():
        raise DCGANError(f"{path}: labels y must be whole numbers from 1 to 10 (10 for digit 0)")
    labels = _labels(y % 10, f"{path}: labels y")  # SVHN stores digit 0 as label 10
    return np.ascontiguousarray(x.transpose(3, 0, 1, 2)), labels


def read_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits (1,797 images, shipped with the package): values 0..16 -> 0..255."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)
    return images, d.target.astype(np.int64)


@dataclass(frozen=True)
class Named:
    """A named dataset: how to read it, its natural shape, whether it has class labels."""

    read: Callable[[str | None, str], tuple[np.ndarray, np.ndarray]] | None  # (data_dir, split) -> (x, y)
    shape: tuple[int, int]  # (channels, natural size): what a run gets unless told otherwise
    labelled: bool  # labels for the classifier, the probe and train-classifier
    held_out: bool = False  # one split only: every fifth image is the test split
    cache: bool = True  # decoded once into the cache (digits ships with scikit-learn: reading is instant)
    classes: tuple[str, ...] = ()  # the name of each label 0..K-1 (labelled datasets)


DIGITS = tuple(str(i) for i in range(CLASSES))
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

# The one table of named datasets. Those without a reader are image files that data.py opens as a
# folder (CelebA, centre-cropped to the face) or streams from LMDB (LSUN).
NAMED: dict[str, Named] = {
    "digits": Named(lambda data_dir, split: read_digits(), (1, 32), labelled=True, held_out=True,
                    cache=False, classes=DIGITS),
    "mnist": Named(partial(read_mnist, "mnist"), (1, 32), labelled=True, classes=DIGITS),
    "fashion-mnist": Named(partial(read_mnist, "fashion-mnist"), (1, 32), labelled=True,
                           classes=FASHION_MNIST_CLASSES),
    "cifar10": Named(read_cifar10, (3, 32), labelled=True, classes=CIFAR10_CLASSES),
    "svhn": Named(read_svhn, (3, 32), labelled=True, classes=DIGITS),
    "celeba": Named(None, (3, 64), labelled=False),
    "lsun": Named(None, (3, 64), labelled=False),
}
FOLDER_SHAPE = (3, 64)  # a folder of images: RGB at 64x64 unless told otherwise


def natural_shape(spec: str) -> tuple[int, int]:
    """(channels, image size) a run on `spec` gets by default."""
    return NAMED[spec].shape if spec in NAMED else FOLDER_SHAPE


def has_test_split(spec: str) -> bool:
    """Whether `spec` has a test split of its own (a folder, CelebA, LSUN and digits do not)."""
    named = NAMED.get(spec)
    return named is not None and named.read is not None and not named.held_out


def labelled_names() -> str:
    return ", ".join(name for name, named in NAMED.items() if named.labelled)
