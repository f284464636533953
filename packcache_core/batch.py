"""Step-level batching: the denoising steps of several requests as one forward.

What it is: `step_together(generations)`, one unit of work for each generation, where every
generation that is denoising joins one batched forward per frame geometry (rows 2i and 2i + 1
are request i's guidance branches), and `forward_together(model, inputs)`, that forward alone,
for callers that prepare and finish each request's step themselves (the server, so that one
request can fail without the others). Projections, MLPs and norms run once over all rows;
attention runs per request over that request's own fixed-size cache; sampling, write-back and
packing stay per request. What it is not: a scheduler (the caller decides who is in the batch).

Invariant: a request's tokens do not depend on which other requests share its batch: its
rows see only its own cache and mask, and its random numbers come from its own generator.
"""

from __future__ import annotations

import torch

from packcache_core.generate import FrameResult, StepInputs, VideoGeneration
from packcache_core.layout import FrameLayout
from packcache_core.model import LumosTransformer, Segment


@torch.no_grad()
def step_together(generations: list[VideoGeneration]) -> list[FrameResult | None]:
    """Advance each generation by one unit (a prefill or a denoising step), in one forward per
    frame geometry for the denoising ones. All must share one model."""
    results: list[FrameResult | None] = [None] * len(generations)
    groups: dict[FrameLayout, list[int]] = {}
    for i, gen in enumerate(generations):
        assert gen.model is generations[0].model, "a batch shares one model"
        if gen.needs_prefill:
            gen.step()  # prompts differ in length: prefills run alone
        else:
            groups.setdefault(gen.layout, []).append(i)
    for members in groups.values():
        inputs = [generations[i].prepare_step() for i in members]
        hidden = forward_together(generations[members[0]].model, inputs)
        for i, h in zip(members, hidden, strict=True):
            results[i] = generations[i].finish_step(h)
    return results


@torch.no_grad()
def forward_together(model: LumosTransformer, inputs: list[StepInputs]) -> list[torch.Tensor]:
    """One forward for the denoising steps of several requests with one frame geometry.

    Returns each request's final hidden states (2, F, hidden), in the order of `inputs` (views
    of one (2R, F, hidden) tensor). Nothing but the requests' own cache slots of this step is
    written, so a forward that raises can be run again, alone or with others.
    """
    segments = [
        Segment(slice(2 * j, 2 * j + 2), inp.segment.mask, inp.segment.kv, inp.segment.start)
        for j, inp in enumerate(inputs)
    ]
    hidden = model.forward_segments(
        torch.cat([inp.tokens for inp in inputs]),  # (2R, F)
        torch.cat([inp.cos for inp in inputs]),  # (2R, F, D)
        torch.cat([inp.sin for inp in inputs]),
        segments,
    )  # (2R, F, hidden)
    return list(hidden.split(2))
