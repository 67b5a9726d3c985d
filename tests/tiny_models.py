"""The tests' one tiny random BERT-family model: its Hugging Face config, its lateint_jax
BertConfig, and a writer that saves a random transformers (PyTorch) checkpoint of it.

The architecture is the package's own tiny model (`lateint_jax.models.bert.tiny_bert_config`:
2 layers, width 32, the model `configs/tiny_cpu.py` trains), so tests and smoke runs share one.
"""

from __future__ import annotations

import os

from lateint_jax.convert.files import default_model_dir
from lateint_jax.models.bert import BertConfig, tiny_bert_config

TOKENIZER_VOCAB = 30522  # the packaged all-MiniLM-L6-v2 tokenizer's vocabulary
ROBERTA_PAD = 1  # RoBERTa / XLM-R pad id; their position ids start at ROBERTA_PAD + 1
TINY_MODERNBERT = {
    "model_type": "modernbert",
    "vocab_size": TOKENIZER_VOCAB,
    "hidden_size": 32,
    "num_hidden_layers": 3,
    "num_attention_heads": 2,
    "intermediate_size": 48,
    "max_position_embeddings": 512,
    "global_attn_every_n_layers": 2,
    "local_attention": 8,
    "pad_token_id": 0,  # the packaged tokenizer's [PAD], [CLS], [SEP]
    "cls_token_id": 101,
    "bos_token_id": 101,
    "sep_token_id": 102,
    "eos_token_id": 102,
}


def tiny_config(model_type: str = "bert", **overrides) -> dict:
    """The tiny model's config.json as `model_type` ("bert", "roberta", "xlm-roberta" or
    "modernbert").

    `overrides` replace or add config.json fields (vocab_size, num_labels, initializer_range...).
    The RoBERTa family gets its own conventions: one token type, pad id 1, positions offset past it.
    ModernBERT gets the same width and 3 layers, global attention every 2nd, a window of 8
    tokens (so short texts already cross it), and the packaged tokenizer's special ids.
    """
    if model_type == "modernbert":
        return {**TINY_MODERNBERT, **overrides}
    config = tiny_bert_config(TOKENIZER_VOCAB).to_hf()
    del config["architectures"]
    config["model_type"] = model_type
    if model_type in ("roberta", "xlm-roberta"):
        config.update(
            type_vocab_size=1,
            pad_token_id=ROBERTA_PAD,
            bos_token_id=0,
            eos_token_id=2,
            max_position_embeddings=config["max_position_embeddings"] + ROBERTA_PAD + 1,
        )
    config.update(overrides)
    return config


def tiny_bert(model_type: str = "bert", **overrides) -> BertConfig:
    """tiny_config(...) as lateint_jax's BertConfig (for init_bert_params and the encoders)."""
    return BertConfig.from_hf(tiny_config(model_type, **overrides))


def save_tiny_model(
    path: str | os.PathLike,
    *,
    seed: int,
    model_type: str = "bert",
    head: str | None = None,
    tokenizer: bool = False,
    **overrides,
):
    """Save a transformers model of tiny_config(model_type, **overrides), weights drawn after
    torch.manual_seed(seed), at `path` (config.json + model.safetensors); with `tokenizer`, the
    packaged MiniLM tokenizer too (it needs the default vocab_size).

    head=None: the bare encoder (AutoModel, BERT's with its pooler); head="classifier": a
    one-logit *ForSequenceClassification (a cross-encoder; num_labels defaults to 1).
    Returns the torch model in eval mode.
    """
    # torch and transformers' torch models are optional and heavy: imported only when used.
    import torch
    import transformers

    if head not in (None, "classifier"):
        raise ValueError(f"head must be None or 'classifier', got {head!r}")
    if head == "classifier":
        overrides.setdefault("num_labels", 1)
    values = tiny_config(model_type, **overrides)
    config = transformers.AutoConfig.for_model(values.pop("model_type"), **values)
    auto = transformers.AutoModelForSequenceClassification if head else transformers.AutoModel
    torch.manual_seed(seed)
    model = auto.from_config(config).eval()
    model.save_pretrained(path)
    if tokenizer:
        transformers.AutoTokenizer.from_pretrained(str(default_model_dir())).save_pretrained(path)
    return model
