"""The served index's write path (`index/segmented.py`, `index/delta.py`): writes are a write
segment plus tombstones, searched beside the main index, and give the results of an index
rebuilt with the same documents (`ColBERTIndex.add` / `delete`, the full re-layout), exact
MaxSim scores included; compaction merges the segment in while writes go on; a stream of small
writes compiles nothing after warm-up."""

import copy

import numpy as np
import pytest

from lateint_jax import compilations
from lateint_jax.errors import InputError
from lateint_jax.index import delta as delta_module
from lateint_jax.index.base import SearchShape
from lateint_jax.index.build import build_index
from lateint_jax.index.colbert_index import ColBERTIndex
from lateint_jax.index.delta import MIN_CAPACITY, UPLOAD_BLOCK
from tests.conftest import seed_note
from tests.synthetic import synthetic_docs

DIM = 32


@pytest.fixture(scope="module")
def arrays():
    docs, ids = synthetic_docs(num_docs=80, dim=DIM, seed=5)
    return build_index(docs, ids, None, num_centroids=256, progress=False)


def queries(rng, count=5, tokens=8):
    q = rng.normal(size=(count, tokens, DIM)).astype(np.float32)
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def rebuilt(arrays, removed, added) -> ColBERTIndex:
    """The reference: the index with the writes applied by a full re-layout (delete + add)."""
    index = ColBERTIndex(copy.copy(arrays))
    if removed:
        index.delete(removed)
    if added:
        index.add(list(added.values()), list(added))
    return index


def assert_same_hits(got, expected, note):
    for number, (row, want) in enumerate(zip(got, expected)):
        assert [i for i, _ in row] == [i for i, _ in want], f"query {number}; {note}"
        np.testing.assert_allclose(
            [s for _, s in row], [s for _, s in want], rtol=1e-5, atol=1e-5, err_msg=note
        )


def new_docs(seed, count):
    docs, _ = synthetic_docs(num_docs=count, dim=DIM, seed=seed)
    return docs


def test_writes_search_as_a_rebuilt_index(arrays, seed, rng):
    """Adds, deletes (of main and segment documents) and replacements: search, exact search
    and subsets (a metadata filter's path) equal the rebuilt index's exact MaxSim."""
    note = seed_note(seed)
    served = ColBERTIndex(copy.copy(arrays)).writable()
    docs = new_docs(seed, 12)
    added = {f"new-{n}": d for n, d in enumerate(docs[:8])}
    served = served.with_writes(["doc-3", "doc-40"], added)
    replaced = {"doc-7": docs[8], "new-2": docs[9], "new-9": docs[10]}  # main, segment, new
    served = served.with_writes(["doc-7", "new-2", "new-5"], replaced)
    final = {k: v for k, v in added.items() if k not in ("new-2", "new-5")} | replaced
    reference = rebuilt(arrays, ["doc-3", "doc-40", "doc-7"], final)
    q = queries(rng)
    assert sorted(served.live_ids) == sorted(reference.live_ids)
    assert_same_hits(served.search(q, k=10), reference.exact_search(q, k=10), note)
    assert_same_hits(served.exact_search(q, k=10), reference.exact_search(q, k=10), note)
    subset = ["doc-1", "new-0", "new-2", "doc-7", "doc-50", "new-9"]
    assert_same_hits(
        served.search(q, k=4, subset_ids=subset),
        reference.exact_search(q, k=4, subset_ids=subset),
        note,
    )
    for doc_id in ("new-2", "doc-7", "doc-1"):
        np.testing.assert_array_equal(
            served.document_vectors(doc_id), reference.document_vectors(doc_id), err_msg=doc_id
        )
    hit_ids = {i for row in served.search(q, k=90) for i, _ in row}
    assert not hit_ids & {"doc-3", "doc-40", "new-5"}, note
    assert {"new-0", "new-9", "doc-7"} <= hit_ids, note


def test_bad_writes_are_refused(arrays):
    served = ColBERTIndex(copy.copy(arrays)).writable()
    with pytest.raises(InputError, match="not in the index"):
        served.with_writes(["nope"], {})
    with pytest.raises(InputError, match="already in the index"):
        served.with_writes([], {"doc-1": np.ones((2, DIM), np.float32)})
    with pytest.raises(InputError, match="subset_ids not in the index"):
        served.search(np.ones((1, 4, DIM), np.float32), subset_ids=["nope"])
    with pytest.raises(InputError, match="merge first"):
        served.with_writes([], {"x": np.ones((2, DIM), np.float32)}).save()


def test_compaction_while_writes_go_on(arrays, seed, rng):
    """merge() of a snapshot, then rebased() onto the snapshot that took writes meanwhile
    (including deletes of merged documents): the result holds everything, the segment only
    the later writes, and searches equal the rebuilt index's."""
    note = seed_note(seed)
    docs = new_docs(seed + 1, 10)
    snapshot = ColBERTIndex(copy.copy(arrays)).writable()
    snapshot = snapshot.with_writes(["doc-0"], {f"a-{n}": docs[n] for n in range(4)})
    merged = snapshot.merge()
    later = snapshot.with_writes(["a-1", "doc-5", "a-2"], {"b-0": docs[4], "a-2": docs[5]})
    later = later.with_writes(["a-2"], {"b-1": docs[6]})  # a replaced doc deleted again
    rebased = later.rebased(merged, snapshot)
    assert rebased.delta.doc_ids == ["b-0", "a-2", "b-1"]
    assert rebased.delta.live_ids == ["b-0", "b-1"], note
    final = {"a-0": docs[0], "a-3": docs[3], "b-0": docs[4], "b-1": docs[6]}
    reference = rebuilt(arrays, ["doc-0", "doc-5"], final)
    q = queries(rng)
    assert sorted(rebased.live_ids) == sorted(reference.live_ids), note
    assert_same_hits(rebased.search(q, k=10), reference.exact_search(q, k=10), note)
    assert_same_hits(later.search(q, k=10), reference.exact_search(q, k=10), note)
    again = rebased.merge()  # the next compaction: a plain index with every document
    assert sorted(again.live_ids) == sorted(reference.live_ids)
    assert_same_hits(again.search(q, k=10), reference.exact_search(q, k=10), note)


def test_small_writes_compile_nothing_after_warmup(arrays, seed, rng):
    note = seed_note(seed)
    served = ColBERTIndex(copy.copy(arrays)).writable()
    served.warmup([SearchShape(batch=4, k=10, query_tokens=8, subset=True)])
    docs = new_docs(seed + 2, 30)
    q = queries(rng, count=3)
    before = compilations.count()
    for n, doc in enumerate(docs):
        removed = [f"doc-{n}"] + ([f"w-{n - 2}"] if n >= 2 and n % 3 == 0 else [])
        served = served.with_writes(removed, {f"w-{n}": doc})
        served.search(q, k=10)
        served.search(q[:1], k=5, subset_ids=[f"w-{n}", "doc-70"])
    assert served.delta.capacity == MIN_CAPACITY
    assert compilations.count() == before, f"a write or search compiled after warm-up; {note}"


def test_crossing_a_step_compiles_before_the_snapshot_exists(arrays, rng):
    """A write that grows the segment past its step compiles the new step's program inside
    with_writes (the writer's thread), so the first search on it compiles nothing."""
    served = ColBERTIndex(copy.copy(arrays)).writable()
    served.warmup([SearchShape(batch=2, k=5, query_tokens=8)])
    big = np.tile(new_docs(7, 1)[0][:1], (MIN_CAPACITY, 1))  # one document of a step's tokens
    served = served.with_writes([], {"big": big, "small": new_docs(8, 1)[0]})
    assert served.delta.capacity == 2 * MIN_CAPACITY
    before = compilations.count()
    hits = served.search(queries(rng, count=2), k=5)
    assert compilations.count() == before
    assert len(hits) == 2 and all(len(row) == 5 for row in hits)


def assert_live_view(index, expected: set[str], probed: set[str], note: str) -> None:
    """Membership of every probed id, the live count and the live ids match `expected`."""
    wrong = sorted(i for i in probed | expected if (i in index) != (i in expected))
    assert not wrong, f"membership wrong for {wrong[:5]}; {note}"
    assert index.num_live == len(expected), note
    assert sorted(index.live_ids) == sorted(expected), note


def test_the_live_view_follows_writes_and_compaction(arrays, seed, rng):
    """`id in index` and `num_live` (what the engine reads per request instead of a set of
    every id) after adds, deletes of main and segment documents, replacements and a
    compaction swap; every older snapshot keeps its own view (tombstoned copies share the
    main index's id map); subset searches of the written ids see the same set."""
    note = seed_note(seed)
    docs = new_docs(seed + 3, 8)
    snapshots = [(ColBERTIndex(copy.copy(arrays)).writable(), set(arrays.doc_ids))]
    probed = set(arrays.doc_ids) | {f"n-{n}" for n in range(8)} | {"never"}

    def write(removed, added):
        index, live = snapshots[-1]
        live = (live - set(removed)) | set(added)
        snapshots.append((index.with_writes(removed, added), live))

    write([], {"n-0": docs[0], "n-1": docs[1], "n-2": docs[2]})
    write(["doc-4", "n-1"], {})  # a main and a segment delete
    write(["doc-9", "n-2"], {"doc-9": docs[3], "n-2": docs[4], "n-3": docs[5]})  # replaced
    compacted_from = snapshots[-1][0]
    merged = compacted_from.merge()
    write(["doc-10", "n-0"], {"n-4": docs[6]})  # meanwhile
    rebased = snapshots[-1][0].rebased(merged, compacted_from)
    snapshots.append((rebased, snapshots[-1][1]))
    write(["n-3", "doc-9"], {"n-1": docs[7]})  # after the swap: merged and re-added ids
    for number, (index, live) in enumerate(snapshots):
        assert_live_view(index, live, probed, f"snapshot {number}; {note}")
    index, live = snapshots[-1]
    assert "doc-4" not in merged and "n-2" in merged and "n-0" in merged, note
    with pytest.raises(InputError, match="subset_ids not in the index"):
        index.search(queries(rng, count=1), k=3, subset_ids=["n-1", "doc-10"])
    subset = ["n-1", "n-2", "n-4", "doc-9" if "doc-9" in live else "doc-11"]
    hits = index.search(queries(rng, count=2), k=10, subset_ids=subset)
    assert all({i for i, _ in row} == set(subset) for row in hits), note


def test_a_write_updates_the_placed_segment_in_place_of_a_full_upload(arrays, seed, monkeypatch):
    """With updates on the device (the default on accelerators), each snapshot's device
    arrays, grown by writing only the new tokens into its parent's (several update blocks for
    a long write, the last block running past the capacity), equal a full padded upload of the
    same segment, and every snapshot keeps its own; after warm-up nothing compiles."""
    note = seed_note(seed)
    monkeypatch.setattr(delta_module, "UPDATE_ON_DEVICE", True)
    served = ColBERTIndex(copy.copy(arrays)).writable()
    served.warmup([SearchShape(batch=2, k=5, query_tokens=8)])
    before = compilations.count()
    rng = np.random.default_rng(seed)
    lengths = [3, UPLOAD_BLOCK + 7, 2 * UPLOAD_BLOCK, 5]
    docs = [rng.normal(size=(n, DIM)).astype(np.float32) for n in lengths]
    tail = MIN_CAPACITY - sum(lengths) - 4  # ends 4 tokens short of the step: last block drops
    docs.append(rng.normal(size=(tail, DIM)).astype(np.float32))
    snapshots = [served]
    for n, doc in enumerate(docs):
        removed = ["w-1"] if n == 3 else []
        snapshots.append(snapshots[-1].with_writes(removed, {f"w-{n}": doc}))
    assert snapshots[-1].delta.capacity == MIN_CAPACITY, note
    assert compilations.count() == before, f"a write compiled after warm-up; {note}"
    for number, snapshot in enumerate(snapshots):
        delta = snapshot.delta
        placed, full = delta._device_arrays(), delta._padded(delta.capacity)
        for got, want in zip(placed, full):
            np.testing.assert_array_equal(np.asarray(got), np.asarray(want), err_msg=f"{number}")
