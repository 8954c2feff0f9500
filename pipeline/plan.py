"""Plan an ingest run: which albums, which episodes (seeded, sticky sampling), which still shards."""

from __future__ import annotations

import collections
import dataclasses

from data_manifest.store import Manifest
from pipeline.config import PlanSettings
from pipeline.episodes import EpisodeShard
from pipeline.sources.library import Album, file_problem, safe_name, select_episodes
from pipeline.stills import StillsShard


@dataclasses.dataclass
class RunPlan:
    album_rows: list[dict]
    # episodes recorded, not decoded: noticed but not sampled, or not a readable file (then dropped)
    unselected_episode_rows: list[dict]
    episode_shards: list[EpisodeShard]
    stills_shards: list[StillsShard]

    @property
    def shards(self) -> list:
        return [*self.episode_shards, *self.stills_shards]

    @property
    def counts(self) -> dict[str, int]:
        """Counts of the episodes dropped here, before any shard (shards count their own): merge them
        into the run's counts."""
        counts = collections.Counter(
            f"drop.episode.{row['drop_reason']}" for row in self.unselected_episode_rows if row["status"] == "dropped"
        )
        if counts:
            counts["episodes"] = sum(counts.values())
        return dict(counts)


def previously_selected(manifest: Manifest) -> dict[str, set[str]]:
    """Episodes picked by earlier published runs, per album (the recorded choice)."""
    if manifest.latest_version() is None:
        return {}
    episodes = manifest.read("episodes", columns=["album_id", "episode_path", "selected"])
    picked: dict[str, set[str]] = {}
    for album_id, path in episodes.loc[episodes["selected"], ["album_id", "episode_path"]].itertuples(index=False):
        picked.setdefault(album_id, set()).add(path)
    return picked


def _size(path) -> int:
    try:
        return path.stat().st_size
    except OSError:  # gone since the listing: the size is only informative
        return 0


def plan_run(albums: list[Album], settings: PlanSettings, manifest: Manifest, run_id: str) -> RunPlan:
    picked_before = previously_selected(manifest)
    plan = RunPlan([], [], [], [])
    for album in albums:
        plan.album_rows.append(
            {
                "album_id": album.album_id,
                "name": album.name,
                "region": album.region,
                "episodes_dir": safe_name(str(album.episodes_dir or album.mixed_dir or "")),
                "stills_dir": safe_name(str(album.stills_dir or album.mixed_dir or "")),
                "run_id": run_id,
            }
        )
        episodes = {}
        for path in album.episodes():
            rel, problem = album.relative(path, episodes=True), file_problem(path)
            if problem is None:
                episodes[rel] = path
                continue
            # Never sampled: hashing a FIFO would wait forever, and a broken link would take a place.
            plan.unselected_episode_rows.append(
                _unselected_row(album, rel, run_id, status="dropped", drop_reason=problem[0], detail=problem[1])
            )
        picked = picked_before.get(album.album_id, set())
        choice = select_episodes(
            album.album_id, list(episodes), picked, settings.episodes_per_album, settings.sample_seed
        )
        for rel, (selected, rank) in sorted(choice.items(), key=lambda kv: kv[1][1]):
            if selected:
                plan.episode_shards.append(EpisodeShard(album.album_id, str(episodes[rel]), rel, rank))
            else:
                plan.unselected_episode_rows.append(
                    _unselected_row(
                        album, rel, run_id, status="not_selected", size_bytes=_size(episodes[rel]), sample_rank=rank
                    )
                )
        plan.stills_shards += _stills_shards(album, settings.stills_per_shard)
    return plan


def _unselected_row(album: Album, rel: str, run_id: str, **values) -> dict:
    """An `episodes` row of an episode that is not decoded this run (not sampled, or not a readable file)."""
    row = {
        "album_id": album.album_id,
        "episode_path": rel,
        "episode_sha": "",
        "size_bytes": 0,
        "duration_s": None,
        "codec": None,
        "selected": False,
        "sample_rank": None,
        "frames": 0,
        "status": "",
        "drop_reason": None,
        "detail": "",
        "run_id": run_id,
    }
    return {**row, **values}


def _stills_shards(album: Album, stills_per_shard: int) -> list[StillsShard]:
    stills = [(str(p), f"{album.album_id}/{album.relative(p, episodes=False)}") for p in album.stills()]
    size = max(1, stills_per_shard)
    return [StillsShard(album.album_id, i // size, tuple(stills[i : i + size])) for i in range(0, len(stills), size)]
