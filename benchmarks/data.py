"""Data loading at scale: the memory-mapped cache against the in-memory tensor and against decoding
JPEGs while training, on a folder of real-photo JPEGs larger than the in-memory limit.

The folder: crops of scikit-learn's two sample photos (random position and size, 96 to 320 pixels,
saved at 160x160) and Fashion-MNIST images (upscaled to 112x112, RGB), every one re-encoded as JPEG
(quality 90), written once to --folder and reused. For each image size (64 and 128, 3 channels):
- packing: `dcgan.prepare` with every core, images/s and bytes per image on disk;
- loader-only throughput, batch 128, images/s, of one epoch of `dcgan.data.batches` (what training
  reads) for (a) the memory-mapped entry cold (its pages dropped from the page cache with
  posix_fadvise first) and warm (the next epoch), (b) the same images as one in-memory tensor, and
  (c) the cache off: a DataLoader decoding the JPEGs with 1 and 2 worker processes (this machine's
  cores), over the first --stream-batches batches of the epoch;
- peak memory of `dcgan train` (tiny widths, 64x64, 20 steps) over half and all of the folder,
  memory-mapped and in memory: the process's anonymous (private) resident memory, polled, and its
  file-backed resident pages (page cache, reclaimable).

    python benchmarks/data.py                        # 50,000 JPEGs in ~/dcgan-bench/jpegs
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import record
import torch
from PIL import Image
from sklearn.datasets import load_sample_images

from dcgan import data
from dcgan.datasets import read_mnist

BATCH = 128


def build_folder(folder: Path, n: int, seed: int = 0) -> None:
    """n JPEGs from real photos; an existing folder of n images is reused."""
    if folder.is_dir() and len(list(folder.iterdir())) == n:
        return
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    photos = [Image.fromarray(a) for a in load_sample_images().images]
    fashion, _ = read_mnist("fashion-mnist", None, "train")
    for i in range(n):
        if i % 2 == 0:
            photo = photos[rng.integers(len(photos))]
            s = int(rng.integers(96, 321))
            x, y = int(rng.integers(photo.width - s)), int(rng.integers(photo.height - s))
            img = photo.crop((x, y, x + s, y + s)).resize((160, 160), Image.BICUBIC)
        else:
            img = Image.fromarray(fashion[(i // 2) % len(fashion)]).convert("RGB").resize((112, 112),
                                                                                          Image.BICUBIC)
        img.save(folder / f"{i:06d}.jpg", quality=90)


def epoch_rate(ds, epoch: int, limit: int | None = None, workers: int | None = None) -> float:
    """Images per second of `batches` over one epoch (or its first `limit` batches)."""
    start, n = time.perf_counter(), 0
    for k, batch in enumerate(data.batches(ds, BATCH, seed=0, epoch=epoch, workers=workers)):
        n += len(batch)
        if limit and k + 1 == limit:
            break
    return n / (time.perf_counter() - start)


def drop_page_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def loaders(folder: Path, size: int, stream_batches: int) -> dict:
    out = {"image_size": size}
    data.MAX_IN_MEMORY_BYTES = 2**20  # 1 MiB: every size here is memory-mapped
    packed = data.prepare(str(folder), image_size=size, channels=3)
    out["pack"] = {k: packed[k] for k in ("images", "seconds", "images_per_second", "bytes",
                                          "bytes_per_image", "built")}
    drop_page_cache(Path(packed["cache"]) / "images.npy")
    mapped = data.open_dataset(str(folder), size, 3)
    assert mapped.mapped
    out["mapped_cold"] = epoch_rate(mapped, 0)
    out["mapped_warm"] = epoch_rate(mapped, 1)
    data.MAX_IN_MEMORY_BYTES = 2**40
    in_memory = data.open_dataset(str(folder), size, 3)
    assert not in_memory.mapped
    out["in_memory"] = epoch_rate(in_memory, 1)
    del in_memory
    data.MAX_IN_MEMORY_BYTES = 2**20
    streamed = data.open_dataset(str(folder), size, 3, use_cache=False)
    assert streamed.stream is not None
    for workers in (1, 2):
        out[f"streamed_{workers}_workers"] = epoch_rate(streamed, 1, stream_batches, workers)
    out["warm_over_streamed_2"] = out["mapped_warm"] / out["streamed_2_workers"]
    return out


PEAK = """
import os, sys, threading, time
peak = {"anon": 0, "file": 0}
def poll():
    while True:
        fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
        for name, key in (("anon", "RssAnon"), ("file", "RssFile")):
            peak[name] = max(peak[name], int(fields[key].split()[0]))
        time.sleep(0.02)
threading.Thread(target=poll, daemon=True).start()
from dcgan.cli import main
try:
    code = main(sys.argv[1:])
finally:
    print(f"PEAK {peak['anon']} {peak['file']}", file=sys.stderr)
sys.exit(code)
"""


def peak_memory(folder: Path, half: Path, run_root: Path) -> list[dict]:
    rows = []
    for images, exclude in (("half", half), ("all", None)):
        for how, gb in (("mapped", "0.001"), ("in memory", "64")):
            args = ["train", "--data", str(folder), "--image-size", "64", "--ngf", "8", "--ndf", "8",
                    "--batch-size", str(BATCH), "--steps", "20", "--tensorboard", "false",
                    "--sample-every", "1000", "--device", "cpu", "--out", str(run_root / f"{images}-{gb}")]
            if exclude:
                args += ["--exclude", str(exclude)]
            proc = subprocess.run([sys.executable, "-c", PEAK, *args], capture_output=True, text=True,
                                  env={**os.environ, "DCGAN_MAX_MEMORY_GB": gb})
            if proc.returncode != 0:
                raise SystemExit(proc.stderr)
            assert ("memory-mapped" in proc.stderr) == (how == "mapped"), proc.stderr
            anon, file = (int(x) for x in proc.stderr.rsplit("PEAK", 1)[1].split())
            count = next(line for line in proc.stderr.splitlines() if " images from " in line)
            rows.append({"images": int(count.split(": ", 1)[1].split()[0]), "reading": how,
                         "peak_anon_mb": anon / 1024, "peak_file_mb": file / 1024})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--folder", type=Path, default=Path.home() / "dcgan-bench" / "jpegs")
    ap.add_argument("--images", type=int, default=50_000)
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--stream-batches", type=int, default=40)
    args = ap.parse_args()
    out = record.header()
    start = time.perf_counter()
    build_folder(args.folder, args.images)
    size = sum(p.stat().st_size for p in args.folder.iterdir())
    out["folder"] = {"images": args.images, "bytes": size, "kib_per_jpeg": size / args.images / 1024}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["DCGAN_CACHE_DIR"] = str(Path(tmp) / "cache")
        out["sizes"] = [loaders(args.folder, size, args.stream_batches) for size in args.sizes]
        half = Path(tmp) / "half.txt"
        half.write_text("\n".join(sorted(p.name for p in args.folder.iterdir())[::2]) + "\n")
        out["peak_memory"] = peak_memory(args.folder, half, Path(tmp) / "runs")
    out["seconds"] = time.perf_counter() - start
    kib = out["folder"]["kib_per_jpeg"]
    lines = [f"  folder: {args.images:,} JPEGs from real photos, {kib:.1f} KiB each; batch {BATCH}, "
             f"{torch.get_num_threads()} threads"]
    for s in out["sizes"]:
        p = s["pack"]
        lines.append(
            f"  {s['image_size']}x{s['image_size']}x3: pack {p['images_per_second']:,.0f} img/s "
            f"({p['bytes_per_image']:,.0f} bytes/image); images/s: memory-mapped cold "
            f"{s['mapped_cold']:,.0f}, warm {s['mapped_warm']:,.0f}; in memory {s['in_memory']:,.0f}; "
            f"streamed 1 worker {s['streamed_1_workers']:,.0f}, 2 workers {s['streamed_2_workers']:,.0f}; "
            f"warm mapped / streamed (2 workers) {s['warm_over_streamed_2']:.1f}x")
    for r in out["peak_memory"]:
        lines.append(f"  train 64x64 over {r['images']:,} images, {r['reading']}: peak anonymous RSS "
                     f"{r['peak_anon_mb']:,.0f} MiB, file-backed {r['peak_file_mb']:,.0f} MiB")
    record.save("data", out, lines)


if __name__ == "__main__":
    main()
