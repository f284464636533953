"""The official Lumos-1 generation loop as a benchmark lane, on our weights and our tokens.

What it is: a driver that imports the official code from a checkout the user gives
(`--official .../Lumos/lumos-1/lumos-1`), builds its model
(`ChameleonMMRoPEForConditionalGeneration`, Hugging Face transformers 4.44-4.48) at the shape of
a `BenchConfig`, loads the same tensors our model holds (our checkpoint names are the official
ones), and runs `FlexARVidInferenceSolver.generate_maskedAR_mmrope_v8_newcache` on the same
prompt ids and conditioning codes, with the same frames, steps, CFG scale (15), history mask
ratio (0.7), temperature (1.0) and seed as our lanes. What it is not: a copy of any official
code; nothing of it is in this repository. Only small stubs of ours stand in for what the
loop's module imports but this run never calls:
- `data.item_processor` (text and Cosmos tokenizers): `_ItemProcessor` hands over our token
  sequence (prompt, video header, conditioning frame) and the special-token ids;
- `cv2`, and `omegaconf` / `torchvision` (imported by `model/utils.py`) where not installed;
- the solver's `__init__` (it loads a checkpoint on CUDA and a Cosmos tokenizer), its
  `decode_video_ids` (writes an MP4), and the logits-processor list, whose element [1] only
  has to carry the mask of ids outside the video codes (the official one is built on "cuda").

Clip length: the loop takes (fps, seconds) and computes ceil((fps*seconds - 1) / 4) + 1
latent frames; (4 (F - 1) + 1, 1) gives F.

Timing: the loop is one call for the whole clip. It calls `mask_append` (as imported into
`inference_solver_vid`) once at the start of each latent frame and `decode_video_ids` once at
the end, so wrapping those two gives wall-clock frame boundaries: frame k runs from the k-th
boundary to the next. Each frame therefore includes the loop's own per-frame setup (attention
mask over the whole sequence, position ids), which is part of its cost. The official loop
prefills inside step 0 of the first frame (one forward over the whole sequence), so its
frame 1 includes the prefill; compare it with our prefill + frame 1. TOTAL is the sum.

Draws: the official loop draws `torch.multinomial` over the whole vocabulary and then
`uniform_` for the Gumbel noise; ours draws the same distribution by inverting the CDF at one
uniform per slot (`packcache_core/sampling.py`), then the same Gumbel uniforms. Same
distribution, different use of the generator stream, so free-running tokens differ by
construction (agreement is then near chance). With `shared_draws=True`, `torch.multinomial` is
replaced during the run by our inverse-CDF draw at `torch.rand(N)` from the loop's generator:
on CPU that is exactly the stream our `GeneratorNoise` consumes, so the official loop sees our
draws and its tokens can be compared with `full`'s (left to differ only by float rounding of
the two models' logits). The draw then costs what ours costs, not what `multinomial` costs.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.machinery
import importlib.util
import io
import itertools
import sys
import time
import types
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import torch

from packcache_core.config import CODE_OFFSET, LumosConfig
from packcache_core.generate import SamplingConfig, VideoRequest
from packcache_core.layout import (
    IMAGE_END,
    IMAGE_START,
    MASK,
    NEWLINE,
    NGRID,
    SEP,
    VIDEO_END,
    VIDEO_START,
    header_tokens,
    rgb_frames,
)
from packcache_core.sampling import inverse_cdf_draw

# Files of the checkout the lane imports; a path without them is not a Lumos-1 checkout.
REQUIRED = (
    "inference_solver_vid.py",
    "model/__init__.py",
    "model/chameleon/modeling_chameleon_mm_rope.py",
    "model/chameleon/configuration_chameleon.py",
    "model/utils.py",
    "model/sampling.py",
    "data/__init__.py",
)
# The official code imports ChameleonConfig (new in 4.44) and LogitsWarper (gone in 4.49).
TRANSFORMERS = "transformers>=4.44,<4.49"
COSMOS = "Cosmos-Tokenizer-DV4x8x8"
SPATIAL, TEMPORAL = 8, 4  # DV4x8x8: the solver's `vae_st_compress`


class OfficialCheckoutError(ValueError):
    """The official lane cannot run: the message names the missing file or package."""


def check_checkout(path: Path) -> None:
    """Raise `OfficialCheckoutError` unless `path` is `lumos-1/lumos-1` of the Lumos repo."""
    if not path.is_dir():
        raise OfficialCheckoutError(f"--official {path}: not a folder")
    missing = [f for f in REQUIRED if not (path / f).is_file()]
    if missing:
        raise OfficialCheckoutError(
            f"--official {path}: not a Lumos-1 checkout (expected the folder lumos-1/lumos-1 "
            f"of alibaba-damo-academy/Lumos); missing: {', '.join(missing)}"
        )
    try:
        import transformers
    except ImportError as e:
        raise OfficialCheckoutError(
            f"the official lane needs {TRANSFORMERS} (pip install '.[official]'): {e}"
        ) from e
    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    if not (4, 44) <= (major, minor) < (4, 49):
        raise OfficialCheckoutError(
            f"the official code needs {TRANSFORMERS}, found {transformers.__version__}"
        )


def _stub(name: str, **attrs: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    module.__dict__.update(attrs)
    return module


def _stubs() -> dict[str, types.ModuleType]:
    """Stand-ins for modules imported at module level but unused by the loop."""
    out = {"data.item_processor": _stub("data.item_processor", FlexARItemProcessor2=object)}
    absent = {
        "cv2": {},
        "omegaconf": dict(DictConfig=dict, ListConfig=list, OmegaConf=object),
        "torchvision": {},
    }
    for name, attrs in absent.items():
        if importlib.util.find_spec(name) is None:
            out[name] = _stub(name, **attrs)
    if "torchvision" in out:
        out["torchvision"].transforms = out["torchvision.transforms"] = _stub("transforms")
    return out


def import_official(path: Path) -> tuple[types.ModuleType, types.ModuleType]:
    """(inference_solver_vid, model.chameleon) from the checkout; stubs only while importing."""
    check_checkout(path)
    import transformers  # noqa: F401 (before the stubs: it probes which packages exist)

    stubs = _stubs()
    sys.path.insert(0, str(path))
    try:
        with mock.patch.dict(sys.modules, stubs):
            solver = importlib.import_module("inference_solver_vid")
            chameleon = importlib.import_module("model.chameleon")
            chameleon.ChameleonMMRoPEForConditionalGeneration  # noqa: B018 (lazy module: load now)
    finally:
        sys.path.remove(str(path))
    return solver, chameleon


def build_official_model(
    chameleon: types.ModuleType, cfg: LumosConfig, state: Mapping[str, torch.Tensor],
    device: torch.device, dtype: torch.dtype,
) -> torch.nn.Module:  # fmt: skip
    """The official model at `cfg`'s shape holding exactly `state` (official tensor names)."""
    config = chameleon.ChameleonConfig(
        **cfg.to_hf_dict(),
        vocabulary_map={},
        vq_config=dict(base_channels=32, channel_multiplier=[1], num_res_blocks=1, resolution=8,
                       latent_channels=32, embed_dim=8, num_embeddings=8),  # never called
        attn_implementation="sdpa",  # what from_pretrained picks in the official scripts
    )  # fmt: skip
    model = chameleon.ChameleonMMRoPEForConditionalGeneration(config)
    result = model.load_state_dict(dict(state), strict=False)
    stray = [k for k in result.missing_keys if not k.startswith("model.vqmodel.")]
    if stray or result.unexpected_keys:
        raise RuntimeError(
            f"weights do not fit the official model: missing {stray[:4]}, "
            f"unexpected {result.unexpected_keys[:4]}"
        )
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


class _ItemProcessor:
    """The solver's tokenizer front end, reduced to what the loop asks of it."""

    image_start_token, image_end_token, new_line_token = IMAGE_START, IMAGE_END, NEWLINE
    video_start_token, video_end_token = VIDEO_START, VIDEO_END
    sep_token, mask_token, patch_size = SEP, MASK, 32

    def __init__(self, tokens: list[int]) -> None:
        self.tokens = tokens

    def token2id(self, token: int) -> int:
        return token  # the "names" above are already ids

    @staticmethod
    def get_n_grids_token(n: int) -> int:
        return NGRID + n

    def process_item(self, item: object) -> list[int]:
        return list(self.tokens)


def _official_prompt(request: VideoRequest) -> list[int]:
    """What the official item processor yields for an i2v item: prompt, video header, the
    conditioning frame, then video end and sep (the loop strips those two)."""
    frame0 = request.layout.frame_tokens(request.first_frame).tolist()
    header = header_tokens(request.seconds, request.fps)
    return [*request.prompt_ids, *header, *frame0, VIDEO_END, SEP]


@dataclass
class OfficialRun:
    frame_seconds: list[float]  # per generated latent frame; frame 1 includes the prefill
    codes: list[torch.Tensor]  # (h, w) code indices per generated frame
    shared_draws: bool

    @property
    def total_seconds(self) -> float:
        return sum(self.frame_seconds)


def _shared_multinomial(
    probs: torch.Tensor, num_samples: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """`torch.multinomial(probs, 1)` as our sampler draws: inverse CDF over the code range at
    one `torch.rand` per row from the same generator (the rest of the vocabulary is 0)."""
    assert num_samples == 1, "the loop draws one sample per slot"
    codes = probs[:, CODE_OFFSET:]  # (N, n_codes) float32
    u = torch.rand(codes.shape[0], device=codes.device, generator=generator)
    idx, _ = inverse_cdf_draw(codes.log(), u)
    return (idx + CODE_OFFSET)[:, None]


@contextlib.contextmanager
def _frame_clock(module: types.ModuleType, stamps: list[float], log: Callable[[str], None]
                 ) -> Iterator[None]:  # fmt: skip
    """Stamp the time at each `mask_append` call, i.e. at the start of every latent frame."""
    inner = module.mask_append

    def timed(*args: Any, **kwargs: Any) -> Any:
        stamps.append(time.perf_counter())
        if len(stamps) > 1:
            log(f"  official frame {len(stamps) - 1:>2}: {stamps[-1] - stamps[-2]:.2f}s")
        return inner(*args, **kwargs)

    with mock.patch.object(module, "mask_append", timed):
        yield


def run_official(
    checkout: Path, cfg: LumosConfig, state: Mapping[str, torch.Tensor], request: VideoRequest,
    sampling: SamplingConfig, seed: int, device: torch.device, dtype: torch.dtype,
    shared_draws: bool = False,
) -> OfficialRun:  # fmt: skip
    """Generate `request` with the official loop; time and return each latent frame."""
    module, chameleon = import_official(checkout)
    model = build_official_model(chameleon, cfg, state, device, dtype)
    solver = module.FlexARVidInferenceSolver.__new__(module.FlexARVidInferenceSolver)
    solver.model, solver.dtype = model, dtype
    solver.item_processor = _ItemProcessor(_official_prompt(request))
    solver.visual_tokenizer = COSMOS
    solver.vae_st_compress = [SPATIAL, TEMPORAL]
    solver.temporal_compression, solver.spatial_compression = TEMPORAL, SPATIAL
    stamps: list[float] = []
    out: list[int] = []

    def decode(tokens: list[int], path: str) -> None:
        stamps.append(time.perf_counter())
        out.extend(tokens)

    solver.decode_video_ids = decode
    vocab = torch.arange(cfg.vocab_size, device=device)
    outside = (vocab < CODE_OFFSET) | (vocab >= CODE_OFFSET + cfg.n_codes)  # get -inf
    suppress = types.SimpleNamespace(suppress_cosmos_video_token_mask=outside)
    generator = torch.Generator(device=device).manual_seed(seed)
    stdout = sys.stdout
    draws = mock.patch.object(torch, "multinomial", _shared_multinomial) if shared_draws \
        else contextlib.nullcontext()  # fmt: skip
    with (
        draws,
        _frame_clock(module, stamps, lambda s: print(s, file=stdout, flush=True)),
        contextlib.redirect_stdout(io.StringIO()),  # the loop prints a few lines per frame
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")  # torch.cuda.amp.autocast deprecation / no CUDA
        module.FlexARVidInferenceSolver.generate_maskedAR_mmrope_v8_newcache(
            solver,
            qas=[["", ""]],
            max_gen_len=None,
            temperature=sampling.temperature,
            output_video_path="",
            fps_duration=[rgb_frames(request.latent_frames), 1],
            generation_task="vp",
            timesteps=sampling.steps,
            guidance_scale=sampling.cfg_scale,
            generator=generator,
            mask_history_ratio=sampling.history_mask_ratio,
            logits_processor=[None, suppress],
        )
    print(f"  official frame {len(stamps) - 1:>2}: {stamps[-1] - stamps[-2]:.2f}s", flush=True)
    seconds = [b - a for a, b in itertools.pairwise(stamps)]
    return OfficialRun(seconds, _frames_codes(out, request), shared_draws)


def _frames_codes(tokens: list[int], request: VideoRequest) -> list[torch.Tensor]:
    """(h, w) codes of each generated frame from the loop's output (video start onwards)."""
    layout, n = request.layout, request.layout.tokens
    ids = torch.tensor(tokens[3 : 3 + n * request.latent_frames]).view(-1, n)  # (F, tokens)
    slots = layout.code_slots()
    return [(f[slots] - CODE_OFFSET).view(layout.h, layout.w) for f in ids[1:]]


def compare(
    run: OfficialRun, results: dict[str, Any], full_codes: list[torch.Tensor]
) -> dict[str, Any]:
    """The official lane next to our policies' results (`cache_policies.build_results`):
    per frame its seconds, our speedups over it and its token agreement with `full`; TOTAL
    and LAST with our speedups. Our frame 1 counts our prefill, as the official frame 1 does."""
    pols = results["policies"]
    frames = []
    for i, sec in enumerate(run.frame_seconds):
        row: dict[str, Any] = {"index": i + 1, "seconds": sec}
        for name, pol in pols.items():
            ours = pol["frames"][i]["seconds"]
            ours += pol["summary"]["prefill_seconds"] if i == 0 else 0.0
            row[f"speedup_{name}"] = sec / ours
        if i < len(full_codes):  # agreement with full's free-running frame i
            row["token_agreement_full"] = float((run.codes[i] == full_codes[i]).float().mean())
        frames.append(row)
    total, last = run.total_seconds, run.frame_seconds[-1]
    agree = [f["token_agreement_full"] for f in frames if "token_agreement_full" in f]
    return {
        "frames": frames,
        "summary": {
            "total_seconds": total,
            "last_seconds": last,
            "shared_draws": run.shared_draws,
            "speedup_total": {n: total / p["summary"]["total_seconds"] for n, p in pols.items()},
            "speedup_last": {n: last / p["summary"]["last_seconds"] for n, p in pols.items()},
            "mean_token_agreement_full": sum(agree) / len(agree) if agree else None,
        },
    }


def table(official: dict[str, Any]) -> str:
    """Markdown: per frame, then TOTAL and LAST, our speedups over the official loop."""
    from benchmarks.report import fmt, markdown_table

    s = official["summary"]
    names = list(s["speedup_total"])
    head = ["frame", "official s", *(f"{n} x" for n in names), "token agree (full)"]
    rows = [
        [f["index"], f["seconds"], *(f[f"speedup_{n}"] for n in names),
         fmt(f.get("token_agreement_full"), 3)]
        for f in official["frames"]
    ]  # fmt: skip
    rows.append(["TOTAL", s["total_seconds"], *(s["speedup_total"][n] for n in names), "-"])
    rows.append(["LAST", s["last_seconds"], *(s["speedup_last"][n] for n in names), "-"])
    draws = "ours" if s["shared_draws"] else "its own torch.multinomial, unlike ours"
    return (
        f"Against the official loop (draws: {draws}; frame 1 includes the prefill on both "
        "sides; 'x' = official seconds / ours):\n\n" + markdown_table(head, rows)
    )
