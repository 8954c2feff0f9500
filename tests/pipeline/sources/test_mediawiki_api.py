"""Reading a MediaWiki category through the API (pipeline.sources.encyclopedia.mediawiki_api): the
endpoint from the page, the query, real recorded answers, continuation and refusals."""

import gzip
import json
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from pipeline.sources.encyclopedia import PageShapeError
from pipeline.sources.encyclopedia.mediawiki_api import (
    api_endpoint,
    article_title,
    category_members_url,
    category_title,
    next_api_url,
    parse_api_response,
    parse_page_images,
)

RECORDED = Path(__file__).resolve().parents[2] / "fixtures" / "mediawiki_api"
API = "https://en.wikipedia.org/w/api.php"


def recorded(name: str) -> dict:
    return json.loads(gzip.decompress((RECORDED / f"{name}.json.gz").read_bytes()))


def test_the_endpoint_comes_from_the_pages_edit_uri_link():
    head = (
        '<head><link rel="EditURI" type="application/rsd+xml" href="//en.wikipedia.org/w/api.php?action=rsd"/></head>'
    )
    assert api_endpoint("https://en.wikipedia.org/wiki/Category:Chess", head) == API
    assert api_endpoint("https://x.org/wiki/A", "<head><link rel='stylesheet' href='/a.css'></head>") is None


def test_category_titles_from_urls():
    assert category_title("https://a.fandom.com/wiki/Category:Main_characters") == "Category:Main characters"
    assert category_title("https://w.org/index.php?title=Category:Heroes&from=K") == "Category:Heroes"
    assert category_title("https://de.wiki.org/wiki/Kategorie:Figur", '"wgNamespaceNumber":14') == "Category:Figur"
    assert category_title("https://a.fandom.com/wiki/Hana") is None


def test_the_query_asks_for_article_members_and_their_lead_images():
    query = parse_qs(urlsplit(category_members_url(API, "Category:Chess")).query)
    assert query["generator"] == ["categorymembers"] and query["gcmtitle"] == ["Category:Chess"]
    assert query["gcmnamespace"] == ["0"] and query["prop"] == ["pageimages|info"]


def test_a_recorded_listing_gives_its_articles():
    characters = parse_api_response(recorded("chess-pages"), API)
    assert [c.name for c in characters] == ["Chess", "Chess aesthetics", "International Chess Day", "Outline of chess"]
    assert characters[0].source_url == "https://en.wikipedia.org/wiki/Chess"
    assert next_api_url(API, "Category:Chess", recorded("chess-pages")) is None


def test_continuation_sends_back_the_continue_block():
    first = recorded("disambiguation-1")
    assert parse_api_response(first, API) == []  # 500 subcategories, no article
    following = parse_qs(urlsplit(next_api_url(API, "Category:X", first)).query)
    assert following["cmcontinue"] == [first["continue"]["cmcontinue"]] and following["gcmtitle"] == ["Category:X"]


def test_lead_images_in_both_response_formats():
    page = {"ns": 0, "title": "Hana Aoki", "original": {"source": "https://img.example.org/a/ab/Hana.png"}}
    thumb = {
        "ns": 0,
        "title": "Kai",
        "thumbnail": {"source": "https://img.example.org/thumb/c/cd/Kai.png/80px-Kai.png"},
    }
    v2 = parse_api_response({"query": {"pages": [page, thumb]}}, API)
    v1 = parse_api_response({"query": {"pages": {"1": page, "2": thumb}}}, API)
    assert v1 == v2 and [c.image_url for c in v2] == [
        "https://img.example.org/a/ab/Hana.png",
        "https://img.example.org/c/cd/Kai.png",
    ]


@pytest.mark.parametrize(
    "doc, message",
    [
        ({"error": {"code": "readapidenied", "info": "You need read permission"}}, "readapidenied"),
        ({"items": []}, "no 'query' block"),
        ([1, 2], "other than a JSON object"),
    ],
)
def test_refusals_and_other_documents_are_not_recognised(doc, message):
    with pytest.raises(PageShapeError, match=message):
        parse_api_response(doc, API)


def test_an_empty_category_is_an_empty_answer():
    assert parse_api_response({"batchcomplete": ""}, API) == []


def test_lead_images_of_titles_through_the_answers_renames():
    # The recorded answer was asked for Barack_Obama and Joe_Biden: its `normalized` block renames them.
    images = parse_page_images(recorded("obama-biden-pageimages"), ["Barack_Obama", "Joe_Biden", "Nobody"])
    assert sorted(images) == ["Barack_Obama", "Joe_Biden"]
    assert images["Barack_Obama"] == "https://upload.wikimedia.org/wikipedia/commons/8/8d/President_Barack_Obama.jpg"
    assert article_title("https://en.wikipedia.org/wiki/Joe_Biden", API) == "Joe Biden"
    assert article_title("https://en.wikipedia.org/wiki/List_of_X#Hana", API) is None  # a section, not an article
    assert article_title("https://other.org/wiki/Joe_Biden", API) is None
