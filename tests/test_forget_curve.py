"""Forgetting (paper §6.2), beyond the paper's global drop: a local erase inside the boxes only, and the
effect curve (pixel change vs maps dropped, the detector's top maps against as many random ones)."""

import json

import numpy as np
import pytest
import torch
from clirun import dcgan, train_tiny
from PIL import Image

from dcgan.checkpoint import load_generator
from dcgan.errors import DCGANError
from dcgan.forget import (
    Boxed,
    change_in_boxes,
    fit_window_detector,
    forget_maps,
    generate_without,
    local_masks,
)

BOXES = [(0, 0, 8, 8)]  # the top-left quarter of a 16x16 image: layer -2 (8x8) locations 0..3 x 0..3


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("forget") / "run", 20)


@pytest.fixture(scope="module")
def boxed():
    return [Boxed(0, i, BOXES) for i in range(6)]


def test_local_erase_stays_inside_the_boxes_reach(run, boxed, tmp_path):
    """Layer -2 feeds G's last 4x4 stride-2 transposed conv: location i reaches pixels 2i-1..2i+2, so a
    local erase of locations 0..3 cannot touch pixels 9.. in x or y; the global drop does. The extra
    samples (no boxes) are bit-identical under the local erase."""
    g = load_generator(run)
    z = torch.cat([g.latent(0, range(6)), g.latent(0, range(6, 9))])
    where = local_masks(g, boxed, -2, extra=3)
    assert where.shape == (9, 8, 8) and where[:6, :4, :4].all() and where.sum() == 6 * 16
    before = g.generate(z)
    local = generate_without(g, z, [0, 1, 2, 3], -2, where)
    globally = generate_without(g, z, [0, 1, 2, 3], -2)
    assert torch.equal(local[6:], before[6:])
    assert torch.equal(local[:6, :, 9:], before[:6, :, 9:])  # rows 9..
    assert torch.equal(local[:6, ..., 9:], before[:6, ..., 9:])  # columns 9..
    assert not torch.equal(local[:6, :, :8, :8], before[:6, :, :8, :8])
    assert (globally[:6, :, 9:] - before[:6, :, 9:]).abs().max() > 0
    # G runs z in batches: the masks follow the samples across batches
    assert torch.equal(generate_without(g, z, [0, 1, 2, 3], -2, where), local)
    g.generate = lambda z, f=g.generate: torch.cat([f(part, batch_size=2) for part in z.split(4)])
    assert torch.equal(generate_without(g, z, [0, 1, 2, 3], -2, where), local)


def test_forget_maps_local_vs_global(run, boxed, tmp_path):
    g = load_generator(run)
    r = {erase: forget_maps(g, boxed, tmp_path / erase, "top:4", n=3, layer=-2, erase=erase, curve=None)
         for erase in ("global", "local")}
    assert r["local"]["erase"] == "local" and r["global"]["erase"] == "global"
    assert r["local"]["dropped_maps"] == r["global"]["dropped_maps"]  # the same fit, the same maps
    assert r["local"]["mean_abs_change_extra"] == 0 < r["global"]["mean_abs_change_extra"]
    assert r["local"]["mean_abs_change_outside"] < r["global"]["mean_abs_change_outside"]
    assert r["local"]["mean_abs_change_in_boxes"] > 0
    assert "curve" not in r["local"] and not (tmp_path / "local" / "forget_curve.png").exists()
    with Image.open(tmp_path / "local" / "forget.png") as im:
        assert "the extra samples, without boxes, are unchanged" in json.loads(im.text["layout"])["title"]


@pytest.mark.parametrize("erase", ["global", "local"])
def test_effect_curve_top_maps_against_as_many_random_ones(run, boxed, tmp_path, erase):
    g = load_generator(run)
    r = forget_maps(g, boxed, tmp_path, "top:3", n=0, layer=-2, erase=erase, curve=[8, 0, 2, 2])
    assert [row["k"] for row in r["curve"]] == [0, 2, 8]
    assert r["curve"][0] == {"k": 0, "top": {"inside": 0.0, "outside": 0.0},
                             "random": {"inside": 0.0, "outside": 0.0}}
    assert r["curve"][2]["top"] == r["curve"][2]["random"]  # all 8 maps: the same set either way
    # top: the k largest weights of the same fit; random: k maps of the layer, mean of 5 seeded draws
    weights = fit_window_detector(g, boxed, layer=-2)["weights"]
    z = torch.cat([g.latent(0, [b.index]) for b in boxed])
    where = local_masks(g, boxed, -2) if erase == "local" else None
    before = g.generate(z)

    def change(maps):
        return change_in_boxes(before, generate_without(g, z, list(maps), -2, where), boxed)

    top2 = change(np.argsort(-weights)[:2].tolist())
    assert r["curve"][1]["top"] == {"inside": top2["inside"], "outside": top2["outside"]}
    rng = np.random.default_rng(0)
    draws = [[change(rng.choice(8, k, replace=False).tolist()) for _ in range(5)] for k in (0, 2)][1]
    assert r["curve"][1]["random"]["inside"] == pytest.approx(np.mean([d["inside"] for d in draws]))
    assert r["curve"][1]["random"]["inside"] != r["curve"][1]["top"]["inside"]
    assert r["curve_random_draws"] == 5 and "pixel change" in r["curve_measure"]
    with Image.open(tmp_path / "forget_curve.png") as im:
        assert json.loads(im.text["layout"])["k"] == [0, 2, 8]


def test_auto_curve_points_and_bad_values(run, boxed, tmp_path):
    g = load_generator(run)
    r = forget_maps(g, boxed, tmp_path / "auto", "top:3", n=0, layer=-2)  # curve="auto" by default
    assert [row["k"] for row in r["curve"]] == [0, 1, 2, 3, 4, 8]  # powers of two to the 8 maps, and 3
    for curve, match in [([0, 9], "--curve point 9: layer -2 of G has 8 feature maps"), ([-1], "--curve"),
                         ("1,x", "--curve"), ([], "--curve"), ([1.5], "--curve")]:
        with pytest.raises(DCGANError, match=match):
            forget_maps(g, boxed, tmp_path / "bad", layer=-2, curve=curve)
    with pytest.raises(DCGANError, match="--erase must be global"):
        forget_maps(g, boxed, tmp_path / "bad", layer=-2, erase="sideways")
    assert not (tmp_path / "bad").exists()  # refused before any work


def test_forget_cli_writes_the_curve_and_refuses_bad_values(run, tmp_path):
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"boxes": [{"seed": 0, "index": i, "boxes": [list(BOXES[0])]}
                                           for i in range(6)]}))
    out = dcgan("forget", run, "--boxes", boxes, "--layer", -2, "--n", 2, "--erase", "local",
                "--curve", "0,1,8", "--out", tmp_path / "f").stdout
    assert "forget_curve.png" in out and "dropped (local)" in out
    r = json.loads((tmp_path / "f" / "forget.json").read_text())
    assert r["erase"] == "local" and [row["k"] for row in r["curve"]] == [0, 1, 8]
    assert set(r["curve"][1]) == {"k", "top", "random"} and set(r["curve"][1]["top"]) == {"inside", "outside"}
    assert r["mean_abs_change_extra"] == 0
    with Image.open(tmp_path / "f" / "forget_curve.png", formats=["PNG"]) as im:
        assert len(json.loads(im.text["layout"])["series"]) == 4
    dcgan("forget", run, "--boxes", boxes, "--layer", -2, "--curve", "none", "--out", tmp_path / "g")
    r = json.loads((tmp_path / "g" / "forget.json").read_text())
    assert r["erase"] == "global" and "curve" not in r and not (tmp_path / "g" / "forget_curve.png").exists()
    for flags, words in [(["--erase", "sideways"], ["--erase", "sideways"]),
                         (["--curve", "0,99"], ["--curve point 99", "8 feature maps"]),
                         (["--curve", "two"], ["--curve", "'two'"])]:
        err = dcgan("forget", run, "--boxes", boxes, "--layer", -2, *flags, "--out", tmp_path / "h",
                    ok=False).stderr
        assert err.startswith("error:") and len(err.strip().splitlines()) == 1, err
        assert all(w in err for w in words), err
        assert not (tmp_path / "h").exists()  # refused before anything is written
