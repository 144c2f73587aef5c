"""`dcgan sample` says which checkpoint and step it used, and --which chooses (latest, best, a step)."""

import shutil

import pytest
from clirun import cli, dcgan
from test_cli import TINY, assert_clean_error


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run = tmp_path_factory.mktemp("which") / "run"
    dcgan("train", *TINY, "--steps", 4, "--checkpoint-every", 2, "--snapshot-every", 2, "--out", run)
    return run


def test_sample_names_the_checkpoint_and_step_and_which_chooses(run, tmp_path):
    latest = dcgan("sample", run, "--n", 4, "--out", tmp_path / "latest.png", cwd=tmp_path)
    assert f"generator of step 4, from {run / 'checkpoint.pt'}" in latest.stdout
    early = dcgan("sample", run, "--n", 4, "--which", 2, "--out", tmp_path / "two.png", cwd=tmp_path)
    assert f"generator of step 2, from {run / 'snapshots' / 'step_00000002.pt'}" in early.stdout
    assert (tmp_path / "two.png").read_bytes() != (tmp_path / "latest.png").read_bytes()
    snapshot = run / "snapshots" / "step_00000002.pt"
    direct = dcgan("sample", snapshot, "--n", 4, "--out", tmp_path / "file.png",
                   cwd=tmp_path)
    assert "generator of step 2" in direct.stdout
    assert (tmp_path / "file.png").read_bytes() == (tmp_path / "two.png").read_bytes()
    dcgan("export", run, tmp_path / "g.safetensors")
    exported = dcgan("sample", tmp_path / "g.safetensors", "--n", 4, "--out", tmp_path / "g.png",
                     cwd=tmp_path)
    assert "generator of step 4, from" in exported.stdout


def test_which_best_and_missing_steps_are_clear_errors(run, tmp_path):
    assert_clean_error(cli("sample", run, "--which", "best", "--out", tmp_path / "b.png"),
                       "best.pt", "--eval-every")
    assert_clean_error(cli("sample", run, "--which", 3, "--out", tmp_path / "b.png"),
                       "2, 4", "'3'")
    assert_clean_error(cli("sample", run / "checkpoint.pt", "--which", 2, "--out", tmp_path / "b.png"),
                       "run directory")
    best = tmp_path / "copy"
    shutil.copytree(run, best)
    shutil.copy(best / "snapshots" / "step_00000002.pt", best / "best.pt")  # as training links its best step
    proc = dcgan("sample", best, "--which", "best", "--out", tmp_path / "b.png", cwd=tmp_path)
    assert f"generator of step 2, from {best / 'best.pt'}" in proc.stdout
