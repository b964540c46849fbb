"""The relay that carries ceremony messages between members.

A relay is untrusted: it stores and returns opaque, signed messages and could
drop, reorder or replay them, so every reader verifies what it gets. Messages
are write-once: a second, different message under the same name is refused.
A plain directory implements it today; the broker service will implement the
same three calls over HTTP.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Protocol

from cleanroom.errors import CleanroomError, InputError
from cleanroom.fsutil import write_atomic

_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class RelayError(CleanroomError):
    """The relay refused or could not serve a message."""


class Relay(Protocol):
    """Store and fetch named messages grouped by topic (e.g. one consortium epoch)."""

    def put(self, topic: str, name: str, data: bytes) -> None:
        """Store a message; identical re-puts are no-ops, different ones raise RelayError."""

    def list(self, topic: str) -> list[str]:
        """Names of the messages under `topic`, sorted."""

    def get(self, topic: str, name: str) -> bytes:
        """One message's bytes; RelayError if absent."""


def ceremony_topic(consortium_id: str, epoch: int) -> str:
    """The topic holding one consortium epoch's acceptances, shares and fingerprints."""
    return f"{consortium_id}/epoch-{epoch}"


def _check_segments(value: str, what: str) -> list[str]:
    parts = value.split("/")
    if not all(_SEGMENT.match(p) for p in parts):
        raise RelayError(f"invalid relay {what}")
    return parts


class DirectoryRelay:
    """A relay that is a folder (shared drive, synced folder, or a copy passed around)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"DirectoryRelay({self.root.name!r})"

    def _path(self, topic: str, name: str | None = None) -> Path:
        path = self.root.joinpath(*_check_segments(topic, "topic"))
        if name is not None:
            _check_segments(name, "message name")
            path = path / name
        return path

    def put(self, topic: str, name: str, data: bytes) -> None:
        path = self._path(topic, name)
        if path.exists():
            if path.read_bytes() == data:
                return
            raise RelayError(f"the relay already holds a different message {name}")
        write_atomic(path, data)

    def list(self, topic: str) -> list[str]:
        folder = self._path(topic)
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if p.is_file() and _SEGMENT.match(p.name))

    def get(self, topic: str, name: str) -> bytes:
        try:
            return self._path(topic, name).read_bytes()
        except FileNotFoundError:
            raise RelayError(f"the relay has no message {name}") from None


def open_relay(location: str | Path) -> Relay:
    """A relay from a command-line location: a folder, or the broker service at http(s)://.

    The service relay signs its requests with the identity named by
    CLEANROOM_IDENTITY or the client config (see `cleanroom.service.client`).
    """
    text = str(location)
    if re.match(r"^https?://", text):
        from cleanroom.service.client import HttpRelay

        return HttpRelay(text)
    if re.match(r"^[a-z][a-z0-9+.-]*://", text):
        raise InputError("a relay is a folder path or the broker service's http(s):// address")
    return DirectoryRelay(Path(text))
