"""A MediaWiki category crawled through the wiki's API (pipeline.web_crawl.api_listing), against real
recorded English Wikipedia API answers (tests/fixtures/mediawiki_api) served from 127.0.0.1 with the
category's HTML page; and the HTML listing when the API is missing or fails."""

import collections
import gzip
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from pipeline.config import IngestConfig
from pipeline.runner import RunContext
from pipeline.web_crawl import encyclopedia_listing
from pipeline.web_fetch import Fetcher

RECORDED = Path(__file__).resolve().parents[1] / "fixtures" / "mediawiki_api"
CHESS_ARTICLES = ["Chess", "Chess aesthetics", "International Chess Day", "Outline of chess"]


def recorded(name: str) -> bytes:
    return gzip.decompress((RECORDED / f"{name}.json.gz").read_bytes())


class Wiki:
    """A category page (whose own HTML listing names someone else, so the test sees which was read)
    and api.php answering with the recorded responses, by category and continuation."""

    def __init__(self, api_status: int = 200, edit_uri: bool = True):
        self.requests: list[str] = []
        wiki = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                wiki.requests.append(self.path)
                status, ctype, body = wiki.route(self.path)
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.api_status, self.edit_uri = api_status, edit_uri
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def route(self, path):
        url = urlsplit(path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/robots.txt":
            return 200, "text/plain", b"User-agent: *\nAllow: /\n"
        if url.path.startswith("/wiki/Category:"):
            title = url.path.split("/wiki/", 1)[1].replace("_", " ")
            link = f'<link rel="EditURI" type="application/rsd+xml" href="{self.base}/w/api.php?action=rsd">'
            page = (
                f'<html><head><meta name="generator" content="MediaWiki 1.29">{link if self.edit_uri else ""}</head>'
                f'<body class="mediawiki ns-14"><h1 id="firstHeading">{title}</h1>'
                '<div id="mw-pages"><ul><li><a href="/wiki/From_the_HTML" title="From the HTML">From the HTML</a></li>'
                "</ul></div></body></html>"
            )
            return 200, "text/html; charset=utf-8", page.encode()
        if url.path == "/wiki/List_of_people":
            rows = "".join(
                f'<tr><td><a href="/wiki/{t.replace(" ", "_")}" title="{t}">{t}</a></td><td>x</td></tr>'
                for t in ("Barack Obama", "Joe Biden", "Hana Aoki")
            )
            page = (
                f'<html><head><link rel="EditURI" href="{self.base}/w/api.php?action=rsd"></head><body class="mediawiki">'
                '<h1 id="firstHeading">List of characters</h1><div id="mw-content-text"><div class="mw-parser-output">'
                f'<table class="wikitable"><tr><th>Character</th><th>Notes</th></tr>{rows}</table></div></div></body></html>'
            )
            return 200, "text/html; charset=utf-8", page.encode()
        if url.path == "/w/api.php" and query.get("prop") == "pageimages":
            self.asked_titles = query["titles"].split("|")
            return 200, "application/json", recorded("obama-biden-pageimages")
        if url.path == "/w/api.php" and self.api_status != 200:
            return self.api_status, "text/plain", b"unavailable"
        if url.path == "/w/api.php" and query.get("gcmtitle") == "Category:Chess":
            return 200, "application/json", recorded("chess-pages")
        if url.path == "/w/api.php" and query.get("gcmtitle") == "Category:Disambiguation categories":
            batches = {None: 1}
            for n in (1, 2):  # each answer's continue block leads to the next recorded answer
                batches[json.loads(recorded(f"disambiguation-{n}"))["continue"]["cmcontinue"]] = n + 1
            number = batches.get(query.get("cmcontinue"))
            return (
                (200, "application/json", recorded(f"disambiguation-{number}")) if number else (404, "text/plain", b"")
            )
        return 404, "text/plain", b"not found"

    def listing(self, tmp_path, page: str, use_api: bool = True):
        config = {"web_allow_private_hosts": ["127.0.0.1"], "web_min_interval_s": 0.0, "web_timeout_s": 10}
        ctx = RunContext(str(tmp_path), "run", IngestConfig.from_dict(config))
        fetcher = Fetcher(ctx, "album", collections.Counter())
        found = encyclopedia_listing(f"{self.base}/wiki/{page}", fetcher, 50, use_api)
        return found, fetcher


@pytest.fixture
def wiki():
    servers = []

    def start(**kwargs):
        servers.append(Wiki(**kwargs))
        return servers[-1]

    yield start
    for server in servers:
        server.server.shutdown()


def test_a_category_is_read_through_the_api(tmp_path, wiki):
    found, fetcher = wiki().listing(tmp_path, "Category:Chess")
    # The articles of the category (the portal and the HTML listing's name are not members)
    assert [c.name for c in found] == CHESS_ARTICLES
    assert all(c.found_by == "api:categorymembers" for c in found)
    assert found[0].source_url.endswith("/wiki/Chess")
    assert [(d["purpose"], d["ok"]) for d in fetcher.downloads] == [("encyclopedia", True), ("encyclopedia_api", True)]


def test_the_api_continuation_is_followed_batch_after_batch(tmp_path, wiki):
    site = wiki()
    found, fetcher = site.listing(tmp_path, "Category:Disambiguation_categories")
    assert found == []  # 1,274 members, all subcategories: no article to take
    api_calls = [p for p in site.requests if p.startswith("/w/api.php")]
    assert len(api_calls) == 3 and "cmcontinue=" in api_calls[1] and "cmcontinue=" in api_calls[2]
    assert fetcher.counts["encyclopedia_api_pages"] == 3


@pytest.mark.parametrize("api", [{"api_status": 503}, {"edit_uri": False}])
def test_the_html_listing_when_the_api_fails_or_is_missing(tmp_path, wiki, api):
    found, fetcher = wiki(**api).listing(tmp_path, "Category:Chess")
    assert [c.name for c in found] == ["From the HTML"]
    assert found[0].found_by == "category @ #mw-pages"


def test_the_api_can_be_switched_off(tmp_path, wiki):
    site = wiki()
    found, _ = site.listing(tmp_path, "Category:Chess", use_api=False)
    assert [c.name for c in found] == ["From the HTML"]
    assert not [p for p in site.requests if p.startswith("/w/api.php")]


def test_names_of_a_list_page_get_their_articles_lead_images(tmp_path, wiki):
    # A table of names without pictures; the API answers with the lead images it has (recorded).
    site = wiki()
    found, fetcher = site.listing(tmp_path, "List_of_people")
    assert site.asked_titles == ["Barack Obama", "Joe Biden", "Hana Aoki"]
    images = {c.name: c.image_url for c in found}
    assert images["Barack Obama"].endswith("/8/8d/President_Barack_Obama.jpg")  # the original, not the 256 px thumb
    assert images["Joe Biden"].endswith("/e/ea/Official_portrait_of_Vice_President_Joe_Biden.jpg")
    assert images["Hana Aoki"] is None and fetcher.counts["lead_images"] == 2
