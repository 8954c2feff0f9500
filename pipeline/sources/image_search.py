"""Image-search result pages -> candidate image URLs (the paper queries "[character] [album]").

Pure functions: page text in, `SearchResult` records out; no network. Results keep the page's
order; a repeated image URL is kept once. A page we cannot read raises `PageShapeError`
("page shape not recognised: ..."); a recognised page with no results returns []. An entry whose
values have the wrong type (a number for a URL, a list for an object) is skipped, not the page.

Results are found by their fields, wherever the page embeds them (`search_records.embedded_records`):
every JSON object holding the engine's record field (`ENGINE_FIELDS`: Baidu objURL, Bing murl, Google
ou), cut out by brace matching (string-aware) and read as JSON after undoing JavaScript-only escapes.
Where each engine has put them so far:

Baidu (image.baidu.com)
  * the HTML result page: `flip.setData('imgData', {..., "data": [{thumbURL, middleURL, objURL,
    fromURL, fromPageTitle, width, height}, ..., {}]})` in 2020; other script variables in other
    years. Ad records (another setData call) carry no objURL and are not results.
  * the `acjson` endpoint (`/search/acjson?tn=resultjson_com...`): a JSON document with a
    top-level "data" list of the same dicts, sometimes with `fromPageTitleEnc` and
    `replaceUrl: [{ObjURL, FromURL}]`.
  Baidu obfuscates URLs in some versions ("ippr_z2C$qAzdH3F..."): in the 2020 page every objURL
  is a plain http URL and every fromURL is obfuscated. The obfuscation is a fixed substitution
  (tokens `_z2C$q` ':', `_z&e3B` '.', `AzdH3F` '/', then a character table) and is decoded.
  image_url is the first of: objURL when it is (or decodes to) a plain http(s) URL,
  replaceUrl[0].ObjURL, middleURL, thumbURL. thumb_url is thumbURL (else middleURL); source_url
  is fromURL (decoded) or replaceUrl[0].FromURL; title drops the <strong> highlighting.

Bing (www.bing.com/images/search): each tile `a.iusc` carries JSON in its `m` attribute
  {murl: image, turl: thumbnail, purl: source page, t: title}; the size is the "W x H" text of
  the tile's `.img_info span`. Bing's highlight marks (U+E000/U+E001) are removed from titles.

Google (www.google.com/search?tbm=isch):
  * classic (to ~2019): `div.rg_meta` holding JSON {ou: image, tu: thumbnail, ru: source page,
    pt: title, ow/oh: width/height};
  * the basic-HTML page (no script, 2017-2026): links to the source page (`/url?q=`, `/imgres?imgurl=`)
    around thumbnails; only the thumbnail is the image when the link names no original;
  * the async JSON endpoint (`asearch=isch&async=_fmt:json`, an optional `)]}'` prefix):
    {"ischj": {"metadata": [{original_image: {url, width, height}, thumbnail: {url},
    result: {referrer_url, page_title}}]}};
  * inline scripts (`AF_initDataCallback({key: 'ds:1', ... data: [...]})`, ~2020-2023): each
    result holds `["https://encrypted-tbnN.gstatic.com/images?q=...", h, w], ["<original>", h, w]`
    (height before width); the source page and title follow in a `"2003": [null, id, page,
    title, ...]` entry, read when present (best effort: the array layout is undocumented).
"""

from __future__ import annotations

import html as html_lib
import json
import re
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode

from pipeline.sources.encyclopedia import PageShapeError, detect_site, html_soup, without_surrogates
from pipeline.sources.encyclopedia.page import _split as _split_url
from pipeline.sources.js_literal import _json_object, js_object_at, loads_lenient
from pipeline.sources.search_records import embedded_records

KINDS = ("auto", "bing", "baidu", "google")
BING_PAGE_SIZE = 35
BAIDU_PAGE_SIZE = 30
GOOGLE_PAGE_SIZE = 20


@dataclass
class SearchResult:
    image_url: str
    thumb_url: str | None
    source_url: str | None
    title: str | None
    width: int | None
    height: int | None


def character_query(character: str, album: str) -> str:
    """The paper's query: "[person name] [album name]"."""
    return f"{character.strip()} {album.strip()}"


def search_url(engine: str, query: str, page: int = 0) -> str:
    """URL of result page `page` (0-based) for `query` on `engine`."""
    if page < 0:
        raise ValueError(f"page must be >= 0, got {page}")
    if engine == "bing":
        return "https://www.bing.com/images/search?" + urlencode(
            {"q": query, "first": page * BING_PAGE_SIZE + 1, "count": BING_PAGE_SIZE}
        )
    if engine == "baidu":
        return "https://image.baidu.com/search/acjson?" + urlencode(
            {
                "tn": "resultjson_com",
                "ipn": "rj",
                "ct": 201326592,
                "fp": "result",
                "cl": 2,
                "lm": -1,
                "ie": "utf-8",
                "oe": "utf-8",
                "queryWord": query,
                "word": query,
                "pn": page * BAIDU_PAGE_SIZE,
                "rn": BAIDU_PAGE_SIZE,
            }
        )
    if engine == "google":
        return "https://www.google.com/search?" + urlencode(
            {"q": query, "tbm": "isch", "start": page * GOOGLE_PAGE_SIZE}
        )
    raise ValueError(f"engine must be bing, baidu or google, got {engine!r}")


def parse_search(text: str, page_url: str = "", kind: str = "auto") -> list[SearchResult]:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind == "auto":
        kind = detect_site(text, page_url)
        if kind not in ("bing", "baidu", "google"):
            what = "no image-search markup" if kind == "unknown" else f"a {kind} page"
            raise PageShapeError(f"{what}, not a Bing, Baidu or Google image-search page")
    fields = ENGINE_FIELDS[kind]
    results = [r for r in (_from_fields(rec, fields) for rec in embedded_records(text, (fields["record"],))) if r]
    if kind == "bing" and results:
        _bing_sizes(text, results)
    if not results and kind == "google":
        results = _google_positional(text)
    if not results and kind in ("google", "bing"):
        results = _linked_thumbnails(text, page_url)
    if not results:
        _raise_unless_empty_grid(text, kind)
    return _unique(results)


def _unique(results: list[SearchResult]) -> list[SearchResult]:
    seen, out = set(), []
    for r in results:
        if r.image_url and r.image_url not in seen:
            seen.add(r.image_url)
            out.append(r)
    return out


# --------------------------------------------------------------------------- helpers

_URL = re.compile(r"^https?://[^\s\ud800-\udfff]+$")  # lone surrogates (JSON \udXXX) cannot be printed


def _http(url) -> str | None:
    return url.strip() if isinstance(url, str) and _URL.match(url.strip()) else None


def _int(value) -> int | None:
    # Only numbers and digit strings: str() of a decoded list may be huge or nested too deep.
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return None
    try:
        n = int(str(value).strip())
    except ValueError:  # also a number over 4,300 digits
        return None
    return n if n > 0 else None


def _dict(value) -> dict:
    """value when it is a JSON object, else {}: a wrong-typed field reads as a missing one."""
    return value if isinstance(value, dict) else {}


def _plain(title) -> str | None:
    """Title without HTML highlighting or entities."""
    if not isinstance(title, str):
        return None
    text = html_lib.unescape(re.sub(r"<[^>]+>", "", title)).replace("\ue000", "").replace("\ue001", "")
    return without_surrogates(" ".join(text.split())) or None


# --------------------------------------------------------------------------- records by fields

# What each engine calls the fields of a result record, best first. The "record" field marks a result
# record wherever it sits (search_records.embedded_records): Baidu's ads carry thumbURL but no objURL.
ENGINE_FIELDS = {
    "baidu": {
        "record": "objURL",
        "image": ("objurl", "middleurl", "hoverurl", "thumburl"),
        "thumb": ("thumburl", "middleurl"),
        "page": ("fromurl",),
        "title": ("frompagetitleenc", "frompagetitle"),
        "width": ("width",),
        "height": ("height",),
    },
    "bing": {
        "record": "murl",
        "image": ("murl",),
        "thumb": ("turl",),
        "page": ("purl",),
        "title": ("t",),
        "width": ("w",),
        "height": ("h",),
    },
    "google": {
        "record": "ou",
        "image": ("ou",),
        "thumb": ("tu",),
        "page": ("ru",),
        "title": ("pt",),
        "width": ("ow",),
        "height": ("oh",),
    },
}


def _field(record: dict, names: tuple[str, ...], read):
    for name in names:
        value = read(record.get(name))
        if value:
            return value
    return None


def _from_fields(record: dict, fields: dict) -> SearchResult | None:
    """A result from one record; None when it holds no usable image URL. Baidu's replaceUrl (a list of
    {ObjURL, FromURL}) stands in for an objURL it leaves empty."""
    replace = record.get("replaceurl")
    replace = (
        {k.lower(): v for k, v in replace[0].items()}
        if isinstance(replace, list) and replace and isinstance(replace[0], dict)
        else {}
    )
    image = _baidu_url(record.get("objurl")) or _http(replace.get("objurl"))
    image = image or _field(record, fields["image"], _baidu_url)
    if not image:
        return None
    return SearchResult(
        image,
        _field(record, fields["thumb"], _http),
        _field(record, fields["page"], _baidu_url) or _http(replace.get("fromurl")),
        _field(record, fields["title"], _plain),
        _field(record, fields["width"], _int),
        _field(record, fields["height"], _int),
    )


def _linked_thumbnails(text: str, page_url: str) -> list[SearchResult]:
    """Result pages rendered as plain HTML (Google's basic-HTML page, no script): each result is a link
    to its source page (`/url?q=` or `url=`, `/imgres?imgurl=&imgrefurl=`) around a thumbnail."""
    if "<img" not in text:
        return []
    out = []
    for a in html_soup(text).select("a[href]"):
        img = a.find("img")
        thumb = _http(img.get("src")) if img is not None else None
        parts = _split_url(a["href"])
        if not thumb or parts is None or parts.path not in ("/url", "/imgres"):
            continue
        query = parse_qs(parts.query)
        source = _http((query.get("imgrefurl") or query.get("url") or query.get("q") or [None])[0])
        image = _http((query.get("imgurl") or [None])[0]) or thumb
        if source or image != thumb:
            out.append(SearchResult(image, thumb, source, _plain(img.get("alt")), None, None))
    return out


def _raise_unless_empty_grid(text: str, kind: str):
    """A page of the engine's own result markup with no results is an empty answer ([]); anything
    else (a captcha, a consent page, another site, unreadable data) is a page we do not recognise."""
    if kind == "baidu":  # the imgData variable or the acjson document, with an empty "data" list
        m = re.search(r"""setData\(\s*['"]imgData['"]\s*,\s*(?=\{)""", text)
        start = m.end() if m else len(text) - len(text.lstrip())
        if text[start : start + 1] == "{":
            doc = loads_lenient(js_object_at(text, start))
            if isinstance(doc, dict) and isinstance(doc.get("data"), list):
                return
    elif kind == "bing":
        if re.search(r"""<a\s[^>]*class=["'][^"']*\biusc\b|class=["'][^"']*\bdgControl\b""", text[:400_000]):
            return
    elif '"ischj"' in text[:2000]:
        return
    where = {"bing": "Bing", "baidu": "Baidu", "google": "Google"}[kind]
    raise PageShapeError(f"{where} page without result records (objects with a {ENGINE_FIELDS[kind]['record']} field)")


# --------------------------------------------------------------------------- Baidu

_BAIDU_TOKENS = {"_z2C$q": ":", "_z&e3B": ".", "AzdH3F": "/"}
_BAIDU_CHARS = str.maketrans("wkv1ju2it3hs4g5rq6fp7eo8dn9cm0bla", "abcdefghijklmnopqrstuvw1234567890")
_BAIDU_TOKEN_RE = re.compile("|".join(re.escape(t) for t in _BAIDU_TOKENS))


def _baidu_url(value) -> str | None:
    return _http(decode_baidu_url(value)) if isinstance(value, str) else None


def decode_baidu_url(value: str) -> str:
    """Undo Baidu's URL obfuscation ("ippr_z2C$qAzdH3F..." -> "http://..."); plain URLs pass."""
    if not value or _http(value):
        return value
    pieces = []
    last = 0
    for m in _BAIDU_TOKEN_RE.finditer(value):
        pieces.append(value[last : m.start()].translate(_BAIDU_CHARS))
        pieces.append(_BAIDU_TOKENS[m.group()])
        last = m.end()
    pieces.append(value[last:].translate(_BAIDU_CHARS))
    return "".join(pieces)


# --------------------------------------------------------------------------- Bing

_SIZE = re.compile(r"(\d+)\s*[x×]\s*(\d+)")


def _bing_sizes(text: str, results: list[SearchResult]):
    """Bing's records carry no size; each tile shows it as "W x H" text beside the record."""
    soup = html_soup(text)
    sizes = {}
    for a in soup.select("a[m]"):
        m = _json_object(a["m"])
        tile = a.find_parent(class_="imgpt") or a.find_parent("li") or a.parent
        info = tile.select_one(".img_info span") if tile is not None else None
        size = _SIZE.search(info.get_text(" ")) if info is not None else None
        if m and size and _http(m.get("murl")):
            sizes[_http(m.get("murl"))] = (_int(size[1]), _int(size[2]))
    for r in results:
        r.width, r.height = sizes.get(r.image_url, (r.width, r.height))


# --------------------------------------------------------------------------- Google

_GOOGLE_PAIR = re.compile(
    r'\["(https://encrypted-tbn\d\.gstatic\.com/images\?(?:[^"\\]|\\.)*)",(\d+),(\d+)\]\s*,\s*'
    r'\["(https?://(?:[^"\\]|\\.)*)",(\d+),(\d+)\]'
)
_GOOGLE_2003 = re.compile(r'"2003":\[null,"(?:[^"\\]|\\.)*","((?:[^"\\]|\\.)*)","((?:[^"\\]|\\.)*)"')


def _js_string(s: str) -> str | None:
    """A JavaScript string literal's body; None for escapes JSON lacks (\\q, a cut \\u12)."""
    try:
        return json.loads(f'"{s}"', strict=False)
    except ValueError:
        return None


def _google_positional(text: str) -> list[SearchResult]:
    """Google's results that are not field-named records: the "ischj" JSON (fields nested one level
    down) and AF_initDataCallback arrays (~2020-2023)."""
    if '"ischj"' in text[:2000]:
        return _google_ischj(text)
    if "AF_initDataCallback" not in text:
        return []
    scripts = [s.get_text() for s in html_soup(text).find_all("script")]
    return [result for script in scripts if "AF_initDataCallback" in script for result in _google_script(script)]


def _google_ischj(text: str) -> list[SearchResult]:
    start = text.rfind("{", 0, text.index('"ischj"'))
    ischj = _dict(loads_lenient(js_object_at(text, start))).get("ischj") or {}
    metadata = (ischj.get("metadata") or []) if isinstance(ischj, dict) else None
    if not isinstance(metadata, list):
        raise PageShapeError('Google "ischj" JSON is not {"metadata": [...]}')
    out = []
    for item in metadata:
        item = _dict(item)
        original, result = _dict(item.get("original_image")), _dict(item.get("result"))
        image = _http(original.get("url"))
        if image:
            thumbnail = _http(_dict(item.get("thumbnail")).get("url"))
            page, title = _http(result.get("referrer_url")), _plain(result.get("page_title"))
            out.append(
                SearchResult(image, thumbnail, page, title, _int(original.get("width")), _int(original.get("height")))
            )
    return out


def _google_script(script: str) -> list[SearchResult]:
    out = []
    matches = list(_GOOGLE_PAIR.finditer(script))
    for i, m in enumerate(matches):
        # The source page and title sit after the image pair, before the next result.
        end = matches[i + 1].start() if i + 1 < len(matches) else len(script)
        image = _http(_js_string(m[4]))
        if not image:
            continue
        meta = _GOOGLE_2003.search(script, m.end(), end)
        source = _http(_js_string(meta[1])) if meta else None
        title = _plain(_js_string(meta[2])) if meta else None
        # arrays are [url, height, width]
        out.append(SearchResult(image, _http(_js_string(m[1])), source, title, _int(m[6]), _int(m[5])))
    return out


__all__ = ["SearchResult", "PageShapeError", "parse_search", "search_url", "character_query", "decode_baidu_url"]
