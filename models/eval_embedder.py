"""Evaluate a cartoon-face embedder with the iCartoonFace recognition protocols.

Protocols (pure numpy, on L2-normalised embeddings and identity labels, deterministic for a seed):

* ``identification`` -- 1:N matching. For each probed identity one image goes to the gallery and 3-7
  other images (a random count in that range, as available) are probes; images whose label is in
  ``distractor_labels`` (CAVA 'unknown' faces, identities that are not probed) go to the gallery only.
  Every probe ranks the whole gallery by cosine similarity; the CMC curve is the fraction of probes
  whose correct gallery image is within rank k. Ties count against the probe (a gallery image scoring
  exactly as high as the correct one ranks ahead of it), so a collapsed model cannot score well.
* ``verification`` -- 1:1 matching on equal numbers of positive and negative pairs, negatives
  hard-mined by feature similarity (for each anchor, the most similar image of another identity).
  Accuracy is 10-fold: the threshold that maximises accuracy on 9 folds is applied to the held-out
  fold (mean +- std over folds). ROC (FPR, TPR at every distinct score), AUC (trapezoid; tied scores
  give a diagonal segment, i.e. half credit, which equals the Mann-Whitney statistic) and TAR at
  FAR 1e-2 / 1e-3 are computed here, with no scikit-learn.
* ``prelabel_precision_recall`` -- the paper's pre-labelling step: each probe takes the identity of its
  nearest reference ("typical image") when the similarity is greater than the threshold (0.6 in the
  paper), else stays unlabelled.

CLI (``toonface eval-embedder``)::

    toonface eval-embedder --weights models/weights/embedder.safetensors \\
        --data /work/shared/data/anime_identities/moeimouto/test \\
        --cava /work/shared/data/cava/scooby_doo --cava-split val --out eval.json

Result dictionaries keep bulky arrays (pair scores, pair labels, per-probe ranks) under keys starting
with ``_``; ``public`` drops them, and the CLI prints only the public part.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

DEFAULT_WEIGHTS = "models/weights/embedder.safetensors"
PRELABEL_THRESHOLD = 0.6
SWEEP_THRESHOLDS = tuple(round(0.30 + 0.05 * i, 2) for i in range(14))  # 0.30 .. 0.95
MARGIN_SWEEP = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3)
UNKNOWN = "unknown"
CMC_MAX_RANK = 10
DEFAULT_PAIRS = 3000  # the paper's verification set: 3,000 positive and 3,000 negative pairs
_BLOCK = 1024  # rows per block when mining over an N x N similarity matrix


# ------------------------------------------------------------------------------------------- helpers

def _as_inputs(emb, labels, views_allowed: bool = False) -> tuple[np.ndarray, np.ndarray]:
    emb = np.asarray(emb, dtype=np.float64)
    if emb.ndim != 2 and not (views_allowed and emb.ndim == 3):
        raise ValueError(f"embeddings must be N x d{' (or N x views x d)' if views_allowed else ''}, "
                         f"got shape {emb.shape}")
    labels = np.array([str(x) for x in labels], dtype=object)
    if len(labels) != len(emb):
        raise ValueError(f"{len(emb)} embeddings but {len(labels)} labels")
    return emb, labels


def public(result):
    """``result`` without keys starting with ``_`` (recursively): what is printed / written as JSON."""
    if isinstance(result, dict):
        return {k: public(v) for k, v in result.items() if not (isinstance(k, str) and k.startswith("_"))}
    if isinstance(result, (list, tuple)):
        return [public(v) for v in result]
    return result


def _by_identity(labels: np.ndarray, skip: set[str]) -> dict[str, np.ndarray]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, lab in enumerate(labels):
        if lab not in skip:
            groups[lab].append(i)
    return {k: np.asarray(v) for k, v in sorted(groups.items())}


# ------------------------------------------------------------------------------------ identification

def identification(emb, labels, seed: int = 0, probes_per_identity: tuple[int, int] = (3, 7),
                   distractor_labels: Iterable | None = None, ranks: Sequence[int] = (1, 5, 10)) -> dict:
    """The paper's identification protocol; see the module docstring.

    Identities (not in ``distractor_labels``) with a single image cannot be probed: their image joins
    the gallery as a distractor (counted in ``distractors`` and ``single_image_identities``).
    Returns ``rank<k>`` for each k in ``ranks``, ``cmc`` (ranks 1..max(10, max(ranks))), counts, and
    ``_ranks`` / ``_probe_index`` / ``_gallery_index`` (1-based rank of the correct gallery image per
    probe, and indices into ``emb``).
    """
    emb, labels = _as_inputs(emb, labels)
    lo, hi = int(probes_per_identity[0]), int(probes_per_identity[1])
    if not 1 <= lo <= hi:
        raise ValueError(f"probes_per_identity must be 1 <= lo <= hi, got {probes_per_identity}")
    distract = {str(x) for x in (distractor_labels or ())}
    rng = np.random.default_rng(seed)

    gallery: list[int] = []
    probes: list[int] = []
    probe_target: list[int] = []  # position in gallery of each probe's template
    single: list[int] = []
    for ident, idx in _by_identity(labels, distract).items():
        if len(idx) < 2:
            single.extend(idx.tolist())
            continue
        idx = rng.permutation(idx)
        count = min(int(rng.integers(lo, hi + 1)), len(idx) - 1)
        probes.extend(idx[1:1 + count].tolist())
        probe_target.extend([len(gallery)] * count)
        gallery.append(int(idx[0]))
    n_probed_identities = len(gallery)
    distractors = sorted([i for i, lab in enumerate(labels) if lab in distract] + single)
    gallery.extend(distractors)

    max_rank = max(CMC_MAX_RANK, max(ranks) if len(ranks) else 1)
    result = {"rank" + str(k): None for k in ranks}
    result.update({"cmc": [], "identities": n_probed_identities, "probes": len(probes),
                   "gallery": len(gallery), "distractors": len(distractors),
                   "single_image_identities": len(single), "probes_per_identity": [lo, hi], "seed": seed})
    if not probes:
        result.update({"_ranks": np.zeros(0, int), "_probe_index": np.zeros(0, int),
                       "_gallery_index": np.asarray(gallery, int)})
        return result

    g = emb[gallery]
    ranks_out = np.empty(len(probes), dtype=np.int64)
    target = np.asarray(probe_target)
    probe_arr = np.asarray(probes)
    for s in range(0, len(probes), _BLOCK):
        sims = emb[probe_arr[s:s + _BLOCK]] @ g.T
        rows = np.arange(sims.shape[0])
        correct = sims[rows, target[s:s + _BLOCK]]
        # rank = 1 + gallery images (other than the template) scoring >= the template: ties count against.
        ranks_out[s:s + _BLOCK] = (sims >= correct[:, None]).sum(axis=1)
    cmc = [float(np.mean(ranks_out <= k)) for k in range(1, max_rank + 1)]
    for k in ranks:
        result["rank" + str(k)] = float(np.mean(ranks_out <= k))
    result["cmc"] = cmc
    result.update({"_ranks": ranks_out, "_probe_index": probe_arr, "_gallery_index": np.asarray(gallery)})
    return result


# -------------------------------------------------------------------------------------- verification

def roc_curve(scores, labels, drop_intermediate: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, tpr, thresholds)``: a pair is accepted when ``score >= threshold``; one point per distinct
    score, from high to low, after a first point (0, 0) at threshold +inf. ``drop_intermediate`` drops
    points collinear with their neighbours (same rule as scikit-learn; the area is unchanged)."""
    scores = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC needs both positive and negative pairs")
    order = np.argsort(-scores, kind="mergesort")
    s, yy = scores[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last index of each run of equal scores
    tps = np.cumsum(yy)[last].astype(np.float64)
    fps = (last + 1 - tps).astype(np.float64)
    thr = s[last]
    if drop_intermediate and len(tps) > 2:
        keep = np.flatnonzero(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])
        fps, tps, thr = fps[keep], tps[keep], thr[keep]
    fps, tps, thr = np.r_[0.0, fps], np.r_[0.0, tps], np.r_[np.inf, thr]
    return fps / n_neg, tps / n_pos, thr


def auc(fpr, tpr) -> float:
    """Trapezoidal area under a ROC curve given by increasing FPR."""
    fpr, tpr = np.asarray(fpr, dtype=np.float64), np.asarray(tpr, dtype=np.float64)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def accuracy_at(scores, labels, threshold: float) -> float:
    """Fraction of pairs classified correctly when ``score >= threshold`` means same identity."""
    scores, y = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(bool)
    return float(np.mean((scores >= threshold) == y))


def best_threshold(scores, labels) -> tuple[float, float]:
    """``(threshold, accuracy)`` maximising accuracy over every distinct cut of ``scores``.

    Candidate cuts lie between consecutive distinct scores (the midpoint is returned, so the threshold
    generalises symmetrically), below the lowest (accept all) and above the highest (reject all). Among
    equally accurate cuts the lowest threshold wins."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    if len(s) == 0:
        raise ValueError("no pairs")
    order = np.argsort(s, kind="mergesort")
    s, y = s[order], y[order]
    first = np.r_[0, np.flatnonzero(np.diff(s)) + 1]  # first index of each run of equal scores
    uniq = s[first]
    neg_below = np.r_[0, np.cumsum(~y)][first]  # negatives strictly below each distinct score
    pos_at_or_above = int(y.sum()) - np.r_[0, np.cumsum(y)][first]
    correct = np.r_[neg_below + pos_at_or_above, int((~y).sum())]  # last: reject all
    k = int(np.argmax(correct))
    if k == 0:
        t = uniq[0] - max(1e-6, abs(uniq[0]) * 1e-9)
    elif k == len(uniq):
        t = uniq[-1] + max(1e-6, abs(uniq[-1]) * 1e-9)
    else:
        t = (uniq[k - 1] + uniq[k]) / 2.0
    return float(t), float(correct[k] / len(s))


def tar_at_far(fpr, tpr, far: float) -> float:
    """Highest TPR at a threshold whose FPR does not exceed ``far``."""
    fpr, tpr = np.asarray(fpr), np.asarray(tpr)
    ok = fpr <= far + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


def _mine_partners(emb: np.ndarray, codes: np.ndarray, anchors: np.ndarray, same: bool) -> np.ndarray:
    """For each anchor (a row of ``emb``), the least similar other image of its own identity
    (``same=True``) or the most similar image of another identity (``same=False``); -1 where none."""
    out = np.full(len(anchors), -1, dtype=np.int64)
    for s in range(0, len(anchors), _BLOCK):
        a = anchors[s:s + _BLOCK]
        sims = emb[a] @ emb.T
        mask = codes[a][:, None] == codes[None, :]
        if same:
            mask[np.arange(len(a)), a] = False
            pick = np.where(mask, sims, np.inf).argmin(axis=1)
            valid = mask.any(axis=1)
        else:
            pick = np.where(mask, -np.inf, sims).argmax(axis=1)
            valid = (~mask).any(axis=1)
        out[s:s + _BLOCK] = np.where(valid, pick, -1)
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


def verification(emb, labels, seed: int = 0, pairs: int | None = None, folds: int = 10,
                 negatives: str = "hard", positives: str = "random", ignore_labels: Iterable = (),
                 fars: Sequence[float] = (1e-2, 1e-3)) -> dict:
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
    if negatives not in ("hard", "random"):
        raise ValueError(f"negatives must be 'hard' or 'random', got {negatives!r}")
    if positives not in ("hard", "random"):
        raise ValueError(f"positives must be 'hard' or 'random', got {positives!r}")
    emb, labels = _as_inputs(emb, labels)
    ignore = {str(x) for x in ignore_labels}
    rng = np.random.default_rng(seed)
    groups = _by_identity(labels, ignore)
    if len(groups) < 2:
        raise ValueError("verification needs at least two identities")
    used = np.sort(np.concatenate(list(groups.values())))  # images taking part, as indices into emb
    codes = np.unique(labels[used], return_inverse=True)[1]  # identity code of each used image
    anchors = rng.permutation(len(used))  # anchor order, as positions in `used`
    sub = emb[used]

    # Positives: a random other image of the anchor's identity, or the least similar one.
    if positives == "random":
        members = [np.flatnonzero(codes == c) for c in range(codes.max() + 1)]
        partner = np.full(len(anchors), -1, dtype=np.int64)
        for n, a in enumerate(anchors.tolist()):
            idx = members[codes[a]]
            if len(idx) > 1:
                j = int(rng.integers(len(idx) - 1))
                partner[n] = idx[idx != a][j]
    else:
        partner = _mine_partners(sub, codes, anchors, same=True)
    pos_pairs = _unique_pairs(used, anchors, partner)

    # Negatives: the most similar image of another identity, or a random one.
    if negatives == "hard":
        partner = _mine_partners(sub, codes, anchors, same=False)
    else:
        by_code = np.argsort(codes, kind="mergesort")
        size = np.bincount(codes)
        start = np.r_[0, np.cumsum(size)[:-1]]
        partner = np.empty(len(anchors), dtype=np.int64)
        for n, a in enumerate(anchors.tolist()):
            c = codes[a]
            j = int(rng.integers(len(used) - size[c]))  # uniform over the images of other identities
            partner[n] = by_code[j + size[c] if j >= start[c] else j]
    neg_pairs = _unique_pairs(used, anchors, partner)

    available = min(len(pos_pairs), len(neg_pairs))
    n = min(DEFAULT_PAIRS if pairs is None else int(pairs), available)
    if n < 1:
        raise ValueError("not enough images for positive and negative pairs")
    pair_idx = np.asarray(pos_pairs[:n] + neg_pairs[:n], dtype=np.int64)
    y = np.r_[np.ones(n, np.int64), np.zeros(n, np.int64)]
    scores = np.einsum("ij,ij->i", emb[pair_idx[:, 0]], emb[pair_idx[:, 1]])

    # 10-fold accuracy: threshold from 9 folds, applied to the held-out one.
    k = max(2, min(int(folds), 2 * n))
    fold_of = np.empty(2 * n, dtype=np.int64)
    for f, part in enumerate(np.array_split(rng.permutation(2 * n), k)):
        fold_of[part] = f
    fold_acc, fold_thr = [], []
    for f in range(k):
        train = fold_of != f
        t, _ = best_threshold(scores[train], y[train])
        fold_thr.append(t)
        fold_acc.append(accuracy_at(scores[~train], y[~train], t))
    thr_all, acc_all = best_threshold(scores, y)

    fpr, tpr, thr = roc_curve(scores, y)
    area = auc(fpr, tpr)
    fpr_s, tpr_s, thr_s = roc_curve(scores, y, drop_intermediate=True)
    tar = {f"{far:g}": (tar_at_far(fpr, tpr, far) if n * far >= 1 else None) for far in fars}
    return {
        "accuracy": float(np.mean(fold_acc)), "accuracy_std": float(np.std(fold_acc)),
        "folds": k, "fold_accuracies": fold_acc, "fold_thresholds": fold_thr,
        "threshold": thr_all, "best_accuracy": acc_all, "auc": area, "tar_at_far": tar,
        "positive_pairs": n, "negative_pairs": n,
        "available_pairs": {"positive": len(pos_pairs), "negative": len(neg_pairs)},
        "negatives": negatives, "positives": positives,
        "mean_positive_score": float(scores[y == 1].mean()), "mean_negative_score": float(scores[y == 0].mean()),
        "roc": {"fpr": fpr_s.tolist(), "tpr": tpr_s.tolist(),
                "thresholds": [None if not np.isfinite(v) else float(v) for v in thr_s]},
        "seed": seed,
        "_scores": scores, "_labels": y, "_pairs": pair_idx, "_folds": fold_of,
    }


# ------------------------------------------------------------------------------------------ pre-label

def _prelabel_counts(best: np.ndarray, margin: np.ndarray, pred: np.ndarray, truth: np.ndarray,
                     known: np.ndarray, threshold: float, min_margin: float = 0.0) -> dict:
    labelled = (best > threshold) & (margin >= min_margin)
    correct = labelled & known & (pred == truth)
    n_lab, n_ok, n_known = int(labelled.sum()), int(correct.sum()), int(known.sum())
    return {
        "threshold": float(threshold), "min_margin": float(min_margin),
        "precision": (n_ok / n_lab) if n_lab else None,
        "recall": (n_ok / n_known) if n_known else None,
        "labelled": n_lab, "correct": n_ok,
        "wrong_labels_on_known": int((labelled & known).sum()) - n_ok,
        "false_labels_on_unknowns": int((labelled & ~known).sum()),
    }


def prelabel_precision_recall(ref_emb, ref_labels, probe_emb, probe_labels,
                              threshold: float = PRELABEL_THRESHOLD, min_margin: float = 0.0,
                              sweep: Sequence[float] = SWEEP_THRESHOLDS,
                              margin_sweep: Sequence[float] = MARGIN_SWEEP,
                              ref_albums=None, probe_albums=None) -> dict:
    """The paper's pre-labelling: a probe takes the identity of its most similar reference when the
    cosine similarity is greater than ``threshold``, else stays unlabelled. With ``min_margin`` > 0 it
    also needs that similarity to beat the runner-up identity's by ``min_margin`` (as the pipeline's
    ``prelabel_min_margin``).

    precision = correct / labelled; recall = correct / probes whose identity has a reference (those
    should be labelled). Probes whose identity has no reference should stay unlabelled: labels given to
    them are counted in ``false_labels_on_unknowns`` (they also lower precision). ``sweep`` repeats the
    counts for each threshold (at ``min_margin``), ``margin_sweep`` for each margin (at ``threshold``).
    Precision or recall is None when its denominator is 0. ``probe_emb`` may be (N, V, dim), each probe's
    views, matched as the pipeline's ``candidate_views`` matches them.

    ``nearest_accuracy``: the share of probes with a reference whose nearest identity is theirs, with no
    threshold and no margin. It measures the embedding alone, where precision and recall at 0.6 also
    measure how well the model's similarities sit around the threshold.

    ``ref_albums`` and ``probe_albums`` (per reference row and per probe): a probe is matched only
    against its own album's references (the pipeline's ``within_album``).
    """
    ref, ref_labels = _as_inputs(ref_emb, ref_labels)
    probe, probe_labels = _as_inputs(probe_emb, probe_labels, views_allowed=True)
    if len(ref) == 0:
        raise ValueError("no reference images")
    if ref.shape[1] != probe.shape[-1]:
        raise ValueError(f"reference dim {ref.shape[1]} != probe dim {probe.shape[-1]}")
    from pipeline.identity import nearest_identities, nearest_identities_by_album  # the pipeline's own rule

    names = np.unique(ref_labels)
    # Threshold -inf: every probe gets its nearest identity; the counts below apply each threshold.
    if probe_albums is None:
        nearest = nearest_identities(probe, ref, ref_labels, threshold=-np.inf)
    else:
        nearest = nearest_identities_by_album(probe, ref, ref_labels, -np.inf, 0.0, probe_albums, ref_albums)
    pred = nearest["prelabel"].to_numpy(dtype=object)
    best = nearest["prelabel_score"].to_numpy()
    margin = nearest["prelabel_margin"].fillna(np.inf).to_numpy()  # one identity: no runner-up to beat
    known = np.isin(probe_labels, names) if len(probe) else np.zeros(0, bool)
    out = _prelabel_counts(best, margin, pred, probe_labels, known, threshold, min_margin)
    # the nearest identity with no threshold and no margin: the recall of a threshold below every similarity
    out.update({"nearest_accuracy": _prelabel_counts(best, margin, pred, probe_labels, known, -np.inf)["recall"],
                "probes": len(probe), "known_probes": int(known.sum()),
                "unknown_probes": int((~known).sum()), "references": len(ref),
                "sweep": [_prelabel_counts(best, margin, pred, probe_labels, known, t, min_margin) for t in sweep],
                "margin_sweep": [_prelabel_counts(best, margin, pred, probe_labels, known, threshold, m)
                                 for m in margin_sweep],
                "_prediction": pred, "_similarity": best})
    return out


def reference_split(labels, choice: str = "first", seed: int = 0, no_reference: Iterable = (),
                    per_identity: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``(reference_index, probe_index)``: one reference per identity -- its first image in the given
    order (``choice="first"``; the CLI passes samples sorted by path) or a seeded random one -- and every
    other image as a probe. Labels in ``no_reference`` (e.g. 'unknown') are probes only.

    ``per_identity`` > 1 adds that many minus one seeded random images of the identity as further
    references (as faces people verified join the pipeline's references), always leaving one probe."""
    if choice not in ("first", "random"):
        raise ValueError(f"choice must be 'first' or 'random', got {choice!r}")
    if per_identity < 1:
        raise ValueError(f"per_identity must be at least 1, got {per_identity}")
    labels = np.array([str(x) for x in labels], dtype=object)
    rng = np.random.default_rng(seed)
    refs = []
    for _, idx in _by_identity(labels, {str(x) for x in no_reference}).items():
        first = int(idx[0]) if choice == "first" else int(idx[rng.integers(len(idx))])
        others = idx[idx != first]
        more = min(per_identity - 1, len(others) - 1)
        refs += [first] + (rng.choice(others, size=more, replace=False).tolist() if more > 0 else [])
    refs = np.asarray(sorted(refs), dtype=np.int64)
    probes = np.setdiff1d(np.arange(len(labels)), refs)
    return refs, probes


def reference_rows(emb, labels, refs, views=None) -> tuple[np.ndarray, np.ndarray]:
    """The reference embeddings and their labels: one vector per reference image, or with ``views``
    ((N, V, dim), as ``Embedder.embed_views`` gives) every view of it, each under the image's label
    (as the pipeline's ``reference_views`` setting matches them)."""
    labels = np.asarray(labels, dtype=object)
    if views is None:
        return np.asarray(emb)[refs], labels[refs]
    chosen = np.asarray(views)[refs]
    return chosen.reshape(-1, chosen.shape[-1]), np.repeat(labels[refs], chosen.shape[1])


def reference_row_albums(albums, refs, views=None) -> np.ndarray:
    """The album of each row `reference_rows` gives (each reference's, once per view with ``views``)."""
    chosen = np.asarray(albums, dtype=object)[refs]
    return chosen if views is None else np.repeat(chosen, np.asarray(views).shape[1])


def prelabel_over_reference_draws(emb, labels, draws: int, *, seed: int = 0, no_reference: Iterable = (),
                                  per_identity: int = 1, threshold: float = PRELABEL_THRESHOLD,
                                  min_margin: float = 0.0, margin_sweep: Sequence[float] = MARGIN_SWEEP,
                                  views=None, probe_views=None, albums=None) -> dict:
    """The pre-label protocol repeated with ``draws`` seeded random reference choices (seeds ``seed``,
    ``seed``+1, ...). Which image is "the typical one" moves precision and recall a lot on a small set,
    so one draw alone can flatter or wrong a model: this gives the mean, spread and worst draw, at
    ``min_margin`` and for each margin of ``margin_sweep``. ``views``: references are matched by these
    views of theirs; ``probe_views``: probes by these views of theirs ((N, V, dim) each). ``albums`` (per
    image): probes are matched only against their own album's references."""
    lab = np.asarray([str(x) for x in labels], dtype=object)
    emb = np.asarray(emb)
    probe_rows = emb if probe_views is None else np.asarray(probe_views)
    per_draw, nearest = [], []
    for d in range(draws):
        refs, probes = reference_split(lab, "random", seed + d, no_reference=no_reference, per_identity=per_identity)
        by_album = {} if albums is None else {"ref_albums": reference_row_albums(albums, refs, views),
                                              "probe_albums": np.asarray(albums, dtype=object)[probes]}
        r = prelabel_precision_recall(*reference_rows(emb, lab, refs, views), probe_rows[probes], lab[probes],
                                      threshold, min_margin, sweep=(), margin_sweep=margin_sweep, **by_album)
        per_draw.append([(m["precision"], m["recall"]) for m in [r] + r["margin_sweep"]])
        nearest.append(r["nearest_accuracy"])

    def summary(k: int, margin: float) -> dict:
        out = {"min_margin": float(margin)}
        for j, name in enumerate(("precision", "recall")):
            # Precision is undefined (None) in a draw that labels nothing: such draws are left out.
            v = np.array([draw[k][j] for draw in per_draw if draw[k][j] is not None], float)
            out.update({f"{name}_mean": float(v.mean()) if len(v) else None,
                        f"{name}_std": float(v.std()) if len(v) else None,
                        f"{name}_min": float(v.min()) if len(v) else None})
        return out

    if not draws:
        return {"draws": 0}
    nearest = np.array([a for a in nearest if a is not None], float)
    return {"draws": draws, "seeds": [seed, seed + draws - 1], "threshold": float(threshold),
            **summary(0, min_margin), "margin_sweep": [summary(i + 1, m) for i, m in enumerate(margin_sweep)],
            "nearest_accuracy_mean": float(nearest.mean()) if len(nearest) else None,
            "nearest_accuracy_std": float(nearest.std()) if len(nearest) else None}


# ------------------------------------------------------------------------------------------------- CLI

def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--weights", default=DEFAULT_WEIGHTS, metavar="PATH.safetensors",
                   help=f"embedder file (default {DEFAULT_WEIGHTS})")
    p.add_argument("--data", action="append", default=[], metavar="DIR",
                   help="folder of <identity>/<image> crops (repeatable)")
    p.add_argument("--cava", action="append", default=[], metavar="FOLDER",
                   help="folder with a CAVA boxes.csv; faces cut at enlarged rate 1.0 (repeatable)")
    p.add_argument("--cava-split", default="val", help="boxes.csv split to evaluate on (default val)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--unknown-as-distractors", dest="unknown", action="store_const", const="distractors",
                   default="distractors",
                   help="CAVA 'unknown' faces join the identification gallery as distractors and the "
                        "pre-label probes (no reference); never in verification (default)")
    g.add_argument("--exclude-unknown", dest="unknown", action="store_const", const="exclude",
                   help="leave CAVA 'unknown' faces out entirely")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--probes-min", type=int, default=3, help="fewest probes per identity (default 3)")
    p.add_argument("--probes-max", type=int, default=7, help="most probes per identity (default 7)")
    p.add_argument("--pairs", type=int, default=None,
                   help=f"verification pairs of each kind (default min({DEFAULT_PAIRS}, available))")
    p.add_argument("--folds", type=int, default=10)
    p.add_argument("--prelabel-threshold", type=float, default=PRELABEL_THRESHOLD)
    p.add_argument("--prelabel-min-margin", type=float, default=0.0,
                   help="a pre-label also needs this margin over the runner-up identity (default 0: the paper)")
    p.add_argument("--prelabel-reference", choices=("first", "random"), default="first",
                   help="reference per identity: first image in path order, or a seeded random one")
    p.add_argument("--prelabel-references", type=int, default=1, metavar="K",
                   help="references per identity: the one above plus K-1 seeded random images "
                        "(as verified faces join the references; default 1: the paper)")
    p.add_argument("--reference-draws", type=int, default=20, metavar="N",
                   help="also repeat the pre-label with N seeded random reference choices and report mean, "
                        "spread and worst draw (default 20; 0: off)")
    p.add_argument("--reference-views", action="store_true",
                   help="match pre-label references by the crop and its centred crops (the pipeline's "
                        "reference_views setting); embeds every image 4 times")
    p.add_argument("--candidate-views", action="store_true",
                   help="match pre-label probes by the mean over the same views of theirs (the pipeline's "
                        "candidate_views setting); embeds every image 4 times")
    p.add_argument("--album-mean", action="store_true",
                   help="subtract each album's mean from what pre-labels match (the pipeline's subtract_album_mean "
                        "setting); each --data or --cava source is one album")
    p.add_argument("--within-album", action="store_true",
                   help="match pre-label probes only against their own album's references (the pipeline's "
                        "within_album setting); each --data or --cava source is one album")
    p.add_argument("--device", default="cpu", help="cpu|cuda|auto (default cpu)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    p.add_argument("--out", default=None, metavar="FILE.json", help="also write the JSON here")
    return p


def _embed_samples(model, samples, batch_size: int, views: bool = False) -> np.ndarray:
    """Embeddings in chunks, so that only one chunk of images is in memory at a time: (N, dim), or
    with ``views`` every image's reference views (N, V, dim)."""
    chunks = []
    step = max(1, batch_size) * 4
    for i in range(0, len(samples), step):
        images = [s.load() for s in samples[i:i + step]]
        chunks.append(model.embed_views(images, batch_size) if views else model.embed(images, batch_size=batch_size))
    if not chunks:
        return np.zeros((0, model.dim), np.float32)
    return np.concatenate(chunks)


def evaluate(emb: np.ndarray, labels: Sequence[str], *, unknown_labels: Iterable[str] = (), seed: int = 0,
             probes_per_identity: tuple[int, int] = (3, 7), pairs: int | None = None, folds: int = 10,
             prelabel_threshold: float = PRELABEL_THRESHOLD, prelabel_reference: str = "first",
             prelabel_min_margin: float = 0.0, prelabel_references: int = 1, reference_draws: int = 0,
             reference_views: np.ndarray | None = None, candidate_views: np.ndarray | None = None,
             album_mean: bool = False, albums: Sequence[str] | None = None, within_album: bool = False) -> dict:
    """All three protocols on one set of embeddings (``labels`` in the order of ``emb``; for the
    'first' reference choice, pass them sorted by path). ``unknown_labels``: distractors in
    identification, probes without reference in pre-labelling, ignored in verification.
    ``reference_views`` ((N, V, dim)): pre-label references are matched by all their views;
    ``candidate_views`` ((N, V, dim)): pre-label probes are matched by theirs (the mean over them).
    ``albums``: each image's album (None: the set is one album). ``album_mean``: pre-labels match after
    each album's mean is subtracted (the pipeline's ``subtract_album_mean``: the mean of the rows probes
    are matched by, over every image of the album). ``within_album``: probes are matched only against
    their own album's references (the pipeline's ``within_album``)."""
    unknown = sorted({str(x) for x in unknown_labels})
    labels = [str(x) for x in labels]
    ident = identification(emb, labels, seed=seed, probes_per_identity=probes_per_identity,
                           distractor_labels=unknown)
    try:
        verif = verification(emb, labels, seed=seed, pairs=pairs, folds=folds, ignore_labels=unknown)
    except ValueError as e:
        verif = {"error": str(e)}
    refs, probes = reference_split(labels, prelabel_reference, seed, no_reference=unknown,
                                   per_identity=prelabel_references)
    lab = np.asarray(labels, dtype=object)
    emb = np.asarray(emb)
    probe_rows = emb if candidate_views is None else np.asarray(candidate_views)
    if album_mean:  # identification and verification above compare the plain embeddings, as the pipeline does
        from pipeline.identity import subtract_mean

        album_of = np.asarray(["" for _ in range(len(emb))] if albums is None else albums, dtype=object)
        means = {a: probe_rows[album_of == a].reshape(-1, probe_rows.shape[-1]).astype(np.float64).mean(axis=0)
                 .astype(np.float32) for a in dict.fromkeys(album_of)}
        per_row = [means[a] for a in album_of]
        emb, probe_rows = subtract_mean(emb, per_row), subtract_mean(probe_rows, per_row)
        if reference_views is not None:
            reference_views = subtract_mean(reference_views, per_row)
        candidate_views = probe_rows if candidate_views is not None else None
    if within_album and albums is None:
        raise ValueError("within_album needs each image's album")
    by_album = {} if not within_album else {"ref_albums": reference_row_albums(albums, refs, reference_views),
                                            "probe_albums": np.asarray(albums, dtype=object)[probes]}
    pre = prelabel_precision_recall(*reference_rows(emb, lab, refs, reference_views), probe_rows[probes], lab[probes],
                                    prelabel_threshold, prelabel_min_margin, **by_album)
    pre["reference"] = prelabel_reference
    pre["references_per_identity"] = prelabel_references
    pre["reference_views"] = 1 if reference_views is None else int(np.asarray(reference_views).shape[1])
    pre["candidate_views"] = 1 if candidate_views is None else int(np.asarray(candidate_views).shape[1])
    pre["album_mean"] = bool(album_mean)
    pre["within_album"] = bool(within_album)
    if reference_draws:
        pre["over_reference_draws"] = prelabel_over_reference_draws(
            emb, lab, reference_draws, seed=seed, no_reference=unknown, per_identity=prelabel_references,
            threshold=prelabel_threshold, min_margin=prelabel_min_margin, views=reference_views,
            probe_views=candidate_views, albums=albums if within_album else None)
    return {"identification": ident, "verification": verif, "prelabel": pre}


def run(args: argparse.Namespace) -> int:
    import torch

    from models.embedder import load_embedder
    from models.train_embedder import cava_identity_crops, identity_folders, resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    samples, sources, albums = [], [], []  # albums: each sample's source (one album each)
    for d in args.data:
        got = identity_folders(d)
        samples += got
        albums += [f"folders:{d}"] * len(got)
        sources.append(f"folders:{d}")
    unknown: set[str] = set()
    for c in args.cava:
        skip = ("unknown",) if args.unknown == "exclude" else ()
        got = cava_identity_crops(c, args.cava_split, skip_identities=skip)
        unknown |= {s.identity for s in got if s.identity.rsplit("/", 1)[-1] == UNKNOWN}
        samples += got
        albums += [f"cava:{c}:{args.cava_split}"] * len(got)
        sources.append(f"cava:{c}:{args.cava_split}")
    if not samples:
        print("eval-embedder: no data; give --data DIR and/or --cava FOLDER", file=sys.stderr)
        return 2
    if not Path(args.weights).is_file():
        print(f"eval-embedder: no weights file {args.weights}", file=sys.stderr)
        return 2
    # Sorted by path (then box) so that "first image of each identity" is well defined and stable.
    pairs = sorted(zip(samples, albums), key=lambda pair: (pair[0].identity, pair[0].path, pair[0].box or ()))
    samples, albums = [s for s, _ in pairs], [a for _, a in pairs]
    model, meta = load_embedder(args.weights, resolve_device(args.device))
    need_views = args.reference_views or args.candidate_views
    views = _embed_samples(model, samples, args.batch_size, views=True) if need_views else None
    emb = views[:, 0] if views is not None else _embed_samples(model, samples, args.batch_size)
    labels = [s.identity for s in samples]
    res = evaluate(emb, labels, unknown_labels=unknown, seed=args.seed,
                   probes_per_identity=(args.probes_min, args.probes_max), pairs=args.pairs, folds=args.folds,
                   prelabel_threshold=args.prelabel_threshold, prelabel_reference=args.prelabel_reference,
                   prelabel_min_margin=args.prelabel_min_margin, prelabel_references=args.prelabel_references,
                   reference_draws=args.reference_draws, reference_views=views if args.reference_views else None,
                   candidate_views=views if args.candidate_views else None, album_mean=args.album_mean,
                   albums=albums, within_album=args.within_album)
    known = {lab for lab in labels if lab not in unknown}
    report = {"model_id": meta["model_id"], "weights": str(args.weights), "sources": sources,
              "images": len(samples), "identities": len(known),
              "unknown_images": sum(lab in unknown for lab in labels), "unknown": args.unknown,
              **public(res)}
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="toonface eval-embedder", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
