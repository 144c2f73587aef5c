"""The metric table: one entry per metric drives `dcgan evaluate`, the training-time evaluator, the console
line, TensorBoard and the choice of best.pt (--best-metric)."""

import json

import pytest
import torch
from clirun import cli

from dcgan import checkpoint, metrics
from dcgan.errors import DCGANError
from dcgan.train import configure, train

TINY = dict(data="digits", image_size=16, ngf=8, ndf=8, nz=16, batch_size=16, tensorboard=False,
            log_every=1, sample_every=1000, checkpoint_every=1000, n_samples=16)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    path = tmp_path_factory.mktemp("clf") / "clf.safetensors"
    metrics.train_classifier("digits", out=path, epochs=1)
    return path


def tiny(tmp_path, name, clf, **kw):
    return configure({**TINY, "out": str(tmp_path / name), "eval_extractor": f"classifier:{clf}", **kw})


def rows_of(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def mean_gap(real: torch.Tensor, fake: torch.Tensor) -> float:
    """A toy metric: the distance between the feature means."""
    return float((real.mean(0) - fake.mean(0)).norm())


def test_a_metric_added_to_the_table_reaches_compare_the_evaluator_and_the_console(monkeypatch, classifier):
    monkeypatch.setitem(metrics.METRICS, "mean_gap", metrics.Metric("gap", mean_gap, lower_is_better=True,
                                                                    digits=2))
    gen = torch.Generator().manual_seed(0)
    real, fake = torch.randn(50, 8, generator=gen).double(), torch.randn(40, 8, generator=gen).double() + 1
    result = metrics.compare(real, fake)
    assert result["mean_gap"] == pytest.approx(mean_gap(real, fake))
    assert {"fid", "kid", "kid_std", "precision", "recall", "n_real", "n_fake"} <= set(result)
    assert "inception_score" not in result  # no logits: the metrics over logits are left out
    line = metrics.describe_quality(result)
    assert line == (f"FID {result['fid']:.3f}  KID {result['kid']:.5f} +- {result['kid_std']:.5f}  "
                    f"precision {result['precision']:.3f}  recall {result['recall']:.3f}  "
                    f"gap {result['mean_gap']:.2f}")
    # the training-time evaluator computes it too, from the same table
    from dcgan.checkpoint import load_generator

    reference = torch.randint(0, 256, (32, 1, 16, 16), dtype=torch.uint8)
    g = load_generator(train(configure({**TINY, "steps": 1, "out": str(classifier.parent / "g")})))
    scores = metrics.Evaluator(f"classifier:{classifier}", reference, 32, 0)(g)
    assert set(scores) == {"fid", "kid", "kid_std", "precision", "recall", "mean_gap"}


def test_inception_score_joins_compare_where_logits_exist():
    gen = torch.Generator().manual_seed(1)
    real, fake = torch.randn(60, 6, generator=gen).double(), torch.randn(60, 6, generator=gen).double()
    logits = torch.randn(60, 10, generator=gen).double()
    result = metrics.compare(real, fake, logits)
    assert (result["inception_score"], result["inception_score_std"]) == metrics.inception_score(logits)
    assert metrics.describe_quality(result).endswith(
        f"  IS {result['inception_score']:.2f} +- {result['inception_score_std']:.2f}")


def negated_fid(real: torch.Tensor, fake: torch.Tensor) -> float:
    return -metrics.frechet_distance(real, fake)


@pytest.fixture(scope="module")
def by_metric(classifier, tmp_path_factory):
    """The same seeded run, best.pt chosen by FID, by recall, and by a higher-is-better metric added to
    the table (minus FID: its best is FID's worst)."""
    root = tmp_path_factory.mktemp("best")
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(metrics.METRICS, "negated_fid", metrics.Metric("-FID", negated_fid, lower_is_better=False,
                                                                  digits=3))
        return {name: train(tiny(root, name, classifier, steps=6, eval_every=2, eval_n=32, best_metric=name))
                for name in ("fid", "recall", "negated_fid")}


def test_best_pt_is_the_checkpoint_of_the_best_value_of_the_named_metric(by_metric):
    rows = {name: [r for r in rows_of(run) if "fid" in r] for name, run in by_metric.items()}
    assert [r["step"] for r in rows["fid"]] == [2, 4, 6]
    for name in ("recall", "negated_fid"):  # the metric chosen changes nothing trained
        for a, b in zip(rows["fid"], rows[name], strict=True):
            assert all(a[k] == b[k] for k in ("fid", "recall", "loss_D"))
    # the first of equals is kept: a later tie is no improvement
    expected = {"fid": min(rows["fid"], key=lambda r: r["fid"]),
                "recall": max(rows["recall"], key=lambda r: r["recall"]),
                "negated_fid": max(rows["negated_fid"], key=lambda r: r["negated_fid"])}
    # FID's best and worst differ in this seeded run: a metric kept in the wrong direction shows
    worst = max(rows["fid"], key=lambda r: r["fid"])
    assert worst["step"] != expected["fid"]["step"] == expected["negated_fid"]["step"]
    for name, best in expected.items():
        kept = torch.load(by_metric[name] / "best.pt", weights_only=True)
        assert kept["step"] == best["step"], name
        assert kept["best"] == {"metric": name, name: best[name], "step": best["step"]}
        assert checkpoint.load(by_metric[name])["best"] == kept["best"]


def test_the_console_names_the_metric_of_each_new_best(classifier, tmp_path, capsys):
    run = train(tiny(tmp_path, "run", classifier, steps=4, eval_every=2, eval_n=32, best_metric="recall"))
    rows = [r for r in rows_of(run) if "fid" in r]
    err = capsys.readouterr().err
    first = rows[0]
    assert f"step {first['step']} new best recall {first['recall']:.3f} -> {run / 'best.pt'}" in err
    assert "new best FID" not in err


def test_an_unknown_best_metric_is_an_error_naming_the_known_ones(tmp_path, classifier):
    with pytest.raises(DCGANError, match="best_metric 'kid_std'.*fid, kid, precision, recall"):
        train(configure({**TINY, "best_metric": "kid_std", "out": str(tmp_path / "r")}))
    assert not (tmp_path / "r").exists()  # refused before any work
    with pytest.raises(DCGANError, match="inception_score needs --eval-features inception"):
        train(tiny(tmp_path, "r", classifier, best_metric="inception_score"))
    assert not (tmp_path / "r").exists()
    proc = cli("train", "--dry-run", "--best-metric", "sharpness", "--out", tmp_path / "r")
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: best_metric 'sharpness'") and "inception_score" in last, proc.stderr


def test_an_old_checkpoint_with_a_best_fid_still_resumes(classifier, tmp_path):
    run = train(tiny(tmp_path, "run", classifier, steps=2, eval_every=2, eval_n=32))
    ckpt = checkpoint.load(run)
    ckpt["best"] = {"fid": -1.0, "step": 2}  # as written before best_metric: better than any real FID
    checkpoint.save(run / "checkpoint.pt", ckpt)
    (run / "best.pt").unlink()
    resumed = train(configure({"steps": 4}, resume=run), resume=True)
    assert [r["step"] for r in rows_of(resumed) if "fid" in r] == [2, 4]
    assert not (run / "best.pt").exists()  # FID at step 4 did not beat the stored best
    assert checkpoint.load(run)["best"] == {"metric": "fid", "fid": -1.0, "step": 2}


def test_a_resumed_run_may_change_the_best_metric(classifier, tmp_path):
    run = train(tiny(tmp_path, "run", classifier, steps=2, eval_every=2, eval_n=32))
    assert checkpoint.load(run / "best.pt")["best"]["metric"] == "fid"
    train(configure({"steps": 4, "best_metric": "precision"}, resume=run), resume=True)
    kept = checkpoint.load(run / "best.pt")
    step4 = [r for r in rows_of(run) if r["step"] == 4 and "fid" in r][0]
    # the FID record does not carry over: the first precision measured is the best so far
    assert kept["step"] == 4 and kept["best"] == {"metric": "precision", "precision": step4["precision"],
                                                  "step": 4}


def test_training_time_scores_reach_tensorboard(classifier, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = train(tiny(tmp_path, "run", classifier, steps=4, eval_every=2, eval_n=32, tensorboard=True))
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"loss_D", "fid", "kid", "kid_std", "precision", "recall"} <= tags
    evaluated = [r for r in rows_of(run) if "fid" in r]
    for tag in ("fid", "kid", "kid_std", "precision", "recall"):
        logged = [(e.step, e.value) for e in events.Scalars(tag)]
        assert [s for s, _ in logged] == [r["step"] for r in evaluated], tag
        expected = [r[tag] for r in evaluated]
        assert [v for _, v in logged] == pytest.approx(expected, rel=1e-6, nan_ok=True), tag
