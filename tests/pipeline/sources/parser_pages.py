"""Hypothesis strategies for saved pages that reach deep into each parser: the page skeletons the
parsers look for (Baidu imgData / acjson, Bing `a.iusc[m]` tiles, Google "ischj" / rg_meta /
AF_initDataCallback, MediaWiki and Baike markup) filled with right values, wrong-typed values,
JavaScript-only escapes, huge numbers, deep nesting and cut or spliced text.

`pages(kind)` draws (page text, page URL) for a parse_page kind. Shared by
tests/pipeline/sources/test_parser_fuzz.py and benchmarks/fuzz_parsers.py.
"""

from __future__ import annotations

import html
import json

from hypothesis import strategies as st

KINDS = ("bing", "baidu", "google", "mediawiki", "baike", "auto")


class Raw(str):
    """Text put into generated JSON as is: what json.dumps cannot write (JS escapes, broken syntax)."""


def js(value) -> str:
    """JSON text of a generated value, Raw pieces verbatim."""
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{js(k)}:{js(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(js(v) for v in value) + "]"
    return json.dumps(value)


# --------------------------------------------------------------------------- leaves

GOOD_URLS = [
    "https://img.example.org/hana.jpg",
    "http://img.example.net/kenji.png",
    "https://encrypted-tbn0.gstatic.com/images?q=tbn:ANd9GcA",
    "ippr_z2C$qAzdH3FAzdH3Fooo_z&e3Bvoq_z&e3Bv54AzdH3FojtxtgAzdH3F8lb8l0_z&e3Bip4s",  # Baidu-obfuscated
    "https://upload.wikimedia.org/wikipedia/commons/thumb/a/ab/Hana.svg/120px-Hana.svg.png",
]
ODD_URLS = [
    "https://upload.wikimedia.org/wikipedia/commons/thumb/a/ab/Hana.png/" + "9" * 5000 + "px-Hana.png",
    "https://static.wikia.nocookie.net/sunny/images/a/ab/Hana.png/revision/latest/scale-to-width-down/120?cb=1",
    "https://bkimg.cdn.bcebos.com/pic/abc?x-bce-process=image/resize,m_lfit,w_268",
    "/wiki/File:Hana.png",
    "//upload.wikimedia.org/x.png",
    "data:image/gif;base64,R0lGOD",
    "",
    " ",
    "http://[x/broken",
    "//[::1",
    "http://[1.2.3.4]/",
    "http://a\uff03b/",  # urlsplit raises ValueError
    "https://a.org/\ud800",
    " https://a.org/padded ",
    "https://a.org/with space",
]
DEEP = ["[" * 1200 + "]" * 1200, '{"a":' * 1200 + "0" + "}" * 1200, "[" * 600]  # json recurses per level
RAW_TOKENS = DEEP + [
    '"\\q"',
    '"\\x41\\\'"',
    '"\\u12"',
    '"\\ud800"',
    "1" * 5000,
    "NaN",
    "-Infinity",
    "[1,]",
    "{",
    "]",
    "'single'",
    '"',
]
TITLES = ["<strong>Hana</strong> 青木花", "Kenji &amp; Hana", "\ue000Hana\ue001", "", "\ud83d", "a\x00b"]

urls = st.sampled_from(GOOD_URLS) | st.sampled_from(ODD_URLS) | st.text(max_size=16)
raw = st.sampled_from(RAW_TOKENS).map(Raw)
deep = st.sampled_from(DEEP).map(Raw)
titles = st.sampled_from(TITLES) | st.text(max_size=12)
sizes = st.integers(-5, 5000) | st.sampled_from(["640", " 480 ", "0", "wide", "1e3"]) | st.just(Raw("9" * 5000))
json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8) | urls | raw
KEYS = [
    "data",
    "objURL",
    "thumbURL",
    "middleURL",
    "fromURL",
    "replaceUrl",
    "ObjURL",
    "murl",
    "turl",
    "purl",
    "t",
    "ischj",
    "metadata",
    "original_image",
    "url",
    "width",
    "height",
    "ou",
    "2003",
]
# Any JSON-ish value: where the parser expects a URL string or an object, this puts anything.
json_values = st.recursive(
    json_scalars,
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=4), kids, max_size=4)
    ),
    max_leaves=10,
)


def record(fields: dict) -> st.SearchStrategy:
    """A JSON object with some of these fields, each of the expected sort or of any other type."""
    return st.fixed_dictionaries({}, optional={k: v | json_values for k, v in fields.items()})


@st.composite
def mutated(draw, pages: st.SearchStrategy) -> str:
    """A page as drawn, or cut short, or with a token spliced in, or with a slice dropped."""
    text = draw(pages)
    how = draw(st.sampled_from(["keep", "keep", "keep", "cut", "insert", "drop"]))
    if how == "keep" or not text:
        return text
    i = draw(st.integers(0, len(text)))
    if how == "cut":
        return text[:i]
    if how == "insert":
        return text[:i] + draw(raw | st.text(max_size=8)) + text[i:]
    return text[:i] + text[draw(st.integers(i, min(len(text), i + 40))) :]


def nested(body: str, depth: int) -> str:
    return "<div>" * depth + body + "</div>" * depth


depths = st.sampled_from([0, 0, 0, 0, 3, 600])  # 600 passes html_soup's MAX_DEPTH (512)


# --------------------------------------------------------------------------- search engines

BAIDU_ITEM = record(
    {
        "thumbURL": urls,
        "middleURL": urls,
        "objURL": urls,
        "fromURL": urls,
        "fromPageTitle": titles,
        "fromPageTitleEnc": titles,
        "width": sizes,
        "height": sizes,
        "replaceUrl": st.lists(record({"ObjURL": urls, "ObjUrl": urls, "FromURL": urls, "FromUrl": urls}), max_size=2),
    }
)


@st.composite
def baidu_pages(draw) -> str:
    doc = {"data": draw(st.lists(BAIDU_ITEM | json_values | deep, max_size=6) | json_values)}
    if draw(st.booleans()):  # the acjson endpoint
        return draw(st.sampled_from(["", "  \n"])) + js(doc)
    return (
        "<html><body><script>flip.setData('imgData', "
        + js(doc)
        + ");\nflip.setData('fcadData', {});</script></body></html>"
    )


BING_M = record({"murl": urls, "turl": urls, "purl": urls, "t": titles})
BING_SIZES = ["1920 x 1080 · jpeg", "10 × 10", "9" * 5000 + " x 1", "0 x 0", "", "x"]


@st.composite
def bing_tiles(draw) -> str:
    m = draw(BING_M | json_values | deep)
    m_attr = draw(st.just(js(m)) | raw | st.text(max_size=8))
    info = f'<div class="img_info"><span>{draw(st.sampled_from(BING_SIZES))}</span></div>'
    tile = f'<a class="iusc" m="{html.escape(m_attr)}" href="/images/search?id=1"><img src="x.jpg"></a>' + info
    wrap = draw(st.sampled_from(['<li><div class="imgpt">{}</div></li>', "<li>{}</li>", "{}"]))
    return wrap.format(tile)


@st.composite
def bing_pages(draw) -> str:
    tiles = "".join(draw(st.lists(bing_tiles(), max_size=5)))
    grid = draw(st.sampled_from(['<div id="mmComponent_images_1" class="dgControl"><ul>{}</ul></div>', "{}"]))
    return "<html><body>" + nested(grid.format(tiles), draw(depths)) + "</body></html>"


GOOGLE_ITEM = record(
    {
        "original_image": record({"url": urls, "width": sizes, "height": sizes}),
        "thumbnail": record({"url": urls}),
        "result": record({"referrer_url": urls, "page_title": titles}),
    }
)
RG_META = record({"ou": urls, "tu": urls, "ru": urls, "pt": titles, "ow": sizes, "oh": sizes})
# Bodies of JavaScript string literals: plain, or escapes that JSON lacks or cut short.
JS_BODIES = [
    "img.example.org/a.jpg?size\\u003dbig",
    "a.org/\\q",
    "a.org/\\u12",
    "a.org/\\ud800",
    'a.org/\\"q',
    "a.org/x y",
]
DIGITS = ["0", "168", "1920", "9" * 5000, "٣"]  # \d also matches other scripts' digits


@st.composite
def google_ischj(draw) -> str:
    doc = {"ischj": draw(record({"metadata": st.lists(GOOGLE_ITEM | json_values | deep, max_size=5)}) | json_values)}
    return draw(st.sampled_from(["", ")]}'\n", '"ischj" '])) + js(doc)


@st.composite
def google_rg_meta(draw) -> str:
    metas = draw(st.lists(RG_META | json_values | deep, max_size=4))
    divs = "".join(f'<div class="rg_meta notranslate">{html.escape(js(m), quote=False)}</div>' for m in metas)
    return "<html><body>" + nested(divs, draw(depths)) + "</body></html>"


@st.composite
def google_scripts(draw) -> str:
    body = st.sampled_from(JS_BODIES) | st.text(max_size=8)
    digits = st.sampled_from(DIGITS)
    results = []
    for _ in range(draw(st.integers(0, 4))):
        pair = (
            f'["https://encrypted-tbn0.gstatic.com/images?q={draw(body)}",{draw(digits)},{draw(digits)}],'
            f'["{draw(st.sampled_from(["https://", "http://"]))}{draw(body)}",{draw(digits)},{draw(digits)}]'
        )
        meta = f',null,0,{{"2003":[null,"id1","https://{draw(body)}","{draw(body)}"]}}' if draw(st.booleans()) else ""
        results.append(f'[1,[0,"id",{pair}{meta}]]')
    script = "AF_initDataCallback({key: 'ds:1', hash: '2', data:[null,[" + ",".join(results) + "]]});"
    return f'<html><body><script nonce="n">{script}</script></body></html>'


# --------------------------------------------------------------------------- encyclopedias


def tag(name: str, inner: str = "", **attrs) -> str:
    """<name attrs>inner</name>; class_ is class, data_src is data-src."""
    attr = "".join(f' {k.rstrip("_").replace("_", "-")}="{html.escape(str(v))}"' for k, v in attrs.items())
    return f"<img{attr}>" if name == "img" else f"<{name}{attr}>{inner}</{name}>"


srcsets = st.sampled_from(["a.png 1x, b.png 2x", "a.png 100w, //[::1 200w", "x nanw, y infw", ",,,", ""])


def images(texts) -> st.SearchStrategy:
    return st.fixed_dictionaries(
        {},
        optional={
            "src": urls,
            "data_src": urls,
            "srcset": srcsets,
            "width": sizes.map(str),
            "data_image_key": texts,
            "class_": st.sampled_from(["role-pic", "mimg", "avatar"]),
        },
    ).map(lambda attrs: tag("img", **attrs))


def links(hrefs, texts) -> st.SearchStrategy:
    return st.builds(
        lambda href, text, cls: tag("a", html.escape(text), href=href, title=text, class_=cls),
        st.one_of(hrefs, hrefs, st.text(max_size=8)),
        texts,
        st.sampled_from(["", "", "", "new", "external", "mw-selflink"]),
    )


def markup(tags, classes, ids, hrefs, texts, blocks) -> st.SearchStrategy:
    """Random trees of a site's elements, classes and words around its structured blocks."""
    attributes = st.one_of(
        st.tuples(st.just("class"), st.lists(st.sampled_from(classes), min_size=1, max_size=2).map(" ".join)),
        st.tuples(st.just("id"), st.sampled_from(ids)),
        st.tuples(st.just("href"), hrefs | st.text(max_size=8)),
        st.tuples(st.sampled_from(["title", "data-source", "role"]), texts),
    )

    def element(kids: st.SearchStrategy) -> st.SearchStrategy:
        return st.builds(
            lambda name, attrs, inner, close: (
                f"<{name}"
                + "".join(f' {k}="{html.escape(v)}"' for k, v in attrs)
                + ">"
                + "".join(inner)
                + (f"</{name}>" if close else "")
            ),
            st.sampled_from(tags),
            st.lists(attributes, max_size=2),
            st.lists(kids, max_size=3),
            st.sampled_from([True, True, True, False]),
        )  # real pages leave tags unclosed

    return st.recursive(texts.map(html.escape) | images(texts) | blocks, element, max_leaves=12)


MW_TAGS = [
    "div",
    "span",
    "a",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "ul",
    "ol",
    "li",
    "dl",
    "dt",
    "dd",
    "b",
    "strong",
    "table",
    "tr",
    "th",
    "td",
    "figure",
    "figcaption",
    "p",
    "aside",
    "sup",
    "style",
]
MW_CLASSES = [
    "mw-headline",
    "mw-heading",
    "thumb",
    "thumbcaption",
    "gallerybox",
    "gallerytext",
    "wikitable",
    "infobox",
    "portable-infobox",
    "pi-title",
    "pi-data-label",
    "infobox-label",
    "infobox-above",
    "hatnote",
    "category-gallery-item",
    "category-page__member",
    "navbox",
    "toc",
    "reference",
]
MW_IDS = ["mw-pages", "mw-subcategories", "Characters", "Main_characters", "Hana_Aoki", "toc", ""]
MW_HREFS = st.sampled_from(
    [
        "/wiki/Hana_Aoki",
        "/wiki/Category:Characters",
        "/wiki/File:Hana.png",
        "/w/index.php?title=Hana&action=edit",
        "/w/index.php?title=Category:X&pagefrom=B",
        "/w/index.php?title=Kenji",
        "?pagefrom=Z",
        "#Hana",
        "https://other.org/x",
        "http://[x/wiki/A",
        "//[::1/wiki/B",
        "/wiki/%E8%8A%B1",
        "/wiki/",
        "/wiki/Talk:Hana",
    ]
)
MW_TEXTS = st.sampled_from(
    [
        "Character",
        "Name",
        "Gender",
        "Voiced by",
        "Leader",
        "Main article: ",
        "Personality",
        "Main characters",
        "The Smith family",
        "See also",
        "References",
        "Hana Aoki",
        "Kenji (voiced by Bob)",
        "Rick – a scientist",
        "and",
        ", ",
        "[1]",
        "角色",
        "性别",
        "next 200",
    ]
) | st.text(max_size=10)


def mediawiki_blocks() -> st.SearchStrategy:
    """The structures the MediaWiki parser reads, with their parts drawn."""
    img, a, words = images(MW_TEXTS), links(MW_HREFS, MW_TEXTS), MW_TEXTS.map(html.escape)
    some_links = st.lists(a, min_size=1, max_size=3)
    heading = st.builds(
        lambda level, hid, text, vector: (
            tag("div", tag(f"h{level}", text, id=hid), class_="mw-heading")
            if vector
            else tag(f"h{level}", tag("span", text, class_="mw-headline", id=hid))
        ),
        st.integers(2, 6),
        st.sampled_from(MW_IDS),
        words,
        st.booleans(),
    )
    return st.one_of(
        heading,
        heading,
        st.builds(lambda i, ls: tag("figure", i + tag("figcaption", " and ".join(ls))), img, some_links),
        st.builds(
            lambda i, ls: tag("div", i + tag("div", ", ".join(ls), class_="thumbcaption"), class_="thumb"),
            img,
            some_links,
        ),
        st.builds(
            lambda i, ls: tag("li", i + tag("div", "".join(ls), class_="gallerytext"), class_="gallerybox"),
            img,
            some_links,
        ),
        st.builds(
            lambda items: tag("ul", "".join(tag("li", tag("b", x) + " – " + w) for x, w in items)),
            st.lists(st.tuples(a | words, words), max_size=3),
        ),
        st.builds(lambda x, w: tag("dl", tag("dt", x) + tag("dd", w)), a | words, words),
        st.builds(
            lambda head, rows: tag(
                "table",
                tag("tr", tag("th", head) + tag("th", "Notes"))
                + "".join(tag("tr", tag("td", x) + tag("td", i)) for x, i in rows),
                class_="wikitable",
            ),
            st.sampled_from(["Character", "Name", "Episode", "角色"]),
            st.lists(st.tuples(a | words, img), max_size=3),
        ),
        st.builds(
            lambda label, i, name: tag(
                "table",
                tag("caption", name)
                + tag("tr", tag("th", tag("b", name)))
                + tag("tr", tag("td", i))
                + tag("tr", tag("th", label) + tag("td", "x")),
                class_="infobox",
            ),
            st.sampled_from(["Gender", "Voiced by", "Leader", "Age", "Region"]),
            img,
            words,
        ),
        st.builds(
            lambda label, i, name: tag(
                "aside",
                tag("h2", name, class_="pi-title")
                + i
                + tag("div", tag("h3", label, class_="pi-data-label"), data_source=label),
                class_="portable-infobox",
            ),
            st.sampled_from(["gender", "species", "leader"]),
            img,
            words,
        ),
        st.builds(lambda x: tag("div", "Main article: " + x, class_="hatnote", role="note"), a),
        st.builds(
            lambda h, t, i: tag("div", tag("a", i, href=h, title=t), class_="category-gallery-item"),
            MW_HREFS,
            MW_TEXTS,
            img,
        ),
        st.builds(
            lambda h, t, i: tag(
                "li",
                i + tag("a", html.escape(t), href=h, class_="category-page__member-link"),
                class_="category-page__member",
            ),
            MW_HREFS,
            MW_TEXTS,
            img,
        ),
        st.builds(lambda ls: tag("div", tag("ul", "".join(tag("li", x) for x in ls)), id="mw-pages"), some_links),
        st.builds(lambda h: tag("a", "next page", href=h, class_="category-page__pagination-next"), MW_HREFS),
    )


MW_TITLES = [
    "List of Sunny School characters",
    "Sunny School cast",
    "Category:Characters",
    "Hana Aoki",
    "Team Rocket",
    "登场人物",
    "",
]
MW_URLS = [
    "",
    "https://sunny.fandom.com/wiki/List_of_characters",
    "https://en.wikipedia.org/wiki/X#Main_characters",
    "https://en.wikipedia.org/wiki/X#Hana_Aoki",
    "https://sunny.fandom.com/wiki/Category:Characters",
]


@st.composite
def mediawiki_pages(draw) -> str:
    title = html.escape(draw(st.sampled_from(MW_TITLES + MW_TITLES[:2]) | st.text(max_size=12)))
    head = "".join(
        draw(
            st.lists(
                st.sampled_from(
                    [
                        '<meta name="generator" content="MediaWiki 1.39">',
                        f'<meta property="og:title" content="{title}">',
                        '<link rel="canonical" href="https://sunny.fandom.com/wiki/Hana">',
                        '<link rel="canonical" href="http://[x/wiki/Hana">',
                    ]
                ),
                max_size=3,
            )
        )
    )
    body_class = draw(st.sampled_from(["mediawiki", "mediawiki ns-14", "", "skin-vector"]))
    body = "".join(draw(st.lists(MW_MARKUP, max_size=6)))
    return (
        f'<!DOCTYPE html><html><head>{head}<title>{title} - Wiki</title></head><body class="{body_class}">'
        + draw(st.sampled_from([f'<h1 id="firstHeading">{title}</h1>', ""]))
        + '<div id="mw-content-text"><div class="mw-parser-output">'
        + nested(body, draw(depths))
        + "</div></div></body></html>"
    )


BAIKE_TAGS = ["div", "span", "a", "li", "ul", "dl", "dt", "dd", "p", "h2", "h3"]
BAIKE_ROOTS = ["roleIntroduction_x1", "lemmaWgt-roleIntroduction", "role-list", "roleList_abc"]
BAIKE_NAMES = ["roleName_a9", "role-name", "role_name"]
BAIKE_CLASSES = BAIKE_ROOTS + BAIKE_NAMES + ["roleIntroduction-item", "role-pic", "roleImg_1", "avatar", "item"]
BAIKE_TEXTS = st.sampled_from(
    [
        "蒙奇·D·路飞（Monkey D. Luffy）",
        "角色名：青木花",
        "Hana (CV: Bob)",
        "森健司（配音：某人）",
        "A ( B )",
        "()",
        "角色介绍",
    ]
) | st.text(max_size=10)
BAIKE_HREFS = st.sampled_from(
    ["/item/%E8%B7%AF%E9%A3%9E/1", "https://baike.baidu.com/item/x", "http://[x/item", "#", "javascript:;"]
)


def baike_blocks() -> st.SearchStrategy:
    """Role modules: items with a (maybe linked, maybe nested) role name and a picture."""
    name = st.builds(
        lambda text, cls, link, href: tag(
            "div", tag("a", html.escape(text), href=href) if link else html.escape(text), class_=cls
        ),
        BAIKE_TEXTS,
        st.sampled_from(BAIKE_NAMES),
        st.booleans(),
        BAIKE_HREFS,
    )
    name = name | st.builds(lambda outer, inner: tag("span", inner, class_=outer), st.sampled_from(BAIKE_NAMES), name)
    item = st.builds(
        lambda i, n: tag("li", tag("div", i, class_="role-pic") + n, class_="roleIntroduction-item"),
        images(BAIKE_TEXTS),
        name,
    )
    return (
        st.builds(
            lambda root, items: tag("div", tag("ul", "".join(items)), class_=root),
            st.sampled_from(BAIKE_ROOTS),
            st.lists(item, max_size=4),
        )
        | item
        | name
    )


@st.composite
def baike_pages(draw) -> str:
    body = "".join(draw(st.lists(BAIKE_MARKUP, max_size=4)))
    return (
        '<html><head><title>晴空学园_百度百科</title></head><body><div class="J-lemma-title">晴空学园</div>'
        + nested(body, draw(depths))
        + "</body></html>"
    )


MW_MARKUP = markup(MW_TAGS, MW_CLASSES, MW_IDS, MW_HREFS, MW_TEXTS, mediawiki_blocks())
BAIKE_MARKUP = markup(BAIKE_TAGS, BAIKE_CLASSES, ["", "role"], BAIKE_HREFS, BAIKE_TEXTS, baike_blocks())


# --------------------------------------------------------------------------- per kind

SEARCH_URLS = {
    "bing": ["", "https://www.bing.com/images/search?q=hana"],
    "baidu": ["", "https://image.baidu.com/search/acjson?tn=resultjson_com&word=hana"],
    "google": ["", "https://www.google.com/search?q=hana&tbm=isch"],
    "mediawiki": MW_URLS,
    "baike": ["", "https://baike.baidu.com/item/x/1"],
}
TEXTS = {
    "bing": bing_pages(),
    "baidu": baidu_pages(),
    "google": st.one_of(google_ischj(), google_rg_meta(), google_scripts()),
    "mediawiki": mediawiki_pages(),
    "baike": baike_pages(),
}


def pages(kind: str) -> st.SearchStrategy:
    """(text, page_url) for parse_page(text, page_url, kind). With "auto" any kind's page under any
    kind's URL (or none), so detection and the parser it picks disagree too."""
    if kind == "auto":
        all_urls = sorted({u for us in SEARCH_URLS.values() for u in us})
        return st.tuples(mutated(st.one_of(*TEXTS.values())), st.sampled_from(all_urls))
    return st.tuples(mutated(TEXTS[kind]), st.sampled_from(SEARCH_URLS[kind]))
