"""Training throughput: our train_step against the reference DCGAN recipe, side by side.

The baseline follows the widely used reference loop (pytorch/examples dcgan, the PyTorch DCGAN
tutorial): a DataLoader decoding image files with PIL in 2 workers (resize, centre crop, to tensor,
normalize), D forward on real, D forward on the detached fake, then a G step that runs D forward
again with D's weight gradients computed, nn.BCELoss on sigmoid outputs.

Ours: the images decoded once into a uint8 tensor (dcgan.data), normalized on the fly, and
dcgan.train.train_step (D's parameters frozen during the G step, BCE with logits, one G forward).

Each measurement runs in a fresh subprocess (so peak RSS is its own); runs alternate A, B, A, B and
the reported ratio is the median of the per-pair ratios.

    python benchmarks/throughput.py                       # 64x64x3 and 32x32x1, batch 128
    python benchmarks/throughput.py --pairs 5 --updates 20
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import record
import torch
from PIL import Image
from torch import nn


def make_image_folder(root: Path, n: int, side: int) -> Path:
    """n smooth colour JPEGs of side x side pixels (a real folder of real files)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:side, 0:side] / side
    for i in range(n):
        f = rng.uniform(1, 6, size=(3, 2))
        ph = rng.uniform(0, 6.28, size=3)
        img = np.stack([np.sin(f[c, 0] * 6.28 * xx + f[c, 1] * 6.28 * yy + ph[c]) for c in range(3)], -1)
        img = ((img + 1) * 127.5 + rng.normal(0, 8, img.shape)).clip(0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / f"{i:05d}.jpg", quality=90)
    return root


# ---- the reference recipe -----------------------------------------------------------------

def reference_generator(nz: int, ngf: int, nc: int, size: int) -> nn.Sequential:
    n = int(np.log2(size)) - 2
    layers: list[nn.Module] = [nn.ConvTranspose2d(nz, ngf * 2 ** (n - 1), 4, 1, 0, bias=False),
                               nn.BatchNorm2d(ngf * 2 ** (n - 1)), nn.ReLU(True)]
    for i in range(n - 1, 0, -1):  # state size. (ngf * 2^i) x 2^(n+1-i) ... doubling each stage
        layers += [nn.ConvTranspose2d(ngf * 2**i, ngf * 2 ** (i - 1), 4, 2, 1, bias=False),
                   nn.BatchNorm2d(ngf * 2 ** (i - 1)), nn.ReLU(True)]
    layers += [nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh()]
    return nn.Sequential(*layers)


def reference_discriminator(ndf: int, nc: int, size: int) -> nn.Sequential:
    n = int(np.log2(size)) - 2
    layers: list[nn.Module] = [nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
    for i in range(1, n):
        layers += [nn.Conv2d(ndf * 2 ** (i - 1), ndf * 2**i, 4, 2, 1, bias=False),
                   nn.BatchNorm2d(ndf * 2**i), nn.LeakyReLU(0.2, True)]
    layers += [nn.Conv2d(ndf * 2 ** (n - 1), 1, 4, 1, 0, bias=False), nn.Sigmoid()]
    return nn.Sequential(*layers)


class FileImages(torch.utils.data.Dataset):
    def __init__(self, root: Path, size: int, nc: int):
        import torchvision.transforms as T

        self.paths = sorted(root.glob("*.jpg"))
        self.mode = "RGB" if nc == 3 else "L"
        self.transform = T.Compose([T.Resize(size), T.CenterCrop(size), T.ToTensor(),
                                    T.Normalize([0.5] * nc, [0.5] * nc)])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.transform(Image.open(self.paths[i], formats=["JPEG"]).convert(self.mode))


def run_baseline(a) -> float:
    G = reference_generator(a.nz, 64, a.channels, a.size)
    D = reference_discriminator(64, a.channels, a.size)
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    loader = torch.utils.data.DataLoader(FileImages(Path(a.folder), a.size, a.channels),
                                         batch_size=a.batch, shuffle=True, num_workers=2,
                                         drop_last=True)
    crit = nn.BCELoss()

    def batches():
        while True:
            yield from loader

    it = batches()
    t0 = None
    for i in range(a.warmup + a.updates):
        if i == a.warmup:
            t0 = time.perf_counter()
        real = next(it)
        b = len(real)
        D.zero_grad()
        err_real = crit(D(real).view(-1), torch.full((b,), 1.0))
        err_real.backward()
        fake = G(torch.randn(b, a.nz, 1, 1))
        err_fake = crit(D(fake.detach()).view(-1), torch.full((b,), 0.0))
        err_fake.backward()
        opt_d.step()
        G.zero_grad()
        err_g = crit(D(fake).view(-1), torch.full((b,), 1.0))
        err_g.backward()
        opt_g.step()
    img_s = a.updates * a.batch / (time.perf_counter() - t0)
    it.close()  # shut the workers down, so that their peak memory is counted as children's
    return img_s


# ---- ours ---------------------------------------------------------------------------------

def ours_setup(a):
    """Exactly what `dcgan train` runs: dcgan.step.Networks.build and the in-memory dataset."""
    from dcgan.config import resolve
    from dcgan.data import open_dataset, stream_batches
    from dcgan.step import Networks

    config = resolve({"data": a.folder, "image_size": a.size, "channels": a.channels,
                      "batch_size": a.batch, "nz": a.nz, **json.loads(a.options)})
    t = time.perf_counter()
    data = open_dataset(a.folder, a.size, a.channels)
    decode_s = time.perf_counter() - t
    nets = Networks.build(config, torch.device("cpu"))
    reals = stream_batches(data, config.batch_size, config.seed, "cpu")
    return config, nets, reals, decode_s


def ours_step(config, nets, reals, noise):
    from dcgan.step import train_step

    return train_step(nets, reals, noise, config)


def run_ours(a) -> tuple[float, float]:
    config, nets, reals, decode_s = ours_setup(a)
    noise = torch.Generator().manual_seed(1)
    t0 = None
    for i in range(a.warmup + a.updates):
        if i == a.warmup:
            t0 = time.perf_counter()
        stats = ours_step(config, nets, reals, noise)
    stats.tolist()
    return a.updates * a.batch / (time.perf_counter() - t0), decode_s


def flops_per_update(a) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    config, nets, reals, _ = ours_setup(a)
    with FlopCounterMode(display=False) as counter:
        ours_step(config, nets, reals, torch.Generator().manual_seed(1))
    return counter.get_total_flops()


def matmul_peak(n: int = 2048, reps: int = 10) -> float:
    """Measured fp32 matmul FLOP/s of this machine (the MFU denominator)."""
    x, y = torch.randn(n, n), torch.randn(n, n)
    x @ y
    t = time.perf_counter()
    for _ in range(reps):
        x @ y
    return 2 * n**3 * reps / (time.perf_counter() - t)


def worker(a) -> None:
    torch.manual_seed(0)
    if a.worker == "baseline":
        out = {"img_s": run_baseline(a)}
    else:
        img_s, decode_s = run_ours(a)
        out = {"img_s": img_s, "decode_s": decode_s}
    # peak RSS of the training process itself (KiB -> MiB); the baseline's 2 DataLoader workers
    # come on top, recorded apart as the largest child's peak
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({**out, "peak_rss_mb": own, "largest_child_rss_mb": child}))


def measure(kind: str, a, folder: Path) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--folder", str(folder), "--size", str(a.size),
           "--channels", str(a.channels), "--batch", str(a.batch), "--updates", str(a.updates),
           "--warmup", str(a.warmup), "--options", a.options]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench(a, folder: Path) -> dict:
    pairs = []
    for p in range(a.pairs):
        ours, base = measure("ours", a, folder), measure("baseline", a, folder)
        pairs.append({"ours": ours, "baseline": base, "ratio": ours["img_s"] / base["img_s"]})
        print(f"  {a.size}x{a.size}x{a.channels} pair {p + 1}: ours {ours['img_s']:.1f} img/s, "
              f"baseline {base['img_s']:.1f} img/s, ratio {pairs[-1]['ratio']:.2f}", flush=True)
    ours_img_s = statistics.median(p["ours"]["img_s"] for p in pairs)
    flops = flops_per_update(a)
    peak = matmul_peak()
    return {
        "config": {"size": a.size, "channels": a.channels, "batch": a.batch, "ngf": 64, "ndf": 64,
                   "options": json.loads(a.options),
                   "preset": "pytorch", "updates": a.updates, "pairs": a.pairs, "device": "cpu",
                   "threads": torch.get_num_threads()},
        "ratio": statistics.median(p["ratio"] for p in pairs),
        "ours_img_s": ours_img_s,
        "baseline_img_s": statistics.median(p["baseline"]["img_s"] for p in pairs),
        "flops_per_update": flops,
        "matmul_peak_gflops": peak / 1e9,
        "mfu": flops * ours_img_s / a.batch / peak,
        "peak_rss_mb": max(p["ours"]["peak_rss_mb"] for p in pairs),
        "baseline_peak_rss_mb": max(p["baseline"]["peak_rss_mb"] for p in pairs),
        "ours_one_time_decode_s": pairs[0]["ours"]["decode_s"],
        "pairs": pairs,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", choices=["ours", "baseline"], help=argparse.SUPPRESS)
    p.add_argument("--folder", help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--nz", type=int, default=100)
    p.add_argument("--updates", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--images", type=int, default=1024)
    p.add_argument("--shapes", default="64x3,32x1", help="comma list of SIZExCHANNELS")
    p.add_argument("--options", default="{}", help='our settings as JSON, e.g. \'{"channels_last": false}\'')
    a = p.parse_args()
    if a.worker:
        return worker(a)

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_image_folder(Path(tmp) / "images", a.images, 80)
        a.folder = str(folder)
        for shape in a.shapes.split(","):
            a.size, a.channels = map(int, shape.split("x"))
            results.append(bench(a, folder))
    out = {**record.header(), "results": results,
           **{k: results[0][k] for k in ("ratio", "ours_img_s", "baseline_img_s", "mfu", "peak_rss_mb",
                                         "config")}}
    lines = []
    for r in results:
        c = r["config"]
        lines.append(f"  {c['size']}x{c['size']}x{c['channels']} batch {c['batch']}: ours "
                     f"{r['ours_img_s']:.1f} img/s vs baseline {r['baseline_img_s']:.1f} img/s, "
                     f"ratio {r['ratio']:.2f} (median of {c['pairs']} pairs), MFU {r['mfu']:.0%} of "
                     f"{r['matmul_peak_gflops']:.0f} GFLOP/s, peak RSS of the training process "
                     f"{r['peak_rss_mb']:.0f} MB vs {r['baseline_peak_rss_mb']:.0f} MB (+2 workers)")
    record.save("throughput" if a.options == "{}" else "throughput_options", out, lines)


if __name__ == "__main__":
    main()
