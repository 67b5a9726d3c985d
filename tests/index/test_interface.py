"""Both index kinds through the one `Index` interface: open_index picks the kind, the same
calls search/add/delete/save either, small subsets are scored exactly, and warm-up compiles
every program the requested shapes reach (nothing compiles afterwards)."""

import json

import jax
import numpy as np
import pytest

from lateint_jax import compilations, open_index
from lateint_jax.errors import IndexFormatError, InputError
from lateint_jax.index.base import Index, SearchShape
from lateint_jax.index.build import build_dense_index, build_index
from lateint_jax.index.colbert_index import ColBERTIndex
from lateint_jax.index.dense_index import DenseIndex
from lateint_jax.scoring import maxsim
from tests.synthetic import clustered_docs, queries_like

SEED = 11


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A late-interaction and a single-vector index of the same 200 documents, on disk."""
    root = tmp_path_factory.mktemp("indexes")
    docs = clustered_docs(200, dim=32, seed=SEED)
    ids = [f"d{i}" for i in range(len(docs))]
    build_index(docs, ids, root / "colbert", progress=False)
    build_dense_index(np.stack([d.mean(0) for d in docs]), ids, root / "dense")
    return root, docs, ids


def queries_for(index: Index, docs, count: int, seed: int = SEED):
    tokens = queries_like(docs, count, length=8, seed=seed)
    return tokens if index.query_rank == 3 else tokens.mean(1)


@pytest.mark.parametrize("kind, cls", [("colbert", ColBERTIndex), ("dense", DenseIndex)])
def test_open_index_reads_the_kind(saved, kind, cls):
    root, docs, ids = saved
    index = open_index(root / kind)
    assert type(index) is cls and isinstance(index, Index) and index.kind == kind
    assert index.live_ids == ids and index.stats()["documents"] == len(ids)
    hits = index.search(queries_for(index, docs, 3), k=5)
    assert [len(row) for row in hits] == [5, 5, 5]


def test_open_index_refuses_an_unknown_kind(saved, tmp_path):
    root = saved[0]
    folder = tmp_path / "odd"
    folder.mkdir()
    metadata = json.loads((root / "dense" / "metadata.json").read_text())
    (folder / "metadata.json").write_text(json.dumps({**metadata, "kind": "sparse"}))
    with pytest.raises(IndexFormatError, match="unknown kind 'sparse'"):
        open_index(folder)


@pytest.mark.parametrize("kind", ["colbert", "dense"])
def test_delete_add_save_through_the_interface(saved, kind, tmp_path):
    root, docs, ids = saved
    index = open_index(root / kind)
    queries = queries_for(index, docs, 2)
    top = index.search(queries, k=3)[0][0][0]
    index.delete([top])
    assert top not in {d for row in index.search(queries, k=10) for d, _ in row}
    with pytest.raises(InputError, match="not in the index"):
        index.delete([top])
    with pytest.raises(InputError, match="not one string"):
        index.delete(top)
    stored = index.document_vectors(ids[1])
    index.add([docs[0]] if kind == "colbert" else docs[0].mean(0)[None], [top])
    assert top in index and index.num_live == len(ids)
    index.save(tmp_path / kind)
    again = open_index(tmp_path / kind)
    assert again.num_live == len(ids)
    np.testing.assert_allclose(again.document_vectors(ids[1]), stored, atol=1e-6)


def test_small_subsets_are_scored_exactly(saved):
    root, docs, ids = saved
    index = open_index(root / "colbert")
    rng = np.random.default_rng(SEED)
    subset = [ids[i] for i in rng.choice(len(ids), 40, replace=False)]
    queries = queries_for(index, docs, 3)
    hits = index.search(queries, k=7, subset_ids=subset)
    stored = [index.document_vectors(i) for i in subset]
    width = max(len(v) for v in stored)
    padded = np.stack([np.pad(v, ((0, width - len(v)), (0, 0))) for v in stored])
    mask = np.arange(width)[None] < np.array([len(v) for v in stored])[:, None]
    scores = np.asarray(maxsim(queries, padded, mask))
    for row, found in zip(scores, hits):
        order = np.argsort(-row, kind="stable")[:7]
        assert [d for d, _ in found] == [subset[i] for i in order], f"seed={SEED}"
        np.testing.assert_allclose([s for _, s in found], row[order], rtol=1e-5)


@pytest.mark.parametrize("kind", ["colbert", "dense"])
def test_no_compilation_after_warmup(saved, kind):
    root, docs, ids = saved
    # one device: a shard holds every document, so candidate counts reach several widths
    index = open_index(root / kind, devices=jax.devices()[:1])
    shapes = [SearchShape(batch=5, k=k, query_tokens=8, subset=True) for k in (3, 10, 100)]
    index.warmup(shapes)
    before = compilations.count()
    rng = np.random.default_rng(SEED)
    for batch in (1, 2, 3, 5):
        queries = queries_for(index, docs, batch, seed=int(rng.integers(1 << 30)))
        for k in (3, 10, 100):
            index.search(queries, k=k)
            small = [ids[i] for i in rng.choice(200, 120, replace=False)]  # scored exactly
            index.search(queries, k=k, subset_ids=small)
            index.search(queries, k=k, subset_ids=ids[:190])
    assert compilations.count() == before, f"a search compiled after warm-up (seed={SEED})"
