"""`dcgan features --out FOLDER`: D's features written once to disk, batch by batch, and read back
memory-mapped by `dcgan probe --features` with the same results as features computed in memory."""

import json

import numpy as np
import pytest
from clirun import dcgan, train_tiny
from test_directions import one_error

from dcgan.representation import _write_npy


def train(out, seed=0):
    return train_tiny(out, 3, "--seed", seed, "--data", "digits")


GRID = 2  # a coarser grid than the paper's 4 (96 features): the full-label SVMs stay quick


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train(tmp_path_factory.mktemp("features") / "run")


@pytest.fixture(scope="module")
def folder(run, tmp_path_factory):
    out = tmp_path_factory.mktemp("folder") / "feats"
    dcgan("features", run, "--grid", GRID, "--out", out)
    return out


def probe(run, *args, ok=True):
    proc = dcgan("probe", run, "--grid", GRID, *args, ok=ok)
    return proc if ok else one_error(proc)


def test_the_folder_holds_both_splits_as_the_in_memory_features(run, folder, tmp_path):
    meta = json.loads((folder / "features.json").read_text())
    assert meta["format"] == "dcgan-features" and meta["data"] == "digits" and meta["grid"] == GRID
    assert (meta["train"], meta["test"], meta["dim"]) == (1437, 360, 4 * (8 + 16))
    for split, n in (("train", 1437), ("test", 360)):
        x = np.load(folder / f"{split}.npy", mmap_mode="r", allow_pickle=False)
        assert isinstance(x, np.memmap) and x.dtype == np.float32 and x.shape == (n, 96)
        dcgan("features", run, "--split", split, "--grid", GRID, "--out", tmp_path / f"{split}.npz")
        saved = np.load(tmp_path / f"{split}.npz")
        assert np.array_equal(np.asarray(x), saved["features"])  # streamed = computed in one array
        assert np.array_equal(np.load(folder / f"{split}_labels.npy"), saved["labels"])


@pytest.mark.parametrize("protocol,extra", [
    ("few", ["--per-class", 5, "--draws", 2, "--baselines", "pixels"]),
    ("full", ["--max-train", 300, "--baselines", ""]),
    ("full", ["--baselines", ""]),  # every training row: the memory-mapped file itself
])
def test_probe_reads_the_folder_with_the_same_results(run, folder, tmp_path, protocol, extra):
    common = ["--protocol", protocol, *extra]
    probe(run, *common, "--out", tmp_path / "memory")
    probe(run, *common, "--features", folder, "--out", tmp_path / "stored")
    memory, stored = (json.loads((tmp_path / f / "probe.json").read_text()) for f in ("memory", "stored"))
    assert len(stored) == len(memory) == (2 if protocol == "few" else 1)
    assert stored[0]["method"] == "DCGAN discriminator"
    key = "errors" if protocol == "few" else "accuracy"
    assert [r[key] for r in stored] == [r[key] for r in memory]
    assert [r["C"] for r in stored] == [r["C"] for r in memory]


def test_features_of_another_discriminator_are_refused(folder, tmp_path):
    other = train(tmp_path / "other", seed=1)
    err = probe(other, "--features", folder, "--out", tmp_path / "p", ok=False).stderr
    assert "another discriminator" in err and str(folder) in err and "dcgan features" in err


def test_another_grid_or_seed_is_refused(run, folder, tmp_path):
    err = one_error(dcgan("probe", run, "--grid", 1, "--features", folder, "--out", tmp_path / "p",
                          ok=False)).stderr
    assert "grid 2, not 1" in err
    err = probe(run, "--seed", 3, "--features", folder, "--out", tmp_path / "p", ok=False).stderr
    assert "seed 0, not 3" in err


@pytest.fixture
def copy_of(folder, tmp_path):
    out = tmp_path / "copy"
    out.mkdir()
    for f in folder.iterdir():
        (out / f.name).write_bytes(f.read_bytes())
    return out


def test_an_incomplete_folder_is_refused(run, copy_of, tmp_path):
    (copy_of / "features.json").unlink()  # what an interrupted `dcgan features` leaves
    err = probe(run, "--features", copy_of, "--out", tmp_path / "p", ok=False).stderr
    assert "no features.json" in err and "interrupted" in err


def test_a_truncated_or_reshaped_file_is_refused(run, copy_of, tmp_path):
    data = (copy_of / "test.npy").read_bytes()
    (copy_of / "test.npy").write_bytes(data[: len(data) // 2])
    err = probe(run, "--features", copy_of, "--out", tmp_path / "p", ok=False).stderr
    assert "test.npy is not a readable .npy file" in err
    np.save(copy_of / "test.npy", np.zeros((360, 10), dtype=np.float32))
    err = probe(run, "--features", copy_of, "--out", tmp_path / "p", ok=False).stderr
    assert "(360, 10), expected float32 (360, 96)" in err


def test_a_pickled_array_is_never_loaded(run, copy_of, tmp_path):
    np.save(copy_of / "train_labels.npy", np.array([{"a": 1}] * 1437, dtype=object), allow_pickle=True)
    err = probe(run, "--features", copy_of, "--out", tmp_path / "p", ok=False).stderr
    assert "train_labels.npy is not a readable .npy file" in err and "Python objects" in err


def test_labels_of_other_images_are_refused(run, copy_of, tmp_path):
    labels = np.load(copy_of / "test_labels.npy")
    np.save(copy_of / "test_labels.npy", (labels + 1) % 10)
    err = probe(run, "--features", copy_of, "--out", tmp_path / "p", ok=False).stderr
    assert "test labels differ" in err


def test_a_short_stream_leaves_no_file(tmp_path):
    with pytest.raises(Exception, match="got 2 rows, expected 3"):
        _write_npy(tmp_path / "x.npy", (3, 2), np.float32, [np.zeros((2, 2))])
    assert list(tmp_path.iterdir()) == []


def test_a_rewrite_that_fails_midway_leaves_a_folder_probe_refuses(run, copy_of, monkeypatch):
    """Rewriting a complete folder: features.json goes first, so a crash after train.npy is new but
    before test.npy is leaves no folder that claims to be whole."""
    from dcgan import representation

    write = representation._write_npy

    def crash_on_test(path, *args):
        if path.name == "test.npy":
            raise OSError("disk full")
        write(path, *args)

    monkeypatch.setattr(representation, "_write_npy", crash_on_test)
    with pytest.raises(OSError):
        representation.write_feature_folder(run, out=copy_of, grid=GRID, device="cpu")
    assert not (copy_of / "features.json").exists()
