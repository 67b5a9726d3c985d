"""What an index records about the encoder it was built with (`metadata["model"]`).

Searching an index must encode queries with the same model and settings: `check_model` compares
a requested model with the record; `lateint_jax.index_model` loads the recorded encoder.
Encoders are read duck-typed here, so the index package never imports `lateint_jax.encoders`.
"""

from __future__ import annotations

from pathlib import Path

from lateint_jax.errors import IndexFormatError, InputError


def model_key(name) -> str:
    """A comparable name for a model: "default" for the packaged one, an absolute path for a
    local folder, the hub name otherwise."""
    if name in (None, "", "default"):
        return "default"
    path = Path(str(name)).expanduser()
    return str(path.resolve()) if path.exists() else str(name)


def model_meta(encoder, kind: str) -> dict:
    """What the index records about its encoder (name and settings), for metadata["model"]."""
    meta = {"name": model_key(encoder.model_name), "kind": kind}
    if kind == "colbert":
        meta["colbert_config"] = encoder.config.to_dict()
    else:
        meta["max_length"] = int(encoder.max_length)
        meta["normalize"] = bool(encoder.normalize)
    return meta


def check_model(metadata: dict, requested) -> str:
    """The name of the model that encodes this index's queries: the recorded one (InputError
    when `requested`, None = no preference, differs), or `requested` for an index built from
    vectors, which records none (IndexFormatError when neither exists)."""
    recorded = (metadata.get("model") or {}).get("name")
    if recorded is None:
        if requested is None:
            raise IndexFormatError(
                "the index metadata does not record the model it was built with (an index "
                "built from vectors): name the encoder of its vectors with --model"
            )
        return model_key(requested)
    if requested is not None and model_key(requested) != recorded:
        raise InputError(
            f"the index was built with model {recorded!r}, not {model_key(requested)!r}: "
            "queries must be encoded by the same model (leave out --model to use the index's)"
        )
    return recorded
