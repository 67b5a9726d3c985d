"""The query encoders compiled for a fixed set of shapes.

ColBERT queries are always `query_maxlen` tokens and its documents are padded to `doc_maxlen`;
bi-encoder texts are padded to one of a few lengths. A batch of queries is padded up to a bucket
of `batch_buckets`, at most 10% more rows than it holds (`shapes.tight_buckets_up_to`: padded
rows cost an encoder as much as real ones); documents (re-encoded only for explanations) use
the coarser `document_buckets`. `warmup()` compiles every shape, so a request never waits on
XLA.
Einsum letters: B batch, Q query tokens, T document tokens, D embedding dim, H vector size.
"""

from __future__ import annotations

import jax
import numpy as np

from lateint_jax.shapes import (
    bucket_for,
    chunks,
    pad_axis,
    powers_of_four_up_to,
    tight_buckets_up_to,
)


class _Compiled:
    """A loaded encoder's pure `apply` jitted once, fed batches padded to `batch_buckets`."""

    def __init__(self, model, *, max_batch: int, device=None):
        self.batch_buckets = tight_buckets_up_to(max_batch)
        self.document_buckets = powers_of_four_up_to(max_batch)
        self.device = device if device is not None else jax.local_devices()[0]
        self.params = jax.device_put(model.params, self.device)
        self._apply = jax.jit(model.apply)

    def _run(self, input_ids: np.ndarray, attention_mask: np.ndarray, buckets=None) -> np.ndarray:
        """[B, T] ids/mask -> the model's [B, ...] float32 output, in calls padded to one of
        `buckets` (default: `batch_buckets`)."""
        buckets = buckets or self.batch_buckets
        outputs = []
        for start, stop in chunks(len(input_ids), buckets[-1]):
            rows = stop - start
            bucket = bucket_for(rows, buckets)
            ids = jax.device_put(pad_axis(input_ids[start:stop], bucket), self.device)
            mask = jax.device_put(pad_axis(attention_mask[start:stop], bucket), self.device)
            outputs.append(np.asarray(self._apply(self.params, ids, mask))[:rows])
        return np.concatenate(outputs, axis=0)


class CompiledColBERT(_Compiled):
    """`encode_queries` / `encode_documents` over fixed shapes, for a loaded `ColBERT`."""

    explains = True  # token vectors: MaxSim alignments can be shown

    def __init__(self, colbert, *, max_batch: int = 32, device=None):
        super().__init__(colbert, max_batch=max_batch, device=device)
        self.colbert = colbert
        self.query_maxlen = colbert.config.query_maxlen
        self.doc_maxlen = colbert.config.doc_maxlen
        self.dim = colbert.config.dim

    def warmup(self) -> None:
        """Compile every batch bucket for queries and documents."""
        for bucket in self.batch_buckets:
            self.encode_queries(["warm up"] * bucket)
        for bucket in self.document_buckets:
            self.encode_documents(["warm up"] * bucket)

    def tokenize_queries(self, texts: list[str]) -> dict[str, np.ndarray]:
        return self.colbert.tokenize_queries(texts)

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        """texts -> [B, Q, D] float32 (every query position kept, as ColBERT scores them;
        those outside the token mask, padding without query augmentation, are zeros)."""
        tokens = self.tokenize_queries(texts)
        vectors = self._run(np.asarray(tokens["input_ids"]), np.asarray(tokens["attention_mask"]))
        return vectors * np.asarray(tokens["token_mask"], np.float32)[:, :, None]

    def tokenize_documents(self, texts: list[str]) -> dict[str, np.ndarray]:
        return self.colbert.tokenize_documents(texts, length=self.doc_maxlen)

    def encode_documents(self, texts: list[str]) -> list[np.ndarray]:
        """texts -> one [T_i, D] float32 per text (padding and skiplist tokens removed)."""
        tokens = self.tokenize_documents(texts)
        embedded = self._run(
            np.asarray(tokens["input_ids"]),
            np.asarray(tokens["attention_mask"]),
            self.document_buckets,
        )
        keep = np.asarray(tokens["token_mask"]).astype(bool)
        return [embedded[i][keep[i]] for i in range(len(texts))]

    def query_tokens(self, text: str) -> list[str]:
        """The token strings of one query whose vectors count in MaxSim, in position order:
        all query_maxlen ([Q] marker, [MASK]s) with query augmentation, else the text's."""
        tokens = self.tokenize_queries([text])
        keep = np.asarray(tokens["token_mask"][0]).astype(bool)
        return self._token_strings(np.asarray(tokens["input_ids"][0])[keep])

    def document_tokens(self, text: str) -> list[str]:
        """The T token strings of one document that have an embedding (skiplist removed)."""
        tokens = self.tokenize_documents([text])
        keep = np.asarray(tokens["token_mask"][0]).astype(bool)
        return self._token_strings(np.asarray(tokens["input_ids"][0])[keep])

    def document_spans(self, text: str) -> list[tuple[int, int] | None]:
        """Where each of `document_tokens(text)` lies in `text` (None: a frame token)."""
        return self.colbert.document_token_spans(text)

    def _token_strings(self, ids) -> list[str]:
        backend = self.colbert.tokenizer.backend
        return [backend.id_to_token(int(i)) or f"<{int(i)}>" for i in np.asarray(ids)]


class CompiledBiEncoder(_Compiled):
    """The same for a loaded `BiEncoder`: one [H] vector per text, texts padded to one of
    `lengths` tokens (short queries do not pay for max_length)."""

    explains = False

    def __init__(self, bi_encoder, *, max_batch: int = 32, device=None):
        super().__init__(bi_encoder, max_batch=max_batch, device=device)
        self.bi_encoder = bi_encoder
        self.max_length = bi_encoder.max_length
        self.lengths = tuple(n for n in (32, 128) if n < self.max_length) + (self.max_length,)
        self.dim = bi_encoder.bert_config.hidden_size

    def warmup(self) -> None:
        """Compile every (batch bucket, length bucket) pair."""
        for bucket in self.batch_buckets:
            for length in self.lengths:
                self._run(*self._tokens(["warm up"] * bucket, length))

    def _tokens(self, texts: list[str], length: int | None = None):
        framed = self.bi_encoder.tokenizer.frame_single(texts, self.max_length, self.max_length)
        longest = int(framed["attention_mask"].sum(1).max())
        length = length or bucket_for(longest, self.lengths)
        return (
            np.asarray(framed["input_ids"][:, :length]),
            np.asarray(framed["attention_mask"][:, :length]),
        )

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        """texts -> [B, H] float32."""
        return self._run(*self._tokens(list(texts)))

    def encode_documents(self, texts: list[str]) -> list[np.ndarray]:
        """texts -> one [1, H] float32 per text (the shape of a one-token document)."""
        return [vector[None] for vector in self.encode_queries(texts)]
