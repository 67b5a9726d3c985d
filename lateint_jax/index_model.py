"""Loading the encoder an index was built with, from the record in its metadata."""

from __future__ import annotations

from lateint_jax.encoders import BiEncoder, ColBERT
from lateint_jax.index.model_record import check_model
from lateint_jax.models.colbert import ColBERTConfig


def encoder_for_index(metadata: dict, requested=None):
    """Load the query encoder recorded in an index's metadata (ColBERT or BiEncoder) with the
    settings it was built with; `requested` must name the same model when given. An index
    without a record (built from vectors) takes `requested` with the checkpoint's own settings,
    as the encoder of the index's kind."""
    name = check_model(metadata, requested)
    model = metadata.get("model") or {"kind": metadata.get("kind", "colbert")}
    checkpoint = None if name == "default" else name
    if model.get("kind") == "dense":  # the encoder's kind, in its own record
        return BiEncoder.from_pretrained(
            checkpoint, max_length=model.get("max_length"), normalize=model.get("normalize")
        )
    settings = model.get("colbert_config")
    config = ColBERTConfig.from_dict(settings) if settings is not None else None
    return ColBERT.from_pretrained(checkpoint, config=config)
