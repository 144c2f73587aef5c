"""The one checkpoint format: written atomically, read with weights_only=True.

A checkpoint holds {generator, discriminator, optimizer_g, optimizer_d, step, epoch, config, rng}.
`export` writes G alone to safetensors with its ModelConfig in the metadata, for sharing.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import random
import time
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from dcgan import seeds
from dcgan.errors import DCGANError
from dcgan.models import Generator, ModelConfig

FORMAT = "dcgan-checkpoint"
VERSION = 1
LATEST = "checkpoint.pt"


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
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise DCGANError(f"could not write {path}: {e.strerror or e}; the previous file is "
                         "intact. Free some disk space and resume.") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def lock_run(run: Path):
    """An exclusive lock on RUN/.lock for the life of a training run: the open file it returns
    holds it until closed. It is an OS advisory lock (flock), so the OS drops it when the process
    ends in any way, SIGKILL included: a killed run can be resumed at once. A second process gets
    a DCGANError naming the holder's pid and start time."""
    path = Path(run) / ".lock"
    f = open(path, "a+")  # never truncated before the lock is ours: it names the holder
    try:
        _lock(f)
    except OSError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise DCGANError(f"run directory {run} is in use by {holder}: wait for it to finish or stop "
                         "it (its checkpoint is then resumable), or choose another --out") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} (started {time.strftime('%Y-%m-%d %H:%M:%S %Z')})\n")
    f.flush()
    return f


def _lock(f) -> None:
    try:
        import fcntl
    except ImportError:  # Windows: a lock on the first byte, also dropped when the process ends
        import msvcrt

        msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
        return
    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


def link(source: Path, target: Path) -> None:
    """`target` becomes a hard link to `source` (a file that is only ever replaced, never changed,
    so the link is a copy): made under a temp name, then renamed over `target`, so a crash leaves
    the old target or the new one, never none."""
    target = Path(target)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def nonfinite(*state_dicts: dict) -> list[str]:
    """Names of the floating-point tensors holding a NaN or an infinity (weights, BN buffers,
    optimizer moments), searched through nested dicts and lists."""
    bad = []

    def visit(value, name: str) -> None:
        if isinstance(value, torch.Tensor):
            if value.is_floating_point() and not torch.isfinite(value).all():
                bad.append(name)
        elif isinstance(value, dict):
            for k, v in value.items():
                visit(v, f"{name}.{k}" if name else str(k))
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                visit(v, f"{name}.{i}")

    for d in state_dicts:
        visit(d, "")
    return bad


def rng_state(noise: torch.Generator) -> dict:
    """Every random state a run draws from, as tensors and plain values (weights_only-safe)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "noise": noise.get_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": {"version": py_state[0], "state": list(py_state[1])},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, noise: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    noise.set_state(state["noise"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["gauss"]))
    random.setstate((state["python"]["version"], tuple(state["python"]["state"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(path: Path, state: dict) -> None:
    buffer = io.BytesIO()  # serialize first, so a full disk surfaces as the OSError of one write
    torch.save({"format": FORMAT, "version": VERSION, **state}, buffer)
    atomic_write(path, lambda f: f.write(buffer.getbuffer()))


def load(path: str | Path) -> dict:
    """A checkpoint file, or the latest one of a run directory. Never unpickles code."""
    path = Path(path)
    if path.is_dir():
        path = path / LATEST
    if not path.is_file():
        raise DCGANError(f"checkpoint {path} not found: give a run directory or a .pt file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise DCGANError(f"refusing to load {path}: it holds objects other than tensors and plain "
                         f"values, which could run code ({str(e).splitlines()[0]})") from None
    except Exception as e:  # truncated zip, not a torch file, ...
        raise DCGANError(f"checkpoint {path} is truncated or corrupt ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}); use an earlier snapshot "
                         "from snapshots/") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise DCGANError(f"{path} is not a dcgan checkpoint")
    return ckpt


def export(source: str | Path, out: str | Path) -> Path:
    """G's weights and ModelConfig from a run or checkpoint -> one safetensors file."""
    ckpt = load(source)
    model = ckpt["config"]["model"]
    tensors = {k: v.contiguous() for k, v in ckpt["generator"].items()}
    meta = {"format": "dcgan-generator", "model": json.dumps(model), "step": str(ckpt["step"])}
    out = Path(out)
    atomic_write(out, lambda f: f.write(safetensors_bytes(tensors, metadata=meta)))
    return out


def load_generator(path: str | Path, device: str | torch.device = "cpu") -> Generator:
    """A trained G in eval mode, from a run directory, a checkpoint or an exported .safetensors."""
    path = Path(path)
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise DCGANError(f"generator file {path} not found")
        try:
            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
            weights = load_file(path)
        except (SafetensorError, OSError, ValueError) as e:
            raise DCGANError(f"{path} is not a readable safetensors file ({e})") from None
        if meta.get("format") != "dcgan-generator":
            raise DCGANError(f"{path} is not a generator exported by `dcgan export`")
        config = ModelConfig.from_dict(json.loads(meta["model"]))
    else:
        ckpt = load(path)
        config = ModelConfig.from_dict(ckpt["config"]["model"])
        weights = ckpt["generator"]
    with seeds.global_seed(0):  # its random init is overwritten: keep the caller's RNG as it was
        g = Generator(config)
    try:
        g.load_state_dict(weights)
    except RuntimeError as e:
        problems = [line.strip() for line in str(e).splitlines()[1:] if line.strip()]
        raise DCGANError(f"{path}: weights do not match the stored architecture "
                         f"({len(problems)} problem(s), first: {problems[0] if problems else e})") from None
    return g.to(device).eval()

