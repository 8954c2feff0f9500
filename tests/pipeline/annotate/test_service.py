"""The annotation service without HTTP: queue order, undo, gold items, agreement, the audit
trail's guarantees, the merge into the manifest's labels table, the login throttle."""

import argparse
import json
import sqlite3
import time

import pytest

from data_manifest import Manifest
from pipeline.annotate import cli as annotate_cli
from pipeline.annotate import db as annotate_db
from pipeline.annotate.catalogue import random_rank
from pipeline.annotate.merge import merge_decisions, pending_labels, random_order_faces
from pipeline.annotate.service import AnnotationService, LoginThrottle, Settings
from pipeline.annotate.stats import cohen_kappa


def ids(items):
    return [i["face_id"] for i in items]


def test_queue_orders(data_root):
    root, _ = data_root
    by = {
        order: ids(AnnotationService(root, Settings(order=order, gold_rate=0)).queue("a", 50))
        for order in ("score-desc", "score-asc", "margin", "random")
    }
    assert by["score-desc"][:3] == ["p0", "p1", "p2"] and by["score-desc"][-1] == "g5"
    assert by["score-asc"] == list(reversed(by["score-desc"]))
    assert by["margin"][0] == "p2"  # 0.91 vs 0.88: the most ambiguous first
    # references, dropped and unlabelled faces are never candidates
    assert not {f for f in by["score-desc"] if f.startswith(("ref-", "x-"))}
    assert len(by["score-desc"]) == 16
    # random: the same faces in a fixed shuffle, the same for every annotator and restart
    assert sorted(by["random"]) == sorted(by["score-desc"]) and by["random"] not in (by["score-desc"], by["score-asc"])
    assert ids(AnnotationService(root, Settings(order="random", gold_rate=0)).queue("b", 50)) == by["random"]


def test_skip_goes_last_and_undo_brings_an_item_back(data_root):
    root, _ = data_root
    svc = AnnotationService(root, Settings(gold_rate=0))
    svc.decide("a", "p0", "toon/alice", "skip")
    assert ids(svc.queue("a", 20))[0] == "p1" and ids(svc.queue("a", 20))[-1] == "p0"
    svc.decide("a", "p1", "toon/bob", "same")
    undone = svc.undo("a")
    assert [r["face_id"] for r in undone] == ["p1"]
    assert ids(svc.queue("a", 2, front=["p1"])) == ["p1", "p2"]
    assert svc.log.effective("a", "p1") is None
    svc.undo("a")  # then the skip
    assert ids(svc.queue("a", 1)) == ["p0"]
    with pytest.raises(Exception, match="nothing to undo"):
        svc.undo("a")


def test_the_audit_trail_is_append_only_and_durable(data_root):
    root, _ = data_root
    svc = AnnotationService(root, Settings(gold_rate=0))
    svc.decide("a", "p0", "toon/alice", "same", time_ms=640)
    svc.undo("a", time_ms=300)
    svc.db.add_gold([("k0", "toon/dan")], source="test")
    assert svc.db.pragma("journal_mode") == "wal" and svc.db.pragma("synchronous") == 2  # FULL
    conn = sqlite3.connect(root / "annotations" / "decisions.sqlite")
    rows = conn.execute(
        "SELECT decision, supersedes, annotator, time_ms, score, embedder, decided_at FROM decisions ORDER BY id"
    ).fetchall()
    assert rows[0][:1] == ("same",) and rows[1][:2] == ("undo", 1)
    assert rows[0][2:6] == ("a", 640, 0.95, "emb-test-0001") and rows[0][6].endswith("+00:00")
    for sql in (
        "UPDATE decisions SET decision='different'",
        "DELETE FROM decisions",
        "DELETE FROM gold",
        "UPDATE gold SET identity='x'",
    ):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute(sql)


def test_decisions_record_their_queue_order_and_random_pair_judgements_are_the_sample(data_root):
    root, _ = data_root
    shuffled = AnnotationService(root, Settings(order="random", gold_rate=0))
    f0, f1, f2, f3 = shuffled.queue("a", 4)
    shuffled.decide("a", f0["face_id"], f0["proposed"], "same")
    shuffled.decide("a", f1["face_id"], f1["proposed"], "different")
    shuffled.decide("a", f2["face_id"], f2["proposed"], "skip")  # not judged
    shuffled.decide("a", f3["face_id"], f3["proposed"], "same")
    shuffled.undo("a")  # f3's decision no longer stands
    grid = shuffled.grid("c")  # one identity at a time, beyond the random queue's reach
    shuffled.confirm_grid("c", grid["identity"], [i["face_id"] for i in grid["items"]], wrong=[])
    surest = AnnotationService(root, Settings(order="score-desc", gold_rate=0))
    top = surest.queue("b", 1)[0]
    surest.decide("b", top["face_id"], top["proposed"], "same")
    conn = sqlite3.connect(root / "annotations" / "decisions.sqlite")
    orders = conn.execute("SELECT annotator, mode, decision, queue_order FROM decisions ORDER BY id").fetchall()
    assert orders[:5] == [("a", "pair", d, "random") for d in ("same", "different", "skip", "same", "undo")]
    assert {o[1:] for o in orders if o[0] == "c"} == {("grid", "same", "random")}
    assert orders[-1] == ("b", "pair", "same", "score-desc")
    assert random_order_faces(root) == {f0["face_id"], f1["face_id"]}


def test_the_random_sample_stops_at_a_skipped_face_until_someone_judges_it(data_root):
    root, _ = data_root
    shuffled = AnnotationService(root, Settings(order="random", gold_rate=0))
    f0, f1, f2, f3 = shuffled.queue("a", 4)
    shuffled.decide("a", f0["face_id"], f0["proposed"], "same")
    shuffled.decide("a", f1["face_id"], f1["proposed"], "skip")  # a hard one, left for later
    shuffled.decide("a", f2["face_id"], f2["proposed"], "different")
    shuffled.decide("a", f3["face_id"], f3["proposed"], "same")
    # f2 and f3 were judged, but a sample that keeps them and lacks f1 leaves out the faces people
    # hesitate on: it is the shuffle's prefix up to the open skip
    assert random_order_faces(root) == {f0["face_id"]}
    assert ids(shuffled.queue("b", 1)) == [f1["face_id"]]  # no one judged f1: b gets it first
    shuffled.decide("b", f1["face_id"], f1["proposed"], "same")
    assert random_order_faces(root) == {f["face_id"] for f in (f0, f1, f2, f3)}


def test_the_random_sample_holds_faces_judged_first_in_another_order_within_its_reach(data_root):
    root, _ = data_root
    shuffle = AnnotationService(root, Settings(order="random", gold_rate=0)).catalogue.orders["random"]
    surest = AnnotationService(root, Settings(order="score-desc", gold_rate=0))
    for face in (shuffle[1], shuffle[9]):  # judged in score order before anyone shuffled
        surest.decide("b", face, surest.catalogue.proposal(face)[0], "same")
    shuffled = AnnotationService(root, Settings(order="random", gold_rate=0))
    served = shuffled.queue("a", 3)
    assert ids(served) == [shuffle[0], shuffle[2], shuffle[3]]  # the random queue passes over shuffle[1]
    for item in served:
        shuffled.decide("a", item["face_id"], item["proposed"], "same")
    # without shuffle[1] the sample would lack a face because it was judged first; shuffle[9] is beyond reach
    assert random_order_faces(root) == set(shuffle[:4])


def test_a_database_from_before_queue_order_gets_the_column(data_root):
    root, _ = data_root
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    old_schema = annotate_db.SCHEMA.replace(",\n  queue_order TEXT", "\n").replace(
        "-- the server's --order when the item was served", ""
    )
    assert "queue_order" not in old_schema
    conn = sqlite3.connect(root / "annotations" / "decisions.sqlite")
    conn.executescript(old_schema)
    conn.execute(
        "INSERT INTO decisions(uid, annotator, face_id, decision, mode, decided_at) "
        "VALUES ('old-decision-1', 'a', 'p0', 'same', 'pair', '2026-01-01T00:00:00+00:00')"
    )
    conn.commit()
    conn.close()
    svc = AnnotationService(root, Settings(order="random", gold_rate=0))
    assert random_order_faces(root) == set()  # the old row's order is unknown: it reaches nothing
    svc.decide("a", "p1", svc.catalogue.proposal("p1")[0], "same")
    assert [(r["face_id"], r["queue_order"]) for r in svc.db.decisions()] == [("p0", None), ("p1", "random")]
    assert random_rank("p0") < random_rank("p1")  # p0 is within the reach of p1's random-order verdict
    assert random_order_faces(root) == {"p0", "p1"}


def test_gold_items_are_mixed_in_and_scored_with_agreement_between_annotators(data_root, tmp_path):
    root, _ = data_root
    gold_csv = tmp_path / "gold.csv"
    # k0..k3 are pre-labelled 'dan'; the truth says k0, k1 are dan and k2, k3 are carol.
    gold_csv.write_text("face_id,identity\nk0,toon/dan\nk1,toon/dan\nk2,toon/carol\nk3,toon/carol\n")
    args = argparse.Namespace(action="add-gold", file=str(gold_csv), data_root=str(root))
    assert annotate_cli.run(args) == 0
    bad = tmp_path / "bad.csv"
    bad.write_text("face_id,identity\nnot-a-face,toon/dan\n")
    assert annotate_cli.run(argparse.Namespace(action="add-gold", file=str(bad), data_root=str(root))) == 2

    svc = AnnotationService(root, Settings(gold_rate=0.5))
    cat = svc.catalogue
    assert set(cat.gold) == {"k0", "k1", "k2", "k3"} and not cat.gold.keys() & cat.candidates
    q = svc.queue("a", 8)
    gold_positions = [i for i, item in enumerate(q) if item["face_id"] in cat.gold]
    assert gold_positions == [1, 3, 5, 7]  # every 2nd item at rate 0.5
    assert "gold" not in json.dumps(q)  # the page cannot tell a gold item
    # a decision shifts the list by one: the prefetched second item comes next
    first, second = q[0], q[1]
    svc.decide("a", first["face_id"], first["proposed"], "same")
    assert svc.queue("a", 1)[0]["face_id"] == second["face_id"]

    truth = {"k0": "toon/dan", "k1": "toon/dan", "k2": "toon/carol", "k3": "toon/carol"}

    def answer(annotator, face, right):
        proposed, _, gold = cat.proposal(face)
        correct = "same" if proposed == gold else "different"
        wrong = "different" if correct == "same" else "same"
        svc.decide(annotator, face, proposed, correct if right else wrong)

    for face in truth:  # a: all right; b: wrong on k3
        answer("a", face, True)
        answer("b", face, face != "k3")
    for face in ("p0", "p1"):  # both judge p0, p1 too (overlap via gold-free decide)
        svc.decide("b", face, cat.proposal(face)[0], "same")
    svc.decide("a", "p1", "toon/bob", "different")
    stats = svc.stats()
    acc = {a["annotator"]: a["gold_accuracy"] for a in stats["annotators"]}
    assert acc == {"a": 1.0, "b": 0.75}
    (pair,) = stats["pairs"]
    assert (pair["a"], pair["b"], pair["items"]) == ("a", "b", 6)
    xa = [svc.log.effective("a", f)["decision"] == "same" for f in ("k0", "k1", "k2", "k3", "p0", "p1")]
    xb = [svc.log.effective("b", f)["decision"] == "same" for f in ("k0", "k1", "k2", "k3", "p0", "p1")]
    assert pair["kappa"] == pytest.approx(cohen_kappa(xa, xb))
    assert pair["agreement"] == pytest.approx(4 / 6)
    # gold decisions are quality control, not labels
    assert not [r for r in pending_labels(root) if r["face_id"] in truth]


def test_cohen_kappa_known_values():
    assert cohen_kappa([True, True, False, False], [True, True, False, False]) == 1.0
    assert cohen_kappa([True, False, True, False], [True, True, False, False]) == pytest.approx(0.0)
    # 20 items: both yes 8, both no 7, a-only 3, b-only 2 -> po 0.75, pe 0.5 -> kappa 0.5
    a = [True] * 8 + [False] * 7 + [True] * 3 + [False] * 2
    b = [True] * 8 + [False] * 7 + [False] * 3 + [True] * 2
    assert cohen_kappa(a, b) == pytest.approx(0.5)
    assert cohen_kappa([], []) is None


def test_merge_publishes_majority_verdicts_once(data_root, capsys):
    root, _ = data_root
    svc = AnnotationService(root, Settings(gold_rate=0, overlap=3))
    for who in ("a", "b", "c"):
        svc.decide(who, "p0", "toon/alice", "same")
    svc.decide("a", "p1", "toon/bob", "same")
    svc.decide("b", "p1", "toon/bob", "different")  # a tie: waits for a third opinion
    svc.decide("a", "p2", "toon/alice", "relabel", "toon/bob")
    svc.decide("a", "p3", "toon/bob", "skip")
    assert merge_decisions(root) == 1
    labels = Manifest(root).read("labels").set_index(["face_id", "identity"])
    assert set(labels.index) == {("p0", "toon/alice"), ("p2", "toon/bob"), ("p2", "toon/alice")}
    assert labels.loc[("p0", "toon/alice"), "verdict"] == "verified"
    assert json.loads(labels.loc[("p0", "toon/alice"), "annotators"]) == ["a", "b", "c"]
    assert labels.loc[("p2", "toon/bob"), "verdict"] == "verified"
    assert labels.loc[("p2", "toon/alice"), "verdict"] == "rejected"
    assert (labels["embedder"] == "emb-test-0001").all() and labels["decision_id"].notna().all()
    run = Manifest(root).history().iloc[-1]
    assert json.loads(run["counts"])["labels"] == 3 and json.loads(run["model_ids"]) == {"embedder": "emb-test-0001"}
    # the version reports how the pre-labels fared: p0's was right, p2's (alice, relabelled bob) wrong
    quality = json.loads(run["calibration"])["prelabel_vs_verified"]
    assert (quality["verified_faces"], quality["judged"], quality["precision"], quality["recall"]) == (2, 2, 0.5, 0.5)
    assert quality["by_album"] == {"toon": {"judged": 2, "right": 1, "precision": 0.5}}
    assert quality["sweep"][0]["min_margin"] == 0.0 and quality["suggested"] is None  # 2 judged faces say too little
    assert annotate_cli.run(argparse.Namespace(action="stats", data_root=str(root))) == 0  # the same, as JSON
    printed = json.loads(capsys.readouterr().out)
    assert printed["prelabels"] == quality and {a["annotator"] for a in printed["annotators"]} >= {"a", "b", "c"}
    assert merge_decisions(root) == 1  # nothing new: no new version
    svc.decide("c", "p1", "toon/bob", "different")  # the tie is broken
    assert merge_decisions(root) == 2
    new = Manifest(root).diff("labels", 1, 2)
    assert new[["face_id", "identity", "verdict", "change"]].values.tolist() == [
        ["p1", "toon/bob", "rejected", "added"]
    ]
    # published faces leave the queue of a fresh server
    assert not {"p0", "p1", "p2"} & set(ids(AnnotationService(root, Settings(gold_rate=0)).queue("z", 50)))


def test_failing_under_10001_other_names_does_not_lift_a_lockout():
    throttle = LoginThrottle(limit=10, window_s=600, capacity=10_000)
    assert all(throttle.attempt("victim") for _ in range(10))
    assert not throttle.attempt("victim")
    for i in range(10_001):  # room for each new name: an unlocked name is forgotten
        assert throttle.attempt(f"other{i}")
        assert len(throttle.failures) <= 10_000
    assert not throttle.attempt("victim")
    assert "other0" not in throttle.failures and "other10000" in throttle.failures


def test_the_throttle_forgets_expired_then_idlest_unlocked_names_and_never_a_lockout():
    throttle = LoginThrottle(limit=3, window_s=0.3, capacity=3)
    for name in ("a", "b", "c", "a"):
        assert throttle.attempt(name)
    assert throttle.attempt("d") and list(throttle.failures) == ["c", "a", "d"]  # b: idlest, not locked
    for name, more in (("a", 1), ("c", 2), ("d", 2)):  # all three reach the limit
        assert all(throttle.attempt(name) for _ in range(more))
    assert list(throttle.failures) == ["a", "c", "d"] and not any(throttle.attempt(n) for n in "acd")
    # every tracked name locked out: a new name is refused (fail closed), nothing is forgotten
    assert not throttle.attempt("e") and not throttle.attempt("f") and list(throttle.failures) == ["a", "c", "d"]
    time.sleep(0.35)  # the window passes: lockouts end, expired names make room
    assert throttle.attempt("e") and throttle.attempt("a") and list(throttle.failures) == ["e", "a"]
    throttle.succeeded("a")
    assert list(throttle.failures) == ["e"]
