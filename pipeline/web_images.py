"""Web images of an album, in shards of up to `web_images_per_shard` URLs: the source of kind `web`.

A successful image download is remembered per canonical URL, so reruns and resumed runs never fetch
it again; a failed one is tried again by the next run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from pipeline.runner import ImageInput, RunContext, ShardRunner, failed_input_rows
from pipeline.web_fetch import Fetcher, url_key


@dataclasses.dataclass(frozen=True)
class ImageJob:
    url: str
    album_id: str
    character: str | None
    query: str | None

    def input(self, data: bytes) -> ImageInput:
        return ImageInput(
            content=data,
            album_id=self.album_id,
            source=self.url,
            kind="web",
            columns={"character": self.character, "query": self.query},
        )


@dataclasses.dataclass(frozen=True)
class WebShard:
    album_id: str
    index: int
    jobs: tuple[ImageJob, ...]

    @property
    def name(self) -> str:
        return f"web-{self.album_id}-{self.index:05d}"

    def record_failure(self, ctx: RunContext, detail: str) -> dict[str, int]:
        """Rows for every image URL of a shard that failed as a whole: each one dropped as internal_error."""
        rows, counts = failed_input_rows(ctx, [job.input(b"") for job in self.jobs], detail)
        ctx.staging().write("assets", self.name, rows)
        return dict(counts)


def image_inputs(shard: WebShard, fetcher: Fetcher) -> Iterator[ImageInput]:
    """The shard's images: those fetched before from the store, the others downloaded concurrently
    (each distinct URL once, however many jobs name it)."""
    pending: dict[str, list[ImageJob]] = {}
    for job in shard.jobs:
        data = fetcher.cached_image(job.url)
        if data is not None:
            fetcher.counts["downloads_cached"] += 1
            yield job.input(data)
        else:
            pending.setdefault(url_key(job.url), []).append(job)
    for res in fetcher.downloader.fetch_many([jobs[0].url for jobs in pending.values()], expect="image"):
        jobs = pending.get(res.url) or next((v for v in pending.values() if v[0].url == res.url), [])
        if not jobs:
            continue
        data = fetcher.record(res, "image")
        if data is not None:
            yield from (job.input(data) for job in jobs)


def download_images(shard: WebShard, ctx: RunContext) -> dict[str, int]:
    """Download one shard of image URLs and run each image through the face funnel."""
    runner = ShardRunner(ctx)
    fetcher = Fetcher(ctx, shard.album_id, runner.counts)
    runner.run(image_inputs(shard, fetcher))
    return runner.publish(shard.name, downloads=fetcher.downloads)


def web_shards(jobs: list[ImageJob], per_shard: int) -> list[WebShard]:
    by_album: dict[str, list[ImageJob]] = {}
    for job in jobs:
        by_album.setdefault(job.album_id, []).append(job)
    shards = []
    for album_id, album_jobs in sorted(by_album.items()):
        for i in range(0, len(album_jobs), max(1, per_shard)):
            shards.append(WebShard(album_id, i // per_shard, tuple(album_jobs[i : i + per_shard])))
    return shards
