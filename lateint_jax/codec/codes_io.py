"""Compact on-disk encodings of the centroid id of every token vector.

MaxSim ignores the order of a document's tokens, so the index stores each document's tokens
sorted by centroid id (build does the sorting). The ids of a document then form a
non-decreasing run whose gaps are small (about C / T on average) and are Rice-coded:
gap g -> unary(g >> k) in one bit stream plus the k low bits in another, with the single k
that minimises the total size. Decoding is vectorised numpy (unpackbits + flatnonzero +
cumsum), a few milliseconds per million ids.

Encodings (named in metadata `codes_encoding`):
  "uint16" / "int32"   codes.npy, one id per token vector in stored order
  "rice-K"             codes.unary.npy (uint8 bit stream), codes.low.npy (uint8, K bits per id)

Shapes: M token vectors, N documents, C centroids.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lateint_jax.errors import IndexFormatError


@dataclass
class EncodedCodes:
    encoding: str
    arrays: dict[str, np.ndarray]


def file_names(encoding: str) -> list[str]:
    """The files that hold codes in the given encoding."""
    if encoding in ("uint16", "int32"):
        return ["codes.npy"]
    if encoding.startswith("rice-"):
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


def _best_k(gaps: np.ndarray) -> int:
    sizes = [int((gaps >> k).sum()) + gaps.size * (k + 1) for k in range(17)]
    return int(np.argmin(sizes))


def encode_codes(codes: np.ndarray, doc_offsets: np.ndarray, num_centroids: int) -> EncodedCodes:
    """Choose the smallest encoding of codes [M] (documents delimited by doc_offsets [N + 1])."""
    plain = (
        EncodedCodes("uint16", {"codes.npy": codes.astype(np.uint16)})
        if num_centroids <= 65536
        else EncodedCodes("int32", {"codes.npy": codes.astype(np.int32)})
    )
    gaps = _gaps(codes, doc_offsets) if codes.size else None
    if gaps is None:
        return plain
    k = _best_k(gaps)
    quotients = gaps >> k
    ones = np.cumsum(quotients + 1) - 1  # each gap: q zeros, then a one
    unary = np.zeros(int(ones[-1]) + 1, np.uint8)
    unary[ones] = 1
    low_bits = ((gaps[:, None] >> np.arange(k)) & 1).astype(np.uint8)
    rice = EncodedCodes(
        f"rice-{k}",
        {"codes.unary.npy": np.packbits(unary), "codes.low.npy": np.packbits(low_bits.ravel())},
    )
    rice_bytes = sum(a.nbytes for a in rice.arrays.values())
    return rice if rice_bytes < plain.arrays["codes.npy"].nbytes else plain


def decode_codes(
    encoding: str, arrays: dict[str, np.ndarray], doc_offsets: np.ndarray, num_centroids: int
) -> np.ndarray:
    """Inverse of encode_codes -> codes [M] int32; IndexFormatError if the data is inconsistent."""
    total = int(doc_offsets[-1])
    if encoding in ("uint16", "int32"):
        codes = np.asarray(arrays["codes.npy"]).astype(np.int32)
    else:
        try:
            k = int(encoding.split("-", 1)[1])
        except ValueError:
            raise IndexFormatError(f"unknown codes_encoding {encoding!r}") from None
        ones = np.flatnonzero(np.unpackbits(np.asarray(arrays["codes.unary.npy"])))
        low = np.unpackbits(np.asarray(arrays["codes.low.npy"]))
        if ones.size != total or low.size < total * k:
            raise IndexFormatError("the centroid-id streams do not hold one id per token vector")
        quotients = np.diff(ones, prepend=-1) - 1
        low = low[: total * k].reshape(total, k).astype(np.int64)
        gaps = (quotients << k) | (low << np.arange(k)).sum(axis=1)
        running = np.cumsum(gaps)
        lengths = np.diff(doc_offsets)
        before = np.concatenate([[0], running])[doc_offsets[:-1]]
        codes = (running - np.repeat(before, lengths)).astype(np.int32)
    if codes.shape != (total,) or (
        codes.size and (codes.min() < 0 or codes.max() >= num_centroids)
    ):
        raise IndexFormatError("centroid ids are out of range or do not match the document lengths")
    return codes
