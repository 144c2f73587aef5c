"""Every file a report command writes goes through one atomic write: a write that fails midway
(disk full, a crash before the rename) leaves the previous files byte-identical and no temp file."""

import os

import pytest
import torch

from dcgan import checkpoint
from dcgan.directions import directions_report
from dcgan.errors import DCGANError
from dcgan.latent import walk_report
from dcgan.models import Generator, ModelConfig
from dcgan.visualize import save_individual


@pytest.fixture
def source(tmp_path):
    """An exported tiny generator: the G-only commands accept it."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    config = ModelConfig(image_size=16, channels=1, nz=8, ngf=8, ndf=8)
    path = tmp_path / "g.safetensors"
    import json

    save_file(Generator(config).state_dict(), str(path),
              metadata={"format": "dcgan-generator", "model": json.dumps(config.to_dict()), "step": "0"})
    return path


def failing_rename(monkeypatch):
    def replace(src, dst):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(checkpoint.os, "replace", replace)


@pytest.mark.parametrize("command, files", [
    (lambda src, out: walk_report(src, out=out, walks=1, points=2, steps=2), ["walk.png", "walk.json"]),
    (lambda src, out: directions_report(src, out=out, k=1, samples=1, columns=2),
     ["directions.json", "directions.png", "direction_00.json", "direction_00.png"]),
    (lambda src, out: save_individual(torch.zeros(2, 1, 16, 16), out), ["000000.png", "000001.png"]),
])
def test_a_failed_write_keeps_every_previous_report_file(source, tmp_path, monkeypatch, command, files):
    out = tmp_path / "report"
    out.mkdir()
    before = {name: f"the previous {name}".encode() for name in files}
    for name, data in before.items():
        (out / name).write_bytes(data)
    failing_rename(monkeypatch)
    with pytest.raises(DCGANError, match="No space left|no space left"):
        command(source, out)
    assert {name: (out / name).read_bytes() for name in files} == before
    assert not [p for p in os.listdir(out) if ".tmp" in p]
