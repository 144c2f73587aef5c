"""The `dcgan` command as a user runs it: real subprocesses, real files."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from clirun import cli, dcgan
from PIL import Image

from dcgan import checkpoint

TINY = ["--image-size", "16", "--ngf", "8", "--ndf", "8", "--nz", "16", "--batch-size", "16",
        "--tensorboard", "false", "--log-every", "1"]


def assert_clean_error(proc, *words):
    """Exit code 1, one line on stderr naming what is wrong, no traceback."""
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ")
    for w in words:
        assert w in last, (w, last)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """24 small RGB PNGs in nested folders, plus one corrupt file."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(24):
        sub = root / f"class{i % 2}"
        sub.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(sub / f"{i}.png")
    (root / "class0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "digits"
    dcgan("train", *TINY, "--steps", 4, "--out", run, "--sample-every", 2)
    return run


def test_train_writes_a_run(trained):
    assert json.loads((trained / "config.json").read_text())["steps"] == 4
    assert checkpoint.load(trained)["step"] == 4
    assert (trained / "samples" / "final.png").is_file()


def test_train_on_a_folder_skips_the_corrupt_file(image_folder, tmp_path):
    proc = dcgan("train", "--data", image_folder, *TINY, "--steps", 2, "--out", tmp_path / "r")
    assert "skipped 1 unreadable image(s)" in proc.stderr and "broken.png" in proc.stderr
    assert "24 images" in proc.stderr
    assert json.loads((tmp_path / "r" / "config.json").read_text())["model"]["channels"] == 3


def test_dry_run_prints_resolved_settings_and_writes_nothing(tmp_path):
    proc = dcgan("train", "--preset", "paper", "--out", tmp_path / "r", "--dry-run")
    cfg = json.loads(proc.stdout)
    assert cfg["model"]["kernel_size"] == 5 and cfg["model"]["latent"] == "uniform"
    assert cfg["weight_decay"] == 1e-5 and cfg["model"]["image_size"] == 32  # digits' size
    assert not (tmp_path / "r").exists()


def test_every_setting_is_a_train_flag_with_its_default_shown(tmp_path):
    """The flags of `dcgan train` are derived from the settings' dataclasses: each field once, with
    its help and default; booleans take true|false, or nothing for true."""
    import re
    from dataclasses import fields

    from dcgan.config import RESUMABLE_CHANGES, TrainConfig
    from dcgan.models import ModelConfig

    out = dcgan("train", "--help").stdout
    options = {block.split()[0]: " ".join(block.split()) for block in re.split(r"\n  (?=-)", out)[1:]}
    names = [f.name for f in fields(TrainConfig) if f.name != "model"] + [
        f.name for f in fields(ModelConfig) if f.metadata.get("flag", True)]  # classes: read from the data
    for name in names:
        flag = "--" + name.replace("_", "-")
        assert "(default: " in options[flag], flag
    assert options["--ngf"].startswith("--ngf N G width: channels of G's last hidden layer (default: the "
                                       "preset's: pytorch 64, paper 128")
    assert options["--lr"] == "--lr X Adam learning rate for both networks (default: 0.0002)"
    proc = dcgan("train", "--dry-run", "--sync-bn", "--channels-last", "false", "--n-samples", 16,
                 "--weight-decay", 1e-4, "--out", tmp_path / "r")
    cfg = json.loads(proc.stdout)
    assert cfg["sync_bn"] is True and cfg["channels_last"] is False and cfg["n_samples"] == 16
    assert cfg["weight_decay"] == 1e-4
    assert {"steps", "lr", "device", "out", "data_dir"} <= RESUMABLE_CHANGES
    assert not {"seed", "batch_size", "beta1", "data", "sync_bn", "augment"} & RESUMABLE_CHANGES


def test_every_option_of_every_command_shows_its_default():
    import argparse
    from dataclasses import fields

    from dcgan.cli import parser
    from dcgan.config import TrainConfig
    from dcgan.models import ModelConfig

    settings = {f.name for f in fields(TrainConfig)} | {f.name for f in fields(ModelConfig)}
    sub = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert len(sub.choices) == 19
    for name, command in sub.choices.items():
        text = " ".join(command.format_help().split())
        for action in command._actions:
            default = action.default
            if not action.option_strings or default is None or default is False:
                continue
            if default == argparse.SUPPRESS:  # train: unset settings take the preset's; their help says which
                assert action.dest not in settings or "(default: " in action.help, (name, action.dest)
                continue
            assert action.help and "default" in action.help, (name, action.option_strings)
            assert str(default) in text or "default:" in action.help, (name, action.option_strings)


def test_dry_run_reports_the_images_and_the_schedule_and_checks_the_data(tmp_path):
    plan = json.loads(dcgan("train", "--dry-run", "--batch-size", 100, "--d-steps", 2, "--epochs", 3,
                            "--out", tmp_path / "r").stdout)["plan"]
    # digits: 1,797 images -> 17 batches of 100 per epoch, 2 per step; 3 epochs -> 25 steps
    assert plan == {"images": 1797, "source": "digits", "reading": "in memory", "batches_per_epoch": 17,
                    "steps_per_epoch": 8.5, "total_steps": 25, "epochs": 2.94}
    proc = cli("train", "--dry-run", "--data", tmp_path / "typo", "--out", tmp_path / "r2")
    assert proc.returncode == 1 and "typo does not exist" in proc.stderr
    assert not (tmp_path / "r2").exists() and not (tmp_path / "r").exists()


def test_config_file_and_flags(tmp_path):
    (tmp_path / "c.yaml").write_text("batch_size: 64\nmodel:\n  ngf: 32\n")
    cfg = json.loads(dcgan("train", "--config", tmp_path / "c.yaml", "--ngf", 16, "--dry-run").stdout)
    assert cfg["batch_size"] == 64 and cfg["model"]["ngf"] == 16  # the flag wins over the file
    (tmp_path / "bad.yaml").write_text("batch_size: 64\nlearning_rate: 0.1\n")
    assert_clean_error(cli("train", "--config", tmp_path / "bad.yaml"),
                       "learning_rate", "bad.yaml")
    (tmp_path / "typed.yaml").write_text("batch_size: lots\n")
    assert_clean_error(cli("train", "--config", tmp_path / "typed.yaml"),
                       "batch_size")


def test_resume_continues_and_guards_architecture(trained, tmp_path):
    run = tmp_path / "run"
    dcgan("train", *TINY, "--steps", 2, "--out", run)
    dcgan("train", "--resume", run, "--steps", 5)
    assert checkpoint.load(run)["step"] == 5
    assert_clean_error(cli("train", "--resume", run, "--ngf", 16), "ngf: 8 -> 16")
    assert_clean_error(cli("train", *TINY, "--steps", 2, "--out", run), "--resume")


@pytest.mark.parametrize("args,words", [
    (["--data", "/no/such/folder"], ["/no/such/folder"]),
    (["--image-size", "48"], ["image size 48"]),
    (["--channels", "2"], ["channel count 2"]),
    (["--preset", "huge"], ["huge", "imagenet32"]),
    (["--data", "cifar10", "--data-dir", "/nowhere"], ["data_batch_1", "--data-dir"]),
    (["--device", "cuda:0"] if not torch.cuda.is_available() else ["--lr", "-1"], ["cuda:0"]
     if not torch.cuda.is_available() else ["lr"]),
])
def test_bad_input_is_one_clear_line(tmp_path, args, words):
    assert_clean_error(cli("train", *args, "--out", tmp_path / "r"), *words)


def test_empty_and_non_image_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    assert_clean_error(cli("train", "--data", tmp_path / "empty"), "no images")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.png").write_bytes(b"")
    (tmp_path / "junk" / "b.jpg").write_bytes(b"not a jpeg")
    assert_clean_error(cli("train", "--data", tmp_path / "junk"), "could be read")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_a_checkpoint_then_resume(tmp_path, sig):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "dcgan", "train", *TINY, "--steps", "100000", "--out", str(run),
           "--checkpoint-every", "100000", "--sample-every", "100000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        metrics = run / "metrics.jsonl"
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 3:
            break
        time.sleep(0.1)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "checkpoint saved" in err and "--resume" in err
    assert err.strip().splitlines()[-1].startswith("stopped: ") and "error:" not in err  # a stop
    step = checkpoint.load(run)["step"]
    assert step >= 3  # not one checkpoint interval (100000 steps) lost: the current step is saved
    dcgan("train", "--resume", run, "--steps", step + 2)
    assert checkpoint.load(run)["step"] == step + 2


def test_sample_grid_individual_and_export(trained, tmp_path):
    dcgan("sample", trained, "--n", 10, "--out", tmp_path / "grid.png", "--nrow", 5,
          "--individual", tmp_path / "each", "--seed", 7)
    grid = Image.open(tmp_path / "grid.png")
    assert grid.size == (5 * 18 + 2, 2 * 18 + 2)  # 16px images with 2px padding
    each = sorted((tmp_path / "each").glob("*.png"))
    assert len(each) == 10 and Image.open(each[0]).size == (16, 16)
    dcgan("export", trained, tmp_path / "g.safetensors")
    dcgan("sample", tmp_path / "g.safetensors", "--n", 10, "--individual", tmp_path / "again",
          "--seed", 7)
    again = sorted((tmp_path / "again").glob("*.png"))
    assert [np.asarray(Image.open(p)).tolist() for p in each] == \
           [np.asarray(Image.open(p)).tolist() for p in again]


def test_sample_from_missing_or_bad_file(tmp_path):
    assert_clean_error(cli("sample", tmp_path / "nothing"), "not found")
    (tmp_path / "junk.safetensors").write_bytes(b"garbage")
    assert_clean_error(cli("sample", tmp_path / "junk.safetensors"), "junk.safetensors")
