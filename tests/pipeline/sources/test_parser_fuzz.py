"""Saved-page parsers give a list of results or raise PageShapeError, nothing else, whatever the page
(issue 37): the crafted pages of the crash reports first, then a Hypothesis fuzz of every kind.
Pages come from parser_pages.py, shared with benchmarks/fuzz_parsers.py."""

from __future__ import annotations

import html
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.sources.encyclopedia import MAX_DEPTH, PageShapeError
from pipeline.sources.parse import parse_page
from tests.pipeline.sources.parser_pages import KINDS, pages
from toonface.cli import main

HTML_KINDS = ("bing", "google", "mediawiki", "baike")
FUZZ_EXAMPLES = 300  # per kind: about 10 s in all on two cores


def rows_or_shape_error(text: str, kind: str, url: str = "") -> list[dict] | None:
    """parse_page's rows, None for PageShapeError; any other exception fails the test."""
    try:
        rows = parse_page(text, url, kind)
    except PageShapeError:
        return None
    assert isinstance(rows, list) and all(isinstance(r, dict) for r in rows)
    json.dumps(rows, ensure_ascii=False).encode("utf-8")  # what `toonface parse --json` prints
    return rows


def bing_page(*m_attributes: str) -> str:
    tiles = "".join(
        f'<li><div class="imgpt"><a class="iusc" m="{html.escape(m)}" href="/images/x"></a></div></li>'
        for m in m_attributes
    )
    return f'<html><body><div id="mmComponent_images_1" class="dgControl"><ul>{tiles}</ul></div></body></html>'


GOOD_M = json.dumps({"murl": "https://img.example.org/hana.jpg", "purl": "https://fans.example.org/hana"})


# --------------------------------------------------------------------------- reported crashes


def test_baidu_objurl_number_skips_only_that_item(tmp_path, capsys):
    # Was TypeError (a number handed to the URL decoder's regex).
    text = json.dumps(
        {
            "data": [
                {"objURL": 5},
                {"objURL": "https://img.example.org/a.jpg", "fromURL": 7, "width": [640], "height": "480"},
                {"objURL": 5, "thumbURL": "https://img.example.org/t.jpg"},  # falls back as if objURL were missing
                {},
            ]
        }
    )
    rows = rows_or_shape_error(text, "baidu")
    assert [(r["image_url"], r["source_url"], r["width"], r["height"]) for r in rows] == [
        ("https://img.example.org/a.jpg", None, None, 480),
        ("https://img.example.org/t.jpg", None, None, None),
    ]
    page = tmp_path / "p.html"
    page.write_text('{"data": [{"objURL": 5}]}', encoding="utf-8")
    assert main(["parse", "--kind", "baidu", str(page), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_bing_m_attribute_that_is_not_an_object():
    # Was AttributeError: m="[1,2]" is JSON, but a list.
    rows = rows_or_shape_error(bing_page("[1,2]", '"murl"', "5", GOOD_M), "bing")
    assert [r["image_url"] for r in rows] == ["https://img.example.org/hana.jpg"]


@pytest.mark.parametrize("m", ["[" * 100_000, "[" * 100_000 + "]" * 100_000])
def test_bing_m_attribute_nested_deeply(m):
    # Was RecursionError from json's decoder; the tile is skipped, the others kept.
    rows = rows_or_shape_error(bing_page(m, GOOD_M), "bing")
    assert [r["image_url"] for r in rows] == ["https://img.example.org/hana.jpg"]


@pytest.mark.parametrize("body", ["[" * 100_000 + "]" * 100_000, "[" * 100_000])
def test_baidu_acjson_nested_deeply(body):
    # Was RecursionError.
    assert rows_or_shape_error('{"data": ' + body + "}", "baidu") is None
    assert rows_or_shape_error("<script>flip.setData('imgData', {\"data\": " + body + "});</script>", "baidu") is None


def test_google_ischj_without_an_object():
    # Was KeyError: no "{" before "ischj", so js_object_at was handed offset -1.
    assert rows_or_shape_error('"ischj": []', "google") is None
    assert rows_or_shape_error('"ischj"', "auto") is None


def test_google_ischj_of_the_wrong_type():
    # Was AttributeError on a list.
    for ischj in ([1], "x", 5, {"metadata": {"a": 1}}, {"metadata": "x"}):
        assert rows_or_shape_error(json.dumps({"ischj": ischj}), "google") is None
    metadata = [
        [1],
        "x",
        {"original_image": [1]},
        {"original_image": {"url": 5}},
        {
            "original_image": {"url": "https://img.example.org/a.png", "width": {}},
            "thumbnail": "t",
            "result": [{"referrer_url": "https://fans.example.org/"}],
        },
    ]
    rows = rows_or_shape_error(json.dumps({"ischj": {"metadata": metadata}}), "google")
    assert rows == [
        {
            "image_url": "https://img.example.org/a.png",
            "thumb_url": None,
            "source_url": None,
            "title": None,
            "width": None,
            "height": None,
        }
    ]


def test_google_backslash_q_escape():
    # Was JSONDecodeError from the AF_initDataCallback strings: \q is no JSON escape.
    pair = '["https://encrypted-tbn0.gstatic.com/images?q=tbn:{0}",168,300],["https://img.example.org/{1}",1080,1920]'
    script = (
        "AF_initDataCallback({key: 'ds:1', data:[["
        + pair.format("A", "bad\\q.jpg")
        + "],["
        + pair.format("B\\q", "good.jpg")
        + "]]});"
    )
    rows = rows_or_shape_error(f"<html><body><script>{script}</script></body></html>", "google")
    assert [(r["image_url"], r["thumb_url"], r["width"]) for r in rows] == [
        ("https://img.example.org/good.jpg", None, 1920)
    ]
    assert rows_or_shape_error('{"ischj": {"metadata": [{"original_image": {"url": "\\q"}}]}}', "google") is None


# --------------------------------------------------------------------------- other crashes the fuzz found

# Each level is markup its parser looks for, so the nesting reaches the parser's tree walks.
DEEP_LEVELS = {
    "bing": '<div class="imgpt">',
    "google": '<div class="rg_meta">',
    "baike": '<div class="roleName">',
    "mediawiki": '<div class="mw-parser-output">',
}


@pytest.mark.parametrize("kind", HTML_KINDS)
def test_html_nested_deeply(kind):
    # Was RecursionError (Baike compared Tags with ==, which recurses) or seconds of ancestor scans.
    page = '<html><body class="mediawiki"><div id="mw-content-text">' + DEEP_LEVELS[kind] * 100_000 + "x"
    assert rows_or_shape_error(page, kind) is None
    # Real pages nest 15-25 deep: well inside the bound.
    assert rows_or_shape_error(bing_page(GOOD_M).replace("<ul>", "<div>" * (MAX_DEPTH - 10) + "<ul>"), "bing")


@pytest.mark.parametrize("kind", KINDS)
def test_lone_surrogates(kind):
    # lxml refuses them (UnicodeEncodeError), and so does the CLI's UTF-8 output.
    assert rows_or_shape_error('<html><body class="mediawiki iusc">\ud800</body></html>', kind) is None
    baidu = (
        '{"data": [{"objURL": "https://img.example.org/\\ud800.jpg", "thumbURL": "https://img.example.org/t.jpg", '
        '"fromPageTitle": "a\\ud800b"}]}'
    )
    assert rows_or_shape_error(baidu, "baidu")[0]["title"] == "a\ufffdb"


def test_numbers_past_python_int_limit():
    # int() refuses over 4,300 digits: json.loads and int(str) raised ValueError.
    huge = "9" * 5000
    for width in (huge, f'"{huge}"', f"[{huge}]"):
        page = '{"data": [{"objURL": "https://img.example.org/a.jpg", "width": ' + width + ', "height": 5}]}'
        assert [(r["width"], r["height"]) for r in rows_or_shape_error(page, "baidu")] == [(None, 5)]
    assert [
        r["image_url"]
        for r in rows_or_shape_error(bing_page('{"murl": "https://a.org/x.jpg", "h": ' + huge + "}"), "bing")
    ] == ["https://a.org/x.jpg"]
    script = (
        'AF_initDataCallback({data:[["https://encrypted-tbn0.gstatic.com/images?q=A",1,2],'
        f'["https://img.example.org/a.jpg",{huge},{huge}]]}});'
    )
    assert rows_or_shape_error(f"<script>{script}</script>", "google")[0]["width"] is None
    thumb = f"https://upload.wikimedia.org/wikipedia/commons/thumb/a/ab/Hana.svg/{huge}px-Hana.svg.png"
    page = (
        '<html><body class="mediawiki"><h1 id="firstHeading">Hana</h1><div id="mw-content-text">'
        f'<table class="infobox"><tr><td><img src="{thumb}"></td></tr><tr><th>Gender</th></tr></table></div>'
    )
    assert rows_or_shape_error(page, "mediawiki")[0]["image_url"] == thumb


def test_urls_that_urllib_refuses():
    # urlsplit raises ValueError on a bad IPv6 host: that link is skipped, not the page.
    page = (
        '<html><body class="mediawiki ns-14"><h1 id="firstHeading">Category:Characters</h1>'
        '<div id="mw-pages"><ul><li><a href="http://[x/wiki/A">A</a></li><li><a href="/wiki/Hana">Hana</a></li>'
        '<li><a href="http://a\uff03b/wiki/B">B</a></li></ul></div>'
        '<link rel="canonical" href="http://[x/wiki/Category:Characters"></body></html>'
    )
    assert [r["name"] for r in rows_or_shape_error(page, "mediawiki", "https://sunny.fandom.com/wiki/Category:C")] == [
        "Hana"
    ]
    assert [r["source_url"] for r in rows_or_shape_error(page, "mediawiki")] == ["/wiki/Hana"]
    baike = (
        '<div class="role-list"><ul><li><div class="role-name"><a href="http://[x/item">青木花</a></div>'
        '<img src="//[::1/a.png"></li></ul></div>'
    )
    assert rows_or_shape_error(baike, "baike", "https://baike.baidu.com/item/x/1") == [
        {
            "name": "青木花",
            "image_url": None,
            "source_url": "https://baike.baidu.com/item/x/1",
            "aliases": [],
            "found_by": "baike-role @ div",
        }
    ]


def test_many_role_names_and_headings_stay_linear():
    # Each role name used to rescan every other name's ancestors (cubic), each heading every other
    # heading (quadratic): 3,000 took minutes and seconds.
    baike = (
        "<ul class='role-list'>"
        + "".join(f"<li><span class='role-name'>n{i}</span><img src='/a{i}.png'></li>" for i in range(3000))
        + "</ul>"
    )
    assert len(rows_or_shape_error(baike, "baike")) == 3000
    listing = (
        '<html><body class="mediawiki"><h1 id="firstHeading">List of X characters</h1><div id="mw-content-text">'
        + "".join(f"<h2 id='h{i}'>Name {i}</h2><h3>Personality</h3><p>x</p>" for i in range(3000))
    )
    assert len(rows_or_shape_error(listing, "mediawiki")) == 3000


# --------------------------------------------------------------------------- fuzz


@pytest.mark.parametrize("kind", KINDS)
@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
@given(data=st.data())
def test_any_page_gives_rows_or_page_shape_error(kind, data):
    text, url = data.draw(pages(kind), label="page")
    rows_or_shape_error(text, kind, url)
