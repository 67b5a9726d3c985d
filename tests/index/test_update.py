"""Adding and deleting documents: codes against the existing codec, ids, inverted lists."""

import numpy as np
import pytest

from lateint_jax.codec.kmeans import assign_nearest
from lateint_jax.errors import InputError
from lateint_jax.index.build import build_index
from lateint_jax.index.layout import build_ivf
from lateint_jax.index.storage import load_index, save_index
from lateint_jax.index.update import add_documents, compact, delete_documents
from tests.synthetic import decoded_docs, synthetic_docs


@pytest.fixture(scope="module")
def base():
    docs, ids = synthetic_docs(num_docs=80, dim=32, seed=5)
    return build_index(docs, ids, None, num_centroids=256, progress=False)


def test_add_uses_existing_codec(base):
    new_docs, _ = synthetic_docs(num_docs=5, dim=32, seed=6)
    new_ids = ["new-a", "new-b", "new-c", "new-d", "new-e"]
    added = add_documents(base, new_docs, new_ids)
    added.validate()
    assert added.doc_ids == base.doc_ids + new_ids
    np.testing.assert_array_equal(added.centroids, base.centroids)
    np.testing.assert_array_equal(added.bucket_cutoffs, base.bucket_cutoffs)
    np.testing.assert_array_equal(added.codes[: base.num_embeddings], base.codes)
    tail = added.codes[base.num_embeddings :]
    expected = np.concatenate([np.sort(assign_nearest(d, base.centroids)) for d in new_docs])
    np.testing.assert_array_equal(tail, expected)
    decoded = decoded_docs(added)[base.num_docs :]
    for original, approx in zip(new_docs, decoded):
        assert (original @ approx.T).max(axis=1).min() > 0.95
    ivf = build_ivf(added.codes, added.doc_offsets, added.num_centroids)
    np.testing.assert_array_equal(added.ivf_pids, ivf[0])
    np.testing.assert_array_equal(added.ivf_offsets, ivf[1])


def test_delete_then_readd(base, tmp_path):
    deleted = delete_documents(base, ["doc-3", "doc-10"])
    assert deleted.deleted.sum() == 2 and deleted.deleted[[3, 10]].all()
    assert not np.isin(deleted.ivf_pids, [3, 10]).any()
    assert base.deleted.sum() == 0  # the input is not modified
    save_index(deleted, tmp_path / "index")
    reloaded = load_index(tmp_path / "index")
    np.testing.assert_array_equal(reloaded.deleted, deleted.deleted)
    np.testing.assert_array_equal(reloaded.ivf_pids, deleted.ivf_pids)
    assert reloaded.metadata["num_deleted"] == 2

    doc, _ = synthetic_docs(num_docs=1, dim=32, seed=9)
    readded = add_documents(deleted, doc, ["doc-3"])  # compacts, then appends
    assert readded.num_docs == base.num_docs - 1 and not readded.deleted.any()
    assert readded.doc_ids[-1] == "doc-3" and "doc-10" not in readded.doc_ids
    assert readded.doc_ids.count("doc-3") == 1


def test_compact_keeps_live_documents(base):
    deleted = delete_documents(base, ["doc-0", "doc-79"])
    compacted = compact(deleted)
    assert compacted.doc_ids == base.doc_ids[1:79]
    np.testing.assert_array_equal(compacted.doc_lengths, base.doc_lengths[1:79])
    np.testing.assert_array_equal(
        compacted.residuals, base.residuals[base.doc_offsets[1] : base.doc_offsets[79]]
    )


def test_bad_updates(base):
    doc, _ = synthetic_docs(num_docs=1, dim=32, seed=7)
    with pytest.raises(InputError, match="already in the index: 'doc-1'"):
        add_documents(base, doc, ["doc-1"])
    with pytest.raises(InputError, match="duplicate document ids"):
        add_documents(base, doc + doc, ["x", "x"])
    with pytest.raises(InputError, match="has dim 16"):
        add_documents(base, [np.ones((3, 16), np.float32)], ["y"])
    with pytest.raises(InputError, match="zero token vectors"):
        add_documents(base, [np.ones((0, 32), np.float32)], ["z"])
    with pytest.raises(InputError, match="no documents"):
        add_documents(base, [], [])
    with pytest.raises(InputError, match="not in the index: 'nope'"):
        delete_documents(base, ["doc-1", "nope"])
    gone = delete_documents(base, ["doc-1"])
    with pytest.raises(InputError, match="not in the index: 'doc-1'"):
        delete_documents(gone, ["doc-1"])
