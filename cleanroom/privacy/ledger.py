"""The privacy-budget ledger: epsilon charged per consortium and epoch, in SQLite."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from cleanroom.errors import PolicyError

_SLACK = 1e-9  # float rounding allowed when a sum of charges meets the budget exactly

_SCHEMA = """
CREATE TABLE IF NOT EXISTS charges (
    consortium_id TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    job_id TEXT NOT NULL,
    report TEXT NOT NULL,
    epsilon REAL NOT NULL,
    charged_at TEXT NOT NULL,
    PRIMARY KEY (consortium_id, epoch, job_id, report)
);
CREATE TABLE IF NOT EXISTS refusals (
    consortium_id TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    job_id TEXT NOT NULL,
    report TEXT NOT NULL,
    epsilon REAL NOT NULL,
    spent REAL NOT NULL,
    budget REAL NOT NULL,
    refused_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS releases (
    consortium_id TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    job_id TEXT NOT NULL,
    report TEXT NOT NULL,
    payload BLOB NOT NULL,
    recorded_at TEXT NOT NULL,
    PRIMARY KEY (consortium_id, epoch, job_id, report)
);
"""


class BudgetLedger:
    """Epsilon spent per (consortium, epoch), one charge per (job, report).

    `job_id` must be derived by the caller from the job's inputs (bundle
    digests, policy, report parameters) and a nonce stored with the job: a
    retried job then reuses its id and is not charged again, while a job whose
    input changed in any way gets a new id and pays again.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)

    def charge(self, consortium_id: str, epoch: int, job_id: str, report: str, epsilon: float, budget: float) -> float:
        """Commit a charge of `epsilon` and return the budget left; call before releasing anything.

        A charge already made for the same (consortium, epoch, job, report)
        is not made again. Raises PolicyError, after recording the refusal,
        when the charge would exceed `budget`.
        """
        if not epsilon > 0:
            raise ValueError("epsilon must be positive")
        key = (consortium_id, epoch, job_id, report)
        with self._transaction() as db:
            spent = self._spent(db, consortium_id, epoch)
            previous = db.execute(
                "SELECT epsilon FROM charges WHERE consortium_id=? AND epoch=? AND job_id=? AND report=?", key
            ).fetchone()
            if previous is not None:
                if abs(previous[0] - epsilon) > _SLACK:
                    raise PolicyError(
                        f"report {report!r} of job {job_id!r} was charged epsilon {previous[0]:g} before, "
                        f"not {epsilon:g}; a changed job needs a new job id"
                    )
                return max(budget - spent, 0.0)
            if spent + epsilon > budget + _SLACK:
                db.execute(
                    "INSERT INTO refusals VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (*key, epsilon, spent, budget, _now())
                )
                refused = (
                    f"privacy budget exhausted for consortium {consortium_id!r} epoch {epoch}: "
                    f"spent {spent:g} of {budget:g}, report {report!r} needs {epsilon:g}"
                )
            else:
                db.execute("INSERT INTO charges VALUES (?, ?, ?, ?, ?, ?)", (*key, epsilon, _now()))
                return max(budget - spent - epsilon, 0.0)
        raise PolicyError(refused)

    def spent(self, consortium_id: str, epoch: int) -> float:
        """Epsilon charged so far to this consortium in this epoch."""
        with self._connect() as db:
            return self._spent(db, consortium_id, epoch)

    def refusals(self, consortium_id: str, epoch: int) -> int:
        """How many charges were refused for this consortium in this epoch."""
        with self._connect() as db:
            row = db.execute(
                "SELECT COUNT(*) FROM refusals WHERE consortium_id=? AND epoch=?", (consortium_id, epoch)
            ).fetchone()
        return int(row[0])

    def record_release(self, consortium_id: str, epoch: int, job_id: str, report: str, payload: bytes) -> None:
        """Store what a report released, before it is released, so a retry returns the same noisy values."""
        with self._transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO releases VALUES (?, ?, ?, ?, ?, ?)",
                (consortium_id, epoch, job_id, report, payload, _now()),
            )

    def stored_release(self, consortium_id: str, epoch: int, job_id: str, report: str) -> bytes | None:
        """What this job's report released before, if it did."""
        with self._connect() as db:
            row = db.execute(
                "SELECT payload FROM releases WHERE consortium_id=? AND epoch=? AND job_id=? AND report=?",
                (consortium_id, epoch, job_id, report),
            ).fetchone()
        return None if row is None else bytes(row[0])

    @staticmethod
    def _spent(db: sqlite3.Connection, consortium_id: str, epoch: int) -> float:
        row = db.execute(
            "SELECT COALESCE(SUM(epsilon), 0.0) FROM charges WHERE consortium_id=? AND epoch=?", (consortium_id, epoch)
        ).fetchone()
        return float(row[0])

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, isolation_level=None, timeout=60)
        try:
            db.execute("PRAGMA busy_timeout=60000")
            db.execute("PRAGMA synchronous=FULL")
            yield db
        finally:
            db.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction taken at BEGIN, so concurrent chargers serialize."""
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
