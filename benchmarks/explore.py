"""How fast `dcgan explore` puts a sample sheet on screen: a 64-sample numbered sheet at 64x64, from
the click on "show" to the image decoded in a real browser (Playwright driving Debian's chromium),
and the server's share of it (the /api/sheet request). The model has the default (pytorch preset)
widths at 64x64, as a user's first run on a folder of photos would; its weights after one step, as
the time does not depend on them. Each draw asks for a new seed, so nothing is cached.

    python benchmarks/explore.py                    # 20 draws
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np
import record
from PIL import Image
from record import dcgan
from scipy import stats
from sklearn.datasets import load_sample_images

from dcgan.explore import serving

CHROMIUM = "/usr/bin/chromium"


def mean_t(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its Student-t 95% interval."""
    n = len(values)
    return statistics.fmean(values), stats.t.ppf(0.975, n - 1) * statistics.stdev(values) / n**0.5


def photos(folder: Path, n: int = 256) -> None:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, photo in enumerate(rng.choice(load_sample_images().images, n)):
        y, x = rng.integers(0, photo.shape[0] - 128), rng.integers(0, photo.shape[1] - 128)
        Image.fromarray(photo[y:y + 128, x:x + 128]).save(folder / f"{i:04d}.jpg")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--draws", type=int, default=20)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    out = record.header()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        photos(tmp / "photos")
        dcgan("train", "--data", tmp / "photos", "--image-size", 64, "--steps", 1, "--batch-size", 64,
              "--tensorboard", "false", "--out", tmp / "run")
        with serving([tmp / "run"]) as url:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                page = browser.new_page()
                page.goto(url)
                page.wait_for_function("document.getElementById('sheet').naturalWidth > 0")
                on_screen, server_ms = [], []
                for seed in range(1, args.draws + 1):
                    page.fill("#seed", str(seed))
                    ms = page.evaluate("""() => new Promise((done) => {
                        const img = document.getElementById('sheet'), before = img.src;
                        const t0 = performance.now();
                        const check = () => (img.src !== before && img.complete && img.naturalWidth
                            ? img.decode().then(() => done(performance.now() - t0))
                            : requestAnimationFrame(check));
                        document.getElementById('show-sheet').click();
                        check();
                    })""")
                    on_screen.append(ms)
                    request = page.evaluate("""() => performance.getEntriesByType('resource')
                        .filter((e) => e.name.endsWith('/api/sheet')).pop().duration""")
                    server_ms.append(request)
                browser.close()
    screen, request = mean_t(on_screen), mean_t(server_ms)
    out.update(interval="Student-t 95%", target_ms=500, draws=args.draws,
               sheet={"samples": 64, "image_size": 64, "preset": "pytorch"},
               on_screen_ms=on_screen, api_ms=server_ms, on_screen_mean_ms=screen[0],
               on_screen_t95_ms=screen[1], api_mean_ms=request[0], api_t95_ms=request[1],
               on_screen_max_ms=max(on_screen), under_500ms=sum(m < 500 for m in on_screen))
    lines = [f"  64-sample numbered sheet at 64x64 (pytorch preset widths), {args.draws} draws, click to "
             f"decoded image in chromium: {screen[0]:.0f} ± {screen[1]:.0f} ms (t 95%), slowest "
             f"{max(on_screen):.0f} ms, {out['under_500ms']}/{args.draws} under 500 ms; of which the "
             f"/api/sheet request {request[0]:.0f} ± {request[1]:.0f} ms"]
    record.save("explore", out, lines)


if __name__ == "__main__":
    main()
