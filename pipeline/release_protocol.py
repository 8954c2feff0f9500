"""The iCartoonFace challenge protocols of a release, on its test identities (never trained on):

- identification: per test identity with two or more faces, one face joins the gallery and the others
  are probes; test identities with a single face and unlabelled kept faces of the version are
  distractors in the gallery. A probe is right at rank k when its identity's gallery face is among the
  k gallery faces most similar to it.
- verification: positive pairs (same identity) and negative pairs (two test identities), half of each
  hard-mined with a named embedder (the least similar positives, the most similar negatives) and half
  drawn at random, split into 10 folds; accuracy is taken on each fold at the threshold best on the
  other nine.

Files: protocol/identification.csv, protocol/verification.csv and PROTOCOL.md."""

from __future__ import annotations

import csv
import dataclasses
import itertools
import re
import shutil
from pathlib import Path

import numpy as np

from pipeline.identity.embedding import embed_crops, load
from pipeline.store import ContentStore

IDENTIFICATION_COLUMNS = ["file", "identity", "role"]  # role: gallery | probe | distractor
VERIFICATION_COLUMNS = ["fold", "file_a", "file_b", "same", "mined_similarity"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProtocolSettings:
    mining_embedder: str = "default"  # embedder setting that mines hard pairs ("none": random pairs only)
    pairs: int = 3000  # positive pairs at most, and as many negative ones (the paper: 3,000 each)
    distractors: int = 2500  # unlabelled faces added to the gallery at most (the paper: 2,500)
    folds: int = 10
    seed: int = 0


def write_protocols(
    folder: Path, rows: list[dict], unlabelled: list[tuple[str, str]], store: ContentStore, data_root: Path,
    settings: ProtocolSettings,
) -> dict:  # fmt: skip
    """Write the protocol files of a release folder whose crops are in place (`rows`: labels.csv rows;
    `unlabelled`: (face_id, crop_sha) of kept faces without a label). Returns the protocol's summary."""
    rng = np.random.default_rng(settings.seed)
    test = [r for r in rows if r["split"] == "test"]
    distractors = _copy_distractors(folder, unlabelled, store, settings.distractors, rng)
    identification = identification_rows(test, distractors, rng)
    embedder = load(settings.mining_embedder)
    vectors = embed_crops([r["crop_sha"] for r in test], settings.mining_embedder, data_root) if embedder else {}
    pairs = verification_pairs(test, vectors, settings, rng)
    (folder / "protocol").mkdir(parents=True, exist_ok=True)
    _write_csv(folder / "protocol" / "identification.csv", IDENTIFICATION_COLUMNS, identification)
    _write_csv(folder / "protocol" / "verification.csv", VERIFICATION_COLUMNS, pairs)
    summary = {
        "gallery": sum(r["role"] == "gallery" for r in identification),
        "probes": sum(r["role"] == "probe" for r in identification),
        "distractors": sum(r["role"] == "distractor" for r in identification),
        "positive_pairs": sum(p["same"] for p in pairs),
        "negative_pairs": sum(not p["same"] for p in pairs),
        "folds": settings.folds,
        "mining_embedder": embedder.model_id if embedder else None,
    }
    (folder / "PROTOCOL.md").write_text(protocol_card(summary), encoding="utf-8")
    return summary


def face_file_name(face_id: str) -> str:
    """A face id as a file name of a release (letters, digits, '_', '.' and '-')."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", face_id)


def _copy_distractors(folder: Path, unlabelled: list, store: ContentStore, limit: int, rng) -> list[str]:
    present = [(face_id, sha) for face_id, sha in sorted(unlabelled) if store.has(sha)]
    chosen = [present[i] for i in sorted(rng.permutation(len(present))[:limit])] if present else []
    files = []
    for face_id, sha in chosen:
        rel = Path("distractors") / f"{face_file_name(face_id)}.jpg"
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(store.path_for(sha, ".jpg"), folder / rel)
        files.append(rel.as_posix())
    return files


def identification_rows(test: list[dict], distractor_files: list[str], rng) -> list[dict]:
    by_identity: dict[str, list[str]] = {}
    for r in sorted(test, key=lambda r: r["file"]):
        by_identity.setdefault(r["identity"], []).append(r["file"])
    out = []
    for identity, files in sorted(by_identity.items()):
        if len(files) < 2:  # cannot be probed: it only makes the gallery harder
            out.append({"file": files[0], "identity": identity, "role": "distractor"})
            continue
        gallery = int(rng.integers(len(files)))
        for i, file in enumerate(files):
            out.append({"file": file, "identity": identity, "role": "gallery" if i == gallery else "probe"})
    return out + [{"file": f, "identity": "", "role": "distractor"} for f in distractor_files]


def verification_pairs(test: list[dict], vectors: dict, settings: ProtocolSettings, rng) -> list[dict]:
    """Half hard-mined, half random, of each kind; as many negatives as positives; `folds` balanced folds."""
    test = sorted(test, key=lambda r: r["file"])
    pairs = list(itertools.combinations(range(len(test)), 2))
    positive = [p for p in pairs if test[p[0]]["identity"] == test[p[1]]["identity"]]
    negative = [p for p in pairs if test[p[0]]["identity"] != test[p[1]]["identity"]]
    count = min(settings.pairs, len(positive), len(negative))
    similarity = _similarity(test, vectors)
    chosen_pos = _half_hard(positive, similarity, count, rng, hardest_first=lambda s: s)
    chosen_neg = _half_hard(negative, similarity, count, rng, hardest_first=lambda s: -s)
    out = []
    for same, chosen in ((True, chosen_pos), (False, chosen_neg)):
        for k, index in enumerate(rng.permutation(len(chosen))):
            a, b = chosen[index]
            mined = similarity(a, b)
            out.append({"fold": k % settings.folds, "file_a": test[a]["file"], "file_b": test[b]["file"],
                        "same": int(same), "mined_similarity": None if mined is None else round(mined, 6)})  # fmt: skip
    return sorted(out, key=lambda p: (p["fold"], -p["same"], p["file_a"], p["file_b"]))


def _similarity(test: list[dict], vectors: dict):
    if not vectors or not all(r["crop_sha"] in vectors for r in test):
        return lambda a, b: None
    matrix = np.stack([vectors[r["crop_sha"]] for r in test]).astype(np.float64)
    return lambda a, b: float(matrix[a] @ matrix[b])


def _half_hard(candidates: list, similarity, count: int, rng, hardest_first) -> list:
    """`count` pairs: the hardest half by the mining similarity, the rest at random (all at random
    without a mining embedder)."""
    if count == 0:
        return []
    scored = [(similarity(a, b), (a, b)) for a, b in candidates]
    if scored[0][0] is None:
        return [candidates[i] for i in rng.choice(len(candidates), count, replace=False)]
    ranked = [pair for _, pair in sorted(scored, key=lambda sp: (hardest_first(sp[0]), sp[1]))]
    hard, rest = ranked[: count // 2], ranked[count // 2 :]
    return hard + [rest[i] for i in rng.choice(len(rest), count - len(hard), replace=False)]


def _write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows([{k: "" if r.get(k) is None else r[k] for k in columns} for r in rows])


def protocol_card(summary: dict) -> str:
    mining = f"`{summary['mining_embedder']}`" if summary["mining_embedder"] else "none (every pair drawn at random)"
    return f"""# Evaluation protocols

The iCartoonFace challenge's two protocols on this release's **test** identities (no training face
belongs to them). Score a model with `toonface eval-release NAME --weights W` (or `--embeddings X.npy
--ids I.json`: one row per file of the protocol, in the order of the ids).

## Identification (1:N), `protocol/identification.csv`

Columns `file, identity, role`. The gallery is every `gallery` face ({summary["gallery"]}: one per test
identity with two or more faces) and every `distractor` ({summary["distractors"]}: test identities with
a single face, and unlabelled kept faces of the version, identity empty). Each `probe`
({summary["probes"]}) is compared with every gallery face by cosine similarity of its embedding. A probe
is right at **rank k** when the gallery face of its own identity is among the k most similar gallery
faces (ties counted against the probe); the CMC curve gives that share for k = 1, 2, …; rank-1, 5 and
10 are reported.

## Verification (1:1), `protocol/verification.csv`

Columns `fold, file_a, file_b, same, mined_similarity`: {summary["positive_pairs"]} positive and
{summary["negative_pairs"]} negative pairs. Half of each kind were hard-mined with the embedder
{mining} (the least similar positive pairs, the most similar negative pairs; their similarity under it
is `mined_similarity`), the other half drawn at random. A pair is judged "same" when the cosine
similarity of its two embeddings is at least a threshold. **Accuracy**: for each of the
{summary["folds"]} folds, the threshold most accurate on the other folds is applied to it; the mean and
standard deviation over folds are reported. **ROC** over all pairs, its **AUC**, and **TAR@FAR** (the
highest true-accept rate at a false-accept rate of at most 0.1%, 1% and 10%).
"""
