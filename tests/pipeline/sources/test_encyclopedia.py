"""Encyclopedia parsers: real saved pages from ../shared (never copied here) and small hand-written
pages for the shapes no fixture covers (Wikipedia character lists, Fandom UCP, Baike)."""

from __future__ import annotations

import pytest
from bs4 import BeautifulSoup

from pipeline.sources.encyclopedia import (
    Character,
    PageShapeError,
    detect_site,
    full_size_url,
    image_url,
    next_page_url,
    parse_characters,
)
from tests.conftest import SHARED

HTML = SHARED / "fixtures" / "html"
WIKIA_URL = "http://rickandmorty.wikia.com/wiki/Category:Characters"
ROCKET_URL = "https://bulbapedia.bulbagarden.net/wiki/Team_Rocket"


def _fixture(name: str) -> str:
    path = HTML / name
    if not path.is_file():
        pytest.skip(f"shared fixture missing: {path}")
    return path.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def wikia() -> list[Character]:
    return parse_characters(_fixture("wikia_rick_and_morty_category_characters_2016.html"), WIKIA_URL)


@pytest.fixture(scope="module")
def rocket_html() -> str:
    return _fixture("bulbapedia_team_rocket_2026.html")


# --------------------------------------------------------------------------- Wikia category (2016 Oasis)


@pytest.mark.shared_data
def test_wikia_category_gallery_first_then_listing(wikia):
    # 8 gallery items (the wiki's most visited pages, with images), then the 200 names of the
    # listing page; "Unity" is in the gallery but on the listing's second page, hence 201.
    assert len(wikia) == 201
    assert [c.name for c in wikia[:8]] == [
        "Rick Sanchez",
        "Mr. Poopybutthole",
        "Mr. Meeseeks",
        "Morty Smith",
        "Birdperson",
        "Krombopulos Michael",
        "Unity",
        "Evil Morty",
    ]
    assert [c.name for c in wikia[8:13]] == [
        "Abradolf Lincler",
        "Albert Einstein",
        "Alexander",
        "Alien Morty",
        "Alien Parasites",
    ]
    assert [c.name for c in wikia[-3:]] == ["Traflorkians", "Trunk People", "Two Guys with Handlebar Mustaches"]
    names = {c.name for c in wikia}
    assert {
        "Beth Smith (C-137)",
        "Beth's Mytholog",
        "Mr. Goldenfold",
        "Squanchy",
        "Rick Sanchez (Rick and Morty in: Adventure to an Alternate Universe!)",
    } <= names
    # Subcategories and the pagination link are not characters.
    assert not any(n.startswith("Category:") or n == "Characters" for n in names)


@pytest.mark.shared_data
def test_wikia_gallery_images_are_originals(wikia):
    by_name = {c.name: c for c in wikia}
    assert sum(1 for c in wikia if c.image_url) == 8
    rick = by_name["Rick Sanchez"]
    # .../revision/latest/window-crop/width/130/...?cb=... -> .../revision/latest?cb=...
    assert rick.image_url == (
        "http://vignette3.wikia.nocookie.net/rickandmorty/images/a/a6/"
        "Rick_Sanchez.png/revision/latest?cb=20160923150728"
    )
    assert rick.source_url == "http://rickandmorty.wikia.com/wiki/Rick_Sanchez"
    assert rick.aliases == []
    assert by_name["Morty Smith"].image_url == (
        "http://vignette1.wikia.nocookie.net/rickandmorty/images/3/36/Morty_Interested_S1E11.JPG"
        "/revision/latest?cb=20150908101833"
    )
    assert by_name["Evil Morty"].image_url == (
        "http://vignette2.wikia.nocookie.net/rickandmorty/images/5/5a/Evil_Morty_Close-Up.png"
        "/revision/latest?cb=20140409151750"
    )
    beth = by_name["Beth's Mytholog"]
    assert beth.image_url is None
    assert beth.source_url == "http://rickandmorty.wikia.com/wiki/Beth%27s_Mytholog"


@pytest.mark.shared_data
def test_wikia_base_comes_from_canonical_link_without_page_url():
    chars = parse_characters(_fixture("wikia_rick_and_morty_category_characters_2016.html"), "")
    assert chars[0].source_url == "http://rickandmorty.wikia.com/wiki/Rick_Sanchez"


# --------------------------------------------------------------------------- Bulbapedia


@pytest.mark.shared_data
def test_bulbapedia_character_page_infobox():
    chars = parse_characters(
        _fixture("bulbapedia_character_ghetsis_2026.html"), "https://bulbapedia.bulbagarden.net/wiki/Ghetsis"
    )
    # The infobox img is a 200px thumb whose srcset's 2x candidate is the original file.
    assert chars == [
        Character(
            name="Ghetsis",
            image_url="https://archives.bulbagarden.net/media/upload/2/27/Black_2_White_2_Ghetsis.png",
            source_url="https://bulbapedia.bulbagarden.net/wiki/Ghetsis",
            aliases=["Ghetsis Harmonia Gropius", "ゲーチス・ハルモニア・グロピウス"],
        )
    ]


@pytest.mark.shared_data
def test_bulbapedia_in_animation_section_lists_the_trio(rocket_html):
    # The section's prose links characters, places and episodes alike; its one structured
    # naming of characters is the figure captioned "Jessie, James, and Meowth". That picture is
    # a group shot, so nobody gets it as their typical image.
    expected = [
        Character("Jessie", None, "https://bulbapedia.bulbagarden.net/wiki/Jessie", []),
        Character("James", None, "https://bulbapedia.bulbagarden.net/wiki/James", []),
        Character(
            "Meowth", None, "https://bulbapedia.bulbagarden.net/wiki/Meowth_(Team_Rocket)", ["Meowth (Team Rocket)"]
        ),
    ]
    assert parse_characters(rocket_html, ROCKET_URL + "#In_animation") == expected
    assert parse_characters(rocket_html, ROCKET_URL, section="In animation") == expected


@pytest.mark.shared_data
def test_bulbapedia_organisation_page_without_section_is_not_a_character(rocket_html):
    # Its infobox (leader, region, admins) describes no person: not "Team Rocket" as a character.
    with pytest.raises(PageShapeError, match="^page shape not recognised: .*infobox describes no person"):
        parse_characters(rocket_html, ROCKET_URL)
    with pytest.raises(PageShapeError, match="^page shape not recognised: no section 'In space'"):
        parse_characters(rocket_html, ROCKET_URL, section="In space")


@pytest.mark.shared_data
def test_section_with_only_topic_captions_is_empty_not_an_error(rocket_html):
    # A recognised section that names nobody in structured form: [].
    assert parse_characters(rocket_html, ROCKET_URL + "#Pokémon_Origins") == []


# --------------------------------------------------------------------------- pages of other shapes


@pytest.mark.shared_data
def test_wikipedia_film_list_is_not_a_character_page():
    html = _fixture("wikipedia_list_of_films_featuring_time_loops_2024.html")
    assert detect_site(html, "") == "mediawiki"
    for kind in ("mediawiki", "auto"):
        with pytest.raises(PageShapeError, match="^page shape not recognised"):
            parse_characters(html, "https://en.wikipedia.org/wiki/List_of_films_featuring_time_loops", kind)


@pytest.mark.parametrize(
    "html",
    [
        "<html><body><p>Hello</p><img src='a.png'></body></html>",
        "",
        "<html><head><title>Blog</title></head><body><ul><li><b>Rick</b> – a man</li></ul></body></html>",
    ],
)
def test_random_html_raises(html):
    with pytest.raises(PageShapeError, match="^page shape not recognised"):
        parse_characters(html, "https://example.org/post")
    with pytest.raises(PageShapeError, match="^page shape not recognised"):
        parse_characters(html, "https://example.org/post", kind="mediawiki")


def test_baike_kind_on_a_wiki_page_raises():
    with pytest.raises(PageShapeError, match="^page shape not recognised: Baike page without a role module"):
        parse_characters(FANDOM_CATEGORY, "", kind="baike")


def test_unknown_kind_is_a_value_error():
    with pytest.raises(ValueError, match="kind must be one of"):
        parse_characters("<html></html>", "", kind="wikipedia")


# --------------------------------------------------------------------------- Wikipedia character lists


def _heading(level: int, ident: str, text: str, modern: bool) -> str:
    edit = (
        f'<span class="mw-editsection"><span class="mw-editsection-bracket">[</span>'
        f'<a href="/w/index.php?title=List_of_Sunny_School_characters&amp;action=edit&amp;section=1" '
        f'title="Edit section: {text}"><span>edit</span></a>'
        f'<span class="mw-editsection-bracket">]</span></span>'
    )
    if modern:  # Vector-2022, MediaWiki >= 1.42
        return f'<div class="mw-heading mw-heading{level}"><h{level} id="{ident}">{text}</h{level}>{edit}</div>'
    return f'<h{level}><span class="mw-headline" id="{ident}">{text}</span>{edit}</h{level}>'


def wikipedia_list(modern: bool = True) -> str:
    h = lambda level, ident, text: _heading(level, ident, text, modern)  # noqa: E731
    return f"""<!DOCTYPE html>
<html class="client-js vector-feature-language-in-header-enabled"><head><meta charset="UTF-8">
<title>List of Sunny School characters - Wikipedia</title>
<link rel="canonical" href="https://en.wikipedia.org/wiki/List_of_Sunny_School_characters"></head>
<body class="skin-vector skin-vector-2022 mediawiki ltr sitedir-ltr ns-0 ns-subject">
<h1 id="firstHeading" class="firstHeading mw-first-heading"><span class="mw-page-title-main">List of Sunny School characters</span></h1>
<div id="mw-content-text" class="mw-body-content"><div class="mw-content-ltr mw-parser-output" lang="en" dir="ltr">
<table class="infobox"><tr><td><img src="//upload.wikimedia.org/wikipedia/en/thumb/1/1a/Sunny_School_logo.png/250px-Sunny_School_logo.png" width="250" height="100"></td></tr></table>
<p>This is a list of characters of <i><a href="/wiki/Sunny_School" title="Sunny School">Sunny School</a></i>.</p>
<div id="toc" class="toc"><ul><li><b>Main characters</b> - 1</li></ul></div>
{h(2, "Main_characters", "Main characters")}
{h(3, "Hana_Aoki", "Hana Aoki")}
<div role="note" class="hatnote navigation-not-searchable">Main article: <a href="/wiki/Hana_Aoki" title="Hana Aoki">Hana Aoki</a></div>
<div role="note" class="hatnote navigation-not-searchable">See also: <a href="/wiki/Sunny_School_(season_1)" title="Sunny School (season 1)">Season 1</a></div>
<figure class="mw-default-size" typeof="mw:File/Thumb"><a href="/wiki/File:Hana_Aoki.png" class="mw-file-description"><img src="//upload.wikimedia.org/wikipedia/en/thumb/3/3c/Hana_Aoki.png/220px-Hana_Aoki.png" decoding="async" width="220" height="300" class="mw-file-element" srcset="//upload.wikimedia.org/wikipedia/en/thumb/3/3c/Hana_Aoki.png/330px-Hana_Aoki.png 1.5x, //upload.wikimedia.org/wikipedia/en/thumb/3/3c/Hana_Aoki.png/440px-Hana_Aoki.png 2x" data-file-width="600" data-file-height="818"></a><figcaption>Hana in the first season</figcaption></figure>
<p><b>Hana Aoki</b> is the main protagonist.<sup class="reference"><a href="#cite_note-1">[1]</a></sup></p>
{h(4, "Personality", "Personality")}
<p>Cheerful. <img src="//upload.wikimedia.org/wikipedia/commons/thumb/f/f0/Star.svg/16px-Star.svg.png" width="16" height="16"></p>
{h(3, "Kenji_Mori", "Kenji Mori")}
<figure typeof="mw:File/Thumb"><a href="/wiki/File:Kenji_Mori.svg" class="mw-file-description"><img src="//upload.wikimedia.org/wikipedia/en/thumb/4/4d/Kenji_Mori.svg/220px-Kenji_Mori.svg.png" width="220" height="220" class="mw-file-element"></a><figcaption>Kenji</figcaption></figure>
<p>Hana's classmate.</p>
{h(2, "The_Aoki_family", "The Aoki family")}
{h(3, "Mr._Aoki", "Mr. Aoki")}
<p>Hana's father.</p>
{h(2, "Recurring_characters", "Recurring characters")}
<dl><dt>Principal Tanaka (voiced by Ken Narita)</dt><dd>The head of the school.</dd>
<dt><a href="/wiki/Yuki_(Sunny_School)" title="Yuki (Sunny School)">Yuki</a> (voiced by Mao Ichi)</dt><dd>Hana's rival.</dd></dl>
<ul><li><b>Coach Ito</b> – the gym teacher.</li><li>A list item that is <b>not</b> a character.</li></ul>
<table class="wikitable"><tr><th>Character</th><th>Voiced by</th><th>Image</th></tr>
<tr><td><a href="/wiki/Rin_Sato" title="Rin Sato">Rin Sato</a></td><td>Aya Ito</td><td><img src="//upload.wikimedia.org/wikipedia/en/thumb/5/5e/Rin_Sato.jpg/100px-Rin_Sato.jpg" width="100" height="120"></td></tr>
<tr><td>Mika<sup class="reference"><a href="#cite_note-2">[2]</a></sup></td><td>Rie Kudo</td><td></td></tr></table>
{h(2, "See_also", "See also")}
<ul><li><b>Not A Character</b> – boilerplate section</li></ul>
{h(2, "References", "References")}
<div class="reflist"><ol class="references"><li><b>Ref</b> – x</li></ol></div>
<div class="navbox"><ul><li><b>Navbox Person</b> – x</li></ul></div>
</div></div></body></html>"""


LIST_URL = "https://en.wikipedia.org/wiki/List_of_Sunny_School_characters"
WIKIPEDIA_EXPECTED = [
    Character(
        "Hana Aoki",
        "https://upload.wikimedia.org/wikipedia/en/3/3c/Hana_Aoki.png",
        "https://en.wikipedia.org/wiki/Hana_Aoki",
        [],
    ),
    # An SVG original is kept as an 800px PNG rendering.
    Character(
        "Kenji Mori",
        "https://upload.wikimedia.org/wikipedia/en/thumb/4/4d/Kenji_Mori.svg/800px-Kenji_Mori.svg.png",
        LIST_URL + "#Kenji_Mori",
        [],
    ),
    Character("Mr. Aoki", None, LIST_URL + "#Mr._Aoki", []),
    Character("Principal Tanaka", None, LIST_URL, []),
    Character("Yuki", None, "https://en.wikipedia.org/wiki/Yuki_(Sunny_School)", ["Yuki (Sunny School)"]),
    Character("Coach Ito", None, LIST_URL, []),
    Character(
        "Rin Sato",
        "https://upload.wikimedia.org/wikipedia/en/5/5e/Rin_Sato.jpg",
        "https://en.wikipedia.org/wiki/Rin_Sato",
        [],
    ),
    Character("Mika", None, LIST_URL, []),
]


@pytest.mark.parametrize("modern", [True, False], ids=["vector2022-mw-heading", "mw-headline"])
def test_wikipedia_list_of_characters(modern):
    assert parse_characters(wikipedia_list(modern), LIST_URL) == WIKIPEDIA_EXPECTED
    # Without a page URL the canonical link is the base.
    assert parse_characters(wikipedia_list(modern), "", kind="mediawiki") == WIKIPEDIA_EXPECTED


def test_wikipedia_list_section_by_fragment():
    html = wikipedia_list()
    assert [c.name for c in parse_characters(html, LIST_URL + "#Recurring_characters")] == [
        "Principal Tanaka",
        "Yuki",
        "Coach Ito",
        "Rin Sato",
        "Mika",
    ]
    assert parse_characters(html, LIST_URL + "#Kenji_Mori") == [WIKIPEDIA_EXPECTED[1]]
    # A character's own sub-headings ("Personality") are aspects of them, not more characters.
    assert parse_characters(html, LIST_URL, section="Hana Aoki") == [WIKIPEDIA_EXPECTED[0]]
    assert [c.name for c in parse_characters(html, LIST_URL + "#Main_characters")] == ["Hana Aoki", "Kenji Mori"]
    # A fragment that names no heading is ignored (links often carry stray anchors).
    assert parse_characters(html, LIST_URL + "#cite_note-1") == WIKIPEDIA_EXPECTED


def test_character_list_without_entries_raises():
    html = wikipedia_list().split('<div id="mw-content-text"')[0] + (
        '<div id="mw-content-text"><div class="mw-parser-output"><p>Soon.</p></div></div></body></html>'
    )
    with pytest.raises(PageShapeError, match="no table, gallery or list on it reads as a list of characters"):
        parse_characters(html, LIST_URL)


# --------------------------------------------------------------------------- Fandom (UCP) pages

FANDOM_CATEGORY = """<!DOCTYPE html><html><head><meta name="generator" content="MediaWiki 1.39.7">
<link rel="canonical" href="https://sunnyschool.fandom.com/wiki/Category:Characters"></head>
<body class="mediawiki ltr sitedir-ltr ns-14 ns-subject skin-fandomdesktop">
<h1 id="firstHeading" class="page-header__title">Category:Characters</h1>
<div id="mw-content-text"><div class="category-page__members"><ul class="category-page__members-for-char">
<li class="category-page__member"><div class="category-page__member-left"><img src="data:image/gif;base64,R0lGODlhAQABAIABAAAAAP///yH5BAEAAAEALAAAAAABAAEAQAICTAEAOw%3D%3D" data-src="https://static.wikia.nocookie.net/sunnyschool/images/a/ab/Hana.png/revision/latest/smart/width/40/height/30?cb=20240101" class="category-page__member-thumbnail lazyload" alt="Hana Aoki"></div>
<a href="/wiki/Hana_Aoki" class="category-page__member-link" title="Hana Aoki">Hana Aoki</a></li>
<li class="category-page__member"><div class="category-page__member-left"><img src="data:image/gif;base64,R0lGODlhAQABAIABAAAAAP///yH5BAEAAAEALAAAAAABAAEAQAICTAEAOw%3D%3D" data-image-key="Kenji_Mori.png" data-image-name="Kenji Mori.png" class="category-page__member-thumbnail lazyload"></div>
<a href="/wiki/Kenji_Mori" class="category-page__member-link" title="Kenji Mori">Kenji Mori</a></li>
<li class="category-page__member"><div class="category-page__member-left"><svg class="wds-icon"></svg></div>
<a href="/wiki/Category:Teachers" class="category-page__member-link" title="Category:Teachers">Category:Teachers</a></li>
<li class="category-page__member"><a href="/wiki/Yuki" class="category-page__member-link" title="Yuki">Yuki</a></li>
<li class="category-page__member"><a href="/wiki/Template:Infobox_character" class="category-page__member-link" title="Template:Infobox character">Template:Infobox character</a></li>
</ul></div></div></body></html>"""


def test_fandom_category_lazy_images():
    assert parse_characters(FANDOM_CATEGORY, "https://sunnyschool.fandom.com/wiki/Category:Characters") == [
        Character(
            "Hana Aoki",
            "https://static.wikia.nocookie.net/sunnyschool/images/a/ab/Hana.png/revision/latest?cb=20240101",
            "https://sunnyschool.fandom.com/wiki/Hana_Aoki",
            [],
        ),
        # No URL at all, only the file's key: MediaWiki's Special:FilePath serves the original.
        Character(
            "Kenji Mori",
            "https://sunnyschool.fandom.com/wiki/Special:FilePath/Kenji_Mori.png",
            "https://sunnyschool.fandom.com/wiki/Kenji_Mori",
            [],
        ),
        Character("Yuki", None, "https://sunnyschool.fandom.com/wiki/Yuki", []),
    ]


def test_empty_category_is_an_empty_success():
    html = (
        '<html><body class="mediawiki ns-14"><h1 id="firstHeading">Category:Nobody</h1>'
        '<div id="mw-content-text"><p>This category currently contains no pages or media.</p></div></body></html>'
    )
    assert parse_characters(html, "https://x.fandom.com/wiki/Category:Nobody") == []


def test_fandom_portable_infobox_character_page():
    html = """<html><body class="mediawiki ns-0 skin-fandomdesktop">
<h1 id="firstHeading" class="page-header__title"><span class="mw-page-title-main">Hana Aoki</span></h1>
<div id="mw-content-text"><div class="mw-parser-output">
<aside class="portable-infobox pi-background pi-theme-wikia pi-layout-default">
<h2 class="pi-item pi-item-spacing pi-title" data-source="name">Hana Aoki</h2>
<figure class="pi-item pi-image" data-source="image"><a href="https://static.wikia.nocookie.net/sunnyschool/images/a/ab/Hana.png/revision/latest?cb=20240101" class="image image-thumbnail">
<img src="https://static.wikia.nocookie.net/sunnyschool/images/a/ab/Hana.png/revision/latest/scale-to-width-down/268?cb=20240101"
 srcset="https://static.wikia.nocookie.net/sunnyschool/images/a/ab/Hana.png/revision/latest/scale-to-width-down/268?cb=20240101 1x, https://static.wikia.nocookie.net/sunnyschool/images/a/ab/Hana.png/revision/latest/scale-to-width-down/536?cb=20240101 2x"
 class="pi-image-thumbnail" alt="" width="268" height="350"></a></figure>
<div class="pi-item pi-data" data-source="japanese"><h3 class="pi-data-label">Japanese</h3><div class="pi-data-value">青木花</div></div>
<div class="pi-item pi-data" data-source="gender"><h3 class="pi-data-label">Gender</h3><div class="pi-data-value">Female</div></div>
</aside><p>Hana is the protagonist.</p></div></div></body></html>"""
    url = "https://sunnyschool.fandom.com/wiki/Hana_Aoki"
    assert parse_characters(html, url) == [
        Character(
            "Hana Aoki",
            "https://static.wikia.nocookie.net/sunnyschool/images/a/ab/Hana.png/revision/latest?cb=20240101",
            url,
            [],
        )
    ]


# --------------------------------------------------------------------------- image URL rules


@pytest.mark.parametrize(
    "thumb, full",
    [
        (
            "https://upload.wikimedia.org/wikipedia/commons/thumb/a/ab/File.png/120px-File.png",
            "https://upload.wikimedia.org/wikipedia/commons/a/ab/File.png",
        ),
        (
            "https://upload.wikimedia.org/wikipedia/en/thumb/4/4d/Kenji_Mori.svg/220px-Kenji_Mori.svg.png",
            "https://upload.wikimedia.org/wikipedia/en/thumb/4/4d/Kenji_Mori.svg/800px-Kenji_Mori.svg.png",
        ),
        (
            "https://upload.wikimedia.org/wikipedia/commons/thumb/9/9c/Scan.tif/lossy-page1-120px-Scan.tif.jpg",
            "https://upload.wikimedia.org/wikipedia/commons/thumb/9/9c/Scan.tif/lossy-page1-800px-Scan.tif.jpg",
        ),
        (
            "https://archives.bulbagarden.net/media/upload/thumb/b/b2/Domino_and_Giovanni.png/250px-Domino_and_Giovanni.png",
            "https://archives.bulbagarden.net/media/upload/b/b2/Domino_and_Giovanni.png",
        ),
        (
            "https://static.wikia.nocookie.net/w/images/1/12/A.png/revision/latest/scale-to-width-down/60?cb=2021&path-prefix=de",
            "https://static.wikia.nocookie.net/w/images/1/12/A.png/revision/latest?cb=2021&path-prefix=de",
        ),
        (
            "https://vignette.wikia.nocookie.net/w/images/1/12/A.png/revision/latest/top-crop/width/360/height/450?cb=1",
            "https://vignette.wikia.nocookie.net/w/images/1/12/A.png/revision/latest?cb=1",
        ),
        (
            "https://bkimg.cdn.bcebos.com/pic/9f2f0708?x-bce-process=image/resize,m_lfit,w_268,limit_1",
            "https://bkimg.cdn.bcebos.com/pic/9f2f0708",
        ),
        ("https://example.org/images/a.jpg?w=120", "https://example.org/images/a.jpg?w=120"),
    ],
)
def test_full_size_url(thumb, full):
    assert full_size_url(thumb) == full


def _img(markup: str):
    return BeautifulSoup(markup, "lxml").find("img")


def test_image_url_srcset_lazy_and_relative():
    base = "http://wiki.example.org/wiki/Page"
    assert (
        image_url(_img('<img src="a.jpg" srcset="b.jpg 320w, c.jpg 1024w, d.jpg 640w">'), base)
        == "http://wiki.example.org/wiki/c.jpg"
    )
    assert (
        image_url(_img('<img src="/s/a.jpg" srcset="/s/b.jpg 1.5x, /s/c.jpg 2x">'), base)
        == "http://wiki.example.org/s/c.jpg"
    )
    assert (
        image_url(_img('<img src="data:image/gif;base64,R0lGOD" data-src="//cdn.example.org/x.png">'), base)
        == "http://cdn.example.org/x.png"
    )  # protocol-relative takes the page's scheme
    assert image_url(_img('<img src="//cdn.example.org/x.png">'), "") == "https://cdn.example.org/x.png"
    assert image_url(_img('<img src="data:image/gif;base64,R0lGOD">'), base) is None
    assert image_url(None, base) is None


# --------------------------------------------------------------------------- Baidu Baike

BAIKE_URL = "https://baike.baidu.com/item/%E6%99%B4%E7%A9%BA%E5%AD%A6%E5%9B%AD/123456"

BAIKE_MODERN = f"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>晴空学园（2024年日本动画）_百度百科</title>
<link rel="canonical" href="{BAIKE_URL}"></head>
<body><div id="root"><div class="lemmaTitleBox_abc12"><h1 class="lemmaTitle_Kp3aa J-lemma-title">晴空学园</h1></div>
<div class="J-lemma-content">
<div class="posterImg_Qr5tt"><img src="https://bkimg.cdn.bcebos.com/pic/aaaa?x-bce-process=image/resize,m_lfit,w_536" alt="海报"></div>
<div class="paraTitle_xYz01 level-1_Qq9mm" data-level="1"><h2 name="2">角色介绍</h2></div>
<div class="roleIntroduction_Rl2qd" data-module-type="roleIntroduction">
 <div class="roleList_Tg7pe">
  <div class="roleItem_Ab3cd">
   <div class="roleImg_Mn8op"><img src="https://bkimg.cdn.bcebos.com/pic/9f2f070828381f30e924b5d1a6014c086e06f0a3?x-bce-process=image/format,f_auto/resize,m_lfit,limit_1,h_200" alt="青木花"></div>
   <div class="roleInfo_Zz1xx"><div class="roleName_Hj4kl"><a href="/item/%E9%9D%92%E6%9C%A8%E8%8A%B1/654321" target="_blank">青木花（Hana Aoki）</a></div>
    <div class="roleVoice_Qw2er">配音：佐藤丽</div><div class="roleDesc_Ty6ui">本作主人公。<img src="https://baike.bdimg.com/icon/star.png" width="12"></div></div>
  </div>
  <div class="roleItem_Ab3cd">
   <div class="roleImg_Mn8op"><img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=" data-src="https://bkimg.cdn.bcebos.com/pic/b03533fa828ba61ea8d3fd9a4f34970a304e59c1?x-bce-process=image/resize,m_lfit,w_268,limit_1" alt="森健司"></div>
   <div class="roleInfo_Zz1xx"><div class="roleName_Hj4kl"><span>森健司（配音：铃木一郎）</span></div><div class="roleDesc_Ty6ui">花的同学。</div></div>
  </div>
  <div class="roleItem_Ab3cd">
   <div class="roleInfo_Zz1xx"><div class="roleName_Hj4kl"><span>田中校长</span></div></div>
  </div>
 </div>
</div></div></div></body></html>"""

BAIKE_CLASSIC = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>晴空学园_百度百科</title></head>
<body><div class="main-content">
<dl class="lemmaWgt-lemmaTitle"><dd class="lemmaWgt-lemmaTitle-title"><h1>晴空学园</h1></dd></dl>
<div class="lemma-summary" label-module="lemmaSummary"><div class="para">《晴空学园》是一部动画。</div></div>
<div class="para-title level-2" label-module="para-title"><h2 class="title-text"><span class="title-prefix">晴空学园</span>角色介绍</h2></div>
<div class="lemmaWgt-roleIntroduction">
 <div class="role-list"><ul>
  <li class="roleIntroduction-item">
   <div class="role-pic"><a class="image-link" href="/pic/x"><img src="https://gss0.bdstatic.com/-4o3dSag_xI4khGkpoWK1HF6hhy/baike/w%3D268/sign=abc/9f2f0708.jpg" alt=""></a></div>
   <dl class="role-info"><dt class="role-name"><span class="item-value">青木花</span></dt>
   <dd class="role-actor"><span class="item-key">配音</span><span class="item-value">佐藤丽</span></dd>
   <dd class="role-description">本作主人公。</dd></dl>
  </li>
  <li class="roleIntroduction-item">
   <div class="role-pic"><img src="//bkimg.cdn.bcebos.com/pic/b03533fa?x-bce-process=image/resize,m_lfit,w_220,limit_1"></div>
   <dl class="role-info"><dt class="role-name"><a href="/item/%E6%A3%AE%E5%81%A5%E5%8F%B8">森健司</a></dt></dl>
  </li>
 </ul></div>
</div></div></body></html>"""


def test_baike_modern_role_module():
    assert detect_site(BAIKE_MODERN, "") == "baike"
    assert parse_characters(BAIKE_MODERN, BAIKE_URL) == [
        Character(
            "青木花",
            "https://bkimg.cdn.bcebos.com/pic/9f2f070828381f30e924b5d1a6014c086e06f0a3",
            "https://baike.baidu.com/item/%E9%9D%92%E6%9C%A8%E8%8A%B1/654321",
            ["Hana Aoki"],
        ),
        # Lazy image; the voice actor in the parenthesis is not an alias.
        Character("森健司", "https://bkimg.cdn.bcebos.com/pic/b03533fa828ba61ea8d3fd9a4f34970a304e59c1", BAIKE_URL, []),
        Character("田中校长", None, BAIKE_URL, []),
    ]


def test_baike_classic_role_list():
    assert detect_site(BAIKE_CLASSIC, "") == "baike"
    assert parse_characters(BAIKE_CLASSIC, BAIKE_URL) == [
        Character(
            "青木花",
            "https://gss0.bdstatic.com/-4o3dSag_xI4khGkpoWK1HF6hhy/baike/w%3D268/sign=abc/9f2f0708.jpg",
            BAIKE_URL,
            [],
        ),
        Character(
            "森健司",
            "https://bkimg.cdn.bcebos.com/pic/b03533fa",
            "https://baike.baidu.com/item/%E6%A3%AE%E5%81%A5%E5%8F%B8",
            [],
        ),
    ]


def test_baike_empty_module_and_missing_module():
    empty = (
        BAIKE_CLASSIC.split('<div class="lemmaWgt-roleIntroduction">')[0]
        + '<div class="lemmaWgt-roleIntroduction"><div class="role-list"><ul></ul></div></div></div></body></html>'
    )
    assert parse_characters(empty, BAIKE_URL, kind="baike") == []
    none = BAIKE_CLASSIC.split('<div class="lemmaWgt-roleIntroduction">')[0] + "</div></body></html>"
    with pytest.raises(PageShapeError, match="^page shape not recognised: Baike page without a role module"):
        parse_characters(none, BAIKE_URL)


@pytest.mark.shared_data
def test_search_page_is_not_an_encyclopedia_page():
    html = _fixture("baidu_image_search_python_2020.html")
    with pytest.raises(PageShapeError, match="^page shape not recognised: a baidu search page"):
        parse_characters(html, "")


@pytest.mark.shared_data
def test_next_page_of_a_category_listing():
    html = _fixture("wikia_rick_and_morty_category_characters_2016.html")  # "200 pages ... out of 206 total"
    assert (
        next_page_url(html, WIKIA_URL) == "http://rickandmorty.wikia.com/wiki/Category:Characters?pagefrom=Uncle+Steve"
    )
    last = html.replace(
        '(<a href="/wiki/Category:Characters?pagefrom=Uncle+Steve#mw-pages" title="Category:Characters">next 200</a>)',
        "(next 200)",
    )
    assert last != html and next_page_url(last, WIKIA_URL) is None
    # the previous page is never taken for the next one
    previous_only = last.replace(
        "(previous 200)", '(<a href="/wiki/Category:Characters?pageuntil=A#mw-pages">previous 200</a>)'
    )
    assert next_page_url(previous_only, WIKIA_URL) is None
    assert (
        next_page_url(
            _fixture("bulbapedia_character_ghetsis_2026.html"),
            "https://bulbapedia.bulbagarden.net/wiki/Ghetsis_(anime)",
        )
        is None
    )


def test_next_page_of_a_fandom_ucp_category():
    page = (
        '<html><body class="mediawiki ns-14"><h1 class="page-header__title">Category:Characters</h1>'
        '<ul class="category-page__members-for-char"><li class="category-page__member">'
        '<a class="category-page__member-link" href="/wiki/Finn" title="Finn">Finn</a></li></ul>'
        '<div class="category-page__pagination"><a class="category-page__pagination-next wds-button" '
        'href="https://adventuretime.fandom.com/wiki/Category:Characters?from=Ice+King">Next</a></div></body></html>'
    )
    assert (
        next_page_url(page, "https://adventuretime.fandom.com/wiki/Category:Characters")
        == "https://adventuretime.fandom.com/wiki/Category:Characters?from=Ice+King"
    )
