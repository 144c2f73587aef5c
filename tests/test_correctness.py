"""Correctness and run safety: random streams, finite checkpoints, the global RNG, bounded dedup,
the run-directory lock, guarded data on resume, atomic links, pure helpers."""

import subprocess
import sys

import torch

from dcgan.models import Generator
from dcgan.train import configure, train

TINY = dict(data="digits", image_size=16, ngf=8, ndf=8, nz=16, batch_size=16, tensorboard=False,
            log_every=1, sample_every=1000, checkpoint_every=1000, n_samples=16)


def tiny(tmp_path, name="run", **kw):
    return configure({**TINY, "out": str(tmp_path / name), **kw})


def cli(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dcgan", *map(str, args)], capture_output=True,
                          text=True, timeout=300, **kw)


# ---- 1. every random stream in its own seed space ---------------------------------------------

def test_sample_training_noise_and_data_order_streams_never_overlap(tmp_path, monkeypatch):
    draws = []  # (n, generator seed, z) of every latent draw
    orders = []  # generator seed of every permutation drawn
    sample_latent, randperm = Generator.sample_latent, torch.randperm

    def recording_latent(self, n, generator=None, device=None):
        z = sample_latent(self, n, generator, device)
        draws.append((n, generator.initial_seed(), z.cpu()))
        return z

    def recording_randperm(*args, generator=None, **kw):
        orders.append(generator.initial_seed())
        return randperm(*args, generator=generator, **kw)

    monkeypatch.setattr(Generator, "sample_latent", recording_latent)
    monkeypatch.setattr(torch, "randperm", recording_randperm)
    sample_seeds, stream_seeds = set(), set()
    for seed in range(4):
        for prior in ("uniform", "normal"):
            draws.clear()
            train(tiny(tmp_path, f"{seed}-{prior}", steps=5, seed=seed, latent=prior))
            training = torch.cat([z for n, _, z in draws if n == TINY["batch_size"]])
            assert len(training) == 5 * TINY["batch_size"]
            g = Generator(tiny(tmp_path, "x", seed=seed, latent=prior).model)
            draws.clear()
            grid = g.latent(seed, range(TINY["n_samples"]))
            sample_seeds |= {s for _, s, _ in draws}
            equal = (grid[:, None, :] == training[None, :, :]).all(-1)
            assert not equal.any(), (seed, prior, equal.nonzero()[:3].tolist())
    for seed in range(4):  # the generator seeds of the training noise
        draws.clear()
        train(tiny(tmp_path, f"noise-{seed}", steps=1, seed=seed))
        stream_seeds |= {s for n, s, _ in draws if n == TINY["batch_size"]}
    assert len(stream_seeds) == 4 and len(sample_seeds) == 4 * TINY["n_samples"]
    assert orders and not set(orders) & (sample_seeds | stream_seeds)
    assert not stream_seeds & sample_seeds
