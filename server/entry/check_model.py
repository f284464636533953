"""`packcache check-model`: the checks a user runs on their folders before serving.

What it is: one function per check over a Lumos-1 checkpoint folder, a Cosmos DV4x8x8 folder
and Chameleon's text tokenizer, each returning `Finding`s (ok / warn / fail) that the command
prints as a report; it exits 1 if any check failed. In order: config.json's keys and shapes,
every tensor's name and shape (from the safetensors headers, nothing read), the dtype, the
target size the folder's name implies, the Cosmos folder's identity (its name and config.json
against NVIDIA's releases, then the probe and the strict weight load of `load_cosmos`), the
text tokenizer (looked for where the official release puts it) and its ids on a fixed test
vector, then a one-latent-frame generation through the whole pipeline. What it is not: a
downloader, or a check of numerics against the official code (the fixtures do that).

Invariant: a failed check never stops the report; later checks that need what failed are
reported as skipped, with the reason.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from PIL import Image
from safetensors import safe_open

from packcache_core.config import CODE_OFFSET, MAX_CODES, TARGET_SIZES, LumosConfig
from packcache_core.loading import (
    CheckpointError,
    build_model,
    check_float16,
    read_config,
    weight_files,
)
from packcache_core.text import TOKENIZER_FILE, ChameleonTextTokenizer

Level = Literal["ok", "warn", "fail"]
LUMOS_VOCAB = CODE_OFFSET + MAX_CODES  # 65536 Chameleon ids + 64000 Cosmos codes
# Spec §3.2: Chameleon's ids for the start of the Lumos-1 instruction (checked against the
# official repo's pre-tokenized training sample); the tokenizer Lumos-1 encodes with must agree.
TEXT_VECTOR = "Generate a video with a resolution of 672x384, consisting of "
TEXT_VECTOR_IDS = [22807, 16758, 16641, 18677, 16734, 16641, 23544, 16673, 16604, 16405]
TEXT_VECTOR_IDS += [16406, 16401, 16471, 16402, 16407, 16403, 16395, 31291, 16673, 16604]
# Where `AutoTokenizer.from_pretrained("Alpha-VLLM/Lumina-mGPT-7B-768")`, the official path,
# keeps the file.
HF_CACHE_GLOB = f"hub/models--Alpha-VLLM--Lumina-mGPT-7B-768/snapshots/*/{TOKENIZER_FILE}"
# NVIDIA's Cosmos tokenizer names: (C)ontinuous/(D)iscrete, (I)mage/(V)ideo, compression.
COSMOS_NAME = re.compile(r"(?<![A-Za-z])([CD][IV])(\d+x\d+(?:x\d+)?)(?![\dx])")
LUMOS_COSMOS = ("DV", "4x8x8")
# Published sizes of Cosmos-Tokenizer-DV4x8x8 (huggingface.co/nvidia): a file far off warns.
PUBLISHED_MB = {"encoder.jit": 86.6, "decoder.jit": 125.0}
PROBE_SIZE = (64, 64)  # the one-latent-frame generation's frame (width, height)


@dataclass(frozen=True)
class Finding:
    level: Level
    check: str
    message: str


def check_config(model: Path) -> tuple[list[Finding], LumosConfig | None]:
    try:
        cfg = read_config(model)
    except CheckpointError as e:
        return [Finding("fail", "config", str(e))], None
    found = [
        Finding(
            "ok",
            "config",
            f"{cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, {cfg.num_attention_heads}"
            f" heads ({cfg.num_key_value_heads} K/V), vocab {cfg.vocab_size}",
        )
    ]
    if cfg.vocab_size != LUMOS_VOCAB:
        found.append(
            Finding(
                "fail",
                "vocab",
                f"vocab_size {cfg.vocab_size}: Lumos-1 has {LUMOS_VOCAB} ({CODE_OFFSET} text "
                f"ids + {MAX_CODES} Cosmos codes); this checkpoint cannot speak DV4x8x8's codes",
            )
        )
    return found, cfg


def check_tensors(model: Path, cfg: LumosConfig) -> list[Finding]:
    """Every name and shape, from the headers: meta tensors through the loader's strict check."""
    try:
        files = weight_files(model)
        headers = {}
        for file in sorted(set(files.values())):
            with safe_open(file, framework="pt") as f:
                for name in f.keys():  # noqa: SIM118 (safe_open has no iteration)
                    headers[name] = torch.empty(f.get_slice(name).get_shape(), device="meta")
        build_model(cfg, headers, "meta", torch.float32)
    except CheckpointError as e:
        return [Finding("fail", "tensors", str(e))]
    shards = len(set(files.values()))
    return [Finding("ok", "tensors", f"{len(headers)} tensors in {shards} file(s), all expected")]


def check_sizes(model: Path, dtype: torch.dtype, target_size: int, allow16: bool) -> list[Finding]:
    found = []
    try:
        check_float16(str(model), dtype, allow16)
    except CheckpointError as e:
        found.append(Finding("fail", "dtype", str(e)))
    name = model.as_posix()
    says_256p = "256p" in name or (re.search(r"stage-2-joint(?!-384p)", name) is not None)
    if says_256p and target_size != 352:
        found.append(
            Finding(
                "warn",
                "target size",
                f"the folder's name says a 256p checkpoint, target size is {target_size}: "
                "serve it with --target-size 352",
            )
        )
    return found


def check_cosmos_identity(folder: Path) -> list[Finding]:
    """The folder's name and metadata against NVIDIA's releases (no hashes are published in a
    form this project can check offline; the probe in `load_cosmos` follows)."""
    found = []
    named = COSMOS_NAME.search(folder.name)
    if named and named.groups() != LUMOS_COSMOS:
        kind, ratio = named.groups()
        return [
            Finding(
                "fail",
                "cosmos",
                f"{folder}: named Cosmos {kind}{ratio}, another tokenizer ({ratio} compression"
                f"{', continuous latents' if kind[0] == 'C' else ''}); Lumos-1 was trained on "
                "Cosmos-Tokenizer-DV4x8x8's codes",
            )
        ]
    meta = folder / "config.json"
    if meta.is_file():
        try:
            arch = json.loads(meta.read_text()).get("architectures")
        except (json.JSONDecodeError, AttributeError) as e:
            return [Finding("fail", "cosmos", f"{meta}: not a JSON object ({e})")]
        if arch != ["CosmosTokenizer"]:
            return [
                Finding(
                    "fail",
                    "cosmos",
                    f"{meta}: architectures {arch!r}, NVIDIA's Cosmos releases say "
                    "['CosmosTokenizer']: not a Cosmos tokenizer folder",
                )
            ]
    if not named:
        found.append(Finding("warn", "cosmos", f"{folder}: name does not say DV4x8x8; probing it"))
    for file, mb in PUBLISHED_MB.items():
        path = folder / file
        if path.is_file() and abs(path.stat().st_size / 1e6 - mb) > 0.05 * mb:
            found.append(
                Finding(
                    "warn",
                    "cosmos",
                    f"{path}: {path.stat().st_size / 1e6:.1f} MB, the published DV4x8x8 "
                    f"file is {mb} MB",
                )
            )
    return found


def find_text_tokenizer(model: Path, given: str | None) -> Path | None:
    """--text-tokenizer, else the checkpoint folder's tokenizer.json, else the file in the
    Hugging Face cache where the official code's `AutoTokenizer` put it."""
    if given:
        path = Path(given).expanduser()
        return path / TOKENIZER_FILE if path.is_dir() else path
    if (model / TOKENIZER_FILE).is_file():
        return model / TOKENIZER_FILE
    hf_home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    return next(iter(sorted(hf_home.glob(HF_CACHE_GLOB))), None)


def check_text_tokenizer(model: Path, given: str | None) -> tuple[list[Finding], Path | None]:
    path = find_text_tokenizer(model, given)
    if path is None:
        return [
            Finding(
                "fail",
                "text tokenizer",
                f"no tokenizer.json in {model} or the Hugging Face cache: pass Chameleon's "
                "(Alpha-VLLM/Lumina-mGPT-7B-768) with --text-tokenizer",
            )
        ], None
    try:
        ids = ChameleonTextTokenizer.from_file(path).encode(TEXT_VECTOR)
    except (OSError, ValueError) as e:
        return [Finding("fail", "text tokenizer", str(e))], None
    if ids != TEXT_VECTOR_IDS:
        return [
            Finding(
                "fail",
                "text tokenizer",
                f"{path}: encodes the test vector {TEXT_VECTOR!r} as {ids[:6]}..., Lumos-1's "
                f"tokenizer gives {TEXT_VECTOR_IDS[:6]}...",
            )
        ], None
    return [Finding("ok", "text tokenizer", f"{path}: test vector ids as Lumos-1's")], path


def check_cosmos(folder: Path | None, device: str) -> tuple[list[Finding], bool]:
    """Identity, then `load_cosmos`: both graphs probed, the decoder's weights loaded by name."""
    from packcache_core.video import load_cosmos

    if folder is None:
        return [Finding("fail", "cosmos", "no --tokenizer: name the Cosmos DV4x8x8 folder")], False
    found = check_cosmos_identity(folder)
    if any(f.level == "fail" for f in found):
        return found, False
    try:
        tokenizer = load_cosmos(folder, device=device)
    except (OSError, ValueError) as e:
        return [*found, Finding("fail", "cosmos", str(e))], False
    width = tokenizer.decoder.cfg.channels
    if width != 128:
        found.append(
            Finding("warn", "cosmos", f"decoder width {width}; the published DV4x8x8 has 128")
        )
    return [*found, Finding("ok", "cosmos", f"{folder}: probed, decoder loaded by name")], True


def check_generation(args: argparse.Namespace, dtype: torch.dtype, text: Path) -> Finding:
    """One latent frame generated after the conditioning frame, 1 step, at 64x64."""
    from packcache_core.pipeline import Pipeline, VideoParams

    start = time.perf_counter()
    try:
        pipe = Pipeline.load(
            str(args.model), str(args.tokenizer), str(text), args.device, dtype, args.target_size
        )
        sampling = dataclasses.replace(pipe.defaults.sampling, steps=1)  # the model's own
        params = VideoParams("check", latent_frames=2, size=PROBE_SIZE, sampling=sampling)
        run = pipe.start(pipe.prepare(Image.new("RGB", PROBE_SIZE, (90, 120, 150)), params))
        frames = [run.first_rgb()]  # the stream decoder starts at the conditioning frame
        try:
            while not run.done:
                out = run.step()
                if out is not None:
                    frames.append(out.rgb)
        finally:
            run.close()
    except (OSError, ValueError, RuntimeError) as e:
        return Finding("fail", "generation", f"one latent frame failed: {e}")
    rgb = torch.cat(frames)  # (1 + 4, H, W, 3)
    took = time.perf_counter() - start
    return Finding(
        "ok", "generation", f"1 latent frame: RGB {tuple(rgb.shape)} in {took:.1f} s (1 step)"
    )


def run_checks(args: argparse.Namespace) -> list[Finding]:
    """Every check, in order; the generation only when the parts it needs passed."""
    dtype = getattr(torch, args.dtype)
    found, cfg = check_config(args.model)
    if cfg is not None:
        found += check_tensors(args.model, cfg)
    found += check_sizes(args.model, dtype, args.target_size, args.allow_float16)
    cosmos, cosmos_ok = check_cosmos(args.tokenizer, args.device)
    text, text_path = check_text_tokenizer(args.model, args.text_tokenizer)
    found += cosmos + text
    if any(f.level == "fail" for f in found) or text_path is None or not cosmos_ok:
        found.append(Finding("warn", "generation", "skipped: an earlier check failed"))
    else:
        found.append(check_generation(args, dtype, text_path))
    return found


def add_check_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help="the Lumos-1 checkpoint folder")
    parser.add_argument("--tokenizer", type=Path, help="the Cosmos DV4x8x8 folder")
    parser.add_argument("--text-tokenizer", help="Chameleon's tokenizer.json (or its folder)")
    parser.add_argument("--device", default="cpu", help="where the generation runs")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    parser.add_argument("--allow-float16", action="store_true", help="float16 for bf16 weights")
    parser.add_argument(
        "--target-size", type=int, choices=TARGET_SIZES, default=528, help="resolution bucket"
    )


def run_check_model(args: argparse.Namespace) -> int:
    """Check a checkpoint folder, a Cosmos folder and the text tokenizer before serving."""
    found = run_checks(args)
    width = max(len(f.check) for f in found)
    for f in found:
        print(f"[{f.level.upper():4}] {f.check:<{width}}  {f.message}")
    failed = sum(f.level == "fail" for f in found)
    print(f"{failed} check(s) failed" if failed else "all checks passed", file=sys.stderr)
    return 1 if failed else 0
