"""ModernBERT: the encoder against transformers' ModernBertModel (PyTorch, float32), its
config fields in both spellings, and ModernBERT checkpoints in every layout we read: a
sentence-transformers bi-encoder, a `ModernBertForSequenceClassification` cross-encoder, and a
PyLate ColBERT that PyLate itself builds on a byte-level BPE tokenizer (as real ModernBERT
ColBERTs have), each loaded and exported back.

Tolerance: float32 on both sides, only the summation order differs: 1e-4 absolute.
"""

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from lateint_jax.convert.load import load_checkpoint
from lateint_jax.encoders import BiEncoder, ColBERT, CrossEncoder
from lateint_jax.errors import CheckpointError
from lateint_jax.models.modernbert import ModernBertConfig, modernbert_forward
from tests.reference_python import PYLATE_PYTHON, run_pylate, run_python
from tests.tiny_models import TINY_MODERNBERT, save_tiny_model, tiny_config

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

ATOL = 1e-4
REPO = Path(__file__).resolve().parents[2]
TEXTS = [
    "The moon pulls the sea, making the tides rise and fall twice a day along every coast.",
    "bread",
    "Honeybees dance to tell their nestmates where the flowers are.",
]


@pytest.mark.parametrize(
    "overrides",
    [
        {},  # global attention every 2nd layer, window 8
        {"global_attn_every_n_layers": 3, "num_hidden_layers": 4, "local_attention": 16},
        {
            "norm_bias": True,
            "attention_bias": True,
            "mlp_bias": True,
            "hidden_activation": "gelu_new",
        },
    ],
    ids=["every-2", "every-3", "biases"],
)
def test_encoder_matches_transformers(tmp_path, seed, overrides):
    torch_model = save_tiny_model(tmp_path, seed=seed, model_type="modernbert", **overrides)
    ckpt = load_checkpoint(tmp_path)  # our config parsing and name map
    assert isinstance(ckpt.bert_config, ModernBertConfig)
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, 30000, (3, 40))  # longer than the window
    mask = np.ones_like(ids)
    mask[1, 25:] = 0  # padding, some of it beyond the window from every real token
    mask[2, 3:] = 0
    with torch.no_grad():
        want = torch_model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
    got = modernbert_forward(ckpt.bert, ckpt.bert_config, jnp.asarray(ids), jnp.asarray(mask))
    # Padding positions too: ColBERT keeps the vectors of its [MASK] query padding.
    np.testing.assert_allclose(np.asarray(got), want.last_hidden_state.numpy(), atol=ATOL)


def test_original_and_transformers5_config_fields_agree():
    original = {
        **TINY_MODERNBERT,
        "num_hidden_layers": 6,
        "global_attn_every_n_layers": 3,
        "global_rope_theta": 80000.0,
        "local_rope_theta": 5000.0,
    }
    current = transformers.ModernBertConfig(**original).to_dict()
    assert "layer_types" in current and "rope_parameters" in current
    ours = ModernBertConfig.from_hf(original)
    assert ours == ModernBertConfig.from_hf(current)
    assert (ours.global_every, ours.global_theta, ours.local_theta) == (3, 80000.0, 5000.0)
    assert ModernBertConfig.from_hf(ours.to_hf()) == ours


@pytest.mark.parametrize(
    "change, field",
    [
        ({"layer_types": ["sliding_attention", "full_attention", "full_attention"]}, "layer_types"),
        (
            {"rope_parameters": {"full_attention": {"rope_type": "yarn", "rope_theta": 1.0}}},
            "rope_parameters.full_attention.rope_type",
        ),
        ({"hidden_activation": "swiglu"}, "hidden_activation"),
        ({"classifier_pooling": "max"}, "classifier_pooling"),
        ({"num_attention_heads": 3}, "num_attention_heads"),
    ],
)
def test_unsupported_config_fields_are_named(change, field):
    with pytest.raises(CheckpointError, match=field):
        ModernBertConfig.from_hf({**TINY_MODERNBERT, **change})


def test_sentence_transformers_bi_encoder_loads_and_exports(tmp_path, seed):
    st = pytest.importorskip("sentence_transformers")
    from sentence_transformers import models as st_models

    save_tiny_model(tmp_path / "base", seed=seed, model_type="modernbert", tokenizer=True)
    word = st_models.Transformer(str(tmp_path / "base"), max_seq_length=64)
    pooling = st_models.Pooling(word.get_word_embedding_dimension(), "mean")
    reference = st.SentenceTransformer(modules=[word, pooling, st_models.Normalize()])
    reference.save(str(tmp_path / "st"))
    want = reference.encode(TEXTS)
    ours = BiEncoder.from_pretrained(str(tmp_path / "st"))
    np.testing.assert_allclose(ours.encode(TEXTS), want, atol=ATOL)
    ours.save_pretrained(tmp_path / "exported")
    again = st.SentenceTransformer(str(tmp_path / "exported"), device="cpu")
    np.testing.assert_allclose(again.encode(TEXTS), want, atol=ATOL)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_cross_encoder_loads_and_exports(tmp_path, seed, pooling):
    torch_model = save_tiny_model(
        tmp_path / "ce", seed=seed, model_type="modernbert", head="classifier", tokenizer=True,
        classifier_pooling=pooling, initializer_range=0.5,
    )  # fmt: skip
    queries, passages = ["tides", "bees", "bread"], TEXTS
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "ce"))
    encoded = tokenizer(queries, passages, padding=True, truncation=True, return_tensors="pt")
    encoded.pop("token_type_ids", None)
    with torch.no_grad():
        want = torch_model(**encoded).logits[:, 0].numpy()
    ours = CrossEncoder.from_pretrained(str(tmp_path / "ce"))
    np.testing.assert_allclose(ours.score(queries, passages), want, atol=ATOL)
    ours.save_pretrained(tmp_path / "exported")
    again = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "exported")
    with torch.no_grad():
        np.testing.assert_allclose(again.eval()(**encoded).logits[:, 0].numpy(), want, atol=ATOL)


BPE_BASE = """
import json, sys, torch, transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
out, corpus, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
texts = [json.loads(line)["text"] for line in open(corpus)]
bpe = Tokenizer(models.BPE(unk_token="[UNK]"))
bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
bpe.decoder = decoders.ByteLevel()
special = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]
trainer = trainers.BpeTrainer(
    vocab_size=600, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
)
bpe.train_from_iterator(texts, trainer)
cls, sep = bpe.token_to_id("[CLS]"), bpe.token_to_id("[SEP]")
bpe.post_processor = processors.TemplateProcessing(
    single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
)
tok = transformers.PreTrainedTokenizerFast(
    tokenizer_object=bpe, unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
    pad_token="[PAD]", mask_token="[MASK]",
)
config = json.loads(sys.argv[4])
config.update(vocab_size=len(tok), pad_token_id=tok.pad_token_id, cls_token_id=cls,
              bos_token_id=cls, sep_token_id=sep, eos_token_id=sep)
config.pop("model_type")
torch.manual_seed(seed)
transformers.ModernBertModel(transformers.ModernBertConfig(**config)).eval().save_pretrained(out)
tok.save_pretrained(out)
"""

PYLATE_JOB = """
import json, sys, torch, numpy as np
from pylate import models
job = json.loads(open(sys.argv[1]).read())
torch.manual_seed(job["seed"])
if job.get("build"):
    model = models.ColBERT(model_name_or_path=job["path"], device="cpu", embedding_size=16,
                           query_length=16, document_length=24)
    model.save(job["save"])
else:
    model = models.ColBERT(model_name_or_path=job["path"], device="cpu")
q = model.encode(job["queries"], is_query=True)
d = model.encode(job["docs"], is_query=False)
np.savez(sys.argv[2], **{f"q{i}": x for i, x in enumerate(q)}, **{f"d{i}": x for i, x in enumerate(d)})
"""


def pylate_encode(tmp_path, job: dict, name: str) -> dict:
    return run_pylate(PYLATE_JOB, job, tmp_path, name)


def test_pylate_colbert_on_a_bpe_tokenizer_loads_and_exports(tmp_path, seed):
    """PyLate builds a ColBERT on a tiny ModernBERT with a byte-level BPE tokenizer (markers
    added as tokens "[Q] " / "[D] ", inserted after [CLS], texts tokenised alone); our encoder
    gives its query and document vectors, and PyLate reads our export back to the same ones."""
    if not PYLATE_PYTHON.exists():
        pytest.skip(f"PyLate reference venv not found at {PYLATE_PYTHON} (docs/ENCODERS.md)")
    import sys

    corpus = REPO / "lateint_jax" / "assets" / "demo_corpus.jsonl"
    config = json.dumps(tiny_config("modernbert"))
    run_python(sys.executable, BPE_BASE, tmp_path / "base", corpus, seed, config, cwd=tmp_path)
    queries, docs = ["what is the moon?", "tides"], [TEXTS[0], "x " * 40]
    job = {"seed": seed, "queries": queries, "docs": docs}
    build = {**job, "build": True, "path": str(tmp_path / "base"), "save": str(tmp_path / "pylate")}
    want = pylate_encode(tmp_path, build, "built")
    ours = ColBERT.from_pretrained(str(tmp_path / "pylate"))
    assert ours.config.framing == "pylate" and ours.config.query_token == "[Q] "
    got = [*ours.encode_queries(queries), *ours.encode_documents(docs)]
    names = [f"q{i}" for i in range(len(queries))] + [f"d{i}" for i in range(len(docs))]
    for name, vectors in zip(names, got, strict=True):
        np.testing.assert_allclose(vectors, want[name], atol=ATOL, err_msg=name)
    ours.save_pretrained(tmp_path / "exported", layout="pylate")
    again = pylate_encode(tmp_path, {**job, "path": str(tmp_path / "exported")}, "again")
    for name in names:
        np.testing.assert_allclose(again[name], want[name], atol=ATOL, err_msg=name)
