"""Stills of an album, in shards of up to `stills_per_shard` files: the source of kind `still`."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from pipeline.faces import read_still
from pipeline.runner import ImageInput, RunContext, ShardRunner, failed_input_rows


@dataclasses.dataclass(frozen=True)
class StillsShard:
    album_id: str
    index: int
    files: tuple[tuple[str, str], ...]  # (absolute path, library-relative source name)

    @property
    def name(self) -> str:
        return f"stills-{self.album_id}-{self.index:05d}"

    def inputs(self, max_bytes: int) -> Iterator[ImageInput]:
        # stat before reading: a FIFO is never opened, a huge still never loaded (a dropped analysis instead)
        for path, source in self.files:
            yield ImageInput(
                content=read_still(path, source, max_bytes), album_id=self.album_id, source=source, kind="still"
            )

    def record_failure(self, ctx: RunContext, detail: str) -> dict[str, int]:
        """Rows for every still of a shard that failed as a whole: each one dropped as internal_error."""
        items = [
            ImageInput(content=b"", album_id=self.album_id, source=source, kind="still") for _, source in self.files
        ]
        rows, counts = failed_input_rows(ctx, items, detail)
        ctx.staging().write("assets", self.name, rows)
        counts["stills"] += len(rows)
        return dict(counts)


def process_stills(shard: StillsShard, ctx: RunContext) -> dict[str, int]:
    runner = ShardRunner(ctx)
    runner.counts["stills"] += len(shard.files)
    runner.run(shard.inputs(ctx.config.funnel.max_image_bytes))
    return runner.publish(shard.name)
