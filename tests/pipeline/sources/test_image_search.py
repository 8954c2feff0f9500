"""Image-search parsers: the real 2020 Baidu page from ../shared (never copied here), hand-written
Bing, Google and Baidu acjson pages, query URLs and user-supplied URL lists."""

from __future__ import annotations

import html as html_lib
import json

import pytest

from pipeline.sources.encyclopedia import PageShapeError
from pipeline.sources.image_search import SearchResult, character_query, decode_baidu_url, parse_search, search_url
from pipeline.sources.js_literal import js_object_at
from pipeline.sources.url_list import read_url_list
from tests.conftest import SHARED

BAIDU_FIXTURE = SHARED / "fixtures" / "html" / "baidu_image_search_python_2020.html"


@pytest.fixture(scope="module")
def baidu_html() -> str:
    if not BAIDU_FIXTURE.is_file():
        pytest.skip(f"shared fixture missing: {BAIDU_FIXTURE}")
    return BAIDU_FIXTURE.read_text(encoding="utf-8")


# --------------------------------------------------------------------------- Baidu, real page


@pytest.mark.shared_data
def test_baidu_2020_page(baidu_html):
    results = parse_search(baidu_html, "https://image.baidu.com/search/index?tn=baiduimage&word=Python")
    # 61 entries in imgData's "data": 60 results and the closing {}.
    assert len(results) == 60
    assert results[0] == SearchResult(
        image_url="http://img.cwq.com/201611/581c95c35ca62.png",
        thumb_url="https://ss2.bdstatic.com/70cFvnSh_Q1YnxGkpoWK1HF6hhy/it/u=1883701644,1651591262&fm=26&gp=0.jpg",
        # fromURL is obfuscated in this version ("ippr_z2C$qAzdH3F..."); decoded, its host is the
        # entry's own fromURLHost (www.cwq.com).
        source_url="http://www.cwq.com/weixin/198197.html",
        title="python中文社区",  # "<strong>python</strong>中文社区" without the highlighting
        width=1024,
        height=1024,
    )
    assert results[-1] == SearchResult(
        image_url="http://www.t-chs.com/tuhsJDEwLmFsaWNkbi5jb20vYmFvL3VwbG9hZGVkL2kyLzIxNDU0ODc0MDkvTzFDTjAxeTRmQnhVMjRiTXZtY0JTVThfISEkMw.jpg",
        thumb_url="https://ss0.bdstatic.com/70cFvHSh_Q1YnxGkpoWK1HF6hhy/it/u=1635607241,3992160749&fm=26&gp=0.jpg",
        source_url="http://www.t-chs.com/pche0/535721840763.html",
        title="人民邮电出版社 编程 python 编程入门类图书帮助零基础读者迅速掌握",
        width=600,
        height=600,
    )
    assert results[2].source_url.startswith("http://dy.163.com/")
    # Every objURL of this page is a plain URL, so image_url is always the original, never a thumb.
    assert all(r.image_url != r.thumb_url for r in results)
    assert all(r.width and r.height and r.title and r.source_url for r in results)


@pytest.mark.shared_data
def test_baidu_page_recognised_from_markup_alone(baidu_html):
    assert len(parse_search(baidu_html, "")) == 60
    assert len(parse_search(baidu_html, "", kind="baidu")) == 60


def test_baidu_imgdata_with_javascript_escapes():
    # \\' is a JavaScript escape that JSON rejects; one title of the real page has it.
    page = r"""<script>flip.setData('imgData', {"queryEnc":"x","data":[{"thumbURL":"https://ss0.bdstatic.com/t.jpg","middleURL":"https://ss0.bdstatic.com/m.jpg","objURL":"https://img.example.org/a.png","fromURL":"https://example.org/p","fromPageTitle":"typeerror: unhashable type: \'list\' {[(","width":"640","height":480},{}]});
flip.setData('fcadData', {"fcData":[]});</script>"""
    assert parse_search(page, "", kind="baidu") == [
        SearchResult(
            "https://img.example.org/a.png",
            "https://ss0.bdstatic.com/t.jpg",
            "https://example.org/p",
            "typeerror: unhashable type: 'list' {[(",
            640,
            480,
        )
    ]


def test_decode_baidu_url():
    assert (
        decode_baidu_url("ippr_z2C$qAzdH3FAzdH3Fooo_z&e3Bvoq_z&e3Bv54AzdH3FojtxtgAzdH3F8lb8l0_z&e3Bip4s")
        == "http://www.cwq.com/weixin/198197.html"
    )
    assert decode_baidu_url("https://a.example.org/x.jpg") == "https://a.example.org/x.jpg"


def _obfuscate(url: str) -> str:
    """Baidu's substitution, forwards (the test's own inverse of decode_baidu_url's table)."""
    plain, coded = "abcdefghijklmnopqrstuvw1234567890", "wkv1ju2it3hs4g5rq6fp7eo8dn9cm0bla"
    table = str.maketrans(plain, coded)
    out = url.translate(table)
    return out.replace(":", "_z2C$q").replace(".", "_z&e3B").replace("/", "AzdH3F")


def test_baidu_acjson():
    obj_url = "https://img.example.com/hana/2024/01.jpg"
    from_url = "https://www.example.com/news/hana.html"
    assert decode_baidu_url(_obfuscate(obj_url)) == obj_url
    doc = {
        "queryEnc": "%E9%9D%92%E6%9C%A8%E8%8A%B1",
        "queryExt": "青木花 晴空学园",
        "listNum": 1200,
        "displayNum": 34567,
        "bdFmtDispNum": "约34,567",
        "isNeedAsyncRequest": 0,
        "bdIsClustered": "1",
        "data": [
            {
                "adType": "0",
                "thumbURL": "https://img1.baidu.com/it/u=111,222&fm=253&app=138&f=JPEG?w=500&h=281",
                "middleURL": "https://img1.baidu.com/it/u=111,222&fm=253&app=138&f=JPEG?w=500&h=281",
                "objURL": _obfuscate(obj_url),
                "fromURL": _obfuscate(from_url),
                "fromURLHost": "www.example.com",
                "width": 1920,
                "height": 1080,
                "type": "jpg",
                "fromPageTitle": "<strong>青木花</strong> 晴空学园 壁纸",
                "fromPageTitleEnc": "青木花 晴空学园 壁纸",
            },
            {
                "thumbURL": "https://img2.baidu.com/it/u=333,444&fm=253",
                "middleURL": "https://img2.baidu.com/it/u=333,444&fm=253",
                "objURL": "",
                "replaceUrl": [
                    {
                        "ObjURL": "http://img.example.net/kenji.png",
                        "ObjUrl": "http://img.example.net/kenji.png",
                        "FromURL": "http://news.example.net/kenji.html",
                        "FromUrl": "http://news.example.net/kenji.html",
                    }
                ],
                "width": "800",
                "height": "600",
                "fromPageTitle": "森健司 &amp; 青木花",
            },
            # Neither objURL nor replaceUrl usable: the larger of Baidu's own copies.
            {
                "thumbURL": "https://img3.baidu.com/it/u=5,6&fm=253&w=200",
                "middleURL": "https://img3.baidu.com/it/u=5,6&fm=253&w=500",
                "objURL": "???",
                "fromURL": "",
                "width": 0,
                "height": None,
                "fromPageTitle": "",
            },
            # Same image again: kept once.
            {"thumbURL": "https://img1.baidu.com/x", "objURL": obj_url, "width": 1920, "height": 1080},
            {},
        ],
    }
    text = json.dumps(doc, ensure_ascii=False)
    url = search_url("baidu", "青木花 晴空学园")
    assert parse_search(text, url) == [
        SearchResult(
            obj_url,
            "https://img1.baidu.com/it/u=111,222&fm=253&app=138&f=JPEG?w=500&h=281",
            from_url,
            "青木花 晴空学园 壁纸",
            1920,
            1080,
        ),
        SearchResult(
            "http://img.example.net/kenji.png",
            "https://img2.baidu.com/it/u=333,444&fm=253",
            "http://news.example.net/kenji.html",
            "森健司 & 青木花",
            800,
            600,
        ),
        SearchResult(
            "https://img3.baidu.com/it/u=5,6&fm=253&w=500",
            "https://img3.baidu.com/it/u=5,6&fm=253&w=200",
            None,
            None,
            None,
            None,
        ),
    ]
    assert parse_search(text, "") == parse_search(text, url)  # recognised from the JSON keys alone
    assert parse_search('{"data": [{}]}', "", kind="baidu") == []  # recognised, no results


def test_js_object_at_skips_brackets_in_strings():
    text = """x = {"a": "}]'", 'b': ['{', "\\"}"], c: {}}; rest"""
    assert js_object_at(text, 4) == text[4 : text.index("; rest")]


# --------------------------------------------------------------------------- Bing


def _bing_tile(m: dict | None, size: str | None) -> str:
    m_attr = f' m="{html_lib.escape(json.dumps(m))}"' if m is not None else ""
    info = (
        f'<div class="img_info hon"><span class="nowrap">{size}</span><div class="lnkw"><a href="#">site</a></div></div>'
        if size
        else ""
    )
    return (
        f'<li data-idx="1"><div class="iuscp isv"><div class="imgpt">'
        f'<a class="iusc" style="height:180px;width:240px"{m_attr} mad="{html_lib.escape(json.dumps({"turl": "x", "maw": "240", "mah": "180"}))}" '
        f'href="/images/search?view=detailV2&amp;id=1"><div class="img_cont hoff"><img class="mimg" src="https://tse1.mm.bing.net/th?id=OIP.x&amp;w=240" alt="a"></div></a>'
        f"{info}</div></div></li>"
    )


BING_TILES = [
    _bing_tile(
        {
            "sid": "",
            "cturl": "",
            "cid": "Ab1",
            "purl": "https://fans.example.org/hana",
            "murl": "https://img.example.org/hana_full.jpg",
            "turl": "https://tse1.mm.bing.net/th?id=OIP.Ab1&pid=15.1",
            "md5": "x",
            "shkey": "",
            "t": "\ue000Hana Aoki\ue001 - Sunny School Wiki",
            "mid": "1",
            "desc": "",
        },
        "1920 x 1080 · jpeg",
    ),
    _bing_tile(
        {
            "purl": "https://blog.example.net/post",
            "murl": "https://img.example.net/kenji.png",
            "turl": "https://tse2.mm.bing.net/th?id=OIP.Cd2",
            "t": "Kenji &amp; Hana",
        },
        None,
    ),
    # The same image from another page: kept once.
    _bing_tile(
        {
            "purl": "https://other.example.com/",
            "murl": "https://img.example.org/hana_full.jpg",
            "turl": "https://tse1.mm.bing.net/th?id=OIP.Ab1",
        },
        "1920 x 1080",
    ),
    _bing_tile({"purl": "https://no.image.example/", "turl": "https://tse3.mm.bing.net/th?id=OIP.Ef3"}, "10 x 10"),
    _bing_tile(None, "10 x 10"),
]
BING_PAGE = (
    """<!DOCTYPE html><html><head><title>hana aoki sunny school - Bing images</title></head><body>
<div id="mmComponent_images_1" class="dgControl" data-nextUrl="/images/async?q=hana&amp;first=36"><ul class="dgControl_list">
"""
    + "\n".join(BING_TILES)
    + "\n</ul></div></body></html>"
)


def test_bing_tiles():
    expected = [
        SearchResult(
            "https://img.example.org/hana_full.jpg",
            "https://tse1.mm.bing.net/th?id=OIP.Ab1&pid=15.1",
            "https://fans.example.org/hana",
            "Hana Aoki - Sunny School Wiki",
            1920,
            1080,
        ),
        SearchResult(
            "https://img.example.net/kenji.png",
            "https://tse2.mm.bing.net/th?id=OIP.Cd2",
            "https://blog.example.net/post",
            "Kenji & Hana",
            None,
            None,
        ),
    ]
    assert parse_search(BING_PAGE, "https://www.bing.com/images/search?q=hana") == expected
    assert parse_search(BING_PAGE, "") == expected  # recognised from a.iusc


def test_bing_page_without_tiles():
    empty_grid = '<html><body><div id="mmComponent_images_1" class="dgControl"><ul></ul></div></body></html>'
    assert parse_search(empty_grid, "https://www.bing.com/images/search?q=zzzz") == []
    with pytest.raises(PageShapeError, match="^page shape not recognised: Bing page without result records"):
        parse_search("<html><body>Captcha</body></html>", "https://www.bing.com/images/search?q=x")


# --------------------------------------------------------------------------- Google

GOOGLE_RG_META = """<html><body><div id="rg_s">
<div class="rg_bx"><a class="rg_l" href="/imgres?imgurl=x"><img class="rg_ic rg_i" data-src="https://encrypted-tbn0.gstatic.com/images?q=tbn:ANd9GcA"></a>
<div class="rg_meta notranslate">{"id":"x1:","isu":"fans.example.org","itg":0,"ity":"png","oh":900,"ou":"https://img.example.org/hana.png","ow":600,"pt":"Hana Aoki | Sunny School Wiki","rh":"fans.example.org","rid":"r1","rt":0,"ru":"https://fans.example.org/wiki/Hana","s":"","st":"Sunny School Wiki","th":274,"tu":"https://encrypted-tbn0.gstatic.com/images?q\\u003dtbn:ANd9GcA","tw":183}</div></div>
<div class="rg_bx"><div class="rg_meta notranslate">{"id":"x2:","ou":"https://img.example.net/kenji.jpg","ru":"https://blog.example.net/k","pt":"Kenji &amp; co","tu":"https://encrypted-tbn0.gstatic.com/images?q\\u003dtbn:B"}</div></div>
<div class="rg_bx"><div class="rg_meta notranslate">not json</div></div>
</div></body></html>"""


def test_google_classic_rg_meta():
    assert parse_search(GOOGLE_RG_META, "https://www.google.com/search?q=hana&tbm=isch") == [
        SearchResult(
            "https://img.example.org/hana.png",
            "https://encrypted-tbn0.gstatic.com/images?q=tbn:ANd9GcA",
            "https://fans.example.org/wiki/Hana",
            "Hana Aoki | Sunny School Wiki",
            600,
            900,
        ),
        SearchResult(
            "https://img.example.net/kenji.jpg",
            "https://encrypted-tbn0.gstatic.com/images?q=tbn:B",
            "https://blog.example.net/k",
            "Kenji & co",
            None,
            None,
        ),
    ]


GOOGLE_SCRIPT = r"""<html><body><div id="islmp"></div>
<script nonce="n1">AF_initDataCallback({key: 'ds:0', hash: '1', data:[], sideChannel: {}});</script>
<script nonce="n1">AF_initDataCallback({key: 'ds:1', hash: '2', data:[null,[[[1,[0,"Yk7h3x",["https://encrypted-tbn0.gstatic.com/images?q\u003dtbn:ANd9GcQ1",168,300],["https://img.example.org/hana_wide.jpg?size\u003dbig\u0026v\u003d2",1080,1920],null,0,"rgb(40,40,40)",null,0,{"2003":[null,"Yk7h3xdoc","https://fans.example.org/gallery/hana","Hana Aoki gallery \u0026amp; screenshots",null,null,null,null,null,null,null,"fans.example.org"]}]]],[[1,[0,"Qp9r2z",["https://encrypted-tbn0.gstatic.com/images?q\u003dtbn:ANd9GcQ2",225,225],["https://img.example.org/kenji.png",512,384],null,0]]]]], sideChannel: {}});</script>
</body></html>"""


def test_google_af_init_data_callback():
    assert parse_search(GOOGLE_SCRIPT, "https://www.google.com/search?q=hana&tbm=isch") == [
        SearchResult(
            "https://img.example.org/hana_wide.jpg?size=big&v=2",
            "https://encrypted-tbn0.gstatic.com/images?q=tbn:ANd9GcQ1",
            "https://fans.example.org/gallery/hana",
            "Hana Aoki gallery & screenshots",
            1920,
            1080,
        ),
        SearchResult(
            "https://img.example.org/kenji.png",
            "https://encrypted-tbn0.gstatic.com/images?q=tbn:ANd9GcQ2",
            None,
            None,
            384,
            512,
        ),
    ]
    assert len(parse_search(GOOGLE_SCRIPT, "")) == 2


def test_google_async_json():
    text = ")]}'\n" + json.dumps(
        {
            "ischj": {
                "metadata": [
                    {
                        "original_image": {"url": "https://img.example.org/hana.png", "width": 600, "height": 900},
                        "thumbnail": {"url": "https://encrypted-tbn0.gstatic.com/images?q=tbn:ANd9GcA"},
                        "result": {
                            "referrer_url": "https://fans.example.org/wiki/Hana",
                            "page_title": "Hana Aoki",
                            "site_title": "Sunny School Wiki",
                        },
                        "text_in_grid": {"snippet": "Hana"},
                    },
                    {"original_image": {"url": ""}, "thumbnail": {"url": "https://encrypted-tbn0.gstatic.com/x"}},
                ]
            }
        }
    )
    assert parse_search(text, "") == [
        SearchResult(
            "https://img.example.org/hana.png",
            "https://encrypted-tbn0.gstatic.com/images?q=tbn:ANd9GcA",
            "https://fans.example.org/wiki/Hana",
            "Hana Aoki",
            600,
            900,
        )
    ]


def test_google_page_without_results_markup():
    with pytest.raises(PageShapeError, match="^page shape not recognised: Google page without"):
        parse_search(
            "<html><body><form action='/sorry'>unusual traffic</form></body></html>",
            "https://www.google.com/search?q=x&tbm=isch",
        )


# --------------------------------------------------------------------------- unrecognised pages


@pytest.mark.parametrize("text", ["<html><body><p>hello</p></body></html>", "", '{"items": []}'])
def test_unrecognised_pages_raise(text):
    with pytest.raises(PageShapeError, match="^page shape not recognised"):
        parse_search(text, "")


@pytest.mark.shared_data
def test_wrong_kind_raises(baidu_html):
    with pytest.raises(PageShapeError, match="^page shape not recognised"):
        parse_search(baidu_html, "", kind="bing")
    with pytest.raises(PageShapeError, match="^page shape not recognised"):
        parse_search(BING_PAGE, "", kind="baidu")
    with pytest.raises(ValueError, match="kind must be one of"):
        parse_search(BING_PAGE, "", kind="yandex")


# --------------------------------------------------------------------------- query URLs


def test_search_urls():
    q = character_query("Rick Sanchez", "Rick and Morty")
    assert q == "Rick Sanchez Rick and Morty"
    assert search_url("bing", q) == "https://www.bing.com/images/search?q=Rick+Sanchez+Rick+and+Morty&first=1&count=35"
    assert (
        search_url("bing", q, page=2)
        == "https://www.bing.com/images/search?q=Rick+Sanchez+Rick+and+Morty&first=71&count=35"
    )
    assert (
        search_url("google", q, page=1)
        == "https://www.google.com/search?q=Rick+Sanchez+Rick+and+Morty&tbm=isch&start=20"
    )
    assert search_url("baidu", character_query("路飞", "海贼王"), page=1) == (
        "https://image.baidu.com/search/acjson?tn=resultjson_com&ipn=rj&ct=201326592&fp=result&cl=2&lm=-1"
        "&ie=utf-8&oe=utf-8&queryWord=%E8%B7%AF%E9%A3%9E+%E6%B5%B7%E8%B4%BC%E7%8E%8B"
        "&word=%E8%B7%AF%E9%A3%9E+%E6%B5%B7%E8%B4%BC%E7%8E%8B&pn=30&rn=30"
    )
    with pytest.raises(ValueError):
        search_url("yandex", q)
    with pytest.raises(ValueError):
        search_url("bing", q, page=-1)


# --------------------------------------------------------------------------- bring your own URLs


def test_read_url_list_csv(tmp_path):
    path = tmp_path / "urls.csv"
    path.write_text(
        "URL,title,source_url,width\n"
        "https://img.example.org/a.jpg,Hana,https://fans.example.org/hana,640\n"
        "https://img.example.org/b.jpg,,,\n"
        "https://img.example.org/a.jpg,dup,,\n",
        encoding="utf-8",
    )
    assert read_url_list(path) == [
        SearchResult("https://img.example.org/a.jpg", None, "https://fans.example.org/hana", "Hana", 640, None),
        SearchResult("https://img.example.org/b.jpg", None, None, None, None, None),
    ]


def test_read_url_list_csv_errors_name_the_line(tmp_path):
    path = tmp_path / "urls.csv"
    path.write_text("title,link\nHana,https://img.example.org/a.jpg\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"urls\.csv:1: CSV header needs a `url` column"):
        read_url_list(path)
    path.write_text("url,title\nhttps://img.example.org/a.jpg,ok\nftp://x/y.jpg,bad\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"urls\.csv:3: `url` must be an http\(s\) URL, got 'ftp://x/y.jpg'"):
        read_url_list(path)
    path.write_text("url,width\nhttps://img.example.org/a.jpg,wide\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"urls\.csv:2: `width` must be a positive integer"):
        read_url_list(path)


def test_read_url_list_jsonl(tmp_path):
    path = tmp_path / "urls.jsonl"
    path.write_text(
        '{"url": "https://img.example.org/a.jpg", "title": "Hana"}\n\n'
        '{"image_url": "https://img.example.org/b.jpg", "thumb_url": "https://t.example.org/b.jpg", "height": 480}\n',
        encoding="utf-8",
    )
    assert read_url_list(path) == [
        SearchResult("https://img.example.org/a.jpg", None, None, "Hana", None, None),
        SearchResult("https://img.example.org/b.jpg", "https://t.example.org/b.jpg", None, None, None, 480),
    ]
    path.write_text('{"url": "https://img.example.org/a.jpg"}\n{"url": 5}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"urls\.jsonl:2: `url` must be an http\(s\) URL, got 5"):
        read_url_list(path)
    path.write_text('{"url": "https://img.example.org/a.jpg"}\n{not json\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"urls\.jsonl:2: not a JSON object"):
        read_url_list(path)


def test_read_url_list_plain_text(tmp_path):
    path = tmp_path / "urls.txt"
    path.write_text(
        "# my picks\nhttps://img.example.org/a.jpg\n\nhttps://img.example.org/b.jpg\nnot a url\n", encoding="utf-8"
    )
    with pytest.raises(ValueError, match=r"urls\.txt:5: `url` must be an http\(s\) URL"):
        read_url_list(path)
    path.write_text("https://img.example.org/a.jpg\nhttps://img.example.org/b.jpg\n", encoding="utf-8")
    assert [r.image_url for r in read_url_list(path)] == [
        "https://img.example.org/a.jpg",
        "https://img.example.org/b.jpg",
    ]
    (tmp_path / "empty.csv").write_text("", encoding="utf-8")
    assert read_url_list(tmp_path / "empty.csv") == []
