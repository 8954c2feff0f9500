"""The web app's security and API, in process (FastAPI TestClient over the real app, a real
SQLite database and a real manifest)."""

import re
import sqlite3
import warnings

import pytest

with warnings.catch_warnings():  # starlette suggests httpx2 for its test client; httpx is what is pinned
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from pipeline.annotate.app import MAX_BODY, create_app
from pipeline.annotate.service import Settings
from tests.pipeline.annotate.conftest import CSRF_RE, NONCE_RE, add_user


@pytest.fixture
def app_env(data_root):
    root, info = data_root
    token = add_user(root, "ann")
    app = create_app(root, Settings(gold_rate=0))
    with TestClient(app, follow_redirects=False) as client:
        yield client, root, info, token


def do_login(client, name, token):
    nonce = NONCE_RE.search(client.get("/login").text).group(1)
    return client.post("/login", data={"name": name, "token": token, "nonce": nonce})


def logged_in(client, token, name="ann"):
    r = do_login(client, name, token)
    assert r.status_code == 303 and r.headers["location"] == "/pair"
    return CSRF_RE.search(client.get("/pair").text).group(1)


def test_nothing_without_a_session(app_env):
    client, root, info, _ = app_env
    sha = info["faces"]["p0"]
    for page in ("/", "/pair", "/grid", "/stats"):
        r = client.get(page)
        assert r.status_code == 303 and r.headers["location"] == "/login", page
    for url in ("/api/queue", "/api/grid", "/api/stats", f"/crop/{sha}", "/static/annotate.js"):
        r = client.get(url)
        assert r.status_code == 401, url
        assert r.headers["content-type"].startswith("application/json") and b"\xff\xd8" not in r.content
    for url in ("/api/decide", "/api/undo", "/api/grid", "/logout"):
        assert client.post(url, json={}).status_code == 401, url
    # every route the app has is covered: only the login form, its stylesheet and the favicon are public
    public = {"/login", "/static/{name}", "/favicon.ico"}
    for route in client.app.routes:
        if route.path in public or not hasattr(route, "methods"):
            continue
        path = route.path.replace("{sha:path}", sha).replace("{name}", "annotate.js")
        method = "GET" if "GET" in route.methods else "POST"
        assert client.request(method, path).status_code in (303, 401), path


def test_wrong_token_or_name_is_refused_and_tokens_are_stored_hashed(app_env):
    client, root, _, token = app_env
    r = do_login(client, "ann", token[:-1] + ("A" if token[-1] != "A" else "B"))
    assert r.status_code == 401 and "Wrong name or token" in r.text
    assert "toonface_session" not in r.headers.get("set-cookie", "")
    assert do_login(client, "nobody", token).status_code == 401
    assert client.get("/api/queue").status_code == 401
    # the login form's nonce is required (login CSRF)
    r = client.post("/login", data={"name": "ann", "token": token, "nonce": "forged"})
    assert r.status_code == 403
    conn = sqlite3.connect(root / "annotations" / "decisions.sqlite")
    dump = "\n".join(conn.iterdump())
    assert token not in dump and conn.execute("SELECT kdf FROM credentials").fetchone()[0].startswith("scrypt")


def test_session_cookie_is_httponly_and_samesite_strict(app_env):
    client, _, _, token = app_env
    r = do_login(client, "ann", token)
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("toonface_session=")
    assert "HttpOnly" in cookie and re.search(r"SameSite=strict", cookie, re.I) and "Path=/" in cookie
    csrf = CSRF_RE.search(client.get("/pair").text).group(1)
    assert client.get("/api/queue").status_code == 200
    # logging out ends the session on the server, not only in the browser
    saved = client.cookies.get("toonface_session")
    assert client.post("/logout", headers={"X-CSRF-Token": csrf}).status_code == 200
    client.cookies.set("toonface_session", saved)
    assert client.get("/api/queue").status_code == 401


def test_posts_need_the_sessions_csrf_token_and_our_origin(app_env):
    client, root, _, token = app_env
    csrf = logged_in(client, token)
    body = {"face_id": "p0", "proposed": "toon/alice", "decision": "same", "time_ms": 500}
    assert client.post("/api/decide", json=body).status_code == 403
    assert client.post("/api/decide", json=body, headers={"X-CSRF-Token": "x" * 43}).status_code == 403
    assert client.post("/api/decide", json=body, headers={"X-CSRF-Token": ""}).status_code == 403
    assert client.post("/api/undo", json={}).status_code == 403
    assert client.post("/api/grid", json={"identity": "toon/carol", "face_ids": ["g0"]}).status_code == 403
    assert client.post("/logout").status_code == 403
    ok = {"X-CSRF-Token": csrf}
    assert client.post("/api/decide", json=body, headers={**ok, "Origin": "http://evil.example"}).status_code == 403
    assert client.post("/api/decide", json=body, headers={**ok, "Origin": "null"}).status_code == 403
    assert client.post("/api/decide", json=body, headers={**ok, "Referer": "http://evil.example/x"}).status_code == 403
    # a second annotator's token is not this session's
    other = TestClient(client.app, follow_redirects=False)
    other_csrf = logged_in(other, add_user(root, "bea"), "bea")
    assert client.post("/api/decide", json=body, headers={"X-CSRF-Token": other_csrf}).status_code == 403
    rows = (
        sqlite3.connect(root / "annotations" / "decisions.sqlite").execute("SELECT COUNT(*) FROM decisions").fetchone()
    )
    assert rows[0] == 0  # nothing refused was stored
    r = client.post("/api/decide", json=body, headers={**ok, "Origin": "http://testserver"})
    assert r.status_code == 200 and r.json()["items"][0]["face_id"] == "p1"


def test_images_by_sha_only(app_env):
    client, _, info, token = app_env
    logged_in(client, token)
    r = client.get(f"/crop/{info['faces']['p0']}")
    assert r.status_code == 200 and r.content[:2] == b"\xff\xd8" and r.headers["content-type"] == "image/jpeg"
    assert "immutable" in r.headers["cache-control"] and "private" in r.headers["cache-control"]
    assert client.get(f"/crop/{info['faces']['p0']}", headers={"If-None-Match": r.headers["etag"]}).status_code == 304
    assert client.get(f"/crop/{info['faces']['p0'].upper()}").status_code == 400
    assert client.get("/crop/" + "0" * 64).status_code == 404
    assert client.get(f"/crop/{info['other_sha']}").status_code == 404  # in the store, but not a face crop
    for bad in (
        "/crop/..%2F..%2Fetc%2Fpasswd",
        "/crop/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/crop/abc",
        f"/crop/{info['faces']['p0']}%2F..%2F..%2Fmanifest",
        "/crop/..%5C..%5Cetc%5Cpasswd",
    ):
        r = client.get(bad)
        assert r.status_code in (400, 404), bad
        assert b"root:" not in r.content
    assert client.get("/static/..%2Fapp.py").status_code == 404
    assert client.get("/static/app.py").status_code == 404


def test_pages_carry_a_strict_content_security_policy(app_env):
    client, _, _, token = app_env
    logged_in(client, token)
    r = client.get("/pair")
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY" and r.headers["cache-control"] == "no-store"
    assert '<script src="/static/annotate.js">' in r.text and "<script>" not in r.text
    js = client.get("/static/annotate.js").text
    assert "http://" not in js and "https://" not in js  # offline: nothing from a CDN


def test_api_decide_undo_and_validation(app_env):
    client, _, _, token = app_env
    h = {"X-CSRF-Token": logged_in(client, token)}
    q = client.get("/api/queue?n=3").json()
    assert [i["face_id"] for i in q["items"]] == ["p0", "p1", "p2"]
    assert q["progress"]["total"] == 16
    item = q["items"][0]
    assert len(item["refs"]) == 2 and item["alternatives"][0] == {
        "identity": "toon/bob",
        "score": 0.71,
        "refs": item["alternatives"][0]["refs"],
    }
    body = {"face_id": "p0", "proposed": "toon/alice", "decision": "same", "time_ms": 812, "request_id": "req-0001"}
    first = client.post("/api/decide", json=body, headers=h).json()
    again = client.post("/api/decide", json=body, headers=h).json()  # a retried request is stored once
    assert first["decision_id"] == again["decision_id"] == "req-0001"
    assert client.get("/api/stats").json()["annotators"][0]["decisions"] == 1
    assert (
        client.post("/api/decide", json={**body, "request_id": None, "proposed": "toon/bob"}, headers=h).status_code
        == 409
    )
    assert (
        client.post("/api/decide", json={**body, "request_id": None, "face_id": "nope"}, headers=h).status_code == 404
    )
    assert (
        client.post("/api/decide", json={**body, "request_id": None, "face_id": "x-dropped"}, headers=h).status_code
        == 404
    )
    assert (
        client.post(
            "/api/decide",
            json={
                **body,
                "request_id": None,
                "face_id": "p1",
                "proposed": "toon/bob",
                "decision": "relabel",
                "identity": "toon/nobody",
            },
            headers=h,
        ).status_code
        == 422
    )
    undone = client.post("/api/undo", json={}, headers=h).json()
    assert undone["undone"] == ["p0"] and undone["items"][0]["face_id"] == "p0"
    assert client.post("/api/undo", json={}, headers=h).status_code == 409  # nothing left to undo
    stats = client.get("/stats")
    assert stats.status_code == 200 and 'data-annotator="ann"' in stats.text


def test_stats_page_shows_gold_accuracy_and_kappa(data_root):
    root, _ = data_root
    tokens = {name: add_user(root, name) for name in ("ann", "bea")}
    db_gold = [("k0", "toon/dan"), ("k1", "toon/carol")]
    from pipeline.annotate.db import AnnotationDB

    db = AnnotationDB(root)
    db.add_gold(db_gold, source="test")
    db.close()
    app = create_app(root, Settings(gold_rate=0.5, overlap=2))
    for name, token in tokens.items():
        client = TestClient(app, follow_redirects=False)  # one app, one database: no lifespan per client
        h = {"X-CSRF-Token": logged_in(client, token, name)}
        for _ in range(4):  # two regular items and the two gold items each, all answered "same"
            item = client.get("/api/queue?n=1").json()["items"][0]
            r = client.post(
                "/api/decide",
                headers=h,
                json={"face_id": item["face_id"], "proposed": item["proposed"], "decision": "same"},
            )
            assert r.status_code == 200
        page = client.get("/stats").text
    service = app.state.service
    k1_right = service.catalogue.proposal("k1")[0] == "toon/carol"
    k0_right = service.catalogue.proposal("k0")[0] == "toon/dan"
    accuracy = 100 * (k0_right + k1_right) / 2
    assert page.count(f'<td class="accuracy">{accuracy:.0f}%</td>') == 2
    assert "ann · bea" in page and '<td class="kappa">' in page  # both judged the same 4 items
    (pair,) = service.stats()["pairs"]
    assert pair["items"] == 4 and pair["agreement"] == 1.0


def test_stats_page_shows_how_the_pre_labels_fared_per_album(app_env):
    client, root, _, token = app_env
    h = {"X-CSRF-Token": logged_in(client, token)}
    assert "No published label judges a pre-label yet" in client.get("/stats").text
    items = client.get("/api/queue?n=3").json()["items"]
    for item, decision in zip(items, ("same", "same", "different")):
        assert (
            client.post(
                "/api/decide",
                headers=h,
                json={"face_id": item["face_id"], "proposed": item["proposed"], "decision": decision},
            ).status_code
            == 200
        )
    from pipeline.annotate.merge import merge_decisions

    merge_decisions(root)
    client.app.state.service.refresh(force=True)
    page = client.get("/stats").text
    row = re.search(r'<tr data-album="toon">(.*?)</tr>', page, re.S).group(1)
    assert re.findall(r"<td[^>]*>([^<]*)</td>", row) == ["toon", "3", "2", "67%"]
    assert (
        "2 of 3 judged pre-labels right (67%)" in page
        and "No setting reaches 95% over 30 faces judged in random order yet\n  (0 so far" in page
    )


def test_a_lockout_survives_failed_logins_under_10001_other_names(app_env):
    client, _, _, token = app_env
    for _ in range(10):
        assert do_login(client, "ann", "wrong").status_code == 401
    assert do_login(client, "ann", token).status_code == 429
    throttle = client.app.state.throttle
    for i in range(10_001):  # what 10,001 wrong logins under other names leave (through HTTP: 70 ms of scrypt each)
        throttle.attempt(f"other{i}")
    assert len(throttle.failures) <= 10_000
    assert do_login(client, "ann", token).status_code == 429
    # a name no annotator can have is refused without being tracked (the table's keys stay short)
    assert do_login(client, "x" * 5000, token).status_code == 401 and "x" * 5000 not in throttle.failures


def test_bodies_over_the_limit_are_refused_on_every_route_that_reads_one(app_env):
    client, _, _, token = app_env
    nonce = NONCE_RE.search(client.get("/login").text).group(1)
    form = f"name=ann&token={token}&nonce={nonce}&pad="
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    r = client.post("/login", content=(form + "x" * (MAX_BODY + 1 - len(form))).encode(), headers=headers)
    assert r.status_code == 413
    r = client.post("/login", content=iter([form.encode()] + [b"x" * 4096] * 17), headers=headers)  # chunked
    assert r.status_code == 413
    r = client.post("/login", content=(form + "x" * (MAX_BODY - len(form))).encode(), headers=headers)
    assert r.status_code == 303  # exactly at the limit: a login
    h = {"X-CSRF-Token": CSRF_RE.search(client.get("/pair").text).group(1), "Content-Type": "application/json"}
    big = b'{"face_id": "p0", "proposed": "toon/alice", "decision": "same", "pad": "' + b"x" * MAX_BODY + b'"}'
    for url in ("/api/decide", "/api/undo", "/api/grid"):
        assert client.post(url, content=big, headers=h).status_code == 413, url
        assert client.post(url, content=iter([big[:40], big[40:]]), headers=h).status_code == 413, url
    assert client.get("/api/stats").json()["annotators"][0]["decisions"] == 0
