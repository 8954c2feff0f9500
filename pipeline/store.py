"""Content-addressed blob store: every image is kept once, under the sha256 of its bytes."""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


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
