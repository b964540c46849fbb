"""Segment releases: each partner gets only its own handles, signed by the broker.

A release folder holds `release.parquet` (handle, person token), `release.json`
(what it is) and `release.sig` (the broker's signature over release.json).
The person token is keyed BLAKE3 of the broker's person id under a key drawn for
this one release and then discarded: it shows duplicates inside the partner's
own list and links to nothing else.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Literal

import polars as pl
from pydantic import BaseModel, Field, ValidationError

from cleanroom.bundle import file_digest
from cleanroom.errors import SpecError, VerificationError
from cleanroom.keyed_blake3 import keyed_digests
from cleanroom.keys.identity import SIGNATURE_PREFIX, Identity, IdentityCard

RELEASE_FILE = "release.parquet"
MANIFEST_FILE = "release.json"
SIGNATURE_FILE = "release.sig"
_SIGNING_DOMAIN = SIGNATURE_PREFIX + b"release-manifest\x00"


class ReleaseManifest(BaseModel):
    """Describes one partner's release; signed by the broker."""

    format: Literal["cleanroom-release/1"] = "cleanroom-release/1"
    release_id: str = Field(default_factory=lambda: secrets.token_hex(16))
    job_id: str
    segment: str
    recipient: str
    recipient_fingerprint: str
    rows: int
    file_digest: str
    broker: IdentityCard
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


def segment_filter(where: str | None, attributes: list[str], allowed: list[str] | None) -> pl.Expr:
    """A polars expression from a SQL-like filter over allowed reference attributes.

    No filter selects every person matched to the voter file.
    """
    if not where:
        return pl.col("registered")
    try:
        expr = pl.sql_expr(where)
        names = set(expr.meta.root_names())
    except Exception:  # noqa: BLE001 - polars raises several types for bad SQL
        raise SpecError("the segment filter is not a valid expression (SQL WHERE syntax)") from None
    for name in sorted(names):
        if allowed is not None and name not in allowed:
            raise SpecError(f"the segment filter uses {name!r}, which is not an allowed attribute")
        if name not in attributes:
            raise SpecError(f"the segment filter uses {name!r}, which no reference bundle carries")
    return pl.col("registered") & expr.fill_null(False)


def write_releases(
    segment: pl.DataFrame,
    *,
    where: str,
    job_id: str,
    recipients: dict[str, IdentityCard],
    broker: Identity,
    folder: Path,
    labels: Sequence[str] = (),
) -> dict[str, ReleaseManifest]:
    """One signed release per partner with its own rows of `segment` (partner, handle, person).

    `labels` names extra string columns of `segment` carried into the release
    as they are (a campaign's `sender`); they must say nothing about other
    partners' lists.
    """
    manifests = {}
    for name, card in recipients.items():
        person_token = partial(keyed_digests, key=secrets.token_bytes(32), size=16)
        own = (
            segment.filter(pl.col("partner") == name)
            .select(
                "handle",
                pl.col("person").cast(pl.String).map_batches(person_token, return_dtype=pl.Binary)
                .alias("person_token"),
                *labels,
            )
            .sort("handle")
        )
        target = folder / f"{_slug(name)}-{card.fingerprint[:8]}"
        target.mkdir(parents=True)
        own.write_parquet(target / RELEASE_FILE)
        manifest = ReleaseManifest(
            job_id=job_id, segment=where, recipient=name, recipient_fingerprint=card.fingerprint,
            rows=own.height, file_digest=file_digest(target / RELEASE_FILE), broker=broker.card,
        )
        body = manifest.model_dump_json(indent=2).encode() + b"\n"
        (target / MANIFEST_FILE).write_bytes(body)
        (target / SIGNATURE_FILE).write_text(broker.sign(_SIGNING_DOMAIN + body).hex() + "\n")
        manifests[name] = manifest
    return manifests


def verify_release(folder: Path, broker: IdentityCard | None = None) -> ReleaseManifest:
    """Check a release's signature and file digest; return its manifest."""
    folder = Path(folder)
    try:
        body = (folder / MANIFEST_FILE).read_bytes()
        manifest = ReleaseManifest.model_validate_json(body)
        signature = bytes.fromhex((folder / SIGNATURE_FILE).read_text().strip())
    except (OSError, ValueError, ValidationError):
        raise VerificationError(f"{folder.name} is not a readable release folder") from None
    if broker is not None and broker.fingerprint != manifest.broker.fingerprint:
        raise VerificationError(f"{folder.name} was not signed by broker {broker.name}")
    manifest.broker.verify(_SIGNING_DOMAIN + body, signature)
    if file_digest(folder / RELEASE_FILE) != manifest.file_digest:
        raise VerificationError(f"{folder.name}: {RELEASE_FILE} digest does not match the release")
    return manifest


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "partner"
