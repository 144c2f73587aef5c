"""`dcgan explore`'s endpoints, through Starlette's test client: each view's answer is the command's
own output (byte for byte), and every bad request is a 4xx with a message, never a 500."""

from __future__ import annotations

import io
import json
import threading
import warnings

import numpy as np
import pytest
import torch
from clirun import cli, dcgan
from PIL import Image

warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient`")
from starlette.testclient import TestClient  # noqa: E402

from dcgan.explore import explorer  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("explore") / "run"
    dcgan("train", "--data", "digits", "--steps", 12, "--ngf", 8, "--ndf", 8, "--nz", 16, "--batch-size", 32,
          "--tensorboard", "false", "--sample-every", 100, "--out", out)
    return out


@pytest.fixture(scope="module")
def client(run):
    with TestClient(explorer([run]), raise_server_exceptions=False) as c:
        yield c


def fetch(client, result: dict, name: str) -> bytes:
    response = client.get(result["files"][name])
    assert response.status_code == 200
    return response.content


def test_sources_describe_each_model(client, run):
    (source,) = client.get("/api/sources").json()["sources"]
    assert source == {"index": 0, "path": str(run), "step": 12, "nz": 16, "image_size": 32, "channels": 1,
                      "discriminator": True, "data": "digits"}


def test_sheet_is_the_numbered_sheet_dcgan_sample_writes(client, run, tmp_path):
    result = client.post("/api/sheet", json={"seed": 3, "start": 16, "n": 16}).json()
    assert result["layout"] == {"columns": 4, "n": 16, "start": 16, "seed": 3}
    assert result["report"]["images"] == 16 and result["report"]["step"] == 12
    dcgan("sample", run, "--n", 16, "--seed", 3, "--start", 16, "--numbered", "--out", tmp_path / "s.png")
    assert fetch(client, result, "samples.png") == (tmp_path / "s.png").read_bytes()


def test_arithmetic_answers_what_dcgan_arithmetic_writes(client, run, tmp_path):
    body = {"seed": 2, "a": [1, 4], "b": [2], "c": [3], "noise": 0.5}
    result = client.post("/api/arithmetic", json=body).json()
    dcgan("arithmetic", run, "--seed", 2, "--a", "1,4", "--b", "2", "--c", "3", "--noise", 0.5,
          "--out", tmp_path / "ar")
    assert json.loads(fetch(client, result, "arithmetic.json")) == json.loads(
        (tmp_path / "ar" / "arithmetic.json").read_text())
    assert fetch(client, result, "arithmetic.png") == (tmp_path / "ar" / "arithmetic.png").read_bytes()
    assert result["report"]["a"] == [1, 4] and result["report"]["noise"] == 0.5


def frame(png: bytes, row: int, column: int, size: int = 32) -> np.ndarray:
    """Frame (row, column) cut out of a walk_frames.png / direction_frames.png (2 px padding)."""
    picture = np.asarray(Image.open(io.BytesIO(png)).convert("L"))
    y, x = 2 + row * (size + 2), 2 + column * (size + 2)
    return picture[y:y + size, x:x + size]


def sample_png(run, tmp_path, seed: int, index: int) -> np.ndarray:
    dcgan("sample", run, "--n", 1, "--start", index, "--seed", seed, "--individual", tmp_path / f"s{seed}")
    return np.asarray(Image.open(tmp_path / f"s{seed}" / f"{index:06d}.png").convert("L"))


def test_walk_answers_what_dcgan_walk_writes(client, run, tmp_path):
    body = {"seed": 1, "through": [5, 9, 2], "steps": 3, "mode": "linear"}
    result = client.post("/api/walk", json=body).json()
    assert sorted(result["files"]) == ["walk.gif", "walk.json", "walk.png", "walk_frames.png"]
    dcgan("walk", run, "--seed", 1, "--through", "5,9,2", "--steps", 3, "--mode", "linear", "--gif",
          "--frames", "--out", tmp_path / "w")
    written = json.loads((tmp_path / "w" / "walk.json").read_text())
    assert json.loads(fetch(client, result, "walk.json")) == written
    assert result["report"]["frames"] == 7
    frames = fetch(client, result, "walk_frames.png")
    assert frames == (tmp_path / "w" / "walk_frames.png").read_bytes()
    assert Image.open(io.BytesIO(frames)).size == (7 * 34 + 2, 34 + 2)  # one row of 7 frames
    # the frames the page's slider cuts out: the walk starts at sample 5 and ends at sample 2
    assert np.array_equal(frame(frames, 0, 0), sample_png(run, tmp_path, 1, 5))
    assert np.array_equal(frame(frames, 0, 6), sample_png(run, tmp_path, 1, 2))
    assert not np.array_equal(frame(frames, 0, 1), frame(frames, 0, 0))


def test_direction_mode_answers_what_dcgan_arithmetic_from_to_writes(client, run, tmp_path):
    body = {"seed": 2, "to": [1, 4], "from": [2], "targets": [3, 7], "steps": 5, "scale": 1.5}
    result = client.post("/api/direction", json=body).json()
    assert sorted(result["files"]) == ["direction.json", "direction.png", "direction_frames.png"]
    dcgan("arithmetic", run, "--seed", 2, "--to", "1,4", "--from", "2", "--targets", "3,7", "--steps", 5,
          "--scale", 1.5, "--frames", "--out", tmp_path / "d")
    written = json.loads((tmp_path / "d" / "direction.json").read_text())
    assert json.loads(fetch(client, result, "direction.json")) == written == result["report"]
    for name in ("direction.png", "direction_frames.png"):
        assert fetch(client, result, name) == (tmp_path / "d" / name).read_bytes(), name
    r = result["report"]
    assert r["alphas"] == [0.0, 0.375, 0.75, 1.125, 1.5] and r["v_norm"] > 0
    assert r["mean_rms_change"][0] == 0 and r["mean_rms_change"][-1] > r["mean_rms_change"][1] > 0
    frames = fetch(client, result, "direction_frames.png")
    assert Image.open(io.BytesIO(frames)).size == (5 * 34 + 2, 2 * 34 + 2)  # a row per target
    assert np.array_equal(frame(frames, 1, 0), sample_png(run, tmp_path, 2, 7))  # step 0: the target
    # v is mean z(A) - mean z(B): with A = to = [3] and B = from = [7], the last step of target 7 is sample 3
    one = client.post("/api/direction", json={"seed": 2, "to": [3], "from": [7], "targets": [7],
                                              "steps": 2}).json()
    last = frame(fetch(client, one, "direction_frames.png"), 0, 1)
    assert np.array_equal(last, sample_png(run, tmp_path, 2, 3))


def test_feature_maps_answer_what_dcgan_feature_maps_writes(client, run, tmp_path):
    result = client.post("/api/feature-maps", json={"seed": 4, "index": 11}).json()
    dcgan("feature-maps", run, "--seed", 4, "--index", 11, "--out", tmp_path / "fm")
    written = (tmp_path / "fm" / "feature_maps_g.png").read_bytes()
    assert fetch(client, result, "feature_maps_g.png") == written
    layers = json.loads((tmp_path / "fm" / "feature_maps_g.json").read_text())["layers"]
    assert result["report"]["layers"] == layers and len(layers) >= 3


def test_training_view_has_the_runs_rows_grids_and_warnings(client, run):
    result = client.post("/api/training", json={}).json()
    written = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in result["rows"]] == [r["step"] for r in written] and len(written) >= 2
    assert result["rows"][-1]["loss_D"] == written[-1]["loss_D"]
    names = sorted(p.name for p in (run / "samples").glob("*.png"))
    assert [g["name"] for g in result["grids"]] == names
    assert client.get(result["grids"][-1]["url"]).content == (run / "samples" / names[-1]).read_bytes()


def test_training_view_of_a_run_being_written(tmp_path, run):
    import shutil

    live = tmp_path / "live"
    shutil.copytree(run, live)
    with TestClient(explorer([live]), raise_server_exceptions=False) as c:
        before = len(c.post("/api/training", json={}).json()["rows"])
        with open(live / "metrics.jsonl", "a") as f:  # a diverged row, then one cut off mid-write
            f.write(json.dumps({"step": 99, "loss_D": float("nan"), "warnings": ["loss is NaN at step 99"]})
                    + '\n{"step": 100, "loss')
        after = c.post("/api/training", json={})
        assert after.status_code == 200
        rows = after.json()["rows"]
        assert len(rows) == before + 1 and rows[-1]["loss_D"] is None
        assert after.json()["warnings"][-1] == {"step": 99, "warning": "loss is NaN at step 99"}


def test_directions_answer_what_dcgan_directions_writes(client, run, tmp_path):
    result = client.post("/api/directions", json={"method": "sefa", "k": 3, "seed": 2}).json()
    dcgan("directions", run, "--method", "sefa", "--k", 3, "--seed", 2, "--n", 2000, "--out", tmp_path / "d")
    for name in ("direction_00.json", "direction_02.json", "directions.png"):
        assert fetch(client, result, name) == (tmp_path / "d" / name).read_bytes(), name
    written = json.loads((tmp_path / "d" / "directions.json").read_text())
    assert {k: v for k, v in result["report"].items() if k not in ("seconds", "files")} == \
        {k: v for k, v in written.items() if k not in ("seconds", "files")}


def test_svm_direction_from_clicked_samples(client):
    body = {"method": "svm", "positive": [1, 2, 3, 4], "negative": [5, 6, 7, 8], "seed": 0}
    result = client.post("/api/directions", json=body).json()
    assert result["report"]["positive"] == [1, 2, 3, 4] and "direction_00.json" in result["files"]


def test_moving_a_sample_along_a_direction(client, run, tmp_path):
    found = client.post("/api/directions", json={"method": "sefa", "k": 2}).json()
    direction = found["files"]["direction_01.json"]
    still = client.post("/api/move", json={"index": 6, "direction": direction, "sigmas": 0}).json()
    moved = client.post("/api/move", json={"index": 6, "direction": direction, "sigmas": 3}).json()
    assert still["report"] == {"seed": 0, "index": 6, "sigmas": 0.0, "direction": 1, "method": "sefa"}
    dcgan("sample", run, "--n", 1, "--start", 6, "--individual", tmp_path / "one")
    assert fetch(client, still, "moved.png") == (tmp_path / "one" / "000006.png").read_bytes()
    assert fetch(client, moved, "moved.png") != fetch(client, still, "moved.png")


def test_an_uploaded_image_is_projected_and_its_latents_become_the_palette(client, run, tmp_path):
    dcgan("sample", run, "--n", 1, "--start", 3, "--seed", 7, "--individual", tmp_path / "img")
    image = tmp_path / "img" / "000003.png"
    answer = client.post("/api/project?steps=15&restarts=1&source=0", content=image.read_bytes())
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert sorted(result["files"]) == ["latents.json", "projection.json", "projection.png"]
    dcgan("project", run, image, "--steps", 15, "--restarts", 1, "--out", tmp_path / "cli")
    written = json.loads((tmp_path / "cli" / "projection.json").read_text())
    keep = ("pixel_mse", "feature_distance", "steps", "restarts")
    got = result["report"]
    assert {k: got.get(k) for k in keep} == {k: written.get(k) for k in keep}
    assert json.loads(fetch(client, result, "latents.json"))["z"] == \
        json.loads((tmp_path / "cli" / "latents.json").read_text())["z"]
    latents = result["files"]["latents.json"]
    sheet = client.post("/api/sheet", json={"latents": latents, "n": 1}).json()
    assert sheet["report"]["seed"] is None and sheet["report"]["images"] == 1
    whole = client.post("/api/sheet", json={"latents": latents, "n": 64}).json()  # the page asks for 64
    assert whole["layout"] == {"columns": 1, "n": 1, "start": 0, "seed": 0}
    walk = client.post("/api/walk", json={"latents": latents, "through": [0, 0], "steps": 2})
    assert walk.status_code == 200
    # D's score of the projected image (row 0 of the latents), as `dcgan feature-maps --latents` gives it
    d = client.post("/api/feature-maps", json={"net": "d", "latents": latents, "index": 0}).json()
    (tmp_path / "latents.json").write_bytes(fetch(client, result, "latents.json"))
    dcgan("feature-maps", run, "--net", "d", "--latents", tmp_path / "latents.json", "--out", tmp_path / "fm")
    written = json.loads((tmp_path / "fm" / "feature_maps_d.json").read_text())
    assert d["report"]["d_probability"] == written["d_probability"] and d["report"]["input"]["row"] == 0
    past = client.post("/api/feature-maps", json={"net": "d", "latents": latents, "index": 1})
    assert past.status_code == 400 and "out of range" in past.json()["error"]


def test_d_score_of_an_uploaded_image(client, run, tmp_path):
    dcgan("sample", run, "--n", 1, "--start", 6, "--individual", tmp_path / "img")
    image = tmp_path / "img" / "000006.png"
    result = client.post("/api/d-image?source=0", content=image.read_bytes()).json()
    assert sorted(result["files"]) == [f"feature_maps_d{end}" for end in (".json", ".png", "_input.png")]
    dcgan("feature-maps", run, "--net", "d", "--image", image, "--out", tmp_path / "fm")
    written = json.loads((tmp_path / "fm" / "feature_maps_d.json").read_text())
    assert result["report"]["d_probability"] == written["d_probability"]
    assert result["report"]["layers"] == written["layers"]
    # the same image as G's sample 6: D scores the uploaded PNG (quantised to 8 bits) close to it
    sample = client.post("/api/feature-maps", json={"net": "d", "index": 6}).json()["report"]["d_probability"]
    assert abs(result["report"]["d_probability"] - sample) < 0.05
    other = client.post("/api/d-image", content=(tmp_path / "fm" / "feature_maps_d.png").read_bytes()).json()
    assert other["report"]["d_probability"] != result["report"]["d_probability"]


def test_feature_maps_take_an_image_or_a_latents_file_not_both(run, tmp_path):
    image = run / "samples" / "final.png"
    proc = cli("feature-maps", run, "--net", "d", "--image", image, "--latents", image,
               "--out", tmp_path / "fm")
    assert proc.returncode == 1 and "error: give an input image or a latents file, not both" in proc.stderr
    assert not (tmp_path / "fm").exists()


@pytest.mark.parametrize("content, message", [
    (b"", "no image was sent"),
    (b"%PDF-1.4 not an image at all", "cannot read image"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + (100_000).to_bytes(4, "big") * 2 + b"\x08\x02\x00\x00\x00"
     + b"\x00" * 4, "cannot read image"),  # a 100,000 x 100,000 header: a decompression bomb
    (b"\x00" * (17 * 2**20), "at most 16,777,216"),
])
@pytest.mark.parametrize("endpoint", ["/api/project?steps=2&restarts=1", "/api/d-image"])
def test_bad_upload_is_a_400(client, endpoint, content, message):
    answer = client.post(endpoint, content=content)
    assert answer.status_code == 400 and message in answer.json()["error"], answer.text


@pytest.mark.parametrize("query, message", [("source=2", "source must be an integer from 0 to 0"),
                                            ("source=x", "source must be an integer")])
def test_bad_upload_settings_are_a_400(client, run, query, message):
    image = (run / "samples" / "final.png").read_bytes()
    answer = client.post(f"/api/d-image?{query}", content=image)
    assert answer.status_code == 400 and message in answer.json()["error"], answer.text


def test_uploads_last_only_as_long_as_their_request(client, run, tmp_path):
    """Every upload (an image, a forget's boxes) is removed once its request is answered, whether
    it succeeded or not: nothing accumulates on the server's disk."""
    uploads = client.app.state.explorer.results / "uploads"
    dcgan("sample", run, "--n", 1, "--start", 2, "--individual", tmp_path / "img")
    image = (tmp_path / "img" / "000002.png").read_bytes()
    assert client.post("/api/d-image", content=image).status_code == 200
    assert client.post("/api/project?steps=2&restarts=1", content=image).status_code == 200
    assert client.post("/api/d-image", content=b"not an image").status_code == 400
    assert client.post("/api/forget", json={"boxes": BOXES, "n": 2, "curve": "none"}).status_code == 200
    assert uploads.is_dir() and list(uploads.iterdir()) == []


def test_d_score_and_maps_of_a_sample(client, run, tmp_path):
    result = client.post("/api/feature-maps", json={"net": "d", "seed": 1, "index": 5}).json()
    dcgan("feature-maps", run, "--net", "d", "--seed", 1, "--index", 5, "--out", tmp_path / "fm")
    written = json.loads((tmp_path / "fm" / "feature_maps_d.json").read_text())
    assert result["report"]["d_probability"] == written["d_probability"]
    assert 0 < result["report"]["d_probability"] < 1


def test_guided_backprop_and_neighbours_use_the_runs_training_data(client, run, tmp_path):
    gb = client.post("/api/guided-backprop", json={"filters": 2, "top": 3}).json()
    dcgan("guided-backprop", run, "--filters", 2, "--top", 3, "--max-images", 2000, "--out", tmp_path / "gb")
    assert fetch(client, gb, "guided_backprop.png") == (tmp_path / "gb" / "guided_backprop.png").read_bytes()
    nb = client.post("/api/neighbours", json={"n": 3, "k": 2, "seed": 4}).json()
    dcgan("neighbours", run, "--n", 3, "--k", 2, "--seed", 4, "--out", tmp_path / "nb")
    for name in ("neighbours_pixels.png", "neighbours_features.png"):
        assert fetch(client, nb, name) == (tmp_path / "nb" / name).read_bytes()


BOXES = {"boxes": [{"seed": 0, "index": 3, "boxes": [[4, 4, 20, 16]]},
                   {"seed": 0, "index": 9, "boxes": [[10, 12, 30, 30], [0, 0, 6, 6]]}]}


def test_forget_answers_what_dcgan_forget_writes_and_the_boxes_file_it_read(client, run, tmp_path):
    result = client.post("/api/forget", json={"boxes": BOXES, "n": 4}).json()
    assert json.loads(fetch(client, result, "boxes.json")) == BOXES
    (tmp_path / "boxes.json").write_text(json.dumps(BOXES))
    dcgan("forget", run, "--boxes", tmp_path / "boxes.json", "--n", 4, "--out", tmp_path / "f")
    written = json.loads((tmp_path / "f" / "forget.json").read_text())
    assert json.loads(fetch(client, result, "forget.json")) == written
    assert fetch(client, result, "forget.png") == (tmp_path / "f" / "forget.png").read_bytes()
    assert [p["k"] for p in result["report"]["curve"]][0] == 0 and "forget_curve.png" in result["files"]


def test_forget_local_erase_and_its_effect_curve_are_what_dcgan_forget_writes(client, run, tmp_path):
    body = {"boxes": BOXES, "n": 2, "erase": "local", "drop": "top:4"}
    result = client.post("/api/forget", json=body).json()
    (tmp_path / "boxes.json").write_text(json.dumps(BOXES))
    dcgan("forget", run, "--boxes", tmp_path / "boxes.json", "--n", 2, "--erase", "local", "--drop", "top:4",
          "--out", tmp_path / "f")
    written = json.loads((tmp_path / "f" / "forget.json").read_text())
    assert json.loads(fetch(client, result, "forget.json")) == written == result["report"]
    assert written["erase"] == "local" and written["curve"][-1]["k"] == written["maps_in_layer"]
    curve = fetch(client, result, "forget_curve.png")
    assert curve.startswith(b"\x89PNG") and Image.open(io.BytesIO(curve)).size[0] > 200
    assert result["report"]["mean_abs_change_extra"] == 0  # local: samples without boxes stay as they were
    none = client.post("/api/forget", json={**body, "curve": "none"}).json()
    assert "curve" not in none["report"] and "forget_curve.png" not in none["files"]


BAD = [
    ("/api/sheet", {"seed": -1}, "seed must be an integer from 0"),
    ("/api/sheet", {"seed": 2**40}, "seed must be an integer from 0"),
    ("/api/sheet", {"n": 0}, "n must be an integer from 1 to 256"),
    ("/api/sheet", {"n": "64"}, "n must be an integer"),
    ("/api/sheet", {"start": -5}, "start must be an integer"),
    ("/api/sheet", {"source": 1}, "source must be an integer from 0 to 0"),
    ("/api/arithmetic", {"a": [], "b": [1], "c": [2]}, "a is empty"),
    ("/api/arithmetic", {"a": [1], "c": [2]}, "b is empty"),
    ("/api/arithmetic", {"a": [1], "b": [2], "c": [True]}, "c must hold sample numbers"),
    ("/api/arithmetic", {"a": [1], "b": [2], "c": [-3]}, "c must hold sample numbers"),
    ("/api/arithmetic", {"a": [1], "b": [2], "c": [3], "noise": -1}, "noise must be a number from 0"),
    ("/api/arithmetic", {"a": list(range(100)), "b": [2], "c": [3]}, "--a lists 100 sample numbers"),
    ("/api/walk", {"through": [3]}, "a walk needs at least 2 samples"),
    ("/api/walk", {"through": [1, 2], "mode": "cubic"}, "mode must be one of slerp, linear"),
    ("/api/walk", {"through": [1, 2], "steps": 10**6}, "steps must be an integer from 1 to 64"),
    ("/api/feature-maps", {"net": "x"}, "net must be one of g, d"),
    ("/api/feature-maps", {"index": -1}, "index must be an integer"),
    ("/api/training", {"source": 3}, "source must be an integer from 0 to 0"),
    ("/api/directions", {"method": "ica"}, "method must be one of sefa, pca, svm"),
    ("/api/directions", {"method": "svm", "positive": [1]}, "negative is empty"),
    ("/api/directions", {"k": 0}, "k must be an integer from 1 to 64"),
    ("/api/move", {"direction": "/etc/passwd"}, "direction must be the URL of a direction file"),
    ("/api/move", {"direction": "/results/000000/../../x.json"}, "direction must be the URL"),
    ("/api/move", {"direction": "/results/000000/samples.png", "sigmas": 50}, "sigmas must be a number"),
    ("/api/sheet", {"latents": "/results/uploads/000001"}, "latents must be the URL of a latents file"),
    ("/api/guided-backprop", {"filters": 0}, "filters must be an integer from 1 to 32"),
    ("/api/forget", {"boxes": {"boxes": []}}, "boxes is empty"),
    ("/api/forget", {"boxes": {"boxes": [{"seed": 0, "index": 1, "boxes": [[0, 0, 40, 8]]}]}},
     "must be [x0, y0, x1, y1] with 0 <= x0 < x1 <= 32"),
    ("/api/forget", {"boxes": BOXES, "drop": "most"}, "drop"),
    ("/api/forget", {"boxes": BOXES, "erase": "here"}, "erase must be one of global, local"),
    ("/api/forget", {"boxes": BOXES, "curve": [1, 2]}, "curve must be one of auto, none"),
    ("/api/neighbours", {"k": 100}, "k must be an integer from 1 to 16"),
    ("/api/arithmetic", {"a": [1], "b": [2], "c": [3], "latents": 5}, "latents must be the URL"),
    ("/api/direction", {"to": [1]}, "from is empty"),
    ("/api/direction", {"from": [1], "to": []}, "to is empty"),
    ("/api/direction", {"from": [1], "to": [2], "targets": []}, "targets is empty"),
    ("/api/direction", {"from": [1], "to": [2], "targets": [-1]}, "targets must hold sample numbers"),
    ("/api/direction", {"from": [1], "to": [2], "steps": 1}, "steps must be an integer from 2 to 64"),
    ("/api/direction", {"from": [1], "to": [2], "scale": 50}, "scale must be a number from -10 to 10"),
    ("/api/direction", {"from": [1], "to": [2], "seed": 2**32 - 1}, "seed must be an integer"),
    ("/api/direction", {"from": list(range(100)), "to": [2]}, "--from lists 100 sample numbers"),
    ("/api/direction", {"from": [1], "to": [2], "latents": "/etc/passwd"}, "latents must be the URL"),
    ("/api/feature-maps", {"net": "d", "latents": "/results/x/latents.json"}, "latents must be the URL"),
]


@pytest.mark.parametrize("path, body, message", BAD, ids=[f"{p}:{m}" for p, _, m in BAD])
def test_bad_request_is_a_400_naming_the_value(client, path, body, message):
    response = client.post(path, json=body)
    assert response.status_code == 400 and message in response.json()["error"], response.text


@pytest.mark.parametrize("content", [b"not json", b"[1, 2]", b"{" + b" " * 70_000 + b"}"])
def test_malformed_body_is_a_400(client, content):
    response = client.post("/api/sheet", content=content)
    assert response.status_code == 400 and response.json()["error"]


@pytest.mark.parametrize("path", ["/results/000000/../../../etc/passwd", "/results/..%2F..%2Fetc/passwd",
                                  "/static/../explore.py", "/static/%2e%2e/checkpoint.py",
                                  "/results/000000/checkpoint.pt", "/results/abc/x.png",
                                  "/runs/0/samples/../checkpoint.pt", "/runs/0/samples/..%2Fcheckpoint.pt",
                                  "/runs/0/samples/real.png", "/runs/7/samples/final.png",
                                  "/runs/0/samples/step_1.png"])
def test_only_the_page_and_results_are_readable(client, path):
    response = client.get(path)
    assert response.status_code == 404
    assert b"import" not in response.content and b"root:" not in response.content


def test_the_page_and_its_scripts_are_served_without_a_network(client):
    page = client.get("/").text
    assert "/static/app.js" in page and "http" not in page.replace("http-equiv", "")  # no CDN
    assert [client.get(f"/static/{name}").status_code for name in ("app.js", "style.css")] == [200, 200]


def test_concurrent_requests_leave_the_models_as_they_were(client, run):
    """Requests from many threads at once, sheets beside forgets (which hook G's layer while they
    run): every answer equals the same request made alone, and the models are as they were."""
    app_models = client.app.state.explorer.sources[0]
    before = {k: v.clone() for k, v in app_models.generator.state_dict().items()}
    forget = {"boxes": BOXES, "n": 4, "drop": "top:4"}

    def sheet(k):
        result = client.post("/api/sheet", json={"seed": k, "start": 0, "n": 16}).json()
        return fetch(client, result, "samples.png")

    def forgotten():
        return fetch(client, client.post("/api/forget", json=forget).json(), "forget.png")

    alone = {k: sheet(k) for k in range(4)}
    alone_forget = forgotten()
    answers, errors = [], []

    def hammer(work, expected):
        for _ in range(3):
            try:
                answers.append(work() == expected)
            except AssertionError as e:
                errors.append(str(e))

    threads = [threading.Thread(target=hammer, args=(lambda k=k: sheet(k), alone[k])) for k in range(4)]
    threads += [threading.Thread(target=hammer, args=(forgotten, alone_forget)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(answers) == 18 and all(answers)
    after = app_models.generator.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN running stats included
    assert not app_models.generator.training and not app_models.discriminator.training
    assert torch.is_grad_enabled()
