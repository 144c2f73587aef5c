"""Which BatchNorm statistics the moving average of G should sample with, measured on validation data.

For each given run kept by `benchmarks/small_data.py --keep` (Fashion-MNIST 32x32, a run with
--ema-decay), the domain classifier's FID of 2,000 samples against 2,000 validation images for:
the trained G; the average with the trained G's BN statistics copied in (what StudioGAN and
stylegan2-ada do); the average with its own statistics (`dcgan.step.standing_statistics`, what
dcgan writes); and the trained G with recomputed statistics, the control that shows whether the
recomputation itself or the mismatch matters. Validation images: for a run on the 1,000-image
folder, training images outside it; for a run on all of Fashion-MNIST, a seeded draw of its
training split. Nothing here touches the test split.

    python benchmarks/ema_statistics.py --classifier clf.safetensors runs/aug0 runs/full0 ...
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import record
import small_data
from small_data import validation

from dcgan import checkpoint
from dcgan.data import open_dataset
from dcgan.metrics import Evaluator
from dcgan.models import ModelConfig, build
from dcgan.step import STANDING_Z, standing_statistics

ARMS = ("raw", "ema_copied", "ema_own", "raw_recomputed")


def generators(run: Path) -> dict:
    ck = checkpoint.load(run)
    config = ModelConfig.from_dict(ck["config"]["model"])
    raw, ema = build(config)[0], build(config)[0]
    raw.load_state_dict(ck["generator"])
    copied = {**ck["generator_ema"], **{k: v for k, v in ck["generator"].items()
                                          if k not in dict(raw.named_parameters())}}
    ema.load_state_dict(copied)
    return {"raw": raw.eval(), "ema_copied": ema.eval(), "ema_own": standing_statistics(copy.deepcopy(ema)),
            "raw_recomputed": standing_statistics(copy.deepcopy(raw))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", type=Path, nargs="+")
    p.add_argument("--classifier", type=Path, required=True)
    a = p.parse_args()
    features = f"classifier:{a.classifier}"
    full = Evaluator(features, open_dataset("fashion-mnist", 32, 1, split="train").images,
                     small_data.N_VALID, seed=1)
    rows = []
    for run in a.runs:
        config = checkpoint.load(run)["config"]
        folder = config["data"] != "fashion-mnist"
        valid = validation(Path(config["data"]), features) if folder else full
        fids = {k: valid(g)["fid"] for k, g in generators(run).items()}
        rows.append({"run": str(run), "data": config["data"], "step": checkpoint.load(run)["step"], **fids})
        print(rows[-1], flush=True)
    out = {**record.header(), "config": {"classifier": str(a.classifier), "runs": [str(r) for r in a.runs],
                                          "n_valid": small_data.N_VALID, "standing_z": STANDING_Z,
                                          "image_size": 32},
           "rows": rows}
    n = small_data.N_VALID
    lines = [f"  Fashion-MNIST 32x32, validation FID ({n} vs {n}), trained G / average with copied BN "
             f"statistics / average with its own ({STANDING_Z} z) / trained G with recomputed statistics:"]
    lines += [f"    {r['run']} (step {r['step']}): " + " / ".join(f"{r[k]:.1f}" for k in ARMS) for r in rows]
    record.save("ema_statistics", out, lines, title="EMA: which BatchNorm statistics")


if __name__ == "__main__":
    main()
