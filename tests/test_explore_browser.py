"""`dcgan explore` in a real headless browser (Playwright driving Debian's chromium): a user opens the
page, clicks samples into slots and runs each view; what the page offers for download equals what
the command writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from clirun import dcgan

from dcgan.explore import serving

pytestmark = [pytest.mark.extra("browser"), pytest.mark.extra("chromium")]

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    run = root / "run"
    dcgan("train", "--data", "digits", "--steps", 12, "--ngf", 8, "--ndf", 8, "--nz", 16, "--batch-size", 32,
          "--tensorboard", "false", "--sample-every", 100, "--out", run)
    with serving([run]) as url:
        yield {"url": url, "run": run, "root": root}


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server["url"])
    page.wait_for_function("document.getElementById('sheet').naturalWidth > 0")
    yield page
    context.close()
    assert errors == []  # no script error on the page


def click_sample(page, number: int, start: int = 0, columns: int = 8) -> None:
    """Click the centre of sample `number`'s tile, as a user would."""
    page.locator("#sheet").scroll_into_view_if_needed()
    box = page.locator("#sheet").bounding_box()
    natural = page.evaluate("document.getElementById('sheet').naturalWidth")
    cell = (natural - 2) / columns * box["width"] / natural
    k = number - start
    page.mouse.click(box["x"] + (k % columns + 0.5) * cell + 1, box["y"] + (k // columns + 0.5) * cell + 1)


def download(page, link_text: str, folder: Path) -> Path:
    with page.expect_download() as info:
        page.get_by_role("link", name=link_text).click()
    path = folder / link_text
    info.value.save_as(path)
    return path


def test_sheet_pages_and_changes_with_the_seed(page):
    first = page.evaluate("document.getElementById('sheet').src")
    page.fill("#seed", "5")
    page.click("#show-sheet")
    page.wait_for_function(f"document.getElementById('sheet').src !== {json.dumps(first)}")
    second = page.evaluate("document.getElementById('sheet').src")
    page.click("#next-page")
    page.wait_for_function(f"document.getElementById('sheet').src !== {json.dumps(second)}")
    assert page.input_value("#start") == "64"
    assert "32x32x1, nz 16, trained on digits" in page.text_content("#source-info")


def test_arithmetic_from_clicked_samples_downloads_what_the_cli_writes(page, server, tmp_path):
    for target, numbers in (("a", [3, 10]), ("b", [17]), ("c", [42])):
        page.check(f"input[name=target][value={target}]")
        for n in numbers:
            click_sample(page, n)
    assert page.text_content("#slot-a") == "3, 10" and page.text_content("#slot-c") == "42"
    page.fill("#noise", "0.3")
    page.click("#run-arithmetic")
    page.wait_for_selector("#arithmetic-result img")
    assert "pixel result RMS to G(Y)" in page.text_content("#arithmetic-result")
    got = json.loads(download(page, "arithmetic.json", tmp_path).read_text())
    dcgan("arithmetic", server["run"], "--a", "3,10", "--b", "17", "--c", "42", "--noise", 0.3,
          "--out", tmp_path / "cli")
    assert got == json.loads((tmp_path / "cli" / "arithmetic.json").read_text())


def canvas(page, selector: str) -> str:
    return page.evaluate(f"document.querySelector({json.dumps(selector)}).toDataURL()")


def slide(page, selector: str, value: int) -> None:
    page.fill(selector, str(value))
    page.dispatch_event(selector, "input")


def test_walk_through_clicked_samples_shows_frames_and_the_jump_report(page, server, tmp_path):
    page.check("input[name=target][value=through]")
    for n in (7, 20, 33):
        click_sample(page, n)
    page.fill("#steps", "4")
    page.click("#run-walk")
    page.wait_for_selector("#walk-result img[alt='walk animation']")
    text = page.text_content("#walk-result")
    assert "frames9" in text.replace(" ", "") and "sharp jumps flagged" in text
    got = json.loads(download(page, "walk.json", tmp_path).read_text())
    dcgan("walk", server["run"], "--through", "7,20,33", "--steps", 4, "--gif", "--out", tmp_path / "cli")
    assert got == json.loads((tmp_path / "cli" / "walk.json").read_text())
    # the slider over the frames, with a bar per step under them: red where walk.json flags a jump
    assert page.is_visible("#walk-player") and page.text_content("#walk-frame-value") == "frame 0 of 8"
    assert page.locator("#walk-jumps rect").count() == 8
    assert page.locator("#walk-jumps rect.jump").count() == len(got["walks"][0]["flagged"])
    first = canvas(page, "#walk-canvas")
    slide(page, "#walk-frame", 5)
    distance = got["walks"][0]["pixel"][4]
    assert page.text_content("#walk-frame-value").startswith(f"frame 5 of 8: {distance:.4f} from frame 4")
    assert canvas(page, "#walk-canvas") != first
    assert "walk-frame=5" in page.url and "through=7%2C20%2C33" in page.url
    page.click("#walk-play")  # the animation runs the slider
    page.wait_for_function("document.getElementById('walk-frame').value !== '5'")
    page.click("#walk-play")
    assert page.text_content("#walk-play") == "play"
    # a walk that stands still at sample 7 for 8 frames, then moves: every moving step is a sharp jump
    page.click("button[data-clear=through]")
    for n in (7, 7, 7, 33):
        click_sample(page, n)
    page.click("#run-walk")
    page.wait_for_function("document.getElementById('walk-frame-value').textContent.includes(' of 12')")
    jumps = page.locator("#walk-jumps rect")
    assert [jumps.nth(s).get_attribute("class") for s in range(12)] == ["step"] * 8 + ["jump"] * 4
    slide(page, "#walk-frame", 10)
    assert page.text_content("#walk-frame-value").endswith(", a sharp jump")


def test_direction_mode_slider_adds_mean_a_minus_mean_b_to_c(page, server, tmp_path):
    page.select_option("#arith-mode", "direction")
    assert page.is_hidden("#noise") and page.is_visible("#direction-steps")
    page.click("#run-arithmetic")  # A and B still empty
    page.wait_for_selector("#error:not([hidden])")
    assert "direction mode needs A (samples with the attribute) and B" in page.text_content("#error")
    for target, numbers in (("a", [3, 10]), ("b", [17]), ("c", [42])):
        page.check(f"input[name=target][value={target}]")
        for n in numbers:
            click_sample(page, n)
    page.fill("#direction-steps", "5")
    page.fill("#direction-scale", "4")
    page.click("#run-arithmetic")
    page.wait_for_selector("#direction-player:not([hidden])")
    got = json.loads(download(page, "direction.json", tmp_path).read_text())
    dcgan("arithmetic", server["run"], "--to", "3,10", "--from", "17", "--targets", "42", "--steps", 5,
          "--scale", 4, "--out", tmp_path / "cli")
    assert got == json.loads((tmp_path / "cli" / "direction.json").read_text())
    assert f"{got['v_norm']:.4g}"[:5] in page.text_content("#arithmetic-result")
    assert page.text_content("#direction-step-value").startswith("step 0 of 4: C + 0.000 v")
    first = canvas(page, "#direction-frame")
    slide(page, "#direction-step", 4)
    assert page.text_content("#direction-step-value") == (
        f"step 4 of 4: C + 4.000 v (|4.000 v| = {4 * got['v_norm']:.3f}), "
        f"mean RMS change {got['mean_rms_change'][4]:.4f}")
    assert canvas(page, "#direction-frame") != first
    assert "arith-mode=direction" in page.url and "direction-step=4" in page.url


def test_a_link_reproduces_the_views(page, server):
    link = (server["url"] + "#seed=3&a=5&b=6&c=7&arith-mode=direction&direction-steps=3&direction-step=2"
            "&through=1%2C2&steps=4&walk-frame=3&shown=arithmetic%2Cwalk")
    page.goto(link)
    page.wait_for_selector("#direction-player:not([hidden])")
    page.wait_for_selector("#walk-player:not([hidden])")
    assert page.input_value("#seed") == "3" and page.text_content("#slot-a") == "5"
    assert page.text_content("#direction-step-value").startswith("step 2 of 2: C + 1.000 v")
    assert page.text_content("#walk-frame-value").startswith("frame 3 of 4")
    assert "targets7" in page.text_content("#arithmetic-result").replace(" ", "")


def test_a_bad_request_shows_its_message_on_the_page(page):
    page.click("#run-arithmetic")  # every slot still empty
    page.wait_for_selector("#error:not([hidden])")
    assert "a is empty" in page.text_content("#error")


def test_feature_maps_of_the_clicked_sample(page):
    page.check("input[name=target][value=a]")
    click_sample(page, 12)
    assert page.text_content("#inside-sample") == "sample 12 of seed 0"
    page.click("#run-feature-maps")
    page.wait_for_selector("#feature-maps-result img")
    assert page.locator("#feature-maps-result tr").count() >= 4  # a header and a row per layer


def test_training_view_draws_the_curves_and_steps_through_the_grids(page, server):
    page.wait_for_selector("#curves polyline")
    assert page.locator("#curves polyline").count() == 4  # loss_D, loss_G, D(x), D(G(z))
    assert "logged rows" in page.text_content("#training-run")
    grids = sorted(p.name for p in (server["run"] / "samples").glob("*.png"))
    assert page.text_content("#grid-name") == grids[-1]  # the newest grid first
    page.fill("#grid-step", "0")
    page.dispatch_event("#grid-step", "input")
    assert page.text_content("#grid-name") == grids[0]
    page.wait_for_function("document.getElementById('grid').naturalWidth > 0")


def test_directions_found_then_a_clicked_sample_moved_with_the_slider(page, tmp_path):
    page.check("input[name=target][value=a]")
    click_sample(page, 9)
    page.select_option("#method", "sefa")
    page.fill("#k", "3")
    page.click("#run-directions")
    page.wait_for_selector("#move:not([hidden]) #moved[src]")
    assert page.locator("#direction option").count() == 3
    first = page.get_attribute("#moved", "src")
    page.fill("#sigmas", "2")
    page.dispatch_event("#sigmas", "change")
    page.wait_for_function(f"document.getElementById('moved').src.indexOf({json.dumps(first)}) < 0")
    assert page.text_content("#sigmas-value") == "+2.0 sigma"
    saved = json.loads(download(page, "direction_02.json", tmp_path).read_text())
    assert saved["method"] == "sefa" and saved["index"] == 2 and len(saved["vector"]) == 16


def test_an_uploaded_image_is_projected_and_becomes_the_sheet(page, server, tmp_path):
    dcgan("sample", server["run"], "--n", 1, "--start", 2, "--individual", tmp_path / "img")
    page.set_input_files("#upload", str(tmp_path / "img" / "000002.png"))
    page.fill("#project-steps", "10")
    page.fill("#restarts", "1")
    page.click("#run-project")
    page.wait_for_selector("#project-result img")
    assert page.locator("#project-result a", has_text="latents.json").count() == 1
    before = page.evaluate("document.getElementById('sheet').src")
    page.click("#use-latents")
    page.wait_for_function(f"document.getElementById('sheet').src !== {json.dumps(before)}")
    page.wait_for_function("document.getElementById('sheet').complete")
    assert page.is_visible("#use-seed")
    width = page.evaluate("document.getElementById('sheet').naturalWidth")
    assert width < 200  # one projected image, not the 64 samples of a seed
    # D's score of the projected image: the clicked row of the latents file
    page.check("input[name=target][value=a]")
    click_sample(page, 0, columns=1)
    assert page.text_content("#inside-sample") == "row 0 of the projected images"
    page.click("#run-d-maps")
    page.wait_for_selector("#inside-d-result .score")
    latents = download(page, "latents.json", tmp_path)
    dcgan("feature-maps", server["run"], "--net", "d", "--latents", latents, "--out", tmp_path / "fm")
    p = json.loads((tmp_path / "fm" / "feature_maps_d.json").read_text())["d_probability"]
    assert page.text_content("#inside-d-result .score") == f"D(x) = {p:.6f} for row 0 of the projected images"


def test_d_score_of_an_uploaded_image(page, server, tmp_path):
    dcgan("sample", server["run"], "--n", 1, "--start", 6, "--individual", tmp_path / "img")
    image = tmp_path / "img" / "000006.png"
    page.set_input_files("#d-upload", str(image))
    page.click("#run-d-image")
    page.wait_for_selector("#inside-d-result .score")
    dcgan("feature-maps", server["run"], "--net", "d", "--image", image, "--out", tmp_path / "cli")
    p = json.loads((tmp_path / "cli" / "feature_maps_d.json").read_text())["d_probability"]
    assert page.text_content("#inside-d-result .score") == f"D(x) = {p:.6f} for 000006.png"
    assert page.locator("#inside-d-result img[alt=\"D's feature maps\"]").count() == 1
    page.set_input_files("#d-upload", {"name": "bad.png", "mimeType": "image/png", "buffer": b"not a png"})
    page.click("#run-d-image")
    page.wait_for_selector("#error:not([hidden])")
    assert "cannot read image" in page.text_content("#error")


def test_inside_d_shows_the_score_of_the_clicked_sample_and_the_nearest_training_images(page):
    page.check("input[name=target][value=a]")
    click_sample(page, 4)
    page.click("#run-d-maps")
    page.wait_for_selector("#inside-d-result img")
    assert "D(x) = 0." in page.text_content("#inside-d-result")
    page.click("#run-neighbours")
    page.wait_for_selector("#inside-d-result img[alt='neighbours_pixels.png']")
    assert page.locator("#inside-d-result img").count() == 2  # pixel and D-feature space


def drag_box(page, number: int, x0: float, y0: float, x1: float, y1: float, columns: int = 8) -> None:
    """Drag from (x0, y0) to (x1, y1), fractions of sample `number`'s tile."""
    page.locator("#sheet").scroll_into_view_if_needed()
    box = page.locator("#sheet").bounding_box()
    natural = page.evaluate("document.getElementById('sheet').naturalWidth")
    scale = box["width"] / natural
    cell = (natural - 2) / columns
    left = box["x"] + (2 + number % columns * cell) * scale
    top = box["y"] + (2 + number // columns * cell) * scale
    inner = (cell - 2) * scale
    page.mouse.move(left + x0 * inner, top + y0 * inner)
    page.mouse.down()
    page.mouse.move(left + (x0 + x1) / 2 * inner, top + (y0 + y1) / 2 * inner)
    page.mouse.move(left + x1 * inner, top + y1 * inner)
    page.mouse.up()


def test_boxes_dragged_on_samples_make_g_forget_and_export_the_boxes_file(page, server, tmp_path):
    page.check("input[name=target][value=box]")
    drag_box(page, 3, 0.25, 0.25, 0.75, 0.5)
    drag_box(page, 12, 0.1, 0.5, 0.4, 0.9)
    drag_box(page, 20, 0.05, 0.05, 0.5, 0.5)
    assert page.locator("#box-list li").count() == 3
    page.click("#undo-box")  # the last box goes
    items = page.locator("#box-list li").all_text_contents()
    assert len(items) == 2 and items[0].startswith("sample 3 (seed 0): [8, 8, 24, 16]")
    assert items[1].startswith("sample 12 (seed 0): [3, 16, 13, 29]")
    page.select_option("#erase", "local")
    page.click("#run-forget")
    page.wait_for_selector("#forget-result img[alt='effect curve']")
    assert "maps dropped" in page.text_content("#forget-result")
    assert "erase=local" in page.url
    boxes = download(page, "boxes.json", tmp_path)
    assert json.loads(boxes.read_text()) == {"boxes": [{"seed": 0, "index": 3, "boxes": [[8, 8, 24, 16]]},
                                                       {"seed": 0, "index": 12, "boxes": [[3, 16, 13, 29]]}]}
    got = json.loads(download(page, "forget.json", tmp_path).read_text())
    dcgan("forget", server["run"], "--boxes", boxes, "--erase", "local", "--out", tmp_path / "cli")
    assert got == json.loads((tmp_path / "cli" / "forget.json").read_text())
    rows = page.locator("#forget-result table.curve tr")  # a header, then a row per point of the curve
    assert rows.count() == len(got["curve"]) + 1
    last = got["curve"][-1]
    assert rows.nth(rows.count() - 1).text_content() == (
        f"{last['k']}{last['top']['inside']:.4f}{last['random']['inside']:.4f}"
        f"{last['top']['outside']:.4f}{last['random']['outside']:.4f}")
