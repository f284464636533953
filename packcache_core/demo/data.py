"""Procedural video clips with known motion, for training and judging the built-in demo model.

What it is: seeded scenes (a smooth colour field of random sinusoids plus random discs and
boxes) seen through a window that pans one latent patch (8 px) per latent frame in one of four
directions, zooms in, stays still, or watches one object cross a still background; each clip
comes with a caption that states the motion. What it is not: a tokenizer or a training loop.

Conventions:
- Time t is in latent frames; RGB frame k of a clip is at t = k / 4 (Cosmos DV4x8x8 and the
  built-in tokenizers keep 4 RGB frames per latent frame), so a pan moves 2 px per RGB frame.
- "the camera pans left" means the window moves left, so the picture content moves right.
- A scene is a continuous function of canvas coordinates, evaluated at pixel centres. A pan
  moves the window by whole pixels, so latent frame f of a pan is, pixel for pixel, frame 0
  shifted by 8f px: its codes are frame 0's codes shifted by f patches, with new content
  entering at one edge. That is what makes "follow the prompt" learnable by a tiny model.

Invariant: a clip is a pure function of (split, index, max_latent): the same arguments give the
same pixels on every machine (numpy's PCG64 for the parameters, float64 rendering, up to the
last bit of numpy's sin, which rounding to uint8 hides).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

FRAME_HEIGHT, FRAME_WIDTH = 64, 128  # pixels: 8 x 16 latent codes
PAN_STEP = 8  # pixels per latent frame: one code of the 8x8 tokenizers
ZOOM_STEP = 0.95  # window scale factor per latent frame when zooming in
RGB_PER_LATENT = 4
SUPERSAMPLE = 2  # anti-aliasing: samples per pixel along each axis

# Camera direction -> (dy, dx) of the window per latent frame, in units of PAN_STEP.
PAN_DIRECTIONS: dict[str, tuple[int, int]] = {
    "left": (0, -1),
    "right": (0, 1),
    "up": (-1, 0),
    "down": (1, 0),
}
MOTIONS = ("pan", "zoom", "still", "object")
# Share of each motion in a split; pans are the skill the quality benchmark grades.
MOTION_WEIGHTS = (0.7, 0.1, 0.1, 0.1)
PAN_CAPTIONS = ("the camera pans {d}", "pan {d}")
ZOOM_CAPTIONS = ("the camera zooms in", "zoom in")
STILL_CAPTIONS = ("the camera does not move", "a still scene")
OBJECT_CAPTION = "a {colour} {shape} moves {d}"
# A two-colour scene's caption: its colours, then the motion (text-to-video learns the scene
# from it); e.g. "red and blue, the camera pans left".
SCENE_CAPTION = "{a} and {b}, {motion}"
# A two-colour scene's field is this much steeper than a plain scene's, so most pixels are one
# of its two named colours (the mid blend is only at the edges between them).
COLOUR_CONTRAST = 4.0
# Disjoint seed streams. "heldout" chose defaults over the years (a dev set); "fresh" was first
# used after the paper's packcache was fixed as the default, to report beside it.
SPLITS = {"train": 0, "heldout": 1, "fresh": 2}

# Named colours in RGB [0, 1]: objects and the scene palettes draw from these.
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.2, 0.15),
    "green": (0.2, 0.7, 0.25),
    "blue": (0.2, 0.35, 0.85),
    "yellow": (0.9, 0.8, 0.2),
    "white": (0.95, 0.95, 0.95),
    "black": (0.08, 0.08, 0.08),
}


@dataclass(frozen=True)
class Motion:
    """What moves: `kind` in MOTIONS; `direction` in PAN_DIRECTIONS for pans and objects."""

    kind: str
    direction: str | None = None

    def window_step(self) -> tuple[int, int]:
        """(dy, dx) window shift per latent frame in pixels (zero unless a pan)."""
        if self.kind != "pan" or self.direction is None:
            return 0, 0
        dy, dx = PAN_DIRECTIONS[self.direction]
        return dy * PAN_STEP, dx * PAN_STEP

    def content_step(self) -> tuple[int, int]:
        """(dy, dx) in pixels per latent frame by which what the viewer sees moves: the
        opposite of a pan's window, the object's own step for an object clip."""
        if self.direction is None or self.kind not in ("pan", "object"):
            return 0, 0
        dy, dx = PAN_DIRECTIONS[self.direction]
        sign = -1 if self.kind == "pan" else 1
        return sign * dy * PAN_STEP, sign * dx * PAN_STEP


@dataclass(frozen=True)
class Scene:
    """A continuous picture: sinusoid colour field, then discs and boxes painted in order."""

    waves: np.ndarray  # (n, 4): ky, kx (rad/px), phase, weight
    palette: np.ndarray  # (3, 3): low, mid and high colours of the field
    shapes: np.ndarray  # (m, 8): kind (0 disc, 1 box), cy, cx, ry, rx, r, g, b

    def render(self, y0: float, x0: float, scale: float, height: int, width: int) -> np.ndarray:
        """(height, width, 3) float64 RGB in [0, 1] of the window whose top-left pixel corner is
        canvas point (y0, x0) and whose pixels are `scale` canvas units wide."""
        s = SUPERSAMPLE
        ys = y0 + (np.arange(height * s) + 0.5) * scale / s  # (H s,)
        xs = x0 + (np.arange(width * s) + 0.5) * scale / s  # (W s,)
        # sin(a + b) = sin a cos b + cos a sin b: two outer products instead of a sin per pixel
        a = self.waves[:, 0, None] * ys  # (n, H s)
        b = self.waves[:, 1, None] * xs + self.waves[:, 2, None]  # (n, W s)
        w = self.waves[:, 3, None]
        field = (w * np.sin(a)).T @ np.cos(b) + (w * np.cos(a)).T @ np.sin(b)  # (H s, W s)
        v = np.clip(0.5 + 0.5 * field, 0.0, 1.0)[..., None]  # (H s, W s, 1) in [0, 1]
        low, mid, high = self.palette
        img = np.where(v < 0.5, low + (mid - low) * 2 * v, mid + (high - mid) * (2 * v - 1))
        for kind, cy, cx, ry, rx, *rgb in self.shapes:
            # only the samples inside the shape's bounding box (ys, xs are increasing)
            i0, i1 = np.searchsorted(ys, [cy - ry, cy + ry], side="left")
            j0, j1 = np.searchsorted(xs, [cx - rx, cx + rx], side="left")
            if i0 >= i1 or j0 >= j1:
                continue
            Y, X = ys[i0:i1, None], xs[None, j0:j1]
            if kind == 0:
                inside = ((Y - cy) / ry) ** 2 + ((X - cx) / rx) ** 2 <= 1.0
            else:
                inside = (np.abs(Y - cy) <= ry) & (np.abs(X - cx) <= rx)
            img[i0:i1, j0:j1][inside] = rgb
        return img.reshape(height, s, width, s, 3).mean(axis=(1, 3))


@dataclass(frozen=True)
class Clip:
    """One synthetic clip: its motion, caption and scene, renderable at any time."""

    motion: Motion
    caption: str
    scene: Scene
    origin: tuple[float, float]  # window top-left at t = 0 (canvas px)
    object_shape: np.ndarray | None  # (8,) the moving shape of an object clip
    height: int = FRAME_HEIGHT
    width: int = FRAME_WIDTH

    def frame(self, t: float) -> np.ndarray:
        """(H, W, 3) float64 RGB in [0, 1] at time t (latent frames)."""
        y0, x0 = self.origin
        scale = 1.0
        if self.motion.kind == "pan":
            dy, dx = self.motion.window_step()
            y0, x0 = y0 + dy * t, x0 + dx * t
        elif self.motion.kind == "zoom":
            scale = ZOOM_STEP**t
            y0 += self.height * (1 - scale) / 2
            x0 += self.width * (1 - scale) / 2
        scene = self.scene
        if self.object_shape is not None:
            dy, dx = self.motion.content_step()
            moved = self.object_shape.copy()
            moved[1:3] += (dy * t, dx * t)
            scene = Scene(scene.waves, scene.palette, np.vstack([scene.shapes, moved]))
        return scene.render(y0, x0, scale, self.height, self.width)

    def latent_frames(self, n: int) -> torch.Tensor:
        """uint8 (n, H, W, 3): the picture at t = 0 .. n-1 (the ground truth per latent frame)."""
        if self.motion.kind != "pan":
            return torch.stack([to_uint8(self.frame(t)) for t in range(n)])
        # A pan's windows are whole-pixel crops of one canvas: render it once.
        dy, dx = self.motion.window_step()
        y0, x0 = self.origin
        top, left = y0 + min(0, dy * (n - 1)), x0 + min(0, dx * (n - 1))
        H, W = self.height + abs(dy) * (n - 1), self.width + abs(dx) * (n - 1)
        canvas = to_uint8(self.scene.render(top, left, 1.0, H, W))
        crops = []
        for t in range(n):
            i, j = int(y0 + dy * t - top), int(x0 + dx * t - left)
            crops.append(canvas[i : i + self.height, j : j + self.width])
        return torch.stack(crops)

    def rgb_frames(self, n_latent: int) -> torch.Tensor:
        """uint8 (1 + 4 (n_latent - 1), H, W, 3): every RGB frame, 2 px apart for a pan."""
        n = 1 + RGB_PER_LATENT * (n_latent - 1)
        return torch.stack([to_uint8(self.frame(k / RGB_PER_LATENT)) for k in range(n)])


def to_uint8(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8))


def _scene(
    rng: np.random.Generator, y_span: tuple[float, float], x_span: tuple[float, float]
) -> Scene:
    """A random scene whose shapes cover the canvas rectangle y_span x x_span at a fixed density
    (one shape per ~1600 px^2), so long pans keep meeting new shapes."""
    n_waves = 4
    wavelength = rng.uniform(32.0, 128.0, n_waves)  # px: coarser than a patch
    angle = rng.uniform(0.0, 2 * math.pi, n_waves)
    k = 2 * math.pi / wavelength
    waves = np.stack(
        [
            k * np.sin(angle),
            k * np.cos(angle),
            rng.uniform(0, 2 * math.pi, n_waves),
            rng.uniform(0.15, 0.45, n_waves),
        ],
        axis=1,
    )
    names = list(COLOURS)
    base = np.array([COLOURS[names[i]] for i in rng.choice(len(names), 2, replace=False)])
    mid = rng.uniform(0.25, 0.75, 3)
    palette = np.stack([0.6 * base[0] + 0.1, mid, 0.6 * base[1] + 0.35])
    area = (y_span[1] - y_span[0]) * (x_span[1] - x_span[0])
    m = max(2, round(area / 1600))
    shapes = np.zeros((m, 8))
    shapes[:, 0] = rng.integers(0, 2, m)
    shapes[:, 1] = rng.uniform(*y_span, m)
    shapes[:, 2] = rng.uniform(*x_span, m)
    shapes[:, 3:5] = rng.uniform(6.0, 16.0, (m, 2))
    shapes[:, 5:8] = rng.uniform(0.0, 1.0, (m, 3))
    return Scene(waves, palette, shapes)


def colour_scene(
    rng: np.random.Generator, y_span: tuple[float, float], x_span: tuple[float, float]
) -> tuple[Scene, tuple[str, str]]:
    """A scene in two named colours (drawn, distinct) and the pair: `_scene`'s waves made
    `COLOUR_CONTRAST` times steeper between the two colours, its shapes in one or the other."""
    names = list(COLOURS)
    i, j = rng.choice(len(names), 2, replace=False)
    pair = (names[i], names[j])
    plain = _scene(rng, y_span, x_span)
    a, b = (np.array(COLOURS[c]) for c in pair)
    waves = plain.waves.copy()
    waves[:, 3] *= COLOUR_CONTRAST
    shapes = plain.shapes.copy()
    shapes[:, 5:8] = np.where(rng.integers(0, 2, (len(shapes), 1)) == 0, a, b)
    return Scene(waves, np.stack([a, (a + b) / 2, b]), shapes), pair


def make_clip(split: str, index: int, max_latent: int = 24) -> Clip:
    """Clip `index` of `split` ("train" or "heldout"); its scene covers every window up to
    latent frame `max_latent - 1`. Motion and caption depend on (split, index) only; the
    shapes also on `max_latent` (as many as fill the canvas it needs at a fixed density), so
    compare lengths with clips made for the longest one."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; available: {', '.join(SPLITS)}")
    rng = np.random.default_rng(np.random.SeedSequence([SPLITS[split], index]))
    kind = MOTIONS[rng.choice(len(MOTIONS), p=MOTION_WEIGHTS)]
    direction = str(rng.choice(list(PAN_DIRECTIONS))) if kind in ("pan", "object") else None
    motion = Motion(kind, direction)
    H, W = FRAME_HEIGHT, FRAME_WIDTH
    reach = PAN_STEP * (max_latent - 1)
    dy, dx = (0, 0) if direction is None else PAN_DIRECTIONS[direction]
    origin = (0.0, 0.0)
    y_span, x_span = (-8.0, H + 8.0), (-8.0, W + 8.0)
    if kind == "pan":  # the canvas runs `reach` further in the pan's direction
        y_span = (min(-8.0, dy * reach - 8.0), max(H + 8.0, H + dy * reach + 8.0))
        x_span = (min(-8.0, dx * reach - 8.0), max(W + 8.0, W + dx * reach + 8.0))
    scene = _scene(rng, y_span, x_span)
    captions = {"pan": PAN_CAPTIONS, "zoom": ZOOM_CAPTIONS, "still": STILL_CAPTIONS}
    object_shape = None
    if kind == "object":
        colour = str(rng.choice(list(COLOURS)))
        shape = str(rng.choice(["ball", "box"]))
        r = rng.uniform(9.0, 13.0)
        # start a quarter of the frame from the edge the object moves away from
        cy = H / 2 - dy * H / 4 + rng.uniform(-6, 6)
        cx = W / 2 - dx * W / 4 + rng.uniform(-12, 12)
        object_shape = np.array([float(shape == "box"), cy, cx, r, r, *COLOURS[colour]])
        caption = OBJECT_CAPTION.format(colour=colour, shape=shape, d=direction)
    else:
        template = str(rng.choice(captions[kind]))
        caption = template.format(d=direction)
    return Clip(motion, caption, scene, origin, object_shape)
