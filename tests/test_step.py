"""The training step computes the same updates as a plain, straightforward GAN loop."""

import copy

import pytest
import torch
import torch.nn.functional as F

from dcgan import checkpoint
from dcgan.config import resolve
from dcgan.data import to_float
from dcgan.models import build
from dcgan.step import Runtime, train_step
from dcgan.train import configure, train


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


@pytest.mark.parametrize("channels_last", [False, True])
def test_train_step_matches_plain_loop(channels_last):
    config = resolve({"image_size": 16, "channels": 1, "ngf": 8, "ndf": 8, "nz": 8, "batch_size": 8})
    torch.manual_seed(0)
    G, D = build(config.model)
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    if channels_last:  # the fast path's layout; the plain loop stays contiguous
        G.to(memory_format=torch.channels_last)
        D.to(memory_format=torch.channels_last)
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
        train_step(G, D, opts[0], opts[1], it, noise, config, Runtime(torch.device("cpu"),
                                                                          channels_last=channels_last))
    plain_loop(G2, D2, opts[2], opts[3], reals, zs)
    # the second G forward in the plain loop updated G's BN running stats once more: compare weights
    for a, b in [(G, G2), (D, D2)]:
        for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters(), strict=True):
            assert torch.allclose(p, q, atol=1e-5), name
    for a, before in [(G, G0), (D, D0)]:  # both networks were trained
        assert any(not torch.equal(p, q) for p, q in zip(a.parameters(), before.parameters(), strict=True))


TINY = dict(data="digits", image_size=16, ngf=8, ndf=8, nz=16, batch_size=32, tensorboard=False,
            log_every=1, sample_every=100, checkpoint_every=2)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_and_resumes_exactly(tmp_path, precision):
    """Autocast (and, for fp16, one loss scaler per network) on CPU: the logic GPUs run."""
    straight = train(configure({**TINY, "precision": precision, "steps": 4, "out": str(tmp_path / "a")}))
    half = train(configure({**TINY, "precision": precision, "steps": 2, "out": str(tmp_path / "b")}))
    resumed = train(configure({"steps": 4}, resume=half), resume=True)
    a, b = checkpoint.load(straight), checkpoint.load(resumed)
    assert all(torch.isfinite(v).all() for v in a["generator"].values())
    assert all(torch.equal(a["generator"][k], b["generator"][k]) for k in a["generator"])
    if precision == "fp16":  # the scalers' state travels with the checkpoint
        assert a["amp"]["scaler_d"]["scale"] > 0 and a["amp"]["scaler_g"]["_growth_tracker"] >= 0
    init = build(configure(TINY).model)[0].state_dict()
    assert not torch.equal(a["generator"]["project_and_reshape.project.weight"],
                           init["project_and_reshape.project.weight"])


@pytest.mark.slow
def test_compiled_networks_train(tmp_path):
    run = train(configure({**TINY, "compile": True, "steps": 2, "out": str(tmp_path / "c")}))
    assert checkpoint.load(run)["step"] == 2
