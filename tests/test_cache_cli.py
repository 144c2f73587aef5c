"""`dcgan cache list|clear`: the decoded-dataset cache is visible and can be freed, and nothing but
the cache's own files is ever touched."""

from clirun import dcgan
from PIL import Image

from dcgan.cache import cache_entries
from dcgan.data import open_dataset


def test_cache_list_shows_each_decoded_dataset_and_clear_frees_only_cache_files(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("DCGAN_CACHE_DIR", str(cache))
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(5):
        Image.new("RGB", (40, 30), (50 * i, 20, 90)).save(folder / f"{i}.png")
    open_dataset(str(folder), 16, 3)
    open_dataset(str(folder), 32, 1)
    (cache / "notes.txt").write_text("a user's file in a shared cache folder")
    (cache / ("0" * 24 + ".partial")).mkdir()  # an interrupted decoding
    (cache / ("1" * 24 + ".safetensors")).write_bytes(b"an entry of the format before")
    entries = cache_entries()
    assert len(entries) == 4 and sum(e["source"] == str(folder) for e in entries) == 2
    assert sorted((e["size"], e["channels"], e["images"]) for e in entries if e["source"] == str(folder)) == \
        [(16, 3, 5), (32, 1, 5)]

    env = {"DCGAN_CACHE_DIR": str(cache)}
    listing = dcgan("cache", "list", env=env).stdout
    assert f"{folder} train 16x16x3, 5 images" in listing and f"{folder} train 32x32x1, 5 images" in listing
    assert "unfinished" in listing and "old format" in listing and "4 dataset(s)" in listing
    assert "notes.txt" not in listing

    cleared = dcgan("cache", "clear", env=env).stdout
    assert "removed 4 cached dataset(s)" in cleared
    assert [p.name for p in cache.iterdir()] == ["notes.txt"]
    assert "0 dataset(s)" in dcgan("cache", "list", env=env).stdout


def test_cache_list_of_a_missing_folder_is_empty(tmp_path):
    listing = dcgan("cache", "list", env={"DCGAN_CACHE_DIR": str(tmp_path / "never-made")}).stdout
    assert "0 dataset(s), 0.0 MiB" in listing
