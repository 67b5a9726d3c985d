"""The encoders as Flax NNX modules, each built from a Hugging Face config.json
(`Cls.from_hf_config(config, rngs=nnx.Rngs(0))`); see docs/ENCODERS.md."""

from lateint_jax.models.bert import BertConfig, BertEncoder
from lateint_jax.models.bi_encoder import BiEncoderModel
from lateint_jax.models.colbert import ColBERTConfig, ColBERTModel
from lateint_jax.models.cross_encoder import CrossEncoderModel
from lateint_jax.models.modernbert import ModernBertConfig, ModernBertEncoder

__all__ = [
    "BertConfig",
    "BertEncoder",
    "BiEncoderModel",
    "ColBERTConfig",
    "ColBERTModel",
    "CrossEncoderModel",
    "ModernBertConfig",
    "ModernBertEncoder",
]
