"""Shards: the unit of work of an ingest run (one episode, or up to ~1,000 stills).

A shard reads its inputs, runs the face funnel on every image, and writes its manifest rows to
the run's staging folder. It returns only counts, so shards can run anywhere (threads, Dask
workers) and send little back. Work is cached by content hash, so a rerun or a resumed run
redoes only what is missing.
"""
from __future__ import annotations

import collections
import dataclasses
import errno
import json
import os
from pathlib import Path

import cv2

from data_manifest.store import Manifest, ManifestError
from pipeline import stopping
from pipeline.config import IngestConfig
from pipeline.detect import get_detector
from pipeline.faces import FunnelCache, ImageAnalysis, analyse_images, funnel_key, read_still
from pipeline.frames import VideoError, extract_frames, probe
from pipeline.sources.library import safe_name
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

    def record_failure(self, ctx: "RunContext", detail: str) -> dict[str, int]:
        """Rows for every still of a shard that failed as a whole: each one dropped as internal_error."""
        rows, counts = failed_input_rows(ctx, self.album_id, [source for _, source in self.files], "still", detail)
        ctx.staging().write("assets", self.name, rows)
        counts["stills"] += len(rows)
        return dict(counts)


@dataclasses.dataclass(frozen=True)
class EpisodeShard:
    album_id: str
    path: str           # absolute
    episode_path: str   # relative to the album's episodes folder
    sample_rank: int

    @property
    def name(self) -> str:
        return f"episode-{self.album_id}-{sha256_bytes(self.episode_path.encode())[:16]}"

    def record_failure(self, ctx: "RunContext", detail: str) -> dict[str, int]:
        """The episode's row, dropped as internal_error, when its shard failed as a whole."""
        ctx.staging().write("episodes", self.name, [episode_row(self, ctx, status="dropped", size_bytes=0,
                                                               episode_sha="", drop_reason="internal_error",
                                                               detail=detail)])
        return {"episodes": 1, "drop.episode.internal_error": 1, "internal_errors": 1}


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


def failed_input_rows(ctx: RunContext, album_id: str, sources: list[str], kind: str,
                      detail: str) -> tuple[list[dict], collections.Counter]:
    """Asset rows and funnel counts of inputs that could not be analysed at all (their shard failed as a
    whole): each one internal_error, keyed by its source, as its bytes may be unknown."""
    counts: collections.Counter = collections.Counter()
    rows = []
    for source in sources:
        analysis = ImageAnalysis(sha256_bytes(source.encode(errors="backslashreplace")), 0, None, 0, 0,
                                 "internal_error", detail, [])
        count_analysis(counts, analysis, False, None)
        rows.append(asset_row(analysis, ctx, album_id, source, kind))
    return rows, counts


# Errors that are the run's own (the disk, the manifest), not one input's: these still fail the run.
RUN_FAULT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


def is_run_fault(exc: BaseException) -> bool:
    return isinstance(exc, (MemoryError, ManifestError)) or (
        isinstance(exc, OSError) and exc.errno in RUN_FAULT_ERRNOS)


def describe(exc: BaseException) -> str:
    """`detail` text of an internal_error row: the exception type first, so rows can be grouped by it."""
    return safe_name(f"{type(exc).__name__}: {exc}")[:1000]


def guarded(process, work, ctx: RunContext, on_failure=None):
    """`process(work, ctx)`; if it fails on something other than a run fault, `on_failure(work, ctx,
    detail)` (default: the shard's `record_failure`) writes internal_error rows for its inputs instead,
    and the run goes on. A rerun retries them: nothing of theirs is cached."""
    try:
        return process(work, ctx)
    except Exception as exc:
        if is_run_fault(exc):
            raise
        if on_failure is None:
            return work.record_failure(ctx, describe(exc))
        return on_failure(work, ctx, describe(exc))


def analyse_each(datas: list[bytes], config: IngestConfig, detector, store: ContentStore,
                 cache: FunnelCache) -> list[tuple[ImageAnalysis, bool]]:
    """`analyse_images`, except that an unexpected error costs only the image that raised it: the batch
    is retried one image at a time and that image gets an internal_error analysis (not cached)."""
    try:
        inject_fault(datas)
        return analyse_images(datas, config, detector, store, cache)
    except Exception as exc:
        if is_run_fault(exc):
            raise
        if len(datas) > 1:
            return [result for data in datas for result in analyse_each([data], config, detector, store, cache)]
        # Keyed apart from the image's own sha, so that a later run that analyses it can still publish it.
        sha = sha256_bytes(datas[0])
        return [(ImageAnalysis(sha256_bytes(f"internal_error:{sha}".encode()), len(datas[0]), None, 0, 0,
                               "internal_error", f"{describe(exc)} (bytes sha256 {sha})"[:1000], []), False)]


def inject_fault(datas: list[bytes]) -> None:
    """Fault injection for the tests: TOONFACE_FAULT_RAISE_ON=<sha256> makes the analysis of those
    bytes raise, as an unknown bug in a stage would."""
    target = os.environ.get("TOONFACE_FAULT_RAISE_ON")
    if target and any(sha256_bytes(data) == target for data in datas):
        raise RuntimeError(f"injected fault on {target[:12]}")


def count_analysis(counts: collections.Counter, analysis: ImageAnalysis, cached: bool, precision: str | None) -> None:
    """Funnel counts of one image. `precision`: the detector's ("bf16"/"fp32"), counted per image it
    ran on, as `precision.<name>`, so a version says which float type its new faces came from."""
    counts["images_cached" if cached else "images_analysed"] += 1
    if precision and not cached and not analysis.drop_reason:
        counts[f"precision.{precision}"] += 1
    if analysis.drop_reason:
        counts["images_dropped"] += 1
        counts[f"drop.image.{analysis.drop_reason}"] += 1
        if analysis.drop_reason == "internal_error":
            counts["internal_errors"] += 1
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
        stopping.check()
        # stat before reading: a FIFO is never opened, a huge still never loaded (a dropped analysis instead)
        datas = [read_still(path, source, config.max_image_bytes) for path, source in batch]
        analysed = iter(analyse_each([d for d in datas if isinstance(d, bytes)], config, detector, store, cache))
        for (_, source), data in zip(batch, datas):
            counts["stills"] += 1
            if isinstance(data, bytes):
                analysis, cached = next(analysed)
            else:  # unreadable, not_a_file or file_too_large
                analysis, cached = data, False
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
    memo = Path(data_root) / "cache" / "filehash" / f"{sha256_bytes(os.fsencode(path.resolve()))}.json"
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


def episode_row(shard: EpisodeShard, ctx: RunContext, **values) -> dict:
    row = {"album_id": shard.album_id, "episode_path": shard.episode_path, "selected": True,
           "sample_rank": shard.sample_rank, "run_id": ctx.run_id, "frames": 0, "detail": "",
           "duration_s": None, "codec": None, "drop_reason": None, "status": "ok"}
    return {**row, **values}


def process_episode(shard: EpisodeShard, ctx: RunContext) -> dict[str, int]:
    config, store = ctx.config, ctx.store
    counts: collections.Counter = collections.Counter({"episodes": 1})
    path = Path(shard.path)
    row = episode_row(shard, ctx)
    try:
        row["size_bytes"] = path.stat().st_size
        row["episode_sha"] = episode_sha = _file_sha(ctx.data_root, path)
    except OSError as exc:
        row.update(size_bytes=0, episode_sha="", status="dropped", drop_reason="unreadable",
                   detail=safe_name(str(exc)))
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
        # a partly decodable episode keeps its frames (status ok), and its row still names what broke
        row.update(drop_reason=reason, status="ok" if extracted["frames"] else "dropped")
    row["frames"] = len(extracted["frames"])
    detector = get_detector(config.detector, config.detector_weights, config.detector_size)
    cache = FunnelCache(ctx.data_root, funnel_key(config, detector))
    assets, faces = [], []
    for batch in chunks(extracted["frames"], config.detect_batch_size):
        stopping.check()
        datas = [store.get(frame["sha"], ".jpg") for frame in batch]
        for frame, (analysis, cached) in zip(batch, analyse_each(datas, config, detector, store, cache)):
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

