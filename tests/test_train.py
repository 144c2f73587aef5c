"""The training loop: run directory, exact resume, guarded settings, divergence, checkpoints."""

import importlib
import json
import math
import pickle

import pytest
import torch

import dcgan
from dcgan import checkpoint
from dcgan.data import to_float
from dcgan.errors import DCGANError
from dcgan.models import build
from dcgan.step import Networks, train_step
from dcgan.train import configure, train

TINY = dict(data="digits", image_size=16, ngf=8, ndf=8, nz=16, batch_size=32, tensorboard=False,
            log_every=1, sample_every=4, checkpoint_every=2, snapshot_every=4, n_samples=16)


def tiny(tmp_path, name="run", **kw) -> dcgan.TrainConfig:
    return configure({**TINY, "out": str(tmp_path / name), **kw})


def weights(run) -> dict:
    ckpt = checkpoint.load(run)
    return {**{f"G.{k}": v for k, v in ckpt["generator"].items()},
            **{f"D.{k}": v for k, v in ckpt["discriminator"].items()}}


def test_run_directory_is_self_describing(tmp_path):
    run = train(tiny(tmp_path, steps=8))
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"]["image_size"] == 16 and cfg["model"]["channels"] == 1 and cfg["steps"] == 8
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 9))
    for r in rows:
        assert {"loss_D", "loss_G", "D_x", "D_G_z", "img_per_s", "kimg", "epoch"} <= set(r)
        # D_x and D_G_z are means of sigmoids of the logits loss_D is made of; -log is convex, so by
        # Jensen loss_D >= -log(D_x) - log(1 - D_G_z), equality only if every logit were the same
        bound = -math.log(r["D_x"]) - math.log(1 - r["D_G_z"])
        assert bound < r["loss_D"] < bound + 0.5
    assert rows[-1]["kimg"] == pytest.approx(8 * 32 / 1000)
    samples = sorted(p.name for p in (run / "samples").iterdir())
    assert samples == ["final.png", "step_00000004.png", "step_00000008.png"]
    from PIL import Image

    for name, title in (("samples/step_00000004.png", "step 4: G(z) for the run's 16 fixed z"),
                        ("real_samples.png", "training images as the model sees them: 1x16x16")):
        sheet = Image.open(run / name, formats=["PNG"])
        assert sheet.text["title"] == title  # 16x16 tiles upscaled x4 to 64, 4 x 4 of them, a title band
        assert (sheet.text["tile"], sheet.text["columns"], sheet.text["rows"]) == ("64", "4", "4")
        assert sheet.size == (2 + 4 * 66, 16 + 2 + 4 * 66)
    assert (run / "losses.png").stat().st_size > 1000
    assert sorted(p.name for p in (run / "snapshots").iterdir()) == ["step_00000004.pt",
                                                                     "step_00000008.pt"]
    assert checkpoint.load(run / "snapshots" / "step_00000004.pt")["step"] == 4
    ckpt = checkpoint.load(run)
    assert ckpt["step"] == 8
    assert {"generator", "discriminator", "optimizer_g", "optimizer_d", "step", "epoch", "config",
            "rng"} <= set(ckpt)
    assert {"torch", "noise", "numpy", "python"} <= set(ckpt["rng"])


def test_tensorboard_events_are_written(tmp_path):
    run = train(tiny(tmp_path, steps=2, tensorboard=True))
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))


def test_resume_is_exact(tmp_path):
    """2N steps in one go == N steps, then resumed for N more: identical weights, bit for bit."""
    straight = train(tiny(tmp_path, "straight", steps=12))
    half = train(tiny(tmp_path, "half", steps=6))
    resumed = train(configure({"steps": 12}, resume=half), resume=True)
    a, b = weights(straight), weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    sa = checkpoint.load(straight)["optimizer_d"]["state"]
    sb = checkpoint.load(resumed)["optimizer_d"]["state"]
    assert all(torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"]) for i in sa)
    # metrics continue without duplicated steps
    steps = [json.loads(r)["step"] for r in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 13))


def test_resume_across_epochs_is_exact(tmp_path):
    """digits has 56 batches of 32 per epoch: resume in the middle of epoch 0, end in epoch 1."""
    straight = train(tiny(tmp_path, "a", steps=60, sample_every=100, checkpoint_every=50))
    half = train(tiny(tmp_path, "b", steps=50, sample_every=100, checkpoint_every=50))
    resumed = train(configure({"steps": 60}, resume=half), resume=True)
    a, b = weights(straight), weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert checkpoint.load(resumed)["epoch"] == 1


def test_resume_with_other_architecture_names_the_difference(tmp_path):
    run = train(tiny(tmp_path, steps=2))
    with pytest.raises(DCGANError, match=r"ngf: 8 -> 16"):
        configure({"ngf": 16}, resume=run)
    with pytest.raises(DCGANError, match=r"beta1"):
        configure({"beta1": 0.9}, resume=run)
    assert configure({"steps": 10, "lr": 1e-4}, resume=run).lr == 1e-4


def test_new_run_refuses_to_overwrite_existing_run(tmp_path):
    train(tiny(tmp_path, steps=2))
    with pytest.raises(DCGANError, match="--resume"):
        train(tiny(tmp_path, steps=2))


def test_epochs_set_the_number_of_steps(tmp_path):
    run = train(tiny(tmp_path, epochs=1, checkpoint_every=100, sample_every=100))
    assert checkpoint.load(run)["step"] == 1797 // 32


@pytest.mark.parametrize("d_steps", [1, 3])
def test_d_takes_exactly_d_steps_updates_per_step(tmp_path, d_steps):
    """Adam's per-parameter step counts in the checkpoint: D stepped d_steps times per G step."""
    run = train(tiny(tmp_path, steps=4, d_steps=d_steps))
    ckpt = checkpoint.load(run)
    d_counts = {int(s["step"]) for s in ckpt["optimizer_d"]["state"].values()}
    g_counts = {int(s["step"]) for s in ckpt["optimizer_g"]["state"].values()}
    assert d_counts == {4 * d_steps} and g_counts == {4}
    rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["kimg"] == pytest.approx(4 * d_steps * 32 / 1000)  # d_steps real batches per step


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_real_target_is_one_minus_the_smoothing(smoothing):
    """loss_D recomputed from D's logits on the same batches (lr 0: nothing moves) with real target
    1 - s; the logits are scaled up so that the target matters: BCE(l, t) changes by l * dt."""
    config = configure({**TINY, "label_smoothing": smoothing})
    torch.manual_seed(0)
    G, D = build(config.model)
    with torch.no_grad():
        D.head[0].weight.mul_(50)  # the logit layer: logits of order 1-10, not 0.1
    real = torch.randint(0, 256, (32, 1, 16, 16), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(1))
    opts = [torch.optim.SGD(m.parameters(), lr=0.0) for m in (G, D)]
    loss_d = train_step(Networks(G, D, *opts), iter([real]), torch.Generator().manual_seed(2), config)[0]
    with torch.no_grad():  # the same forward passes: train-mode BN, the same z
        out_real = D(to_float(real))
        out_fake = D(G(G.sample_latent(32, torch.Generator().manual_seed(2))))
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    fake_loss = bce(out_fake, torch.zeros_like(out_fake))
    expected = bce(out_real, torch.full_like(out_real, 1 - smoothing)) + fake_loss
    assert loss_d.item() == pytest.approx(expected.item(), abs=1e-5)
    wrong = bce(out_real, torch.full_like(out_real, 1 - smoothing - 0.05)) + fake_loss
    assert abs(wrong.item() - expected.item()) > 1e-2  # a target off by 0.05 would show


def test_batch_larger_than_dataset_is_an_error(tmp_path, monkeypatch):
    with pytest.raises(DCGANError, match="--batch-size"):
        train(tiny(tmp_path, steps=1, batch_size=4096))


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    step = importlib.import_module("dcgan.step")
    calls = {"n": 0}
    real_to_float = step.to_float

    def poisoned(x):
        calls["n"] += 1
        y = real_to_float(x)
        return y * float("nan") if calls["n"] > 4 else y  # the real batches of steps 5, 6, ...

    monkeypatch.setattr(step, "to_float", poisoned)
    cfg = tiny(tmp_path, steps=10, log_every=3)
    with pytest.raises(DCGANError, match="non-finite"):
        train(cfg)
    ckpt = checkpoint.load(cfg.out)
    assert ckpt["step"] == 4
    assert all(torch.isfinite(v).all() for v in ckpt["generator"].values())


def test_hostile_checkpoint_is_refused_not_executed(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pt"
    torch.save({"format": "dcgan-checkpoint", "payload": Exploit()}, path)
    with pytest.raises(DCGANError, match="refusing"):
        checkpoint.load(path)
    assert not marker.exists()
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump(Exploit(), f)
    with pytest.raises(DCGANError):
        dcgan.load_generator(tmp_path / "evil.pkl")
    assert not marker.exists()


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    run = train(tiny(tmp_path, steps=2))
    data = (run / "checkpoint.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(DCGANError, match="truncated or corrupt"):
        checkpoint.load(tmp_path / "cut.pt")


def test_failed_checkpoint_write_keeps_previous_file(tmp_path):
    path = tmp_path / "checkpoint.pt"
    checkpoint.save(path, {"step": 1})

    def failing(f):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(DCGANError, match="No space left"):
        checkpoint.atomic_write(path, failing)
    assert torch.load(path, weights_only=True)["step"] == 1  # the old file, whole
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temp file left


def test_load_generator_sample_and_export_agree(tmp_path):
    run = train(tiny(tmp_path, steps=2))
    g = dcgan.load_generator(run)
    assert not g.training
    x = g.sample(5, seed=3)
    assert x.shape == (5, 1, 16, 16) and x.min() >= -1 and x.max() <= 1
    out = dcgan.export(run, out=tmp_path / "g.safetensors")
    g2 = dcgan.load_generator(out)
    assert torch.equal(g2.sample(5, seed=3), x)
    assert not torch.equal(g.sample(5, seed=4), x)
