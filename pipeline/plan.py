"""Plan an ingest run: which albums, which episodes (seeded, sticky sampling), which still shards."""
from __future__ import annotations

import dataclasses

from data_manifest.store import Manifest
from pipeline.config import IngestConfig
from pipeline.shards import EpisodeShard, StillsShard
from pipeline.sources.library import Album, select_episodes


@dataclasses.dataclass
class RunPlan:
    album_rows: list[dict]
    unselected_episode_rows: list[dict]   # episodes noticed but not sampled: recorded, not decoded
    episode_shards: list[EpisodeShard]
    stills_shards: list[StillsShard]

    @property
    def shards(self) -> list:
        return [*self.episode_shards, *self.stills_shards]


def previously_selected(manifest: Manifest) -> dict[str, set[str]]:
    """Episodes picked by earlier published runs, per album (the recorded choice)."""
    if manifest.latest_version() is None:
        return {}
    episodes = manifest.read("episodes", columns=["album_id", "episode_path", "selected"])
    picked: dict[str, set[str]] = {}
    for album_id, path in episodes.loc[episodes["selected"], ["album_id", "episode_path"]].itertuples(index=False):
        picked.setdefault(album_id, set()).add(path)
    return picked


def plan_run(albums: list[Album], config: IngestConfig, manifest: Manifest, run_id: str) -> RunPlan:
    picked_before = previously_selected(manifest)
    plan = RunPlan([], [], [], [])
    for album in albums:
        plan.album_rows.append({
            "album_id": album.album_id, "name": album.name, "region": album.region,
            "episodes_dir": str(album.episodes_dir or album.mixed_dir or ""),
            "stills_dir": str(album.stills_dir or album.mixed_dir or ""), "run_id": run_id,
        })
        episodes = {album.relative(p, episodes=True): p for p in album.episodes()}
        choice = select_episodes(album.album_id, list(episodes), picked_before.get(album.album_id, set()),
                                 config.episodes_per_album, config.sample_seed)
        for rel, (selected, rank) in sorted(choice.items(), key=lambda kv: kv[1][1]):
            if selected:
                plan.episode_shards.append(EpisodeShard(album.album_id, str(episodes[rel]), rel, rank))
            else:
                plan.unselected_episode_rows.append({
                    "album_id": album.album_id, "episode_path": rel, "episode_sha": "",
                    "size_bytes": episodes[rel].stat().st_size, "duration_s": None, "codec": None,
                    "selected": False, "sample_rank": rank, "frames": 0, "status": "not_selected",
                    "drop_reason": None, "detail": "", "run_id": run_id,
                })
        stills = [(str(p), f"{album.album_id}/{album.relative(p, episodes=False)}") for p in album.stills()]
        size = max(1, config.stills_per_shard)
        for i in range(0, len(stills), size):
            plan.stills_shards.append(StillsShard(album.album_id, i // size, tuple(stills[i:i + size])))
    return plan
