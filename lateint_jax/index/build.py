"""Build a compressed late-interaction index (ColBERTv2 residual codec) from token vectors, and
a single-vector index from bi-encoder vectors.

Steps, as colbert-ai: sample passages, split off a 5% held-out set (at most 50,000 vectors),
k-means on the rest, bucket quantiles from the held-out residuals, then compress every token
vector. Tokens are then sorted by centroid id inside each document (see codec.codes_io) so the
returned arrays are exactly what load_index reads back.

Shapes: N documents, T_i tokens of document i, M = sum T_i, D embedding dim, H hidden size.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence

import numpy as np
from tqdm.auto import tqdm

from lateint_jax.codec.bitpack import check_nbits, packed_width
from lateint_jax.codec.codes_io import round_trip_centroids
from lateint_jax.codec.kmeans import (
    assign_nearest,
    default_num_centroids,
    kmeans,
    sample_doc_indices,
)
from lateint_jax.codec.residual import compress, fit_buckets
from lateint_jax.errors import InputError
from lateint_jax.index import model_record
from lateint_jax.index.layout import DenseArrays, IndexArrays, build_ivf, sort_tokens_by_code
from lateint_jax.index.storage import (
    CENTROIDS_ENCODING,
    check_index_target,
    save_dense_index,
    save_index,
)

HELDOUT_FRACTION = 0.05
MAX_HELDOUT = 50_000
MIN_HELDOUT = 512  # below this the bucket quantiles come from the k-means sample itself
COMPRESS_GROUP_ROWS = 1 << 16
KMEANS_NITERS = 4  # colbert-ai's default kmeans_niters


def check_doc_ids(doc_ids: Sequence[str], count: int, existing: Sequence[str] = ()) -> list[str]:
    """Ids must be strings, one per document, unique, and not already in `existing`."""
    ids = list(doc_ids)
    if len(ids) != count:
        raise InputError(f"got {count} documents but {len(ids)} ids")
    bad = [i for i in ids if not isinstance(i, str) or not i]
    if bad:
        raise InputError(f"document ids must be non-empty strings, got {bad[0]!r}")
    seen: set[str] = set()
    duplicates = sorted({i for i in ids if i in seen or seen.add(i)})
    if duplicates:
        raise InputError(f"duplicate document ids: {', '.join(map(repr, duplicates[:5]))}")
    clash = sorted(set(existing).intersection(ids))
    if clash:
        raise InputError(f"ids already in the index: {', '.join(map(repr, clash[:5]))}")
    return ids


def check_doc_embeddings(doc_embeddings, doc_ids: list[str], dim: int | None = None) -> int:
    """Each document [T_i, D] with T_i >= 1, one shared D, finite values; returns D."""
    for emb, doc_id in zip(doc_embeddings, doc_ids):
        shape = getattr(emb, "shape", None)
        if shape is None or len(shape) != 2:
            raise InputError(f"document {doc_id!r}: embeddings must be [T, D], got shape {shape}")
        if shape[0] == 0:
            raise InputError(f"document {doc_id!r} has zero token vectors")
        if dim is None:
            dim = int(shape[1])
        if shape[1] != dim:
            raise InputError(f"document {doc_id!r} has dim {shape[1]}, expected {dim}")
        if not np.isfinite(emb).all():
            raise InputError(f"document {doc_id!r} has NaN or infinite values")
    return int(dim)


def compress_documents(doc_embeddings, centroids, bucket_cutoffs, nbits, *, progress=False):
    """Compress documents group by group (bounded memory) and sort each one's tokens by code.

    -> (codes [M] int32, residuals [M, D*nbits/8] uint8, doc_offsets [N + 1] int64)
    """
    lengths = np.array([e.shape[0] for e in doc_embeddings], np.int64)
    doc_offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=doc_offsets[1:])
    total, dim = int(doc_offsets[-1]), int(centroids.shape[1])
    codes = np.empty(total, np.int32)
    residuals = np.empty((total, packed_width(dim, nbits)), np.uint8)
    bar = tqdm(total=total, desc="compress", unit="tok", disable=not progress)
    start_doc = 0
    while start_doc < len(lengths):
        end_doc = int(
            np.searchsorted(doc_offsets, doc_offsets[start_doc] + COMPRESS_GROUP_ROWS, "right")
        )
        end_doc = max(end_doc - 1, start_doc + 1)
        group = np.concatenate(
            [np.asarray(e, np.float32) for e in doc_embeddings[start_doc:end_doc]]
        )
        lo, hi = doc_offsets[start_doc], doc_offsets[end_doc]
        codes[lo:hi], residuals[lo:hi] = compress(group, centroids, bucket_cutoffs, nbits)
        bar.update(int(hi - lo))
        start_doc = end_doc
    bar.close()
    order = sort_tokens_by_code(codes, doc_offsets)
    return codes[order], residuals[order], doc_offsets


def relabel_by_frequency(centroids, codes, residuals, doc_offsets):
    """Renumber centroids from most to least used (ties by old id) and re-sort each document's
    tokens. Frequent centroids then have small, close ids, so the sorted ids of a document have
    smaller gaps and code shorter (codec.codes_io)."""
    counts = np.bincount(codes, minlength=centroids.shape[0])
    order = np.argsort(-counts, kind="stable")
    new_id = np.empty_like(order)
    new_id[order] = np.arange(order.size)
    codes = new_id[codes].astype(np.int32)
    rows = sort_tokens_by_code(codes, doc_offsets)
    return centroids[order], codes[rows], residuals[rows]


def train_codec(doc_embeddings, num_centroids, nbits, seed, niters, progress):
    """Sample, k-means and bucket quantiles -> (centroids [C, D] exactly as stored (int6 rows,
    see codec.codes_io), cutoffs, weights)."""
    rng = np.random.default_rng(seed)
    sampled = sample_doc_indices(len(doc_embeddings), seed)
    sample = np.concatenate([np.asarray(doc_embeddings[i], np.float32) for i in sampled])
    sample = sample[rng.permutation(sample.shape[0])]
    heldout_size = int(min(HELDOUT_FRACTION * sample.shape[0], MAX_HELDOUT))
    if heldout_size >= MIN_HELDOUT:
        train, heldout = sample[:-heldout_size], sample[-heldout_size:]
    else:
        train = heldout = sample
    if num_centroids is None:
        total = sum(e.shape[0] for e in doc_embeddings)
        num_centroids = min(default_num_centroids(total), train.shape[0])
    elif not 0 < num_centroids <= train.shape[0]:
        raise InputError(
            f"num_centroids must be between 1 and the {train.shape[0]} k-means training vectors, "
            f"got {num_centroids}"
        )
    centroids = kmeans(train, int(num_centroids), niters=niters, seed=seed, progress=progress)
    # Encode against exactly the centroids the disk will hold, so build == load.
    centroids = round_trip_centroids(centroids, CENTROIDS_ENCODING)
    nearest = assign_nearest(heldout, centroids)
    cutoffs, weights = fit_buckets(heldout - centroids[nearest], nbits)
    return centroids, cutoffs, weights


def _model_metadata(
    encoder, model_meta: dict | None, kind: str, metadata: dict | None, extra: dict
) -> dict:
    if encoder is not None and model_meta is not None:
        raise InputError("pass encoder= or model_meta=, not both")
    if encoder is not None:
        model_meta = model_record.model_meta(encoder, kind)
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    out = {"created_utc": now, **(metadata or {}), **extra}
    if model_meta is not None:
        out["model"] = model_meta
    return out


def build_index(
    doc_embeddings: Sequence[np.ndarray],
    doc_ids: Sequence[str],
    index_dir=None,
    *,
    nbits: int = 2,
    num_centroids: int | None = None,
    seed: int = 0,
    encoder=None,
    metadata: dict | None = None,
    model_meta: dict | None = None,
    overwrite: bool = False,
    progress: bool = True,
    kmeans_niters: int = KMEANS_NITERS,
) -> IndexArrays:
    """Compress documents (one [T_i, D] array each) into an index; save it atomically to
    index_dir when given. The `encoder` (a `ColBERT`) that made the vectors is recorded under
    metadata["model"], so the index knows how to encode its queries (or pass that record as
    `model_meta`); `metadata` adds top-level fields. Returns the arrays load_index gives."""
    check_nbits(nbits)
    if len(doc_embeddings) == 0:
        raise InputError("the corpus is empty: no documents to index")
    ids = check_doc_ids(doc_ids, len(doc_embeddings))
    dim = check_doc_embeddings(doc_embeddings, ids)
    packed_width(dim, nbits)
    if index_dir is not None:  # refused before the k-means, not after
        check_index_target(index_dir, overwrite)
    centroids, cutoffs, weights = train_codec(
        doc_embeddings, num_centroids, nbits, seed, kmeans_niters, progress
    )
    codes, residuals, doc_offsets = compress_documents(
        doc_embeddings, centroids, cutoffs, nbits, progress=progress
    )
    centroids, codes, residuals = relabel_by_frequency(centroids, codes, residuals, doc_offsets)
    deleted = np.zeros(len(ids), bool)
    ivf_pids, ivf_offsets = build_ivf(codes, doc_offsets, centroids.shape[0], deleted)
    extra = {
        "build": {"seed": seed, "kmeans_niters": kmeans_niters, "num_centroids": len(centroids)},
        # the encoding the centroids were rounded to above (save_index keeps a recorded one)
        "centroids_encoding": CENTROIDS_ENCODING,
    }
    arrays = IndexArrays(
        centroids=centroids,
        bucket_cutoffs=cutoffs,
        bucket_weights=weights,
        codes=codes,
        residuals=residuals,
        doc_offsets=doc_offsets,
        ivf_pids=ivf_pids,
        ivf_offsets=ivf_offsets,
        doc_ids=ids,
        deleted=deleted,
        nbits=nbits,
        metadata=_model_metadata(encoder, model_meta, "colbert", metadata, extra),
    )
    if index_dir is not None:
        arrays.metadata = save_index(arrays, index_dir, overwrite=overwrite)
    return arrays


def build_dense_index(
    vectors: np.ndarray,
    doc_ids: Sequence[str],
    index_dir=None,
    *,
    encoder=None,
    metadata: dict | None = None,
    model_meta: dict | None = None,
    overwrite: bool = False,
) -> DenseArrays:
    """Single-vector index: vectors [N, H] (one per document), saved atomically when index_dir
    is given; `encoder` (a `BiEncoder`) or `model_meta` as for `build_index`."""
    vectors = np.asarray(vectors, np.float32)
    if vectors.ndim != 2 or vectors.shape[0] == 0:
        raise InputError(f"need a non-empty [N, H] array of document vectors, got {vectors.shape}")
    ids = check_doc_ids(doc_ids, vectors.shape[0])
    if not np.isfinite(vectors).all():
        raise InputError("document vectors contain NaN or infinite values")
    arrays = DenseArrays(
        vectors,
        ids,
        np.zeros(len(ids), bool),
        _model_metadata(encoder, model_meta, "dense", metadata, {}),
    )
    if index_dir is not None:
        arrays.metadata = save_dense_index(arrays, index_dir, overwrite=overwrite)
    return arrays
