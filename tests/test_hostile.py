"""Hostile and malformed input: the two code-execution attacks, and one clear line for every bad input."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from clirun import cli
from PIL import Image

from dcgan.errors import DCGANError

EPS = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\n"
       b"newpath 0 0 moveto 16 16 lineto stroke\nshowpage\n")
TINY = ["--image-size", "16", "--ngf", "8", "--ndf", "8", "--nz", "16", "--batch-size", "4",
        "--tensorboard", "false", "--log-every", "1", "--sample-every", "1000"]


# ---- attack 1: the Inception weights file is read once, weights-only ----------------------

def _inception_state_dict() -> dict:
    """A state dict in the pt_inception format (random values), built without loading anything."""
    from torch import nn
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    load, load_state = torch.load, nn.Module.load_state_dict
    torch.load, nn.Module.load_state_dict = (lambda *a, **k: {}), (lambda self, *a, **k: None)
    try:
        return FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], "unused").state_dict()
    finally:
        torch.load, nn.Module.load_state_dict = load, load_state


def test_inception_weights_swapped_after_the_check_never_run(tmp_path, monkeypatch):
    """The file is replaced by a hostile pickle right after the first read of it: nothing may read it
    again (torch-fidelity used to, with weights_only=False), so the pickle never runs."""
    from dcgan.metrics import Extractor

    weights = tmp_path / "pt_inception.pth"
    torch.save(_inception_state_dict(), weights)
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"x": Exploit()}, tmp_path / "evil.pth")
    evil = (tmp_path / "evil.pth").read_bytes()
    real_load, real_read = torch.load, type(weights).read_bytes
    opened = []

    def swap_after(result):
        weights.write_bytes(evil)  # the attacker wins every race
        return result

    def load(f, *a, **k):
        if isinstance(f, (str, os.PathLike)):
            opened.append((str(f), k.get("weights_only")))
        return swap_after(real_load(f, *a, **k)) if str(f) == str(weights) else real_load(f, *a, **k)

    def read_bytes(self):
        data = real_read(self)
        return swap_after(data) if str(self) == str(weights) else data

    monkeypatch.setattr(torch, "load", load)
    monkeypatch.setattr(type(weights), "read_bytes", read_bytes)
    f = Extractor("inception", str(weights))
    assert f(torch.zeros(1, 3, 16, 16, dtype=torch.uint8)).shape == (1, 2048)
    assert not marker.exists()
    assert all(weights_only for _, weights_only in opened)  # no path is ever unpickled freely


def test_inception_weights_of_another_network_are_a_clear_error(tmp_path):
    from dcgan.metrics import Extractor

    torch.save({"fc.weight": torch.zeros(3, 3)}, tmp_path / "other.pth")
    with pytest.raises(DCGANError, match="other.pth.*Inception"):
        Extractor("inception", str(tmp_path / "other.pth"))


# ---- attack 2: no image decoder beyond the accepted formats ------------------------------

@pytest.fixture
def fake_gs(tmp_path):
    """A `gs` first on PATH that records each run: Pillow's EPS plugin would start it."""
    bin_dir, ran = tmp_path / "bin", tmp_path / "gs_ran"
    bin_dir.mkdir()
    (bin_dir / "gs").write_text(f"#!/bin/sh\necho \"$@\" >> {ran}\nexit 1\n")
    (bin_dir / "gs").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    assert subprocess.run(["gs"], env=env).returncode == 1 and ran.exists()  # the fake is found first
    ran.unlink()
    return env, ran


@pytest.fixture
def folder_with_eps(tmp_path):
    root = tmp_path / "scraped"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / f"{i}.png")
    (root / "x.png").write_bytes(EPS)  # PostScript named like an image
    return root


def test_eps_named_png_never_starts_ghostscript_in_training(fake_gs, folder_with_eps, tmp_path):
    env, ran = fake_gs
    proc = cli("train", "--data", folder_with_eps, *TINY, "--steps", 1, "--out", tmp_path / "run", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "x.png" in proc.stderr  # skipped as unreadable, and said so
    assert not ran.exists()


def test_eps_named_png_never_starts_ghostscript_in_dedup_and_feature_maps(fake_gs, folder_with_eps,
                                                                          tmp_path):
    env, ran = fake_gs
    proc = cli("dedup", folder_with_eps, "--out", tmp_path / "report", "--epochs", 1, env=env)
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "run"
    assert cli("train", *TINY, "--steps", 1, "--out", run, env=env).returncode == 0
    proc = cli("feature-maps", run, "--net", "d", "--image", folder_with_eps / "x.png", "--out",
               tmp_path / "fm", env=env)
    assert proc.returncode == 1 and "x.png" in proc.stderr and "Traceback" not in proc.stderr
    assert not ran.exists()


def test_decode_image_accepts_only_the_listed_formats(tmp_path):
    from dcgan.data import decode_image

    Image.new("RGB", (20, 20), "red").save(tmp_path / "a.gif")
    (tmp_path / "b.gif").write_bytes((tmp_path / "a.gif").read_bytes())
    os.rename(tmp_path / "b.gif", tmp_path / "b.png")  # a GIF named .png
    with pytest.raises(Exception, match="cannot identify"):
        decode_image(tmp_path / "b.png", 16, 3)
    for fmt, ext in (("PNG", "png"), ("JPEG", "jpg"), ("WEBP", "webp"), ("BMP", "bmp")):
        Image.new("RGB", (20, 20), "red").save(tmp_path / f"ok.{ext}", fmt)
        assert decode_image(tmp_path / f"ok.{ext}", 16, 3).shape == (3, 16, 16)


# ---- runs are never destroyed -------------------------------------------------------------

def test_stale_temp_cleanup_removes_only_dead_writers_temp_files(tmp_path):
    from dcgan.train import remove_stale_temps

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()  # a process that has exited
    names = {f".checkpoint.pt.tmp{dead}": True, f".checkpoint.pt.tmp{os.getppid()}": False,  # live writer
             ".env.tmpl": False, ".notes.tmp": False, ".x.tmpabc": False}
    for name in names:
        (tmp_path / name).write_text("data")
    (tmp_path / f".folder.tmp{dead}").mkdir()  # a directory of that shape is never touched
    remove_stale_temps(tmp_path)
    for name, removed in names.items():
        assert (tmp_path / name).exists() != removed, name
    assert (tmp_path / f".folder.tmp{dead}").is_dir()


def test_resume_from_a_snapshot_or_the_checkpoint_file(tmp_path):
    from dcgan import checkpoint

    run = tmp_path / "run"
    args = [*TINY, "--batch-size", 16, "--snapshot-every", 2, "--checkpoint-every", 1]
    assert cli("train", *args, "--steps", 4, "--out", run).returncode == 0
    before = (run / "checkpoint.pt").read_bytes()
    proc = cli("train", "--resume", run / "checkpoint.pt", "--steps", 5)
    assert proc.returncode == 0, proc.stderr
    assert checkpoint.load(run)["step"] == 5
    proc = cli("train", "--resume", run / "snapshots" / "step_00000002.pt", "--steps", 3)
    assert proc.returncode == 0, proc.stderr
    assert "from step 2" in proc.stderr
    assert checkpoint.load(run)["step"] == 3
    assert checkpoint.load(run / "superseded" / "step_00000005" / "checkpoint.pt")["step"] == 5
    assert before != (run / "checkpoint.pt").read_bytes()
    steps = [int(line.split('"step": ')[1].split(",")[0]) for line in
             (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]


# ---- a bug is one line too, with the traceback kept ---------------------------------------

BUGGY = ("import sys, dcgan.cli as c\n"
         "def broken(args): raise ZeroDivisionError('division by zero in the sampler')\n"
         "c.cmd_sample = broken  # the handler `dcgan sample` calls\n"
         "sys.exit(c.main(['sample', 'x']))\n")


def test_a_genuine_bug_is_one_line_naming_the_traceback_file(tmp_path):
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    env.pop("DCGAN_DEBUG", None)
    proc = subprocess.run([sys.executable, "-c", BUGGY], capture_output=True, text=True, env=env)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("error: this is a bug in dcgan") and "ZeroDivisionError" in line
    [saved] = tmp_path.glob("dcgan-bug-*.txt")
    assert str(saved) in line and "Traceback" in saved.read_text() and "broken" in saved.read_text()
    proc = subprocess.run([sys.executable, "-c", BUGGY], capture_output=True, text=True,
                          env={**env, "DCGAN_DEBUG": "1"})
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "in broken" in proc.stderr


def test_a_bad_flag_is_one_error_line_with_exit_code_1():
    proc = cli("train", "--lr", "fast")
    assert proc.returncode == 1 and proc.stderr.count("error:") == 1 and "'fast'" in proc.stderr


# ---- files: names that are not UTF-8, an unusable cache, float pixels -----------------------

def test_a_folder_with_non_utf8_file_names_trains_and_dedups(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        name = os.fsdecode(b"caf\xe9-%d.png" % i) if i < 4 else f"{i}.png"  # Latin-1 names
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / name)
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(root / os.fsdecode(b"dup\xff-a.png"))
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(root / os.fsdecode(b"dup\xff-b.png"))
    proc = cli("train", "--data", root, *TINY, "--steps", 1, "--out", tmp_path / "run")
    assert proc.returncode == 0, proc.stderr
    assert "10 images" in proc.stderr
    proc = cli("dedup", root, "--out", tmp_path / "report", "--epochs", 1)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "report" / "duplicates.txt").read_bytes() == b"dup\xff-b.png\n"
    exclude = tmp_path / "report" / "duplicates.txt"
    proc = cli("train", "--data", root, *TINY, "--steps", 1, "--exclude", exclude, "--out", tmp_path / "run2")
    assert proc.returncode == 0 and "9 images" in proc.stderr, proc.stderr


def test_an_unusable_cache_warns_and_training_goes_on(tmp_path, folder_with_eps):
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    proc = cli("train", "--data", folder_with_eps, *TINY, "--steps", 1, "--out", tmp_path / "run",
               env={"DCGAN_CACHE_DIR": str(blocker / "sub")})
    assert proc.returncode == 0, proc.stderr
    assert "could not write the dataset cache" in proc.stderr and "without it" in proc.stderr


def test_nan_float_pixels_are_refused_not_cast():
    from dcgan.data import _to_mode

    img = Image.fromarray(np.array([[0.0, np.nan], [1.0, 2.0]], dtype=np.float32), "F")
    with pytest.raises(ValueError, match="NaN"):
        _to_mode(img, "L")


# ---- messages that name the real cause ---------------------------------------------------

def test_failed_writes_name_the_real_cause(tmp_path):
    from dcgan.checkpoint import atomic_write

    with pytest.raises(DCGANError) as info:  # no folder: not a full disk, and nothing was there before
        atomic_write(tmp_path / "missing" / "x.json", lambda f: f.write(b"{}"))
    assert "no such file or folder" in str(info.value) and "disk" not in str(info.value)
    assert "intact" not in str(info.value)
    (tmp_path / "folder.json").mkdir()
    with pytest.raises(DCGANError, match="folder"):
        atomic_write(tmp_path / "folder.json", lambda f: f.write(b"{}"))


def test_a_pickle_refusal_carries_no_advice_to_load_it_unsafely(tmp_path):
    from dcgan import checkpoint

    class Exploit:
        def __reduce__(self):
            return (os.system, ("true",))

    torch.save({"format": "dcgan-checkpoint", "x": Exploit()}, tmp_path / "evil.pt")
    with pytest.raises(DCGANError) as info:
        checkpoint.load(tmp_path / "evil.pt")
    assert "refusing" in str(info.value) and "weights_only=False" not in str(info.value)
    assert "\x1b[" not in str(info.value)  # none of torch's coloured advice


def test_an_export_given_as_a_checkpoint_is_named_as_such(tmp_path):
    from safetensors.torch import save_file

    from dcgan import checkpoint

    save_file({"w": torch.zeros(2)}, tmp_path / "g.pt", metadata={"format": "dcgan-generator"})
    with pytest.raises(DCGANError, match="exported generator") as info:
        checkpoint.load(tmp_path / "g.pt")
    assert "run code" not in str(info.value)
