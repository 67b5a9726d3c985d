"""Bit-packing of residual bucket indices: exact round trips and colbert-ai's bit order."""

import jax
import numpy as np
import pytest

from lateint_jax.codec.bitpack import byte_table, pack_bits, unpack_bits
from lateint_jax.errors import InputError


def reference_pack(indices: np.ndarray, nbits: int) -> np.ndarray:
    """colbert-ai's layout written with numpy: each index as nbits bits, least significant
    first, the whole bit stream packed most significant bit first (np.packbits)."""
    bits = (indices[..., None] >> np.arange(nbits)) & 1
    return np.packbits(bits.reshape(indices.shape[0], -1).astype(np.uint8), axis=1)


@pytest.mark.parametrize("nbits", [1, 2, 4])
@pytest.mark.parametrize("dim", [8, 128])
def test_round_trip_and_layout(nbits, dim):
    rng = np.random.default_rng(nbits * 1000 + dim)
    indices = rng.integers(0, 2**nbits, size=(37, dim)).astype(np.uint8)
    packed = np.asarray(pack_bits(indices, nbits))
    assert packed.dtype == np.uint8 and packed.shape == (37, dim * nbits // 8)
    np.testing.assert_array_equal(packed, reference_pack(indices, nbits))
    np.testing.assert_array_equal(np.asarray(unpack_bits(packed, nbits)), indices)


@pytest.mark.parametrize("nbits", [1, 2, 4])
def test_every_byte_value_round_trips(nbits):
    rng = np.random.default_rng(nbits)
    random_bytes = rng.integers(0, 256, size=(64, 16 * nbits), dtype=np.uint8)
    all_bytes = np.tile(np.arange(256, dtype=np.uint8), (1, 1)).reshape(16, 16)
    for packed in (random_bytes, all_bytes[:, : 16 * nbits // 4 or 1].copy()):
        np.testing.assert_array_equal(
            np.asarray(pack_bits(unpack_bits(packed, nbits), nbits)), packed
        )


@pytest.mark.parametrize("nbits", [1, 2, 4])
def test_byte_table_matches_unpackbits(nbits):
    bits = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1)  # [256, 8] MSB first
    fields = bits.reshape(256, 8 // nbits, nbits)
    expected = (fields << np.arange(nbits)).sum(-1)  # each field is LSB first
    np.testing.assert_array_equal(byte_table(nbits), expected)


def test_jit_and_errors():
    indices = np.random.default_rng(0).integers(0, 4, (5, 16)).astype(np.uint8)
    packed = jax.jit(pack_bits, static_argnums=1)(indices, 2)
    np.testing.assert_array_equal(
        np.asarray(jax.jit(unpack_bits, static_argnums=1)(packed, 2)), indices
    )
    for bad in (0, 3, 8):
        with pytest.raises(InputError, match="nbits"):
            pack_bits(indices, bad)
    with pytest.raises(InputError, match="multiple of 8"):
        pack_bits(indices[:, :3], 2)
    with pytest.raises(InputError, match="rank 2"):
        unpack_bits(np.zeros(4, np.uint8), 2)
