"""Index storage: round trips, atomic replacement, crash safety, checksums and truncation."""

import json
import os
import stat

import numpy as np
import pytest

from lateint_jax import outputs
from lateint_jax.codec import codes_io
from lateint_jax.errors import IndexFormatError, InputError
from lateint_jax.index import storage
from lateint_jax.index.build import build_dense_index, build_index
from lateint_jax.index.storage import load_dense_index, load_index, save_dense_index, save_index
from lateint_jax.outputs import umask
from tests.synthetic import synthetic_docs

FIELDS = ("centroids", "bucket_cutoffs", "bucket_weights", "codes", "residuals", "doc_offsets")
FIELDS += ("ivf_pids", "ivf_offsets", "deleted")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    docs, ids = synthetic_docs()
    path = tmp_path_factory.mktemp("idx") / "index"
    arrays = build_index(
        docs, ids, path, num_centroids=32, progress=False, model_meta={"name": "m"}
    )
    return path, arrays


def assert_same(a, b):
    for name in FIELDS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.doc_ids == b.doc_ids and a.nbits == b.nbits


def test_round_trip(built):
    path, arrays = built
    loaded = load_index(path)
    assert_same(arrays, loaded)
    assert loaded.has_order and isinstance(loaded.order.residuals, np.memmap)
    meta = json.loads((path / "metadata.json").read_text())
    assert meta["format_version"] == storage.FORMAT_VERSION and meta["kind"] == "colbert"
    assert meta["model"] == {"name": "m"} and meta["num_embeddings"] == arrays.num_embeddings
    assert set(meta["files"]) == {p.name for p in path.iterdir()} - {"metadata.json"}


@pytest.mark.parametrize("exchange", [True, False])
def test_existing_folder_refused_then_replaced(built, tmp_path, monkeypatch, exchange):
    if not exchange:  # the rename-aside path used where renameat2 is missing
        monkeypatch.setattr(outputs, "_exchange", lambda a, b: False)
    _, arrays = built
    target = tmp_path / "index"
    save_index(arrays, target)
    with pytest.raises(InputError, match="already exists"):
        save_index(arrays, target)
    docs, ids = synthetic_docs(num_docs=40, seed=1)
    other = build_index(docs, ids, None, num_centroids=16, progress=False)
    save_index(other, target, overwrite=True)
    assert_same(other, load_index(target))
    assert [p.name for p in tmp_path.iterdir()] == ["index"]  # no temporary folders left


def user_files(folder):
    """A folder of the user's own files (not an index); returns its contents to compare."""
    folder.mkdir()
    (folder / "corpus.jsonl").write_text('{"_id": "1", "text": "mine"}\n')
    (folder / "qrels").mkdir()
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n")
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_overwrite_refuses_a_folder_that_is_not_an_index(built, tmp_path):
    _, arrays = built
    target = tmp_path / "mydata"
    contents = user_files(target)
    with pytest.raises(InputError, match=r"refusing to replace .*mydata: it is a folder"):
        save_index(arrays, target, overwrite=True)
    vectors = np.ones((2, 3), np.float32)
    dense = build_dense_index(vectors, ["a", "b"])
    with pytest.raises(InputError, match="not recognised as a lateint-jax index"):
        save_dense_index(dense, target, overwrite=True)
    assert {p: p.read_bytes() for p in target.rglob("*") if p.is_file()} == contents
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mydata"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="it is a file"):
        save_index(arrays, tmp_path / "file", overwrite=True)


def test_index_is_recognised_by_its_metadata(built, tmp_path):
    path, arrays = built
    assert storage.is_index_folder(path)
    older = tmp_path / "older"
    save_index(arrays, older)
    meta_path = older / "metadata.json"
    meta_path.write_text(json.dumps({**json.loads(meta_path.read_text()), "format_version": 0}))
    assert storage.is_index_folder(older)  # another format version is still ours to replace
    save_index(arrays, older, overwrite=True)
    assert_same(arrays, load_index(older))
    meta_path.write_text(json.dumps({"name": "some other tool's metadata"}))
    assert not storage.is_index_folder(older)
    meta_path.unlink()
    assert not storage.is_index_folder(older) and not storage.is_index_folder(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    save_index(arrays, empty)  # an empty folder holds nothing to lose
    assert_same(arrays, load_index(empty))


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_index_folder_gets_umask_modes(built, tmp_path, mask):
    _, arrays = built
    previous = os.umask(mask)
    try:
        save_index(arrays, tmp_path / "index")
        assert umask() == mask
    finally:
        os.umask(previous)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)
    assert mode(tmp_path / "index") == 0o777 & ~mask, f"umask={mask:o}"
    for path in (tmp_path / "index").iterdir():
        assert mode(path) == 0o666 & ~mask, f"{path} umask={mask:o}"


def test_crash_midway_keeps_previous_index(built, tmp_path, monkeypatch):
    _, arrays = built
    target = tmp_path / "index"
    save_index(arrays, target)
    real_write = storage._write_file

    def failing_write(folder, name, write):
        if name == "residuals.npy":
            raise OSError("disk full (simulated)")
        return real_write(folder, name, write)

    monkeypatch.setattr(storage, "_write_file", failing_write)
    docs, ids = synthetic_docs(num_docs=40, seed=2)
    with pytest.raises(OSError, match="simulated"):
        build_index(docs, ids, target, num_centroids=16, overwrite=True, progress=False)
    with pytest.raises(OSError, match="simulated"):
        build_index(docs, ids, tmp_path / "fresh", num_centroids=16, progress=False)
    assert_same(arrays, load_index(target))
    # no temporary index folders; each build keeps its state beside the target for resume=True
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh.build", "index", "index.build"]


def test_truncated_and_corrupted_files(built, tmp_path):
    _, arrays = built
    target = tmp_path / "index"
    save_index(arrays, target)
    residuals = target / "residuals.npy"
    data = residuals.read_bytes()
    residuals.write_bytes(data[:-7])
    for verify in (True, False):  # sizes are checked even without hashing
        with pytest.raises(IndexFormatError, match="residuals.npy has .* bytes"):
            load_index(target, verify_checksums=verify)
    flipped = bytearray(data)
    flipped[-3] ^= 0xFF
    residuals.write_bytes(bytes(flipped))
    with pytest.raises(IndexFormatError, match="checksum"):
        load_index(target)
    load_index(target, verify_checksums=False)  # same size: only the hash would catch it
    residuals.unlink()
    with pytest.raises(IndexFormatError, match="residuals.npy is missing"):
        load_index(target)


def test_metadata_problems(built, tmp_path):
    _, arrays = built
    target = tmp_path / "index"
    save_index(arrays, target)
    meta_path = target / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(IndexFormatError, match="format version 99"):
        load_index(target)
    meta_path.write_text("{not json")
    with pytest.raises(IndexFormatError, match="not valid JSON"):
        load_index(target)
    meta_path.unlink()
    with pytest.raises(IndexFormatError, match="not a lateint index"):
        load_index(target)
    with pytest.raises(IndexFormatError, match="does not exist"):
        load_index(tmp_path / "nowhere")


def test_dense_round_trip_and_kind_check(built, tmp_path):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(7, 12)).astype(np.float32)
    ids = [f"d{i}" for i in range(7)]
    build_dense_index(vectors, ids, tmp_path / "dense", model_meta={"name": "bi"})
    dense = load_dense_index(tmp_path / "dense")
    np.testing.assert_array_equal(dense.vectors, vectors)
    assert dense.doc_ids == ids and not dense.deleted.any()
    assert dense.metadata["kind"] == "dense" and dense.metadata["model"]["name"] == "bi"
    with pytest.raises(IndexFormatError, match="is a 'dense' index"):
        load_index(tmp_path / "dense")
    with pytest.raises(IndexFormatError, match="is a 'colbert' index"):
        load_dense_index(built[0])


@pytest.mark.parametrize("num_centroids", [300, 70000])
def test_codes_encodings_round_trip(num_centroids):
    rng = np.random.default_rng(num_centroids)
    lengths = rng.integers(0, 50, 200)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    codes = rng.integers(0, num_centroids, offsets[-1]).astype(np.int32)
    doc_of_row = np.repeat(np.arange(200), lengths)
    sorted_codes = codes[np.lexsort((codes, doc_of_row))]
    plain = "uint16" if num_centroids <= 65536 else "int32"
    assert codes_io.encode_codes(codes, offsets, num_centroids).encoding == plain
    best = codes_io.encode_codes(sorted_codes, offsets, num_centroids)
    assert best.encoding.startswith(("rice-", "expgolomb-"))
    for values, encoding in [(codes, plain), (sorted_codes, plain), (sorted_codes, None)] + [
        (sorted_codes, f"{kind}-{k}") for kind in ("rice", "expgolomb") for k in (0, 1, 5, 13)
    ]:
        encoded = codes_io.encode_codes(values, offsets, num_centroids, encoding)
        decoded = codes_io.decode_codes(encoded.encoding, encoded.arrays, offsets, num_centroids)
        np.testing.assert_array_equal(decoded, values, err_msg=encoded.encoding)
    broken = dict(best.arrays, **{"codes.unary.npy": best.arrays["codes.unary.npy"][:-4]})
    with pytest.raises(IndexFormatError, match="one id per token"):
        codes_io.decode_codes(best.encoding, broken, offsets, num_centroids)
    with pytest.raises(IndexFormatError, match="unknown codes_encoding"):
        codes_io.decode_codes("zstd-1", best.arrays, offsets, num_centroids)


@pytest.mark.parametrize("encoding", codes_io.CENTROID_ENCODINGS)
def test_centroid_encodings_are_idempotent(encoding):
    rng = np.random.default_rng(0)
    centroids = rng.normal(size=(50, 16)).astype(np.float32)
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    once = codes_io.round_trip_centroids(centroids, encoding)
    np.testing.assert_array_equal(codes_io.round_trip_centroids(once, encoding), once)
    # int6 / int8 rows: step below max|value| / 15.5 (/ 63.5), error at most half of that
    peak = np.abs(centroids).max(1, keepdims=True)
    bound = {"int6": peak / 31, "int8": peak / 128, "float16": 1e-3, "float32": 0}
    assert (np.abs(once - centroids) <= bound[encoding] + 1e-7).all()


@pytest.mark.parametrize("dim", [128, 16, 5, 3])
def test_int6_centroids_are_packed_and_exact_in_int8(dim):
    rng = np.random.default_rng(dim)
    centroids = rng.normal(size=(40, dim)).astype(np.float32)
    centroids[3] = 0.0  # an all-zero row
    stored = codes_io.encode_centroids(centroids, "int6")
    assert stored["centroids.npy"].dtype == np.uint8
    assert stored["centroids.npy"].shape == (40, -(-6 * dim // 8))
    decoded = codes_io.decode_centroids("int6", stored, dim)
    np.testing.assert_array_equal(decoded, codes_io.round_trip_centroids(centroids, "int6"))
    assert (decoded[3] == 0).all()
    # every int6 row is exactly representable as int8 (an old int8 index re-encodes losslessly)
    np.testing.assert_array_equal(codes_io.round_trip_centroids(decoded, "int8"), decoded)
    with pytest.raises(IndexFormatError, match="bytes per row"):
        short = {**stored, "centroids.npy": stored["centroids.npy"][:, 1:]}
        codes_io.decode_centroids("int6", short, dim)


def test_new_index_stores_int6_centroids(built):
    path, arrays = built
    meta = json.loads((path / "metadata.json").read_text())
    assert meta["centroids_encoding"] == storage.CENTROIDS_ENCODING == "int6"
    assert meta["files"]["centroids.npy"]["shape"] == [arrays.num_centroids, arrays.dim * 6 // 8]
    # build encodes residuals against exactly the centroids on disk
    np.testing.assert_array_equal(
        codes_io.round_trip_centroids(arrays.centroids, "int6"), arrays.centroids
    )


def test_int8_index_keeps_its_encoding_when_saved_again(built, tmp_path):
    _, arrays = built
    old = load_index(built[0])
    old.metadata = {**old.metadata, "centroids_encoding": "int8"}
    save_index(old, tmp_path / "int8")
    meta = json.loads((tmp_path / "int8" / "metadata.json").read_text())
    assert meta["centroids_encoding"] == "int8"
    assert meta["files"]["centroids.npy"]["dtype"] == "|i1"
    again = load_index(tmp_path / "int8")
    assert_same(arrays, again)
    save_index(again, tmp_path / "again")
    meta = json.loads((tmp_path / "again" / "metadata.json").read_text())
    assert meta["centroids_encoding"] == "int8"


def test_residuals_are_mapped_from_the_index_file(built):
    path, _ = built
    loaded = load_index(path, verify_checksums=False)
    mapped = loaded.order.residuals
    assert mapped.filename and os.path.samefile(mapped.filename, path / "residuals.npy")
