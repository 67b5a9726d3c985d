"""Request and response bodies of the HTTP API, with the limits that protect the service.

Every field has a bound so that one request cannot ask for unbounded work; a request outside
them is answered 422 naming the field, before any device work happens.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lateint_jax.errors import InputError
from lateint_jax.serving.filters import compile_filter


@dataclass(frozen=True)
class Limits:
    """Bounds on one request."""

    max_k: int = 1000
    max_query_chars: int = 2000
    max_queries: int = 64
    max_ids: int = 100_000
    max_rerank_depth: int = 200
    max_passages: int = 256
    max_passage_chars: int = 20_000
    max_encode_texts: int = 64
    max_explained: int = 64  # queries x k when explain=true (each result is re-encoded)
    max_rerank_pairs: int = 2048  # queries x depth


LIMITS = Limits()


def _not_blank(value: str, field: str) -> str:
    if not value.strip():
        raise ValueError(f"{field} must not be empty or only whitespace")
    return value


def _texts_valid(values: list[str], field: str, max_chars: int, blank_ok: bool = False):
    """Each text within max_chars (and not blank unless blank_ok); errors name field[i]."""
    for i, value in enumerate(values):
        if not blank_ok:
            _not_blank(value, f"{field}[{i}]")
        if len(value) > max_chars:
            raise ValueError(f"{field}[{i}] is longer than {max_chars} characters")
    return values


class RerankOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    depth: int = Field(
        default=50,
        ge=1,
        le=LIMITS.max_rerank_depth,
        description="First-stage candidates the cross-encoder re-scores.",
    )


class SearchRequest(BaseModel):
    """One query (`query`) or many (`queries`); exactly one of the two."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"query": "how do vaccines train immunity", "k": 5}]},
    )
    query: str | None = Field(default=None, min_length=1, max_length=LIMITS.max_query_chars)
    queries: list[str] | None = Field(default=None, min_length=1, max_length=LIMITS.max_queries)
    k: int = Field(default=10, ge=1, le=LIMITS.max_k, description="Results per query.")
    ids: list[str] | None = Field(
        default=None,
        min_length=1,
        max_length=LIMITS.max_ids,
        description="Search only these document ids.",
    )
    rerank: RerankOptions | None = Field(default=None, description="Cross-encoder second stage.")
    rerank_depth: int | None = Field(
        default=None, ge=1, le=LIMITS.max_rerank_depth, description="Shorthand for rerank.depth."
    )
    explain: bool = Field(default=False, description="Per result: the MaxSim token alignment.")
    filter: dict | None = Field(
        default=None,
        description='Metadata filter, e.g. {"field": "year", "gte": 2010}, {"field": "lang", '
        '"in": ["en", "fr"]}, {"and": [...]}, {"or": [...]}, {"not": ...}; results are those '
        "of searching the matching documents only (none match: empty results).",
    )

    @field_validator("filter")
    @classmethod
    def _filter_valid(cls, value):
        if value is not None:
            try:
                compile_filter(value)
            except InputError as err:
                raise ValueError(str(err)) from None
        return value

    @field_validator("query")
    @classmethod
    def _query_not_blank(cls, value):
        return None if value is None else _not_blank(value, "query")

    @field_validator("queries")
    @classmethod
    def _queries_valid(cls, values):
        if values is None:
            return None
        return _texts_valid(values, "queries", LIMITS.max_query_chars)

    @model_validator(mode="after")
    def _one_of_query_queries(self):
        if (self.query is None) == (self.queries is None):
            raise ValueError("give exactly one of 'query' or 'queries'")
        both = self.rerank is not None and self.rerank_depth is not None
        if both and self.rerank.depth != self.rerank_depth:
            raise ValueError("'rerank.depth' and 'rerank_depth' disagree; give one")
        return self

    @property
    def texts(self) -> list[str]:
        return [self.query] if self.query is not None else list(self.queries)

    @property
    def depth(self) -> int | None:
        """Rerank depth, or None for first stage only."""
        if self.rerank_depth is not None:
            return self.rerank_depth
        return self.rerank.depth if self.rerank is not None else None


class TokenMatch(BaseModel):
    query_token: str
    query_position: int
    doc_token: str
    doc_position: int
    text_span: list[int] | None = Field(
        default=None,
        description="[start, end) characters of the document token in the hit's text; null "
        "for frame tokens, tokens of the title, or without the corpus",
    )
    similarity: float
    index_similarity: float


class SearchHit(BaseModel):
    id: str
    score: float
    text: str | None = None
    title: str | None = None
    first_stage_score: float | None = None
    rerank_score: float | None = None
    explanation: list[TokenMatch] | None = None


class Timings(BaseModel):
    first_stage_ms: float
    rerank_ms: float | None = None
    total_ms: float


class SearchResponse(BaseModel):
    """`results` is a list of hits for `query`, or a list of such lists for `queries`."""

    results: list[SearchHit] | list[list[SearchHit]]
    timings: Timings


class RerankRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"query": "tides", "passages": ["The moon pulls the sea.", "Bread"]}]
        },
    )
    query: str = Field(min_length=1, max_length=LIMITS.max_query_chars)
    passages: list[str] = Field(min_length=1, max_length=LIMITS.max_passages)

    @field_validator("query")
    @classmethod
    def _query_not_blank(cls, value):
        return _not_blank(value, "query")

    @field_validator("passages")
    @classmethod
    def _passages_valid(cls, values):
        return _texts_valid(values, "passages", LIMITS.max_passage_chars, blank_ok=True)


class RerankResponse(BaseModel):
    scores: list[float]
    rerank_ms: float


class EncodeRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"texts": ["a query"], "kind": "query"}]}
    )
    texts: list[str] = Field(min_length=1, max_length=LIMITS.max_encode_texts)
    kind: str = Field(default="query", pattern="^(query|document)$")

    @field_validator("texts")
    @classmethod
    def _texts_valid(cls, values):
        return _texts_valid(values, "texts", LIMITS.max_passage_chars)


class EncodeResponse(BaseModel):
    """One [T_i, D] matrix of token embeddings per text (query: T = query_maxlen)."""

    embeddings: list[list[list[float]]]
    dim: int
