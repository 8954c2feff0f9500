"""Lists of characters found by structure (pipeline.sources.encyclopedia.containers, tables, blocks):
tables with spans, several name columns, galleries, cards; the words that decide; not recognised."""

import pytest

from pipeline.sources.encyclopedia import PageShapeError, html_soup, parse_characters
from pipeline.sources.encyclopedia.containers import NOT_HERE, cue
from pipeline.sources.encyclopedia.tables import table_grid

URL = "https://sunny.fandom.com/wiki/List_of_characters"


def wiki_page(title: str, content: str) -> str:
    return (
        f'<html><head><meta name="generator" content="MediaWiki 1.39"></head><body class="mediawiki">'
        f'<h1 id="firstHeading">{title}</h1><div id="mw-content-text"><div class="mw-parser-output">'
        f"{content}</div></div></body></html>"
    )


def row(n: int, name: str, *rest: str) -> str:
    cells = "".join(f"<td>{x}</td>" for x in rest)
    return (
        f'<tr><td>{n}</td><td><img src="/images/a/ab/{name}.png" width="60"></td>'
        f'<td><a href="/wiki/{name}" title="{name}">{name}</a></td>{cells}</tr>'
    )


def roster(*names: str, header: str = "Name", element: str = "Pyro") -> str:
    rows = "".join(row(i, n, f'<a href="/wiki/{element}" title="{element}">{element}</a>') for i, n in enumerate(names))
    return (
        f'<table class="article-table"><tr><th>#</th><th>Icon</th><th>{header}</th><th>Element</th></tr>{rows}</table>'
    )


def test_table_grid_expands_row_and_column_spans():
    table = html_soup(
        "<table><tr><th rowspan=2>A</th><th colspan=2>B</th></tr><tr><td>c</td><td>d</td></tr></table>"
    ).table
    assert [[cell.get_text() for cell in r] for r in table_grid(table)] == [["A", "B", "B"], ["A", "c", "d"]]


def test_a_roster_table_gives_names_and_portraits_not_its_element_column():
    legend = '<ul><li><a href="/wiki/Pyro" title="Pyro">Pyro</a></li><li><a href="/wiki/Hydro" title="Hydro">Hydro</a></li></ul>'
    found = parse_characters(wiki_page("Characters/List", legend + roster("Hana", "Kai", "Mio", "Ren")), URL)
    assert [c.name for c in found] == ["Hana", "Kai", "Mio", "Ren"]
    assert found[0].image_url == "https://sunny.fandom.com/images/a/ab/Hana.png"
    assert found[0].found_by == "table-column @ table.article-table #5, column 'Name'"


def test_one_table_per_section_is_read_as_one_list():
    tables = "<h2>Season 1</h2>" + roster("Hana", "Kai", "Mio") + "<h2>Season 2</h2>" + roster("Ren", "Sora", "Yui")
    assert len(parse_characters(wiki_page("List of characters", tables), URL)) == 6


def test_a_chain_of_names_across_a_row_is_read_whole():
    # Evolution-family tables: sprite | name | method, repeated along a row under one spanning header.
    def cell(name):
        return f'<td><img src="/images/a/ab/{name}.png" width="40"></td><td><a href="/wiki/{name}" title="{name}">{name}</a></td><td>Level 16</td>'

    rows = "".join(f"<tr>{cell(a)}{cell(b)}</tr>" for a, b in [("Hana", "Hanako"), ("Kai", "Kaito"), ("Mio", "Mion")])
    table = f'<table class="roundy"><tr><th colspan="6">Families</th></tr>{rows}</table>'
    found = parse_characters(wiki_page("List of characters by family", table), URL)
    assert sorted(c.name for c in found) == ["Hana", "Hanako", "Kai", "Kaito", "Mio", "Mion"]


def test_a_gallery_of_captioned_portraits():
    boxes = "".join(
        f'<li class="gallerybox"><div class="thumb"><img src="/images/a/ab/{n}.png" width="120"></div>'
        f'<div class="gallerytext"><p><a href="/wiki/{n}" title="{n}">{n}</a></p></div></li>'
        for n in ("Hana", "Kai", "Mio")
    )
    found = parse_characters(wiki_page("Villagers", f'<ul class="gallery mw-gallery-traditional">{boxes}</ul>'), URL)
    assert [(c.name, c.found_by.split(" @")[0]) for c in found] == [
        ("Hana", "gallery"),
        ("Kai", "gallery"),
        ("Mio", "gallery"),
    ]


def test_cue_words():
    assert cue("List of Sunny School characters") == 1 and cue("登场人物") == 1
    assert cue("Chapter 1") == -1 and cue("List of Volumes") == -1 and cue("Gem Grab") == 0
    assert cue("See also") == NOT_HERE and cue("Related characters") == NOT_HERE


@pytest.mark.parametrize(
    "title, content",
    [
        ("Chapter 12", roster("Hana", "Kai", "Mio", "Ren", "Sora")),  # the page is about a chapter
        ("Weapons", roster("Sword", "Bow", "Spear", "Axe", "Staff")),  # a list of things
        ("Gem Grab", roster("Hana", "Kai", "Mio", header="Brawlers")),  # no word says characters
    ],
)
def test_lists_that_are_not_an_albums_characters_are_not_recognised(title, content):
    with pytest.raises(PageShapeError, match="page shape not recognised"):
        parse_characters(wiki_page(title, content), URL)


def guide_page(title: str, names: list[str]) -> str:
    cards = "".join(
        f'<a href="/game/character/{n.lower()}/" class="card"><div><img src="/img/{n}.png" alt="{n}"></div>'
        f'<div class="font-bold">{n}</div><div>Pyro | DPS</div><div><strong>Role:</strong> Support</div></a>'
        for n in names
    )
    return (
        f"<html><head><title>{title} | Game Guide</title></head><body><nav><a href='/'>Home</a></nav>"
        f'<main><h1>Some Game</h1><div class="grid">{cards}</div></main></body></html>'
    )


def test_a_fan_site_grid_of_character_cards():
    # No wiki markup: a grid of cards, each a portrait and a link to the character's page.
    page = guide_page("Characters", ["Hana", "Kai", "Mio", "Ren"])
    found = parse_characters(page, "https://guide.example.org/game/character/")
    assert [(c.name, c.image_url, c.source_url) for c in found][0] == (
        "Hana",
        "https://guide.example.org/img/Hana.png",
        "https://guide.example.org/game/character/hana/",
    )
    assert len(found) == 4 and found[0].found_by.startswith("cards @ 4 a cards")


def test_a_fan_site_grid_of_anything_else_is_not_recognised():
    for title in ("Weapons", "Latest news"):
        with pytest.raises(PageShapeError, match="no grid of linked portraits under words that say characters"):
            parse_characters(guide_page(title, ["Sword", "Bow", "Spear", "Axe"]), "https://guide.example.org/w/")


def test_a_cast_table_reads_the_character_column_never_the_actors():
    rows = "".join(
        f'<tr><td><a href="/wiki/{a}" title="{a}">{a}</a></td><td><a href="/wiki/{c1}" title="{c1}">{c1}</a></td>'
        f"<td>{c2}</td></tr>"
        for a, c1, c2 in [
            ("Dan_C", "Homer", "Grampa"),
            ("Julie_K", "Marge", "Patty, Selma"),
            ("Nancy_C", "Bart", "Various"),
        ]
    )
    table = f'<table class="wikitable"><tr><th>Actor</th><th colspan="2">Character(s)</th></tr>{rows}</table>'
    found = parse_characters(wiki_page("List of cast members", table), URL)
    assert [c.name for c in found] == ["Homer", "Grampa", "Marge", "Patty", "Selma", "Bart"]


def test_a_cast_section_names_the_character_after_the_actor():
    section = (
        '<h2><span class="mw-headline" id="Cast">Cast</span></h2><ul>'
        '<li><a href="/wiki/Gerald_Mohr" title="Gerald Mohr">Gerald Mohr</a> - <a href="/wiki/Mister_Fantastic" '
        'title="Mister Fantastic">Mister Fantastic</a>/Reed Richards</li>'
        "<li>Joseph Sirola as Doctor Doom</li>"
        '<li><a href="/wiki/Paul_Frees" title="Paul Frees">Paul Frees</a> - The Thing, Uatu, Additional Voices</li></ul>'
    )
    found = parse_characters(wiki_page("The Fantastic Four (TV series)", section), URL + "#Cast")
    assert [c.name for c in found] == ["Mister Fantastic", "Doctor Doom", "The Thing", "Uatu"]
    assert found[0].source_url == "https://sunny.fandom.com/wiki/Mister_Fantastic"


def test_category_members_that_are_no_characters():
    from pipeline.sources.encyclopedia.mediawiki_markup import is_member_character

    assert is_member_character("Reimu Hakurei") and is_member_character("Chess")
    for title in ("Characters/Titles", "Touhou Wiki:Project Characters", "Minor Characters", "List of villains"):
        assert not is_member_character(title)
