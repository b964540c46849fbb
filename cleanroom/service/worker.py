"""The background worker: runs match, segment and campaign-run jobs outside the request.

Job state lives in SQLite (`queued` -> `running` -> `done` | `failed`). A
job found `running` at start-up was interrupted by a crash or a kill: it is
queued again while it has attempts left (the engine's job id and the budget
ledger make a re-run charge nothing twice), else marked failed, and a
coordinator can retry it. A job folder that the engine finished before the
crash is recorded as it is, not recomputed, so releases never change.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from cleanroom.broker.campaign import CAMPAIGN_FILE, load_campaign, run_campaign
from cleanroom.broker.job import BrokerState, JobRecord, match_job, segment_job
from cleanroom.broker.releases import MANIFEST_FILE, ReleaseManifest
from cleanroom.errors import CleanroomError
from cleanroom.keys.consortium import parse_consortium
from cleanroom.service.storage import Store

log = logging.getLogger("cleanroom.service.worker")
INTERRUPTED = "interrupted by a service restart"
# test hook: seconds to sleep at the start of every job (lets tests kill the service mid-job)
DELAY_ENV = "CLEANROOM_SERVICE_JOB_DELAY"


class Worker:
    """One thread that claims queued jobs in creation order and runs them with the engine."""

    def __init__(self, store: Store, state: BrokerState, *, max_attempts: int = 3):
        self.store = store
        self.state = state
        self.max_attempts = max_attempts
        self.delay = float(os.environ.get(DELAY_ENV, "0") or 0)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cleanroom-worker", daemon=True)

    def start(self) -> None:
        self.recover()
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)

    def wake(self) -> None:
        self._wake.set()

    def recover(self) -> None:
        """Requeue (or fail, when out of attempts) the jobs a previous process left running."""
        now = time.time()
        with self.store.write() as con:
            con.execute(
                "UPDATE jobs SET state = CASE WHEN attempts < ? THEN 'queued' ELSE 'failed' END, "
                "error = ?, updated_at = ? WHERE state = 'running'",
                (self.max_attempts, INTERRUPTED, now),
            )

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                job = self._claim()
            except Exception:
                log.exception("could not claim a job")
                job = None
            if job is None:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            self._run(job)

    def _claim(self):
        with self.store.write() as con:
            row = con.execute(
                "SELECT * FROM jobs WHERE state = 'queued' ORDER BY created_at, id LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            con.execute(
                "UPDATE jobs SET state = 'running', attempts = attempts + 1, error = NULL, updated_at = ? "
                "WHERE id = ?", (time.time(), row["id"]),
            )
        return row

    def _run(self, job) -> None:
        job_id = job["id"]
        log.info("job %s (%s) started, attempt %d", job_id, job["kind"], job["attempts"] + 1)
        try:
            if self.delay:
                time.sleep(self.delay)
            if job["kind"] == "match":
                engine_id, folder = self._match(job)
            elif job["kind"] == "campaign":
                engine_id, folder = self._campaign(job)
            else:
                engine_id, folder = self._segment(job)
            releases = _scan_releases(folder)
        except CleanroomError as exc:
            self._finish(job_id, "failed", error=str(exc))
            log.info("job %s failed: %s", job_id, exc)
            return
        except Exception:
            log.exception("job %s failed with an internal error", job_id)
            self._finish(job_id, "failed", error="internal error; the broker admin can see the service log")
            return
        root = self.store.root
        with self.store.write() as con:
            con.execute("DELETE FROM releases WHERE job_id = ?", (job_id,))
            con.executemany(
                "INSERT INTO releases (job_id, release_id, recipient, folder, rows) VALUES (?, ?, ?, ?, ?)",
                [(job_id, m.release_id, m.recipient_fingerprint, str(path.relative_to(root)), m.rows)
                 for path, m in releases],
            )
            con.execute("UPDATE jobs SET state = 'done', engine_job_id = ?, error = NULL, updated_at = ? "
                        "WHERE id = ?", (engine_id, time.time(), job_id))
        log.info("job %s done", job_id)

    def _finish(self, job_id: str, state: str, *, error: str | None) -> None:
        with self.store.write() as con:
            con.execute("UPDATE jobs SET state = ?, error = ?, updated_at = ? WHERE id = ?",
                        (state, error, time.time(), job_id))

    def _consortium(self, job):
        row = self.store.one("SELECT document FROM consortia WHERE consortium_id = ? AND epoch = ?",
                             job["consortium_id"], job["epoch"])
        return parse_consortium(bytes(row["document"])) if row else None

    def _match(self, job) -> tuple[str, Path]:
        out = self.store.job_dir(job["id"])
        if not _complete(out):
            params = json.loads(job["params"])
            match_job(
                [self.store.bundle_dir(d) for d in params["references"]],
                [self.store.bundle_dir(d) for d in params["partners"]],
                out, state=self.state, consortium=self._consortium(job), crosstabs=params["crosstabs"],
            )
        record = JobRecord.model_validate_json((out / "job.json").read_text())
        return record.job_id, out / "releases"

    def _segment(self, job) -> tuple[str, Path]:
        out = self.store.job_dir(job["id"])
        parent = self.store.job_dir(job["parent"])
        if not (out / "checkpoint.json").is_file():
            segment_job(parent, json.loads(job["params"])["where"], out, state=self.state)
        record = JobRecord.model_validate_json((parent / "job.json").read_text())
        return record.job_id, out


    def _campaign(self, job) -> tuple[str, Path]:
        """One campaign run: assignments released to the participating partners (under releases/)."""
        out = self.store.job_dir(job["id"])
        parent = self.store.job_dir(job["parent"])
        params = json.loads(job["params"])
        if not (out / "checkpoint.json").is_file():
            campaign = load_campaign(self.store.campaign_dir(params["campaign"]) / CAMPAIGN_FILE)
            run_campaign(campaign, parent, out, state=self.state,
                         at=datetime.fromtimestamp(params["at"], UTC))
        record = JobRecord.model_validate_json((parent / "job.json").read_text())
        return record.job_id, out / "releases"


def _complete(folder: Path) -> bool:
    return (folder / "job.json").is_file() and (folder / "checkpoint.json").is_file()


def _scan_releases(folder: Path) -> list[tuple[Path, ReleaseManifest]]:
    found = []
    for manifest in sorted(folder.glob(f"*/{MANIFEST_FILE}")):
        found.append((manifest.parent, ReleaseManifest.model_validate_json(manifest.read_bytes())))
    return found
