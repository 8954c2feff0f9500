"""The one shard runner: a source gives images (`ImageInput`), the runner sends them through the face
funnel in detector batches, counts them and writes their manifest rows to the run's staging folder.

Episodes, stills and web images differ only in their source (`pipeline/episodes.py`,
`pipeline/stills.py`, `pipeline/web_images.py`). A shard returns only counts, so shards run anywhere
(threads, Dask workers) and send little back. Work is cached by content hash, so a rerun or a resumed
run redoes only what is missing.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterable
from pathlib import Path

from data_manifest.store import Manifest
from pipeline import stopping
from pipeline.config import IngestConfig
from pipeline.detect import Detector, get_detector
from pipeline.faces import ImageAnalysis, analyse_images, funnel_cache
from pipeline.faults import describe, inject_fault, is_run_fault
from pipeline.identity.embedding import embed_crops
from pipeline.store import ContentStore, FileCache, sha256_bytes


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


def detector_of(config: IngestConfig) -> Detector:
    """The run's detector (loaded once per process)."""
    return get_detector(config.funnel.detector, config.detection.detector_weights, config.detection.detector_size)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ImageInput:
    """One image a source gives the runner: its bytes, or the dropped analysis of an input that could
    not be read (`unreadable`, `not_a_file`, `file_too_large`: nothing to analyse)."""

    content: bytes | ImageAnalysis
    album_id: str
    source: str  # library-relative path, "<episode>#t=<seconds>", or a URL
    kind: str  # still | frame | web | reference
    columns: dict = dataclasses.field(default_factory=dict)  # further asset columns (episode, character, query)


ASSET_COLUMNS = {"episode_path": None, "episode_sha": None, "frame_index": None, "timestamp_s": None}


def asset_row(analysis: ImageAnalysis, item: ImageInput, run_id: str) -> dict:
    return {
        "asset_id": analysis.asset_id,
        "source": item.source,
        "kind": item.kind,
        "album_id": item.album_id,
        **ASSET_COLUMNS,
        "size_bytes": analysis.size_bytes,
        "format": analysis.format,
        "width": analysis.width,
        "height": analysis.height,
        "status": "dropped" if analysis.drop_reason else "ok",
        "drop_reason": analysis.drop_reason,
        "detail": analysis.detail,
        "faces": len(analysis.faces),
        "run_id": run_id,
        **item.columns,
    }


def face_rows(analysis: ImageAnalysis, album_id: str, run_id: str) -> list[dict]:
    return [{**face, "album_id": album_id, "run_id": run_id} for face in analysis.faces]


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


def analyse_each(
    datas: list[bytes], config: IngestConfig, detector: Detector, store: ContentStore, cache: FileCache
) -> list[tuple[ImageAnalysis, bool]]:
    """`analyse_images`, except that an unexpected error costs only the image that raised it: the batch
    is retried one image at a time and that image gets an internal_error analysis (not cached)."""
    try:
        inject_fault(datas)
        return analyse_images(datas, config.funnel, detector, store, cache)
    except Exception as exc:
        if is_run_fault(exc):
            raise
        if len(datas) > 1:
            return [result for data in datas for result in analyse_each([data], config, detector, store, cache)]
        # Keyed apart from the image's own sha, so that a later run that analyses it can still publish it.
        sha = sha256_bytes(datas[0])
        return [
            (
                ImageAnalysis(
                    asset_id=sha256_bytes(f"internal_error:{sha}".encode()),
                    size_bytes=len(datas[0]),
                    drop_reason="internal_error",
                    detail=f"{describe(exc)} (bytes sha256 {sha})"[:1000],
                ),
                False,
            )
        ]


def failed_input_rows(ctx: RunContext, items: list[ImageInput], detail: str) -> tuple[list[dict], collections.Counter]:
    """Asset rows and funnel counts of inputs that could not be analysed at all (their shard failed as a
    whole): each one internal_error, keyed by its source, as its bytes may be unknown."""
    counts: collections.Counter = collections.Counter()
    rows = []
    for item in items:
        analysis = ImageAnalysis(
            asset_id=sha256_bytes(item.source.encode(errors="backslashreplace")),
            size_bytes=0,
            drop_reason="internal_error",
            detail=detail,
        )
        count_analysis(counts, analysis, False, None)
        rows.append(asset_row(analysis, item, ctx.run_id))
    return rows, counts


class ShardRunner:
    """Images in, funnel in batches of `detect_batch_size`, rows and counts out; `publish` writes them."""

    def __init__(self, ctx: RunContext, counts: collections.Counter | None = None):
        self.ctx = ctx
        self.counts = counts if counts is not None else collections.Counter()
        self.detector = detector_of(ctx.config)
        self.cache = funnel_cache(ctx.data_root, ctx.config.funnel, self.detector)
        self.assets: list[dict] = []
        self.faces: list[dict] = []
        self._queued: list[ImageInput] = []

    def run(self, items: Iterable[ImageInput]) -> ShardRunner:
        for item in items:
            self.add(item)
        self.flush()
        return self

    def add(self, item: ImageInput) -> None:
        """Analyse later, in one detector batch with the next images."""
        self._queued.append(item)
        if len(self._queued) >= self.ctx.config.detection.detect_batch_size:
            self.flush()

    def analyse_now(self, item: ImageInput) -> ImageAnalysis:
        """Analyse now (with whatever is queued) and return this image's analysis."""
        self._queued.append(item)
        return self.flush()[-1]

    def flush(self) -> list[ImageAnalysis]:
        stopping.check()
        queued, self._queued = self._queued, []
        datas = [item.content for item in queued if isinstance(item.content, bytes)]
        analysed = iter(
            analyse_each(datas, self.ctx.config, self.detector, self.ctx.store, self.cache) if datas else []
        )
        results = []
        for item in queued:
            analysis, cached = next(analysed) if isinstance(item.content, bytes) else (item.content, False)
            count_analysis(self.counts, analysis, cached, self.detector.precision)
            self.assets.append(asset_row(analysis, item, self.ctx.run_id))
            self.faces.extend(face_rows(analysis, item.album_id, self.ctx.run_id))
            results.append(analysis)
        return results

    def publish(self, part: str, **tables: list[dict]) -> dict[str, int]:
        """Embed the kept crops, then write faces, assets and any other `tables` as the staging part `part`."""
        self.flush()
        embed_kept(self.faces, self.ctx)
        staging = self.ctx.staging()
        staging.write("faces", part, self.faces)
        staging.write("assets", part, self.assets)
        for table, rows in tables.items():
            staging.write(table, part, rows)
        return dict(self.counts)


def embed_kept(faces: list[dict], ctx: RunContext) -> None:
    """Embed a shard's kept crops now, in parallel with other shards; the run-wide identity stage then
    finds them in the embedding cache."""
    if ctx.config.identity.embedder == "none":
        return
    embed_crops(
        [f["crop_sha"] for f in faces if f["status"] == "kept" and f["crop_sha"]],
        ctx.config.identity.embedder,
        ctx.data_root,
    )


def merge_counts(parts) -> dict[str, int]:
    total: collections.Counter = collections.Counter()
    for part in parts:
        total.update(part)
    return dict(sorted(total.items()))
