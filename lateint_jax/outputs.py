"""Where a command may write: never over its own inputs, never over what this project did not
write, and always atomically, with the modes the user's umask gives.

- `refuse_overlap(output, inputs)`: an output may not be, contain, or lie inside an input.
- `check_replaceable(path, recognise, what)`: `--overwrite` replaces only what `recognise` says
  this project wrote (an index, a checkpoint); an empty folder is always fine.
- `atomic_folder(dst, overwrite, recognise, what)`: build a folder aside (`DST.tmp-XXXX`) and
  swap it into place in one step; a crash leaves either the previous or the new folder.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from lateint_jax.errors import InputError

Recognise = Callable[[Path], bool]


def _resolved(path) -> Path:
    return Path(os.fspath(path)).expanduser().resolve()


def _overlap(output: Path, source: Path) -> str | None:
    """How output and source overlap, in words; None when they are disjoint."""
    if output == source:
        return "is"
    if output.is_relative_to(source):
        return "lies inside"
    if source.is_relative_to(output):
        return "contains"
    return None


def refuse_overlap(output, inputs: Iterable, what: str = "output") -> None:
    """Raise InputError when `output` is, contains, or lies inside any of `inputs`.

    Paths are compared after expanding `~` and resolving symlinks and relative parts. Inputs may
    be files or folders; None entries, and inputs that do not exist (hub names, say: nothing on
    disk to lose), are ignored. The output need not exist."""
    target = _resolved(output)
    for source in inputs:
        if source is None or not Path(os.fspath(source)).expanduser().exists():
            continue
        relation = _overlap(target, _resolved(source))
        if relation is not None:
            raise InputError(
                f"the {what} {output} {relation} the input {source}: writing it would destroy "
                f"the input; choose a path outside it"
            )


def _recognised(path: Path, recognise: Recognise) -> bool:
    try:
        return bool(recognise(path))
    except (OSError, ValueError):
        return False


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and next(path.iterdir(), None) is None


def _describe(path: Path) -> str:
    if path.is_symlink():
        return "a symbolic link"
    if not path.is_dir():
        return "a file"
    names = sorted(p.name for p in path.iterdir())
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    return f"a folder holding {len(names)} entries ({shown})"


def check_replaceable(path, recognise: Recognise, what: str) -> None:
    """Return when `path` may be replaced: it does not exist, is an empty folder, or
    `recognise(path)` says this project wrote it (errors while recognising count as no).
    Otherwise raise InputError naming the path, what it is, and what to do."""
    path = Path(os.fspath(path))
    if not (path.exists() or path.is_symlink()) or _is_empty_dir(path):
        return
    if not path.is_symlink() and path.is_dir() and _recognised(path, recognise):
        return
    raise InputError(
        f"refusing to replace {path}: it is {_describe(path)}, not recognised as a lateint-jax "
        f"{what}, and --overwrite replaces only an index or checkpoint this project wrote; "
        f"move or delete it yourself, or choose another path"
    )


def check_target(dst, overwrite: bool, recognise: Recognise, what: str) -> None:
    """Raise InputError unless a new `what` may be written at dst: dst does not exist, is an
    empty folder, or overwrite is set and check_replaceable allows it."""
    dst = Path(os.fspath(dst))
    if not (dst.exists() or dst.is_symlink()) or _is_empty_dir(dst):
        return
    if not overwrite:
        raise InputError(
            f"{dst} already exists (add --overwrite, or overwrite=True in Python, to replace it)"
        )
    check_replaceable(dst, recognise, what)


def umask() -> int:
    """The process umask, read without changing it where /proc allows (thread-safe there)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


def folder_mode() -> int:
    """The mode a plain `mkdir` gives: 0o777 less the umask."""
    return 0o777 & ~umask()


def file_mode() -> int:
    """The mode a plain `open(..., "w")` gives: 0o666 less the umask."""
    return 0o666 & ~umask()


def give_plain_modes(folder) -> None:
    """chmod folder and everything under it to the modes the umask gives (folder_mode,
    file_mode), whatever their writers chose (mkdtemp and safetensors make them private)."""
    folder = Path(os.fspath(folder))
    dirs, files = folder_mode(), file_mode()
    os.chmod(folder, dirs)
    for root, names, filenames in os.walk(folder):
        for name, mode in [(n, dirs) for n in names] + [(n, files) for n in filenames]:
            path = os.path.join(root, name)
            if not os.path.islink(path):  # chmod would change the link's target
                os.chmod(path, mode)


def fsync_dir(path) -> None:
    """Flush a folder's entries (new names, renames) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    result = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return result == 0


def _aside(dst: Path, tag: str) -> Path:
    """A new, empty folder beside dst named `DST.<tag>-XXXX`."""
    return Path(tempfile.mkdtemp(prefix=f"{dst.name}.{tag}-", dir=dst.parent))


def _move_into_place(new: Path, dst: Path) -> None:
    """Put folder `new` at dst, replacing what is there; `new` is gone afterwards."""
    if not dst.exists():
        os.rename(new, dst)
    elif _exchange(new, dst):
        shutil.rmtree(new)  # now holds the previous folder
    else:
        old = _aside(dst, "old")
        os.rmdir(old)
        os.rename(dst, old)
        os.rename(new, dst)
        fsync_dir(dst.parent)  # the new folder is in place before the old one goes
        shutil.rmtree(old)
        return
    fsync_dir(dst.parent)


@contextmanager
def atomic_folder(dst, overwrite: bool, recognise: Recognise, what: str) -> Iterator[Path]:
    """Yield an empty folder beside dst to fill; when the block succeeds it replaces dst in one
    step, else it is deleted and dst is untouched.

    Before anything is written, check_target refuses an existing dst unless overwrite is set and
    `recognise(dst)` says it is a `what` this project wrote (an empty folder is always fine).
    Everything in the folder gets the umask's modes (give_plain_modes). The caller fsyncs the
    files it writes; the folder and its parent are fsynced here."""
    dst = Path(os.fspath(dst))
    check_target(dst, overwrite, recognise, what)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = _aside(dst, "tmp")
    try:
        yield tmp
        give_plain_modes(tmp)
        fsync_dir(tmp)
        _move_into_place(tmp, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
