"""Live writes through the real FastAPI app over a tiny index: a write is searchable and stored
when acknowledged, an upsert replaces, a delete removes, a request is applied whole or not at
all, searches go on during writes, and a restart (with or without a clean shutdown) serves the
same documents. The last test SIGKILLs a real `serve.py` during a stream of writes."""

import http.client
import random
import shutil
import signal
import threading
import time
import zlib

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from lateint_jax import open_index
from lateint_jax.encoders import ColBERT
from lateint_jax.errors import InputError
from lateint_jax.serving.app import create_app
from lateint_jax.serving.auth import AccessPolicy
from tests.conftest import seed_note
from tests.local_servers import free_port, spawn_serve, wait_until_healthy
from tests.serving.documents_fixtures import (
    API_KEY,
    AUTH,
    MAX_K,
    WORDS,
    build_tiny_index,
    engine_for,
    fresh_copy,
    serve_args,
)

QUERIES = ["moon ocean tide", "bee flower honey", "volcano lava rock"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_tiny_index(tmp_path_factory.mktemp("writes"))


@pytest.fixture
def paths(built, tmp_path):
    return fresh_copy(built, tmp_path)


@pytest.fixture(scope="module")
def served(built, tmp_path_factory):
    """One writable server for the tests that each write their own ids (warm-up is slow)."""
    index = tmp_path_factory.mktemp("served") / "index"
    shutil.copytree(built["index"], index)
    engine, info = engine_for({**built, "index": index}, "--writable")
    with TestClient(
        create_app(engine, index_info=info, access=AccessPolicy(api_key=API_KEY)), headers=AUTH
    ) as client:
        yield engine, client


def count(client) -> int:
    return client.get("/health").json()["documents"]


def search(client, query, **body):
    response = client.post("/search", json={"query": query, "k": MAX_K, **body})
    assert response.status_code == 200, response.text
    return response.json()["results"]


def test_writes_need_the_key(served):
    _, client = served
    anonymous = TestClient(client.app)  # no lifespan: the served engine stays open
    body = {"id": "keyless", "text": "moon ocean tide"}
    missing = anonymous.post("/documents", json=body)
    assert missing.status_code == 401, missing.text
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = anonymous.post("/documents", json=body, headers={"Authorization": "Bearer x" * 3})
    assert wrong.status_code == 403, wrong.text
    assert anonymous.delete("/documents/doc-01").status_code == 401
    assert client.get("/documents/keyless").status_code == 404  # nothing was written


def test_a_write_is_searchable_and_stored_when_acknowledged(served):
    engine, client = served
    before = count(client)
    text = "glacier ice river moon"
    response = client.post(
        "/documents", json={"id": "new-1", "text": text, "metadata": {"lang": "xx", "year": 1990}}
    )
    assert response.status_code == 200, response.text
    assert response.json()["ids"] == ["new-1"] and response.json()["seqs"][0] >= 1
    hits = search(client, "glacier", filter={"field": "lang", "eq": "xx"})
    assert [(h["id"], h["text"]) for h in hits] == [("new-1", text)]
    stored = client.get("/documents/new-1").json()
    assert stored["metadata"] == {"lang": "xx", "year": 1990} and stored["indexed"]
    tokens = engine.encoder.encode_documents([text])[0].shape[0]
    assert engine.index.document_vectors("new-1").shape[0] == tokens
    assert count(client) == before + 1


def test_posting_an_existing_id_replaces_it(served):
    engine, client = served
    documents = count(client)
    before = engine.index.document_vectors("doc-00").shape[0]
    text = "star planet orbit star planet orbit star planet orbit star planet"
    response = client.post(
        "/documents", json={"id": "doc-00", "text": text, "metadata": {"lang": "zz"}}
    )
    assert response.status_code == 200, response.text
    assert client.get("/documents/doc-00").json()["metadata"] == {"lang": "zz"}
    assert "doc-00" not in {
        h["id"] for h in search(client, "moon", filter={"field": "lang", "eq": "en"})
    }
    assert [h["id"] for h in search(client, "moon", filter={"field": "lang", "eq": "zz"})] == [
        "doc-00"
    ]
    after = engine.index.document_vectors("doc-00").shape[0]
    assert after == engine.encoder.encode_documents([text])[0].shape[0] != before
    assert count(client) == documents


def test_delete_removes_from_search_and_store(served):
    _, client = served
    documents = count(client)
    assert client.delete("/documents/doc-01").status_code == 200
    assert client.get("/documents/doc-01").status_code == 404
    response = client.post("/search", json={"query": "moon", "ids": ["doc-01"]})
    assert response.status_code == 422 and "doc-01" in response.json()["error"]
    assert all(
        h["id"] != "doc-01" for h in search(client, "moon", filter={"field": "lang", "eq": "fr"})
    )
    missing = client.delete("/documents/doc-01")
    assert missing.status_code == 404 and "doc-01" in missing.json()["error"]
    assert count(client) == documents - 1


def test_a_request_is_applied_whole_or_not_at_all(served):
    _, client = served
    documents = count(client)
    bad = {"documents": [{"id": "ok-1", "text": "fine text"}, {"id": "bad", "text": "   "}]}
    response = client.post("/documents", json=bad)
    assert response.status_code == 422 and "documents[1].text" in response.json()["error"]
    twice = {"documents": [{"id": "a", "text": "x y"}, {"id": "a", "text": "y z"}]}
    assert "appears twice" in client.post("/documents", json=twice).json()["error"]
    both = {"id": "a", "text": "x", "documents": [{"id": "b", "text": "y"}]}
    assert client.post("/documents", json=both).status_code == 422
    assert client.get("/documents/ok-1").status_code == 404
    many = {"documents": [{"id": f"m-{n}", "text": f"{WORDS[n]} {WORDS[n + 1]}"} for n in range(5)]}
    response = client.post("/documents", json=many)
    assert response.status_code == 200 and len(set(response.json()["seqs"])) == 5
    assert count(client) == documents + 5


def test_searches_are_answered_during_writes(served):
    _, client = served
    statuses, stop = [], threading.Event()

    def keep_searching():
        while not stop.is_set():
            for body in (
                {"query": "moon"},
                {"query": "bee", "filter": {"field": "lang", "eq": "w"}},
            ):
                statuses.append(client.post("/search", json=body).status_code)

    readers = [threading.Thread(target=keep_searching) for _ in range(2)]
    for reader in readers:
        reader.start()
    for n in range(6):
        body = {"id": f"c-{n}", "text": f"{WORDS[n]} {WORDS[-n - 1]}", "metadata": {"lang": "w"}}
        assert client.post("/documents", json=body).status_code == 200
        if n % 2:
            assert client.delete(f"/documents/c-{n - 1}").status_code == 200
    stop.set()
    for reader in readers:
        reader.join()
    assert statuses and set(statuses) == {200}
    assert sorted(h["id"] for h in search(client, "bee", filter={"field": "lang", "eq": "w"})) == [
        "c-1",
        "c-3",
        "c-5",
    ]


TOUCHED = ("doc-02", "doc-03", "r-1", "r-2")


def _state(engine, client) -> tuple:
    hits = {q: [(h["id"], h["score"]) for h in search(client, q)] for q in QUERIES}
    stored = {i: client.get(f"/documents/{i}").json() for i in TOUCHED}
    vectors = {i: engine.index.document_vectors(i) for i in TOUCHED if engine.is_live(i)}
    return hits, stored, vectors, sorted(engine.index.live_ids)


def _assert_same_state(first, second):
    for query in QUERIES:
        assert [i for i, _ in first[0][query]] == [i for i, _ in second[0][query]], query
        np.testing.assert_allclose(
            [s for _, s in first[0][query]], [s for _, s in second[0][query]], rtol=1e-5
        )
    assert first[1] == second[1]
    assert sorted(first[2]) == sorted(second[2])
    for doc_id, vectors in first[2].items():  # the replayed index holds the same vectors
        np.testing.assert_array_equal(second[2][doc_id], vectors, err_msg=doc_id)
    assert first[3] == second[3]


def test_a_restart_replays_the_log_and_a_clean_shutdown_saves(paths):
    engine, info = engine_for(paths, "--writable")
    with TestClient(
        create_app(engine, index_info=info, access=AccessPolicy(api_key=API_KEY)), headers=AUTH
    ) as client:
        client.post(
            "/documents", json={"id": "r-1", "text": "coral reef fish moon", "metadata": {"v": 1}}
        )
        client.post("/documents", json={"id": "r-2", "text": "bread yeast oven"})
        client.post("/documents", json={"id": "doc-02", "text": "lava rock volcano tide"})
        client.delete("/documents/doc-03")
        client.post(
            "/documents", json={"id": "r-1", "text": "coral reef fish", "metadata": {"v": 2}}
        )
        live = _state(engine, client)
        # No close: as after a crash, the saved index lacks the writes and the log holds them.
        assert engine.writer.store.log_size() == 5
        crashed, info = engine_for(paths, "--writable")
    with TestClient(
        create_app(crashed, index_info=info, access=AccessPolicy(api_key=API_KEY)), headers=AUTH
    ) as client:
        replayed = _state(crashed, client)
    _assert_same_state(live, replayed)
    assert crashed.writer.store.log_size() == 0  # closing saved the index and emptied the log
    clean, info = engine_for(paths, "--writable")
    with TestClient(
        create_app(clean, index_info=info, access=AccessPolicy(api_key=API_KEY)), headers=AUTH
    ) as client:
        _assert_same_state(live, _state(clean, client))


def test_a_store_of_another_index_is_refused(served, paths):
    engine, _ = served  # its store is tied to its own copy of the index
    with pytest.raises(InputError, match="belongs to another index"):
        engine_for(paths, "--writable", "--documents-db", engine.writer.store.path)


# ---------------------------------------------------------------- SIGKILL during writes
class WriteStream:
    """One client thread's writes: new ids, updates and deletes of its own earlier ids. Keeps
    what the server acknowledged and the one write in flight when the server died."""

    def __init__(self, url: str, name: str, rng: random.Random):
        self.url, self.name, self.rng = url, name, rng
        self.acked: dict[str, int | None] = {}  # id -> version (None: deleted)
        self.in_flight: tuple[str, int | None] | None = None
        self.acks = 0

    def next_write(self, count: int) -> tuple[str, int | None]:
        present = [i for i, v in self.acked.items() if v is not None]
        roll = self.rng.random()
        if present and roll < 0.2:
            return self.rng.choice(present), None
        if present and roll < 0.45:
            doc_id = self.rng.choice(present)
            return doc_id, self.acked[doc_id] + 1
        return f"{self.name}-{count}", 0

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60, headers=AUTH) as client:
            for count in range(10_000):
                doc_id, version = self.in_flight = self.next_write(count)
                try:
                    if version is None:
                        response = client.delete(f"/documents/{doc_id}")
                    else:
                        response = client.post("/documents", json=document(doc_id, version))
                except httpx.HTTPError:
                    return  # the server died with this write in flight
                assert response.status_code == 200, response.text
                self.acked[doc_id] = version
                self.in_flight = None
                self.acks += 1


def document(doc_id: str, version: int) -> dict:
    # Versions differ in length, so the index's token count tells which text it holds.
    words = [
        WORDS[zlib.crc32(f"{doc_id} {version} {n}".encode()) % len(WORDS)]
        for n in range(3 + version % 4)
    ]
    text = f"{' '.join(words)} {doc_id} v{version}"
    return {"id": doc_id, "text": text, "metadata": {"version": version, "writer": doc_id[:2]}}


def present_state(client: httpx.Client, doc_id: str) -> int | None:
    """The version stored and searchable for doc_id, None if absent; fails on a half write."""
    stored = client.get(f"/documents/{doc_id}")
    if stored.status_code == 404:
        search = client.post("/search", json={"query": "moon", "ids": [doc_id]})
        assert search.status_code == 422, f"{doc_id} is searchable but not stored"
        return None
    body = stored.json()
    assert body["indexed"] and body["text"] is not None, f"{doc_id} is half written: {body}"
    hits = client.post("/search", json={"query": body["text"], "ids": [doc_id]}).json()
    assert [h["id"] for h in hits["results"]] == [doc_id]
    version = body["metadata"]["version"]
    assert body["text"] == document(doc_id, version)["text"]
    return version


def assert_idle_connection_stays_open(port: int, idle_seconds: float) -> None:
    """A kept-alive connection left idle longer than httpx keeps pooled ones (5 s) still
    answers: the server must not close it first (uvicorn's own default is 5 s, and a client
    sending as the server closes gets a read error)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        for attempt in range(2):
            if attempt:
                time.sleep(idle_seconds)
            connection.request("GET", "/health")
            response = connection.getresponse()
            response.read()
            assert response.status == 200
    except (http.client.RemoteDisconnected, ConnectionError) as err:
        raise AssertionError(f"the server closed a connection idle for {idle_seconds} s") from err
    finally:
        connection.close()


def test_sigkill_during_writes_loses_no_acknowledged_write(paths, seed, tmp_path):
    rng = random.Random(seed)
    kill_after = rng.randint(2, 12)  # acknowledged writes before the kill (or a time limit)
    cache = {"LATEINT_CACHE": str(tmp_path / "cache")}  # the restart reads compiled programs
    port = free_port()
    # One query per batch: fewer programs to compile at warm-up and after each write.
    args = serve_args(
        paths, "--writable", "--compact-every", "5", "--port", str(port), compile_cache=True
    )
    args += ["--max-wait-ms", "1", "--max-batch", "1"]
    process = spawn_serve(args, devices=1, env=cache)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, [process])
        streams = [WriteStream(url, f"w{n}", random.Random(seed + n)) for n in range(2)]
        threads = [threading.Thread(target=s.run, daemon=True) for s in streams]
        for thread in threads:
            thread.start()
        # A write that needs new programs (a new layout bucket) can take a minute on a busy
        # machine: the kill comes after kill_after acknowledgements or 120 s, whichever first.
        deadline = time.monotonic() + 120
        while sum(s.acks for s in streams) < kill_after and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 0.2))
        process.kill()
        process.wait()
        for thread in threads:
            thread.join(60)
    finally:
        if process.poll() is None:
            process.kill()
    note = seed_note(seed)
    assert sum(s.acks for s in streams) >= 1, f"no write was acknowledged before the kill; {note}"

    port = free_port()
    args = serve_args(
        paths, "--writable", "--port", str(port), "--max-batch", "1", compile_cache=True
    )
    restarted = spawn_serve(args, devices=1, env=cache)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, [restarted])
        with httpx.Client(base_url=url, timeout=60, headers=AUTH) as client:
            for stream in streams:
                touched = set(stream.acked) | ({stream.in_flight[0]} if stream.in_flight else set())
                for doc_id in touched:
                    found = present_state(client, doc_id)
                    allowed = {stream.acked.get(doc_id)}
                    if stream.in_flight and stream.in_flight[0] == doc_id:
                        allowed.add(stream.in_flight[1])
                    assert found in allowed, f"{doc_id}: found {found}, allowed {allowed}; {note}"
            assert client.get("/documents/doc-10").json()["indexed"]
            texts = {
                doc_id: body["text"]
                for doc_id in {i for s in streams for i in s.acked}
                if (body := client.get(f"/documents/{doc_id}").json()).get("text")
            }
        assert_idle_connection_stays_open(port, idle_seconds=6)
    finally:
        restarted.send_signal(signal.SIGTERM)  # a clean shutdown saves the index
        if restarted.wait(120) != 0:
            raise AssertionError(restarted.stdout.read())
    # The saved index holds each stored document's current text: same token count.
    saved = open_index(paths["index"])
    encoder = ColBERT.from_pretrained(str(paths["model"]))
    for doc_id, text in texts.items():
        expected = encoder.encode_documents([text])[0].shape[0]
        assert saved.document_vectors(doc_id).shape[0] == expected, f"{doc_id}; {note}"
