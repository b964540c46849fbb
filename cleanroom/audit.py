"""The broker's audit log: hash-chained, signed entries and signed checkpoints.

The log is a file of JSON lines, one entry per line, each in canonical JSON.
An entry holds the BLAKE3 digest of the previous line and the broker's
Ed25519 signature, so an edited, reordered, inserted or deleted entry breaks
the chain or a signature. Members keep signed checkpoints of the log's head;
against a checkpoint, a truncated tail (or a rewritten history) is detected
too. Bodies hold counts, ids and digests, never a plaintext identifier.
See docs/audit-log.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import blake3
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cleanroom.errors import InputError, KeyMaterialError, VerificationError
from cleanroom.fsutil import write_atomic
from cleanroom.keys.identity import Identity, IdentityCard, canonical_json, signing_payload

CHECKPOINT_FORMAT = "cleanroom-audit-checkpoint/1"
GENESIS = "0" * 64
ENTRY_PURPOSE = "audit-entry"
CHECKPOINT_PURPOSE = "audit-checkpoint"
RECOVERY_KIND = "recovery"
_HEX32 = r"^[0-9a-f]{64}$"
_KIND_PATTERN = r"^[a-z][a-z0-9_.-]{0,63}$"
_KIND = re.compile(_KIND_PATTERN)
_TAIL_CHUNK = 1 << 16


class AuditEntry(BaseModel):
    """One line of the log; `signature` covers every other field."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    log_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    seq: int = Field(ge=0)
    at: datetime
    kind: str = Field(pattern=_KIND_PATTERN)
    body: dict[str, Any]
    prev: str = Field(pattern=_HEX32)
    signature: str = Field(pattern=r"^[0-9a-f]{128}$")

    def canonical(self) -> bytes:
        """The entry's line in the log (canonical JSON, without the newline)."""
        return canonical_json(self.model_dump(mode="json"))

    @property
    def digest(self) -> str:
        """BLAKE3 (hex) of the canonical line; the next entry's `prev`."""
        return blake3.blake3(self.canonical()).hexdigest()

    def verify(self, broker: IdentityCard) -> None:
        """Check the broker's signature; raise VerificationError if bad."""
        unsigned = self.model_dump(mode="json", exclude={"signature"})
        broker.verify(signing_payload(ENTRY_PURPOSE, unsigned), bytes.fromhex(self.signature))


class Checkpoint(BaseModel):
    """The broker's signed statement of the log's head; members keep these."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["cleanroom-audit-checkpoint/1"] = CHECKPOINT_FORMAT
    log_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    seq: int = Field(ge=0)
    head: str = Field(pattern=_HEX32)
    at: datetime
    signature: str = Field(pattern=r"^[0-9a-f]{128}$")

    def verify(self, broker: IdentityCard) -> None:
        """Check the broker's signature; raise VerificationError if bad."""
        unsigned = self.model_dump(mode="json", exclude={"signature"})
        try:
            broker.verify(signing_payload(CHECKPOINT_PURPOSE, unsigned), bytes.fromhex(self.signature))
        except VerificationError:
            raise VerificationError(
                f"the checkpoint at seq {self.seq} is not signed by broker {broker.name}"
            ) from None


@dataclass(frozen=True)
class VerifiedLog:
    """An intact log: its id (None when empty), entries, head digest and checkpoints checked."""

    log_id: str | None
    entries: tuple[AuditEntry, ...]
    head: str
    checkpoints: int


class AuditLog:
    """An append-only audit log file. Appending needs the broker's identity."""

    def __init__(self, path: Path, identity: Identity | None = None):
        self.path = Path(path)
        self.identity = identity

    def append(self, kind: str, body: dict[str, Any]) -> AuditEntry:
        """Sign and durably append one entry; safe against concurrent appenders.

        A torn last line left by an interrupted write is cut off first and the
        cut is recorded in a "recovery" entry (its size and digest).
        """
        identity = self._signer()
        if not _KIND.fullmatch(kind):
            raise InputError("an audit entry kind must be 1-64 of a-z 0-9 _ . - starting with a letter")
        body = _json_body(body)
        with self._locked(fcntl.LOCK_EX, create=True) as fd:
            line, end, torn = _read_tail(fd)
            head = self._head_entry(line)
            if torn:
                fragment = os.pread(fd, torn, end)
                os.ftruncate(fd, end)
                recovery = {"discarded_bytes": torn, "discarded_digest": blake3.blake3(fragment).hexdigest()}
                head = self._write(fd, identity, head, RECOVERY_KIND, recovery)
            return self._write(fd, identity, head, kind, body)

    def checkpoint(self) -> Checkpoint:
        """A signed checkpoint of the current head (the log must not be empty)."""
        identity = self._signer()
        with self._locked(fcntl.LOCK_SH, create=False) as fd:
            head = self._head_entry(_read_tail(fd)[0])
        if head is None:
            raise InputError(f"audit log {self.path.name} is empty; append an entry before a checkpoint")
        unsigned = {
            "format": CHECKPOINT_FORMAT,
            "log_id": head.log_id,
            "seq": head.seq,
            "head": head.digest,
            "at": datetime.now(UTC),
        }
        draft = Checkpoint(**unsigned, signature="0" * 128)
        payload = signing_payload(CHECKPOINT_PURPOSE, draft.model_dump(mode="json", exclude={"signature"}))
        return draft.model_copy(update={"signature": identity.sign(payload).hex()})

    def entries(self) -> list[AuditEntry]:
        """Every complete entry, parsed but not verified (use `verify_log` for that)."""
        return [entry for entry, _ in _parse_lines(_complete_lines(self.path)[0])]

    def _signer(self) -> Identity:
        if self.identity is None:
            raise KeyMaterialError("writing to the audit log needs the broker's identity")
        return self.identity

    @contextlib.contextmanager
    def _locked(self, mode: int, *, create: bool) -> Iterator[int]:
        flags = os.O_RDWR | os.O_APPEND | (os.O_CREAT if create else 0)
        existed = self.path.exists()
        try:
            fd = os.open(self.path, flags, 0o644)
        except FileNotFoundError:
            raise InputError(f"no audit log at {self.path.name}") from None
        try:
            if not existed:
                _fsync_dir(self.path.parent)
            fcntl.flock(fd, mode)
            yield fd
        finally:
            os.close(fd)

    def _head_entry(self, line: bytes | None) -> AuditEntry | None:
        if line is None:
            return None
        try:
            head = _parse_entry(line)
            head.verify(self._signer().card)
        except (ValueError, VerificationError):
            raise VerificationError(
                f"the last entry of audit log {self.path.name} is unreadable or not signed by this broker; "
                "run `cleanroom audit verify`"
            ) from None
        return head

    @staticmethod
    def _write(fd: int, identity: Identity, head: AuditEntry | None, kind: str, body: dict[str, Any]) -> AuditEntry:
        unsigned = {
            "log_id": head.log_id if head else secrets.token_hex(16),
            "seq": head.seq + 1 if head else 0,
            "at": datetime.now(UTC),
            "kind": kind,
            "body": body,
            "prev": head.digest if head else GENESIS,
        }
        draft = AuditEntry(**unsigned, signature="0" * 128)
        payload = signing_payload(ENTRY_PURPOSE, draft.model_dump(mode="json", exclude={"signature"}))
        entry = draft.model_copy(update={"signature": identity.sign(payload).hex()})
        data = entry.canonical() + b"\n"
        if os.write(fd, data) != len(data):
            raise OSError("short write to the audit log")
        os.fsync(fd)
        return entry


def verify_log(path: Path, broker: IdentityCard, checkpoints: Sequence[Checkpoint] = ()) -> VerifiedLog:
    """Verify the chain, every signature, and the log against members' checkpoints.

    Raises VerificationError naming the first bad seq. Without a checkpoint,
    the newest entries could be removed unnoticed: only a checkpoint pins the end.
    """
    path = Path(path)
    lines, torn = _complete_lines(path)
    entries: list[AuditEntry] = []
    head = GENESIS
    for entry, line_seq in _parse_lines(lines):
        if entry.seq != line_seq:
            raise VerificationError(
                f"seq {line_seq}: the entry in its place carries seq {entry.seq} "
                "(entries were reordered, inserted or deleted)"
            )
        if entries and entry.log_id != entries[0].log_id:
            raise VerificationError(f"seq {line_seq}: the entry belongs to another log")
        if entry.prev != head:
            raise VerificationError(
                f"seq {line_seq}: does not chain to the entry before it (an entry was edited, inserted or deleted)"
            )
        try:
            entry.verify(broker)
        except VerificationError:
            raise VerificationError(
                f"seq {line_seq}: the signature is not the broker's ({broker.name}); the entry was edited or forged"
            ) from None
        entries.append(entry)
        head = entry.digest
    if torn:
        raise VerificationError(
            f"seq {len(entries)}: the last line is incomplete (an interrupted write); "
            "the next append discards it and records the recovery"
        )
    log_id = entries[0].log_id if entries else None
    for checkpoint in checkpoints:
        _check_checkpoint(checkpoint, broker, log_id, entries)
    return VerifiedLog(log_id=log_id, entries=tuple(entries), head=head, checkpoints=len(checkpoints))


def save_checkpoint(checkpoint: Checkpoint, path: Path) -> None:
    """Write a checkpoint file (JSON) atomically."""
    write_atomic(Path(path), checkpoint.model_dump_json(indent=2).encode() + b"\n")


def load_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint file; its signature is checked by `verify_log` or `Checkpoint.verify`."""
    path = Path(path)
    try:
        return Checkpoint.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        raise InputError(f"no checkpoint at {path.name}") from None
    except OSError:
        raise InputError(f"checkpoint {path.name} cannot be read") from None
    except ValidationError as exc:
        fields = ", ".join(".".join(map(str, e["loc"])) or "file" for e in exc.errors())
        raise VerificationError(f"{path.name} is not a valid audit checkpoint ({fields})") from None


def _check_checkpoint(
    checkpoint: Checkpoint, broker: IdentityCard, log_id: str | None, entries: list[AuditEntry]
) -> None:
    checkpoint.verify(broker)
    if log_id is not None and checkpoint.log_id != log_id:
        raise VerificationError(f"a checkpoint (seq {checkpoint.seq}) belongs to another audit log")
    if checkpoint.seq >= len(entries):
        raise VerificationError(
            f"seq {len(entries)}: the log ends there but a checkpoint covers seq {checkpoint.seq} "
            "(the tail was truncated)"
        )
    if entries[checkpoint.seq].digest != checkpoint.head:
        raise VerificationError(
            f"seq {checkpoint.seq}: differs from the checkpointed head "
            "(the broker rewrote its history at or before this entry)"
        )


def _json_body(body: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InputError("an audit entry body must be a dict")
    try:
        return json.loads(json.dumps(body, allow_nan=False))
    except (TypeError, ValueError):
        raise InputError("an audit entry body must be JSON data with finite numbers") from None


def _parse_entry(line: bytes) -> AuditEntry:
    """Parse one line; it must be the entry's canonical form (ValueError otherwise)."""
    entry = AuditEntry.model_validate_json(line)
    if entry.canonical() != line:
        raise ValueError("not canonical")
    return entry


def _parse_lines(lines: list[bytes]) -> Iterator[tuple[AuditEntry, int]]:
    for seq, line in enumerate(lines):
        try:
            yield _parse_entry(line), seq
        except ValueError:
            raise VerificationError(f"seq {seq}: the line is not a well-formed entry (it was edited)") from None


def _complete_lines(path: Path) -> tuple[list[bytes], int]:
    """The complete lines of the log and the size of a torn last line (0 if none)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"no audit log at {path.name}") from None
    except OSError:
        raise InputError(f"audit log {path.name} cannot be read") from None
    end = data.rfind(b"\n") + 1
    return data[:end].splitlines(), len(data) - end


def _read_tail(fd: int) -> tuple[bytes | None, int, int]:
    """(last complete line or None, offset where complete lines end, torn bytes after it)."""
    size = os.fstat(fd).st_size
    start, buf = size, b""
    while start > 0 and buf.count(b"\n") < 2:
        step = min(_TAIL_CHUNK, start)
        start -= step
        buf = os.pread(fd, step, start) + buf
    last_nl = buf.rfind(b"\n")
    if last_nl < 0:
        return None, 0, size
    line_start = buf.rfind(b"\n", 0, last_nl) + 1
    return buf[line_start:last_nl], start + last_nl + 1, size - (start + last_nl + 1)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
