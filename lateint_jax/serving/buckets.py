"""Fixed shape buckets: every array that reaches a compiled function has one of a few shapes.

A request batch of any size is padded up to the next bucket (and split if it is larger than
the biggest one), so the set of compiled programs is fixed at start-up and warm-up can build
all of them before the first request.
"""

from __future__ import annotations

import numpy as np


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


def bucket_for(size: int, buckets: tuple[int, ...]) -> int:
    """The smallest bucket that holds `size` (buckets sorted ascending)."""
    for bucket in buckets:
        if size <= bucket:
            return bucket
    raise ValueError(f"size {size} exceeds the largest bucket {buckets[-1]}")


def chunks(size: int, largest: int) -> list[tuple[int, int]]:
    """(start, stop) slices of at most `largest` covering range(size)."""
    return [(start, min(start + largest, size)) for start in range(0, size, largest)]


def pad_rows(array: np.ndarray, rows: int) -> np.ndarray:
    """Pad axis 0 with zeros up to `rows` ([B, ...] -> [rows, ...])."""
    if array.shape[0] == rows:
        return array
    pad = [(0, rows - array.shape[0])] + [(0, 0)] * (array.ndim - 1)
    return np.pad(array, pad)


def pad_columns(array: np.ndarray, columns: int, value=0) -> np.ndarray:
    """Pad axis 1 with `value` up to `columns` ([B, T] -> [B, columns])."""
    if array.shape[1] == columns:
        return array
    return np.pad(array, [(0, 0), (0, columns - array.shape[1])], constant_values=value)
