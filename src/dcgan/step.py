"""One GAN step (paper §4), the networks it trains and the runtime it runs in (precision, loss
scaling, memory layout).

  D maximizes log D(x) + log(1 - D(G(z)))   (real and fake in separate forward passes)
  G maximizes log D(G(z))                   (the non-saturating loss)
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dcgan import distributed
from dcgan.augment import augment
from dcgan.config import TrainConfig, parse_policy
from dcgan.data import to_float
from dcgan.models import Discriminator, Generator, averaged_bn_statistics, build


class Runtime:
    """How a step runs on its device: autocast precision, one loss scaler per network (fp16; the
    two losses have different scales), memory layout."""

    def __init__(self, device: torch.device, precision: str = "fp32", channels_last: bool = False,
                 rank: int = 0, world_size: int = 1):
        self.device_type = device.type
        self.rank, self.world_size = rank, world_size
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        self.channels_last = channels_last
        self.scaler_d = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
        self.scaler_g = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

    def autocast(self):
        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.dtype is not None)

    def latent(self, G: Generator, n: int, noise: torch.Generator, device) -> torch.Tensor:
        """This rank's rows of one global draw: every rank advances `noise` alike (so a checkpoint
        from rank 0 fits all), and the ranks' z together equal a one-process run's."""
        z = G.sample_latent(n * self.world_size, noise, device)
        return z[self.rank::self.world_size] if self.world_size > 1 else z

    def classes(self, G: Generator, n: int, noise: torch.Generator, device) -> torch.Tensor | None:
        """Classes of the fake batch, uniform over a conditional G's K, drawn from `noise` after z as
        `latent` draws z (None for an unconditional G, which draws nothing)."""
        k = G.config.num_classes
        if not k:
            return None
        y = torch.randint(k, (n * self.world_size,), generator=noise)
        return (y[self.rank::self.world_size] if self.world_size > 1 else y).to(device)

    def images(self, x: torch.Tensor) -> torch.Tensor:
        x = to_float(x)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def state_dict(self) -> dict:
        return {"scaler_d": self.scaler_d.state_dict(), "scaler_g": self.scaler_g.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if state.get("scaler_d"):
            self.scaler_d.load_state_dict(state["scaler_d"])
            self.scaler_g.load_state_dict(state["scaler_g"])


@dataclass
class Networks:
    """What a training step updates: the bare G and D (checkpoints and sampling), their optimizers,
    the runtime, the views the step runs (DDP-wrapped and/or compiled; G and D themselves by
    default), and the moving average of G (G_ema, with --ema-decay or --ema-kimg; else None)."""

    G: Generator
    D: Discriminator
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    rt: Runtime | None = None
    G_run: nn.Module | None = None
    D_run: nn.Module | None = None
    G_ema: Generator | None = None

    def __post_init__(self):
        if self.rt is None:
            self.rt = Runtime(next(self.G.parameters()).device)
        self.G_run = self.G if self.G_run is None else self.G_run
        self.D_run = self.D if self.D_run is None else self.D_run

    @classmethod
    def build(cls, config: TrainConfig, device: torch.device,
              world: distributed.World | None = None) -> Networks:
        """G, D, their optimizers and the step's runtime, as one training run sets them up."""
        world = world or distributed.World()
        G, D = build(config.model)
        memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        G.to(device, memory_format=memory_format)
        D.to(device, memory_format=memory_format)
        G_run = distributed.wrap(G, world, device, config.sync_bn)
        D_run = distributed.wrap(D, world, device, config.sync_bn)
        if config.compile:  # compiled views share the parameters
            G_run, D_run = torch.compile(G_run), torch.compile(D_run)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest conv algorithms once
        adam = dict(lr=config.lr, betas=(config.beta1, config.beta2), weight_decay=config.weight_decay)
        rt = Runtime(device, config.precision, config.channels_last, world.rank, world.size)
        G_ema = average_of(G) if configured_ema_decay(config, world.size) is not None else None
        return cls(G, D, torch.optim.Adam(G.parameters(), **adam), torch.optim.Adam(D.parameters(), **adam),
                   rt, G_run, D_run, G_ema)

    def state_dict(self) -> dict:
        """The checkpoint entries of the networks (see checkpoint.RUN_KEYS)."""
        state = dict(generator=self.G.state_dict(), discriminator=self.D.state_dict(),
                     optimizer_g=self.opt_g.state_dict(), optimizer_d=self.opt_d.state_dict(),
                     amp=self.rt.state_dict())
        if self.G_ema is not None:  # absent without EMA: such a checkpoint is what it always was
            state["generator_ema"] = self.G_ema.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.G.load_state_dict(state["generator"])
        self.D.load_state_dict(state["discriminator"])
        self.opt_g.load_state_dict(state["optimizer_g"])
        self.opt_d.load_state_dict(state["optimizer_d"])
        self.rt.load_state_dict(state.get("amp", {}))
        if self.G_ema is not None:
            self.G_ema.load_state_dict(state["generator_ema"])

    def set_lr(self, lr: float) -> None:
        for group in self.opt_g.param_groups + self.opt_d.param_groups:
            group["lr"] = lr


def labelled(batch) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(images, labels) from a batch of a conditional run's stream; (images, None) from a plain one."""
    return batch if isinstance(batch, tuple) else (batch, None)


def average_of(G: Generator) -> Generator:
    """A copy of G to hold its moving average: no gradients, always in inference mode."""
    return copy.deepcopy(G).requires_grad_(False).eval()


def configured_ema_decay(config: TrainConfig, world_size: int = 1) -> float | None:
    """The average's decay per step before warm-up (None: no EMA). --ema-kimg K is a half-life of K
    thousand images of G: one step trains G on batch_size x world_size of them."""
    if config.ema_kimg is not None:
        return 0.5 ** (config.batch_size * world_size / (config.ema_kimg * 1000))
    return config.ema_decay


def ema_decay(config: TrainConfig, step: int, world_size: int = 1) -> float:
    """The decay of the update after G's update number `step` (0, 1, ...): the configured one, warmed up
    as min(decay, (1 + step) / (10 + step)) (0.1 at the first step, 0.5 at step 8, 0.9 at step 80),
    so that the average soon forgets the random initial G instead of dragging it along for 1/(1 - decay)
    steps."""
    return min(configured_ema_decay(config, world_size), (1 + step) / (10 + step))


@torch.no_grad()
def update_ema(G_ema: Generator, G: Generator, decay: float) -> None:
    """G_ema <- decay * G_ema + (1 - decay) * G, parameter by parameter. BatchNorm's running mean and
    variance are copied from G, not averaged: they are already a moving average (momentum 0.1) of the
    batch statistics G's layers produced, and copying them is what StudioGAN and stylegan2-ada do."""
    for e, g in zip(G_ema.parameters(), G.parameters(), strict=True):
        e.mul_(decay).add_(g, alpha=1 - decay)
    for e, g in zip(G_ema.buffers(), G.buffers(), strict=True):
        e.copy_(g)


STANDING_Z = 2048  # latent vectors whose BN statistics the moving average of G is used with


@torch.no_grad()
def standing_statistics(G: Generator, n: int = STANDING_Z, batch_size: int = 256) -> Generator:
    """Recompute G's BatchNorm running statistics as the plain average over n fixed latent vectors
    (stream "statistics", seed 0; classes cycled for a conditional G) run in training mode: the
    statistics of these weights, in place. For the moving average of G, whose weights no batch ever
    ran through: the trained G's statistics that `update_ema` copies belong to other weights, and
    using them measurably hurt the average's samples (docs in the README, EMA). No random state
    is drawn from; G is left in inference mode."""
    device = next(G.parameters()).device
    with averaged_bn_statistics(G):
        for start in range(0, n, batch_size):
            index = range(start, min(n, start + batch_size))
            labels = G.cycled_labels(index)
            G(G.latent(0, index, device, stream="statistics"), None if labels is None else labels.to(device))
    return G


def train_step(nets: Networks, reals: Iterator[torch.Tensor], noise: torch.Generator,
               config: TrainConfig) -> torch.Tensor:
    """d_steps updates of D, then one of G. Returns [loss_D, loss_G, D(x), D(G(z))], detached.

    The step runs nets.G_run and nets.D_run (DDP-wrapped or compiled views); G's step calls the bare
    D, so that its (absent) weight gradients are not all-reduced.
    """
    G, D, D_frozen, opt_g, opt_d, rt = nets.G_run, nets.D_run, nets.D, nets.opt_g, nets.opt_d, nets.rt
    generator = nets.G
    device = next(generator.parameters()).device
    policy = parse_policy(config.augment)  # DiffAugment: D sees T(x) and T(G(z)), G learns through T
    # (1) D: maximize log D(x) + log(1 - D(G(z)))
    for j in range(config.d_steps):
        real, y_real = labelled(next(reals))  # y: the classes of a conditional run, else None
        real = rt.images(real)
        b = len(real)
        z = rt.latent(generator, b, noise, device)
        y_fake = rt.classes(generator, b, noise, device)
        real = augment(real, policy, noise)
        opt_d.zero_grad(set_to_none=True)
        with rt.autocast():
            with torch.set_grad_enabled(j == config.d_steps - 1):  # keep G's graph for step (2)
                fake = augment(G(z, y_fake), policy, noise)  # one draw of T, seen by D here and by G in (2)
            out_real = D(real, y_real)
            out_fake = D(fake.detach(), y_fake)  # a separate pass: real and fake get their own BN statistics
            loss_d = (F.binary_cross_entropy_with_logits(
                out_real, torch.full_like(out_real, 1.0 - config.label_smoothing))  # one-sided
                + F.binary_cross_entropy_with_logits(out_fake, torch.zeros_like(out_fake)))
        rt.scaler_d.scale(loss_d).backward()
        rt.scaler_d.step(opt_d)
        rt.scaler_d.update()
    # (2) G: maximize log D(G(z)), reusing this step's G(z); D's weights get no gradient
    D_frozen.requires_grad_(False)
    try:
        opt_g.zero_grad(set_to_none=True)
        with rt.autocast():
            out = D_frozen(fake, y_fake)
            loss_g = F.binary_cross_entropy_with_logits(out, torch.ones_like(out))
        rt.scaler_g.scale(loss_g).backward()
        rt.scaler_g.step(opt_g)
        rt.scaler_g.update()
    finally:  # D trains again whatever happened in G's step
        D_frozen.requires_grad_(True)
    with torch.no_grad():
        return torch.stack([loss_d, loss_g, torch.sigmoid(out_real).mean(),
                            torch.sigmoid(out_fake).mean()])

