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
