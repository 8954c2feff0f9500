"""Train, tune and test sets made of whole sources (shows, sites, data sets), never of images.

A model is trained on the train sources, every setting is chosen on the tune sources and the test
sources are reported once. ``SourceSplit.check`` refuses a split that would leak: a source named in two
roles, one repository behind sources of two roles (copies of one data set), a reserved source, or one
image (same bytes, or the same picture re-encoded) in two roles.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Mapping
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

# Two pictures whose 64-bit difference hashes differ in at most this many bits are one picture.
SAME_PICTURE_BITS = 4


@dataclasses.dataclass(frozen=True)
class Source:
    name: str
    role: str  # "train" | "tune" | "test"
    repository: str = ""  # "owner/name" on GitHub; "" for a folder of ../shared
    images: tuple[Path, ...] = ()


def difference_hash(path: Path) -> int | None:
    """64-bit dHash of the picture (9x8 grey, each pixel against its right neighbour); None if unreadable
    or flat (every blank frame would be "the same picture" as every other)."""
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        return None
    small = cv2.resize(img, (9, 8), interpolation=cv2.INTER_AREA).astype(np.int16)
    if small.std() < 2:
        return None
    bits = (small[:, 1:] > small[:, :-1]).flatten()
    return int(sum(1 << i for i, b in enumerate(bits) if b))


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

    def _image_problems(self) -> list[str]:
        """The same file bytes, or the same picture (dHash within SAME_PICTURE_BITS), in two roles."""
        seen: dict[str, tuple[str, Path]] = {}
        hashes: dict[str, list[tuple[int, Path]]] = {r: [] for r in ROLES}
        problems = []
        for s in self.sources:
            for path in s.images:
                digest = _file_digest(path)
                if digest in seen and seen[digest][0] != s.role:
                    problems.append(f"{path} ({s.role}) is the file {seen[digest][1]} ({seen[digest][0]})")
                seen.setdefault(digest, (s.role, path))
                h = difference_hash(path)
                if h is not None:
                    hashes[s.role].append((h, path))
        return problems or same_pictures_across(hashes)


def hash_distances(hashes: np.ndarray, h: int) -> np.ndarray:
    """Bits by which each 64-bit hash in ``hashes`` (uint64) differs from ``h``."""
    bits = np.bitwise_xor(hashes.astype(np.uint64), np.uint64(h))
    return np.unpackbits(bits.view(np.uint8).reshape(-1, 8), axis=1).sum(1)


def same_pictures_across(hashes: Mapping[str, list[tuple[int, Path]]], limit: int = 5) -> list[str]:
    """Pairs of pictures in two roles whose difference hashes are within SAME_PICTURE_BITS (first ``limit``)."""
    problems = []
    roles = [r for r in ROLES if hashes.get(r)]
    for i, a in enumerate(roles):
        left = np.asarray([h for h, _ in hashes[a]], np.uint64)
        for b in roles[i + 1 :]:
            for h, path in hashes[b]:
                distance = hash_distances(left, h)
                j = int(distance.argmin())
                if distance[j] <= SAME_PICTURE_BITS:
                    problems.append(f"{path} ({b}) is the picture {hashes[a][j][1]} ({a})")
                    if len(problems) >= limit:
                        return problems
    return problems
