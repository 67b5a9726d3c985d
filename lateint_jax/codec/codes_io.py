"""Compact on-disk encodings of the centroid id of every token vector.

MaxSim ignores the order of a document's tokens, so the index stores each document's tokens
sorted by centroid id (build does the sorting). The ids of a document then form a
non-decreasing run whose gaps are small (about C / T on average). Each gap g is coded in two
bit streams, whichever of these two codes (and parameter K) is smaller for the index:
  Rice-K: unary(g >> K) (that many 0s, then a 1) + the K low bits of g;
  exp-Golomb-K: with x = g + 2**K of b bits, unary(b - K - 1) + the b - 1 low bits of x.
Exp-Golomb suits the mix of tiny gaps (frequent centroids, numbered first) and large ones.
Decoding is vectorised numpy (unpackbits + flatnonzero + cumsum).

Encodings (named in metadata `codes_encoding`):
  "uint16" / "int32"   codes.npy, one id per token vector in stored order
  "rice-K", "expgolomb-K"
                       codes.unary.npy (uint8 bit stream), codes.low.npy (uint8 bit stream)

Shapes: M token vectors, N documents, C centroids.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lateint_jax.codec.bitpack import pack_fields, unpack_fields
from lateint_jax.errors import IndexFormatError


@dataclass
class EncodedCodes:
    encoding: str
    arrays: dict[str, np.ndarray]


def file_names(encoding: str) -> list[str]:
    """The files that hold codes in the given encoding."""
    if encoding in ("uint16", "int32"):
        return ["codes.npy"]
    if encoding.startswith(("rice-", "expgolomb-")):
        return ["codes.unary.npy", "codes.low.npy"]
    raise IndexFormatError(f"unknown codes_encoding {encoding!r}")


def _gaps(codes: np.ndarray, doc_offsets: np.ndarray) -> np.ndarray | None:
    """codes [M] -> gap to the previous id of the same document (first id: gap from 0), or
    None when some document's ids are not sorted."""
    codes = codes.astype(np.int64)
    previous = np.concatenate([[0], codes[:-1]])
    starts = doc_offsets[:-1][np.diff(doc_offsets) > 0]
    previous[starts] = 0
    gaps = codes - previous
    return gaps if (gaps >= 0).all() else None


def _bit_length(x: np.ndarray) -> np.ndarray:
    """Bits of each positive int64 (exact below 2**52)."""
    return np.floor(np.log2(x.astype(np.float64))).astype(np.int64) + 1


def _sizes(gaps: np.ndarray) -> dict[str, int]:
    """Total bits of every candidate code of the gaps."""
    sizes = {}
    for k in range(17):
        sizes[f"rice-{k}"] = int((gaps >> k).sum()) + gaps.size * (k + 1)
        prefix = _bit_length(gaps + (1 << k)) - k - 1
        sizes[f"expgolomb-{k}"] = int(2 * prefix.sum()) + gaps.size * (k + 1)
    return sizes


def _unary(counts: np.ndarray) -> np.ndarray:
    ones = np.cumsum(counts + 1) - 1  # each value: that many zeros, then a one
    bits = np.zeros(int(ones[-1]) + 1, np.uint8)
    bits[ones] = 1
    return np.packbits(bits)


def _fields(values: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """Concatenate the `widths[i]` low bits of values[i] (least significant first), packed."""
    width = int(widths.max(initial=0))
    bits = (values[:, None] >> np.arange(width)) & 1
    return np.packbits(bits[np.arange(width)[None, :] < widths[:, None]].astype(np.uint8))


def _read_fields(packed: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """Inverse of _fields -> int64 values."""
    bits = np.unpackbits(packed)
    starts = np.concatenate([[0], np.cumsum(widths)[:-1]]).astype(np.int64)
    if int(widths.sum()) > bits.size:
        raise IndexFormatError("the centroid-id low-bit stream is too short")
    values = np.zeros(widths.size, np.int64)
    for j in range(int(widths.max(initial=0))):
        take = widths > j
        values[take] |= bits[starts[take] + j].astype(np.int64) << j
    return values


def encode_codes(
    codes: np.ndarray, doc_offsets: np.ndarray, num_centroids: int, encoding: str | None = None
) -> EncodedCodes:
    """The smallest encoding of codes [M] (documents delimited by doc_offsets [N + 1]), or the
    named one ("rice-K" / "expgolomb-K" need each document's ids sorted)."""
    plain = (
        EncodedCodes("uint16", {"codes.npy": codes.astype(np.uint16)})
        if num_centroids <= 65536
        else EncodedCodes("int32", {"codes.npy": codes.astype(np.int32)})
    )
    if encoding == plain.encoding:
        return plain
    gaps = _gaps(codes, doc_offsets) if codes.size else None
    if gaps is None:
        if encoding is not None:
            raise ValueError(f"{encoding} needs codes sorted within each document")
        return plain
    sizes = _sizes(gaps)
    name = encoding or min(sizes, key=sizes.get)
    if encoding is None and sizes[name] >= 8 * plain.arrays["codes.npy"].nbytes:
        return plain
    kind, k = name.split("-")
    k = int(k)
    if kind == "rice":
        unary, low = _unary(gaps >> k), _fields(gaps, np.full(gaps.size, k))
    else:
        bits = _bit_length(gaps + (1 << k))
        unary, low = _unary(bits - k - 1), _fields(gaps + (1 << k), bits - 1)
    return EncodedCodes(name, {"codes.unary.npy": unary, "codes.low.npy": low})


def decode_codes(
    encoding: str, arrays: dict[str, np.ndarray], doc_offsets: np.ndarray, num_centroids: int
) -> np.ndarray:
    """Inverse of encode_codes -> codes [M] int32; IndexFormatError if the data is inconsistent."""
    total = int(doc_offsets[-1])
    if encoding in ("uint16", "int32"):
        codes = np.asarray(arrays["codes.npy"]).astype(np.int32)
    else:
        kind, _, k = encoding.partition("-")
        if kind not in ("rice", "expgolomb") or not k.isdigit():
            raise IndexFormatError(f"unknown codes_encoding {encoding!r}")
        k = int(k)
        ones = np.flatnonzero(np.unpackbits(np.asarray(arrays["codes.unary.npy"])))
        if ones.size != total:
            raise IndexFormatError("the centroid-id streams do not hold one id per token vector")
        counts = np.diff(ones, prepend=-1) - 1
        low = np.asarray(arrays["codes.low.npy"])
        if kind == "rice":
            gaps = (counts << k) | _read_fields(low, np.full(total, k))
        else:
            widths = counts + k
            gaps = (_read_fields(low, widths) | (np.int64(1) << widths)) - (1 << k)
        running = np.cumsum(gaps)
        lengths = np.diff(doc_offsets)
        before = np.concatenate([[0], running])[doc_offsets[:-1]]
        codes = (running - np.repeat(before, lengths)).astype(np.int32)
    if codes.shape != (total,) or (
        codes.size and (codes.min() < 0 or codes.max() >= num_centroids)
    ):
        raise IndexFormatError("centroid ids are out of range or do not match the document lengths")
    return codes


# -- centroids
#
# "int6" (default) and "int8": each centroid row is stored as signed b-bit integers (b = 6 or
# 8) times a power-of-two scale 2**e (e int8, one per row, the smallest with
# |value| <= (2**(b-1) - 1) * 2**e). Power-of-two scales make the encoding idempotent (decode ->
# encode -> decode gives the same float32 values), so the arrays build returns equal what
# load_index reads. "int6" rows are bit-packed (bitpack.pack_fields: two's complement 6-bit
# fields, dimension 0 first, LSB first within a field, packed MSB first) into uint8
# [C, ceil(6 * D / 8)]; "int8" rows are plain int8 [C, D]. The step is at most |max| / 16
# (int6; |max| / 64 for int8), about 0.02 (0.005) for unit 128-d vectors. Residuals are taken
# against the stored centroid, so this costs almost no decoding accuracy (the per-coordinate
# rounding error, std ~ step / 3.5, is small next to the residuals the buckets quantise), only a
# small perturbation of query-centroid scores, i.e. of candidate generation.

CENTROID_ENCODINGS = ("int6", "int8", "float16", "float32")
_INT_BITS = {"int6": 6, "int8": 8}


def centroid_file_names(encoding: str) -> list[str]:
    if encoding in _INT_BITS:
        return ["centroids.npy", "centroid_exponents.npy"]
    if encoding in ("float16", "float32"):
        return ["centroids.npy"]
    raise IndexFormatError(f"unknown centroids_encoding {encoding!r}")


def encode_centroids(centroids: np.ndarray, encoding: str = "int6") -> dict[str, np.ndarray]:
    """centroids [C, D] float32 -> the arrays to store under centroid_file_names(encoding)."""
    if encoding == "float16":
        return {"centroids.npy": centroids.astype(np.float16)}
    if encoding == "float32":
        return {"centroids.npy": centroids.astype(np.float32)}
    if encoding not in _INT_BITS:
        raise IndexFormatError(f"unknown centroids_encoding {encoding!r}")
    bits = _INT_BITS[encoding]
    top = (1 << (bits - 1)) - 1  # 31 or 127
    centroids = np.asarray(centroids, np.float32)
    peak = np.maximum(np.abs(centroids).max(axis=1), np.finfo(np.float32).tiny)
    exponents = np.ceil(np.log2(peak / top)).astype(np.int64)
    values = np.rint(centroids / np.exp2(exponents)[:, None])
    over = np.abs(values).max(axis=1) > top  # log2 rounding at an exact power of two
    exponents[over] += 1
    exponents = np.clip(exponents, -128, 127)
    values = np.clip(np.rint(centroids / np.exp2(exponents)[:, None]), -top, top)
    if bits == 8:
        stored = values.astype(np.int8)
    else:
        stored = pack_fields(values.astype(np.int64) & ((1 << bits) - 1), bits)
    return {"centroids.npy": stored, "centroid_exponents.npy": exponents.astype(np.int8)}


def decode_centroids(
    encoding: str, arrays: dict[str, np.ndarray], dim: int | None = None
) -> np.ndarray:
    """Inverse of encode_centroids -> [C, D] float32. `dim` (D) is needed for "int6" rows whose
    6 * D bits do not fill whole bytes; by default D = 8 * bytes // 6."""
    stored = np.asarray(arrays["centroids.npy"])
    if encoding in ("float16", "float32"):
        return stored.astype(np.float32)
    if encoding not in _INT_BITS:
        raise IndexFormatError(f"unknown centroids_encoding {encoding!r}")
    exponents = np.asarray(arrays["centroid_exponents.npy"]).astype(np.float32)
    if exponents.shape != stored.shape[:1] or stored.ndim != 2:
        raise IndexFormatError("centroid_exponents.npy does not match centroids.npy")
    bits = _INT_BITS[encoding]
    if bits == 8:
        values = stored.astype(np.float32)
    else:
        if stored.dtype != np.uint8:
            raise IndexFormatError(f"{encoding} centroids.npy must be uint8, got {stored.dtype}")
        dim = 8 * stored.shape[1] // bits if dim is None else int(dim)
        if -(-dim * bits // 8) != stored.shape[1]:
            raise IndexFormatError(
                f"centroids.npy has {stored.shape[1]} bytes per row, not {bits}-bit x {dim}"
            )
        fields = unpack_fields(stored, bits, dim).astype(np.int16)
        values = np.where(fields >= 1 << (bits - 1), fields - (1 << bits), fields)
        values = values.astype(np.float32)
    return values * np.exp2(exponents)[:, None]


def round_trip_centroids(centroids: np.ndarray, encoding: str = "int6") -> np.ndarray:
    """The float32 centroids that storing with `encoding` and loading back gives."""
    centroids = np.asarray(centroids, np.float32)
    return decode_centroids(encoding, encode_centroids(centroids, encoding), centroids.shape[1])
