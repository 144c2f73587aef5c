import importlib.util
import os
from pathlib import Path

import pytest
import torch

# what each optional requirement of a test is, and how to get it
EXTRAS = {
    "lmdb": ("module", "lmdb", 'pip install -e ".[lmdb]"'),
    "fashion-mnist": ("path", "/usr/share/datasets/fashion-mnist", "apt-get install dataset-fashion-mnist"),
    "browser": ("module", "playwright", 'pip install -e ".[browser]"'),
    "chromium": ("path", "/usr/bin/chromium", "apt-get install chromium"),
}


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow")


def pytest_configure(config):
    config.addinivalue_line("markers", "extra(name): needs an optional extra or system package "
                            f"({', '.join(EXTRAS)}); skipped without it, failed without it when "
                            "DCGAN_REQUIRE_EXTRAS=1 (CI's second pass)")


def missing_extra(name: str) -> str | None:
    """Why the optional requirement `name` is not available, or None if it is."""
    kind, what, how = EXTRAS[name]
    present = importlib.util.find_spec(what) is not None if kind == "module" else Path(what).exists()
    return None if present else f"needs {what}: {how}"


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def pytest_runtest_setup(item):
    for mark in item.iter_markers("extra"):
        why = missing_extra(mark.args[0])
        if why and os.environ.get("DCGAN_REQUIRE_EXTRAS"):
            pytest.fail(f"DCGAN_REQUIRE_EXTRAS is set but this test {why}")
        if why:
            pytest.skip(why)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Each test decodes into its own dataset cache, never the user's."""
    monkeypatch.setenv("DCGAN_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(autouse=True, scope="session")
def _threads():
    torch.set_num_threads(min(2, os.cpu_count() or 1))
