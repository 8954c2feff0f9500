"""The report as one self-contained HTML page: plots and contact sheets embedded as data: URIs, so it
opens offline, from any folder, and as an e-mail attachment."""

from __future__ import annotations

import html
import json

from pipeline.report import data_uri

FUNNEL_FIXED = ["album_id", "kind", "images", "images_dropped", "faces", "kept"]
STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%}
.note{color:#555;font-style:italic}section{margin-bottom:2em}"""


def _table(rows: list[dict], columns: list[str] | None = None) -> str:
    if not rows:
        return '<p class="note">none</p>'
    columns = columns or list(rows[0])
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(r.get(c)))}</td>" for c in columns) + "</tr>" for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(value) -> str:
    if value is None:
        return ""
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _image(png: bytes, alt: str) -> str:
    return f'<img src="{data_uri(png, "image/png")}" alt="{html.escape(alt)}">'


def _funnel_columns(rows: list[dict]) -> list[str]:
    reasons = sorted({k for r in rows for k in r if k not in FUNNEL_FIXED})
    return FUNNEL_FIXED + reasons


def _statistics(figures: dict, plots: dict[str, bytes]) -> str:
    t = figures["thresholds"]
    return (
        "<section><h2>Statistics (the paper's Fig. 4)</h2>"
        + _table([figures["totals"]])
        + _image(plots["regions.png"], "identities per region")
        + _image(plots["resolution.png"], "face resolution histogram")
        + f'<p class="note">{figures["resolution"]["below"]} of {figures["resolution"]["count"]} faces are under '
        f"{t['min_crop_side']:g} px.</p>"
        + _image(plots["sharpness.png"], "sharpness histogram")
        + f'<p class="note">{figures["sharpness"]["below"]} of {figures["sharpness"]["count"]} faces are under '
        f"sharpness {t['min_sharpness']:g}.</p>"
        + _image(plots["samples_per_identity.png"], "samples per identity")
        + f'<h3>Head pose</h3><p class="note">{html.escape(figures["pose"]["note"])}</p></section>'
    )


def _identities(figures: dict, agreement: dict | None) -> str:
    calibration = figures["calibration"]
    quality = calibration.get("prelabel_vs_verified") if calibration else None
    parts = ["<section><h2>Identities</h2>", _table(figures["identities"])]
    parts += ["<h3>Reference conflicts</h3>", _table(figures["conflicts"])]
    parts.append("<h3>Pre-label calibration</h3>")
    if calibration:
        shown = {k: v for k, v in calibration.items() if not isinstance(v, (dict, list))}
        parts.append(_table([shown]))
        parts.append(f"<pre>{html.escape(json.dumps(quality, indent=1))}</pre>" if quality else "")
    else:
        parts.append('<p class="note">no identity stage ran for this version (no embedder).</p>')
    parts.append("<h3>Annotator agreement</h3>")
    if agreement and agreement.get("pairs"):
        parts.append('<p class="note">from the decision log as it is now, not as of this version.</p>')
        parts.append(_table(agreement["pairs"]))
    else:
        parts.append('<p class="note">no item was judged by two annotators yet.</p>')
    return "".join(parts) + "</section>"


def _sheets(sheets: dict[str, bytes]) -> str:
    if not sheets:
        return '<section><h2>Kept crops</h2><p class="note">no kept crop in this version.</p></section>'
    parts = [f"<h3>{html.escape(album)}</h3>" + _image_jpeg(data, album) for album, data in sorted(sheets.items())]
    return "<section><h2>Kept crops (a random sample per album)</h2>" + "".join(parts) + "</section>"


def _image_jpeg(data: bytes, alt: str) -> str:
    return f'<img src="{data_uri(data, "image/jpeg")}" alt="{html.escape(alt)}">'


def _changes(figures: dict) -> str:
    changes = figures["changes"]
    since = changes["previous_version"]
    rows = [{"table": t, "rows added": n} for t, n in sorted(changes["rows_added"].items())]
    gained = ", ".join(changes["identities_gained"]) or "none"
    title = f"Changes since version {since}" if since is not None else "Changes (the first version)"
    return f"<section><h2>{title}</h2>{_table(rows)}<p>Identities gained: {html.escape(gained)}</p></section>"


def report_page(figures: dict, plots: dict[str, bytes], sheets: dict[str, bytes], agreement: dict | None) -> str:
    """The whole page."""
    title = f"toonface dataset report: version {figures['version']}"
    funnel = figures["funnel"]
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<p>Run {html.escape(figures['run_id'])}, published {html.escape(figures['published_at'])}.</p>"
        + _statistics(figures, plots)
        + "<section><h2>Funnel per album and source</h2>"
        + _table(funnel, _funnel_columns(funnel))
        + "</section>"
        + _identities(figures, agreement)
        + _sheets(sheets)
        + _changes(figures)
        + "</body></html>"
    )
