"""Metrics of scored pairs for the verification protocol (pure numpy, no scikit-learn): ROC (FPR, TPR at
every distinct score), AUC (trapezoid; tied scores give a diagonal segment, i.e. half credit, which equals
the Mann-Whitney statistic), accuracy at a threshold, the most accurate threshold, and TAR at a FAR."""

from __future__ import annotations

import numpy as np


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
