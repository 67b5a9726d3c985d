"""Hugging Face ModernBERT weights <-> our ModernBERT params, as a declarative name map (the
same (torch name, our path, transform) entries as `convert.hf_bert`, which applies them)."""

from __future__ import annotations

from lateint_jax.models.modernbert import ModernBertConfig


def _norm(hf: str, ours: tuple, config: ModernBertConfig) -> list:
    entries = [(f"{hf}.weight", (*ours, "scale"), "copy")]
    if config.norm_bias:
        entries.append((f"{hf}.bias", (*ours, "bias"), "copy"))
    return entries


def _linear(hf: str, ours: tuple, bias: bool) -> list:
    entries = [(f"{hf}.weight", (*ours, "kernel"), "linear")]
    if bias:
        entries.append((f"{hf}.bias", (*ours, "bias"), "copy"))
    return entries


def modernbert_name_map(config: ModernBertConfig) -> list[tuple[str, tuple, str]]:
    """(torch name, our params path, transform) for every tensor of a ModernBertModel."""
    entries = [
        ("embeddings.tok_embeddings.weight", ("embeddings", "word"), "copy"),
        *_norm("embeddings.norm", ("embeddings", "ln"), config),
    ]
    for i in range(config.num_hidden_layers):
        hf, ours = f"layers.{i}", ("layers", str(i))
        if i > 0:
            entries += _norm(f"{hf}.attn_norm", (*ours, "attention_ln"), config)
        entries += _linear(f"{hf}.attn.Wqkv", (*ours, "attention", "qkv"), config.attention_bias)
        entries += _linear(f"{hf}.attn.Wo", (*ours, "attention", "output"), config.attention_bias)
        entries += _norm(f"{hf}.mlp_norm", (*ours, "mlp_ln"), config)
        entries += _linear(f"{hf}.mlp.Wi", (*ours, "mlp", "wi"), config.mlp_bias)
        entries += _linear(f"{hf}.mlp.Wo", (*ours, "mlp", "wo"), config.mlp_bias)
    entries += _norm("final_norm", ("final_ln",), config)
    return entries
