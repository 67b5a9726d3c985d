"""k-means: determinism, cluster recovery, colbert-ai's centroid-count and sampling rules."""

import numpy as np
import pytest

from lateint_jax.codec.kmeans import (
    assign_nearest,
    default_num_centroids,
    kmeans,
    sample_doc_indices,
)
from lateint_jax.errors import InputError


def clustered(num_clusters=16, per_cluster=200, dim=32, noise=0.05, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(num_clusters, dim))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    labels = np.repeat(np.arange(num_clusters), per_cluster)
    points = centers[labels] + noise * rng.normal(size=(labels.size, dim))
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    return points.astype(np.float32), labels, centers


def test_deterministic_for_a_seed():
    points, _, _ = clustered()
    a = kmeans(points, 32, niters=3, seed=7)
    b = kmeans(points, 32, niters=3, seed=7)
    c = kmeans(points, 32, niters=3, seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_recovers_separated_clusters():
    points, labels, centers = clustered()
    # Random initialisation (as faiss) may split a cluster, so give k-means some slack and
    # check purity: every centroid's points come from one true cluster, every cluster is covered.
    centroids = kmeans(points, 32, niters=10, seed=0)
    np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1.0, rtol=1e-5)
    codes = assign_nearest(points, centroids)
    for c in np.unique(codes):
        assert len(np.unique(labels[codes == c])) == 1
    assert len(np.unique(codes)) >= 16
    similarity = (centroids[codes] * centers[labels]).sum(1)
    assert similarity.min() > 0.95 and similarity.mean() > 0.995


def test_assign_nearest_matches_numpy_argmax():
    rng = np.random.default_rng(1)
    points = rng.normal(size=(1000, 16)).astype(np.float32)
    centroids = rng.normal(size=(300, 16)).astype(np.float32)
    np.testing.assert_array_equal(
        assign_nearest(points, centroids), (points @ centroids.T).argmax(1)
    )


def test_colbert_rules():
    # 2**floor(log2(16 * sqrt(M))): 16 * sqrt(819_767) = 14_486 -> 8192; 16 * sqrt(1000) = 506 -> 256
    assert default_num_centroids(819_767) == 8192
    assert default_num_centroids(1000) == 256
    assert default_num_centroids(1_000_000) == 8192  # 16000
    assert default_num_centroids(4_194_304) == 32768  # exactly 2**15
    # 16 * sqrt(120 * N) passages, all of them for small corpora
    assert len(sample_doc_indices(5183)) == 5183
    big = sample_doc_indices(1_000_000, seed=3)
    assert len(big) == 1 + int(16 * np.sqrt(120 * 1_000_000))
    assert len(np.unique(big)) == len(big)
    np.testing.assert_array_equal(big, sample_doc_indices(1_000_000, seed=3))


def test_bad_input():
    points, _, _ = clustered(num_clusters=2, per_cluster=5)
    with pytest.raises(InputError, match="exceeds"):
        kmeans(points, 11)
    with pytest.raises(InputError, match="non-empty"):
        kmeans(points[:0], 1)
    with pytest.raises(InputError, match="zero token"):
        default_num_centroids(0)
    with pytest.raises(InputError, match="share D"):
        assign_nearest(points, points[:, :3])
