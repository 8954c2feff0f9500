"""MediaWiki markup vocabulary shared by the MediaWiki readers: heading/label patterns, page
detection, the page title and links to articles."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, unquote, urlunsplit

from bs4 import BeautifulSoup, Tag

from pipeline.sources.encyclopedia.images import absolute_url
from pipeline.sources.encyclopedia.page import Character, _split, _text

_NAMESPACES = re.compile(
    r"^(category|file|image|media|template|special|user|talk|help|mediawiki|module|portal|"
    r"wikipedia|project|draft|forum|blog|user blog|message wall|thread|board|map|"
    r"[a-z ]+ talk)\s*:",
    re.I,
)
# What is never part of an article's own lists: navboxes, tables of contents, edit links, references.
_NOISE_CLASSES = {
    "navbox", "vertical-navbox", "toc", "mw-editsection", "reflist", "references", "metadata", "ambox",
    "sidebar", "catlinks", "printfooter", "mw-empty-elt",
}  # fmt: skip
_NOISE_TAGS = {"style", "script", "noscript"}


def remove_noise(root: Tag):
    """Drop the noise in one pass over the tree (a CSS selector list rescans it once per selector)."""
    noise = [
        t
        for t in root.find_all(True)
        if t.name in _NOISE_TAGS
        or t.get("id") == "toc"
        or _NOISE_CLASSES.intersection(t.get("class") or ())
        or (t.name == "sup" and "reference" in (t.get("class") or ()))
    ]
    for tag in noise:
        if not tag.decomposed:
            tag.decompose()


_HEADING = re.compile(r"^h[2-6]$")
_BOILERPLATE = re.compile(
    r"^(contents|see also|references?|notes?( and references)?|external links|further reading|"
    r"bibliography|sources|citations|footnotes|works cited|navigation menu|reception|"
    r"critical reception|development|creation|production|overview|casting|merchandise|legacy|"
    r"cultural impact|trivia|gallery|in other languages|names?|related articles|"
    r"参考资料|参考文献|外部链接|相关条目|注释)$",
    re.I,
)
_GROUP = re.compile(
    r"\b(characters?|cast|family|families|members|villains|antagonists|protagonists|heroes|"
    r"students|staff|others|recurring|supporting|minor|main|secondary|introduced|guest|"
    r"season|series|episodes?)\b|角色|人物|家族|成员",
    re.I,
)
_ASPECT = re.compile(
    r"^(personality|appearance|biography|fictional biography|history|background|reception|"
    r"development|relationships?|abilities|powers( and abilities)?|skills|design|creation|"
    r"conception|casting|characteri[sz]ation|portrayal|voice|in other media|"
    r"other versions|trivia|quotes|gallery|性格|外貌|经历|能力)$",
    re.I,
)
_CHARACTER_FIELDS = re.compile(
    r"gender|\bsex\b|species|\bage\b|voiced by|voice ?actor|\bvoice\b|portrayed by|hair|\beyes?\b|"
    r"eye colou?r|relatives|\bborn\b|birthday|性别|配音|声优|生日|年龄|"
    # the same fields in the languages of the wikis users crawl most: ru, de, fr, es/pt, ja, ko
    r"озвуч|\bпол\b|возраст|день рождения|geschlecht|\balter\b|synchronsprecher|\bsexe\b|\bâge\b|doublage|"
    r"género|\bedad\b|idade|doblaje|dublagem|性別|年齢|声優|誕生日|성별|성우|나이",
    re.I,
)
_CHARACTER_LIST_TITLE = re.compile(r"\bcharacters?\b|\bcast\b|登場人物|登场人物|角色|人物", re.I)
_CAPTION_GLUE = re.compile(r"\band\b|[\s,;&/、，和与與及·]+", re.I)
_MAIN_ARTICLE = re.compile(r"(main articles?|主条目|主條目)\s*[:：]", re.I)


def _is_mediawiki(soup: BeautifulSoup) -> bool:
    gen = soup.select_one('meta[name="generator"]')
    body_classes = (soup.body.get("class") or []) if soup.body else []
    return bool(
        (gen and "mediawiki" in gen.get("content", "").lower())
        or "mediawiki" in body_classes
        or soup.select_one(".mw-parser-output, #mw-content-text, #firstHeading")
        # a page's bare body (action=render, a saved extract): MediaWiki's own heading and table markup
        or soup.select_one("span.mw-headline, table.wikitable, .mw-editsection")
    )


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
    base_parts = _split(base) if base else None
    if "/wiki/" in parts.path:
        page = unquote(parts.path.split("/wiki/", 1)[1])
    elif "/index.php/" in parts.path:  # wikis without short URLs: /index.php/Title
        page = unquote(parts.path.split("/index.php/", 1)[1])
    elif "title" in query:
        page = query["title"][0]
    elif _same_title(a.get("title", ""), parts.path) and (base_parts is None or base_parts.netloc == parts.netloc):
        page = unquote(parts.path.rsplit("/", 1)[1])  # articles at the site root: /Title
    else:
        return None
    title = (a.get("title") or page.replace("_", " ")).strip()
    if not title or _NAMESPACES.match(title) or _NAMESPACES.match(page.replace("_", " ")):
        return None
    return title, urlunsplit(parts._replace(fragment=""))


def _same_title(title: str, path: str) -> bool:
    """A link whose title attribute is its path's last segment: MediaWiki writes both from the page name."""
    last = unquote(path.rsplit("/", 1)[-1]).replace("_", " ").strip()
    last = re.sub(r"\.html?$", "", last)  # a saved mirror (HTTrack) names each article Title.html
    return bool(title) and last == title.strip()


def _character_from_link(a: Tag, base: str, image: str | None) -> Character | None:
    link = _article_link(a, base)
    if link is None:
        return None
    title, url = link
    name = _text(a) or title
    return Character(name, image, url, [title] if title != name else [])


_LIST_OF_PEOPLE = re.compile(r"\b(characters|cast|members|villagers|npcs)\b|登場人物|登场人物|人物列表|角色列表", re.I)


def is_member_character(title: str) -> bool:
    """A category member that may be a character's article: not a subpage ("Characters/Titles"), not a
    page of the wiki's own project namespace ("Touhou Wiki:Project Characters"), not a list of
    characters itself ("Minor Characters", "List of ...")."""
    prefix = title.split(":", 1)[0].casefold() if ":" in title else ""
    if "/" in title or "wiki" in prefix or title.casefold().startswith("list of"):
        return False
    return not _LIST_OF_PEOPLE.search(title)


def _is_category(soup: BeautifulSoup, title: str) -> bool:
    body_classes = (soup.body.get("class") or []) if soup.body else []
    return bool(
        "ns-14" in body_classes
        or title.lower().startswith("category:")
        or soup.find(id=["mw-pages", "mw-subcategories"]) is not None
        or soup.find(class_=["category-gallery", "category-page__members"]) is not None
    )
