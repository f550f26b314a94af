"""The demo in a real browser (Debian's chromium through Playwright), on the tiny random model.

Uploads a clip, moves the s slider (nothing to re-filter yet), presses Segment, waits until the overlay
video can play, moves s again (instant re-filter), and saves a screenshot (also to
/tmp/demo_screenshot.png for people to look at).
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIDEO_READY = """() => {
    const v = document.querySelector('#overlay-video video');
    return v !== null && v.readyState >= 3 && v.videoWidth > 0;
}"""

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is absent (apt-get install chromium)"
    ),
]
gr = pytest.importorskip("gradio")
sync_api = pytest.importorskip("playwright.sync_api")

from masks import inside  # noqa: E402

from demo import app  # noqa: E402
from vidseg_nb.config import SegConfig  # noqa: E402
from vidseg_nb.synthetic import make_clip, save_clip  # noqa: E402


@pytest.fixture(scope="module")
def server(request, tmp_path_factory):
    try:
        bb = request.getfixturevalue("tiny")
    except pytest.FixtureLookupError:  # pragma: no cover - without the shared conftest
        from vidseg_nb.loading import load_backbone

        bb = load_backbone("tiny", device="cpu")
    demo = app.build_app(
        bb,
        base_config=SegConfig(kmeans_n_init=1),
        max_frames=6,
        defaults=app.UIDefaults(n_clusters=3, t_m=24, batch_size=4, max_side=64),
        cache_examples=False,
        workdir=tmp_path_factory.mktemp("demo"),
    )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    demo.launch(
        prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True, ssr_mode=False,
        css=app.CSS,
    )  # fmt: skip
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


def _drag(page, selector: str, start: float, end: float) -> None:
    """Drag a range input from ``start`` to ``end`` (fractions of its width) with the mouse."""
    box = page.locator(selector).bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * start, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * end, y, steps=6)
    page.mouse.up()


def test_upload_move_s_segment_and_play(server, tmp_path):
    clip = save_clip(make_clip(4, 128, 160, n_objects=2, seed=5), tmp_path / "walk.mp4")
    s_range = "#s-slider input[type=range]"
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1500})
            page.goto(server, wait_until="domcontentloaded")
            page.wait_for_selector("#segment-btn", timeout=60_000)
            assert "not meaningful" in page.locator("#banner").inner_text()
            assert "2–6 frames" in page.locator("#limits").inner_text()

            page.locator("#video-in input[type=file]").set_input_files(str(clip))
            page.wait_for_function(
                "() => document.querySelector('#clip-info').innerText.includes('160x128')", timeout=60_000
            )
            page.wait_for_selector("#video-preview video", timeout=30_000)  # a preview of the upload
            _drag(page, s_range, 0.7, 0.3)  # before any result: nothing runs, the status says so
            assert abs(float(page.locator(s_range).input_value()) - 0.3) < 0.051
            page.wait_for_function(
                "() => document.querySelector('#status').innerText.includes('Segment')", timeout=30_000
            )

            page.locator("#segment-btn").click()
            page.wait_for_function(VIDEO_READY, timeout=180_000)
            status = page.locator("#status").inner_text()
            assert "Segmentation of" in status and "walk.mp4" in status
            size = page.evaluate(
                "() => { const v = document.querySelector('#overlay-video video');"
                " return [v.videoWidth, v.videoHeight, v.duration]; }"
            )
            assert size[:2] == [160, 128] and size[2] > 0
            assert page.locator("#gallery img").count() >= 5
            # captions in words, none cut off with "..." (they wrap)
            cut = page.evaluate(
                "() => [...document.querySelectorAll('#gallery .caption-label')]"
                ".filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.innerText)"
            )
            assert cut == [], cut
            # one progress display per run: no progress on the video panels after the run
            assert page.locator("#overlay-video .progress-text, #gallery .progress-text").count() == 0
            assert "full run" in page.locator("#stats").inner_text()

            _drag(page, s_range, 0.3, 0.9)  # with a result: re-filtered at once, no UNet
            page.wait_for_function(
                "() => document.querySelector('#status').innerText.includes('Re-filtered')", timeout=60_000
            )
            page.wait_for_function(VIDEO_READY, timeout=60_000)
            assert "re-filter only" in page.locator("#stats").inner_text()
            assert page.locator(".toast-body.error").count() == 0

            shot = tmp_path / "demo.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            shutil.copy(shot, "/tmp/demo_screenshot.png")
        finally:
            browser.close()


def test_bad_upload_shows_an_error_and_the_page_keeps_working(server, tmp_path):
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video\n" * 50)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1200})
            page.goto(server, wait_until="domcontentloaded")
            page.wait_for_selector("#segment-btn", timeout=60_000)
            page.locator("#video-in input[type=file]").set_input_files(str(bad))
            toast = page.locator(".toast-body")
            toast.first.wait_for(timeout=60_000)
            assert "not a readable video" in toast.first.inner_text()
            page.wait_for_timeout(1500)  # a second toast of the same error would have arrived by now
            texts = page.locator("[data-testid=toast-text]")
            assert toast.count() == 1 and texts.count() == 1, [t.inner_text() for t in texts.all()]
            assert (
                page.locator(".toast-count").count() == 0
                or "2" not in page.locator(".toast-count").inner_text()
            )
            first = texts.first.inner_text().strip()  # says what failed, not only the bare "Error"
            assert first.startswith("Upload refused: not a usable video"), first
            good = save_clip(make_clip(3, 96, 96, seed=6), tmp_path / "good.mp4")
            page.locator("#video-in button[aria-label='Clear']").first.click()
            page.locator("#video-in input[type=file]").set_input_files(str(good))
            page.wait_for_function(
                "() => document.querySelector('#clip-info').innerText.includes('good.mp4')", timeout=60_000
            )
        finally:
            browser.close()


FOLLOW_READY = """(src) => {
    const v = document.querySelector('#follow-video video');
    return v !== null && v.currentSrc !== src && v.readyState >= 2 && v.videoWidth > 0
        && document.querySelector('#follow-status').innerText.includes('UNet samples');
}"""


def _click_pixel(page, selector: str, x: int, y: int) -> None:
    """Click pixel (x, y) of the image in ``selector``, as Gradio maps a click to a pixel (the image is
    centred and scaled down to fit, never up)."""
    box = page.evaluate(
        """(sel) => { const i = document.querySelector(sel + ' img'); const r = i.getBoundingClientRect();
        return [r.left, r.top, r.width, r.height, i.naturalWidth, i.naturalHeight]; }""",
        selector,
    )
    left, top, w, h, nw, nh = box
    r = min(w / nw, h / nh, 1)
    page.mouse.click(left + (w - nw * r) / 2 + (x + 0.5) * r, top + (h - nh * r) / 2 + (y + 0.5) * r)


def test_follow_objects_click_on_frame_1_gives_the_overlay_at_once(server, tmp_path):
    """Issue 22: after Segment, one click inside a planted object on frame 1 shows the object overlay,
    with no UNet sample spent, in under 2 s."""
    import time

    synth = make_clip(4, 128, 160, n_objects=2, seed=5)
    clip = save_clip(synth, tmp_path / "planted.mp4")
    x, y = inside(synth.labels[0] == 1)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1800})
            page.goto(server, wait_until="domcontentloaded")
            page.wait_for_selector("#segment-btn", timeout=60_000)
            page.locator("#video-in input[type=file]").set_input_files(str(clip))
            page.wait_for_function(
                "() => document.querySelector('#clip-info').innerText.includes('160x128')", timeout=60_000
            )
            page.locator("#segment-btn").click()
            page.wait_for_function(VIDEO_READY, timeout=180_000)
            page.wait_for_function(  # frame 1, at the clip's size, waits for clicks
                "() => { const i = document.querySelector('#follow-frame img');"
                " return i !== null && i.complete && i.naturalWidth === 160 && i.naturalHeight === 128; }",
                timeout=60_000,
            )
            assert "Click on frame 1" in page.locator("#follow-status").inner_text()
            page.locator("#follow-frame img").scroll_into_view_if_needed()
            assert page.locator("#follow-video video").count() == 0  # no object overlay yet
            t0 = time.perf_counter()
            _click_pixel(page, "#follow-frame", x, y)
            page.wait_for_function(FOLLOW_READY, arg="", timeout=30_000)
            took = time.perf_counter() - t0
            status = page.locator("#follow-status").inner_text()
            print(f"click -> object overlay: {took:.2f} s; status: {status}")
            assert "object 1: 1 cluster" in status and "0 UNet samples" in status, status
            size = page.evaluate(
                "() => { const v = document.querySelector('#follow-video video'); return [v.videoWidth, v.videoHeight]; }"
            )
            assert size == [160, 128]
            assert page.locator(".toast-body.error").count() == 0
            assert took < 2.0, f"click -> overlay took {took:.2f} s"
            # an uploaded first-frame mask (black/white PNG: object 1 = planted object 1) replaces the clicks
            from PIL import Image

            png = tmp_path / "mask.png"
            Image.fromarray(((synth.labels[0] == 1) * 255).astype("uint8"), "L").save(png)
            page.get_by_text("Or frame 1's mask").click()
            page.locator("#follow-mask-file input[type=file]").set_input_files(str(png))
            page.wait_for_function(
                "() => document.querySelector('#follow-status').innerText.startsWith('Mask: object 1:')",
                timeout=30_000,
            )
            assert "(mask; 4 frames) · 0 UNet samples" in page.locator("#follow-status").inner_text()
            assert page.locator(".toast-body.error").count() == 0
            shot = tmp_path / "follow.png"
            page.locator("#follow").screenshot(path=str(shot))
            assert shot.stat().st_size > 5_000
            shutil.copy(shot, "/tmp/demo_follow_screenshot.png")
        finally:
            browser.close()
