"""lateint-jax: late-interaction retrieval in JAX/Flax.

    import lateint_jax as lj

    colbert = lj.ColBERT.from_pretrained("colbert-ir/colbertv2.0")   # or None: the packaged default
    lj.build_index(colbert.encode_documents(texts), ids, "indexes/mine", encoder=colbert)
    index = lj.open_index("indexes/mine")
    hits = index.search(colbert.encode_queries(["a question"]), k=10)
    metrics = lj.evaluate(index, "path/to/beir/scifact")

Deeper module paths (`lateint_jax.index.plaid`, `lateint_jax.models.bert`, ...) are for
contributors; see docs/ARCHITECTURE.md.
"""

from importlib import metadata as _metadata

__version__ = _metadata.version("lateint-jax")  # pyproject.toml's

from lateint_jax.encoders import BiEncoder, ColBERT, CrossEncoder
from lateint_jax.eval import evaluate
from lateint_jax.index.base import Index, SearchShape
from lateint_jax.index.build import build_dense_index, build_index
from lateint_jax.index.open import open_index

__all__ = [
    "BiEncoder",
    "ColBERT",
    "CrossEncoder",
    "Index",
    "SearchShape",
    "build_dense_index",
    "build_index",
    "evaluate",
    "open_index",
]
