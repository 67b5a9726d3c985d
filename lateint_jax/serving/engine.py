"""The search engine behind the HTTP API: encode, first stage, optional rerank, explanations.

Concurrent requests meet in two `Batcher`s: one coalesces queries into encoder + index calls
(padded to fixed batch and k buckets), the other coalesces (query, passage) pairs into
cross-encoder calls. Einsum letters: B queries, Q query tokens, N documents, T document tokens,
D embedding dim.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import jax
import numpy as np

from lateint_jax import compilations
from lateint_jax.data.beir import Corpus
from lateint_jax.errors import InputError
from lateint_jax.index.base import Index, SearchShape
from lateint_jax.scoring import maxsim_alignment
from lateint_jax.serving.batching import Batcher
from lateint_jax.serving.filters import CompiledFilter, compile_filter
from lateint_jax.serving.schemas import LIMITS
from lateint_jax.shapes import bucket_for, powers_of_four_up_to

K_BUCKETS = (10, 100, 1000)
DECOMPRESSED_CACHE_DOCS = 2048


@dataclass(frozen=True)
class QueryItem:
    text: str
    k: int
    subset: tuple[str, ...] | None
    filter: CompiledFilter | None = None


@dataclass
class FirstStage:
    embedding: np.ndarray  # [Q, D]
    hits: list[tuple[str, float]]
    source: tuple | None = None  # (index, generation) the hits came from (explanations)


def _align_batch(query, docs, mask):
    """query [Q, D], docs [N, T, D], mask [N, T] -> (positions [N, Q], similarities [N, Q])."""
    return jax.vmap(maxsim_alignment, in_axes=(None, 0, 0))(query, docs, mask)


class SearchEngine:
    """Owns the index, the compiled encoder and reranker, and the batchers that feed them.
    Works with any `Index` (late-interaction or single-vector) through its interface alone."""

    def __init__(
        self,
        index: Index,
        encoder,
        corpus: Corpus | None = None,
        reranker=None,
        *,
        max_batch: int = 32,
        max_wait_s: float = 0.005,
        k_buckets: tuple[int, ...] = K_BUCKETS,
        rerank_max_batch: int = 64,
        default_depth: int | None = None,
        max_k: int | None = None,
        documents=None,
    ):
        self.index = index
        # Live writes swap `index` (and the ids) under this lock; a first-stage batch reads
        # them, and resolves its metadata filters in `documents`, under it too.
        self.index_lock = threading.Lock()
        self.documents = documents  # a DocumentStore (filters), or None
        self.writer = None  # a live_writes.Writer when the server takes writes
        self.generation = 0
        if encoder.dim != index.dim:
            raise InputError(
                f"the encoder makes {encoder.dim}-d vectors, the index holds {index.dim}-d"
            )
        self.encoder = encoder
        self.corpus = corpus
        self.reranker = reranker
        self.default_depth = default_depth if reranker is not None else None
        self.k_buckets = tuple(sorted(k_buckets))
        self.max_batch = max_batch
        # k above the largest bucket is refused; max_k trims buckets (a faster warm-up).
        self.max_k = min(max_k or LIMITS.max_k, LIMITS.max_k, index.num_live)
        self.k_buckets = tuple(b for b in self.k_buckets if b < self.max_k) + (self.max_k,)
        self._setup_index_side()
        self.first_stage = Batcher(
            self._first_stage_batch, max_batch=max_batch, max_wait_s=max_wait_s, name="search"
        )
        self.rerank_stage = None
        if reranker is not None:
            self.rerank_stage = Batcher(
                self._rerank_batch,
                max_batch=rerank_max_batch,
                max_wait_s=max_wait_s,
                name="rerank",
            )

    def _setup_index_side(self) -> None:
        """Compiled alignments over the index's stored token vectors (explanations)."""
        self.explain_buckets = powers_of_four_up_to(LIMITS.max_explained)
        self.doc_tokens = int(self.index.stats().get("max_doc_tokens", 1))
        self._align = jax.jit(_align_batch)
        self._decompressed: OrderedDict[tuple[int, str], np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()

    # ---------------------------------------------------------------- start-up and shutdown
    def request_shapes(self) -> list[SearchShape]:
        """Every kind of index call a request can make: up to max_batch queries of the
        encoder's query length, each k bucket, with and without a subset."""
        tokens = getattr(self.encoder, "query_maxlen", 0)
        return [SearchShape(self.max_batch, k, tokens, subset=True) for k in self.k_buckets]

    def warmup(self, log=None) -> None:
        """Compile every shape a request can reach: the encoder, the index (which knows its
        own compile keys) for `request_shapes()`, rerank and explanations. `log(line)`, when
        given, hears each step as it starts."""
        log = log or (lambda line: None)
        started = time.perf_counter()

        def step(what: str) -> None:
            log(f"  warm-up {time.perf_counter() - started:6.1f} s: {what}")

        compilations.start()
        step("query encoder")
        self.encoder.warmup()
        shapes = self.request_shapes()
        for number, shape in enumerate(shapes, 1):
            step(f"index, k={shape.k} ({number}/{len(shapes)})")
            self.index.warmup([shape])
        if self.reranker is not None:
            step("reranker")
            self.reranker.warmup()
        if self.encoder.explains:
            step("explanations")
            self.decompressed(next(iter(self.index.live_ids)))
            sample = np.zeros((self.encoder.query_maxlen, self.encoder.dim), np.float32)
            for n in self.explain_buckets:
                self._aligned(sample, [np.zeros((1, self.encoder.dim), np.float32)] * n)
        step(f"done, {compilations.count()} programs compiled")

    def compiled_counts(self) -> dict:
        """Programs compiled in this process since warm-up began (constant afterwards: no
        request compiles)."""
        return {"programs": compilations.count()}

    def close(self) -> None:
        self.first_stage.close()
        if self.writer is not None:
            self.writer.close()
        if self.rerank_stage is not None:
            self.rerank_stage.close()

    # ---------------------------------------------------------------- batch functions
    def replace_index(self, index: Index) -> None:
        """Serve `index` from the next batch on (call with `index_lock` held). The live ids
        are the index's own (`id in index`, `index.num_live`): nothing here grows with it."""
        self.index = index
        self.generation += 1

    @property
    def doc_ids(self) -> list[str]:
        """The live ids, in the index's order (O(documents): not for the request path)."""
        return self.index.live_ids

    @property
    def num_live(self) -> int:
        """How many documents searches can return now."""
        return self.index.num_live

    def is_live(self, doc_id: str) -> bool:
        """Whether searches can return `doc_id` now."""
        return doc_id in self.index

    def _first_stage_batch(self, items: list[QueryItem]) -> list[FirstStage]:
        embeddings = self.encoder.encode_queries([item.text for item in items])
        with self.index_lock:  # one consistent view of the index, its ids and the metadata
            index, generation = self.index, self.generation
            matching = {
                item.filter: self.documents.matching_ids(item.filter)
                for item in items
                if item.filter is not None
            }
        hits: list = [None] * len(items)
        groups: dict = {}
        for row, item in enumerate(items):
            groups.setdefault((item.subset, item.filter), []).append(row)
        for (subset, where), rows in groups.items():
            if subset is not None or where is not None:
                # Ids deleted since the request was checked drop out, as filters' ids do;
                # `index` (a snapshot) is the live set this batch searches.
                if where is not None:
                    allowed = {i for i in matching[where] if i in index}
                    subset = tuple(i for i in (subset or allowed) if i in allowed)
                else:
                    subset = tuple(i for i in subset if i in index)
            limit = len(subset) if subset is not None else index.num_live
            if limit == 0:
                for row in rows:
                    hits[row] = []
                continue
            k = bucket_for(min(max(items[r].k for r in rows), limit), self.k_buckets)
            found = index.search(embeddings[rows], k=k, subset_ids=subset)
            for row, row_hits in zip(rows, found):
                hits[row] = [(str(i), float(s)) for i, s in row_hits[: items[row].k]]
        source = (index, generation)
        return [FirstStage(embeddings[r], hits[r], source) for r in range(len(items))]

    def decompressed(self, doc_id: str, source: tuple | None = None) -> np.ndarray:
        """The [T, D] vectors of one document in `source` (index, generation), default the
        served index, from a bounded LRU cache."""
        index, generation = source or (self.index, self.generation)
        key = (generation, doc_id)
        with self._cache_lock:
            if key in self._decompressed:
                self._decompressed.move_to_end(key)
                return self._decompressed[key]
        vectors = np.asarray(index.document_vectors(doc_id), np.float32)
        with self._cache_lock:
            self._decompressed[key] = vectors
            while len(self._decompressed) > DECOMPRESSED_CACHE_DOCS:
                self._decompressed.popitem(last=False)
        return vectors

    def _rerank_batch(self, pairs: list[tuple[str, str]]) -> list[float]:
        scores = self.reranker.score([q for q, _ in pairs], [p for _, p in pairs])
        return [float(s) for s in scores]

    # ---------------------------------------------------------------- requests
    def check_ids(self, ids: list[str] | None) -> tuple[str, ...] | None:
        if ids is None:
            return None
        index = self.index
        unknown = [i for i in ids if i not in index]
        if unknown:
            shown = ", ".join(repr(i) for i in unknown[:5])
            more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            raise InputError(f"ids: unknown document ids {shown}{more}")
        return tuple(dict.fromkeys(ids))

    def passage(self, doc_id: str) -> str:
        if self.corpus is None:
            raise InputError("rerank: the server has no corpus texts for this index (--corpus)")
        return self.corpus.passage(doc_id)

    async def search(
        self,
        texts: list[str],
        k: int = 10,
        ids: list[str] | None = None,
        depth: int | None = None,
        explain: bool = False,
        filter: dict | None = None,
    ) -> tuple[list[list[dict]], dict]:
        """Ranked hits per query (dicts for `SearchHit`) and the stage timings in ms. A metadata
        `filter` (serving/filters.py) narrows the documents as `ids` does (both: the
        intersection); one that matches nothing gives empty results."""
        subset = self.check_ids(ids)
        where = None
        if filter is not None:
            if self.documents is None:
                raise InputError(
                    "filter: this server has no document metadata (start it with --corpus or "
                    "--writable)"
                )
            where = compile_filter(filter)
        depth = depth if depth is not None else self.default_depth
        if depth is not None and self.reranker is None:
            raise InputError("rerank: no reranker is loaded (start the server with --reranker)")
        if depth is not None and self.corpus is None:
            raise InputError("rerank: the server has no passage texts (start it with --corpus)")
        if explain and not self.encoder.explains:
            raise InputError(
                "explain: token alignments need a late-interaction (ColBERT) index; this server "
                "holds a single-vector (bi-encoder) index"
            )
        if explain and len(texts) * k > LIMITS.max_explained:
            raise InputError(
                f"explain: at most {LIMITS.max_explained} explained results per request "
                f"(queries x k = {len(texts) * k})"
            )
        if depth is not None and len(texts) * max(depth, k) > LIMITS.max_rerank_pairs:
            raise InputError(
                f"rerank: at most {LIMITS.max_rerank_pairs} reranked pairs per request "
                f"(queries x max(depth, k) = {len(texts) * max(depth, k)})"
            )
        first_k = max(k, depth) if depth is not None else k
        if first_k > self.max_k:
            field = "k" if k > self.max_k else "rerank.depth"
            raise InputError(f"{field}: this server returns at most {self.max_k} results per query")
        started = time.perf_counter()
        futures = self.first_stage.submit_many(
            [QueryItem(t, first_k, subset, where) for t in texts]
        )
        stages = await asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
        first_ms = (time.perf_counter() - started) * 1000.0
        timings = {"first_stage_ms": round(first_ms, 3)}
        results = [
            [{"id": i, "score": s, "first_stage_score": s} for i, s in stage.hits]
            for stage in stages
        ]
        if depth is not None:
            rerank_started = time.perf_counter()
            results = await self._rerank(texts, results, k)
            timings["rerank_ms"] = round((time.perf_counter() - rerank_started) * 1000.0, 3)
        if explain:
            loop = asyncio.get_running_loop()
            for text, stage, hits in zip(texts, stages, results):
                await loop.run_in_executor(
                    None, self._explain, text, stage.embedding, hits, stage.source
                )
        if self.corpus is not None:
            for hits in results:
                for hit in hits:
                    hit.update(self.corpus.get(hit["id"]))
        timings["total_ms"] = round((time.perf_counter() - started) * 1000.0, 3)
        return results, timings

    async def _rerank(self, texts, results, k):
        futures = [
            self.rerank_stage.submit_many([(text, self.passage(hit["id"])) for hit in hits])
            for text, hits in zip(texts, results)
        ]
        reranked = []
        for hits, row in zip(results, futures):
            scores = await asyncio.gather(*(asyncio.wrap_future(f) for f in row))
            for hit, score in zip(hits, scores):
                hit["rerank_score"] = score
                hit["score"] = score
            reranked.append(sorted(hits, key=lambda h: -h["rerank_score"])[:k])
        return reranked

    async def rerank(self, query: str, passages: list[str]) -> list[float]:
        if self.reranker is None:
            raise InputError("rerank: no reranker is loaded (start the server with --reranker)")
        futures = self.rerank_stage.submit_many([(query, p) for p in passages])
        return list(await asyncio.gather(*(asyncio.wrap_future(f) for f in futures)))

    # ---------------------------------------------------------------- explanations
    def _explain(self, text: str, query: np.ndarray, hits: list[dict], source=None) -> None:
        """Adds `explanation` to each hit: for each query token, the document token its MaxSim
        picked and their similarity, and where that token lies in the hit's `text` field
        (`text_span` [start, end], null for frame tokens and tokens of the title).

        The index keeps compressed vectors sorted by centroid, so token order (hence token
        text) is gone there; with the corpus at hand the passage is re-encoded (exact vectors,
        original order) and aligned, and `index_similarity` gives the same query token's max
        over the index's decompressed vectors (their sum is the first-stage MaxSim). Without
        the corpus only the decompressed side exists and tokens read `#position`.
        """
        if not hits:
            return
        query_tokens = self.encoder.query_tokens(text)
        compressed = [self.decompressed(h["id"], source) for h in hits]
        _, index_sims = self._aligned(query, compressed)
        texts = self.corpus is not None and all(h["id"] in self.corpus for h in hits)
        if texts:
            passages = [self.corpus.passage(h["id"]) for h in hits]
            exact = self.encoder.encode_documents(passages)
            positions, sims = self._aligned(query, exact)
            doc_tokens = [self.encoder.document_tokens(p) for p in passages]
            spans = [
                self._text_spans(self.encoder.document_spans(p), self.corpus.get(h["id"]))
                for p, h in zip(passages, hits)
            ]
        else:
            positions, sims = self._aligned(query, compressed)
            doc_tokens = [[f"#{t}" for t in range(len(d))] for d in compressed]
            spans = [[None] * len(d) for d in compressed]
        for row, hit in enumerate(hits):
            hit["explanation"] = [
                {
                    "query_token": query_tokens[q],
                    "query_position": q,
                    "doc_token": doc_tokens[row][int(positions[row, q])],
                    "doc_position": int(positions[row, q]),
                    "text_span": spans[row][int(positions[row, q])],
                    "similarity": float(sims[row, q]),
                    "index_similarity": float(index_sims[row, q]),
                }
                for q in range(len(query_tokens))
            ]

    @staticmethod
    def _text_spans(spans: list, fields: dict[str, str]) -> list[list[int] | None]:
        """Spans in the passage (`title text`) -> spans in the `text` field (None in the title)."""
        title = fields["title"].strip()
        start = len(title) + 1 if title else 0
        return [None if s is None or s[0] < start else [s[0] - start, s[1] - start] for s in spans]

    def _aligned(self, query: np.ndarray, docs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """query [Q, D], docs: N arrays [T_i, D] -> positions, similarities [N, Q], computed on
        a fixed [N_bucket, doc_maxlen, D] shape so explanations never compile."""
        length = max(self.encoder.doc_maxlen, self.doc_tokens, *(d.shape[0] for d in docs))
        n = bucket_for(len(docs), self.explain_buckets)
        padded = np.zeros((n, length, query.shape[-1]), np.float32)
        mask = np.zeros((n, length), bool)
        for row, doc in enumerate(docs):
            padded[row, : doc.shape[0]] = doc
            mask[row, : doc.shape[0]] = True
        positions, sims = self._align(query, padded, mask)
        return np.asarray(positions)[: len(docs)], np.asarray(sims)[: len(docs)]
