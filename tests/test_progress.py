"""Long commands show progress: a plain line with done/total, rate and ETA when stderr is not a terminal."""

import os
import re

import numpy as np
import pytest
from clirun import dcgan
from PIL import Image
from test_cli import TINY

from dcgan.progress import Progress, duration

LINE = r"{what}: [\d,]+/[\d,]+ {unit} \(\d+%\), [\d,.]+ {unit}/s, ETA \d+:\d\d"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run = tmp_path_factory.mktemp("progress") / "run"
    dcgan("train", *TINY, "--steps", 2, "--out", run)
    return run


@pytest.fixture
def every_update(monkeypatch):
    monkeypatch.setenv("DCGAN_PROGRESS_SECONDS", "0")
    return {**os.environ, "DCGAN_PROGRESS_SECONDS": "0"}


def test_plain_lines_carry_done_total_rate_and_eta(every_update, capsys):
    with Progress(4, "work", "img") as bar:
        for _ in range(4):
            bar.update()
    err = capsys.readouterr().err
    assert len(re.findall(LINE.format(what="work", unit="img"), err)) == 3  # the last update: the summary
    assert "work: 1/4 img (25%)" in err and re.search(r"work: 4 img in \d+:\d\d", err)
    with Progress(4, None) as quiet:  # a library call inside a bigger job: nothing
        quiet.update(4)
    assert capsys.readouterr().err == ""
    assert duration(65) == "1:05" and duration(3725) == "1:02:05"


def test_long_commands_report_progress_when_redirected(run, tmp_path, every_update):
    err = dcgan("features", run, "--data", "digits", "--split", "test", "--device", "cpu", "--out",
                tmp_path / "f.npz", env=every_update).stderr
    assert re.search(LINE.format(what="D features of digits test", unit="img"), err), err
    err = dcgan("probe", run, "--data", "digits", "--protocol", "full", "--baselines", "pixels,random",
                "--random-inits", 2, "--max-train", 300, "--max-test", 100, "--device", "cpu", "--out",
                tmp_path / "probe", env=every_update).stderr
    assert re.search(LINE.format(what=r"probe \(full\) on digits", unit="feature sets"), err), err
    err = dcgan("neighbours", run, "--data", "digits", "--n", 2, "--out", tmp_path / "nb",
                env=every_update).stderr  # one chunk of 2,048 holds digits: the summary line alone
    assert re.search(r"nearest training images in pixels: 1,797 img in \d+:\d\d", err), err
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(folder / f"{i}.png")
    err = dcgan("dedup", folder, "--epochs", 3, "--bits", 16, "--out", tmp_path / "dd",
                env=every_update).stderr
    assert re.search(LINE.format(what=f"hashing autoencoder on {re.escape(str(folder))}", unit="epochs"), err)
    err = dcgan("project", run, folder / "0.png", "--steps", 3, "--restarts", 1, "--out", tmp_path / "pj",
                env=every_update).stderr
    assert re.search(LINE.format(what=r"projecting 1 image\(s\)", unit="steps"), err), err


def test_redirected_training_and_classifier_report_their_eta(tmp_path, every_update):
    err = dcgan("train", *TINY, "--steps", 4, "--log-every", 1, "--sample-every", 100,
                "--out", tmp_path / "r", env=every_update).stderr
    lines = re.findall(r"step (\d)/4 loss_D [\d.]+ loss_G [\d.]+ .* img/s, ETA (\d+:\d\d|unknown)", err)
    assert [int(s) for s, _ in lines] == [1, 2, 3, 4], err  # each row, not only every --sample-every
    err = dcgan("train-classifier", "--data", "digits", "--epochs", 1, "--out", tmp_path / "c.safetensors",
                env=every_update).stderr
    assert re.search(LINE.format(what=r"classifier on digits, 1 epoch\(s\)", unit="img"), err), err
    clf = f"classifier:{tmp_path / 'c.safetensors'}"
    err = dcgan("evaluate", tmp_path / "r", "--extractor", clf, "--n", 500, env=every_update).stderr
    assert re.search(LINE.format(what="classifier:.* features of the real images", unit="img"), err), err
