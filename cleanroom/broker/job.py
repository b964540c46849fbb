"""Match jobs and segment releases: verify, join, protect, release, audit.

A job folder holds `job.json` (what was run), `report/` (protected
aggregates for the coordinator), `releases/<partner>/` (each partner's own
handles, signed) and `internal/` (the broker-only match table that later
segments are cut from, and the cascade's exact counts per key; it never leaves
the broker). The folder is written in a staging place and appears only when
complete. Every job, report, release and refusal is appended to the broker's
audit log, and a signed checkpoint of the log's head is written with each job.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import blake3
import polars as pl
from pydantic import BaseModel, Field

from cleanroom.audit import AuditLog, save_checkpoint
from cleanroom.broker.engine import run_match
from cleanroom.broker.load import load_inputs
from cleanroom.broker.releases import ReleaseManifest, segment_filter, write_releases
from cleanroom.broker.reports import Report, build_report, check_crosstabs, write_report
from cleanroom.errors import CleanroomError, PolicyError
from cleanroom.fsutil import staged_dir
from cleanroom.keys.consortium import Consortium
from cleanroom.keys.identity import Identity, IdentityCard, canonical_json
from cleanroom.privacy import BudgetLedger, PrivacyPolicy, noisy_counts

AUDIT_FILE = "audit.jsonl"
LEDGER_FILE = "ledger.sqlite"
ROWS_FILE = "internal/rows.parquet"
KEY_COUNTS_FILE = "internal/key_counts.json"
SEGMENT_EPSILON_SHARE = 0.2  # of a report's epsilon, for a segment's size check


class JobRecord(BaseModel):
    """job.json: the inputs, policy and parameters of a match job."""

    job_id: str
    consortium_id: str
    epoch: int
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    inputs: list[dict[str, Any]]
    recipients: dict[str, IdentityCard]
    attributes: list[str]
    allowed_attributes: list[str] | None
    policy: PrivacyPolicy
    crosstabs: list[list[str]]
    mode: str = "cascade"


class BrokerState:
    """The broker's durable state: its identity, audit log and budget ledger."""

    def __init__(self, folder: Path, identity: Identity):
        self.folder = Path(folder)
        self.identity = identity
        self.audit = AuditLog(self.folder / AUDIT_FILE, identity)
        self.ledger = BudgetLedger(self.folder / LEDGER_FILE)

    def refuse(self, action: str, error: CleanroomError, **context: Any) -> None:
        """Record a refusal (messages never hold data values) and re-raise."""
        self.audit.append("refusal", {"action": action, "reason": str(error), **context})
        raise error


def privacy_policy(consortium: Consortium | None) -> PrivacyPolicy:
    """The output-privacy policy of a consortium document (defaults without one)."""
    if consortium is None:
        return PrivacyPolicy()
    p = consortium.policy
    if p.epsilon_budget is None:
        return PrivacyPolicy(k=p.k, dp=False)
    return PrivacyPolicy(k=p.k, epsilon_per_report=p.epsilon_per_report, epsilon_budget=p.epsilon_budget)


def match_job(
    references: list[Path],
    partners: list[Path],
    out: Path,
    *,
    state: BrokerState,
    consortium: Consortium | None = None,
    crosstabs: list[list[str]] = (),
    mode: str = "cascade",
) -> tuple[Report, dict[str, ReleaseManifest]]:
    """Verify, match, report and release; nothing is written unless all of it succeeds.

    `mode` is "cascade" (deterministic, fast) or "score" (learned weights, one-to-one links).
    """
    crosstabs = [list(c) for c in crosstabs]
    try:
        inputs = load_inputs(list(references), list(partners), consortium)
    except CleanroomError as exc:
        state.refuse("match", exc)
    policy = privacy_policy(consortium)
    first = inputs.primary.manifest
    record = JobRecord(
        job_id="",
        consortium_id=first.consortium_id,
        epoch=first.epoch,
        inputs=[
            {"name": b.name, "kind": b.manifest.kind, "bundle_id": b.manifest.bundle_id,
             "digest": b.manifest.tokens_digest, "rows": b.manifest.row_count}
            for b in [*inputs.references, *inputs.partners]
        ],
        recipients={b.name: b.manifest.producer for b in inputs.partners},
        attributes=[a for r in inputs.references for a in r.manifest.attributes],
        allowed_attributes=list(consortium.policy.clear_attributes) if consortium else None,
        policy=policy,
        crosstabs=crosstabs,
        mode=mode,
    )
    record.job_id = _job_id(record)
    try:
        check_crosstabs(crosstabs, record.attributes)
    except CleanroomError as exc:
        state.refuse("match", exc, job_id=record.job_id)
    try:
        outcome = run_match(inputs, k=policy.k, mode=mode)
    except CleanroomError as exc:
        state.refuse("match", exc, job_id=record.job_id)
    state.audit.append("job", {
        "job_id": record.job_id, "inputs": record.inputs, "rows": outcome.rows.height,
        "attributes_coarsened_on_load": {n: p.dropped for n, p in outcome.reprotected.items()},
    })
    report = _protected_report(state, record, lambda: build_report(
        outcome, job_id=record.job_id, consortium_id=record.consortium_id, epoch=record.epoch,
        policy=policy, crosstabs=crosstabs,
    ))
    with staged_dir(out) as staging:
        (staging / "job.json").write_text(record.model_dump_json(indent=2) + "\n")
        write_report(report, staging / "report")
        (staging / "internal").mkdir()
        outcome.rows.write_parquet(staging / ROWS_FILE)
        (staging / KEY_COUNTS_FILE).write_text(json.dumps(outcome.key_counts(), indent=2) + "\n")
        releases = _release(state, record, outcome.rows, None, staging / "releases")
        save_checkpoint(state.audit.checkpoint(), staging / "checkpoint.json")
    return report, releases


def segment_job(job_dir: Path, where: str, out: Path, *, state: BrokerState) -> dict[str, ReleaseManifest]:
    """A further segment release cut from a finished job's internal match table."""
    record = JobRecord.model_validate_json((Path(job_dir) / "job.json").read_text())
    rows = pl.read_parquet(Path(job_dir) / ROWS_FILE)
    with staged_dir(out) as staging:
        releases = _release(state, record, rows, where, staging)
        save_checkpoint(state.audit.checkpoint(), staging / "checkpoint.json")
    return releases


def _job_id(record: JobRecord) -> str:
    """Derived from everything the job's outputs depend on: a retry reuses it, any change does not."""
    body = record.model_dump(mode="json", exclude={"job_id", "created_at"})
    return blake3.blake3(canonical_json(body)).hexdigest()[:32]


def _protected_report(state: BrokerState, record: JobRecord, build) -> Report:
    """Charge the budget before releasing; a retried job gets its stored report back."""
    ledger, cid, epoch = state.ledger, record.consortium_id, record.epoch
    stored = ledger.stored_release(cid, epoch, record.job_id, "standard")
    if stored is not None:
        return Report.model_validate_json(stored)
    if record.policy.dp:
        try:
            ledger.charge(cid, epoch, record.job_id, "standard",
                          record.policy.epsilon_per_report, record.policy.epsilon_budget)
        except PolicyError as exc:
            state.refuse("report", exc, job_id=record.job_id)
    report = build()
    ledger.record_release(cid, epoch, record.job_id, "standard", report.model_dump_json().encode())
    state.audit.append("report", {
        "job_id": record.job_id, "epsilon": report.epsilon_charged,
        "tables": [t.name for t in report.tables],
        "suppressed_cells": sum(t.protections.get("suppressed_cells", 0) for t in report.tables),
    })
    return report


def _release(
    state: BrokerState, record: JobRecord, rows: pl.DataFrame, where: str | None, folder: Path
) -> dict[str, ReleaseManifest]:
    label = where or "all persons matched to the voter file"
    try:
        segment = rows.filter(segment_filter(where, record.attributes, record.allowed_attributes))
        _require_segment_size(state, record, segment.get_column("person").n_unique(), label)
    except CleanroomError as exc:
        state.refuse("release", exc, job_id=record.job_id, segment=label)
    releases = write_releases(
        segment, where=label, job_id=record.job_id, recipients=record.recipients,
        broker=state.identity, folder=folder,
    )
    for manifest in releases.values():
        state.audit.append("release", {
            "job_id": record.job_id, "release_id": manifest.release_id, "segment": label,
            "recipient": manifest.recipient, "rows": manifest.rows,
        })
    return releases


def _require_segment_size(state: BrokerState, record: JobRecord, persons: int, label: str) -> None:
    """Refuse a segment of fewer than k persons, deciding on a noisy count when DP is on."""
    policy = record.policy
    size = persons
    if policy.dp:
        report = "segment:" + blake3.blake3(label.encode()).hexdigest()[:16]
        stored = state.ledger.stored_release(record.consortium_id, record.epoch, record.job_id, report)
        if stored is None:
            epsilon = policy.epsilon_per_report * SEGMENT_EPSILON_SHARE
            state.ledger.charge(record.consortium_id, record.epoch, record.job_id, report,
                                epsilon, policy.epsilon_budget)
            size = int(noisy_counts(pl.Series([persons]), epsilon=epsilon, sensitivity=1)[0])
            state.ledger.record_release(record.consortium_id, record.epoch, record.job_id, report,
                                        json.dumps(size).encode())
        else:
            size = json.loads(stored)
    if size < policy.k:
        raise PolicyError(f"segment is smaller than k={policy.k} persons; nothing released")
