"""Tokenisation for the encoders: the checkpoint's own tokenizer, fixed length buckets, ColBERT's
marker and [MASK] rules, and clear errors for bad texts.

Texts are tokenised once without special tokens and without truncation (so over-long texts can
be counted), then framed, truncated and padded here. Arrays are int32 [B, T].
"""

from __future__ import annotations

import logging
import string
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tokenizers import Tokenizer

from lateint_jax.errors import InputError

logger = logging.getLogger(__name__)

# Steps of 16-64 tokens: padding waste stays under ~25% (sentence-transformers pads each sorted
# batch to its longest text) while a corpus still compiles at most 14 shapes.
LENGTH_BUCKETS = (16, 32, 48, 64, 96, 128, 160, 192, 224, 256, 320, 384, 448, 512)


def check_texts(texts, what: str = "texts") -> list[str]:
    """A list of str, or InputError naming the first bad entry. A bare str is an error too."""
    if isinstance(texts, (str, bytes)):
        raise InputError(f"{what} must be a list of strings, got a single {type(texts).__name__}")
    try:
        texts = list(texts)
    except TypeError as err:
        raise InputError(f"{what} must be a list of strings, got {type(texts).__name__}") from err
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InputError(f"{what}[{i}] is {type(text).__name__}, not str: {text!r:.80}")
    return texts


def bucket_length(n: int, max_length: int, buckets: Sequence[int] = LENGTH_BUCKETS) -> int:
    """The smallest bucket holding n tokens, capped at max_length (itself a bucket)."""
    for b in buckets:
        if b >= n and b < max_length:
            return b
    return max_length


def warn_truncated(count: int, total: int, max_length: int, what: str = "texts") -> None:
    """One warning per call that truncated anything."""
    if count:
        logger.warning(
            "%d of %d %s were longer than %d tokens and were truncated",
            count,
            total,
            what,
            max_length,
        )


@dataclass
class TextTokenizer:
    """Wraps a transformers tokenizer: raw ids without truncation, then our own framing."""

    hf_tokenizer: object

    def __post_init__(self):
        tok = self.hf_tokenizer
        # A private copy of the fast backend with the file's own truncation/padding switched off
        # (all-MiniLM's tokenizer.json pads and truncates at 128).
        self.backend = Tokenizer.from_str(tok.backend_tokenizer.to_str())
        self.backend.no_truncation()
        self.backend.no_padding()
        self.cls_id = _required_id(tok, "cls_token_id")
        self.sep_id = _required_id(tok, "sep_token_id")
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
        self.mask_id = tok.mask_token_id
        self.unk_id = tok.unk_token_id
        # RoBERTa-likes join a pair as <s> A </s></s> B </s>; BERT as [CLS] A [SEP] B [SEP].
        self.pair_middle = [self.sep_id, self.sep_id] if _is_roberta_like(tok) else [self.sep_id]

    def raw_ids(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, no special tokens, no truncation."""
        return [e.ids for e in self.backend.encode_batch(texts, add_special_tokens=False)]

    def encodings(self, texts: list[str]) -> list[tuple[list[int], list[tuple[int, int]]]]:
        """(token ids, (start, end) character offsets) of each text, as `raw_ids`."""
        return [
            (e.ids, list(e.offsets))
            for e in self.backend.encode_batch(texts, add_special_tokens=False)
        ]

    def token_id(self, token: str) -> int | None:
        """The id of a vocabulary token, or None when the vocabulary lacks it."""
        idx = self.backend.token_to_id(token)
        return None if idx is None else int(idx)

    def frame_single(
        self, texts: list[str], max_length: int, length: int | None = None, what: str = "texts"
    ) -> dict[str, np.ndarray]:
        """[CLS] text [SEP], truncated to max_length, padded to length (default: a bucket).

        Returns input_ids, attention_mask int32 [B, T].
        """
        raw = self.raw_ids(texts)
        rows = [[self.cls_id, *ids[: max_length - 2], self.sep_id] for ids in raw]
        warn_truncated(sum(len(ids) + 2 > max_length for ids in raw), len(rows), max_length, what)
        return pad_token_rows(
            rows, self.pad_id, length or bucket_length(_longest(rows), max_length)
        )

    def frame_pairs(
        self, first: list[str], second: list[str], max_length: int
    ) -> dict[str, np.ndarray]:
        """Sentence pairs truncated longest-first (as transformers does), padded to a bucket.

        Returns input_ids, attention_mask, token_type_ids int32 [B, T].
        """
        rows, types, truncated = [], [], 0
        extra = 2 + len(self.pair_middle)
        for a, b in zip(self.raw_ids(first), self.raw_ids(second), strict=True):
            if len(a) + len(b) + extra > max_length:
                truncated += 1
                a, b = _truncate_longest_first(a, b, max_length - extra)
            head = [self.cls_id, *a, *self.pair_middle[:1]]
            tail = [*self.pair_middle[1:], *b, self.sep_id]
            rows.append(head + tail)
            # RoBERTa-likes have one token type; BERT marks the second segment with 1.
            second_type = 0 if len(self.pair_middle) == 2 else 1
            types.append([0] * len(head) + [second_type] * len(tail))
        warn_truncated(truncated, len(rows), max_length, "pairs")
        length = bucket_length(_longest(rows), max_length)
        out = pad_token_rows(rows, self.pad_id, length)
        out["token_type_ids"] = pad_token_rows(types, 0, length)["input_ids"]
        return out


def _truncate_longest_first(a: list[int], b: list[int], budget: int) -> tuple[list, list]:
    """The `tokenizers` longest-first rule: the shorter side keeps what it can, up to half."""
    n1, n2 = len(a), len(b)
    swap = n1 > n2
    if swap:
        n1, n2 = n2, n1
    n2 = n1 if n1 > budget else max(n1, budget - n1)
    if n1 + n2 > budget:
        n1 = budget // 2
        n2 = n1 + budget % 2
    if swap:
        n1, n2 = n2, n1
    return a[:n1], b[:n2]


def _longest(rows: list[list[int]]) -> int:
    return max((len(r) for r in rows), default=1)


def pad_token_rows(rows: list[list[int]], pad_id: int, length: int) -> dict[str, np.ndarray]:
    """Right-pads rows to length: input_ids, attention_mask int32 [B, length]."""
    ids = np.full((len(rows), length), pad_id, np.int32)
    mask = np.zeros((len(rows), length), np.int32)
    for i, row in enumerate(rows):
        row = row[:length]
        ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    return {"input_ids": ids, "attention_mask": mask}


def punctuation_ids(tokenizer: TextTokenizer) -> np.ndarray:
    """colbert-ai's skiplist: the first token id of each string.punctuation character."""
    ids = set()
    for symbol in string.punctuation:
        encoded = tokenizer.raw_ids([symbol])[0]
        if encoded:
            ids.add(encoded[0])
    return np.array(sorted(ids), np.int32)


def _required_id(tok, attr: str) -> int:
    value = getattr(tok, attr, None)
    if value is None:
        raise InputError(f"the tokenizer has no {attr.removesuffix('_id')}")
    return int(value)


def _is_roberta_like(tok) -> bool:
    return tok.cls_token == "<s>"
