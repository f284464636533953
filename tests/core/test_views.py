"""Training under the cache's view (`demo/views.py`) and the camera paths that turn
(`demo/paths.py`): what a view holds is what a served cache holds, token for token."""

from __future__ import annotations

import hashlib
import itertools

import pytest
import torch
from safetensors.torch import load_file

from packcache_core.demo.card import EMBED_IDS, WEIGHTS_DIR
from packcache_core.demo.paths import SEGMENT_FRAMES, make_path_clip
from packcache_core.demo.rollout import ServedModel
from packcache_core.demo.train import DEMO_CONFIG, compact_model, vocabulary
from packcache_core.demo.views import cache_views, history_mask, view_sequence
from packcache_core.generate import SamplingConfig, VideoGeneration, VideoRequest
from packcache_core.layout import MASK, FrameLayout, frame_positions, header_tokens
from packcache_core.loading import load_model
from packcache_core.model import LumosTransformer
from packcache_core.policy import policy_from_spec

LAYOUT = FrameLayout(8, 16)
PROMPT = [0, *range(16000, 16012), 8710]


@pytest.fixture(scope="module")
def model() -> LumosTransformer:
    return load_model("builtin:tiny-random")


@pytest.mark.parametrize(
    "spec", ["packcache", "packcache:rebase=false", "sliding:window=2", "full"]
)
def test_a_view_holds_what_the_served_cache_holds(model: LumosTransformer, spec: str) -> None:
    """Replaying frames through a real generation: before each frame, the frames held, their
    tokens and their temporal indices, and the frame's own index, are the view's."""
    policy = policy_from_spec(spec)
    g = torch.Generator().manual_seed(5)
    codes = [torch.randint(0, 64000, (LAYOUT.h, LAYOUT.w), generator=g) for _ in range(7)]
    req = VideoRequest(PROMPT, codes[0], 7, fps=12, seconds=2)
    gen = VideoGeneration(model, req, SamplingConfig(steps=1), policy, 0)
    gen.prefill()
    views = cache_views(policy, LAYOUT, list(range(1, 7)), len(PROMPT))
    for t, view in enumerate(views, 1):
        assert view.target == t and view.index == gen.cache.next_frame_index
        held = gen.cache.history
        assert [h.frame for h in view.held] == list(range(t - len(held), t))
        assert [h.index for h in view.held] == [h.frame for h in held]
        assert all(torch.equal(a.local, b.local) for a, b in zip(view.held, held, strict=True))
        gen.replay_frame(codes[t])


def test_view_sequence_tokens_positions_and_attention() -> None:
    policy = policy_from_spec("packcache")
    g = torch.Generator().manual_seed(1)
    codes = {t: torch.randint(0, 400, (LAYOUT.h, LAYOUT.w), generator=g) for t in range(9)}
    prefix = [*PROMPT, *header_tokens(2, 12)]
    views = cache_views(policy, LAYOUT, [2, 8], len(PROMPT))
    tube = torch.zeros(LAYOUT.grid_tokens, dtype=torch.bool)
    tube[::3] = True
    row = view_sequence(prefix, codes, views, LAYOUT, tube)
    held = [h.local.numel() for v in views for h in v.held]
    F = LAYOUT.tokens
    assert row.ids.numel() == len(prefix) + F + sum(held) + 2 * F
    # the second view: 3 held frames (half, quarter, quarter of the grid), then frame 8
    start8 = row.ids.numel() - F
    assert torch.equal(row.positions[:, start8:], frame_positions(LAYOUT, 4, len(PROMPT)))
    first_held = start8 - sum(h.local.numel() for h in views[1].held)
    oldest = views[1].held[0]
    span = slice(first_held, first_held + oldest.local.numel())
    want = LAYOUT.frame_tokens(codes[oldest.frame])
    want[3 + history_mask(LAYOUT)] = MASK
    assert torch.equal(row.ids[span], want[oldest.local])  # as the write-back fed it
    assert torch.equal(
        row.positions[:, span], frame_positions(LAYOUT, 1, len(PROMPT))[:, oldest.local]
    )
    # targets: the tube's code slots of both target frames, and nothing else
    assert int((row.targets >= 0).sum()) == 2 * int(tube[LAYOUT.code_slots() - 3].sum())
    assert bool((row.ids[row.targets >= 0] == MASK).all())
    # frame 8 attends the prefix, frame 0, its own history and itself, never view 1's tokens
    view1 = slice(len(prefix) + F, first_held)
    assert not row.allowed[start8:, view1].any()
    assert row.allowed[start8:, : first_held - (first_held - len(prefix) - F)].all()
    assert row.allowed[start8:, first_held:].all()
    # a history frame does not attend the frame after it
    assert not row.allowed[span, span.stop :].any()


def test_path_clips_turn_where_the_caption_changes() -> None:
    clip = make_path_clip("train", 3, 40)
    changes = clip.changes()
    assert changes, "a 40-frame path has at least one turn"
    for t in range(1, clip.length):
        step = clip.corners[t] - clip.corners[t - 1]
        assert abs(step).sum() in (0, 8)  # one pan step, or still
        if t > 1 and clip.captions[t] == clip.captions[t - 1]:
            assert (step == clip.corners[t - 1] - clip.corners[t - 2]).all()
    t, _ = changes[0]
    a, b = clip.latent_frames([t - 1, t])
    dy, dx = (clip.corners[t] - clip.corners[t - 1]).astype(int)  # the window's move
    H, W = a.shape[:2]  # b at (y, x) shows what a showed at (y + dy, x + dx)
    assert torch.equal(
        b[max(0, -dy) : H - max(0, dy), max(0, -dx) : W - max(0, dx)],
        a[max(0, dy) : H + min(0, dy), max(0, dx) : W + min(0, dx)],
    )
    assert make_path_clip("train", 3, 40).captions == clip.captions  # a pure function


def test_a_shorter_longest_segment_turns_more_often() -> None:
    def gaps(longest: int | None) -> list[int]:
        out = []
        for i in range(12):
            clip = make_path_clip(
                "train", i, 40, **({} if longest is None else {"longest_segment": longest})
            )
            starts = [1] + [t for t, _ in clip.changes()] + [clip.length]
            out += [b - a for a, b in itertools.pairwise(starts)][:-1]  # whole segments
        return out

    assert max(gaps(4)) <= 4 < max(gaps(None))
    # the default draws what the clips drew before the knob existed (earlier training commands
    # reproduce): a digest of train clips 0-11, 40 frames, taken from that code
    digest = hashlib.sha256()
    for i in range(12):
        clip = make_path_clip("train", i, 40)
        digest.update(repr((clip.captions, clip.corners.tolist())).encode())
    assert digest.hexdigest()[:16] == "c9dfcb4ef37d7220"
    with pytest.raises(ValueError, match="longest_segment"):
        make_path_clip("train", 0, 10, longest_segment=SEGMENT_FRAMES[0] - 1)


def test_a_path_without_turns_holds_its_first_direction() -> None:
    """`turns=False` (the whole text-to-video rows, which keep frame 0's caption): no prompt
    change and one direction on every step, where some of the same clips with turns change."""
    straight = [make_path_clip("train", i, 6, coloured=True, turns=False) for i in range(40)]
    assert all(not c.changes() and len(set(c.directions[1:])) == 1 for c in straight)
    assert all(None not in c.directions[1:] for c in straight)  # a pan, never still
    assert len({c.directions[1] for c in straight}) == 4  # every direction is drawn
    turning = [make_path_clip("train", i, 6, coloured=True) for i in range(40)]
    assert sum(bool(c.changes()) for c in turning) >= 4
    # only the turns differ: the same colours and first caption as the clip with turns
    assert [(c.colours, c.captions[0]) for c in straight] == [
        (c.colours, c.captions[0]) for c in turning
    ]


def served_demo_base() -> ServedModel:
    """The shipped demo-base weights as a compact training model, with its serving twin."""
    vocab = vocabulary()
    compact = compact_model(DEMO_CONFIG, vocab.numel(), 0)
    packed = load_file(str(WEIGHTS_DIR / "demo-base.safetensors"))
    compact.load_state_dict({k: v.float() for k, v in packed.items() if k != EMBED_IDS})
    served = ServedModel(compact, DEMO_CONFIG, vocab)
    served.sync()
    return served


@pytest.mark.parametrize("text_to_video", [False, True], ids=["i2v", "t2v"])
def test_a_path_request_changes_the_caption_where_the_path_turns(
    model: LumosTransformer, text_to_video: bool
) -> None:
    """`path_request` keys each prompt change by the generated frame it starts at, so the
    caption of latent frame t is in force while latent frame t is made (a text-to-video
    request's first generated frame is latent frame 0, not 1)."""
    from packcache_core.demo.rollout import path_request
    from packcache_core.text import ByteTextTokenizer, build_prompt_ids

    clip = next(c for i in range(20) if (c := make_path_clip("heldout", i, 8)).changes())
    codes = torch.zeros((8, LAYOUT.h, LAYOUT.w), dtype=torch.int64)
    req = path_request(clip, codes, 2, (128, 64), text_to_video)
    gen = VideoGeneration(model, req, SamplingConfig(steps=1), policy_from_spec("packcache"))
    gen.prefill()  # writes the first caption
    written: dict[int, list[int]] = {}  # latent frame -> prompt written as it starts
    write = gen._write_text

    def record(prompt_ids: list[int]) -> None:
        written[gen.frames_done + req.first_index] = prompt_ids
        write(prompt_ids)

    gen._write_text = record  # type: ignore[method-assign]
    for t in range(req.first_index, 8):
        gen.predict_frame()
        gen.replay_frame(codes[t])
    ids = {t: build_prompt_ids(ByteTextTokenizer(), c, 128, 64, 12, 2) for t, c in clip.changes()}
    assert ids and written == ids


@pytest.mark.parametrize("text_to_video", [False, True], ids=["i2v", "t2v"])
def test_a_rollout_target_sees_what_serving_predicts_from(text_to_video: bool) -> None:
    """Training through a served cache (`demo/rollout.py`): at every frame of a path that
    turns (a prompt change, a re-cache, packing and rebasing), the compact training model's
    logits over the cache it builds, combined for guidance, are those serving's
    `predict_frame` gives on the shipped model; for text-to-video from frame 0 on."""
    from packcache_core.demo.rollout import path_request, target_logits
    from packcache_core.video import load_video_tokenizer

    served = served_demo_base()
    tok = load_video_tokenizer("builtin:patch-small")
    clip = next(c for i in range(20) if (c := make_path_clip("heldout", i, 8)).changes())
    codes = torch.stack([tok.encode_image(f) for f in clip.latent_frames(range(8))])
    req = path_request(clip, codes, 2, (128, 64), text_to_video)
    sampling = SamplingConfig(steps=1, cfg_scale=3.0)
    policy = policy_from_spec("packcache")
    serving = VideoGeneration(load_model("builtin:demo-base"), req, sampling, policy)
    training = VideoGeneration(served.model, req, sampling, policy)
    training.prefill()
    every_code = torch.zeros(LAYOUT.grid_tokens, dtype=torch.bool)  # newlines stay, as served
    every_code[LAYOUT.code_slots() - 3] = True
    for t in range(req.first_index, 8):
        want = serving.predict_frame()  # (h w, n_codes), guided
        with torch.no_grad():
            (cond, uncond), target = target_logits(served, training, codes[t], every_code)
        torch.testing.assert_close(uncond + 3.0 * (cond - uncond), want, atol=1e-4, rtol=0)
        assert torch.equal(target, codes[t].flatten())
        serving.replay_frame(codes[t])
        training.replay_frame(codes[t])


def test_pan_target_of_a_true_pan_is_the_next_frame() -> None:
    """The target of a frame drawn on the model's own history is the asked move from the
    frame it drew; on the true clip that is exactly the true next frame, at every turn."""
    from packcache_core.demo.rollout import pan_target
    from packcache_core.video import load_video_tokenizer

    tok = load_video_tokenizer("builtin:patch-small")
    for i, coloured in ((0, False), (1, True)):
        clip = make_path_clip("train", i, 30, coloured=coloured)
        codes = torch.stack([tok.encode_image(f) for f in clip.latent_frames(range(30))])
        moved = 0
        for t, step in enumerate(clip.moves()[1:], start=1):
            assert torch.equal(pan_target(codes[t - 1], codes[t], step), codes[t]), (i, t)
            if step != (0, 0) and not torch.equal(codes[t - 1], codes[t]):
                moved += 1
        assert moved > 10  # the frames move: a wrong-way target would have failed above


@pytest.mark.parametrize("text_to_video", [False, True], ids=["i2v", "t2v"])
def test_own_rollout_draws_what_serving_draws(text_to_video: bool) -> None:
    """Training on its own frames (`own_rollout_loss`): the frames it draws and writes back
    are those serving draws for the same request and seed (so the history it learns from is
    the one it serves with), and every frame's loss reaches the weights."""
    from packcache_core.demo.rollout import own_rollout_loss
    from packcache_core.text import ByteTextTokenizer, build_prompt_ids
    from packcache_core.video import load_video_tokenizer

    served = served_demo_base()
    tok = load_video_tokenizer("builtin:patch-small")
    clip = next(c for i in range(20) if (c := make_path_clip("heldout", i, 7)).changes())
    codes = torch.stack([tok.encode_image(f) for f in clip.latent_frames(range(7))])
    ids = [build_prompt_ids(ByteTextTokenizer(), c, 128, 64, 12, 2) for c in clip.captions]
    req = VideoRequest(
        ids[0],
        None if text_to_video else codes[0],
        7,
        12,
        2,
        prompt_changes=tuple((t, ids[t]) for t, _ in clip.changes()),
        text_slots=80,
        grid=(LAYOUT.h, LAYOUT.w) if text_to_video else None,
    )
    sampling = SamplingConfig(steps=3, cfg_scale=3.0)
    policy = policy_from_spec("packcache")
    tube = torch.rand(LAYOUT.grid_tokens, generator=torch.Generator().manual_seed(1)) < 0.7
    _, _, count, drawn = own_rollout_loss(
        served, req, codes, clip.moves(), policy, sampling, 5, tube, 1.0
    )
    serving = VideoGeneration(load_model("builtin:demo-base"), req, sampling, policy, seed=5)
    want = []
    while not serving.done:
        if (result := serving.step()) is not None:
            want.append(result.codes)
    assert len(drawn) == len(want) == (7 if text_to_video else 6)
    assert all(torch.equal(a, b) for a, b in zip(drawn, want, strict=True))
    assert count == len(drawn) * int(tube[LAYOUT.code_slots() - 3].sum())
    assert (
        served.compact.lm_head.weight.grad is not None
        and served.compact.lm_head.weight.grad.abs().sum() > 0
    )
