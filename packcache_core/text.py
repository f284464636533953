"""Text tokenizers for the i2v prompt, and the prompt's token ids.

What it is: a `TextTokenizer` protocol; `ChameleonTextTokenizer`, Chameleon's BPE loaded from the
`tokenizer.json` that Lumos-1 encodes with (Alpha-VLLM/Lumina-mGPT-7B-768), checked on load;
`ByteTextTokenizer`, a file-free stand-in for built-in models; and `build_prompt_ids`, which
wraps the instruction of `layout.prompt_text` as `[BOS] text [SEP]`. What it is not: a
downloader, a decoder, or the video tokenizer.

Invariant: `build_prompt_ids` returns ids in Chameleon's text range [0, 65536) in which BOS and
SEP occur only at the ends and no frame or video marker occurs, so a caption can never change
the token layout that follows it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from tokenizers import Tokenizer

from packcache_core.builtin import PREFIX as BUILTIN_PREFIX
from packcache_core.builtin import is_builtin
from packcache_core.config import CODE_OFFSET
from packcache_core.layout import (
    BOS,
    IMAGE_END,
    IMAGE_START,
    MASK,
    NEWLINE,
    SEP,
    VIDEO_END,
    VIDEO_START,
    prompt_text,
)

TOKENIZER_FILE = "tokenizer.json"
CHAMELEON_SOURCE = (
    "tokenizer.json of the Hugging Face repo Alpha-VLLM/Lumina-mGPT-7B-768 (revision "
    "9624463a82ea5ce814af9b561dcd08a31082c3af), e.g. `huggingface-cli download "
    "Alpha-VLLM/Lumina-mGPT-7B-768 tokenizer.json`"
)
# Tokens whose ids Lumos-1 hard-codes; a file that maps them elsewhere is not Chameleon's.
CHAMELEON_ANCHORS = {"<reserved08706>": SEP, "<reserved09000>": VIDEO_START}
# Ids that structure the sequence after the text; they must not come out of a caption.
STRUCTURAL_IDS = frozenset(
    {BOS, SEP, VIDEO_START, VIDEO_END, MASK, IMAGE_START, IMAGE_END, NEWLINE}
)


class TextTokenizer(Protocol):
    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without BOS/EOS."""
        ...


class TokenizerError(ValueError):
    """A tokenizer file that cannot be used; the message says which file and why."""


class ChameleonTextTokenizer:
    """Chameleon's BPE via Hugging Face `tokenizers` (digits split; `<reservedNNNNN>` special)."""

    def __init__(self, tokenizer: Tokenizer, source: str = "tokenizer") -> None:
        for token, want in CHAMELEON_ANCHORS.items():
            got = tokenizer.token_to_id(token)
            if got != want:
                raise TokenizerError(
                    f"{source} is not Chameleon's text tokenizer: {token} maps to {got}, "
                    f"Lumos-1 needs {want}. Use the {CHAMELEON_SOURCE}"
                )
        self._tokenizer = tokenizer

    @classmethod
    def from_file(cls, path: str | Path) -> ChameleonTextTokenizer:
        """Load and check a `tokenizer.json`.

        Raises:
            FileNotFoundError: nothing at `path` (the message says where to get the file).
            TokenizerError: the file does not parse, or is not Chameleon's.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"Chameleon text tokenizer not found: looked for {path}. Get the "
                f"{CHAMELEON_SOURCE}, and pass its path (or its folder)"
            )
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as e:  # `tokenizers` raises a bare Exception for any parse error
            raise TokenizerError(f"{path}: not a valid tokenizer.json ({e})") from e
        return cls(tokenizer, source=str(path))

    def encode(self, text: str) -> list[int]:
        return self._tokenizer.encode(text, add_special_tokens=False).ids


# Byte b -> BYTE_OFFSET + b: ids 16000..16255, inside Chameleon's BPE text range and clear of
# its image ids (4..8195), the reserved/special ids (8196..~9100) and the video codes (65536+).
BYTE_OFFSET = 16000


class ByteTextTokenizer:
    """Deterministic UTF-8 byte tokenizer for built-in models; needs no files."""

    def encode(self, text: str) -> list[int]:
        return [BYTE_OFFSET + b for b in text.encode("utf-8")]


BUILTIN_TOKENIZERS = {"bytes": ByteTextTokenizer}


def load_text_tokenizer(spec: str) -> TextTokenizer:
    """`builtin:bytes`, a `tokenizer.json` path, or a folder that holds one."""
    if is_builtin(spec):
        name = spec.removeprefix(BUILTIN_PREFIX)
        if name not in BUILTIN_TOKENIZERS:
            raise ValueError(
                f"unknown built-in text tokenizer {spec!r}; available: "
                + ", ".join(BUILTIN_PREFIX + k for k in sorted(BUILTIN_TOKENIZERS))
            )
        return BUILTIN_TOKENIZERS[name]()
    path = Path(spec).expanduser()
    return ChameleonTextTokenizer.from_file(path / TOKENIZER_FILE if path.is_dir() else path)


def build_prompt_ids(
    tokenizer: TextTokenizer, caption: str, width: int, height: int, fps: int, seconds: int
) -> list[int]:
    """`[BOS] + encode(instruction + caption) + [SEP]`, the text prefix of the cond branch.

    Raises:
        ValueError: the caption encodes to a structural id (e.g. a literal `<racm3:break>`)
            or to an id outside the text range.
    """
    ids = tokenizer.encode(prompt_text(caption, width, height, fps, seconds))
    bad = sorted({i for i in ids if i in STRUCTURAL_IDS or not 0 <= i < CODE_OFFSET})
    if bad:
        raise ValueError(
            f"caption encodes to reserved token id(s) {bad}; remove special "
            f"tokens such as '<racm3:break>' or '<reserved08706>' from it"
        )
    return [BOS, *ids, SEP]
