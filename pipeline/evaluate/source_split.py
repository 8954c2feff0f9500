"""Train, tune and test sets made of whole sources (shows, sites, data sets), never of images.

A model is trained on the train sources, every setting is chosen on the tune sources and the test
sources are reported once. ``SourceSplit.check`` refuses a split that would leak: a source named in two
roles, one repository behind sources of two roles (copies of one data set), a reserved source, or one
image (same bytes, or the same picture re-encoded) in two roles.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

ROLES = ("train", "tune", "test")

# Kept for independent evaluation by people outside this project: never gathered, trained, tuned or scored on.
RESERVED_REPOSITORIES = frozenset(
    r.lower()
    for r in (
        "CosteaRazvan/LifeWithLouie",
        "danielsociu/faceRecognitionSimpsons",
        "RobertSuto/The-Simpsons-Facial-Recognition",
        "wise233/iCartoonFace-RTDETR",
        "ggapac/cartoon-face-detection",
        "weypro/PPYOLOAnimeFaceDetection",
        "benlei/samsara-tools",
        "zhxieml/IEE-homework",
        "Skaant/bulbapedia-crawler",
        "alvaro-co/phrona",
    )
)
# Only its 14 identities already in ../shared may be used; its repository is never gathered from.
RESERVED_EXCEPT_SHARED = frozenset({"sytwu/anime-face-recognition"})

# Two pictures are one when their 64-bit difference hashes differ in at most this many bits and their
# 32x32 grey thumbnails by at most this many grey levels on average (PictureIndex).
SAME_PICTURE_BITS = 4
SAME_PICTURE_GREY = 12


@dataclasses.dataclass(frozen=True)
class Source:
    name: str
    role: str  # "train" | "tune" | "test"
    repository: str = ""  # "owner/name" on GitHub; "" for a folder of ../shared
    images: tuple[Path, ...] = ()


@dataclasses.dataclass(frozen=True)
class Picture:
    dhash: int  # 64-bit difference hash: 9x8 grey, each pixel against its right neighbour
    thumbnail: np.ndarray  # 32x32 grey, uint8


def picture(path: Path) -> Picture | None:
    """The picture's signature; None if unreadable or flat (every blank frame would be "the same
    picture" as every other)."""
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        return None
    small = cv2.resize(img, (9, 8), interpolation=cv2.INTER_AREA).astype(np.int16)
    if small.std() < 2:
        return None
    bits = (small[:, 1:] > small[:, :-1]).flatten()
    dhash = int(sum(1 << i for i, b in enumerate(bits) if b))
    return Picture(dhash, cv2.resize(img, (32, 32), interpolation=cv2.INTER_AREA))


class PictureIndex:
    """Pictures seen so far, each with an owner (a role or a source). Two pictures are one when their
    dHashes differ in at most SAME_PICTURE_BITS bits and their thumbnails by at most SAME_PICTURE_GREY
    grey levels on average: the hash alone calls two figures on white backgrounds the same."""

    def __init__(self):
        self.hashes: list[int] = []
        self.thumbnails: list[np.ndarray] = []
        self.owners: list[tuple[str, Path]] = []

    def add(self, pic: Picture, owner: str, path: Path) -> None:
        self.hashes.append(pic.dhash)
        self.thumbnails.append(pic.thumbnail)
        self.owners.append((owner, path))

    def matches(self, pic: Picture) -> list[tuple[str, Path]]:
        """(owner, path) of every earlier picture that is this one."""
        if not self.hashes:
            return []
        near = np.flatnonzero(hash_distances(np.asarray(self.hashes, np.uint64), pic.dhash) <= SAME_PICTURE_BITS)
        thumb = pic.thumbnail.astype(np.int16)
        return [
            self.owners[i]
            for i in near
            if np.abs(self.thumbnails[i].astype(np.int16) - thumb).mean() <= SAME_PICTURE_GREY
        ]


def hash_distances(hashes: np.ndarray, h: int) -> np.ndarray:
    """Bits by which each 64-bit hash in ``hashes`` (uint64) differs from ``h``."""
    bits = np.bitwise_xor(hashes.astype(np.uint64), np.uint64(h))
    return np.unpackbits(bits.view(np.uint8).reshape(-1, 8), axis=1).sum(1)


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class SourceSplit:
    def __init__(self, sources: Iterable[Source]):
        self.sources = list(sources)

    def role(self, role: str) -> list[Source]:
        return [s for s in self.sources if s.role == role]

    def check(self, images: bool = True) -> None:
        """Raise ValueError naming every leak; ``images=False`` skips reading the pictures."""
        problems = self._name_problems()
        if images and not problems:
            problems = self._image_problems()
        if problems:
            raise ValueError("source split refused: " + "; ".join(problems))

    def _name_problems(self) -> list[str]:
        problems = []
        by_name: dict[str, set[str]] = {}
        by_repo: dict[str, set[str]] = {}
        for s in self.sources:
            if s.role not in ROLES:
                problems.append(f"{s.name}: role {s.role!r} is not one of {ROLES}")
            repo = s.repository.lower()
            if repo in RESERVED_REPOSITORIES or repo in RESERVED_EXCEPT_SHARED:
                problems.append(f"{s.name}: {s.repository} is reserved for independent evaluation")
            by_name.setdefault(s.name, set()).add(s.role)
            if repo:
                by_repo.setdefault(repo, set()).add(s.role)
        problems += [f"source {n} is in {sorted(r)}" for n, r in by_name.items() if len(r) > 1]
        problems += [f"repository {n} is behind {sorted(r)}" for n, r in by_repo.items() if len(r) > 1]
        return problems

    def _image_problems(self, limit: int = 5) -> list[str]:
        """The same file bytes, or the same picture (``PictureIndex``), in two roles (the first ``limit``)."""
        files: dict[str, tuple[str, Path]] = {}
        pictures = PictureIndex()
        problems = []
        for s in self.sources:
            for path in s.images:
                digest = _file_digest(path)
                if digest in files and files[digest][0] != s.role:
                    problems.append(f"{path} ({s.role}) is the file {files[digest][1]} ({files[digest][0]})")
                files.setdefault(digest, (s.role, path))
                pic = picture(path)
                if pic is None:
                    continue
                other = [(role, p) for role, p in pictures.matches(pic) if role != s.role]
                if other:
                    problems.append(f"{path} ({s.role}) is the picture {other[0][1]} ({other[0][0]})")
                pictures.add(pic, s.role, path)
                if len(problems) >= limit:
                    return problems
        return problems
