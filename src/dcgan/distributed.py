"""Multi-process training on torch.distributed, as launched by torchrun.

One process per device; NCCL on GPUs, gloo on CPU. The data is sharded per rank, the global batch
is the per-rank batch times the world size, and rank 0 alone writes logs, grids and checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from dcgan.errors import DCGANError


@dataclass
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def setup(device_name: str) -> tuple[World, str]:
    """Join the process group torchrun describes in the environment (or none). Returns the world
    and the device this rank uses: cuda:LOCAL_RANK under torchrun with GPUs."""
    size = _env_int("WORLD_SIZE", "1", 1)
    if size == 1:
        return World(), device_name
    rank = _env_int("RANK", None, 0, size - 1)
    world = World(rank, size, _env_int("LOCAL_RANK", "0", 0, size - 1))
    use_cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    if use_cuda:
        if world.local_rank >= torch.cuda.device_count():
            raise DCGANError(f"local rank {world.local_rank} has no GPU ({torch.cuda.device_count()} "
                             "visible): use --nproc_per_node no larger than the number of GPUs")
        torch.cuda.set_device(world.local_rank)
        device_name = f"cuda:{world.local_rank}"
    elif device_name == "auto":
        device_name = "cpu"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return world, device_name


def _env_int(name: str, default: str | None, low: int, high: int = 2**16) -> int:
    """An integer from torchrun's environment, in [low, high]."""
    text = os.environ.get(name, default)
    try:
        value = int(text)
    except (TypeError, ValueError):
        value = None
    if value is None or not low <= value <= high:
        raise DCGANError(f"environment variable {name} must be an integer from {low} to {high}, got {text!r} "
                         "(it is set by torchrun; unset it for a single process)")
    return value


def teardown(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def wrap(module: nn.Module, world: World, device: torch.device, sync_bn: bool) -> nn.Module:
    """DDP without buffer broadcasts: D runs twice (real, fake) before its backward, and each rank
    keeps its own BatchNorm statistics unless sync_bn."""
    if not world.distributed:
        return module
    if sync_bn:
        module = (nn.SyncBatchNorm.convert_sync_batchnorm(module) if device.type == "cuda"
                  else CPUSyncBatchNorm.convert(module))
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids, broadcast_buffers=False)


class CPUSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics span every rank, for gloo on CPU (torch's SyncBatchNorm
    is GPU-only). The all-reduce is differentiable, so gradients see the global batch too."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() not in (2, 4):
            raise ValueError(f"expected 2D or 4D input, got {x.dim()}D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        dims = [0, *range(2, x.dim())]
        count = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype, device=x.device)
        stats = all_reduce(torch.cat([x.sum(dims), (x * x).sum(dims), count]))
        c = x.shape[1]
        n = stats[-1]
        mean = stats[:c] / n
        var = stats[c:2 * c] / n - mean * mean  # biased, as BatchNorm normalizes with
        with torch.no_grad():
            m = self.momentum
            self.running_mean.mul_(1 - m).add_(m * mean.detach())
            self.running_var.mul_(1 - m).add_(m * var.detach() * n / (n - 1))
            self.num_batches_tracked += 1
        shape = (1, c) + (1,) * (x.dim() - 2)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        return y * self.weight.view(shape) + self.bias.view(shape)

    @classmethod
    def convert(cls, module: nn.Module) -> nn.Module:
        for name, child in module.named_children():
            if isinstance(child, nn.modules.batchnorm._BatchNorm):
                sync = cls(child.num_features, child.eps, child.momentum)
                sync.load_state_dict(child.state_dict())
                setattr(module, name, sync.to(child.weight.device))
            else:
                cls.convert(child)
        return module


def all_mean(t: torch.Tensor, world: World) -> torch.Tensor:
    """The mean of a tensor over ranks (every rank gets it: decisions stay in step)."""
    if world.distributed:
        t = t.clone()
        dist.all_reduce(t)
        t /= world.size
    return t


def any_rank(flag: bool, world: World, device: torch.device) -> bool:
    """True on every rank when it is true on any (a stop signal may reach ranks at different steps)."""
    if not world.distributed:
        return flag
    t = torch.tensor([float(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def pick_device(name: str | torch.device) -> torch.device:
    if isinstance(name, torch.device):
        return name
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
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    if device.type == "cuda" and device.index is not None and device.index >= gpus:
        raise DCGANError(f"device {name!r} requested but only {gpus} GPU(s) are visible: "
                         f"use cuda:0 .. cuda:{gpus - 1}")
    mps = getattr(torch.backends, "mps", None)
    if device.type == "mps" and not (mps and mps.is_available()):
        raise DCGANError(f"device {name!r} requested but Apple's MPS is not available here; use --device cpu")
    if device.type not in ("cpu", "cuda", "mps"):
        raise DCGANError(f"unknown device {name!r}: use cpu, cuda, cuda:N, mps or auto")
    return device
