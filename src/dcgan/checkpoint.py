"""The run checkpoint format, and the one way to load trained networks.

A checkpoint is a torch file written atomically and read with weights_only=True, holding the
RUN_KEYS: G's and D's weights, both optimizers' states, the loss scalers (`amp`), the step and
epoch, the training config, every random state (`rng`), the best evaluation so far (`best`: the
--best-metric, its value and step) and the fingerprint of the training data; a run with --ema-decay
or --ema-kimg adds `generator_ema`, the moving average of G's weights. `save_run` /
`restore_run` write and read a training run's state; `choose` picks a run's latest, best or
snapshot checkpoint; `load_networks` gives G (the average where there is one, unless generator="raw")
and D (or G alone from an exported file) to every inspection command.
`export` writes G alone to safetensors with its ModelConfig in the metadata, for sharing.
"""

from __future__ import annotations

import errno
import io
import json
import os
import pickle
import random
import reprlib
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from dcgan import seeds
from dcgan.errors import DCGANError, describe_os_error
from dcgan.models import Discriminator, Generator, ModelConfig, build
from dcgan.outputs import BEST, LATEST, atomic_write, check_output_file

__all__ = ["export", "load_discriminator", "load_generator", "load_networks"]  # public: dcgan.NAME

FORMAT = "dcgan-checkpoint"
VERSION = 1
RUN_KEYS = ("generator", "discriminator", "optimizer_g", "optimizer_d", "amp", "step", "epoch", "config",
            "rng", "best", "data_fingerprint")
EMA = "generator_ema"  # the run key of G's moving average: only in checkpoints of runs that keep one
GENERATORS = ("ema", "raw")  # which G a command uses: the moving average or the trained weights


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


def save_run(path: Path, networks: dict, *, step: int, epoch: int, config: dict, noise: torch.Generator,
             best: dict, data_fingerprint: dict) -> None:
    """A training run's state (`networks`: the weight and optimizer entries of RUN_KEYS) -> `path`."""
    save(path, dict(**networks, step=step, epoch=epoch, config=config, rng=rng_state(noise), best=best,
                    data_fingerprint=data_fingerprint))


def restore_run(ckpt: dict, nets, noise: torch.Generator) -> int:
    """Load a checkpoint's weights, optimizer and scaler states into `nets` (a step.Networks) and its
    random states into `noise` and the global generators; the checkpoint's step. Never from one
    with non-finite weights."""
    bad = nonfinite(ckpt["generator"], ckpt["discriminator"], ckpt.get(EMA, {}))
    if bad:  # written before this check existed: never continue from it
        raise DCGANError(f"the checkpoint holds non-finite weights ({bad[0]}): copy the last finite "
                         "snapshot over it, then resume")
    if nets.G_ema is not None and EMA not in ckpt:
        raise DCGANError("the checkpoint holds no moving average of G (it was written by a run without "
                         "--ema-decay or --ema-kimg): resume it without them")
    nets.load_state_dict(ckpt)
    set_rng_state(ckpt["rng"], noise)
    return ckpt["step"]


def save(path: Path, state: dict) -> None:
    buffer = io.BytesIO()  # serialize first, so a full disk surfaces as the OSError of one write
    torch.save({"format": FORMAT, "version": VERSION, **state}, buffer)
    atomic_write(path, lambda f: f.write(buffer.getbuffer()))


def load(path: str | Path) -> dict:
    """A checkpoint file, or the latest one of a run directory. Never unpickles code."""
    path = Path(path)
    if path.is_dir():
        path = path / LATEST
    if not path.exists():
        raise DCGANError(f"checkpoint {path} not found: give a run directory or a .pt file")
    if not path.is_file():
        raise DCGANError(f"checkpoint {path} is not a regular file (a FIFO or device): give a run "
                         "directory or a .pt file")
    if _is_safetensors(path):
        raise DCGANError(f"{path} is an exported generator (safetensors), not a training checkpoint: it "
                         "holds G alone; give the run directory or its checkpoint.pt")
    snapshots = path.parent / "snapshots" if path.name == LATEST else path.parent
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch's own message advises loading with weights_only=False: exactly what must not happen
        raise DCGANError(f"refusing to load {path}: it holds objects other than tensors and plain "
                         "values, which could run code; it was not written by dcgan") from None
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EPERM, errno.EIO, errno.ENOENT, errno.EISDIR):
            raise DCGANError(f"cannot read checkpoint {path}: {describe_os_error(e)}") from None
        raise DCGANError(f"checkpoint {path} is truncated or corrupt ({describe_os_error(e)} while reading "
                         f"its archive); use an earlier snapshot from {snapshots} with --resume") from None
    except Exception as e:  # truncated zip, not a torch file, ...
        raise DCGANError(f"checkpoint {path} is truncated or corrupt ({type(e).__name__}); use an earlier "
                         f"snapshot from {snapshots} with --resume") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise DCGANError(f"{path} is not a dcgan checkpoint")
    check_contents(ckpt, path)
    return ckpt


def _is_safetensors(path: Path) -> bool:
    """A safetensors file starts with an 8-byte header length and a JSON header."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    return path.suffix == ".safetensors" or (len(head) == 9 and head[8:9] == b"{"
                                            and int.from_bytes(head[:8], "little") < 100_000_000)


def check_contents(ckpt: dict, path: Path) -> None:
    """A checkpoint that loaded weights-only can still be malformed: every field G and D need is checked."""
    config = ckpt.get("config")
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise DCGANError(f"{path}: the stored config is missing or not a mapping with a `model` entry")
    try:
        model = ModelConfig.from_dict(config["model"])
    except (DCGANError, TypeError) as e:
        raise DCGANError(f"{path}: the stored model config is invalid ({e})") from None
    step = ckpt.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise DCGANError(f"{path}: the stored step must be an integer >= 0, got {reprlib.repr(step)}")
    check_weights(ckpt.get("generator"), Generator, model, path, "generator")
    check_weights(ckpt.get("discriminator"), Discriminator, model, path, "discriminator")
    if EMA in ckpt:
        check_weights(ckpt[EMA], Generator, model, path, "EMA generator")


def check_weights(state, net: type, config: ModelConfig, path: Path, name: str) -> None:
    """Every tensor of `net(config)` present, of its shape and kind, finite; nothing else."""
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise DCGANError(f"{path}: the {name} weights are missing or not a mapping of names to tensors")
    with torch.device("meta"):  # shapes only: nothing is allocated
        expected = net(config).state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        first = f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
        raise DCGANError(f"{path}: {name} weights do not match the stored architecture ({len(missing)} "
                         f"missing, {len(unexpected)} unexpected; first: {first})")
    for k, want in expected.items():
        got = state[k]
        if got.shape != want.shape or got.is_floating_point() != want.is_floating_point():
            raise DCGANError(f"{path}: {name} weights do not match the stored architecture: {k} is "
                             f"{got.dtype} {tuple(got.shape)}, the config needs {want.dtype} "
                             f"{tuple(want.shape)}")
        if got.is_floating_point() and not torch.isfinite(got).all():
            raise DCGANError(f"{path}: {name} weight {k} holds NaN or infinite values; "
                             "use an earlier snapshot")


def check_resumable(ckpt: dict, path: Path) -> None:
    """What resuming needs beyond the weights: both optimizers' states and every RNG state."""
    G, D = build(ModelConfig.from_dict(ckpt["config"]["model"]))
    for name, net in (("optimizer_g", G), ("optimizer_d", D)):
        state = ckpt.get(name)
        try:
            if not isinstance(state, dict):
                raise ValueError("missing")
            torch.optim.Adam(net.parameters()).load_state_dict(state)
        except (ValueError, KeyError, TypeError, RuntimeError, IndexError) as e:
            raise DCGANError(f"{path}: the {name} state is malformed ({' '.join(str(e).split())[:120]}); "
                             "use an earlier snapshot") from None
    rng = ckpt.get("rng")
    try:
        n, py = rng["numpy"], rng["python"]
        ok = (all(isinstance(rng[k], torch.Tensor) and rng[k].dtype == torch.uint8
                  and rng[k].shape == torch.get_rng_state().shape for k in ("torch", "noise"))
              and isinstance(n["keys"], torch.Tensor) and n["keys"].shape == (624,)
              and isinstance(n["pos"], int) and 0 <= n["pos"] <= 624 and isinstance(n["has_gauss"], int)
              and isinstance(n["gauss"], float) and isinstance(py["version"], int)
              and isinstance(py["state"], list) and len(py["state"]) == 625
              and all(isinstance(v, int) and 0 <= v < 2**32 for v in py["state"]))
    except (KeyError, TypeError):
        ok = False
    if not ok:
        raise DCGANError(f"{path}: the stored random-number states are malformed, so the run cannot resume "
                         "exactly; use an earlier snapshot")


def export(source: str | Path, *, out: str | Path, generator: str | None = None) -> Path:
    """G's weights and ModelConfig from a run or checkpoint -> one safetensors file: the moving average
    of G where the checkpoint holds one, unless generator="raw" (see pick_generator)."""
    out = check_output_file(out, inputs=[source], suffixes=(".safetensors",), what="export file")
    ckpt = load(source)
    model = ckpt["config"]["model"]
    which = pick_generator(ckpt, generator, Path(source))
    tensors = {k: v.contiguous() for k, v in ckpt[EMA if which == "ema" else "generator"].items()}
    meta = {"format": "dcgan-generator", "model": json.dumps(model), "step": str(ckpt["step"])}
    if which == "ema":  # an exported file of the trained weights stays as it always was
        meta["generator"] = "ema"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda f: f.write(safetensors_bytes(tensors, metadata=meta)))
    return out


def choose(source: str | Path, which: str = "latest") -> Path:
    """The checkpoint file `which` names in a run directory: latest (checkpoint.pt), best (best.pt,
    the best evaluated step) or a step number (snapshots/step_N.pt). A file is itself."""
    path = Path(source)
    if not path.is_dir():
        if which != "latest":
            raise DCGANError(f"--which {which} needs a run directory; {path} is one checkpoint file")
        return path
    if which == "latest":
        return path / LATEST
    if which == "best":
        if not (path / BEST).is_file():
            raise DCGANError(f"{path} has no {BEST}: it is written when training evaluates its samples "
                             "(--eval-every N); use --which latest or a snapshot step")
        return path / BEST
    steps = sorted(int(p.stem[5:]) for p in (path / "snapshots").glob("step_*.pt") if p.stem[5:].isdigit())
    if not which.isdigit() or int(which) not in steps:
        listed = ", ".join(map(str, steps)) or "none yet"
        raise DCGANError(f"--which must be latest, best or a snapshot step of {path} ({listed}), "
                         f"got {which!r}")
    return path / "snapshots" / f"step_{int(which):08d}.pt"


class Loaded(os.PathLike):
    """A source whose networks are loaded once, for a long-lived process (`dcgan explore`): every
    load_networks of it returns the same G and D (eval mode, CPU) instead of reading the file again.
    As a path it is the source itself, so every command takes it where it takes the source."""

    def __init__(self, source: str | Path, which: str = "latest"):
        self.path = Path(source)
        self.generator, self.discriminator = load_networks(source, which=which)
        file = Path(self.generator.origin["file"])
        self.config = None if file.suffix == ".safetensors" else load(file)["config"]

    def __fspath__(self) -> str:
        return str(self.path)

    __str__ = __fspath__

    def __repr__(self) -> str:
        return f"Loaded({str(self.path)!r})"


def run_data(source: str | Path, data: str | None, data_dir: str | None = None,
             exclude: str | None = None, what: str = "data") -> tuple[str, str | None, str | None]:
    """(data, data_dir, exclude) for a command on a run: what the run was trained on unless `data` is
    given; another dataset than the run's is said in one line on stderr."""
    path = Path(source)
    if isinstance(source, Loaded):
        trained = source.config
    else:
        trained = None if path.suffix == ".safetensors" else load(path)["config"]
    if data is None:
        if trained is None:
            raise DCGANError(f"give --data: {path} is an exported generator, which does not record the "
                             "data it was trained on")
        return trained["data"], trained.get("data_dir"), trained.get("exclude")
    if trained is not None and (data, data_dir) != (trained["data"], trained.get("data_dir")):
        print(f"note: {what} is {data}; {path} was trained on {trained['data']}", file=sys.stderr)
    return data, data_dir, exclude


def pick_generator(ckpt: dict, generator: str | None, path: Path) -> str:
    """Which G of a checkpoint a command uses: "ema" (the moving average) or "raw" (the trained weights).
    generator=None takes the average where the checkpoint holds one, saying so on stderr; a checkpoint
    of a run without EMA has only the raw G."""
    if generator is not None and generator not in GENERATORS:
        raise DCGANError(f"--generator must be ema or raw, got {reprlib.repr(generator)}")
    if generator == "ema" and EMA not in ckpt:
        raise DCGANError(f"{path} holds no moving average of G (its run had no --ema-decay or --ema-kimg): "
                         "use --generator raw")
    if generator is None and EMA in ckpt:
        print(f"note: using the moving average of G (EMA) of {path}; --generator raw uses the trained "
              "weights", file=sys.stderr)
    return generator or ("ema" if EMA in ckpt else "raw")


def load_networks(source: str | Path, device: str | torch.device = "cpu", need_discriminator: bool = False,
                  discriminator: bool = True, which: str = "latest", generator: str | None = None,
                  ) -> tuple[Generator, Discriminator | None]:
    """G and D in eval mode on `device`, from a run directory (its checkpoint `which`, see choose),
    a checkpoint, or an exported .safetensors (G alone: D is None, or an error naming the file when
    `need_discriminator`). With discriminator=False, D is not built (None). G is the moving average
    where the checkpoint holds one, or as `generator` says (ema | raw, see pick_generator). Each
    network's `origin` says where it came from: {"file": path, "step": the training step of its
    weights}, and G's also {"generator": "ema" or "raw"}."""
    if isinstance(source, Loaded):  # loaded once: the same networks, never moved off the CPU
        if need_discriminator and source.discriminator is None:
            raise DCGANError(f"{source.path} holds the generator only: give the run directory or a "
                             "checkpoint")
        if generator not in (None, source.generator.origin["generator"]) and not need_discriminator:
            raise DCGANError(f"{source.path} was loaded with its {source.generator.origin['generator']} "
                             f"generator, not the {generator} one")
        return source.generator, source.discriminator if discriminator else None
    path = choose(source, which)
    if path.suffix == ".safetensors":
        if need_discriminator:
            raise DCGANError(f"{path} holds the generator only: give the run directory or a checkpoint")
        config, weights, step, kind = _exported(path)
        if generator not in (None, kind):
            raise DCGANError(f"{path} holds the {kind} generator only (as exported): give the run "
                             f"directory or a checkpoint for --generator {generator}")
        states = {"generator": weights}
    else:
        ckpt = load(path)
        config, step = ModelConfig.from_dict(ckpt["config"]["model"]), ckpt["step"]
        kind = pick_generator(ckpt, generator, path)
        states = {"generator": ckpt[EMA if kind == "ema" else "generator"]}
        if discriminator:
            states["discriminator"] = ckpt["discriminator"]
    nets = []
    for name, net in (("generator", Generator), ("discriminator", Discriminator)):
        if name not in states:
            nets.append(None)
            continue
        with seeds.global_seed(0):  # its random init is overwritten: keep the caller's RNG as it was
            module = net(config)
        try:
            module.load_state_dict(states[name])
        except RuntimeError as e:
            problems = [line.strip() for line in str(e).splitlines()[1:] if line.strip()]
            first = problems[0] if problems else e
            raise DCGANError(f"{path}: {name} weights do not match the stored architecture "
                             f"({len(problems)} problem(s), first: {first})") from None
        module.origin = {"file": str(path), "step": step}
        if name == "generator":
            module.origin["generator"] = kind
        nets.append(module.to(device).eval())
    return nets[0], nets[1]


def load_generator(source: str | Path, device: str | torch.device = "cpu",
                   which: str = "latest", generator: str | None = None) -> Generator:
    """G alone (see load_networks)."""
    return load_networks(source, device, discriminator=False, which=which, generator=generator)[0]


def load_discriminator(source: str | Path, device: str | torch.device = "cpu") -> Discriminator:
    """D alone (see load_networks); an exported generator file is an error."""
    return load_networks(source, device, need_discriminator=True, generator="raw")[1]  # G unused


def _exported(path: Path) -> tuple[ModelConfig, dict, int | None, str]:
    """The ModelConfig, G weights, step and kind (ema | raw) of a file written by `export`, checked."""
    if not path.exists():
        raise DCGANError(f"generator file {path} not found")
    if not path.is_file():
        raise DCGANError(f"generator file {path} is not a regular file (a FIFO or device)")
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        weights = load_file(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise DCGANError(f"{path} is not a readable safetensors file "
                         f"({' '.join(str(e).split())[:160]})") from None
    if meta.get("format") != "dcgan-generator":
        raise DCGANError(f"{path} is not a generator exported by `dcgan export` (its metadata has no "
                         "format dcgan-generator)")
    try:
        config = ModelConfig.from_dict(json.loads(meta["model"]))
    except (KeyError, ValueError, TypeError, RecursionError, DCGANError) as e:
        raise DCGANError(f"{path}: the exported model config in its metadata is missing or invalid "
                         f"({type(e).__name__}: {' '.join(str(e).split())[:160]})") from None
    check_weights(weights, Generator, config, path, "generator")
    step = meta.get("step", "")
    kind = "ema" if meta.get("generator") == "ema" else "raw"
    return config, weights, int(step) if step.isdigit() else None, kind
