"""Captions as training will use them: the empty-caption policy, the trigger word, the text encoder's token limit.

The token count is an estimate. Ingest loads no tokenizer (CLIP's vocabulary cannot be downloaded here, and
would be a heavy import for counting), so it splits text the way CLIP's pre-tokenizer does (words, single
digits, runs of punctuation) and counts one token per word of up to 8 letters plus one per further 8 letters,
one per digit and one per punctuation mark, plus the start and end tokens. Common English words are single
CLIP tokens, so this errs on the long side: a caption it passes fits; one it cuts may have had a few tokens to
spare. The report says that the counts are estimates.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from artlora.config import IngestConfig
from artlora.contracts import REGULARISATION_STYLE
from artlora.stages.ingest.sources import DEFAULT_STYLE

TOKEN_COUNT_METHOD = (
    "estimate without a tokenizer: CLIP's word split; one token per 8 letters of a word (at least one), one "
    "per digit and punctuation mark, plus start and end"
)
LETTERS_PER_TOKEN = 8
SPECIAL_TOKENS = 2  # start and end of text
# CLIP's pre-tokenizer: contractions, runs of letters, single digits, runs of anything else but spaces.
MODEL_NAME_SOURCE = "model name (no trigger word set)"
_PIECES = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|(?:[^\s\w]|_)+", re.IGNORECASE)


@dataclass(frozen=True)
class Caption:
    text: str
    source: str  # where the words came from: "sidecar .txt", "metadata.jsonl", "style label", "trigger word",
    # "model name (no trigger word set)"
    tokens: int  # estimated tokens of `text`, start and end included
    original_tokens: int  # the same before truncation
    truncated: bool


def estimate_tokens(text: str) -> int:
    return SPECIAL_TOKENS + sum(_piece_tokens(piece) for piece in _PIECES.findall(text.lower()))


def truncate(text: str, limit: int) -> str:
    """The longest word-boundary prefix of `text` whose estimate fits in `limit` tokens."""
    budget, end = limit - SPECIAL_TOKENS, 0
    for match in _PIECES.finditer(text.lower()):
        budget -= _piece_tokens(match.group())
        if budget < 0:
            break
        end = match.end()
    return text[:end].rstrip(" ,;:-")


def resolve(raw: str, raw_source: str, style: str, config: IngestConfig) -> Caption | str:
    """The caption an image trains with, or why it has none (a rejection reason). A regularisation image keeps
    its own caption as it is (no trigger word: it teaches what the prompt paints without the style) and has
    none to fall back on."""
    text, source = " ".join(raw.split()), raw_source
    regularisation = style == REGULARISATION_STYLE
    if not text and regularisation:
        return (
            "caption missing: a regularisation image needs its own caption (a sidecar .txt or a metadata.jsonl "
            "line; ingest.regularisation_source)"
        )
    if not text:
        fallback = _fallback(style, config)
        if isinstance(fallback, str):
            return fallback
        text, source = fallback
    trigger = "" if regularisation else " ".join(config.trigger_word.split())
    if trigger and not re.search(rf"(?<!\w){re.escape(trigger)}(?!\w)", text, re.IGNORECASE):
        text = f"{trigger}, {text}"
    tokens = estimate_tokens(text)
    if tokens > config.caption_token_limit and config.long_caption == "truncate":
        short = truncate(text, config.caption_token_limit)
        return Caption(short, source, estimate_tokens(short), tokens, True)
    return Caption(text, source, tokens, tokens, False)


def _fallback(style: str, config: IngestConfig) -> tuple[str, str] | str:
    """(caption, source) for an image without one, by ingest.empty_caption; or the rejection reason. A flat
    folder of uncaptioned images trains on the trigger word, which defaults to the model name."""
    if config.empty_caption == "reject":
        return "caption missing: no sidecar or metadata.jsonl caption (ingest.empty_caption=reject)"
    if config.empty_caption == "style" and style != DEFAULT_STYLE:
        return " ".join(style.replace("_", " ").replace("-", " ").split()), "style label"
    if trigger := " ".join(config.trigger_word.split()):
        return trigger, "trigger word"
    if model_name := " ".join(config.model_name.split()):
        return model_name, MODEL_NAME_SOURCE
    return (
        "caption missing: no caption, no style folder to name it by, no ingest.trigger_word and no model_name "
        "(ingest.empty_caption=style)"
    )


def _piece_tokens(piece: str) -> int:
    if piece[0].isalpha():
        return max(1, math.ceil(len(piece) / LETTERS_PER_TOKEN))
    return 1 if piece.startswith("'") or piece.isdigit() else len(piece)
