"""Train the built-in demo model `builtin:demo` on synthetic clips, on a CPU, from a seed.

    python scripts/train_demo_model.py                      # writes packcache_core/builtin/demo.*
    python scripts/train_demo_model.py --out /tmp/demo --steps 200   # a quick look
    python scripts/train_demo_model.py --chain demo-2h --out /tmp/demo2h   # stages in turn

What it does: Lumos-1's architecture and token layout at a tiny size (`DEMO_CONFIG`, ~1.3 M
parameters with the used vocabulary rows), trained with its AR-DF objective
(`packcache_core/demo/train.py`) on an endless stream of `make_clip("train", i)` clips of
`--latent-frames` latent frames, each tokenized by `builtin:patch-small`. AdamW, linear warm-up
then cosine decay to a tenth of the peak, gradient clipping at 1. The ids of training clips
are fixed (batch b holds clips b*B .. b*B+B-1); `--seed` fixes the initial weights, the tube
masks, the stated durations and which sequences drop their text. Two torch threads by
default: 1200 steps take about 21 minutes on an idle 2-core machine (`builtin:demo-base`'s card
records 54 wall minutes because that machine was shared for the first 500 steps; steps 500-950
ran nearly alone at 57 steps a minute). The weights are written as bf16 safetensors with a model
card (`demo.json`) that records the command, the time taken and the final loss, every
`--save-every` steps and at the end.

The default preset (`demo`) also teaches text to video: two-colour scenes whose captions name
their colours ("red and blue, the camera pans left"), as whole 6-frame sequences with frame 0
predicted like the other frames and as rollouts through the served cache without a
conditioning frame (`--t2v-rows`, `--colour-share`, `--t2v-share`). On a shared machine use
`--threads 1`: at a load average of 7, two threads spent 41 CPU-seconds a step spinning against
4 with one. The shipped `builtin:demo` is a chain of stages, each `--init` the one before
(README, "The built-in model"); from `--preset demo-clean` on they write finished frames back
clean (`--history-mask-ratio 0`, which the card then recommends), and the last,
`--preset demo-t2i`, adds frame 0 drawn from the text alone (`--t2i-rows`). `--chain` runs the
stages of a chain (`CHAINS`) in one command, each card recording the one-stage command that
reproduces it.

What it is not: a general trainer (no data loader, no resume, no mixed precision).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from packcache_core.demo.card import (
    EMBED_IDS,
    WEIGHTS_DIR,
    ModelCard,
    pack_state,
    save_demo,
    weights_file,
)
from packcache_core.demo.data import FRAME_HEIGHT, FRAME_WIDTH, make_clip
from packcache_core.demo.long import LONG_HEIGHT, LONG_WIDTH, make_long_clip
from packcache_core.demo.paths import SEGMENT_FRAMES, make_path_clip
from packcache_core.demo.rollout import ServedModel, own_rollout_loss, path_request, rollout_loss
from packcache_core.demo.train import (
    DEMO_CONFIG,
    FPS,
    Batch,
    clip_sequence,
    compact_model,
    make_batch,
    masked_code_loss,
    tube_mask,
    vocabulary,
    whole_clip_row,
)
from packcache_core.demo.views import HISTORY_MASK_RATIO, Row, cache_views, view_sequence
from packcache_core.generate import GenerationDefaults, SamplingConfig
from packcache_core.host import prepare_host
from packcache_core.layout import FrameLayout, header_tokens
from packcache_core.model import LumosTransformer
from packcache_core.policy import DEFAULT_POLICY, knob_values, parse_typed, policy_from_spec
from packcache_core.request import IMAGE_FPS, IMAGE_SECONDS
from packcache_core.rope import RotaryTables
from packcache_core.text import ByteTextTokenizer, build_prompt_ids
from packcache_core.video import VideoTokenizer, load_video_tokenizer

TOKENIZER = "builtin:patch-small"
ROLLOUT_CLIPS = 1_000_000  # path clip ids of rollout clips start here (view rows' from 0)
T2I_CLIPS = 2_000_000  # and those of text-to-image rows here
# Chosen with benchmarks/quality.py on held-out clips (see the card's "training" notes).
DEMO_SAMPLING = SamplingConfig(steps=12, cfg_scale=3.0)


def card_sampling(cfg: TrainConfig) -> SamplingConfig:
    """The sampling a model's card recommends and its own rollouts draw with."""
    return dataclasses.replace(DEMO_SAMPLING, history_mask_ratio=cfg.history_mask_ratio)


@dataclass(frozen=True)
class TrainConfig:
    # builtin:<model>; "demo-long" trains on `make_long_clip` clips, the others on `make_clip`
    # clips (and, with `view_rows`, on `make_path_clip` paths seen through the cache)
    model: str = "demo-base"
    steps: int = 1200
    batch: int = 8
    lr: float = 2e-3
    warmup: int = 100
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.05
    qk_norm_init: float = 1.0  # initial q/k LayerNorm weight (attention sharpness)
    latent_frames: int = 6  # the trained length, conditioning frame included
    # demo-long: half the clips have `latent_frames`, the rest a length drawn uniformly from
    # [min_latent_frames, latent_frames - 1]; demo: every clip has `latent_frames`
    min_latent_frames: int = 6
    text_drop: float = 0.1
    min_mask_rate: float = 0.7
    max_seconds: int = 16  # stated durations 1..max_seconds (the clip is a window of it)
    seed: int = 0
    # start from a shipped built-in model's weights (same architecture and vocabulary) instead
    # of a random init: "" or a name such as "demo", or a .safetensors file this script wrote
    # (an earlier stage's --out)
    init: str = ""
    threads: int = 2
    log_every: int = 25
    save_every: int = 250
    # Rows of each batch built as a request's cache shows the past under `policy` (a policy
    # spec): anchors, the packed history at its (rebased) positions, target frames
    # (`demo/views.py`), from camera paths up to `path_frames` long that turn with their
    # caption; the other rows are whole clips at absolute positions, so `full` still works at
    # the trained length.
    view_rows: int = 0
    # Clips of each batch run through a served cache under `policy` instead (`demo/rollout.py`:
    # the history exactly as serving holds it, the target frames with gradients).
    rollout_rows: int = 0
    views_per_row: int = 3  # target frames per view row or rollout clip
    path_frames: int = 48
    policy: str = "packcache"
    # Whole text-to-video rows per batch (of the whole-clip rows): two-colour paths whose
    # captions name the colours (`make_path_clip(coloured=True)`), `latent_frames` long at
    # absolute positions, frame 0 generated (masked and predicted like the others).
    t2v_rows: int = 0
    # Shares of rollout clips over two-colour scenes, and of those without a conditioning frame
    # (text-to-video through the served cache, frame 0 among the targets).
    colour_share: float = 0.0
    t2v_share: float = 0.0
    # Share of rollout clips that run on the model's own frames (`own_rollout_loss`: each frame
    # sampled with the card's sampling and written back, the target of the next the asked pan
    # from it), `own_frames` latent frames long at most, every generated frame a target.
    own_share: float = 0.0
    own_frames: int = 16
    # Denoising steps of each own-rollout frame (the card's by default; what the served model
    # uses is the card's either way). Sampling is most of an own-rollout step's compute.
    own_denoising_steps: int = DEMO_SAMPLING.steps
    # The most latent frames between two turns of a rollout clip's path (`make_path_clip`'s
    # `longest_segment`; fewer: more prompt changes and turns per clip).
    longest_segment: int = SEGMENT_FRAMES[1]
    # Whole text-to-video rows keep frame 0's caption throughout; True (the earlier stages',
    # kept so their commands reproduce) lets their paths turn, so about one row in five of 6
    # frames turns at frame 4 or 5 under a caption that asks otherwise. False: no turn.
    t2v_row_turns: bool = True
    # Text-to-image rows per batch, besides `batch`: frame 0 alone of a two-colour path (its
    # caption names the colours), generated from the text as every text-to-video request's first
    # frame is, at the tube's mask ratio; every other row stated as the images route states an
    # image (1 s at 1 fps), the rest as a video. A one-frame row is about a third of a whole
    # row's tokens, so they go in a batch of their own (not padded to a whole row's length); its
    # loss adds to the whole rows' loss at weight `t2i_weight` (so the loss logged and on the
    # card includes it; the accuracy logged stays the whole rows').
    t2i_rows: int = 0
    t2i_weight: float = 1.0
    # Share of a finished frame's grid tokens written back as MASK (the AR-DF write-back) in
    # the rollouts, and on the card's sampling: Lumos-1's 0.7 (whole-clip rows keep their tube).
    history_mask_ratio: float = DEMO_SAMPLING.history_mask_ratio

    def __post_init__(self) -> None:
        rows = (self.view_rows, self.rollout_rows, self.t2v_rows)
        if min(rows) < 0 or sum(rows) >= self.batch:
            raise ValueError(
                f"--view-rows {self.view_rows} + --rollout-rows {self.rollout_rows} + "
                f"--t2v-rows {self.t2v_rows} must leave --batch {self.batch} at least one "
                "whole image-to-video clip"
            )
        card_sampling(self)  # SamplingConfig checks the ratio (ValueError naming it)
        if self.view_rows and self.history_mask_ratio != HISTORY_MASK_RATIO:
            raise ValueError(
                f"--view-rows {self.view_rows} builds its history at Lumos-1's mask "
                f"({HISTORY_MASK_RATIO:g}); with --history-mask-ratio {self.history_mask_ratio:g} "
                "use --rollout-rows instead"
            )
        if self.t2i_rows < 0 or self.t2i_weight < 0:
            raise ValueError(
                f"need --t2i-rows >= 0 and --t2i-weight >= 0, got {self.t2i_rows} and "
                f"{self.t2i_weight}"
            )
        if not 0.0 <= self.own_share <= 1.0:
            raise ValueError(f"need 0 <= --own-share <= 1, got {self.own_share}")
        if self.own_share > 0 and self.own_frames <= self.views_per_row:
            raise ValueError(
                f"--own-frames {self.own_frames} must exceed --views-per-row "
                f"{self.views_per_row} (an own rollout is that many frames long at least)"
            )
        if self.own_denoising_steps < 1:
            raise ValueError(f"need --own-denoising-steps >= 1, got {self.own_denoising_steps}")
        make_path_clip("train", 0, 2, longest_segment=self.longest_segment)  # checks it
        if not 0.0 <= self.t2v_share <= self.colour_share <= 1.0:
            raise ValueError(
                "need 0 <= --t2v-share <= --colour-share <= 1 (text-to-video rollouts are "
                "two-colour clips, whose captions say what to draw)"
            )


# Named starting points; any flag overrides a preset's value.
PRESETS = {
    # 6-frame clips at absolute positions: the first stage of builtin:demo (and the shipped
    # builtin:demo before it was trained on its cache's view)
    "demo-base": TrainConfig(),
    # From demo-base: 4 of 8 clips run through a served cache under the paper's packcache
    # (rebased, W = 3) on camera paths that turn where the caption changes, 3 target frames
    # each, half of them over two-colour scenes captioned with their colours and a quarter
    # text-to-video; 2 whole 6-frame text-to-video clips of two-colour scenes; 2 whole 6-frame
    # image-to-video clips keep `full` working at the trained length.
    "demo": TrainConfig(
        model="demo",
        steps=400,
        lr=1e-3,
        warmup=25,
        init="demo-base",
        rollout_rows=4,
        t2v_rows=2,
        colour_share=0.5,
        t2v_share=0.25,
        save_every=50,
    ),
    # From the "demo" stage's output (--init <its --out>/demo.safetensors), and the shipped
    # model runs it twice (the second from the first's output): more text to video, which 400
    # steps of the stage before did not teach (frame 0 of held-out colour captions in 2 of 16
    # the named colours; 7 after one demo-t2v stage, 13 after two): 4 whole text-to-video rows,
    # 2 rollouts, 2 whole image-to-video clips.
    "demo-t2v": TrainConfig(
        model="demo",
        steps=250,
        lr=1e-3,
        warmup=10,
        rollout_rows=2,
        t2v_rows=4,
        colour_share=0.5,
        t2v_share=0.5,
        save_every=50,
    ),
    # From the second demo-t2v stage's output (--init), the stage before demo-clean: three of
    # four rollouts on the model's own frames (up to 16 latent frames, the target of each the
    # asked pan from the frame it drew), the fourth teacher-forced; 2 whole text-to-video and 2
    # image-to-video rows. As asked at 13 / 37 latent frames: 72% / 54% (52% / 36% before).
    "demo-own": TrainConfig(
        model="demo",
        steps=480,
        lr=1e-3,
        warmup=10,
        rollout_rows=4,
        t2v_rows=2,
        colour_share=0.5,
        t2v_share=0.25,
        own_share=0.75,
        own_frames=16,
        save_every=40,
    ),
    # From builtin:demo, which already copies content across frames: trained from a random
    # init, 1000 steps on these clips stayed below "freeze the previous frame" (0.47 vs 0.57
    # teacher-forced), so the shipped model fine-tunes demo's weights on the long clips.
    "demo-long": TrainConfig(
        model="demo-long",
        steps=1500,
        lr=1e-3,
        warmup=50,
        latent_frames=16,
        min_latent_frames=2,
        init="demo-base",
        save_every=250,
    ),
}
# From demo-own's output (--init): the same mix with longer own rollouts (up to 20 latent
# frames), 3 whole text-to-video rows, and every finished frame written back clean (history
# mask 0, on the card too). With Lumos-1's 0.7 the model read less of the next frame off its
# packed history than repeating the last frame gives (`benchmarks/teacher_forced.py`: 0.43
# against 0.50 at frames 7+), and 80 more steps of demo-own did not change that (0.41); written
# clean, 0.71 after 40 steps.
PRESETS["demo-clean"] = dataclasses.replace(
    PRESETS["demo-own"],
    steps=360,
    batch=9,
    lr=7e-4,
    seed=1,
    t2v_rows=3,
    own_frames=20,
    history_mask_ratio=0.0,
)
# From demo-clean's output (--init): text to video after frame 0 has left the cache. Every
# rollout text to video, two-colour and on the model's own frames; whole text-to-video rows
# without turns. Alone it unlearns image to video (README, "The built-in model"), so the
# shipped model runs demo-mix after it.
PRESETS["demo-t2v-own"] = dataclasses.replace(
    PRESETS["demo-clean"],
    steps=300,
    lr=5e-4,
    seed=5,
    colour_share=1.0,
    t2v_share=1.0,
    own_share=1.0,
    t2v_row_turns=False,
    save_every=50,
)
# From demo-t2v-own's output (--init): half of the rollouts image to video again (three quarters
# two-colour), all on the model's own frames.
PRESETS["demo-mix"] = dataclasses.replace(
    PRESETS["demo-t2v-own"], steps=150, lr=3e-4, seed=6, colour_share=0.75, t2v_share=0.5
)
# From demo-mix's output (--init), the shipped model's last stage: demo-mix's recipe (another
# seed) with 32 text-to-image rows beside each batch at twice the weight (README, "How the
# colours got past four in five").
PRESETS["demo-t2i"] = dataclasses.replace(PRESETS["demo-mix"], seed=10, t2i_rows=32, t2i_weight=2.0)
# Chains of presets, each stage `--init` the one before (the first from its preset's `init`),
# with the chain's changes to the preset: `--chain <name>` trains all of them in one command.
Chain = list[tuple[str, dict[str, object]]]
# The shipped chain's teacher-forced stages after builtin:demo-base (`--preset demo-base`, seed
# 0, ~21 min), the start of every chain below.
FIRST_STAGES: Chain = [("demo", {}), ("demo-t2v", {}), ("demo-t2v", {})]
# Own-rollout denoising steps of the fast chains (the card's 12 cut to fit the time budget, not
# chosen by a quality measurement).
FAST_OWN_DENOISING_STEPS = 4
CHAINS: dict[str, Chain] = {
    # The shipped chain's recipe cut to about two hours on two threads: no demo-own (written
    # back clean from the first own rollout on), the later stages shorter, demo-mix folded into
    # demo-t2i. Measured against the shipped chain in README ("The built-in model"); it is not
    # what ships.
    "demo-2h": [
        *FIRST_STAGES,
        ("demo-clean", {"steps": 240}),
        ("demo-t2v-own", {"steps": 150}),
        ("demo-t2i", {"steps": 100}),
    ],
    # The shipped chain's last four stages at their full lengths, own-rollout frames drawn in
    # FAST_OWN_DENOISING_STEPS denoising steps (measured in README, "The built-in model"; not
    # what ships).
    "demo-fast": [
        *FIRST_STAGES,
        *(
            (preset, {"own_denoising_steps": FAST_OWN_DENOISING_STEPS})
            for preset in ("demo-clean", "demo-t2v-own", "demo-mix", "demo-t2i")
        ),
    ],
    # demo-fast cut to about two hours on two threads, lengths chosen from its stage times
    # before the run: demo-mix folded into demo-t2i as in demo-2h, the own-rollout stages
    # shorter (measured in README, "The built-in model").
    "demo-fast-2h": [
        *FIRST_STAGES,
        *(
            (preset, {"steps": steps, "own_denoising_steps": FAST_OWN_DENOISING_STEPS})
            for preset, steps in (("demo-clean", 280), ("demo-t2v-own", 200), ("demo-t2i", 180))
        ),
    ],
}
FRAME_SIZES = {
    "demo-base": (FRAME_WIDTH, FRAME_HEIGHT),
    "demo": (FRAME_WIDTH, FRAME_HEIGHT),
    "demo-long": (LONG_WIDTH, LONG_HEIGHT),
}
# The cache policy a model's card recommends: the best `benchmarks/quality.py` measured on it at
# the memory of a one-frame window (benchmarks/README.md); absent: the registry's default.
CARD_POLICY: dict[str, tuple[str, dict[str, object]]] = {
    "demo-long": ("sliding", {"window": 1, "rebase": False}),
}


def card_policy(cfg: TrainConfig) -> tuple[str, dict[str, object]]:
    """The policy a model's card names: the one it was trained to be served with (its views'),
    else the measured choice of `CARD_POLICY`, else the registry's default."""
    if cfg.view_rows or cfg.rollout_rows:
        policy = policy_from_spec(cfg.policy)
        return policy.name, knob_values(policy)
    return CARD_POLICY.get(cfg.model, (DEFAULT_POLICY, {}))


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    floor = cfg.min_lr_ratio
    return cfg.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def sample_batch(
    step: int,
    cfg: TrainConfig,
    tokenizer: VideoTokenizer,
    g: torch.Generator,
    vocab: torch.Tensor,
    rope: RotaryTables,
) -> Batch:
    W, H = FRAME_SIZES[cfg.model]
    layout = FrameLayout(H // 8, W // 8)
    rows = [
        view_row(step * cfg.view_rows + i, cfg, tokenizer, g, layout) for i in range(cfg.view_rows)
    ]
    for i in range(cfg.t2v_rows):
        index = step * cfg.t2v_rows + i
        clip = make_path_clip(
            "train", index, cfg.latent_frames, coloured=True, turns=cfg.t2v_row_turns
        )
        codes = torch.stack(
            [tokenizer.encode_image(f) for f in clip.latent_frames(range(clip.length))]
        )
        seconds, drop_text, masked = row_draws(cfg, layout, g)
        # the caption of frame 0 throughout: a whole row has one text (turns are the rollouts')
        seq = clip_sequence(codes, clip.captions[0], seconds, masked, drop_text, text_to_video=True)
        rows.append(whole_clip_row(*seq))
    for i in range(cfg.batch - cfg.view_rows - cfg.rollout_rows - cfg.t2v_rows):
        index = step * cfg.batch + i
        n = cfg.latent_frames
        if cfg.model == "demo-long":
            clip = make_long_clip("train", index, cfg.latent_frames)
            if bool(torch.rand((), generator=g) < 0.5):
                n = int(torch.randint(cfg.min_latent_frames, cfg.latent_frames, (), generator=g))
        else:
            clip = make_clip("train", index, cfg.latent_frames)
        frames = clip.latent_frames(n)  # (n, H, W, 3)
        codes = torch.stack([tokenizer.encode_image(f) for f in frames])  # (n, h, w)
        seconds, drop_text, masked = row_draws(cfg, layout, g)
        rows.append(whole_clip_row(*clip_sequence(codes, clip.caption, seconds, masked, drop_text)))
    return make_batch(rows, vocab, rope)


def row_draws(
    cfg: TrainConfig, layout: FrameLayout, g: torch.Generator
) -> tuple[int, bool, torch.Tensor]:
    """A whole row's random choices, drawn in this order (earlier stages' commands reproduce):
    the stated seconds, whether the text is dropped, the tube mask."""
    seconds = int(torch.randint(1, cfg.max_seconds + 1, (), generator=g))
    drop_text = bool(torch.rand((), generator=g) < cfg.text_drop)
    return seconds, drop_text, tube_mask(layout.grid_tokens, cfg.min_mask_rate, g)


def image_rows(
    step: int, cfg: TrainConfig, tokenizer: VideoTokenizer, g: torch.Generator
) -> list[Row]:
    """`t2i_rows` one-frame text-to-image rows (see `TrainConfig.t2i_rows`)."""
    W, H = FRAME_SIZES[cfg.model]
    layout = FrameLayout(H // 8, W // 8)
    rows = []
    for i in range(cfg.t2i_rows):
        clip = make_path_clip("train", T2I_CLIPS + step * cfg.t2i_rows + i, 2, coloured=True)
        codes = tokenizer.encode_image(clip.latent_frames([0])[0])[None]  # (1, h, w)
        seconds, drop_text, masked = row_draws(cfg, layout, g)
        fps = FPS
        if i % 2 == 0:  # as the images route states an image
            seconds, fps = IMAGE_SECONDS, IMAGE_FPS
        seq = clip_sequence(codes, clip.captions[0], seconds, masked, drop_text, True, fps)
        rows.append(whole_clip_row(*seq))
    return rows


def rollout_clips(
    step: int, cfg: TrainConfig, served: ServedModel, tokenizer: VideoTokenizer, g: torch.Generator
) -> tuple[float, float]:
    """`rollout_rows` path clips through a served cache, the caption changing where the path
    turns: teacher-forced (`rollout_loss`, `views_per_row` target frames) or, for a share
    `own_share`, on the model's own frames (`own_rollout_loss`, every frame a target);
    gradients accumulate, each clip weighing the same. Returns (mean loss, accuracy)."""
    W, H = FRAME_SIZES[cfg.model]
    policy = policy_from_spec(cfg.policy)
    total, correct, count = 0.0, 0, 0
    for i in range(cfg.rollout_rows):
        # (no draw without own rollouts: earlier stages' commands stay reproducible)
        own = cfg.own_share > 0 and bool(torch.rand((), generator=g) < cfg.own_share)
        longest = cfg.own_frames if own else cfg.path_frames
        n = int(torch.randint(cfg.views_per_row + 1, longest + 1, (), generator=g))
        u = float(torch.rand((), generator=g))
        coloured, text_only = u < cfg.colour_share, u < cfg.t2v_share
        index = ROLLOUT_CLIPS + step * cfg.rollout_rows + i
        clip = make_path_clip(
            "train", index, n, coloured=coloured, longest_segment=cfg.longest_segment
        )
        first = 0 if text_only else 1  # the first generated frame
        targets = sorted(
            int(t) + first for t in torch.randperm(n - first, generator=g)[: cfg.views_per_row]
        )
        if own:  # every frame (the draw above stays: the demo-own command still reproduces)
            targets = list(range(first, n))
        seconds = int(torch.randint(1, cfg.max_seconds + 1, (), generator=g))
        codes = torch.stack([tokenizer.encode_image(f) for f in clip.latent_frames(range(n))])
        request = path_request(clip, codes, seconds, (W, H), text_only, last=targets[-1])
        tube = tube_mask(FrameLayout(*codes.shape[1:]).grid_tokens, cfg.min_mask_rate, g)
        scale = 1.0 / (cfg.rollout_rows * len(targets))
        sampling = card_sampling(cfg)
        if own:
            seed = int(torch.randint(0, 2**31 - 1, (), generator=g))
            drawing = dataclasses.replace(sampling, steps=cfg.own_denoising_steps)
            loss, hit, m, _ = own_rollout_loss(
                served, request, codes, clip.moves(), policy, drawing, seed, tube, scale
            )
        else:
            loss, hit, m = rollout_loss(
                served, request, codes, targets, policy, tube, scale, sampling.history_mask_ratio
            )
        total, correct, count = total + loss / len(targets), correct + hit, count + m
    return total / cfg.rollout_rows, correct / max(1, count)


def view_row(
    index: int, cfg: TrainConfig, tokenizer: VideoTokenizer, g: torch.Generator, layout: FrameLayout
) -> Row:
    """Path clip `index` seen through the cache at `views_per_row` target frames that follow
    one caption (the one in force at the first drawn target), as `view_sequence` builds them."""
    n = int(torch.randint(2, cfg.path_frames + 1, (), generator=g))
    clip = make_path_clip("train", index, n)
    first = int(torch.randint(1, n, (), generator=g))
    caption = clip.captions[first]
    same = [t for t in range(1, n) if clip.captions[t] == caption]
    pick = torch.randperm(len(same), generator=g)[: cfg.views_per_row]
    targets = sorted({first, *(same[int(i)] for i in pick)})[: cfg.views_per_row]
    seconds = int(torch.randint(1, cfg.max_seconds + 1, (), generator=g))
    drop_text = bool(torch.rand((), generator=g) < cfg.text_drop)
    W, H = FRAME_SIZES[cfg.model]
    text = [] if drop_text else build_prompt_ids(ByteTextTokenizer(), caption, W, H, FPS, seconds)
    prefix = text + header_tokens(seconds, FPS)
    views = cache_views(policy_from_spec(cfg.policy), layout, targets, len(text))
    needed = {0, *targets, *(h.frame for v in views for h in v.held)}
    frames = clip.latent_frames(sorted(needed))
    codes = {t: tokenizer.encode_image(f) for t, f in zip(sorted(needed), frames, strict=True)}
    tube = tube_mask(layout.grid_tokens, cfg.min_mask_rate, g)
    return view_sequence(prefix, codes, views, layout, tube)


def initial_state(name: str, vocab: torch.Tensor) -> dict[str, torch.Tensor]:
    """The compact training state of shipped model `name` or of a weights file this script
    wrote (float32), checked to use the same vocabulary rows."""
    path = Path(name) if name.endswith(".safetensors") else WEIGHTS_DIR / weights_file(name)
    packed = load_file(str(path))
    if not torch.equal(packed.pop(EMBED_IDS), vocab):
        raise ValueError(f"builtin:{name} has another vocabulary; it cannot start this run")
    return {k: v.float() for k, v in packed.items()}


def optimizer(model: LumosTransformer, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; weight decay on the projection matrices only (not embeddings, norms, biases)."""
    decay, rest = [], []
    for name, p in model.named_parameters():
        is_matrix = p.dim() == 2 and "embed_tokens" not in name and "norm" not in name
        (decay if is_matrix else rest).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": rest, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95))


def write(
    model: LumosTransformer,
    vocab: torch.Tensor,
    out: Path,
    cfg: TrainConfig,
    record: dict[str, object],
) -> None:
    policy, params = card_policy(cfg)
    size = FRAME_SIZES[cfg.model]
    defaults = GenerationDefaults(card_sampling(cfg), size, cfg.latent_frames, policy, params)
    training = {"train_config": asdict(cfg), **record}
    card = ModelCard(DEMO_CONFIG, TOKENIZER, defaults, FPS, training)
    save_demo(card, pack_state(model, vocab), out, cfg.model)


def train(cfg: TrainConfig, out: Path, command: str = "") -> None:
    """Train one stage into `out`; its card records `command` (default: this process's)."""
    prepare_host("cpu", cfg.threads)
    vocab = vocabulary()
    model = compact_model(DEMO_CONFIG, vocab.numel(), cfg.seed, cfg.qk_norm_init).train()
    if cfg.init:
        model.load_state_dict(initial_state(cfg.init, vocab))
    opt = optimizer(model, cfg)
    tokenizer = load_video_tokenizer(TOKENIZER)
    rope = RotaryTables(DEMO_CONFIG.head_dim, DEMO_CONFIG.rope_theta, "cpu")
    g = torch.Generator().manual_seed(cfg.seed)
    served = ServedModel(model, DEMO_CONFIG, vocab)
    served.sync()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    losses: list[float] = []
    accs: list[float] = []  # whole clips and view rows
    served_accs: list[float] = []  # targets seen through a served cache
    record: dict[str, object] = {"command": command or shlex.join(["python", *sys.argv])}
    if cfg.init.endswith(".safetensors"):  # an earlier stage: its card's record goes along
        earlier = json.loads(Path(cfg.init).with_suffix(".json").read_text())
        record["init_training"] = earlier["training"]
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        batch = sample_batch(step, cfg, tokenizer, g, vocab, rope)
        loss, acc = masked_code_loss(model, batch)
        if cfg.t2i_rows:
            images = make_batch(image_rows(step, cfg, tokenizer, g), vocab, rope)
            t2i_loss, _ = masked_code_loss(model, images)
            loss = loss + cfg.t2i_weight * t2i_loss
        loss.backward()
        served_loss, served_acc = 0.0, 0.0
        if cfg.rollout_rows:
            served_loss, served_acc = rollout_clips(step, cfg, served, tokenizer, g)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        served.sync()
        losses.append(loss.item() + served_loss)
        accs.append(acc.item())
        served_accs.append(served_acc)
        done = step + 1
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        if done % cfg.log_every == 0 or done == cfg.steps:
            n = min(cfg.log_every, len(losses))
            print(
                f"step {done}/{cfg.steps} loss {sum(losses[-n:]) / n:.4f} "
                f"acc {sum(accs[-n:]) / n:.3f} served acc {sum(served_accs[-n:]) / n:.3f} "
                f"lr {lr_at(step, cfg):.2e} "
                f"wall {wall / 60:.1f} min cpu {cpu / 60:.1f} min",
                flush=True,
            )
        if done % cfg.save_every == 0 or done == cfg.steps:
            tail = losses[-50:]
            record.update(
                steps_done=done,
                final_loss=round(sum(tail) / len(tail), 4),
                final_accuracy=round(sum(accs[-50:]) / len(tail), 4),
                wall_minutes=round(wall / 60, 1),
                cpu_minutes=round(cpu / 60, 1),
                torch=torch.__version__,
                machine=f"{platform.machine()}, {torch.get_num_threads()} torch threads",
            )
            write(model, vocab, out, cfg, record)


def option_type(name: str, default: object) -> Callable[[str], object]:
    """argparse type of a TrainConfig field, by its default's type (bool: true or false)."""

    def parse(raw: str) -> object:
        try:
            return parse_typed(name, raw, type(default))
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    return parse


def stage_plan(
    chain: list[tuple[str, dict[str, object]]], flags: dict[str, object], out: Path
) -> list[tuple[TrainConfig, Path, str]]:
    """Each stage of `chain` as (config, folder, the one-stage command that trains it): the
    preset's values, then the chain's changes, then the user's `flags`; every stage after the
    first starts from the one before's weights. The last stage writes to `out`, the others to
    `out/stages/<k>-<preset>`. Raises ValueError for a config the script refuses (naming the
    stage in a chain of several)."""
    plan: list[tuple[TrainConfig, Path, str]] = []
    for k, (preset, changes) in enumerate(chain, 1):
        values = {**changes, **flags}
        if plan:
            earlier, folder, _ = plan[-1]
            values["init"] = str(folder / weights_file(earlier.model))
        stage_out = out if k == len(chain) else out / "stages" / f"{k}-{preset}"
        try:
            cfg = dataclasses.replace(PRESETS[preset], **values)
        except ValueError as e:
            where = f"stage {k} (--preset {preset}): " if len(chain) > 1 else ""
            raise ValueError(f"{where}{e}") from None
        argv = ["python", "scripts/train_demo_model.py", "--preset", preset]
        for name, value in values.items():
            argv += ["--" + name.replace("_", "-"), option_text(value)]
        plan.append((cfg, stage_out, shlex.join([*argv, "--out", str(stage_out)])))
    return plan


def option_text(value: object) -> str:
    """A TrainConfig value as its flag takes it (bools as true / false)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="demo")
    parser.add_argument(
        "--chain",
        choices=sorted(CHAINS),
        help="train every stage of a chain in turn (`CHAINS`); flags apply to every stage",
    )
    for name, value in asdict(TrainConfig()).items():  # unset flags keep the preset's value
        flag = "--" + name.replace("_", "-")
        parser.add_argument(flag, type=option_type(name, value), default=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="folder for <model>.*")
    flags = vars(parser.parse_args(argv))
    out, preset, chain = flags.pop("out"), flags.pop("preset"), flags.pop("chain")
    if chain and "init" in flags:
        parser.error("--init with --chain: a chain's first stage starts where its preset says")
    try:
        plan = stage_plan(CHAINS[chain] if chain else [(preset, {})], flags, out)
    except ValueError as e:
        parser.error(str(e))  # exits 2 with the message, no traceback
    for cfg, folder, command in plan:
        train(cfg, folder, command if chain else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
