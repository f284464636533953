"""Cache policies: small objects that decide which history tokens stay in a request's KV cache.

What it is: `FullPolicy`, `SlidingPolicy`, `PackCachePolicy` (the PackCache paper's rule, section
3.1 of `packcache-method.md`), `PackCacheFloorsPolicy` (a variant with per-frame floors, tuned
on a built-in model) and `SinkPolicy`, and `POLICIES`,
the registry every name, parameter and bound is derived from (request fields, settings, CLI
choices, metric labels, the page). A policy only looks at frame-local token indices (and, if
it asks, per-token scores the cache computes) and returns what to keep; it never touches
tensors of keys or values. What it is not: storage (`cache.py` moves memory and re-rotates
keys) or a scheduler.

Invariant: what a policy keeps of a frame is always a subset of what that frame holds now, so
packing is a gather from the cache into itself; the four boundary tokens of a kept frame are
always kept.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from packcache_core.layout import BOUNDARY, FrameLayout


class PolicyError(ValueError):
    """Parameters no policy of that name can take; `param` names the one to change."""

    def __init__(self, message: str, param: str = "cache_policy") -> None:
        super().__init__(message)
        self.param = param


# Frame-local index of the tokens outside the grid: image-start, two size tokens, image-end.
def boundary_mask(local: torch.Tensor, layout: FrameLayout) -> torch.Tensor:
    return (local < 3) | (local == layout.tokens - 1)


@dataclass(frozen=True)
class Knob:
    """A policy parameter as users set it (REST, CLI, settings): bounds and one line of help.
    The server's request fields, the CLI's `--policy-param` and the page are derived from
    these, so a policy's parameters are declared once, on its class."""

    doc: str
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    choices: tuple[str, ...] | None = None


def knob(default: Any, doc: str, **bounds: Any) -> Any:
    """A dataclass field that users may set (see `Knob`)."""
    return field(default=default, metadata={"knob": Knob(doc, **bounds)})


SELECTORS = ("uniform", "knorm")  # how a packed frame chooses its tokens (see `choose`)


# Knobs several policies share: one declaration each (a fresh field per class).
def window_knob(default: int) -> Any:
    return knob(default, "history frames kept", ge=1, le=1000)


def budget_knob() -> Any:
    return knob(1.0, "history memory in frames (1 = a one-frame window's)", gt=0, le=16)


def rho_knob() -> Any:
    return knob(0.5, "packcache: decay of a frame's share per frame of distance", gt=0, le=1)


def drop_masked_knob() -> Any:
    return knob(False, "packcache: never keep the history mask's MASK tokens")


def selector_knob() -> Any:
    return knob("uniform", "packcache: which tokens stay", choices=SELECTORS)


def rebase_knob() -> Any:
    return knob(True, "renumber kept frames to stay in the trained positions")


def rebase_at_knob() -> Any:
    return knob(
        0,
        "with rebase: frames keep their own positions until the video reaches this temporal "
        "index, then the frame being made stays there and the kept ones just before it "
        "(0: the kept frames are always 1, 2, ..., the frame being made right after)",
        ge=0,
        le=100_000,
    )


class CachePolicy(Protocol):
    """Decides, after each write-back, what each history frame keeps.

    Two members are optional, so a new policy may leave them out: `frames_held` (most history
    frames it ever keeps; None or absent: the history grows with the video, which rules out
    open-ended videos) and `rebase_at` (see `rebase_at_knob`; absent: 0). Read them with
    `frames_held()` and `rebase_at()`.
    """

    @property
    def name(self) -> str: ...

    @property
    def rebase(self) -> bool:
        """Renumber retained frames so history stays contiguous in time."""
        ...

    @property
    def uses_scores(self) -> bool:
        """Whether `select` reads per-token scores (the cache computes them only then)."""
        ...

    def select(
        self,
        frames: Sequence[torch.Tensor],
        layout: FrameLayout,
        visible: torch.Tensor,
        scores: Sequence[torch.Tensor] | None = None,
    ) -> list[torch.Tensor | None]:
        """Choose what stays.

        Args:
            frames: history frames, newest first (distance d = 1, 2, ...); each a sorted (n,)
                int64 tensor of the frame-local token indices the cache holds for it now.
            layout: frame geometry.
            visible: (layout.tokens,) bool, frame-local tokens that carry content after the
                AR-DF write-back (boundary tokens and the grid tokens the history mask left).
            scores: per frame, a (n,) float32 importance of each held token (the cache's
                `token_scores`), or None where the caller has none (capacity planning, which
                counts tokens and never looks at which ones).

        Returns:
            Per frame, positions into its tensor to keep (sorted), or None to evict it. How
            many tokens a frame keeps never depends on `scores`, so the capacity planned
            without them holds.
        """
        ...


def _keep_all(frame: torch.Tensor) -> torch.Tensor:
    return torch.arange(frame.numel())


@dataclass(frozen=True)
class FullPolicy:
    """Every frame as the reference writes it: the cache grows with the video."""

    name: str = "full"
    rebase: bool = False
    rebase_at: int = 0
    uses_scores: bool = False

    @property
    def frames_held(self) -> None:
        return None

    def select(
        self,
        frames: Sequence[torch.Tensor],
        layout: FrameLayout,
        visible: torch.Tensor,
        scores: Sequence[torch.Tensor] | None = None,
    ) -> list[torch.Tensor | None]:
        return [_keep_all(f) for f in frames]


@dataclass(frozen=True)
class SlidingPolicy:
    """Anchors plus the newest `window` frames, as written; older frames leave whole (FIFO)."""

    window: int = window_knob(1)
    rebase: bool = rebase_knob()
    rebase_at: int = rebase_at_knob()
    name: str = "sliding"
    uses_scores: bool = False

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError(f"sliding window must be >= 1, got {self.window}")

    @property
    def frames_held(self) -> int:
        return self.window

    def select(
        self,
        frames: Sequence[torch.Tensor],
        layout: FrameLayout,
        visible: torch.Tensor,
        scores: Sequence[torch.Tensor] | None = None,
    ) -> list[torch.Tensor | None]:
        return [_keep_all(f) if d <= self.window else None for d, f in enumerate(frames, 1)]


def uniform_subset(m: int, n: int) -> torch.Tensor:
    """n evenly spaced positions out of m in raster order (all of them if n >= m)."""
    if n >= m:
        return torch.arange(m)
    return torch.div(torch.arange(n) * m, n, rounding_mode="floor")


def choose(
    n: int, candidates: torch.Tensor, score: torch.Tensor | None, selector: str
) -> torch.Tensor:
    """n of the positions `candidates` (sorted), by `selector`: evenly spaced in raster order
    ("uniform"), or the n whose keys have the smallest norm ("knorm": a small key norm goes
    with large attention received, as measured for LLM caches by KNorm)."""
    if selector == "knorm" and score is not None and n < candidates.numel():
        order = torch.argsort(score[candidates], stable=True)[:n]
        return candidates[order]
    return candidates[uniform_subset(candidates.numel(), n)]


def _select_frame(
    local: torch.Tensor,
    layout: FrameLayout,
    visible: torch.Tensor,
    n: int,
    drop_masked: bool,
    score: torch.Tensor | None,
    selector: str,
) -> torch.Tensor:
    """Positions to keep of one frame: its boundary tokens and n grid tokens (sorted)."""
    boundary = boundary_mask(local, layout)
    candidates = ~boundary
    if drop_masked:
        candidates &= visible[local]
    cand_pos = torch.nonzero(candidates).flatten()
    chosen = choose(n, cand_pos, score, selector)
    return torch.cat((torch.nonzero(boundary).flatten(), chosen)).sort().values


def grid_candidates(layout: FrameLayout, visible: torch.Tensor, drop_masked: bool) -> int:
    """G: the grid tokens a whole frame offers a packing policy (with `drop_masked`, only
    those the history mask left visible)."""
    return int(visible.sum()) - BOUNDARY if drop_masked else layout.grid_tokens


def _frame_scores(scores: Sequence[torch.Tensor] | None, d: int) -> torch.Tensor | None:
    return None if scores is None else scores[d - 1]


def grid_budget(budget: float, layout: FrameLayout, frames: int) -> float:
    """Grid tokens that `budget` frames of memory leave for `frames` kept history frames, once
    each has kept its 4 boundary tokens."""
    return budget * layout.tokens - 4 * frames


def check_decay(name: str, window: int, rho: float, budget: float, selector: str) -> None:
    """The parameters both PackCache policies share, checked (PolicyError naming the bad one)."""
    if window < 1:
        raise PolicyError(f"{name} window must be >= 1, got {window}", "window")
    if not 0 < rho <= 1:
        raise PolicyError(f"{name} rho must be in (0, 1], got {rho}", "rho")
    if budget <= 0:
        raise PolicyError(f"{name} budget must be > 0, got {budget}", "budget")
    if selector not in SELECTORS:
        raise PolicyError(
            f"unknown {name} selector {selector!r} (available: {', '.join(SELECTORS)})",
            "selector",
        )


def decay_shares(n: int, rho: float) -> list[float]:
    """Shares of the history budget of the n frames held, newest first: rho^min(d, n - 1) for
    d = 1..n, normalised (PackCache's decay; with rho = 1/2 they need no normalising:
    [1], [1/2, 1/2], [1/2, 1/4, 1/4], [1/2, 1/4, 1/8, 1/8], ...)."""
    weights = [rho ** min(d, n - 1) for d in range(1, n + 1)]
    total = sum(weights)
    return [w / total for w in weights]


def window_of_quota(b_min: float) -> int:
    """The window W whose minimum quota is `b_min` = 2^-(W-1) (1/2, 1/4, 1/8: W = 2, 3, 4);
    ValueError for any other value."""
    W = 1 - math.log2(b_min) if 0 < b_min <= 1 else 0.0
    if b_min <= 0 or abs(W - round(W)) > 1e-9:
        raise PolicyError(
            f"b_min={b_min:g} is not a quota of the form 2^-(W-1) (1/2, 1/4, 1/8, ... for a "
            "window of 2, 3, 4, ... frames); set window instead",
            "b_min",
        )
    return round(W)


@dataclass(frozen=True)
class PackCachePolicy:
    """PackCache as the paper defines it (`packcache-method.md` section 3.1): one rule over the
    n <= W finished frames the cache holds after a write-back.

    The frame at distance d (1 = newest) has the share b_d = rho^min(d, n - 1) (normalised) of
    a history of `budget` frames' worth of grid tokens and keeps n_d = min(G, budget b_d G) of
    its G grid tokens (codes and row newlines, MASK tokens included; with `drop_masked` G
    counts only those the history mask left visible), chosen by `selector` from what it kept
    before (nested), plus its 4 boundary tokens. Counts are integers: each share floored, the
    tokens left over given one by one to the newest frames, so at budget 1 they sum to exactly
    G. One rule gives the paper's three phases: fill (n = 1: the finished frame whole), pack
    (n = 2, 3: [1/2, 1/2], [1/2, 1/4, 1/4]) and slide (a frame beyond W leaves, FIFO, and with
    `rebase` the rest are renumbered). `b_min`, the paper's minimum quota 2^-(W-1), is another
    way to give the window: `make_policy` derives W from it, and a `b_min` that contradicts
    the window is refused.
    """

    window: int = knob(
        3, "history frames kept (packcache: the paper's three-frame quota)", ge=1, le=1000
    )
    rho: float = rho_knob()
    budget: float = budget_knob()
    b_min: float = knob(
        0.0,
        "packcache: the window as the paper's minimum quota 2^-(W-1) (0.5, 0.25, 0.125 for "
        "W = 2, 3, 4); 0: from window",
        ge=0,
        le=1,
    )
    drop_masked: bool = drop_masked_knob()
    selector: str = selector_knob()
    rebase: bool = rebase_knob()
    rebase_at: int = rebase_at_knob()
    name: str = "packcache"

    def __post_init__(self) -> None:
        check_decay(self.name, self.window, self.rho, self.budget, self.selector)
        if self.b_min and window_of_quota(self.b_min) != self.window:
            raise PolicyError(
                f"b_min={self.b_min:g} is the quota of a {window_of_quota(self.b_min)}-frame "
                f"window, but window={self.window}; give one of them (b_min = 2^-(window-1))",
                "b_min",
            )

    @classmethod
    def derive(cls, params: dict[str, object]) -> dict[str, object]:
        """A `b_min` given without a window sets the window."""
        b_min = params.get("b_min")
        if isinstance(b_min, int | float) and b_min and "window" not in params:
            return {**params, "window": window_of_quota(float(b_min))}
        return params

    @property
    def uses_scores(self) -> bool:
        return self.selector != "uniform"

    @property
    def frames_held(self) -> int:
        return self.window

    def frame_counts(self, n: int, g: int) -> list[int]:
        """Grid tokens kept by each of the n frames held (newest first), of g each (3.1)."""
        target = [min(g, self.budget * s * g) for s in decay_shares(n, self.rho)]
        counts = [math.floor(t + 1e-9) for t in target]
        left = math.floor(sum(target) + 1e-9) - sum(counts)
        for d in range(n):
            if left <= 0:
                break
            if counts[d] < g:
                counts[d] += 1
                left -= 1
        return counts

    def candidates(self, layout: FrameLayout, visible: torch.Tensor) -> int:
        return grid_candidates(layout, visible, self.drop_masked)

    def select(
        self,
        frames: Sequence[torch.Tensor],
        layout: FrameLayout,
        visible: torch.Tensor,
        scores: Sequence[torch.Tensor] | None = None,
    ) -> list[torch.Tensor | None]:
        n = min(len(frames), self.window)
        counts = self.frame_counts(n, self.candidates(layout, visible)) if n else []
        return [
            _select_frame(
                local,
                layout,
                visible,
                counts[d - 1],
                self.drop_masked,
                _frame_scores(scores, d),
                self.selector,
            )
            if d <= n
            else None
            for d, local in enumerate(frames, 1)
        ]


@dataclass(frozen=True)
class PackCacheFloorsPolicy:
    """A variant of PackCache tuned on `builtin:demo-long` (not the paper's rule): every held
    frame is cut from its first write-back. Of the B = budget * tokens - 4W grid tokens of W
    frames, each first gets its floor f = ceil(floor V) and the rest is shared by exponential
    decay: the frame at distance d keeps `n_d = min(V, f + ceil((B - W f) rho^(d-1) / sum_k
    rho^(k-1)))` of its V candidates (what a whole frame cannot take goes to the others by the
    same weights), chosen by `selector` from what it kept at d - 1, plus its 4 boundary tokens;
    frames beyond W leave first (FIFO). The ceilings put the history at most W tokens above the
    budget."""

    window: int = window_knob(2)
    rho: float = rho_knob()
    budget: float = budget_knob()
    floor: float = knob(
        1 / 8, "packcache-floors: floor per frame, a share of its tokens", ge=0, le=1
    )
    drop_masked: bool = drop_masked_knob()
    selector: str = selector_knob()
    rebase: bool = rebase_knob()
    rebase_at: int = rebase_at_knob()
    name: str = "packcache-floors"

    def __post_init__(self) -> None:
        check_decay(self.name, self.window, self.rho, self.budget, self.selector)
        if not 0 <= self.floor <= 1:
            raise PolicyError(f"{self.name} floor must be in [0, 1], got {self.floor}", "floor")

    @property
    def uses_scores(self) -> bool:
        return self.selector != "uniform"

    @property
    def frames_held(self) -> int:
        return self.window

    def visible_count(self, layout: FrameLayout, visible: torch.Tensor) -> int:
        return grid_candidates(layout, visible, self.drop_masked)

    def frame_budgets(self, v: int, layout: FrameLayout) -> list[int]:
        """Grid tokens kept by the frames at distance 1 .. W with v candidates each: floors,
        then the rest of the budget by decay weight, a share that would overfill a frame
        going to the frames not yet whole (water-filling), each share rounded up."""
        W = self.window
        floor = min(v, math.ceil(self.floor * v))
        extra = [0.0] * W
        rest = grid_budget(self.budget, layout, W) - W * floor
        open_ = list(range(W))
        while rest > 1e-9 and open_:
            weights = sum(self.rho**d for d in open_)
            for d in open_:
                extra[d] += rest * self.rho**d / weights
            rest = sum(max(0.0, extra[d] - (v - floor)) for d in open_)
            for d in open_:
                extra[d] = min(extra[d], v - floor)
            open_ = [d for d in open_ if extra[d] < v - floor]
        return [min(v, floor + math.ceil(e - 1e-9)) for e in extra]

    def frame_budget(self, d: int, v: int, layout: FrameLayout) -> int:
        """Grid tokens kept by a frame at distance d (1 = newest) with v candidates."""
        return self.frame_budgets(v, layout)[d - 1]

    def select(
        self,
        frames: Sequence[torch.Tensor],
        layout: FrameLayout,
        visible: torch.Tensor,
        scores: Sequence[torch.Tensor] | None = None,
    ) -> list[torch.Tensor | None]:
        v = self.visible_count(layout, visible)
        budgets = self.frame_budgets(v, layout)
        out: list[torch.Tensor | None] = []
        for d, local in enumerate(frames, 1):
            if d > self.window:
                out.append(None)
                continue
            n = budgets[d - 1]
            score = _frame_scores(scores, d)
            out.append(
                _select_frame(local, layout, visible, n, self.drop_masked, score, self.selector)
            )
        return out


@dataclass(frozen=True)
class SinkPolicy:
    """Attention sink and window: the first `sink` generated frames stay for good, the newest
    `window` frames slide, and together they hold `budget` frames of memory, shared evenly
    (each cut to the same number of evenly spaced grid tokens); frames between leave.

    Text and the conditioning frame are anchors for every policy, so this is the sink beyond
    them: the start of the generated video, as StreamingLLM keeps the first tokens."""

    sink: int = knob(1, "sink: first generated frames kept for good", ge=1, le=1000)
    window: int = window_knob(1)
    budget: float = budget_knob()
    rebase: bool = rebase_knob()
    rebase_at: int = rebase_at_knob()
    name: str = "sink"
    uses_scores: bool = False

    def __post_init__(self) -> None:
        if self.sink < 1 or self.window < 1 or self.budget <= 0:
            raise ValueError("sink and window must be >= 1 and budget > 0")

    @property
    def frames_held(self) -> int:
        return self.sink + self.window

    def select(
        self,
        frames: Sequence[torch.Tensor],
        layout: FrameLayout,
        visible: torch.Tensor,
        scores: Sequence[torch.Tensor] | None = None,
    ) -> list[torch.Tensor | None]:
        kept = self.sink + self.window
        n = math.ceil(grid_budget(self.budget, layout, kept) / kept)
        n = min(layout.grid_tokens, max(0, n))
        oldest = len(frames) - self.sink  # frames[oldest:] are the sink
        return [
            _select_frame(f, layout, visible, n, False, None, "uniform")
            if d <= self.window or d > oldest
            else None
            for d, f in enumerate(frames, 1)
        ]


# What a request gets where neither it nor the model's card names a policy (a real Lumos-1
# checkpoint): PackCache with the paper's rule and defaults (section 3.1 of
# `packcache-method.md`; W = 3 is the paper's best quota), never a variant tuned on a built-in
# model. The official loop keeps the full cache; `full` gives exactly that.
DEFAULT_POLICY = "packcache"
POLICIES: dict[str, type] = {
    "full": FullPolicy,
    "sliding": SlidingPolicy,
    "packcache": PackCachePolicy,
    "packcache-floors": PackCacheFloorsPolicy,
    "sink": SinkPolicy,
}


def frames_held(policy: CachePolicy) -> int | None:
    """Most history frames `policy` ever keeps; None: its history grows with the video."""
    held: int | None = getattr(policy, "frames_held", None)
    return held


def rebase_at(policy: CachePolicy) -> int:
    """With rebase, the temporal index where the frame being made saturates (0: never)."""
    return int(getattr(policy, "rebase_at", 0))


def open_ended_refusal(policy: CachePolicy) -> str | None:
    """Why `policy` cannot run a video without a preset end, or None if it can: its history
    must stop growing and, rebased, its positions stay within the frames it holds."""
    if frames_held(policy) is None:
        return (
            f"cache policy {policy.name!r} keeps every frame, so its cache grows without end; "
            "an open-ended video needs a bounded one (packcache, sliding or sink, with rebase)"
        )
    if not policy.rebase:
        return (
            f"cache policy {policy.name!r} without rebase numbers frames by their position in "
            "the video, past the trained range in a long one; set rebase=true"
        )
    return None


def policy_knobs(name: str | None = None) -> dict[str, tuple[type, Knob]]:
    """The parameters users may set, with their type: of policy `name`, or of every registered
    policy (a parameter several policies share has one type there)."""
    out: dict[str, tuple[type, Knob]] = {}
    for cls in [POLICIES[name]] if name is not None else POLICIES.values():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            k = f.metadata.get("knob")
            if k is None:
                continue
            assert out.get(f.name, (hints[f.name],))[0] == hints[f.name], f"{f.name}: two types"
            out.setdefault(f.name, (hints[f.name], k))
    return out


def knob_values(policy: CachePolicy) -> dict[str, object]:
    """Every parameter users may set of `policy`, with its value (a record, a card, the page)."""
    return {k: getattr(policy, k) for k in policy_knobs(policy.name)}


def describe(policy: CachePolicy) -> str:
    """`name (key=value, ...)`, e.g. for help texts."""
    return f"{policy.name} ({', '.join(f'{k}={v}' for k, v in knob_values(policy).items())})"


def parse_knob(key: str, raw: str) -> object:
    """A parameter's value from text (CLI, benchmark specs), by the parameter's type."""
    knobs = policy_knobs()
    if key not in knobs:
        raise ValueError(f"no cache policy has a parameter {key!r}; parameters: {', '.join(knobs)}")
    return parse_typed(key, raw, knobs[key][0])


def parse_typed(key: str, raw: str, kind: type) -> object:
    """`key=raw` read as a `kind` (bool: true or false); ValueError naming the pair."""
    text = raw.strip()
    if kind is bool:
        if text.lower() not in ("true", "false"):
            raise ValueError(f"{key}={raw}: expected true or false")
        return text.lower() == "true"
    try:
        return kind(text)
    except ValueError as e:
        raise ValueError(f"{key}={raw}: expected {kind.__name__}") from e


def policy_from_spec(spec: str) -> CachePolicy:
    """`name` or `name:key=value,...`, e.g. `packcache:selector=knorm,window=8`."""
    name, _, rest = spec.partition(":")
    params = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        params[key.strip()] = parse_knob(key.strip(), value)
    return make_policy(name.strip(), **params)


def known_policy(name: str) -> str:
    """`name` if a policy is registered under it, else ValueError naming those that are."""
    if name not in POLICIES:
        raise ValueError(f"unknown cache policy {name!r}; available: {', '.join(POLICIES)}")
    return name


def make_policy(name: str, **params: object) -> CachePolicy:
    """Policy by name with its parameters; unknown names and parameters raise ValueError."""
    known_policy(name)
    knobs = policy_knobs(name)
    unknown = sorted(set(params) - set(knobs))
    if unknown:
        raise ValueError(
            f"bad parameters for cache policy {name!r}: {', '.join(unknown)} "
            f"(its parameters: {', '.join(knobs)})"
        )
    cls = POLICIES[name]
    if (derive := getattr(cls, "derive", None)) is not None:
        params = derive(params)
    try:
        policy: CachePolicy = cls(**params)
        return policy
    except TypeError as e:
        raise ValueError(f"bad parameters for cache policy {name!r}: {e}") from e
