"""Character identity data from public repositories, rebuilt into a git-ignored cache.

`sources.json` lists every source: repository and commit, licence, style, its role in the source split
(train / tune / test, `pipeline.evaluate.source_split`) and the paths it is read from. A source is a tree
of images in which an image's folder names its character. `rebuild` copies each public source to

    .cache/identity_data/<name>/<path in the repository>     (the images kept)
    .cache/identity_data/<name>/summary.json                 identities, images, what was excluded and why

    python benchmarks/identity_data/rebuild.py [--mirror-root /work/.mirror] [--cache DIR] [--only NAME]

Sources in ../shared are read in place. Sources are rebuilt shared first, then test, tune, train: an image
whose picture repeats one seen before (in its own source or an earlier one) is dropped, so test pictures
stay whole and no picture counts twice. Then the split is checked (not with ``--only``).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from PIL import Image  # noqa: E402

from benchmarks.public_repos import extract, rebuild_command  # noqa: E402
from pipeline.evaluate.source_split import PictureIndex, Source, SourceSplit, picture  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DEFAULT_CACHE = ROOT / ".cache" / "identity_data"
SHARED = Path(os.environ.get("TOONFACE_SHARED", ROOT.parent / "shared"))
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def sources() -> list[dict]:
    return json.loads((HERE / "sources.json").read_text())["sources"]


def source(name: str) -> dict:
    found = [e for e in sources() if e["name"] == name]
    if not found:
        raise SystemExit(f"no identity source named {name!r} (see {HERE / 'sources.json'})")
    return found[0]


def source_root(entry: dict, cache: Path = DEFAULT_CACHE) -> Path:
    """Where the source's images are: its folder in ../shared, or its folder in the cache (not for a
    ``cava`` source of frames: see ``faces.samples``)."""
    if entry.get("shared"):
        return Path(entry["root"].format(shared=SHARED))
    return cache / entry["name"]


def images_by_identity(root: Path) -> dict[str, list[Path]]:
    """Every image under root by its character: the name of the folder it is in."""
    found: dict[str, list[Path]] = {}
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            found.setdefault(path.parent.name, []).append(path)
    return found


class SeenPictures:
    """The pictures of the sources rebuilt so far (shared ones first, then test, tune)."""

    def __init__(self):
        self.index = PictureIndex()

    def add(self, path: Path, source_name: str) -> bool:
        """False when the picture repeats one seen before (or cannot be read); else remembers it."""
        pic = picture(path)
        if pic is None or self.index.matches(pic):
            return False
        self.index.add(pic, source_name, path)
        return True


def _keep_images(out: Path, name: str, seen: SeenPictures) -> dict[str, int]:
    """Delete the images of `out` that repeat one seen before (same bytes, or the same picture)."""
    excluded = {"same bytes as another image of the source": 0, "picture repeating one seen before": 0}
    digests: set[str] = set()
    for images in images_by_identity(out).values():
        for path in images:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if digest in digests:
                excluded["same bytes as another image of the source"] += 1
                path.unlink()
            elif not seen.add(path, name):
                excluded["picture repeating one seen before"] += 1
                path.unlink()
            else:
                digests.add(digest)
    return {k: v for k, v in excluded.items() if v}


def summary(root: Path, excluded: dict | None = None) -> dict:
    found = images_by_identity(root)
    return {
        "identities": len(found),
        "images": sum(len(v) for v in found.values()),
        "per_identity": {k: len(v) for k, v in sorted(found.items())},
        "excluded": excluded or {},
    }


def _wanted(entry: dict) -> Callable[[str], bool]:
    """Whether a repository path is one of the source's images: named by its ``include`` patterns (all
    files when it has none), outside its ``exclude_folders``."""

    def wanted(path: str) -> bool:
        folder, _, name = path.rpartition("/")
        return any(fnmatch.fnmatch(name, p) for p in entry.get("include", ["*"])) and folder.rpartition("/")[
            2
        ] not in entry.get("exclude_folders", [])

    return wanted


def _as_images(out: Path) -> int:
    """Every image but a JPEG becomes a PNG on white: files without a suffix (format sniffed), transparent
    renders and sprites, the first frame of an animated GIF (OpenCV reads no GIF). Files that are no
    image are deleted; returns how many."""
    not_images = 0
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        if path.suffix.lower() in (".jpg", ".jpeg"):
            continue
        try:
            with Image.open(path) as im:
                im.seek(0)
                frame = im.convert("RGBA")
        except (OSError, ValueError):
            not_images += 1
            path.unlink()
            continue
        path.unlink()
        _on_white(frame).save(
            path.with_name(path.stem + ".png" if path.suffix.lower() in IMAGE_SUFFIXES else path.name + ".png")
        )
    return not_images


def _on_white(image: Image.Image) -> Image.Image:
    """A transparent sprite or render on white, as a page would show it."""
    background = Image.new("RGB", image.size, (255, 255, 255))
    background.paste(image, mask=image.getchannel("A"))
    return background


def rebuild_one(entry: dict, mirror_root: Path, cache: Path, seen: SeenPictures) -> dict:
    out = cache / entry["name"]
    shutil.rmtree(out, ignore_errors=True)
    missing = extract(entry["repo"], entry["commit"], entry["paths"], out, mirror_root, _wanted(entry))
    excluded = {"files the mirror lacks": len(missing), "files that are not images": _as_images(out)}
    excluded = {k: v for k, v in {**excluded, **_keep_images(out, entry["name"], seen)}.items() if v}
    result = summary(out, excluded)
    (out / "summary.json").write_text(json.dumps(result, indent=2))
    return result


def check_split(cache: Path = DEFAULT_CACHE, images: bool = True) -> None:
    """Refuse a split that leaks (see ``pipeline.evaluate.source_split``). Frame sources (``cava``) are
    checked by the detection data's split, where their frames come from."""
    split = []
    for e in sources():
        folders = images and "cava" not in e
        paths = [p for v in images_by_identity(source_root(e, cache)).values() for p in v] if folders else []
        split.append(Source(e["name"], e["role"], e.get("repo", ""), tuple(paths)))
    SourceSplit(split).check(images=images)


def _brief(entry: dict, mirror_root: Path, cache: Path, seen: SeenPictures) -> dict:
    result = rebuild_one(entry, mirror_root, cache, seen)
    return {k: result[k] for k in ("identities", "images", "excluded")}


def main(argv=None) -> int:
    seen = SeenPictures()
    for entry in sources():
        if entry.get("shared") and "cava" not in entry:
            for path in (p for v in images_by_identity(source_root(entry)).values() for p in v):
                seen.add(path, entry["name"])
    return rebuild_command(
        argv,
        __doc__.split("\n\n")[0],
        DEFAULT_CACHE,
        check_split,
        lambda entry, mirror_root, cache: _brief(entry, mirror_root, cache, seen),
        lambda: [e for e in sources() if not e.get("shared") and "cava" not in e],
    )


if __name__ == "__main__":
    sys.exit(main())
