"""Where every benchmark's result goes: results/NAME.json and a line in RESULTS.md."""

from __future__ import annotations

import json
import platform
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


def save(name: str, out: dict, lines: list[str]) -> None:
    """Write results/NAME.json and append `lines` (after the command line) to RESULTS.md."""
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / f"{name}.json").write_text(json.dumps(out, indent=2))
    text = [f"- {out['date'][:10]} `{out['command']}` on {out['machine']}:", *lines]
    with open(HERE / "RESULTS.md", "a") as f:
        f.write("\n".join(text) + "\n")
    print("\n".join(text))
