"""Hierarchical token pooling (`lateint_jax.pooling`): the cluster rule on vectors whose clusters
are known, and parity with PyLate 1.6's own `encode(..., pool_factor=...)`."""

import numpy as np
import pytest

from lateint_jax.errors import InputError
from lateint_jax.pooling import pool_document, pool_documents
from tests.conftest import seed_note
from tests.models.test_colbert_encoder import ATOL, run_pylate, tiny_colbert


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_well_separated_groups_pool_to_their_means(rng, seed):
    """[CLS] + 3 tight groups of 4 (orthogonal centres): pool_factor 4 keeps [CLS] and the
    three group means, each group whole, in some order."""
    dim, groups = 16, 3
    centres = np.eye(dim)[:groups]
    members = unit(np.repeat(centres, 4, axis=0) + 0.05 * rng.normal(size=(groups * 4, dim)))
    order = rng.permutation(len(members))  # groups interleaved in token order
    cls = unit(rng.normal(size=(1, dim)))
    doc = np.concatenate([cls, members[order]]).astype(np.float32)
    pooled = pool_document(doc, pool_factor=4)
    assert pooled.shape == (1 + groups, dim), seed_note(seed)
    np.testing.assert_array_equal(pooled[0], doc[0])
    want = np.stack([members[4 * g : 4 * g + 4].mean(0) for g in range(groups)])
    got = pooled[1:][np.argsort(np.argmax(pooled[1:], axis=1))]
    np.testing.assert_allclose(got, want, atol=1e-6, err_msg=seed_note(seed))
    assert (np.linalg.norm(got, axis=1) < 1).all()  # means of unit vectors, not renormalised


def test_counts_short_documents_and_factor_one(rng, seed):
    doc = unit(rng.normal(size=(41, 8))).astype(np.float32)
    for factor, protected, want in [(2, 1, 1 + 20), (3, 1, 1 + 13), (2, 0, 20), (40, 1, 2)]:
        assert len(pool_document(doc, factor, protected)) == want, (factor, seed_note(seed))
    short = doc[:3]  # 2 poolable vectors, 2 // 2 = 1 cluster: merged
    assert len(pool_document(short, 2)) == 2
    assert pool_document(doc[:2], 2) is not None and len(pool_document(doc[:2], 2)) == 2
    assert pool_documents([doc, short], 1)[0] is doc  # factor 1: untouched
    with pytest.raises(InputError, match="pool_factor must be an int >= 1"):
        pool_document(doc, 0)
    with pytest.raises(InputError, match=r"must be \[T, D\]"):
        pool_document(doc[None], 2)


def test_matches_pylate_pooling(tmp_path, seed):
    """Our ColBERT.encode_documents(pool_factor=k) against PyLate 1.6's encode(pool_factor=k)
    on the same exported tiny model (the first vector, [CLS], protected in both)."""
    model = tiny_colbert(seed, doc_maxlen=48)
    model.save_pretrained(tmp_path / "pylate", layout="pylate")
    docs = [
        "Honeybees dance to tell nest-mates where the flowers are, and how far away they grow.",
        "word " * 40,
        "short",
    ]
    jobs = [
        {"path": str(tmp_path / "pylate"), "queries": ["q"], "docs": docs, "pool_factor": k}
        for k in (2, 3)
    ]
    ref = run_pylate(jobs, tmp_path)
    for i, job in enumerate(jobs):
        got = model.encode_documents(docs, pool_factor=job["pool_factor"])
        unpooled = model.encode_documents(docs)
        for j, vectors in enumerate(got):
            want = ref[f"{i}_d{j}"]
            assert vectors.shape == want.shape, (i, j, seed_note(seed))
            np.testing.assert_allclose(
                vectors, want, atol=ATOL, err_msg=f"{i} d{j} {seed_note(seed)}"
            )
            expected = 1 + max((len(unpooled[j]) - 1) // job["pool_factor"], 1)
            assert len(vectors) == min(expected, len(unpooled[j]))
