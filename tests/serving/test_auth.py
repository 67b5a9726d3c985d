"""Access control of the HTTP API: bearer API key on reads when set and on writes always, the
start-up rule for writable servers, CORS only when asked, and a schemathesis run with the key.

The app runs over a real engine on the demo index (no warm-up: each shape compiles on first
use, which is all these tests need). Write endpoints arrive in another module; here a one-line
write route mounted the way they are (`include_router(..., dependencies=[Depends(write_access)])`)
stands in for them.
"""

import argparse

import pytest
from fastapi import APIRouter, Depends
from fastapi.testclient import TestClient

from lateint_jax import open_index
from lateint_jax.data.beir import load_corpus
from lateint_jax.encoders import ColBERT
from lateint_jax.errors import InputError
from lateint_jax.serving.app import create_app
from lateint_jax.serving.auth import API_KEY_ENV, AccessPolicy, load_api_key, write_access
from lateint_jax.serving.demo import DEMO_CORPUS, build_corpus_index
from lateint_jax.serving.encoding import CompiledColBERT
from lateint_jax.serving.engine import SearchEngine
from lateint_jax.serving.server import access_policy, configure
from tests.serving.fuzzing import fuzz_every_operation

KEY = "test-key-0123456789abcdef"
WRITE_PATH = "/test-write"


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    encoder = CompiledColBERT(ColBERT.from_pretrained(None), max_batch=2)
    corpus = load_corpus(DEMO_CORPUS)
    index_dir = tmp_path_factory.mktemp("auth") / "demo-index"
    build_corpus_index(encoder, corpus, index_dir)
    engine = SearchEngine(open_index(index_dir), encoder, corpus, max_batch=2, max_k=10)
    yield engine
    engine.close()


def app_with_writes(engine, access: AccessPolicy):
    app = create_app(engine, access=access)
    writes = APIRouter()

    @writes.post(WRITE_PATH)
    async def test_write():
        return {"written": True}

    app.include_router(writes, dependencies=[Depends(write_access)])
    return app


def client_for(engine, **policy) -> TestClient:
    """Not entered as a context: the app's lifespan would close the module's engine."""
    return TestClient(app_with_writes(engine, AccessPolicy(**policy)))


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


READS = [
    ("post", "/search", {"query": "how do bees find flowers", "k": 3}),
    ("post", "/encode", {"texts": ["bees"]}),
    ("get", "/stats", None),
]


def call(client, method, path, body, headers=None):
    if method == "get":
        return client.get(path, headers=headers)
    return client.post(path, json=body, headers=headers)


@pytest.mark.parametrize("method, path, body", READS + [("post", WRITE_PATH, {})])
def test_with_a_key_every_data_endpoint_needs_it(engine, method, path, body):
    client = client_for(engine, api_key=KEY)
    missing = call(client, method, path, body)
    assert missing.status_code == 401, missing.text
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert "missing API key" in missing.json()["error"]
    for header in ("Basic dXNlcjpwYXNz", "Bearer", KEY):
        malformed = call(client, method, path, body, {"Authorization": header})
        assert malformed.status_code == 401, (header, malformed.text)
        assert "malformed Authorization header" in malformed.json()["error"]
    wrong = call(client, method, path, body, bearer(KEY[:-1] + "X"))
    assert wrong.status_code == 403, wrong.text
    assert wrong.json()["error"] == "invalid API key"
    longer = call(client, method, path, body, bearer(KEY + "0"))
    assert longer.status_code == 403, longer.text
    ok = call(client, method, path, body, bearer(KEY))
    assert ok.status_code == 200, ok.text
    assert KEY not in missing.text + wrong.text + longer.text  # the key is never echoed


@pytest.mark.parametrize("path", ["/search", WRITE_PATH])
def test_the_key_is_checked_before_the_body(engine, path):
    """FastAPI decodes JSON before dependencies run; a caller without the key still gets 401."""
    client = client_for(engine, api_key=KEY)
    broken = {"Content-Type": "application/json"}
    refused = client.post(path, content="{not json", headers=broken)
    assert refused.status_code == 401, refused.text
    unparsed = client.post(path, content=b"\x00" * 9, headers=broken)  # FastAPI: 400
    assert unparsed.status_code == 401, unparsed.text
    wrong = client.post(path, content="{not json", headers={**broken, **bearer("x" * 20)})
    assert wrong.status_code == 403, wrong.text
    if path == "/search":
        keyed = client.post(path, content="{not json", headers={**broken, **bearer(KEY)})
        assert keyed.status_code == 422 and keyed.json()["error"].startswith("body: invalid JSON")


def test_health_pages_and_schema_stay_open_with_a_key(engine):
    client = client_for(engine, api_key=KEY)
    for path in ("/health", "/", "/openapi.json", "/docs", "/redoc"):
        assert client.get(path).status_code == 200, path
    schema = client.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["APIKey"]["scheme"] == "bearer"
    assert "security" in schema["paths"]["/search"]["post"]
    assert "security" not in schema["paths"]["/health"]["get"]


def test_without_a_key_reads_are_open_and_writes_refused(engine):
    client = client_for(engine)
    for method, path, body in READS:
        assert call(client, method, path, body).status_code == 200, path
    refused = client.post(WRITE_PATH, headers=bearer(KEY))
    assert refused.status_code == 403, refused.text
    assert "writes are disabled" in refused.json()["error"]
    assert API_KEY_ENV in refused.json()["error"]
    insecure = client_for(engine, insecure_writes=True)
    assert insecure.post(WRITE_PATH).status_code == 200


def test_the_key_stays_out_of_reprs():
    policy = AccessPolicy(api_key=KEY)
    assert KEY not in repr(policy) and KEY not in str(policy)


def test_cors_is_off_unless_an_origin_is_given(engine):
    preflight = {
        "Origin": "https://app.example.com",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    off = client_for(engine, api_key=KEY)
    response = off.post(
        "/search", json=READS[0][2], headers={**bearer(KEY), "Origin": "https://x.org"}
    )
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers
    assert "access-control-allow-origin" not in off.options("/search", headers=preflight).headers
    on = client_for(engine, api_key=KEY, cors_origins=("https://app.example.com",))
    allowed = on.options("/search", headers=preflight)  # a preflight carries no key
    assert allowed.status_code == 200, allowed.text
    assert allowed.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    other = on.options("/search", headers={**preflight, "Origin": "https://evil.example"})
    assert other.status_code == 400
    assert "access-control-allow-origin" not in other.headers


# ---------------------------------------------------------------- flags and start-up rule
def parse(*flags: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    configure(parser)
    return parser.parse_args(list(flags))


def test_key_comes_from_the_file_first_then_the_environment(tmp_path, monkeypatch):
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    monkeypatch.setenv(API_KEY_ENV, "environment-key-0123456789")
    assert access_policy(parse("--api-key-file", str(key_file))).api_key == KEY
    assert access_policy(parse()).api_key == "environment-key-0123456789"
    monkeypatch.delenv(API_KEY_ENV)
    assert access_policy(parse()).api_key is None


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "does not exist"),
        ("\n", "is empty"),
        ("k3y-7", "shorter than 16 characters"),
        ("a key with spaces inside", "may hold only"),
    ],
)
def test_bad_key_files_are_refused_without_echoing_the_key(tmp_path, content, message):
    key_file = tmp_path / "key"
    if content is not None:
        key_file.write_text(content)
    with pytest.raises(InputError, match=message) as err:
        load_api_key(str(key_file), environ={})
    assert "--api-key-file" in str(err.value)
    if content and content.strip():
        assert content.strip() not in str(err.value)


def test_a_writable_server_needs_a_key_or_insecure_writes(tmp_path, monkeypatch):
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    writable = parse()
    writable.writable = True
    with pytest.raises(InputError, match="writes are enabled but no API key is set"):
        access_policy(writable)
    insecure = parse("--insecure-writes")
    insecure.writable = True
    assert access_policy(insecure).insecure_writes
    monkeypatch.setenv(API_KEY_ENV, KEY)
    assert access_policy(writable).api_key == KEY
    monkeypatch.delenv(API_KEY_ENV)
    assert access_policy(parse()).api_key is None  # read-only without a key is fine


@pytest.mark.parametrize("origin", ["app.example.com", "https://app.example.com/path", ""])
def test_bad_cors_origins_are_refused(origin):
    with pytest.raises(InputError, match="is not an origin"):
        access_policy(parse("--cors-origin", origin))


# ---------------------------------------------------------------- fuzzing with the key set
FUZZ_EXAMPLES = 8  # per operation and generation mode: about a minute on a 2-core CPU
CALL_TIMEOUT_S = 300  # the engine is not warmed up: a request may compile its shape first


def test_fuzzed_requests_with_the_key_never_get_a_5xx_and_unauthenticated_get_401(engine):
    app = app_with_writes(engine, AccessPolicy(api_key=KEY))
    calls = []

    def fuzz(case):
        # schemathesis fills the declared bearer scheme with credentials of its own
        # (made-up tokens; in negative mode also missing or malformed headers).
        made_up = dict(case.headers or {})
        others = {n: v for n, v in made_up.items() if n.lower() != "authorization"}
        case.headers = {**others, **bearer(KEY)}
        response = case.call(timeout=CALL_TIMEOUT_S)
        calls.append((case.path, response.status_code))
        where = f"{case.method} {case.path} {case.body!r:.300}: {response.text[:300]}"
        assert response.status_code < 500, where
        assert response.status_code not in (401, 403), where
        if case.path == "/health":
            return
        case.headers = others
        anonymous = case.call(timeout=CALL_TIMEOUT_S)
        assert anonymous.status_code == 401, f"{where} -> {anonymous.text}"
        if len(others) < len(made_up):
            case.headers = made_up
            forged = case.call(timeout=CALL_TIMEOUT_S)
            assert forged.status_code in (401, 403), f"{made_up} -> {forged.text}"

    fuzz_every_operation(app, fuzz, FUZZ_EXAMPLES)
    paths = {path for path, _ in calls}
    assert {"/search", "/rerank", "/encode", "/stats", "/health", WRITE_PATH} <= paths
    codes = {code for _, code in calls}
    assert 200 in codes and 422 in codes
