"""Reading every supported checkpoint layout into one description: BERT params plus heads.

Layouts (detected in this order):
- sentence-transformers (`modules.json`): Transformer at the root or in `0_Transformer`, then
  Pooling / Normalize (a bi-encoder) or one or more `Dense` modules (a PyLate ColBERT).
- Stanford ColBERT: Hugging Face weights under `bert.`/`roberta.` plus `linear.weight` [D, H],
  with `artifact.metadata` holding the ColBERT settings.
- Hugging Face `*ForSequenceClassification` (a cross-encoder head).
- Plain Hugging Face `BertModel` / `RobertaModel` / `XLMRobertaModel`.
Every tensor in the files must be used; a leftover or missing one is a CheckpointError.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx

from lateint_jax.convert.files import read_json, resolve_model_dir
from lateint_jax.convert.hf_bert import (
    check_all_used,
    find_prefix,
    head_name_map,
    read_state_dict,
    take_bert_params,
)
from lateint_jax.errors import CheckpointError
from lateint_jax.models.cross_encoder import classifier_head
from lateint_jax.models.encoder import EncoderConfig, encoder_config_from_hf
from lateint_jax.models.projection import LINEAR, DenseLayer

ST_TRANSFORMER = "sentence_transformers.models.Transformer"


@dataclass
class Checkpoint:
    """What a checkpoint directory holds, in our param layout."""

    model_dir: Path
    layout: str  # "hf", "sentence-transformers", "pylate", "stanford", "cross-encoder"
    bert_config: EncoderConfig
    bert: dict  # the encoder's params (BERT-family or ModernBERT)
    transformer_dir: Path  # where config.json and the tokenizer live
    hf_config: dict = field(default_factory=dict)  # the full config.json (kept for export)
    linear: dict | list | None = None  # ColBERT head: {"kernel": [H, D]} or a list of layers
    dense_layers: tuple[DenseLayer, ...] = LINEAR  # what each head layer does (static)
    colbert: dict = field(default_factory=dict)  # ColBERT settings found in the files
    head: dict | None = None  # cross-encoder head
    normalize: bool = False  # sentence-transformers Normalize module present
    max_seq_length: int | None = None


def load_checkpoint(name_or_path) -> Checkpoint:
    """Reads any supported layout from a local dir, a hub name, or None (the packaged default)."""
    model_dir = resolve_model_dir(name_or_path)
    if (model_dir / "modules.json").exists():
        return _load_sentence_transformers(model_dir)
    return _load_hf(model_dir, model_dir, layout=None)


def _load_hf(model_dir: Path, transformer_dir: Path, layout: str | None) -> Checkpoint:
    hf_config = read_json(transformer_dir / "config.json")
    bert_config = encoder_config_from_hf(hf_config)
    state = read_state_dict(transformer_dir)
    used: set[str] = set()
    prefix = find_prefix(state)
    bert = take_bert_params(state, bert_config, prefix, used)
    ckpt = Checkpoint(model_dir, layout or "hf", bert_config, bert, transformer_dir, hf_config)
    if "linear.weight" in state:
        ckpt.layout = "stanford"
        ckpt.linear = {"kernel": _projection(state["linear.weight"], bert_config, "linear.weight")}
        used.add("linear.weight")
        metadata = read_json(model_dir / "artifact.metadata", default={})
        ckpt.colbert = _colbert_settings_from_stanford(metadata)
    elif any(a.endswith("ForSequenceClassification") for a in hf_config.get("architectures") or []):
        ckpt.layout = "cross-encoder"
        ckpt.head = _take_head(state, bert_config, hf_config, used)
        if bert_config.model_type == "bert" and "pooler" not in bert:
            raise CheckpointError(
                f"{transformer_dir}: a BERT cross-encoder needs bert.pooler.dense.*"
            )
    check_all_used(state, used, str(transformer_dir))
    return ckpt


def _load_sentence_transformers(model_dir: Path) -> Checkpoint:
    modules = read_json(model_dir / "modules.json")
    if not isinstance(modules, list) or not modules:
        raise CheckpointError(f"{model_dir / 'modules.json'} does not list any module")
    kinds = [m.get("type", "").rsplit(".", 1)[-1] for m in modules]
    first = modules[0]
    if kinds[0] != "Transformer":
        raise CheckpointError(
            f"the first module in {model_dir} is {first.get('type')}, not a Transformer"
        )
    transformer_dir = model_dir / first.get("path", "")
    ckpt = _load_hf(model_dir, transformer_dir, layout="sentence-transformers")
    st_config = read_json(transformer_dir / "sentence_bert_config.json", default={})
    ckpt.max_seq_length = st_config.get("max_seq_length")
    dense: list[tuple[dict, DenseLayer]] = []
    for module, kind in zip(modules[1:], kinds[1:], strict=True):
        path = model_dir / module.get("path", "")
        if kind == "Pooling":
            if not _is_mean_pooling(read_json(path / "config.json", default={})):
                raise CheckpointError(
                    f"{path} asks for pooling other than mean; only mean is supported"
                )
        elif kind == "Normalize":
            ckpt.normalize = True
        elif kind == "Dense":
            width = ckpt.bert_config.hidden_size if not dense else dense[-1][0]["kernel"].shape[1]
            dense.append(read_dense(path, width))
        else:
            raise CheckpointError(f"unsupported sentence-transformers module {module.get('type')}")
    if dense:
        ckpt.layout = "pylate"
        params = [p for p, _ in dense]
        ckpt.linear = params[0] if len(params) == 1 else params
        ckpt.dense_layers = tuple(layer for _, layer in dense)
        ckpt.colbert = _colbert_settings_from_pylate(
            read_json(model_dir / "config_sentence_transformers.json", default={})
        )
    return ckpt


def _is_mean_pooling(pooling: dict) -> bool:
    """A sentence-transformers Pooling config asking for mean pooling only, in the current
    form ("pooling_mode": "mean") or the older flags ("pooling_mode_mean_tokens": true)."""
    if "pooling_mode" in pooling:
        return pooling["pooling_mode"] == "mean"
    flags = {k: v for k, v in pooling.items() if k.startswith("pooling_mode_") and v}
    return not pooling or list(flags) == ["pooling_mode_mean_tokens"]


def _projection(weight: np.ndarray, config: EncoderConfig, name: str) -> jnp.ndarray:
    weight = np.asarray(weight)
    if weight.ndim != 2 or weight.shape[1] != config.hidden_size:
        raise CheckpointError(
            f"tensor {name} has shape {tuple(weight.shape)} but the config expects "
            f"(dim, {config.hidden_size})"
        )
    return jnp.asarray(weight.T, jnp.float32)


# PyLate's Dense folder: torch name -> our key, transform ("linear": [out, in] -> [in, out]).
DENSE_NAME_MAP = (
    ("linear.weight", "kernel", "linear"),
    ("linear.bias", "bias", "copy"),
    ("residual.weight", "residual", "linear"),
)
DENSE_CONFIG_KEYS = {"in_features", "out_features", "bias", "activation_function", "use_residual"}


def read_dense(path: Path, in_features: int) -> tuple[dict, DenseLayer]:
    """One PyLate / sentence-transformers Dense folder fed `in_features` wide vectors:
    (its params, its DenseLayer). Unknown config fields, a width that does not chain, a missing
    or leftover tensor are CheckpointErrors naming it."""
    config = read_json(path / "config.json")
    unknown = sorted(set(config) - DENSE_CONFIG_KEYS)
    if unknown:
        raise CheckpointError(f"{path / 'config.json'}: unsupported Dense field(s) {unknown}")
    out_features = config.get("out_features")
    if not isinstance(out_features, int) or out_features < 1:
        raise CheckpointError(f"{path / 'config.json'}: out_features is {out_features!r}")
    if config.get("in_features", in_features) != in_features:
        raise CheckpointError(
            f"{path / 'config.json'}: in_features is {config['in_features']} but the layer "
            f"before gives {in_features}"
        )
    layer = DenseLayer.from_torch_name(
        config.get("activation_function", "torch.nn.modules.linear.Identity"),
        residual=bool(config.get("use_residual", False)),
    )
    wanted = {"linear.weight"}
    if config.get("bias", True):  # sentence-transformers' and PyLate's default: a bias
        wanted.add("linear.bias")
    if layer.residual and out_features != in_features:
        wanted.add("residual.weight")
    state = read_state_dict(path)
    params = {}
    for name, key, transform in DENSE_NAME_MAP:
        if name not in wanted:
            continue
        if name not in state:
            raise CheckpointError(f"{path} lacks tensor {name}")
        value = np.asarray(state[name])
        want = (out_features,) if transform == "copy" else (out_features, in_features)
        if value.shape != want:
            raise CheckpointError(
                f"tensor {path.name}/{name} has shape {tuple(value.shape)} but config.json "
                f"expects {want}"
            )
        params[key] = jnp.asarray(value.T if transform == "linear" else value, jnp.float32)
    check_all_used(state, wanted, str(path))
    return params, layer


def _take_head(state, config: EncoderConfig, hf_config: dict, used: set[str]) -> dict:
    num_labels = hf_config.get("num_labels") or len(hf_config.get("id2label") or {0: 0})
    if num_labels != 1:
        raise CheckpointError(
            f"the cross-encoder has {num_labels} labels; only 1 logit is supported"
        )
    shapes = nnx.eval_shape(lambda: classifier_head(config, rngs=nnx.Rngs(0))).to_params()
    head: dict = {}
    for name, (layer, key), transform in head_name_map(config):
        if name not in state:
            raise CheckpointError(f"checkpoint lacks tensor {name}")
        value = state[name].T if transform == "linear" else state[name]
        want = shapes[layer][key].shape
        if tuple(value.shape) != want:
            torch_want = tuple(reversed(want)) if transform == "linear" else want
            raise CheckpointError(
                f"tensor {name} has shape {tuple(state[name].shape)} but the config expects "
                f"{torch_want}"
            )
        head.setdefault(layer, {})[key] = jnp.asarray(value, jnp.float32)
        used.add(name)
    return head


def _colbert_settings_from_stanford(metadata: dict) -> dict:
    keys = ("query_maxlen", "doc_maxlen", "dim", "attend_to_mask_tokens", "mask_punctuation")
    out = {k: metadata[k] for k in keys if k in metadata}
    # colbert-ai keeps the marker *strings* in query_token_id/doc_token_id ("[unused0]").
    if "query_token_id" in metadata:
        out["query_token"] = metadata["query_token_id"]
    if "doc_token_id" in metadata:
        out["doc_token"] = metadata["doc_token_id"]
    return out


def _colbert_settings_from_pylate(st_config: dict) -> dict:
    out = {"framing": "pylate"}
    pairs = {
        "query_length": "query_maxlen",
        "document_length": "doc_maxlen",
        "attend_to_expansion_tokens": "attend_to_mask_tokens",
        "query_prefix": "query_token",
        "document_prefix": "doc_token",
        "do_query_expansion": "query_augmentation",
    }
    for theirs, ours in pairs.items():
        if st_config.get(theirs) is not None:
            out[ours] = st_config[theirs]
    if "skiplist_words" in st_config:
        out["mask_punctuation"] = bool(st_config["skiplist_words"])
    return out
