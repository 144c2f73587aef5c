"""The moving average of G (--ema-decay, --ema-kimg): the update is the formula, it is kept in the
checkpoint and resumed exactly, it changes nothing that is trained, and samples, metrics, export and
the inspection commands use it (--generator ema|raw), while checkpoints without it load as before."""

import json

import pytest
import torch
from clirun import cli, dcgan
from PIL import Image
from test_cli import TINY as CLI_TINY
from test_cli import assert_clean_error
from test_distributed import TINY as DDP_TINY
from test_distributed import torchrun

import dcgan as api
from dcgan import checkpoint, metrics
from dcgan.config import TrainConfig
from dcgan.data import open_dataset
from dcgan.errors import DCGANError
from dcgan.models import ModelConfig, build
from dcgan.step import STANDING_Z, Networks, ema_decay, train_step, update_ema
from dcgan.train import _evaluator, configure, train

TINY = dict(data="digits", image_size=16, ngf=8, ndf=8, nz=16, batch_size=16, tensorboard=False,
            log_every=1, sample_every=3, checkpoint_every=1, snapshot_every=1, n_samples=16)


def tiny(root, name, **kw) -> TrainConfig:
    return configure({**TINY, "out": str(root / name), **kw})


def tensors_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same seeded run without EMA, with EMA (6 steps), and with EMA stopped at 3 and resumed."""
    root = tmp_path_factory.mktemp("ema")
    plain = train(tiny(root, "plain", steps=6))
    ema = train(tiny(root, "ema", steps=6, ema_decay=0.9))
    train(tiny(root, "half", steps=3, ema_decay=0.9))
    resumed = train(configure({"steps": 6}, resume=root / "half"), resume=True)
    return {"plain": plain, "ema": ema, "resumed": resumed}


def test_decay_warms_up_then_holds_and_kimg_is_a_half_life():
    c = TrainConfig(ema_decay=0.999)
    assert ema_decay(c, 0) == pytest.approx(0.1)  # min(decay, (1 + step) / (10 + step))
    assert ema_decay(c, 8) == pytest.approx(0.5)
    assert ema_decay(c, 10**6) == 0.999
    k = TrainConfig(ema_kimg=0.032, batch_size=16)  # a half-life of 32 images = 2 steps of 16
    assert ema_decay(k, 10**6) == pytest.approx(0.5 ** 0.5)
    assert ema_decay(k, 10**6, world_size=2) == pytest.approx(0.5)  # 32 images per step on 2 ranks
    assert ema_decay(k, 0) == pytest.approx(0.1)


def test_update_equals_the_formula_for_two_steps():
    """e_0 = G_0; e_s+1 = d_s e_s + (1 - d_s) G_s+1, d_s = min(0.9, (1 + s) / (10 + s)), by hand in
    float64; BN running statistics are copied from G."""
    config = configure({**TINY, "ema_decay": 0.9, "channels_last": False})
    torch.manual_seed(0)
    nets = Networks.build(config, torch.device("cpu"))
    raw = [{k: v.double().clone() for k, v in nets.G.named_parameters()}]
    assert all(torch.equal(p, dict(nets.G_ema.named_parameters())[k].double()) for k, p in raw[0].items())
    data = open_dataset("digits", 16, 1)
    batches = iter([data.images[i * 16:(i + 1) * 16] for i in range(2)])
    noise = torch.Generator().manual_seed(0)
    for step in range(2):
        train_step(nets, batches, noise, config)
        update_ema(nets.G_ema, nets.G, ema_decay(config, step))
        raw.append({k: v.double().clone() for k, v in nets.G.named_parameters()})
    d0, d1 = 0.1, 2 / 11
    ema = dict(nets.G_ema.named_parameters())
    for k in raw[0]:
        e1 = d0 * raw[0][k] + (1 - d0) * raw[1][k]
        e2 = d1 * e1 + (1 - d1) * raw[2][k]
        torch.testing.assert_close(ema[k].double(), e2, rtol=1e-6, atol=1e-7)
        assert not torch.allclose(ema[k].double(), raw[2][k])  # an average, not a copy of G
    buffers = dict(nets.G.named_buffers())
    assert all(torch.equal(b, buffers[k]) for k, b in nets.G_ema.named_buffers())


def test_training_loop_applies_the_update_of_its_step(runs):
    """Between the snapshots of steps 4 and 5 of a real run: e_5 = d_4 e_4 + (1 - d_4) G_5, and the
    average's BN statistics are its own."""
    snaps = runs["ema"] / "snapshots"
    s4, s5 = (checkpoint.load(snaps / f"step_0000000{s}.pt") for s in (4, 5))
    d = ema_decay(TrainConfig(ema_decay=0.9), 4)
    params = {name for name, _ in build(ModelConfig.from_dict(s5["config"]["model"]))[0].named_parameters()}
    for k in params:
        expected = d * s4["generator_ema"][k].double() + (1 - d) * s5["generator"][k].double()
        torch.testing.assert_close(s5["generator_ema"][k].double(), expected, rtol=1e-6, atol=1e-7)
    # BN running statistics: the average's own (standing_statistics), not the trained G's. Checked
    # independently on the first BN layer, whose input no other BN touches: its running mean is the
    # mean of that input over the 2,048 fixed z of stream "statistics"
    g = build(ModelConfig.from_dict(s5["config"]["model"]))[0]
    g.load_state_dict(s5["generator_ema"])
    first = next(m for m in g.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))
    name = next(n for n, m in g.named_modules() if m is first)
    seen = []
    first.register_forward_hook(lambda m, args, out: seen.append(args[0].transpose(0, 1).flatten(1)))
    with torch.no_grad():
        g.eval()(g.latent(0, range(STANDING_Z), stream="statistics"))
    standing = s5["generator_ema"][f"{name}.running_mean"]
    torch.testing.assert_close(standing, seen[0].mean(1), rtol=1e-4, atol=1e-5)
    for k in set(s5["generator"]) - params:
        if not k.endswith("num_batches_tracked"):
            assert not torch.equal(s5["generator_ema"][k], s5["generator"][k]), k


def test_ema_changes_nothing_trained_and_off_writes_what_it_always_did(runs):
    plain, ema = checkpoint.load(runs["plain"]), checkpoint.load(runs["ema"])
    assert "generator_ema" not in plain
    assert set(ema) - set(plain) == {"generator_ema"}
    for key in ("generator", "discriminator"):
        assert tensors_equal(plain[key], ema[key]), key
    for key in ("optimizer_g", "optimizer_d"):
        assert all(tensors_equal(plain[key]["state"][i], ema[key]["state"][i]) for i in plain[key]["state"])
    assert torch.equal(plain["rng"]["torch"], ema["rng"]["torch"])
    assert torch.equal(plain["rng"]["noise"], ema["rng"]["noise"])
    assert not tensors_equal(ema["generator"], ema["generator_ema"])
    # the collapse check watches the trained G, so its diversity is the run's without EMA
    rows = {name: [json.loads(r) for r in (runs[name] / "metrics.jsonl").read_text().splitlines()]
            for name in ("plain", "ema")}
    assert [r["diversity"] for r in rows["plain"]] == [r["diversity"] for r in rows["ema"]]
    assert rows["ema"][-1]["diversity"] is not None
    # the grids show the average: final.png is the EMA G's, titled so
    for name in ("final.png", "step_00000003.png"):
        a = Image.open(runs["plain"] / "samples" / name, formats=["PNG"])
        b = Image.open(runs["ema"] / "samples" / name, formats=["PNG"])
        assert a.text["title"].split("(z)")[0].endswith(": G") and "EMA G(z)" in b.text["title"]
        tiles = (0, int(a.text["header"]), *a.size)  # below the title band
        assert a.crop(tiles).tobytes() != b.crop(tiles).tobytes()


def test_resume_is_exact_with_ema(runs):
    straight, resumed = checkpoint.load(runs["ema"]), checkpoint.load(runs["resumed"])
    assert resumed["step"] == 6
    for key in ("generator_ema", "generator", "discriminator"):
        assert tensors_equal(straight[key], resumed[key]), key


def test_selection_picks_the_average_or_the_trained_weights(runs, tmp_path, capsys):
    run = runs["ema"]
    ckpt = checkpoint.load(run)
    g = api.load_generator(run)
    assert g.origin["generator"] == "ema" and "moving average of G (EMA)" in capsys.readouterr().err
    assert tensors_equal(g.state_dict(), ckpt["generator_ema"])
    raw, d = api.load_networks(run, generator="raw")
    assert raw.origin["generator"] == "raw" and tensors_equal(raw.state_dict(), ckpt["generator"])
    assert tensors_equal(d.state_dict(), ckpt["discriminator"])
    assert capsys.readouterr().err == ""  # chosen explicitly: nothing to say
    api.load_discriminator(run)
    assert capsys.readouterr().err == ""  # D alone: which G is beside the point
    # it composes with --which: a snapshot's average
    early = api.load_generator(run, which="2")
    assert tensors_equal(early.state_dict(), checkpoint.load(run / "snapshots" / "step_00000002.pt")
                         ["generator_ema"])
    # export writes the average by default and records it; the raw G on request
    exported = api.export(run, out=tmp_path / "ema.safetensors")
    e = api.load_generator(exported)
    assert e.origin["generator"] == "ema" and tensors_equal(e.state_dict(), ckpt["generator_ema"])
    with pytest.raises(DCGANError, match="holds the ema generator only"):
        api.load_generator(exported, generator="raw")
    r = api.load_generator(api.export(run, out=tmp_path / "raw.safetensors", generator="raw"))
    assert r.origin["generator"] == "raw" and tensors_equal(r.state_dict(), ckpt["generator"])
    with pytest.raises(DCGANError, match="--generator must be ema or raw"):
        api.load_generator(run, generator="average")


def test_training_time_metrics_score_the_average(tmp_path):
    clf = tmp_path / "clf.safetensors"
    metrics.train_classifier("digits", out=clf, epochs=1)
    config = tiny(tmp_path, "run", steps=3, ema_decay=0.9, eval_every=3, eval_n=32,
                  eval_extractor=f"classifier:{clf}")
    run = train(config)
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]
    evaluator = _evaluator(config, open_dataset("digits", 16, 1))
    ema, raw = (evaluator(api.load_generator(run, generator=g))["fid"] for g in ("ema", "raw"))
    assert logged["fid"] == pytest.approx(ema, rel=1e-9)
    assert abs(logged["fid"] - ema) < abs(logged["fid"] - raw)


def test_checkpoints_without_ema_load_sample_and_resume_as_before(runs, tmp_path, capsys):
    """A checkpoint written before the option existed: no generator_ema, no ema_* settings."""
    old = tmp_path / "old"
    old.mkdir()
    ckpt = checkpoint.load(runs["plain"])
    for key in ("ema_decay", "ema_kimg"):
        del ckpt["config"][key]
    checkpoint.save(old / "checkpoint.pt", ckpt)
    (old / "config.json").write_text(json.dumps(ckpt["config"]))
    g = api.load_generator(old)
    assert g.origin["generator"] == "raw" and tensors_equal(g.state_dict(), ckpt["generator"])
    assert "EMA" not in capsys.readouterr().err
    with pytest.raises(DCGANError, match="holds no moving average of G.*--generator raw"):
        api.load_generator(old, generator="ema")
    exported = api.export(old, out=tmp_path / "g.safetensors")
    assert api.load_generator(exported).origin["generator"] == "raw"
    config = configure({"steps": 7, "out": str(old)}, resume=old)
    assert config.ema_decay is None and config.ema_kimg is None
    with pytest.raises(DCGANError, match="ema_decay: None -> 0.9"):
        configure({"steps": 7, "ema_decay": 0.9}, resume=old)


def test_cli_trains_with_ema_and_commands_say_which_g(tmp_path):
    run = tmp_path / "run"
    dcgan("train", *CLI_TINY, "--steps", 6, "--ema-decay", 0.999, "--sample-every", 3,
          "--checkpoint-every", 3, "--snapshot-every", 3, "--out", run)
    assert "generator_ema" in checkpoint.load(run)
    assert json.loads((run / "config.json").read_text())["ema_decay"] == 0.999
    default = dcgan("sample", run, "--n", 4, "--out", tmp_path / "ema.png", cwd=tmp_path)
    assert f"EMA generator (moving average) of step 6, from {run / 'checkpoint.pt'}" in default.stdout
    assert "--generator raw" in default.stderr
    raw = dcgan("sample", run, "--n", 4, "--generator", "raw", "--which", 3, "--out", tmp_path / "raw.png",
                cwd=tmp_path)
    assert f"generator of step 3, from {run / 'snapshots'}" in raw.stdout and "EMA" not in raw.stdout
    assert (tmp_path / "ema.png").read_bytes() != (tmp_path / "raw.png").read_bytes()
    dcgan("export", run, tmp_path / "g.safetensors", "--generator", "ema")
    exported = dcgan("sample", tmp_path / "g.safetensors", "--n", 4, "--out", tmp_path / "e.png",
                     cwd=tmp_path)
    assert "EMA generator (moving average) of step 6" in exported.stdout
    assert (tmp_path / "e.png").read_bytes() == (tmp_path / "ema.png").read_bytes()
    kimg = dcgan("train", *CLI_TINY, "--steps", 2, "--ema-kimg", 10, "--out", tmp_path / "k", "--dry-run")
    assert json.loads(kimg.stdout)["ema_kimg"] == 10.0


@pytest.mark.parametrize("flags, words", [
    (["--ema-decay", 0.99, "--ema-kimg", 10], ["ema_decay or ema_kimg, not both"]),
    (["--ema-decay", 1.0], ["ema_decay must lie in (0, 1)", "1.0"]),
    (["--ema-kimg", 0], ["ema_kimg must be positive"]),
])
def test_bad_ema_settings_are_clean_errors(flags, words, tmp_path):
    proc = cli("train", *CLI_TINY, "--steps", 2, *flags, "--out", tmp_path / "r", "--dry-run")
    assert_clean_error(proc, *words)


def test_two_ranks_keep_one_average_and_kimg_counts_both_ranks_images(tmp_path):
    """--ema-kimg 0.008 at batch 16 per rank: decay 0.5 ** (32 / 8) = 0.0625 with 2 ranks (0.25 with
    one); from the snapshots of steps 2 and 3, e_3 = d_2 e_2 + (1 - d_2) G_3 with that decay."""
    run = tmp_path / "run"
    torchrun("-m", "dcgan", "train", *DDP_TINY, "--batch-size", 16, "--steps", 3, "--ema-kimg", 0.008,
             "--checkpoint-every", 1, "--snapshot-every", 1, "--out", run)
    s2, s3 = (checkpoint.load(run / "snapshots" / f"step_0000000{s}.pt") for s in (2, 3))
    d = ema_decay(TrainConfig(ema_kimg=0.008, batch_size=16), 2, world_size=2)
    assert d == pytest.approx(0.0625)
    for k, _ in build(ModelConfig.from_dict(s3["config"]["model"]))[0].named_parameters():
        expected = d * s2["generator_ema"][k].double() + (1 - d) * s3["generator"][k].double()
        torch.testing.assert_close(s3["generator_ema"][k].double(), expected, rtol=1e-6, atol=1e-7)
