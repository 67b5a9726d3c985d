"""User-facing encoders: ColBERT (token vectors), BiEncoder (one vector), CrossEncoder (pair logit).

Each loads any supported checkpoint with `from_pretrained(name_or_path)` (None or "default" is
the packaged all-MiniLM-L6-v2), tokenises with the checkpoint's own tokenizer, and holds its
network as a `flax.nnx` module (`.module`: `ColBERTModel`, `BiEncoderModel`,
`CrossEncoderModel`). Encoding splits the module into (graphdef, state) and runs one jitted pure
function that merges them, so a module trained in place (nnx.Optimizer) encodes with its new
weights. `.params` is the module's state as a plain nested dict (the checkpoint layout) and
`.apply(params, ...)` the pure function of it. Inputs are padded to fixed buckets (lengths in
`data.tokenize.LENGTH_BUCKETS`, capped at the model's maximum; batch sizes powers of two up to batch_size), so a corpus compiles
a handful of shapes. Einsum letters: B batch, Q query tokens, T document tokens, H hidden, D dim.
"""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from lateint_jax import shapes
from lateint_jax.convert.export import export_bi_encoder, export_colbert, export_cross_encoder
from lateint_jax.convert.load import Checkpoint, load_checkpoint
from lateint_jax.data.tokenize import (
    TextTokenizer,
    bucket_length,
    check_texts,
    pad_token_rows,
    punctuation_ids,
    warn_truncated,
)
from lateint_jax.errors import CheckpointError, InputError
from lateint_jax.models.bi_encoder import BiEncoderModel, bi_encoder_graphdef
from lateint_jax.models.colbert import (
    ColBERTConfig,
    ColBERTModel,
    colbert_graphdef,
    init_projection,
    untrained_settings,
)
from lateint_jax.models.cross_encoder import CrossEncoderModel, cross_encoder_graphdef
from lateint_jax.models.encoder import EncoderConfig
from lateint_jax.models.projection import LINEAR, DenseLayer, output_dim
from lateint_jax.pooling import check_pool_factor, pool_documents

logger = logging.getLogger(__name__)


def _merged_call(graphdef: nnx.GraphDef, state: nnx.State, *inputs) -> jax.Array:
    """The pure function at the jit boundary: rebuild the module from (graphdef, state), call it."""
    return nnx.merge(graphdef, state)(*inputs)


# One per model kind, so each cache counts that kind's compiled shapes.
_colbert_jit = jax.jit(_merged_call, static_argnums=0)
_bi_jit = jax.jit(_merged_call, static_argnums=0)
_cross_jit = jax.jit(_merged_call, static_argnums=0)


class _ModuleHolder:
    """`.module` (an nnx module with the `models.layers.ParamsModule` params bridge) seen as
    `.params`, a plain nested dict; setting `.params` rebuilds the module around new arrays."""

    module: ColBERTModel | BiEncoderModel | CrossEncoderModel

    @property
    def params(self) -> dict:
        return self.module.to_params()

    @params.setter
    def params(self, params: dict) -> None:
        self.module = type(self.module).merge(nnx.graphdef(self.module), params)

    def _split(self):
        """(graphdef, state) of the module as it is now: taken once per encode call (a split
        walks the whole module, ~10 ms for MiniLM here), not once per batch."""
        return nnx.split(self.module)


def load_tokenizer(ckpt: Checkpoint) -> TextTokenizer:
    """The checkpoint's own (fast) tokenizer, wrapped for lateint_jax's framing rules."""
    # Imported here: transformers' AutoTokenizer takes ~2 s and imports torch when installed.
    from transformers import AutoTokenizer

    try:
        hf = AutoTokenizer.from_pretrained(str(ckpt.transformer_dir))
    except Exception as err:  # transformers raises OSError/ValueError/... for missing files
        raise CheckpointError(
            f"cannot load the tokenizer in {ckpt.transformer_dir}: {err}"
        ) from err
    if not getattr(hf, "is_fast", False):
        raise CheckpointError(f"{ckpt.transformer_dir} has no fast tokenizer (tokenizer.json)")
    return TextTokenizer(hf)


def _model_max_length(config: EncoderConfig) -> int:
    return config.max_position_embeddings - config.position_offset


def _run_batches(
    fn,
    encoded: dict[str, np.ndarray],
    order: np.ndarray,
    batch_size: int,
    progress: bool,
    desc: str,
):
    """Runs fn(batch dict) over rows in `order`, padding each batch to a bucketed size.

    Yields (row indices, numpy outputs) with one batch of lag so the device keeps working
    while the host copies the previous result.
    """
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    pending = None
    bar = tqdm(total=len(order), desc=desc, disable=not progress, unit="text")
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        size = min(batch_size, shapes.power_of_two(len(rows)))
        batch = {}
        for key, value in encoded.items():
            part = value[rows]
            if size > len(rows):
                pad = np.zeros((size - len(rows), *part.shape[1:]), part.dtype)
                part = np.concatenate([part, pad])
            batch[key] = part
        out = fn(batch)
        if pending is not None:
            yield pending[0], np.asarray(pending[1])[: len(pending[0])]
            bar.update(len(pending[0]))
        pending = (rows, out)
    if pending is not None:
        yield pending[0], np.asarray(pending[1])[: len(pending[0])]
        bar.update(len(pending[0]))
    bar.close()


def _length_groups(lengths: np.ndarray, max_length: int) -> list[tuple[int, np.ndarray]]:
    """Rows grouped by length bucket, each sorted by length: [(bucket, row indices)]."""
    order = np.argsort(lengths, kind="stable")
    groups: dict[int, list[int]] = {}
    for i in order:
        groups.setdefault(bucket_length(int(lengths[i]), max_length), []).append(int(i))
    return [(b, np.array(rows)) for b, rows in sorted(groups.items())]


class ColBERT(_ModuleHolder):
    """A ColBERT encoder (colbert-ai semantics: markers, [MASK] query augmentation, skiplist;
    a checkpoint without a ColBERT head gets `untrained_settings` instead)."""

    def __init__(
        self,
        params: dict,
        bert_config: EncoderConfig,
        config: ColBERTConfig,
        tokenizer,
        model_name: str = "",
        compute_dtype=jnp.float32,
        head: tuple[DenseLayer, ...] = LINEAR,
    ):
        """head: what each layer of params["linear"] does (`models.projection`)."""
        self.bert_config, self.config = bert_config, config
        self.module = ColBERTModel.merge(
            colbert_graphdef(params, bert_config, head, compute_dtype), params
        )
        self.tokenizer: TextTokenizer = tokenizer
        self.model_name, self.compute_dtype = model_name, compute_dtype
        self.head = tuple(head)
        self.query_marker_id = self._marker_id(config.query_token)
        self.doc_marker_id = self._marker_id(config.doc_token)
        self.skiplist = (
            punctuation_ids(tokenizer) if config.mask_punctuation else np.zeros(0, np.int32)
        )
        if tokenizer.mask_id is None and config.query_augmentation:
            raise CheckpointError("the tokenizer has no mask token, needed for query augmentation")
        limit = _model_max_length(bert_config)
        if config.query_maxlen > limit or config.doc_maxlen > limit:
            raise InputError(f"query_maxlen/doc_maxlen must be <= {limit} for this model")

    def _marker_id(self, token: str) -> int | None:
        """The marker's token id; None for "" (no marker)."""
        if token == "":
            return None
        # PyLate adds its prefixes as tokens spelled with the trailing space ("[Q] ").
        idx = self.tokenizer.token_id(token)
        if idx is None:
            idx = self.tokenizer.token_id(token.strip())
        if idx is None:
            # colbert-ai's fallback: convert_tokens_to_ids of an unknown marker is the unk id.
            logger.warning("marker %r is not in the vocabulary; using the unknown token", token)
            idx = self.tokenizer.unk_id
        return int(idx)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path=None,
        config: ColBERTConfig | None = None,
        compute_dtype=jnp.float32,
        **overrides,
    ) -> ColBERT:
        """Loads a Stanford / PyLate ColBERT, or any BERT-family model with a new projection.

        A checkpoint without a ColBERT head (the packaged default included) gets
        `untrained_settings`: no markers, no query augmentation, the identity head (dim = H),
        unless `config` or overrides say otherwise; a `dim` below H gets `init_projection`
        (orthogonal, seed 0). Settings: the checkpoint's, then `config` (every field), then
        keyword overrides (e.g. doc_maxlen=300).
        """
        ckpt = load_checkpoint(name_or_path)
        untrained = (
            untrained_settings(ckpt.bert_config.hidden_size, ckpt.max_seq_length)
            if ckpt.linear is None
            else {}
        )
        values = {
            **untrained,
            **ckpt.colbert,
            **(config.to_dict() if config else {}),
            **overrides,
        }
        colbert_config = ColBERTConfig.from_dict(values)
        if ckpt.linear is not None:
            linear = ckpt.linear
            if output_dim(linear) != colbert_config.dim:
                colbert_config = ColBERTConfig.from_dict({**values, "dim": output_dim(linear)})
        else:
            linear = init_projection(ckpt.bert_config.hidden_size, colbert_config.dim, seed=0)
        params = {"bert": ckpt.bert, "linear": linear}
        return cls(
            params,
            ckpt.bert_config,
            colbert_config,
            load_tokenizer(ckpt),
            str(name_or_path or "default"),
            compute_dtype,
            ckpt.dense_layers,
        )

    def save_pretrained(self, path, layout: str = "stanford", overwrite: bool = False) -> None:
        """Writes a Stanford (`layout="stanford"`) or PyLate (`"pylate"`) checkpoint atomically."""
        export_colbert(self, path, layout=layout, overwrite=overwrite)

    # -- tokenisation
    def tokenize_queries(self, texts) -> dict[str, np.ndarray]:
        """[CLS] [Q] text [SEP] [MASK]...: input_ids, attention_mask, token_mask int32
        [B, query_maxlen]; token_mask marks the vectors that count in MaxSim.

        With query_augmentation the [MASK] padding is attended only when attend_to_mask_tokens
        and its vectors always count; without, the padding is [PAD], unattended, and does not
        count (its vectors are zeros in encode_queries).
        """
        texts = check_texts(texts, "queries")
        L = self.config.query_maxlen
        augment = self.config.query_augmentation
        pad_id = self.tokenizer.mask_id if augment else self.tokenizer.pad_id
        out = pad_token_rows(self._framed(texts, self.query_marker_id, L, "queries"), pad_id, L)
        out["token_mask"] = (
            np.ones_like(out["attention_mask"]) if augment else out["attention_mask"].copy()
        )
        if augment and self.config.attend_to_mask_tokens:
            out["attention_mask"] = np.ones_like(out["attention_mask"])
        return out

    def tokenize_documents(self, texts, length: int | None = None) -> dict[str, np.ndarray]:
        """[CLS] [D] text [SEP] truncated at doc_maxlen, padded to `length` (default: a bucket).

        input_ids, attention_mask, token_mask int32 [B, T]; token_mask = attended and not skiplist.
        """
        texts = check_texts(texts, "documents")
        L = self.config.doc_maxlen
        rows = self._framed(texts, self.doc_marker_id, L, "documents")
        if length is None:
            length = bucket_length(max((len(r) for r in rows), default=1), L)
        out = pad_token_rows(rows, self.tokenizer.pad_id, length)
        out["token_mask"] = self._token_mask(out)
        return out

    def _framed(
        self, texts: list[str], marker_id: int | None, length: int, what: str
    ) -> list[list[int]]:
        """[CLS] marker text [SEP] ([CLS] text [SEP] without a marker) token ids of each text,
        truncated to `length` (one warning counts the truncated texts)."""
        tok = self.tokenizer
        content = [ids for ids, _ in self._content(texts, marker_id)]
        head = [tok.cls_id] if marker_id is None else [tok.cls_id, marker_id]
        room = length - len(head) - 1
        rows = [[*head, *ids[:room], tok.sep_id] for ids in content]
        warn_truncated(sum(len(ids) > room for ids in content), len(rows), length, what)
        return rows

    def _content(
        self, texts: list[str], marker_id: int | None
    ) -> list[tuple[list[int], list[tuple[int, int]]]]:
        """Each text's token ids and (start, end) characters, before framing, as the
        config's `framing` tokenises it (the text alone when there is no marker)."""
        if self.config.framing == "pylate" or marker_id is None:
            return self.tokenizer.encodings(texts)
        # colbert-ai: ". " + text, whose first token (the ".") the marker replaces.
        shift = len(". ")
        return [
            (ids[1:], [(max(0, a - shift), max(0, b - shift)) for a, b in spans[1:]])
            for ids, spans in self.tokenizer.encodings([". " + t for t in texts])
        ]

    def document_token_spans(self, text: str) -> list[tuple[int, int] | None]:
        """For each vector `encode_documents([text])` returns, in order: the (start, end)
        characters of its token in `text`, or None for the frame tokens ([CLS], [D], [SEP])."""
        ((_, content),) = self._content([text], self.doc_marker_id)
        head = [None] if self.doc_marker_id is None else [None, None]
        spans = [*head, *content[: self.config.doc_maxlen - len(head) - 1], None]
        keep = self.tokenize_documents([text])["token_mask"][0].astype(bool)
        return [span for span, kept in zip(spans, keep, strict=False) if kept]

    def _token_mask(self, encoded) -> np.ndarray:
        keep = encoded["attention_mask"].astype(bool) & ~np.isin(
            encoded["input_ids"], self.skiplist
        )
        return keep.astype(np.int32)

    # -- encoding
    def apply(self, params, input_ids, attention_mask) -> jax.Array:
        """Pure: normalised token vectors [B, T, D] float32 of `params` (the `.params` layout)."""
        return ColBERTModel.merge(nnx.graphdef(self.module), params)(input_ids, attention_mask)

    def _forward_fn(self):
        graphdef, state = self._split()
        return lambda batch: _colbert_jit(
            graphdef, state, batch["input_ids"], batch["attention_mask"]
        )

    def encode_queries(self, texts, batch_size: int = 64) -> np.ndarray:
        """[B, query_maxlen, D] float32; positions outside token_mask (padding without query
        augmentation) are zero vectors, which add nothing to a MaxSim score."""
        encoded = self.tokenize_queries(texts)
        out = np.zeros(
            (len(encoded["input_ids"]), self.config.query_maxlen, self.config.dim), np.float32
        )
        order = np.arange(len(out))
        for rows, vectors in _run_batches(
            self._forward_fn(), encoded, order, batch_size, False, "queries"
        ):
            out[rows] = vectors
        return out * encoded["token_mask"][:, :, None].astype(np.float32)

    def encode_documents(
        self, texts, batch_size: int = 64, progress: bool = False, pool_factor: int = 1
    ) -> list[np.ndarray]:
        """One [T_i, D] float32 array per document, padding and skiplist tokens removed.

        pool_factor > 1: hierarchical token pooling (`lateint_jax.pooling`, PyLate's rule, the
        first vector kept): about T_i / pool_factor vectors per document, which no longer map
        one-to-one onto tokens (`document_token_spans` describes the unpooled vectors).
        """
        check_pool_factor(pool_factor)
        encoded = self.tokenize_documents(texts, length=self.config.doc_maxlen)
        lengths = encoded["attention_mask"].sum(1)
        out: list = [None] * len(lengths)
        forward = self._forward_fn()
        for bucket, rows in _length_groups(lengths, self.config.doc_maxlen):
            part = {
                "input_ids": encoded["input_ids"][:, :bucket],
                "attention_mask": encoded["attention_mask"][:, :bucket],
            }
            for idx, vectors in _run_batches(
                forward, part, rows, batch_size, progress, "documents"
            ):
                for i, v in zip(idx, vectors, strict=True):
                    out[i] = v[:bucket][encoded["token_mask"][i, :bucket].astype(bool)]
        return pool_documents(out, pool_factor)


class BiEncoder(_ModuleHolder):
    """A Sentence-BERT encoder: mean pooling over the attention mask, optional normalisation."""

    def __init__(
        self,
        params: dict,
        bert_config: EncoderConfig,
        tokenizer,
        normalize: bool = True,
        max_length: int = 256,
        model_name: str = "",
        compute_dtype=jnp.float32,
    ):
        self.bert_config, self.tokenizer = bert_config, tokenizer
        self.normalize, self.model_name, self.compute_dtype = normalize, model_name, compute_dtype
        self.module = BiEncoderModel.merge(
            bi_encoder_graphdef(params, bert_config, normalize, compute_dtype), params
        )
        limit = _model_max_length(bert_config)
        if not 2 < max_length <= limit:
            raise InputError(f"max_length must be in 3..{limit} for this model, got {max_length}")
        self.max_length = max_length

    @classmethod
    def from_pretrained(
        cls,
        name_or_path=None,
        max_length: int | None = None,
        normalize: bool | None = None,
        compute_dtype=jnp.float32,
    ) -> BiEncoder:
        """max_length: sentence_bert_config.json's max_seq_length, else the model's limit."""
        ckpt = load_checkpoint(name_or_path)
        limit = _model_max_length(ckpt.bert_config)
        length = max_length or min(ckpt.max_seq_length or limit, limit)
        norm = ckpt.normalize if normalize is None else normalize
        return cls(
            ckpt.bert,
            ckpt.bert_config,
            load_tokenizer(ckpt),
            norm,
            length,
            str(name_or_path or "default"),
            compute_dtype,
        )

    def save_pretrained(self, path, overwrite: bool = False) -> None:
        """Writes a sentence-transformers checkpoint (Transformer, Pooling, Normalize)."""
        export_bi_encoder(self, path, overwrite=overwrite)

    def tokenize(self, texts) -> dict[str, np.ndarray]:
        """[CLS] text [SEP] truncated at max_length: input_ids, attention_mask int32 [B, T]."""
        return self.tokenizer.frame_single(check_texts(texts), self.max_length)

    def apply(self, params, input_ids, attention_mask) -> jax.Array:
        """Pure: sentence embeddings [B, H] float32 of `params` (the `.params` layout)."""
        return BiEncoderModel.merge(nnx.graphdef(self.module), params)(input_ids, attention_mask)

    def _forward_fn(self):
        graphdef, state = self._split()
        return lambda batch: _bi_jit(graphdef, state, batch["input_ids"], batch["attention_mask"])

    def encode(self, texts, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """[N, H] float32 embeddings, in input order."""
        encoded = self.tokenizer.frame_single(check_texts(texts), self.max_length, self.max_length)
        lengths = encoded["attention_mask"].sum(1)
        out = np.zeros((len(lengths), self.bert_config.hidden_size), np.float32)
        forward = self._forward_fn()
        for bucket, rows in _length_groups(lengths, self.max_length):
            part = {k: v[:, :bucket] for k, v in encoded.items()}
            for idx, vectors in _run_batches(forward, part, rows, batch_size, progress, "texts"):
                out[idx] = vectors
        return out

    def encode_queries(self, texts, batch_size: int = 64) -> np.ndarray:
        """[N, H] query embeddings: the same as `encode` (one encoder for both sides); named
        like ColBERT's so a search needs no branch on the index kind."""
        return self.encode(texts, batch_size)

    def encode_documents(self, texts, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """[N, H] document embeddings: the same as `encode`."""
        return self.encode(texts, batch_size, progress)


class CrossEncoder(_ModuleHolder):
    """A cross-encoder: (query, passage) -> one relevance logit."""

    def __init__(
        self,
        params: dict,
        bert_config: EncoderConfig,
        tokenizer,
        max_length: int = 512,
        model_name: str = "",
        compute_dtype=jnp.float32,
    ):
        self.bert_config, self.tokenizer = bert_config, tokenizer
        self.model_name, self.compute_dtype = model_name, compute_dtype
        self.module = CrossEncoderModel.merge(
            cross_encoder_graphdef(params, bert_config, compute_dtype), params
        )
        limit = _model_max_length(bert_config)
        if not 4 < max_length <= limit:
            raise InputError(f"max_length must be in 5..{limit} for this model, got {max_length}")
        self.max_length = max_length

    @classmethod
    def from_pretrained(
        cls, name_or_path, max_length: int | None = None, compute_dtype=jnp.float32
    ) -> CrossEncoder:
        """Loads a `*ForSequenceClassification` checkpoint with one label."""
        ckpt = load_checkpoint(name_or_path)
        if ckpt.head is None:
            raise CheckpointError(
                f"{ckpt.model_dir} is not a cross-encoder (no *ForSequenceClassification head)"
            )
        limit = _model_max_length(ckpt.bert_config)
        params = {"bert": ckpt.bert, "head": ckpt.head}
        return cls(
            params,
            ckpt.bert_config,
            load_tokenizer(ckpt),
            min(max_length or limit, limit),
            str(name_or_path),
            compute_dtype,
        )

    def save_pretrained(self, path, overwrite: bool = False) -> None:
        """Writes a Hugging Face `*ForSequenceClassification` checkpoint."""
        export_cross_encoder(self, path, overwrite=overwrite)

    def tokenize_pairs(self, queries, passages) -> dict[str, np.ndarray]:
        """input_ids, attention_mask, token_type_ids int32 [B, T] (longest-first truncation)."""
        queries, passages = check_texts(queries, "queries"), check_texts(passages, "passages")
        if len(queries) != len(passages):
            raise InputError(f"{len(queries)} queries but {len(passages)} passages")
        return self.tokenizer.frame_pairs(queries, passages, self.max_length)

    def apply(self, params, input_ids, attention_mask, token_type_ids) -> jax.Array:
        """Pure: logits [B] float32 of `params` (the `.params` layout)."""
        module = CrossEncoderModel.merge(nnx.graphdef(self.module), params)
        return module(input_ids, attention_mask, token_type_ids)

    def _forward_fn(self):
        graphdef, state = self._split()
        return lambda batch: _cross_jit(
            graphdef, state, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
        )

    def score(self, queries, passages, batch_size: int = 32) -> np.ndarray:
        """[N] float32 logits, in input order."""
        encoded = self.tokenize_pairs(queries, passages)
        lengths = encoded["attention_mask"].sum(1)
        out = np.zeros(len(lengths), np.float32)
        forward = self._forward_fn()
        for bucket, rows in _length_groups(lengths, self.max_length):
            part = {k: v[:, :bucket] for k, v in encoded.items()}
            for idx, logits in _run_batches(forward, part, rows, batch_size, False, "pairs"):
                out[idx] = logits
        return out
