"""Synthetic clips, `builtin:patch-small`, the motion estimate and the AR-DF training sequence."""

from __future__ import annotations

import math

import pytest
import torch

from packcache_core.config import CODE_OFFSET
from packcache_core.demo.card import pack_state, unpack_state
from packcache_core.demo.data import COLOURS, PAN_DIRECTIONS, PAN_STEP, Motion, make_clip
from packcache_core.demo.motion import (
    colour_names,
    colour_shares,
    content_shift,
    direction_of,
    expected_direction,
    flooded,
    follows,
    psnr,
)
from packcache_core.demo.train import (
    DEMO_CONFIG,
    clip_sequence,
    compact_model,
    make_batch,
    tube_mask,
    vocabulary,
    whole_clip_row,
)
from packcache_core.layout import (
    MASK,
    SEP,
    VIDEO_START,
    FrameLayout,
    frame_positions,
    header_tokens,
    history_mask_positions,
    positions_from_tokens,
)
from packcache_core.loading import build_model
from packcache_core.request import IMAGE_FPS, IMAGE_SECONDS
from packcache_core.rope import RotaryTables
from packcache_core.text import ByteTextTokenizer, build_prompt_ids
from packcache_core.video import load_video_tokenizer
from packcache_core.video.builtin import SmallPatchTokenizer

LAYOUT = FrameLayout(8, 16)


@pytest.fixture(scope="module")
def tokenizer() -> SmallPatchTokenizer:
    tok = load_video_tokenizer("builtin:patch-small")
    assert isinstance(tok, SmallPatchTokenizer)
    return tok


def _clip_of(kind: str, direction: str | None = None, split: str = "heldout"):  # type: ignore[no-untyped-def]
    for i in range(200):
        clip = make_clip(split, i, 6)
        if clip.motion == Motion(kind, direction):
            return clip
    raise AssertionError(f"no {kind} {direction} clip in the first 200")


def test_clips_are_a_pure_function_of_split_and_index() -> None:
    a, b = make_clip("train", 7, 6), make_clip("train", 7, 6)
    assert a.caption == b.caption and torch.equal(a.latent_frames(3), b.latent_frames(3))
    other = make_clip("heldout", 7, 6)
    assert not torch.equal(a.latent_frames(1), other.latent_frames(1))
    with pytest.raises(ValueError, match="unknown split"):
        make_clip("test", 0)


@pytest.mark.parametrize("direction", sorted(PAN_DIRECTIONS))
def test_a_pan_shifts_the_codes_by_one_patch_per_latent_frame(
    direction: str, tokenizer: SmallPatchTokenizer
) -> None:
    clip = _clip_of("pan", direction)
    assert direction in clip.caption
    frames = clip.latent_frames(4)
    assert frames.shape == (4, 64, 128, 3) and frames.dtype == torch.uint8
    codes = torch.stack([tokenizer.encode_image(f) for f in frames])  # (4, 8, 16)
    dy, dx = (s // PAN_STEP for s in clip.motion.content_step())
    for f in range(1, 4):  # the part of frame 0 still in view, moved by f patches
        h, w = codes.shape[1:]
        old = codes[0, max(0, -dy * f) : h - max(0, dy * f), max(0, -dx * f) : w - max(0, dx * f)]
        new = codes[f, max(0, dy * f) : h - max(0, -dy * f), max(0, dx * f) : w - max(0, -dx * f)]
        assert torch.equal(old, new)


def test_rgb_frames_move_two_pixels_each() -> None:
    clip = _clip_of("pan", "left")  # content moves right
    rgb = clip.rgb_frames(2)
    assert rgb.shape[0] == 5
    assert torch.equal(rgb[1][:, 2:], rgb[0][:, :-2])


def test_patch_small_layout_and_round_trip(tokenizer: SmallPatchTokenizer) -> None:
    assert (tokenizer.n_codes, tokenizer.spatial_stride, tokenizer.temporal_stride) == (400, 8, 4)
    frame = _clip_of("still").latent_frames(1)[0]
    codes = tokenizer.encode_image(frame)
    assert codes.shape == (8, 16) and int(codes.min()) >= 0 and int(codes.max()) < 400
    assert psnr(tokenizer.decode(codes[None])[0], frame) > 18.0
    every = torch.arange(400).reshape(1, 20, 20)
    video = tokenizer.decode(every)
    assert video.shape == (1, 160, 160, 3)
    stream = tokenizer.stream_decoder()
    clip = torch.stack([codes, codes.roll(1, 1)])
    streamed = torch.cat([stream.push(clip[0]), stream.push(clip[1])])
    assert torch.equal(streamed, tokenizer.decode(clip))


@pytest.mark.parametrize(
    "kind,direction", [*(("pan", d) for d in PAN_DIRECTIONS), ("object", "up")]
)
def test_motion_estimate_recovers_the_truth(
    kind: str, direction: str, tokenizer: SmallPatchTokenizer
) -> None:
    clip = _clip_of(kind, direction)
    codes = torch.stack([tokenizer.encode_image(f) for f in clip.latent_frames(6)])
    decoded = tokenizer.decode(codes)[::4]  # what a model's codes would look like
    assert follows(clip.motion, decoded)
    if kind == "pan":
        assert content_shift(decoded) == tuple(float(s) for s in clip.motion.content_step())


def test_still_clips_do_not_move(tokenizer: SmallPatchTokenizer) -> None:
    frames = _clip_of("still").latent_frames(4)
    assert direction_of(content_shift(frames)) is None
    assert expected_direction(Motion("pan", "left")) == "right"  # the camera's opposite


def test_colour_shares_name_each_cluster_and_add_up() -> None:
    """A picture 5/8 yellow, 2/8 blue, 1/8 near-black: each colour named with its share, in
    the order of size; the two names are the first two; one colour alone is all of it."""
    rgb = {name: torch.tensor(COLOURS[name]) * 255 for name in ("yellow", "blue", "black")}
    rows = [rgb["yellow"]] * 5 + [rgb["blue"]] * 2 + [rgb["black"] + 10]
    picture = torch.stack(rows).round().to(torch.uint8)[:, None, :].expand(8, 16, 3)
    shares = colour_shares(picture)
    assert list(shares) == ["yellow", "blue", "black"]
    assert [shares[n] for n in shares] == pytest.approx([5 / 8, 2 / 8, 1 / 8])
    assert colour_names(picture) == ["yellow", "blue"]
    one_colour = colour_shares(picture[:5])
    assert one_colour == pytest.approx({"yellow": 1.0})
    # flooded: one colour at FLOOD_SHARE (0.9) or more; 5/8 is not, 29/32 is, and so is 0.9
    assert flooded(one_colour) and not flooded(shares)
    assert flooded({"red": 29 / 32, "blue": 3 / 32}) and flooded({"red": 0.9, "blue": 0.1})
    assert not flooded({"red": 0.89, "blue": 0.11})


def test_tube_mask_rate_follows_the_clipped_cosine_schedule() -> None:
    g = torch.Generator().manual_seed(0)
    rates = [float(tube_mask(136, 0.7, g).float().mean()) for _ in range(400)]
    assert min(rates) >= round(0.7 * 136) / 136 - 1e-6
    at_floor = sum(abs(r - 95 / 136) < 1e-6 for r in rates) / len(rates)
    # P(cos(pi u / 2) <= 0.7) = 1 - 2 acos(0.7) / pi ~ 0.494
    assert abs(at_floor - (1 - 2 * math.acos(0.7) / math.pi)) < 0.08


def test_training_sequence_is_the_inference_layout(tokenizer: SmallPatchTokenizer) -> None:
    clip = _clip_of("pan", "up", split="train")
    codes = torch.stack([tokenizer.encode_image(f) for f in clip.latent_frames(3)])
    masked = torch.zeros(LAYOUT.grid_tokens, dtype=torch.bool)
    masked[history_mask_positions(LAYOUT.grid_tokens, 0.7)] = True
    ids, targets = clip_sequence(codes, clip.caption, 2, masked, drop_text=False)
    text_len = int((ids == SEP).nonzero()[0]) + 1
    frames = ids[text_len + 3 :].view(3, LAYOUT.tokens)
    assert torch.equal(frames[0], LAYOUT.frame_tokens(codes[0]))  # conditioning frame clean
    for f in (1, 2):  # the same tube in every generated frame, as inference writes history
        assert torch.equal(frames[f][3:-1] == MASK, masked)
    pos = positions_from_tokens(ids)
    for f in range(3):
        start = text_len + 3 + f * LAYOUT.tokens
        assert torch.equal(
            pos[:, start : start + LAYOUT.tokens], frame_positions(LAYOUT, f, text_len)
        )
    tgt = targets[text_len + 3 :].view(3, LAYOUT.tokens)
    slots = LAYOUT.code_slots()
    assert bool((tgt[0] == -1).all())
    want = torch.where(masked[slots - 3], codes[1].flatten(), -1)
    assert torch.equal(tgt[1][slots], want)
    uncond, _ = clip_sequence(codes, clip.caption, 2, masked, drop_text=True)
    assert int(uncond[0]) == VIDEO_START and torch.equal(uncond, ids[text_len:])


def test_a_text_to_image_row_is_frame_0_as_the_images_route_states_it(
    tokenizer: SmallPatchTokenizer,
) -> None:
    """One frame, no conditioning image: every masked code of frame 0 is a target, and the text
    and header state the image as `resolve_image` does (1 s at 1 fps), not as a 12 fps video."""
    clip = make_clip("train", 0, 2)
    codes = tokenizer.encode_image(clip.latent_frames(1)[0])[None]
    masked = tube_mask(LAYOUT.grid_tokens, 0.7, torch.Generator().manual_seed(0))
    ids, targets = clip_sequence(codes, clip.caption, IMAGE_SECONDS, masked, False, True, IMAGE_FPS)
    text = build_prompt_ids(ByteTextTokenizer(), clip.caption, 128, 64, IMAGE_FPS, IMAGE_SECONDS)
    prefix = text + header_tokens(IMAGE_SECONDS, IMAGE_FPS)
    assert ids[: len(prefix)].tolist() == prefix and ids.numel() == len(prefix) + LAYOUT.tokens
    assert prefix != text + header_tokens(IMAGE_SECONDS, 12)
    frame, target = ids[len(prefix) :], targets[len(prefix) :]
    slots = LAYOUT.code_slots()
    assert torch.equal(frame[slots] == MASK, masked[slots - 3])
    want = torch.where(masked[slots - 3], codes[0].flatten(), -1)
    assert torch.equal(target[slots], want) and bool((targets[: len(prefix)] == -1).all())


def test_compact_weights_pack_and_unpack_into_the_inference_model() -> None:
    vocab = vocabulary()
    assert int(vocab[-1]) == CODE_OFFSET + 399 and vocab.numel() < 800
    model = compact_model(DEMO_CONFIG, vocab.numel(), seed=0)
    state = unpack_state(DEMO_CONFIG, pack_state(model, vocab))
    full = build_model(DEMO_CONFIG, state, "cpu", torch.float32)
    emb = model.model.embed_tokens.weight.to(torch.bfloat16).float()
    assert torch.equal(full.model.embed_tokens.weight[vocab], emb)
    assert float(full.model.embed_tokens.weight[2].abs().sum()) == 0.0  # an unused id
    head = model.lm_head.weight.to(torch.bfloat16).float()
    assert torch.equal(full.lm_head.weight[CODE_OFFSET:], head)
    # the same ids through both models give the same hidden states (bf16 weights in both)
    clip = make_clip("train", 0, 2)
    tok = load_video_tokenizer("builtin:patch-small")
    codes = torch.stack([tok.encode_image(f) for f in clip.latent_frames(2)])
    seq = clip_sequence(codes, clip.caption, 1, torch.zeros(136, dtype=torch.bool), False)
    rope = RotaryTables(DEMO_CONFIG.head_dim, DEMO_CONFIG.rope_theta, "cpu")
    batch = make_batch([whole_clip_row(*seq)], vocab, rope)
    compact = compact_model(DEMO_CONFIG, vocab.numel(), seed=0)
    compact.load_state_dict(
        {k: v.to(torch.bfloat16).float() for k, v in model.state_dict().items()}
    )
    with torch.no_grad():
        a = compact(batch.tokens, batch.cos, batch.sin, batch.mask)
        b = full(seq[0][None], batch.cos, batch.sin, batch.mask)
    assert torch.allclose(a, b, atol=1e-5)
