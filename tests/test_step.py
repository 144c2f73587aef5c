"""The training step computes the same updates as a plain, straightforward GAN loop."""

import copy

import torch
import torch.nn.functional as F

from dcgan.config import resolve
from dcgan.data import to_float
from dcgan.models import build
from dcgan.train import train_step


def plain_loop(G, D, opt_g, opt_d, reals, zs):
    """The textbook loop: new G forward for each use, D's weight gradients computed in the G step."""
    for real, z in zip(reals, zs, strict=True):
        x = to_float(real)
        opt_d.zero_grad()
        out_real, out_fake = D(x), D(G(z).detach())
        loss_d = F.binary_cross_entropy_with_logits(out_real, torch.ones_like(out_real)) + \
            F.binary_cross_entropy_with_logits(out_fake, torch.zeros_like(out_fake))
        loss_d.backward()
        opt_d.step()
        opt_g.zero_grad()
        # G's forward again with the same z and the BN statistics G saw in the D step
        out = D(G(z))
        F.binary_cross_entropy_with_logits(out, torch.ones_like(out)).backward()
        opt_g.step()


def test_train_step_matches_plain_loop():
    config = resolve({"image_size": 16, "channels": 1, "ngf": 8, "ndf": 8, "nz": 8, "batch_size": 8})
    torch.manual_seed(0)
    G, D = build(config.model)
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    G0, D0 = copy.deepcopy(G), copy.deepcopy(D)
    adam = dict(lr=config.lr, betas=(config.beta1, config.beta2))
    opts = [torch.optim.Adam(m.parameters(), **adam) for m in (G, D, G2, D2)]
    reals = [torch.randint(0, 256, (8, 1, 16, 16), dtype=torch.uint8) for _ in range(3)]
    noise = torch.Generator().manual_seed(5)
    # the z train_step will draw, step by step, from the same generator state
    replay = torch.Generator().manual_seed(5)
    zs = [G.sample_latent(8, replay) for _ in reals]
    it = iter(reals)
    for _ in reals:
        train_step(G, D, opts[0], opts[1], it, noise, config)
    plain_loop(G2, D2, opts[2], opts[3], reals, zs)
    # the second G forward in the plain loop updated G's BN running stats once more: compare weights
    for a, b in [(G, G2), (D, D2)]:
        for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters(), strict=True):
            assert torch.allclose(p, q, atol=1e-6), name
    for a, before in [(G, G0), (D, D0)]:  # both networks were trained
        assert any(not torch.equal(p, q) for p, q in zip(a.parameters(), before.parameters(), strict=True))
