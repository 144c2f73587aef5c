"""The random streams of a run, each in a seed space of its own.

A stream is named (seed, stream, index): sample z number `index` of `seed` ("sample"), the training
noise ("noise"), the data order of epoch `index` ("order"), the evaluator's reference images and z
("reference", "eval"), and the z whose BatchNorm statistics the moving average of G gets
("statistics"). Its generator is seeded with a 64-bit hash of the name, so no two streams,
seeds or indices share a generator (seed + 1 and index + 1 no longer collide).
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager

import torch

STREAMS = ("sample", "noise", "order", "reference", "eval", "statistics")


def stream_seed(seed: int, stream: str, index: int = 0) -> int:
    """The 64-bit generator seed of stream (seed, stream, index)."""
    if stream not in STREAMS:
        raise ValueError(f"unknown random stream {stream!r}: one of {', '.join(STREAMS)}")
    key = f"dcgan:{stream}:{int(seed)}:{int(index)}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")


def generator(seed: int, stream: str, index: int = 0) -> torch.Generator:
    """A fresh CPU generator for stream (seed, stream, index)."""
    return torch.Generator().manual_seed(stream_seed(seed, stream, index))


@contextmanager
def global_seed(seed: int):
    """torch's global CPU generator seeded with `seed` inside the block and restored after it: for
    code that draws from it and takes no generator (weight init, dropout, torchmetrics' KID
    subsets), so that a library call never changes its caller's random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
