"""Screenshots of every view of `dcgan explore`, for the README: docs/explore/*.png.

    python docs/explore/shoot.py                 # trains the run below first (10 min of CPU time on 2 cores)
    python docs/explore/shoot.py --run runs/mine # or any run directory

Each view is opened from a link (the page keeps its state in the URL), in headless chromium driven by
Playwright (`pip install -e ".[browser]"`, `apt-get install chromium`), and its section is captured.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

from dcgan.explore import serving

HERE = Path(__file__).parent
TRAIN = ["--data", "digits", "--steps", "1500", "--ngf", "32", "--ndf", "32", "--nz", "32",
         "--batch-size", "64", "--tensorboard", "false", "--sample-every", "250", "--seed", "0"]
BOXES = "0,3,0,0,32,12;0,12,0,0,32,12;0,20,0,0,32,12;0,28,0,0,32,12"  # the top band of four digits
# view -> (the link's state, the section to capture, what to wait for)
VIEWS = {
    "sheet": ("a=3,17&b=9&c=42&through=5,21,40&clicked=17", "#sheet-view", "#sheet"),
    "arithmetic": ("a=3,17&b=9&c=42&shown=arithmetic", "#arithmetic-view", "#arithmetic-result img"),
    "direction": ("arith-mode=direction&a=3,17&b=9&c=42,11&direction-steps=9&direction-scale=2"
                  "&direction-step=6&shown=arithmetic", "#arithmetic-view",
                  "#direction-player:not([hidden])"),
    "walk": ("through=5,21,40,5&steps=8&walk-frame=11&shown=walk", "#walk-view", "#walk-jumps rect"),
    "forget": (f"boxes={BOXES}&drop=top:10&erase=local&shown=forget", "#forget-view",
               "#forget-result img[alt='effect curve']"),
    "directions": ("method=sefa&k=6&sigmas=2&clicked=17&shown=directions", "#directions-view", "#moved[src]"),
    "inside_g": ("clicked=17&shown=feature-maps", "#inside-view", "#feature-maps-result img"),
    "training": ("", "#training-view", "#curves polyline"),
}


def real_digit(path: Path) -> Path:
    """The first image of the digits set, as training decodes it (32x32 grey)."""
    from dcgan.data import first_images, open_dataset

    pixels = first_images(open_dataset("digits", 32, 1, use_cache=False), 1)[0, 0].numpy()
    Image.fromarray(pixels).save(path)
    return path


def open_page(browser, url: str):
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.set_default_timeout(300_000)
    page.goto(url)
    page.wait_for_function("document.getElementById('sheet').naturalWidth > 0")
    return page


def shoot(run: Path, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    with serving([run]) as url, sync_playwright() as p, tempfile.TemporaryDirectory() as tmp:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        for name, (state, section, ready) in VIEWS.items():
            page = open_page(browser, f"{url}#{state}")
            page.wait_for_selector(ready)
            page.wait_for_load_state("networkidle")
            page.locator(section).screenshot(path=out / f"{name}.png")
            page.close()
            print(f"wrote {out / f'{name}.png'}")
        digit = real_digit(Path(tmp) / "digit.png")  # a real image: projected, and scored by D
        page = open_page(browser, url)
        page.set_input_files("#upload", str(digit))
        page.fill("#project-steps", "300")
        page.click("#run-project")
        page.wait_for_selector("#project-result img")
        page.locator("#project-view").screenshot(path=out / "project.png")
        page.set_input_files("#d-upload", str(digit))
        page.click("#run-d-image")
        page.wait_for_selector("#inside-d-result .score")
        page.wait_for_load_state("networkidle")
        page.locator("#inside-d-view").screenshot(path=out / "inside_d.png")
        print(f"wrote {out / 'project.png'} and {out / 'inside_d.png'}")
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, help=f"a run directory (default: train one: {' '.join(TRAIN)})")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run
        if run is None:
            run = Path(tmp) / "run"
            subprocess.run([sys.executable, "-m", "dcgan", "train", *TRAIN, "--out", str(run)], check=True)
        args.out.mkdir(parents=True, exist_ok=True)
        shoot(run, args.out)


if __name__ == "__main__":
    main()
