"""The ColBERT encoder: BERT -> projection head -> L2 normalisation, per token, as the
`flax.nnx` module `ColBERTModel`.

params (`ColBERTModel.to_params()`) = {"bert": encoder params, "linear": {"kernel": [H, D]}}
(colbert-ai's linear map, no bias), or "linear" a list of Dense layers (PyLate's multi-layer
heads, `models/projection.py`; nnx keeps them as an `nnx.List`, whose int-keyed state the
params layout shows as a list).
Einsum letters: B batch, T tokens, H hidden, D embedding dim.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lateint_jax.errors import CheckpointError
from lateint_jax.models.encoder import (
    EncoderConfig,
    encoder_config_from_hf,
    has_pooler,
    make_encoder,
)
from lateint_jax.models.layers import ParamsModule, graphdef_of
from lateint_jax.models.projection import LINEAR, DenseLayer, ProjectionLayer, layer_shapes

FRAMINGS = ("colbert-ai", "pylate")


@dataclass(frozen=True)
class ColBERTConfig:
    """ColBERT's tokenisation and head settings (the colbert-ai defaults)."""

    query_maxlen: int = 32
    doc_maxlen: int = 180
    dim: int = 128
    attend_to_mask_tokens: bool = False
    mask_punctuation: bool = True
    # Marker tokens after [CLS]; "" means no marker (PyLate's empty prefix).
    query_token: str = "[unused0]"
    doc_token: str = "[unused1]"
    # colbert-ai's query augmentation: pad every query with [MASK] to query_maxlen and score
    # those vectors. Without it (PyLate's do_query_expansion=False) the padding gets zero
    # vectors, which add nothing to any MaxSim score.
    query_augmentation: bool = True
    # Where the marker goes: "colbert-ai" tokenises ". " + text and overwrites the "." with it
    # (colbert-ai's and Stanford checkpoints' way); "pylate" tokenises the text alone and
    # inserts it after [CLS]. The same for WordPiece; BPE tokenizers split the first word
    # differently after ". ".
    framing: str = "colbert-ai"

    @classmethod
    def from_dict(cls, values: dict) -> ColBERTConfig:
        """Keeps only the known keys (colbert-ai's artifact.metadata holds many more)."""
        known = {f.name for f in fields(cls)}
        config = cls(**{k: v for k, v in values.items() if k in known and v is not None})
        if config.query_maxlen < 3 or config.doc_maxlen < 3 or config.dim < 1:
            raise CheckpointError(f"bad ColBERT config: {config}")
        if config.framing not in FRAMINGS:
            raise CheckpointError(
                f"ColBERT framing must be one of {FRAMINGS}, got {config.framing!r}"
            )
        return config

    def to_dict(self) -> dict:
        return asdict(self)


def untrained_settings(hidden_size: int, max_seq_length: int | None) -> dict:
    """ColBERT settings for a checkpoint without a ColBERT head (plain BERT, sentence-transformers).

    Nothing in such a model was trained with ColBERT's conventions, so none is added: no
    [Q]/[D] markers (their embeddings are untrained), no [MASK] query augmentation (untrained
    vectors that would count in every score), and the identity head (dim = H: a random
    projection can only blur the similarities the encoder learnt). Documents keep the
    checkpoint's own max_seq_length when it states one (sentence_bert_config.json).
    """
    out = {"query_token": "", "doc_token": "", "query_augmentation": False, "dim": hidden_size}
    if max_seq_length:
        out["doc_maxlen"] = int(max_seq_length)
    return out


def init_projection(hidden_size: int, dim: int, seed: int = 0) -> dict:
    """A deterministic projection [H, D] for a checkpoint without a ColBERT head.

    dim == H gives the identity (any rotation would leave every MaxSim score unchanged).
    A random orthogonal map (rows of an orthonormal basis) scaled by sqrt(H / D): it preserves
    angles between token vectors as well as a linear map to fewer dimensions can on average,
    so MaxSim ranks sensibly before any training. The scale does not matter after L2
    normalisation; it keeps the pre-normalisation norms comparable to the hidden states.
    """
    if dim == hidden_size:
        return {"kernel": jnp.eye(hidden_size, dtype=jnp.float32)}
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((max(hidden_size, dim), min(hidden_size, dim)))
    q, r = np.linalg.qr(a)
    q = q * np.sign(np.diag(r))  # unique Q (Haar-distributed)
    kernel = q if hidden_size >= dim else q.T
    kernel = kernel * np.sqrt(hidden_size / dim) if hidden_size >= dim else kernel
    return {"kernel": jnp.asarray(kernel, jnp.float32)}


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """x / max(||x||, eps) over the last axis (torch.nn.functional.normalize)."""
    norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True))
    return x / jnp.maximum(norm, eps)


class ColBERTModel(ParamsModule):
    """Encoder -> projection chain -> L2 normalisation: token vectors [B, T, D] float32.

    dims: each head layer's output width (the last is D); head: what each layer does;
    biases: which layers have a bias (default: none, colbert-ai's linear map).
    """

    def __init__(
        self,
        encoder_config: EncoderConfig,
        *,
        rngs: nnx.Rngs,
        dims: tuple[int, ...] = (128,),
        head: tuple[DenseLayer, ...] = LINEAR,
        biases: tuple[bool, ...] | None = None,
        compute_dtype=jnp.float32,
        with_pooler: bool = False,
    ):
        dims, head = tuple(dims), tuple(head)
        biases = (False,) * len(dims) if biases is None else tuple(biases)
        if not len(dims) == len(head) == len(biases):
            raise CheckpointError(
                f"{len(dims)} head widths, {len(head)} specs, {len(biases)} biases"
            )
        self.bert = make_encoder(
            encoder_config, rngs=rngs, compute_dtype=compute_dtype, with_pooler=with_pooler
        )
        widths = (encoder_config.hidden_size, *dims)
        layers = [
            ProjectionLayer(
                widths[i],
                widths[i + 1],
                spec,
                rngs=rngs,
                use_bias=bias,
                compute_dtype=compute_dtype,
            )
            for i, (spec, bias) in enumerate(zip(head, biases, strict=True))
        ]
        self.linear = layers[0] if len(layers) == 1 else nnx.List(layers)
        self.head = head

    @classmethod
    def from_hf_config(
        cls, config_json: dict, *, rngs: nnx.Rngs, dim: int = 128, compute_dtype=jnp.float32
    ) -> ColBERTModel:
        """A randomly initialised ColBERT over the encoder a config.json describes, with
        colbert-ai's head (one linear map to `dim`, no bias)."""
        return cls(
            encoder_config_from_hf(config_json), rngs=rngs, dims=(dim,), compute_dtype=compute_dtype
        )

    @classmethod
    def structure(cls, params: dict, head: tuple[DenseLayer, ...] = LINEAR) -> dict:
        """The constructor's keyword arguments that give a module holding `params`."""
        dims, biases = layer_shapes(params["linear"])
        return {
            "dims": dims,
            "head": tuple(head),
            "biases": biases,
            "with_pooler": has_pooler(params["bert"]),
        }

    @classmethod
    def state_to_params(cls, state: dict) -> dict:
        linear = state["linear"]
        if "kernel" not in linear:  # an nnx.List: {0: layer, 1: layer, ...}
            linear = [linear[i] for i in range(len(linear))]
        return {**state, "linear": linear}

    @classmethod
    def params_to_state(cls, params: dict) -> dict:
        linear = params["linear"]
        if isinstance(linear, (list, tuple)):
            linear = dict(enumerate(linear)) if len(linear) > 1 else linear[0]
        return {**params, "linear": linear}

    def project(self, hidden: jax.Array) -> jax.Array:
        """hidden [B, T, H] -> [B, T, D] float32, not normalised."""
        layers = [self.linear] if isinstance(self.linear, ProjectionLayer) else self.linear
        x = hidden.astype(jnp.float32)
        for layer in layers:
            x = layer(x)
        return x

    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
        """Normalised token embeddings [B, T, D] float32 of input_ids/attention_mask [B, T].

        Every position gets a vector (padding included); callers drop padding and skiplist
        tokens from documents and keep all query positions.
        """
        return l2_normalize(self.project(self.bert(input_ids, attention_mask)))


def colbert_graphdef(
    params: dict, bert_config: EncoderConfig, head=LINEAR, compute_dtype=jnp.float32
) -> nnx.GraphDef:
    """The graphdef of the `ColBERTModel` that holds `params` (cached per structure)."""
    structure = ColBERTModel.structure(params, head)
    return graphdef_of(ColBERTModel, bert_config, compute_dtype=compute_dtype, **structure)


def colbert_forward(
    params: dict,
    bert_config: EncoderConfig,
    input_ids: jax.Array,
    attention_mask: jax.Array,
    compute_dtype=jnp.float32,
    head: tuple[DenseLayer, ...] = LINEAR,
) -> jax.Array:
    """`ColBERTModel.__call__` as a pure function of params: [B, T, D] float32.

    `head` (static) describes the layers of params["linear"].
    """
    graphdef = colbert_graphdef(params, bert_config, head, compute_dtype)
    return ColBERTModel.merge(graphdef, params)(input_ids, attention_mask)
