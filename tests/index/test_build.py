"""build_index: compression quality, inverted lists, ids, and bad input."""

import numpy as np
import pytest

from lateint_jax.errors import InputError
from lateint_jax.index import build
from lateint_jax.index.build import build_dense_index, build_index
from tests.synthetic import decoded_docs, synthetic_docs


@pytest.fixture(scope="module")
def corpus():
    return synthetic_docs(num_docs=150, dim=32, seed=3)


@pytest.fixture(scope="module")
def built(corpus):
    docs, ids = corpus
    return build_index(docs, ids, None, num_centroids=256, progress=False)


def maxsim(query, doc):
    return (query @ doc.T).max(axis=1).sum()


def test_shapes_ids_and_lengths(built, corpus):
    docs, ids = corpus
    built.validate()
    assert built.doc_ids == ids and built.num_docs == len(docs)
    np.testing.assert_array_equal(built.doc_lengths, [len(d) for d in docs])
    assert built.codes.dtype == np.int32 and built.residuals.dtype == np.uint8
    assert built.residuals.shape == (sum(map(len, docs)), 32 * 2 // 8)
    assert built.metadata["build"]["num_centroids"] == 256 and not built.deleted.any()


def test_tokens_sorted_by_code_and_decoded_close(built, corpus):
    docs, _ = corpus
    decoded = decoded_docs(built)
    best = []
    for n, (original, approx) in enumerate(zip(docs, decoded)):
        codes = built.codes[built.doc_offsets[n] : built.doc_offsets[n + 1]]
        assert (np.diff(codes) >= 0).all()
        # token order changed, the set did not: each original token has a close decoded twin
        best.append((original @ approx.T).max(axis=1))
    best = np.concatenate(best)
    # (256 centroids for 24 true clusters: random initialisation, as faiss, covers them all)
    assert best.min() > 0.99, best.min()
    # queries made of a document's own (perturbed) tokens still find that document first
    rng = np.random.default_rng(0)
    targets = [n for n, d in enumerate(docs) if len(d) >= 8][:6]
    queries = [docs[n][:8] + 0.05 * rng.normal(size=(8, 32)) for n in targets]
    exact = np.array([[maxsim(q, d) for d in docs] for q in queries])
    approx = np.array([[maxsim(q, d) for d in decoded] for q in queries])
    assert np.abs(exact - approx).max() < 0.02 * np.abs(exact).max()
    np.testing.assert_array_equal(approx.argmax(axis=1), targets)


def test_inverted_lists_match_brute_force(built):
    for c in range(built.num_centroids):
        expected = np.unique(
            [
                n
                for n in range(built.num_docs)
                if (built.codes[built.doc_offsets[n] : built.doc_offsets[n + 1]] == c).any()
            ]
        )
        got = built.ivf_pids[built.ivf_offsets[c] : built.ivf_offsets[c + 1]]
        np.testing.assert_array_equal(got, expected.astype(np.int32))


def test_deterministic(corpus, built):
    docs, ids = corpus
    again = build_index(docs, ids, None, num_centroids=256, progress=False)
    np.testing.assert_array_equal(again.centroids, built.centroids)
    np.testing.assert_array_equal(again.residuals, built.residuals)


def test_default_centroid_count_and_nbits(corpus):
    docs, ids = corpus
    arrays = build_index(docs[:60], ids[:60], None, nbits=4, progress=False)
    m = arrays.num_embeddings
    assert arrays.num_centroids == min(2 ** int(np.floor(np.log2(16 * np.sqrt(m)))), m)
    assert arrays.residuals.shape[1] == 32 * 4 // 8


def test_bad_input(corpus, tmp_path):
    docs, ids = corpus
    small, small_ids = docs[:10], ids[:10]
    cases = [
        (([], []), {}, "corpus is empty"),
        ((small, small_ids[:9]), {}, "10 documents but 9 ids"),
        ((small, small_ids[:9] + [small_ids[0]]), {}, "duplicate document ids: 'doc-0'"),
        ((small, small_ids[:9] + [7]), {}, "non-empty strings"),
        (
            (small[:9] + [np.zeros((0, 32), np.float32)], small_ids),
            {},
            "'doc-9' has zero token vectors",
        ),
        ((small[:9] + [np.ones((2, 16), np.float32)], small_ids), {}, "'doc-9' has dim 16"),
        ((small[:9] + [np.full((2, 32), np.nan, np.float32)], small_ids), {}, "'doc-9' has NaN"),
        ((small, small_ids), {"nbits": 3}, "nbits must be one of"),
        ((small, small_ids), {"num_centroids": 10**6}, "num_centroids must be between"),
    ]
    for args, kwargs, message in cases:
        with pytest.raises(InputError, match=message):
            build_index(*args, None, progress=False, **kwargs)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="already exists"):
        build_index(small, small_ids, tmp_path / "taken", progress=False)


def test_non_index_target_refused_before_any_work(corpus, tmp_path, monkeypatch):
    """--overwrite on a folder of the user's own files fails at once, not after the k-means."""
    docs, ids = corpus
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")

    def no_training(*args, **kwargs):
        raise AssertionError("the codec was trained before the target was checked")

    monkeypatch.setattr(build, "train_codec", no_training)
    with pytest.raises(InputError, match="refusing to replace"):
        build_index(docs[:10], ids[:10], tmp_path / "mine", overwrite=True, progress=False)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine"


def test_dense_bad_input():
    with pytest.raises(InputError, match="non-empty"):
        build_dense_index(np.zeros((0, 4)), [])
    with pytest.raises(InputError, match="duplicate"):
        build_dense_index(np.zeros((2, 4)), ["a", "a"])
