"""`open_index(path)`: the one place that reads which kind of index a folder holds."""

from __future__ import annotations

from lateint_jax.errors import IndexFormatError
from lateint_jax.index.base import Index
from lateint_jax.index.colbert_index import ColBERTIndex
from lateint_jax.index.dense_index import DenseIndex
from lateint_jax.index.storage import read_metadata

KINDS: dict[str, type[Index]] = {cls.kind: cls for cls in (ColBERTIndex, DenseIndex)}


def index_kind(index_dir) -> str:
    """The kind recorded in INDEX_DIR's metadata ("colbert" or "dense")."""
    kind = read_metadata(index_dir).get("kind", "colbert")
    if kind not in KINDS:
        raise IndexFormatError(f"{index_dir} holds an index of unknown kind {kind!r}")
    return kind


def open_index(index_dir, devices=None, *, verify_checksums: bool = True) -> Index:
    """Load INDEX_DIR as the kind of index it holds, split by document over `devices`
    (default: every local device). IndexFormatError when missing, damaged or unknown."""
    cls = KINDS[index_kind(index_dir)]
    return cls.load(index_dir, devices, verify_checksums=verify_checksums)
