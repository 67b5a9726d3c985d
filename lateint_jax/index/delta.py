"""The write segment of a served index: documents written since the last compaction, coded with
the main index's codec, held decompressed on the device and scored exactly (MaxSim over every
allowed document's tokens, no candidate generation).

    segment = DeltaSegment.empty(dim, nbits_bytes)
    segment = segment.appended(codes, residuals, doc_offsets, vectors, ["a", "b"])
    scores = segment.scores(q, query_mask)          # [B', capacity docs], -inf where not live

A segment is immutable: `appended`, `without` (tombstones) and `dropped_first` (after a
compaction) return new ones, so a search holding one sees one state. Host arrays grow by
appending into buffers shared between successive segments (each knows its own length), so a
write copies only what it adds. On the device the tokens are padded to a capacity that grows in
power-of-two steps (`capacity_for`): the scoring program depends only on the capacity and the
query batch shape, so writes recompile nothing until the segment crosses a step, and the owner
warms a step before any search can reach it (`warmup`). On accelerators a placed segment's
successor within the same step writes only its new tokens into a device copy (`write_rows`,
`UPDATE_ON_DEVICE`): a write uploads what it adds, not the segment. One with tombstones only
replaces the live mask.

Shapes: B queries, Q query tokens, D dim, M tokens, n documents, R residual bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from lateint_jax import shapes

MIN_CAPACITY = 4096  # tokens of the smallest step
TOKENS_PER_DOC_SLOT = 16  # a step of M tokens has M / 16 document slots
SCORE_BLOCK = 2048  # tokens scored per loop step (bounds the [tokens, B, Q] similarities)
UPLOAD_BLOCK = 512  # tokens a write sends to the device per update call (MIN_CAPACITY's 1/8)
# Whether a write updates the placed segment on the device (sending its own tokens) instead
# of placing the padded segment afresh; None: on accelerators only. On the CPU backend
# `device_put` of the padded host array is nearly free (it aliases the buffer) while the
# device-side copy an update makes is not (docs/SERVING.md has the measurement).
UPDATE_ON_DEVICE: bool | None = None


def updates_on_device(device=None) -> bool:
    if UPDATE_ON_DEVICE is not None:
        return UPDATE_ON_DEVICE
    return (device or jax.devices()[0]).platform != "cpu"


def capacity_for(tokens: int, docs: int) -> int:
    """The token capacity of the step that holds `tokens` tokens of `docs` documents."""
    return shapes.power_of_two(max(tokens, docs * TOKENS_PER_DOC_SLOT, 1), MIN_CAPACITY)


def steps_up_to(capacity: int) -> list[int]:
    """Every step from the smallest to `capacity`."""
    steps = [MIN_CAPACITY]
    while steps[-1] < capacity:
        steps.append(steps[-1] * 2)
    return steps


@jax.jit
def segment_maxsim(queries, query_mask, vectors, token_docs, allowed):
    """Exact MaxSim of queries [B, Q, D] (query_mask [B, Q]) against every document of a
    segment: vectors [M, D], token_docs [M] int32 (document slot of each token, n for
    padding, ascending), allowed [n] bool -> [B, n] (-inf where not allowed)."""
    slots = allowed.shape[0]
    block = min(SCORE_BLOCK, vectors.shape[0])
    steps = vectors.shape[0] // block

    def step(best, start):
        rows = jax.lax.dynamic_slice_in_dim(vectors, start, block)
        docs = jax.lax.dynamic_slice_in_dim(token_docs, start, block)
        sims = jnp.einsum("MD,BQD->MBQ", rows, queries, preferred_element_type=jnp.float32)
        return best.at[docs].max(sims, indices_are_sorted=True), None

    start = jnp.full((slots + 1, *queries.shape[:2]), -jnp.inf)
    best, _ = jax.lax.scan(step, start, jnp.arange(steps) * block)
    total = jnp.where(query_mask[None], best[:slots], 0.0).sum(-1)  # [n, B]
    return jnp.where(allowed[:, None], total, -jnp.inf).T


def _write_rows(vectors, token_docs, rows, row_docs, start):
    """vectors [M, D], token_docs [M] with rows [UPLOAD_BLOCK, D], row_docs [UPLOAD_BLOCK]
    written from token `start` on (rows past M dropped) -> the updated pair."""
    at = start + jnp.arange(rows.shape[0], dtype=jnp.int32)
    return (
        vectors.at[at].set(rows, mode="drop", indices_are_sorted=True, unique_indices=True),
        token_docs.at[at].set(row_docs, mode="drop", indices_are_sorted=True,
                              unique_indices=True),
    )  # fmt: skip


# The first block of a write copies the served arrays (a search may hold them); later blocks
# update that private copy in place.
write_rows = jax.jit(_write_rows)
write_rows_in_place = jax.jit(_write_rows, donate_argnums=(0, 1))


@dataclass(frozen=True)
class Buffers:
    """Host storage shared by successive segments: each reads its first rows only."""

    codes: np.ndarray  # [M_cap] int32
    residuals: np.ndarray  # [M_cap, R] uint8
    vectors: np.ndarray  # [M_cap, D] float32
    token_docs: np.ndarray  # [M_cap] int32

    @classmethod
    def allocate(cls, rows: int, dim: int, residual_bytes: int) -> Buffers:
        return cls(
            np.zeros(rows, np.int32),
            np.zeros((rows, residual_bytes), np.uint8),
            np.zeros((rows, dim), np.float32),
            np.zeros(rows, np.int32),
        )

    @property
    def rows(self) -> int:
        return self.codes.shape[0]


class DeltaSegment:
    """Documents appended since the last compaction (see the module docstring)."""

    def __init__(self, buffers: Buffers, doc_offsets: np.ndarray, doc_ids: list[str],
                 live: np.ndarray, device=None):  # fmt: skip
        self._buffers = buffers
        self.doc_offsets = doc_offsets  # [n + 1] int64
        self.doc_ids = doc_ids
        self.live = live  # [n] bool
        self.device = device
        self.capacity = capacity_for(self.num_tokens, self.num_docs)
        self._row = {i: r for r, i in enumerate(doc_ids) if live[r]}
        self._placed = None

    @classmethod
    def empty(cls, dim: int, residual_bytes: int, device=None) -> DeltaSegment:
        buffers = Buffers.allocate(MIN_CAPACITY, dim, residual_bytes)
        return cls(buffers, np.zeros(1, np.int64), [], np.zeros(0, bool), device)

    # ------------------------------------------------------------------ facts
    @property
    def num_docs(self) -> int:
        return len(self.doc_ids)

    @property
    def num_tokens(self) -> int:
        return int(self.doc_offsets[-1])

    @property
    def num_live(self) -> int:
        return len(self._row)

    @property
    def live_ids(self) -> list[str]:
        return list(self._row)

    def __contains__(self, doc_id: str) -> bool:
        return doc_id in self._row

    def row(self, doc_id: str) -> int:
        return self._row[doc_id]

    def coded(self, rows: np.ndarray):
        """The codes, residuals and doc_offsets of documents `rows` (ascending), laid end to
        end as `update.append_coded` takes them."""
        lengths = np.diff(self.doc_offsets)[rows]
        offsets = np.zeros(len(rows) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        tokens = np.concatenate(
            [np.arange(self.doc_offsets[r], self.doc_offsets[r + 1]) for r in rows]
            or [np.zeros(0, np.int64)]
        )
        return self._buffers.codes[tokens], self._buffers.residuals[tokens], offsets

    def document_vectors(self, doc_id: str) -> np.ndarray:
        """[T, D]: the decompressed vectors of a live document of the segment."""
        r = self._row[doc_id]
        return self._buffers.vectors[self.doc_offsets[r] : self.doc_offsets[r + 1]].copy()

    # ------------------------------------------------------------------ new segments
    def appended(self, codes, residuals, doc_offsets, vectors,
                 doc_ids: Sequence[str]) -> DeltaSegment:  # fmt: skip
        """This segment with documents added (coded as `ColBERTIndex.code` returns them).
        The ids must not be live here. Append only to the newest segment: the rows past this
        one's end in the shared buffers are overwritten."""
        start, added = self.num_tokens, int(doc_offsets[-1])
        buffers = self._buffers
        if start + added > buffers.rows:  # grow: the segments before keep the old buffers
            grown = Buffers.allocate(2 * (start + added), vectors.shape[1], residuals.shape[1])
            for old, new in zip(
                (buffers.codes, buffers.residuals, buffers.vectors, buffers.token_docs),
                (grown.codes, grown.residuals, grown.vectors, grown.token_docs),
            ):
                new[:start] = old[:start]
            buffers = grown
        stop = start + added
        buffers.codes[start:stop] = codes
        buffers.residuals[start:stop] = residuals
        buffers.vectors[start:stop] = vectors
        lengths = np.diff(doc_offsets)
        buffers.token_docs[start:stop] = np.repeat(
            np.arange(self.num_docs, self.num_docs + len(doc_ids), dtype=np.int32), lengths
        )
        segment = DeltaSegment(
            buffers,
            np.concatenate([self.doc_offsets, start + np.asarray(doc_offsets[1:], np.int64)]),
            self.doc_ids + list(doc_ids),
            np.concatenate([self.live, np.ones(len(doc_ids), bool)]),
            self.device,
        )
        if (self._placed is not None and segment.capacity == self.capacity
                and updates_on_device(self.device)):  # fmt: skip
            segment._placed = segment._with_rows_placed(self._placed, start)
        return segment

    def without(self, doc_ids: Sequence[str]) -> DeltaSegment:
        """This segment with live documents tombstoned."""
        live = self.live.copy()
        live[[self._row[i] for i in doc_ids]] = False
        segment = DeltaSegment(self._buffers, self.doc_offsets, self.doc_ids, live, self.device)
        if self._placed is not None:  # the tokens on the device stay; only the mask changes
            segment._placed = (*self._placed[:2], segment._live_placed())
        return segment

    def dropped_first(self, count: int) -> DeltaSegment:
        """The segment without its first `count` documents (compacted into the main index)."""
        if count == 0:
            return self
        first = int(self.doc_offsets[count])
        tokens = self.num_tokens - first
        buffers = Buffers.allocate(
            max(MIN_CAPACITY, 2 * tokens), *self._buffers.vectors.shape[1:2],
            self._buffers.residuals.shape[1],
        )  # fmt: skip
        kept = slice(first, first + tokens)
        buffers.codes[:tokens] = self._buffers.codes[kept]
        buffers.residuals[:tokens] = self._buffers.residuals[kept]
        buffers.vectors[:tokens] = self._buffers.vectors[kept]
        buffers.token_docs[:tokens] = self._buffers.token_docs[kept] - count
        return DeltaSegment(
            buffers, self.doc_offsets[count:] - first, self.doc_ids[count:],
            self.live[count:].copy(), self.device,
        )  # fmt: skip

    # ------------------------------------------------------------------ scoring
    def placed(self) -> DeltaSegment:
        """Upload the segment now (the writer does, so no search pays for it); returns it."""
        self._device_arrays()
        return self

    def _device_arrays(self):
        """(vectors [cap, D], token_docs [cap], live [cap / 16]) on the device, padded to the
        capacity; uploaded on first use."""
        if self._placed is None:
            self._placed = self._padded(self.capacity)
        return self._placed

    def _live_placed(self) -> jax.Array:
        """[capacity / 16] bool on the device: the live document slots."""
        live = np.zeros(self.capacity // TOKENS_PER_DOC_SLOT, bool)
        live[: self.num_docs] = self.live
        return jax.device_put(live, self.device)

    def _with_rows_placed(self, placed, start: int):
        """`placed`, the device arrays of this segment's first `start` tokens (at this
        capacity), with the tokens from `start` on written in, UPLOAD_BLOCK tokens per call:
        a write sends only its own tokens to the device, and nothing new is compiled
        (`warmup` compiles both calls at each step)."""
        vectors, token_docs, _ = placed
        dim = self._buffers.vectors.shape[1]
        slots = self.capacity // TOKENS_PER_DOC_SLOT
        for number, block in enumerate(range(start, self.num_tokens, UPLOAD_BLOCK)):
            stop = min(block + UPLOAD_BLOCK, self.num_tokens)
            rows = np.zeros((UPLOAD_BLOCK, dim), np.float32)
            rows[: stop - block] = self._buffers.vectors[block:stop]
            row_docs = np.full(UPLOAD_BLOCK, slots, np.int32)
            row_docs[: stop - block] = self._buffers.token_docs[block:stop]
            update = write_rows if number == 0 else write_rows_in_place
            vectors, token_docs = update(vectors, token_docs, rows, row_docs, np.int32(block))
        return vectors, token_docs, self._live_placed()

    def _padded(self, capacity: int):
        slots = capacity // TOKENS_PER_DOC_SLOT
        m = self.num_tokens
        vectors = np.zeros((capacity, self._buffers.vectors.shape[1]), np.float32)
        vectors[:m] = self._buffers.vectors[:m]
        token_docs = np.full(capacity, slots, np.int32)
        token_docs[:m] = self._buffers.token_docs[:m]
        live = np.zeros(slots, bool)
        live[: self.num_docs] = self.live
        return jax.device_put((vectors, token_docs, live), self.device)

    def scores(self, q: np.ndarray, query_mask: np.ndarray, allowed=None) -> np.ndarray:
        """q [B', Q', D] (a padded batch), query_mask [B', Q'] -> [B', n] exact MaxSim of every
        document (-inf where not live, or not in `allowed` [n] bool when given)."""
        vectors, token_docs, live = self._device_arrays()
        if allowed is not None:
            slots = np.zeros(live.shape[0], bool)
            slots[: self.num_docs] = allowed & self.live
            live = jax.device_put(slots, self.device)
        out = segment_maxsim(q, query_mask, vectors, token_docs, live)
        return np.asarray(out)[:, : self.num_docs]

    def warmup(self, batches, capacities: Sequence[int]) -> int:
        """Compile the scoring program for each padded query batch shape [(B', Q', D)] and
        each capacity. Returns the calls made."""
        calls = 0
        empty = DeltaSegment.empty(*self._buffers.vectors.shape[1:], 0, self.device)
        for capacity in capacities:
            arrays = empty._padded(capacity)  # what a segment of that step places, all padding
            rows = np.zeros((UPLOAD_BLOCK, arrays[0].shape[1]), np.float32)
            row_docs = np.full(UPLOAD_BLOCK, capacity // TOKENS_PER_DOC_SLOT, np.int32)
            for update in (write_rows, write_rows_in_place):  # a write's device update
                if updates_on_device(self.device):
                    copied = update(*arrays[:2], rows, row_docs, np.int32(0))
                    arrays = (*jax.block_until_ready(copied), arrays[2])
                    calls += 1
            for batch, tokens, dim in batches:
                q = np.zeros((batch, tokens, dim), np.float32)
                mask = np.ones((batch, tokens), bool)
                jax.block_until_ready(segment_maxsim(q, mask, *arrays))
                calls += 1
        return calls
