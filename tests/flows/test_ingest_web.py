"""Web sources through the ingest flow, against a real HTTP server on 127.0.0.1: an encyclopedia
category page, typical images, a Bing-shaped search page, images (some broken or forbidden)."""

import collections
import html
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import cv2
import pytest

from data_manifest import Manifest
from flows.ingest import ingest
from pipeline.config import IngestConfig
from pipeline.runner import RunContext
from pipeline.sample import make_still_image
from pipeline.sources.library import Album
from pipeline.web_crawl import encyclopedia_listing
from pipeline.web_fetch import Fetcher

pytestmark = pytest.mark.usefixtures("prefect_server")

CHARACTERS = {"Hana": 1, "Kai": 2}


def jpeg(seed: int) -> bytes:
    return cv2.imencode(".jpg", make_still_image(seed))[1].tobytes()


class Site:
    """Serves the pages and images; counts requests per path."""

    def __init__(self):
        self.requests: list[str] = []
        self.delay_s = 0.0
        site = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path == "/web/trickle.jpg":  # headers one byte a second, for ever
                    for byte in b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\n" * 100:
                        try:
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                        except ConnectionError:
                            return
                        time.sleep(1)
                    return
                status, ctype, body = site.route(self.path)
                if self.path.startswith("/web/"):
                    time.sleep(site.delay_s)
                site.requests.append(self.path)  # counted once answered
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except ConnectionError:
                    pass  # a crawl killed mid-way hangs up on us: the case under test, not a fault

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def route(self, path):
        url = urlsplit(path)
        if url.path == "/robots.txt":
            return 200, "text/plain", b"User-agent: *\nDisallow: /private/\n"
        if url.path == "/wiki/Category:Characters":
            # A listing on two pages, as MediaWiki paginates a category of over 200 members: Hana
            # on the first, Kai on the second, whose "next" link lies (it points to itself).
            second = parse_qs(url.query).get("pagefrom") == ["Kai"]
            name = "Kai" if second else "Hana"
            paging = (
                '(<a href="/wiki/Category:Characters?pageuntil=Kai#mw-pages">previous 200</a>) '
                '(<a href="/wiki/Category:Characters?pagefrom=Kai#mw-pages">next 200</a>)'
                if second
                else '(previous 200) (<a href="/wiki/Category:Characters?pagefrom=Kai#mw-pages">next 200</a>)'
            )
            page = (
                f'<html><head><meta name="generator" content="MediaWiki 1.19.24"></head>'
                f'<body class="mediawiki ns-14"><h1 id="firstHeading">Category:Characters</h1>'
                f'<div class="category-gallery"><div class="category-gallery-item"><a href="/wiki/{name}" '
                f'title="{name}"><img src="/img/{name}.jpg" width="200"></a></div></div>'
                f'<div id="mw-pages">{paging}<ul><li><a href="/wiki/{name}" title="{name}">{name}</a></li></ul>'
                f"</div></body></html>"
            )
            return 200, "text/html; charset=utf-8", page.encode()
        if url.path == "/wiki/Changed":
            return 200, "text/html", b"<html><body><p>We moved everything around.</p></body></html>"
        if url.path.startswith("/img/"):
            name = url.path[5:-4]
            return 200, "image/jpeg", jpeg(CHARACTERS.get(name, 3))
        if url.path == "/images/search":
            query = parse_qs(url.query)["q"][0]
            name = query.split()[0]
            seed = CHARACTERS[name] * 10
            tiles = [f"/web/{seed + i}.jpg" for i in range(3)] + [
                "/web/broken.jpg",
                "/private/secret.jpg",
                "/web/missing.jpg",
            ]
            body = "".join(
                f'<li><div class="imgpt"><a class="iusc" m="{html.escape(json.dumps({"murl": self.base + t, "turl": self.base + t, "purl": self.base + "/p", "t": name}))}"></a></div></li>'
                for t in tiles
            )
            return 200, "text/html", f"<html><body><ul>{body}</ul></body></html>".encode()
        if url.path == "/web/broken.jpg":
            return 200, "image/jpeg", b"<html>not an image</html>"
        if url.path.startswith("/web/") and url.path[5:-4].isdigit():
            return 200, "image/jpeg", jpeg(int(url.path[5:-4]))
        return 404, "text/plain", b"not found"

    def close(self):
        self.server.shutdown()


@pytest.fixture
def site():
    s = Site()
    yield s
    s.close()


def albums_file(tmp_path, site):
    path = tmp_path / "albums.yaml"
    path.write_text(
        "albums:\n"
        "  - id: toon\n"
        "    name: Toon Town\n"
        f"    encyclopedia: [{site.base}/wiki/Category:Characters, {site.base}/wiki/Changed]\n"
        f"    search: [{{engine: bing, url: '{site.base}/images/search'}}]\n"
    )
    return path


# Detector batches of 4: the 6 searched images are analysed as one full batch and one partial one.
CONFIG = {
    "web_allow_private_hosts": ["127.0.0.1"],
    "web_min_interval_s": 0.0,
    "web_timeout_s": 10,
    "detect_batch_size": 4,
}


def test_characters_references_and_searched_images(tmp_path, site):
    data = tmp_path / "data"
    summary = ingest(library=str(tmp_path), albums=str(albums_file(tmp_path, site)), data_root=str(data), config=CONFIG)
    m = Manifest(data)
    characters = m.read("characters").set_index("name")
    assert sorted(characters.index) == ["Hana", "Kai"]
    assert characters.loc["Hana", "image_url"] == f"{site.base}/img/Hana.jpg"
    assert characters["image_asset_id"].notna().all()

    assets = m.read("assets")
    refs = assets[assets["kind"] == "reference"]
    assert sorted(refs["character"]) == ["Hana", "Kai"]
    web = assets[assets["kind"] == "web"]
    assert len(web) == 6 and set(web["query"]) == {"Hana Toon Town", "Kai Toon Town"}
    faces = m.read("faces")
    assert faces["asset_id"].isin(web["asset_id"]).sum() >= 4  # real detections on downloaded images

    downloads = m.read("downloads")
    failed = dict(downloads.loc[~downloads["ok"], ["url", "reason"]].values)
    assert failed == {
        f"{site.base}/wiki/Changed": "page_shape_not_recognised",
        f"{site.base}/web/broken.jpg": "not_an_image",
        f"{site.base}/private/secret.jpg": "robots_disallowed",
        f"{site.base}/web/missing.jpg": "http_404",
    }
    assert "/private/secret.jpg" not in site.requests
    assert summary["counts"]["drop.download.not_an_image"] == 1
    # both listing pages were read once; the second one's lying link to itself ended the listing
    listing = [p for p in site.requests if p.startswith("/wiki/Category:")]
    assert listing == ["/wiki/Category:Characters", "/wiki/Category:Characters?pagefrom=Kai"]
    assert summary["counts"]["drop.encyclopedia.page_loop"] == 1
    assert summary["counts"]["encyclopedia_pages"] == 3  # two listing pages and the changed one

    # A rerun fetches only what failed (and the pages and searches), never a stored image again.
    before = len(site.requests)
    ingest(library=str(tmp_path), albums=str(albums_file(tmp_path, site)), data_root=str(data), config=CONFIG)
    again = site.requests[before:]
    assert not any(p.startswith("/img/") or p[5:-4].isdigit() for p in again if p.startswith(("/img/", "/web/")))
    assert "/web/missing.jpg" in again and "/web/broken.jpg" in again
    assert len(m.read("assets")) == len(assets)  # nothing new


def test_a_crawl_killed_midway_resumes_without_fetching_stored_images_again(tmp_path, site):
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import PROJECT

    site.delay_s = 0.4  # slow images, so the kill lands mid-download
    albums = albums_file(tmp_path, site)
    data = tmp_path / "data"
    overrides = [
        "--set",
        'web_allow_private_hosts=["127.0.0.1"]',
        "--set",
        "web_min_interval_s=0",
        "--set",
        "web_max_workers=1",
    ]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "toonface.cli",
            "ingest",
            "--library",
            str(tmp_path),
            "--albums",
            str(albums),
            "--data-root",
            str(data),
            *overrides,
        ],
        cwd=PROJECT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and sum(p.startswith("/web/") for p in site.requests) < 3:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    fetched_before = [p for p in site.requests if p.startswith("/web/") and p[5:-4].isdigit()]
    assert 1 <= len(fetched_before) < 6 and Manifest(data).latest_version() is None

    site.delay_s = 0.0
    ingest(library=str(tmp_path), albums=str(albums), data_root=str(data), config=CONFIG)
    fetched = [p for p in site.requests if p.startswith("/web/") and p[5:-4].isdigit()]
    # Every image was fetched; the killed run's finished downloads were not repeated (at most the one
    # in flight at the kill, answered by the server but never stored by the client, is fetched again).
    assert len(set(fetched)) == 6 and len(fetched) - 6 <= 1
    assert len(Manifest(data).read("assets").query("kind == 'web'")) == 6


def test_a_listing_is_followed_up_to_the_page_limit(tmp_path, site):
    album = Album("toon", "Toon Town", encyclopedia=(f"{site.base}/wiki/Category:Characters",))

    def read(max_pages):
        ctx = RunContext(str(tmp_path), "run", IngestConfig.from_dict({**CONFIG, "encyclopedia_max_pages": max_pages}))
        fetcher = Fetcher(ctx, album.album_id, collections.Counter())
        found = encyclopedia_listing(album.encyclopedia[0], fetcher, max_pages)
        return [c.name for c in found], fetcher.counts, fetcher.downloads

    names, counts, downloads = read(1)
    assert names == ["Hana"] and counts["drop.encyclopedia.page_limit"] == 1 and len(downloads) == 1
    names, counts, downloads = read(50)
    assert names == ["Hana", "Kai"] and counts["drop.encyclopedia.page_loop"] == 1
    assert [d["ok"] for d in downloads] == [True, True]


def test_a_trickling_server_a_crashing_page_and_a_stop_cost_their_own_rows_only(tmp_path, site, monkeypatch):
    # One searched image's server sends its headers a byte a second; one search page makes the parser
    # raise (injected: the crafted pages of the issue no longer do). The run publishes everything else.
    albums = tmp_path / "albums.yaml"
    albums.write_text(
        "albums:\n  - id: toon\n    name: Toon Town\n"
        f"    encyclopedia: [{site.base}/wiki/Category:Characters]\n"
        f"    search: [{{engine: bing, url: '{site.base}/images/search'}}]\n"
    )
    urls = tmp_path / "urls.csv"
    urls.write_text(f"url\n{site.base}/web/trickle.jpg\n{site.base}/web/40.jpg\n")
    import hashlib
    import urllib.request

    with urllib.request.urlopen(f"{site.base}/images/search?q=Kai+Toon+Town") as page:
        monkeypatch.setenv("TOONFACE_FAULT_RAISE_ON", hashlib.sha256(page.read()).hexdigest())
    text = albums.read_text() + f"    url_lists: [{urls}]\n"
    albums.write_text(text)
    started = time.monotonic()
    summary = ingest(
        library=str(tmp_path),
        albums=str(albums),
        data_root=str(tmp_path / "data"),
        config={**CONFIG, "web_timeout_s": 2},
    )
    downloads = Manifest(tmp_path / "data").read("downloads").set_index("url")
    assert downloads.loc[f"{site.base}/web/trickle.jpg", "reason"] == "timeout"
    crashed = downloads[downloads["reason"] == "internal_error"]
    assert len(crashed) == 1 and crashed["detail"].iloc[0].startswith("RuntimeError: injected fault")
    assert summary["counts"]["internal_errors"] == 1
    web = Manifest(tmp_path / "data").read("assets").query("kind == 'web'")
    assert len(web) == 3 + 1  # Hana's three searched images and the listed one; Kai's search was lost
    assert time.monotonic() - started < 120


def test_sigterm_abandons_downloads_in_flight_within_seconds(tmp_path, site):
    import signal
    import subprocess
    import sys

    from tests.conftest import PROJECT

    site.delay_s = 120  # every searched image hangs before its headers
    data = tmp_path / "data"
    overrides = [
        "--set",
        'web_allow_private_hosts=["127.0.0.1"]',
        "--set",
        "web_min_interval_s=0",
        "--set",
        "web_timeout_s=300",
    ]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "toonface.cli",
            "ingest",
            "--library",
            str(tmp_path),
            "--albums",
            str(albums_file(tmp_path, site)),
            "--data-root",
            str(data),
            *overrides,
        ],
        cwd=PROJECT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(p.startswith("/images/search") for p in site.requests):
        time.sleep(0.05)
    time.sleep(1.0)  # the image downloads are now waiting on the server
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err.decode()[-2000:]
    assert time.monotonic() - started < 10
    assert Manifest(data).latest_version() is None
