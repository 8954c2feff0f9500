"""The annotation database (SQLite, `<data_root>/annotations/decisions.sqlite`): annotators and
their credentials, login sessions, gold answers, and the append-only decision log.

Durability: WAL journal with `synchronous=FULL`; every write is its own transaction, committed
before the HTTP response that acknowledges it, so a SIGKILL (or a power cut) loses nothing that
was acknowledged. Decisions and gold answers are never updated or deleted (triggers refuse it):
an undo is a new `undo` row whose `supersedes` names the decision it cancels."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
import sqlite3
import threading
import uuid
from collections.abc import Iterable
from pathlib import Path

DB_NAME = "decisions.sqlite"
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
UID_RE = re.compile(r"^[A-Za-z0-9_:-]{8,80}$")
DECISIONS = ("same", "different", "relabel", "skip", "undo")
SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}
KDF = "scrypt:16384:8:1:32"

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
  name TEXT PRIMARY KEY,
  created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS credentials (      -- only a salted scrypt hash of each token
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  name TEXT NOT NULL REFERENCES users(name),
  kdf TEXT NOT NULL,
  salt BLOB NOT NULL,
  hash BLOB NOT NULL,
  created_at TEXT NOT NULL,
  revoked_at TEXT
);
CREATE TABLE IF NOT EXISTS sessions (         -- the cookie's sha256, never the cookie itself
  id_hash TEXT PRIMARY KEY,
  name TEXT NOT NULL REFERENCES users(name),
  csrf TEXT NOT NULL,
  created_at TEXT NOT NULL,
  expires_at TEXT NOT NULL,
  ended_at TEXT
);
CREATE TABLE IF NOT EXISTS gold (             -- known answers; the latest row of a face wins
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  face_id TEXT NOT NULL,
  identity TEXT NOT NULL,
  source TEXT NOT NULL,
  added_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS decisions (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  uid TEXT NOT NULL UNIQUE,                   -- client request id: a retried request is not doubled
  annotator TEXT NOT NULL,
  face_id TEXT NOT NULL,
  crop_sha TEXT,
  proposed TEXT,                              -- the identity shown as the proposal
  decision TEXT NOT NULL CHECK (decision IN ('same','different','relabel','skip','undo')),
  identity TEXT,                              -- the identity the decision asserts or rejects
  score REAL,                                 -- pre-label score of the proposal
  embedder TEXT,                              -- model version behind the score
  mode TEXT NOT NULL,                         -- pair | grid
  batch_id TEXT,                              -- one grid confirmation
  time_ms INTEGER,                            -- item (grid: whole grid) shown -> decided, in the browser
  supersedes INTEGER REFERENCES decisions(id),-- undo rows: the decision they cancel
  gold_identity TEXT,                         -- the known answer, when the item was a gold item
  manifest_version INTEGER,
  decided_at TEXT NOT NULL,
  queue_order TEXT                            -- the server's --order when the item was served
);
CREATE INDEX IF NOT EXISTS decisions_by_annotator ON decisions(annotator, id);
CREATE TRIGGER IF NOT EXISTS decisions_no_update BEFORE UPDATE ON decisions
  BEGIN SELECT RAISE(ABORT, 'decisions are append-only'); END;
CREATE TRIGGER IF NOT EXISTS decisions_no_delete BEFORE DELETE ON decisions
  BEGIN SELECT RAISE(ABORT, 'decisions are append-only'); END;
CREATE TRIGGER IF NOT EXISTS gold_no_update BEFORE UPDATE ON gold
  BEGIN SELECT RAISE(ABORT, 'gold answers are append-only'); END;
CREATE TRIGGER IF NOT EXISTS gold_no_delete BEFORE DELETE ON gold
  BEGIN SELECT RAISE(ABORT, 'gold answers are append-only'); END;
"""


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


def db_path(data_root: str | Path) -> Path:
    return Path(data_root) / "annotations" / DB_NAME


def _hash_token(token: str, salt: bytes) -> bytes:
    return hashlib.scrypt(token.encode("utf-8"), salt=salt, maxmem=64 * 1024 * 1024, **SCRYPT)


def new_uid() -> str:
    return uuid.uuid4().hex


class AnnotationDB:
    """One connection, serialised by a lock (the server runs its handlers in threads)."""

    def __init__(self, data_root: str | Path):
        self.path = db_path(data_root)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self.conn = sqlite3.connect(str(self.path), timeout=30, isolation_level=None, check_same_thread=False)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute("PRAGMA foreign_keys=ON")
        self.conn.execute("PRAGMA busy_timeout=30000")
        with self.lock:
            self.conn.executescript(SCHEMA)
            if not self._has_queue_order(self.conn):
                self._write(self._add_queue_order)

    @staticmethod
    def _has_queue_order(conn) -> bool:
        return "queue_order" in {r["name"] for r in conn.execute("PRAGMA table_info(decisions)")}

    @classmethod
    def _add_queue_order(cls, conn) -> None:
        """Databases made before queue_order existed get the column (NULL on their old rows). Checked
        again inside the write transaction: another process may have added it meanwhile."""
        if not cls._has_queue_order(conn):
            conn.execute("ALTER TABLE decisions ADD COLUMN queue_order TEXT")

    def close(self) -> None:
        with self.lock:
            self.conn.close()

    def pragma(self, name: str):
        return self.conn.execute(f"PRAGMA {name}").fetchone()[0]

    def _write(self, fn):
        """Run fn(conn) in one IMMEDIATE transaction, committed (and fsynced) before returning."""
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                out = fn(self.conn)
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")
            return out

    # ---- annotators -------------------------------------------------------------------------
    def add_user(self, name: str, rotate: bool = False) -> str:
        """Create an annotator (or, with rotate, give them a new token and revoke the old ones).
        Returns the token; only its salted scrypt hash is stored."""
        if not NAME_RE.match(name or ""):
            raise ValueError("annotator names are 1-64 letters, digits, '_', '.' or '-'")
        token = secrets.token_urlsafe(24)
        salt = secrets.token_bytes(16)
        digest = _hash_token(token, salt)

        def write(conn):
            exists = conn.execute("SELECT 1 FROM users WHERE name=?", (name,)).fetchone()
            if exists and not rotate:
                raise ValueError(f"annotator {name!r} exists; use --rotate to give them a new token")
            stamp = now_iso()
            if not exists:
                conn.execute("INSERT INTO users(name, created_at) VALUES (?, ?)", (name, stamp))
            conn.execute("UPDATE credentials SET revoked_at=? WHERE name=? AND revoked_at IS NULL", (stamp, name))
            conn.execute("UPDATE sessions SET ended_at=? WHERE name=? AND ended_at IS NULL", (stamp, name))
            conn.execute(
                "INSERT INTO credentials(name, kdf, salt, hash, created_at) VALUES (?,?,?,?,?)",
                (name, KDF, salt, digest, stamp),
            )

        self._write(write)
        return token

    def users(self) -> list[str]:
        with self.lock:
            return [r[0] for r in self.conn.execute("SELECT name FROM users ORDER BY name")]

    def check_login(self, name: str, token: str) -> bool:
        with self.lock:
            creds = self.conn.execute(
                "SELECT salt, hash FROM credentials WHERE name=? AND revoked_at IS NULL", (name or "",)
            ).fetchall()
        if not creds:
            _hash_token(token or "", b"\0" * 16)  # same cost whether or not the name exists
            return False
        ok = False
        for cred in creds:
            ok |= hmac.compare_digest(_hash_token(token or "", cred["salt"]), cred["hash"])
        return ok

    # ---- sessions ---------------------------------------------------------------------------
    def create_session(self, name: str, hours: float) -> tuple[str, str]:
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        created = dt.datetime.now(dt.UTC)
        expires = created + dt.timedelta(hours=hours)
        self._write(
            lambda c: c.execute(
                "INSERT INTO sessions(id_hash, name, csrf, created_at, expires_at) VALUES (?,?,?,?,?)",
                (hashlib.sha256(token.encode()).hexdigest(), name, csrf, created.isoformat(), expires.isoformat()),
            )
        )
        return token, csrf

    def get_session(self, token: str) -> dict | None:
        if not token or len(token) > 200:
            return None
        with self.lock:
            row = self.conn.execute(
                "SELECT s.name, s.csrf, s.expires_at FROM sessions s WHERE s.id_hash=? AND s.ended_at IS NULL",
                (hashlib.sha256(token.encode()).hexdigest(),),
            ).fetchone()
        if row is None or dt.datetime.fromisoformat(row["expires_at"]) < dt.datetime.now(dt.UTC):
            return None
        return {"name": row["name"], "csrf": row["csrf"], "expires_at": row["expires_at"]}

    def end_session(self, token: str) -> None:
        self._write(
            lambda c: c.execute(
                "UPDATE sessions SET ended_at=? WHERE id_hash=?",
                (now_iso(), hashlib.sha256(token.encode()).hexdigest()),
            )
        )

    # ---- gold answers -----------------------------------------------------------------------
    def add_gold(self, rows: Iterable[tuple[str, str]], source: str) -> int:
        rows = [(f, i) for f, i in rows]
        stamp = now_iso()
        self._write(
            lambda c: c.executemany(
                "INSERT INTO gold(face_id, identity, source, added_at) VALUES (?,?,?,?)",
                [(f, i, source, stamp) for f, i in rows],
            )
        )
        return len(rows)

    def gold(self) -> dict[str, str]:
        with self.lock:
            rows = self.conn.execute("SELECT face_id, identity FROM gold ORDER BY id").fetchall()
        return {r["face_id"]: r["identity"] for r in rows}

    # ---- decisions --------------------------------------------------------------------------
    COLUMNS = (
        "uid",
        "annotator",
        "face_id",
        "crop_sha",
        "proposed",
        "decision",
        "identity",
        "score",
        "embedder",
        "mode",
        "batch_id",
        "time_ms",
        "supersedes",
        "gold_identity",
        "manifest_version",
        "decided_at",
        "queue_order",
    )

    def append(self, rows: list[dict]) -> tuple[list[dict], bool]:
        """Append decision rows in one transaction. A request replayed with the same uids returns
        the rows stored the first time (and False: nothing new)."""
        uids = [r["uid"] for r in rows]

        def write(conn):
            marks = ",".join("?" * len(uids))
            existing = conn.execute(f"SELECT * FROM decisions WHERE uid IN ({marks}) ORDER BY id", uids).fetchall()
            if existing:
                return [dict(r) for r in existing], False
            stamp = now_iso()
            out = []
            for r in rows:
                values = [r.get(c) for c in self.COLUMNS]
                values[self.COLUMNS.index("decided_at")] = r.get("decided_at") or stamp
                cur = conn.execute(
                    f"INSERT INTO decisions({','.join(self.COLUMNS)}) VALUES ({','.join('?' * len(self.COLUMNS))})",
                    values,
                )
                out.append(dict(zip(self.COLUMNS, values), id=cur.lastrowid))
            return out, True

        return self._write(write)

    def decisions(self, after_id: int = 0) -> list[dict]:
        with self.lock:
            return [dict(r) for r in self.conn.execute("SELECT * FROM decisions WHERE id > ? ORDER BY id", (after_id,))]
