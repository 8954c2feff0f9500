"""The verification web page: FastAPI app over the annotation service.

Security: every page, image, script and API call needs a session (a cookie set at login:
HttpOnly, SameSite=Strict), except the login form and its stylesheet. Images are served by sha
only (64 hex characters, and only shas of faces in the manifest), so a path cannot leave the
content store. State-changing requests must carry the session's CSRF token in `X-CSRF-Token`
and, when the browser sends Origin or Referer, come from this origin; the login form carries a
double-submit nonce instead. Refusals are 403 (CSRF, origin), 401 (no session, wrong token), 429
(a name locked out after failed logins), 413 (a body over MAX_BODY, refused before it is read)."""

from __future__ import annotations

import contextlib
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import BaseModel, Field
from starlette.middleware.body_limit import RequestBodyLimitMiddleware

from pipeline.annotate.db import NAME_RE
from pipeline.annotate.merge import merge_decisions
from pipeline.annotate.service import AnnotationService, LoginThrottle, Refused, Settings
from pipeline.store import ContentStore

HERE = Path(__file__).resolve().parent
SESSION_COOKIE = "toonface_session"
LOGIN_COOKIE = "toonface_login"
SHA_RE = re.compile(r"[0-9a-f]{64}")
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
PUBLIC_GET = {"/login", "/static/annotate.css", "/favicon.ico"}
STATIC = {"annotate.js": "text/javascript; charset=utf-8", "annotate.css": "text/css; charset=utf-8"}
CSP = (
    "default-src 'none'; img-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
MAX_FAILURES, FAILURE_WINDOW_S = 10, 600
MAX_BODY = 64 * 1024  # the largest real request, a 48-face grid, is a few KB
SHUTDOWN_GRACE_S = 5  # then requests still open (a client stalled mid-body) are cancelled


class DecideIn(BaseModel):
    face_id: str = Field(max_length=128)
    proposed: str | None = Field(default=None, max_length=512)
    decision: str = Field(max_length=16)
    identity: str | None = Field(default=None, max_length=512)
    time_ms: int | None = None
    request_id: str | None = Field(default=None, max_length=80)
    n: int = 8


class UndoIn(BaseModel):
    time_ms: int | None = None
    request_id: str | None = Field(default=None, max_length=80)
    n: int = 8


class GridIn(BaseModel):
    identity: str = Field(max_length=512)
    face_ids: list[str] = Field(max_length=48)
    wrong: list[str] = Field(default_factory=list, max_length=48)
    time_ms: int | None = None
    request_id: str | None = Field(default=None, max_length=80)


@dataclass(frozen=True, kw_only=True)
class AppState:
    """What the handlers of one app share, kept in `app.state.annotate`: the handlers are module
    functions, and each app that `create_app` makes carries its own."""

    data_root: Path
    service: AnnotationService
    store: ContentStore
    templates: Environment
    static: dict[str, bytes]
    throttle: LoginThrottle
    merge_on_exit: bool

    def render(self, name: str, status: int = 200, **context) -> HTMLResponse:
        return HTMLResponse(self.templates.get_template(name).render(**context), status_code=status)

    def page(self, request: Request, name: str, mode: str, **extra) -> HTMLResponse:
        session = request.state.session
        return self.render(
            name,
            user=session["name"],
            csrf=session["csrf"],
            mode=mode,
            settings=self.service.settings,
            progress=self.service.progress(session["name"]),
            **extra,
        )


def _state(request: Request) -> AppState:
    return request.app.state.annotate


def _user(request: Request) -> str:
    return request.state.session["name"]


def _same_origin(request: Request) -> bool:
    host = request.headers.get("host", "")
    origin = request.headers.get("origin")
    if origin is not None:
        parts = urlsplit(origin)
        return origin != "null" and parts.scheme in ("http", "https") and parts.netloc == host
    referer = request.headers.get("referer")
    if referer:
        return urlsplit(referer).netloc == host
    return True


def _cookie(response: Response, request: Request, name: str, value: str, max_age: int, path: str = "/") -> None:
    response.set_cookie(
        name, value, max_age=max_age, path=path, httponly=True, samesite="strict", secure=request.url.scheme == "https"
    )


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI):
    yield
    state: AppState = app.state.annotate
    if state.merge_on_exit:
        version = merge_decisions(state.data_root)
        print(f"merged decisions: manifest version {version}", flush=True)
    state.service.close()


async def guard(request: Request, call_next):
    path, method = request.url.path, request.method
    if method not in SAFE_METHODS and not _same_origin(request):
        return JSONResponse({"error": "cross-origin request refused"}, status_code=403)
    service = _state(request).service
    session = await run_in_threadpool(service.db.get_session, request.cookies.get(SESSION_COOKIE, ""))
    public = path == "/login" or (method in SAFE_METHODS and path in PUBLIC_GET)
    if not public:
        if session is None:
            if method in SAFE_METHODS and not path.startswith(("/api/", "/crop/", "/static/")):
                return RedirectResponse("/login", status_code=303)
            return JSONResponse({"error": "login required"}, status_code=401)
        if method not in SAFE_METHODS:
            sent = request.headers.get("x-csrf-token", "")
            if not hmac.compare_digest(sent.encode(), session["csrf"].encode()):
                return JSONResponse({"error": "missing or wrong CSRF token"}, status_code=403)
    request.state.session = session
    response = await call_next(request)
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers.setdefault("Cache-Control", "no-store")
    return response


async def refused(request: Request, exc: Refused):
    return JSONResponse({"error": str(exc)}, status_code=exc.status)


# (method, path, handler) in the order routes are matched; `create_app` adds them to each app it
# makes, so the handlers are plain module functions that find their app's state in the request.
ROUTES: list[tuple[str, str, Callable]] = []


def route(method: str, path: str) -> Callable[[Callable], Callable]:
    def record(handler: Callable) -> Callable:
        ROUTES.append((method, path, handler))
        return handler

    return record


# ---- login ----------------------------------------------------------------------------------
@route("GET", "/login")
def login_form(request: Request):
    if request.state.session is not None:
        return RedirectResponse("/pair", status_code=303)
    nonce = secrets.token_urlsafe(24)
    response = _state(request).render("login.html", nonce=nonce, error=None)
    _cookie(response, request, LOGIN_COOKIE, nonce, 1800, path="/login")
    return response


@route("POST", "/login")
async def login(request: Request):
    state = _state(request)
    service, throttle = state.service, state.throttle
    form = {k: v[0] for k, v in parse_qs((await request.body()).decode("utf-8", "replace")).items()}
    name, token = form.get("name", "").strip(), form.get("token", "")
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    if not nonce or not hmac.compare_digest(nonce.encode(), form.get("nonce", "").encode()):
        return JSONResponse({"error": "missing or wrong login form token; reload the login page"}, status_code=403)
    if not NAME_RE.match(name):  # no annotator has such a name: nothing to guess, nothing to track
        return state.render("login.html", 401, nonce=nonce, error="Wrong name or token.")
    if not throttle.attempt(name):
        return state.render("login.html", 429, nonce=nonce, error="Too many failed attempts; wait a few minutes.")
    if not await run_in_threadpool(service.db.check_login, name, token):
        return state.render("login.html", 401, nonce=nonce, error="Wrong name or token.")
    throttle.succeeded(name)
    session, _ = service.db.create_session(name, service.settings.session_hours)
    response = RedirectResponse("/pair", status_code=303)
    _cookie(response, request, SESSION_COOKIE, session, int(service.settings.session_hours * 3600))
    response.delete_cookie(LOGIN_COOKIE, path="/login")
    return response


@route("POST", "/logout")
def logout(request: Request):
    _state(request).service.db.end_session(request.cookies.get(SESSION_COOKIE, ""))
    response = JSONResponse({"ok": True})
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


# ---- pages ----------------------------------------------------------------------------------
@route("GET", "/")
def home():
    return RedirectResponse("/pair", status_code=303)


@route("GET", "/pair")
def pair(request: Request):
    return _state(request).page(request, "pair.html", "pair")


@route("GET", "/grid")
def grid_page(request: Request):
    return _state(request).page(request, "grid.html", "grid")


@route("GET", "/stats")
def stats_page(request: Request):
    state = _state(request)
    return state.page(request, "stats.html", "stats", stats=state.service.stats())


# ---- static files and crops -----------------------------------------------------------------
@route("GET", "/favicon.ico")
def favicon():
    return Response(status_code=204)


@route("GET", "/static/{name}")
def static_file(name: str, request: Request):
    static = _state(request).static
    if name not in static:
        return JSONResponse({"error": "not found"}, status_code=404)
    return Response(static[name], media_type=STATIC[name], headers={"Cache-Control": "no-cache"})


@route("GET", "/crop/{sha:path}")
def crop(sha: str, request: Request):
    state = _state(request)
    if not SHA_RE.fullmatch(sha):
        return JSONResponse({"error": "an image id is 64 hex characters"}, status_code=400)
    if sha not in state.service.catalogue.crops:
        return JSONResponse({"error": "not found"}, status_code=404)
    headers = {"Cache-Control": "private, max-age=31536000, immutable", "ETag": f'"{sha}"'}
    if request.headers.get("if-none-match") == f'"{sha}"':
        return Response(status_code=304, headers=headers)
    try:
        data = state.store.path_for(sha, ".jpg").read_bytes()
    except FileNotFoundError:
        return JSONResponse({"error": "not in the content store"}, status_code=404)
    return Response(data, media_type="image/jpeg", headers=headers)


# ---- API: queue, decisions, grid, stats -----------------------------------------------------
@route("GET", "/api/queue")
def api_queue(request: Request, n: int = 8):
    service, name = _state(request).service, _user(request)
    return {"items": service.queue(name, n), "progress": service.progress(name)}


@route("POST", "/api/decide")
def api_decide(request: Request, body: DecideIn):
    service, name = _state(request).service, _user(request)
    row = service.decide(name, body.face_id, body.proposed, body.decision, body.identity, body.time_ms, body.request_id)
    return {"decision_id": row["uid"], "items": service.queue(name, body.n), "progress": service.progress(name)}


@route("POST", "/api/undo")
def api_undo(request: Request, body: UndoIn):
    service, name = _state(request).service, _user(request)
    undone = service.undo(name, body.time_ms, body.request_id)
    faces = [r["face_id"] for r in undone]
    return {"undone": faces, "items": service.queue(name, body.n, front=faces), "progress": service.progress(name)}


@route("GET", "/api/grid")
def api_grid(request: Request, identity: str | None = None, size: int | None = None):
    service, name = _state(request).service, _user(request)
    return {**service.grid(name, identity, size), "progress": service.progress(name)}


@route("POST", "/api/grid")
def api_grid_confirm(request: Request, body: GridIn):
    service, name = _state(request).service, _user(request)
    rows = service.confirm_grid(name, body.identity, body.face_ids, body.wrong, body.time_ms, body.request_id)
    return {
        "decided": len(rows),
        "wrong": sum(r["decision"] == "different" for r in rows),
        "progress": service.progress(name),
    }


@route("GET", "/api/stats")
def api_stats(request: Request):
    service = _state(request).service
    return {**service.stats(), "progress": service.progress(_user(request))}


def create_app(data_root: str | Path, settings: Settings | None = None, merge_on_exit: bool = False) -> FastAPI:
    data_root = Path(data_root)
    service = AnnotationService(data_root, settings)
    state = AppState(
        data_root=data_root,
        service=service,
        store=ContentStore(data_root / "store"),
        templates=Environment(loader=FileSystemLoader(str(HERE / "templates")), autoescape=select_autoescape(["html"])),
        static={name: (HERE / "static" / name).read_bytes() for name in STATIC},
        throttle=LoginThrottle(MAX_FAILURES, FAILURE_WINDOW_S),
        merge_on_exit=merge_on_exit,
    )
    app = FastAPI(title="toonface annotate", docs_url=None, redoc_url=None, openapi_url=None, lifespan=_lifespan)
    app.state.annotate = state
    app.state.service, app.state.throttle = service, state.throttle
    # A Content-Length over MAX_BODY is answered 413 before anything is read, a chunked body as soon
    # as the bytes read pass it. Inside `guard` (added first): its task group would turn the 413 into a 500.
    app.add_middleware(RequestBodyLimitMiddleware, max_body_size=MAX_BODY)
    app.middleware("http")(guard)
    app.add_exception_handler(Refused, refused)
    for method, path, handler in ROUTES:
        app.add_api_route(path, handler, methods=[method])
    return app


def serve(
    data_root: str | Path,
    host: str = "127.0.0.1",
    port: int = 8765,
    settings: Settings | None = None,
    merge_on_exit: bool = False,
) -> None:
    import uvicorn

    app = create_app(data_root, settings, merge_on_exit)
    print(f"toonface annotate: http://{host}:{port}/  (data root {Path(data_root).resolve()})", flush=True)
    uvicorn.run(
        app, host=host, port=port, log_level="warning", access_log=False, timeout_graceful_shutdown=SHUTDOWN_GRACE_S
    )
