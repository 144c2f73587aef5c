"""The decoded-dataset cache (dcgan.cache): one memory-mapped uint8 array per dataset, built once in
parallel, resumed when interrupted, rebuilt when damaged, shared safely between processes; training
over the memory map sees the same batches as training in memory."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from clirun import cli, dcgan
from PIL import Image

from dcgan import cache, checkpoint, data
from dcgan.data import batches, open_dataset

TINY = ["--image-size", "16", "--ngf", "8", "--ndf", "8", "--nz", "16", "--tensorboard", "false",
        "--log-every", "1", "--sample-every", "100", "--device", "cpu", "--batch-size", "8"]


def photos(folder: Path, n: int, size: int = 24, seed: int = 0) -> Path:
    """n noise photos (JPEG and PNG) of varying shapes, and one file that is not an image."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for i in range(n):
        h, w = size + i % 5, size + i % 7
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
            folder / f"{i:04d}.{'jpg' if i % 2 else 'png'}")
    return folder


def entries(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and cache.ENTRY.fullmatch(p.name))


def weights(run: Path) -> dict:
    ckpt = checkpoint.load(run)
    return {**{f"G.{k}": v for k, v in ckpt["generator"].items()},
            **{f"D.{k}": v for k, v in ckpt["discriminator"].items()}}


# ---- the entry ------------------------------------------------------------------------------

def test_entry_is_a_plain_npy_file_of_the_decoded_images(tmp_path):
    folder = photos(tmp_path / "photos", 12)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    d = open_dataset(str(folder), 16, 3)
    (entry,) = entries(cache.cache_dir())
    on_disk = np.load(entry / "images.npy")  # any numpy reads it
    assert on_disk.dtype == np.uint8 and on_disk.shape == (12, 3, 16, 16)
    assert np.array_equal(on_disk, d.images.numpy())
    assert (entry / "images.npy").stat().st_size == 128 + 12 * 3 * 16 * 16  # no room left for skipped files
    index = json.loads((entry / "index.json").read_text())
    assert index["names"] == sorted(p.name for p in folder.iterdir() if p.name != "broken.jpg")
    assert index["skipped"] == ["broken.jpg"]
    assert torch.equal(d.images, open_dataset(str(folder), 16, 3, use_cache=False).images)


def test_larger_than_memory_is_memory_mapped_with_the_same_batches(tmp_path, monkeypatch):
    folder = photos(tmp_path / "photos", 37)
    in_memory = open_dataset(str(folder), 16, 3)
    monkeypatch.setenv("DCGAN_MAX_MEMORY_GB", str(37 * 3 * 16 * 16 / 2**30 * 0.99))  # just too small
    mapped = open_dataset(str(folder), 16, 3)
    assert not in_memory.mapped and mapped.mapped and mapped.reading().startswith("memory-mapped from")
    for epoch, start, rank, world in [(0, 0, 0, 1), (1, 2, 0, 1), (3, 0, 1, 2)]:
        a = list(batches(in_memory, 5, seed=7, epoch=epoch, start=start, rank=rank, world_size=world))
        b = list(batches(mapped, 5, seed=7, epoch=epoch, start=start, rank=rank, world_size=world))
        assert len(a) == len(b) > 0 and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_training_through_the_memory_map_gives_the_same_weights(tmp_path):
    folder = photos(tmp_path / "photos", 40)
    runs = {}
    for name, gb in [("memory", "8"), ("mapped", "0")]:
        runs[name] = tmp_path / name
        proc = dcgan("train", "--data", folder, *TINY, "--steps", 6, "--out", runs[name],
                     env={"DCGAN_MAX_MEMORY_GB": gb, "DCGAN_CACHE_DIR": str(tmp_path / f"cache-{name}")})
        assert ("memory-mapped from" in proc.stderr) == (name == "mapped"), proc.stderr
    a, b = weights(runs["memory"]), weights(runs["mapped"])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_no_cache_decodes_while_training_and_writes_no_entry(tmp_path):
    folder = photos(tmp_path / "photos", 20)
    root = tmp_path / "cache"
    proc = dcgan("train", "--data", folder, *TINY, "--steps", 2, "--no-cache", "--workers", 0,
                 "--out", tmp_path / "run", env={"DCGAN_MAX_MEMORY_GB": "0", "DCGAN_CACHE_DIR": str(root)})
    assert "decoded while training" in proc.stderr
    assert not root.exists() or entries(root) == []
    assert json.loads((tmp_path / "run" / "config.json").read_text())["cache"] is False


# ---- dcgan prepare --------------------------------------------------------------------------

def test_prepare_decodes_once_and_training_reads_the_entry(tmp_path):
    folder = photos(tmp_path / "photos", 300)
    env = {"DCGAN_CACHE_DIR": str(tmp_path / "cache")}
    first = dcgan("prepare", folder, "--image-size", 16, "--workers", 2, env=env)
    assert "300 images 16x16x3" in first.stdout and "images/s" in first.stdout, first.stdout
    assert "bytes/image" in first.stdout and "read into memory" in first.stdout
    again = dcgan("prepare", folder, "--image-size", 16, env=env)
    assert "already decoded" in again.stdout
    (entry,) = entries(tmp_path / "cache")
    before = (entry / "images.npy").stat().st_mtime_ns
    run = dcgan("train", "--data", folder, *TINY, "--steps", 1, "--out", tmp_path / "run", env=env)
    assert "in memory" in run.stderr and "decoding" not in run.stderr
    assert (entry / "images.npy").stat().st_mtime_ns == before and entries(tmp_path / "cache") == [entry]


def test_prepare_parallel_equals_one_process(tmp_path):
    folder = photos(tmp_path / "photos", 600)  # three chunks
    one = dcgan("prepare", folder, "--image-size", 16, "--workers", 1,
                env={"DCGAN_CACHE_DIR": str(tmp_path / "c1")})
    two = dcgan("prepare", folder, "--image-size", 16, "--workers", 2,
                env={"DCGAN_CACHE_DIR": str(tmp_path / "c2")})
    assert "decoded in" in one.stdout and "decoded in" in two.stdout
    (a,), (b,) = entries(tmp_path / "c1"), entries(tmp_path / "c2")
    assert (a / "images.npy").read_bytes() == (b / "images.npy").read_bytes()
    assert (a / "index.json").read_bytes() == (b / "index.json").read_bytes()


def test_prepare_bad_input_is_one_error_line(tmp_path):
    proc = cli("prepare", tmp_path / "missing")
    assert proc.returncode == 1 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr
    proc = cli("prepare", photos(tmp_path / "p", 2), "--image-size", 2)
    assert proc.returncode == 1 and "image size must be at least 4" in proc.stderr


# ---- interrupted, damaged, shared -----------------------------------------------------------

class Interrupted(torch.utils.data.Dataset):
    """The folder's images, with Ctrl-C arriving while image `at` is decoded."""

    def __init__(self, stream, at: int):
        self.stream, self.at, self.decoded = stream, at, []

    def __len__(self):
        return len(self.stream)

    def __getitem__(self, i):
        if i == self.at:
            raise KeyboardInterrupt
        self.decoded.append(i)
        return self.stream[i]


def test_interrupted_decoding_continues_where_it_stopped(tmp_path, capsys):
    folder = photos(tmp_path / "photos", 700)
    paths = sorted(folder.iterdir())
    key, shape = {"test": "resume"}, (3, 16, 16)
    stream = data.FolderStream(paths, 16, 3)
    first = Interrupted(stream, at=600)
    with pytest.raises(KeyboardInterrupt):
        cache.load(key, lambda: cache.Source(first), shape, what="photos", workers=1)
    assert json.loads((cache.cache_dir() / f"{cache.digest(key)}.partial" / "progress.json").read_text())[
        "items"] == 512  # two whole chunks were kept
    second = Interrupted(stream, at=-1)
    entry, _ = cache.load(key, lambda: cache.Source(second), shape, what="photos", workers=1)
    assert second.decoded == list(range(512, 700))  # nothing decoded twice
    assert "resuming the interrupted decoding of photos at image 512 of 700" in capsys.readouterr().err
    fresh = np.stack([stream[i].numpy() for i in range(700)])
    assert np.array_equal(entry.images, fresh)


def test_killed_prepare_continues_where_it_stopped(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(900):  # large enough to take a few seconds to decode in one process
        Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(folder / f"{i:04d}.jpg")
    env = {**os.environ, "DCGAN_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.Popen([sys.executable, "-m", "dcgan", "prepare", str(folder), "--image-size", "16",
                             "--workers", "1"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    progress = None
    while time.monotonic() < deadline and proc.poll() is None:
        partial = list((tmp_path / "cache").glob("*.partial/progress.json"))
        progress = json.loads(partial[0].read_text()) if partial else None
        if progress and progress["items"] > 0:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "prepare finished before it could be killed"
    assert entries(tmp_path / "cache") == []  # nothing finished to trust
    done = progress["items"]
    resumed = dcgan("prepare", folder, "--image-size", 16, "--workers", 1,
                    env={"DCGAN_CACHE_DIR": str(tmp_path / "cache")})
    assert f"at image {done:,} of 900" in resumed.stderr
    fresh = dcgan("prepare", folder, "--image-size", 16, env={"DCGAN_CACHE_DIR": str(tmp_path / "fresh")})
    assert "decoded in" in fresh.stdout
    (a,), (b,) = entries(tmp_path / "cache"), entries(tmp_path / "fresh")
    assert (a / "images.npy").read_bytes() == (b / "images.npy").read_bytes()


DAMAGE = {
    "truncated": lambda e: (e / "images.npy").write_bytes((e / "images.npy").read_bytes()[:-7]),
    "header": lambda e: (e / "images.npy").write_bytes(
        (e / "images.npy").read_bytes().replace(b"'shape': (9,", b"'shape': (8,")),
    "index edited": lambda e: (e / "index.json").write_text(
        (e / "index.json").read_text().replace('"im3"', '"im7"')),
    "index missing": lambda e: (e / "index.json").unlink(),
    "labels": lambda e: np.save(e / "labels.npy", np.arange(9, dtype=np.int64)[::-1].copy()),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_entry_is_rebuilt_with_a_one_line_message(tmp_path, capsys, damage):
    images = torch.randint(0, 256, (9, 1, 8, 8), dtype=torch.uint8)
    labels = np.arange(9, dtype=np.int64) % 3
    key, shape = {"test": "damage"}, (1, 8, 8)
    built = []

    def source():
        built.append(1)
        return cache.Source(images, [f"im{i}" for i in range(9)], labels)

    first, _ = cache.load(key, source, shape, what="nine", workers=1)
    DAMAGE[damage](first.folder)
    again, _ = cache.load(key, source, shape, what="nine", workers=1)
    err = capsys.readouterr().err
    assert built == [1, 1] and err.count("\n") == 1 and f"dataset cache {first.folder} is damaged" in err
    assert np.array_equal(again.images, images.numpy()) and np.array_equal(again.labels, labels)
    third, _ = cache.load(key, source, shape, what="nine", workers=1)
    assert built == [1, 1] and np.array_equal(third.images, images.numpy())  # sound again


def test_two_processes_building_the_same_entry_share_one_build(tmp_path):
    folder = photos(tmp_path / "photos", 1200, size=64)
    env = {**os.environ, "DCGAN_CACHE_DIR": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "dcgan", "prepare", str(folder), "--image-size", "16", "--workers", "1"]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert sorted("decoded in" in out for out, _ in outs) == [False, True]  # one built, one reused
    (entry,) = entries(tmp_path / "cache")
    fresh = open_dataset(str(folder), 16, 3, use_cache=False)
    assert np.array_equal(np.load(entry / "images.npy"), fresh.images.numpy())


FULL_DISK = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, like ENOSPC
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
from dcgan.data import open_dataset
d = open_dataset(sys.argv[1], 16, 3)
print(len(d), d.cached)
"""


def test_full_disk_leaves_no_partial_entry_and_still_gives_the_data(tmp_path):
    folder = photos(tmp_path / "photos", 30)
    root = tmp_path / "cache"
    proc = subprocess.run([sys.executable, "-c", FULL_DISK, str(folder)], capture_output=True, text=True,
                          env={**os.environ, "DCGAN_CACHE_DIR": str(root)}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["30", "None"]  # decoded in memory instead
    assert "could not write the dataset cache" in proc.stderr and "File too large" in proc.stderr
    assert sorted(p.name for p in root.iterdir() if not p.name.endswith(".lock")) == []
    proc = cli("prepare", folder, "--image-size", 16, env={"DCGAN_CACHE_DIR": str(root)},
               preexec_fn=lambda: (signal.signal(signal.SIGXFSZ, signal.SIG_IGN),
                                   resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))))
    assert proc.returncode == 1 and "was not cached" in proc.stderr


def test_two_ranks_over_the_memory_map_match_two_ranks_in_memory(tmp_path):
    folder = photos(tmp_path / "photos", 48)
    runs = {}
    for name, gb in [("memory", "8"), ("mapped", "0")]:
        runs[name] = tmp_path / name
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
               "dcgan", "train", "--data", str(folder), *TINY, "--steps", "4", "--out", str(runs[name])]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,  # both ranks find no entry
                              env={**os.environ, "DCGAN_MAX_MEMORY_GB": gb,
                                   "DCGAN_CACHE_DIR": str(tmp_path / f"cache-{name}")})
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "2 ranks" in proc.stderr and ("memory-mapped" in proc.stderr) == (name == "mapped")
        assert len(entries(tmp_path / f"cache-{name}")) == 1
    a, b = weights(runs["memory"]), weights(runs["mapped"])
    assert all(torch.equal(a[k], b[k]) for k in a)
