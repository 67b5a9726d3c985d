"""The HTTP API (FastAPI): search, rerank, encode, health, stats and the search page.

`create_app(engine)` builds the app around a warmed-up `SearchEngine`; `server.serve(args)`
(what `serve.py` and `lateint serve` call) loads the index, warms up and runs it with uvicorn.
"""

from __future__ import annotations

import time
from contextlib import asynccontextmanager
from importlib.metadata import version as package_version
from pathlib import Path

import jax
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi_offline import FastAPIOffline
from starlette.concurrency import run_in_threadpool

from lateint_jax.errors import UserError
from lateint_jax.serving.auth import AccessPolicy, denial, install, read_access
from lateint_jax.serving.documents_api import documents_router
from lateint_jax.serving.engine import SearchEngine
from lateint_jax.serving.schemas import (
    EncodeRequest,
    EncodeResponse,
    RerankRequest,
    RerankResponse,
    SearchRequest,
    SearchResponse,
)
from lateint_jax.serving.stats import CountRequests, ServiceStats

STATIC_DIR = Path(__file__).parent / "static"
ERROR_RESPONSES = {
    422: {"description": "A field is missing, of the wrong type, out of its limits, or unknown."}
}


def _field_name(error: dict) -> str:
    """`k`, `rerank.depth`, `queries[3]`; `body` for a body that is not JSON at all."""
    if error.get("type") == "json_invalid":
        return "body"
    name = ""
    for part in error.get("loc", ()):
        if part == "body":
            continue
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or "body"


def _message(error: dict) -> str:
    if error.get("type") == "json_invalid":
        error_text = (error.get("ctx") or {}).get("error", "")
        return f"invalid JSON ({error_text})" if error_text else "invalid JSON"
    return error.get("msg", "invalid")


def _validation_message(errors) -> str:
    return "; ".join(f"{_field_name(e)}: {_message(e)}" for e in errors)


def create_app(
    engine: SearchEngine, *, index_info: dict | None = None, access: AccessPolicy | None = None
) -> FastAPI:
    """The FastAPI app over a ready engine. Closing the app (lifespan end) closes the engine.

    `access` (default: no key, reads open, writes refused) guards the data endpoints; `/`,
    `/health` and the API docs stay open (a load balancer's probe carries no key)."""
    stats = ServiceStats()
    info = dict(index_info or {})

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        # uvicorn has already let in-flight requests finish when the lifespan ends.
        engine.close()

    # FastAPIOffline: /docs and /redoc from assets installed with the package, not a CDN.
    app = FastAPIOffline(
        title="lateint-jax retrieval service",
        version=package_version("lateint-jax"),
        description="Late-interaction (ColBERT/PLAID) search with an optional cross-encoder "
        "rerank stage. Limits are in each request schema.",
        lifespan=lifespan,
    )
    app.state.engine = engine
    app.state.stats = stats
    install(app, access or AccessPolicy())
    api = APIRouter(dependencies=[Depends(read_access)])

    app.add_middleware(CountRequests, stats=stats)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, err: RequestValidationError):
        denied = denial(request)  # the key is checked before the body, even a broken one
        if denied is not None:
            return denied
        errors = err.errors()
        detail = [
            {
                "field": _field_name(e),
                "message": _message(e),
                "type": e.get("type"),
            }
            for e in errors
        ]
        return JSONResponse(
            status_code=422, content={"error": _validation_message(errors), "detail": detail}
        )

    @app.exception_handler(UserError)
    async def user_error(request: Request, err: UserError):
        message = str(err)
        field = message.split(":", 1)[0] if ":" in message else "body"
        return JSONResponse(
            status_code=422,
            content={"error": message, "detail": [{"field": field, "message": message}]},
        )

    if engine.documents is not None:
        app.include_router(documents_router(engine))

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @api.post("/search", response_model=SearchResponse, responses=ERROR_RESPONSES)
    async def search(body: SearchRequest):
        """First-stage MaxSim search, then the cross-encoder over the top `depth` if asked.

        With `rerank`, `score` is the cross-encoder score and candidates are the first-stage
        top max(depth, k); each hit also carries `first_stage_score` and `rerank_score`."""
        results, timings = await engine.search(
            body.texts,
            k=body.k,
            ids=body.ids,
            depth=body.depth,
            explain=body.explain,
            filter=body.filter,
        )
        return {"results": results[0] if body.query is not None else results, "timings": timings}

    @api.post("/rerank", response_model=RerankResponse, responses=ERROR_RESPONSES)
    async def rerank(body: RerankRequest):
        """Cross-encoder scores of `query` against each passage, in the given order."""
        started = time.perf_counter()
        scores = await engine.rerank(body.query, body.passages)
        return {"scores": scores, "rerank_ms": round((time.perf_counter() - started) * 1e3, 3)}

    @api.post("/encode", response_model=EncodeResponse, responses=ERROR_RESPONSES)
    async def encode(body: EncodeRequest):
        """ColBERT token embeddings: [query_maxlen, D] per query, [T_i, D] per document
        (a bi-encoder index: one [1, H] matrix per text)."""
        encoder = engine.encoder
        if body.kind == "query":
            arrays = await run_in_threadpool(encoder.encode_queries, body.texts)
        else:
            arrays = await run_in_threadpool(encoder.encode_documents, body.texts)
        return {"embeddings": [a.tolist() for a in arrays], "dim": encoder.dim}

    @app.get("/health")
    async def health():
        return {"status": "ok", "documents": engine.num_live}

    @api.get("/stats")
    async def service_stats():
        return {
            **stats.snapshot(),
            "documents": engine.num_live,
            "index_bytes": info.get("index_bytes"),
            "index_dir": info.get("index_dir"),
            "model": info.get("model"),
            "reranker": getattr(engine.reranker, "name", None),
            "devices": [str(d) for d in jax.devices()],
            "device_count": jax.device_count(),
            "process_count": jax.process_count(),
            "batching": {
                "search": engine.first_stage.stats.as_dict(),
                "rerank": engine.rerank_stage.stats.as_dict() if engine.rerank_stage else None,
            },
            "compiled_programs": engine.compiled_counts(),
        }

    app.include_router(api)
    return app
