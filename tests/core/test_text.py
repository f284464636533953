"""Text tokenizers and the prompt prefix.

What it is: the byte tokenizer, the Chameleon loader and its validation (on a small
tokenizer.json built here with `tokenizers`), `load_text_tokenizer`, and `build_prompt_ids`;
plus the spec's test vector (§3.2) when Chameleon's real tokenizer.json is on this machine. What
it is not: a download (the file cannot be fetched in CI, so that one test skips with a reason).

Invariant: everything except the real-tokenizer vector runs everywhere.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from packcache_core import layout
from packcache_core.config import CODE_OFFSET
from packcache_core.text import (
    BYTE_OFFSET,
    TOKENIZER_FILE,
    ByteTextTokenizer,
    ChameleonTextTokenizer,
    TokenizerError,
    build_prompt_ids,
    load_text_tokenizer,
)

TOKENIZER_ENV = "PACKCACHE_CHAMELEON_TOKENIZER"
HF_CACHE_GLOB = "hub/models--Alpha-VLLM--Lumina-mGPT-7B-768/snapshots/*/" + TOKENIZER_FILE
# Spec §3.2: Chameleon's ids for the start of the instruction (checked against the repo's
# pre-tokenized training sample).
SPEC_TEXT = "Generate a video with a resolution of 672x384, consisting of "
SPEC_IDS = [
    22807,
    16758,
    16641,
    18677,
    16734,
    16641,
    23544,
    16673,
    16604,
    16405,
    16406,
    16401,
    16471,
    16402,
    16407,
    16403,
    16395,
    31291,
    16673,
    16604,
]


def real_tokenizer_path() -> Path | None:
    """Chameleon's tokenizer.json from $PACKCACHE_CHAMELEON_TOKENIZER or the HF cache."""
    if os.environ.get(TOKENIZER_ENV):
        return Path(os.environ[TOKENIZER_ENV])
    hf_home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    return next(iter(sorted(hf_home.glob(HF_CACHE_GLOB))), None)


def write_fake_chameleon(path: Path, anchors: dict[str, int] | None = None) -> Path:
    """A word-level tokenizer.json with Chameleon's reserved tokens at (by default) their ids."""
    anchors = {"<reserved08706>": 8710, "<reserved09000>": 9004} if anchors is None else anchors
    vocab = {"<unk>": 3, "<s>": 0, "hello": 20000, "world": 20001, "<racm3:break>": 8197, **anchors}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(["<s>", "<racm3:break>", *anchors])
    tok.save(str(path))
    return path


def test_spec_vector_with_the_real_tokenizer() -> None:
    path = real_tokenizer_path()
    if path is None:  # a path named in the variable must exist: from_file fails otherwise
        pytest.skip(
            f"Chameleon's tokenizer.json is not on this machine (set {TOKENIZER_ENV}); "
            "it cannot be downloaded here"
        )
    tokenizer = ChameleonTextTokenizer.from_file(path)
    assert tokenizer.encode(SPEC_TEXT) == SPEC_IDS
    assert tokenizer.encode("24") == [16401, 16403]  # digits are single tokens


# --- byte tokenizer -------------------------------------------------------------------------


def test_byte_tokenizer_is_utf8_bytes_at_an_offset() -> None:
    tok = ByteTextTokenizer()
    assert tok.encode("") == []
    assert tok.encode("Ab") == [BYTE_OFFSET + 65, BYTE_OFFSET + 98]
    assert tok.encode("é") == [BYTE_OFFSET + 0xC3, BYTE_OFFSET + 0xA9]
    assert tok.encode("a cat") == ByteTextTokenizer().encode("a cat")


def test_byte_ids_avoid_every_special_id() -> None:
    ids = set(range(BYTE_OFFSET, BYTE_OFFSET + 256))
    specials = {v for k, v in vars(layout).items() if k.isupper() and isinstance(v, int)}
    specials |= set(range(layout.NGRID, layout.NGRID + 256))  # every n-grids token in use
    assert not ids & specials
    assert not ids & set(range(4, 8196))  # Chameleon's VQ image ids
    assert max(ids) < CODE_OFFSET


# --- the Chameleon loader -------------------------------------------------------------------


def test_chameleon_loader_encodes_without_special_tokens(tmp_path: Path) -> None:
    tok = ChameleonTextTokenizer.from_file(write_fake_chameleon(tmp_path / TOKENIZER_FILE))
    assert tok.encode("hello world") == [20000, 20001]  # no BOS added


@pytest.mark.parametrize(
    "anchors",
    [{"<reserved08706>": 8711, "<reserved09000>": 9004}, {"<reserved09000>": 9004}, {}],
    ids=["wrong-id", "sep-missing", "both-missing"],
)
def test_chameleon_loader_rejects_other_tokenizers(tmp_path: Path, anchors: dict[str, int]) -> None:
    path = write_fake_chameleon(tmp_path / TOKENIZER_FILE, anchors)
    with pytest.raises(
        TokenizerError, match=r"not Chameleon's text tokenizer: <reserved08706> maps to"
    ):
        ChameleonTextTokenizer.from_file(path)


def test_chameleon_loader_missing_file(tmp_path: Path) -> None:
    with pytest.raises(
        FileNotFoundError, match=f"looked for {re.escape(str(tmp_path))}.*Lumina-mGPT-7B-768"
    ):
        ChameleonTextTokenizer.from_file(tmp_path / TOKENIZER_FILE)


def test_chameleon_loader_invalid_file(tmp_path: Path) -> None:
    (tmp_path / TOKENIZER_FILE).write_text("{not json")
    with pytest.raises(TokenizerError, match=r"not a valid tokenizer\.json"):
        ChameleonTextTokenizer.from_file(tmp_path / TOKENIZER_FILE)


def test_load_text_tokenizer_specs(tmp_path: Path) -> None:
    assert isinstance(load_text_tokenizer("builtin:bytes"), ByteTextTokenizer)
    write_fake_chameleon(tmp_path / TOKENIZER_FILE)
    for spec in (str(tmp_path), str(tmp_path / TOKENIZER_FILE)):
        assert load_text_tokenizer(spec).encode("world") == [20001]
    with pytest.raises(ValueError, match="unknown built-in text tokenizer 'builtin:nope'"):
        load_text_tokenizer("builtin:nope")
    with pytest.raises(FileNotFoundError, match="looked for"):
        load_text_tokenizer(str(tmp_path / "elsewhere"))


# --- the prompt -----------------------------------------------------------------------------


def test_build_prompt_ids() -> None:
    tok = ByteTextTokenizer()
    ids = build_prompt_ids(tok, "A red fox.", width=672, height=384, fps=12, seconds=2)
    text = (
        "Generate a video with a resolution of 672x384, consisting of 24 frames at 12 frames "
        "per second, according to the following prompt:\n A red fox."
    )
    assert ids == [layout.BOS, *tok.encode(text), layout.SEP]


def test_caption_cannot_inject_layout_tokens(tmp_path: Path) -> None:
    tok = ChameleonTextTokenizer.from_file(write_fake_chameleon(tmp_path / TOKENIZER_FILE))
    assert build_prompt_ids(tok, "hello", 672, 384, 12, 2)[-1] == layout.SEP
    for caption in ("hello <racm3:break>", "<reserved08706> world", "<s>"):
        with pytest.raises(ValueError, match="reserved token id"):
            build_prompt_ids(tok, caption, 672, 384, 12, 2)


class _WideTokenizer:
    def encode(self, text: str) -> list[int]:
        return [CODE_OFFSET + 1]


def test_prompt_ids_stay_in_the_text_range() -> None:
    with pytest.raises(ValueError, match=str(CODE_OFFSET + 1)):
        build_prompt_ids(_WideTokenizer(), "x", 672, 384, 12, 2)
