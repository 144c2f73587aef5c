"""The Python API: what the CLI does, a Python user can do, by keyword, with the same names."""

from __future__ import annotations

import ast
import importlib
import inspect
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from clirun import cli

import dcgan
from dcgan.train import train

SRC = Path(dcgan.__file__).parent
TINY = {"data": "digits", "image_size": 16, "ngf": 8, "ndf": 8, "nz": 8, "batch_size": 16, "steps": 2,
        "tensorboard": False, "seed": 1}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train({**TINY, "out": str(tmp_path_factory.mktemp("api") / "run")})


def test_parsing_every_command_imports_no_torch():
    code = ("import sys, dcgan, dcgan.cli; dcgan.cli.parser().format_help(); "
            "[c.format_help() for c in dcgan.cli.parser()._subparsers._group_actions[0].choices.values()]; "
            "print(sorted(m for m in ('torch', 'torchvision', 'sklearn', 'PIL') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_public_name_loads_from_the_one_module_that_lists_it():
    owners = {}
    for module in dcgan.MODULES:
        for name in importlib.import_module(f"dcgan.{module}").__all__:
            owners.setdefault(name, []).append(module)
    assert {n: m for n, m in owners.items() if len(m) > 1} == {}
    assert sorted(owners) == dcgan.__all__ and set(dcgan.__all__) <= set(dir(dcgan))
    for name, (module, ) in owners.items():
        assert getattr(dcgan, name) is getattr(importlib.import_module(f"dcgan.{module}"), name)


def test_a_submodule_import_does_not_hide_the_function_of_its_name():
    code = ("import inspect, dcgan, dcgan.dedup, dcgan.probe, dcgan.forget, dcgan.train; "
            "print([inspect.isfunction(f) for f in (dcgan.dedup, dcgan.probe, dcgan.forget, dcgan.train)])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[True, True, True, True]"
    with pytest.raises(AttributeError):
        dcgan.no_such_thing  # noqa: B018


def test_commands_take_one_subject_then_keywords_with_shared_names_and_defaults():
    functions = [getattr(dcgan, n) for n in dcgan.__all__ if inspect.isfunction(getattr(dcgan, n))]
    commands = [f for f in functions if "out" in inspect.signature(f).parameters]
    assert len(commands) >= 14
    for f in commands:
        params = list(inspect.signature(f).parameters.values())
        positional = [p.name for p in params if p.kind is not p.KEYWORD_ONLY]
        assert positional in (["source"], ["data"], ["source", "images"]), (f.__name__, positional)
        shared = {p.name: p.default for p in params if p.name in ("seed", "data_dir")}
        assert shared.get("seed", 0) == 0 and shared.get("data_dir") is None, f.__name__


def test_no_function_imports_the_package_inside_its_body():
    offenders = []
    for path in SRC.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    names = [inner.module or ""] if isinstance(inner, ast.ImportFrom) else \
                        [a.name for a in inner.names] if isinstance(inner, ast.Import) else []
                    if any(n.startswith("dcgan") for n in names):
                        offenders.append(f"{path.name}:{inner.lineno}")
    assert offenders == []


def test_sample_sheet_writes_what_dcgan_sample_writes(run, tmp_path):
    r = dcgan.sample_sheet(run, out=tmp_path / "api.png", n=6, seed=4, start=2, numbered=True,
                           individual=tmp_path / "each")
    assert r["images"] == 6 and len(r["individual"]) == 6 and Path(r["individual"][0]).name == "000002.png"
    proc = cli("sample", run, "--out", tmp_path / "cli.png", "--n", 6, "--seed", 4, "--start", 2,
               "--numbered", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "api.png").read_bytes() == (tmp_path / "cli.png").read_bytes()
    with pytest.raises(dcgan.DCGANError, match="--out .* or --individual"):
        dcgan.sample_sheet(run, out=None)


def test_write_features_writes_what_dcgan_features_writes(run, tmp_path):
    r = dcgan.write_features(run, data="digits", out=tmp_path / "api.npz", split="test", grid=2, device="cpu")
    proc = cli("features", run, "--data", "digits", "--split", "test", "--grid", 2, "--device", "cpu",
               "--out", tmp_path / "cli.npz", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    with np.load(tmp_path / "api.npz") as a, np.load(tmp_path / "cli.npz") as b:
        assert a["features"].shape == (r["images"], r["dim"]) == b["features"].shape
        assert np.array_equal(a["features"], b["features"]) and np.array_equal(a["labels"], b["labels"])
