import os
from pathlib import Path

import pytest

from pipeline.sources.library import (
    AlbumsFileError,
    discover_albums,
    file_problem,
    load_albums_file,
    safe_name,
    select_episodes,
)


def make_library(root, episodes=3):
    (root / "a1" / "episodes").mkdir(parents=True)
    (root / "a1" / "stills").mkdir(parents=True)
    for i in range(episodes):
        (root / "a1" / "episodes" / f"ep{i:02d}.mp4").write_bytes(b"x")
    (root / "a1" / "stills" / "s.jpg").write_bytes(b"x")
    return root


def test_yaml_albums_file(tmp_path):
    make_library(tmp_path)
    (tmp_path / "albums.yaml").write_text(
        "albums:\n  - {id: a1, name: Album One, region: JP, episodes: a1/episodes, stills: a1/stills}\n"
    )
    [album] = discover_albums(tmp_path)
    assert (album.album_id, album.name, album.region) == ("a1", "Album One", "JP")
    assert [p.name for p in album.episodes()] == ["ep00.mp4", "ep01.mp4", "ep02.mp4"]
    assert [p.name for p in album.stills()] == ["s.jpg"]


def test_csv_albums_file(tmp_path):
    make_library(tmp_path)
    (tmp_path / "list.csv").write_text("id,name,region,episodes,stills\na1,Album One,CN,a1/episodes,\n")
    [album] = load_albums_file(tmp_path / "list.csv")
    assert album.stills_dir is None and len(album.episodes()) == 3


@pytest.mark.parametrize(
    "body, message",
    [
        ("albums:\n  - {name: No Id, stills: a1/stills}\n", "`id` must be"),
        ("albums:\n  - {id: a1, stills: a1/stills}\n", "`name` is required"),
        ("albums:\n  - {id: a1, name: A, stills: nowhere}\n", "folder does not exist"),
        ("albums:\n  - {id: a1, name: A}\n", "at least one of"),
        ("albums:\n  - {id: a1, name: A, search: [altavista], characters: [X]}\n", "unknown search engine"),
        ("albums:\n  - {id: a1, name: A, search: [bing]}\n", "needs characters"),
        ("albums:\n  - {id: a1, name: A, encyclopedia: [not-a-url]}\n", "http\\(s\\) URLs"),
        (
            "albums:\n  - {id: a1, name: A, stills: a1/stills}\n  - {id: a1, name: B, stills: a1/stills}\n",
            "duplicate id",
        ),
        ("albums:\n  - {id: a1, name: A, stills: a1/stills, colour: red}\n", "unknown field"),
        ("albums: [unclosed\n", "cannot parse"),
        ("just text\n", "`albums:` list"),
    ],
)
def test_albums_file_errors_name_the_entry_and_field(tmp_path, body, message):
    make_library(tmp_path)
    (tmp_path / "albums.yaml").write_text(body)
    with pytest.raises(AlbumsFileError, match=message):
        discover_albums(tmp_path)


def test_plain_folder_is_one_album_of_stills_and_videos(tmp_path):
    (tmp_path / "x.jpg").write_bytes(b"x")
    (tmp_path / "clip.webm").write_bytes(b"x")
    [album] = discover_albums(tmp_path)
    assert [p.name for p in album.stills()] == ["x.jpg"]
    assert [p.name for p in album.episodes()] == ["clip.webm"]


def test_episode_sampling_is_seeded_and_deterministic():
    paths = [f"ep{i:02d}.mp4" for i in range(25)]
    first = select_episodes("album", paths, set(), count=10, seed=7)
    again = select_episodes("album", list(reversed(paths)), set(), count=10, seed=7)
    assert first == again
    chosen = {p for p, (sel, _) in first.items() if sel}
    assert len(chosen) == 10
    other_seed = {p for p, (sel, _) in select_episodes("album", paths, set(), count=10, seed=8).items() if sel}
    assert other_seed != chosen


def test_recorded_choice_is_kept_and_new_episodes_are_noticed():
    paths = [f"ep{i:02d}.mp4" for i in range(12)]
    chosen = {p for p, (sel, _) in select_episodes("a", paths, set(), 10, 0).items() if sel}
    # A new episode arrives: the recorded ten stay, the new one is ranked but not picked.
    after = select_episodes("a", paths + ["ep99.mp4"], chosen, 10, 0)
    assert {p for p, (sel, _) in after.items() if sel} == chosen
    assert after["ep99.mp4"][0] is False
    # With room left (fewer than ten episodes) a new episode is picked.
    few = select_episodes("a", ["e1.mp4", "e2.mp4"], {"e1.mp4", "e2.mp4"}, 10, 0)
    grown = select_episodes("a", ["e1.mp4", "e2.mp4", "e3.mp4"], {"e1.mp4", "e2.mp4"}, 10, 0)
    assert all(sel for sel, _ in few.values()) and grown["e3.mp4"][0] is True


def test_every_file_in_an_episodes_folder_is_an_episode(tmp_path):
    make_library(tmp_path)
    (tmp_path / "a1" / "episodes" / "ep03.rmvb").write_bytes(b"x")
    (tmp_path / "a1" / "episodes" / ".hidden.mp4").write_bytes(b"x")
    [album] = discover_albums(tmp_path)
    assert [p.name for p in album.episodes()] == ["ep00.mp4", "ep01.mp4", "ep02.mp4", "ep03.rmvb"]


def test_a_file_name_with_invalid_utf8_gets_a_text_source_name_and_keeps_its_real_path(tmp_path):
    # Linux names are bytes: os.listdir hands back '\udcff'-style surrogates that no UTF-8 writer
    # (Parquet, JSON) accepts. The manifest name escapes the bad bytes; reading uses the real path.
    stills = tmp_path / "show" / "stills"
    stills.mkdir(parents=True)
    bad = Path(os.fsdecode(os.fsencode(stills) + b"/bad\xff\xfe.jpg"))
    bad.write_bytes(b"pixels")
    (stills / "good.jpg").write_bytes(b"x")
    [album] = discover_albums(tmp_path)
    names = [album.relative(p, episodes=False) for p in album.stills()]
    assert names == ["bad\\xff\\xfe.jpg", "good.jpg"]
    assert all(name.encode("utf-8") for name in names)
    assert album.stills()[0].read_bytes() == b"pixels"
    assert safe_name("plain näme.jpg") == "plain näme.jpg"  # valid names are left as they are


def test_a_folder_name_with_invalid_utf8_gives_a_text_album_name(tmp_path):
    folder = Path(os.fsdecode(os.fsencode(tmp_path) + b"/Sh\xe9ow"))
    (folder / "stills").mkdir(parents=True)
    [album] = discover_albums(tmp_path)
    assert album.name == "Sh\\xe9ow" and album.album_id == "Sh_ow"


def test_entries_that_are_not_readable_files_are_listed_with_a_reason(tmp_path):
    """FIFOs, dangling links, link loops and links to folders used to vanish from the listing;
    now each is listed and `file_problem` (stat only: a FIFO is never opened) says why it is dropped."""
    stills = tmp_path / "show" / "stills"
    (stills / "sub").mkdir(parents=True)
    (stills / "sub" / "ok.jpg").write_bytes(b"x")
    (stills / ".hidden.jpg").write_bytes(b"x")  # hidden names stay out, as before
    os.mkfifo(stills / "pipe.jpg")
    (stills / "dangling.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (stills / "loop.jpg").symlink_to(stills / "loop.jpg")
    (stills / "folder_link").symlink_to(stills / "sub")  # not walked (as before), but not unnoticed
    [album] = discover_albums(tmp_path)
    found = {album.relative(p, episodes=False): file_problem(p) for p in album.stills()}
    assert {name: problem and problem[0] for name, problem in found.items()} == {
        "dangling.jpg": "unreadable",
        "folder_link": "not_a_file",
        "loop.jpg": "unreadable",
        "pipe.jpg": "not_a_file",
        "sub/ok.jpg": None,
    }
    assert "FIFO" in found["pipe.jpg"][1] and "symbolic links" in found["loop.jpg"][1]
