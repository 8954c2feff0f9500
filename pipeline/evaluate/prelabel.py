"""The paper's pre-labelling protocol, under the pipeline's own matching rule
(``pipeline.identity.matching``): each probe takes the identity of its nearest reference ("typical
image") when the similarity is greater than the threshold (0.6 in the paper), else stays unlabelled.

The pipeline's settings are measured here as it applies them: several references per identity
(``per_identity``), references matched by several views of theirs (``reference_views``), probes by the
mean over theirs (``candidate_views``), a margin over the runner-up identity (``prelabel_min_margin``)
and matching within each album (``within_album``). ``prelabel_over_reference_draws`` repeats the protocol
over seeded random reference choices. Result keys starting with ``_`` hold bulky arrays.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from pipeline.evaluate.recognition import as_inputs, by_identity
from pipeline.identity.matching import (  # the pipeline's own rule
    nearest_identities,
    nearest_identities_by_album,
    subtract_mean,
)

PRELABEL_THRESHOLD = 0.6
SWEEP_THRESHOLDS = tuple(round(0.30 + 0.05 * i, 2) for i in range(14))  # 0.30 .. 0.95
MARGIN_SWEEP = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3)


def _prelabel_counts(
    best: np.ndarray,
    margin: np.ndarray,
    pred: np.ndarray,
    truth: np.ndarray,
    known: np.ndarray,
    threshold: float,
    min_margin: float = 0.0,
) -> dict:
    labelled = (best > threshold) & (margin >= min_margin)
    correct = labelled & known & (pred == truth)
    n_lab, n_ok, n_known = int(labelled.sum()), int(correct.sum()), int(known.sum())
    return {
        "threshold": float(threshold),
        "min_margin": float(min_margin),
        "precision": (n_ok / n_lab) if n_lab else None,
        "recall": (n_ok / n_known) if n_known else None,
        "labelled": n_lab,
        "correct": n_ok,
        "wrong_labels_on_known": int((labelled & known).sum()) - n_ok,
        "false_labels_on_unknowns": int((labelled & ~known).sum()),
    }


def prelabel_precision_recall(
    ref_emb,
    ref_labels,
    probe_emb,
    probe_labels,
    threshold: float = PRELABEL_THRESHOLD,
    min_margin: float = 0.0,
    sweep: Sequence[float] = SWEEP_THRESHOLDS,
    margin_sweep: Sequence[float] = MARGIN_SWEEP,
    ref_albums=None,
    probe_albums=None,
) -> dict:
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
    ref, ref_labels, probe, probe_labels = _checked_prelabel_inputs(ref_emb, ref_labels, probe_emb, probe_labels)
    names = np.unique(ref_labels)
    pred, best, margin = _nearest_identity(ref, ref_labels, probe, ref_albums, probe_albums)
    known = np.isin(probe_labels, names) if len(probe) else np.zeros(0, bool)
    out = _prelabel_counts(best, margin, pred, probe_labels, known, threshold, min_margin)
    # the nearest identity with no threshold and no margin: the recall of a threshold below every similarity
    out.update(
        {
            "nearest_accuracy": _prelabel_counts(best, margin, pred, probe_labels, known, -np.inf)["recall"],
            "probes": len(probe),
            "known_probes": int(known.sum()),
            "unknown_probes": int((~known).sum()),
            "references": len(ref),
            "sweep": [_prelabel_counts(best, margin, pred, probe_labels, known, t, min_margin) for t in sweep],
            "margin_sweep": [
                _prelabel_counts(best, margin, pred, probe_labels, known, threshold, m) for m in margin_sweep
            ],
            "_prediction": pred,
            "_similarity": best,
        }
    )
    return out


def _checked_prelabel_inputs(
    ref_emb, ref_labels, probe_emb, probe_labels
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """References and probes as arrays (probes may be (N, V, dim)), refusing no references or
    mismatched dimensions."""
    ref, ref_labels = as_inputs(ref_emb, ref_labels)
    probe, probe_labels = as_inputs(probe_emb, probe_labels, views_allowed=True)
    if len(ref) == 0:
        raise ValueError("no reference images")
    if ref.shape[1] != probe.shape[-1]:
        raise ValueError(f"reference dim {ref.shape[1]} != probe dim {probe.shape[-1]}")
    return ref, ref_labels, probe, probe_labels


def _nearest_identity(
    ref: np.ndarray, ref_labels: np.ndarray, probe: np.ndarray, ref_albums, probe_albums
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each probe's nearest identity under the pipeline's rule, its similarity, and its margin over the
    runner-up identity (inf where there is none). (prediction, similarity, margin)"""
    # Threshold -inf: every probe gets its nearest identity; the counts apply each threshold after.
    if probe_albums is None:
        nearest = nearest_identities(probe, ref, ref_labels, threshold=-np.inf)
    else:
        nearest = nearest_identities_by_album(probe, ref, ref_labels, -np.inf, 0.0, probe_albums, ref_albums)
    pred = nearest["prelabel"].to_numpy(dtype=object)
    best = nearest["prelabel_score"].to_numpy()
    margin = nearest["prelabel_margin"].fillna(np.inf).to_numpy()  # one identity: no runner-up to beat
    return pred, best, margin


def reference_split(
    labels, choice: str = "first", seed: int = 0, no_reference: Iterable = (), per_identity: int = 1
) -> tuple[np.ndarray, np.ndarray]:
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
    for _, idx in by_identity(labels, {str(x) for x in no_reference}).items():
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


def within_album_arguments(albums, refs, probes, views=None) -> dict:
    """The ``ref_albums`` and ``probe_albums`` arguments of `prelabel_precision_recall` for the reference
    and probe indices ``refs`` and ``probes`` (``views`` as `reference_rows` takes them); none when
    ``albums`` (per image) is None, so that every probe is matched against every reference."""
    if albums is None:
        return {}
    return {
        "ref_albums": reference_row_albums(albums, refs, views),
        "probe_albums": np.asarray(albums, dtype=object)[probes],
    }


def prelabel_over_reference_draws(
    emb,
    labels,
    draws: int,
    *,
    seed: int = 0,
    no_reference: Iterable = (),
    per_identity: int = 1,
    threshold: float = PRELABEL_THRESHOLD,
    min_margin: float = 0.0,
    margin_sweep: Sequence[float] = MARGIN_SWEEP,
    views=None,
    probe_views=None,
    albums=None,
) -> dict:
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
        r = prelabel_precision_recall(
            *reference_rows(emb, lab, refs, views),
            probe_rows[probes],
            lab[probes],
            threshold,
            min_margin,
            sweep=(),
            margin_sweep=margin_sweep,
            **within_album_arguments(albums, refs, probes, views),
        )
        per_draw.append([(m["precision"], m["recall"]) for m in [r] + r["margin_sweep"]])
        nearest.append(r["nearest_accuracy"])
    if not draws:
        return {"draws": 0}
    nearest = np.array([a for a in nearest if a is not None], float)
    return {
        "draws": draws,
        "seeds": [seed, seed + draws - 1],
        "threshold": float(threshold),
        **_draw_summary(per_draw, 0, min_margin),
        "margin_sweep": [_draw_summary(per_draw, i + 1, m) for i, m in enumerate(margin_sweep)],
        "nearest_accuracy_mean": float(nearest.mean()) if len(nearest) else None,
        "nearest_accuracy_std": float(nearest.std()) if len(nearest) else None,
    }


def _draw_summary(per_draw: list[list[tuple]], k: int, margin: float) -> dict:
    """Mean, spread and worst precision and recall over the draws, at the ``k``-th margin setting of each
    draw's ``(precision, recall)`` list (0: the protocol's own margin, then ``margin_sweep``)."""
    out = {"min_margin": float(margin)}
    for j, name in enumerate(("precision", "recall")):
        # Precision is undefined (None) in a draw that labels nothing: such draws are left out.
        v = np.array([draw[k][j] for draw in per_draw if draw[k][j] is not None], float)
        out.update(
            {
                f"{name}_mean": float(v.mean()) if len(v) else None,
                f"{name}_std": float(v.std()) if len(v) else None,
                f"{name}_min": float(v.min()) if len(v) else None,
            }
        )
    return out


def prelabel_report(
    emb,
    labels: list[str],
    unknown: list[str],
    *,
    seed: int,
    threshold: float,
    reference: str,
    min_margin: float,
    references: int,
    draws: int,
    reference_views: np.ndarray | None,
    candidate_views: np.ndarray | None,
    album_mean: bool,
    albums: Sequence[str] | None,
    within_album: bool,
) -> dict:
    """The pre-label protocol under the pipeline's settings, as ``pipeline.evaluate.embedder.evaluate``
    reports it (see its arguments): one reference choice, the settings it ran under and, with ``draws``,
    the spread over seeded random reference choices. ``unknown``: labels that get no reference."""
    refs, probes = reference_split(labels, reference, seed, no_reference=unknown, per_identity=references)
    lab = np.asarray(labels, dtype=object)
    emb = np.asarray(emb)
    probe_rows = emb if candidate_views is None else np.asarray(candidate_views)
    if album_mean:  # evaluate's identification and verification compare the plain embeddings, as the pipeline does
        emb, probe_rows, reference_views = _album_mean_subtracted(emb, probe_rows, reference_views, albums)
        candidate_views = probe_rows if candidate_views is not None else None
    if within_album and albums is None:
        raise ValueError("within_album needs each image's album")
    match_albums = albums if within_album else None
    pre = prelabel_precision_recall(
        *reference_rows(emb, lab, refs, reference_views),
        probe_rows[probes],
        lab[probes],
        threshold,
        min_margin,
        **within_album_arguments(match_albums, refs, probes, reference_views),
    )
    pre["reference"] = reference
    pre["references_per_identity"] = references
    pre["reference_views"] = _view_count(reference_views)
    pre["candidate_views"] = _view_count(candidate_views)
    pre["album_mean"] = bool(album_mean)
    pre["within_album"] = bool(within_album)
    if draws:
        pre["over_reference_draws"] = prelabel_over_reference_draws(
            emb,
            lab,
            draws,
            seed=seed,
            no_reference=unknown,
            per_identity=references,
            threshold=threshold,
            min_margin=min_margin,
            views=reference_views,
            probe_views=candidate_views,
            albums=match_albums,
        )
    return pre


def _album_mean_subtracted(
    emb: np.ndarray, probe_rows: np.ndarray, reference_views: np.ndarray | None, albums: Sequence[str] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``emb``, ``probe_rows`` and ``reference_views`` less each image's album mean, as the pipeline's
    ``subtract_album_mean``: the mean of the rows probes are matched by, over every image of the album."""
    album_of = np.asarray(["" for _ in range(len(emb))] if albums is None else albums, dtype=object)
    means = {
        a: probe_rows[album_of == a]
        .reshape(-1, probe_rows.shape[-1])
        .astype(np.float64)
        .mean(axis=0)
        .astype(np.float32)
        for a in dict.fromkeys(album_of)
    }
    per_row = [means[a] for a in album_of]
    emb, probe_rows = subtract_mean(emb, per_row), subtract_mean(probe_rows, per_row)
    if reference_views is not None:
        reference_views = subtract_mean(reference_views, per_row)
    return emb, probe_rows, reference_views


def _view_count(views: np.ndarray | None) -> int:
    """Views per image that pre-labels match by (1: the plain embedding)."""
    return 1 if views is None else int(np.asarray(views).shape[1])
