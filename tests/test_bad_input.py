"""Every bad input to every command: exit code 1, exactly one `error:` line naming the file or value, no
traceback, and the run directory untouched.

Each case runs `dcgan.cli.main(argv)` (what the `dcgan` script runs) in its own process, forked from one
driver process that imported dcgan once: a real process per case, without paying torch's import time
for each of the many cases.
"""

import gzip
import hashlib
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from clirun import cli
from PIL import Image

FIRST = "project_and_reshape.project.weight"  # G's first tensor
TINY = ["--image-size", "16", "--ngf", "8", "--ndf", "8", "--nz", "16", "--batch-size", "4",
        "--tensorboard", "false", "--log-every", "1", "--sample-every", "1000"]

DRIVER = r"""
import hashlib, io, json, os, signal, sys, time, traceback
from pathlib import Path

import dcgan.cli

cases, errs, run = json.load(open(sys.argv[1])), Path(sys.argv[2]), Path(sys.argv[3])


def digest(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def entries(folder):  # everything in the workspace but the driver's own files
    return {str(p) for p in folder.rglob("*") if errs not in p.parents and "cache" not in p.parts}


results = {}
for n, (name, case) in enumerate(cases.items()):
    err = errs / f"{n}.err"
    before, listed = digest(run), entries(run.parent)
    pid = os.fork()
    if pid == 0:  # the case: stderr to a file, stdout discarded, then what the dcgan script does
        os.dup2(os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 2)
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
        sys.stderr = io.TextIOWrapper(os.fdopen(2, "wb", buffering=0), write_through=True)
        os.environ.update(case["env"])
        try:
            code = dcgan.cli.main(case["argv"])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:
            traceback.print_exc()
            code = 99
        os._exit(code)
    deadline = time.time() + 120
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.time() > deadline:
            os.kill(pid, signal.SIGKILL)  # reported as rc -9: a hang
        time.sleep(0.01)
    results[name] = {"rc": os.waitstatus_to_exitcode(status), "stderr": err.read_text(errors="replace"),
                     "run_changed": digest(run) != before,
                     "left_behind": sorted(entries(run.parent) - listed)}
json.dump(results, open(errs / "results.json", "w"))
"""


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _idx(path: Path, dtype: int, dims: tuple, body: bytes, compress: bool = True) -> None:
    raw = bytes([0, 0, dtype, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims) + body
    path.write_bytes(gzip.compress(raw) if compress else raw)


def _mnist_dir(root: Path, images: tuple[tuple, bytes], labels: tuple[tuple, bytes]) -> Path:
    root.mkdir()
    _idx(root / "train-images-idx3-ubyte.gz", 0x08, *images)
    _idx(root / "train-labels-idx1-ubyte.gz", 0x08, *labels)
    return root


def _cifar_dir(root: Path, data, labels) -> Path:
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    for i in range(1, 6):
        (d / f"data_batch_{i}").write_bytes(pickle.dumps({b"data": data, b"labels": labels}))
    return root


def _svhn_dir(root: Path, x, y) -> Path:
    from scipy.io import savemat

    root.mkdir()
    savemat(root / "train_32x32.mat", {"X": x, "y": y})
    return root


def _checkpoint(run: Path, path: Path, change) -> Path:
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    change(ckpt)
    torch.save(ckpt, path)
    return path


def _export(run: Path, path: Path, change_meta=None, change_tensors=None) -> Path:
    from safetensors.torch import save_file

    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    tensors = {k: v.contiguous() for k, v in ckpt["generator"].items()}
    meta = {"format": "dcgan-generator", "model": json.dumps(ckpt["config"]["model"]), "step": "2"}
    if change_meta:
        change_meta(meta)
    if change_tensors:
        change_tensors(tensors)
    save_file(tensors, path, metadata=meta)
    return path


def _classifier(path: Path, meta: dict) -> Path:
    from safetensors.torch import save_file

    from dcgan.metrics import Classifier

    save_file(Classifier(1).state_dict(), path, metadata={"format": "dcgan-classifier", **meta})
    return path


def _make_files(w: Path, run: Path) -> None:
    """The bad inputs CASES name, in the workspace w, several made from the tiny run's checkpoint."""
    rng = np.random.default_rng(0)
    images = w / "images"
    images.mkdir()
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(images / f"{i}.png")
    (w / "empty").mkdir()
    (w / "x.png").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\nshowpage\n")
    (w / "afile").write_text("not a folder")
    (w / "nonutf8.yaml").write_bytes(b"lr: 0.1\n# \xff\xfe\n")
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)) + "lr: *i\n"
    (w / "bomb.yaml").write_text(bomb)
    (w / "list.yaml").write_text("- lr\n- 0.1\n")
    (w / "nan.yaml").write_text("lr: .nan\n")
    fifo(w / "fifo")
    _mnist_dir(w / "mnist_zero", ((0, 28, 28), b""), ((0,), b""))
    mnist_bomb = w / "mnist_bomb"
    mnist_bomb.mkdir()
    _idx(mnist_bomb / "train-images-idx3-ubyte.gz", 0x08, (2, 28, 28), bytes(50_000_000))  # 50 MB unzipped
    _idx(mnist_bomb / "train-labels-idx1-ubyte.gz", 0x08, (2,), bytes(2))
    _mnist_dir(w / "mnist_huge", ((2**32 - 1, 2**32 - 1, 2**32 - 1), b""), ((2,), bytes(2)))
    _mnist_dir(w / "mnist_labels", ((2, 28, 28), bytes(2 * 784)), ((2,), bytes([3, 12])))
    _cifar_dir(w / "cifar_float", rng.random((4, 3072)), [0, 1, 2, 3])
    _cifar_dir(w / "cifar_labels", np.zeros((4, 3072), np.uint8), ["cat", "dog", "a", "b"])
    _cifar_dir(w / "cifar_nan", np.zeros((4, 3072), np.uint8), [0.0, float("nan"), 1.0, 2.0])
    _svhn_dir(w / "svhn_float", rng.random((32, 32, 3, 4)), np.ones((4, 1)))
    _svhn_dir(w / "svhn_labels", np.zeros((32, 32, 3, 4), np.uint8), np.array([[0], [1], [2], [11]]))

    _checkpoint(run, w / "no_generator.pt", lambda c: c.pop("generator"))
    _checkpoint(run, w / "bad_rng.pt", lambda c: c["rng"].update(torch=torch.zeros(3)))
    _checkpoint(run, w / "bad_opt.pt", lambda c: c["optimizer_g"].update(param_groups=[]))
    _checkpoint(run, w / "nan_lr.pt", lambda c: c["config"].update(lr=float("nan")))
    _checkpoint(run, w / "str_size.pt", lambda c: c["config"]["model"].update(image_size="big"))
    _checkpoint(run, w / "wrong_shape.pt", lambda c: c["generator"].update({FIRST: torch.zeros(3, 3)}))
    _checkpoint(run, w / "nan_weights.pt",
                lambda c: c["discriminator"][next(iter(c["discriminator"]))].fill_(float("nan")))
    _checkpoint(run, w / "bad_step.pt", lambda c: c.update(step="two"))
    _export(run, w / "bad_meta.safetensors", change_meta=lambda m: m.update(model="{not json"))
    _export(run, w / "bad_nz.safetensors", change_meta=lambda m: m.update(
        model=json.dumps({**json.loads(m["model"]), "nz": -3})))
    _export(run, w / "bad_shape.safetensors", change_tensors=lambda t: t.update({FIRST: torch.zeros(2)}))
    good_export = _export(run, w / "g.safetensors")
    (w / "export_named.pt").write_bytes(good_export.read_bytes())
    _classifier(w / "cls_meta.safetensors", {"channels": "7", "classes": "10"})
    _classifier(w / "cls_classes.safetensors", {"channels": "1", "classes": "-1"})
    marker = w / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"x": Exploit()}, w / "evil.pth")
    one_box = {"boxes": [{"seed": 0, "index": 0, "boxes": [[0, 0, 8, 8]]}]}
    (w / "boxes_nonutf8.json").write_bytes(json.dumps(one_box).encode() + b"\xff")
    (w / "boxes_many.json").write_text(json.dumps({"boxes": [{"seed": 0, "index": i, "boxes": [[0, 0, 4, 4]]}
                                                             for i in range(2000)]}))
    (w / "boxes_outside.json").write_text(json.dumps({"boxes": [{"seed": 0, "index": 0,
                                                                 "boxes": [[0, 0, 99, 4]]}]}))
    (w / "boxes_ok.json").write_text(json.dumps(one_box))


CASES = {
    # train: settings
    "train lr nan": (["train", *TINY, "--lr", "nan", "--out", "{w}/out/a"], ["lr", "nan"], {}),
    "train lr negative": (["train", *TINY, "--lr", "-1", "--out", "{w}/out/a"], ["lr", "-1"], {}),
    "train weight decay negative": (["train", *TINY, "--weight-decay=-1e-5"], ["weight_decay"], {}),
    "train weight decay inf": (["train", *TINY, "--weight-decay", "inf"], ["weight_decay", "inf"], {}),
    "train rollback factor nan": (["train", *TINY, "--rollback-lr-factor", "nan"],
                                  ["rollback_lr_factor"], {}),
    "train label smoothing": (["train", *TINY, "--label-smoothing", "1.5"], ["label_smoothing", "1.5"], {}),
    "train device tpu": (["train", *TINY, "--device", "tpu", "--out", "{w}/out/a"], ["device", "tpu"], {}),
    "train device cuda absent": (["train", *TINY, "--device", "cuda:0", "--steps", "1", "--out", "{w}/out/b"],
                                 ["cuda:0"], {}),
    "train out is a file": (["train", *TINY, "--steps", "1", "--out", "{w}/afile"], ["afile", "file"], {}),
    "train out under a file": (["train", *TINY, "--steps", "1", "--out", "{w}/afile/run"], ["afile"], {}),
    "train eval-n too small": (["train", *TINY, "--eval-every", "1", "--eval-n", "3"], ["eval_n", "3"], {}),
    "train steps zero": (["train", *TINY, "--steps", "0"], ["steps", "0"], {}),
    "train seed negative": (["train", *TINY, "--seed", "-1"], ["seed", "-1"], {}),
    "train seed too large": (["train", *TINY, "--seed", str(2**63)], ["seed", str(2**63)], {}),
    "train batch size zero": (["train", *TINY, "--batch-size", "0"], ["batch_size", "0"], {}),
    "train ngf huge": (["train", *TINY, "--ngf", "100000"], ["ngf", "100000"], {}),
    "train unknown preset": (["train", "--preset", "stylegan"], ["stylegan"], {}),
    "train unknown flag": (["train", "--learning-rate", "1"], ["--learning-rate"], {}),
    "train lr not a number": (["train", "--lr", "fast"], ["--lr", "fast"], {}),
    "train eval extractor": (["train", *TINY, "--eval-extractor", "vgg"], ["eval_extractor", "vgg"], {}),
    # train: files
    "config not utf-8": (["train", "--config", "{w}/nonutf8.yaml"], ["nonutf8.yaml", "UTF-8"], {}),
    "config is a fifo": (["train", "--config", "{w}/fifo"], ["fifo", "regular file"], {}),
    "config yaml alias bomb": (["train", "--config", "{w}/bomb.yaml"], ["bomb.yaml", "lr"], {}),
    "config a list": (["train", "--config", "{w}/list.yaml"], ["list.yaml", "mapping"], {}),
    "config nan lr": (["train", "--config", "{w}/nan.yaml", "--steps", "1"], ["lr", "nan"], {}),
    "config missing": (["train", "--config", "{w}/nowhere.yaml"], ["nowhere.yaml"], {}),
    "exclude is a fifo": (["train", *TINY, "--exclude", "{w}/fifo"], ["fifo", "regular file"], {}),
    "exclude missing": (["train", *TINY, "--exclude", "{w}/nowhere.txt"], ["nowhere.txt"], {}),
    "data empty folder": (["train", *TINY, "--data", "{w}/empty"], ["empty", "no images"], {}),
    "data batch larger than folder": (["train", *TINY, "--data", "{w}/images", "--batch-size", "64"],
                                      ["batch size 64", "--batch-size 8"], {}),
    "idx zero dimensions": (["train", "--data", "mnist", "--data-dir", "{w}/mnist_zero"], ["zero"], {}),
    "idx gzip bomb": (["train", "--data", "mnist", "--data-dir", "{w}/mnist_bomb"],
                      ["train-images-idx3-ubyte.gz", "more than"], {}),
    "idx huge header": (["train", "--data", "mnist", "--data-dir", "{w}/mnist_huge"],
                        ["train-images-idx3-ubyte.gz", "bytes"], {}),
    "mnist labels out of range": (["train", "--data", "mnist", "--data-dir", "{w}/mnist_labels"],
                                  ["labels", "0 to 9"], {}),
    "cifar float pixels": (["train", "--data", "cifar10", "--data-dir", "{w}/cifar_float"],
                           ["data_batch_1", "uint8"], {}),
    "cifar text labels": (["train", "--data", "cifar10", "--data-dir", "{w}/cifar_labels"],
                          ["data_batch_1", "labels"], {}),
    "cifar nan labels": (["train", "--data", "cifar10", "--data-dir", "{w}/cifar_nan"],
                         ["data_batch_1", "labels"], {}),
    "svhn float pixels": (["train", "--data", "svhn", "--data-dir", "{w}/svhn_float"],
                          ["train_32x32.mat", "uint8"], {}),
    "svhn labels out of range": (["train", "--data", "svhn", "--data-dir", "{w}/svhn_labels"],
                                 ["train_32x32.mat", "labels"], {}),
    # train: environment
    "WORLD_SIZE not a number": (["train", *TINY, "--steps", "1", "--out", "{w}/out/c"], ["WORLD_SIZE", "two"],
                                {"WORLD_SIZE": "two"}),
    "RANK out of range": (["train", *TINY, "--steps", "1", "--out", "{w}/out/d"], ["RANK", "5"],
                          {"WORLD_SIZE": "2", "RANK": "5"}),
    "DCGAN_MAX_MEMORY_GB bad": (["train", *TINY, "--data", "{w}/images", "--steps", "1", "--out",
                                 "{w}/out/e"],
                                ["DCGAN_MAX_MEMORY_GB", "lots"], {"DCGAN_MAX_MEMORY_GB": "lots"}),
    # train: resume
    "resume snapshot other settings": (["train", "--resume", "{run}/snapshots/step_00000001.pt", "--nz",
                                        "32"],
                                       ["nz: 16 -> 32"], {}),
    "resume no generator": (["train", "--resume", "{w}/no_generator.pt"],
                            ["no_generator.pt", "generator"], {}),
    "resume bad rng": (["train", "--resume", "{w}/bad_rng.pt"], ["bad_rng.pt", "random-number"], {}),
    "resume bad optimizer": (["train", "--resume", "{w}/bad_opt.pt"], ["bad_opt.pt", "optimizer_g"], {}),
    "resume nan lr": (["train", "--resume", "{w}/nan_lr.pt"], ["nan_lr.pt", "lr"], {}),
    "resume config wrong type": (["train", "--resume", "{w}/str_size.pt"], ["str_size.pt", "big"], {}),
    "resume bad step": (["train", "--resume", "{w}/bad_step.pt"], ["bad_step.pt", "step"], {}),
    "resume an export": (["train", "--resume", "{w}/export_named.pt"],
                         ["export_named.pt", "safetensors"], {}),
    # sample
    "sample unwritable type": (["sample", "{run}", "--out", "{w}/out/x.xyz"], ["x.xyz", ".png"], {}),
    "sample over the checkpoint": (["sample", "{run}", "--out", "{run}/checkpoint.pt", "--n", "4"],
                                   ["checkpoint.pt"], {}),
    "sample over a run sample": (["sample", "{run}", "--out", "{run}/samples/final.png"],
                                 ["final.png", "run"], {}),
    "sample n zero": (["sample", "{run}", "--n", "0"], ["--n", "0"], {}),
    "sample n huge": (["sample", "{run}", "--n", "1000000000"], ["--n", "1000000000"], {}),
    "sample seed negative": (["sample", "{run}", "--seed", "-5", "--out", "{w}/out/s.png"],
                             ["seed", "-5"], {}),
    "sample wrong shape": (["sample", "{w}/wrong_shape.pt", "--out", "{w}/out/s.png"],
                           ["wrong_shape.pt", FIRST], {}),
    "feature-maps nan weights": (["feature-maps", "{w}/nan_weights.pt", "--net", "d", "--out",
                                  "{w}/out/fm"], ["nan_weights.pt", "NaN"],
                           {}),
    "sample export bad metadata": (["sample", "{w}/bad_meta.safetensors", "--out", "{w}/out/s.png"],
                                   ["bad_meta.safetensors"], {}),
    "sample export bad nz": (["sample", "{w}/bad_nz.safetensors", "--out", "{w}/out/s.png"],
                             ["bad_nz.safetensors", "nz"], {}),
    "sample export wrong shape": (["sample", "{w}/bad_shape.safetensors", "--out", "{w}/out/s.png"],
                                  ["bad_shape.safetensors"], {}),
    "sample a fifo": (["sample", "{w}/fifo", "--out", "{w}/out/s.png"], ["fifo"], {}),
    "sample device": (["sample", "{run}", "--device", "tpu", "--out", "{w}/out/s.png"], ["tpu"], {}),
    # export
    "export over the checkpoint": (["export", "{run}", "{run}/checkpoint.pt"], ["checkpoint.pt"], {}),
    "export over the config": (["export", "{run}", "{run}/config.json"], ["config.json", ".safetensors"], {}),
    "export missing keys": (["export", "{w}/no_generator.pt", "{w}/out/g.safetensors"],
                            ["no_generator.pt"], {}),
    "export an export": (["export", "{w}/g.safetensors", "{w}/out/g2.safetensors"], ["g.safetensors"], {}),
    # evaluate
    "evaluate over the checkpoint": (["evaluate", "{run}", "--data", "digits", "--out",
                                      "{run}/checkpoint.pt"],
                                     ["checkpoint.pt"], {}),
    "evaluate n too small": (["evaluate", "{run}", "--data", "digits", "--n", "3"], ["n", "3"], {}),
    "evaluate split": (["evaluate", "{run}", "--data", "digits", "--split", "validation"],
                       ["validation"], {}),
    "evaluate classifier metadata": (["evaluate", "{run}", "--data", "digits", "--extractor",
                                      "classifier:{w}/cls_meta.safetensors"], ["cls_meta.safetensors",
                                      "channels"], {}),
    "evaluate classifier classes": (["evaluate", "{run}", "--data", "digits", "--extractor",
                                     "classifier:{w}/cls_classes.safetensors"], ["cls_classes.safetensors",
                                     "classes"], {}),
    "evaluate classifier fifo": (["evaluate", "{run}", "--data", "digits", "--extractor",
                                  "classifier:{w}/fifo"],
                                 ["fifo"], {}),
    "evaluate hostile inception": (["evaluate", "{run}", "--data", "digits", "--inception-weights",
                                    "{w}/evil.pth"],
                                   ["evil.pth"], {}),
    "evaluate inception fifo": (["evaluate", "{run}", "--data", "digits", "--inception-weights", "{w}/fifo"],
                                ["fifo"], {}),
    "evaluate features": (["evaluate", "{run}", "--data", "digits", "--extractor", "vgg"], ["vgg"], {}),
    # train-classifier
    "classifier over the checkpoint": (["train-classifier", "--data", "digits", "--out",
                                        "{run}/checkpoint.pt"], ["checkpoint.pt"],
                                       {}),
    "classifier epochs": (["train-classifier", "--data", "digits", "--out", "{w}/out/c.safetensors",
                           "--epochs", "0"], ["epochs", "0"], {}),
    # features and probe
    "features grid huge": (["features", "{run}", "--data", "digits", "--out", "{w}/out/f.npz", "--grid",
                            "1000"],
                           ["grid", "1000"], {}),
    "features split": (["features", "{run}", "--data", "digits", "--out", "{w}/out/f.npz", "--split", "val"],
                       ["val"], {}),
    "features of an export": (["features", "{w}/g.safetensors", "--data", "digits", "--out", "{w}/out/f.npz"],
                              ["g.safetensors", "generator only"], {}),
    "features over the config": (["features", "{run}", "--data", "digits", "--out", "{run}/config.json"],
                                 ["config.json", ".npz"], {}),
    "features as .npy": (["features", "{run}", "--data", "digits", "--out", "{w}/out/f.npy"],
                         ["f.npy", ".npz", "folder"], {}),
    "probe features missing": (["probe", "{run}", "--data", "digits", "--features", "{w}/none"],
                               ["none", "features.json", "dcgan features"], {}),
    "probe per-class": (["probe", "{run}", "--data", "digits", "--per-class", "0"], ["per_class", "0"], {}),
    "probe kmeans-k": (["probe", "{run}", "--data", "digits", "--kmeans-k", "0"], ["kmeans_k", "0"], {}),
    "probe max-train": (["probe", "{run}", "--data", "digits", "--max-train", "0"], ["max_train", "0"], {}),
    "probe protocol": (["probe", "{run}", "--data", "digits", "--protocol", "half"], ["half"], {}),
    "probe baselines": (["probe", "{run}", "--data", "digits", "--baselines", "sift"], ["sift"], {}),
    "probe grid": (["probe", "{run}", "--data", "digits", "--grid", "0"], ["grid", "0"], {}),
    # walk, arithmetic, forget, neighbours
    "walk steps huge": (["walk", "{run}", "--steps", "100000", "--out", "{w}/out/w"],
                        ["steps", "100000"], {}),
    "walk frames too many": (["walk", "{run}", "--walks", "64", "--points", "200", "--out", "{w}/out/w"],
                             ["frames", "4096"], {}),
    "walk through not numbers": (["walk", "{run}", "--through", "1,x", "--out", "{w}/out/w"],
                                 ["--through", "1,x"], {}),
    "walk mode": (["walk", "{run}", "--mode", "cubic", "--out", "{w}/out/w"], ["cubic"], {}),
    "walk factor nan": (["walk", "{run}", "--factor", "nan", "--out", "{w}/out/w"], ["factor", "nan"], {}),
    "walk out is a file": (["walk", "{run}", "--out", "{w}/afile"], ["afile", "file"], {}),
    "walk points": (["walk", "{run}", "--points", "1", "--out", "{w}/out/w"], ["points", "1"], {}),
    "arithmetic non-integer": (["arithmetic", "{run}", "--a", "1", "--b", "2", "--c", "1.5", "--out",
                                "{w}/out/a"],
                               ["--c", "1.5"], {}),
    "arithmetic many indices": (["arithmetic", "{run}", "--a", ",".join(map(str, range(100))), "--b", "1",
                                 "--c",
                                 "2", "--out", "{w}/out/a"], ["--a", "100"], {}),
    "arithmetic huge index": (["arithmetic", "{run}", "--a", "99999999999999", "--b", "1", "--c", "2",
                               "--out",
                               "{w}/out/a"], ["--a", "99999999999999"], {}),
    "arithmetic noise inf": (["arithmetic", "{run}", "--a", "1", "--b", "2", "--c", "3", "--noise", "inf",
                              "--out", "{w}/out/a"], ["noise", "inf"], {}),
    "arithmetic direction steps": (["arithmetic", "{run}", "--from", "1", "--to", "2", "--steps", "1",
                                    "--out",
                                    "{w}/out/a"], ["steps", "1"], {}),
    "forget boxes not utf-8": (["forget", "{run}", "--boxes", "{w}/boxes_nonutf8.json", "--out", "{w}/out/f"],
                               ["boxes_nonutf8.json"], {}),
    "forget boxes fifo": (["forget", "{run}", "--boxes", "{w}/fifo", "--out", "{w}/out/f"], ["fifo"], {}),
    "forget many boxes": (["forget", "{run}", "--boxes", "{w}/boxes_many.json", "--out", "{w}/out/f"],
                          ["boxes_many.json", "1024"], {}),
    "forget box outside": (["forget", "{run}", "--boxes", "{w}/boxes_outside.json", "--out", "{w}/out/f"],
                           ["boxes_outside.json", "99"], {}),
    "forget drop rule": (["forget", "{run}", "--boxes", "{w}/boxes_ok.json", "--drop", "top:x", "--out",
                          "{w}/out/f"],
                         ["--drop", "top:x"], {}),
    "neighbours k zero": (["neighbours", "{run}", "--data", "{w}/images", "--k", "0", "--out", "{w}/out/n"],
                          ["k", "0"], {}),
    "neighbours k huge": (["neighbours", "{run}", "--data", "{w}/images", "--k", "1000", "--out",
                           "{w}/out/n"],
                          ["k", "1000"], {}),
    "neighbours data missing": (["neighbours", "{run}", "--data", "{w}/nowhere", "--out", "{w}/out/n"],
                                ["nowhere"], {}),
    "neighbours out in data": (["neighbours", "{run}", "--data", "{w}/images", "--out", "{w}/images/report"],
                               ["report", "inside"], {}),
    # dedup
    "dedup out inside the data": (["dedup", "{w}/images", "--out", "{w}/images/report"],
                                  ["report", "inside"], {}),
    "dedup out is a file": (["dedup", "{w}/images", "--out", "{w}/afile"], ["afile"], {}),
    "dedup bits": (["dedup", "{w}/images", "--out", "{w}/out/d", "--bits", "3"], ["bits", "3"], {}),
    "dedup copy onto the data": (["dedup", "{w}/images", "--out", "{w}/out/d", "--copy-to", "{w}/images"],
                                 ["--copy-to"], {}),
    "dedup channels": (["dedup", "{w}/images", "--out", "{w}/out/d", "--channels", "2"],
                       ["channels", "2"], {}),
    # guided-backprop and feature-maps
    "guided-backprop layer": (["guided-backprop", "{run}", "--data", "digits", "--layer", "99", "--out",
                               "{w}/out/g"],
                              ["layer", "99"], {}),
    "guided-backprop top": (["guided-backprop", "{run}", "--data", "digits", "--top", "0", "--out",
                             "{w}/out/g"],
                            ["top", "0"], {}),
    "guided-backprop features": (["guided-backprop", "{run}", "--data", "digits", "--filters", "100000",
                                  "--out", "{w}/out/g"], ["100000"], {}),
    "feature-maps net": (["feature-maps", "{run}", "--net", "x", "--out", "{w}/out/fm"], ["net", "'x'"], {}),
    "feature-maps image fifo": (["feature-maps", "{run}", "--net", "d", "--image", "{w}/fifo", "--out",
                                 "{w}/out/fm"],
                                ["fifo"], {}),
    "feature-maps index": (["feature-maps", "{run}", "--index", "-1", "--out", "{w}/out/fm"],
                           ["index", "-1"], {}),
    "feature-maps max-channels": (["feature-maps", "{run}", "--max-channels", "0", "--out", "{w}/out/fm"],
                                  ["max_channels", "0"], {}),
    # directions and project
    "directions method": (["directions", "{run}", "--method", "ica", "--out", "{w}/out/dir"], ["ica"], {}),
    "directions k zero": (["directions", "{run}", "--k", "0", "--out", "{w}/out/dir"], ["k", "0"], {}),
    "directions out is a file": (["directions", "{run}", "--out", "{w}/afile"], ["afile"], {}),
    "directions latents fifo": (["directions", "{run}", "--method", "svm", "--positive", "1,2", "--negative",
                                 "3,4", "--latents", "{w}/fifo", "--out", "{w}/out/dir"], ["fifo"], {}),
    "project eps named png": (["project", "{run}", "{w}/x.png", "--out", "{w}/out/p"], ["x.png"], {}),
    "project image fifo": (["project", "{run}", "{w}/fifo", "--out", "{w}/out/p"], ["fifo"], {}),
    "project steps zero": (["project", "{run}", "{w}/images/0.png", "--steps", "0", "--out", "{w}/out/p"],
                           ["steps", "0"], {}),
    "project lr nan": (["project", "{run}", "{w}/images/0.png", "--lr", "nan", "--out", "{w}/out/p"],
                       ["lr", "nan"], {}),
    "feature-maps out in the run": (["feature-maps", "{run}", "--out", "{run}/snapshots"], ["snapshots"], {}),
}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """Every case once, each in its own process forked from one driver; the run is hashed around each."""
    w = tmp_path_factory.mktemp("bad")
    run = w / "run"
    train = ["train", *TINY, "--steps", "2", "--snapshot-every", "1", "--checkpoint-every", "1", "--out", run]
    proc = cli(*train)
    assert proc.returncode == 0, proc.stderr
    _make_files(w, run)
    spec, errs = w / "cases.json", w / "errs"
    errs.mkdir()
    spec.write_text(json.dumps({name: {"argv": [a.format(w=w, run=run) for a in argv], "env": env}
                                for name, (argv, _, env) in CASES.items()}))
    env = {**os.environ, "DCGAN_CACHE_DIR": str(w / "cache")}
    env.pop("DCGAN_DEBUG", None)
    proc = subprocess.run([sys.executable, "-c", DRIVER, str(spec), str(errs), str(run)], capture_output=True,
                          text=True, timeout=3600, env=env, cwd=w)
    assert proc.returncode == 0, proc.stderr
    return json.loads((errs / "results.json").read_text()), w




def test_at_least_sixty_cases_over_every_command():
    assert len(CASES) >= 60
    assert {argv[0] for argv, _, _ in CASES.values()} == {
        "train", "sample", "export", "evaluate", "train-classifier", "features", "probe", "walk",
        "neighbours", "arithmetic", "forget", "dedup", "guided-backprop", "feature-maps", "directions",
        "project"}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_clear_line_and_damages_nothing(outcomes, name):
    results, w = outcomes
    r, words = results[name], CASES[name][1]
    lines = [line for line in r["stderr"].splitlines() if "error:" in line]
    assert r["rc"] == 1, r["stderr"]
    assert "Traceback" not in r["stderr"], r["stderr"]
    assert len(lines) == 1, r["stderr"]
    assert lines[0].startswith("error: ") and "this is a bug" not in lines[0], lines[0]
    assert all(word in lines[0] for word in words), (words, lines[0])
    assert not r["run_changed"]  # every file of the run byte-identical, none added or removed
    assert not r["left_behind"]  # no output file or folder was started before the error
    assert not (w / "pwned").exists()  # the hostile Inception pickle never ran
