"""Files of a public GitHub repository at a recorded commit: from a local git mirror when there is one
(`<mirror-root>/<owner>+<name>/repo`, as the `fetch` tool leaves them), else from GitHub's tarball."""

from __future__ import annotations

import io
import subprocess
import tarfile
import urllib.request
from pathlib import Path

MIRROR_ROOT = Path("/work/.mirror")


def extract(repo: str, commit: str, paths: list[str], into: Path, mirror_root: Path = MIRROR_ROOT) -> Path:
    """The repository's files under `paths` (files or folders) at `commit`, written under `into`."""
    into.mkdir(parents=True, exist_ok=True)
    mirror = mirror_root / repo.replace("/", "+") / "repo"
    if mirror.is_dir():
        tar = subprocess.run(
            ["git", "-C", str(mirror), "archive", "--format=tar", commit, "--", *paths], check=True, capture_output=True
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(tar)) as t:
            t.extractall(into, filter="data")
        return into
    url = f"https://codeload.github.com/{repo}/tar.gz/{commit}"
    with urllib.request.urlopen(url, timeout=600) as r, tarfile.open(fileobj=r, mode="r|gz") as t:
        for member in t:  # the tarball's top folder is <repo>-<commit>/
            _, _, rel = member.name.partition("/")
            if member.isfile() and any(rel == p or rel.startswith(p.rstrip("/") + "/") for p in paths):
                member.name = rel
                t.extract(member, into, filter="data")
    return into
