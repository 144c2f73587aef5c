"""Class-conditional DCGAN (--conditional): labels from the data into G (one-hot beside z) and D
(projection), per-class sampling, exact resume, and unconditional checkpoints that still load."""

import json

import numpy as np
import pytest
import torch
from clirun import cli
from PIL import Image

import dcgan
from dcgan import checkpoint, data
from dcgan.config import ModelConfig
from dcgan.data import batches, class_labels, open_dataset
from dcgan.datasets import NAMED
from dcgan.errors import DCGANError
from dcgan.models import build

TINY = dict(image_size=16, channels=1, ngf=8, ndf=8, batch_size=16, tensorboard=False, seed=1)


def write_classes(root, classes: dict[str, tuple[int, int]], n: int = 64, seed: int = 0):
    """root/CLASS/i.png: n noisy grey 16x16 images per class, pixels uniform in [lo, hi)."""
    rng = np.random.default_rng(seed)
    for name, (lo, hi) in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(lo, hi, (16, 16), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


BLACK_WHITE = {"black": (0, 40), "white": (215, 256)}


@pytest.fixture(scope="module")
def black_white(tmp_path_factory):
    return write_classes(tmp_path_factory.mktemp("bw"), BLACK_WHITE)


@pytest.fixture(scope="module")
def trained(black_white, tmp_path_factory):
    """A tiny conditional model trained on black/ and white/ (seeded: the same model every time)."""
    out = tmp_path_factory.mktemp("runs") / "bw"
    with pytest.MonkeyPatch.context() as m:
        m.setenv("DCGAN_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        dcgan.train(dict(data=str(black_white), conditional=True, nz=4, lr=5e-4, steps=200, out=str(out),
                         sample_every=100, checkpoint_every=100, **TINY))
    return out


def test_conditional_samples_follow_their_class(trained):
    g = dcgan.load_generator(trained)
    assert g.config.classes == ["black", "white"]
    black = g.sample(64, seed=0, labels=torch.zeros(64, dtype=torch.long)).mean().item()
    white = g.sample(64, seed=0, labels=torch.ones(64, dtype=torch.long)).mean().item()
    assert white - black > 0.8, (black, white)  # pixels in [-1, 1]: a wide margin
    assert (trained / "samples" / "final.png").is_file()


def test_sample_class_by_name_and_index_from_the_command_line(trained, tmp_path):
    means = {}
    for name, given in (("black", "black"), ("white", "1")):
        proc = cli("sample", trained, "--class", given, "--n", 16, "--individual", tmp_path / name)
        assert proc.returncode == 0, proc.stderr
        assert f"(class {name})" in proc.stdout
        files = sorted((tmp_path / name).glob("*.png"))
        assert len(files) == 16
        means[name] = np.mean([np.asarray(Image.open(f)).mean() for f in files])
    assert means["white"] - means["black"] > 100, means  # 0..255

    proc = cli("sample", trained, "--class", "grey", "--out", tmp_path / "x.png")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "0 (black), 1 (white)" in proc.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "x.png").exists()


def test_class_all_draws_a_row_per_class(trained, tmp_path):
    r = dcgan.sample_sheet(trained, out=tmp_path / "all.png", n=5, class_="all")
    assert r["class"] == "all" and r["images"] == 10
    rows = np.asarray(Image.open(tmp_path / "all.png").convert("L"), dtype=float)
    top, bottom = rows[: rows.shape[0] // 2].mean(), rows[rows.shape[0] // 2:].mean()
    assert bottom - top > 60, (top, bottom)  # row 0 black, row 1 white
    exported = dcgan.export(trained, out=tmp_path / "g.safetensors")  # G alone keeps its class names
    g = dcgan.load_generator(exported)
    assert g.config.classes == ["black", "white"]
    assert g.cycled_labels(range(5)).tolist() == [0, 1, 0, 1, 0]  # what FID's samples are given


def test_inspection_commands_work_on_a_conditional_generator(trained, tmp_path):
    walk = dcgan.walk_report(trained, out=tmp_path / "walk", walks=1, points=2, steps=2, class_="white")
    assert walk["class"] == "white" and walk["feature_space"] == "D pooled conv features"
    r = dcgan.arithmetic_report(trained, out=tmp_path / "ar", a=[0], b=[1], c=[2], class_=0)
    assert r["class"] == "black"
    r = dcgan.direction_report(trained, out=tmp_path / "dr", start=[0], end=[1], n=2, steps=2, class_="white")
    assert r["class"] == "white"
    d = dcgan.directions_report(trained, out=tmp_path / "dir", method="sefa", k=2)
    assert len(d["eigenvalues"]) == 4  # nz: the class inputs are not directions in z
    with pytest.raises(DCGANError, match="not a class"):
        dcgan.walk_report(trained, out=tmp_path / "w2", walks=1, points=2, steps=2, class_=2)
    f = dcgan.write_features(trained, data="digits", out=tmp_path / "f.npz", device="cpu")  # D conv features
    assert f["images"] > 1000 and f["dim"] == 8 * 16 + 16 * 16  # both layers pooled to 4x4, as unconditional


def test_labels_follow_their_images_through_batches(tmp_path, monkeypatch):
    """Every class has its own grey level, so an image tells its class: the labelled batches are the
    unlabelled ones (the same epoch order), each with its images' labels; in memory, memory-mapped
    and streamed alike."""
    levels = {f"c{k}": (40 * k, 40 * k + 1) for k in range(5)}
    root = write_classes(tmp_path / "five", levels, n=7)

    def check(ds):
        labels, classes = class_labels(ds, str(root))
        assert classes == list(levels)
        plain = list(batches(ds, 4, seed=3, epoch=1))
        paired = list(batches(ds, 4, seed=3, epoch=1, labels=labels))
        assert len(plain) == len(paired) == 35 // 4
        for x, (x2, y) in zip(plain, paired, strict=True):
            assert torch.equal(x, x2)
            assert torch.equal(x.float().mean((1, 2, 3)).round().long(), 40 * y)

    check(open_dataset(str(root), 16, 1))  # in memory
    monkeypatch.setattr(data, "MAX_IN_MEMORY_BYTES", 0)
    mapped = open_dataset(str(root), 16, 1)
    assert mapped.mapped
    check(mapped)
    streamed = open_dataset(str(root), 16, 1, use_cache=False, workers=0)
    assert streamed.stream is not None
    check(streamed)


def test_named_datasets_have_class_names():
    assert NAMED["fashion-mnist"].classes[:2] == ("T-shirt/top", "Trouser")
    assert NAMED["cifar10"].classes[0] == "airplane"
    digits = open_dataset("digits", 16, 1)
    labels, classes = class_labels(digits, "digits")
    assert classes == [str(i) for i in range(10)] and torch.equal(labels, digits.labels)


def test_conditional_needs_labelled_data(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("L", (16, 16)).save(flat / "a.png")
    Image.new("L", (16, 16)).save(flat / "b.png")
    one = write_classes(tmp_path / "one", {"only": (0, 9)}, n=3)
    mixed = write_classes(tmp_path / "mixed", {"x": (0, 9), "y": (50, 59)}, n=3)
    Image.new("L", (16, 16)).save(mixed / "loose.png")
    cases = [(flat, "a.png lies in the folder itself"), (one, "1 class subfolder (only)"),
             (mixed, "loose.png lies in the folder itself")]
    for folder, words in cases:
        with pytest.raises(DCGANError, match=r"FOLDER/CLASS/image.png") as e:
            dcgan.plan(dcgan.configure(dict(data=str(folder), conditional=True, out=str(tmp_path / "r"))))
        assert words in str(e.value) and str(folder) in str(e.value)
    ds = open_dataset(str(mixed), 16, 1)
    ds.source = "celeba"
    with pytest.raises(DCGANError, match="celeba has none"):
        class_labels(ds, "celeba")
    proc = cli("train", "--data", flat, "--conditional", "--out", tmp_path / "r", "--dry-run")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "--conditional on folder" in proc.stderr.strip().splitlines()[-1]
    plan = dcgan.plan(dcgan.configure(dict(data=str(one), batch_size=2, out=str(tmp_path / "r"))))
    assert "classes" not in plan  # unconditional: one folder of anything is fine
    plan = dcgan.plan(dcgan.configure(dict(data=str(mixed / "x"), batch_size=2, out=str(tmp_path / "r"))))
    assert plan["images"] == 3
    proc = cli("train", "--data", "digits", "--conditional", "--out", tmp_path / "r", "--dry-run")
    assert proc.returncode == 0 and json.loads(proc.stdout)["plan"]["classes"] == [str(i) for i in range(10)]


def test_conditional_run_resumes_exactly(black_white, tmp_path):
    base = dict(data=str(black_white), conditional=True, checkpoint_every=5, sample_every=5, **TINY)
    straight = dcgan.train(dict(base, steps=10, out=str(tmp_path / "a")))
    dcgan.train(dict(base, steps=5, out=str(tmp_path / "b")))
    config = dcgan.configure(dict(steps=10), resume=tmp_path / "b")
    assert config.conditional and config.model.classes == ["black", "white"]
    resumed = dcgan.train(config, resume=True)
    a, b = checkpoint.load(straight), checkpoint.load(resumed)
    for key in ("generator", "discriminator"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), (key, name)
    assert "embed.weight" in a["discriminator"]
    with pytest.raises(DCGANError, match="conditional"):
        dcgan.configure(dict(steps=10, conditional=False), resume=tmp_path / "b")


def test_networks_shapes_and_unchanged_conv_stacks():
    plain, cond = ModelConfig(image_size=16, ngf=8, ndf=8, nz=4), ModelConfig(
        image_size=16, ngf=8, ndf=8, nz=4, classes=["a", "b", "c"])
    (g0, d0), (g1, d1) = build(plain), build(cond)
    assert g1.project_and_reshape.project.weight.shape[0] == 4 + 3  # [z, one_hot(y)]
    assert set(d1.state_dict()) - set(d0.state_dict()) == {"embed.weight"}  # D's conv stack unchanged
    x = torch.randn(6, 3, 16, 16)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    d1.eval()
    plain_logit, maps = d1(x, return_features=True)
    phi = maps[-1].flatten(1)
    assert torch.allclose(d1(x, y), plain_logit + (d1.embed(y) * phi).sum(1), atol=1e-6)
    z = torch.randn(6, 4)
    g1.eval()
    assert torch.equal(g1(z), g1(z, torch.zeros(6, dtype=torch.long)))  # default class 0
    assert not torch.equal(g1(z, y), g1(z))
    with pytest.raises(ValueError):
        g0(z, y)
    with pytest.raises(DCGANError, match="classes"):
        ModelConfig(classes=["a"])


# G's and D's tensors for ModelConfig(image_size=16, ngf=8, ndf=8, nz=4) as every checkpoint written before
# --conditional holds them: an unconditional model must keep exactly these to load them
BEFORE_G = {"project_and_reshape.project.weight": (4, 16, 4, 4), "project_and_reshape.bn.weight": (16,),
            "project_and_reshape.bn.bias": (16,), "project_and_reshape.bn.running_mean": (16,),
            "project_and_reshape.bn.running_var": (16,), "project_and_reshape.bn.num_batches_tracked": (),
            "blocks.0.0.weight": (16, 8, 4, 4), "blocks.0.1.weight": (8,), "blocks.0.1.bias": (8,),
            "blocks.0.1.running_mean": (8,), "blocks.0.1.running_var": (8,),
            "blocks.0.1.num_batches_tracked": (), "blocks.1.0.weight": (8, 3, 4, 4), "blocks.1.0.bias": (3,)}
BEFORE_D = {"blocks.0.0.weight": (8, 3, 4, 4), "blocks.0.0.bias": (8,), "blocks.1.0.weight": (16, 8, 4, 4),
            "blocks.1.1.weight": (16,), "blocks.1.1.bias": (16,), "blocks.1.1.running_mean": (16,),
            "blocks.1.1.running_var": (16,), "blocks.1.1.num_batches_tracked": (),
            "head.0.weight": (1, 16, 4, 4), "head.0.bias": (1,)}


def test_checkpoints_without_classes_still_load(tmp_path):
    """A checkpoint written before --conditional existed (no `conditional`, no `classes`) loads as an
    unconditional model, samples, and refuses --class."""
    g, d = build(ModelConfig(image_size=16, ngf=8, ndf=8, nz=4))
    assert {k: tuple(v.shape) for k, v in g.state_dict().items()} == BEFORE_G
    assert {k: tuple(v.shape) for k, v in d.state_dict().items()} == BEFORE_D
    run = dcgan.train(dict(data="digits", steps=2, checkpoint_every=1, sample_every=1,
                           out=str(tmp_path / "r"),
                           **TINY))
    ckpt = checkpoint.load(run)
    del ckpt["config"]["conditional"]
    del ckpt["config"]["model"]["classes"]
    old = tmp_path / "old.pt"
    checkpoint.save(old, {k: v for k, v in ckpt.items() if k not in ("format", "version")})
    g = dcgan.load_generator(old)
    assert g.config.classes is None and g.config.num_classes == 0
    assert g.sample(2, seed=0).shape == (2, 1, 16, 16)
    with pytest.raises(DCGANError, match="unconditional"):
        dcgan.sample_sheet(old, out=tmp_path / "s.png", n=2, class_=0)
    assert dcgan.configure(dict(steps=3), resume=old).conditional is False
