"""The `ingest` flow: media library -> face funnel -> one new manifest version.

Only wiring lives here; every stage is a plain function in `pipeline/`.
Deployed as `ingest/nightly` by prefect.yaml; run once with `toonface ingest`.
"""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

from prefect import flow, get_run_logger, runtime, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed

from data_manifest.store import Manifest, file_lock
from flows.runners import make_task_runner
from pipeline import stopping
from pipeline.annotate.merge import random_order_faces
from pipeline.config import IngestConfig
from pipeline.dataset_report.build import write_report
from pipeline.dedup import PublishedIndex
from pipeline.episodes import EpisodeShard, process_episode
from pipeline.faults import guarded
from pipeline.identity import embedding
from pipeline.identity.published import Published
from pipeline.identity.stage import run_identity_stage
from pipeline.plan import plan_run
from pipeline.progress import StageProgress
from pipeline.provenance import git_commit
from pipeline.report import contact_sheet, data_uri, funnel_rows, jpeg_data_uri
from pipeline.runner import RunContext, detector_of, merge_counts
from pipeline.sources.library import Album, discover_albums, safe_name
from pipeline.stills import StillsShard, process_stills
from pipeline.web_crawl import crawl_album, record_crawl_failure
from pipeline.web_images import ImageJob, WebShard, download_images, web_shards


# Our own content-hash caches decide what is redone, so Prefect's input hashing is switched off.
@task(name="episode-shard", cache_policy=NO_CACHE, task_run_name="{shard.name}")
def episode_shard(shard: EpisodeShard, ctx: RunContext) -> dict[str, int]:
    return guarded(process_episode, shard, ctx)


@task(name="stills-shard", cache_policy=NO_CACHE, task_run_name="{shard.name}")
def stills_shard(shard: StillsShard, ctx: RunContext) -> dict[str, int]:
    return guarded(process_stills, shard, ctx)


@task(name="crawl-album", cache_policy=NO_CACHE, task_run_name="crawl-{album.album_id}")
def crawl_task(album: Album, ctx: RunContext) -> tuple[list[ImageJob], dict[str, int]]:
    return guarded(crawl_album, album, ctx, on_failure=record_crawl_failure)


@task(name="web-shard", cache_policy=NO_CACHE, task_run_name="{shard.name}")
def web_shard(shard: WebShard, ctx: RunContext) -> dict[str, int]:
    return guarded(download_images, shard, ctx)


@task(name="identity", cache_policy=NO_CACHE)
def identity_stage(staging, manifest: Manifest, cfg: IngestConfig, ctx: RunContext, embedder_id: str):
    """Run-wide: near-duplicates against everything published, references, pre-labels."""
    faces = staging.read("faces").to_pandas()
    assets = staging.read("assets").to_pandas()
    outcome = run_identity_stage(
        faces,
        assets,
        Published.read(manifest),
        settings=cfg.identity,
        data_root=ctx.data_root,
        run_id=ctx.run_id,
        random_sample=random_order_faces(ctx.data_root),
    )
    if outcome is None:
        return None
    if outcome.published_crops_indexed:
        get_run_logger().info(
            "embedded %d published crops into the index of %s", outcome.published_crops_indexed, embedder_id
        )
    records = outcome.faces.astype(object).where(outcome.faces.notna(), None).to_dict("records")
    staging.replace("faces", records)
    staging.write("identities", "identity", outcome.identities)
    staging.write("prelabels", "identity", outcome.prelabels)
    return outcome


def _count_identity(counts: dict, outcome) -> None:
    faces = outcome.faces
    duplicates = int((faces["drop_reason"] == "near_duplicate").sum())
    counts.update(
        {
            "near_duplicates": duplicates,
            "drop.face.near_duplicate": duplicates,
            "prelabelled": int(faces["prelabel"].notna().sum()),
            "identities": len(outcome.identities),
            "prelabels_updated": len(outcome.prelabels),
            "identity_conflicts": sum(1 for r in outcome.identities if r["conflicts"] != "[]"),
        }
    )
    if outcome.published_crops_indexed:  # crops published under another embedder (or none), embedded by this one
        counts["published_crops_indexed"] = outcome.published_crops_indexed
    # crops that passed the quality gate but were near-duplicates are no longer kept
    counts["crops_kept"] = counts.get("crops_kept", 0) - duplicates
    counts["crops_dropped"] = counts.get("crops_dropped", 0) + duplicates


def _run_shards(plan, web_albums: list[Album], ctx: RunContext, progress: bool | None) -> list[dict]:
    """Submit every shard to the task runner; return their counts. Crawls come first, as their
    image URLs become download shards. A shard's bad input becomes a row (see `guarded`); a shard
    that still fails had a run fault (disk, manifest) and fails the run before anything is published
    (finished work stays cached, so a rerun redoes only the rest)."""
    totals = {"shards": len(plan.shards) + len(web_albums), "stills": sum(len(s.files) for s in plan.stills_shards)}
    bar = StageProgress(totals, enabled=progress)
    futures = [episode_shard.submit(s, ctx) for s in plan.episode_shards]
    futures += [stills_shard.submit(s, ctx) for s in plan.stills_shards]
    crawls = [crawl_task.submit(a, ctx) for a in web_albums]
    parts, failures = [], []
    try:
        for crawl in crawls:
            try:
                jobs, part = crawl.result()
            except Exception as exc:
                failures.append(exc)
                continue
            parts.append(part)
            bar.advance(part)
            shards = web_shards(jobs, ctx.config.plan.web_images_per_shard)
            bar.add_total("shards", len(shards))
            futures += [web_shard.submit(s, ctx) for s in shards]
        for future in as_completed(futures):
            try:
                part = future.result()
            except Exception as exc:
                failures.append(exc)
                continue
            parts.append(part)
            bar.advance(part)
    finally:
        bar.close()
    if failures:
        raise RuntimeError(
            f"{len(failures)} of {len(futures) + len(crawls)} shards failed; nothing was published "
            f"(finished work is cached, a rerun redoes only the rest): {failures[0]!r}"
        )
    return parts


def _flow_run_id() -> str:
    return str(runtime.flow_run.id or "")


@flow(name="ingest", task_runner=make_task_runner(), log_prints=True)
def ingest(
    library: str,
    albums: str | None = None,
    data_root: str = "data",
    config: dict | None = None,
    progress: bool | None = None,
) -> dict:
    """Ingest a media library into the manifests under `data_root`. Returns the run summary.
    SIGTERM or SIGINT stops it cleanly (see pipeline/stopping.py)."""
    stopping.reset()
    with stopping.stop_on_signals():
        return _ingest(library, albums, data_root, config, progress)


def _ingest(library: str, albums: str | None, data_root: str, config: dict | None, progress: bool | None) -> dict:
    logger = get_run_logger()
    cfg = IngestConfig.from_dict(config)
    manifest = Manifest(data_root)
    started = dt.datetime.now(dt.UTC)
    run_id = f"{started:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    manifest.recover()  # a run killed while publishing is rolled forward before this one plans
    removed = manifest.remove_abandoned_staging()
    if removed:
        logger.info("removed staging of %d runs that died before publishing: %s", len(removed), removed)
    album_list = discover_albums(library, albums)
    detector, embedder_id = _load_models(cfg, manifest, data_root)
    ctx = RunContext(str(Path(data_root).resolve()), run_id, cfg)
    staging = manifest.staging(run_id)
    staging.dir.mkdir(parents=True, exist_ok=True)
    with file_lock(staging.dir / ".active"):  # marks this staging folder as alive
        plan = plan_run(album_list, cfg.plan, manifest, run_id)
        staging.write("albums", "plan", plan.album_rows)
        staging.write("episodes", "plan", plan.unselected_episode_rows)
        logger.info(
            "run %s: %d albums, %d episodes sampled, %d still shards",
            run_id,
            len(album_list),
            len(plan.episode_shards),
            len(plan.stills_shards),
        )
        parts = _run_shards(plan, [a for a in album_list if a.has_web_sources], ctx, progress)
        counts = merge_counts([*parts, plan.counts])
        counts.update(albums=len(album_list))
        model_ids = {detector.name: detector.model_id}
        identity = identity_stage(staging, manifest, cfg, ctx, embedder_id) if embedder_id else None
        if identity is not None:
            model_ids["embedder"] = embedder_id
            _count_identity(counts, identity)
            PublishedIndex(ctx.data_root, embedder_id).stage(run_id, identity.new_vectors, identity.new_ids)
        kept_shas = _kept_crops(staging)
        run_info = {
            "flow_run_id": _flow_run_id(),
            "started_at": started,
            "git_commit": git_commit(),
            "config_hash": cfg.hash(),
            "config": cfg.to_dict(),
            "model_ids": model_ids,
            "counts": counts,
            "library": safe_name(str(Path(library).resolve())),
            "calibration": identity.calibration if identity is not None else {},
        }
        with stopping.publishing():
            version = manifest.publish(staging, run_info)
        if embedder_id:
            PublishedIndex(ctx.data_root, embedder_id).promote(manifest.run_versions())
    reports = Path(data_root) / "reports" / run_id
    sheet = contact_sheet(kept_shas, ctx.store, reports / "contact_sheet.jpg")
    report = _write_report(data_root, version, reports)
    _publish_artifacts(run_id, version, counts, sheet, len(kept_shas), report)
    logger.info("published manifest version %d of %s", version, manifest.root)
    return _summary(run_id, version, counts, manifest, sheet, report)


def _load_models(cfg: IngestConfig, manifest: Manifest, data_root: str):
    """The run's detector and embedder model id (None: no identity stage), loaded before any work so
    that bad weights fail fast. Vectors of a run that died after publishing join the index now."""
    detector = detector_of(cfg)
    embedder = embedding.load(cfg.identity.embedder)
    embedder_id = embedder.model_id if embedder is not None else None
    if embedder_id:
        PublishedIndex(str(Path(data_root).resolve()), embedder_id).promote(manifest.run_versions())
    return detector, embedder_id


def _kept_crops(staging) -> list[str]:
    faces = staging.read("faces").to_pandas()
    return faces.loc[faces["status"] == "kept", "crop_sha"].dropna().tolist() if len(faces) else []


def _write_report(data_root: str, version: int, folder: Path) -> Path | None:
    """The version's dataset report; None (logged) if it fails: the version is published by then, and a
    report can be made again with `toonface report`."""
    try:
        return write_report(data_root, version, folder)
    except Exception:
        get_run_logger().exception("the report of version %d failed (make it with `toonface report`)", version)
        return None


def _summary(
    run_id: str, version: int, counts: dict, manifest: Manifest, sheet: Path | None, report: Path | None
) -> dict:
    return {
        "run_id": run_id,
        "manifest_version": version,
        "counts": counts,
        "rows_added": manifest.history().iloc[version]["rows_added"],
        "manifest": str(manifest.root),
        "contact_sheet": str(sheet) if sheet else None,
        "report": str(report) if report else None,
    }


def _publish_artifacts(
    run_id: str, version: int, counts: dict, sheet: Path | None, kept: int, report: Path | None
) -> None:
    """The run's Prefect artifacts. Images are small data: URIs, as the UI cannot load file:// links."""
    create_table_artifact(
        funnel_rows(counts), key="ingest-funnel", description=f"Face funnel of run {run_id} (manifest v{version})"
    )
    sheet_line = f"![contact sheet]({jpeg_data_uri(sheet)})" if sheet else "_no crop was kept in this run_"
    create_markdown_artifact(
        f"# Ingest run {run_id}\n\nManifest version **{version}**: {kept} crops kept, "
        f"{counts.get('crops_dropped', 0)} dropped.\n\n{sheet_line}\n",
        key="ingest-contact-sheet",
        description=f"Kept crops of run {run_id}",
    )
    if report is None:
        return
    plots = [f"![{name}]({data_uri((report.parent / name).read_bytes(), 'image/png')})" for name in REPORT_PLOTS]
    create_markdown_artifact(
        f"# Dataset report of version {version}\n\n" + "\n\n".join(plots) + f"\n\nThe whole report: `{report}`\n",
        key="ingest-report",
        description=f"Key plots of manifest version {version}",
    )


# The report's plots shown in the run's artifacts (the page itself is too large for the Prefect API).
REPORT_PLOTS = ("resolution.png", "sharpness.png", "regions.png")
