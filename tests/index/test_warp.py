"""WARP-style search (the default) against independent references on seeded synthetic token
vectors: stage-2 scores against MaxSim over the un-normalised decompressed vectors computed
in numpy, the reranked result against exact search, queries of different lengths in one
call, one device against eight, and bad knobs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lateint_jax import sharding
from lateint_jax.codec.bitpack import byte_table
from lateint_jax.errors import InputError
from lateint_jax.index import warp
from lateint_jax.index.build import build_index
from lateint_jax.index.colbert_index import ColBERTIndex
from tests.synthetic import clustered_docs, queries_like


@pytest.fixture(scope="module")
def corpus():
    docs = clustered_docs(300, seed=3)
    arrays = build_index(docs, [f"doc-{i}" for i in range(len(docs))], progress=False)
    return docs, arrays


@pytest.fixture(scope="module")
def index(corpus):
    return ColBERTIndex(corpus[1], devices=jax.devices()[:1])


def ids_of(hits):
    return [[doc_id for doc_id, _ in row] for row in hits]


def scores_of(hits):
    return [[score for _, score in row] for row in hits]


def unnormalised_vectors(arrays) -> np.ndarray:
    """Every stored token as centroid + residual bucket values, in numpy, straight from the
    bit layout (codec.bitpack's byte table) and the bucket weights: [M, D]."""
    buckets = byte_table(arrays.nbits)[np.asarray(arrays.residuals)].reshape(len(arrays.codes), -1)
    dims = np.arange(arrays.dim)
    return arrays.centroids[arrays.codes] + arrays.bucket_weights[dims, buckets[:, dims]]


def test_stage_two_scores_are_maxsim_over_undecompressed_tokens(corpus, index, rng, seed):
    """With every centroid probed, stage 2 sees every token, and its lookup-table scores must
    equal MaxSim over centroid + residual (WARP does not renormalise)."""
    arrays = corpus[1]
    queries = queries_like(corpus[0], 4, seed=seed)
    vectors = unnormalised_vectors(arrays)
    offsets = arrays.doc_offsets
    expected = np.stack([
        np.maximum.reduceat(vectors @ q.T, offsets[:-1], axis=0).sum(1) for q in queries
    ])  # fmt: skip
    hits = index.search(queries, k=20, nprobe=arrays.num_centroids, rerank=0)
    for row, hit in zip(expected, hits):
        best = np.argsort(-row, kind="stable")[:20]
        assert [f"doc-{i}" for i in best] == [d for d, _ in hit]
        np.testing.assert_allclose([s for _, s in hit], row[best], rtol=1e-5, atol=1e-5)


def test_stage_two_with_imputation_over_thousands_of_documents(seed):
    """A partial probe over a shard of more than 2,048 documents (uint16 document numbers; at
    32 query tokens an index of document x token overflowed 16 bits there once) must score
    each document as WARP defines it: per query token, the best unnormalised MaxSim over the
    document's tokens under the token's probed centroids, else the best unprobed centroid's
    score; summed. The reference is numpy over every stored token; the search reduces densely
    (a small shard), and the sparse reduction is checked against the dense one."""
    docs = clustered_docs(2200, dim=32, topics=64, seed=seed)
    arrays = build_index(docs, [f"doc-{i}" for i in range(len(docs))], progress=False)
    index = ColBERTIndex(arrays, devices=jax.devices()[:1])
    queries = queries_like(docs, 3, length=32, seed=seed)
    vectors, codes = unnormalised_vectors(arrays), np.asarray(arrays.codes)
    offsets = arrays.doc_offsets
    nprobe = 3
    for query, hit in zip(queries, index.search(queries, k=30, nprobe=nprobe, rerank=0)):
        centroid_scores = query @ arrays.centroids.T  # [Q, C]
        ranked = np.argsort(-centroid_scores, axis=1)
        imputed = centroid_scores[np.arange(len(query)), ranked[:, nprobe]]
        probed = (ranked[:, :nprobe][:, :, None] == codes[None, None, :]).any(1)  # [Q, M]
        sims = np.where(probed.T, vectors @ query.T, -np.inf)
        best = np.maximum.reduceat(sims, offsets[:-1], axis=0)
        expected = np.where(np.isfinite(best), best, imputed[None, :]).sum(1)
        top = np.argsort(-expected, kind="stable")[:30]
        np.testing.assert_allclose([s for _, s in hit], expected[top], rtol=1e-5, atol=1e-4)
        assert {f"doc-{i}" for i in top[:20]} <= {d for d, _ in hit}
    assert_reductions_agree(arrays, queries, nprobe)


def assert_reductions_agree(arrays, queries, nprobe):
    """The dense and the sparse stage-2 reductions score every document alike."""
    shards = warp.place(arrays, sharding.data_mesh(jax.devices()[:1]))
    token_arrays = tuple(a[0] for a in shards.token_arrays)
    centroids, table = warp.centroids_and_table(
        (shards.centroids, shards.centroid_scales, shards.bucket_weights)
    )
    n = shards.docs_per_shard
    for query in jnp.asarray(queries):
        mask = jnp.ones(query.shape[0], bool).at[-5:].set(False)
        cells, scores, imputed = (a[0] for a in warp.best_cells(query[None], centroids, nprobe))
        best = warp.best_per_token(query, cells, scores, mask, token_arrays, table, n)
        dense = warp.dense_document_scores(best, imputed, mask)
        sparse = warp.sparse_document_scores(query, cells, scores, imputed, mask, token_arrays,
                                             table, n)  # fmt: skip
        np.testing.assert_allclose(np.asarray(sparse), np.asarray(dense), rtol=1e-5, atol=1e-4)


def test_reranked_search_equals_exact_search_when_everything_is_probed(corpus, index, seed):
    queries = queries_like(corpus[0], 12, seed=seed)
    exact = index.exact_search(queries, k=10)
    everything = index.search(queries, k=10, nprobe=corpus[1].num_centroids, rerank=300)
    assert ids_of(everything) == ids_of(exact)
    np.testing.assert_allclose(scores_of(everything), scores_of(exact), rtol=1e-5)


def test_defaults_find_what_exact_search_finds(corpus, index, seed):
    queries = queries_like(corpus[0], 24, seed=seed)
    exact = ids_of(index.exact_search(queries, k=10))
    found = ids_of(index.search(queries, k=10))
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, exact)]) >= 0.95


def test_queries_of_different_lengths_in_one_call(corpus, index, rng, seed):
    lengths = rng.integers(1, 12, 5)
    queries = [queries_like(corpus[0], 1, length=int(n), seed=seed + i)[0]
               for i, n in enumerate(lengths)]  # fmt: skip
    for knobs in ({}, {"rerank": 0}):  # rerank=0: the stage-2 scores are the answer
        alone = [index.search(q, k=5, **knobs)[0] for q in queries]
        together = index.search(queries, k=5, **knobs)
        assert ids_of(together) == ids_of(alone), f"lengths {lengths}, {knobs}"
        np.testing.assert_allclose(scores_of(together), scores_of(alone), rtol=1e-5)
    # the same with query_lengths: the padding rows hold garbage that must count for nothing
    padded = rng.standard_normal((5, 12, corpus[1].dim)).astype(np.float32)
    for row, q in zip(padded, queries):
        row[: len(q)] = q
    trimmed = index.search(padded, k=5, query_lengths=lengths, rerank=0)
    assert ids_of(trimmed) == ids_of(alone)
    np.testing.assert_allclose(scores_of(trimmed), scores_of(alone), rtol=1e-5)


def test_trailing_zero_vectors_are_padding(corpus, index, seed):
    """A query padded with zero vectors (an unaugmented encoder's padding) ranks and scores as
    the query without them, and probes no more than it."""
    query = queries_like(corpus[0], 1, length=5, seed=seed)[0]
    padded = np.concatenate([query, np.zeros((11, query.shape[1]), np.float32)])
    for knobs in ({}, {"rerank": 0}):
        alone, with_zeros = index.search(query, k=5, **knobs), index.search(padded, k=5, **knobs)
        assert ids_of(with_zeros) == ids_of(alone), knobs
        np.testing.assert_allclose(scores_of(with_zeros), scores_of(alone), rtol=1e-5)
    _, lengths = index._queries(padded[None], None)
    assert lengths.tolist() == [5]


def test_one_device_and_eight_rank_the_same(corpus, index, seed):
    if len(jax.devices()) < 8:
        pytest.skip("needs XLA_FLAGS=--xla_force_host_platform_device_count=8")
    queries = queries_like(corpus[0], 6, seed=seed)
    eight = ColBERTIndex(corpus[1], devices=jax.devices()[:8])
    for knobs in ({}, {"rerank": 0}, {"nprobe": 2, "rerank": 20}):
        one, many = index.search(queries, k=10, **knobs), eight.search(queries, k=10, **knobs)
        assert ids_of(one) == ids_of(many), knobs
        np.testing.assert_allclose(scores_of(one), scores_of(many), rtol=1e-5)


def test_layout_holds_each_token_once_in_centroid_order(corpus, index):
    arrays, shards = corpus[1], index.warp
    offsets = np.asarray(shards.cell_offsets)[0]
    assert offsets[-1] == arrays.num_embeddings
    # document d's centroid ids, ascending, are its stored ones, and the rows stage 3 reads
    # (its centroid's first row + its row within the centroid) are its tokens, each once
    doc_codes = np.asarray(shards.doc_codes)[0].astype(np.int64)
    cell_rows = np.asarray(shards.doc_cell_rows)[0].astype(np.int64)
    docs = np.asarray(shards.token_docs)[0]
    for d in (0, 17, 299):
        start, stop = arrays.doc_offsets[d], arrays.doc_offsets[d + 1]
        assert doc_codes[start:stop].tolist() == sorted(arrays.codes[start:stop])
        codes = doc_codes[start:stop]
        rows = offsets[codes] + cell_rows[start:stop]
        assert len(set(rows.tolist())) == stop - start
        assert (docs[rows] == d).all()
        assert (rows < offsets[codes + 1]).all()


def test_default_depths_grow_with_k_and_yield_to_explicit_knobs():
    """Probe and rerank depth both grow with k (as colbert-ai's ncells and ndocs do), so a
    top-100 is not searched as shallowly as a top-10; an explicit knob wins."""
    ks = [1, 10, 11, 100, 101, 1000, 5000]
    params = [warp.WarpParams.defaults(k) for k in ks]
    for (k1, a), (k2, b) in zip(zip(ks, params), zip(ks[1:], params[1:])):
        assert a.nprobe <= b.nprobe and a.rerank <= b.rerank, (k1, a, k2, b)
    assert params[ks.index(100)].nprobe > params[ks.index(10)].nprobe
    assert params[-1].rerank >= 5000
    assert warp.WarpParams.defaults(100, nprobe=3, rerank=7) == warp.WarpParams(3, 7)


def test_bad_knobs_are_refused(corpus, index):
    query = queries_like(corpus[0], 1)[0]
    with pytest.raises(InputError, match="nprobe"):
        index.search(query, k=5, nprobe=0)
    with pytest.raises(InputError, match="do not mix"):
        index.search(query, k=5, nprobe=4, ncells=2)
    with pytest.raises(InputError, match="query_lengths"):
        index.search(query[None], k=5, query_lengths=[99])
    with pytest.raises(InputError, match="query_lengths"):
        index.search(np.stack([query, query]), k=5, query_lengths=[3])


def test_padding_rows_and_tokens_probe_nothing(corpus, index):
    """A padded token probes no list: the probed-token total of a query counts real tokens."""
    query = queries_like(corpus[0], 1, length=8)
    mask = np.zeros((1, 8), bool)
    mask[0, :3] = True
    shards = index.warp
    totals = warp.probed_tokens(query, mask, (shards.centroids, shards.centroid_scales), shards.cell_offsets,
                                statics=shards.statics, nprobe=2)  # fmt: skip
    alone = warp.probed_tokens(query[:, :3], mask[:, :3], (shards.centroids, shards.centroid_scales), shards.cell_offsets,
                               statics=shards.statics, nprobe=2)  # fmt: skip
    assert int(totals[0]) == int(alone[0]) > 0
    none = warp.probed_tokens(query, np.zeros_like(mask), (shards.centroids, shards.centroid_scales), shards.cell_offsets,
                              statics=shards.statics, nprobe=2)  # fmt: skip
    assert int(none[0]) == 0


def test_no_compilation_for_a_query_of_repeated_tokens(seed):
    """Warm-up must cover the largest probe a query can make: every token probing the same
    largest lists. A corpus with one crowded direction and a query repeating it."""
    from lateint_jax import compilations
    from lateint_jax.index.base import SearchShape

    rng = np.random.default_rng(seed)
    hub = rng.standard_normal(32).astype(np.float32)
    hub /= np.linalg.norm(hub)
    docs = []
    for _ in range(200):
        tokens = rng.standard_normal((10, 32)).astype(np.float32)
        tokens[:5] = hub + 0.01 * tokens[:5]
        docs.append(tokens / np.linalg.norm(tokens, axis=1, keepdims=True))
    arrays = build_index(docs, [f"d{i}" for i in range(200)], progress=False, seed=seed % 1000)
    index = ColBERTIndex(arrays, devices=jax.devices()[:1])
    index.warmup([SearchShape(batch=1, k=10, query_tokens=8)])
    before = compilations.count()
    index.search(np.repeat(hub[None], 8, axis=0), k=10)
    assert compilations.count() == before, f"seed {seed}"


def test_only_an_index_that_takes_writes_pads_its_token_width(corpus, seed):
    """Read-only: the device holds each shard's tokens exactly. After a write the width is
    rounded up (warp.token_width), so a second small write keeps every array shape (and every
    compiled program)."""
    docs, arrays = corpus
    index = ColBERTIndex(arrays, devices=jax.devices()[:1])
    assert index.warp.token_docs.shape[1] == arrays.num_embeddings
    rng = np.random.default_rng(seed)
    new = [rng.standard_normal((5, docs[0].shape[1])).astype(np.float32) for _ in range(2)]
    index.add(new[:1], ["new-0"])
    width = index.warp.token_docs.shape[1]
    assert width == warp.token_width(arrays.num_embeddings + 5) > arrays.num_embeddings + 5, seed
    index.add(new[1:], ["new-1"])
    assert index.warp.token_docs.shape[1] == width, f"seed {seed}"


def test_a_large_subset_is_searched_by_warp_within_the_subset(corpus, index, monkeypatch, seed):
    """Subsets above SMALL_SUBSET (lowered here) run the WARP program with the rest masked
    out: only listed documents come back, and they agree with exact search over the subset."""
    from lateint_jax.index import colbert_index

    monkeypatch.setattr(colbert_index, "SMALL_SUBSET", 8)
    queries = queries_like(corpus[0], 4, seed=seed)
    rng = np.random.default_rng(seed)
    subset = [f"doc-{i}" for i in sorted(rng.choice(300, 60, replace=False))]
    hits = index.search(queries, k=5, subset_ids=subset)
    exact = index.exact_search(queries, k=5, subset_ids=subset)
    assert all(len(row) == 5 and set(ids_of([row])[0]) <= set(subset) for row in hits), seed
    agree = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(ids_of(hits), ids_of(exact))])
    assert agree >= 0.9, f"top-5 agreement {agree} (seed {seed})"


@pytest.mark.parametrize("columns, k", [(8192, 17), (2048, 5), (4096, 33), (1000, 5)])
def test_top_k_by_blocks_selects_as_lax_top_k(rng, seed, columns, k):
    scores = jnp.asarray(rng.standard_normal((6, columns)).astype(np.float32))
    # ties: one block holds the row's best value several times
    scores = scores.at[0, 64:70].set(10.0)
    best, cells = warp.top_k_by_blocks(scores, k)
    want, want_cells = jax.lax.top_k(scores, k)
    np.testing.assert_array_equal(np.asarray(best), np.asarray(want), err_msg=f"seed {seed}")
    picked = np.take_along_axis(np.asarray(scores), np.asarray(cells), axis=1)
    np.testing.assert_array_equal(picked, np.asarray(want), err_msg=f"seed {seed}")
    same = np.sort(np.asarray(cells)[1:], 1) == np.sort(np.asarray(want_cells)[1:], 1)
    assert same.all(), f"seed {seed}"
