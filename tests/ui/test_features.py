"""The page reaches every feature (issue 30): text-only, image and video inputs, an open-ended
stream with a prompt change and Stop, realtime pacing, and extending a finished video.

Each test drives headless Chromium as a person would, checks that frames arrive on the canvas
and that the page logged no console error, and saves screenshots to `test-artifacts/ui/`.
"""

from __future__ import annotations

from typing import Any

from tests.server.conftest import LiveServer
from tests.server.test_video_upload import mp4_clip
from tests.ui.conftest import API_KEY


def watch_console(tab: Any) -> list[str]:
    """Console errors the page logs from now on (uncaught exceptions are checked apart)."""
    errors: list[str] = []
    tab.page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    return errors


def frames_drawn(tab: Any) -> list[int]:
    record = tab.record()
    return [
        int(r["value"])
        for r in record
        if r["id"] == "frame" and r["attr"] == "data-index" and r["value"]
    ]


def choose_mode(tab: Any, mode: str) -> None:
    tab.page.check(f'input[name="mode"][value="{mode}"]')


def test_text_only_realtime(open_page: Any) -> None:
    tab = open_page()
    errors = watch_console(tab)
    page = tab.page
    choose_mode(tab, "text")
    assert page.is_hidden("#input-row")
    tab.fill_request(API_KEY, 3, 2)
    page.check("#realtime")
    page.click("#generate")
    assert tab.wait_state("completed", "error") == "completed", page.inner_text("#error")
    assert frames_drawn(tab)[-1] == 8  # 3 latent frames: 9 RGB frames, frame 0 made too
    tab.screenshot("10-text-only-realtime")
    assert errors == []


def test_a_video_is_continued(open_page: Any) -> None:
    tab = open_page()
    errors = watch_console(tab)
    page = tab.page
    choose_mode(tab, "video")
    assert page.inner_text("#frames-label") == "New part"
    clip = {"name": "clip.mp4", "mimeType": "video/mp4", "buffer": mp4_clip(frames=12, fps=12)}
    page.set_input_files("#image-input", files=[clip])
    tab.fill_request(API_KEY, 2, 2)  # two new latent frames after the clip's three
    page.click("#generate")
    assert tab.wait_state("completed", "error") == "completed", page.inner_text("#error")
    drawn = frames_drawn(tab)
    assert drawn[-1] == 9 + 8 - 1 and 0 in drawn, drawn  # the clip's 9 frames, then 8 new
    tab.screenshot("11-video-continued")
    assert errors == []


def test_open_ended_prompt_change_stop_then_extend(open_page: Any, live: LiveServer) -> None:
    tab = open_page()
    errors = watch_console(tab)
    page = tab.page
    page.click("#use-sample")
    page.wait_for_selector("#preview:not([hidden])")
    tab.fill_request(API_KEY, 3, 2, policy="sliding")
    assert page.input_value('#knobs input[data-knob="window"]') == "1"  # the registry's knobs
    page.check("#open-ended")
    assert "characters" in page.inner_text("#prompt-limit")
    assert "tokens" in page.inner_text("#prompt-limit")
    page.click("#generate")
    tab.wait_state("running")
    page.wait_for_selector('#frame:not([data-index=""])', timeout=30_000)
    assert page.is_enabled("#stop")

    page.fill("#new-prompt", "the camera pans right")
    page.click("#send-prompt")
    page.wait_for_selector('#prompt-ack:not([data-latent=""])', timeout=30_000)
    acked = int(str(page.get_attribute("#prompt-ack", "data-latent")))
    assert acked >= 1 and "latent frame" in page.inner_text("#prompt-ack")
    page.wait_for_function(  # a frame made under the new prompt is on the canvas
        f"() => Number(document.getElementById('frame').dataset.latent) >= {acked}",
        timeout=60_000,
    )
    tab.screenshot("12-open-ended-prompt-acknowledged")
    page.click("#stop")
    assert tab.wait_state("completed", "error") == "completed", page.inner_text("#error")
    made = frames_drawn(tab)[-1] + 1
    first_id = page.get_attribute("#download", "download")
    tab.screenshot("13-open-ended-stopped")

    assert page.is_enabled("#extend")
    page.fill("#extend-prompt", "and on")
    page.select_option("#extend-frames", "2")
    page.click("#extend")
    assert tab.wait_state("completed", "error") == "completed", page.inner_text("#error")
    drawn = frames_drawn(tab)
    assert drawn[-1] == made + 8 - 1, (made, drawn[-5:])  # the source's frames, then 8 new
    assert page.get_attribute("#download", "download") != first_id
    tab.screenshot("14-extended")
    assert errors == []
