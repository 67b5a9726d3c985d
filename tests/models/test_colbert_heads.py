"""ColBERT projection heads of several Dense layers (PyLate 1.6's `1_Dense`, `2_Dense`, ...):
parity with PyLate, which builds the model itself, and refusals that name the bad field.

PyLate runs in its own venv (docs/ENCODERS.md), as a subprocess; the parity test skips without it.
"""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from lateint_jax.encoders import ColBERT
from lateint_jax.errors import CheckpointError, InputError
from lateint_jax.models.projection import DenseLayer
from tests.reference_python import run_pylate
from tests.tiny_models import save_tiny_model

ATOL = 1e-4  # float32 both sides, unit vectors: only the summation order differs
QUERIES = ["what is a cat?", "", "a very long query with many many words that surely goes past"]
DOCS = ["Cats are small, furry animals; they purr!", "", "word, " * 30]

# PyLate builds a ColBERT on the tiny base with a three-layer head: bias + Tanh (32 -> 24),
# no bias with a projected residual (24 -> 16), bias + GELU with the identity residual (16 -> 16).
PYLATE_JOB = """
import json, sys, torch, numpy as np
from pylate import models
from sentence_transformers.models import Transformer
job = json.loads(open(sys.argv[1]).read())
torch.manual_seed(job["seed"])
if job.get("build"):
    layers = [
        models.Dense(32, 24, bias=True, activation_function=torch.nn.Tanh()),
        models.Dense(24, 16, bias=False, use_residual=True),
        models.Dense(16, 16, bias=True, activation_function=torch.nn.GELU(), use_residual=True),
    ]
    for layer in layers:  # non-zero biases, so a dropped bias shows
        if layer.linear.bias is not None:
            torch.nn.init.normal_(layer.linear.bias, std=0.5)
    base = Transformer(job["path"], max_seq_length=24)
    model = models.ColBERT(modules=[base, *layers], device="cpu", query_length=12,
                           document_length=24)
    model.save(job["save"])
else:
    model = models.ColBERT(model_name_or_path=job["path"], device="cpu")
q = model.encode(job["queries"], is_query=True)
d = model.encode(job["docs"], is_query=False)
np.savez(sys.argv[2], **{f"q{i}": x for i, x in enumerate(q)}, **{f"d{i}": x for i, x in enumerate(d)})
"""


def pylate_encode(tmp_path: Path, job: dict, name: str) -> dict:
    return run_pylate(PYLATE_JOB, job, tmp_path, name)


@pytest.fixture(scope="module")
def pylate_built(tmp_path_factory):
    """(folder of PyLate's three-layer ColBERT, PyLate's vectors for QUERIES and DOCS)."""
    tmp = tmp_path_factory.mktemp("heads")
    seed = int(os.environ["LATEINT_TEST_SEED"])
    save_tiny_model(tmp / "base", seed=seed, tokenizer=True)
    job = {"seed": seed, "queries": QUERIES, "docs": DOCS}
    want = pylate_encode(
        tmp, {**job, "build": True, "path": str(tmp / "base"), "save": str(tmp / "pylate")}, "b"
    )
    return tmp / "pylate", want, job


def names() -> list[str]:
    return [f"q{i}" for i in range(len(QUERIES))] + [f"d{i}" for i in range(len(DOCS))]


def test_multi_layer_head_matches_pylate_and_round_trips(pylate_built, tmp_path, seed):
    folder, want, job = pylate_built
    ours = ColBERT.from_pretrained(folder)
    assert ours.head == (
        DenseLayer("Tanh"),
        DenseLayer("Identity", residual=True),
        DenseLayer("GELU", residual=True),
    ), f"seed={seed}"
    assert [sorted(layer) for layer in ours.params["linear"]] == [
        ["bias", "kernel"],
        ["kernel", "residual"],
        ["bias", "kernel"],
    ]
    assert ours.config.dim == 16 and ours.config.query_maxlen == 12
    got = [*ours.encode_queries(QUERIES), *ours.encode_documents(DOCS)]
    for name, vectors in zip(names(), got, strict=True):
        assert vectors.shape == want[name].shape, (name, f"seed={seed}")
        np.testing.assert_allclose(vectors, want[name], atol=ATOL, err_msg=f"{name} seed={seed}")
    ours.save_pretrained(tmp_path / "exported", layout="pylate")
    again = pylate_encode(tmp_path, {**job, "path": str(tmp_path / "exported")}, "again")
    for name in names():
        np.testing.assert_allclose(
            again[name], want[name], atol=ATOL, err_msg=f"{name} seed={seed}"
        )
    reloaded = ColBERT.from_pretrained(tmp_path / "exported")
    assert reloaded.head == ours.head and reloaded.config == ours.config
    for a, b in zip(reloaded.params["linear"], ours.params["linear"], strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def _edit_dense(folder: Path, name: str, **changes) -> None:
    path = folder / name / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_unsupported_dense_options_name_the_field(pylate_built, tmp_path):
    folder, _, _ = pylate_built
    model = ColBERT.from_pretrained(folder)
    cases = [
        ("2_Dense", {"dropout": 0.1}, r"unsupported Dense field\(s\) \['dropout'\]"),
        (
            "1_Dense",
            {"activation_function": "torch.nn.modules.activation.Softmax"},
            "activation_function 'torch.nn.modules.activation.Softmax' is not supported",
        ),
        ("2_Dense", {"in_features": 30}, "in_features is 30 but the layer before gives 24"),
        ("1_Dense", {"bias": False}, "tensors this model does not use: linear.bias"),
        ("3_Dense", {"use_residual": False, "out_features": 8}, r"3_Dense/linear.weight has shape"),
    ]
    for i, (layer, changes, message) in enumerate(cases):
        target = tmp_path / f"case{i}"
        model.save_pretrained(target, layout="pylate")
        _edit_dense(target, layer, **changes)
        with pytest.raises(CheckpointError, match=message):
            ColBERT.from_pretrained(target)


def test_colbert_ai_layout_refuses_a_multi_layer_head(pylate_built, tmp_path):
    model = ColBERT.from_pretrained(pylate_built[0])
    with pytest.raises(InputError, match="3 Dense layer"):
        model.save_pretrained(tmp_path / "stanford", layout="stanford")
    assert not (tmp_path / "stanford").exists()
