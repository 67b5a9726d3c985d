"""The cross-encoder rerank stage, compiled for fixed (batch, length) shapes.

(query, passage) pairs are tokenised together and truncated to the cross-encoder's
`max_length` (where the library's `CrossEncoder.score` and sentence-transformers cut them too),
then sorted by length and split into calls. Each call runs at the length bucket of its longest
pair (the library's `LENGTH_BUCKETS` up to `max_length`) and a power-of-two batch. Where to
split is chosen by `plan_calls` to minimise the summed cost of the calls, from each shape's
run time measured at warm-up: on 2 CPU cores a call of 4 pairs of 320 tokens costs 78 us per
token and one of 32 pairs 123 us (the attention's working set), while an accelerator may
favour the largest batch; measuring lets each machine decide.
`warmup()` compiles and times every (batch, length) shape at start-up. Einsum letters: B
pairs, T tokens.
"""

from __future__ import annotations

import time

import jax
import numpy as np

from lateint_jax.data.tokenize import LENGTH_BUCKETS
from lateint_jax.shapes import bucket_for, pad_axis

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32)
CALL_OVERHEAD_TOKENS = 64  # the cost of a call before warm-up has timed one: padded tokens + this


def plan_calls(
    lengths: np.ndarray, cost, batch_buckets: tuple[int, ...], length_buckets: tuple[int, ...]
) -> list[tuple[int, int]]:
    """Splits pairs sorted by ascending length into contiguous calls [(start, stop)] of at most
    the largest batch bucket, minimising the sum of `cost(batch bucket, length bucket)` over
    the calls (a call's length bucket is that of its last, longest pair). Dynamic programming:
    best[j] is the cheapest way to run the first j pairs."""
    n = len(lengths)
    largest = batch_buckets[-1]
    length_of = [bucket_for(int(length), length_buckets) for length in lengths]
    batch_of = [0] + [bucket_for(size, batch_buckets) for size in range(1, largest + 1)]
    best = [0.0] + [float("inf")] * n
    cut = [0] * (n + 1)
    for stop in range(1, n + 1):
        length = length_of[stop - 1]
        for start in range(max(0, stop - largest), stop):
            total = best[start] + cost(batch_of[stop - start], length)
            if total < best[stop]:
                best[stop], cut[stop] = total, start
    calls = []
    stop = n
    while stop:
        calls.append((cut[stop], stop))
        stop = cut[stop]
    return calls[::-1]


class CompiledReranker:
    """Scores (query, passage) pairs with a loaded `CrossEncoder` on fixed shapes."""

    def __init__(
        self,
        cross_encoder,
        *,
        batch_buckets: tuple[int, ...] = BATCH_BUCKETS,
        length_buckets: tuple[int, ...] = LENGTH_BUCKETS,
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
        self.seconds: dict[tuple[int, int], float] = {}  # (batch, length) -> measured run time

    def cost(self, batch: int, length: int) -> float:
        """What a call of this shape costs: its measured seconds once warm-up has run, else
        its padded tokens (plus a fixed overhead) in the same proportions."""
        if self.seconds:
            return self.seconds[batch, length]
        return float(batch * length + CALL_OVERHEAD_TOKENS)

    def warmup(self) -> None:
        """Compile every (batch, length) shape, then time a second run of each for `cost`
        (made non-decreasing in batch and length, so noise cannot make a bigger shape look
        cheaper than a smaller one)."""
        seconds = np.zeros((len(self.length_buckets), len(self.batch_buckets)))
        for i, length in enumerate(self.length_buckets):
            for j, batch in enumerate(self.batch_buckets):
                ids = np.full((batch, length), self.pad_id, np.int32)
                arrays = (ids, np.ones_like(ids), np.zeros_like(ids))
                self._call(*arrays)
                started = time.perf_counter()
                self._call(*arrays)
                seconds[i, j] = time.perf_counter() - started
        seconds = np.maximum.accumulate(np.maximum.accumulate(seconds, axis=0), axis=1)
        self.seconds = {
            (batch, length): float(seconds[i, j])
            for i, length in enumerate(self.length_buckets)
            for j, batch in enumerate(self.batch_buckets)
        }

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
        calls = plan_calls(lengths[order], self.cost, self.batch_buckets, self.length_buckets)
        scores = np.zeros((len(queries),), np.float32)
        for start, stop in calls:
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
