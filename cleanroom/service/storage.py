"""The service's embedded storage: one SQLite database plus content-addressed files.

Layout of the data folder::

    service.sqlite          members, consortia, relay messages, bundles, jobs, campaigns, releases, nonces
    broker/                 the engine's BrokerState: audit.jsonl (hash chain) and ledger.sqlite
    bundles/<digest>/       verified bundles by tokens digest (tokens.parquet, manifest.json, manifest.sig)
    jobs/<job id>/          match, segment and campaign-run folders written by the engine (atomically)
    campaigns/<id>/         campaign definitions (campaign.json); the contact ledger is broker/contacts.sqlite
    tmp/                    uploads in progress; emptied at every start

SQLite runs in WAL mode with `synchronous=FULL` and a busy timeout; every
write is one `BEGIN IMMEDIATE` transaction, so concurrent writers queue
instead of failing.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DB_FILE = "service.sqlite"
BUSY_TIMEOUT_MS = 30_000
NONCE_RETENTION_SECONDS = 3600  # far beyond the +-300 s window; older nonces can never verify again

SCHEMA = """
CREATE TABLE IF NOT EXISTS members (
    fingerprint TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    card TEXT NOT NULL,
    enrolled_at REAL NOT NULL,
    enrolled_by TEXT
);
CREATE TABLE IF NOT EXISTS nonces (
    key TEXT NOT NULL,
    nonce TEXT NOT NULL,
    ts INTEGER NOT NULL,
    PRIMARY KEY (key, nonce)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS nonces_ts ON nonces (ts);
CREATE TABLE IF NOT EXISTS consortia (
    consortium_id TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    digest TEXT NOT NULL,
    document BLOB NOT NULL,
    registered_by TEXT NOT NULL,
    registered_at REAL NOT NULL,
    PRIMARY KEY (consortium_id, epoch)
);
CREATE TABLE IF NOT EXISTS relay (
    topic TEXT NOT NULL,
    name TEXT NOT NULL,
    data BLOB NOT NULL,
    author TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (topic, name)
);
CREATE TABLE IF NOT EXISTS bundles (
    digest TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    kind TEXT NOT NULL,
    consortium_id TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    bundle_id TEXT NOT NULL,
    manifest_digest TEXT NOT NULL,
    rows INTEGER NOT NULL,
    size INTEGER NOT NULL,
    uploaded_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    parent TEXT,
    consortium_id TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    params TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    engine_job_id TEXT,
    created_by TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, created_at);
CREATE TABLE IF NOT EXISTS job_bundles (
    job_id TEXT NOT NULL,
    digest TEXT NOT NULL,
    owner TEXT NOT NULL,
    role TEXT NOT NULL,
    PRIMARY KEY (job_id, digest)
);
CREATE TABLE IF NOT EXISTS campaigns (
    id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    campaign_id TEXT NOT NULL,
    name TEXT NOT NULL,
    definition TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS releases (
    job_id TEXT NOT NULL,
    release_id TEXT NOT NULL,
    recipient TEXT NOT NULL,
    folder TEXT NOT NULL,
    rows INTEGER NOT NULL,
    PRIMARY KEY (job_id, release_id)
);
"""


class Store:
    """Thread-safe access to the service database and file layout."""

    def __init__(self, root: Path):
        self.root = Path(root)
        for sub in ("bundles", "jobs", "tmp", "broker", "campaigns"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._connection().executescript(SCHEMA)

    # --- paths -----------------------------------------------------------------
    @property
    def broker_dir(self) -> Path:
        return self.root / "broker"

    def bundle_dir(self, digest: str) -> Path:
        return self.root / "bundles" / digest

    def job_dir(self, job_id: str) -> Path:
        return self.root / "jobs" / job_id

    def campaign_dir(self, campaign: str) -> Path:
        return self.root / "campaigns" / campaign

    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    def clean_partial_files(self) -> None:
        """Remove uploads and job folders a killed process left half-written (staging names start with '.')."""
        for entry in self.tmp_dir.iterdir():
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
        for parent in (self.root / "jobs", self.root / "bundles"):
            for entry in parent.iterdir():
                if entry.name.startswith("."):
                    shutil.rmtree(entry, ignore_errors=True)

    # --- connections -------------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(self.root / DB_FILE, timeout=BUSY_TIMEOUT_MS / 1000,
                                  isolation_level=None, check_same_thread=False)
            con.row_factory = sqlite3.Row
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=FULL")
            con.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            self._local.con = con
        return con

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One immediate (write-locked) transaction; committed on success, rolled back on error."""
        con = self._connection()
        con.execute("BEGIN IMMEDIATE")
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    def one(self, sql: str, *args: Any) -> sqlite3.Row | None:
        return self._connection().execute(sql, args).fetchone()

    def all(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        return self._connection().execute(sql, args).fetchall()

    # --- nonces ------------------------------------------------------------------
    def use_nonce(self, key: str, nonce: str, timestamp: int) -> bool:
        """Record a nonce; False if this key already used it (a replay)."""
        with self.write() as con:
            try:
                con.execute("INSERT INTO nonces (key, nonce, ts) VALUES (?, ?, ?)", (key, nonce, timestamp))
            except sqlite3.IntegrityError:
                return False
            if _purge_due():
                con.execute("DELETE FROM nonces WHERE ts < ?", (int(time.time()) - NONCE_RETENTION_SECONDS,))
        return True


_calls = iter(range(1 << 62))


def _purge_due() -> bool:
    """True about once in 256 calls: when to purge expired nonces."""
    return next(_calls) % 256 == 0
