"""Fault injection: killed runs, failed writes, hostile and broken inputs, divergence, health."""

import gzip
import importlib
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from clirun import cli

from dcgan import checkpoint
from dcgan.errors import DCGANError
from dcgan.health import Health
from dcgan.train import configure, train

TINY = ["--image-size", "16", "--ngf", "8", "--ndf", "8", "--nz", "16", "--batch-size", "16",
        "--tensorboard", "false", "--log-every", "1", "--sample-every", "1000"]


def logged_steps(run) -> list[int]:
    steps = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        try:
            steps.append(json.loads(line)["step"])
        except ValueError:
            pass  # a line cut short by the kill
    return steps


def test_sigkill_at_random_moments_never_loses_a_run(tmp_path):
    """Kill -9 repeatedly, with a checkpoint written every step so kills land inside writes."""
    run = tmp_path / "run"
    rng = random.Random(0)
    total = 400
    for _ in range(5):
        resume = ["--resume", run] if (run / "checkpoint.pt").exists() else ["--out", run, *TINY]
        proc = subprocess.Popen([sys.executable, "-m", "dcgan", "train", *map(str, resume),
                                 "--steps", str(total), "--checkpoint-every", "1"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        before = len(logged_steps(run)) if (run / "metrics.jsonl").exists() else 0
        while time.time() < deadline and proc.poll() is None:
            if (run / "metrics.jsonl").exists() and len(logged_steps(run)) > before:
                break
            time.sleep(0.05)
        time.sleep(rng.uniform(0, 0.5))
        proc.kill()
        proc.wait()
        ckpt = checkpoint.load(run)  # the latest checkpoint always loads
        last_logged = max(logged_steps(run), default=0)
        assert ckpt["step"] >= last_logged - 1  # at most one checkpoint interval (1 step) lost
    assert cli("train", "--resume", run).returncode == 0
    assert checkpoint.load(run)["step"] == total
    assert not list(run.glob(".*.tmp*"))  # stale temp files of killed writes are cleaned up


def test_kill_during_checkpoint_write_keeps_the_previous_one(tmp_path):
    path = tmp_path / "checkpoint.pt"
    script = f"""
import os, signal, torch
from dcgan import checkpoint
checkpoint.save({str(path)!r}, {{"step": 1, "weights": torch.ones(1000)}})
os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)  # written, not yet renamed
checkpoint.save({str(path)!r}, {{"step": 2}})
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    assert torch.load(path, weights_only=True)["step"] == 1  # the old file, whole
    assert list(tmp_path.glob(".checkpoint.pt.tmp*"))  # the half-written temp file, never renamed


def test_disk_full_during_checkpoint_keeps_the_previous_one(tmp_path):
    """A tmpfs too small for two checkpoints: the second write fails cleanly (needs root)."""
    probe = tmp_path / "probe"
    train(configure({"data": "digits", "image_size": 32, "ngf": 32, "ndf": 32, "batch_size": 16,
                     "steps": 1, "tensorboard": False, "out": str(probe)}))
    size = (probe / "checkpoint.pt").stat().st_size
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size * 3 // 2 + 65536}", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        run = mnt / "run"
        proc = cli("train", "--image-size", 32, "--ngf", 32, "--ndf", 32, "--batch-size", 16,
                   "--steps", 3, "--checkpoint-every", 1, "--tensorboard", "false", "--out", run)
        assert proc.returncode == 1
        assert "Traceback" not in proc.stderr and "No space left" in proc.stderr.strip().splitlines()[-1]
        assert checkpoint.load(run)["step"] in (0, 1)  # the last one written before the disk filled
        assert not list(run.glob(".*.tmp*"))  # the failed temp file was removed
    finally:
        subprocess.run(["umount", str(mnt)])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("r") / "run"
    assert cli("train", *TINY, "--steps", 2, "--out", run).returncode == 0
    return run


def _write_bad_inputs(tmp_path, run_dir):
    """name -> (dcgan arguments, words the error must contain)."""
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"format": "dcgan-checkpoint", "x": Exploit()}, tmp_path / "evil.pt")
    (tmp_path / "idx").mkdir()
    with gzip.open(tmp_path / "idx" / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(b"\x00\x00\x08\x03" + (5).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + b"\x00" * 7)
    with gzip.open(tmp_path / "idx" / "train-labels-idx1-ubyte.gz", "wb") as f:
        f.write(b"\x00\x00\x08\x01" + (5).to_bytes(4, "big") + b"\x00" * 5)
    (tmp_path / "cifar" / "cifar-10-batches-py").mkdir(parents=True)
    for i in range(1, 6):
        (tmp_path / "cifar" / "cifar-10-batches-py" / f"data_batch_{i}").write_bytes(b"not a pickle")
    data = (run_dir / "checkpoint.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 3])
    other = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    other["config"]["model"]["ngf"] = 16  # the weights are still those of ngf=8
    torch.save(other, tmp_path / "other.pt")
    return marker, {
        "hostile checkpoint": (["sample", tmp_path / "evil.pt"], ["refusing", "evil.pt"]),
        "truncated checkpoint": (["sample", tmp_path / "cut.pt"], ["truncated or corrupt", "cut.pt"]),
        "other architecture": (["sample", tmp_path / "other.pt"], ["do not match", "other.pt"]),
        "bad IDX": (["train", "--data", "mnist", "--data-dir", tmp_path / "idx"],
                    ["train-images-idx3-ubyte.gz", "truncated"]),
        "bad CIFAR pickle": (["train", "--data", "cifar10", "--data-dir", tmp_path / "cifar"],
                             ["data_batch_1", "not a CIFAR-10"]),
        "missing path": (["train", "--data", tmp_path / "nowhere"], ["nowhere"]),
        "unsupported size": (["train", "--image-size", 100], ["100"]),
        "resume other settings": (["train", "--resume", run_dir, "--nz", 32], ["nz: 16 -> 32"]),
    }


def test_bad_inputs_give_one_line_and_damage_nothing(tmp_path, run_dir):
    before = (run_dir / "checkpoint.pt").read_bytes()
    marker, cases = _write_bad_inputs(tmp_path, run_dir)
    for name, (args, words) in cases.items():
        proc = cli(*args)
        assert proc.returncode == 1, (name, proc.stderr)
        assert "Traceback" not in proc.stderr, name
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith("error: ") and all(w in last for w in words), (name, last)
    assert not marker.exists()  # the hostile pickle never ran
    assert (run_dir / "checkpoint.pt").read_bytes() == before


def test_divergence_rolls_back_with_a_lower_lr(tmp_path, monkeypatch):
    step = importlib.import_module("dcgan.step")
    calls = {"n": 0}
    real_to_float = step.to_float

    def poisoned(x):  # step 6's real batch is NaN, once
        calls["n"] += 1
        y = real_to_float(x)
        return y * float("nan") if calls["n"] == 6 else y

    monkeypatch.setattr(step, "to_float", poisoned)
    cfg = configure({"data": "digits", "image_size": 16, "ngf": 8, "ndf": 8, "nz": 16, "batch_size": 32,
                     "steps": 12, "tensorboard": False, "log_every": 2, "checkpoint_every": 4,
                     "on_divergence": "rollback", "out": str(tmp_path / "run")})
    run = train(cfg)
    ckpt = checkpoint.load(run)
    assert ckpt["step"] == 12 and ckpt["config"]["lr"] == pytest.approx(1e-4)
    assert all(torch.isfinite(v).all() for v in ckpt["generator"].values())
    assert logged_steps(run) == [2, 4, 6, 8, 10, 12]  # the rolled-back rows were replaced


def test_divergence_stops_after_max_rollbacks(tmp_path, monkeypatch):
    monkeypatch.setattr(importlib.import_module("dcgan.step"), "to_float", lambda x: x.float() * float("nan"))
    cfg = configure({"data": "digits", "image_size": 16, "ngf": 8, "ndf": 8, "nz": 16, "batch_size": 32,
                     "steps": 5, "tensorboard": False, "on_divergence": "rollback", "max_rollbacks": 2,
                     "out": str(tmp_path / "run")})
    with pytest.raises(DCGANError, match="diverged"):
        train(cfg)
    assert checkpoint.load(tmp_path / "run")["step"] == 0


def test_vanishing_gradient_and_collapse_are_reported(tmp_path, capfd):
    # thresholds no real run meets: the warnings must reach the log and the progress output
    cfg = configure({"data": "digits", "image_size": 16, "ngf": 8, "ndf": 8, "nz": 16, "batch_size": 32,
                     "steps": 6, "tensorboard": False, "log_every": 1, "sample_every": 2,
                     "vanishing_loss": 100.0, "vanishing_patience": 3, "collapse_threshold": 100.0,
                     "collapse_after": 0,
                     "out": str(tmp_path / "run")})
    run = train(cfg)
    rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    assert not any("vanishing" in w for r in rows[:3] for w in r["warnings"])
    assert any("vanishing" in w for w in rows[3]["warnings"])  # after 3 steps below the threshold
    assert any("collapsed" in w for w in rows[-1]["warnings"])
    err = capfd.readouterr().err
    assert "G's gradient is vanishing" in err
    # each warning names the option to try (README: Training on your own images)
    assert "try --label-smoothing 0.1" in err and "try --augment translation,cutout" in err


def test_collapse_detector_measures_diversity():
    cfg = configure({"collapse_threshold": 0.1, "collapse_after": 5})
    real = torch.rand(16, 1, 8, 8) * 2 - 1
    health = Health(cfg, real_diversity=float(torch.pdist(real.flatten(1)).mean()))
    health.check_diversity(10, real[:1].repeat(16, 1, 1, 1) + 0.001 * torch.randn(16, 1, 8, 8))
    assert health.collapsed and health.diversity < 0.1
    health.check_diversity(20, torch.rand(16, 1, 8, 8) * 2 - 1)
    assert not health.collapsed and 0.5 < health.diversity < 2
    health.check_diversity(1, real[:1].repeat(16, 1, 1, 1))  # an untrained G: no alarm yet
    assert not health.collapsed


def test_a_healthy_run_reports_nothing(tmp_path):
    cfg = configure({"data": "digits", "image_size": 16, "ngf": 8, "ndf": 8, "nz": 16, "batch_size": 32,
                     "steps": 4, "tensorboard": False, "log_every": 1, "sample_every": 2,
                     "out": str(tmp_path / "run")})
    rows = [json.loads(r) for r in (train(cfg) / "metrics.jsonl").read_text().splitlines()]
    assert all(r["warnings"] == [] for r in rows)
    assert [r["diversity"] is not None for r in rows] == [False, True, True, True]  # from step 2 on


def test_failed_sample_write_is_a_clear_error(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "samples").write_text("a file where the samples folder should be")
    proc = cli("train", *TINY, "--steps", 2, "--sample-every", 1, "--out", run)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert str(run) in proc.stderr.strip().splitlines()[-1]
    assert checkpoint.load(run)["step"] >= 0
