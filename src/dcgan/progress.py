"""Progress of every long command: a tqdm bar on a terminal; when stderr is a file or a pipe, a plain
line at least every 30 s ($DCGAN_PROGRESS_SECONDS) with done/total, rate and ETA, so a log shows the
work is alive and when it will end."""

from __future__ import annotations

import os
import sys
import time

from tqdm import tqdm

from dcgan.errors import DCGANError


def plain_every() -> float:
    """Seconds between plain progress lines (when stderr is not a terminal)."""
    text = os.environ.get("DCGAN_PROGRESS_SECONDS", "30")
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not 0 <= seconds <= 86400:  # NaN fails too
        raise DCGANError(f"DCGAN_PROGRESS_SECONDS must be a number of seconds from 0 to 86400, got {text!r}")
    return seconds


def duration(seconds: float) -> str:
    """3725 -> '1:02:05', 65 -> '1:05'."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    """`with Progress(total, "features", "img") as p: ... p.update(n)`; what=None shows nothing (a
    library call inside a bigger job)."""

    def __init__(self, total: int, what: str | None, unit: str = "img"):
        self.total, self.what, self.unit = max(int(total), 0), what, unit
        self.done, self.start = 0, time.monotonic()
        self.every = plain_every() if what else float("inf")
        self.last = self.start
        self.bar = tqdm(total=self.total, desc=what, unit=unit, unit_scale=True, dynamic_ncols=True,
                        disable=not (what and sys.stderr.isatty()), file=sys.stderr)

    def update(self, n: int = 1) -> None:
        self.done += n
        self.bar.update(n)
        now = time.monotonic()
        if self.bar.disable and now - self.last >= self.every and self.done < self.total:
            self.last = now
            print(self.line(now), file=sys.stderr, flush=True)

    def line(self, now: float | None = None) -> str:
        elapsed = max((now or time.monotonic()) - self.start, 1e-9)
        rate = self.done / elapsed
        eta = duration((self.total - self.done) / rate) if rate > 0 else "unknown"
        share = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        return (f"{self.what}: {self.done:,}/{self.total:,} {self.unit}{share}, {rate:,.1f} {self.unit}/s, "
                f"ETA {eta}")

    def close(self) -> None:
        self.bar.close()
        if self.what and self.bar.disable and self.done and time.monotonic() - self.start >= self.every:
            elapsed = time.monotonic() - self.start
            print(f"{self.what}: {self.done:,} {self.unit} in {duration(elapsed)}", file=sys.stderr,
                  flush=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
