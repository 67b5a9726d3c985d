"""What a streaming build_index keeps on disk while it runs, so that a killed build resumes where
it stopped. It lives in a folder beside the target (`INDEX_DIR.build`; a temporary folder for an
in-memory build) and is deleted once the index is saved.

    manifest.json          the settings fingerprint, D, and per chunk: its documents, tokens, a
                           digest of its ids, and which steps are done (spilled, compressed);
                           whether the input ended (every chunk is known)
    lengths-00000.npy      chunk 0's token counts [N_k] int64
    spill-00000.npy        chunk 0's token vectors [M_k, D] float32 (one-shot input only)
    codec.npz              centroids, bucket cutoffs and bucket weights, once trained
    ids.json, sample.npy   one process of a multi-process build (index/distributed_build.py):
                           its documents' ids, and its rows of the k-means sample
    compressed-00000.npz   chunk 0's codes [M_k] int32 and residuals [M_k, W] uint8, each
                           document's tokens sorted by code (centroid ids before relabelling)

Every file is written aside, fsynced and renamed into place, and the manifest is rewritten the
same way after the file it records: after a kill at any instant the manifest names only whole
files. A full disk raises DiskFullError naming the file; the state written so far is kept.

Shapes: N_k documents and M_k token vectors of chunk k, D embedding dim, W = D * nbits / 8 packed bytes.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from lateint_jax.errors import DiskFullError, InputError
from lateint_jax.outputs import fsync_dir

STATE_VERSION = 1
MANIFEST_FILE = "manifest.json"


def state_dir_for(index_dir) -> Path:
    """The build-state folder of a target index folder: INDEX_DIR.build beside it."""
    index_dir = Path(os.fspath(index_dir)).expanduser()
    return index_dir.with_name(index_dir.name + ".build")


def finished_documents(index_dir) -> int:
    """How many leading documents a resumed build into index_dir counts off its input without
    reading their vectors (those of the chunks its manifest records); 0 when there is no state."""
    return finished_documents_in(state_dir_for(index_dir))


def finished_documents_in(folder: Path) -> int:
    """finished_documents for the build-state folder itself."""
    try:
        manifest = _read_manifest(Path(folder))
    except InputError:
        return 0  # build_index reports it
    return sum(record["docs"] for record in (manifest or {}).get("chunks", []))


def ids_digest(ids: list[str]) -> str:
    """sha256 of a chunk's ids, to check that a resumed input is the same documents."""
    digest = hashlib.sha256()
    for doc_id in ids:
        digest.update(doc_id.encode("utf-8") + b"\0")
    return digest.hexdigest()


def _disk_error(err: OSError, path: Path) -> OSError:
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(
            f"no space left on the device while writing {path}; free some space and rerun with "
            f"resume=True (`--resume`): the finished chunks in {path.parent} are kept"
        )
    return err


def write_atomically(path: Path, write) -> None:
    """write(handle) fills `path` through a temporary file that is fsynced, then renamed."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise _disk_error(err, path) from err


class BuildState:
    """The build-state folder: the manifest (a dict kept in memory and rewritten on every
    change) and the chunk files it records."""

    def __init__(self, folder: Path, manifest: dict, temporary: bool):
        self.folder, self.manifest, self.temporary = folder, manifest, temporary

    @classmethod
    def open(cls, index_dir, fingerprint: dict, resume: bool) -> BuildState:
        """The state for a build into index_dir (None: a temporary folder, never resumed).
        resume=True continues the state found there (InputError when its fingerprint differs);
        otherwise any previous state is discarded."""
        if index_dir is None:
            if resume:
                raise InputError("resume=True needs an index_dir (where the build state lives)")
            folder = Path(tempfile.mkdtemp(prefix="lateint-build-"))
            return cls(folder, _fresh_manifest(fingerprint), temporary=True)
        return cls.open_folder(state_dir_for(index_dir), fingerprint, resume)

    @classmethod
    def open_folder(cls, folder: Path, fingerprint: dict, resume: bool) -> BuildState:
        """`open` for the state folder itself (a multi-process build keeps one per process)."""
        previous = _read_manifest(folder)
        if resume and previous is not None:
            _check_fingerprint(folder, previous, fingerprint)
            return cls(folder, previous, temporary=False)
        if folder.exists():
            shutil.rmtree(folder)  # _read_manifest refused a folder that is not ours
        folder.mkdir(parents=True)
        state = cls(folder, _fresh_manifest(fingerprint), temporary=False)
        state.save_manifest()
        return state

    @classmethod
    def existing(cls, folder: Path) -> BuildState:
        """The state a build left in `folder`, to read (InputError when there is none)."""
        manifest = _read_manifest(Path(folder))
        if manifest is None:
            raise InputError(f"no build state in {folder}")
        return cls(Path(folder), manifest, temporary=False)

    # -- the manifest
    def save_manifest(self) -> None:
        data = json.dumps(self.manifest, indent=1).encode("utf-8")
        write_atomically(self.folder / MANIFEST_FILE, lambda f: f.write(data))

    @property
    def chunks(self) -> list[dict]:
        return self.manifest["chunks"]

    def record_chunk(self, ids: list[str], tokens: int, spilled: bool) -> None:
        self.chunks.append(
            {
                "docs": len(ids),
                "tokens": int(tokens),
                "first_id": ids[0],
                "ids_sha256": ids_digest(ids),
                "spilled": spilled,
                "compressed": False,
            }
        )
        self.save_manifest()

    # -- chunk files
    def spill_path(self, chunk: int) -> Path:
        return self.folder / f"spill-{chunk:05d}.npy"

    def compressed_path(self, chunk: int) -> Path:
        return self.folder / f"compressed-{chunk:05d}.npz"

    def write_spill(self, chunk: int, vectors: np.ndarray) -> None:
        _write_array(self.spill_path(chunk), np.ascontiguousarray(vectors, np.float32))

    def lengths_path(self, chunk: int) -> Path:
        return self.folder / f"lengths-{chunk:05d}.npy"

    def write_lengths(self, chunk: int, lengths: np.ndarray) -> None:
        _write_array(self.lengths_path(chunk), np.asarray(lengths, np.int64))

    def read_lengths(self, chunk: int) -> np.ndarray:
        return np.load(self.lengths_path(chunk), allow_pickle=False)

    def read_spill(self, chunk: int) -> np.ndarray:
        """Chunk `chunk`'s vectors [M_k, D] float32, memory-mapped (read on demand)."""
        return np.load(self.spill_path(chunk), mmap_mode="r", allow_pickle=False)

    def write_compressed(self, chunk: int, codes: np.ndarray, residuals: np.ndarray) -> None:
        write_atomically(
            self.compressed_path(chunk),
            lambda f: np.savez(f, codes=codes, residuals=residuals),
        )
        self.chunks[chunk]["compressed"] = True
        self.save_manifest()
        if self.chunks[chunk]["spilled"]:
            self.spill_path(chunk).unlink(missing_ok=True)  # compressed: no longer needed

    def read_compressed(self, chunk: int) -> tuple[np.ndarray, np.ndarray]:
        with np.load(self.compressed_path(chunk), allow_pickle=False) as saved:
            return saved["codes"], saved["residuals"]

    def write_codec(self, centroids, cutoffs, weights) -> None:
        write_atomically(
            self.folder / "codec.npz",
            lambda f: np.savez(f, centroids=centroids, cutoffs=cutoffs, weights=weights),
        )
        self.manifest["codec"] = True
        self.save_manifest()

    def read_codec(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with np.load(self.folder / "codec.npz", allow_pickle=False) as saved:
            return saved["centroids"], saved["cutoffs"], saved["weights"]

    def write_ids(self, ids: list[str]) -> None:
        data = json.dumps(ids, ensure_ascii=False).encode("utf-8")
        write_atomically(self.folder / "ids.json", lambda f: f.write(data))

    def read_ids(self) -> list[str]:
        return json.loads((self.folder / "ids.json").read_text(encoding="utf-8"))

    def write_sample(self, vectors: np.ndarray) -> None:
        _write_array(self.folder / "sample.npy", np.ascontiguousarray(vectors, np.float32))

    def read_sample(self) -> np.ndarray:
        return np.load(self.folder / "sample.npy", allow_pickle=False)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _fresh_manifest(fingerprint: dict) -> dict:
    fresh = {"state_version": STATE_VERSION, "fingerprint": fingerprint, "dim": None}
    return fresh | {"chunks": [], "input_complete": False, "codec": False}


def _read_manifest(folder: Path) -> dict | None:
    """The manifest of a previous build in `folder`; None when there is none. A folder that is
    there but holds no build state of ours is refused (it is never deleted)."""
    if not folder.exists():
        return None
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        manifest = None
    except (OSError, ValueError):
        manifest = {}
    if isinstance(manifest, dict) and manifest.get("state_version") == STATE_VERSION:
        return manifest
    if manifest is None and folder.is_dir() and next(folder.iterdir(), None) is None:
        return None
    raise InputError(
        f"{folder} exists but is not a lateint build state; move or delete it (index_dir's build "
        f"keeps its resumable state there)"
    )


def _check_fingerprint(folder: Path, manifest: dict, fingerprint: dict) -> None:
    recorded = manifest.get("fingerprint", {})
    changed = sorted(k for k in {*recorded, *fingerprint} if recorded.get(k) != fingerprint.get(k))
    if changed:
        details = ", ".join(
            f"{k}: {recorded.get(k)!r} then, {fingerprint.get(k)!r} now" for k in changed
        )
        raise InputError(
            f"cannot resume the build in {folder}: its settings differ ({details}); rerun with "
            f"the same settings, or without resume to start over"
        )


def _write_array(path: Path, array: np.ndarray) -> None:
    """One .npy file, written atomically."""
    write_atomically(path, lambda f: np.lib.format.write_array(f, array, allow_pickle=False))
