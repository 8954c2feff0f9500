"""Files of a public GitHub repository at a recorded commit: from a local git mirror when there is one
(`<mirror-root>/<owner>+<name>/repo`, as the `fetch` tool leaves them), else from GitHub's tarball."""

from __future__ import annotations

import argparse
import json
import subprocess
import tarfile
import urllib.request
from collections.abc import Callable
from pathlib import Path

MIRROR_ROOT = Path("/work/.mirror")


def extract(
    repo: str,
    commit: str,
    paths: list[str],
    into: Path,
    mirror_root: Path = MIRROR_ROOT,
    wanted: Callable[[str], bool] = lambda path: True,
) -> list[str]:
    """The repository's files under `paths` (files or folders) at `commit` for which `wanted(path)` is
    true, written under `into`. Returns the paths the mirror lacks (it may leave out its largest files)."""
    into.mkdir(parents=True, exist_ok=True)
    mirror = mirror_root / repo.replace("/", "+") / "repo"
    if mirror.is_dir():
        return _from_mirror(mirror, commit, paths, into, wanted)
    url = f"https://codeload.github.com/{repo}/tar.gz/{commit}"
    with urllib.request.urlopen(url, timeout=600) as r, tarfile.open(fileobj=r, mode="r|gz") as t:
        for member in t:  # the tarball's top folder is <repo>-<commit>/
            _, _, rel = member.name.partition("/")
            inside = any(rel == p or rel.startswith(p.rstrip("/") + "/") for p in paths)
            if member.isfile() and inside and wanted(rel):
                member.name = rel
                t.extract(member, into, filter="data")
    return []


def _from_mirror(mirror: Path, commit: str, paths: list[str], into: Path, wanted: Callable[[str], bool]) -> list[str]:
    listing = subprocess.run(
        ["git", "-C", str(mirror), "ls-tree", "-r", "-z", commit, "--", *paths], check=True, capture_output=True
    ).stdout.split(b"\0")
    blobs = []
    for line in filter(None, listing):
        meta, path = line.decode().split("\t", 1)
        _, kind, sha = meta.split()
        if kind == "blob" and wanted(path):
            blobs.append((sha, path))
    missing = []
    with subprocess.Popen(
        ["git", "-C", str(mirror), "cat-file", "--batch"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    ) as git:
        for sha, path in blobs:
            git.stdin.write(f"{sha}\n".encode())
            git.stdin.flush()
            header = git.stdout.readline().split()
            if header[1] == b"missing":
                missing.append(path)
                continue
            data = git.stdout.read(int(header[2]))
            git.stdout.read(1)  # the newline after each object
            target = into / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        git.stdin.close()
    return missing


ROLE_ORDER = {"test": 0, "tune": 1, "train": 2}  # rebuilt in this order: test pictures stay whole


def rebuild_command(
    argv,
    description: str,
    default_cache: Path,
    check_split: Callable[..., None],
    rebuild: Callable[[dict, Path, Path], dict],
    entries: Callable[[], list[dict]],
) -> int:
    """The command line of a rebuild script: check the split's names, rebuild `entries()` (the sources it
    copies) in ROLE_ORDER with `rebuild(entry, mirror_root, cache)`, then check the split's pictures."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--mirror-root", type=Path, default=MIRROR_ROOT)
    p.add_argument("--cache", type=Path, default=default_cache)
    p.add_argument("--only", action="append", help="rebuild only this source (repeatable)")
    args = p.parse_args(argv)
    check_split(args.cache, images=False)
    for entry in sorted(entries(), key=lambda e: ROLE_ORDER[e["role"]]):
        if args.only and entry["name"] not in args.only:
            continue
        summary = rebuild(entry, args.mirror_root, args.cache)
        print(f"{entry['name']:<30} {entry['role']:<6} {json.dumps(summary)}", flush=True)
    if not args.only:
        check_split(args.cache)
        print("source split checked: no source, repository or picture in two roles")
    return 0
