"""The cross-encoder rerank stage, compiled for fixed (batch, length) buckets.

(query, passage) pairs are tokenised together, truncated to the cross-encoder's `max_length`
(where the library's `CrossEncoder.score` and sentence-transformers cut them too; it is always
the longest length bucket), sorted by length and cut into calls of up to the largest batch
bucket; each call is padded to the length bucket of its longest pair and to a batch bucket (at
most 10% padded pairs from 8 pairs up, `shapes.tight_buckets_up_to`). A request's 10 pairs are
one call, not one per length bucket.
`warmup()` compiles every (batch, length) pair at start-up. Einsum letters: B pairs, T tokens.
"""

from __future__ import annotations

import jax
import numpy as np

from lateint_jax.shapes import bucket_for, chunks, pad_axis, tight_buckets_up_to

BATCH_BUCKETS = tight_buckets_up_to(32, minimum=8)


class CompiledReranker:
    """Scores (query, passage) pairs with a loaded `CrossEncoder` on fixed shapes."""

    def __init__(
        self,
        cross_encoder,
        *,
        batch_buckets: tuple[int, ...] = BATCH_BUCKETS,
        length_buckets: tuple[int, ...] = (64, 128, 256, 384),
        device=None,
        name: str | None = None,
    ):
        self.cross_encoder = cross_encoder
        self.batch_buckets = tuple(sorted(batch_buckets))
        limit = cross_encoder.max_length
        self.length_buckets = tuple(sorted({b for b in length_buckets if b < limit} | {limit}))
        self.device = device if device is not None else jax.local_devices()[0]
        self.params = jax.device_put(cross_encoder.params, self.device)
        self._apply = jax.jit(cross_encoder.apply)
        self.name = name or getattr(cross_encoder, "model_name", "cross-encoder")
        self.pad_id = int(cross_encoder.tokenizer.pad_id)

    def warmup(self) -> None:
        """Compile every (batch, length) bucket."""
        for length in self.length_buckets:
            for batch in self.batch_buckets:
                ids = np.full((batch, length), self.pad_id, np.int32)
                mask = np.ones((batch, length), np.int32)
                self._call(ids, mask, np.zeros_like(ids))

    def _call(self, ids, mask, type_ids) -> np.ndarray:
        put = lambda x: jax.device_put(np.asarray(x, np.int32), self.device)
        return np.asarray(self._apply(self.params, put(ids), put(mask), put(type_ids)))

    def tokenize(self, queries: list[str], passages: list[str]) -> dict[str, np.ndarray]:
        """Pairs -> input_ids, attention_mask, token_type_ids [B, T], T <= the largest bucket
        (longest-first truncation, as the cross-encoder was trained)."""
        return self.cross_encoder.tokenizer.frame_pairs(
            list(queries), list(passages), self.length_buckets[-1]
        )

    def score(self, queries: list[str], passages: list[str]) -> np.ndarray:
        """Pairs (query_i, passage_i) -> [B] float32 logits."""
        if len(queries) != len(passages):
            raise ValueError(f"{len(queries)} queries but {len(passages)} passages")
        if not queries:
            return np.zeros((0,), np.float32)
        tokens = self.tokenize(queries, passages)
        lengths = tokens["attention_mask"].sum(axis=1)
        order = np.argsort(lengths, kind="stable")
        scores = np.zeros((len(queries),), np.float32)
        for start, stop in chunks(len(order), self.batch_buckets[-1]):
            # Sorted by length, a call's pairs are alike; it runs at its longest pair's bucket.
            part = order[start:stop]
            length = bucket_for(int(lengths[part[-1]]), self.length_buckets)
            batch = bucket_for(len(part), self.batch_buckets)
            arrays = [
                pad_axis(pad_axis(tokens[name][part][:, :length], length, axis=1, value=pad), batch)
                for name, pad in (
                    ("input_ids", self.pad_id),
                    ("attention_mask", 0),
                    ("token_type_ids", 0),
                )
            ]
            scores[part] = self._call(*arrays)[: len(part)]
        return scores
