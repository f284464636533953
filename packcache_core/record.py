"""A video's durable record: the request as resolved, and every finished latent frame.

What it is: `request_to_json` / `request_from_json` (a `VideoParams` as plain JSON, the cache
policy by name and parameters), and `FrameRecord`, a folder holding one small file per finished
latent frame: its codes and the sampler's state right after it (the request's random generator
and the running temperature). With the conditioning image, that is everything needed to rebuild
a request's cache and carry on where it stopped: `VideoRun.resume` replays the recorded frames
through the write-back forward (one forward per frame instead of `steps`) and restores the
sampler, so the frames that follow are the ones an uninterrupted run would have drawn. What it
is not: the MP4 or the job's status (the server's storage keeps those).

Invariant: a frame file appears whole or not at all (written aside, then renamed), and frames
are read back only as the unbroken run 1..n, so a crash mid-write loses at most that frame.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors.torch import load_file, save_file

from packcache_core.generate import SamplerState, SamplingConfig
from packcache_core.pipeline import VideoParams
from packcache_core.policy import knob_values, make_policy

FRAME_FILE = "{:06d}.safetensors"  # latent frame 1 is the first generated frame


class Recorded(NamedTuple):
    """The unbroken run of recorded frames: codes (h, w) each, and the state after the last."""

    codes: list[torch.Tensor]
    state: SamplerState | None  # None when no frame is recorded


def in_force(changes: Iterable[tuple[int, str]]) -> tuple[tuple[int, str], ...]:
    """Prompt changes as they take effect, in the order sent: of several sent for one latent
    frame, only the last (the one generation follows), so no order of texts ever decides."""
    last: dict[int, str] = {}
    for index, text in changes:
        last.pop(index, None)  # re-inserted: the order is that of the last one sent
        last[index] = text
    return tuple(last.items())


def request_to_json(params: VideoParams) -> dict[str, Any]:
    policy = params.policy
    return {
        "prompt": params.prompt,
        "latent_frames": params.latent_frames,
        "fps": params.fps,
        "size": None if params.size is None else list(params.size),
        "seed": params.seed,
        "policy": {
            "name": policy.name,
            "params": knob_values(policy),
        },
        "sampling": dataclasses.asdict(params.sampling),
        "open_ended": params.open_ended,
        "prompt_changes": [[i, text] for i, text in params.prompt_changes],
        "text_slots": params.text_slots,
        "recache": params.recache,
        "stated_seconds": params.stated_seconds,
        "text_only": params.text_only,
        "given_frames": params.given_frames,
    }


def request_from_json(data: dict[str, Any]) -> VideoParams:
    """The inverse of `request_to_json`; ValueError (or KeyError) for a record it cannot read."""
    size = data["size"]
    unknown = set(data["sampling"]) - {f.name for f in dataclasses.fields(SamplingConfig)}
    if unknown:  # a newer version's setting: resuming without it would make another video
        raise ValueError(
            f"sampling settings this version does not know: {', '.join(sorted(unknown))}"
        )
    return VideoParams(
        prompt=data["prompt"],
        latent_frames=int(data["latent_frames"]),
        fps=int(data["fps"]),
        size=None if size is None else (int(size[0]), int(size[1])),
        seed=int(data["seed"]),
        policy=make_policy(data["policy"]["name"], **data["policy"]["params"]),
        sampling=SamplingConfig(**data["sampling"]),
        open_ended=bool(data.get("open_ended", False)),  # records of older versions lack these
        prompt_changes=in_force((int(i), str(t)) for i, t in data.get("prompt_changes", [])),
        text_slots=int(data.get("text_slots", 0)),
        recache=bool(data.get("recache", True)),
        stated_seconds=None if data.get("stated_seconds") is None else int(data["stated_seconds"]),
        text_only=bool(data.get("text_only", False)),
        given_frames=int(data.get("given_frames", 0)),
    )


class FrameRecord:
    """`<folder>/000001.safetensors`, ...: one file per finished latent frame."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, index: int) -> Path:
        return self.folder / FRAME_FILE.format(index)

    def append(self, index: int, codes: torch.Tensor, state: SamplerState) -> None:
        """Record latent frame `index` (1-based); rewriting a frame with itself is harmless."""
        self.folder.mkdir(parents=True, exist_ok=True)
        tensors = {
            "codes": codes.to(torch.int32).contiguous(),
            "rng": state.rng.contiguous(),
            "temperature": torch.tensor(state.temperature, dtype=torch.float64),
        }
        final = self.path(index)
        part = final.with_suffix(".part")
        save_file(tensors, str(part))
        os.replace(part, final)  # atomic: readers never see half a frame

    def count(self) -> int:
        """Frames recorded so far (the unbroken run), without reading them."""
        n = 0
        while self.path(n + 1).is_file():
            n += 1
        return n

    def read(self) -> Recorded:
        codes: list[torch.Tensor] = []
        state: SamplerState | None = None
        while (path := self.path(len(codes) + 1)).is_file():
            t = load_file(str(path))
            codes.append(t["codes"].to(torch.int64))
            state = SamplerState(t["rng"], float(t["temperature"]))
        return Recorded(codes, state)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON whole or not at all (aside, then renamed)."""
    part = path.with_suffix(".part")
    part.write_text(json.dumps(data))
    os.replace(part, path)
