"""One GAN step (paper §4), and the runtime it runs in: precision, loss scaling, memory layout.

  D maximizes log D(x) + log(1 - D(G(z)))   (real and fake in separate forward passes)
  G maximizes log D(G(z))                   (the non-saturating loss)
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from dcgan.augment import augment, parse_policy
from dcgan.config import TrainConfig
from dcgan.data import to_float
from dcgan.models import Discriminator, Generator


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
               config: TrainConfig, rt: Runtime | None = None,
               D_frozen: Discriminator | None = None) -> torch.Tensor:
    """d_steps updates of D, then one of G. Returns [loss_D, loss_G, D(x), D(G(z))], detached.

    G and D may be DDP-wrapped or compiled; D_frozen is the bare D used in the G step, so that its
    (absent) weight gradients are not all-reduced.
    """
    device = next(G.parameters()).device
    rt = rt or Runtime(device)
    D_frozen = D_frozen or D
    generator = _bare(G)
    policy = parse_policy(config.augment)  # DiffAugment: D sees T(x) and T(G(z)), G learns through T
    # (1) D: maximize log D(x) + log(1 - D(G(z)))
    for j in range(config.d_steps):
        real = rt.images(next(reals))
        b = len(real)
        z = rt.latent(generator, b, noise, device)
        real = augment(real, policy, noise)
        opt_d.zero_grad(set_to_none=True)
        with rt.autocast():
            with torch.set_grad_enabled(j == config.d_steps - 1):  # keep G's graph for step (2)
                fake = augment(G(z), policy, noise)  # one draw of T, seen by D here and by G in (2)
            out_real = D(real)
            out_fake = D(fake.detach())  # a separate pass: real and fake get their own BN statistics
            loss_d = (F.binary_cross_entropy_with_logits(
                out_real, torch.full_like(out_real, 1.0 - config.label_smoothing))  # one-sided
                + F.binary_cross_entropy_with_logits(out_fake, torch.zeros_like(out_fake)))
        rt.scaler_d.scale(loss_d).backward()
        rt.scaler_d.step(opt_d)
        rt.scaler_d.update()
    # (2) G: maximize log D(G(z)), reusing this step's G(z); D's weights get no gradient
    D_frozen.requires_grad_(False)
    opt_g.zero_grad(set_to_none=True)
    with rt.autocast():
        out = D_frozen(fake)
        loss_g = F.binary_cross_entropy_with_logits(out, torch.ones_like(out))
    rt.scaler_g.scale(loss_g).backward()
    rt.scaler_g.step(opt_g)
    rt.scaler_g.update()
    D_frozen.requires_grad_(True)
    with torch.no_grad():
        return torch.stack([loss_d, loss_g, torch.sigmoid(out_real).mean(),
                            torch.sigmoid(out_fake).mean()])


def _bare(module):
    """The Generator inside DDP and torch.compile wrappers."""
    while not isinstance(module, Generator):
        module = getattr(module, "module", None) or module._orig_mod
    return module
