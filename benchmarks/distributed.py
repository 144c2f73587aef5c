"""Distributed throughput: 1 process against N processes under torchrun, same global batch.

Each configuration runs `dcgan train` for real (digits at 32x32, the pytorch preset) and the
throughput is the median img/s of its metrics rows after a warm-up; configurations alternate and
repeat, and the reported ratio is the median of the per-round ratios.

    python benchmarks/distributed.py                 # CPU: 1 vs 2 processes (gloo)
    python benchmarks/distributed.py --device cuda --nproc 2 --batch 512
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import record


def run(nproc: int, a, out: Path) -> float:
    args = ["train", "--data", a.data, "--batch-size", str(a.batch // nproc), "--steps", str(a.steps),
            "--log-every", "1", "--sample-every", str(a.steps), "--checkpoint-every", str(a.steps),
            "--tensorboard", "false", "--device", a.device, "--out", str(out)]
    if nproc == 1:
        cmd = [sys.executable, "-m", "dcgan", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc}", "-m", "dcgan", *args]
    subprocess.run(cmd, check=True, capture_output=True)
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    return statistics.median(r["img_per_s"] for r in rows[a.warmup:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="digits")
    p.add_argument("--device", default="cpu")
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--batch", type=int, default=128, help="global batch")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(a.rounds):
            one = run(1, a, Path(tmp) / f"one{i}")
            many = run(a.nproc, a, Path(tmp) / f"many{i}")
            rounds.append({"one_img_s": one, "many_img_s": many, "ratio": many / one})
            print(f"round {i + 1}: 1 process {one:.0f} img/s, {a.nproc} processes {many:.0f} img/s",
                  flush=True)
    out = {**record.header(), "config": vars(a), "rounds": rounds,
           "one_img_s": statistics.median(r["one_img_s"] for r in rounds),
           "many_img_s": statistics.median(r["many_img_s"] for r in rounds),
           "ratio": statistics.median(r["ratio"] for r in rounds)}
    record.save("distributed", out, [
        f"  {a.data} 32x32, global batch {a.batch}, {a.device}: 1 process {out['one_img_s']:.0f} img/s, "
        f"{a.nproc} processes {out['many_img_s']:.0f} img/s, ratio {out['ratio']:.2f} "
        f"(median of {a.rounds} rounds)"])

if __name__ == "__main__":
    main()
