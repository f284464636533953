"""Decoding uploads is budgeted: huge-but-small-on-the-wire images cannot take the process's
memory (issue 17).

A 6000x6000 16-bit greyscale PNG is under 100 KB on the wire and under the pixel limit, yet
decodes to hundreds of MB. Before the fix eight of them at once took a server from 0.7 GB to
3.8 GB RSS and it kept 2.5 GB. Now each upload's decode memory is estimated from its header,
refused with 400 over `max_image_decode_bytes`, and admitted within `decode_budget_bytes` and
`max_decoding` (waiting up to `decode_wait_s`, then 429 with Retry-After); decoded pixels are
freed once the engine has taken them, and the freed heap goes back to the kernel.

Against a real `packcache serve` process with its default settings, RSS sampled by psutil.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from PIL import Image

from tests.reliability.conftest import Served
from tests.server.conftest import png_bytes, wait_until

MB = 1 << 20
BURST = 8
RSS_PEAK_LIMIT = 400 * MB  # the defect: +3.1 GB at the peak, +1.8 GB kept
RSS_KEPT_LIMIT = 200 * MB


def grey16_png(side: int = 6000) -> bytes:
    """A `side` x `side` 16-bit greyscale PNG, almost all zeros: tiny on the wire."""
    img = Image.new("I;16", (side, side))
    img.paste(40000, (0, 0, side, 16))  # a bright band, so the image is not constant
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


class PeakRss:
    """Samples a process's RSS in a thread until stopped; `peak` is the highest seen."""

    def __init__(self, served: Served) -> None:
        self.served, self.peak = served, served.rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.served.rss())

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def test_a_burst_of_huge_16_bit_pngs_stays_within_the_decode_budget(
    serve: Callable[..., Served],
) -> None:
    served = serve().wait_ready()
    warm = served.create()  # the steady state of one small request is the baseline
    assert served.wait_done(warm.json()["id"])["status"] == "completed"
    data = grey16_png()
    assert len(data) < 200_000
    baseline = served.rss()

    sampler = PeakRss(served)
    with ThreadPoolExecutor(BURST) as pool:
        answers = list(pool.map(lambda i: served.create(data, seed=i), range(BURST)))
    peak = sampler.stop()

    statuses = sorted(a.status_code for a in answers)
    assert all(s in (200, 429) for s in statuses), [a.text for a in answers]
    for busy in (a for a in answers if a.status_code == 429):
        assert busy.json()["error"]["code"] == "decoder_busy" and busy.headers["Retry-After"]
    assert peak - baseline < RSS_PEAK_LIMIT, f"RSS grew {(peak - baseline) // MB} MiB"
    for accepted in (a for a in answers if a.status_code == 200):
        assert served.wait_done(accepted.json()["id"], timeout=120)["status"] == "completed"

    def kept() -> bool:  # the freed heap goes back to the kernel after the burst
        return served.rss() - baseline < RSS_KEPT_LIMIT

    wait_until(kept, timeout=30, interval=0.2)
    ok = served.create(png_bytes())  # a legitimate image still works
    assert ok.status_code == 200 and served.wait_done(ok.json()["id"])["status"] == "completed"
    assert "Traceback" not in served.output()


def test_an_image_over_the_decode_limit_is_refused_before_decoding(
    serve: Callable[..., Served],
) -> None:
    served = serve().wait_ready()
    img = Image.new("RGBA", (7000, 5000))  # 35 M pixels: within max_image_pixels
    buf = io.BytesIO()
    img.save(buf, "PNG")
    baseline = served.rss()
    answer = served.create(buf.getvalue())
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["code"] == "image_too_large" and error["param"] == "input_reference"
    assert "7000x5000 RGBA PNG" in error["message"]
    assert "max_image_decode_bytes" in error["message"]
    assert served.rss() - baseline < 100 * MB  # refused from the header: nothing decoded
