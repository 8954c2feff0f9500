"""A MediaWiki category read through the wiki's own API (api.php) instead of its HTML.

The API lists a category's members whatever the skin, 500 at a time, and gives each member's lead
image (PageImages, on Wikipedia, Fandom and most fan wikis): a better typical image than a category
gallery thumbnail, and no markup to guess. The crawler asks it first for a category page and falls
back to the HTML listing when the wiki has no API, refuses it, or answers something else.

    api = api_endpoint(page_url, html)       # from the page's EditURI link, else None
    url = category_members_url(api, title)   # generator=categorymembers + prop=pageimages
    characters = parse_api_response(json.loads(body), page_url)
    url = next_api_url(api, title, doc)      # the `continue` block, or None when done

A list page read from its HTML may name characters without showing their pictures; the same API gives
each one's lead image (`page_images_url`, `parse_page_images`), up to 50 titles a request.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit, urlunsplit

from pipeline.sources.encyclopedia.images import full_size_url
from pipeline.sources.encyclopedia.mediawiki_markup import is_member_character
from pipeline.sources.encyclopedia.page import Character, PageShapeError

API_RULE = "api:categorymembers"
_EDIT_URI = re.compile(r"""<link[^>]+rel=["']EditURI["'][^>]*>""", re.I)
_HREF = re.compile(r"""href=["']([^"']+)["']""", re.I)
_CATEGORY_NAMESPACE = 14
_MEMBER_LIMIT = 500  # the API's maximum for ordinary clients


def api_endpoint(page_url: str, html: str) -> str | None:
    """The wiki's api.php, from the `<link rel="EditURI" href=".../api.php?action=rsd">` every
    MediaWiki page carries; None for a page without one."""
    m = _EDIT_URI.search(html[:200_000])
    href = _HREF.search(m.group()) if m else None
    if href is None or "api.php" not in href.group(1):
        return None
    url = href.group(1).replace("&amp;", "&")
    if url.startswith("//"):
        url = (urlsplit(page_url).scheme or "https") + ":" + url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return None
    return urlunsplit(parts._replace(query="", fragment=""))


def category_title(page_url: str, html: str = "") -> str | None:
    """ "Category:Characters" for a category page's URL (`/wiki/Category:Characters`,
    `?title=Category:...`), or from the page's `wgCanonicalNamespace`/`wgPageName` when the
    namespace has a local name; None for any other page."""
    parts = urlsplit(page_url)
    query = parse_qs(parts.query)
    page = unquote(parts.path.split("/wiki/", 1)[1]) if "/wiki/" in parts.path else query.get("title", [""])[0]
    page = page.replace("_", " ")
    if page.lower().startswith("category:"):
        return "Category:" + page.split(":", 1)[1]
    if re.search(r'"wgNamespaceNumber"\s*:\s*14\b', html[:200_000]) and ":" in page:
        return "Category:" + page.split(":", 1)[1]
    return None


def _query_url(api: str, params: dict) -> str:
    """An API query in JSON (formatversion 2), each lead image as the original and an 800 px rendering."""
    common = {"action": "query", "format": "json", "formatversion": "2"}
    images = {"piprop": "original|thumbnail", "pithumbsize": "800", "pilimit": "max"}
    return f"{api}?{urlencode({**common, **params, **images}, quote_via=quote)}"


def category_members_url(api: str, title: str, cont: dict | None = None) -> str:
    params = {
        "generator": "categorymembers",
        "gcmtitle": title,
        "gcmnamespace": "0",
        "gcmtype": "page",
        "gcmlimit": str(_MEMBER_LIMIT),
        "prop": "pageimages|info",
        "inprop": "url",
    }
    params.update({k: str(v) for k, v in (cont or {}).items()})
    return _query_url(api, params)


def next_api_url(api: str, title: str, doc: dict) -> str | None:
    """The next batch of the same query, from the response's `continue` block; None when done."""
    cont = doc.get("continue") if isinstance(doc, dict) else None
    return category_members_url(api, title, cont) if isinstance(cont, dict) and cont else None


def _pages(query: dict) -> list[dict]:
    """Members from `query.pages` (generator; a list in formatversion 2, a dict keyed by page id in
    1) or `query.categorymembers` (list=categorymembers: titles only)."""
    pages = query.get("pages")
    if isinstance(pages, dict):
        pages = list(pages.values())
    if isinstance(pages, list):
        return [p for p in pages if isinstance(p, dict)]
    members = query.get("categorymembers")
    return [m for m in members if isinstance(m, dict)] if isinstance(members, list) else []


def _article_url(api: str, page: dict, title: str) -> str:
    if isinstance(page.get("fullurl"), str) and page["fullurl"].startswith(("http://", "https://")):
        return page["fullurl"]
    parts = urlsplit(api)
    prefix = parts.path.rsplit("/", 1)[0]
    prefix = prefix[: -len("/w")] if prefix.endswith("/w") else prefix
    return urlunsplit(parts._replace(path=f"{prefix}/wiki/{quote(title.replace(' ', '_'))}", query=""))


def _lead_image(page: dict) -> str | None:
    for field in ("original", "thumbnail"):
        image = page.get(field)
        if isinstance(image, dict) and isinstance(image.get("source"), str):
            return full_size_url(image["source"])
    return None


def parse_api_response(doc, page_url: str) -> list[Character]:
    """The characters (article members) of one API response (subpages, project pages and lists of
    characters are none); an error answer or a document that is not a MediaWiki query raises
    PageShapeError. Generator results come unordered: sorted by title,
    as the category lists them."""
    if not isinstance(doc, dict):
        raise PageShapeError("the API answered something other than a JSON object")
    if "error" in doc:
        error = doc["error"] if isinstance(doc["error"], dict) else {}
        raise PageShapeError(f"the API refused the query: {error.get('code', '?')} {error.get('info', '')}".strip())
    query = doc.get("query")
    if not isinstance(query, dict):
        if doc.get("batchcomplete") is not None:
            return []  # an empty category: no "query" block at all
        raise PageShapeError("not a MediaWiki API query response (no 'query' block)")
    api = urlunsplit(urlsplit(page_url)._replace(query="", fragment=""))
    out = []
    for page in sorted(_pages(query), key=lambda p: str(p.get("title", ""))):
        title = page.get("title")
        if not isinstance(title, str) or not title or page.get("ns", 0) == _CATEGORY_NAMESPACE:
            continue
        if page.get("ns", 0) != 0 or "missing" in page or not is_member_character(title):
            continue
        out.append(Character(title, _lead_image(page), _article_url(api, page, title), [], found_by=API_RULE))
    return out


PAGE_IMAGES_BATCH = 50  # titles per request: the API's limit for ordinary clients


def article_title(url: str, api: str) -> str | None:
    """The article title a URL of the same wiki points at (`/wiki/Rick_Sanchez` -> "Rick Sanchez");
    None for another host, a section of a page, or a URL that is no article."""
    parts, wiki = urlsplit(url), urlsplit(api)
    if parts.netloc != wiki.netloc or parts.fragment or "/wiki/" not in parts.path:
        return None
    title = unquote(parts.path.split("/wiki/", 1)[1]).replace("_", " ").strip()
    return title if title and ":" not in title.split(" ")[0] else None


def page_images_url(api: str, titles: list[str]) -> str:
    return _query_url(api, {"prop": "pageimages", "redirects": "1", "titles": "|".join(titles)})


def parse_page_images(doc, titles: list[str]) -> dict[str, str]:
    """title asked -> its lead image, through the answer's `normalized` and `redirects` renames; titles
    without a lead image are left out. A document that is no query answer raises PageShapeError."""
    if not isinstance(doc, dict) or not isinstance(doc.get("query"), dict):
        raise PageShapeError("not a MediaWiki API query response (no 'query' block)")
    query = doc["query"]
    renames = {}
    for block in ("normalized", "redirects"):
        for item in query.get(block) or []:
            if isinstance(item, dict) and isinstance(item.get("from"), str) and isinstance(item.get("to"), str):
                renames[item["from"]] = item["to"]
    images = {p.get("title"): _lead_image(p) for p in _pages(query)}
    out = {}
    for title in titles:
        final = renames.get(renames.get(title, title), renames.get(title, title))
        if images.get(final):
            out[title] = images[final]
    return out
