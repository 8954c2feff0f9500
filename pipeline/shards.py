"""Shards: the unit of work of an ingest run (one episode, or up to ~1,000 stills).

A shard reads its inputs, runs the face funnel on every image, and writes its manifest rows to
the run's staging folder. It returns only counts, so shards can run anywhere (threads, Dask
workers) and send little back. Work is cached by content hash, so a rerun or a resumed run
redoes only what is missing.
"""
from __future__ import annotations

import collections
import dataclasses
import json
from pathlib import Path

import cv2

from data_manifest.store import Manifest
from pipeline.config import IngestConfig
from pipeline.detect import get_detector
from pipeline.faces import FunnelCache, ImageAnalysis, analyse_images, funnel_key
from pipeline.frames import VideoError, extract_frames, probe
from pipeline.store import ContentStore, atomic_write, sha256_bytes, sha256_file


@dataclasses.dataclass(frozen=True)
class RunContext:
    """What every shard needs to know about its run; small and picklable."""
    data_root: str
    run_id: str
    config: IngestConfig

    @property
    def store(self) -> ContentStore:
        return ContentStore(Path(self.data_root) / "store")

    def staging(self):
        return Manifest(self.data_root).staging(self.run_id)


@dataclasses.dataclass(frozen=True)
class StillsShard:
    album_id: str
    index: int
    files: tuple[tuple[str, str], ...]  # (absolute path, library-relative source name)

    @property
    def name(self) -> str:
        return f"stills-{self.album_id}-{self.index:05d}"


@dataclasses.dataclass(frozen=True)
class EpisodeShard:
    album_id: str
    path: str           # absolute
    episode_path: str   # relative to the album's episodes folder
    sample_rank: int

    @property
    def name(self) -> str:
        return f"episode-{self.album_id}-{sha256_bytes(self.episode_path.encode())[:16]}"


def asset_row(analysis: ImageAnalysis, ctx: RunContext, album_id: str, source: str, kind: str,
               episode_path: str | None = None, episode_sha: str | None = None,
               frame_index: int | None = None, timestamp_s: float | None = None) -> dict:
    return {
        "asset_id": analysis.asset_id, "source": source, "kind": kind, "album_id": album_id,
        "episode_path": episode_path, "episode_sha": episode_sha, "frame_index": frame_index,
        "timestamp_s": timestamp_s, "size_bytes": analysis.size_bytes, "format": analysis.format,
        "width": analysis.width, "height": analysis.height,
        "status": "dropped" if analysis.drop_reason else "ok", "drop_reason": analysis.drop_reason,
        "detail": analysis.detail, "faces": len(analysis.faces), "run_id": ctx.run_id,
    }


def count_analysis(counts: collections.Counter, analysis: ImageAnalysis, cached: bool, precision: str | None) -> None:
    """Funnel counts of one image. `precision`: the detector's ("bf16"/"fp32"), counted per image it
    ran on, as `precision.<name>`, so a version says which float type its new faces came from."""
    counts["images_cached" if cached else "images_analysed"] += 1
    if precision and not cached and not analysis.drop_reason:
        counts[f"precision.{precision}"] += 1
    if analysis.drop_reason:
        counts["images_dropped"] += 1
        counts[f"drop.image.{analysis.drop_reason}"] += 1
        return
    counts["images_ok"] += 1
    counts["faces_detected"] += len(analysis.faces)
    for face in analysis.faces:
        if face["drop_reason"]:
            counts["crops_dropped"] += 1
            counts[f"drop.face.{face['drop_reason']}"] += 1
        else:
            counts["crops_kept"] += 1


def chunks(items, size: int):
    """Consecutive slices of at most ``size`` items (the funnel's detector batches)."""
    size = max(1, int(size))
    return (items[i:i + size] for i in range(0, len(items), size))


def face_rows(analysis: ImageAnalysis, album_id: str, run_id: str) -> list[dict]:
    return [{**face, "album_id": album_id, "run_id": run_id} for face in analysis.faces]


def process_stills(shard: StillsShard, ctx: RunContext) -> dict[str, int]:
    config, store = ctx.config, ctx.store
    detector = get_detector(config.detector, config.detector_weights, config.detector_size)
    cache = FunnelCache(ctx.data_root, funnel_key(config, detector))
    counts: collections.Counter = collections.Counter()
    assets, faces = [], []
    for batch in chunks(shard.files, config.detect_batch_size):
        datas: list[bytes | OSError] = []
        for path, _ in batch:
            try:
                datas.append(Path(path).read_bytes())
            except OSError as exc:  # vanished or unreadable file: a row, not a crash
                datas.append(exc)
        analysed = iter(analyse_images([d for d in datas if isinstance(d, bytes)], config, detector, store, cache))
        for (_, source), data in zip(batch, datas):
            counts["stills"] += 1
            if isinstance(data, bytes):
                analysis, cached = next(analysed)
            else:
                analysis = ImageAnalysis(sha256_bytes(source.encode()), 0, None, 0, 0, "unreadable", str(data), [])
                cached = False
            count_analysis(counts, analysis, cached, detector.precision)
            assets.append(asset_row(analysis, ctx, shard.album_id, source, "still"))
            faces.extend(face_rows(analysis, shard.album_id, ctx.run_id))
    embed_kept(faces, ctx)
    staging = ctx.staging()
    staging.write("faces", shard.name, faces)
    staging.write("assets", shard.name, assets)
    return dict(counts)


def _file_sha(data_root: str, path: Path) -> str:
    """sha256 of a (large) file, remembered by path + size + mtime so nightly runs do not rehash."""
    st = path.stat()
    memo = Path(data_root) / "cache" / "filehash" / f"{sha256_bytes(str(path.resolve()).encode())}.json"
    try:
        known = json.loads(memo.read_text())
        if known["size"] == st.st_size and known["mtime_ns"] == st.st_mtime_ns:
            return known["sha256"]
    except (FileNotFoundError, ValueError, KeyError):
        pass
    sha = sha256_file(path)
    atomic_write(memo, json.dumps({"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha}).encode())
    return sha


def _extract_episode(path: Path, episode_sha: str, ctx: RunContext) -> dict:
    """Frames of an episode as {info, frames: [{index, timestamp_s, sha}], error}; cached per
    (episode bytes, frame settings) so a rerun never decodes the same episode twice."""
    config, store = ctx.config, ctx.store
    memo = Path(ctx.data_root) / "cache" / "frames" / config.hash(IngestConfig.FRAME_FIELDS) / f"{episode_sha}.json"
    try:
        return json.loads(memo.read_text())
    except (FileNotFoundError, ValueError):
        pass
    result: dict = {"info": None, "frames": [], "error": None}
    try:
        info = probe(path)
        result["info"] = dataclasses.asdict(info)
        for frame in extract_frames(path, config.frames_per_second):
            ok, jpeg = cv2.imencode(".jpg", frame.image, [cv2.IMWRITE_JPEG_QUALITY, config.frame_jpeg_quality])
            sha = store.put(jpeg.tobytes(), ".jpg")
            result["frames"].append({"index": frame.index, "timestamp_s": frame.timestamp_s, "sha": sha})
    except VideoError as exc:
        result["error"] = {"reason": exc.reason, "detail": exc.detail}
    atomic_write(memo, json.dumps(result).encode())
    return result


def process_episode(shard: EpisodeShard, ctx: RunContext) -> dict[str, int]:
    config, store = ctx.config, ctx.store
    counts: collections.Counter = collections.Counter({"episodes": 1})
    path = Path(shard.path)
    row = {"album_id": shard.album_id, "episode_path": shard.episode_path, "selected": True,
           "sample_rank": shard.sample_rank, "run_id": ctx.run_id, "frames": 0, "detail": "",
           "duration_s": None, "codec": None, "drop_reason": None, "status": "ok"}
    try:
        row["size_bytes"] = path.stat().st_size
        row["episode_sha"] = episode_sha = _file_sha(ctx.data_root, path)
    except OSError as exc:
        row.update(size_bytes=0, episode_sha="", status="dropped", drop_reason="unreadable", detail=str(exc))
        counts["drop.episode.unreadable"] += 1
        ctx.staging().write("episodes", shard.name, [row])
        return dict(counts)
    extracted = _extract_episode(path, episode_sha, ctx)
    if extracted["info"]:
        row["duration_s"], row["codec"] = extracted["info"]["duration_s"], extracted["info"]["codec"]
    if extracted["error"]:
        reason = extracted["error"]["reason"]
        row["detail"] = extracted["error"]["detail"][:1000]
        counts[f"drop.episode.{reason}"] += 1
        if not extracted["frames"]:  # nothing usable; a partly decodable episode keeps its frames
            row.update(status="dropped", drop_reason=reason)
    row["frames"] = len(extracted["frames"])
    detector = get_detector(config.detector, config.detector_weights, config.detector_size)
    cache = FunnelCache(ctx.data_root, funnel_key(config, detector))
    assets, faces = [], []
    for batch in chunks(extracted["frames"], config.detect_batch_size):
        datas = [store.get(frame["sha"], ".jpg") for frame in batch]
        for frame, (analysis, cached) in zip(batch, analyse_images(datas, config, detector, store, cache)):
            counts["frames"] += 1
            count_analysis(counts, analysis, cached, detector.precision)
            source = f"{shard.album_id}/{shard.episode_path}#t={frame['timestamp_s']:g}"
            assets.append(asset_row(analysis, ctx, shard.album_id, source, "frame", shard.episode_path,
                                     episode_sha, frame["index"], frame["timestamp_s"]))
            faces.extend(face_rows(analysis, shard.album_id, ctx.run_id))
    embed_kept(faces, ctx)
    staging = ctx.staging()
    staging.write("faces", shard.name, faces)
    staging.write("assets", shard.name, assets)
    staging.write("episodes", shard.name, [row])
    return dict(counts)


def embed_kept(faces: list[dict], ctx: RunContext) -> None:
    """Embed this shard's kept crops now, in parallel with other shards; the run-wide identity
    stage then finds them in the embedding cache."""
    if ctx.config.embedder == "none":
        return
    from pipeline.identity import embed_crops

    embed_crops([f["crop_sha"] for f in faces if f["status"] == "kept" and f["crop_sha"]],
                ctx.config.embedder, ctx.data_root)


def merge_counts(parts) -> dict[str, int]:
    total: collections.Counter = collections.Counter()
    for part in parts:
        total.update(part)
    return dict(sorted(total.items()))

