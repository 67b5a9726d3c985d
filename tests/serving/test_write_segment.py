"""Live writes on the served index's write segment, through the real FastAPI app: a stream of
small writes (and the searches between them) compiles nothing after warm-up; a compaction runs
in the background while searches and writes go on and leaves the same results; a crash after a
compaction, with writes in the segment, replays them onto the compacted index; a segment past
--compact-tokens starts a compaction by itself, searches stay answered and exact during it, and
nothing compiles on the request path."""

import threading

import numpy as np
import pytest
from fastapi.testclient import TestClient

from lateint_jax import compilations, open_index
from lateint_jax.serving.app import create_app
from lateint_jax.serving.auth import AccessPolicy
from tests.conftest import seed_note
from tests.serving.documents_fixtures import (
    API_KEY,
    AUTH,
    MAX_K,
    WORDS,
    build_tiny_index,
    engine_for,
    fresh_copy,
)

QUERIES = ["moon ocean tide", "bee flower honey", "coral reef fish"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_tiny_index(tmp_path_factory.mktemp("segment"))


@pytest.fixture
def paths(built, tmp_path):
    return fresh_copy(built, tmp_path)


def client_for(engine, info) -> TestClient:
    return TestClient(
        create_app(engine, index_info=info, access=AccessPolicy(api_key=API_KEY)), headers=AUTH
    )


def search(client, query, **body):
    response = client.post("/search", json={"query": query, "k": MAX_K, **body})
    assert response.status_code == 200, response.text
    return [(h["id"], h["score"]) for h in response.json()["results"]]


def text(rng, n: int) -> str:
    return " ".join(WORDS[i] for i in rng.integers(0, len(WORDS), 3 + n % 5))


def test_a_stream_of_small_writes_compiles_nothing(paths, seed):
    rng = np.random.default_rng(seed)
    engine, info = engine_for(paths, "--writable")
    with client_for(engine, info) as client:
        before = compilations.count()
        for n in range(20):
            body = {"id": f"s-{n}", "text": text(rng, n), "metadata": {"lang": "s", "n": n}}
            assert client.post("/documents", json=body).status_code == 200
            if n % 4 == 3:
                assert client.delete(f"/documents/s-{n - 1}").status_code == 200
            if n % 5 == 0:
                assert client.post("/documents", json={"id": "doc-04", "text": text(rng, n)})
            hits = search(client, "moon", filter={"field": "n", "eq": n})
            assert [i for i, _ in hits] == [f"s-{n}"], seed_note(seed)
            search(client, "moon", filter={"field": "lang", "eq": "s"})
            search(client, "bee")
        engine.writer.wait_for_background()
        assert engine.index.delta.num_live == 16  # 20 new, 5 deleted, doc-04 replaced
        assert compilations.count() == before, f"a write or search compiled; {seed_note(seed)}"


def _state(client) -> dict:
    return {q: search(client, q) for q in QUERIES}


def _assert_same(first: dict, second: dict) -> None:
    for query in QUERIES:
        assert [i for i, _ in first[query]] == [i for i, _ in second[query]], query
        np.testing.assert_allclose(
            [s for _, s in first[query]], [s for _, s in second[query]], rtol=1e-5
        )


def test_compaction_runs_beside_searches_and_writes(paths, seed):
    """--compact-every 4: compactions run in the background during a stream of writes and
    searches; every search answers; afterwards the results are those of a restart from the
    saved index plus the log (the segment replayed), and of a clean restart."""
    rng = np.random.default_rng(seed)
    note = seed_note(seed)
    engine, info = engine_for(paths, "--writable", "--compact-every", "4")
    statuses, stop = [], threading.Event()
    with client_for(engine, info) as client:

        def keep_searching():
            while not stop.is_set():
                body = {"query": "reef", "filter": {"field": "lang", "eq": "c"}}
                statuses.append(client.post("/search", json=body).status_code)

        reader = threading.Thread(target=keep_searching)
        reader.start()
        written = {}
        for n in range(10):
            written[f"c-{n}"] = text(rng, n)
            body = {"id": f"c-{n}", "text": written[f"c-{n}"], "metadata": {"lang": "c"}}
            assert client.post("/documents", json=body).status_code == 200
            if n == 6:
                assert client.delete("/documents/c-1").status_code == 200  # compacted by now?
                written.pop("c-1")
        engine.writer.wait_for_background()
        stop.set()
        reader.join()
        assert statuses and set(statuses) == {200}, note
        assert engine.writer.compactions >= 1, note
        found = {i for i, _ in search(client, "reef", filter={"field": "lang", "eq": "c"})}
        assert found == set(written), note
        live = _state(client)
        segment = engine.index.delta.live_ids
        saved = open_index(paths["index"])  # the last compaction's save (later deletes: logged)
        assert set(engine.index.live_ids) <= set(saved.live_ids) | set(segment), note
        # a crash now: the next start replays the log rows after the saved index's seq
        crashed, info = engine_for(paths, "--writable")
        assert sorted(crashed.index.delta.live_ids) == sorted(segment), note
    with client_for(crashed, info) as client:
        _assert_same(live, _state(client))
    clean, info = engine_for(paths, "--writable")  # the crashed one's shutdown merged it all
    assert clean.index.delta.num_docs == 0 and clean.writer.store.log_size() == 0
    with client_for(clean, info) as client:
        _assert_same(live, _state(client))


def test_a_segment_past_its_token_bound_compacts_beside_searches(paths, seed):
    """--compact-tokens 32, --compact-every at its default (1000, never reached): the stream of
    writes whose segment passes 32 tokens starts a compaction in the background; every search
    meanwhile answers with the documents written so far, scored as a restart from the saved
    index plus the log scores them (the reference); nothing is compiled outside the
    background threads (compaction, segment warm-up)."""
    rng = np.random.default_rng(seed)
    note = seed_note(seed)
    engine, info = engine_for(paths, "--writable", "--compact-tokens", "32")
    writer = engine.writer
    assert writer.compact_every == 1000 and writer.compact_tokens == 32
    order = [f"t-{n}" for n in range(MAX_K)]  # all fit in one filtered search's k
    progress = {"sent": 0, "acked": 0}
    seen, unfiltered, stop = [], [], threading.Event()
    body = {"query": "reef", "k": MAX_K, "filter": {"field": "lang", "eq": "t"}}
    with client_for(engine, info) as client:
        before = compilations.by_thread()

        def keep_searching():
            while not stop.is_set():
                acked, compacting = progress["acked"], writer.compacting
                response = client.post("/search", json=body)
                compacting = compacting or writer.compacting
                seen.append((acked, response, progress["sent"], compacting))
                unfiltered.append(client.post("/search", json={"query": "moon ocean"}))

        reader = threading.Thread(target=keep_searching)
        reader.start()
        segment_tokens = []
        for n, doc_id in enumerate(order):
            progress["sent"] = n + 1
            write = {"id": doc_id, "text": text(rng, n), "metadata": {"lang": "t"}}
            assert client.post("/documents", json=write).status_code == 200, note
            progress["acked"] = n + 1
            segment_tokens.append(engine.index.delta.num_tokens)
        writer.wait_for_background()
        stop.set()
        reader.join()
        for _ in range(2):  # on the compacted index, swapped in
            seen.append((len(order), client.post("/search", json=body), len(order), False))
            unfiltered.append(client.post("/search", json={"query": "moon ocean"}))
        compiled = compilations.by_thread()
        assert writer.compactions >= 1, f"segment tokens {segment_tokens}; {note}"
        assert writer.store.log_size() < len(order), note  # the compaction dropped the log
        during = [s for s in seen if s[3]]
        assert during, f"no search ran during the compaction; {note}"
        # a crash now: the restart replays the log onto the compaction's save
        restarted, restarted_info = engine_for(paths, "--writable")
    with client_for(restarted, restarted_info) as again:
        reference = dict(search(again, "reef", filter=body["filter"]))
    assert sorted(reference) == sorted(order), note
    assert {r.status_code for r in unfiltered} == {200}, note
    for acked, response, sent, _ in seen:
        assert response.status_code == 200, f"{response.text}; {note}"
        hits = [(h["id"], h["score"]) for h in response.json()["results"]]
        ids = {i for i, _ in hits}
        assert any(ids == set(order[:j]) for j in range(acked, sent + 1)), (ids, acked, note)
        np.testing.assert_allclose(
            [s for _, s in hits], [reference[i] for i, _ in hits], rtol=1e-5, err_msg=note
        )
    request_path = {
        name: compiled.get(name, 0) - before.get(name, 0)
        for name in compiled
        if name not in ("compaction", "segment-warmup")
    }
    assert not any(request_path.values()), f"compiled on the request path: {request_path}; {note}"


def test_the_engines_live_set_follows_writes_and_compactions(paths, seed):
    """The engine reads the served snapshot's own live set (no copy of every id): after
    writes, deletes, a replacement and a compaction swap, `is_live`, the document count of
    /health, GET /documents/{id}, `ids` checks and filtered or `ids` searches all agree."""
    rng = np.random.default_rng(seed)
    note = seed_note(seed)
    engine, info = engine_for(paths, "--writable", "--compact-every", "5")
    with client_for(engine, info) as client:
        live = set(engine.doc_ids)
        main_id = min(live)

        def check(step: str) -> None:
            where = f"after {step}; {seed_note(seed)}"
            for doc_id in sorted(live | {"v-0", "v-1", "v-2", "v-3", main_id}):
                assert engine.is_live(doc_id) == (doc_id in live), f"{doc_id} {where}"
                indexed = client.get(f"/documents/{doc_id}").json().get("indexed", False)
                assert indexed == (doc_id in live), f"{doc_id} {where}"
            assert client.get("/health").json()["documents"] == len(live), where
            written = sorted(i for i in live if i.startswith("v-"))
            found = search(client, "reef", filter={"field": "lang", "eq": "v"})
            assert sorted(i for i, _ in found) == written, where
            if written:
                found = search(client, "reef", ids=written)
                assert sorted(i for i, _ in found) == written, where
            gone = sorted({"v-0", "v-1", "v-2", "v-3", main_id} - live)
            if gone:
                response = client.post("/search", json={"query": "reef", "ids": gone[:1]})
                assert response.status_code == 422 and "unknown" in response.text, where

        check("start")
        for n in range(3):
            body = {"id": f"v-{n}", "text": text(rng, n), "metadata": {"lang": "v"}}
            assert client.post("/documents", json=body).status_code == 200, note
            live.add(f"v-{n}")
        check("adds")
        assert client.delete("/documents/v-1").status_code == 200, note
        assert client.delete(f"/documents/{main_id}").status_code == 200, note
        live -= {"v-1", main_id}
        check("deletes")
        body = {"id": "v-2", "text": text(rng, 7), "metadata": {"lang": "v"}}
        assert client.post("/documents", json=body).status_code == 200, note  # replaced
        engine.writer.wait_for_background()
        assert engine.writer.compactions >= 1, note  # 5 writes: compacted and swapped in
        check("a replacement and a compaction")
        body = {"id": "v-3", "text": text(rng, 3), "metadata": {"lang": "v"}}
        assert client.post("/documents", json=body).status_code == 200, note
        assert client.delete("/documents/v-0").status_code == 200, note
        live = (live | {"v-3"}) - {"v-0"}
        check("writes after the compaction")
