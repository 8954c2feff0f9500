"""Image URLs of encyclopedia pages: made absolute, srcset/lazy-load aware, and brought from a
thumbnail to the original (rules in the package docstring)."""

from __future__ import annotations

import re
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

from bs4 import BeautifulSoup, Tag

from pipeline.sources.encyclopedia.page import _split

_NON_RASTER = {"svg", "pdf", "tif", "tiff", "djvu", "webm", "ogv", "ogg", "mp4", "xcf", "stl"}
_WM_THUMB = re.compile(
    r"^(?P<head>.*?)/thumb/(?P<hash>[0-9a-f]/[0-9a-f]{2})/(?P<file>[^/]+)/"
    r"(?P<prefix>[^/]*?)(?P<px>\d+)px-(?P<rest>[^/?#]+)(?:[?#].*)?$"
)
_FANDOM_REVISION = re.compile(r"(/revision/(?:latest|\d+))/[^?#]*")


def _base_url(soup: BeautifulSoup, page_url: str) -> str:
    """The URL relative links resolve against: the caller's, else the page's own canonical URL
    (a saved page often lost where it came from)."""
    if page_url and urlsplit(page_url).scheme in ("http", "https"):
        return page_url
    for sel, attr in (('link[rel="canonical"]', "href"), ('meta[property="og:url"]', "content")):
        tag = soup.select_one(sel)
        if tag and tag.get(attr, "").startswith(("http://", "https://")) and _split(tag[attr]):
            return tag[attr]
    return page_url or ""


def _without_fragment(url: str) -> str:
    return urlunsplit(urlsplit(url)._replace(fragment="")) if url else ""


def absolute_url(url: str, base: str) -> str | None:
    """url resolved against base; None when urllib cannot read url."""
    url = url.strip()
    if _split(url) is None:
        return None
    if url.startswith("//"):  # protocol-relative: take the page's scheme, https when unknown
        return (urlsplit(base).scheme or "https") + ":" + url
    return urljoin(base, url) if base else url


def full_size_url(url: str) -> str:
    """A thumbnail URL turned into the original image (rules in the package docstring)."""
    parts = _split(url)
    if parts is None:
        return url
    host = (parts.hostname or "").lower()
    m = _WM_THUMB.match(url)
    if m:
        ext = m["file"].rsplit(".", 1)[-1].lower()
        if ext not in _NON_RASTER:
            return f"{m['head']}/{m['hash']}/{m['file']}"
        # keep a rendering, large enough to find a face in (int() refuses over 4,300 digits)
        if len(m["px"]) < 10 and int(m["px"]) < 800:
            return f"{m['head']}/thumb/{m['hash']}/{m['file']}/{m['prefix']}800px-{m['rest']}"
        return url
    if host.endswith(("wikia.nocookie.net", "fandom.com")) and "/revision/" in parts.path:
        return urlunsplit(parts._replace(path=_FANDOM_REVISION.sub(r"\1", parts.path)))
    if host.endswith("bcebos.com") and "x-bce-process" in parts.query:
        return urlunsplit(parts._replace(query=""))
    return url


def _srcset_largest(srcset: str) -> str | None:
    best, best_key = None, None
    for cand in srcset.split(","):
        bits = cand.strip().split()
        if not bits:
            continue
        desc = bits[1] if len(bits) > 1 else "1x"
        try:
            value = float(desc[:-1])
        except ValueError:
            continue
        key = (desc.endswith("w"), value)  # width descriptors outrank density ones
        if best_key is None or key > best_key:
            best, best_key = bits[0], key
    return best


def image_url(img: Tag | None, base: str) -> str | None:
    """The most useful URL of an <img>: largest srcset candidate, lazy-load attributes before a
    placeholder src, Fandom's data-image-key as a last resort; made absolute and full size."""
    if img is None:
        return None
    url = None
    for attr in ("data-srcset", "srcset"):
        if img.get(attr):
            url = _srcset_largest(img[attr])
            if url:
                break
    if not url:
        for attr in ("data-src", "data-lazy-src", "data-original", "src"):
            val = (img.get(attr) or "").strip()
            if val and not val.startswith(("data:", "about:", "javascript:")):
                url = val
                break
    if not url and img.get("data-image-key") and urlsplit(base).netloc:
        origin = urlsplit(base)
        url = f"{origin.scheme}://{origin.netloc}/wiki/Special:FilePath/{quote(img['data-image-key'])}"
    url = absolute_url(url, base) if url else None
    return full_size_url(url) if url else None


def _display_width(img: Tag) -> int | None:
    for attr in ("width", "data-file-width"):
        try:
            return int(str(img.get(attr, "")).strip().rstrip("px"))
        except ValueError:
            continue
    return None


def _picture(scope: Tag, base: str, min_width: int) -> str | None:
    """First image in scope that is not an icon (flags, bullets, logos are drawn small)."""
    for img in scope.find_all("img"):
        width = _display_width(img)
        if width is not None and width < min_width:
            continue
        url = image_url(img, base)
        if url:
            return url
    return None
