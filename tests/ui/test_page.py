"""End to end: the demo page in headless Chromium against a live server (see conftest.py).

What a person would check, in order: a run streams frames onto the page while it is still
running and ends with a playable MP4; a wrong key and an oversized image are refused with a
clear message; a second request waits with its queue position and starts when Cancel stops
the first. Screenshots of each state go to `test-artifacts/ui/`.
"""

from __future__ import annotations

import io
import os
from typing import Any

from PIL import Image

from tests.server.conftest import LiveServer, png_bytes
from tests.ui.conftest import API_KEY, UPLOAD_LIMIT

# Whether this Chromium decodes H.264 (Debian's does: it is built with the proprietary codecs).
CAN_PLAY_H264 = "document.createElement('video').canPlayType('video/mp4; codecs=\"avc1.42E01E\"')"

# Fetch the video element's source from inside the page, as the element itself would.
READ_VIDEO_SOURCE = """
async () => {
  const video = document.getElementById("video");
  const res = await fetch(video.currentSrc || video.src);
  const bytes = new Uint8Array(await res.arrayBuffer());
  return {src: video.currentSrc || video.src, status: res.status,
          type: res.headers.get("content-type"), size: bytes.length,
          box: String.fromCharCode(...bytes.slice(4, 8))};
}
"""


def upload(page: Any, data: bytes, name: str = "input.png") -> None:
    files = [{"name": name, "mimeType": "image/png", "buffer": data}]
    page.set_input_files("#image-input", files=files)


def test_frames_stream_live_then_the_video_plays(open_page: Any, live: LiveServer) -> None:
    latent, steps = 4, 3
    tab = open_page()
    page = tab.page
    assert page.is_visible("#api-key")  # the server has keys, so the page asks for one
    upload(page, png_bytes(96, 64))
    tab.fill_request(API_KEY, latent, steps)
    page.click("#generate")
    page.wait_for_selector('#frame:not([data-index=""])', timeout=30_000)
    tab.screenshot("01-streaming")
    assert tab.wait_state("completed", "error") == "completed", page.inner_text("#error")
    page.wait_for_selector("#video[src]")

    # Frames were drawn while the job was still running, not all at the end.
    record = tab.record()
    drawn = [r for r in record if r["id"] == "frame" and r["attr"] == "data-index" and r["value"]]
    done_at = next(r["t"] for r in record if r["id"] == "status" and r["value"] == "completed")
    while_running = [r for r in drawn if r["state"] == "running" and r["t"] < done_at]
    assert while_running, record
    assert all(r["painted"] for r in while_running)  # the canvas shows an image, not black
    assert any(int(r["value"]) >= 1 and r["progress"] < 100 for r in while_running), drawn
    frames = 1 + 4 * (latent - 1)
    assert [int(r["value"]) for r in drawn] == sorted({int(r["value"]) for r in drawn})
    assert int(drawn[-1]["value"]) == frames - 1

    # The live views: progress at 100 %, one chart point per generated latent frame.
    assert page.eval_on_selector("#progress", "p => p.value") == 100
    assert page.get_attribute("#chart", "data-points") == str(latent - 1)

    # The video element's source is the MP4: fetched with the key, played from a blob URL.
    source = page.evaluate(READ_VIDEO_SOURCE)
    assert source["src"].startswith("blob:") and source["status"] == 200, source
    assert source["type"] == "video/mp4" and source["box"] == "ftyp", source
    assert source["size"] > 1000
    assert page.get_attribute("#download", "href") == source["src"]
    assert page.get_attribute("#download", "download", timeout=1000).endswith(".mp4")
    if page.evaluate(CAN_PLAY_H264):  # decode it: metadata loads, no media error
        page.wait_for_function(
            "() => { const v = document.getElementById('video');"
            " return v.readyState >= 1 || v.error !== null; }",
            timeout=15_000,
        )
        video = page.eval_on_selector(
            "#video",
            "v => ({ready: v.readyState, error: v.error && v.error.code,"
            " width: v.videoWidth, height: v.videoHeight, duration: v.duration})",
        )
        assert video["error"] is None and video["ready"] >= 1, video
        assert (video["width"], video["height"]) == (64, 64)
        assert abs(video["duration"] - frames / live.settings.fps) < 0.2, video
    tab.screenshot("02-completed")


def test_a_wrong_key_is_refused(open_page: Any) -> None:
    tab = open_page()
    page = tab.page
    upload(page, png_bytes())
    tab.fill_request("not-the-key", 3, 2)
    page.click("#generate")
    assert tab.wait_state("completed", "error") == "error"
    message = page.inner_text("#error")
    assert "API key rejected" in message and "invalid API key" in message, message
    assert not page.is_visible("#result")
    tab.screenshot("03-wrong-key")


def test_an_oversized_upload_shows_an_error(open_page: Any) -> None:
    noise = Image.frombytes("RGB", (320, 320), os.urandom(320 * 320 * 3))  # PNG can't shrink it
    buf = io.BytesIO()
    noise.save(buf, format="PNG")
    assert len(buf.getvalue()) > UPLOAD_LIMIT
    tab = open_page()
    page = tab.page
    upload(page, buf.getvalue(), "noise.png")
    tab.fill_request(API_KEY, 3, 2)
    page.click("#generate")
    assert tab.wait_state("completed", "error") == "error"
    message = page.inner_text("#error")
    assert "Too large" in message and f"limit of {UPLOAD_LIMIT} bytes" in message, message
    assert page.get_attribute("#frame", "data-index") == ""  # nothing was generated
    tab.screenshot("04-too-large")


def test_queue_position_then_cancel_lets_the_next_start(open_page: Any) -> None:
    first, second = open_page(), open_page()  # the server runs one request at a time
    upload(first.page, png_bytes())
    first.fill_request(API_KEY, 12, 40)  # long enough to still run when cancelled
    first.page.click("#generate")
    first.wait_state("running")

    second.page.click("#use-sample")  # the bundled image
    second.page.wait_for_selector("#preview:not([hidden])")
    second.fill_request(API_KEY, 3, 2)
    second.page.click("#generate")
    second.wait_state("queued")
    second.page.wait_for_selector("#status:has-text('position 1')")
    second.screenshot("05-queued")

    first.page.click("#cancel")
    assert first.wait_state("cancelled", "completed", "error") == "cancelled"
    assert first.page.is_hidden("#error") and first.page.is_hidden("#result")
    first.screenshot("06-cancelled")
    assert second.wait_state("completed", "error") == "completed", second.page.inner_text("#error")
    second.page.wait_for_selector("#video[src]")
    second.screenshot("07-queued-then-completed")
