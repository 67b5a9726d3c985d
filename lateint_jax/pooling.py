"""Hierarchical token pooling: fewer vectors per document, PyLate 1.6's rule.

A document's token vectors [T, D] (unit length, as ColBERT gives them) become [T', D]: the first
`protected_tokens` vectors ([CLS]) are kept as they are; the other n are clustered by Ward
linkage on the cosine distance 1 - q.d and cut into max(n // pool_factor, 1) clusters
(scipy's `fcluster`, criterion "maxclust"), and each cluster is replaced by the mean of its
vectors, in cluster-label order. The means are not renormalised (PyLate keeps them as they are:
a cluster of diverging vectors gets a shorter mean, which counts less in MaxSim). A document
with n <= max(n // pool_factor, 1) is returned unchanged. scipy is a dependency of jax.
Shape letters: T tokens, D dim.
"""

from __future__ import annotations

import numpy as np
from scipy.cluster import hierarchy

from lateint_jax.errors import InputError


def pool_document(vectors: np.ndarray, pool_factor: int, protected_tokens: int = 1) -> np.ndarray:
    """[T, D] token vectors -> [T', D], T' = protected + about (T - protected) / pool_factor."""
    vectors = np.asarray(vectors)
    if vectors.ndim != 2:
        raise InputError(f"a document's vectors must be [T, D], got shape {vectors.shape}")
    check_pool_factor(pool_factor)
    if isinstance(protected_tokens, bool) or not isinstance(protected_tokens, int):
        raise InputError(f"protected_tokens must be an int, got {protected_tokens!r}")
    if protected_tokens < 0:
        raise InputError(f"protected_tokens must be >= 0, got {protected_tokens}")
    protected, rest = vectors[:protected_tokens], vectors[protected_tokens:]
    n = len(rest)
    clusters = max(n // pool_factor, 1)
    if clusters >= n:
        return vectors
    rest32 = rest.astype(np.float32)
    distances = 1.0 - rest32 @ rest32.T
    tree = hierarchy.linkage(distances[np.triu_indices(n, k=1)], method="ward")
    labels = hierarchy.fcluster(tree, t=clusters, criterion="maxclust") - 1
    sums = np.zeros((clusters, vectors.shape[1]), np.float32)
    np.add.at(sums, labels, rest32)
    counts = np.bincount(labels, minlength=clusters)
    used = counts > 0  # fcluster may make fewer clusters than asked (ties)
    pooled = sums[used] / counts[used, None]
    return np.concatenate([protected, pooled.astype(vectors.dtype)])


def pool_documents(
    documents: list[np.ndarray], pool_factor: int, protected_tokens: int = 1
) -> list[np.ndarray]:
    """`pool_document` of each [T_i, D] array; pool_factor 1 returns the list as it is."""
    check_pool_factor(pool_factor)
    if pool_factor == 1:
        return list(documents)
    return [pool_document(d, pool_factor, protected_tokens) for d in documents]


def check_pool_factor(pool_factor) -> None:
    if isinstance(pool_factor, bool) or not isinstance(pool_factor, int) or pool_factor < 1:
        raise InputError(f"pool_factor must be an int >= 1, got {pool_factor!r}")
