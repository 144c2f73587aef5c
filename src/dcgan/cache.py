"""The decoded-dataset cache: every source decoded once into an on-disk uint8 array.

An entry is a folder `$DCGAN_CACHE_DIR/<key hash>/` holding

    images.npy   uint8 (N, C, S, S), a plain .npy file (read with numpy.load(..., mmap_mode="r"))
    labels.npy   int64 (N,), where the dataset has labels
    index.json   what the entry holds: its key, N, the shape, the images' source names, the files
                 that could not be read, and a SHA-256 of all that (and of the labels)

Building writes into `<key hash>.partial/` and renames it when complete, so a finished entry is
never half-written. The partial folder records its progress after every chunk: a killed build
continues where it stopped. A lock file makes a second process (another rank, another run) wait for
the first one's build instead of building the same entry again. A damaged entry (wrong size, bad
header, index not matching its hash) is rebuilt, never trusted.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import struct
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dcgan.errors import describe_os_error
from dcgan.progress import Progress

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; concurrent builds of one entry are then not shared
    fcntl = None

__all__ = ["cache_dir", "cache_entries", "clear_cache"]  # public: dcgan.NAME

FORMAT = "dcgan-cache/1"
HEADER = 128  # bytes of images.npy's header: fixed, so the final count can be written in place
CHUNK = 256  # images per decoding task, and per progress record
ENTRY = re.compile(r"[0-9a-f]{24}")
OLD_FILE = re.compile(r"[0-9a-f]{24}(\.safetensors|\.tmp\d+)")  # the single-file format before this one


def cache_dir() -> Path:
    return Path(os.environ.get("DCGAN_CACHE_DIR", Path.home() / ".cache" / "dcgan"))


def cores() -> int:
    """The CPU cores this process may use (a container's share, not the host's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]


@dataclass
class Entry:
    """A finished cache entry: the images memory-mapped (read-only), labels and names in memory."""

    folder: Path
    images: np.ndarray  # uint8 (N, C, S, S), memory-mapped copy-on-write: never written back
    labels: np.ndarray | None
    names: list[str] | None
    built: bool = False  # decoded just now (False: it was already there)


@dataclass
class Source:
    """What a cache entry is built from: `items[i]` is image i as uint8 (C, S, S), or None when it
    cannot be read; `names[i]` and `labels[i]` belong to it (None: the dataset has none)."""

    items: object  # a torch Dataset, or a uint8 tensor (N, C, S, S) already in memory
    names: list[str] | None = None
    labels: np.ndarray | None = None


# ---- the .npy file --------------------------------------------------------------------------

def _npy_header(shape: tuple[int, ...]) -> bytes:
    text = f"{{'descr': '|u1', 'fortran_order': False, 'shape': {tuple(shape)!r}, }}"
    body = text.ljust(HEADER - 11) + "\n"  # magic (6) + version (2) + length (2) + body = HEADER
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(body)) + body.encode("latin1")


def _row_bytes(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape[1:]))


def _index_hash(index: dict) -> str:
    body = {k: v for k, v in index.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _labels_hash(labels: np.ndarray | None) -> str | None:
    return None if labels is None else hashlib.sha256(np.ascontiguousarray(labels).tobytes()).hexdigest()


# ---- reading --------------------------------------------------------------------------------

def read_entry(folder: Path, key: dict) -> Entry:
    """The entry in `folder`, checked against `key` (raises ValueError or OSError if it is not a
    sound entry for it)."""
    index = json.loads((folder / "index.json").read_text())
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise ValueError("not an entry of this format")
    if index.get("sha256") != _index_hash(index):
        raise ValueError("index.json does not match its hash")
    if index["key"] != json.loads(json.dumps(key)):
        raise ValueError("made for other data")
    n, shape = index["images"], (index["images"], *index["shape"])
    path = folder / "images.npy"
    if path.stat().st_size != HEADER + n * _row_bytes(shape):
        raise ValueError(f"images.npy has {path.stat().st_size} bytes, expected "
                         f"{HEADER + n * _row_bytes(shape)}")
    with open(path, "rb") as f:
        if f.read(HEADER) != _npy_header(shape):
            raise ValueError("images.npy has the wrong header")
    images = np.load(path, mmap_mode="c") if n else np.zeros(shape, np.uint8)
    labels = None
    if index["labels"] is not None:
        labels = np.load(folder / "labels.npy", allow_pickle=False)
        if labels.dtype != np.int64 or labels.shape != (n,) or _labels_hash(labels) != index["labels"]:
            raise ValueError("labels.npy does not match the index")
    names = index["names"]
    if names is not None and (not isinstance(names, list) or len(names) != n):
        raise ValueError("names do not match the images")
    return Entry(folder, images, labels, names)


def _existing(root: Path, key: dict) -> Entry | None:
    folder = root / digest(key)
    if not folder.exists():
        return None
    try:
        return read_entry(folder, key)
    except (OSError, ValueError, KeyError, TypeError) as e:
        reason = describe_os_error(e) if isinstance(e, OSError) else str(e)
        print(f"warning: dataset cache {folder} is damaged ({reason}); rebuilding it", file=sys.stderr)
        shutil.rmtree(folder, ignore_errors=True)
        return None


# ---- building -------------------------------------------------------------------------------

_SOURCE = None  # the items a decoding process reads (set once per process)


def _set_source(items) -> None:
    global _SOURCE
    _SOURCE = items


def _decode(items, lo: int, hi: int) -> tuple[list[bool], np.ndarray]:
    """Items lo..hi-1: (which could be read, the readable ones stacked)."""
    if isinstance(items, torch.Tensor):
        return [True] * (hi - lo), items[lo:hi].numpy()
    decoded = [items[i] for i in range(lo, hi)]
    kept = [x.numpy() for x in decoded if x is not None]
    return [x is not None for x in decoded], (np.stack(kept) if kept else np.zeros((0,), np.uint8))


def _decode_range(bounds: tuple[int, int]) -> tuple[list[bool], np.ndarray]:
    return _decode(_SOURCE, *bounds)


def _decoded_chunks(items, start: int, total: int, workers: int) -> Iterator[tuple[list[bool], np.ndarray]]:
    """The decoded chunks from item `start` on, in order; in `workers` processes when there is
    more than one chunk to decode."""
    ranges = [(lo, min(lo + CHUNK, total)) for lo in range(start, total, CHUNK)]
    if workers <= 1 or len(ranges) <= 1 or isinstance(items, torch.Tensor):
        for r in ranges:
            yield _decode(items, *r)
        return
    with ProcessPoolExecutor(workers, initializer=_set_source, initargs=(items,)) as pool:
        try:
            yield from pool.map(_decode_range, ranges)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _write_json(path: Path, value) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)


def _resume_point(partial: Path, key: dict, total: int, shape: tuple) -> tuple[int, int, list[int]] | None:
    """(items done, rows written, skipped items) of an interrupted build of this key, if sound."""
    try:
        progress = json.loads((partial / "progress.json").read_text())
        done, rows, skipped = progress["items"], progress["rows"], progress["skipped"]
        sound = (progress["key"] == json.loads(json.dumps(key)) and progress["total"] == total
                 and list(progress["shape"]) == list(shape) and 0 <= rows <= done <= total
                 and done - rows == len(skipped)
                 and (partial / "images.npy").stat().st_size == HEADER + total * _row_bytes((total, *shape)))
        return (done, rows, skipped) if sound else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _allocate(path: Path, size: int) -> None:
    """Reserve the file's space now, so that a full disk fails here and not half-way."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            os.posix_fallocate(fd, 0, size)
        except (OSError, AttributeError) as e:  # a filesystem (or system) without it: a sparse file
            if isinstance(e, OSError) and e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
            os.ftruncate(fd, size)
    finally:
        os.close(fd)


def _pack(root: Path, key: dict, source: Source, shape: tuple, workers: int, what: str) -> Entry:
    name = digest(key)
    partial, folder = root / f"{name}.partial", root / name
    total, rows_bytes = len(source.items), _row_bytes((0, *shape))
    resumed = _resume_point(partial, key, total, shape) if partial.exists() else None
    if resumed is None:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        _allocate(partial / "images.npy", HEADER + total * rows_bytes)
        done, rows, skipped = 0, 0, []
        _write_json(partial / "progress.json", dict(key=key, total=total, shape=shape, items=0, rows=0,
                                                    skipped=[]))
    else:
        done, rows, skipped = resumed
        print(f"resuming the interrupted decoding of {what} at image {done:,} of {total:,}", file=sys.stderr)
    with open(partial / "images.npy", "r+b") as f, Progress(total - done, f"decoding {what}") as bar:
        for ok, chunk in _decoded_chunks(source.items, done, total, workers):
            if len(chunk):
                f.seek(HEADER + rows * rows_bytes)
                f.write(np.ascontiguousarray(chunk).tobytes())
                f.flush()  # in the file before the progress record says so
            skipped += [done + i for i, good in enumerate(ok) if not good]
            done, rows = done + len(ok), rows + len(chunk)
            _write_json(partial / "progress.json", dict(key=key, total=total, shape=shape, items=done,
                                                        rows=rows, skipped=skipped))
            bar.update(len(ok))
        f.seek(0)
        f.write(_npy_header((rows, *shape)))
        f.truncate(HEADER + rows * rows_bytes)
        os.fsync(f.fileno())
    keep = np.ones(total, dtype=bool)
    keep[skipped] = False
    labels = None if source.labels is None else np.asarray(source.labels, dtype=np.int64)[keep]
    if labels is not None:
        np.save(partial / "labels.npy", labels, allow_pickle=False)
    names = None if source.names is None else [n for n, k in zip(source.names, keep, strict=True) if k]
    index = dict(format=FORMAT, key=key, images=rows, shape=list(shape), names=names,
                 skipped=[source.names[i] if source.names else str(i) for i in skipped],
                 labels=_labels_hash(labels))
    index["sha256"] = _index_hash(index)
    _write_json(partial / "index.json", index)
    (partial / "progress.json").unlink()
    os.replace(partial, folder)
    entry = read_entry(folder, key)
    entry.built = True
    return entry


@contextlib.contextmanager
def _lock(path: Path, what: str):
    """Exclusive use of one entry: other processes building or reading it wait here."""
    if fcntl is None:
        yield
        return
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another process decoding {what} into {path.parent}", file=sys.stderr)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def load(key: dict, make_source: Callable[[], Source], shape: tuple[int, int, int], *, what: str,
         workers: int | None = None) -> tuple[Entry | None, list[str]]:
    """The cache entry of `key`, built from make_source() if it is missing or damaged; and the names
    of the items that could not be read, when it was built now. (None, []) when the cache cannot be
    written (a warning says why): the caller decodes without it."""
    try:
        root = cache_dir()
    except RuntimeError:  # no home folder to put the cache in
        return None, []
    workers = cores() if workers is None else workers
    try:
        root.mkdir(parents=True, exist_ok=True)
        with _lock(root / f"{digest(key)}.lock", what):
            entry = _existing(root, key)
            if entry is not None:
                return entry, []
            entry = _pack(root, key, make_source(), shape, workers, what)
            return entry, json.loads((entry.folder / "index.json").read_text())["skipped"]
    except OSError as e:  # read-only, full, a file in the way: the cache is an optimisation
        shutil.rmtree(root / f"{digest(key)}.partial", ignore_errors=True)  # never left half-built
        print(f"warning: could not write the dataset cache in {root} ({describe_os_error(e)}); decoding "
              f"{what} without it (set DCGAN_CACHE_DIR to a folder with space to keep the decoded "
              "images)", file=sys.stderr)
        return None, []


# ---- listing and clearing -------------------------------------------------------------------

def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file())


def cache_entries() -> list[dict]:
    """The decoded datasets in the cache folder: file, bytes, modification time, and what each
    holds (source, split, image size, channels, image count) where the entry records it."""
    folder = cache_dir()
    entries = []
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        name, suffix = path.name.partition(".")[0], path.name.partition(".")[2]
        if not ENTRY.fullmatch(name) or suffix == "lock":
            continue
        entry = {"file": str(path), "bytes": _size(path), "modified": path.stat().st_mtime, "source": None}
        if path.is_dir() and not suffix:
            try:
                index = json.loads((path / "index.json").read_text())
                key = index["key"]
                entry.update(source=key.get("spec"), data_dir=key.get("data_dir"), split=key.get("split"),
                             size=key.get("size"), channels=key.get("channels"), images=index["images"])
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                entry["source"] = "unreadable"  # rebuilt when next used
        elif path.is_dir() and suffix == "partial":
            entry["source"] = "unfinished (an interrupted decoding: it continues when next used)"
        elif path.is_file() and OLD_FILE.fullmatch(path.name):
            entry["source"] = "old format (no longer read)"
        else:
            continue
        entries.append(entry)
    return entries


def clear_cache() -> tuple[int, int]:
    """Delete every cache entry (only what is named as the cache names it); (entries, bytes) freed."""
    entries = cache_entries()
    for e in entries:
        path = Path(e["file"])
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    for lock in cache_dir().glob("*.lock") if cache_dir().is_dir() else []:
        if ENTRY.fullmatch(lock.stem):
            lock.unlink(missing_ok=True)
    return len(entries), sum(e["bytes"] for e in entries)
