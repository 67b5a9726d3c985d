"""The retrieval service: `app.create_app(engine)` (FastAPI), `server.serve(args)` (serve.py),
the `engine.SearchEngine` it wraps, and the pieces it is built from (batching, encoding, rerank,
multihost, demo). See docs/SERVING.md."""
