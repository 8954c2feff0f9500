import io

from rich.console import Console

from pipeline.progress import StageProgress


def test_progress_shows_items_and_rate_per_stage():
    screen = io.StringIO()
    bar = StageProgress(
        {"shards": 2, "stills": 10}, enabled=True, console=Console(file=screen, force_terminal=True, width=120)
    )
    bar.advance({"stills": 5, "images_ok": 5, "faces_detected": 3, "crops_kept": 2})
    bar.advance({"stills": 5, "images_ok": 4, "faces_detected": 1, "crops_kept": 1})
    tasks = {t.description.strip(): t for t in bar._progress.tasks}
    bar.close()
    assert tasks["shards"].completed == 2 and tasks["shards"].finished
    assert tasks["stills read"].completed == 10 and tasks["crops kept"].completed == 3
    assert tasks["faces detected"].completed == 4
    text = screen.getvalue()
    assert "stills read" in text and "10/10" in text and "/s" in text


def test_progress_is_silent_off_a_terminal():
    bar = StageProgress({"shards": 1}, enabled=False)
    bar.advance({"stills": 1})
    bar.close()
    assert bar._progress is None
