"""Index folders on disk: atomic writes, sha256 checksums, versioned metadata and
memory-mappable `.npy` arrays. The format is described in docs/INDEX_FORMAT.md.

Version 2 (written) stores the tokens in centroid order (`layout.CentroidOrder`), so opening
an index costs no sort and no decoding over its tokens; version 1 (document order, centroid
ids entropy-coded) is still read, and put in centroid order when first searched.
Checksums: every file's size (and `.npy` header) is checked at open; the sha256 of every
CHECKSUM_CHUNK bytes of every file is verified too unless verify_checksums=False, the chunks
hashed in parallel threads.

Writing builds the whole folder aside (`INDEX_DIR.tmp-XXXX`), fsyncs every file and the folder,
then renames it into place. Replacing an existing index swaps the two folders with one atomic
`renameat2(RENAME_EXCHANGE)` where Linux offers it (else: old aside, new in, old deleted), so a
crash at any point leaves either the previous or the new index readable, never a mix. Only an
index is ever replaced (`is_index_folder`); see lateint_jax.outputs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from lateint_jax.codec import codes_io
from lateint_jax.errors import IndexFormatError
from lateint_jax.index.layout import (
    CentroidOrder,
    DenseArrays,
    IndexArrays,
    centroid_permutation,
)
from lateint_jax.outputs import atomic_folder, check_target

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
CHECKSUM_CHUNK = 1 << 26  # bytes per sha256 (64 MiB): big files verify in parallel
WRITE_ROWS = 1 << 18  # rows gathered at a time when writing in another order
METADATA_FILE = "metadata.json"
IDS_FILE = "doc_ids.json"
# How new indexes store centroids (codec.codes_io): bit-packed 6-bit rows with power-of-two
# scales. An index loaded with another encoding (older "int8") keeps it when saved again, so its
# residuals stay relative to exactly the same centroids.
CENTROIDS_ENCODING = "int6"
log = logging.getLogger(__name__)


class _HashingWriter:
    """A write-only file wrapper that counts the bytes going through it and hashes each
    CHECKSUM_CHUNK of them."""

    def __init__(self, handle):
        self.handle, self.size, self.digests = handle, 0, []
        self.sha256 = hashlib.sha256()

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        done = 0
        while done < view.nbytes:
            room = CHECKSUM_CHUNK - self.size % CHECKSUM_CHUNK
            part = view[done : done + room]
            self.sha256.update(part)
            self.size += part.nbytes
            done += part.nbytes
            if self.size % CHECKSUM_CHUNK == 0:
                self.digests.append(self.sha256.hexdigest())
                self.sha256 = hashlib.sha256()
        return self.handle.write(view)

    def chunk_digests(self) -> list[str]:
        if self.size % CHECKSUM_CHUNK or not self.size:
            return [*self.digests, self.sha256.hexdigest()]
        return self.digests


def _write_file(folder: Path, name: str, write) -> dict:
    """Create folder/name, let write(handle) fill it, fsync; return its size and checksum."""
    with open(folder / name, "wb") as raw:
        writer = _HashingWriter(raw)
        write(writer)
        raw.flush()
        os.fsync(raw.fileno())
    return {"bytes": writer.size, "sha256_chunks": writer.chunk_digests()}


def _write_array(folder: Path, name: str, array: np.ndarray) -> dict:
    array = np.ascontiguousarray(array)
    entry = _write_file(
        folder, name, lambda f: np.lib.format.write_array(f, array, allow_pickle=False)
    )
    return {**entry, "dtype": array.dtype.str, "shape": list(array.shape)}


def _write_rows(folder: Path, name: str, source: np.ndarray, rows: np.ndarray) -> dict:
    """Write source[rows] as a .npy file, gathered WRITE_ROWS rows at a time (no full copy)."""
    shape = (rows.shape[0], *source.shape[1:])
    header = {"descr": np.lib.format.dtype_to_descr(source.dtype), "fortran_order": False,
              "shape": shape}  # fmt: skip

    def write(handle):
        np.lib.format.write_array_header_1_0(handle, header)
        for start in range(0, rows.shape[0], WRITE_ROWS):
            handle.write(np.ascontiguousarray(source[rows[start : start + WRITE_ROWS]]))

    return {**_write_file(folder, name, write), "dtype": source.dtype.str, "shape": list(shape)}


def _write_json(folder: Path, name: str, value) -> dict:
    data = json.dumps(value, ensure_ascii=False).encode("utf-8")
    return _write_file(folder, name, lambda f: f.write(data))


def is_index_folder(path) -> bool:
    """Whether `path` is an index folder this project wrote: its metadata file is a JSON object
    with the `format_version` and `files` that write_index_folder always records (any format
    version: an older index is still ours to replace)."""
    try:
        metadata = json.loads((Path(path) / METADATA_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(metadata, dict) and "format_version" in metadata and "files" in metadata


def check_index_target(index_dir, overwrite: bool) -> None:
    """Raise InputError unless an index may be written at index_dir: it does not exist, is an
    empty folder, or overwrite is set and it is an index (outputs.check_target)."""
    check_target(index_dir, overwrite, is_index_folder, "index")


def write_index_folder(index_dir, overwrite: bool, fill) -> dict:
    """Atomically create or replace index_dir (outputs.atomic_folder: an existing folder is
    replaced only with overwrite, and only if is_index_folder says it is an index):
    fill(tmp_folder) -> (metadata without `files`, files) writes the arrays; the metadata file is
    written last with every file's checksum. Returns the metadata as written."""
    with atomic_folder(index_dir, overwrite, is_index_folder, "index") as tmp:
        metadata, files = fill(tmp)
        metadata = {**metadata, "format_version": FORMAT_VERSION, "files": files}
        _write_json(tmp, METADATA_FILE, metadata)
    return metadata


HIGH_VALUES, HIGH_RUNS = "token_docs_high.npy", "token_docs_high_runs.npy"


def split_token_docs(token_docs: np.ndarray) -> dict[str, np.ndarray]:
    """Token documents [M] (rows by centroid, then document) -> the files that store them:
    token_docs.npy uint16 (the low 16 bits), and, when some number needs more, the high bits
    as runs of equal values (HIGH_VALUES uint16 [K], HIGH_RUNS uint32/int64 [K] lengths): they
    never fall within a centroid's rows, so K <= C * (N / 65,536 + 1)."""
    low = (token_docs & 0xFFFF).astype(np.uint16)
    if token_docs.shape[0] == 0 or int(token_docs.max()) < 1 << 16:
        return {"token_docs.npy": low}
    high = (token_docs.astype(np.uint32) >> 16).astype(np.uint16)
    starts = np.zeros(high.shape[0], bool)
    starts[0] = True
    starts[1:] = high[1:] != high[:-1]
    first = np.flatnonzero(starts)
    runs = np.diff(np.append(first, high.shape[0]))
    runs = runs.astype(np.uint32 if runs.max() < 1 << 32 else np.int64)
    return {"token_docs.npy": low, HIGH_VALUES: high[first], HIGH_RUNS: runs}


def join_token_docs(low: np.ndarray, high: np.ndarray, runs: np.ndarray) -> np.ndarray:
    """Inverse of split_token_docs -> [M] uint32 (one np.repeat over the tokens)."""
    if high.shape != runs.shape or int(runs.sum()) != low.shape[0]:
        raise IndexFormatError(f"{HIGH_VALUES} / {HIGH_RUNS} do not cover the tokens")
    return np.repeat(high.astype(np.uint32) << 16, runs.astype(np.int64)) | low


def save_index(arrays: IndexArrays, index_dir, overwrite: bool = False) -> dict:
    """Write a compressed index atomically in format version 2 (see module docstring); returns
    the metadata written (what load_index will give as `metadata`). The tokens go in centroid
    order (derived from document order with one sort if the arrays do not hold it yet); the
    inverted lists are not stored (load_index reads them off that order)."""
    arrays.validate()
    centroids_encoding = arrays.metadata.get("centroids_encoding", CENTROIDS_ENCODING)
    if arrays.has_order:
        order = arrays.order
        rows, cell_offsets, token_docs = None, order.cell_offsets, order.token_docs
    else:  # reordered here and not kept: a build holds no second copy of its residuals
        rows, cell_offsets, token_docs = centroid_permutation(
            arrays.codes, arrays.doc_offsets, arrays.num_centroids
        )

    def fill(tmp: Path):
        files = {}
        stored = codes_io.encode_centroids(arrays.centroids, centroids_encoding)
        for name, array in stored.items():
            files[name] = _write_array(tmp, name, array)
        files["bucket_cutoffs.npy"] = _write_array(tmp, "bucket_cutoffs.npy", arrays.bucket_cutoffs)
        files["bucket_weights.npy"] = _write_array(tmp, "bucket_weights.npy", arrays.bucket_weights)
        lengths = np.diff(cell_offsets)
        narrow = np.int32 if lengths.max(initial=0) < 2**31 else np.int64
        files["cell_lengths.npy"] = _write_array(tmp, "cell_lengths.npy", lengths.astype(narrow))
        for name, array in split_token_docs(token_docs).items():
            files[name] = _write_array(tmp, name, array)
        if rows is None:
            files["residuals.npy"] = _write_array(tmp, "residuals.npy", order.residuals)
        else:
            files["residuals.npy"] = _write_rows(tmp, "residuals.npy", arrays.residuals, rows)
        files["doclens.npy"] = _write_array(tmp, "doclens.npy", arrays.doc_lengths)
        files["deleted.npy"] = _write_array(tmp, "deleted.npy", arrays.deleted.astype(bool))
        files[IDS_FILE] = _write_json(tmp, IDS_FILE, list(arrays.doc_ids))
        metadata = {
            key: value
            for key, value in arrays.metadata.items()
            if key not in ("codes_encoding", "files", "format_version")
        }
        metadata.update(
            kind="colbert",
            dim=arrays.dim,
            nbits=arrays.nbits,
            num_docs=arrays.num_docs,
            num_deleted=int(arrays.deleted.sum()),
            num_embeddings=arrays.num_embeddings,
            num_centroids=arrays.num_centroids,
            token_order="centroid",
            centroids_encoding=centroids_encoding,
        )
        return metadata, files

    return write_index_folder(index_dir, overwrite, fill)


def save_dense_index(arrays: DenseArrays, index_dir, overwrite: bool = False) -> dict:
    """Write a single-vector (bi-encoder) index atomically: vectors.npy [N, H] float32."""

    def fill(tmp: Path):
        files = {
            "vectors.npy": _write_array(tmp, "vectors.npy", arrays.vectors.astype(np.float32)),
            "deleted.npy": _write_array(tmp, "deleted.npy", arrays.deleted.astype(bool)),
            IDS_FILE: _write_json(tmp, IDS_FILE, list(arrays.doc_ids)),
        }
        metadata = {
            **arrays.metadata,
            "kind": "dense",
            "dim": arrays.dim,
            "num_docs": arrays.num_docs,
            "num_deleted": int(arrays.deleted.sum()),
        }
        return metadata, files

    return write_index_folder(index_dir, overwrite, fill)


def read_metadata(index_dir) -> dict:
    """Parse and check INDEX_DIR/metadata.json (existence, JSON, format version)."""
    index_dir = Path(index_dir)
    if not index_dir.is_dir():
        stale = (
            sorted(index_dir.parent.glob(index_dir.name + ".old-*"))
            if index_dir.parent.is_dir()
            else []
        )
        hint = f" (an interrupted overwrite left the previous index at {stale[0]})" if stale else ""
        raise IndexFormatError(f"index folder {index_dir} does not exist{hint}")
    path = index_dir / METADATA_FILE
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IndexFormatError(f"{path} is missing: {index_dir} is not a lateint index") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise IndexFormatError(f"{path} is not valid JSON ({err})") from None
    version = metadata.get("format_version") if isinstance(metadata, dict) else None
    if version not in READABLE_VERSIONS:
        raise IndexFormatError(
            f"{index_dir} has index format version {version!r}; this lateint-jax reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))} (rebuild the index with `lateint index`)"
        )
    if not isinstance(metadata.get("files"), dict):
        raise IndexFormatError(f"{path} lists no files")
    return metadata


def _chunk_ok(path: Path, start: int, size: int, expected: str) -> bool:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        handle.seek(start)
        left = size
        while left:
            data = handle.read(min(left, 1 << 22))
            if not data:
                return False
            digest.update(data)
            left -= len(data)
    return digest.hexdigest() == expected


def _verify_files(index_dir: Path, metadata: dict, verify_checksums: bool) -> None:
    """Sizes always; with verify_checksums the sha256 of every chunk (version 2:
    `sha256_chunks`, one per CHECKSUM_CHUNK bytes) or whole file (version 1: `sha256`),
    hashed in parallel threads (hashlib releases the GIL)."""
    jobs = []
    for name, entry in metadata["files"].items():
        path = index_dir / name
        if not path.is_file():
            raise IndexFormatError(f"{path} is missing")
        size = path.stat().st_size
        if size != entry["bytes"]:
            raise IndexFormatError(
                f"{path} has {size} bytes, expected {entry['bytes']} (truncated or overwritten)"
            )
        if "sha256_chunks" in entry:
            for k, expected in enumerate(entry["sha256_chunks"]):
                start = k * CHECKSUM_CHUNK
                jobs.append((path, start, min(CHECKSUM_CHUNK, size - start), expected))
        else:
            jobs.append((path, 0, size, entry["sha256"]))
    if not verify_checksums:
        return
    with ThreadPoolExecutor(max_workers=min(len(jobs), os.cpu_count() or 1) or 1) as pool:
        results = list(pool.map(lambda job: _chunk_ok(*job), jobs))
    for (path, start, size, _), ok in zip(jobs, results):
        if not ok:
            where = f" (bytes {start}-{start + size})" if size < path.stat().st_size else ""
            raise IndexFormatError(
                f"{path} fails its sha256 checksum{where}: the file is corrupted"
            )


def _load_array(index_dir: Path, name: str, metadata: dict, mmap: bool) -> np.ndarray:
    path = index_dir / name
    try:
        array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise IndexFormatError(f"{path} is not a readable .npy array ({err})") from None
    entry = metadata["files"][name]
    if array.dtype.str != entry.get("dtype", array.dtype.str) or list(array.shape) != entry.get(
        "shape", list(array.shape)
    ):
        raise IndexFormatError(
            f"{path} holds {array.dtype}{list(array.shape)}, not what metadata says"
        )
    return array


def _load_ids(index_dir: Path, num_docs: int) -> list[str]:
    path = index_dir / IDS_FILE
    try:
        ids = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise IndexFormatError(f"{path} is not valid JSON ({err})") from None
    if (
        not isinstance(ids, list)
        or len(ids) != num_docs
        or not all(isinstance(i, str) for i in ids)
    ):
        raise IndexFormatError(f"{path} must be a list of {num_docs} string ids")
    return ids


def _open(index_dir, kind: str, verify_checksums: bool) -> tuple[Path, dict]:
    index_dir = Path(index_dir)
    metadata = read_metadata(index_dir)
    if metadata.get("kind") != kind:
        other = {"colbert": "load_index / Index", "dense": "load_dense_index / DenseIndex"}
        raise IndexFormatError(
            f"{index_dir} is a {metadata.get('kind')!r} index, not {kind!r}; open it with "
            f"{other.get(metadata.get('kind'), 'the matching loader')}"
        )
    _verify_files(index_dir, metadata, verify_checksums)
    return index_dir, metadata


def load_index(index_dir, *, verify_checksums: bool = True, mmap: bool = True) -> IndexArrays:
    """Read a compressed index. File sizes are always checked, sha256 checksums unless
    verify_checksums=False; the token arrays stay memory-mapped when mmap=True. Version 2 gives
    the tokens in centroid order (no sort, no decoding); version 1 in document order (its
    centroid ids decoded), to be reordered on first search. Raises IndexFormatError for
    anything missing or inconsistent."""
    index_dir, metadata = _open(index_dir, "colbert", verify_checksums)
    version = metadata["format_version"]
    try:
        nbits, num_docs = int(metadata["nbits"]), int(metadata["num_docs"])
        encoding = metadata["codes_encoding"] if version == 1 else None
    except (KeyError, TypeError, ValueError) as err:
        raise IndexFormatError(f"{index_dir}/{METADATA_FILE} lacks a field ({err})") from None
    load = lambda name, mm=False: _load_array(index_dir, name, metadata, mm)
    doclens = load("doclens.npy")
    if doclens.shape != (num_docs,):
        raise IndexFormatError(f"{index_dir}/doclens.npy does not hold {num_docs} lengths")
    doc_offsets = np.zeros(num_docs + 1, np.int64)
    np.cumsum(doclens, out=doc_offsets[1:])
    centroid_encoding = metadata.get("centroids_encoding", "float16")
    centroids = codes_io.decode_centroids(
        centroid_encoding,
        {name: load(name) for name in codes_io.centroid_file_names(centroid_encoding)},
        metadata.get("dim"),
    )
    common = {
        "centroids": centroids,
        "bucket_cutoffs": np.asarray(load("bucket_cutoffs.npy")),
        "bucket_weights": np.asarray(load("bucket_weights.npy")),
        "doc_offsets": doc_offsets,
        "doc_ids": _load_ids(index_dir, num_docs),
        "deleted": np.array(load("deleted.npy"), bool),
        "nbits": nbits,
        "metadata": metadata,
    }
    if version == 1:
        log.warning(
            "%s is in index format version 1 (document order): it is put in centroid order "
            "when first searched, a sort over all its tokens at every open. Save it again "
            "(`open_index(path).save()`) to write version 2, which opens without one.",
            index_dir,
        )
        code_arrays = {name: load(name) for name in codes_io.file_names(encoding)}
        codes = codes_io.decode_codes(encoding, code_arrays, doc_offsets, centroids.shape[0])
        arrays = IndexArrays(codes=codes, residuals=load("residuals.npy", mmap), **common)
    else:
        lengths = np.asarray(load("cell_lengths.npy"), np.int64)
        cell_offsets = np.zeros(lengths.shape[0] + 1, np.int64)
        np.cumsum(lengths, out=cell_offsets[1:])
        token_docs = load("token_docs.npy", mmap)
        if token_docs.dtype != np.uint16:
            raise IndexFormatError(f"{index_dir}/token_docs.npy must hold uint16")
        if HIGH_VALUES in metadata["files"]:
            token_docs = join_token_docs(token_docs, load(HIGH_VALUES), load(HIGH_RUNS))
        order = CentroidOrder(cell_offsets, token_docs, load("residuals.npy", mmap))
        arrays = IndexArrays(order=order, **common)
    arrays.validate()
    return arrays


def load_dense_index(
    index_dir, *, verify_checksums: bool = True, mmap: bool = False
) -> DenseArrays:
    """Read a single-vector (bi-encoder) index; same checks as load_index."""
    index_dir, metadata = _open(index_dir, "dense", verify_checksums)
    num_docs = int(metadata.get("num_docs", -1))
    vectors = _load_array(index_dir, "vectors.npy", metadata, mmap)
    deleted = np.array(_load_array(index_dir, "deleted.npy", metadata, False), bool)
    if vectors.ndim != 2 or vectors.shape[0] != num_docs or deleted.shape != (num_docs,):
        raise IndexFormatError(f"{index_dir}: vectors/deleted do not match num_docs={num_docs}")
    return DenseArrays(vectors, _load_ids(index_dir, num_docs), deleted, metadata)


def index_size_bytes(index_dir) -> dict[str, int]:
    """Bytes of every file in an index folder, metadata included (for the byte budget)."""
    return {p.name: p.stat().st_size for p in sorted(Path(index_dir).iterdir()) if p.is_file()}
