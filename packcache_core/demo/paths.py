"""Long camera paths that turn, with a caption per latent frame, for `builtin:demo`.

What it is: seeded clips at `builtin:demo`'s size (128x64) in which the camera pans one patch
(8 px) per latent frame along a path of segments: each segment has a direction (or holds
still) and a caption that states it, and at a segment's first latent frame the caption changes
and the motion turns there (often a reversal). A clip renders any latent frame on its own, so a
training sequence can take frame 0 and the few frames a cache holds at frame t of a path
hundreds of frames long. What it is not: the 6-frame clips of `data.py` (zoom, objects), a
tokenizer or a training loop.

Conventions are `data.py`'s: "the camera pans left" moves the window left, so the picture moves
right; frame t is frame t - 1 shifted by exactly one patch (the window moves by whole pixels over
one continuous scene).

Invariant: a clip is a pure function of (split, index, length), like `make_clip`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from packcache_core.demo.data import (
    FRAME_HEIGHT,
    FRAME_WIDTH,
    PAN_CAPTIONS,
    PAN_DIRECTIONS,
    PAN_STEP,
    SCENE_CAPTION,
    SPLITS,
    STILL_CAPTIONS,
    Scene,
    _scene,
    colour_scene,
    to_uint8,
)

SEGMENT_FRAMES = (3, 12)  # latent frames per segment, inclusive bounds
REVERSE = 0.5  # chance that a turn reverses the direction (else another direction or still)
STILL = 0.1  # chance that a turn (not the first segment) holds the camera still
PATH_SEED = 7000  # offset of this clip family's seeds within a split
COLOUR_PATH_SEED = 9000  # the same for paths over two-colour scenes (captions name the colours)


@dataclass(frozen=True)
class PathClip:
    """A camera path over one scene: the window's top-left corner and caption per latent frame."""

    scene: Scene
    corners: np.ndarray  # (n, 2) window top-left (y, x) in px at latent frames 0 .. n-1
    captions: tuple[str, ...]  # (n,) the caption in force at each latent frame
    directions: tuple[str | None, ...]  # (n,) the direction moved into frame t (None: still)
    colours: tuple[str, str] | None = None  # a two-colour scene's colours (named in captions)
    height: int = FRAME_HEIGHT
    width: int = FRAME_WIDTH

    @property
    def length(self) -> int:
        return len(self.captions)

    def latent_frame(self, t: int) -> torch.Tensor:
        """uint8 (H, W, 3): the picture at latent frame t."""
        y0, x0 = self.corners[t]
        return to_uint8(self.scene.render(float(y0), float(x0), 1.0, self.height, self.width))

    def latent_frames(self, frames: list[int] | range) -> torch.Tensor:
        """uint8 (len(frames), H, W, 3)."""
        return torch.stack([self.latent_frame(t) for t in frames])

    def moves(self) -> list[tuple[int, int]]:
        """(dy, dx) patches the window moves into each latent frame ((0, 0) into frame 0 and
        while the camera holds still)."""
        return [PAN_DIRECTIONS[d] if d else (0, 0) for d in self.directions]

    def changes(self) -> list[tuple[int, str]]:
        """(latent frame, caption) where the caption changes (frame 0 excluded)."""
        c = self.captions
        return [(t, c[t]) for t in range(1, len(c)) if c[t] != c[t - 1]]


def pan_caption(direction: str | None, rng: np.random.Generator) -> str:
    if direction is None:
        return str(rng.choice(STILL_CAPTIONS))
    return str(rng.choice(PAN_CAPTIONS)).format(d=direction)


def _segments(
    rng: np.random.Generator, length: int, first: str | None, longest: int
) -> list[tuple[str | None, int]]:
    """(direction, latent frames) per segment, covering frames 1 .. length - 1; a segment is
    `SEGMENT_FRAMES[0]` to `longest` latent frames long."""
    names = list(PAN_DIRECTIONS)
    out: list[tuple[str | None, int]] = []
    direction: str | None = first or str(rng.choice(names))
    left = length - 1
    while left > 0:
        n = min(left, int(rng.integers(SEGMENT_FRAMES[0], longest + 1)))
        out.append((direction, n))
        left -= n
        u = rng.uniform()
        if u < STILL:
            direction = None
        elif direction is not None and u < STILL + REVERSE:
            dy, dx = PAN_DIRECTIONS[direction]
            direction = next(d for d, s in PAN_DIRECTIONS.items() if s == (-dy, -dx))
        else:
            direction = str(rng.choice([d for d in names if d != direction]))
    return out


def make_path_clip(
    split: str,
    index: int,
    length: int,
    first: str | None = None,
    coloured: bool = False,
    longest_segment: int = SEGMENT_FRAMES[1],
    turns: bool = True,
) -> PathClip:
    """Path clip `index` of `split`, `length` latent frames; `first` fixes the first segment's
    direction (else drawn). The caption of frame 0 is the first segment's. `coloured`: another
    family of clips, over a two-colour scene (`colour_scene`) whose captions name its colours
    before the motion (`SCENE_CAPTION`). `longest_segment`: the most latent frames between two
    turns (fewer: more turns per clip); `turns=False`: the first direction all along."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; available: {', '.join(SPLITS)}")
    if length < 2:
        raise ValueError(f"a path needs at least 2 latent frames, got {length}")
    if longest_segment < SEGMENT_FRAMES[0]:
        raise ValueError(
            f"longest_segment {longest_segment} is below the shortest, {SEGMENT_FRAMES[0]}"
        )
    seed = (COLOUR_PATH_SEED if coloured else PATH_SEED) + index
    rng = np.random.default_rng(np.random.SeedSequence([SPLITS[split], seed]))
    steps, captions, directions = [], [], []
    drawn = _segments(rng, length, first, longest_segment)
    segments = [(d, n, pan_caption(d, rng)) for d, n in drawn]
    if not turns:  # the first segment all along, after the same draws: same colours, caption
        direction, _, caption = segments[0]
        segments = [(direction, length - 1, caption)]
    for direction, n, caption in segments:
        step = (0, 0) if direction is None else PAN_DIRECTIONS[direction]
        steps += [step] * n
        captions += [caption] * n
        directions += [direction] * n
    moves = PAN_STEP * np.array(steps, dtype=np.float64)  # (n - 1, 2)
    corners = np.concatenate([np.zeros((1, 2)), np.cumsum(moves, axis=0)])  # (n, 2)
    H, W = FRAME_HEIGHT, FRAME_WIDTH
    y_span = (float(corners[:, 0].min()) - 8.0, float(corners[:, 0].max()) + H + 8.0)
    x_span = (float(corners[:, 1].min()) - 8.0, float(corners[:, 1].max()) + W + 8.0)
    colours = None
    if coloured:
        scene, colours = colour_scene(rng, y_span, x_span)
        a, b = colours
        captions = [SCENE_CAPTION.format(a=a, b=b, motion=c) for c in captions]
    else:
        scene = _scene(rng, y_span, x_span)
    return PathClip(
        scene, corners, (captions[0], *captions), (None, *directions), colours, height=H, width=W
    )
