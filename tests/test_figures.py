"""Figures a run writes explain themselves: their layout is in the PNG's text chunks."""

import json
import signal
import subprocess
import sys
import time

from clirun import dcgan
from PIL import Image
from test_cli import TINY


def test_losses_png_is_refreshed_while_training_and_plots_quality_when_evaluated(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "dcgan", "train", *TINY, "--steps", "100000",
                             "--sample-every", "2", "--checkpoint-every", "100000", "--out", str(run)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "losses.png").is_file():
        time.sleep(0.1)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    with Image.open(run / "losses.png") as im:  # written before the run ended: refreshed with each grid
        layout = json.loads(im.text["layout"])
    assert layout == {"losses": ["loss_D", "loss_G"],
                      "discriminator outputs": ["D(x)", "D(G(z))", "diversity (samples / real)"]}
    clf = tmp_path / "clf.safetensors"
    dcgan("train-classifier", "--data", "digits", "--epochs", 1, "--out", clf)
    dcgan("train", *TINY, "--steps", 4, "--eval-every", 2, "--eval-n", 20,
          "--eval-extractor", f"classifier:{clf}", "--out", tmp_path / "evaluated")
    with Image.open(tmp_path / "evaluated" / "losses.png") as im:
        layout, steps = json.loads(im.text["layout"]), im.text["steps"]
    assert layout["sample quality"] == ["FID", "KID"] and steps == "1..4"
