"""Health of a running GAN: divergence, vanishing gradients, mode collapse (paper §7)."""

from __future__ import annotations

import torch

from dcgan.config import TrainConfig
from dcgan.errors import DCGANError


class Diverged(DCGANError):
    """A non-finite loss."""


def diversity(images: torch.Tensor) -> float:
    """Mean pairwise L2 distance between images: near 0 when samples collapse to one point."""
    flat = images.detach().float().flatten(1)
    return float(torch.pdist(flat).mean()) if len(flat) > 1 else 0.0


class Health:
    """Warnings for the two quiet failures of GAN training (paper §7)."""

    def __init__(self, config: TrainConfig, real_diversity: float):
        self.config, self.real_diversity = config, real_diversity
        self.diversity: float | None = None  # of the latest fixed-noise samples, relative to real
        self.low_since: int | None = None  # first logged step of the current stretch of tiny loss_D
        self.collapsed = False

    def check_diversity(self, step: int, samples: torch.Tensor) -> None:
        self.diversity = diversity(samples) / max(self.real_diversity, 1e-12)
        self.collapsed = step >= self.config.collapse_after and \
            self.diversity < self.config.collapse_threshold

    def check_losses(self, row: dict) -> list[str]:
        warnings = []
        c = self.config
        if row["loss_D"] < c.vanishing_loss:
            self.low_since = row["step"] if self.low_since is None else self.low_since
            if row["step"] - self.low_since >= c.vanishing_patience:
                warnings.append(f"loss_D has stayed below {c.vanishing_loss} for "
                                f"{row['step'] - self.low_since} steps: D wins and G's gradient is "
                                "vanishing (try --label-smoothing 0.1 or a smaller D)")
        else:
            self.low_since = None
        if self.collapsed:
            warnings.append(f"sample diversity is {self.diversity:.3f} of the real data's (below "
                            f"{c.collapse_threshold}): the generator may have collapsed to a few modes "
                            "(on a few thousand images or fewer, try --augment translation,cutout)")
        return warnings
