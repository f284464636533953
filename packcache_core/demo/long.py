"""Long procedural clips whose content needs memory, for `builtin:demo-long`.

What it is: seeded 32x64-pixel clips (a 4x8 latent grid) of any length in which what comes into
view was often seen before: the camera sways (moves 4 latent frames one way, 2 back, so it
keeps returning over ground it left, and drifts), pans one way, watches a textured still scene,
or watches an object that leaves the view and comes back. Each clip knows, per latent frame,
whether content that had left the view re-enters (`reentry`), and the codes that a predictor
with perfect memory of the true past and of the camera's motion would copy (`oracle_codes`).
What it is not: the 6-frame clips of `builtin:demo` (`data.py`), a tokenizer or a trainer.

Motion is horizontal only: on a 4-row grid a vertical pan brings in a quarter of the frame
unseen each latent frame, which no memory can predict; a horizontal one brings in one column
(an eighth). The sway's phase is random per clip, so the model cannot read it from the temporal
position: it has to see the last turn in its history, which is what a cache keeps or loses.

Invariant: a clip is a pure function of (split, index, max_latent), like `make_clip`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from packcache_core.demo.data import COLOURS, PAN_STEP, SPLITS, Scene, _scene, to_uint8

LONG_HEIGHT, LONG_WIDTH = 32, 64  # pixels: 4 x 8 latent codes
SWAY_FORWARD, SWAY_BACK = 4, 2  # latent frames of each leg of a sway
OBJECT_MARGIN = 3 * PAN_STEP  # px beyond each edge where a leaving object turns back
LONG_MOTIONS = ("sway", "pan", "still", "return")
LONG_WEIGHTS = (0.55, 0.25, 0.1, 0.1)
LONG_CAPTIONS = {
    "sway": "the camera sways {d}",
    "pan": "the camera pans {d}",
    "still": "a still scene",
    "return": "a {colour} {shape} moves {d} and comes back",
}
SIGN = {"left": -1, "right": 1}
FINER = (2.0, 3.0)  # wave frequency factor: moving scenes, still scenes


@dataclass(frozen=True)
class LongClip:
    """One long clip; `camera_x` and `object_x` give where things are at any time."""

    motion: str  # in LONG_MOTIONS
    sign: int  # +1 right, -1 left (camera drift or the object's first move)
    phase: int  # sway: moves already made in the 6-frame cycle at t = 0
    caption: str
    scene: Scene
    object_shape: np.ndarray | None  # (8,) the moving shape of a "return" clip
    object_range: tuple[float, float] = (0.0, 0.0)  # its centre bounces in [lo, hi] (px)
    height: int = LONG_HEIGHT
    width: int = LONG_WIDTH

    def _moves(self, n: int) -> np.ndarray:
        """(n,) camera move in patches from latent frame k to k + 1, for k < n."""
        k = np.arange(n)
        if self.motion == "pan":
            return np.full(n, self.sign)
        if self.motion == "sway":
            cycle = SWAY_FORWARD + SWAY_BACK
            forward = (k + self.phase) % cycle < SWAY_FORWARD
            return np.where(forward, self.sign, -self.sign)
        return np.zeros(n, dtype=np.int64)

    def camera_columns(self, n: int) -> np.ndarray:
        """(n,) window left edge in patches at latent frames 0 .. n-1."""
        return np.concatenate([[0], np.cumsum(self._moves(n - 1))]).astype(np.int64)

    def object_x(self, t: float) -> float:
        """Centre x (px) of the object at time t: moving 8 px per latent frame, bouncing."""
        assert self.object_shape is not None
        lo, hi = self.object_range
        span = hi - lo
        u = (self.object_shape[2] - lo + self.sign * PAN_STEP * t) % (2 * span)
        return lo + (u if u <= span else 2 * span - u)

    def object_visible(self, n: int) -> np.ndarray:
        """(n,) bool: any of the object is in view at latent frame t."""
        if self.object_shape is None:
            return np.zeros(n, dtype=bool)
        r = self.object_shape[4]
        xs = np.array([self.object_x(t) for t in range(n)])
        return (xs + r > 0) & (xs - r < self.width)

    def frame(self, t: float) -> np.ndarray:
        """(H, W, 3) float64 RGB in [0, 1] at time t (latent frames; fractions interpolate
        the camera linearly between latent frames)."""
        k = int(np.floor(t))
        cols = self.camera_columns(k + 2)
        x0 = PAN_STEP * (cols[k] + (t - k) * (cols[k + 1] - cols[k]))
        scene = self.scene
        if self.object_shape is not None:
            moved = self.object_shape.copy()
            moved[2] = self.object_x(t)
            scene = Scene(scene.waves, scene.palette, np.vstack([scene.shapes, moved]))
        return scene.render(0.0, x0, 1.0, self.height, self.width)

    def latent_frames(self, n: int) -> torch.Tensor:
        """uint8 (n, H, W, 3): the picture at t = 0 .. n-1."""
        if self.object_shape is not None:
            return torch.stack([to_uint8(self.frame(t)) for t in range(n)])
        cols = self.camera_columns(n)
        left, right = int(cols.min()), int(cols.max())
        canvas = to_uint8(
            self.scene.render(
                0.0, PAN_STEP * left, 1.0, self.height, self.width + PAN_STEP * (right - left)
            )
        )
        x = PAN_STEP * (cols - left)
        return torch.stack([canvas[:, i : i + self.width] for i in x])

    def rgb_frames(self, n_latent: int) -> torch.Tensor:
        """uint8 (1 + 4 (n_latent - 1), H, W, 3): every RGB frame."""
        return torch.stack([to_uint8(self.frame(k / 4)) for k in range(1 + 4 * (n_latent - 1))])

    def reentry(self, n: int) -> np.ndarray:
        """(n,) bool: at latent frame t, content that was in view before t - 1 and out of view
        at t - 1 comes back (a camera returning over ground it left, an object returning)."""
        out = np.zeros(n, dtype=bool)
        cols = self.camera_columns(n)
        w = self.width // PAN_STEP
        vis = self.object_visible(n)
        for t in range(2, n):
            entering = set(range(cols[t], cols[t] + w)) - set(range(cols[t - 1], cols[t - 1] + w))
            seen = {c for s in range(t - 1) for c in range(cols[s], cols[s] + w)}
            back = vis[t] and not vis[t - 1] and bool(vis[: t - 1].any())
            out[t] = bool(entering & seen) or back
        return out

    def oracle_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """(n - 1, h, w) guesses for frames 1.. by a predictor that knows the camera's motion
        and remembers every true past frame whole: each column is copied from the latest
        frame that showed it, else from the previous frame at the same place."""
        n, _, w = codes.shape
        cols = self.camera_columns(n)
        out = codes[:-1].clone()  # freeze: frame t - 1 at the same place
        for t in range(1, n):
            for j in range(w):
                c = cols[t] + j
                for s in range(t - 1, -1, -1):
                    if cols[s] <= c < cols[s] + w:
                        out[t - 1, :, j] = codes[s, :, c - cols[s]]
                        break
        return out


def make_long_clip(split: str, index: int, max_latent: int = 32) -> LongClip:
    """Clip `index` of `split`; its scene covers every window up to latent frame
    `max_latent - 1`. Compare lengths with clips made for the longest one."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; available: {', '.join(SPLITS)}")
    rng = np.random.default_rng(np.random.SeedSequence([SPLITS[split], 1000 + index]))
    motion = LONG_MOTIONS[rng.choice(len(LONG_MOTIONS), p=LONG_WEIGHTS)]
    direction = str(rng.choice(list(SIGN)))
    sign = SIGN[direction]
    phase = int(rng.integers(0, SWAY_FORWARD + SWAY_BACK))
    H, W = LONG_HEIGHT, LONG_WIDTH
    reach = PAN_STEP * max_latent
    x_span = (-8.0, W + 8.0)
    if motion in ("sway", "pan"):
        x_span = (min(-8.0, sign * reach - 8.0), max(W + 8.0, W + sign * reach + 8.0))
    scene = _scene(rng, (-8.0, H + 8.0), x_span)
    # waves 2x finer than `builtin:demo`'s (3x for still scenes): texture at the patch scale,
    # so that neighbouring codes differ and copying the previous frame is a weak guess
    waves = scene.waves.copy()
    waves[:, :2] *= FINER[motion == "still"]
    scene = Scene(waves, scene.palette, scene.shapes)
    object_shape, colour, shape = None, "", ""
    lo_hi = (0.0, 0.0)
    if motion == "return":
        colour = str(rng.choice(list(COLOURS)))
        shape = str(rng.choice(["ball", "box"]))
        r = rng.uniform(5.0, 7.0)
        cy, cx = rng.uniform(r, H - r), rng.uniform(16.0, W - 16.0)
        object_shape = np.array([float(shape == "box"), cy, cx, r, r, *COLOURS[colour]])
        lo_hi = (-OBJECT_MARGIN - r, W + OBJECT_MARGIN + r)
    caption = LONG_CAPTIONS[motion].format(d=direction, colour=colour, shape=shape)
    return LongClip(motion, sign, phase, caption, scene, object_shape, lo_hi)
