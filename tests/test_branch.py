"""Resume and branch: --resume RUN --out NEW starts a new run from RUN's checkpoint; a resumed run only
goes forward."""

import json

import pytest
import torch
from clirun import cli, dcgan
from test_cli import TINY, assert_clean_error

from dcgan import checkpoint


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run = tmp_path_factory.mktemp("branch") / "run"
    dcgan("train", *TINY, "--steps", 4, "--checkpoint-every", 2, "--snapshot-every", 2, "--out", run)
    return run


def _weights(path):
    ckpt = checkpoint.load(path)
    return ckpt["step"], ckpt["generator"], ckpt["discriminator"]


def _same(a, b) -> bool:
    return a[0] == b[0] and all(torch.equal(a[i][k], b[i][k]) for i in (1, 2) for k in a[i])


def test_a_branch_from_a_snapshot_retraces_the_run_exactly_and_leaves_it_alone(run, tmp_path):
    before = (run / "checkpoint.pt").read_bytes(), (run / "config.json").read_bytes()
    new = tmp_path / "new"
    proc = dcgan("train", "--resume", run / "snapshots" / "step_00000002.pt", "--out", new, "--steps", 4)
    assert f"resuming {new} from step 2" in proc.stderr
    assert _same(_weights(new), _weights(run))  # steps 3 and 4 again, from the same state: the same weights
    assert ((run / "checkpoint.pt").read_bytes(), (run / "config.json").read_bytes()) == before
    config = json.loads((new / "config.json").read_text())
    assert config["out"] == str(new)
    snapshot = str(run / "snapshots" / "step_00000002.pt")
    assert config["branched_from"] == {"run": str(run), "checkpoint": snapshot, "step": 2}
    steps = [json.loads(line)["step"] for line in (new / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]  # the history up to the branch point, then its own steps


def test_a_branch_continues_further_and_stays_a_branch_when_resumed(run, tmp_path):
    new = tmp_path / "longer"
    dcgan("train", "--resume", run, "--out", new, "--steps", 5, "--lr", 1e-4)
    assert checkpoint.load(new)["step"] == 5 and checkpoint.load(run)["step"] == 4
    dcgan("train", "--resume", new, "--steps", 6)
    config = json.loads((new / "config.json").read_text())
    assert checkpoint.load(new)["step"] == 6 and config["branched_from"]["step"] == 4 and config["lr"] == 1e-4
    assert_clean_error(cli("train", "--resume", run, "--out", new, "--steps", 8),
                       str(new), "already holds a run")


def test_resuming_to_fewer_steps_than_done_says_the_current_step(run):
    before = (run / "config.json").read_bytes()
    proc = cli("train", "--resume", run, "--steps", 3)
    assert_clean_error(proc, "at step 4", "--steps above 4")
    assert (run / "config.json").read_bytes() == before
