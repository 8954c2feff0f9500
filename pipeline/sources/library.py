"""The media library source: albums of episode videos and still images (the paper's in-house library).

An albums file (YAML with a top-level `albums:` list, or CSV with a header) describes each album:

    albums:
      - id: sunny_school          # required: letters, digits, '_' or '-'
        name: Sunny School        # required
        region: JP                # optional
        episodes: sunny_school/episodes   # folder of videos, relative to the albums file
        stills: sunny_school/stills       # folder of images, relative to the albums file
        # web sources (all optional):
        encyclopedia: [https://sunny.fandom.com/wiki/Category:Characters]  # pages listing characters
        search: [bing, baidu]             # engines queried with "[character] [album name]";
                                          # or {engine: bing, url: https://mirror/images/search}
        search_pages: 1                   # result pages per query
        url_lists: [lists/extra.csv]      # your own image URLs (CSV or JSONL with a `url` column)
        characters:                       # characters you name yourself, with typical images
          - {name: Hana, images: [refs/hana.jpg, https://example.org/hana.png]}

In a CSV albums file, `encyclopedia`, `search` and `url_lists` are `;`-separated lists.

Without an albums file, `discover_albums(DIR)` treats each sub-folder holding `episodes/` or
`stills/` as an album, or else DIR itself as one album whose videos and images are told apart by
extension.

Every entry of an episodes or stills folder is listed, also what cannot be read as a file: a FIFO, a
device, a dangling or looping link, a link to a folder (folders are walked, links to them are not).
`file_problem` names its drop reason, `unreadable` or `not_a_file`, so it becomes a row, not a gap.
Names that are not valid UTF-8 go into the manifest with their bad bytes escaped (`safe_name`).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import os
import re
import stat
import sys
from pathlib import Path

import yaml

from pipeline.frames import VIDEO_EXTENSIONS

ALBUMS_FILE_NAMES = ("albums.yaml", "albums.yml", "albums.csv")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


class AlbumsFileError(ValueError):
    pass


SEARCH_ENGINES = ("bing", "baidu", "google")


@dataclasses.dataclass(frozen=True)
class NamedCharacter:
    """A character given in the albums file, with its typical images (paths or URLs)."""

    name: str
    aliases: tuple[str, ...] = ()
    images: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Album:
    album_id: str
    name: str
    _: dataclasses.KW_ONLY  # the rest by name: most albums give only some of them
    region: str = ""
    episodes_dir: Path | None = None
    stills_dir: Path | None = None
    mixed_dir: Path | None = None  # a plain folder of videos and images (no albums file)
    encyclopedia: tuple[str, ...] = ()
    search: tuple[tuple[str, str | None], ...] = ()  # (engine, base URL override or None)
    search_pages: int = 1
    url_lists: tuple[Path, ...] = ()
    characters: tuple[NamedCharacter, ...] = ()

    @property
    def has_web_sources(self) -> bool:
        return bool(self.encyclopedia or self.search or self.url_lists or self.characters)

    def episodes(self) -> list[Path]:
        """Episode files, sorted, searched recursively. In an episodes folder every file counts
        (one ffmpeg cannot read becomes a row with a drop reason); in a mixed folder, video
        extensions tell videos from stills."""
        if self.episodes_dir is not None:
            return _files(self.episodes_dir, lambda p: True)
        return _files(self.mixed_dir, lambda p: p.suffix.lower() in VIDEO_EXTENSIONS)

    def stills(self) -> list[Path]:
        """Every other file: anything that is not a video is tried as an image (and dropped with a
        reason when it is not one)."""
        if self.stills_dir is not None:
            return _files(self.stills_dir, lambda p: True)
        return _files(
            self.mixed_dir, lambda p: p.suffix.lower() not in VIDEO_EXTENSIONS and p.name not in ALBUMS_FILE_NAMES
        )

    def relative(self, path: Path, episodes: bool) -> str:
        """The name the manifest records (read files by their real path, not by this)."""
        base = (self.episodes_dir if episodes else self.stills_dir) or self.mixed_dir
        return safe_name(path.relative_to(base).as_posix())


def safe_name(name: str) -> str:
    """`name` as valid text: bytes that are not UTF-8 in a file name (which os.listdir returns as
    surrogates, rejected by Parquet and JSON) become `\\xff` escapes; any other name is unchanged."""
    return os.fsencode(name).decode(sys.getfilesystemencoding(), "backslashreplace")


def _files(folder: Path | None, keep) -> list[Path]:
    """Every entry under `folder` except the folders walked and hidden names, sorted."""
    if folder is None or not folder.is_dir():
        return []
    found, pending = [], [folder]
    while pending:
        current = pending.pop()
        try:
            with os.scandir(current) as listing:
                entries = list(listing)
        except OSError:  # a folder that cannot be listed is an entry itself: a row, not a silent gap
            found += [current] if keep(current) else []
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=False):
                pending.append(Path(entry.path))
            elif keep(Path(entry.path)):
                found.append(Path(entry.path))
    return sorted(found)


_NOT_FILES = (
    (stat.S_ISDIR, "a folder not walked (a link to a folder, or a folder that cannot be listed)"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def file_problem(path: str | Path) -> tuple[str, str] | None:
    """(drop reason, detail) of a listed entry that cannot be read as a file, else None. Uses stat
    only: opening a FIFO waits forever for a writer, and reading a device may never end."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:  # a dangling link, a link loop, a file gone since the listing
        return "unreadable", safe_name(str(exc))
    for is_kind, kind in _NOT_FILES:
        if is_kind(mode):
            return "not_a_file", kind
    return None


def load_albums_file(path: str | Path) -> list[Album]:
    """Parse and validate an albums file; errors name the entry and the field."""
    path = Path(path)
    if not path.is_file():
        raise AlbumsFileError(f"albums file not found: {path}")
    try:
        if path.suffix.lower() == ".csv":
            with open(path, newline="", encoding="utf-8") as f:
                entries = [dict(row) for row in csv.DictReader(f)]
        else:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or not isinstance(data.get("albums"), list):
                raise AlbumsFileError(f"{path}: expected a mapping with an `albums:` list")
            entries = data["albums"]
    except (yaml.YAMLError, csv.Error, UnicodeDecodeError) as exc:
        raise AlbumsFileError(f"{path}: cannot parse: {exc}") from None
    base = path.parent
    albums, seen = [], set()
    for n, entry in enumerate(entries, start=1):
        albums.append(_parse_entry(entry, f"{path.name} entry {n}", base, seen, csv_file=path.suffix.lower() == ".csv"))
    if not albums:
        raise AlbumsFileError(f"{path}: lists no albums")
    return albums


_FIELDS = {
    "id",
    "name",
    "region",
    "episodes",
    "stills",
    "encyclopedia",
    "search",
    "search_pages",
    "url_lists",
    "characters",
}


def _as_list(value, where: str, field: str, csv_file: bool) -> list:
    if value in (None, ""):
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(";") if v.strip()] if csv_file else [value.strip()]
    if isinstance(value, list):
        return value
    raise AlbumsFileError(f"{where}: `{field}` must be a list")


def _parse_entry(entry, where: str, base: Path, seen: set, csv_file: bool) -> Album:
    if not isinstance(entry, dict):
        raise AlbumsFileError(f"{where}: expected a mapping, got {type(entry).__name__}")
    entry = {str(k).strip(): v for k, v in entry.items()}
    text = {
        k: (str(v).strip() if v is not None else "")
        for k, v in entry.items()
        if k in ("id", "name", "region", "episodes", "stills", "search_pages")
    }
    album_id = text.get("id", "")
    where = f"{where} (id {album_id!r})" if album_id else where
    if not _ID.match(album_id):
        raise AlbumsFileError(f"{where}: `id` must be letters, digits, '_' or '-', got {album_id!r}")
    if album_id in seen:
        raise AlbumsFileError(f"{where}: duplicate id {album_id!r}")
    seen.add(album_id)
    if not text.get("name"):
        raise AlbumsFileError(f"{where}: `name` is required")
    unknown = set(entry) - _FIELDS
    if unknown:
        raise AlbumsFileError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    dirs = _folders(text, where, base)
    web = _web_sources(entry, text, where, base, csv_file)
    album = Album(
        album_id,
        text["name"],
        region=text.get("region", ""),
        episodes_dir=dirs.get("episodes"),
        stills_dir=dirs.get("stills"),
        characters=_characters(entry, where, base, csv_file),
        **web,
    )
    if not dirs and not album.has_web_sources:
        raise AlbumsFileError(
            f"{where}: give at least one of `episodes`, `stills` or a web source "
            "(`encyclopedia`, `search`, `url_lists`, `characters`)"
        )
    if album.search and not (album.encyclopedia or album.characters):
        raise AlbumsFileError(f"{where}: `search` needs characters to search for: give `encyclopedia` or `characters`")
    return album


def _folders(text: dict, where: str, base: Path) -> dict[str, Path]:
    dirs = {}
    for field in ("episodes", "stills"):
        if text.get(field):
            folder = (base / text[field]).resolve()
            if not folder.is_dir():
                raise AlbumsFileError(f"{where}: `{field}` folder does not exist: {folder}")
            dirs[field] = folder
    return dirs


def _web_sources(entry: dict, text: dict, where: str, base: Path, csv_file: bool) -> dict:
    """An entry's encyclopedia pages, searches and URL lists, as Album keyword arguments."""
    encyclopedia = tuple(str(u) for u in _as_list(entry.get("encyclopedia"), where, "encyclopedia", csv_file))
    for url in encyclopedia:
        if not url.startswith(("http://", "https://")):
            raise AlbumsFileError(f"{where}: `encyclopedia` entries must be http(s) URLs, got {url!r}")
    search = []
    for item in _as_list(entry.get("search"), where, "search", csv_file):
        engine, url = (item.get("engine"), item.get("url")) if isinstance(item, dict) else (item, None)
        if engine not in SEARCH_ENGINES:
            raise AlbumsFileError(f"{where}: unknown search engine {engine!r}; use {', '.join(SEARCH_ENGINES)}")
        search.append((engine, url))
    try:
        pages = int(text.get("search_pages") or 1)
    except ValueError:
        raise AlbumsFileError(f"{where}: `search_pages` must be a whole number") from None
    url_lists = []
    for item in _as_list(entry.get("url_lists"), where, "url_lists", csv_file):
        file = (base / str(item)).resolve()
        if not file.is_file():
            raise AlbumsFileError(f"{where}: url list not found: {file}")
        url_lists.append(file)
    return {
        "encyclopedia": encyclopedia,
        "search": tuple(search),
        "search_pages": max(1, pages),
        "url_lists": tuple(url_lists),
    }


def _characters(entry: dict, where: str, base: Path, csv_file: bool) -> tuple[NamedCharacter, ...]:
    characters = []
    for item in _as_list(entry.get("characters"), where, "characters", csv_file):
        item = {"name": item} if isinstance(item, str) else item
        if not isinstance(item, dict) or not str(item.get("name") or "").strip():
            raise AlbumsFileError(f"{where}: each of `characters` needs a `name`")
        images = []
        for image in _as_list(item.get("images"), where, "characters.images", False):
            image = str(image)
            if not image.startswith(("http://", "https://")):
                local = (base / image).resolve()
                if not local.is_file():
                    raise AlbumsFileError(f"{where}: typical image of {item['name']!r} not found: {local}")
                image = str(local)
            images.append(image)
        characters.append(
            NamedCharacter(
                str(item["name"]).strip(),
                tuple(str(a) for a in _as_list(item.get("aliases"), where, "aliases", False)),
                tuple(images),
            )
        )
    return tuple(characters)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_") or "album"


def discover_albums(library: str | Path, albums_file: str | Path | None = None) -> list[Album]:
    library = Path(library)
    if albums_file is not None:
        return load_albums_file(albums_file)
    if not library.is_dir():
        raise AlbumsFileError(f"library folder not found: {library}")
    for name in ALBUMS_FILE_NAMES:
        if (library / name).is_file():
            return load_albums_file(library / name)
    albums = []
    for sub in sorted(p for p in library.iterdir() if p.is_dir() and not p.name.startswith(".")):
        episodes, stills = sub / "episodes", sub / "stills"
        if episodes.is_dir() or stills.is_dir():
            albums.append(
                Album(
                    _slug(sub.name),
                    safe_name(sub.name),
                    episodes_dir=episodes if episodes.is_dir() else None,
                    stills_dir=stills if stills.is_dir() else None,
                )
            )
    if albums:
        return albums
    resolved = library.resolve()
    return [Album(_slug(resolved.name), safe_name(resolved.name), mixed_dir=resolved)]


def sample_rank_key(seed: int, album_id: str, episode_path: str) -> str:
    """A stable pseudo-random order: adding an episode never reshuffles the others."""
    return hashlib.sha256(f"{seed}:{album_id}:{episode_path}".encode()).hexdigest()


def select_episodes(
    album_id: str, episode_paths: list[str], previously_selected: set[str], count: int = 10, seed: int = 0
) -> dict[str, tuple[bool, int]]:
    """Pick `count` episodes per album: the ones picked by earlier runs stay picked (the choice is
    recorded in the manifest); free places go to the others in seeded random order.

    Returns {episode_path: (selected, rank)} for every episode, rank in the seeded order."""
    order = sorted(episode_paths, key=lambda p: sample_rank_key(seed, album_id, p))
    rank = {p: i for i, p in enumerate(order)}
    chosen = [p for p in order if p in previously_selected][:count]
    for p in order:
        if len(chosen) >= count:
            break
        if p not in chosen:
            chosen.append(p)
    chosen_set = set(chosen)
    return {p: (p in chosen_set, rank[p]) for p in episode_paths}
