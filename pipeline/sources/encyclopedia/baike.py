"""Baidu Baike album pages -> characters, read from the role module (角色介绍 / 主要角色)."""

from __future__ import annotations

import re
from collections import Counter

from bs4 import BeautifulSoup, Tag

from pipeline.sources.encyclopedia.images import _without_fragment, absolute_url, image_url
from pipeline.sources.encyclopedia.page import Character, PageShapeError, _Collected, _text

_ROLE_NAME = re.compile(r"role[-_]?name", re.I)
_ROLE_ROOT = re.compile(r"role[-_]?(introduction|list)|lemmaWgt-roleIntroduction", re.I)
_PICTURE_CLASS = re.compile(r"pic|img|image|avatar|photo", re.I)
_VOICE = re.compile(r"配音|声优|聲優|CV|cv[:：]")


def _has_class(tag: Tag, pattern: re.Pattern) -> bool:
    return any(pattern.search(c) for c in (tag.get("class") or []))


def _parse_baike(soup: BeautifulSoup, base: str) -> list[Character]:
    # Module roots, not the items inside them (classic items are `li.roleIntroduction-item`).
    roots = soup.find_all(
        lambda t: any(_ROLE_ROOT.search(c) and "item" not in c.lower() for c in (t.get("class") or []))
    )
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
        source = (
            absolute_url(link["href"], base) if link is not None and link.get("href") else None
        ) or _without_fragment(base)
        if name:
            out.add(Character(name, image_url(img, base), source, aliases, found_by=f"baike-role @ {el.name}"))
    return out.result()


def _role_item(name: Tag, held: Counter, root_ids: set[int]) -> Tag:
    """The largest ancestor of a role name that holds no other role name and is not the module."""
    item = name
    while True:
        parent = item.parent
        if (
            parent is None
            or parent.name in ("body", "html", "[document]")
            or id(parent) in root_ids
            or held[id(parent)] > 1
        ):
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
