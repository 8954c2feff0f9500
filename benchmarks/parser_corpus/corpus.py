"""The parser corpus: real saved pages (in a git-ignored cache), their answer keys and the split.

`manifest/*.json` says where each page came from (repository, commit, path, licence, sha256);
`keys/<id>.json` says what the page holds, written by reading it; `split.json` lists the pages set
aside at random ("holdout") as each batch arrived, before any parser change could see them; their
scores are looked at only at the end.

    python benchmarks/parser_corpus/corpus.py rebuild [--mirror-root DIR] [--cache DIR]
    python benchmarks/parser_corpus/corpus.py split --seed N FAMILY...   # each new batch, on arrival

`rebuild` takes each page from a local git mirror of its repository (`<mirror-root>/<owner>+<name>/repo`)
when there is one, else from raw.githubusercontent.com at the recorded commit, and checks its sha256.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DEFAULT_CACHE = ROOT / ".cache" / "parser_corpus"
SPLIT_FILE = HERE / "split.json"


def manifest() -> list[dict]:
    """Every page's manifest entry, by id order."""
    entries = [e for f in sorted((HERE / "manifest").glob("*.json")) for e in json.loads(f.read_text())]
    ids = [e["id"] for e in entries]
    if len(ids) != len(set(ids)):
        raise SystemExit(f"duplicate page ids: {sorted({i for i in ids if ids.count(i) > 1})}")
    return sorted(entries, key=lambda e: e["id"])


def key(page_id: str) -> dict:
    return json.loads((HERE / "keys" / f"{page_id}.json").read_text())


def page_file(entry: dict, cache: Path = DEFAULT_CACHE) -> Path:
    suffix = ".json" if entry["kind"] == "api" or entry["path"].endswith(".json") else ".html"
    return cache / f"{entry['id']}{suffix}"


def split() -> dict[str, str]:
    """page id -> "dev" | "holdout"."""
    return json.loads(SPLIT_FILE.read_text())["pages"] if SPLIT_FILE.exists() else {}


def _from_shared(entry: dict) -> bytes | None:
    """Pages the shared data folder already holds (`shared_path`), read from there."""
    shared = Path(os.environ.get("TOONFACE_SHARED", ROOT.parent / "shared"))
    path = shared / entry["shared_path"] if entry.get("shared_path") else None
    return path.read_bytes() if path is not None and path.is_file() else None


def _from_mirror(entry: dict, mirror_root: Path) -> bytes | None:
    git_dir = mirror_root / entry["repo"].replace("/", "+") / "repo"
    if not git_dir.is_dir():
        return None
    out = subprocess.run(
        ["git", "--git-dir", str(git_dir), "show", f"{entry['commit']}:{entry['path']}"], capture_output=True
    )
    return out.stdout if out.returncode == 0 else None


def _from_github(entry: dict) -> bytes:
    url = f"https://raw.githubusercontent.com/{entry['repo']}/{entry['commit']}/{entry['path']}"
    with urllib.request.urlopen(url, timeout=60) as response:
        return response.read()


def _extracted(entry: dict, data: bytes) -> bytes:
    """The page inside a repository file: one recorded response of a recordings file (`extract`:
    {url, request}), written as `json.dumps(response, indent=1, ensure_ascii=False)`, or the text of a
    JavaScript template literal (`extract`: {js_template: true}), or the text between two markers of a
    source file (`extract`: {literal_from, literal_to})."""
    spec = entry.get("extract")
    if not spec:
        return data
    if spec.get("js_template"):  # a page pasted into a JavaScript `...` literal
        return data[data.index(b"`") + 1 : data.rindex(b"`")].removeprefix(b"\n")
    if spec.get("literal_from"):  # a page pasted into a string literal of a source file
        start = data.index(spec["literal_from"].encode()) + len(spec["literal_from"].encode())
        return data[start : data.index(spec["literal_to"].encode(), start)]
    response = json.loads(data)[spec["url"]][spec["request"]]
    return json.dumps(response, indent=1, ensure_ascii=False).encode()


def rebuild(mirror_root: Path, cache: Path) -> int:
    cache.mkdir(parents=True, exist_ok=True)
    failed = 0
    for entry in manifest():
        target = page_file(entry, cache)
        if target.exists() and hashlib.sha256(target.read_bytes()).hexdigest() == entry["sha256"]:
            continue
        try:
            data = _extracted(entry, _from_shared(entry) or _from_mirror(entry, mirror_root) or _from_github(entry))
        except OSError as exc:
            print(f"{entry['id']}: cannot fetch ({exc})", file=sys.stderr)
            failed += 1
            continue
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            print(f"{entry['id']}: sha256 differs from the manifest, not stored", file=sys.stderr)
            failed += 1
            continue
        target.write_bytes(data)
        print(f"{entry['id']}: {len(data):,} bytes")
    return failed


def choose_split(seed: int, families: list[str], fraction: float = 1 / 3) -> None:
    """Set aside a random `fraction` of the pages of `families` (manifest file stems) that have no split yet
    (1.0: a fresh test batch held out whole).
    Pages join the corpus in batches (one per gatherer); each batch is split when it lands, before any
    parser change that could have seen it, and the seed of each batch is kept."""
    state = json.loads(SPLIT_FILE.read_text()) if SPLIT_FILE.exists() else {"batches": [], "pages": {}}
    new = sorted(
        e["id"]
        for f in families
        for e in json.loads((HERE / "manifest" / f"{f}.json").read_text())
        if e["id"] not in state["pages"]
    )
    holdout = set(random.Random(seed).sample(new, round(len(new) * fraction)))
    state["pages"].update({i: ("holdout" if i in holdout else "dev") for i in new})
    state["batches"].append(
        {"seed": seed, "families": families, "fraction": fraction, "pages": len(new), "holdout": len(holdout)}
    )
    SPLIT_FILE.write_text(json.dumps(state, indent=1, sort_keys=True) + "\n")
    print(f"{len(holdout)} of {len(new)} new pages set aside")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    rb = sub.add_parser("rebuild", help="fill the cache from mirrors or GitHub, checking sha256")
    rb.add_argument("--mirror-root", type=Path, default=Path("/work/.mirror"))
    rb.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    sp = sub.add_parser("split", help="set aside a random third of the pages of a new batch")
    sp.add_argument("--seed", type=int, required=True)
    sp.add_argument("--fraction", type=float, default=1 / 3, help="share set aside (1 for a fresh test batch)")
    sp.add_argument("families", nargs="+", help="manifest file stems, e.g. fandom search")
    args = parser.parse_args(argv)
    if args.command == "rebuild":
        return 1 if rebuild(args.mirror_root, args.cache) else 0
    choose_split(args.seed, args.families, args.fraction)
    return 0


if __name__ == "__main__":
    sys.exit(main())
