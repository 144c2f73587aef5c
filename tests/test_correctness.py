"""Correctness and run safety: random streams, finite checkpoints, the global RNG, bounded dedup,
the run-directory lock, guarded data on resume, atomic links, pure helpers."""

import importlib
import json
import math
import os
import subprocess
import sys
import time

import pytest
import torch
from clirun import cli
from test_reliability import logged_steps

from dcgan import checkpoint
from dcgan.data import to_float
from dcgan.errors import DCGANError
from dcgan.models import Generator, build
from dcgan.step import Networks, train_step
from dcgan.train import configure, train

TINY = dict(data="digits", image_size=16, ngf=8, ndf=8, nz=16, batch_size=16, tensorboard=False,
            log_every=1, sample_every=1000, checkpoint_every=1000, n_samples=16)


def tiny(tmp_path, name="run", **kw):
    return configure({**TINY, "out": str(tmp_path / name), **kw})


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


# ---- 2. no checkpoint holds non-finite weights ------------------------------------------------

def inf_gradient_at(monkeypatch, g_step: int) -> None:
    """The G step number `g_step` gets +inf in one element of one G weight's gradient (the loss of
    that step is finite): Adam turns the weight into NaN."""
    real_build = Networks.build
    calls = {"n": 0}

    def poison(grad):
        calls["n"] += 1
        if calls["n"] == g_step:
            grad = grad.clone()
            grad[(0,) * grad.ndim] = float("inf")
        return grad

    def build(*args, **kw):
        nets = real_build(*args, **kw)
        nets.G.blocks[0][0].weight.register_hook(poison)
        return nets

    monkeypatch.setattr(Networks, "build", build)


def all_finite(ckpt: dict) -> bool:
    tensors = [*ckpt["generator"].values(), *ckpt["discriminator"].values()]
    return all(torch.isfinite(t).all() for t in tensors if t.is_floating_point())


def test_an_inf_gradient_never_reaches_a_checkpoint(tmp_path, monkeypatch):
    inf_gradient_at(monkeypatch, 3)
    with pytest.raises(DCGANError, match="diverged"):
        train(tiny(tmp_path, steps=6, checkpoint_every=1, snapshot_every=1))
    ckpt = checkpoint.load(tmp_path / "run")
    assert ckpt["step"] == 2 and all_finite(ckpt)
    for snap in (tmp_path / "run" / "snapshots").iterdir():
        assert all_finite(checkpoint.load(snap)), snap


def test_rollback_after_an_inf_gradient_restores_finite_weights(tmp_path, monkeypatch):
    inf_gradient_at(monkeypatch, 3)
    run = train(tiny(tmp_path, steps=6, checkpoint_every=1, on_divergence="rollback"))
    ckpt = checkpoint.load(run)
    assert ckpt["step"] == 6 and all_finite(ckpt)
    assert ckpt["config"]["lr"] == pytest.approx(1e-4)  # one rollback


def test_a_non_finite_checkpoint_is_not_resumed(tmp_path):
    run = train(tiny(tmp_path, steps=2))
    ckpt = checkpoint.load(run)
    ckpt["generator"]["blocks.0.0.weight"][0, 0, 0, 0] = float("nan")
    checkpoint.save(run / "checkpoint.pt", {k: v for k, v in ckpt.items() if k not in ("format", "version")})
    proc = cli("train", "--resume", run, "--steps", 4)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 1 and "snapshot" in last, last
    assert "non-finite" in last or "NaN or infinite" in last, last


# ---- 7. links are replaced atomically ---------------------------------------------------------

def test_a_failed_link_keeps_the_old_target(tmp_path, monkeypatch):
    new, target = tmp_path / "checkpoint.pt", tmp_path / "best.pt"
    new.write_bytes(b"new")
    target.write_bytes(b"old")

    def crash(*args, **kw):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "link", crash)
    with pytest.raises(OSError):
        checkpoint.link(new, target)
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == [
        "best.pt", "checkpoint.pt"]  # no temp file left
    monkeypatch.undo()
    checkpoint.link(new, target)
    assert target.read_bytes() == b"new" and os.path.samefile(new, target)


# ---- 8, 9. pure helpers, and D unfrozen after any G step ---------------------------------------

def test_to_float_never_changes_its_input():
    for x in (torch.tensor([0.0, 127.5, 255.0]), torch.tensor([0, 255], dtype=torch.uint8)):
        before = x.clone()
        y = to_float(x)
        assert torch.equal(x, before) and y.dtype == torch.float32 and y.min() == -1 and y.max() == 1


def test_d_trains_again_after_an_exception_in_the_g_step():
    config = tiny_config()
    G, D = build(config.model)
    opt_g, opt_d = torch.optim.Adam(G.parameters()), torch.optim.Adam(D.parameters())
    reals = iter([torch.randint(0, 256, (8, 1, 16, 16), dtype=torch.uint8)])

    def fail_when_frozen(module, inputs):
        if not next(module.parameters()).requires_grad:
            raise RuntimeError("out of memory in the G step")

    D.register_forward_pre_hook(fail_when_frozen)
    with pytest.raises(RuntimeError, match="G step"):
        train_step(Networks(G, D, opt_g, opt_d), reals, torch.Generator().manual_seed(0), config)
    assert all(p.requires_grad for p in D.parameters())


def tiny_config():
    return configure({**TINY, "out": "unused"})


# ---- 5. one training process per run directory -------------------------------------------------

CLI_TINY = ["--image-size", 16, "--ngf", 8, "--ndf", 8, "--nz", 16, "--batch-size", 16, "--tensorboard",
            "false", "--log-every", 1, "--sample-every", 1000]


def test_a_second_process_cannot_write_a_running_run_and_a_killed_one_resumes_at_once(tmp_path):
    run = tmp_path / "run"
    args = ["train", *CLI_TINY, "--steps", 10**6, "--checkpoint-every", 5, "--out", run]
    first = subprocess.Popen([sys.executable, "-m", "dcgan", *map(str, args)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not ((run / "metrics.jsonl").is_file() and len(logged_steps(run)) >= 6):
            assert first.poll() is None and time.time() < deadline
            time.sleep(0.2)
        for args, says in ((["--resume", run, "--steps", 20], f"in use by pid {first.pid} (started "),
                           ([*CLI_TINY, "--steps", 20, "--out", run], "already holds a run")):
            second = cli("train", *args)
            last = second.stderr.strip().splitlines()[-1]
            assert second.returncode == 1 and last.startswith("error: ") and says in last, last
        assert first.poll() is None  # the first run goes on, its rows still in order
        time.sleep(1)
        logged = logged_steps(run)
        assert logged == list(range(1, len(logged) + 1))
    finally:
        first.kill()
        first.wait()
    done = checkpoint.load(run)["step"]
    resumed = cli("train", "--resume", run, "--steps", done + 2)
    assert resumed.returncode == 0, resumed.stderr
    assert checkpoint.load(run)["step"] == done + 2


# ---- 6. resume never swaps the training data ---------------------------------------------------

def write_mnist(root, n: int, seed: int) -> None:
    """The two training IDX files of an MNIST-format dataset of n random images."""
    import numpy as np

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    for name, a in (("train-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)),
                    ("train-labels-idx1-ubyte", rng.integers(0, 10, n, dtype=np.uint8))):
        (root / name).write_bytes(bytes([0, 0, 8, a.ndim]) + b"".join(d.to_bytes(4, "big") for d in a.shape)
                                  + a.tobytes())


def test_resume_refuses_other_data_and_accepts_a_moved_copy(tmp_path):
    import shutil

    write_mnist(tmp_path / "a", 48, seed=0)
    write_mnist(tmp_path / "b", 48, seed=1)  # same names and sizes, other images
    shutil.copytree(tmp_path / "a", tmp_path / "a-moved")  # copy2: same times
    run = tmp_path / "run"
    assert cli("train", "--data", "mnist", "--data-dir", tmp_path / "a", *CLI_TINY, "--steps", 2,
               "--out", run).returncode == 0
    before = (run / "checkpoint.pt").read_bytes()
    refused = cli("train", "--resume", run, "--data-dir", tmp_path / "b", "--steps", 4)
    last = refused.stderr.strip().splitlines()[-1]
    assert refused.returncode == 1 and last.startswith("error: cannot resume") and "files:" in last, last
    assert (run / "checkpoint.pt").read_bytes() == before
    recorded = json.loads((run / "config.json").read_text())["data_fingerprint"]
    assert recorded["images"] == 48 and recorded["image_size"] == 16 and recorded["files"]
    assert json.loads((run / "config.json").read_text())["data_fingerprint"] == recorded
    moved = cli("train", "--resume", run, "--data-dir", tmp_path / "a-moved", "--steps", 4)
    assert moved.returncode == 0, moved.stderr
    assert checkpoint.load(run)["step"] == 4


# ---- 3, 10. library calls leave the global RNG alone; an unbiased FID reference ---------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny run on digits and a digits classifier for the metrics."""
    from dcgan.metrics import train_classifier

    root = tmp_path_factory.mktemp("rng")
    train_classifier("digits", out=root / "clf.safetensors", epochs=1)
    run = train(configure({**TINY, "steps": 20, "out": str(root / "run")}))
    return run, root / "clf.safetensors"


def global_states():
    import numpy as np

    state = np.random.get_state()
    return torch.get_rng_state(), (state[0], state[1].copy(), *state[2:])


def unchanged(before, after) -> bool:
    import numpy as np

    same = [np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b
            for a, b in zip(before[1], after[1], strict=True)]
    return torch.equal(before[0], after[0]) and all(same)


def test_library_calls_leave_the_global_random_state_alone(trained, tmp_path):
    import numpy as np

    from dcgan import metrics, representation, saliency

    dedup, probe = (importlib.import_module(f"dcgan.{m}") for m in ("dedup", "probe"))  # not the functions
    from dcgan.checkpoint import load_discriminator

    run, clf = trained
    d = load_discriminator(run)
    images = torch.randint(0, 256, (40, 1, 16, 16), dtype=torch.uint8)
    calls = {
        "metrics.train_classifier": lambda: metrics.train_classifier("digits", out=tmp_path / "c.safetensors",
                                                                     epochs=1),
        "metrics.evaluate": lambda: metrics.evaluate(run, data="digits", n=64, extractor=f"classifier:{clf}"),
        "dedup.dedup": lambda: dedup.dedup("digits", out=tmp_path / "dedup", epochs=1, bits=16),
        "probe.probe": lambda: probe.probe(run, data="digits", baselines=("random", "pixels"), per_class=5,
                                           draws=2, max_test=100),
        "saliency.guided_backprop_report": lambda: saliency.guided_backprop_report(
            run, data="digits", out=tmp_path / "gb", filters=2, top=2, max_images=64),
        "representation.dcgan_features": lambda: representation.dcgan_features(d, images, images),
    }
    for name, call in calls.items():
        torch.manual_seed(1234)
        np.random.seed(99)
        before = global_states()
        call()
        assert unchanged(before, global_states()), name


def test_evaluating_during_training_changes_nothing_that_is_trained(trained, tmp_path):
    _, clf = trained
    plain = checkpoint.load(train(tiny(tmp_path, "plain", steps=6)))
    evaluated_run = train(tiny(tmp_path, "evaluated", steps=6, eval_every=2, eval_n=32,
                               eval_extractor=f"classifier:{clf}"))
    evaluated = checkpoint.load(evaluated_run)
    for net in ("generator", "discriminator"):
        for k, v in plain[net].items():
            assert torch.equal(v, evaluated[net][k]), (net, k)
    assert torch.equal(plain["rng"]["torch"], evaluated["rng"]["torch"])
    assert all_finite(checkpoint.load(evaluated_run / "best.pt"))


def test_training_time_evaluation_reports_kid_with_its_std_and_the_new_best(trained, tmp_path, capsys):
    _, clf = trained
    run = train(tiny(tmp_path, "evaluated", steps=4, eval_every=2, eval_n=32,
                     eval_extractor=f"classifier:{clf}"))
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evaluated = [r for r in rows if "fid" in r]
    assert [r["step"] for r in evaluated] == [2, 4]
    assert all(math.isnan(r["kid_std"]) for r in evaluated)  # 32 images: no subset spread, not "0.00000"
    err = capsys.readouterr().err
    for r in evaluated:
        assert f"step {r['step']} FID {r['fid']:.3f}  KID {r['kid']:.5f} +- n/a" in err
        assert "(n=32; FID is biased upward below 10,000)" in err
    best = min(evaluated, key=lambda r: r["fid"])
    assert f"step {best['step']} new best FID {best['fid']:.3f} -> {run / 'best.pt'}" in err


def test_the_fid_reference_is_a_random_subset_of_class_sorted_data(trained, tmp_path, monkeypatch):
    from PIL import Image

    from dcgan import metrics

    _, clf = trained
    folder = tmp_path / "sorted"
    folder.mkdir()
    for i in range(400):  # file order sorted by class: 200 black images, then 200 white ones
        Image.new("L", (16, 16), 0 if i < 200 else 255).save(folder / f"{i:03d}.png")
    seen = []

    class Recording(metrics.Evaluator):
        def __init__(self, features, real, *args, **kw):
            seen.append(real.clone())
            super().__init__(features, real, *args, **kw)

    monkeypatch.setattr(sys.modules["dcgan.train"], "Evaluator", Recording)
    train(configure({**TINY, "data": str(folder), "channels": 1, "steps": 2, "eval_every": 2, "eval_n": 16,
                     "eval_extractor": f"classifier:{clf}", "out": str(tmp_path / "run")}))
    white = (seen[0].flatten(1).float().mean(1) > 127).float().mean()
    assert 0.15 < white < 0.85, float(white)


# ---- 13. every setting reachable from the command line ----------------------------------------

def test_model_and_optimiser_settings_and_workers_from_the_command_line(tmp_path):
    proc = cli("train", "--dry-run", "--beta2", 0.99, "--latent", "uniform", "--projection", "linear",
               "--alternate-strides", "true", "--kernel-size", 3, "--workers", 0, "--out", tmp_path / "r")
    assert proc.returncode == 0, proc.stderr
    cfg = json.loads(proc.stdout)
    assert cfg["beta2"] == 0.99 and cfg["workers"] == 0
    assert cfg["model"]["latent"] == "uniform" and cfg["model"]["projection"] == "linear"
    assert cfg["model"]["alternate_strides"] is True and cfg["model"]["kernel_size"] == 3


def test_workers_reach_the_loader_of_a_streamed_dataset(tmp_path, monkeypatch):
    from PIL import Image

    from dcgan import data

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(40):
        Image.new("L", (16, 16), i * 6).save(folder / f"{i:02d}.png")
    monkeypatch.setattr(data, "MAX_IN_MEMORY_BYTES", 0)  # too large for memory, and no cache: streamed
    loaders = []
    real_loader = torch.utils.data.DataLoader

    def recording(*args, **kw):
        loaders.append(kw["num_workers"])
        return real_loader(*args, **kw)

    monkeypatch.setattr(torch.utils.data, "DataLoader", recording)
    train(configure({**TINY, "data": str(folder), "channels": 1, "steps": 3, "workers": 0, "cache": False,
                     "out": str(tmp_path / "run")}))
    assert loaders and set(loaders) == {0}


# ---- 4. dedup stays linear when many images share a code ---------------------------------------

BUCKET_CHECK = """
import resource, sys, time
import torch
from dcgan.dedup import code_groups
torch.set_num_threads(1)
codes = torch.zeros(20000, 128, dtype=torch.bool)  # one degenerate code shared by every image
codes[:10, :5] = True  # and a few others
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
for radius in (0, 2):
    groups, info = code_groups(codes, radius)
    assert max(len(g) for g in groups) >= 19990 and info["largest_code"] == 19990, (radius, info)
print(time.perf_counter() - t, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)
"""


def test_one_code_shared_by_20000_images_is_grouped_in_seconds_and_little_memory():
    proc = subprocess.run([sys.executable, "-c", BUCKET_CHECK], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    seconds, extra_mb = map(float, proc.stdout.split())
    assert seconds < 20 and extra_mb < 200, (seconds, extra_mb)


def test_a_band_shared_by_many_distinct_codes_is_bounded_and_reported():
    from dcgan.dedup import code_groups

    gen = torch.Generator().manual_seed(0)
    codes = torch.zeros(3000, 64, dtype=torch.bool)
    codes[:, 32:] = torch.rand(3000, 32, generator=gen) > 0.5  # band 0 (bits 0-31) all zero
    groups, info = code_groups(codes, 1, max_bucket=1000)
    assert info["buckets_over_limit"] == 1
    brute = [sorted(torch.nonzero((codes[i] ^ codes).sum(1) <= 1).flatten().tolist()) for i in range(50)]
    for i, members in enumerate(brute):  # pairs still found through the other band
        if len(members) > 1:
            assert any(set(members) <= set(g) for g in groups), i


# ---- 12. float32 features, extracted on a chosen device ----------------------------------------

def test_features_and_probe_take_a_device_and_stay_float32(trained, tmp_path):
    import numpy as np

    from dcgan.probe import LinearSVM

    run, _ = trained
    out = tmp_path / "f.npz"
    proc = cli("features", run, "--data", "digits", "--split", "test", "--out", out, "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    x = np.load(out)["features"]
    assert x.dtype == np.float32 and x.shape[0] == 360
    proc = cli("probe", run, "--data", "digits", "--baselines", "", "--per-class", 5, "--draws", 2,
               "--max-test", 100, "--device", "cpu", "--out", tmp_path / "probe")
    assert proc.returncode == 0, proc.stderr
    rng = np.random.default_rng(0)
    feats, labels = rng.standard_normal((300, 20), dtype=np.float32), rng.integers(0, 3, 300)
    svm = LinearSVM(1e-2).fit(feats, labels)  # more rows than features: the full-protocol path
    assert svm.basis is None and svm._rows(feats).x.data_ptr() == feats.ctypes.data  # no copy of ours
    assert svm.score(feats, labels) > 0.4


def test_training_accepts_every_seed_up_to_2_63_minus_1(tmp_path):
    """Seeds are 0..2^63-1 in every command; numpy's 32-bit global seed takes the seed modulo 2^32."""
    from dcgan.train import train as train_run

    run = train_run({"image_size": 16, "ngf": 8, "ndf": 8, "nz": 8, "batch_size": 16, "steps": 1,
                     "seed": 2**63 - 1, "tensorboard": False, "out": str(tmp_path / "run")})
    assert (run / "checkpoint.pt").is_file()
