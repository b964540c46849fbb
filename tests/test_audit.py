"""The audit log: chain, signatures, checkpoints, crash recovery, concurrency, CLI."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cleanroom.audit import (
    GENESIS,
    AuditEntry,
    AuditLog,
    Checkpoint,
    load_checkpoint,
    save_checkpoint,
    verify_log,
)
from cleanroom.cli import main
from cleanroom.errors import InputError, KeyMaterialError, VerificationError
from cleanroom.keys.identity import Identity, create_identity, load_identity, signing_payload

BODIES = [
    ("job", {"job_id": "j1", "partners": 3, "reference_rows": 13000}),
    ("report", {"job_id": "j1", "report": "overlap", "epsilon": 0.5, "cells": 7}),
    ("release", {"job_id": "j1", "partner": "a1b2c3d4", "handles": 412, "digest": "ab" * 32}),
    ("refusal", {"job_id": "j1", "reason": "segment below k"}),
    ("report", {"job_id": "j1", "report": "by-district", "suppressed": [3, 9]}),
]


@pytest.fixture(scope="session")
def other(tmp_path_factory: pytest.TempPathFactory) -> Identity:
    """A second identity: a member that is not the broker."""
    folder = tmp_path_factory.mktemp("other") / "identity"
    create_identity("Not The Broker", folder, b"pw")
    return load_identity(folder, b"pw")


@pytest.fixture
def log(tmp_path: Path, identity: Identity) -> AuditLog:
    """A log of five entries by the broker (the session identity)."""
    audit = AuditLog(tmp_path / "audit.jsonl", identity)
    for kind, body in BODIES:
        audit.append(kind, body)
    return audit


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


def write_lines(path: Path, rows: list[bytes]) -> None:
    path.write_bytes(b"".join(row + b"\n" for row in rows))


def forged(previous: AuditEntry, signer: Identity) -> bytes:
    """An entry correctly chained after `previous`, signed by `signer`."""
    unsigned = {
        "log_id": previous.log_id,
        "seq": previous.seq + 1,
        "at": previous.at.isoformat().replace("+00:00", "Z"),
        "kind": "release",
        "body": {"handles": 1},
        "prev": previous.digest,
    }
    signature = signer.sign(signing_payload("audit-entry", unsigned)).hex()
    return AuditEntry(**unsigned, signature=signature).canonical()


def assert_bad(path: Path, broker: Identity, seq: int, *checkpoints: Checkpoint, words: str = "") -> None:
    with pytest.raises(VerificationError, match=rf"^seq {seq}: .*{words}"):
        verify_log(path, broker.card, checkpoints)


def test_append_and_verify(log: AuditLog, identity: Identity) -> None:
    result = verify_log(log.path, identity.card)
    entries = log.entries()
    assert [e.seq for e in entries] == [0, 1, 2, 3, 4]
    assert [e.kind for e in entries] == [kind for kind, _ in BODIES]
    assert entries[0].prev == GENESIS
    assert all(e.prev == p.digest for p, e in itertools.pairwise(entries))
    assert result.entries == tuple(entries)
    assert result.head == entries[-1].digest
    assert result.log_id == entries[0].log_id and len({e.log_id for e in entries}) == 1
    assert lines(log.path) == [e.canonical() for e in entries]


def test_empty_log_and_new_log_ids(tmp_path: Path, identity: Identity) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.touch()
    result = verify_log(empty, identity.card)
    assert (result.log_id, result.entries, result.head) == (None, (), GENESIS)
    with pytest.raises(InputError, match="empty"):
        AuditLog(empty, identity).checkpoint()
    first = AuditLog(tmp_path / "a.jsonl", identity).append("job", {})
    second = AuditLog(tmp_path / "b.jsonl", identity).append("job", {})
    assert first.log_id != second.log_id


def test_edited_body(log: AuditLog, identity: Identity) -> None:
    rows = lines(log.path)
    rows[2] = rows[2].replace(b'"handles":412', b'"handles":413')
    write_lines(log.path, rows)
    assert_bad(log.path, identity, 2, words="signature")


def test_non_canonical_edit(log: AuditLog, identity: Identity) -> None:
    rows = lines(log.path)
    rows[1] = json.dumps(json.loads(rows[1])).encode()
    write_lines(log.path, rows)
    assert_bad(log.path, identity, 1, words="well-formed")


def test_edited_signature(log: AuditLog, identity: Identity) -> None:
    rows = lines(log.path)
    entry = json.loads(rows[3])
    entry["signature"] = ("0" if entry["signature"][0] != "0" else "1") + entry["signature"][1:]
    rows[3] = json.dumps(entry, sort_keys=True, separators=(",", ":")).encode()
    write_lines(log.path, rows)
    assert_bad(log.path, identity, 3, words="signature")


def test_swapped_entries(log: AuditLog, identity: Identity) -> None:
    rows = lines(log.path)
    rows[1], rows[2] = rows[2], rows[1]
    write_lines(log.path, rows)
    assert_bad(log.path, identity, 1, words="reordered")


def test_deleted_entries(log: AuditLog, identity: Identity) -> None:
    rows = lines(log.path)
    write_lines(log.path, rows[:2] + rows[3:])
    assert_bad(log.path, identity, 2, words="carries seq 3")
    write_lines(log.path, rows[1:])
    assert_bad(log.path, identity, 0, words="carries seq 1")


def test_inserted_entry_chained_but_not_signed_by_the_broker(
    log: AuditLog, identity: Identity, other: Identity
) -> None:
    entries, rows = log.entries(), lines(log.path)
    write_lines(log.path, rows + [forged(entries[-1], other)])
    assert_bad(log.path, identity, 5, words="signature is not the broker's")
    write_lines(log.path, rows[:3] + [forged(entries[2], other)] + rows[3:])
    assert_bad(log.path, identity, 3, words="signature is not the broker's")


def test_garbage_line(log: AuditLog, identity: Identity) -> None:
    rows = lines(log.path)
    write_lines(log.path, rows[:2] + [b""] + rows[2:])
    assert_bad(log.path, identity, 2, words="well-formed")


def test_truncated_tail_needs_a_checkpoint(log: AuditLog, identity: Identity, tmp_path: Path) -> None:
    checkpoint = log.checkpoint()
    assert (checkpoint.seq, checkpoint.head) == (4, log.entries()[-1].digest)
    save_checkpoint(checkpoint, tmp_path / "cp.json")
    kept = load_checkpoint(tmp_path / "cp.json")
    assert kept == checkpoint
    assert verify_log(log.path, identity.card, [kept]).checkpoints == 1
    write_lines(log.path, lines(log.path)[:3])
    # Without a checkpoint, a shorter log is still a valid log: truncation is invisible.
    assert len(verify_log(log.path, identity.card).entries) == 3
    assert_bad(log.path, identity, 3, kept, words="truncated")
    log.path.write_bytes(b"")
    assert_bad(log.path, identity, 0, kept, words="truncated")


def test_older_checkpoints_stay_valid_as_the_log_grows(log: AuditLog, identity: Identity) -> None:
    early = log.checkpoint()
    log.append("job", {"job_id": "j2"})
    assert verify_log(log.path, identity.card, [early, log.checkpoint()]).checkpoints == 2


def test_checkpoint_from_another_log(log: AuditLog, identity: Identity, tmp_path: Path) -> None:
    second = AuditLog(tmp_path / "second.jsonl", identity)
    for kind, body in BODIES:
        second.append(kind, body)
    with pytest.raises(VerificationError, match="another audit log"):
        verify_log(log.path, identity.card, [second.checkpoint()])


def test_checkpoint_signature(log: AuditLog, identity: Identity, other: Identity) -> None:
    checkpoint = log.checkpoint()
    checkpoint.verify(identity.card)
    with pytest.raises(VerificationError, match="not signed by broker Not The Broker"):
        checkpoint.verify(other.card)
    edited = checkpoint.model_copy(update={"seq": 3, "head": log.entries()[3].digest})
    with pytest.raises(VerificationError, match="not signed by broker"):
        verify_log(log.path, identity.card, [edited])


def test_rewritten_history_contradicts_a_checkpoint(log: AuditLog, identity: Identity, tmp_path: Path) -> None:
    fork = AuditLog(tmp_path / "fork.jsonl", identity)
    write_lines(fork.path, lines(log.path)[:3])
    fork.append("release", {"handles": 1})
    log.append("job", {"job_id": "j2"})
    # Each copy is a valid log on its own; a member's checkpoint exposes the fork.
    assert_bad(log.path, identity, 3, fork.checkpoint(), words="rewrote")
    assert_bad(fork.path, identity, 4, log.checkpoint(), words="truncated")


def test_torn_last_line_is_reported_then_recovered(log: AuditLog, identity: Identity) -> None:
    whole = log.path.read_bytes()
    log.path.write_bytes(whole + b'{"log_id":"ab')
    assert_bad(log.path, identity, 5, words="incomplete")
    assert len(log.entries()) == 5
    entry = log.append("job", {"job_id": "j2"})
    recovered = verify_log(log.path, identity.card)
    assert [e.kind for e in recovered.entries[-2:]] == ["recovery", "job"]
    assert recovered.entries[-2].body["discarded_bytes"] == len(b'{"log_id":"ab')
    assert entry.seq == 6 and log.path.read_bytes().startswith(whole)


def test_append_needs_the_broker(log: AuditLog, other: Identity) -> None:
    with pytest.raises(KeyMaterialError):
        AuditLog(log.path).append("job", {})
    with pytest.raises(VerificationError, match="not signed by this broker"):
        AuditLog(log.path, other).append("job", {})


@pytest.mark.parametrize(
    ("kind", "body"),
    [("Job", {}), ("job\n", {}), ("", {}), ("job", {"rate": float("nan")}), ("job", {"at": object()})],
)
def test_bad_entries_are_refused(tmp_path: Path, identity: Identity, kind: str, body: dict) -> None:
    path = tmp_path / "audit.jsonl"
    with pytest.raises(InputError):
        AuditLog(path, identity).append(kind, body)
    assert not path.exists() or path.read_bytes() == b""


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_changed_byte_is_detected(log: AuditLog, identity: Identity, data: st.DataObject) -> None:
    original = log.path.read_bytes()
    position = data.draw(st.integers(0, len(original) - 1))
    value = data.draw(st.integers(0, 255).filter(lambda b: b != original[position]))
    log.path.write_bytes(original[:position] + bytes([value]) + original[position + 1 :])
    try:
        with pytest.raises(VerificationError):
            verify_log(log.path, identity.card)
    finally:
        log.path.write_bytes(original)


APPENDER = """
import sys, time
from pathlib import Path
from cleanroom.audit import AuditLog
from cleanroom.keys.identity import load_identity
log_path, identity_dir, go, worker, count = sys.argv[1:]
log = AuditLog(Path(log_path), load_identity(Path(identity_dir)))
while not Path(go).exists():
    time.sleep(0.002)
for i in range(int(count)):
    log.append("job", {"worker": int(worker), "i": i})
"""


@pytest.mark.usefixtures("passphrase_env")
def test_concurrent_appends_form_one_chain(tmp_path: Path, identity: Identity, identity_dir: Path) -> None:
    path, go = tmp_path / "audit.jsonl", tmp_path / "go"
    workers = [
        subprocess.Popen([sys.executable, "-c", APPENDER, str(path), str(identity_dir), str(go), str(w), "40"])
        for w in range(2)
    ]
    go.touch()
    assert [worker.wait(timeout=60) for worker in workers] == [0, 0]
    result = verify_log(path, identity.card)
    assert len(result.entries) == 80
    for w in range(2):
        assert [e.body["i"] for e in result.entries if e.body["worker"] == w] == list(range(40))


def run(*args: str) -> int:
    try:
        main(list(args))
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


@pytest.mark.usefixtures("passphrase_env")
def test_cli(
    log: AuditLog, identity_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    card = str(identity_dir / "card.json")
    checkpoint = str(tmp_path / "cp.json")
    assert run("audit", "checkpoint", str(log.path), "--identity", str(identity_dir), "--out", checkpoint) == 0
    assert run("audit", "verify", str(log.path), "--broker", card, "--checkpoint", checkpoint) == 0
    output = capsys.readouterr().out
    assert "5 entries" in output and log.entries()[-1].digest in output

    assert run("audit", "show", str(log.path), "--tail", "2") == 0
    output = capsys.readouterr().out
    assert "refusal" in output and "by-district" in output and "reference_rows" not in output

    rows = lines(log.path)
    write_lines(log.path, rows[:4])
    assert run("audit", "verify", str(log.path), "--broker", card) == 0
    assert "cannot be detected" in capsys.readouterr().out
    assert run("audit", "verify", str(log.path), "--broker", card, "--checkpoint", checkpoint) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: seq 4:") and err.count("\n") == 1

    write_lines(log.path, [rows[1], rows[0], *rows[2:]])
    assert run("audit", "verify", str(log.path), "--broker", card) == 2
    assert "seq 0" in capsys.readouterr().err
    assert run("audit", "verify", str(tmp_path / "missing.jsonl"), "--broker", card) == 2
    assert "no audit log" in capsys.readouterr().err
