"""Files on disk: the content-addressed blob store (every image kept once, under the sha256 of its
bytes), atomic writes, and the one file cache every stage keeps its results in."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ContentStore:
    """`objects/ab/abcdef....<ext>` under a root folder; writes are atomic and idempotent."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path_for(self, sha: str, ext: str = ".jpg") -> Path:
        return self.root / "objects" / sha[:2] / f"{sha}{ext}"

    def put(self, data: bytes, ext: str = ".jpg") -> str:
        sha = sha256_bytes(data)
        path = self.path_for(sha, ext)
        if not path.exists():
            atomic_write(path, data)
        return sha

    def has(self, sha: str, ext: str = ".jpg") -> bool:
        return self.path_for(sha, ext).exists()

    def get(self, sha: str, ext: str = ".jpg") -> bytes:
        return self.path_for(sha, ext).read_bytes()


@dataclasses.dataclass(frozen=True)
class Codec:
    """How a FileCache turns values into file bytes and back."""

    suffix: str
    encode: Callable[[Any], bytes]
    decode: Callable[[bytes], Any]


def _npy_bytes(array) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(array, np.float32))
    return buf.getvalue()


JSON = Codec(".json", lambda value: json.dumps(value).encode(), json.loads)
NPY = Codec(".npy", _npy_bytes, lambda data: np.load(io.BytesIO(data)))  # float32 arrays


class FileCache:
    """One file per key under a folder: `<dir>/<key[:2]>/<key><suffix>` (`fanout`), else `<dir>/<key><suffix>`.
    Keys are content hashes (callers hash anything else). Writes are atomic; a file that is absent or
    cannot be decoded (left half-written by an old crash) is a miss, so the value is computed again."""

    def __init__(self, folder: str | Path, codec: Codec, fanout: bool = True):
        self.dir, self.codec, self.fanout = Path(folder), codec, fanout

    def path(self, key: str) -> Path:
        return (self.dir / key[:2] if self.fanout else self.dir) / f"{key}{self.codec.suffix}"

    def get(self, key: str):
        try:
            return self.codec.decode(self.path(key).read_bytes())
        except (OSError, ValueError, TypeError, KeyError, EOFError):
            return None

    def put(self, key: str, value) -> None:
        atomic_write(self.path(key), self.codec.encode(value))
