"""The `dcgan` command in a real subprocess, as a user runs it (`python -m dcgan ...`)."""
import os
import subprocess
import sys


def cli(*args, env: dict | None = None, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    """Runs `dcgan ARGS` (each str()-ed) with text output captured; `env` is merged over os.environ."""
    return subprocess.run([sys.executable, "-m", "dcgan", *map(str, args)], capture_output=True, text=True,
                          env=None if env is None else {**os.environ, **env}, timeout=timeout, **kw)


def dcgan(*args, ok: bool = True, **kw) -> subprocess.CompletedProcess:
    """cli() that must succeed (ok=True), or fail cleanly (ok=False: non-zero exit, no traceback)."""
    proc = cli(*args, **kw)
    if ok:
        assert proc.returncode == 0, proc.stderr[-3000:]
    else:
        assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc


TINY = ("--image-size", 16, "--ngf", 8, "--ndf", 8, "--nz", 16, "--batch-size", 64, "--tensorboard", "false")


def train_tiny(out, steps: int, *args, **kw):
    """A tiny run (built-in digits unless `args` say otherwise; 16x16, widths 8, batch 64) trained
    `steps` steps by the CLI; returns its folder."""
    dcgan("train", *TINY, "--steps", steps, *args, "--out", out, **kw)
    return out
