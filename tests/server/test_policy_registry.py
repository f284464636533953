"""A policy registers once: one class and one registry line, and the server takes it.

The test policy below is registered after the server modules were imported (only its class
and `POLICIES[...] = ...`); request validation, settings, metric labels and the page's list
then accept it, and a request that names it runs on a real server with its parameter.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from packcache_core.layout import FrameLayout
from packcache_core.policy import POLICIES, rebase_knob, window_knob
from tests.server.conftest import LiveServer


@dataclass(frozen=True)
class EveryOtherPolicy:
    """Keeps every other history frame up to `window` frames (a toy for this test)."""

    window: int = window_knob(2)
    rebase: bool = rebase_knob()
    name: str = "every-other"
    uses_scores: bool = False

    def select(
        self,
        frames: Sequence[torch.Tensor],
        layout: FrameLayout,
        visible: torch.Tensor,
        scores: Sequence[torch.Tensor] | None = None,
    ) -> list[torch.Tensor | None]:
        kept = [d for d in range(1, len(frames) + 1) if d % 2 == 1][: self.window]
        return [torch.arange(f.numel()) if d in kept else None for d, f in enumerate(frames, 1)]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    POLICIES["every-other"] = EveryOtherPolicy  # the one registry line
    server = LiveServer(tmp_path_factory.mktemp("data")).start()
    yield server
    server.stop()
    del POLICIES["every-other"]


def test_a_registered_policy_runs_through_rest(live: LiveServer, tmp_path: Path) -> None:
    res = live.create(cache_policy="every-other", window=1, latent_frames=5)
    assert res.status_code == 200, res.text
    video = live.wait_done(res.json()["id"])
    assert video["status"] == "completed" and video["cache_policy"] == "every-other"
    metrics = live.metrics()
    assert metrics['packcache_frames_generated_total{policy="every-other"}'] > 0
    assert "every-other" in live.client.get("/ui/config").json()["policies"]
    # its parameter is checked by its own rules, and another policy's is refused
    bad = live.create(cache_policy="every-other", window=0).json()["error"]
    assert bad["param"] == "window"
    bad = live.create(cache_policy="every-other", rho=0.5).json()["error"]
    assert "rho" in bad["message"] and "its parameters: window, rebase" in bad["message"]
