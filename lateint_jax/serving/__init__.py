"""The retrieval service: `app.create_app(engine)` (FastAPI), `app.run(args)` (serve.py), the
`engine.SearchEngine` it wraps, and the pieces it is built from (batching, buckets, encoding,
rerank, multihost). See docs/SERVING.md."""
