"""The training loop (paper §4), read top to bottom, with exact resume.

One step = d_steps updates of D, then one update of G:
  D maximizes log D(x) + log(1 - D(G(z)))   (real and fake in separate forward passes)
  G maximizes log D(G(z))                   (the non-saturating loss)
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from dcgan import checkpoint
from dcgan.config import RESUMABLE_CHANGES, TrainConfig, differences, from_dict, resolve
from dcgan.data import natural_shape, open_dataset, stream_batches, to_float
from dcgan.errors import DCGANError
from dcgan.health import Diverged, Health, diversity, first_images
from dcgan.models import Discriminator, Generator, build
from dcgan.visualize import grid, plot_losses, save_samples

DEFAULT_EPOCHS = 25


class TrainingInterrupted(DCGANError):
    """SIGINT or SIGTERM arrived; a checkpoint at the current step was written first."""


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DCGANError(f"unknown device {name!r}: use cpu, cuda, cuda:N, mps or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DCGANError(f"device {name!r} requested but no CUDA GPU is available; use --device cpu")
    return device


def default_run_dir(config: TrainConfig) -> Path:
    name = Path(config.data).name if Path(config.data).exists() else config.data
    return Path("runs") / f"{name}-{config.preset}"


def configure(overrides: dict, resume: str | Path | None = None) -> TrainConfig:
    """Resolve the settings of a new run, or of a resumed one (only run length and outputs may
    change on resume: anything else is an error naming each difference)."""
    if resume is None:
        data = overrides.get("data", TrainConfig.data)
        config = resolve(overrides, data_shape=natural_shape(data))
        config.out = str(config.out or default_run_dir(config))
        return config
    stored = from_dict(checkpoint.load(resume)["config"])
    merged = {**{k: v for k, v in stored.to_dict().items() if k != "model"},
              **stored.model.to_dict(), **overrides, "out": str(resume)}
    if "steps" in overrides or "epochs" in overrides:  # a new length replaces the old one
        merged["steps"], merged["epochs"] = overrides.get("steps"), overrides.get("epochs")
    config = resolve(merged)
    changed = differences(stored, config, ignore=RESUMABLE_CHANGES)
    if changed:
        raise DCGANError(f"cannot resume {resume} with different settings: {'; '.join(changed)}. "
                         "Start a new run with --out instead.")
    return config


def train(config: TrainConfig | dict, resume: bool = False) -> Path:
    """Train a DCGAN; returns the run directory. `config` may be a dict of settings.

    With resume=True, continues the run in config.out from its checkpoint.pt.
    """
    if isinstance(config, dict):
        config = configure(config)
    run = Path(config.out or default_run_dir(config))
    latest = run / checkpoint.LATEST
    if not resume and latest.exists():
        raise DCGANError(f"{run} already holds a run: continue it with --resume {run}, "
                         "or choose another --out")
    device = pick_device(config.device)
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    random.seed(config.seed)

    mc = config.model
    data = open_dataset(config.data, mc.image_size, mc.channels, config.data_dir,
                        exclude=config.exclude)
    B = config.batch_size
    if len(data) < B:
        raise DCGANError(f"batch size {B} is larger than the dataset ({len(data)} images in "
                         f"{data.source}): use --batch-size {len(data)} or fewer")
    per_epoch = len(data) // B  # real batches per epoch (the last partial one is dropped)
    total = config.steps or max(1, (config.epochs or DEFAULT_EPOCHS) * per_epoch // config.d_steps)

    G, D = build(mc)
    channels_last = config.channels_last if config.channels_last is not None else device.type == "cuda"
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    G.to(device, memory_format=memory_format)
    D.to(device, memory_format=memory_format)
    rt = Runtime(device, config.precision, channels_last)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest conv algorithms once
    # compiled views share G's and D's parameters; checkpoints and sampling use the modules
    G_run, D_run = (torch.compile(G), torch.compile(D)) if config.compile else (G, D)
    adam = dict(lr=config.lr, betas=(config.beta1, config.beta2), weight_decay=config.weight_decay)
    opt_g = torch.optim.Adam(G.parameters(), **adam)
    opt_d = torch.optim.Adam(D.parameters(), **adam)
    noise = torch.Generator().manual_seed(config.seed + 1)  # z for training steps
    fixed_z = G.latent(config.seed, range(config.n_samples))  # the same z for every grid
    real_diversity = diversity(to_float(first_images(data, config.n_samples)))

    def save(step: int) -> None:
        checkpoint.save(latest, dict(
            generator=G.state_dict(), discriminator=D.state_dict(), optimizer_g=opt_g.state_dict(),
            optimizer_d=opt_d.state_dict(), step=step, epoch=step * config.d_steps // per_epoch,
            config=config.to_dict(), rng=checkpoint.rng_state(noise), amp=rt.state_dict()))
        if step and (step % config.snapshot_every == 0 or step == total):
            snap = run / "snapshots" / f"step_{step:08d}.pt"
            snap.parent.mkdir(exist_ok=True)
            snap.unlink(missing_ok=True)
            os.link(latest, snap)  # the latest file is only ever replaced, so a link is a copy

    def restore() -> int:
        ckpt = checkpoint.load(latest)
        G.load_state_dict(ckpt["generator"])
        D.load_state_dict(ckpt["discriminator"])
        opt_g.load_state_dict(ckpt["optimizer_g"])
        opt_d.load_state_dict(ckpt["optimizer_d"])
        for group in opt_g.param_groups + opt_d.param_groups:
            group["lr"] = config.lr
        checkpoint.set_rng_state(ckpt["rng"], noise)
        rt.load_state_dict(ckpt.get("amp", {}))
        return ckpt["step"]

    run.mkdir(parents=True, exist_ok=True)
    for stale in run.glob(".*.tmp*"):  # temp files of a process killed while writing
        stale.unlink(missing_ok=True)
    checkpoint.atomic_write(run / "config.json",
                            lambda f: f.write(json.dumps(config.to_dict(), indent=2).encode()))
    if resume:
        start = restore()
        _truncate_metrics(run / "metrics.jsonl", start)
    else:
        start = 0
        save(0)  # from the first moment on, there is a checkpoint to resume or roll back to

    writer = None
    if config.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run / "tensorboard"), purge_step=start or None)
    metrics = open(run / "metrics.jsonl", "a")
    stop = []  # the signal that asked us to stop, if any
    handlers = _install_stop_handlers(stop)

    stream = stream_batches(data, B, config.seed, device, start * config.d_steps)
    sums = torch.zeros(4, device=device)  # loss_D, loss_G, D(x), D(G(z)) since the last log
    counted, tick = 0, time.perf_counter()
    health = Health(config, real_diversity)
    bar = tqdm(total=total * B * config.d_steps, initial=start * B * config.d_steps, unit="img",
               unit_scale=True, dynamic_ncols=True, disable=not sys.stderr.isatty(), desc=run.name)
    print(f"training {run}: {len(data)} images from {data.source}, steps {start}->{total}, "
          f"device {device}", file=sys.stderr)
    step, rollbacks = start, 0
    try:
        while step < total:
            sums += train_step(G_run, D_run, opt_g, opt_d, stream, noise, config, rt)
            counted += 1
            step += 1
            bar.update(B * config.d_steps)
            try:
                if step % config.sample_every == 0 or step == total:
                    images = save_samples(G, fixed_z, run / "samples" / f"step_{step:08d}.png")
                    health.check_diversity(step, images)
                    if writer:
                        writer.add_image("samples", grid(images), step)
                if step % config.log_every == 0 or step == total:
                    row = _log_row(sums / counted, step, per_epoch, config, counted * B * config.d_steps,
                                   tick)
                    row.update(diversity=health.diversity, warnings=health.check_losses(row))
                    metrics.write(json.dumps(row) + "\n")
                    metrics.flush()
                    if writer:
                        for k in ("loss_D", "loss_G", "D_x", "D_G_z", "img_per_s"):
                            writer.add_scalar(k, row[k], step)
                    bar.set_postfix(loss_D=f"{row['loss_D']:.3f}", loss_G=f"{row['loss_G']:.3f}")
                    if bar.disable and (step % config.sample_every == 0 or step == total):
                        print(f"step {step}/{total} loss_D {row['loss_D']:.4f} loss_G "
                              f"{row['loss_G']:.4f} D(x) {row['D_x']:.3f} D(G(z)) {row['D_G_z']:.3f} "
                              f"{row['img_per_s']:.0f} img/s", file=sys.stderr)
                    for w in row["warnings"]:
                        tqdm.write(f"warning: step {step}: {w}", file=sys.stderr)
                    sums.zero_()
                    counted, tick = 0, time.perf_counter()
                if step % config.checkpoint_every == 0 or step == total or stop:
                    _check_finite(sums, counted, step)
                    save(step)
            except Diverged as e:
                if config.on_divergence != "rollback" or rollbacks >= config.max_rollbacks:
                    raise DCGANError(f"{e}: training diverged. The last good checkpoint {latest} is "
                                     "intact; resume it with a lower --lr, or train with "
                                     "--on-divergence rollback") from None
                rollbacks += 1
                config.lr *= config.rollback_lr_factor
                step = restore()
                metrics.close()
                _truncate_metrics(run / "metrics.jsonl", step)
                metrics = open(run / "metrics.jsonl", "a")
                stream = stream_batches(data, B, config.seed, device, step * config.d_steps)
                sums.zero_()
                counted, tick = 0, time.perf_counter()
                bar.reset(total * B * config.d_steps)
                bar.update(step * B * config.d_steps)
                tqdm.write(f"warning: {e}; rolled back to step {step} with lr {config.lr:g} "
                           f"(rollback {rollbacks} of {config.max_rollbacks})", file=sys.stderr)
                continue
            if stop:
                raise TrainingInterrupted(
                    f"stopped by signal {stop[0]} at step {step}; checkpoint saved in {latest}. "
                    f"Continue with: dcgan train --resume {run}")
        save_samples(G, fixed_z, run / "samples" / "final.png")
        plot_losses(run / "metrics.jsonl", run / "losses.png")
    except OSError as e:  # disk full, read-only folder, ...
        raise DCGANError(f"writing to {run} failed ({e.strerror or e}); the last checkpoint {latest} "
                         "is intact: free some space and resume") from None
    finally:
        bar.close()
        metrics.close()
        if writer:
            writer.close()
        _restore_handlers(handlers)
    return run


class Runtime:
    """How a step runs on its device: autocast precision, one loss scaler per network (fp16; the
    two losses have different scales), memory layout."""

    def __init__(self, device: torch.device, precision: str = "fp32", channels_last: bool = False):
        self.device_type = device.type
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        self.channels_last = channels_last
        self.scaler_d = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
        self.scaler_g = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

    def autocast(self):
        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.dtype is not None)

    def images(self, x: torch.Tensor) -> torch.Tensor:
        x = to_float(x)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def state_dict(self) -> dict:
        return {"scaler_d": self.scaler_d.state_dict(), "scaler_g": self.scaler_g.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if state.get("scaler_d"):
            self.scaler_d.load_state_dict(state["scaler_d"])
            self.scaler_g.load_state_dict(state["scaler_g"])


def train_step(G: Generator, D: Discriminator, opt_g: torch.optim.Optimizer,
               opt_d: torch.optim.Optimizer, reals: Iterator[torch.Tensor], noise: torch.Generator,
               config: TrainConfig, rt: Runtime | None = None) -> torch.Tensor:
    """d_steps updates of D, then one of G. Returns [loss_D, loss_G, D(x), D(G(z))], detached."""
    device = next(G.parameters()).device
    rt = rt or Runtime(device)
    # (1) D: maximize log D(x) + log(1 - D(G(z)))
    for j in range(config.d_steps):
        real = rt.images(next(reals))
        b = len(real)
        z = G.sample_latent(b, noise, device)
        opt_d.zero_grad(set_to_none=True)
        with rt.autocast():
            with torch.set_grad_enabled(j == config.d_steps - 1):  # keep G's graph for step (2)
                fake = G(z)
            out_real = D(real)
            out_fake = D(fake.detach())  # a separate pass: real and fake get their own BN statistics
            loss_d = (F.binary_cross_entropy_with_logits(
                out_real, torch.full_like(out_real, 1.0 - config.label_smoothing))  # one-sided
                + F.binary_cross_entropy_with_logits(out_fake, torch.zeros_like(out_fake)))
        rt.scaler_d.scale(loss_d).backward()
        rt.scaler_d.step(opt_d)
        rt.scaler_d.update()
    # (2) G: maximize log D(G(z)), reusing this step's G(z); D's weights get no gradient
    D.requires_grad_(False)
    opt_g.zero_grad(set_to_none=True)
    with rt.autocast():
        out = D(fake)
        loss_g = F.binary_cross_entropy_with_logits(out, torch.ones_like(out))
    rt.scaler_g.scale(loss_g).backward()
    rt.scaler_g.step(opt_g)
    rt.scaler_g.update()
    D.requires_grad_(True)
    with torch.no_grad():
        return torch.stack([loss_d, loss_g, torch.sigmoid(out_real).mean(),
                            torch.sigmoid(out_fake).mean()])


def _log_row(means: torch.Tensor, step: int, per_epoch: int, config: TrainConfig, images: int,
             tick: float) -> dict:
    loss_d, loss_g, d_x, d_g_z = means.tolist()
    if not all(map(np.isfinite, (loss_d, loss_g))):
        raise Diverged(f"non-finite loss at step {step} (loss_D={loss_d}, loss_G={loss_g})")
    return dict(step=step, epoch=step * config.d_steps / per_epoch,
                kimg=step * config.batch_size * config.d_steps / 1000, loss_D=loss_d,
                loss_G=loss_g, D_x=d_x, D_G_z=d_g_z,
                img_per_s=images / max(time.perf_counter() - tick, 1e-9), time=time.time())


def _check_finite(sums: torch.Tensor, counted: int, step: int) -> None:
    """Never write a checkpoint of a diverged model."""
    if counted and not torch.isfinite(sums[:2]).all():
        raise Diverged(f"non-finite loss before step {step}")


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric rows logged after the checkpoint we resume from: those steps run again."""
    if path.is_file():
        kept = []
        for r in path.read_text().splitlines():
            try:
                if json.loads(r)["step"] <= step:
                    kept.append(r)
            except (ValueError, KeyError, TypeError):  # a line cut short by a killed process
                pass
        checkpoint.atomic_write(path, lambda f: f.write("".join(r + "\n" for r in kept).encode()))


def _install_stop_handlers(stop: list) -> dict:
    """SIGINT/SIGTERM finish the current step, save a checkpoint and stop (main thread only)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}

    def handler(signum, frame):
        stop.append(signum)
        signal.signal(signum, previous[signum])  # a second signal acts at once

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        signal.signal(s, handler)
    return previous


def _restore_handlers(previous: dict) -> None:
    for s, h in previous.items():
        signal.signal(s, h)
