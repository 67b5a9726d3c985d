"""Bit-packing of residual bucket indices into uint8, pure jnp.

Layout (the same bit order as colbert-ai's residual codec): for each token vector the bucket
index of dimension d is written as `nbits` bits, least significant bit first; the resulting bit
stream (dimension 0 first) is packed into bytes most significant bit first, like `np.packbits`.
A byte therefore holds 8 // nbits consecutive dimensions.

Unpacking goes through a 256-entry table (byte value -> the 8 // nbits indices it holds), so it
is a single gather, as fast-plaid does.

Shapes: M token vectors, D embedding dim.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from lateint_jax.errors import InputError

SUPPORTED_NBITS = (1, 2, 4)


def check_nbits(nbits: int) -> int:
    """Return nbits if it is 1, 2 or 4; raise InputError otherwise."""
    if nbits not in SUPPORTED_NBITS:
        raise InputError(f"nbits must be one of {SUPPORTED_NBITS}, got {nbits!r}")
    return int(nbits)


def _reverse_bits(values: np.ndarray, nbits: int) -> np.ndarray:
    out = np.zeros_like(values)
    for bit in range(nbits):
        out |= ((values >> bit) & 1) << (nbits - 1 - bit)
    return out


def byte_table(nbits: int) -> np.ndarray:
    """[256, 8 // nbits] uint8: the bucket indices held by each possible byte value."""
    check_nbits(nbits)
    per_byte = 8 // nbits
    byte = np.arange(256, dtype=np.uint8)[:, None]
    shifts = (8 - nbits * (np.arange(per_byte, dtype=np.uint8) + 1))[None, :]
    fields = (byte >> shifts) & ((1 << nbits) - 1)  # [256, per_byte], MSB-first fields
    return _reverse_bits(fields, nbits).astype(np.uint8)  # each field stores its index LSB first


def packed_width(dim: int, nbits: int) -> int:
    """Bytes per token vector: D * nbits / 8 (D must make that whole)."""
    check_nbits(nbits)
    if (dim * nbits) % 8:
        raise InputError(f"dim * nbits must be a multiple of 8, got dim={dim}, nbits={nbits}")
    return dim * nbits // 8


def pack_bits(indices: jnp.ndarray, nbits: int) -> jnp.ndarray:
    """Pack bucket indices [M, D] (values < 2**nbits) into [M, D * nbits // 8] uint8."""
    if indices.ndim != 2:
        raise InputError(f"indices must have rank 2 [M, D], got shape {tuple(indices.shape)}")
    m, d = indices.shape
    width = packed_width(d, nbits)
    per_byte = 8 // nbits
    idx = jnp.asarray(indices).astype(jnp.uint32).reshape(m, width, per_byte)
    reversed_idx = jnp.zeros_like(idx)
    for bit in range(nbits):
        reversed_idx = reversed_idx | (((idx >> bit) & 1) << (nbits - 1 - bit))
    shifts = jnp.asarray(8 - nbits * (np.arange(per_byte) + 1), jnp.uint32)
    return (reversed_idx << shifts).sum(axis=-1).astype(jnp.uint8)


def unpack_bits(packed: jnp.ndarray, nbits: int) -> jnp.ndarray:
    """Unpack [M, D * nbits // 8] uint8 into bucket indices [M, D] uint8 (one table gather)."""
    if packed.ndim != 2:
        raise InputError(f"packed must have rank 2 [M, bytes], got shape {tuple(packed.shape)}")
    table = jnp.asarray(byte_table(nbits))  # [256, per_byte]
    m, width = packed.shape
    return table[packed.astype(jnp.int32)].reshape(m, width * (8 // nbits))


def pack_fields(values: np.ndarray, nbits: int) -> np.ndarray:
    """Pack unsigned fields [R, F] (values < 2**nbits, 1 <= nbits <= 8) into [R, ceil(F * nbits
    / 8)] uint8, numpy. Same bit order as pack_bits: each field least significant bit first,
    fields one after the other, the stream packed most significant bit first (np.packbits); the
    last byte of a row is zero-padded. Used for the centroid rows (codec.codes_io)."""
    values = np.asarray(values)
    if values.ndim != 2 or not 1 <= nbits <= 8:
        raise InputError(f"need [R, F] fields of 1 to 8 bits, got {values.shape}, nbits={nbits}")
    rows, count = values.shape
    shifts = np.arange(nbits, dtype=np.uint8)
    bits = (values.astype(np.uint8)[:, :, None] >> shifts) & 1  # [R, F, nbits], LSB first
    return np.packbits(bits.reshape(rows, count * nbits), axis=1)


def unpack_fields(packed: np.ndarray, nbits: int, count: int) -> np.ndarray:
    """Inverse of pack_fields: [R, ceil(count * nbits / 8)] uint8 -> [R, count] uint8."""
    packed = np.asarray(packed, np.uint8)
    if packed.ndim != 2 or packed.shape[1] != -(-count * nbits // 8):
        raise InputError(
            f"packed fields must be [R, {-(-count * nbits // 8)}] for {count} fields of {nbits} "
            f"bits, got shape {packed.shape}"
        )
    bits = np.unpackbits(packed, axis=1, count=count * nbits).reshape(-1, count, nbits)
    weights = (1 << np.arange(nbits, dtype=np.uint16)).astype(np.uint16)
    return (bits.astype(np.uint16) * weights).sum(axis=-1).astype(np.uint8)
