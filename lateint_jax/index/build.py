"""Build a compressed late-interaction index (ColBERTv2 residual codec) from token vectors, and
a single-vector index from bi-encoder vectors.

Steps, as colbert-ai: sample passages, split off a 5% held-out set (at most 50,000 vectors),
k-means on the rest, bucket quantiles from the held-out residuals, then compress every token
vector. Tokens are then sorted by centroid id inside each document (see codec.codes_io) so the
returned arrays are exactly what load_index reads back.

build_index streams, in bounded memory, and resumes after a crash:
  pass 1 (index.ingest)  read the input once, check it, cut it into chunks; spill a one-shot
                         input's chunks to the build state (index.build_state)
  codec                  sample documents by index (from the Sequence or the spill), train
  pass 2                 compress one chunk at a time into the build state
  assemble               chunks end to end, centroids renumbered by use; save_index
Every step's result is in the build state before the next starts, so resume=True skips it.

Shapes: N documents, T_i tokens of document i, M = sum T_i, D embedding dim, H hidden size.
"""

from __future__ import annotations

import datetime
import errno
from collections.abc import Iterable, Sequence

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
from lateint_jax.errors import DiskFullError, InputError
from lateint_jax.index import model_record
from lateint_jax.index.build_state import BuildState
from lateint_jax.index.ingest import Corpus, check_document, ingest
from lateint_jax.index.layout import DenseArrays, IndexArrays, sort_tokens_by_code
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
DEFAULT_MEMORY_BUDGET = 1 << 30
MIN_MEMORY_BUDGET = 1 << 20


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
        dim = check_document(emb, doc_id, dim)
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


def choose_sample(lengths: np.ndarray, dim: int, seed: int, max_bytes: int) -> np.ndarray:
    """Which documents feed k-means: colbert-ai's passage sample (sample_doc_indices), cut to a
    seeded random subset of it when its float32 vectors exceed max_bytes. -> sorted indices."""
    sampled = sample_doc_indices(len(lengths), seed)
    if int(lengths[sampled].sum()) * dim * 4 <= max_bytes:
        return sampled
    shuffled = np.random.default_rng(seed).permutation(sampled)
    fits = np.cumsum(lengths[shuffled]) * dim * 4 <= max_bytes
    return np.sort(shuffled[: max(int(fits.sum()), 1)])


def train_codec(sample_docs, total_tokens, num_centroids, nbits, seed, niters, progress):
    """Held-out split, k-means and bucket quantiles on the sampled documents (float32 [T_i, D]
    each) -> (centroids [C, D] exactly as stored (int6 rows, see codec.codes_io), cutoffs,
    weights). The default centroid count follows total_tokens, the whole corpus's M."""
    rng = np.random.default_rng(seed)
    sample = np.concatenate(sample_docs)
    sample = sample[rng.permutation(sample.shape[0])]
    heldout_size = int(min(HELDOUT_FRACTION * sample.shape[0], MAX_HELDOUT))
    if heldout_size >= MIN_HELDOUT:
        train, heldout = sample[:-heldout_size], sample[-heldout_size:]
    else:
        train = heldout = sample
    if num_centroids is None:
        num_centroids = min(default_num_centroids(total_tokens), train.shape[0])
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


def codec_for(corpus: Corpus, num_centroids, nbits, seed, niters, sample_bytes, progress):
    """The trained codec, from the build state when a resumed build had trained it already."""
    state = corpus.state
    if state.manifest["codec"]:
        return state.read_codec()
    sampled = choose_sample(corpus.lengths, corpus.dim, seed, sample_bytes)
    total = int(corpus.lengths.sum())
    codec = train_codec(
        corpus.read_documents(sampled), total, num_centroids, nbits, seed, niters, progress
    )
    state.write_codec(*codec)
    return codec


def slice_rows_for(budget: int, dim: int) -> int:
    """Rows compressed at once: a power of two whose float32 vectors take at most budget / 16
    (compress's temporaries are a few times that), at least 256."""
    rows = max(budget // (16 * 4 * dim), 256)
    return 1 << (rows.bit_length() - 1)


def compress_in_slices(vectors: np.ndarray, codec, rows: int):
    """compress() over `rows` rows at a time: vectors [M_k, D] -> (codes [M_k], residuals)."""
    centroids, cutoffs, nbits = codec
    parts = [
        compress(vectors[s : s + rows], centroids, cutoffs, nbits)
        for s in range(0, len(vectors), rows)
    ]
    return np.concatenate([c for c, _ in parts]), np.concatenate([r for _, r in parts])


def compress_chunks(corpus: Corpus, centroids, cutoffs, nbits, budget, progress) -> None:
    """Pass 2: compress each chunk not yet compressed, sort each document's tokens by code, and
    write the result to the build state."""
    state = corpus.state
    codec, slice_rows = (centroids, cutoffs, nbits), slice_rows_for(budget, corpus.dim)
    total = int(corpus.lengths.sum())
    done = [k for k in range(corpus.num_chunks) if state.chunks[k]["compressed"]]
    initial = sum(corpus.chunk_tokens(k) for k in done)
    bar = tqdm(total=total, initial=initial, desc="compress", unit="tok", disable=not progress)
    for chunk in range(corpus.num_chunks):
        if state.chunks[chunk]["compressed"]:
            continue
        codes, residuals = compress_in_slices(corpus.read_chunk(chunk), codec, slice_rows)
        order = sort_tokens_by_code(codes, corpus.token_offsets(chunk))
        state.write_compressed(chunk, codes[order], residuals[order])
        bar.update(codes.shape[0])
    bar.close()


def assemble(corpus: Corpus, centroids, nbits):
    """The compressed chunks end to end, relabelled (relabel_by_frequency).
    -> (centroids [C, D], codes [M] int32, residuals [M, W] uint8, doc_offsets [N + 1] int64)"""
    doc_offsets = np.zeros(len(corpus.lengths) + 1, np.int64)
    np.cumsum(corpus.lengths, out=doc_offsets[1:])
    total = int(doc_offsets[-1])
    codes = np.empty(total, np.int32)
    residuals = np.empty((total, packed_width(corpus.dim, nbits)), np.uint8)
    token_starts = doc_offsets[corpus.chunk_starts]
    for chunk in range(corpus.num_chunks):
        lo, hi = token_starts[chunk], token_starts[chunk + 1]
        codes[lo:hi], residuals[lo:hi] = corpus.state.read_compressed(chunk)
    centroids = relabel_by_frequency(centroids, codes, residuals, corpus, token_starts)
    return centroids, codes, residuals, doc_offsets


def relabel_by_frequency(centroids, codes, residuals, corpus: Corpus, token_starts) -> np.ndarray:
    """Renumber centroids from most to least used (ties by old id) and re-sort each document's
    tokens, in place, one chunk at a time; -> the reordered centroids. Frequent centroids then
    have small, close ids, so the sorted ids of a document have smaller gaps and code shorter
    (codec.codes_io)."""
    counts = np.bincount(codes, minlength=centroids.shape[0])
    order = np.argsort(-counts, kind="stable")
    new_id = np.empty_like(order)
    new_id[order] = np.arange(order.size)
    for chunk in range(corpus.num_chunks):
        lo, hi = token_starts[chunk], token_starts[chunk + 1]
        chunk_codes = new_id[codes[lo:hi]].astype(np.int32)
        rows = sort_tokens_by_code(chunk_codes, corpus.token_offsets(chunk))
        codes[lo:hi], residuals[lo:hi] = chunk_codes[rows], residuals[lo:hi][rows]
    return centroids[order]


def compress_corpus(
    documents, doc_ids, index_dir, fingerprint: dict, resume: bool, *, num_centroids, nbits,
    seed, kmeans_niters, budget, progress,
):  # fmt: skip
    """Pass 1, the codec, pass 2 and the assembly of build_index, in its build state. -> (state,
    corpus, (centroids [C, D], cutoffs, weights, codes [M], residuals [M, W], doc_offsets))"""
    state = BuildState.open(index_dir, fingerprint, resume)
    try:
        corpus = ingest(documents, doc_ids, state, budget // 4, progress=progress)
        packed_width(corpus.dim, nbits)
        centroids, cutoffs, weights = codec_for(
            corpus, num_centroids, nbits, seed, kmeans_niters, budget // 4, progress
        )
        compress_chunks(corpus, centroids, cutoffs, nbits, budget, progress)
        centroids, codes, residuals, doc_offsets = assemble(corpus, centroids, nbits)
    finally:
        if state.temporary:
            state.remove()
    return state, corpus, (centroids, cutoffs, weights, codes, residuals, doc_offsets)


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


def check_memory_budget(memory_budget_bytes) -> int:
    """None -> DEFAULT_MEMORY_BUDGET; otherwise an int of at least MIN_MEMORY_BUDGET bytes."""
    if memory_budget_bytes is None:
        return DEFAULT_MEMORY_BUDGET
    if isinstance(memory_budget_bytes, bool) or not isinstance(
        memory_budget_bytes, (int, np.integer)
    ):
        raise InputError(
            f"memory_budget_bytes must be a whole number of bytes, got {memory_budget_bytes!r}"
        )
    if memory_budget_bytes < MIN_MEMORY_BUDGET:
        raise InputError(
            f"memory_budget_bytes must be at least {MIN_MEMORY_BUDGET} (1 MiB), got "
            f"{memory_budget_bytes}"
        )
    return int(memory_budget_bytes)


def build_index(
    documents: Iterable[np.ndarray],
    doc_ids: Iterable[str],
    index_dir=None,
    *,
    nbits: int = 2,
    memory_budget_bytes: int | None = None,
    resume: bool = False,
    num_centroids: int | None = None,
    seed: int = 0,
    encoder=None,
    metadata: dict | None = None,
    model_meta: dict | None = None,
    overwrite: bool = False,
    progress: bool = True,
    kmeans_niters: int = KMEANS_NITERS,
    processes=None,
) -> IndexArrays | None:
    """Compress documents (one [T_i, D] array each) into an index; save it atomically to
    index_dir when given. Returns the arrays load_index gives.

    `documents` is a Sequence or any iterable read exactly once (a generator); `doc_ids` (one
    string per document) likewise. The build holds at most `memory_budget_bytes` (default 1 GiB)
    of float32 token vectors at a time, plus the finished compressed index (codes int32 and packed
    residuals): pass 1 cuts the input into chunks of a quarter of the budget (spilled to disk,
    float32, when the input is one-shot), the k-means sample is cut to a quarter of the budget,
    and pass 2 compresses one chunk at a time. A Sequence and a generator of the same documents
    give the same index. The build state lives in INDEX_DIR.build beside index_dir (a temporary
    folder when index_dir is None) and is deleted once the index is saved; after a crash,
    resume=True (same settings, and the same documents in the same order again) skips every
    chunk already done and gives the same index as an uninterrupted build.

    The `encoder` (a `ColBERT`) that made the vectors is recorded under metadata["model"], so
    the index knows how to encode its queries (or pass that record as `model_meta`); `metadata`
    adds top-level fields.

    `processes` is set by `index.distributed_build.build_index_distributed` (one process of a
    multi-process build); then only process 0 returns the arrays, the others None."""
    check_nbits(nbits)
    budget = check_memory_budget(memory_budget_bytes)
    if index_dir is not None:  # refused before the k-means, not after
        check_index_target(index_dir, overwrite)
    fingerprint = {
        "nbits": nbits,
        "num_centroids": num_centroids,
        "seed": seed,
        "kmeans_niters": kmeans_niters,
        "memory_budget_bytes": budget,
        "input": "sequence" if isinstance(documents, Sequence) else "stream",
    }
    built = (compress_corpus if processes is None else processes.compress_corpus)(
        documents, doc_ids, index_dir, fingerprint, resume, num_centroids=num_centroids,
        nbits=nbits, seed=seed, kmeans_niters=kmeans_niters, budget=budget, progress=progress,
    )  # fmt: skip
    if built is None:
        return None  # one process of a multi-process build; process 0 saves the index
    state, corpus, (centroids, cutoffs, weights, codes, residuals, doc_offsets) = built
    deleted = np.zeros(len(corpus.ids), bool)  # inverted lists: derived on first use
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
        doc_ids=corpus.ids,
        deleted=deleted,
        nbits=nbits,
        metadata=_model_metadata(encoder, model_meta, "colbert", metadata, extra),
    )
    if index_dir is not None:
        arrays.metadata = save_checked(arrays, index_dir, overwrite)
        state.remove()
    return arrays


def save_checked(arrays: IndexArrays, index_dir, overwrite: bool) -> dict:
    """save_index, with a full disk reported as DiskFullError (the previous index, if any, is
    left in place by save_index's atomic swap; the build state is kept for resume=True)."""
    try:
        return save_index(arrays, index_dir, overwrite=overwrite)
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise DiskFullError(
            f"no space left on the device while saving the index to {index_dir}; nothing there "
            f"was changed. Free some space and rerun with resume=True (`--resume`): only the "
            f"final save is left to do"
        ) from err


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
