"""Scoring a parsed page against its answer key (pipeline.evaluate.page_keys)."""

from pipeline.evaluate.page_keys import image_identity, score_page, summarise

KEY = {
    "expect": "characters",
    "characters": [
        {"name": "Hana Aoki", "also": ["Hana"], "image_url": "https://a.wikia.nocookie.net/s/images/a/ab/Hana.png"},
        {"name": "Aegon Targaryen", "also": ["Aegon Targaryen (son of Aenys I)"], "image_url": None},
        {"name": "Aegon Targaryen", "also": ["Aegon Targaryen (son of Jaehaerys I)"], "image_url": None},
    ],
}


def test_the_same_file_in_any_size_is_the_same_image():
    assert image_identity("https://upload.wikimedia.org/wikipedia/en/thumb/a/ab/Hana_Aoki.png/120px-Hana_Aoki.png") == (
        image_identity("https://upload.wikimedia.org/wikipedia/en/a/ab/Hana%20Aoki.png")
    )
    fandom = "https://static.wikia.nocookie.net/s/images/a/ab/Hana.png/revision/latest/scale-to-width-down/80?cb=1"
    assert image_identity(fandom) == "hana.png" and image_identity(None) is None


def test_names_spellings_namesakes_and_wrong_names():
    parsed = [
        {"name": "HANA", "image_url": "https://a.wikia.nocookie.net/s/images/a/ab/Hana.png/revision/latest"},
        {"name": "Aegon Targaryen (son of Jaehaerys I)", "aliases": ["Aegon Targaryen"], "image_url": None},
        {"name": "Element: Pyro", "image_url": None},
    ]
    score = score_page("p", KEY, parsed)
    assert (score.key_count, score.found, score.right, score.image_right) == (3, 3, 2, 2)
    assert score.wrong_names == ["Element: Pyro"] and score.missed == ["Aegon Targaryen"]


def test_a_refused_negative_and_summaries():
    negative = score_page("n", {"expect": "not_recognised"}, None)
    kept = score_page("k", {"expect": "not_recognised"}, [{"name": "Chapter 2"}])
    figures = summarise([score_page("p", KEY, [{"name": "Hana"}]), negative, kept])
    assert negative.refused and figures["negatives_not_refused"] == ["k"] and figures["pages_over_wrong_limit"] == ["k"]
    assert figures["recall"] == 1 / 3 and figures["precision"] == 1 / 2


def test_search_results_compare_decoded_baidu_urls():
    key = {
        "expect": "results",
        "results": ["ippr_z2C$qAzdH3FAzdH3Fooo_z&e3Bvoq_z&e3Bv54AzdH3FojtxtgAzdH3F8lb8l0_z&e3Bip4s"],
    }
    score = score_page("b", key, [{"image_url": "http://www.cwq.com/weixin/198197.html"}])
    assert score.right == 1
