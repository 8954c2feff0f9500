"""The ingest flow end to end, against a real Prefect server, real ffmpeg and real Delta tables."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest
import yaml

from data_manifest import Manifest
from flows.ingest import ingest
from models.precision import resolve_precision
from pipeline.annotate.catalogue import load_catalogue
from pipeline.annotate.merge import merge_decisions
from pipeline.annotate.service import AnnotationService, Settings
from pipeline.identity.published import faces_with_current_prelabels
from pipeline.identity.stage import PICTURE_CHECK_CANDIDATES
from pipeline.sample import make_sample_library
from tests.conftest import CAVA_DEXTER, PROJECT, VIDEOS

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.fixture(scope="module")
def sample_library(tmp_path_factory) -> Path:
    return make_sample_library(tmp_path_factory.mktemp("library"), seed=0).parent


def copy_library(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# Tests of run mechanics (reruns, kills, references arriving) run the detector at 320 px, half the
# time of its default 576 on a 2-core machine (the sample library's faces are still found), and take
# one episode per album: 2 of the 6, which is all the mechanics need and a third of the video work.
# The detection tests (sample library, real frames) keep the defaults.
MECHANICS = {"detector_size": 320, "episodes_per_album": 1}


def rows_added(manifest: Manifest, version: int) -> dict:
    return json.loads(manifest.history()["rows_added"][version])


def test_sample_library_becomes_a_manifest_with_real_detections(sample_library, tmp_path):
    summary = ingest(library=str(sample_library), data_root=str(tmp_path / "data"))
    assert summary["manifest_version"] == 0
    m = Manifest(tmp_path / "data")
    faces, assets, episodes = m.read("faces"), m.read("assets"), m.read("episodes")

    # 2 albums x 3 episodes of 5.5 s -> 6 frames each; 6 stills per album, two of them bad.
    assert len(episodes) == 6 and episodes["selected"].all() and (episodes["frames"] == 6).all()
    frames = assets[assets["kind"] == "frame"]
    assert len(frames) == 36
    assert sorted(frames["timestamp_s"].unique()) == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    references = assets[assets["kind"] == "reference"]
    assert sorted(references["character"]) == ["Hana", "Kai"]  # the albums file's typical images
    reasons = dict(assets.loc[assets["status"] == "dropped", ["source", "drop_reason"]].values)
    assert reasons == {"sunny_school/broken.jpg": "truncated", "sunny_school/not_an_image.png": "not_an_image"}

    # the default detector (our RetinaNet) finds the drawn faces; every crop is in the table
    assert len(faces) >= 40 and (faces["detector"] == "retinanet").all()
    passed_gate = faces[(faces["status"] == "kept") | (faces["drop_reason"] == "near_duplicate")]
    assert len(passed_gate) >= 30
    assert (passed_gate["sharpness"] >= 30).all() and (passed_gate[["crop_w", "crop_h"]].min(axis=1) >= 100).all()
    assert faces.loc[faces["status"] == "dropped", "drop_reason"].notna().all()
    store = tmp_path / "data" / "store" / "objects"
    assert all((store / sha[:2] / f"{sha}.jpg").exists() for sha in passed_gate["crop_sha"])
    # the identity stage embedded them and removed near-duplicates (a face seen in consecutive seconds:
    # one picture), proposed by the embedding above the candidate similarity
    kept = faces[faces["status"] == "kept"]
    dups = faces[faces["drop_reason"] == "near_duplicate"]
    assert passed_gate["embedder"].str.startswith("embedder-").all()
    assert len(kept) >= 6 and dups["duplicate_of"].isin(kept["face_id"]).all()
    assert (dups["duplicate_similarity"] > PICTURE_CHECK_CANDIDATES).all()

    run = m.history().iloc[0]
    counts = json.loads(run["counts"])
    # the funnel counts occurrences; the typical images are not stills too, so each face counts once
    assert counts["frames"] == 36 and counts["crops_kept"] == len(kept)
    assert counts["near_duplicates"] == len(dups)
    assert counts["drop.image.truncated"] == 1 and counts["drop.image.not_an_image"] == 1
    # each image the detector ran on is counted under the precision it ran in, which this machine decides
    precision = resolve_precision("auto", "cpu")
    assert counts[f"precision.{precision}"] == counts["images_analysed"] - counts["images_dropped"] > 0
    assert [k for k in counts if k.startswith("precision.")] == [f"precision.{precision}"]
    model_ids = json.loads(run["model_ids"])
    assert run["flow_run_id"] and model_ids["retinanet"] == faces["model_id"].iloc[0]
    assert model_ids["retinanet"].startswith("retinanet-resnet18-")
    assert model_ids["embedder"] == kept["embedder"].iloc[0]
    identities = m.read("identities")
    assert sorted(identities["identity"]) == ["sunny_school/Hana", "sunny_school/Kai"]
    assert faces["prelabel"].isin(identities["identity"]).sum() == counts["prelabelled"] > 0
    calibration = json.loads(run["calibration"])
    # near-duplicate candidates above 0.8, each confirmed as one picture; pre-labels at the embedder's 0.6
    assert calibration["dedup_threshold"] == PICTURE_CHECK_CANDIDATES and calibration["dedup_same_picture"] is True
    assert calibration["prelabel_threshold"] == 0.6 and calibration["duplicate_similarity"]["n"] == len(dups)
    assert calibration["embedder_precision"] == precision
    assert summary["contact_sheet"] and Path(summary["contact_sheet"]).exists()
    report = json.loads((Path(summary["report"]).parent / "figures.json").read_text())
    assert report["version"] == summary["manifest_version"] and report["totals"]["kept"] == len(kept)


@pytest.mark.shared_data
def test_rerun_adds_nothing_and_a_new_episode_adds_only_its_frames(sample_library, tmp_path):
    library = copy_library(sample_library, tmp_path / "lib")
    data = str(tmp_path / "data")
    every_episode = {**MECHANICS, "episodes_per_album": 10}  # the paper's 10 takes all 3, and the new one
    ingest(library=str(library), data_root=data, config=every_episode)
    second = ingest(library=str(library), data_root=data, config=every_episode)
    m = Manifest(data)
    assert set(rows_added(m, 1).values()) == {0}
    assert second["counts"]["images_cached"] == second["counts"]["images_ok"] + second["counts"]["images_dropped"]
    assert not [k for k in second["counts"] if k.startswith("precision.")]  # no image met the detector again

    shutil.copy(VIDEOS / "big_buck_bunny_opening_2s.mp4", library / "moon_patrol" / "episodes" / "ep_new.mp4")
    third = ingest(library=str(library), data_root=data, config=every_episode)
    added = rows_added(m, 2)
    assert added["episodes"] == 1 and added["assets"] == 2  # a 2 s episode: frames at 0 s and 1 s
    new_assets = m.diff("assets", 1, 2)
    assert set(new_assets["change"]) == {"added"}
    assert set(new_assets["episode_path"]) == {"ep_new.mp4"}
    assert third["counts"]["images_analysed"] == 2  # nothing else was decoded or detected again


def test_faces_published_before_their_characters_are_prelabelled_when_the_references_arrive(sample_library, tmp_path):
    library = copy_library(sample_library, tmp_path / "lib")
    albums_file = library / "albums.yaml"
    with_characters = albums_file.read_text()
    albums = yaml.safe_load(with_characters)
    for album in albums["albums"]:
        album.pop("characters", None)
    albums_file.write_text(yaml.safe_dump(albums))
    data = tmp_path / "data"
    ingest(library=str(library), data_root=str(data), config=MECHANICS)  # night 1: no character known yet
    m = Manifest(data)
    night_1 = m.read("faces")
    assert night_1["prelabel"].isna().all() and m.read("identities").empty
    assert not load_catalogue(data).candidates  # nothing to verify

    albums_file.write_text(with_characters)  # night 2: Hana and Kai, with typical images
    second = ingest(library=str(library), data_root=str(data), config=MECHANICS)
    assert second["counts"].get("images_analysed", 0) == 2  # the two typical images; nothing published again
    updates = m.read("prelabels")
    assert len(updates) == second["counts"]["prelabels_updated"] > 0
    assert set(updates["face_id"]) <= set(night_1["face_id"]) and (updates["run_id"] == second["run_id"]).all()
    calibration = json.loads(m.history()["calibration"][1])
    assert calibration["reference_set"] == updates["reference_set"].iloc[0]
    # night 1's faces are now pre-labelled in force, and the labelling page offers them
    current = faces_with_current_prelabels(m).set_index("face_id")
    labelled = current.loc[list(night_1["face_id"])]["prelabel"].dropna()
    assert len(labelled) > 0 and set(labelled) <= {"sunny_school/Hana", "sunny_school/Kai"}
    catalogue = load_catalogue(data)
    assert catalogue.candidates and catalogue.candidates <= set(night_1["face_id"])
    assert all(catalogue.faces[f]["prelabel"] == current.loc[f, "prelabel"] for f in catalogue.candidates)
    assert m.read("faces", version=0)["prelabel"].isna().all()  # what night 1 published is unchanged

    third = ingest(library=str(library), data_root=str(data), config=MECHANICS)  # same references: nothing to redo
    assert third["counts"]["prelabels_updated"] == 0 and len(m.read("prelabels")) == len(updates)


def test_faces_people_verified_become_references_of_the_next_night(sample_library, tmp_path):
    data = tmp_path / "data"
    ingest(library=str(sample_library), data_root=str(data), config=MECHANICS)
    m = Manifest(data)
    typical = json.loads(m.history()["calibration"][0])["references"]
    # An annotator confirms two pre-labels on the verification page's service; the merge publishes them.
    service = AnnotationService(data, Settings(order="random", gold_rate=0))
    catalogue = load_catalogue(data)
    chosen = [item["face_id"] for item in service.queue("ann", 2)]
    assert len(chosen) == 2
    for face in chosen:
        service.decide("ann", face, catalogue.faces[face]["prelabel"], "same")
    assert merge_decisions(data) == 1
    before = faces_with_current_prelabels(m).set_index("face_id").loc[chosen, "prelabel"].tolist()

    # nothing new, two more references
    second = ingest(library=str(sample_library), data_root=str(data), config=MECHANICS)
    assert second["counts"].get("images_analysed", 0) == 0
    calibration = json.loads(m.history()["calibration"][2])
    assert calibration["verified_references"] == 2 and calibration["references"] == typical + 2
    identities = m.read("identities")
    faces_as_references = {
        f for row in identities[identities["run_id"] == second["run_id"]]["reference_faces"] for f in json.loads(row)
    }
    assert set(chosen) <= faces_as_references
    # A verified face would match itself now: its pre-label stays the one people judged, so the
    # pre-label report still measures real pre-labels (both were right: precision 1).
    assert not set(m.read("prelabels")["face_id"]) & set(chosen)
    assert faces_with_current_prelabels(m).set_index("face_id").loc[chosen, "prelabel"].tolist() == before
    assert calibration["prelabel_vs_verified"]["precision"] == 1.0
    assert calibration["prelabel_vs_verified"]["sample"]["judged"] == 2  # judged in random order

    third = ingest(library=str(sample_library), data_root=str(data), config={**MECHANICS, "verified_references": False})
    calibration = json.loads(m.history()["calibration"][3])
    assert calibration["verified_references"] == 0 and calibration["references"] == typical
    assert third["counts"]["identities"] == second["counts"]["identities"]


def test_crops_published_without_an_embedder_are_indexed_by_the_next_one(sample_library, tmp_path):
    library = copy_library(sample_library, tmp_path / "lib")
    data = tmp_path / "data"
    ingest(library=str(library), data_root=str(data), config={**MECHANICS, "embedder": "none"})  # no identity stage
    m = Manifest(data)
    night_1 = m.read("faces")
    assets_1 = m.read("assets")
    assert night_1["embedder"].isna().all()
    references = assets_1.loc[assets_1["kind"] == "reference", "asset_id"]
    kept = night_1[night_1["status"] == "kept"].drop_duplicates("face_id")
    # every kept crop but each typical image's own face (its largest, which is the character's reference)
    indexable = kept["face_id"].nunique() - kept.loc[kept["asset_id"].isin(references), "asset_id"].nunique()

    # The next night the identity stage is on, and a re-encoded copy of a published still arrives.
    stills = library / "sunny_school" / "stills"
    cv2.imwrite(
        str(stills / "still_03_copy.jpg"), cv2.imread(str(stills / "still_03.jpg")), [cv2.IMWRITE_JPEG_QUALITY, 85]
    )
    second = ingest(library=str(library), data_root=str(data), config=MECHANICS)
    assert second["counts"]["published_crops_indexed"] == indexable > 0
    assets = m.read("assets")
    copy_asset = assets.loc[  # noqa: F841 (read by the query below)
        assets["source"] == "sunny_school/still_03_copy.jpg", "asset_id"
    ].iloc[0]
    copies = m.read("faces").query("asset_id == @copy_asset")
    assert len(copies) > 0 and (copies["drop_reason"] == "near_duplicate").all()
    assert copies["duplicate_of"].isin(night_1["face_id"]).all()  # a crop published the night before
    # night 1's crops are pre-labelled against the albums file's references now
    updates = m.read("prelabels")
    assert len(updates) > 0 and set(updates["face_id"]) <= set(kept["face_id"])
    assert (updates["embedder"] == json.loads(m.history()["model_ids"][1])["embedder"]).all()


def test_a_run_killed_midway_then_rerun_is_complete_without_duplicates(sample_library, tmp_path):
    library = copy_library(sample_library, tmp_path / "lib")
    data = tmp_path / "data"
    cmd = [
        sys.executable,
        "-m",
        "toonface.cli",
        "ingest",
        "--library",
        str(library),
        "--data-root",
        str(data),
        "--set",
        "stills_per_shard=1",
        "--set",
        f"detector_size={MECHANICS['detector_size']}",
        "--task-runner",
        "thread:1",
    ]
    proc = subprocess.Popen(
        cmd, cwd=PROJECT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    staging = data / "manifest" / "staging"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and len(list(staging.glob("*/assets/*.parquet"))) < 3:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(list(staging.glob("*/assets/*.parquet"))) >= 3, "the run should have been killed mid-way"
    m = Manifest(data)
    assert m.latest_version() is None  # nothing half-published

    summary = ingest(library=str(library), data_root=str(data), config=MECHANICS)
    assert summary["manifest_version"] == 0 and summary["counts"]["images_cached"] > 0
    assets, faces = m.read("assets"), m.read("faces")
    # one episode per album (6 frames each), 14 stills, the 2 typical images
    assert len(assets) == 2 * 6 + 14 + 2 and not assets.duplicated(["asset_id", "source"]).any()
    assert not faces.duplicated("face_id").any()
    assert [p.name for p in staging.iterdir()] == []  # the dead run's staging was cleaned up


@pytest.mark.shared_data
def test_a_folder_of_real_cartoon_frames_as_stills(tmp_path):
    """CAVA Dexter's Laboratory val frames as a plain folder of stills, through our RetinaNet."""
    from models.det_metrics import box_iou
    from models.detector import load_detector
    from pipeline.detect import DEFAULT_DETECTOR_WEIGHTS

    # every fourth val frame (50 of 200), linked into a folder: the same check in a quarter of the time
    stills = tmp_path / "stills"
    stills.mkdir()
    for frame in sorted((CAVA_DEXTER / "images" / "val").glob("*.jpg"))[::4]:
        (stills / frame.name).symlink_to(frame)
    ingest(library=str(stills), data_root=str(tmp_path / "data"))  # default detector
    m = Manifest(tmp_path / "data")
    assets, faces = m.read("assets"), m.read("faces")
    assert len(assets) == 50 and (assets["status"] == "ok").all()
    assert len(faces) > 0 and set(faces["status"]) <= {"kept", "dropped"}
    assert faces["asset_id"].isin(assets["asset_id"]).all()
    # the detector and its weights' hash are on every face row and in the version's metadata
    model_id = load_detector(DEFAULT_DETECTOR_WEIGHTS).model_id
    assert (faces["detector"] == "retinanet").all() and (faces["model_id"] == model_id).all()
    assert json.loads(m.history().iloc[0]["model_ids"])["retinanet"] == model_id
    # and it finds most of the labelled faces (animeface found 7 of all 307 in the 200 val frames)
    import pandas as pd

    truth = pd.read_csv(CAVA_DEXTER / "boxes.csv").query("split == 'val'")
    truth["source"] = truth["image"].str.rsplit("/", n=1).str[-1]
    truth = truth[truth["source"].isin([p.name for p in stills.iterdir()])]
    found = faces.merge(assets[["asset_id", "source"]], on="asset_id")
    found["source"] = found["source"].str.rsplit("/", n=1).str[-1]
    matched = 0
    for name, t in truth.groupby("source"):
        f = found[found["source"] == name]
        if len(f):
            matched += int(
                (
                    box_iou(
                        t[["x1", "y1", "x2", "y2"]].to_numpy(float), f[["x1", "y1", "x2", "y2"]].to_numpy(float)
                    ).max(1)
                    >= 0.5
                ).sum()
            )
    assert matched >= 0.5 * len(truth), matched


@pytest.mark.shared_data
def test_broken_episodes_become_rows_with_reasons(tmp_path):
    episodes = tmp_path / "lib" / "show" / "episodes"
    episodes.mkdir(parents=True)
    (episodes / "not_a_video.mp4").write_text("hello")
    webm = (VIDEOS / "big_buck_bunny_0_30s.webm").read_bytes()
    (episodes / "cut.webm").write_bytes(webm[: len(webm) // 3])
    ingest(library=str(tmp_path / "lib"), data_root=str(tmp_path / "data"))
    rows = Manifest(tmp_path / "data").read("episodes").set_index("episode_path")
    assert rows.loc["not_a_video.mp4", "status"] == "dropped"
    assert rows.loc["not_a_video.mp4", "drop_reason"] == "video_unreadable"
    cut = rows.loc["cut.webm"]
    assert cut["status"] == "ok" and 3 <= cut["frames"] < 30 and "stream ended" in cut["detail"]
