"""One entry per character, whatever the sources call it (pipeline.web_crawl.CharacterBook)."""

from pipeline.web_crawl import CharacterBook, name_key


def test_names_differing_in_case_spacing_or_width_are_one_character():
    assert name_key("  Rick   SANCHEZ ") == name_key("rick sanchez") == name_key("Ｒｉｃｋ Ｓａｎｃｈｅｚ")
    book = CharacterBook()
    book.add("Rick Sanchez", [], ["https://wiki/rick.png"], "https://wiki/Rick_Sanchez", "encyclopedia")
    assert book.add("rick  sanchez", [], ["refs/rick.png"], "albums-file", "albums_file") == "Rick Sanchez"
    entry = book.entries["Rick Sanchez"]
    assert list(book.entries) == ["Rick Sanchez"] and book.merged == 1
    assert entry["images"] == ["https://wiki/rick.png", "refs/rick.png"] and entry["aliases"] == []
    assert entry["origin"] == "encyclopedia"  # where it was first found


def test_an_albums_file_name_joins_the_one_wiki_character_it_is_an_alias_of():
    book = CharacterBook()
    book.add("Rick Sanchez", ["Rick", "Grandpa Rick"], [], "https://wiki/Rick_Sanchez", "encyclopedia")
    book.add("Morty Smith", ["Morty"], [], "https://wiki/Morty_Smith", "encyclopedia")
    assert book.add("Rick", [], ["refs/rick.png"], "albums-file", "albums_file") == "Rick Sanchez"
    assert book.entries["Rick Sanchez"]["images"] == ["refs/rick.png"]
    assert sorted(book.entries) == ["Morty Smith", "Rick Sanchez"]


def test_a_shared_nickname_never_merges_characters():
    book = CharacterBook()
    book.add("Rick Sanchez", ["Rick"], [], "https://wiki/Rick_Sanchez", "encyclopedia")
    book.add("Rick Prime", ["Rick"], [], "https://wiki/Rick_Prime", "encyclopedia")  # wiki entries: kept apart
    assert sorted(book.entries) == ["Rick Prime", "Rick Sanchez"]
    # "Rick" from the albums file is ambiguous now: it becomes a character of its own
    assert book.add("Rick", [], ["refs/rick.png"], "albums-file", "albums_file") == "Rick"
    assert sorted(book.entries) == ["Rick", "Rick Prime", "Rick Sanchez"] and book.merged == 0
