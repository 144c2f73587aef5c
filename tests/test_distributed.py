"""torchrun + DistributedDataParallel with real processes: gloo, 2 ranks, CPU."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from clirun import dcgan

from dcgan import checkpoint

TINY = ["--image-size", "16", "--ngf", "8", "--ndf", "8", "--nz", "16", "--tensorboard", "false",
        "--log-every", "1", "--sample-every", "2", "--device", "cpu"]


def torchrun(*args, nproc=2) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def weights(run) -> dict:
    ckpt = checkpoint.load(run)
    return {**{f"G.{k}": v for k, v in ckpt["generator"].items()},
            **{f"D.{k}": v for k, v in ckpt["discriminator"].items()}}


WORKER = textwrap.dedent("""
    import importlib, json, sys
    import torch, torch.distributed as dist
    loop = importlib.import_module("dcgan.train")
    step, record, rank = loop.train_step, [], []

    def checked(nets, *args, **kw):
        out = step(nets, *args, **kw)
        rank[:] = [dist.get_rank()]
        flat = torch.cat([p.detach().flatten() for n in (nets.G, nets.D) for p in n.parameters()])
        gathered = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, flat)
        record.append({"elements": flat.numel(),
                       "max_abs_diff": max(float((g - flat).abs().max()) for g in gathered),
                       "all_equal": all(torch.equal(g, flat) for g in gathered)})
        return out

    loop.train_step = checked
    config = json.loads(sys.argv[1])
    loop.train(loop.configure(config))
    with open(f"{config['out']}/replica-diff-{rank[0]}.json", "x") as f:  # one file per rank
        json.dump(record, f)
""")


def test_ranks_hold_identical_weights_after_every_step(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    run = tmp_path / "run"
    config = dict(data="digits", image_size=16, ngf=8, ndf=8, nz=16, batch_size=16, steps=5,
                  tensorboard=False, log_every=1, device="cpu", out=str(run))
    proc = torchrun(script, json.dumps(config))
    assert "2 ranks" in proc.stderr
    n_weights = sum(v.numel() for k, v in weights(run).items() if k.endswith(("weight", "bias")))
    for rank in (0, 1):  # each rank compared its weights, element by element, with every rank's
        diffs = json.loads((run / f"replica-diff-{rank}.json").read_text())
        assert len(diffs) == 5 and all(d["all_equal"] and d["max_abs_diff"] == 0.0 for d in diffs)
        assert all(d["elements"] == n_weights for d in diffs)
    rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]  # rank 0 alone logs
    assert rows[-1]["kimg"] == pytest.approx(5 * 16 * 2 / 1000)  # global batch = 2 x 16
    assert checkpoint.load(run)["step"] == 5


def test_checkpoint_and_resume_under_ddp(tmp_path):
    straight, half = tmp_path / "straight", tmp_path / "half"
    torchrun("-m", "dcgan", "train", *TINY, "--batch-size", 16, "--steps", 4, "--out", straight)
    torchrun("-m", "dcgan", "train", *TINY, "--batch-size", 16, "--steps", 2, "--out", half)
    torchrun("-m", "dcgan", "train", "--resume", half, "--steps", 4)
    a, b = weights(straight), weights(half)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert (straight / "samples" / "final.png").is_file()


def test_sync_bn_two_ranks_match_one_rank_on_the_combined_batch(tmp_path):
    two, one = tmp_path / "two", tmp_path / "one"
    torchrun("-m", "dcgan", "train", *TINY, "--batch-size", 8, "--steps", 3, "--sync-bn", "--out", two)
    dcgan("train", *TINY, "--batch-size", 16, "--steps", 3, "--sync-bn", "--out", one)
    a, b = weights(two), weights(one)
    for k in a:
        if a[k].is_floating_point():
            assert torch.allclose(a[k], b[k], atol=2e-5), k
    # without sync-bn each rank normalizes its own half batch: the runs differ
    per_rank = tmp_path / "per-rank"
    torchrun("-m", "dcgan", "train", *TINY, "--batch-size", 8, "--steps", 3, "--out", per_rank)
    c = weights(per_rank)
    assert any(not torch.allclose(c[k], b[k], atol=2e-5) for k in c if c[k].is_floating_point())
