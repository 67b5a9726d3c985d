"""`lateint convert` and the checkpoint layouts: round trips, name checks, atomic writes."""

import json

import jax
import numpy as np
import pytest

from lateint_jax.cli import main
from lateint_jax.convert.hf_bert import read_state_dict, write_safetensors
from lateint_jax.convert.load import load_checkpoint
from lateint_jax.encoders import BiEncoder, ColBERT


def assert_trees_equal(a, b):
    jax.tree.map(np.testing.assert_array_equal, a, b)


@pytest.fixture(scope="module")
def stanford_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("conv") / "stanford"
    assert main(["convert", "default", str(path), "--to", "stanford", "--dim", "96"]) == 0
    return path


def test_default_to_stanford_to_pylate_and_back_is_bit_exact(stanford_dir, tmp_path):
    ckpt = load_checkpoint(stanford_dir)
    assert ckpt.layout == "stanford" and ckpt.linear["kernel"].shape == (384, 96)
    metadata = json.loads((stanford_dir / "artifact.metadata").read_text())
    assert metadata["query_token_id"] == "[unused0]" and metadata["dim"] == 96
    assert main(["convert", str(stanford_dir), str(tmp_path / "pylate"), "--to", "pylate"]) == 0
    assert load_checkpoint(tmp_path / "pylate").layout == "pylate"
    assert (
        main(["convert", str(tmp_path / "pylate"), str(tmp_path / "back"), "--to", "stanford"]) == 0
    )
    original, back = read_state_dict(stanford_dir), read_state_dict(tmp_path / "back")
    assert set(original) == set(back)
    for name in original:
        np.testing.assert_array_equal(original[name], back[name], err_msg=name)
    a, b = ColBERT.from_pretrained(stanford_dir), ColBERT.from_pretrained(tmp_path / "back")
    assert a.config == b.config
    assert_trees_equal(a.params, b.params)


def test_hf_and_sentence_transformers_targets(stanford_dir, tmp_path):
    assert main(["convert", str(stanford_dir), str(tmp_path / "hf"), "--to", "hf"]) == 0
    hf = load_checkpoint(tmp_path / "hf")
    assert hf.layout == "hf" and hf.linear is None
    assert_trees_equal(hf.bert, load_checkpoint(stanford_dir).bert)
    assert main(["convert", "default", str(tmp_path / "st"), "--to", "sentence-transformers"]) == 0
    assert_trees_equal(
        BiEncoder.from_pretrained(tmp_path / "st").params, BiEncoder.from_pretrained(None).params
    )


def test_errors_are_one_line_with_exit_code_2(stanford_dir, tmp_path, capsys):
    assert main(["convert", "default", str(tmp_path / "x"), "--to", "cross-encoder"]) == 2
    assert "is not a cross-encoder" in capsys.readouterr().err
    assert (
        main(["convert", "default", str(tmp_path / "x"), "--to", "stanford", "--kind", "biencoder"])
        == 2
    )
    assert "writes a colbert, not a biencoder" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    assert main(["convert", str(tmp_path / "missing"), str(tmp_path / "y"), "--to", "hf"]) == 2
    assert "no checkpoint directory" in capsys.readouterr().err


def test_existing_destination_needs_overwrite_and_leaves_no_temp_dirs(stanford_dir, tmp_path):
    dst = tmp_path / "out"
    dst.mkdir()
    (dst / "keep.txt").write_text("mine")
    assert main(["convert", str(stanford_dir), str(dst), "--to", "hf"]) == 2
    assert (dst / "keep.txt").read_text() == "mine"
    assert main(["convert", str(stanford_dir), str(dst), "--to", "hf", "--overwrite"]) == 0
    assert not (dst / "keep.txt").exists() and (dst / "model.safetensors").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_legacy_layernorm_names_and_sharded_safetensors(stanford_dir, tmp_path):
    state = read_state_dict(stanford_dir)
    legacy = {
        k.replace("LayerNorm.weight", "LayerNorm.gamma").replace(
            "LayerNorm.bias", "LayerNorm.beta"
        ): v
        for k, v in state.items()
    }
    names = sorted(legacy)
    half = len(names) // 2
    shards = {
        "model-00001-of-00002.safetensors": names[:half],
        "model-00002-of-00002.safetensors": names[half:],
    }
    for file, keys in shards.items():
        write_safetensors({k: legacy[k] for k in keys}, tmp_path / file)
    index = {"weight_map": {k: f for f, keys in shards.items() for k in keys}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    for name in ("config.json", "artifact.metadata", "tokenizer.json", "tokenizer_config.json"):
        (tmp_path / name).write_bytes((stanford_dir / name).read_bytes())
    a, b = ColBERT.from_pretrained(stanford_dir), ColBERT.from_pretrained(tmp_path)
    assert_trees_equal(a.params, b.params)
