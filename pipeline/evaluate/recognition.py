"""The iCartoonFace recognition protocols on L2-normalised embeddings and identity labels (pure numpy,
deterministic for a seed).

* ``identification`` -- 1:N matching. For each probed identity one image goes to the gallery and 3-7
  other images (a random count in that range, as available) are probes; images whose label is in
  ``distractor_labels`` (CAVA 'unknown' faces, identities that are not probed) go to the gallery only.
  Every probe ranks the whole gallery by cosine similarity; the CMC curve is the fraction of probes
  whose correct gallery image is within rank k. Ties count against the probe (a gallery image scoring
  exactly as high as the correct one ranks ahead of it), so a collapsed model cannot score well.
* ``verification`` -- 1:1 matching on equal numbers of positive and negative pairs, negatives
  hard-mined by feature similarity (for each anchor, the most similar image of another identity).
  Accuracy is 10-fold: the threshold that maximises accuracy on 9 folds is applied to the held-out
  fold (mean +- std over folds). ROC, AUC and TAR at FAR 1e-2 / 1e-3 come from
  ``pipeline.evaluate.pair_metrics``, with no scikit-learn.

Result dictionaries keep bulky arrays (pair scores, pair labels, per-probe ranks) under keys starting
with ``_``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

import numpy as np

from pipeline.evaluate.pair_metrics import accuracy_at, auc, best_threshold, roc_curve, tar_at_far

CMC_MAX_RANK = 10
DEFAULT_PAIRS = 3000  # the paper's verification set: 3,000 positive and 3,000 negative pairs
_BLOCK = 1024  # rows per block when mining over an N x N similarity matrix


# ------------------------------------------------------------------------------------------- helpers


def as_inputs(emb, labels, views_allowed: bool = False) -> tuple[np.ndarray, np.ndarray]:
    emb = np.asarray(emb, dtype=np.float64)
    if emb.ndim != 2 and not (views_allowed and emb.ndim == 3):
        raise ValueError(
            f"embeddings must be N x d{' (or N x views x d)' if views_allowed else ''}, got shape {emb.shape}"
        )
    labels = np.array([str(x) for x in labels], dtype=object)
    if len(labels) != len(emb):
        raise ValueError(f"{len(emb)} embeddings but {len(labels)} labels")
    return emb, labels


def by_identity(labels: np.ndarray, skip: set[str]) -> dict[str, np.ndarray]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, lab in enumerate(labels):
        if lab not in skip:
            groups[lab].append(i)
    return {k: np.asarray(v) for k, v in sorted(groups.items())}


# ------------------------------------------------------------------------------------ identification


def identification(
    emb,
    labels,
    seed: int = 0,
    probes_per_identity: tuple[int, int] = (3, 7),
    distractor_labels: Iterable | None = None,
    ranks: Sequence[int] = (1, 5, 10),
) -> dict:
    """The paper's identification protocol; see the module docstring.

    Identities (not in ``distractor_labels``) with a single image cannot be probed: their image joins
    the gallery as a distractor (counted in ``distractors`` and ``single_image_identities``).
    Returns ``rank<k>`` for each k in ``ranks``, ``cmc`` (ranks 1..max(10, max(ranks))), counts, and
    ``_ranks`` / ``_probe_index`` / ``_gallery_index`` (1-based rank of the correct gallery image per
    probe, and indices into ``emb``).
    """
    emb, labels = as_inputs(emb, labels)
    lo, hi = int(probes_per_identity[0]), int(probes_per_identity[1])
    if not 1 <= lo <= hi:
        raise ValueError(f"probes_per_identity must be 1 <= lo <= hi, got {probes_per_identity}")
    distract = {str(x) for x in (distractor_labels or ())}
    rng = np.random.default_rng(seed)
    gallery, probes, probe_target, single = _identification_split(labels, distract, lo, hi, rng)
    n_probed_identities = len(gallery)
    distractors = sorted([i for i, lab in enumerate(labels) if lab in distract] + single)
    gallery.extend(distractors)

    max_rank = max(CMC_MAX_RANK, max(ranks) if len(ranks) else 1)
    result = {"rank" + str(k): None for k in ranks}
    result.update(
        {
            "cmc": [],
            "identities": n_probed_identities,
            "probes": len(probes),
            "gallery": len(gallery),
            "distractors": len(distractors),
            "single_image_identities": len(single),
            "probes_per_identity": [lo, hi],
            "seed": seed,
        }
    )
    if not probes:
        result.update(
            {"_ranks": np.zeros(0, int), "_probe_index": np.zeros(0, int), "_gallery_index": np.asarray(gallery, int)}
        )
        return result

    probe_arr = np.asarray(probes)
    ranks_out = _template_ranks(emb, gallery, probe_arr, np.asarray(probe_target))
    cmc = [float(np.mean(ranks_out <= k)) for k in range(1, max_rank + 1)]
    for k in ranks:
        result["rank" + str(k)] = float(np.mean(ranks_out <= k))
    result["cmc"] = cmc
    result.update({"_ranks": ranks_out, "_probe_index": probe_arr, "_gallery_index": np.asarray(gallery)})
    return result


def _identification_split(
    labels: np.ndarray, distract: set[str], lo: int, hi: int, rng: np.random.Generator
) -> tuple[list[int], list[int], list[int], list[int]]:
    """Each identity with two or more images (not in ``distract``): one template image into the gallery
    and lo..hi (as available) random others as probes. (gallery, probes, position in gallery of each
    probe's template, images of single-image identities)."""
    gallery: list[int] = []
    probes: list[int] = []
    probe_target: list[int] = []  # position in gallery of each probe's template
    single: list[int] = []
    for idx in by_identity(labels, distract).values():
        if len(idx) < 2:
            single.extend(idx.tolist())
            continue
        idx = rng.permutation(idx)
        count = min(int(rng.integers(lo, hi + 1)), len(idx) - 1)
        probes.extend(idx[1 : 1 + count].tolist())
        probe_target.extend([len(gallery)] * count)
        gallery.append(int(idx[0]))
    return gallery, probes, probe_target, single


def _template_ranks(emb: np.ndarray, gallery: list[int], probe_arr: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 1-based rank of each probe's template (gallery position ``target``) among the whole gallery."""
    g = emb[gallery]
    ranks_out = np.empty(len(probe_arr), dtype=np.int64)
    for s in range(0, len(probe_arr), _BLOCK):
        sims = emb[probe_arr[s : s + _BLOCK]] @ g.T
        rows = np.arange(sims.shape[0])
        correct = sims[rows, target[s : s + _BLOCK]]
        # rank = 1 + gallery images (other than the template) scoring >= the template: ties count against.
        ranks_out[s : s + _BLOCK] = (sims >= correct[:, None]).sum(axis=1)
    return ranks_out


# -------------------------------------------------------------------------------------- verification


def _mine_partners(emb: np.ndarray, codes: np.ndarray, anchors: np.ndarray, same: bool) -> np.ndarray:
    """For each anchor (a row of ``emb``), the least similar other image of its own identity
    (``same=True``) or the most similar image of another identity (``same=False``); -1 where none."""
    out = np.full(len(anchors), -1, dtype=np.int64)
    for s in range(0, len(anchors), _BLOCK):
        a = anchors[s : s + _BLOCK]
        sims = emb[a] @ emb.T
        mask = codes[a][:, None] == codes[None, :]
        if same:
            mask[np.arange(len(a)), a] = False
            pick = np.where(mask, sims, np.inf).argmin(axis=1)
            valid = mask.any(axis=1)
        else:
            pick = np.where(mask, -np.inf, sims).argmax(axis=1)
            valid = (~mask).any(axis=1)
        out[s : s + _BLOCK] = np.where(valid, pick, -1)
    return out


def _unique_pairs(used: np.ndarray, anchors: np.ndarray, partners: np.ndarray) -> list[tuple[int, int]]:
    """Distinct unordered pairs (as indices into the full embedding array), in anchor order."""
    seen, pairs = set(), []
    for a, b in zip(anchors.tolist(), partners.tolist()):
        if b < 0 or a == b:
            continue
        key = (int(used[min(a, b)]), int(used[max(a, b)]))
        if key not in seen:
            seen.add(key)
            pairs.append(key)
    return pairs


def _positive_partners(
    emb: np.ndarray, codes: np.ndarray, anchors: np.ndarray, positives: str, rng: np.random.Generator
) -> np.ndarray:
    """Each anchor's positive partner: a random other image of its identity (``positives="random"``) or
    the least similar one (``"hard"``); -1 where none."""
    if positives != "random":
        return _mine_partners(emb, codes, anchors, same=True)
    members = [np.flatnonzero(codes == c) for c in range(codes.max() + 1)]
    partner = np.full(len(anchors), -1, dtype=np.int64)
    for n, a in enumerate(anchors.tolist()):
        idx = members[codes[a]]
        if len(idx) > 1:
            j = int(rng.integers(len(idx) - 1))
            partner[n] = idx[idx != a][j]
    return partner


def _negative_partners(
    emb: np.ndarray, codes: np.ndarray, anchors: np.ndarray, negatives: str, rng: np.random.Generator
) -> np.ndarray:
    """Each anchor's negative partner: the most similar image of another identity (``negatives="hard"``)
    or a random one (``"random"``)."""
    if negatives == "hard":
        return _mine_partners(emb, codes, anchors, same=False)
    by_code = np.argsort(codes, kind="mergesort")
    size = np.bincount(codes)
    start = np.r_[0, np.cumsum(size)[:-1]]
    partner = np.empty(len(anchors), dtype=np.int64)
    for n, a in enumerate(anchors.tolist()):
        c = codes[a]
        j = int(rng.integers(len(codes) - size[c]))  # uniform over the images of other identities
        partner[n] = by_code[j + size[c] if j >= start[c] else j]
    return partner


def _fold_accuracies(
    scores: np.ndarray, y: np.ndarray, folds: int, rng: np.random.Generator
) -> tuple[int, np.ndarray, list[float], list[float]]:
    """k-fold accuracy (k = ``folds``, at least 2, at most one pair a fold): the threshold chosen on the
    other folds, applied to each held-out one. (k, fold of each pair, accuracies, thresholds)."""
    k = max(2, min(int(folds), len(scores)))
    fold_of = np.empty(len(scores), dtype=np.int64)
    for f, part in enumerate(np.array_split(rng.permutation(len(scores)), k)):
        fold_of[part] = f
    fold_acc, fold_thr = [], []
    for f in range(k):
        train = fold_of != f
        t, _ = best_threshold(scores[train], y[train])
        fold_thr.append(t)
        fold_acc.append(accuracy_at(scores[~train], y[~train], t))
    return k, fold_of, fold_acc, fold_thr


def _verification_pairs(
    emb: np.ndarray, labels: np.ndarray, ignore: set[str], negatives: str, positives: str, rng: np.random.Generator
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(positive pairs, negative pairs) as index pairs into ``emb``, anchors in a seeded random order."""
    groups = by_identity(labels, ignore)
    if len(groups) < 2:
        raise ValueError("verification needs at least two identities")
    used = np.sort(np.concatenate(list(groups.values())))  # images taking part, as indices into emb
    codes = np.unique(labels[used], return_inverse=True)[1]  # identity code of each used image
    anchors = rng.permutation(len(used))  # anchor order, as positions in `used`
    sub = emb[used]
    pos_pairs = _unique_pairs(used, anchors, _positive_partners(sub, codes, anchors, positives, rng))
    neg_pairs = _unique_pairs(used, anchors, _negative_partners(sub, codes, anchors, negatives, rng))
    return pos_pairs, neg_pairs


def _check_pair_choices(negatives: str, positives: str) -> None:
    """Refuse a way of choosing partners other than 'hard' or 'random'."""
    for name, value in (("negatives", negatives), ("positives", positives)):
        if value not in ("hard", "random"):
            raise ValueError(f"{name} must be 'hard' or 'random', got {value!r}")


def _scored_pairs(
    emb: np.ndarray, pos_pairs: list[tuple[int, int]], neg_pairs: list[tuple[int, int]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(index pairs, labels with 1 = same identity, cosine scores): the positive pairs, then the negative."""
    pair_idx = np.asarray(pos_pairs + neg_pairs, dtype=np.int64)
    y = np.r_[np.ones(len(pos_pairs), np.int64), np.zeros(len(neg_pairs), np.int64)]
    scores = np.einsum("ij,ij->i", emb[pair_idx[:, 0]], emb[pair_idx[:, 1]])
    return pair_idx, y, scores


def _reported_roc(scores: np.ndarray, y: np.ndarray) -> dict:
    """The ROC curve as reported: collinear points dropped, the +inf first threshold as None (JSON has no inf)."""
    fpr, tpr, thr = roc_curve(scores, y, drop_intermediate=True)
    return {
        "fpr": fpr.tolist(),
        "tpr": tpr.tolist(),
        "thresholds": [None if not np.isfinite(v) else float(v) for v in thr],
    }


def verification(
    emb,
    labels,
    seed: int = 0,
    pairs: int | None = None,
    folds: int = 10,
    negatives: str = "hard",
    positives: str = "random",
    ignore_labels: Iterable = (),
    fars: Sequence[float] = (1e-2, 1e-3),
) -> dict:
    """The paper's verification protocol; see the module docstring.

    Anchors are visited in a seeded random order; each gives at most one positive pair (a random other
    image of its identity; ``positives="hard"``: the least similar one, as the paper's harder variant)
    and one negative pair (``negatives="hard"``: the most similar image of another identity;
    ``"random"``: a random image of another identity). Duplicate pairs are dropped. ``pairs`` positive
    and as many negative pairs are kept (default: min(3000, available)); labels in ``ignore_labels``
    (e.g. 'unknown') take no part. TAR at a FAR is reported only with at least 1/FAR negative pairs.

    Returns accuracy (10-fold mean), accuracy_std, fold_accuracies, fold_thresholds, threshold and
    best_accuracy (best cut on all pairs), auc, roc (fpr/tpr/thresholds, collinear points dropped),
    tar_at_far, pair counts and mean scores; ``_scores``, ``_labels`` (1 = same identity), ``_pairs``
    (index pairs into ``emb``) and ``_folds`` (fold of each pair).
    """
    _check_pair_choices(negatives, positives)
    emb, labels = as_inputs(emb, labels)
    rng = np.random.default_rng(seed)
    pos_pairs, neg_pairs = _verification_pairs(emb, labels, {str(x) for x in ignore_labels}, negatives, positives, rng)
    n = min(DEFAULT_PAIRS if pairs is None else int(pairs), len(pos_pairs), len(neg_pairs))
    if n < 1:
        raise ValueError("not enough images for positive and negative pairs")
    pair_idx, y, scores = _scored_pairs(emb, pos_pairs[:n], neg_pairs[:n])
    k, fold_of, fold_acc, fold_thr = _fold_accuracies(scores, y, folds, rng)
    thr_all, acc_all = best_threshold(scores, y)
    fpr, tpr, _ = roc_curve(scores, y)
    return {
        "accuracy": float(np.mean(fold_acc)),
        "accuracy_std": float(np.std(fold_acc)),
        "folds": k,
        "fold_accuracies": fold_acc,
        "fold_thresholds": fold_thr,
        "threshold": thr_all,
        "best_accuracy": acc_all,
        "auc": auc(fpr, tpr),
        "tar_at_far": {f"{far:g}": (tar_at_far(fpr, tpr, far) if n * far >= 1 else None) for far in fars},
        "positive_pairs": n,
        "negative_pairs": n,
        "available_pairs": {"positive": len(pos_pairs), "negative": len(neg_pairs)},
        "negatives": negatives,
        "positives": positives,
        "mean_positive_score": float(scores[y == 1].mean()),
        "mean_negative_score": float(scores[y == 0].mean()),
        "roc": _reported_roc(scores, y),
        "seed": seed,
        "_scores": scores,
        "_labels": y,
        "_pairs": pair_idx,
        "_folds": fold_of,
    }
