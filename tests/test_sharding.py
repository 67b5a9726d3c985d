"""The index split over the 8 fake CPU devices ranks exactly as on one device, and repeated
searches within a shape bucket do not recompile."""

import jax
import numpy as np
import pytest

from lateint_jax import compilations, shapes, sharding
from lateint_jax.index.build import build_dense_index, build_index
from lateint_jax.index.colbert_index import ColBERTIndex
from lateint_jax.index.dense_index import DenseIndex
from tests.synthetic import clustered_docs, queries_like


@pytest.fixture(scope="module")
def corpus():
    docs = clustered_docs(203, seed=3)  # not a multiple of 8: the last shard is padded
    return docs, build_index(docs, [f"d{i}" for i in range(len(docs))], progress=False)


def test_eight_devices_are_available():
    assert len(jax.devices()) == 8, "tests/conftest.py should fake 8 CPU devices"


def test_mesh_and_placement():
    mesh = sharding.data_mesh()
    assert mesh.axis_names == ("data",) and sharding.num_shards(mesh) == 8
    placed = sharding.shard_along(np.arange(16 * 3).reshape(16, 3), mesh)
    assert len(placed.addressable_shards) == 8
    assert placed.addressable_shards[1].data.shape == (2, 3)
    assert shapes.padded_size(203, 8, 16) == 256


def test_one_and_eight_devices_rank_identically(corpus):
    docs, arrays = corpus
    one = ColBERTIndex(arrays, devices=jax.devices()[:1])
    eight = ColBERTIndex(arrays, devices=jax.devices())
    assert eight.shards.doc_codes.sharding.mesh.devices.size == 8
    queries = queries_like(docs, 5, seed=4)
    subset = [f"d{i}" for i in range(0, 203, 3)]
    for search in (
        lambda ix: ix.search(queries, k=10),
        lambda ix: ix.search(queries, k=20, ncells=3, centroid_score_threshold=0.3, ndocs=64),
        lambda ix: ix.search(queries, k=5, subset_ids=subset),
        lambda ix: ix.exact_search(queries, k=10),
    ):
        a, b = search(one), search(eight)
        assert [[d for d, _ in row] for row in a] == [[d for d, _ in row] for row in b]
        np.testing.assert_allclose(
            [[s for _, s in row] for row in a], [[s for _, s in row] for row in b], rtol=1e-6
        )


def test_dense_one_and_eight_devices_rank_identically():
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((203, 24)).astype(np.float32)
    arrays = build_dense_index(vectors, [f"v{i}" for i in range(203)])
    queries = rng.standard_normal((3, 24)).astype(np.float32)
    a = DenseIndex(arrays, devices=jax.devices()[:1]).search(queries, k=7)
    b = DenseIndex(arrays, devices=jax.devices()).search(queries, k=7)
    assert [[d for d, _ in row] for row in a] == [[d for d, _ in row] for row in b]
    # matrix products of another shape may round differently in the last bit
    np.testing.assert_allclose([[s for _, s in r] for r in a], [[s for _, s in r] for r in b], 1e-6)


def test_searches_within_a_bucket_do_not_recompile(corpus):
    docs, arrays = corpus
    index = ColBERTIndex(arrays, devices=jax.devices())
    queries = queries_like(docs, 16, length=32, seed=5)  # 32 tokens, as ColBERT queries
    index.search(queries[:4], k=10, ncells=2)  # warm up: compiles the batch-4 bucket
    index.exact_search(queries[:4], k=10)
    before = compilations.count()
    for start, size in ((4, 3), (7, 4), (11, 3)):  # other queries, batch sizes 3 and 4 -> bucket 4
        index.search(queries[start : start + size], k=10, ncells=2)
        index.exact_search(queries[start : start + size], k=10)
    index.search(queries[:4], k=10, ncells=2, centroid_score_threshold=0.3)  # a traced knob
    assert compilations.count() == before
    index.search(queries[:5], k=10, ncells=2)  # batch 5 is a new bucket: compiles
    assert compilations.count() > before
