"""Index format version 2 (tokens in centroid order): it opens without sorting, version 1
folders still load, chunked checksums catch damage, and the device holds what the disk does."""

import hashlib
import json
import logging

import jax
import numpy as np
import pytest

from lateint_jax.codec import codes_io
from lateint_jax.errors import IndexFormatError
from lateint_jax.index import storage
from lateint_jax.index.build import build_index
from lateint_jax.index.colbert_index import ColBERTIndex
from lateint_jax.index.layout import CentroidOrder, IndexArrays, stable_argsort
from lateint_jax.index.storage import index_size_bytes, load_index, save_index
from tests.synthetic import clustered_docs, queries_like


def write_version_1(arrays: IndexArrays, folder) -> None:
    """A version 1 folder written from docs/INDEX_FORMAT.md's description of it (document
    order, entropy-coded centroid ids, one sha256 per file), as the previous release wrote."""
    folder.mkdir()
    files = {}

    def put(name, array=None, text=None):
        path = folder / name
        if text is None:
            np.save(path, np.ascontiguousarray(array), allow_pickle=False)
        else:
            path.write_text(text)
        entry = {"bytes": path.stat().st_size}
        entry["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        if array is not None:
            entry.update(dtype=np.asarray(array).dtype.str, shape=list(np.shape(array)))
        files[name] = entry

    for name, array in codes_io.encode_centroids(arrays.centroids, "int6").items():
        put(name, array)
    put("bucket_cutoffs.npy", arrays.bucket_cutoffs)
    put("bucket_weights.npy", arrays.bucket_weights)
    encoded = codes_io.encode_codes(arrays.codes, arrays.doc_offsets, arrays.num_centroids)
    for name, array in encoded.arrays.items():
        put(name, array)
    put("residuals.npy", np.asarray(arrays.residuals))
    put("doclens.npy", arrays.doc_lengths)
    put("deleted.npy", arrays.deleted)
    put("doc_ids.json", text=json.dumps(list(arrays.doc_ids)))
    metadata = {
        "format_version": 1, "kind": "colbert", "dim": arrays.dim, "nbits": arrays.nbits,
        "num_docs": arrays.num_docs, "num_deleted": int(arrays.deleted.sum()),
        "num_embeddings": arrays.num_embeddings, "num_centroids": arrays.num_centroids,
        "codes_encoding": encoded.encoding, "centroids_encoding": "int6", "files": files,
    }  # fmt: skip
    (folder / "metadata.json").write_text(json.dumps(metadata))


@pytest.fixture(scope="module")
def corpus():
    docs = clustered_docs(300, dim=64, seed=3)
    arrays = build_index(docs, [f"d{i}" for i in range(300)], None, progress=False)
    return docs, arrays


def test_version_2_opens_in_centroid_order_and_searches_as_version_1(corpus, tmp_path, caplog):
    docs, arrays = corpus
    write_version_1(arrays, tmp_path / "v1")
    save_index(arrays, tmp_path / "v2")
    with caplog.at_level(logging.WARNING):
        old = ColBERTIndex.load(tmp_path / "v1")
    assert "format version 1" in caplog.text and "save it again" in caplog.text.lower()
    new = ColBERTIndex.load(tmp_path / "v2")
    meta = json.loads((tmp_path / "v2" / "metadata.json").read_text())
    assert meta["format_version"] == 2 and "codes_encoding" not in meta
    assert not {"codes.npy", "codes.unary.npy"} & set(meta["files"])
    # version 2 was opened from its centroid order: document order never materialised
    assert new.arrays._codes is None and new.arrays._residuals is None
    for name in ("codes", "residuals", "doc_offsets", "deleted"):
        np.testing.assert_array_equal(getattr(old.arrays, name), getattr(arrays, name), name)
        np.testing.assert_array_equal(getattr(new.arrays, name), getattr(arrays, name), name)
    np.testing.assert_array_equal(new.arrays.ivf_pids, arrays.ivf_pids)
    np.testing.assert_array_equal(new.arrays.ivf_offsets, arrays.ivf_offsets)
    queries = queries_like(docs, 6, seed=5)
    for knobs in ({}, {"nprobe": 2, "rerank": 0}, {"ncells": 2}):
        assert new.search(queries, k=5, **knobs) == old.search(queries, k=5, **knobs), knobs
    assert new.exact_search(queries, k=5) == old.exact_search(queries, k=5)
    np.testing.assert_array_equal(new.document_vectors("d7"), old.document_vectors("d7"))
    # a version 1 index saved again is version 2
    old.save(tmp_path / "upgraded")
    upgraded = load_index(tmp_path / "upgraded")
    np.testing.assert_array_equal(upgraded.order.token_docs, new.arrays.order.token_docs)


def test_update_and_save_round_trip_from_version_2(corpus, tmp_path):
    docs, arrays = corpus
    save_index(arrays, tmp_path / "index")
    index = ColBERTIndex.load(tmp_path / "index")
    index.delete(["d3", "d4"])
    index.add(docs[:2], ["new0", "new1"])
    index.save()
    again = ColBERTIndex.load(tmp_path / "index")
    queries = queries_like(docs, 4, seed=9)
    assert again.search(queries, k=5) == index.search(queries, k=5)
    assert "d3" not in again and "new1" in again
    np.testing.assert_array_equal(again.document_vectors("new0"), index.document_vectors("new0"))


def test_centroid_order_is_read_off_without_a_sort(corpus):
    _, arrays = corpus
    order = CentroidOrder.from_documents(
        arrays.codes, arrays.residuals, arrays.doc_offsets, arrays.num_centroids
    )
    cells = np.repeat(np.arange(arrays.num_centroids), np.diff(order.cell_offsets))
    keys = cells.astype(np.int64) * arrays.num_docs + order.token_docs
    assert (np.diff(keys) >= 0).all()  # by centroid, then by document
    rows = order.document_rows
    np.testing.assert_array_equal(cells[rows], arrays.codes)
    np.testing.assert_array_equal(order.residuals[rows], arrays.residuals)
    wide = order.token_docs.astype(np.uint32) * 70_001 % 100_003  # keys above 16 bits
    np.testing.assert_array_equal(stable_argsort(wide), np.argsort(wide, kind="stable"))


@pytest.mark.parametrize("name", ["residuals.npy", "token_docs.npy", "cell_lengths.npy",
                                  "doclens.npy", "centroids.npy", "doc_ids.json"])  # fmt: skip
def test_truncated_or_corrupted_file_is_named(corpus, tmp_path, monkeypatch, name):
    _, arrays = corpus
    monkeypatch.setattr(storage, "CHECKSUM_CHUNK", 4096)  # several chunks per big file
    folder = tmp_path / "index"
    save_index(arrays, folder)
    entry = json.loads((folder / "metadata.json").read_text())["files"][name]
    assert len(entry["sha256_chunks"]) == -(-entry["bytes"] // 4096)
    path = folder / name
    data = path.read_bytes()
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(flipped))
    with pytest.raises(IndexFormatError, match=f"{name} fails its sha256 checksum"):
        ColBERTIndex.load(folder)
    path.write_bytes(data[:-5])
    for verify in (True, False):  # a size check at open, whether or not hashes are verified
        with pytest.raises(IndexFormatError, match=f"{name} has .* bytes"):
            load_index(folder, verify_checksums=verify)


def test_device_and_disk_bytes_per_vector(tmp_path):
    """The two figures stats() reports, recomputed from the folder and the layout's dtypes: at
    nbits=2, dim=128 the disk holds <= 36 bytes a vector, the device each residual once."""
    rng = np.random.default_rng(0)
    docs = [
        rng.standard_normal((int(n), 128)).astype(np.float32) for n in rng.integers(20, 60, 800)
    ]
    arrays = build_index(docs, [str(i) for i in range(len(docs))], tmp_path / "i", num_centroids=256,
                         progress=False)  # fmt: skip
    index = ColBERTIndex.load(tmp_path / "i", devices=jax.devices()[:1])
    m, c = arrays.num_embeddings, arrays.num_centroids
    stats = index.stats()
    disk = sum(index_size_bytes(tmp_path / "i").values())
    assert stats["disk_bytes_per_token"] == pytest.approx(disk / m)
    assert disk / m <= 36
    n = index.warp.docs_per_shard
    expected = (
        m * 32  # residuals, once, in centroid order
        + m * 2  # token documents (uint16)
        + m * 2  # centroid ids in document order (uint16)
        + m * 2  # rows within those centroids' slices (uint16)
        + c * 128  # centroids (int8 rows: int6 values on disk are exact in them)
        + c * 4  # their power-of-two scales (float32)
        + 128 * 4 * 4  # bucket weights (float32)
        + (c + 1) * 4
        + (n + 1) * 4  # cell and document offsets
    )
    assert index.warp.centroids.dtype == jax.numpy.int8
    assert stats["device_bytes_per_token"] == pytest.approx(expected / m)
    # beyond the disk's bytes the device holds 4 per vector: document-order centroid ids and
    # rows, which let stage 3 read a document's tokens without a search
    assert stats["device_bytes_per_token"] <= 1.20 * stats["disk_bytes_per_token"]


def test_document_numbers_above_16_bits_are_stored_in_two_parts(tmp_path, rng, seed):
    """More than 65,536 documents: token_docs.npy keeps the low 16 bits, the high bits go in
    runs; loading joins them back."""
    num_docs, num_centroids = 70_000, 64
    lengths = rng.integers(1, 4, num_docs)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    doc_of_row = np.repeat(np.arange(num_docs), lengths)
    codes = rng.integers(0, num_centroids, offsets[-1]).astype(np.int32)
    codes = codes[np.lexsort((codes, doc_of_row))]  # each document's tokens by centroid
    arrays = IndexArrays(
        centroids=codes_io.round_trip_centroids(rng.standard_normal((num_centroids, 8))),
        bucket_cutoffs=np.sort(rng.standard_normal((8, 3)), axis=1).astype(np.float32),
        bucket_weights=np.sort(rng.standard_normal((8, 4)), axis=1).astype(np.float32),
        codes=codes,
        residuals=rng.integers(0, 256, (offsets[-1], 2), dtype=np.uint8),
        doc_offsets=offsets,
        doc_ids=[f"d{n}" for n in range(num_docs)],
        deleted=np.zeros(num_docs, bool),
        nbits=2,
    )
    save_index(arrays, tmp_path / "index")
    files = json.loads((tmp_path / "index" / "metadata.json").read_text())["files"]
    assert files["token_docs.npy"]["dtype"] == "<u2", seed
    runs = files[storage.HIGH_RUNS]["shape"][0]
    assert runs <= num_centroids * 2, seed  # one or two high parts per centroid
    loaded = load_index(tmp_path / "index")
    np.testing.assert_array_equal(loaded.order.token_docs, arrays.order.token_docs)
    assert loaded.order.token_docs.max() >= 1 << 16
    np.testing.assert_array_equal(loaded.codes, arrays.codes)
    np.testing.assert_array_equal(loaded.residuals, arrays.residuals)


def test_one_cpu_device_searches_the_mapped_file(corpus, tmp_path):
    """On CPU, one device: the device's residuals are the memory-mapped file itself (JAX
    aliases the aligned buffer), so opening reads only what searches touch."""
    if jax.devices()[0].platform != "cpu":
        pytest.skip("aliasing a host buffer is a CPU property")
    _, arrays = corpus
    save_index(arrays, tmp_path / "index")
    index = ColBERTIndex.load(tmp_path / "index", devices=jax.devices()[:1], verify_checksums=False)
    mapped = index.arrays.order.residuals
    assert isinstance(mapped, np.memmap)
    placed = index.warp.token_residuals.addressable_shards[0].data
    assert placed.unsafe_buffer_pointer() == np.asarray(mapped).ctypes.data
