"""Residual codec: bucket fitting, compression, decompression against a numpy reference."""

import jax
import numpy as np
import pytest

from lateint_jax.codec.bitpack import pack_bits, pack_fields, unpack_fields
from lateint_jax.codec.kmeans import assign_nearest, kmeans
from lateint_jax.codec.residual import compress, decompress, fit_buckets
from lateint_jax.errors import InputError


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(32, 64))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    points = centers[rng.integers(0, 32, 4000)] + 0.2 / 8 * rng.normal(size=(4000, 64))
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    points = points.astype(np.float32)
    centroids = kmeans(points, 64, niters=4, seed=0)
    return points, centroids


def reference_decode(centroids, weights, codes, packed, nbits):
    """Independent numpy decoder: unpack bits one by one, look up per-dimension values."""
    bits = np.unpackbits(packed, axis=1).reshape(len(codes), -1, nbits)
    indices = (bits << np.arange(nbits)).sum(-1)  # [M, D]
    residual = np.take_along_axis(weights[None], indices[..., None], axis=2)[..., 0]
    vectors = centroids[codes] + residual
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_fit_buckets_are_per_dimension_quantiles():
    rng = np.random.default_rng(1)
    residuals = rng.normal(size=(2000, 8)) * np.arange(1, 9)  # each dim its own spread
    cutoffs, weights = fit_buckets(residuals, 2)
    assert cutoffs.shape == (8, 3) and weights.shape == (8, 4)
    np.testing.assert_allclose(cutoffs[:, 1], np.median(residuals, axis=0), rtol=1e-5)
    assert (np.diff(cutoffs, axis=1) > 0).all() and (np.diff(weights, axis=1) > 0).all()
    # a wider dimension gets wider buckets
    assert (np.diff(cutoffs[:, [0, 2]], axis=1)[:, 0] > 0).all()
    assert cutoffs[7, 2] - cutoffs[7, 0] > 5 * (cutoffs[0, 2] - cutoffs[0, 0])


@pytest.mark.parametrize(
    "nbits,mean_cos,max_rel_err", [(1, 0.97, 0.75), (2, 0.98, 0.55), (4, 0.99, 0.3)]
)
def test_round_trip_error_bounds(data, nbits, mean_cos, max_rel_err):
    points, centroids = data
    nearest = assign_nearest(points, centroids)
    residuals = points - centroids[nearest]
    cutoffs, weights = fit_buckets(residuals[:1000], nbits)
    codes, packed = compress(points, centroids, cutoffs, nbits)
    np.testing.assert_array_equal(codes, nearest)
    decoded = np.asarray(
        jax.jit(decompress, static_argnames="nbits")(centroids, weights, codes, packed, nbits=nbits)
    )
    np.testing.assert_allclose(
        decoded, reference_decode(centroids, weights, codes, packed, nbits), atol=1e-6
    )
    np.testing.assert_allclose(np.linalg.norm(decoded, axis=1), 1.0, rtol=1e-5)
    cos = (decoded * points).sum(1)
    # error relative to the residual the codec had to describe (centroid alone = 1.0)
    rel = np.linalg.norm(decoded - points, axis=1).mean() / np.linalg.norm(residuals, axis=1).mean()
    assert cos.mean() > mean_cos and rel < max_rel_err, (cos.mean(), rel)
    # each decoded per-dimension value sits in the bucket the true residual fell in
    inner = (residuals > cutoffs[:, 0]) & (residuals < cutoffs[:, -1])
    lo = np.concatenate([cutoffs[:, :1], cutoffs], axis=1)
    hi = np.concatenate([cutoffs, cutoffs[:, -1:]], axis=1)
    bits = np.unpackbits(packed, axis=1).reshape(len(codes), -1, nbits)
    idx = (bits << np.arange(nbits)).sum(-1)
    d = np.arange(points.shape[1])
    assert ((residuals >= lo[d, idx] - 1e-7) & (residuals <= hi[d, idx] + 1e-7))[inner].all()


def test_more_bits_less_error(data):
    points, centroids = data
    residuals = points - centroids[assign_nearest(points, centroids)]
    errors = []
    for nbits in (1, 2, 4):
        cutoffs, weights = fit_buckets(residuals, nbits)
        codes, packed = compress(points, centroids, cutoffs, nbits)
        decoded = np.asarray(decompress(centroids, weights, codes, packed, nbits))
        errors.append(np.linalg.norm(decoded - points, axis=1).mean())
    assert errors[0] > errors[1] > errors[2]


def test_bad_nbits(data):
    points, centroids = data
    with pytest.raises(InputError, match="nbits"):
        fit_buckets(points, 3)
    with pytest.raises(InputError, match="nbits"):
        compress(points, centroids, np.zeros((64, 7), np.float32), 3)


@pytest.mark.parametrize("nbits", [1, 2, 3, 4, 6, 8])
@pytest.mark.parametrize("count", [1, 5, 16, 128])
def test_pack_fields_round_trip_and_bit_order(nbits, count):
    rng = np.random.default_rng(nbits * 1000 + count)
    values = rng.integers(0, 1 << nbits, size=(7, count)).astype(np.uint8)
    packed = pack_fields(values, nbits)
    assert packed.dtype == np.uint8 and packed.shape == (7, -(-count * nbits // 8))
    np.testing.assert_array_equal(unpack_fields(packed, nbits, count), values)
    if nbits in (1, 2, 4) and (count * nbits) % 8 == 0:  # the residual layout, same bits
        np.testing.assert_array_equal(packed, np.asarray(pack_bits(values, nbits)))
    with pytest.raises(InputError):
        unpack_fields(packed[:, :-1], nbits, count)
