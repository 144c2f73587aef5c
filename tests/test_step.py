"""The training step against an independent formulation: the pytorch/examples DCGAN loop (sigmoid +
nn.BCELoss, real label 1 - s), parameters and BN running statistics alike."""

import copy

import pytest
import torch
from torch import nn

from dcgan import checkpoint
from dcgan.config import resolve
from dcgan.data import to_float
from dcgan.models import build
from dcgan.step import Networks, Runtime, train_step
from dcgan.train import configure, train


def reference_loop(G, D, opt_g, opt_d, reals, noise, d_steps, smoothing):
    """pytorch/examples dcgan/main.py, k D updates per G update: D's output through a sigmoid into
    nn.BCELoss; the G update reuses the last D step's fake, through the updated D."""
    criterion = nn.BCELoss()
    it = iter(reals)
    for _ in range(len(reals) // d_steps):
        for _ in range(d_steps):
            real = to_float(next(it))
            b = len(real)
            D.zero_grad()
            label = torch.full((b,), 1.0 - smoothing)
            err_real = criterion(torch.sigmoid(D(real)).view(-1), label)
            err_real.backward()
            fake = G(G.sample_latent(b, noise))
            label = torch.full((b,), 0.0)
            err_fake = criterion(torch.sigmoid(D(fake.detach())).view(-1), label)
            err_fake.backward()
            opt_d.step()
        G.zero_grad()
        label = torch.full((b,), 1.0)
        err_g = criterion(torch.sigmoid(D(fake)).view(-1), label)
        err_g.backward()
        opt_g.step()
        D.zero_grad()  # the G step left gradients on D's weights; they are never applied


def state(net) -> dict:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


@pytest.mark.parametrize("channels_last,d_steps,smoothing", [(False, 1, 0.0), (True, 1, 0.0), (False, 2, 0.0),
                                                              (False, 1, 0.1), (True, 2, 0.1)])
def test_train_step_matches_the_reference_loop(channels_last, d_steps, smoothing):
    config = resolve({"image_size": 16, "channels": 1, "ngf": 8, "ndf": 8, "nz": 8, "batch_size": 8,
                      "d_steps": d_steps, "label_smoothing": smoothing})
    torch.manual_seed(0)
    G, D = build(config.model)
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    before = {"G": state(G), "D": state(D)}
    if channels_last:  # the fast path's layout; the reference stays contiguous
        G.to(memory_format=torch.channels_last)
        D.to(memory_format=torch.channels_last)
    # plain SGD: each update is proportional to the gradient, so a formulation error shows at full size
    opts = [torch.optim.SGD(m.parameters(), lr=0.05) for m in (G, D, G2, D2)]
    steps = 3
    reals = [torch.randint(0, 256, (8, 1, 16, 16), dtype=torch.uint8) for _ in range(steps * d_steps)]
    it = iter(reals)
    noise = torch.Generator().manual_seed(5)
    rt = Runtime(torch.device("cpu"), channels_last=channels_last)
    for _ in range(steps):
        train_step(Networks(G, D, opts[0], opts[1], rt), it, noise, config)
    reference_loop(G2, D2, opts[2], opts[3], reals, torch.Generator().manual_seed(5), d_steps, smoothing)
    for name, ours, ref in [("G", G, G2), ("D", D, D2)]:
        a, b = state(ours), state(ref)
        assert a.keys() == b.keys()
        for k in a:  # weights and BN running means, variances and batch counts
            moved = (b[k].double() - before[name][k].double()).abs().max()
            assert torch.allclose(a[k].double(), b[k].double(), rtol=0, atol=2e-6), (name, k)
            if not k.endswith("num_batches_tracked"):
                assert moved > 2e-4, (name, k)  # the tolerance is far below the change being compared
            else:
                assert int(a[k]) == int(b[k]) > 0


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
