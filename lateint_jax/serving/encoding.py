"""The ColBERT encoder compiled for a fixed set of shapes.

Queries are always `query_maxlen` tokens; documents are padded to `doc_maxlen`; batches are
padded up to a bucket from `batch_buckets`. `warmup()` compiles every (kind, bucket) pair, so a
request never waits on XLA. Einsum letters: B batch, Q query tokens, T document tokens,
D embedding dim.
"""

from __future__ import annotations

import jax
import numpy as np

from lateint_jax.serving.buckets import bucket_for, chunks, pad_rows, powers_of_four_up_to


class CompiledColBERT:
    """`encode_queries` / `encode_documents` over fixed shapes, for a loaded `ColBERT`."""

    def __init__(self, colbert, *, max_batch: int = 32, device=None):
        self.colbert = colbert
        self.batch_buckets = powers_of_four_up_to(max_batch)
        self.device = device if device is not None else jax.local_devices()[0]
        self.params = jax.device_put(colbert.params, self.device)
        self._apply = jax.jit(colbert.apply)
        self.query_maxlen = colbert.config.query_maxlen
        self.doc_maxlen = colbert.config.doc_maxlen
        self.dim = colbert.config.dim

    def compiled_count(self) -> int:
        """Programs compiled so far (constant after warm-up when shapes stay in buckets)."""
        return self._apply._cache_size()

    def warmup(self) -> None:
        """Compile every batch bucket for queries and documents."""
        for bucket in self.batch_buckets:
            self.encode_queries(["warm up"] * bucket)
            self.encode_documents(["warm up"] * bucket)

    def _run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """[B, T] ids/mask -> [B, T, D] float32, in bucket-sized device calls."""
        outputs = []
        for start, stop in chunks(len(input_ids), self.batch_buckets[-1]):
            rows = stop - start
            bucket = bucket_for(rows, self.batch_buckets)
            ids = jax.device_put(pad_rows(input_ids[start:stop], bucket), self.device)
            mask = jax.device_put(pad_rows(attention_mask[start:stop], bucket), self.device)
            outputs.append(np.asarray(self._apply(self.params, ids, mask))[:rows])
        return np.concatenate(outputs, axis=0)

    def tokenize_queries(self, texts: list[str]) -> dict[str, np.ndarray]:
        return self.colbert.tokenize_queries(texts)

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        """texts -> [B, Q, D] float32 (every query position kept, as ColBERT scores them)."""
        tokens = self.tokenize_queries(texts)
        return self._run(np.asarray(tokens["input_ids"]), np.asarray(tokens["attention_mask"]))

    def tokenize_documents(self, texts: list[str]) -> dict[str, np.ndarray]:
        return self.colbert.tokenize_documents(texts, length=self.doc_maxlen)

    def encode_documents(self, texts: list[str]) -> list[np.ndarray]:
        """texts -> one [T_i, D] float32 per text (padding and skiplist tokens removed)."""
        tokens = self.tokenize_documents(texts)
        embedded = self._run(np.asarray(tokens["input_ids"]), np.asarray(tokens["attention_mask"]))
        keep = np.asarray(tokens["token_mask"]).astype(bool)
        return [embedded[i][keep[i]] for i in range(len(texts))]

    def query_tokens(self, text: str) -> list[str]:
        """The Q token strings of one query as the encoder sees it ([Q] marker, [MASK]s)."""
        return self._token_strings(self.tokenize_queries([text])["input_ids"][0])

    def document_tokens(self, text: str) -> list[str]:
        """The T token strings of one document that have an embedding (skiplist removed)."""
        tokens = self.tokenize_documents([text])
        keep = np.asarray(tokens["token_mask"][0]).astype(bool)
        return self._token_strings(np.asarray(tokens["input_ids"][0])[keep])

    def _token_strings(self, ids) -> list[str]:
        backend = self.colbert.tokenizer.backend
        return [backend.id_to_token(int(i)) or f"<{int(i)}>" for i in np.asarray(ids)]
