"""DCGAN generator and discriminator for any square image size 2^k (paper §3).

The architecture guidelines hold for every configuration:
- no pooling: D downsamples with strided convolutions, G upsamples with transposed ones;
- BatchNorm everywhere except G's output layer and D's input layer;
- no fully connected hidden layers: G projects z to a 4x4 map, D maps its 4x4 map to one logit;
- G uses ReLU and a Tanh output, D uses LeakyReLU(0.2);
- weights ~ N(0, 0.02), BN gain ~ N(1, 0.02), and no conv bias where BatchNorm follows.

A class-conditional pair (ModelConfig.classes, `dcgan train --conditional`) keeps both conv stacks:
G reads [z, one_hot(y)] (Mirza & Osindero 2014), D adds a projection term (Miyato & Koyama 2018).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from dcgan import seeds
from dcgan.config import ModelConfig

__all__ = ["Discriminator", "Generator", "build"]  # public: dcgan.NAME


@contextmanager
def eval_mode(net: nn.Module):
    """`net` in eval mode (BN in inference mode) for the duration; its previous mode restored after."""
    was_training = net.training
    net.eval()
    try:
        yield net
    finally:
        net.train(was_training)


@contextmanager
def averaged_bn_statistics(net: nn.Module):
    """Inside: `net` in training mode with its BatchNorm running statistics reset to accumulate the
    plain (cumulative) average over every batch run through it; after: inference mode, the momenta
    as they were. For statistics of these exact weights (D's features, the moving average of G)."""
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches seen
    net.train()
    try:
        yield net
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        net.eval()


def _padding(k: int) -> tuple[int, int]:
    """(padding, output_padding) so that a stride-2 (transposed) conv exactly halves (doubles)."""
    p = (k - 1) // 2
    return p, 2 + 2 * p - k


def _up(cin: int, cout: int, k: int, stride: int, bn: bool) -> nn.Sequential:
    p, op = _padding(k)
    op = op if stride == 2 else 0
    conv = nn.ConvTranspose2d(cin, cout, k, stride, p, output_padding=op, bias=not bn)
    if bn:
        return nn.Sequential(conv, nn.BatchNorm2d(cout), nn.ReLU(inplace=True))
    return nn.Sequential(conv, nn.Tanh())


def _down(cin: int, cout: int, k: int, stride: int, bn: bool) -> nn.Sequential:
    p, _ = _padding(k)
    conv = nn.Conv2d(cin, cout, k, stride, p, bias=not bn)
    layers = [conv, nn.BatchNorm2d(cout)] if bn else [conv]
    return nn.Sequential(*layers, nn.LeakyReLU(0.2, inplace=True))


def init_weights(module: nn.Module) -> None:
    """Paper §4: all weights ~ N(0, 0.02); BN gain ~ N(1, 0.02), BN bias 0; biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class ProjectAndReshape(nn.Module):
    """z (N, nz) -> (N, c, 4, 4): G's first layer, a matrix multiply of z (paper §3)."""

    def __init__(self, nz: int, c: int, kind: str):
        super().__init__()
        self.c = c
        if kind == "conv":  # Torch lineage: 4x4 transposed conv from a 1x1 map
            self.project = nn.ConvTranspose2d(nz, c, 4, 1, 0, bias=False)
            self.bn = nn.BatchNorm2d(c)
        else:  # paper's code: linear layer, BatchNorm over all c*4*4 units
            self.project = nn.Linear(nz, c * 16, bias=False)
            self.bn = nn.BatchNorm1d(c * 16)
        self.act = nn.ReLU(inplace=True)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if isinstance(self.project, nn.Linear):
            return self.act(self.bn(self.project(z))).view(-1, self.c, 4, 4)
        return self.act(self.bn(self.project(z.view(*z.shape, 1, 1))))


def check_labels(labels: torch.Tensor, k: int) -> torch.Tensor:
    """Class indices (N,) as int64 (their range is checked by one_hot and the embedding, without a
    device sync here)."""
    if labels.dtype.is_floating_point or labels.ndim != 1:
        raise ValueError(f"labels must be integer class indices 0..{k - 1} of shape (N,)")
    return labels.long()


class Generator(nn.Module):
    """z -> image in [-1, 1] of shape (channels, image_size, image_size). A conditional G (config.classes)
    takes class indices too: G(z, labels); without them it draws class `class_index` (0 unless set)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.class_index = 0  # the class G(z) draws when no labels are given (conditional G)
        c, k, n = config, config.kernel_size, config.levels
        width = [c.ngf * 2 ** (n - 1 - i) for i in range(n)]  # channels entering level i
        # a conditional G reads [z, one_hot(y)]: nz + K inputs
        self.project_and_reshape = ProjectAndReshape(c.nz + c.num_classes, width[0], c.projection)
        # state size. width[0] x 4 x 4, doubling in size and halving in channels per level
        blocks = []
        for i in range(n):
            last = i == n - 1
            cout = c.channels if last else width[i + 1]
            if c.alternate_strides:  # 2x up at constant width, then a stride-1 layer changes width
                blocks += [_up(width[i], width[i], k, 2, True), _up(width[i], cout, k, 1, not last)]
            else:
                blocks.append(_up(width[i], cout, k, 2, not last))
        # state size. channels x image_size x image_size, Tanh output, no BN
        self.blocks = nn.ModuleList(blocks)
        init_weights(self)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None, return_features: bool = False):
        k = self.config.num_classes
        if k:  # (N, nz) -> (N, nz + K)
            if labels is None:
                labels = torch.full((len(z),), self.class_index, dtype=torch.long, device=z.device)
            z = torch.cat([z, F.one_hot(check_labels(labels, k).to(z.device), k).to(z.dtype)], 1)
        elif labels is not None:
            raise ValueError("an unconditional generator takes no labels")
        h = self.project_and_reshape(z)
        feature_maps = [h]
        for block in self.blocks:
            h = block(h)
            feature_maps.append(h)
        return (h, feature_maps) if return_features else h

    def sample_latent(
        self, n: int, generator: torch.Generator | None = None, device=None
    ) -> torch.Tensor:
        """n draws from the prior of z, on CPU from `generator`, then moved to `device`."""
        if self.config.latent == "uniform":
            z = torch.rand(n, self.config.nz, generator=generator) * 2 - 1
        else:
            z = torch.randn(n, self.config.nz, generator=generator)
        return z.to(device or next(self.parameters()).device)

    def latent(self, seed: int, indices, device=None, stream: str = "sample") -> torch.Tensor:
        """z number i of `seed` for each i in `indices`: the same vector however many are drawn,
        so a sample is named by (seed, index). Each z has a generator of its own (dcgan.seeds)."""
        return torch.cat([self.sample_latent(1, seeds.generator(seed, stream, int(i)), device)
                          for i in indices])

    def cycled_labels(self, indices) -> torch.Tensor | None:
        """Class i % K for sample number i (every class equally often); None for an unconditional G."""
        k = self.config.num_classes
        return torch.as_tensor(list(indices), dtype=torch.long) % k if k else None

    @torch.no_grad()
    def generate(self, z: torch.Tensor, batch_size: int = 256,
                 labels: torch.Tensor | None = None) -> torch.Tensor:
        """G(z) in [-1, 1] on G's device, batched, with BN in inference mode (the mode is restored after).
        `labels`: each z's class (conditional G; default: class_index)."""
        device = next(self.parameters()).device
        z = z.to(device)
        ys = [None] * len(z.split(batch_size)) if labels is None else labels.to(device).split(batch_size)
        with eval_mode(self):
            return torch.cat([self(chunk) if y is None else self(chunk, y)  # G(z) stays G(z) when unlabelled
                              for chunk, y in zip(z.split(batch_size), ys, strict=True)])

    def sample(self, n: int, seed: int | None = None, batch_size: int = 256, start: int = 0,
               labels: torch.Tensor | None = None) -> torch.Tensor:
        """n images in [-1, 1] on the model's device, BN in inference mode. With a seed, image i
        is G(latent(seed, [i])) whatever n is; they are images start .. start + n - 1."""
        z = self.latent(seed, range(start, start + n)) if seed is not None else self.sample_latent(n)
        return self.generate(z, batch_size, labels)


class Discriminator(nn.Module):
    """image -> one logit per image (no sigmoid: the loss is BCE with logits)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        c, k, n = config, config.kernel_size, config.levels
        width = [c.ndf * 2**i for i in range(n)]  # channels of level i
        blocks = []
        cin = c.channels
        for i in range(n):
            if c.alternate_strides:  # stride-1 conv changes width, stride-2 conv halves the size
                blocks += [_down(cin, width[i], k, 1, i > 0), _down(width[i], width[i], k, 2, True)]
            else:
                blocks.append(_down(cin, width[i], k, 2, i > 0))  # no BN on D's input layer
            cin = width[i]
        # state size. width[-1] x 4 x 4
        self.blocks = nn.ModuleList(blocks)
        if c.projection == "conv":  # Torch lineage: a 4x4 valid conv down to 1x1
            self.head = nn.Sequential(nn.Conv2d(cin, 1, 4, 1, 0), nn.Flatten(0))
        else:  # paper's code: flatten, linear to one logit
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(cin * 16, 1), nn.Flatten(0))
        if c.num_classes:
            # Projection discriminator (Miyato & Koyama 2018): logit = head(phi(x)) + <embed(y), phi(x)>,
            # phi(x) the (cin*4*4) features the head reads. Chosen over label maps concatenated to the
            # input: better class fidelity and steadier training, and the conv stack (D's features for
            # probe, features and projection) stays exactly the unconditional one.
            self.embed = nn.Embedding(c.num_classes, cin * 16)
        init_weights(self)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None, return_features: bool = False):
        feature_maps = []
        h = x
        for block in self.blocks:
            h = block(h)
            feature_maps.append(h)
        logits = self.head(h)
        if labels is not None:  # the projection term; without labels, the unconditional head alone
            if not self.config.num_classes:
                raise ValueError("an unconditional discriminator takes no labels")
            y = check_labels(labels, self.config.num_classes).to(h.device)
            logits = logits + (self.embed(y) * h.flatten(1)).sum(1)
        return (logits, feature_maps) if return_features else logits


def build(config: ModelConfig) -> tuple[Generator, Discriminator]:
    """The one place a network pair is made from a config."""
    return Generator(config), Discriminator(config)
