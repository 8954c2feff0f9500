"""Real saved pages (tests/fixtures/pages, from the parser corpus's development split) against the
answer keys written by reading them (benchmarks/parser_corpus/keys), and what happens to a real page
whose list of characters is taken away."""

import gzip
import json
from pathlib import Path

import pytest
from bs4 import BeautifulSoup

from pipeline.evaluate.page_keys import score_page
from pipeline.sources.encyclopedia import PageShapeError
from pipeline.sources.parse import parse_page

ROOT = Path(__file__).resolve().parents[3]
PAGES = ROOT / "tests" / "fixtures" / "pages"
CORPUS = ROOT / "benchmarks" / "parser_corpus"
MANIFEST = {e["id"]: e for f in sorted((CORPUS / "manifest").glob("*.json")) for e in json.loads(f.read_text())}
PAGE_IDS = sorted(p.name.removesuffix(".html.gz") for p in PAGES.glob("*.html.gz"))


def page(page_id: str) -> tuple[str, str]:
    """(text, URL it was saved from)."""
    return gzip.decompress((PAGES / f"{page_id}.html.gz").read_bytes()).decode("utf-8"), MANIFEST[page_id]["page_url"]


def parsed_or_none(text: str, url: str) -> list[dict] | None:
    try:
        return parse_page(text, url)
    except PageShapeError:
        return None


def test_the_fixtures_are_development_pages_with_keys():
    split = json.loads((CORPUS / "split.json").read_text())["pages"]
    assert PAGE_IDS and all(split[i] == "dev" for i in PAGE_IDS)  # held-out pages are never fixtures
    assert all((CORPUS / "keys" / f"{i}.json").exists() for i in PAGE_IDS)


@pytest.mark.parametrize("page_id", PAGE_IDS)
def test_fixture_page_against_its_key(page_id):
    key = json.loads((CORPUS / "keys" / f"{page_id}.json").read_text())
    score = score_page(page_id, key, parsed_or_none(*page(page_id)))
    if key["expect"] == "not_recognised":
        assert score.refused, f"{page_id} lists no characters but gave {score.found} names"
        return
    assert not score.refused
    assert score.right / score.key_count >= 0.9, score.missed
    assert score.right / score.found >= 0.95, score.wrong_names
    assert score.image_right == score.right  # these pages show no pictures: none made up


def test_names_keep_the_rule_and_container_they_came_from():
    records = parse_page(*page("wiki-legion-of-super-heroes-members-render-2014"))
    assert {r["found_by"].split(" #")[0] for r in records} == {"table-column @ table.wikitable"}
    assert all(r["found_by"].endswith("column 'Character'") for r in records)


@pytest.mark.parametrize(
    "page_id", ["wiki-legion-of-super-heroes-members-render-2014", "wiki-hiv-positive-tv-characters-render-2014"]
)
def test_a_page_without_its_character_tables_is_not_recognised(page_id):
    # What remains (notes, references, a "Related characters" list, prose) is not read as the list.
    text, url = page(page_id)
    soup = BeautifulSoup(text, "lxml")
    for table in soup.select("table.wikitable"):
        table.decompose()
    with pytest.raises(PageShapeError, match="no table, gallery or list on it reads as a list of characters"):
        parse_page(str(soup), url)
