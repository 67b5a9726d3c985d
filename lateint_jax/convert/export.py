"""Writing our params back to the PyTorch layouts `convert.load` reads, atomically.

Layouts: "hf" (BertModel-like), "stanford" (colbert-ai: `bert.`/`roberta.` weights + `linear.weight`
+ `artifact.metadata`), "pylate" (sentence-transformers Transformer + `1_Dense`, `2_Dense`, ... one per head layer),
"sentence-transformers" (Transformer + Pooling + Normalize), "cross-encoder"
(`*ForSequenceClassification`). Each directory also gets the tokenizer files. An existing
directory is replaced only with overwrite=True and only when it is a checkpoint
(`files.is_checkpoint_folder`); files and folders get the modes the umask gives.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lateint_jax.convert.files import atomic_directory, write_json
from lateint_jax.convert.hf_bert import bert_state_dict, head_name_map, write_safetensors
from lateint_jax.convert.load import DENSE_NAME_MAP
from lateint_jax.errors import InputError
from lateint_jax.models.encoder import EncoderConfig
from lateint_jax.models.projection import LINEAR, as_layers

_BASE_PREFIX = {
    "bert": "bert.",
    "roberta": "roberta.",
    "xlm-roberta": "roberta.",
    "modernbert": "model.",
}
_ARCH = {
    "bert": "Bert",
    "roberta": "Roberta",
    "xlm-roberta": "XLMRoberta",
    "modernbert": "ModernBert",
}
ST_VERSION = {"__version__": {"sentence_transformers": "3.0.0"}}


def _hf_config(bert_config: EncoderConfig, architecture: str, extra: dict | None = None) -> dict:
    config = bert_config.to_hf()
    # colbert-ai names its class HF_ColBERT whatever the base model; PyLate looks for that name.
    full = (
        architecture
        if architecture == "HF_ColBERT"
        else _ARCH[bert_config.model_type] + architecture
    )
    config["architectures"] = [full]
    config.update(extra or {})
    return config


def _write_transformer(
    dst: Path,
    bert_config,
    bert_params,
    tokenizer,
    architecture="Model",
    prefix="",
    extra_tensors=None,
    extra_config=None,
) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    state = bert_state_dict(bert_params, bert_config, prefix)
    state.update(extra_tensors or {})
    write_safetensors(state, dst / "model.safetensors")
    write_json(dst / "config.json", _hf_config(bert_config, architecture, extra_config))
    tokenizer.hf_tokenizer.save_pretrained(str(dst))


def export_hf(params: dict, bert_config: EncoderConfig, tokenizer, path, overwrite=False) -> None:
    """A plain Hugging Face BertModel / RobertaModel / XLMRobertaModel directory."""
    with atomic_directory(path, overwrite) as tmp:
        _write_transformer(tmp, bert_config, params, tokenizer)


def export_colbert(model, path, layout: str = "stanford", overwrite: bool = False) -> None:
    """A ColBERT (`lateint_jax.encoders.ColBERT`) as a Stanford or PyLate checkpoint."""
    cfg, bert_config = model.config, model.bert_config
    layers = as_layers(model.params["linear"])
    if layout == "stanford":
        _check_colbert_ai_conventions(cfg)
        if tuple(model.head) != LINEAR or set(layers[0]) != {"kernel"}:
            raise InputError(
                "colbert-ai checkpoints hold one linear map without bias (linear.weight); this "
                f"head has {len(layers)} Dense layer(s) {list(model.head)}: write layout='pylate'"
            )
        linear_weight = _torch_weight(layers[0]["kernel"])
        metadata = {
            "query_maxlen": cfg.query_maxlen,
            "doc_maxlen": cfg.doc_maxlen,
            "dim": cfg.dim,
            "attend_to_mask_tokens": cfg.attend_to_mask_tokens,
            "mask_punctuation": cfg.mask_punctuation,
            "query_token_id": cfg.query_token,
            "doc_token_id": cfg.doc_token,
            "query_token": "[Q]",
            "doc_token": "[D]",
            "similarity": "cosine",
        }
        with atomic_directory(path, overwrite) as tmp:
            _write_transformer(
                tmp,
                bert_config,
                model.params["bert"],
                model.tokenizer,
                "HF_ColBERT",
                prefix=_BASE_PREFIX[bert_config.model_type],
                extra_tensors={"linear.weight": linear_weight},
            )
            write_json(tmp / "artifact.metadata", metadata)
    elif layout == "pylate":
        with atomic_directory(path, overwrite) as tmp:
            _write_transformer(tmp, bert_config, model.params["bert"], model.tokenizer)
            write_json(
                tmp / "sentence_bert_config.json",
                {"max_seq_length": cfg.doc_maxlen, "do_lower_case": False},
            )
            modules = [_module(0, "", "sentence_transformers.models.Transformer")]
            width = bert_config.hidden_size
            for i, (params, layer) in enumerate(zip(layers, model.head, strict=True), start=1):
                folder = f"{i}_Dense"
                _write_dense(tmp / folder, params, layer, width)
                width = int(params["kernel"].shape[1])
                modules.append(_module(i, folder, "pylate.models.Dense.Dense"))
            write_json(tmp / "modules.json", modules)
            write_json(
                tmp / "config_sentence_transformers.json",
                {
                    **ST_VERSION,
                    "query_prefix": cfg.query_token,
                    "document_prefix": cfg.doc_token,
                    "query_length": cfg.query_maxlen,
                    "document_length": cfg.doc_maxlen,
                    "attend_to_expansion_tokens": cfg.attend_to_mask_tokens,
                    "skiplist_words": list(_PUNCTUATION) if cfg.mask_punctuation else [],
                    "do_query_expansion": cfg.query_augmentation,
                    "similarity_fn_name": "MaxSim",
                },
            )
    else:
        raise InputError(f"unknown ColBERT layout {layout!r} (expected 'stanford' or 'pylate')")


def _torch_weight(kernel) -> np.ndarray:
    """Our kernel [in, out] as torch's weight [out, in]."""
    return np.ascontiguousarray(np.asarray(kernel, np.float32).T)


def _write_dense(folder: Path, params: dict, layer, in_features: int) -> None:
    """One PyLate Dense folder (config.json, model.safetensors), the inverse of
    `convert.load.read_dense` through its DENSE_NAME_MAP."""
    folder.mkdir()
    tensors = {}
    for name, key, transform in DENSE_NAME_MAP:
        if key in params:
            value = params[key]
            tensors[name] = (
                _torch_weight(value) if transform == "linear" else np.asarray(value, np.float32)
            )
    write_safetensors(tensors, folder / "model.safetensors")
    write_json(
        folder / "config.json",
        {
            "in_features": in_features,
            "out_features": int(params["kernel"].shape[1]),
            "bias": "bias" in params,
            "activation_function": layer.torch_name,
            "use_residual": layer.residual,
        },
    )


def _check_colbert_ai_conventions(cfg) -> None:
    """colbert-ai always inserts both markers and augments queries: a model without them
    cannot be written in its layout (PyLate's can say both)."""
    for name in ("query_token", "doc_token"):
        if getattr(cfg, name) == "":
            raise InputError(
                f"{name} is empty (no marker): colbert-ai checkpoints always have [Q]/[D] "
                "markers; write layout='pylate', or load the model with markers"
            )
    if not cfg.query_augmentation:
        raise InputError(
            "query_augmentation is False: colbert-ai checkpoints always pad queries with "
            "[MASK]; write layout='pylate', or load the model with query_augmentation=True"
        )


def export_bi_encoder(model, path, overwrite: bool = False) -> None:
    """A sentence-transformers directory: Transformer at the root, 1_Pooling (mean), 2_Normalize."""
    with atomic_directory(path, overwrite) as tmp:
        _write_transformer(tmp, model.bert_config, model.params, model.tokenizer)
        write_json(
            tmp / "sentence_bert_config.json",
            {"max_seq_length": model.max_length, "do_lower_case": False},
        )
        (tmp / "1_Pooling").mkdir()
        write_json(
            tmp / "1_Pooling" / "config.json",
            {
                "word_embedding_dimension": model.bert_config.hidden_size,
                "pooling_mode_cls_token": False,
                "pooling_mode_mean_tokens": True,
                "pooling_mode_max_tokens": False,
                "pooling_mode_mean_sqrt_len_tokens": False,
            },
        )
        modules = [
            _module(0, "", "sentence_transformers.models.Transformer"),
            _module(1, "1_Pooling", "sentence_transformers.models.Pooling"),
        ]
        if model.normalize:
            (tmp / "2_Normalize").mkdir()
            modules.append(_module(2, "2_Normalize", "sentence_transformers.models.Normalize"))
        write_json(tmp / "modules.json", modules)
        write_json(tmp / "config_sentence_transformers.json", ST_VERSION)


def export_cross_encoder(model, path, overwrite: bool = False) -> None:
    """A Hugging Face `*ForSequenceClassification` directory with one label."""
    bert_config, head = model.bert_config, model.params["head"]
    tensors = {}
    for name, (layer, key), transform in head_name_map(bert_config):
        value = np.asarray(head[layer][key], np.float32)
        tensors[name] = np.ascontiguousarray(value.T if transform == "linear" else value)
    extra = {"num_labels": 1, "id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}
    with atomic_directory(path, overwrite) as tmp:
        _write_transformer(
            tmp,
            bert_config,
            model.params["bert"],
            model.tokenizer,
            "ForSequenceClassification",
            _BASE_PREFIX[bert_config.model_type],
            tensors,
            extra,
        )


def _module(idx: int, path: str, kind: str) -> dict:
    return {"idx": idx, "name": str(idx), "path": path, "type": kind}


_PUNCTUATION = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
