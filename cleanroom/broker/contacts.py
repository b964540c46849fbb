"""The broker's contact ledger: opt-outs, reserved assignments and reported sends, per person.

One SQLite file in the broker's state folder. A person is named by a *person
key*, never by anything a partner could recognise: a registered person is
`r<reference digest>:<row>` (stable across jobs on the same voter file), an
unregistered one `u<job id>:<person>` (valid within one job). Caps count, for
each person, the sends reported in the window plus the assignments not yet
reported as sent (a reservation), across every partner and campaign.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

CONTACTS_FILE = "contacts.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS optouts (
    person_key TEXT NOT NULL,
    partner TEXT NOT NULL,
    received_at REAL NOT NULL,
    PRIMARY KEY (person_key, partner)
);
CREATE TABLE IF NOT EXISTS contacts (
    person_key TEXT NOT NULL,
    partner TEXT NOT NULL,
    campaign_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    at REAL NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('reserved', 'sent'))
);
CREATE INDEX IF NOT EXISTS contacts_person ON contacts (person_key, at);
"""


def person_key(reference_digest: str, job_id: str) -> pl.Expr:
    """The ledger's key of each row's person (columns `person`, `registered`)."""
    person = pl.col("person").cast(pl.String)
    return (
        pl.when(pl.col("registered"))
        .then(pl.lit(f"r{reference_digest[:16]}:") + person)
        .otherwise(pl.lit(f"u{job_id[:16]}:") + person)
        .alias("person_key")
    )


def _ts(at: datetime) -> float:
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.timestamp()


class ContactLedger:
    """Opt-outs and contacts per person key (SQLite, one file per broker)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.executescript(_SCHEMA)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30)
        try:
            with db:
                yield db
        finally:
            db.close()

    # opt-outs
    def add_optouts(self, person_keys: pl.Series, partner: str, at: datetime) -> int:
        """Record opt-outs received by `partner`; returns how many were new."""
        with self._db() as db:
            before = db.total_changes
            db.executemany(
                "INSERT OR IGNORE INTO optouts VALUES (?, ?, ?)",
                ((k, partner, _ts(at)) for k in person_keys.unique().to_list()),
            )
            return db.total_changes - before

    def optouts(self) -> pl.DataFrame:
        """(person_key, partner): every opt-out and the partner that received it."""
        with self._db() as db:
            got = db.execute("SELECT person_key, partner FROM optouts").fetchall()
        return pl.DataFrame(got, schema={"person_key": pl.String, "partner": pl.String}, orient="row")

    # contacts
    def reserve(self, assigned: pl.DataFrame, campaign_id: str, run_id: str, at: datetime) -> None:
        """Hold a contact for each assignment (person_key, partner) until its send is reported.

        Idempotent per run: a retried run replaces its own unreported reservations.
        """
        with self._db() as db:
            db.execute("DELETE FROM contacts WHERE run_id = ? AND state = 'reserved'", (run_id,))
            db.executemany(
                "INSERT INTO contacts VALUES (?, ?, ?, ?, ?, 'reserved')",
                ((k, p, campaign_id, run_id, _ts(at)) for k, p in assigned.select("person_key", "partner").iter_rows()),
            )

    def record_sends(self, sends: pl.DataFrame) -> int:
        """Reported sends (person_key, partner, sent_at); each replaces the partner's reservation."""
        rows = [(k, p, _ts(t)) for k, p, t in sends.select("person_key", "partner", "sent_at").iter_rows()]
        with self._db() as db:
            for key, partner, at in rows:
                found = db.execute(
                    "SELECT rowid, campaign_id, run_id FROM contacts WHERE person_key = ? AND partner = ? "
                    "AND state = 'reserved' ORDER BY at LIMIT 1", (key, partner),
                ).fetchone()
                if found:
                    db.execute("UPDATE contacts SET state = 'sent', at = ? WHERE rowid = ?", (at, found[0]))
                else:
                    db.execute("INSERT INTO contacts VALUES (?, ?, '', '', ?, 'sent')", (key, partner, at))
        return len(rows)

    def recent(self, at: datetime, days: float) -> pl.DataFrame:
        """(person_key, contacts): sends and reservations after `at` minus `days` (later ones included)."""
        since = _ts(at - timedelta(days=days))
        with self._db() as db:
            got = db.execute(
                "SELECT person_key, COUNT(*) FROM contacts WHERE at > ? GROUP BY person_key", (since,)
            ).fetchall()
        return pl.DataFrame(got, schema={"person_key": pl.String, "contacts": pl.Int64}, orient="row")

    def sends(self) -> pl.DataFrame:
        """Every reported send (person_key, partner, at as epoch seconds): for audits and tests."""
        with self._db() as db:
            got = db.execute("SELECT person_key, partner, at FROM contacts WHERE state = 'sent'").fetchall()
        return pl.DataFrame(got, schema={"person_key": pl.String, "partner": pl.String, "at": pl.Float64},
                            orient="row")
