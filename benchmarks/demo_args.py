"""Command-line options shared by the built-in model's benchmarks (`demo_motion.py`,
`teacher_forced.py`): the model to measure, a training run's weights in place of the shipped
ones, and lists of cache policies."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from packcache_core.builtin import PREFIX, TRAINED
from packcache_core.demo.card import card_file, snapshot_record, use_weights_dir, weights_file
from packcache_core.generate import GenerationDefaults
from packcache_core.pipeline import Pipeline
from packcache_core.policy import CachePolicy, make_policy, policy_from_spec

CARD = "card"  # in a policy list: the model card's policy (the server's default request)
POLICY_LIST_HELP = (
    f"comma-separated policy specs (packcache:window=6,budget=3 is one); '{CARD}' = the model "
    "card's policy (the server's default request)"
)


def add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=f"{PREFIX}demo")
    p.add_argument(
        "--weights",
        type=Path,
        help="serve the built-in --model from this folder (a training run's --out), not the "
        "shipped weights",
    )


def load_model(p: argparse.ArgumentParser, args: argparse.Namespace) -> Pipeline:
    """The pipeline to measure; `--weights` is checked first (argparse's exit 2 naming the fix)."""
    if args.weights is not None:
        name = trained_name(args.model)
        if name not in TRAINED:
            known = ", ".join(PREFIX + n for n in TRAINED)
            p.error(f"--weights replaces the weights of {known}, not of {args.model}")
        files = (card_file(name), weights_file(name))
        missing = [f for f in files if not (args.weights / f).is_file()]
        if missing:
            found = ", ".join(missing)
            p.error(f"--weights {args.weights} has no {found}: want a training run's --out")
        use_weights_dir(args.weights)
    return Pipeline.load(args.model)


def trained_name(model: str) -> str:
    return model.removeprefix(PREFIX)


def weights_record(args: argparse.Namespace) -> dict[str, Any] | None:
    """What the results' JSON says of `--weights` (None: the shipped weights)."""
    if args.weights is None:
        return None
    return snapshot_record(args.weights, trained_name(args.model))


def policy_specs(text: str) -> list[str]:
    """argparse type: a comma-separated list of policy specs (`card`, `name` or
    `name:key=value,...`), each checked. An item with `=` and no `:` is one more parameter of
    the spec before it: `card,packcache:window=6,budget=3,full` is three specs."""
    specs: list[str] = []
    for item in (s.strip() for s in text.split(",")):
        if "=" in item and ":" not in item:
            if not specs or specs[-1] == CARD:
                raise argparse.ArgumentTypeError(f"{item!r} is a parameter of no policy")
            specs[-1] += ("," if ":" in specs[-1] else ":") + item  # full,window=3: one spec
        elif item:
            specs.append(item)
    for spec in specs:
        if spec != CARD:
            try:
                policy_from_spec(spec)
            except ValueError as e:
                raise argparse.ArgumentTypeError(f"{spec}: {e}") from None
    if not specs:
        raise argparse.ArgumentTypeError("no policy named")
    return specs


def lane_policy(spec: str, card: GenerationDefaults) -> CachePolicy:
    """The policy an entry of a policy list names: the model card's for `card`."""
    if spec == CARD:
        return make_policy(card.cache_policy, **card.policy_params)
    return policy_from_spec(spec)


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"want at least 1, got {n}")
    return n
