"""parse_page: one entry point, site recognised from the URL or the markup, JSON-ready dicts."""

from __future__ import annotations

import json

import pytest

from pipeline.sources.encyclopedia import PageShapeError, detect_site
from pipeline.sources.parse import parse_page
from tests.conftest import SHARED
from tests.pipeline.sources.test_encyclopedia import BAIKE_CLASSIC, BAIKE_URL
from tests.pipeline.sources.test_image_search import BING_PAGE, GOOGLE_RG_META

HTML = SHARED / "fixtures" / "html"
CHARACTER_KEYS = {"name", "image_url", "source_url", "aliases", "found_by"}
SEARCH_KEYS = {"image_url", "thumb_url", "source_url", "title", "width", "height"}


def _fixture(name: str) -> str:
    path = HTML / name
    if not path.is_file():
        pytest.skip(f"shared fixture missing: {path}")
    return path.read_text(encoding="utf-8")


@pytest.mark.shared_data
def test_encyclopedia_page_gives_character_dicts():
    html = _fixture("bulbapedia_character_ghetsis_2026.html")
    rows = parse_page(html)  # no URL: MediaWiki recognised from the markup, base from <link rel=canonical>
    assert rows == [
        {
            "name": "Ghetsis",
            "image_url": "https://archives.bulbagarden.net/media/upload/2/27/Black_2_White_2_Ghetsis.png",
            "source_url": "https://bulbapedia.bulbagarden.net/wiki/Ghetsis",
            "aliases": ["Ghetsis Harmonia Gropius", "ゲーチス・ハルモニア・グロピウス"],
            "found_by": "infobox @ table.roundy.infobox",  # which rule, which container
        }
    ]
    assert json.loads(json.dumps(rows, ensure_ascii=False)) == rows


@pytest.mark.shared_data
def test_wikia_category_and_baike():
    rows = parse_page(
        _fixture("wikia_rick_and_morty_category_characters_2016.html"),
        "http://rickandmorty.wikia.com/wiki/Category:Characters",
        kind="mediawiki",
    )
    assert len(rows) == 201 and set(rows[0]) == CHARACTER_KEYS
    assert rows[0]["name"] == "Rick Sanchez"
    baike = parse_page(BAIKE_CLASSIC, BAIKE_URL)
    assert [r["name"] for r in baike] == ["青木花", "森健司"]


@pytest.mark.shared_data
def test_search_pages_give_result_dicts():
    html = _fixture("baidu_image_search_python_2020.html")
    rows = parse_page(html, "https://image.baidu.com/search/index?tn=baiduimage&word=Python")
    assert len(rows) == 60 and set(rows[0]) == SEARCH_KEYS
    assert rows[0] == {
        "image_url": "http://img.cwq.com/201611/581c95c35ca62.png",
        "thumb_url": "https://ss2.bdstatic.com/70cFvnSh_Q1YnxGkpoWK1HF6hhy/it/u=1883701644,1651591262&fm=26&gp=0.jpg",
        "source_url": "http://www.cwq.com/weixin/198197.html",
        "title": "python中文社区",
        "width": 1024,
        "height": 1024,
    }
    assert parse_page(html) == rows  # from the markup alone
    assert [r["width"] for r in parse_page(BING_PAGE)] == [1920, None]
    assert parse_page(GOOGLE_RG_META, kind="google")[0]["image_url"] == "https://img.example.org/hana.png"


@pytest.mark.parametrize(
    "url, expected",
    [
        ("https://baike.baidu.com/item/%E6%B5%B7%E8%B4%BC%E7%8E%8B/2000", "baike"),
        ("https://image.baidu.com/search/acjson?tn=resultjson_com&word=x", "baidu"),
        ("https://cn.bing.com/images/search?q=x", "bing"),
        ("https://www.google.co.jp/search?q=x&tbm=isch", "google"),
        ("https://en.wikipedia.org/wiki/List_of_Rick_and_Morty_characters", "mediawiki"),
        ("https://rickandmorty.fandom.com/wiki/Category:Characters", "mediawiki"),
        ("https://example.org/page", "unknown"),
    ],
)
def test_detect_site_from_url(url, expected):
    assert detect_site("<html></html>", url) == expected


@pytest.mark.shared_data
def test_url_decides_over_markup():
    # A Bing URL makes Bing's parser read the page, so a Baidu page saved under it is not understood.
    html = _fixture("baidu_image_search_python_2020.html")
    with pytest.raises(PageShapeError, match="^page shape not recognised: Bing page"):
        parse_page(html, "https://www.bing.com/images/search?q=python")


@pytest.mark.parametrize("text", ["<html><body><h1>My holiday</h1><img src='x.jpg'></body></html>", "", "[1, 2]"])
def test_unrecognised_page_raises(text):
    with pytest.raises(PageShapeError, match="^page shape not recognised"):
        parse_page(text, "https://example.org/holiday")


@pytest.mark.shared_data
def test_film_list_as_mediawiki_character_list_raises():
    html = _fixture("wikipedia_list_of_films_featuring_time_loops_2024.html")
    with pytest.raises(PageShapeError, match="^page shape not recognised"):
        parse_page(html, "", kind="mediawiki")


def test_unknown_kind():
    with pytest.raises(ValueError, match="kind must be one of"):
        parse_page("<html></html>", kind="yahoo")
