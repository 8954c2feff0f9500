"""Encyclopedia pages -> an album's characters, each with one typical image (the paper's first step).

Pure functions: HTML text in, `Character` records out; nothing here touches the network.
`parse_characters(html, page_url)` recognises the page shape; a page it does not understand raises
`PageShapeError` ("page shape not recognised: ...") rather than returning an empty list. A page of a
recognised shape that really lists nobody (an empty category, an empty role module, a requested
section with no character entries) returns [].

MediaWiki family (Wikipedia, Fandom/Wikia, Bulbapedia, ...), in this order:
  * a section, when `section=` is given or `page_url` has a #fragment naming a heading
    (`.../wiki/Team_Rocket#In_animation`): the characters named in that section's structured
    entries, i.e. figure/gallery captions made only of links to articles, `dl > dt` terms, list
    items that start with a bold name, and wikitable rows with a Character/Name column. Prose is
    not read: its links mix characters with places, episodes and series, and markup cannot tell
    them apart. On a "... characters" list page the sub-headings count too (see below).
  * a category page: the Oasis (2016) `div.category-gallery-item` gallery, Fandom's
    `li.category-page__member` rows (lazy-loaded thumbnails) and the classic `#mw-pages` list.
    Gallery characters come first (the wiki's own pick of its most visited pages), then the rest
    in listing order. A listing longer than one page (200 members) links its next page ("next
    200", Fandom's pagination arrow): `next_page_url` gives it, and the crawler follows it.
  * a list of characters (title says "characters"/"cast"/角色/登场人物, as Wikipedia's "List of
    ... characters"): one character per heading, where headings whose title names a group
    ("Main characters", "The Smith family") or whose sub-headings are not aspects of one person
    ("Personality", "Reception", ...) are groups, and boilerplate headings (See also,
    References, ...) are skipped; plus the structured entries above in group sections.
    Both heading markups are read: Vector-2022 `div.mw-heading > hN` and `hN > span.mw-headline`.
  * a character page: an infobox (`table.infobox`, Fandom `aside.portable-infobox`) whose labels
    describe a person (gender, age, voice actor, ...), giving one Character named after the page
    title, with the infobox image and the infobox's bold title names as aliases. An infobox of an
    organisation or a series (leader, region, episodes, ...) is not a character page.

One typical image per character: a figure naming several characters is a group shot, so those
characters get image_url None rather than a picture with several faces (the image becomes the
identity's reference face downstream).

Baidu Baike (baike.baidu.com album pages), the role module (角色介绍 / 主要角色):
  * modern markup (2023-, CSS-module class names with hashes): elements whose class contains
    `roleName` / `role-name` / `role_name`, inside a container whose class contains
    `roleIntroduction` / `roleList` / `role-list`; the image is the item's `img` (`src`/`data-src`);
  * classic markup (`div.lemmaWgt-roleIntroduction`, `div.role-list li`, `.role-name`,
    `.role-pic img`).
  Both are read by the same rule: each outermost role-name element is one character, its item
  is the largest ancestor that holds no other role name, and the item's picture is its image.
  A trailing parenthesis in the name becomes an alias (蒙奇·D·路飞（Monkey D. Luffy）) unless it
  names a voice actor (配音/CV/声优). The shapes come from knowledge of Baike's markup, not from a
  saved page; the tests use small hand-written pages.

Image URLs are made absolute (page_url, else the page's canonical link, is the base;
protocol-relative URLs get https) and brought to a useful size:
  * `srcset`/`data-srcset`: the largest candidate wins; lazy images: `data-src` before a
    placeholder `src="data:..."`; with no URL at all, a Fandom `data-image-key` becomes
    `<wiki>/wiki/Special:FilePath/<key>` (MediaWiki redirects that to the original file);
  * MediaWiki thumbnails `.../thumb/a/ab/File.png/120px-File.png` -> the original
    `.../a/ab/File.png`. When the original is not a raster image the browser can use (SVG, PDF,
    TIFF, DjVu, video) the thumbnail is kept at 800 px instead (`.../800px-File.svg.png`);
  * Fandom/Wikia `.../revision/latest/<any scaling or crop>?cb=...` -> `.../revision/latest?cb=...`
    (the original);
  * Baike `bkimg.cdn.bcebos.com/pic/<id>?x-bce-process=...` -> without the resize query (original).
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import parse_qs, quote, unquote, urljoin, urlsplit, urlunsplit

from bs4 import BeautifulSoup, NavigableString, Tag

KINDS = ("auto", "mediawiki", "baike")


@dataclass
class Character:
    name: str
    image_url: str | None
    source_url: str
    aliases: list[str] = field(default_factory=list)


class PageShapeError(ValueError):
    """The markup matches no shape we know; the message starts with "page shape not recognised"."""

    def __init__(self, why: str):
        super().__init__(f"page shape not recognised: {why}")


# Blink's HTML parser stops nesting at 512 elements too; the saved pages in ../shared nest 14-25 deep.
# The bound keeps ancestor walks (find_parent, soupsieve's descendant selectors, role items) short.
MAX_DEPTH = 512
_SURROGATE = re.compile("[\ud800-\udfff]")


def without_surrogates(text: str) -> str:
    """Lone surrogates (from JSON \\udXXX escapes or a str built in code) as U+FFFD: lxml and the
    UTF-8 output of the CLI both refuse them."""
    return _SURROGATE.sub("\ufffd", text)


def html_soup(html: str) -> BeautifulSoup:
    """The page parsed by lxml; a page nested deeper than MAX_DEPTH raises PageShapeError."""
    soup = BeautifulSoup(without_surrogates(html), "lxml")
    stack = [(soup, 0)]
    while stack:  # iterative: the tree may be far deeper than Python's recursion limit
        tag, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise PageShapeError(f"HTML nested deeper than {MAX_DEPTH} elements")
        stack.extend((child, depth + 1) for child in tag.contents if isinstance(child, Tag))
    return soup


def _split(url: str):
    """urlsplit, or None for a URL urllib refuses (bad IPv6 host, NFKC look-alikes): page data can
    hold anything."""
    try:
        return urlsplit(url)
    except ValueError:
        return None


# --------------------------------------------------------------------------- site detection

def detect_site(html: str, page_url: str = "") -> str:
    """'mediawiki', 'baike', 'bing', 'baidu', 'google' or 'unknown': from the URL's host when it is
    a known one, else from markers in the text (cheap string tests, no parsing)."""
    host = (urlsplit(page_url).hostname or "").lower() if page_url else ""
    if host:
        if host == "baike.baidu.com" or host.endswith(".baike.baidu.com"):
            return "baike"
        if host.endswith("image.baidu.com"):
            return "baidu"
        if host == "bing.com" or host.endswith(".bing.com"):
            return "bing"
        if re.match(r"^(www\.|images\.)?google\.[a-z.]+$", host):
            return "google"
        if host.endswith((".wikipedia.org", ".fandom.com", ".wikia.com", ".wikia.org",
                          "bulbagarden.net", ".wikimedia.org")):
            return "mediawiki"
    head = html[:400_000]
    if "flip.setData('imgData'" in head or re.search(r'"(objURL|thumbURL|middleURL)"\s*:', head):
        return "baidu"
    if re.search(r"""class=["'][^"']*\biusc\b""", head):
        return "bing"
    if ("rg_meta" in head or '"ischj"' in head
            or ("AF_initDataCallback" in head and "gstatic.com/images" in head)):
        return "google"
    if re.search(r'content="MediaWiki|class="[^"]*\bmediawiki\b|mw-parser-output|id="mw-content-text"'
                 r'|"wgPageName"', head):
        return "mediawiki"
    if re.search(r"baike\.baidu\.com|bkimg\.cdn\.bcebos\.com|lemmaWgt|J-lemma-title|lemma-summary", head):
        return "baike"
    return "unknown"


# --------------------------------------------------------------------------- entry point

def parse_characters(html: str, page_url: str, kind: str = "auto",
                     section: str | None = None) -> list[Character]:
    """Characters listed on an encyclopedia page. `section` (a heading's text or id) restricts a
    MediaWiki page to one section; a #fragment in page_url does the same when it names a heading."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind == "auto":
        kind = detect_site(html, page_url)
        if kind not in ("mediawiki", "baike"):
            what = "no encyclopedia markup" if kind == "unknown" else f"a {kind} search page"
            raise PageShapeError(f"{what}, not a MediaWiki or Baike page")
    soup = html_soup(html)
    base = _base_url(soup, page_url)
    if kind == "baike":
        return _parse_baike(soup, base)
    return _parse_mediawiki(soup, base, page_url, section)


def next_page_url(html: str, page_url: str) -> str | None:
    """The next page of a MediaWiki category listing, as an absolute URL; None on the last page and
    on any other kind of page. Classic MediaWiki and the Oasis skin link it as "next 200" with a
    `pagefrom=` (old wikis: `from=`) query; the previous page uses `pageuntil=`/`until=` and is never
    taken. Fandom's 2019- skin has `a.category-page__pagination-next`."""
    soup = html_soup(html)
    if not _is_mediawiki(soup) or not _is_category(soup, _page_title(soup)):
        return None
    base = _base_url(soup, page_url)
    link = soup.select_one("a.category-page__pagination-next[href]")
    if link is None:
        for a in soup.select("#mw-pages a[href]"):
            parts = _split(a["href"])
            query = parse_qs(parts.query) if parts else {}
            if ("pagefrom" in query or "from" in query) and not ({"pageuntil", "until"} & set(query)):
                link = a
                break
    url = absolute_url(link["href"], base) if link is not None else None
    return _without_fragment(url) if url else None


# --------------------------------------------------------------------------- URLs and images

_NON_RASTER = {"svg", "pdf", "tif", "tiff", "djvu", "webm", "ogv", "ogg", "mp4", "xcf", "stl"}
_WM_THUMB = re.compile(r"^(?P<head>.*?)/thumb/(?P<hash>[0-9a-f]/[0-9a-f]{2})/(?P<file>[^/]+)/"
                       r"(?P<prefix>[^/]*?)(?P<px>\d+)px-(?P<rest>[^/?#]+)(?:[?#].*)?$")
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
    """A thumbnail URL turned into the original image (rules in the module docstring)."""
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


# --------------------------------------------------------------------------- MediaWiki

_NAMESPACES = re.compile(
    r"^(category|file|image|media|template|special|user|talk|help|mediawiki|module|portal|"
    r"wikipedia|project|draft|forum|blog|user blog|message wall|thread|board|map|"
    r"[a-z ]+ talk)\s*:", re.I)
_NOISE = (".navbox, .vertical-navbox, .toc, #toc, .mw-editsection, sup.reference, .reflist, "
          ".references, .metadata, .ambox, .sidebar, .catlinks, .printfooter, style, script, "
          "noscript, .mw-empty-elt")
_HEADING = re.compile(r"^h[2-6]$")
_BOILERPLATE = re.compile(
    r"^(contents|see also|references?|notes?( and references)?|external links|further reading|"
    r"bibliography|sources|citations|footnotes|works cited|navigation menu|reception|"
    r"critical reception|development|creation|production|overview|casting|merchandise|legacy|"
    r"cultural impact|trivia|gallery|in other languages|names?|related articles|"
    r"参考资料|参考文献|外部链接|相关条目|注释)$", re.I)
_GROUP = re.compile(
    r"\b(characters?|cast|family|families|members|villains|antagonists|protagonists|heroes|"
    r"students|staff|others|recurring|supporting|minor|main|secondary|introduced|guest|"
    r"season|series|episodes?)\b|角色|人物|家族|成员", re.I)
_ASPECT = re.compile(
    r"^(personality|appearance|biography|fictional biography|history|background|reception|"
    r"development|relationships?|abilities|powers( and abilities)?|skills|design|creation|"
    r"conception|casting|characteri[sz]ation|portrayal|voice|in other media|"
    r"other versions|trivia|quotes|gallery|性格|外貌|经历|能力)$", re.I)
_CHARACTER_FIELDS = re.compile(
    r"gender|\bsex\b|species|\bage\b|voiced by|voice actor|\bvoice\b|portrayed by|hair|\beyes?\b|"
    r"eye colou?r|relatives|\bborn\b|birthday|性别|配音|声优|生日|年龄", re.I)
_CHARACTER_LIST_TITLE = re.compile(r"\bcharacters?\b|\bcast\b|登場人物|登场人物|角色|人物", re.I)
_NAME_COLUMN = re.compile(r"^(characters?|names?|roles?|角色|人物|名字|名前|キャラクター)$", re.I)
_CAPTION_GLUE = re.compile(r"\band\b|[\s,;&/、，和与與及·]+", re.I)
_MAIN_ARTICLE = re.compile(r"(main articles?|主条目|主條目)\s*[:：]", re.I)
_FOOTNOTE = re.compile(r"\[\s*(\d+|[a-z]|note \d+|citation needed)\s*\]", re.I)


def _text(tag: Tag) -> str:
    return _FOOTNOTE.sub("", " ".join(tag.get_text(" ").split())).strip()


def _is_mediawiki(soup: BeautifulSoup) -> bool:
    gen = soup.select_one('meta[name="generator"]')
    body_classes = (soup.body.get("class") or []) if soup.body else []
    return bool((gen and "mediawiki" in gen.get("content", "").lower()) or "mediawiki" in body_classes
                or soup.select_one(".mw-parser-output, #mw-content-text, #firstHeading"))


def _page_title(soup: BeautifulSoup) -> str:
    h1 = soup.select_one("#firstHeading") or soup.select_one("#WikiaPageHeader h1, h1.page-header__title")
    if h1:
        return _text(h1)
    og = soup.select_one('meta[property="og:title"]')
    if og and og.get("content"):
        return og["content"].strip()
    title = soup.title.get_text() if soup.title else ""
    return re.split(r"\s+[-|–]\s+", title.strip())[0]


def _article_link(a: Tag, base: str) -> tuple[str, str] | None:
    """(page title, absolute URL) when `a` links to an article; None for other namespaces
    (Category:, File:, ...), edit links, red links, anchors and external links."""
    href = (a.get("href") or "").strip()
    classes = a.get("class") or []
    if not href or href.startswith("#") or {"new", "external", "extiw", "mw-selflink"} & set(classes):
        return None
    url = absolute_url(href, base)
    parts = _split(url) if url else None
    if parts is None:
        return None
    query = parse_qs(parts.query)
    if {"action", "redlink", "veaction", "oldid", "diff"} & set(query):
        return None
    if "/wiki/" in parts.path:
        page = unquote(parts.path.split("/wiki/", 1)[1])
    elif "title" in query:
        page = query["title"][0]
    else:
        return None
    title = (a.get("title") or page.replace("_", " ")).strip()
    if not title or _NAMESPACES.match(title) or _NAMESPACES.match(page.replace("_", " ")):
        return None
    return title, urlunsplit(parts._replace(fragment=""))


def _character_from_link(a: Tag, base: str, image: str | None) -> Character | None:
    link = _article_link(a, base)
    if link is None:
        return None
    title, url = link
    name = _text(a) or title
    return Character(name, image, url, [title] if title != name else [])


class _Collected:
    """Characters in page order, one per name; a later sighting may add a missing image/alias."""

    def __init__(self):
        self.by_name: dict[str, Character] = {}

    def add(self, ch: Character | None):
        if ch is None or not ch.name:
            return
        have = self.by_name.get(ch.name)
        if have is None:
            self.by_name[ch.name] = ch
            return
        have.image_url = have.image_url or ch.image_url
        have.aliases += [a for a in ch.aliases if a not in have.aliases]

    def result(self) -> list[Character]:
        return list(self.by_name.values())


def _parse_mediawiki(soup: BeautifulSoup, base: str, page_url: str, section: str | None) -> list[Character]:
    if not _is_mediawiki(soup):
        raise PageShapeError("no MediaWiki markup (generator meta, body.mediawiki, #mw-content-text)")
    title = _page_title(soup)
    root = soup.select_one("#mw-content-text .mw-parser-output") or soup.select_one("#mw-content-text") \
        or soup.select_one(".mw-parser-output") or soup.body or soup
    for tag in root.select(_NOISE):
        tag.decompose()
    doc = _Doc(root)

    fragment = unquote(urlsplit(page_url).fragment) if page_url else ""
    wanted = section or fragment
    page_url = _without_fragment(base or page_url)  # what entries without a page of their own cite
    if wanted:
        heading = doc.find_heading(wanted)
        if heading is not None:
            return _section_characters(doc, heading, base, page_url, _CHARACTER_LIST_TITLE.search(title))
        if section:  # asked for by name: a missing section is an error, a stray URL fragment is not
            raise PageShapeError(f"no section {section!r} on MediaWiki page {title!r}")

    if _is_category(soup, title):
        return _category_characters(soup, base)
    if _CHARACTER_LIST_TITLE.search(title):
        found = _list_characters(doc, base, page_url)
        if found:
            return found
        raise PageShapeError(f"{title!r} looks like a list of characters but has no character "
                             "headings, terms, bold list items, name-column tables or captions")
    infobox = soup.select_one("table.infobox, aside.portable-infobox, table[class*=infobox], "
                              "div.infobox")
    if infobox is not None and _is_character_infobox(infobox):
        return [_infobox_character(infobox, title, base)]
    why = ("its infobox describes no person (no gender/age/voice fields)" if infobox is not None
           else "no infobox")
    raise PageShapeError(f"MediaWiki page {title!r} is not a category, not a list of characters, and "
                         f"{why}; to read the characters of one section, pass section= or a URL "
                         "#fragment naming the heading")


# ----- categories

def _is_category(soup: BeautifulSoup, title: str) -> bool:
    body_classes = (soup.body.get("class") or []) if soup.body else []
    return bool("ns-14" in body_classes or title.lower().startswith("category:")
                or soup.select_one("#mw-pages, #mw-subcategories, .category-gallery, "
                                   ".category-page__members"))


def _category_characters(soup: BeautifulSoup, base: str) -> list[Character]:
    found = _Collected()

    def member(a: Tag | None, img: Tag | None):
        link = _article_link(a, base) if a is not None else None
        if link:  # the page title names the member; gallery captions may be cut short
            found.add(Character(link[0], image_url(img, base), link[1], []))

    # Oasis skin (2013-2019): a gallery of the most visited pages, each `a[title] > img`.
    for item in soup.select("div.category-gallery-item"):
        member(item.find("a", title=True), item.find("img"))
    # Fandom UCP (2019-): one row per member, thumbnails lazy-loaded.
    for li in soup.select("li.category-page__member"):
        member(li.select_one("a.category-page__member-link"), li.select_one("img"))
    # Classic MediaWiki listing (also on Oasis): names only.
    for a in soup.select("#mw-pages li a"):
        member(a, None)
    return found.result()


# ----- document order helpers for sections

class _Doc:
    """The content's tags in document order and its headings, so a section is a slice."""

    def __init__(self, root: Tag):
        self.tags = root.find_all(True)
        self.pos = {id(t): i for i, t in enumerate(self.tags)}
        self.headings = [t for t in self.tags if _HEADING.match(t.name)]
        # Each heading's section ends at the next heading of its level or higher: found once for
        # all (a stack of open sections), so a page with thousands of headings stays linear.
        self.index = {id(h): k for k, h in enumerate(self.headings)}
        self.section_end = [len(self.headings)] * len(self.headings)
        open_sections: list[int] = []
        for k, h in enumerate(self.headings):
            while open_sections and self.level(self.headings[open_sections[-1]]) >= self.level(h):
                self.section_end[open_sections.pop()] = k
            open_sections.append(k)

    @staticmethod
    def level(h: Tag) -> int:
        return int(h.name[1])

    @staticmethod
    def heading_text(h: Tag) -> str:
        headline = h.select_one(".mw-headline")
        return _text(headline or h)

    @staticmethod
    def heading_ids(h: Tag) -> set[str]:
        ids = {h.get("id", "")} | {s.get("id", "") for s in h.find_all(id=True)}
        return {i for i in ids if i}

    def find_heading(self, wanted: str) -> Tag | None:
        keys = {wanted, wanted.replace(" ", "_"), wanted.replace("_", " ")}
        for h in self.headings:
            if self.heading_ids(h) & keys or self.heading_text(h) in keys:
                return h
        return None

    def end_of(self, h: Tag, any_level: bool = False) -> int:
        """Index after the last tag of h's section (up to the next heading of its level or
        higher; with any_level, up to the next heading at all)."""
        k = self.index[id(h)]
        end = k + 1 if any_level else self.section_end[k]
        return self.pos[id(self.headings[end])] if end < len(self.headings) else len(self.tags)

    def subheadings(self, h: Tag) -> list[Tag]:
        k = self.index[id(h)]
        return self.headings[k + 1:self.section_end[k]]

    def between(self, start: int, end: int) -> list[Tag]:
        return self.tags[start:end]


def _heading_kinds(doc: _Doc, headings: list[Tag]) -> list[tuple[Tag, str]]:
    """('character' | 'group') for each heading worth reading; aspects of a character and
    boilerplate sections are left out with everything under them."""
    out, skip_below = [], None
    for h in headings:
        if skip_below is not None and doc.level(h) > skip_below:
            continue
        skip_below = None
        text = doc.heading_text(h)
        if _BOILERPLATE.match(text):
            skip_below = doc.level(h)
            continue
        subs = doc.subheadings(h)
        top = min((doc.level(s) for s in subs), default=0)
        direct = [s for s in subs if doc.level(s) == top]
        if _GROUP.search(text) or (direct and not any(_ASPECT.match(doc.heading_text(s)) for s in direct)):
            out.append((h, "group"))
        else:
            out.append((h, "character"))
            skip_below = doc.level(h)
    return out


def _heading_character(doc: _Doc, h: Tag, base: str, page_url: str) -> Character:
    start, end = doc.pos[id(h)], doc.end_of(h)
    name = doc.heading_text(h)
    anchor = next(iter(sorted(doc.heading_ids(h))), name.replace(" ", "_"))
    source = urlunsplit(urlsplit(base)._replace(fragment=quote(anchor, safe="_.-:()"))) if base else page_url
    image = None
    for tag in doc.between(start + 1, end):
        # "Main article: X" points at the character's own page, a better source than the list.
        if ("hatnote" in (tag.get("class") or []) or tag.get("role") == "note") and _MAIN_ARTICLE.match(_text(tag)):
            links = [link for link in (_article_link(a, base) for a in tag.find_all("a")) if link]
            if links:
                source = links[0][1]
        if tag.name == "img" and image is None and not tag.find_parent(class_="hatnote"):
            width = _display_width(tag)
            if width is None or width >= 60:
                image = image_url(tag, base)
    return Character(name, image, source, [])


def _entries_in(tags: list[Tag], base: str, page_url: str, found: _Collected):
    """Structured character entries among `tags` (one section's tags, sub-sections excluded by
    the caller where needed): captions of figures/galleries, dt terms, bold-led list items and
    name-column table rows."""
    seen = set()
    for tag in tags:
        if id(tag) in seen:
            continue
        classes = tag.get("class") or []
        if tag.name == "figure" or {"thumb", "gallerybox", "wikia-gallery-item"} & set(classes):
            for t in tag.find_all(True):
                seen.add(id(t))
            _caption_entries(tag, base, found)
        elif tag.name == "dt":
            name = _clean_term(_text(tag))
            link = tag.find("a")  # the term is a link to the character's page: cite that page
            ch = _character_from_link(link, base, None) if link is not None and _text(link) == name else None
            found.add(ch or (Character(name, None, page_url or base) if name else None))
        elif tag.name == "li" and tag.parent is not None and tag.parent.name in ("ul", "ol"):
            found.add(_bold_item(tag, base, page_url))
        elif tag.name == "table" and "wikitable" in classes:
            for ch in _table_characters(tag, base, page_url):
                found.add(ch)


def _caption_entries(fig: Tag, base: str, found: _Collected):
    cap = fig.select_one("figcaption, .thumbcaption, .gallerytext, .lightbox-caption, .caption")
    if cap is None:
        return
    links = [a for a in cap.find_all("a") if _article_link(a, base)]
    rest = "".join(s for s in cap.find_all(string=True) if not s.find_parent("a"))
    if not links or _CAPTION_GLUE.sub("", rest):  # words besides names: "Team Rocket in ..."
        return
    picture = _picture(fig, base, 40)
    for a in links:
        found.add(_character_from_link(a, base, picture if len(links) == 1 else None))


def _clean_term(text: str) -> str:
    text = re.sub(r"\s*\((voiced|portrayed|played) by [^)]*\)\s*$", "", text, flags=re.I)
    return re.split(r"\s+[–—-]\s+|:\s", text, maxsplit=1)[0].strip()


def _bold_item(li: Tag, base: str, page_url: str) -> Character | None:
    """`* '''Name''' – description`: the bold name at the very start of the item."""
    first = next((c for c in li.children if not (isinstance(c, NavigableString) and not c.strip())), None)
    if not isinstance(first, Tag) or first.name not in ("b", "strong"):
        return None
    name = _clean_term(_text(first))
    link = first.find("a")
    if link is not None and _article_link(link, base):
        ch = _character_from_link(link, base, None)
        if ch:
            ch.name = name or ch.name
            return ch
    return Character(name, None, page_url or base) if name else None


def _table_characters(table: Tag, base: str, page_url: str) -> list[Character]:
    rows = table.find_all("tr")
    if not rows:
        return []
    header = [_text(c) for c in rows[0].find_all(["th", "td"], recursive=False)]
    col = next((i for i, h in enumerate(header) if _NAME_COLUMN.match(h)), None)
    if col is None:
        return []
    out = []
    for row in rows[1:]:
        cells = row.find_all(["th", "td"], recursive=False)
        if len(cells) <= col:
            continue
        cell = cells[col]
        name = _clean_term(_text(cell))
        if not name:
            continue
        image = _picture(row, base, 40)
        link = cell.find("a")
        ch = _character_from_link(link, base, image) if link is not None else None
        if ch:
            ch.name = name
        out.append(ch or Character(name, image, page_url or base))
    return out


def _list_characters(doc: _Doc, base: str, page_url: str) -> list[Character]:
    found = _Collected()
    first = doc.pos[id(doc.headings[0])] if doc.headings else len(doc.tags)
    _entries_in(doc.between(0, first), base, page_url, found)  # the lead, before any heading
    _read_headings(doc, doc.headings, base, page_url, found, headings_are_characters=True)
    return found.result()


def _read_headings(doc: _Doc, headings: list[Tag], base: str, page_url: str, found: _Collected,
                   headings_are_characters: bool):
    for h, kind in _heading_kinds(doc, headings):
        if kind == "character" and headings_are_characters:
            found.add(_heading_character(doc, h, base, page_url))
        else:  # a group: its own entries, up to its first sub-heading
            start = doc.pos[id(h)] + 1
            _entries_in(doc.between(start, doc.end_of(h, any_level=True)), base, page_url, found)


def _section_characters(doc: _Doc, heading: Tag, base: str, page_url: str,
                        headings_are_characters) -> list[Character]:
    found = _Collected()
    if headings_are_characters and _heading_kinds(doc, [heading]) == [(heading, "character")]:
        found.add(_heading_character(doc, heading, base, page_url))  # the fragment names one character
        return found.result()
    _entries_in(doc.between(doc.pos[id(heading)] + 1, doc.end_of(heading, any_level=True)),
                base, page_url, found)
    # Sub-headings of a topic page ("The trio", "Other members") are topics, not characters;
    # they are characters only on a list-of-characters page.
    _read_headings(doc, doc.subheadings(heading), base, page_url, found, bool(headings_are_characters))
    return found.result()


# ----- character pages

def _infobox_labels(box: Tag) -> list[str]:
    labels = [_text(t) for t in box.select("th, .pi-data-label, .infobox-label")]
    return labels + [t.get("data-source", "") for t in box.select("[data-source]")]


def _is_character_infobox(box: Tag) -> bool:
    return any(_CHARACTER_FIELDS.search(label) for label in _infobox_labels(box))


def _infobox_character(box: Tag, title: str, base: str) -> Character:
    picture = _picture(box, base, 80)
    names = [box.select_one(sel) for sel in (".pi-title", ".infobox-above", "caption")]
    first_row = box.find("tr")
    bold = first_row.find_all(["b", "strong"]) if first_row is not None else []
    aliases = []
    for tag in [n for n in names if n is not None] + bold:
        text = _text(tag)
        if text and text != title and len(text) <= 80 and text not in aliases:
            aliases.append(text)
    return Character(title, picture, _without_fragment(base), aliases)


# --------------------------------------------------------------------------- Baidu Baike

_ROLE_NAME = re.compile(r"role[-_]?name", re.I)
_ROLE_ROOT = re.compile(r"role[-_]?(introduction|list)|lemmaWgt-roleIntroduction", re.I)
_PICTURE_CLASS = re.compile(r"pic|img|image|avatar|photo", re.I)
_VOICE = re.compile(r"配音|声优|聲優|CV|cv[:：]")


def _has_class(tag: Tag, pattern: re.Pattern) -> bool:
    return any(pattern.search(c) for c in (tag.get("class") or []))


def _parse_baike(soup: BeautifulSoup, base: str) -> list[Character]:
    # Module roots, not the items inside them (classic items are `li.roleIntroduction-item`).
    roots = soup.find_all(lambda t: any(_ROLE_ROOT.search(c) and "item" not in c.lower()
                                        for c in (t.get("class") or [])))
    names = soup.find_all(lambda t: _has_class(t, _ROLE_NAME))
    # Tags are compared by identity: Tag == compares whole subtrees (slow, recursive).
    name_ids = {id(n) for n in names}
    names = [n for n in names if not any(id(p) in name_ids for p in n.parents)]  # outermost only
    if not names:
        if roots:
            return []  # a role module with nobody in it
        raise PageShapeError("Baike page without a role module (roleIntroduction / role-list / role-name)")
    held = Counter(id(p) for n in names for p in n.parents)  # role names inside each element
    root_ids = {id(r) for r in roots}
    out = _Collected()
    for el in names:
        item = _role_item(el, held, root_ids)
        img = next((i for i in item.find_all("img") if _is_picture(i, item)), None) or item.find("img")
        raw = re.sub(r"^(角色名?|名字|姓名)\s*[:：]\s*", "", _text(el))
        name, aliases = raw, []
        m = re.match(r"^(.*?)\s*[（(]([^（）()]+)[）)]$", raw)
        if m and m[1]:
            name = m[1].strip()
            if not _VOICE.search(m[2]):
                aliases.append(m[2].strip())
        link = el if el.name == "a" else el.find("a", href=True)
        source = (absolute_url(link["href"], base) if link is not None and link.get("href") else None) \
            or _without_fragment(base)
        if name:
            out.add(Character(name, image_url(img, base), source, aliases))
    return out.result()


def _role_item(name: Tag, held: Counter, root_ids: set[int]) -> Tag:
    """The largest ancestor of a role name that holds no other role name and is not the module."""
    item = name
    while True:
        parent = item.parent
        if (parent is None or parent.name in ("body", "html", "[document]") or id(parent) in root_ids
                or held[id(parent)] > 1):
            return item
        item = parent


def _is_picture(img: Tag, item: Tag) -> bool:
    """An <img> marked as the role's picture (`role-pic`, `roleImg_x`, ...) within its item."""
    tag = img
    while tag is not None and tag is not item:
        if _has_class(tag, _PICTURE_CLASS):
            return True
        tag = tag.parent
    return False
