"""Shape buckets and padding: every array that reaches a compiled function has one of a few
shapes, so the set of compiled programs is fixed and warm-up can build all of them.

A batch of any size is padded up to the next bucket (and split when larger than the biggest);
searches round their static sizes (batch, query tokens, candidate counts) with `power_of_two`
or the finer `fine_bucket`.
"""

from __future__ import annotations

import numpy as np


def power_of_two(n: int, minimum: int = 1) -> int:
    """Next power of two >= max(n, minimum)."""
    n = max(int(n), int(minimum), 1)
    return 1 << (n - 1).bit_length()


def fine_bucket(n: int, minimum: int = 1) -> int:
    """Next size of the form 2**j or 3 * 2**(j-1) >= max(n, minimum): at most a third wasted,
    for sizes where the work is proportional to the size."""
    power = power_of_two(n, minimum)
    three_quarters = power // 4 * 3
    return three_quarters if three_quarters >= max(int(n), int(minimum)) and power >= 8 else power


def fine_buckets_up_to(limit: int, minimum: int = 1) -> tuple[int, ...]:
    """Every value `fine_bucket(n, minimum)` takes for n in [1, limit], ascending."""
    values, n = [], 1
    while True:
        values.append(fine_bucket(n, minimum))
        if values[-1] >= limit:
            return tuple(values)
        n = values[-1] + 1


def powers_of_two_up_to(limit: int) -> tuple[int, ...]:
    """(1, 2, 4, ..., limit); `limit` itself is always included."""
    if limit < 1:
        raise ValueError(f"bucket limit must be >= 1, got {limit}")
    sizes, size = [], 1
    while size < limit:
        sizes.append(size)
        size *= 2
    sizes.append(limit)
    return tuple(sizes)


def powers_of_four_up_to(limit: int) -> tuple[int, ...]:
    """(1, 4, 16, ..., limit): few batch buckets, so warm-up stays short."""
    return (*(b for b in powers_of_two_up_to(limit) if b & 0x55555555 and b < limit), limit)


def tight_buckets_up_to(limit: int, waste: float = 0.1, minimum: int = 1) -> tuple[int, ...]:
    """Ascending sizes from `minimum` to `limit` such that padding any n in [minimum, limit]
    up to its bucket adds at most `waste` * n padded rows: for batches whose padded rows cost
    as much as real ones (an encoder's), a few more programs instead of up to 3x the work."""
    if limit < minimum or minimum < 1:
        raise ValueError(f"need 1 <= minimum <= limit, got minimum={minimum}, limit={limit}")
    sizes = [int(minimum)]
    while sizes[-1] < limit:
        sizes.append(min(limit, max(sizes[-1] + 1, int((1 + waste) * (sizes[-1] + 1)))))
    return tuple(sizes)


def bucket_for(size: int, buckets: tuple[int, ...]) -> int:
    """The smallest bucket that holds `size` (buckets sorted ascending)."""
    for bucket in buckets:
        if size <= bucket:
            return bucket
    raise ValueError(f"size {size} exceeds the largest bucket {buckets[-1]}")


def chunks(size: int, largest: int) -> list[tuple[int, int]]:
    """(start, stop) slices of at most `largest` covering range(size)."""
    return [(start, min(start + largest, size)) for start in range(0, size, largest)]


def padded_size(n: int, shards: int, multiple: int = 1) -> int:
    """Smallest size >= max(n, 1) that splits evenly into `shards` parts of a `multiple`."""
    step = shards * multiple
    return max(step, -(-n // step) * step)


def pad_axis(array: np.ndarray, size: int, axis: int = 0, value=0) -> np.ndarray:
    """Pad `array` along `axis` with `value` up to `size` entries."""
    extra = size - array.shape[axis]
    if extra < 0:
        raise ValueError(f"cannot pad axis {axis} of {array.shape} down to {size}")
    if extra == 0:
        return array
    widths = [(0, 0)] * array.ndim
    widths[axis] = (0, extra)
    return np.pad(array, widths, constant_values=value)
