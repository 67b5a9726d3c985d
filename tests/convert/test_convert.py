"""`lateint convert` and the checkpoint layouts: round trips, name checks, atomic writes."""

import json
import os
import shutil
import stat

import jax
import numpy as np
import pytest

from lateint_jax.cli import main
from lateint_jax.commands import convert as convert_command
from lateint_jax.convert.files import is_checkpoint_folder
from lateint_jax.convert.hf_bert import read_state_dict, write_safetensors
from lateint_jax.convert.load import load_checkpoint
from lateint_jax.encoders import BiEncoder, ColBERT, CrossEncoder
from lateint_jax.errors import InputError


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


def user_files(folder):
    """A folder of the user's own files, even one with a `config.json` (not a checkpoint)."""
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    (folder / "config.json").write_text('{"project": "mine"}')
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def contents(folder):
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_existing_destination_needs_overwrite_and_leaves_no_temp_dirs(stanford_dir, tmp_path):
    dst = tmp_path / "out"
    assert main(["convert", str(stanford_dir), str(dst), "--to", "pylate"]) == 0
    assert main(["convert", str(stanford_dir), str(dst), "--to", "hf"]) == 2
    assert (dst / "1_Dense").is_dir()
    assert main(["convert", str(stanford_dir), str(dst), "--to", "hf", "--overwrite"]) == 0
    assert not (dst / "1_Dense").exists() and load_checkpoint(dst).layout == "hf"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_overwrite_refuses_a_folder_that_is_not_a_checkpoint(stanford_dir, tmp_path, capsys):
    dst = tmp_path / "mine"
    before = user_files(dst)
    assert main(["convert", str(stanford_dir), str(dst), "--to", "hf", "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert (
        f"refusing to replace {dst}" in err and "not recognised as a lateint-jax checkpoint" in err
    )
    model = BiEncoder.from_pretrained(None)
    with pytest.raises(InputError, match="refusing to replace"):
        model.save_pretrained(dst, overwrite=True)
    assert contents(dst) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


@pytest.mark.parametrize("where", ["same", "inside", "around"])
def test_convert_refuses_destination_overlapping_source(
    stanford_dir, tmp_path, monkeypatch, capsys, where
):
    def no_loading(*args, **kwargs):
        raise AssertionError("SRC was loaded before DST was checked")

    monkeypatch.setattr(convert_command, "load_checkpoint", no_loading)
    monkeypatch.setattr(convert_command.ColBERT, "from_pretrained", no_loading)
    before = contents(stanford_dir)
    dst = {
        "same": stanford_dir,
        "inside": stanford_dir / "converted",
        "around": stanford_dir.parent,
    }[where]
    relation = {"same": "is the input", "inside": "lies inside", "around": "contains"}[where]
    for target in ("hf", "stanford"):
        args = ["convert", str(stanford_dir), str(dst), "--to", target, "--overwrite"]
        assert main(args) == 2, (where, target)
        assert relation in capsys.readouterr().err, (where, target)
    assert contents(stanford_dir) == before


def cross_encoder():
    """A cross-encoder on the packaged MiniLM with a zero classifier head (no torch needed)."""
    bi = BiEncoder.from_pretrained(None)
    hidden = bi.bert_config.hidden_size
    head = {"classifier": {"kernel": np.zeros((hidden, 1), np.float32), "bias": np.zeros(1)}}
    return CrossEncoder({"bert": bi.params, "head": head}, bi.bert_config, bi.tokenizer, 128)


@pytest.fixture(scope="module")
def every_layout(stanford_dir, tmp_path_factory):
    """One folder per export layout, written by this project's exporters."""
    root = tmp_path_factory.mktemp("layouts")
    colbert = ColBERT.from_pretrained(stanford_dir)
    colbert.save_pretrained(root / "stanford", layout="stanford")
    colbert.save_pretrained(root / "pylate", layout="pylate")
    BiEncoder.from_pretrained(None).save_pretrained(root / "sentence-transformers")
    cross_encoder().save_pretrained(root / "cross-encoder")
    assert main(["convert", str(stanford_dir), str(root / "hf"), "--to", "hf"]) == 0
    return root


LAYOUTS = ["hf", "stanford", "pylate", "sentence-transformers", "cross-encoder"]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_is_recognised_and_replaced_with_overwrite(every_layout, tmp_path, layout):
    assert is_checkpoint_folder(every_layout / layout), layout
    target = tmp_path / layout
    shutil.copytree(every_layout / layout, target)
    model = BiEncoder.from_pretrained(None)
    with pytest.raises(InputError, match="already exists"):
        model.save_pretrained(target)
    model.save_pretrained(target, overwrite=True)
    assert load_checkpoint(target).layout == "sentence-transformers", layout
    assert (target / "1_Pooling").is_dir() and not (target / "artifact.metadata").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [layout]


def test_checkpoint_marker_needs_config_and_weights(every_layout, tmp_path):
    target = shutil.copytree(every_layout / "hf", tmp_path / "hf")
    (target / "model.safetensors").unlink()
    assert not is_checkpoint_folder(target)  # config.json alone: a user's folder, maybe
    target = shutil.copytree(every_layout / "hf", tmp_path / "hf2")
    (target / "config.json").write_text('{"project": "mine"}')
    assert not is_checkpoint_folder(target)


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_exported_checkpoint_gets_umask_modes(stanford_dir, tmp_path, mask):
    previous = os.umask(mask)
    try:
        ColBERT.from_pretrained(stanford_dir).save_pretrained(tmp_path / "out", layout="pylate")
    finally:
        os.umask(previous)
    out = tmp_path / "out"
    assert (out / "model.safetensors").is_file() and (
        out / "1_Dense" / "model.safetensors"
    ).is_file()
    for path in [out, *out.rglob("*")]:
        want = 0o777 & ~mask if path.is_dir() else 0o666 & ~mask
        assert stat.S_IMODE(path.stat().st_mode) == want, f"{path} umask={mask:o}"


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
