"""Episodes of an album: one frame per second of each sampled episode, the source of kind `frame`.

An episode is one shard. Its frames are extracted once per (episode bytes, frame settings) and kept in
the content store, so a rerun never decodes the same episode twice.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import cv2

from pipeline.config import FrameSettings, settings_hash
from pipeline.frames import VideoError, extract_frames, probe
from pipeline.runner import ImageInput, RunContext, ShardRunner
from pipeline.sources.library import safe_name
from pipeline.store import JSON, ContentStore, FileCache, sha256_bytes, sha256_file


@dataclasses.dataclass(frozen=True)
class EpisodeShard:
    album_id: str
    path: str  # absolute
    episode_path: str  # relative to the album's episodes folder
    sample_rank: int

    @property
    def name(self) -> str:
        return f"episode-{self.album_id}-{sha256_bytes(self.episode_path.encode())[:16]}"

    def record_failure(self, ctx: RunContext, detail: str) -> dict[str, int]:
        """The episode's row, dropped as internal_error, when its shard failed as a whole."""
        ctx.staging().write(
            "episodes",
            self.name,
            [
                episode_row(
                    self,
                    ctx,
                    status="dropped",
                    size_bytes=0,
                    episode_sha="",
                    drop_reason="internal_error",
                    detail=detail,
                )
            ],
        )
        return {"episodes": 1, "drop.episode.internal_error": 1, "internal_errors": 1}


def episode_row(shard: EpisodeShard, ctx: RunContext, **values) -> dict:
    row = {
        "album_id": shard.album_id,
        "episode_path": shard.episode_path,
        "selected": True,
        "sample_rank": shard.sample_rank,
        "run_id": ctx.run_id,
        "frames": 0,
        "detail": "",
        "duration_s": None,
        "codec": None,
        "drop_reason": None,
        "status": "ok",
    }
    return {**row, **values}


def file_sha(data_root: str, path: Path) -> str:
    """sha256 of a (large) file, remembered by path + size + mtime so nightly runs do not rehash."""
    st = path.stat()
    memo = FileCache(Path(data_root) / "cache" / "filehash", JSON, fanout=False)
    key = sha256_bytes(os.fsencode(path.resolve()))
    known = memo.get(key)
    if isinstance(known, dict) and known.get("size") == st.st_size and known.get("mtime_ns") == st.st_mtime_ns:
        return known["sha256"]
    sha = sha256_file(path)
    memo.put(key, {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha})
    return sha


def extract_episode(path: Path, episode_sha: str, settings: FrameSettings, data_root: str, store: ContentStore) -> dict:
    """Frames of an episode as {info, frames: [{index, timestamp_s, sha}], error}; cached per
    (episode bytes, frame settings)."""
    memo = FileCache(Path(data_root) / "cache" / "frames" / settings_hash(settings), JSON, fanout=False)
    result = memo.get(episode_sha)
    if result is not None:
        return result
    result = {"info": None, "frames": [], "error": None}
    try:
        info = probe(path)
        result["info"] = dataclasses.asdict(info)
        for frame in extract_frames(path, settings.frames_per_second):
            ok, jpeg = cv2.imencode(".jpg", frame.image, [cv2.IMWRITE_JPEG_QUALITY, settings.frame_jpeg_quality])
            sha = store.put(jpeg.tobytes(), ".jpg")
            result["frames"].append({"index": frame.index, "timestamp_s": frame.timestamp_s, "sha": sha})
    except VideoError as exc:
        result["error"] = {"reason": exc.reason, "detail": exc.detail}
    memo.put(episode_sha, result)
    return result


def frame_inputs(
    shard: EpisodeShard, episode_sha: str, frames: list[dict], store: ContentStore
) -> Iterator[ImageInput]:
    for frame in frames:
        yield ImageInput(
            content=store.get(frame["sha"], ".jpg"),
            album_id=shard.album_id,
            source=f"{shard.album_id}/{shard.episode_path}#t={frame['timestamp_s']:g}",
            kind="frame",
            columns={
                "episode_path": shard.episode_path,
                "episode_sha": episode_sha,
                "frame_index": frame["index"],
                "timestamp_s": frame["timestamp_s"],
            },
        )


def process_episode(shard: EpisodeShard, ctx: RunContext) -> dict[str, int]:
    path = Path(shard.path)
    row = episode_row(shard, ctx)
    try:
        row["size_bytes"] = path.stat().st_size
        row["episode_sha"] = episode_sha = file_sha(ctx.data_root, path)
    except OSError as exc:
        row.update(size_bytes=0, episode_sha="", status="dropped", drop_reason="unreadable", detail=safe_name(str(exc)))
        ctx.staging().write("episodes", shard.name, [row])
        return {"episodes": 1, "drop.episode.unreadable": 1}
    extracted = extract_episode(path, episode_sha, ctx.config.frames, ctx.data_root, ctx.store)
    runner = ShardRunner(ctx)
    runner.counts["episodes"] += 1
    if extracted["info"]:
        row["duration_s"], row["codec"] = extracted["info"]["duration_s"], extracted["info"]["codec"]
    if extracted["error"]:
        reason = extracted["error"]["reason"]
        row["detail"] = extracted["error"]["detail"][:1000]
        runner.counts[f"drop.episode.{reason}"] += 1
        # a partly decodable episode keeps its frames (status ok), and its row still names what broke
        row.update(drop_reason=reason, status="ok" if extracted["frames"] else "dropped")
    row["frames"] = len(extracted["frames"])
    if extracted["frames"]:
        runner.counts["frames"] += len(extracted["frames"])
    runner.run(frame_inputs(shard, episode_sha, extracted["frames"], ctx.store))
    return runner.publish(shard.name, episodes=[row])
