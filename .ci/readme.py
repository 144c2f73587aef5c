"""The README's two commands as CI runs them, and the optional extras of its second pass.

`python3 .ci/readme.py` prints two lines: the install part of the README's first command (what a
new user's `pip install` does) and its test command. .ci/run executes exactly these, so the README
and CI cannot drift apart; tests/test_readme.py checks the rest of the first command.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
PYPROJECT = README.with_name("pyproject.toml")


def commands(readme: Path = README) -> list[list[str]]:
    """The commands of the fenced bash block under '## Two commands', as token lists (comments
    dropped)."""
    text = readme.read_text(encoding="utf-8")
    section = re.search(r"^## Two commands\n(.*?)(?=^## )", text, re.S | re.M)
    if not section:
        raise SystemExit(f"{readme}: no '## Two commands' section")
    block = re.search(r"```bash\n(.*?)```", section.group(1), re.S)
    if not block:
        raise SystemExit(f"{readme}: no ```bash block under '## Two commands'")
    lines = [shlex.split(line, comments=True) for line in block.group(1).splitlines()]
    return [tokens for tokens in lines if tokens]


def split_and(tokens: list[str]) -> list[list[str]]:
    """`a && b` -> [a, b]."""
    parts: list[list[str]] = [[]]
    for t in tokens:
        if t == "&&":
            parts.append([])
        else:
            parts[-1].append(t)
    return parts


def ci_commands(readme: Path = README) -> tuple[str, str]:
    """(install, test): the first command's `pip install ...` part and the second command."""
    cmds = commands(readme)
    if len(cmds) != 2:
        raise SystemExit(f"{readme}: expected two commands under '## Two commands', found {len(cmds)}")
    install = split_and(cmds[0])[0]
    if install[:3] != ["pip", "install", "-e"]:
        raise SystemExit(f"{readme}: the first command should start with `pip install -e`, "
                         f"got {shlex.join(install)!r}")
    return shlex.join(install), shlex.join(cmds[1])


def extras(pyproject: Path = PYPROJECT) -> list[str]:
    """The requirements of every optional extra but dev (what CI's second pass installs)."""
    import tomllib  # Python 3.11+, as CI runs

    groups = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    return [r for name, reqs in groups.items() if name != "dev" for r in reqs]


if __name__ == "__main__":
    print("\n".join(extras() if sys.argv[1:] == ["--extras"] else ci_commands()))
