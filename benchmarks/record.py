"""Where every benchmark's result goes: results/NAME.json and a line in RESULTS.md."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def header() -> dict:
    """The command that ran, the machine it ran on, and when."""
    script = Path(sys.argv[0]).name
    machine = f"{platform.machine()}, {torch.get_num_threads()} CPU threads, torch {torch.__version__}"
    return {"command": " ".join(["python", f"benchmarks/{script}", *sys.argv[1:]]), "machine": machine,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def dcgan(*args) -> str:
    """Run `python -m dcgan ARGS` as a user would; its stdout, or exit with its error."""
    proc = subprocess.run([sys.executable, "-m", "dcgan", *map(str, args)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    return proc.stdout


def save(name: str, out: dict, lines: list[str], title: str | None = None) -> None:
    """Write results/NAME.json and add `lines` (after the command line) at the end of the script's
    section of RESULTS.md ("## Title (`benchmarks/SCRIPT.py`)"), creating the section if needed."""
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / f"{name}.json").write_text(json.dumps(out, indent=2))
    text = [f"- {out['date'][:10]} `{out['command']}` on {out['machine']}:", *lines]
    path = HERE / "RESULTS.md"
    doc = path.read_text().rstrip("\n").split("\n")
    tag = f"(`benchmarks/{Path(sys.argv[0]).name}`)"
    start = next((i for i, line in enumerate(doc) if line.startswith("## ") and line.endswith(tag)), None)
    if start is None:
        doc += ["", f"## {title or name.replace('_', ' ').capitalize()} {tag}", "", *text]
    else:
        end = next((i for i in range(start + 1, len(doc)) if doc[i].startswith("## ")), len(doc))
        while end > start + 1 and not doc[end - 1].strip():
            end -= 1
        doc[end:end] = text
    path.write_text("\n".join(doc) + "\n")
    print("\n".join(text))
