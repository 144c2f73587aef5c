"""Commands that take a run know its data; mismatches between data, classifier and run are refused or
said, never silently scored."""

import json
import re

import numpy as np
import pytest
import torch
from clirun import cli, dcgan
from PIL import Image
from test_cli import TINY, assert_clean_error

from dcgan.errors import DCGANError
from dcgan.metrics import Extractor


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("rundata")
    grey, rgb = root / "grey", root / "rgb"
    rng = np.random.default_rng(0)
    for folder, shape in ((grey, (16, 16)), (rgb, (16, 16, 3))):
        folder.mkdir()
        for i in range(40):
            Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(folder / f"{i}.png")
    dcgan("train", *TINY, "--steps", 2, "--out", root / "digits")
    dcgan("train", *TINY, "--data", rgb, "--steps", 2, "--out", root / "rgb_run")
    dcgan("train-classifier", "--data", "digits", "--epochs", 1, "--out", root / "clf.safetensors")
    return root


def test_commands_default_to_the_run_data_and_say_when_given_another(setup, tmp_path):
    run = setup / "digits"
    proc = dcgan("features", run, "--split", "test", "--device", "cpu", "--out", tmp_path / "f.npz")
    assert "features of digits test" in proc.stdout and "note:" not in proc.stderr
    proc = dcgan("neighbours", run, "--n", 2, "--k", 2, "--out", tmp_path / "nb")
    assert json.loads((tmp_path / "nb" / "neighbours.json").read_text())["training_images"] == 1797
    proc = dcgan("neighbours", run, "--data", setup / "grey", "--n", 2, "--k", 2,
                 "--out", tmp_path / "nb2")
    assert f"note: the training-image search is {setup / 'grey'}; {run} was trained on digits" in proc.stderr
    assert json.loads((tmp_path / "nb2" / "neighbours.json").read_text())["training_images"] == 40
    dcgan("export", run, tmp_path / "g.safetensors")
    clf = f"classifier:{setup / 'clf.safetensors'}"
    proc = cli("evaluate", tmp_path / "g.safetensors", "--extractor", clf)
    assert_clean_error(proc, "give --data", "exported")


def test_evaluate_says_what_it_compared(setup, tmp_path):
    clf = f"classifier:{setup / 'clf.safetensors'}"
    proc = dcgan("evaluate", setup / "digits", "--extractor", clf, "--n", 3000, "--out", tmp_path / "q.json")
    result = json.loads((tmp_path / "q.json").read_text())
    assert result["split"] == "train" and result["data"] == "digits"  # digits has no test split of its own
    assert "digits has no test split" in result["protocol"]["note"]
    assert "--n 3,000 is more than the 1,797 real images" in result["protocol"]["note"]
    assert "real digits train images" in proc.stdout
    small = dcgan("evaluate", setup / "digits", "--extractor", clf, "--n", 200).stdout
    assert re.search(r"KID [\d.]+ \+- n/a", small)  # 200 images: each KID subset is the whole set
    floor = dcgan("evaluate", setup / "digits", "--extractor", clf, "--n", 200, "--real-vs-real",
                  "--out", tmp_path / "floor.json")
    g_fid = float(re.search(r"FID ([\d.]+)", small).group(1))
    r = json.loads((tmp_path / "floor.json").read_text())
    assert "real vs real" in r["protocol"]["generated"] and r["fid"] < g_fid / 4, (r["fid"], g_fid)
    assert "FID" in floor.stdout


def test_a_classifier_for_other_images_is_refused_or_named(setup, tmp_path):
    clf = f"classifier:{setup / 'clf.safetensors'}"
    assert_clean_error(cli("evaluate", setup / "rgb_run", "--extractor", clf, "--n", 50),
                       "grey", "RGB", "train-classifier")
    assert_clean_error(cli("train", *TINY, "--data", setup / "rgb", "--steps", 2, "--eval-every", 1,
                           "--eval-n", 20, "--eval-extractor", clf, "--out", tmp_path / "r"),
                       "grey", "RGB")
    assert not (tmp_path / "r" / "checkpoint.pt").exists()
    proc = dcgan("evaluate", setup / "digits", "--data", setup / "grey", "--extractor", clf, "--n", 20)
    assert f"classifier {setup / 'clf.safetensors'} was trained on digits" in proc.stderr
    extractor = Extractor(clf)
    with pytest.raises(DCGANError, match="tells 10 classes apart .* has 3"):
        extractor.check_data("three-classes", 1, torch.tensor([0, 1, 2, 2]))
