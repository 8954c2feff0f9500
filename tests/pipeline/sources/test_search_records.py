"""Image-search results found by their fields wherever a page puts them
(pipeline.sources.search_records, read by pipeline.sources.image_search)."""

import json

from pipeline.sources.image_search import parse_search
from pipeline.sources.search_records import embedded_records


def record(n: int) -> dict:
    return {"thumbURL": f"https://t.example.org/{n}.jpg", "objURL": f"https://img.example.org/{n}.jpg", "width": 640}


def test_baidu_records_in_a_variable_of_another_name():
    # 2018 and 2020 pages keep the same records under other script variables: found by the objURL field.
    for script in ("app.setData('imgData', {0})", "var imgTempData = {0};", "window.__INITIAL_STATE__ = {0};"):
        page = "<script>" + script.format(json.dumps({"data": [record(1), record(2), {}]})) + "</script>"
        assert [r.image_url for r in parse_search(page, "", kind="baidu")] == [
            "https://img.example.org/1.jpg",
            "https://img.example.org/2.jpg",
        ]


def test_ads_without_the_result_field_and_nested_replacements_are_not_results():
    ad = {"thumbURL": "https://ad.example.org/a.jpg", "middleURL": "https://ad.example.org/a.jpg", "adType": "1"}
    nested = {**record(3), "replaceUrl": [{"ObjURL": "https://mirror.example.org/3.jpg"}]}
    page = (
        f"<script>flip.setData('imgData', {json.dumps({'data': [nested]})}); setData('ad', {json.dumps(ad)})</script>"
    )
    assert [r.image_url for r in parse_search(page, "", kind="baidu")] == ["https://img.example.org/3.jpg"]


def test_a_field_name_inside_another_is_not_the_field():
    # "fromURL" ends in "mURL": only a whole key "murl" marks a Bing record.
    assert embedded_records('{"fromURL": "https://a.example.org/"}', ("murl",)) == []
    assert embedded_records('{"murl": "https://a.example.org/x.jpg"}', ("murl",)) == [
        {"murl": "https://a.example.org/x.jpg"}
    ]


def test_google_basic_html_results_are_links_around_thumbnails():
    page = (
        '<html><body><table class="images_table"><tr>'
        '<td><a href="/url?q=https://fans.example.org/hana&sa=U"><img src="https://encrypted-tbn0.gstatic.com/images?q=tbn:A" alt="Hana"></a></td>'
        '<td><a href="/imgres?imgurl=https://img.example.org/kai.png&imgrefurl=https://fans.example.org/kai">'
        '<img src="https://encrypted-tbn0.gstatic.com/images?q=tbn:B"></a></td>'
        '<td><a href="/search?q=next"><img src="https://www.google.com/images/nav_logo.png"></a></td>'
        "</tr></table></body></html>"
    )
    results = parse_search(page, "https://www.google.com/search?q=hana&tbm=isch")
    assert [(r.image_url, r.source_url) for r in results] == [
        ("https://encrypted-tbn0.gstatic.com/images?q=tbn:A", "https://fans.example.org/hana"),
        ("https://img.example.org/kai.png", "https://fans.example.org/kai"),
    ]
