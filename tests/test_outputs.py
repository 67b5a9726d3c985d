"""lateint_jax.outputs: outputs never overlap inputs, --overwrite replaces only what this project
wrote, folders are swapped in atomically with the modes the umask gives."""

import os
import stat

import numpy as np
import pytest

from lateint_jax import outputs
from lateint_jax.errors import InputError
from lateint_jax.outputs import atomic_folder, check_replaceable, check_target, refuse_overlap

SEEDS = range(5)


def ours(path):
    """The recogniser these tests use: a folder with a `MARK` file is one we wrote."""
    return (path / "MARK").is_file()


def user_folder(path):
    path.mkdir(parents=True)
    (path / "notes.txt").write_text("my own work")
    (path / "sub").mkdir()
    (path / "sub" / "data.csv").write_text("a,b\n")
    return path


def snapshot(path):
    return {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*") if p.is_file()}


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it afterwards."""
    previous = os.umask(0o022)
    os.umask(previous)

    def set_mask(mask):
        os.umask(mask)

    yield set_mask
    os.umask(previous)


# -- refuse_overlap


def test_output_equal_to_input_is_refused(tmp_path):
    data = user_folder(tmp_path / "mydata")
    with pytest.raises(InputError, match=r"output .*mydata is the input"):
        refuse_overlap(data, [data])
    with pytest.raises(InputError, match="is the input"):  # relative spelling, same folder
        refuse_overlap(tmp_path / "mydata" / "sub" / "..", [str(data)])


def test_output_inside_input_is_refused(tmp_path):
    data = user_folder(tmp_path / "mydata")
    with pytest.raises(InputError, match="lies inside the input"):
        refuse_overlap(data / "index", [data], what="index folder")


def test_input_inside_output_is_refused(tmp_path):
    data = user_folder(tmp_path / "mydata")
    with pytest.raises(InputError, match="contains the input"):
        refuse_overlap(tmp_path, [data / "notes.txt"])


def test_symlinks_are_resolved(tmp_path):
    data = user_folder(tmp_path / "mydata")
    (tmp_path / "alias").symlink_to(data, target_is_directory=True)
    with pytest.raises(InputError, match="is the input"):
        refuse_overlap(tmp_path / "alias", [data])
    with pytest.raises(InputError, match="lies inside the input"):
        refuse_overlap(data / "out", [tmp_path / "alias"])


def test_disjoint_none_and_missing_inputs_pass(tmp_path):
    data = user_folder(tmp_path / "mydata")
    refuse_overlap(tmp_path / "mydata-index", [data, None, data / "notes.txt"])
    refuse_overlap(tmp_path / "sibling", [data / "sub"])
    refuse_overlap(tmp_path, ["no/such-hub-model"])  # not on disk: nothing to destroy


@pytest.mark.parametrize("seed", SEEDS)
def test_overlap_matches_path_prefixes_on_random_trees(tmp_path, seed):
    """Random output/input pairs among the folders of a random tree: refused exactly when one
    path's components are a prefix of the other's."""
    rng = np.random.default_rng(seed)
    folders = [()]
    for _ in range(12):
        parent = folders[rng.integers(len(folders))]
        folders.append((*parent, f"d{len(folders)}"))
    for parts in folders[1:]:
        tmp_path.joinpath(*parts).mkdir()
    for _ in range(40):
        out, inp = (folders[i] for i in rng.integers(len(folders), size=2))
        overlapping = out[: len(inp)] == inp or inp[: len(out)] == out
        try:
            refuse_overlap(tmp_path.joinpath(*out), [tmp_path.joinpath(*inp)])
            refused = False
        except InputError:
            refused = True
        assert refused == overlapping, f"seed={seed}: output {out}, input {inp}"


# -- check_replaceable / check_target


def test_user_folder_is_refused_and_kept(tmp_path):
    data = user_folder(tmp_path / "mydata")
    before = snapshot(data)
    with pytest.raises(InputError, match=r"refusing to replace .*mydata: it is a folder"):
        check_replaceable(data, ours, "index")
    assert snapshot(data) == before


def test_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match="it is a file"):
        check_replaceable(tmp_path / "f", ours, "checkpoint")


def test_ours_missing_and_empty_are_replaceable(tmp_path):
    (tmp_path / "ours").mkdir()
    (tmp_path / "ours" / "MARK").write_text("")
    check_replaceable(tmp_path / "ours", ours, "index")
    check_replaceable(tmp_path / "missing", ours, "index")
    (tmp_path / "empty").mkdir()
    check_replaceable(tmp_path / "empty", ours, "index")


def test_a_recogniser_that_fails_means_no(tmp_path):
    def broken(path):
        raise OSError("unreadable")

    data = user_folder(tmp_path / "mydata")
    with pytest.raises(InputError, match="refusing to replace"):
        check_replaceable(data, broken, "index")


def test_existing_needs_overwrite(tmp_path):
    (tmp_path / "ours").mkdir()
    (tmp_path / "ours" / "MARK").write_text("")
    with pytest.raises(InputError, match="already exists"):
        check_target(tmp_path / "ours", False, ours, "index")
    check_target(tmp_path / "ours", True, ours, "index")
    user_folder(tmp_path / "mydata")
    with pytest.raises(InputError, match="refusing to replace"):
        check_target(tmp_path / "mydata", True, ours, "index")


# -- atomic_folder


def fill(folder, text):
    (folder / "MARK").write_text(text)
    (folder / "inner").mkdir()
    (folder / "inner" / "x.bin").write_bytes(text.encode())


@pytest.mark.parametrize("exchange", [True, False])
def test_atomic_folder_replaces_ours(tmp_path, monkeypatch, exchange):
    if not exchange:  # the rename-aside path used where renameat2 is missing
        monkeypatch.setattr(outputs, "_exchange", lambda a, b: False)
    target = tmp_path / "out"
    with atomic_folder(target, False, ours, "index") as tmp:
        fill(tmp, "first")
    with atomic_folder(target, True, ours, "index") as tmp:
        fill(tmp, "second")
    assert (target / "MARK").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_atomic_folder_refuses_user_folder_before_the_block(tmp_path):
    data = user_folder(tmp_path / "mydata")
    before = snapshot(data)
    ran = []
    with (
        pytest.raises(InputError, match="refusing to replace"),
        atomic_folder(data, True, ours, "checkpoint") as tmp,
    ):
        ran.append(tmp)
    assert ran == [] and snapshot(data) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mydata"]


def test_atomic_folder_failure_keeps_previous(tmp_path):
    target = tmp_path / "out"
    with atomic_folder(target, False, ours, "index") as tmp:
        fill(tmp, "first")
    with (
        pytest.raises(RuntimeError, match="boom"),
        atomic_folder(target, True, ours, "index") as tmp,
    ):
        fill(tmp, "second")
        raise RuntimeError("boom")
    assert (target / "MARK").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002, 0o077])
def test_atomic_folder_gives_umask_modes(tmp_path, umask, mask):
    umask(mask)
    target = tmp_path / "out"
    with atomic_folder(target, False, ours, "index") as tmp:
        fill(tmp, "x")
        os.chmod(tmp / "inner" / "x.bin", 0o600)  # as safetensors writes its files
        os.chmod(tmp / "inner", 0o700)
    for path in [target, target / "inner"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o777 & ~mask, f"{path} umask={mask:o}"
    for path in [target / "MARK", target / "inner" / "x.bin"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask, f"{path} umask={mask:o}"


def test_umask_is_read_without_changing_it(umask):
    umask(0o027)
    assert outputs.umask() == 0o027
    assert outputs.umask() == 0o027
