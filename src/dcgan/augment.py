"""Differentiable augmentation for small datasets (DiffAugment, Zhao et al. 2020).

With few real images D memorises them and its gradients stop teaching G. DiffAugment shows D only
augmented images, real and fake alike, and keeps every transform differentiable, so G learns
through it: D(T(x)) against D(T(G(z))), with T drawn afresh per image and per step. The policies
are the paper's:

- color: brightness + U(-0.5, 0.5), saturation x U(0, 2), contrast x U(0.5, 1.5), per image;
- translation: shift by up to 1/8 of the side in x and y, filling with zeros (grey in [-1, 1]);
- cutout: zero a square of half the side at a random position (it may cross the border).

Images are floats in [-1, 1], (N, C, H, W). All randomness comes from the `generator` given, so a
step's augmentation is a function of that generator's state.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _uniform(n: int, x: torch.Tensor, generator: torch.Generator, low: float = 0.0,
             high: float = 1.0) -> torch.Tensor:
    """(n, 1, 1, 1) draws from U(low, high), made on the CPU from `generator`, on x's device."""
    u = torch.rand(n, 1, 1, 1, generator=generator)
    return (low + (high - low) * u).to(device=x.device, dtype=x.dtype)


def color(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    n = len(x)
    x = x + _uniform(n, x, generator, -0.5, 0.5)  # brightness
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * _uniform(n, x, generator, 0.0, 2.0) + mean  # saturation (a no-op on grey)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * _uniform(n, x, generator, 0.5, 1.5) + mean  # contrast


def translation(x: torch.Tensor, generator: torch.Generator, ratio: float = 0.125) -> torch.Tensor:
    """Each image shifted by an integer (dy, dx) in [-ratio*S, ratio*S], zeros shifted in."""
    n, _, h, w = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sy, sy + 1, (n,), generator=generator).to(x.device)
    dx = torch.randint(-sx, sx + 1, (n,), generator=generator).to(x.device)
    rows = (torch.arange(h, device=x.device)[None, :] - dy[:, None]).clamp(-1, h)  # source row of each row
    cols = (torch.arange(w, device=x.device)[None, :] - dx[:, None]).clamp(-1, w)
    padded = F.pad(x, (1, 1, 1, 1))  # index -1 and h land on the zero border
    idx_rows = (rows + 1)[:, None, :, None].expand(-1, x.shape[1], -1, w + 2)
    out = padded.gather(2, idx_rows)
    idx_cols = (cols + 1)[:, None, None, :].expand(-1, x.shape[1], h, -1)
    return out.gather(3, idx_cols)


def cutout(x: torch.Tensor, generator: torch.Generator, ratio: float = 0.5) -> torch.Tensor:
    """Each image with a zeroed square of side ratio*S centred at a random pixel."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + (1 - ch % 2), (n,), generator=generator).to(x.device)
    cx = torch.randint(0, w + (1 - cw % 2), (n,), generator=generator).to(x.device)
    ys = torch.arange(h, device=x.device)[None, :] - (cy[:, None] - ch // 2)
    xs = torch.arange(w, device=x.device)[None, :] - (cx[:, None] - cw // 2)
    inside = ((ys >= 0) & (ys < ch))[:, :, None] & ((xs >= 0) & (xs < cw))[:, None, :]
    return x * (~inside)[:, None].to(x.dtype)


TRANSFORMS = {"color": color, "translation": translation, "cutout": cutout}  # config.AUGMENTATIONS names them


def augment(x: torch.Tensor, policy: tuple[str, ...], generator: torch.Generator) -> torch.Tensor:
    """x with each transform of `policy` applied in order; x itself if the policy is empty."""
    for name in policy:
        x = TRANSFORMS[name](x, generator)
    return x
