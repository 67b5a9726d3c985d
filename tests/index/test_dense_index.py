"""Single-vector (bi-encoder) exhaustive search against numpy, with subsets, deletions,
additions, a save/load round trip and bad input."""

import jax
import numpy as np
import pytest

from lateint_jax.errors import InputError
from lateint_jax.index.build import build_dense_index
from lateint_jax.index.colbert_index import ColBERTIndex
from lateint_jax.index.dense_index import DenseIndex
from lateint_jax.index.open import open_index


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((90, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"p{i}" for i in range(90)]
    return vectors, ids, rng.standard_normal((5, 16)).astype(np.float32)


def expected_top(queries, vectors, ids, k, allowed=None):
    scores = queries @ vectors.T
    if allowed is not None:
        scores = np.where(allowed[None], scores, -np.inf)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return [[ids[n] for n in row] for row in order], np.take_along_axis(scores, order, 1)


def test_matches_numpy(data):
    vectors, ids, queries = data
    index = DenseIndex(build_dense_index(vectors, ids), devices=jax.devices())
    hits = index.search(queries, k=6)
    want_ids, want_scores = expected_top(queries, vectors, ids, 6)
    assert [[d for d, _ in row] for row in hits] == want_ids
    np.testing.assert_allclose([[s for _, s in row] for row in hits], want_scores, rtol=1e-5)
    one = index.search(queries[0], k=6)[0]  # one [H] query
    assert [d for d, _ in one] == want_ids[0]


def test_subset_delete_add(data):
    vectors, ids, queries = data
    index = DenseIndex(build_dense_index(vectors, ids), devices=jax.devices()[:2])
    subset = ids[::4]
    allowed = np.isin(ids, subset)
    hits = index.search(queries, k=5, subset_ids=subset)
    assert [[d for d, _ in row] for row in hits] == expected_top(queries, vectors, ids, 5, allowed)[
        0
    ]
    best = sorted({row[0][0] for row in index.search(queries, k=1)})
    index.delete(best)
    assert not {d for row in index.search(queries, k=10) for d, _ in row} & set(best)
    index.add(queries[:1] * 10, ["new"])  # a long copy of query 0 wins it
    assert index.search(queries[:1], k=1)[0][0][0] == "new"
    assert index.num_live == 90 - len(best) + 1


def test_save_and_open_index(data, tmp_path):
    vectors, ids, queries = data
    build_dense_index(vectors, ids, tmp_path / "dense")
    index = open_index(tmp_path / "dense")
    assert isinstance(index, DenseIndex) and not isinstance(index, ColBERTIndex)
    index.delete(["p3"])
    index.save()
    again = DenseIndex.load(tmp_path / "dense")
    assert again.num_live == 89
    assert again.search(queries, k=3) == index.search(queries, k=3)


def test_bad_input(data):
    vectors, ids, queries = data
    index = DenseIndex(build_dense_index(vectors, ids), devices=jax.devices()[:1])
    for k in (0, -2, "3"):
        with pytest.raises(InputError, match="k"):
            index.search(queries, k=k)
    assert {len(row) for row in index.search(queries, k=91)} == {90}  # k beyond: all of them
    with pytest.raises(InputError, match="dim"):
        index.search(np.ones((2, 5), np.float32))
    with pytest.raises(InputError, match="not in the index"):
        index.search(queries, k=1, subset_ids=["zz"])
    with pytest.raises(InputError):
        index.delete(["zz"])
