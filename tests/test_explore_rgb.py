"""Every view of `dcgan explore` on a 64x64 RGB run trained on a folder of images, as a user's first
run on photos would be (tests/test_explore.py checks each answer against its command on a grey
32x32 digits run; here each must answer with RGB images at 64x64)."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from clirun import dcgan
from PIL import Image

warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient`")
from starlette.testclient import TestClient  # noqa: E402

from dcgan.explore import explorer  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("rgb")
    rng = np.random.default_rng(0)
    (root / "photos").mkdir()
    for i in range(48):  # smooth colour blobs, 80x80: cropped and resized to 64 like any photo
        small = rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)
        Image.fromarray(small).resize((80, 80), Image.BICUBIC).save(root / "photos" / f"{i:02d}.png")
    out = root / "run"
    dcgan("train", "--data", root / "photos", "--image-size", 64, "--steps", 4, "--ngf", 8, "--ndf", 8,
          "--nz", 16, "--batch-size", 16, "--tensorboard", "false", "--sample-every", 2, "--out", out)
    return out


@pytest.fixture(scope="module")
def client(run):
    with TestClient(explorer([run]), raise_server_exceptions=False) as c:
        yield c


def image(client, url: str) -> Image.Image:
    response = client.get(url)
    assert response.status_code == 200, url
    return Image.open(io.BytesIO(response.content), formats=["PNG", "GIF"])


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


BOXES = {"boxes": [{"seed": 0, "index": 1, "boxes": [[8, 8, 40, 32]]},
                   {"seed": 0, "index": 5, "boxes": [[20, 24, 60, 60]]}]}
VIEWS = [("/api/sheet", {"seed": 3, "n": 16}, "samples.png"),
         ("/api/arithmetic", {"seed": 2, "a": [1, 4], "b": [2], "c": [3]}, "arithmetic.png"),
         ("/api/direction", {"seed": 2, "to": [1, 4], "from": [2], "targets": [3], "steps": 4},
          "direction_frames.png"),
         ("/api/walk", {"seed": 1, "through": [5, 9], "steps": 3}, "walk_frames.png"),
         ("/api/forget", {"boxes": BOXES, "n": 2, "erase": "local"}, "forget.png"),
         ("/api/directions", {"method": "sefa", "k": 2}, "directions.png"),
         ("/api/feature-maps", {"seed": 4, "index": 2}, "feature_maps_g.png"),
         ("/api/feature-maps", {"net": "d", "seed": 4, "index": 2}, "feature_maps_d.png"),
         ("/api/guided-backprop", {"filters": 2, "top": 2}, "guided_backprop.png"),
         ("/api/neighbours", {"n": 2, "k": 2}, "neighbours_pixels.png"),
         ("/api/training", {}, None)]


@pytest.mark.parametrize(("path", "body", "name"), VIEWS, ids=[f"{p}:{n}" for p, _, n in VIEWS])
def test_each_view_answers_on_a_64px_rgb_run(client, path, body, name):
    response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    if name is None:  # the training view: the run's rows and its sample grids
        assert result["rows"] and result["grids"]
        assert image(client, result["grids"][-1]["url"]).mode == "RGB"
        return
    picture = image(client, result["files"][name])
    assert picture.mode in ("RGB", "RGBA") and min(picture.size) >= 64


def test_frames_are_rgb_tiles_of_64px(client):
    result = client.post("/api/walk", json={"seed": 1, "through": [5, 9], "steps": 3}).json()
    frames = np.asarray(image(client, result["files"]["walk_frames.png"]).convert("RGB"))
    assert frames.shape[:2] == (64 + 4, 4 * (64 + 2) + 2)  # one row of 4 frames, 2 px padding
    first = frames[2:66, 2:66].astype(int)
    assert np.abs(first[..., 0] - first[..., 2]).max() > 0  # colour, not grey repeated


def test_an_uploaded_photo_is_scored_by_d_and_projected(client):
    rng = np.random.default_rng(1)
    photo = png(np.asarray(Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((96, 96))))
    scored = client.post("/api/d-image?source=0", content=photo)
    assert scored.status_code == 200, scored.text
    assert 0.0 <= scored.json()["report"]["d_probability"] <= 1.0
    projected = client.post("/api/project?steps=5&restarts=1&source=0", content=photo)
    assert projected.status_code == 200, projected.text
    reconstruction = image(client, projected.json()["files"]["projection.png"])
    assert reconstruction.mode in ("RGB", "RGBA")
