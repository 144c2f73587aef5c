"""The README's two commands are the ones CI runs, and the first one's training part is valid."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
from clirun import dcgan

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("ci_readme", ROOT / ".ci" / "readme.py")
ci_readme = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ci_readme)


def test_the_readme_has_two_commands_install_and_train_then_the_tests():
    (first, second) = ci_readme.commands()
    install, train = ci_readme.split_and(first)
    assert install == ["pip", "install", "-e", ".[dev]"]
    assert train[:2] == ["dcgan", "train"]
    assert second == ["python", "-m", "pytest", "-q"]
    assert ci_readme.ci_commands() == ("pip install -e '.[dev]'", "python -m pytest -q")


def test_ci_runs_exactly_the_readme_commands(tmp_path):
    script = (ROOT / ".ci" / "run").read_text()
    assert "mapfile -t readme < <($PY .ci/readme.py)" in script
    # each command is executed as read, and nothing installs into the venv besides the README's
    assert 'bash -c "$install"' in script and 'bash -c "$tests"' in script
    assert not re.search(r"pip\"? install(?! -q --upgrade pip)(?! -q --target)", script)
    # a README whose block changes shape stops CI instead of silently running something else
    broken = tmp_path / "README.md"
    broken.write_text((ROOT / "README.md").read_text().replace("python -m pytest -q", "", 1))
    with pytest.raises(SystemExit, match="expected two commands"):
        ci_readme.ci_commands(broken)


def test_the_dev_extra_installs_what_ci_uses_and_the_other_extras_are_listed_in_the_readme():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    dev = " ".join(project["optional-dependencies"]["dev"])
    assert "pytest" in dev and "ruff" in dev  # the README's test command and CI's lint step
    readme = (ROOT / "README.md").read_text()
    for name in project["optional-dependencies"]:
        if name != "dev":
            assert f'pip install -e ".[{name}]"' in readme
    assert ci_readme.extras() == [r for n, rs in project["optional-dependencies"].items() if n != "dev"
                                  for r in rs]


def test_the_readme_training_command_is_valid(tmp_path):
    """The first command's `dcgan train ...` resolves (with --dry-run) to the run it promises."""
    (first, _) = ci_readme.commands()
    train = ci_readme.split_and(first)[1]
    r = dcgan(*train[1:], "--dry-run", cwd=tmp_path, env={"DCGAN_CACHE_DIR": str(tmp_path / "cache")})
    config = json.loads(r.stdout)
    assert config["data"] == "digits" and config["epochs"] == 50
    assert config["out"] == "runs/digits-pytorch"
    assert "runs/digits-pytorch" in (ROOT / "README.md").read_text()
