"""What a run reports as it goes: metrics.jsonl, TensorBoard, the progress bar, console lines.

Only rank 0 of a distributed run reports; elsewhere every method does nothing.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from dcgan import checkpoint
from dcgan.progress import duration, plain_every

SCALARS = ("loss_D", "loss_G", "D_x", "D_G_z", "img_per_s")


class RunLog:
    def __init__(self, run: Path, total_images: int, start_images: int, start_step: int,
                 tensorboard: bool, active: bool = True, total_steps: int | None = None):
        self.run, self.active = run, active
        self.total_images, self.images, self.total_steps = total_images, start_images, total_steps
        self.every, self.printed = plain_every(), time.monotonic()  # console lines when no bar is shown
        self.path = run / "metrics.jsonl"
        self.metrics = open(self.path, "a") if active else None
        self.writer = None
        if active and tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run / "tensorboard"), purge_step=start_step or None)
        self.bar = tqdm(total=total_images, initial=start_images, unit="img", unit_scale=True,
                        dynamic_ncols=True, desc=run.name,
                        disable=not (active and sys.stderr.isatty()))

    def advance(self, images: int) -> None:
        self.images += images
        self.bar.update(images)

    def row(self, row: dict, console: bool) -> None:
        """One metrics row: to metrics.jsonl, TensorBoard, the bar; to the console if asked or when
        the last console line is older than $DCGAN_PROGRESS_SECONDS (and no bar is shown), with the
        ETA; warnings always."""
        if not self.active:
            return
        self.metrics.write(json.dumps(row) + "\n")
        self.metrics.flush()
        if self.writer:
            for k in SCALARS:
                self.writer.add_scalar(k, row[k], row["step"])
        self.bar.set_postfix(loss_D=f"{row['loss_D']:.3f}", loss_G=f"{row['loss_G']:.3f}")
        now = time.monotonic()
        if self.bar.disable and (console or now - self.printed >= self.every):
            self.printed = now
            of = f"/{self.total_steps:,}" if self.total_steps else ""
            rate = row["img_per_s"]
            eta = duration((self.total_images - self.images) / rate) if rate > 0 else "unknown"
            print(f"step {row['step']:,}{of} loss_D {row['loss_D']:.4f} loss_G {row['loss_G']:.4f} "
                  f"D(x) {row['D_x']:.3f} D(G(z)) {row['D_G_z']:.3f} {rate:.0f} img/s, ETA {eta}",
                  file=sys.stderr, flush=True)
        for w in row["warnings"]:
            self.message(f"warning: step {row['step']}: {w}")

    def scalars(self, values: dict, step: int) -> None:
        """Numbers beside the rows' own, e.g. the training-time FID and KID, to TensorBoard."""
        if self.writer:
            for k, v in values.items():
                self.writer.add_scalar(k, v, step)

    def image(self, grid: torch.Tensor, step: int) -> None:
        if self.writer:
            self.writer.add_image("samples", grid, step)

    def message(self, text: str) -> None:
        if self.active:
            tqdm.write(text, file=sys.stderr)

    def rewind(self, step: int, images: int) -> None:
        """Back to `step` (resume or rollback): rows logged after it are dropped, they run again."""
        if not self.active:
            return
        self.metrics.close()
        truncate_metrics(self.path, step)
        self.metrics = open(self.path, "a")
        self.bar.reset(self.bar.total)
        self.bar.update(images)
        self.images = images

    def close(self) -> None:
        self.bar.close()
        if self.metrics:
            self.metrics.close()
        if self.writer:
            self.writer.close()


def read_metrics(path: Path) -> list[dict]:
    rows = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            rows.append(json.loads(line))
        except ValueError:  # a line cut short by a killed process
            pass
    return rows


def truncate_metrics(path: Path, step: int) -> None:
    if path.is_file():
        kept = [r for r in read_metrics(path) if r.get("step", 0) <= step]
        checkpoint.atomic_write(path, lambda f: f.write("".join(json.dumps(r) + "\n" for r in kept).encode()))
