"""Near-duplicate detection (paper §4.1.1) on small real folders, through the API and the CLI."""

import json
from itertools import combinations

import numpy as np
import pytest
import torch
from clirun import dcgan
from PIL import Image
from sklearn.datasets import load_digits

from dcgan.dedup import DedupConfig, _Groups, code_groups, dedup
from dcgan.errors import DCGANError


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """150 distinct digits as 32x32 PNGs, 2 exact copies and 2 copies with +-2 levels of noise."""
    root = tmp_path_factory.mktemp("digits")
    images = (load_digits().images[:150] * 255 / 16).astype(np.uint8)
    rng = np.random.default_rng(0)
    for i, a in enumerate(images):
        Image.fromarray(a).resize((32, 32), Image.BICUBIC).save(root / f"d{i:03d}.png")
    for i in (5, 17):
        (root / f"exact_of_{i:03d}.png").write_bytes((root / f"d{i:03d}.png").read_bytes())
    for i in (40, 90):
        a = np.asarray(Image.open(root / f"d{i:03d}.png"), dtype=np.int16)
        noisy = (a + rng.integers(-2, 3, a.shape)).clip(0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(root / f"noisy_of_{i:03d}.png")
    return root


def group_of(result, name):
    return next((set(result.names[i] for i in g) for g in result.groups
                 if name in {result.names[i] for i in g}), set())


def test_exact_and_transformed_copies_are_found(folder, tmp_path):
    result = dedup(str(folder), out=tmp_path / "rep", channels=1, epochs=40, hamming=2)
    for i in (5, 17):
        assert {f"d{i:03d}.png", f"exact_of_{i:03d}.png"} <= group_of(result, f"exact_of_{i:03d}.png")
    for i in (40, 90):
        assert f"d{i:03d}.png" in group_of(result, f"noisy_of_{i:03d}.png")
    assert len(result.exact_groups) == 2
    report = json.loads((tmp_path / "rep" / "duplicates.json").read_text())
    assert report["images"] == 154 and report["duplicates"] == len(result.duplicates) >= 4
    with Image.open(tmp_path / "rep" / "groups.png") as im:
        layout = json.loads(im.text["layout"])
    assert len(layout["rows"]) == len(result.groups)
    assert layout["marked"] == [[n, 0] for n in range(len(result.groups))]  # the kept image of each group
    exact = next(n for n, g in enumerate(result.groups) if "exact_of_005.png" in {result.names[i] for i in g})
    assert sorted(layout["tiles"][exact]) == sorted([".._005.png", "d005.png"])  # each tile's file name
    kept = (tmp_path / "rep" / "keep.txt").read_text().split()
    dropped = (tmp_path / "rep" / "duplicates.txt").read_text().split()
    assert len(kept) + len(dropped) == 154 and not set(kept) & set(dropped)


def test_false_positives_at_the_papers_radius_are_under_one_percent(folder, tmp_path):
    """Paper §4.1.1: equal 128-bit codes (radius 0) merge fewer than 1 in 100 distinct images; the
    146 distinct digits here allow one at most (1/146 = 0.7%)."""
    result = dedup(str(folder), out=tmp_path / "rep", channels=1, epochs=40, hamming=0)
    planted = {"d005.png", "d017.png", "d040.png", "d090.png"}
    merged = {n for g in result.groups for n in (result.names[i] for i in g)
              if n.startswith("d") and n not in planted}
    assert len(merged) <= 1, sorted(merged)
    for i in (5, 17):  # and the exact copies are still found
        assert {f"d{i:03d}.png", f"exact_of_{i:03d}.png"} <= group_of(result, f"exact_of_{i:03d}.png")


def test_exact_duplicates_are_found_whatever_the_hash(folder, tmp_path):
    result = dedup(str(folder), out=tmp_path / "rep", channels=1, epochs=1, bits=8)
    for i in (5, 17):
        assert {f"d{i:03d}.png", f"exact_of_{i:03d}.png"} <= group_of(result, f"exact_of_{i:03d}.png")


def test_multi_index_hashing_finds_exactly_the_pairs_within_the_radius():
    gen = torch.Generator().manual_seed(0)
    base = torch.rand(40, 64, generator=gen) > 0.5
    flips = torch.rand(40, 64, generator=gen) < 0.03  # near copies, 0-5 bits off
    codes = torch.cat([base, base ^ flips])
    for radius in (0, 1, 3):
        brute = _Groups(len(codes))
        for i, j in combinations(range(len(codes)), 2):
            if int((codes[i] ^ codes[j]).sum()) <= radius:
                brute.join([i, j])
        assert code_groups(codes, radius)[0] == brute.groups(), radius


def test_bad_radius_is_an_error():
    with pytest.raises(DCGANError, match="hamming"):
        DedupConfig(hamming=40)


def test_keep_list_round_trips_into_training(folder, tmp_path):
    dcgan("dedup", folder, "--out", tmp_path / "rep", "--channels", 1, "--epochs", 5,
          "--copy-to", tmp_path / "kept")
    kept = (tmp_path / "rep" / "keep.txt").read_text().split()
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == sorted(kept)
    exclude = str(tmp_path / "rep" / "duplicates.txt")
    proc = dcgan("train", "--data", folder, "--exclude", exclude, "--image-size", 16, "--ngf", 8, "--ndf", 8,
                 "--batch-size", 8, "--steps", 1, "--tensorboard", "false", "--out", tmp_path / "run")
    assert f"{len(kept)} images" in proc.stderr


def test_named_dataset_report_lists_indices(tmp_path):
    result = dedup("digits", out=tmp_path / "rep", epochs=2)
    assert len(result.names) == 1797 and result.names[:3] == ["0", "1", "2"]
    lines = (tmp_path / "rep" / "duplicates.txt").read_text().split()
    # the seeded hash merges at least one pair of digits, so the list is not empty: dataset indices
    assert len(lines) == len(result.duplicates) > 0
    assert lines == [result.names[i] for i in result.duplicates] and all(line.isdigit() for line in lines)
