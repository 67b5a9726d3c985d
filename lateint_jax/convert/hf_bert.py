"""Hugging Face encoder weights <-> our params, as a declarative name map (BERT / RoBERTa /
XLM-R here, ModernBERT in `convert.hf_modernbert`).

Each entry of `bert_name_map` pairs a PyTorch state-dict name with a path in our params dict and a
transform: "linear" (torch weight [out, in] <-> our kernel [in, out]) or "copy". Loading checks
every tensor against the map: a leftover or missing tensor, or a shape that does not match the
config, is a CheckpointError naming it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from lateint_jax.convert.hf_modernbert import modernbert_name_map
from lateint_jax.errors import CheckpointError
from lateint_jax.models.encoder import EncoderConfig, make_encoder
from lateint_jax.models.modernbert import ModernBertConfig

# Buffers some checkpoints carry that are not parameters.
IGNORED_SUFFIXES = ("embeddings.position_ids", "embeddings.token_type_ids")
# Old checkpoints (TF ports) name LayerNorm parameters gamma/beta.
_LEGACY = {"LayerNorm.gamma": "LayerNorm.weight", "LayerNorm.beta": "LayerNorm.bias"}
BASE_PREFIXES = ("", "bert.", "roberta.", "model.", "0.auto_model.")


def _ln(hf: str, ours: tuple) -> list:
    return [(f"{hf}.weight", (*ours, "scale"), "copy"), (f"{hf}.bias", (*ours, "bias"), "copy")]


def _dense(hf: str, ours: tuple) -> list:
    return [(f"{hf}.weight", (*ours, "kernel"), "linear"), (f"{hf}.bias", (*ours, "bias"), "copy")]


def bert_name_map(config: EncoderConfig, with_pooler: bool) -> list[tuple[str, tuple, str]]:
    """(torch name, our params path, transform) for every tensor of the encoder (a
    BertModel-like one, or a ModernBertModel)."""
    if isinstance(config, ModernBertConfig):
        return modernbert_name_map(config)
    entries = [
        ("embeddings.word_embeddings.weight", ("embeddings", "word"), "copy"),
        ("embeddings.position_embeddings.weight", ("embeddings", "position"), "copy"),
        ("embeddings.token_type_embeddings.weight", ("embeddings", "token_type"), "copy"),
        *_ln("embeddings.LayerNorm", ("embeddings", "ln")),
    ]
    for i in range(config.num_hidden_layers):
        hf, ours = f"encoder.layer.{i}", ("layers", str(i))
        for name in ("query", "key", "value"):
            entries += _dense(f"{hf}.attention.self.{name}", (*ours, "attention", name))
        entries += _dense(f"{hf}.attention.output.dense", (*ours, "attention", "output"))
        entries += _ln(f"{hf}.attention.output.LayerNorm", (*ours, "attention", "ln"))
        entries += _dense(f"{hf}.intermediate.dense", (*ours, "mlp", "intermediate"))
        entries += _dense(f"{hf}.output.dense", (*ours, "mlp", "output"))
        entries += _ln(f"{hf}.output.LayerNorm", (*ours, "mlp", "ln"))
    if with_pooler:
        entries += _dense("pooler.dense", ("pooler",))
    return entries


def head_name_map(config: EncoderConfig) -> list[tuple[str, tuple, str]]:
    """(torch name, our path in params["head"], transform) for the one-logit
    sequence-classification head of the config's family (see `models.cross_encoder`)."""
    if isinstance(config, ModernBertConfig):
        entries = [("head.dense.weight", ("dense", "kernel"), "linear")]
        if config.classifier_bias:
            entries.append(("head.dense.bias", ("dense", "bias"), "copy"))
        entries.append(("head.norm.weight", ("norm", "scale"), "copy"))
        if config.norm_bias:
            entries.append(("head.norm.bias", ("norm", "bias"), "copy"))
        return entries + _dense("classifier", ("classifier",))
    if config.model_type == "bert":
        return _dense("classifier", ("classifier",))
    return _dense("classifier.dense", ("dense",)) + _dense("classifier.out_proj", ("out_proj",))


def expected_shapes(config: EncoderConfig) -> dict[tuple, tuple]:
    """Our params path -> shape, from the config (to check checkpoints against it): the
    abstract (shape-only) module's state, so the name map and the module cannot disagree."""
    abstract = nnx.eval_shape(
        lambda: make_encoder(config, rngs=nnx.Rngs(0), with_pooler=True)
    ).to_params()
    return {
        tuple(k.key for k in path): leaf.shape
        for path, leaf in jax.tree_util.tree_flatten_with_path(abstract)[0]
    }


# ---------------------------------------------------------------------------- reading files


def read_state_dict(model_dir: str | os.PathLike, stem: str = "model") -> dict[str, np.ndarray]:
    """All tensors of `<stem>.safetensors` (or its sharded index) or `pytorch_model.bin`."""
    model_dir = Path(model_dir)
    single = model_dir / f"{stem}.safetensors"
    index = model_dir / f"{stem}.safetensors.index.json"
    if single.exists():
        return _read_safetensors(single)
    if index.exists():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError) as err:
            raise CheckpointError(f"{index} is not a valid safetensors index: {err}") from err
        state = {}
        for shard in shards:
            state.update(_read_safetensors(model_dir / shard))
        return state
    bin_name = "pytorch_model.bin" if stem == "model" else f"{stem}.bin"
    if (model_dir / bin_name).exists():
        return _read_torch_bin(model_dir / bin_name)
    raise CheckpointError(
        f"no weights in {model_dir} (looked for {stem}.safetensors, its index, and {bin_name})"
    )


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    try:
        return load_file(str(path))
    except FileNotFoundError as err:
        raise CheckpointError(f"missing weights file {path}") from err
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"cannot read {path}: {err}") from err


def _read_torch_bin(path: Path) -> dict[str, np.ndarray]:
    try:
        import torch  # optional and heavy: only for reading a PyTorch .bin checkpoint
    except ImportError as err:
        raise CheckpointError(
            f"{path} is a PyTorch .bin checkpoint; reading it needs torch "
            "(pip install 'lateint-jax[torch]'), or convert it to safetensors"
        ) from err
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for corrupt files
        raise CheckpointError(f"cannot read {path}: {err}") from err
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} does not hold a state dict")
    return {k: v.float().numpy() if v.is_floating_point() else v.numpy() for k, v in state.items()}


def write_safetensors(state: dict[str, np.ndarray], path: str | os.PathLike) -> None:
    save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(path))


# ---------------------------------------------------------------------------- map application


def find_prefix(state: dict[str, np.ndarray], prefixes=BASE_PREFIXES) -> str:
    """The prefix under which the encoder's tensors live ("", "bert.", "roberta.", ...)."""
    for prefix in prefixes:
        for embeddings in ("embeddings.word_embeddings.weight", "embeddings.tok_embeddings.weight"):
            if f"{prefix}{embeddings}" in state:
                return prefix
    raise CheckpointError(
        "no encoder embeddings found (expected a tensor named like "
        "'embeddings.word_embeddings.weight', 'bert.embeddings.word_embeddings.weight' or "
        "'model.embeddings.tok_embeddings.weight')"
    )


def _set(tree: dict, path: tuple, value) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _get(tree: dict, path: tuple):
    for key in path:
        tree = tree[key]
    return tree


def take_bert_params(
    state: dict[str, np.ndarray], config: EncoderConfig, prefix: str, used: set[str]
) -> dict:
    """Our BERT params from the tensors under prefix; adds the names it used to `used`.

    The pooler is taken when present (it is optional in BertModel).
    """
    state = {_modern_name(k): v for k, v in state.items()}
    with_pooler = f"{prefix}pooler.dense.weight" in state
    shapes = expected_shapes(config)
    params: dict = {}
    missing = []
    for hf, path, transform in bert_name_map(config, with_pooler):
        name = prefix + hf
        if name not in state:
            missing.append(name)
            continue
        value = np.asarray(state[name])
        if transform == "linear":
            value = value.T
        if value.shape != shapes[path]:
            torch_shape = tuple(reversed(shapes[path])) if transform == "linear" else shapes[path]
            raise CheckpointError(
                f"tensor {name} has shape {tuple(state[name].shape)} but the config expects "
                f"{torch_shape}"
            )
        _set(params, path, jnp.asarray(value, jnp.float32))
        used.add(name)
    if missing:
        shown = ", ".join(missing[:5]) + (
            f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        )
        raise CheckpointError(f"checkpoint lacks tensors: {shown}")
    for suffix in IGNORED_SUFFIXES:
        if prefix + suffix in state:
            used.add(prefix + suffix)
    return params


def _modern_name(name: str) -> str:
    for old, new in _LEGACY.items():
        if name.endswith(old):
            return name[: -len(old)] + new
    return name


def bert_state_dict(params: dict, config: EncoderConfig, prefix: str = "") -> dict[str, np.ndarray]:
    """The PyTorch state dict (numpy float32) of our BERT params, names under prefix."""
    out = {}
    for hf, path, transform in bert_name_map(config, with_pooler="pooler" in params):
        value = np.asarray(_get(params, path), np.float32)
        out[prefix + hf] = np.ascontiguousarray(value.T if transform == "linear" else value)
    return out


def check_all_used(state: dict[str, np.ndarray], used: set[str], where: str) -> None:
    """CheckpointError naming tensors the conversion did not consume."""
    leftover = sorted(set(map(_modern_name, state)) - used)
    if leftover:
        shown = ", ".join(leftover[:5]) + (
            f" and {len(leftover) - 5} more" if len(leftover) > 5 else ""
        )
        raise CheckpointError(f"{where} has tensors this model does not use: {shown}")


def read_config(model_dir: str | os.PathLike) -> dict:
    """config.json as a dict (CheckpointError when missing or malformed)."""
    path = Path(model_dir) / "config.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as err:
        raise CheckpointError(f"no config.json in {model_dir}") from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON: {err}") from err
