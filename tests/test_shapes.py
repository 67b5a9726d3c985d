"""Shape buckets: the padding each bucket rule promises."""

import pytest

from lateint_jax.shapes import bucket_for, fine_bucket, tight_buckets_up_to


@pytest.mark.parametrize(
    "limit,waste,minimum", [(32, 0.1, 1), (32, 0.1, 8), (1000, 0.1, 1), (64, 0.25, 4)]
)
def test_tight_buckets_pad_at_most_the_promised_share(limit, waste, minimum):
    buckets = tight_buckets_up_to(limit, waste, minimum)
    assert buckets[0] == minimum and buckets[-1] == limit
    assert list(buckets) == sorted(set(buckets))
    for n in range(minimum, limit + 1):
        padded = bucket_for(n, buckets)
        assert n <= padded <= n * (1 + waste), (n, padded, buckets)


def test_tight_buckets_refuse_an_empty_range():
    with pytest.raises(ValueError, match="minimum"):
        tight_buckets_up_to(4, minimum=8)


def test_fine_bucket_is_at_most_a_third_padding():
    for n in range(8, 5000):
        bucket = fine_bucket(n)
        assert n <= bucket and bucket - n <= bucket / 3, (n, bucket)
