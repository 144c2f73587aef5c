"""Where a command's outputs go: never over one of its inputs or a file of a run, always atomically.

A run directory is a folder holding checkpoint.pt; its own files (checkpoint.pt, best.pt, config.json,
metrics.jsonl, losses.png and everything under snapshots/, samples/, tensorboard/, superseded/) are
written by `dcgan train` alone. Every other command refuses an output path that resolves to one of
them, or to any of its own inputs, before it does any work.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable
from pathlib import Path

from dcgan.errors import DCGANError, describe_os_error

LATEST = "checkpoint.pt"  # a run directory's latest checkpoint
BEST = "best.pt"  # the checkpoint of the best evaluated step
RUN_FILES = {LATEST, BEST, "config.json", "metrics.jsonl", "losses.png", "real_samples.png", ".lock"}
RUN_FOLDERS = {"snapshots", "samples", "tensorboard", "superseded"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")  # what PIL writes for us, by name


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write) -> None:
    """write(file) into a temp file beside `path`, fsync, then rename over `path`.

    A crash at any moment leaves either the old file or the new one, never a mix; a failed write
    (disk full) removes the temp file and leaves the old one untouched.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    existed = path.is_file()
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        kept = "; the previous file is intact" if existed else ""
        raise DCGANError(f"could not write {path}: {describe_os_error(e)}{kept}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def run_dir_of(path: Path) -> Path | None:
    """The run directory `path` lies in (up to two levels below it), if any."""
    for parent in [path.parent, *path.parent.parents][:3]:
        if (parent / LATEST).is_file():
            return parent
    return None


def _input_files(inputs: Iterable) -> list[Path]:
    files = []
    for i in inputs:
        if i is None:
            continue
        p = Path(i)
        files.append(p)
        if p.is_dir() and (p / LATEST).is_file():  # a run given as a source: its checkpoint is read
            files.append(p / LATEST)
    return files


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False


def _within(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except (ValueError, OSError):
        return False


def check_output_file(out: str | Path, inputs: Iterable = (), suffixes: Iterable[str] | None = None,
                      what: str = "--out") -> Path:
    """`out` as a Path, if a command may write the file there; its folder is created."""
    out = Path(out)
    if suffixes is not None and out.suffix.lower() not in tuple(suffixes):
        raise DCGANError(f"{what} {out}: unsupported file type {out.suffix or '(none)'!r}; use one of "
                         f"{', '.join(suffixes)}")
    if out.is_dir():
        raise DCGANError(f"{what} {out} is a folder: give a file name")
    if out.exists() and not out.is_file():
        raise DCGANError(f"{what} {out} exists and is not a regular file (a FIFO or device): "
                         "give a file name")
    for i in _input_files(inputs):
        if _same(out, i) or (i.is_dir() and out.exists() and _within(out, i)):
            raise DCGANError(f"{what} {out} is one of this command's inputs ({i}): "
                             "write the output elsewhere")
    run = run_dir_of(out.resolve())
    if run is not None and out.exists():
        rel = out.resolve().relative_to(run.resolve())
        if rel.parts[0] in RUN_FOLDERS or rel.name in RUN_FILES:
            raise DCGANError(f"{what} {out} is a file of the run {run}, which only `dcgan train` writes: "
                             "write the output elsewhere")
    _check_creatable(out.parent, f"the folder of {what} {out}")
    return out


def _check_creatable(folder: Path, what: str) -> None:
    """`folder` exists as a writable folder, or can be made in one; nothing is created before the work."""
    existing = next(p for p in [folder, *folder.parents] if p.exists() or p == p.parent)
    if not existing.is_dir():
        raise DCGANError(f"cannot create {what}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise DCGANError(f"cannot write {what}: {existing} is not writable (permission denied)")


def check_out_dir(out: str | Path, inputs: Iterable = (), what: str = "--out") -> Path:
    """A report folder that can be created (when the report is written): never a file, a run's own
    subfolder or inside an input folder."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DCGANError(f"{what} {out} is a file, not a folder: give a folder for the report")
    for i in _input_files(inputs):
        if i.is_dir() and (i / LATEST).is_file():
            continue  # a run directory given as a source: reports beside its files are fine
        if _same(out, i) or (i.is_dir() and _within(out, i)):
            raise DCGANError(f"{what} {out} lies inside the input {i}: its pictures would join the data; "
                             "write the report elsewhere")
    run = run_dir_of(out.resolve() / "x")
    if run is not None and out.resolve() != run.resolve():
        rel = out.resolve().relative_to(run.resolve())
        if rel.parts and rel.parts[0] in RUN_FOLDERS:
            raise DCGANError(f"{what} {out} is a folder of the run {run}, which only `dcgan train` writes")
    _check_creatable(out, f"the report folder {what} {out}")
    return out


def write_bytes(path: str | Path, data: bytes) -> Path:
    """The whole file at once: a temp file beside it, fsynced, renamed over it."""
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DCGANError(f"cannot create the folder of {path}: {describe_os_error(e)}") from None
    atomic_write(Path(path), lambda f: f.write(data))
    return Path(path)


def write_text(path: str | Path, text: str, errors: str = "strict") -> Path:
    return write_bytes(path, text.encode("utf-8", errors=errors))


def write_json(path: str | Path, value) -> Path:
    return write_text(path, json.dumps(value, indent=2))


def write_image(tensor, path: str | Path, **kw) -> Path:
    """torchvision's save_image, atomically; the format follows the file's suffix."""
    from PIL import Image
    from torchvision.utils import save_image

    buffer = io.BytesIO()
    save_image(tensor, buffer, format=Image.registered_extensions()[Path(path).suffix.lower()], **kw)
    return write_bytes(path, buffer.getvalue())
