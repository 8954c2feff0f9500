"""A container of a page that may list characters, with the evidence for it, and the words that
say what a page, a heading or a table header is about (see containers.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from bs4 import Tag

from pipeline.sources.encyclopedia.mediawiki_markup import _BOILERPLATE
from pipeline.sources.encyclopedia.page import Character

# Header words that name the column of names; words that say a page or section lists characters;
# words that say it lists something else (episodes, items, places ...).
ACTOR_HEADER = re.compile(
    r"\b(actors?|actress(es)?|voiced by|voice actors?|voices?|cast members?|performers?|played by|seiyuu)\b|"
    r"声優|配音|声优|キャスト|성우|озвуч",
    re.I,
)  # a column of the people who play the characters: never the names
NAME_HEADER = re.compile(r"^(names?|名字|名前|名称|名稱)$", re.I)  # names of anything: needs other evidence
CHARACTER_HEADER = re.compile(
    r"^((character|member|villager|hero|villain|role)s?( names?)?|角色(名)?|人物|キャラクター|登場人物|登场人物)$", re.I
)
CHARACTER_WORDS = re.compile(
    r"\b(characters?|cast|members?|villagers?|npcs?|heroes|villains|protagonists|antagonists|roster|"
    r"residents|inhabitants|crew|students|personnel)\b|角色|人物|登場人物|登场人物|キャラクター|成员|成員",
    re.I,
)
OTHER_WORDS = re.compile(
    r"\b(episodes?|chapters?|volumes?|issues?|comics?|seasons?|films?|movies?|songs?|discography|"
    r"weapons?|items?|equipment|locations?|places?|maps?|levels?|stages?|achievements?|quests?|missions?|"
    r"cards?|books?|novels?|releases?|products?|merchandise|modes?|skins?|gadgets?|moves?|spells?|"
    r"vehicles?|ships?|planets?|cities|towns?|countries|awards?|games?)\b|(\(episode\)|\(chapter\))|"
    r"[集话話章卷]$|道具|武器|地点|地點|剧集|劇集",
    re.I,
)
NOT_A_NAME = re.compile(r"\b(others?|various|additional|uncredited|one-time|minor|etc)\b", re.I)  # "Various"
LIST_PAGE = re.compile(r"^(lists? of|liste (der|des|de)|lista de|elenco|список)\b|(一覧|一览|列表|列表)$", re.I)
MIN_ITEMS = 3


NOT_HERE = -2  # a section of references, related articles, names in other languages ...


def cue(text: str) -> int:
    """+1 when the words say characters, -1 when they say something else, NOT_HERE for a section
    that never holds the page's list, 0 when they say neither."""
    if _BOILERPLATE.match(text.strip()) or re.match(r"(related|see also)\b", text.strip(), re.I):
        return NOT_HERE  # "Related characters" points elsewhere: it is not the page's list
    if CHARACTER_WORDS.search(text):
        return 1
    return -1 if OTHER_WORDS.search(text) else 0


@dataclass
class Candidate:
    rule: str  # table-column | gallery | link-list | cards | headings
    where: str  # the container, readable: 'table.roundy #3, column "Pokémon"'
    signature: tuple  # same structure elsewhere on the page = a sibling
    characters: list[Character]
    linked: float  # share of items whose name links to an article
    distinct: float  # share of distinct link targets among the linked ones
    pictured: float  # share of items with a picture of their own
    header_cue: bool  # the header of the names says "Character" (or Role, 角色 ...)
    heading: str  # the nearest heading above the container
    position: int  # document order
    header: str = ""  # a table's header over the names ("Name", "Character", "" when none)

    @classmethod
    def of_items(
        cls,
        rule: str,
        where: str,
        signature: tuple,
        characters: list[Character],
        items: int,
        targets: int,
        pictured: int,
        heading: str,
        position: int,
    ) -> Candidate:
        """A container of `items` blocks whose `characters` (one per named block) link to `targets`
        distinct articles, `pictured` of them with a picture."""
        n = len(characters)
        return cls(rule, where, signature, characters, n / items, targets / n, pictured / n, False, heading, position)

    @property
    def quality(self) -> float:
        """How list-of-characters-like the structure is, 0..1."""
        return self.linked * self.distinct * (0.7 + 0.3 * self.pictured)


def sibling_groups(parent: Tag) -> dict[tuple, list[Tag]]:
    """The parent's child elements grouped by shape (tag and class): a run of cards is one group."""
    groups: dict[tuple, list[Tag]] = {}
    for child in parent.find_all(True, recursive=False):
        groups.setdefault((child.name, tuple(child.get("class") or ())), []).append(child)
    return groups


def header_words(text: str) -> str:
    """A header cell's words as the patterns read them: "Character(s)" -> "Characters", no footnote marks."""
    text = re.sub(r"\(s\)", "s", text)
    return " ".join(re.sub(r"\[[^\]]*\]|[*†‡:]", " ", text).split())


def describe(tag: Tag, position: int) -> str:
    classes = ".".join((tag.get("class") or [])[:2])
    return f"{tag.name}{'.' + classes if classes else ''} #{position}"
