"""The training loop (paper §4), read top to bottom, with exact resume.

One step = d_steps updates of D, then one update of G:
  D maximizes log D(x) + log(1 - D(G(z)))   (real and fake in separate forward passes)
  G maximizes log D(G(z))                   (the non-saturating loss)
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dcgan import checkpoint, distributed, seeds
from dcgan.config import TrainConfig, configure_new, configure_resumed, default_run_dir, run_of
from dcgan.data import (
    class_labels,
    fingerprint_changes,
    first_images,
    open_dataset,
    sample_images,
    stream_batches,
    to_float,
)
from dcgan.errors import DCGANError, TrainingInterrupted, describe_os_error
from dcgan.health import Diverged, Health, diversity
from dcgan.metrics import Evaluator, better, check_best_metric, describe_quality
from dcgan.outputs import atomic_write
from dcgan.runlog import RunLog
from dcgan.step import Networks, ema_decay, standing_statistics, train_step, update_ema
from dcgan.visualize import grid, plot_losses, save_samples, save_sheet

__all__ = ["configure", "plan", "train"]  # public: dcgan.NAME

DEFAULT_EPOCHS = 25


def check_run_dir(run: Path) -> None:
    """The run directory can be created and written: checked before any work."""
    if run.exists() and not run.is_dir():
        raise DCGANError(f"--out {run} is a file, not a folder: choose a folder for the run")
    existing = next(p for p in [run, *run.parents] if p.exists())
    if not existing.is_dir():
        raise DCGANError(f"--out {run} cannot be created: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise DCGANError(f"--out {run} cannot be created or written: {existing} is not writable")


def configure(overrides: dict, resume: str | Path | None = None) -> TrainConfig:
    """The settings of a new run (config.configure_new), or of the run `resume` names: the settings
    stored in its checkpoint with the `overrides` a resumed run may change (config.configure_resumed)."""
    if resume is None:
        return configure_new(overrides)
    ckpt = checkpoint.load(resume)
    checkpoint.check_resumable(ckpt, Path(resume))
    return configure_resumed(ckpt["config"], overrides, resume)


def train(config: TrainConfig | dict, resume: bool | str | Path = False) -> Path:
    """Train a DCGAN; returns the run directory. `config` may be a dict of settings.

    With resume=True (or the run directory), continues the run in config.out from its checkpoint.pt.
    With resume=a checkpoint file of the run (a snapshot, best.pt), the run continues from that file's
    step: it becomes checkpoint.pt, and the checkpoint it replaces is kept in superseded/. With
    resume=another run (its directory or one of its checkpoints), config.out becomes a branch: a new
    run that starts from that checkpoint, its metrics up to that step copied, and its config.json
    noting where it came from. Under torchrun, each process trains one shard with
    DistributedDataParallel and rank 0 writes the run.
    """
    if isinstance(config, dict):
        config = configure_new(config)
    run = Path(config.out or default_run_dir(config))
    latest = run / checkpoint.LATEST
    rewind = None  # a checkpoint to continue from, when it is not this run's latest checkpoint itself
    branch = None  # {run, checkpoint, step} of the run this one branches from
    if not isinstance(resume, bool):
        source = Path(resume) / checkpoint.LATEST if Path(resume).is_dir() else Path(resume)
        if run.resolve() != run_of(resume).resolve():
            if latest.exists():
                raise DCGANError(f"{run} already holds a run: a branch from {resume} needs a new --out")
            rewind = source
            branch = {"run": str(run_of(resume)), "checkpoint": str(source),
                      "step": checkpoint.load(source)["step"]}
        elif source.is_file() and not (latest.exists() and source.samefile(latest)):
            rewind = source
    if not resume and latest.exists():
        raise DCGANError(f"{run} already holds a run: continue it with --resume {run}, "
                         "or choose another --out")
    check_run_dir(run)
    check_best_metric(config.best_metric, config.eval_extractor)
    world, device_name = distributed.setup(config.device)
    try:
        distributed.barrier(world)  # every rank has checked the run directory before rank 0 writes
        return _train(config, bool(resume), run, world, distributed.pick_device(device_name), rewind, branch)
    finally:
        distributed.teardown(world)


class _Window:
    """Losses and D outputs summed over the steps since the last log row."""

    def __init__(self, device: torch.device):
        self.sums, self.steps, self.tick = torch.zeros(4, device=device), 0, time.perf_counter()

    def add(self, values: torch.Tensor) -> None:
        self.sums += values
        self.steps += 1

    def reset(self) -> None:
        self.sums.zero_()
        self.steps, self.tick = 0, time.perf_counter()


@dataclass
class _Run:
    """A run's directory and the state its checkpoints hold: saving, restoring, rolling back."""

    dir: Path
    config: TrainConfig
    nets: Networks
    noise: torch.Generator  # z for training steps, the same on every rank
    world: distributed.World
    fingerprint: dict  # of the training data
    per_epoch: int  # real batches per rank and epoch
    total: int  # steps
    best: dict = field(default_factory=dict)  # {"metric": NAME, NAME: best value, "step": S}: best.pt
    rollbacks: int = 0

    def __post_init__(self):
        self.best = best_record(self.best, self.config.best_metric)

    @property
    def latest(self) -> Path:
        return self.dir / checkpoint.LATEST

    def save(self, step: int) -> None:
        """checkpoint.pt (and a snapshot every snapshot_every steps), written by rank 0, checked
        finite on every rank first: DDP keeps the weights equal, so all ranks agree."""
        state = self.nets.state_dict()
        bad = checkpoint.nonfinite(state)  # a finite loss can still leave NaN weights (an inf gradient)
        if bad:
            raise Diverged(f"non-finite values in {', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''} "
                           f"at step {step}")
        if not self.world.main:
            return
        checkpoint.save_run(self.latest, state, step=step, epoch=step * self.config.d_steps // self.per_epoch,
                            config=self.config.to_dict(), noise=self.noise, best=self.best,
                            data_fingerprint=self.fingerprint)
        if step and (step % self.config.snapshot_every == 0 or step == self.total):
            snap = self.dir / "snapshots" / f"step_{step:08d}.pt"
            snap.parent.mkdir(exist_ok=True)
            checkpoint.link(self.latest, snap)

    def restore(self) -> int:
        """The state of checkpoint.pt, on every rank; its step."""
        distributed.barrier(self.world)  # rank 0 has finished writing
        ckpt = checkpoint.load(self.latest)
        try:
            step = checkpoint.restore_run(ckpt, self.nets, self.noise)
        except DCGANError as e:
            raise DCGANError(f"{self.latest}: {e} (the snapshots are in {self.dir / 'snapshots'})") from None
        self.nets.set_lr(self.config.lr)
        self.best = best_record(ckpt.get("best", {}), self.config.best_metric)
        return step

    def improved(self, quality: dict, step: int) -> bool:
        """Whether these scores beat the best so far of the run's best metric (they become the best)."""
        name = self.best["metric"]
        if not better(name, quality[name], self.best.get(name)):
            return False
        self.best.update({name: quality[name], "step": step})
        return True

    def rollback(self, error: Diverged, log: RunLog) -> int:
        """Back to the last good checkpoint with a lower learning rate, or stop if that is not allowed
        or used up; the step to continue from."""
        c = self.config
        if c.on_divergence != "rollback" or self.rollbacks >= c.max_rollbacks:
            raise DCGANError(f"{error}: training diverged. The last good checkpoint {self.latest} is "
                             "intact; resume it with a lower --lr, or train with "
                             "--on-divergence rollback") from None
        self.rollbacks += 1
        c.lr *= c.rollback_lr_factor
        step = self.restore()
        log.message(f"warning: {error}; rolled back to step {step} with lr {c.lr:g} "
                    f"(rollback {self.rollbacks} of {c.max_rollbacks})")
        return step


def _train(config: TrainConfig, resume: bool, run_dir: Path, world: distributed.World,
           device: torch.device, rewind: Path | None = None, branch: dict | None = None) -> Path:
    torch.manual_seed(config.seed)  # the same on every rank: identical initial weights
    np.random.seed(config.seed % 2**32)  # numpy's global seeds are 32-bit
    random.seed(config.seed)
    resumed = checkpoint.load(rewind or run_dir / checkpoint.LATEST) if resume else None
    data = _open_data(config, run_dir, resumed)
    labels = _class_labels(config, data)  # a conditional run's class per image (sets its classes)
    B = config.batch_size  # per rank: the global batch is B * world.size
    per_epoch, total = schedule(config, data, world.size)
    nets = Networks.build(config, device, world)
    run = _Run(run_dir, config, nets, seeds.generator(config.seed, "noise"), world, data.fingerprint,
               per_epoch, total)
    fixed_z = nets.G.latent(config.seed, range(config.n_samples))  # the same z for every grid
    fixed_y = nets.G.cycled_labels(range(config.n_samples))  # conditional: class i % K, a column per class
    shown = nets.G if nets.G_ema is None else nets.G_ema  # grids, metrics, best.pt: the average if kept
    label = "G" if nets.G_ema is None else "EMA G"
    first = first_images(data, config.n_samples)
    health = Health(config, diversity(to_float(first)))
    evaluator = _evaluator(config, data) if config.eval_every and world.main else None

    done = resumed["step"] if resumed is not None else None
    if world.main:
        lock = _prepare_dir(run, resume, rewind, branch, done)
    else:
        lock = None
        _check_forward(run_dir, done, total)
    if world.main:  # check the data before waiting for samples: exactly what the model is shown
        mc = config.model
        save_sheet(to_float(first), run_dir / "real_samples.png",
                   f"training images as the model sees them: {mc.channels}x{mc.image_size}x{mc.image_size}")
    if not resume:
        run.save(0)  # from the first moment on, there is a checkpoint to resume or roll back to
    start = run.restore() if resume else 0
    images_per_step = B * world.size * config.d_steps
    log = RunLog(run_dir, total * images_per_step, start * images_per_step, start, config.tensorboard,
                 active=world.main, total_steps=total)
    if resume:
        log.rewind(start, start * images_per_step)
    stop = []  # the signal that asked us to stop, if any
    handlers = _install_stop_handlers(stop)
    log.message(f"training {run_dir}: {len(data)} images from {data.source} ({data.reading()}), "
                f"steps {start}->{total}, "
                f"device {device}" + (f", {world.size} ranks" if world.distributed else ""))
    step, stream, window = start, None, _Window(device)
    try:
        while step < total:
            if stream is None:  # the batches from this step on: at the start and after a rollback
                stream = stream_batches(data, B, config.seed, device, step * config.d_steps, world.rank,
                                        world.size, config.workers, labels)
                window.reset()
            window.add(train_step(nets, stream, run.noise, config))
            if nets.G_ema is not None:
                update_ema(nets.G_ema, nets.G, ema_decay(config, step, world.size))
            step += 1
            log.advance(images_per_step)
            stopping = distributed.any_rank(bool(stop), world, device)
            evaluated = config.eval_every and step % config.eval_every == 0  # alike on every rank
            used = (evaluated or stopping or step == total or step % config.sample_every == 0
                    or step % config.checkpoint_every == 0)  # the average is shown, scored or saved
            if nets.G_ema is not None and used:  # on every rank (a SyncBatchNorm G syncs)
                standing_statistics(nets.G_ema)
            try:
                if world.main and (step % config.sample_every == 0 or step == total):
                    images = save_samples(shown, fixed_z, run_dir / "samples" / f"step_{step:08d}.png",
                                          f"step {step}: {label}(z) for the run's {len(fixed_z)} fixed z",
                                          fixed_y)
                    log.image(grid(images, config.model.num_classes or None), step)
                    # the collapse check diagnoses training: the trained G's samples
                    health.check_diversity(step, images if shown is nets.G else nets.G.generate(fixed_z,
                                                                                                labels=fixed_y))
                quality = evaluator(shown) if evaluator and evaluated else {}
                if step % config.log_every == 0 or step == total or evaluated:
                    means = distributed.all_mean(window.sums / window.steps, world)
                    row = _log_row(means, step, step * config.d_steps / per_epoch, images_per_step,
                                   window.steps, window.tick)  # raises Diverged on a non-finite loss
                    row.update(quality)
                    row.update(diversity=health.diversity, warnings=health.check_losses(row))
                    log.row(row, console=step % config.sample_every == 0 or step == total)
                    window.reset()
                if quality:
                    log.message(f"step {step} {describe_quality(quality, config.eval_n)}")
                    log.scalars(quality, step)
                if world.main and step % config.sample_every == 0:  # the curves so far, with each grid
                    plot_losses(run_dir / "metrics.jsonl", run_dir / "losses.png")
                if quality and run.improved(quality, step):
                    run.save(step)
                    checkpoint.link(run.latest, run_dir / "best.pt")  # the best of --best-metric so far
                    best = describe_quality({config.best_metric: quality[config.best_metric]})
                    log.message(f"step {step} new best {best} -> {run_dir / 'best.pt'}")
                if step % config.checkpoint_every == 0 or step == total or stopping:
                    _check_finite(distributed.all_mean(window.sums, world), window.steps, step)
                    run.save(step)
            except Diverged as e:
                step = run.rollback(e, log)
                log.rewind(step, step * images_per_step)
                stream = None
                continue
            if stopping:
                raise TrainingInterrupted(
                    f"stopped by signal {stop[0] if stop else 'on another rank'} at step {step}; "
                    f"checkpoint saved in {run.latest}. Continue with: dcgan train --resume {run_dir}")
        if world.main:
            save_samples(shown, fixed_z, run_dir / "samples" / "final.png",
                         f"final (step {total}): {label}(z) for the run's {len(fixed_z)} fixed z", fixed_y)
            plot_losses(run_dir / "metrics.jsonl", run_dir / "losses.png")
    except OSError as e:  # disk full, read-only folder, ...
        raise DCGANError(f"writing {e.filename or run_dir} failed: {describe_os_error(e)}; the last "
                         f"checkpoint {run.latest} is intact: resume it with --resume {run_dir}") from None
    finally:
        log.close()
        _restore_handlers(handlers)
        if lock:
            lock.close()
    return run_dir


def _open_data(config: TrainConfig, run_dir: Path, resumed: dict | None):
    """The training images; on resume, the same images as the `resumed` checkpoint's (--data-dir may
    move them, never swap them)."""
    mc = config.model
    data = open_dataset(config.data, mc.image_size, mc.channels, config.data_dir, exclude=config.exclude,
                        use_cache=config.cache, workers=config.workers)
    if resumed is not None:
        stored = resumed.get("data_fingerprint")
        changed = fingerprint_changes(stored, data.fingerprint)
        if changed:
            raise DCGANError(f"cannot resume {run_dir} on other data than it was trained on: "
                             f"{'; '.join(changed)} (files: their names, sizes and modification times). "
                             "Give the original files, or start a new run with --out")
    return data


def _class_labels(config: TrainConfig, data) -> torch.Tensor | None:
    """A conditional run's class of each image (data.class_labels), its class names recorded in
    config.model.classes (a resumed run's must be the data's); None for an unconditional run."""
    if not config.conditional:
        if config.model.classes is not None:
            raise DCGANError("classes are read from the data by --conditional; an unconditional run has none")
        return None
    labels, classes = class_labels(data, config.data)
    if config.model.classes is not None and config.model.classes != classes:
        raise DCGANError(f"the run's classes {config.model.classes} are not the data's {classes}")
    config.model.classes = classes
    return labels


def schedule(config: TrainConfig, data, world_size: int = 1) -> tuple[int, int]:
    """(real batches per rank and epoch, the last partial one dropped; total steps of the run)."""
    per_rank, batch = len(data) // world_size, config.batch_size
    if per_rank < batch:
        advice = f"use --batch-size {per_rank} or fewer" if per_rank else "add images (or run fewer ranks)"
        raise DCGANError(f"batch size {batch} is larger than the dataset ({len(data)} images in "
                         f"{data.source}, {world_size} rank(s)): {advice}")
    per_epoch = per_rank // batch
    return per_epoch, config.steps or max(1, (config.epochs or DEFAULT_EPOCHS) * per_epoch // config.d_steps)


def plan(config: TrainConfig) -> dict:
    """What `dcgan train --dry-run` reports beyond the settings: the images found and the schedule
    (opening the data, so a bad --data fails here, as training would)."""
    check_best_metric(config.best_metric, config.eval_extractor)
    data = _open_data(config, Path(config.out), None)
    _class_labels(config, data)
    per_epoch, total = schedule(config, data)
    return {"images": len(data), "source": data.source, "reading": data.reading(),
            "batches_per_epoch": per_epoch,
            "steps_per_epoch": round(per_epoch / config.d_steps, 2), "total_steps": total,
            "epochs": round(total * config.d_steps / per_epoch, 2),
            **({"classes": config.model.classes} if config.conditional else {})}


def best_record(stored: dict, metric: str) -> dict:
    """The best-so-far record of `metric` from a checkpoint's: one written before --best-metric existed,
    {"fid": value, "step": S}, is FID's; a record of another metric (a resume that changed
    --best-metric), or one that is not a number, starts over."""
    value = stored.get(metric) if isinstance(stored, dict) and stored.get("metric", "fid") == metric else None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return {"metric": metric, metric: value, "step": stored.get("step")}
    return {"metric": metric, "step": None}


def _evaluator(config: TrainConfig, data) -> Evaluator:
    """The training-time metric: a seeded random reference subset, a fixed set of z."""
    reference = sample_images(data, config.eval_n, seeds.generator(config.seed, "reference"))
    return Evaluator(config.eval_extractor, reference, config.eval_n, config.seed, config.inception_weights,
                     data=config.data, labels=data.labels)


def _check_forward(run: Path, done: int | None, total: int) -> None:
    """A resumed run (at step `done`) only goes forward."""
    if done is not None and done > total:
        raise DCGANError(f"{run} is at step {done:,}; it cannot be resumed to {total:,} steps: give "
                         f"--steps above {done:,} (or --resume a snapshot of an earlier step)")


def _prepare_dir(run: _Run, resume: bool, rewind: Path | None, branch: dict | None = None,
                 done: int | None = None):
    """Rank 0: create and lock the run directory, check that a resumed run (at step `done`) goes
    forward, clear stale temp files, rewind to a snapshot (or start a branch) if asked, write
    config.json. The lock, held until training ends."""
    run.dir.mkdir(parents=True, exist_ok=True)
    lock = checkpoint.lock_run(run.dir)  # one training process per run directory, until it ends
    if not resume and run.latest.exists():  # another process started this run first
        lock.close()
        raise DCGANError(f"{run.dir} already holds a run: continue it with --resume {run.dir}, "
                         "or choose another --out")
    try:
        _check_forward(run.dir, done, run.total)  # before anything in the run is changed
    except DCGANError:
        lock.close()
        raise
    remove_stale_temps(run.dir)
    if branch is not None:
        metrics = Path(branch["run"]) / "metrics.jsonl"
        if metrics.is_file():  # its history up to the branch point (RunLog.rewind drops the rest)
            data = metrics.read_bytes()
            atomic_write(run.dir / "metrics.jsonl", lambda f: f.write(data))
    if rewind is not None:
        _rewind(run.dir, run.latest, rewind)
    config = {**run.config.to_dict(), "data_fingerprint": run.fingerprint}
    origin = branch or _branched_from(run.dir)  # a branch stays one when it is resumed
    if origin:
        config["branched_from"] = origin
    atomic_write(run.dir / "config.json", lambda f: f.write(json.dumps(config, indent=2).encode()))
    return lock


def _branched_from(run: Path) -> dict | None:
    """Where a run came from, as its config.json says (None for a run that is not a branch)."""
    try:
        origin = json.loads((run / "config.json").read_text()).get("branched_from")
    except (OSError, ValueError, AttributeError):
        return None
    return origin if isinstance(origin, dict) else None


def _rewind(run: Path, latest: Path, source: Path) -> None:
    """Make `source` (a snapshot of this run) the latest checkpoint; the one it replaces and the metrics
    logged after it are kept in superseded/, so going back loses nothing."""
    step = checkpoint.load(source)["step"]
    note = ""
    if latest.exists():
        old = checkpoint.load(latest)["step"]
        kept = run / "superseded" / f"step_{old:08d}"
        kept.mkdir(parents=True, exist_ok=True)
        for name in (checkpoint.LATEST, "metrics.jsonl"):
            if (run / name).is_file():
                (kept / name).unlink(missing_ok=True)
                shutil.copy2(run / name, kept / name)
        note = f"; the checkpoint it replaces (step {old}) and its metrics are kept in {kept}"
    data = source.read_bytes()
    atomic_write(latest, lambda f: f.write(data))
    print(f"resuming {run} from step {step} of {source}{note}", file=sys.stderr)


def remove_stale_temps(run: Path) -> list[Path]:
    """Delete the temp files of writes killed midway: only names outputs.atomic_write makes
    (.NAME.tmpPID), only regular files, and only when process PID is gone (a live process may still
    be writing its own)."""
    removed = []
    for path in run.glob(".*.tmp*"):
        m = re.fullmatch(r"\..+\.tmp(\d+)", path.name)
        if not m or not path.is_file() or path.is_symlink() or _alive(int(m.group(1))):
            continue
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # our own temp of an earlier attempt in this process is stale too
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # another user's process, or a number no process has: leave it be
    return True


def _log_row(means: torch.Tensor, step: int, epoch: float, images_per_step: int, steps: int,
             tick: float) -> dict:
    """Mean losses and D outputs over the last `steps` steps; kimg counts real images seen by all
    ranks together."""
    loss_d, loss_g, d_x, d_g_z = means.tolist()
    if not all(map(np.isfinite, (loss_d, loss_g))):
        raise Diverged(f"non-finite loss at step {step} (loss_D={loss_d}, loss_G={loss_g})")
    return dict(step=step, epoch=epoch, kimg=step * images_per_step / 1000, loss_D=loss_d,
                loss_G=loss_g, D_x=d_x, D_G_z=d_g_z,
                img_per_s=steps * images_per_step / max(time.perf_counter() - tick, 1e-9),
                time=time.time())


def _check_finite(sums: torch.Tensor, counted: int, step: int) -> None:
    """Never write a checkpoint of a diverged model."""
    if counted and not torch.isfinite(sums[:2]).all():
        raise Diverged(f"non-finite loss before step {step}")


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
