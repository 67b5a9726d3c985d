"""PLAID search against exact MaxSim on synthetic clustered token vectors, stage by stage and
end to end: overlap, subset search, deletions, additions, defaults and bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lateint_jax.errors import InputError
from lateint_jax.index import plaid
from lateint_jax.index.build import build_index
from lateint_jax.index.colbert_index import ColBERTIndex
from lateint_jax.shapes import power_of_two
from tests.synthetic import clustered_docs, queries_like


@pytest.fixture(scope="module")
def corpus():
    docs = clustered_docs(300)
    arrays = build_index(docs, [f"doc-{i}" for i in range(len(docs))], progress=False)
    return docs, arrays


@pytest.fixture(scope="module")
def index(corpus):
    return ColBERTIndex(corpus[1], devices=jax.devices()[:1])


def ids_of(hits):
    return [[doc_id for doc_id, _ in row] for row in hits]


def overlap(a, b):
    return np.mean([len(set(x) & set(y)) / len(y) for x, y in zip(ids_of(a), ids_of(b))])


def test_plaid_finds_what_exact_search_finds(corpus, index):
    queries = queries_like(corpus[0], 24)
    exact = index.exact_search(queries, k=10)
    assert overlap(index.search(queries, k=10, ncells=4), exact) >= 0.95
    # every cell probed, nothing pruned, every candidate kept: PLAID must equal exact MaxSim
    everything = index.search(
        queries, k=10, ncells=corpus[1].num_centroids, centroid_score_threshold=-1e9, ndocs=4096
    )
    assert ids_of(everything) == ids_of(exact)
    np.testing.assert_allclose(
        [[s for _, s in row] for row in everything], [[s for _, s in row] for row in exact],
        rtol=1e-5,
    )  # fmt: skip


def test_scores_are_maxsim_of_decompressed_documents(corpus, index):
    queries = queries_like(corpus[0], 3)
    for query, hits in zip(queries, index.search(queries, k=5, ncells=4)):
        for doc_id, score in hits:
            doc = index.document_vectors(doc_id)
            assert doc.shape == corpus[0][int(doc_id.split("-")[1])].shape
            expected = (query @ doc.T).max(axis=1).sum()
            assert score == pytest.approx(float(expected), rel=1e-5)
        assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)


def test_candidate_bitmap_is_union_of_inverted_lists(corpus):
    arrays = corpus[1]
    rng = np.random.default_rng(0)
    cells = rng.integers(0, arrays.num_centroids, (2, 6)).astype(np.int32)
    cells[1, 4:] = -1  # padding query tokens probe nothing
    sizes = np.sort(np.diff(arrays.ivf_offsets))[::-1]
    entries = power_of_two(int(sizes[:6].sum()))
    pids, offsets = jnp.asarray(arrays.ivf_pids), jnp.asarray(arrays.ivf_offsets)
    for row in cells:
        found = plaid.candidate_bitmap(jnp.asarray(row), pids, offsets, arrays.num_docs, entries)
        expected = np.zeros(arrays.num_docs, bool)
        for c in row[row >= 0]:
            expected[arrays.ivf_pids[arrays.ivf_offsets[c] : arrays.ivf_offsets[c + 1]]] = True
        np.testing.assert_array_equal(np.asarray(found), expected)


def test_probe_cells_are_each_tokens_best_centroids(corpus):
    arrays = corpus[1]
    query = queries_like(corpus[0], 1)[0]
    mask = np.array([True] * 6 + [False] * 2)
    table = plaid.score_table(jnp.asarray(query), jnp.asarray(arrays.centroids))
    cells = np.asarray(plaid.probe_cells(table, jnp.asarray(mask), 3)).reshape(8, 3)
    expected = np.argsort(-(query @ arrays.centroids.T), axis=1)[:, :3]
    np.testing.assert_array_equal(cells[:6], expected[:6])
    assert (cells[6:] == -1).all()


def test_centroid_interaction_matches_numpy(corpus):
    arrays = corpus[1]
    rng = np.random.default_rng(0)
    queries = queries_like(corpus[0], 2)
    masks = np.ones(queries.shape[:2], bool)
    masks[1, 5:] = False
    shards = plaid.place(arrays, plaid.sharding.data_mesh(jax.devices()[:1]))
    codes = jnp.asarray(np.asarray(shards.doc_codes))
    for query, mask in zip(queries, masks):
        scores = query @ arrays.centroids.T  # [Q, C]
        docs = rng.integers(0, arrays.num_docs, 7).astype(np.int32)
        for threshold in (None, 0.5):
            table = plaid.score_table(jnp.asarray(query), jnp.asarray(arrays.centroids))
            if threshold is not None:
                table = plaid.prune(table, threshold)
            got = plaid.centroid_interaction(table, codes, jnp.asarray(docs), jnp.asarray(mask))
            keep = scores.max(0) >= (-np.inf if threshold is None else threshold)
            for j, n in enumerate(docs):
                own = arrays.codes[arrays.doc_offsets[n] : arrays.doc_offsets[n + 1]]
                per_token = np.where(keep[own][None, :], scores[:, own], plaid.PRUNED)
                expected = (per_token.max(1) * mask).sum()
                assert float(got[j]) == pytest.approx(expected, rel=1e-5, abs=1e-3)


def test_colbert_ai_settings_and_ours():
    assert plaid.PlaidParams.colbert_ai(10) == plaid.PlaidParams(1, 0.5, 256)
    assert plaid.PlaidParams.colbert_ai(100) == plaid.PlaidParams(2, 0.45, 1024)
    assert plaid.PlaidParams.colbert_ai(1000) == plaid.PlaidParams(4, 0.4, 4096)
    assert plaid.PlaidParams.colbert_ai(2000).ndocs == 8000
    assert plaid.PlaidParams.defaults(10) == plaid.PlaidParams(2, 0.45, 2048)
    assert plaid.PlaidParams.defaults(100) == plaid.PlaidParams(4, 0.4, 4096)
    assert plaid.PlaidParams.defaults(2000).ndocs == 8000
    assert plaid.PlaidParams.defaults(10, ncells=3).ncells == 3


def test_subset_search_returns_only_the_subset(corpus, index):
    queries = queries_like(corpus[0], 4)
    subset = [f"doc-{i}" for i in range(0, 300, 7)]
    for hits in (index.search(queries, k=5, subset_ids=subset),
                 index.exact_search(queries, k=5, subset_ids=subset)):  # fmt: skip
        assert all(len(row) == 5 and set(ids_of([row])[0]) <= set(subset) for row in hits)
    plaid_hits = index.search(queries, k=5, subset_ids=subset, ncells=4)
    assert overlap(plaid_hits, index.exact_search(queries, k=5, subset_ids=subset)) >= 0.9
    with pytest.raises(InputError, match="not in the index"):
        index.search(queries, k=5, subset_ids=["doc-1", "nope"])
    # k beyond the subset: every subset document, once, best first (PLAID and exact agree)
    pair = ["doc-1", "doc-2"]
    for search in (index.search, index.exact_search):
        hits = search(queries, k=3, subset_ids=pair)
        assert all(sorted(ids_of([row])[0]) == pair for row in hits), hits
    # k beyond the index: every live document
    assert [len(row) for row in index.search(queries, k=400)] == [300] * len(queries)


def test_deleted_and_added_documents(corpus):
    docs, arrays = corpus
    index = ColBERTIndex(arrays, devices=jax.devices()[:1])
    queries = queries_like(docs, 6)
    before = index.search(queries, k=5, ncells=4)
    top = sorted({row[0][0] for row in before})
    index.delete(top)
    for hits in (index.search(queries, k=5, ncells=4), index.exact_search(queries, k=5)):
        assert not set(top) & {d for row in ids_of(hits) for d in row}
    assert index.num_live == 300 - len(top)
    # a new document equal to a query's tokens is that query's best match right away
    index.add([queries[0]], ["fresh"])
    assert index.search(queries[:1], k=1, ncells=4)[0][0][0] == "fresh"
    with pytest.raises(InputError):
        index.delete(["never-there"])


def test_bad_input_is_refused(corpus, index):
    queries = queries_like(corpus[0], 1)
    for k in (0, -1, 2.5, True):
        with pytest.raises(InputError, match="k"):
            index.search(queries, k=k)
    with pytest.raises(InputError, match="dim"):
        index.search(np.ones((1, 4, 7), np.float32))
    with pytest.raises(InputError, match="NaN"):
        index.search(np.full((1, 4, 64), np.nan, np.float32))
    with pytest.raises(InputError, match="shape"):
        index.search(np.ones((1, 2, 3, 64), np.float32))
    one = index.search(queries[0], k=3)  # a single [Q, D] query
    assert ids_of(one) == ids_of(index.search(queries, k=3))
