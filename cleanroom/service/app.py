"""The broker's HTTP service: a FastAPI app over the broker engine.

Every endpoint except `/v1/health`, `/v1/broker` and the OpenAPI documents
needs a signed request (see `cleanroom.service.auth`). Roles confine what a
member can do; a resource that is not the caller's answers exactly as one
that does not exist (404), so nobody can probe for other members' jobs,
bundles, releases or ceremony shares. Work that takes time (match and segment
jobs) runs in the background worker; uploads are streamed to disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import blake3
import polars as pl
from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from cleanroom.broker.campaign import (
    create_campaign,
    parse_campaign,
    record_sends,
    register_optouts,
)
from cleanroom.broker.job import BrokerState, JobRecord
from cleanroom.broker.releases import MANIFEST_FILE as RELEASE_MANIFEST
from cleanroom.broker.releases import RELEASE_FILE
from cleanroom.broker.releases import SIGNATURE_FILE as RELEASE_SIGNATURE
from cleanroom.broker.reports import load_report
from cleanroom.bundle import (
    MANIFEST_FILE,
    SIGNATURE_FILE,
    TOKENS_FILE,
    Manifest,
    verify_bundle,
    verify_manifest_signature,
)
from cleanroom.errors import CleanroomError, VerificationError
from cleanroom.fsutil import write_atomic
from cleanroom.keys.consortium import parse_consortium
from cleanroom.keys.identity import Identity, IdentityCard
from cleanroom.service import auth
from cleanroom.service.problems import (
    Problem,
    from_library,
    install,
    not_found,
    problem_response,
)
from cleanroom.service.storage import Store
from cleanroom.service.worker import Worker

ROLES = ("partner", "custodian", "coordinator", "admin")
UPLOAD_MAGIC = b"CRB1"
ENVELOPE_LIMIT = 1 << 20
JSON_LIMIT = 1 << 20
RELAY_MESSAGE_LIMIT = 64 << 10
UPLOAD_PATH = "/v1/bundles"
SENDS_LIMIT = 10_000  # sends per request (the client batches)
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_FP = r"[0-9a-f]{32}"
_RELAY_NAME = re.compile(rf"^(?:(accept|fingerprint)\.({_FP})|share\.({_FP})\.({_FP}))\.json$")
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Settings:
    """How a service instance runs; `cleanroom serve` fills it from flags."""

    data: Path
    identity: Identity
    max_upload_bytes: int = 4 << 30
    idle_timeout: float = 30.0
    max_attempts: int = 3
    verify_concurrency: int = 2


@dataclass(frozen=True)
class Member:
    fingerprint: str
    name: str
    role: str
    card: IdentityCard


# --- request and response models ---------------------------------------------------

class Enrolment(BaseModel):
    model_config = ConfigDict(extra="forbid")
    card: IdentityCard
    role: Literal["partner", "custodian", "coordinator", "admin"]


class MemberOut(BaseModel):
    name: str
    fingerprint: str
    role: str


class ConsortiumOut(BaseModel):
    consortium_id: str
    epoch: int
    digest: str
    members: list[str]


class BundleOut(BaseModel):
    digest: str
    owner: str
    kind: str
    consortium_id: str
    epoch: int
    bundle_id: str
    rows: int
    size: int
    uploaded_at: float


class JobIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    consortium_id: str
    epoch: int = Field(ge=0)
    references: list[str] | None = Field(None, description="Reference bundle digests, voter file first; default: the latest of each custodian")
    partners: list[str] | None = Field(None, description="Partner bundle digests; default: the latest of each partner")
    crosstabs: list[list[str]] = Field(default_factory=list)


class SegmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    where: str = Field(max_length=2000, description="Filter over allowed attributes, SQL WHERE syntax")


class JobOut(BaseModel):
    id: str
    kind: str
    parent: str | None
    consortium_id: str
    epoch: int
    state: str
    attempts: int
    error: str | None
    engine_job_id: str | None
    created_at: float
    updated_at: float


class ReleaseOut(BaseModel):
    release_id: str
    job_id: str
    rows: int
    files: list[str]


class CampaignOut(BaseModel):
    id: str
    job_id: str
    campaign_id: str
    name: str
    definition: dict[str, Any]
    created_at: float


class RunIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    at: float | None = Field(None, description="Run time (Unix seconds); default now")


class OptOutIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    digest: str = Field(pattern=r"^[0-9a-f]{64}$", description="An uploaded opt-out bundle of mine")


class SendIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    handle: str = Field(pattern=r"^[0-9a-f]{32}$", description="A handle of mine (hex) from a campaign release")
    sent_at: datetime


class SendsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sends: list[SendIn] = Field(max_length=SENDS_LIMIT)


class Envelope(BaseModel):
    model_config = ConfigDict(extra="forbid")
    manifest: str = Field(description="manifest.json text, exactly as signed")
    signature: str = Field(description="manifest.sig (hex)")


class Uploaded(BaseModel):
    digest: str
    bundle_id: str
    rows: int
    size: int
    created: bool


async def caller(request: Request) -> Member:
    """The authenticated member of a (small-bodied) request."""
    body = await request.body()
    return await run_in_threadpool(request.app.state.check_signature, request, auth.body_digest(body))


Caller = Annotated[Member, Depends(caller)]


# --- middleware ----------------------------------------------------------------------

class BodyLimit:
    """Refuse bodies above `limit` on every endpoint but the streamed upload (which has its own)."""

    def __init__(self, app, limit: int = JSON_LIMIT):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or (scope["path"] == UPLOAD_PATH and scope["method"] == "POST"):
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers", ())).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            response = problem_response(_too_large(self.limit))
            return await response(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _too_large(self.limit)
            return message

        await self.app(scope, limited, send)


def _too_large(limit: int) -> Problem:
    return Problem(413, "too-large", "Request too large", f"the body exceeds the limit of {limit} bytes")


# --- the app -------------------------------------------------------------------------

def create_app(settings: Settings) -> FastAPI:
    store = Store(settings.data)
    store.clean_partial_files()
    state = BrokerState(store.broker_dir, settings.identity)
    worker = Worker(store, state, max_attempts=settings.max_attempts)
    verify_slots = asyncio.Semaphore(settings.verify_concurrency)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        worker.start()
        yield
        worker.stop()

    app = FastAPI(
        title="cleanroom broker",
        version="1",
        summary="Signed-request broker service: uploads, match jobs, reports, releases, ceremony relay.",
        lifespan=lifespan,
    )
    app.add_middleware(BodyLimit)
    install(app)
    app.state.store, app.state.worker, app.state.settings = store, worker, settings

    # --- authentication ---------------------------------------------------------
    def check_signature(request: Request, digest: str | None) -> Member:
        """Verify the signed headers; `digest` None defers the body check (streamed uploads)."""
        signed = auth.SignedHeaders.parse(request.headers)
        if signed is None:
            raise _unauthorized("the request is not signed (cleanroom-* headers missing or malformed)")
        if not signed.fresh():
            raise _unauthorized(f"the request timestamp is more than {auth.CLOCK_SKEW_SECONDS} s off the server clock")
        row = store.one("SELECT * FROM members WHERE fingerprint = ?", signed.key)
        target = request.scope.get("raw_path", request.url.path.encode()).decode("latin-1")
        if request.scope.get("query_string"):
            target += "?" + request.scope["query_string"].decode("latin-1")
        card = IdentityCard.model_validate_json(row["card"]) if row else None
        if card is None or not signed.verify(card, request.method, target):
            raise _unauthorized("the request is not signed by an enrolled member")
        if digest is not None and digest != signed.digest:
            raise _unauthorized("the body does not match the signed digest")
        if not store.use_nonce(signed.key, signed.nonce, signed.timestamp):
            raise _unauthorized("the request nonce was already used (a replay)")
        request.state.signed_digest = signed.digest
        return Member(row["fingerprint"], row["name"], row["role"], card)

    app.state.check_signature = check_signature

    # --- public --------------------------------------------------------------------
    @app.get("/v1/health", tags=["service"])
    def health() -> dict[str, str]:
        """Liveness check (no signature needed)."""
        return {"status": "ok"}

    @app.get("/v1/broker", tags=["service"])
    def broker_card() -> IdentityCard:
        """The broker's identity card: it signs releases and the audit log."""
        return settings.identity.card

    @app.get("/v1/me", tags=["members"])
    def me(member: Caller) -> MemberOut:
        """Who the service takes the caller for."""
        return MemberOut(name=member.name, fingerprint=member.fingerprint, role=member.role)

    # --- members -------------------------------------------------------------------
    @app.post("/v1/members", tags=["members"], status_code=201)
    def enrol(body: Enrolment, member: Caller, response: Response) -> MemberOut:
        """Enrol a member from its identity card (broker admin only); re-enrolling the same is a no-op."""
        _require(member, "admin", action="enrol members")
        card = body.card
        with store.write() as con:
            old = con.execute("SELECT * FROM members WHERE fingerprint = ? OR name = ?",
                              (card.fingerprint, card.name)).fetchall()
            if old:
                if len(old) == 1 and old[0]["fingerprint"] == card.fingerprint and old[0]["role"] == body.role:
                    response.status_code = 200
                    return MemberOut(name=card.name, fingerprint=card.fingerprint, role=body.role)
                raise Problem(409, "conflict", "Already enrolled",
                              "a member with this name or card is already enrolled with other details")
            con.execute("INSERT INTO members (fingerprint, name, role, card, enrolled_at, enrolled_by) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        (card.fingerprint, card.name, body.role, card.model_dump_json(), time.time(), member.fingerprint))
        state.audit.append("service.enrol", {"member": card.name, "fingerprint": card.fingerprint, "role": body.role})
        return MemberOut(name=card.name, fingerprint=card.fingerprint, role=body.role)

    @app.get("/v1/members", tags=["members"])
    def members(member: Caller) -> list[MemberOut]:
        """Enrolled members (admin and coordinator)."""
        _require(member, "admin", "coordinator", action="list members")
        return [MemberOut(name=r["name"], fingerprint=r["fingerprint"], role=r["role"])
                for r in store.all("SELECT * FROM members ORDER BY enrolled_at")]

    # --- consortia -----------------------------------------------------------------
    @app.post("/v1/consortia", tags=["consortia"], status_code=201)
    def register_consortium(request: Request, member: Caller, response: Response) -> ConsortiumOut:
        """Register a signed consortium document (its convenor or the broker admin)."""
        doc = parse_consortium(_cached_body(request), label="the consortium document")
        if member.role != "admin" and member.fingerprint != doc.body.convenor:
            raise Problem(403, "forbidden", "Forbidden", "only the document's convenor or the broker admin can register it")
        with store.write() as con:
            old = con.execute("SELECT digest FROM consortia WHERE consortium_id = ? AND epoch = ?",
                              (doc.consortium_id, doc.epoch)).fetchone()
            if old is not None and old["digest"] != doc.digest:
                raise Problem(409, "conflict", "Already registered",
                              f"{doc.consortium_id} epoch {doc.epoch} is registered with another document")
            if old is None:
                con.execute("INSERT INTO consortia VALUES (?, ?, ?, ?, ?, ?)",
                            (doc.consortium_id, doc.epoch, doc.digest, doc.model_dump_json().encode(),
                             member.fingerprint, time.time()))
            else:
                response.status_code = 200
        if old is None:
            state.audit.append("service.consortium", {"consortium_id": doc.consortium_id, "epoch": doc.epoch,
                                                       "digest": doc.digest})
        return _consortium_out(doc)

    @app.get("/v1/consortia/{consortium_id}/{epoch}", tags=["consortia"])
    def get_consortium(consortium_id: str, epoch: int, member: Caller) -> Response:
        """The registered consortium document (its members, the admin and coordinators)."""
        doc = _visible_consortium(member, consortium_id, epoch)
        return Response(doc.model_dump_json(indent=2), media_type="application/json")

    def _visible_consortium(member: Member, consortium_id: str, epoch: int):
        row = store.one("SELECT document FROM consortia WHERE consortium_id = ? AND epoch = ?", consortium_id, epoch)
        if row is None:
            raise not_found("consortium")
        doc = parse_consortium(bytes(row["document"]))
        if member.role not in ("admin", "coordinator") and member.fingerprint not in {c.fingerprint for c in doc.members}:
            raise not_found("consortium")
        return doc

    # --- relay -----------------------------------------------------------------------
    def _relay_topic(member: Member, consortium_id: str, epoch_segment: str) -> tuple[str, set[str]]:
        match = re.fullmatch(r"epoch-(\d{1,9})", epoch_segment)
        if not _ID.match(consortium_id) or not match:
            raise not_found("relay topic")
        row = store.one("SELECT document FROM consortia WHERE consortium_id = ? AND epoch = ?",
                        consortium_id, int(match.group(1)))
        if row is None:
            raise not_found("relay topic")
        fingerprints = {c.fingerprint for c in parse_consortium(bytes(row["document"])).members}
        if member.fingerprint not in fingerprints:
            raise not_found("relay topic")
        return f"{consortium_id}/{epoch_segment}", fingerprints

    @app.get("/v1/relay/{consortium_id}/{epoch_segment}/messages", tags=["ceremony relay"])
    def relay_list(consortium_id: str, epoch_segment: str, member: Caller) -> list[str]:
        """Names of the ceremony messages visible to me: acceptances, fingerprints, shares from or to me."""
        topic, _ = _relay_topic(member, consortium_id, epoch_segment)
        names = [r["name"] for r in store.all("SELECT name FROM relay WHERE topic = ? ORDER BY name", topic)]
        return [n for n in names if _relay_visible(n, member.fingerprint)]

    @app.get("/v1/relay/{consortium_id}/{epoch_segment}/messages/{name}", tags=["ceremony relay"])
    def relay_get(consortium_id: str, epoch_segment: str, name: str, member: Caller) -> Response:
        """One message's bytes; shares are visible only to their sender and recipient."""
        topic, _ = _relay_topic(member, consortium_id, epoch_segment)
        if not _relay_visible(name, member.fingerprint):
            raise not_found("relay message")
        row = store.one("SELECT data FROM relay WHERE topic = ? AND name = ?", topic, name)
        if row is None:
            raise not_found("relay message")
        return Response(bytes(row["data"]), media_type="application/octet-stream")

    @app.put("/v1/relay/{consortium_id}/{epoch_segment}/messages/{name}", tags=["ceremony relay"],
             status_code=201)
    async def relay_put(consortium_id: str, epoch_segment: str, name: str, request: Request,
                        member: Caller, response: Response) -> dict[str, str]:
        """Post a message I author (my acceptance, my shares, my fingerprint); write-once."""
        data = await request.body()
        return await run_in_threadpool(_relay_put, consortium_id, epoch_segment, name, data, member, response)

    def _relay_put(consortium_id, epoch_segment, name, data, member, response):
        topic, fingerprints = _relay_topic(member, consortium_id, epoch_segment)
        parsed = _RELAY_NAME.match(name)
        if parsed is None:
            raise Problem(400, "invalid-input", "Invalid message name",
                          "message names are accept.<fp>.json, share.<from>.<to>.json or fingerprint.<fp>.json")
        author = parsed.group(2) or parsed.group(3)
        if author != member.fingerprint:
            raise Problem(403, "forbidden", "Forbidden", "you can post only messages you author")
        if parsed.group(4) and parsed.group(4) not in fingerprints:
            raise Problem(400, "invalid-input", "Invalid message name", "a share must be addressed to a member")
        if len(data) > RELAY_MESSAGE_LIMIT or not data:
            raise Problem(400, "invalid-input", "Invalid message", f"a message is 1 to {RELAY_MESSAGE_LIMIT} bytes")
        with store.write() as con:
            old = con.execute("SELECT data FROM relay WHERE topic = ? AND name = ?", (topic, name)).fetchone()
            if old is not None:
                if bytes(old["data"]) != data:
                    raise Problem(409, "conflict", "Already posted", "the relay already holds a different message under this name")
                response.status_code = 200
                return {"name": name, "status": "unchanged"}
            con.execute("INSERT INTO relay VALUES (?, ?, ?, ?, ?)", (topic, name, data, member.fingerprint, time.time()))
        return {"name": name, "status": "stored"}

    # --- bundles -------------------------------------------------------------------
    @app.post(UPLOAD_PATH, tags=["bundles"], status_code=201, openapi_extra={
        "requestBody": {"required": True, "content": {"application/vnd.cleanroom.bundle": {
            "schema": {"type": "string", "format": "binary"}}}},
        "description": "Body: b'CRB1', a 4-byte big-endian envelope length, the envelope JSON "
                       "{manifest: <manifest.json text>, signature: <hex>}, then tokens.parquet.",
    })
    async def upload(request: Request, response: Response) -> Uploaded:
        """Upload a bundle (streamed, size-limited, verified); re-sending the same bundle is a no-op."""
        try:
            member = await run_in_threadpool(check_signature, request, None)
            _require(member, "partner", "custodian", action="upload bundles")
        except Problem as problem:  # refused before reading: close instead of draining the body
            problem.headers = {**(problem.headers or {}), "Connection": "close"}
            raise
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > settings.max_upload_bytes + ENVELOPE_LIMIT):
            raise Problem(413, "too-large", "Request too large",
                          f"the body exceeds the limit of {settings.max_upload_bytes} bytes", {"Connection": "close"})
        return await _Upload(request, member).run(response)

    class _Upload:
        def __init__(self, request: Request, member: Member):
            self.request, self.member = request, member
            self.hasher = blake3.blake3()
            self.buffer = b""
            self.stream = request.stream().__aiter__()
            self.exhausted = False

        async def _next(self) -> bytes:
            try:
                chunk = await asyncio.wait_for(self.stream.__anext__(), timeout=settings.idle_timeout)
            except StopAsyncIteration:
                self.exhausted = True
                return b""
            except TimeoutError:
                raise Problem(408, "timeout", "Upload timed out",
                              f"no data for {settings.idle_timeout:g} s; send the bundle again") from None
            self.hasher.update(chunk)
            return chunk

        async def _read_exactly(self, n: int) -> bytes:
            while len(self.buffer) < n and not self.exhausted:
                self.buffer += await self._next()
            if len(self.buffer) < n:
                raise Problem(400, "invalid-upload", "Invalid upload", "the upload ended early")
            head, self.buffer = self.buffer[:n], self.buffer[n:]
            return head

        async def run(self, response: Response) -> Uploaded:
            try:
                return await self._run(response)
            except ClientDisconnect:
                raise Problem(400, "invalid-upload", "Upload interrupted", "the client disconnected") from None
            except (Problem, CleanroomError) as exc:
                if self.exhausted:
                    raise
                # refused before the body ended: answer and close, so the rest is never read
                problem = exc if isinstance(exc, Problem) else from_library(exc)
                problem.headers = {**(problem.headers or {}), "Connection": "close"}
                raise problem from None

        async def _run(self, response: Response) -> Uploaded:
            header = await self._read_exactly(8)
            size = int.from_bytes(header[4:], "big")
            if header[:4] != UPLOAD_MAGIC or size > ENVELOPE_LIMIT:
                raise Problem(400, "invalid-upload", "Invalid upload", "the body is not a cleanroom bundle upload")
            try:
                envelope = json.loads(await self._read_exactly(size))
                manifest_bytes = envelope["manifest"].encode()
                signature = envelope["signature"]
                manifest = Manifest.model_validate_json(manifest_bytes)
            except (ValueError, KeyError, TypeError, AttributeError):
                raise VerificationError("the upload's manifest is not a valid bundle manifest") from None
            verify_manifest_signature(manifest, manifest_bytes, str(signature))
            await run_in_threadpool(_admit, self.member, manifest)
            digest = manifest.tokens_digest
            manifest_digest = blake3.blake3(manifest_bytes).hexdigest()
            existing = await run_in_threadpool(store.one, "SELECT * FROM bundles WHERE digest = ?", digest)
            if existing is not None:
                if existing["owner"] != self.member.fingerprint or existing["manifest_digest"] != manifest_digest:
                    raise Problem(409, "conflict", "Conflicting bundle",
                                  "a different bundle with these tokens is already stored")
                await self._drain()  # the client is still sending: read and discard, then answer
                if self.hasher.hexdigest() != self.request.state.signed_digest:
                    raise _unauthorized("the body does not match the signed digest")
                response.status_code = 200
                return _uploaded(existing, created=False)
            staging = Path(await run_in_threadpool(_mkdtemp))
            try:
                folder = staging / "bundle"
                folder.mkdir()
                total = await self._spool(folder / TOKENS_FILE)
                if self.hasher.hexdigest() != self.request.state.signed_digest:
                    raise _unauthorized("the body does not match the signed digest")
                async with verify_slots:  # verification reads the whole file: bound how many run at once
                    return await run_in_threadpool(self._commit, folder, manifest, manifest_bytes, signature,
                                                   manifest_digest, total, response)
            finally:
                await run_in_threadpool(shutil.rmtree, staging, True)

        async def _drain(self) -> None:
            total = len(self.buffer)
            while not self.exhausted:
                total += len(await self._next())
                if total > settings.max_upload_bytes:
                    raise _too_large(settings.max_upload_bytes)

        async def _spool(self, path: Path) -> int:
            limit = settings.max_upload_bytes
            total = 0
            # page-cache writes of one received chunk at a time; the final fsync is the only long wait
            with open(path, "wb") as f:  # noqa: ASYNC230
                chunk = self.buffer
                while True:
                    if chunk:
                        total += len(chunk)
                        if total > limit:
                            raise _too_large(limit)
                        f.write(chunk)
                    if self.exhausted:
                        break
                    chunk = await self._next()
                f.flush()
                os.fsync(f.fileno())
            return total

        def _commit(self, folder, manifest, manifest_bytes, signature, manifest_digest, total, response):
            write_atomic(folder / MANIFEST_FILE, manifest_bytes)
            write_atomic(folder / SIGNATURE_FILE, (str(signature) + "\n").encode())
            verified = verify_bundle(folder, signer=self.member.card)
            digest = verified.tokens_digest
            final = store.bundle_dir(digest)
            try:
                os.rename(folder, final)
            except OSError:
                if not final.is_dir():
                    raise
            _fsync_dir(final.parent)
            row = (digest, self.member.fingerprint, verified.kind, verified.consortium_id, verified.epoch,
                   verified.bundle_id, manifest_digest, verified.row_count, total, time.time())
            with store.write() as con:
                con.execute("INSERT OR IGNORE INTO bundles VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
            state.audit.append("service.upload", {"owner": self.member.name, "kind": verified.kind,
                                                  "digest": digest, "rows": verified.row_count})
            return _uploaded(store.one("SELECT * FROM bundles WHERE digest = ?", digest), created=True)

    @app.post("/v1/bundles/check", tags=["bundles"])
    def check_upload(body: Envelope, member: Caller) -> dict[str, str]:
        """Preflight an upload with its manifest only: `new` (send it), `stored` (a no-op), or the refusal."""
        _require(member, "partner", "custodian", action="upload bundles")
        try:
            manifest = Manifest.model_validate_json(body.manifest)
        except ValueError:
            raise VerificationError("the upload's manifest is not a valid bundle manifest") from None
        verify_manifest_signature(manifest, body.manifest.encode(), str(body.signature))
        _admit(member, manifest)
        existing = store.one("SELECT * FROM bundles WHERE digest = ?", manifest.tokens_digest)
        if existing is None:
            return {"status": "new", "digest": manifest.tokens_digest}
        if existing["owner"] != member.fingerprint or existing["manifest_digest"] != blake3.blake3(body.manifest.encode()).hexdigest():
            raise Problem(409, "conflict", "Conflicting bundle", "a different bundle with these tokens is already stored")
        return {"status": "stored", "digest": manifest.tokens_digest}

    def _mkdtemp() -> str:
        import tempfile
        return tempfile.mkdtemp(prefix="upload-", dir=store.tmp_dir)

    def _admit(member: Member, manifest: Manifest) -> None:
        """Checks on the claimed manifest before any byte of the tokens is stored."""
        if manifest.producer.fingerprint != member.fingerprint:
            raise Problem(403, "forbidden", "Forbidden", "you can upload only bundles you signed")
        wanted = ("reference",) if member.role == "custodian" else ("partner", "optout")
        if manifest.kind not in wanted:
            raise Problem(403, "forbidden", "Forbidden", f"a {member.role} uploads only {' or '.join(wanted)} bundles")
        row = store.one("SELECT document FROM consortia WHERE consortium_id = ? AND epoch = ?",
                        manifest.consortium_id, manifest.epoch)
        if row is None:
            raise Problem(422, "verification-failed", "Verification failed",
                          "the bundle's consortium epoch is not registered with this service")
        doc = parse_consortium(bytes(row["document"]))
        if member.fingerprint not in {c.fingerprint for c in doc.members}:
            raise Problem(403, "forbidden", "Forbidden", "you are not a member of the bundle's consortium")
        allowed = set(doc.policy.clear_attributes) if manifest.kind == "reference" else set()
        extra = sorted(set(manifest.attributes) - allowed)
        if extra:
            raise Problem(422, "verification-failed", "Verification failed",
                          "the bundle carries columns other than handles, tokens and allowed attributes: "
                          + ", ".join(repr(e)[:66] for e in extra[:5]))

    @app.get("/v1/bundles", tags=["bundles"])
    def list_bundles(member: Caller) -> list[BundleOut]:
        """My bundles; coordinators and the admin see every bundle's metadata (never its content)."""
        if member.role in ("admin", "coordinator"):
            rows = store.all("SELECT * FROM bundles ORDER BY uploaded_at")
        else:
            rows = store.all("SELECT * FROM bundles WHERE owner = ? ORDER BY uploaded_at", member.fingerprint)
        return [_bundle_out(r) for r in rows]

    @app.get("/v1/bundles/{digest}", tags=["bundles"])
    def get_bundle(digest: str, member: Caller) -> BundleOut:
        """One bundle's metadata."""
        row = store.one("SELECT * FROM bundles WHERE digest = ?", digest)
        if row is None or (member.role not in ("admin", "coordinator") and row["owner"] != member.fingerprint):
            raise not_found("bundle")
        return _bundle_out(row)

    def _bundle_out(row) -> BundleOut:
        owner = store.one("SELECT name FROM members WHERE fingerprint = ?", row["owner"])
        return BundleOut(digest=row["digest"], owner=owner["name"] if owner else row["owner"], kind=row["kind"],
                         consortium_id=row["consortium_id"], epoch=row["epoch"], bundle_id=row["bundle_id"],
                         rows=row["rows"], size=row["size"], uploaded_at=row["uploaded_at"])

    # --- jobs ----------------------------------------------------------------------
    @app.post("/v1/jobs", tags=["jobs"], status_code=202)
    def create_job(body: JobIn, member: Caller) -> JobOut:
        """Queue a match job over uploaded bundles of one consortium epoch (coordinator)."""
        _require(member, "coordinator", action="create jobs")
        if store.one("SELECT 1 FROM consortia WHERE consortium_id = ? AND epoch = ?", body.consortium_id, body.epoch) is None:
            raise not_found("consortium")
        refs = _pick(body, "reference", body.references)
        parts = _pick(body, "partner", body.partners)
        if not refs or not parts:
            raise Problem(422, "verification-failed", "Verification failed",
                          "a job needs at least one reference bundle and one partner bundle of this consortium epoch")
        job_id = "job-" + secrets.token_hex(12)
        params = {"references": [r["digest"] for r in refs], "partners": [p["digest"] for p in parts],
                  "crosstabs": body.crosstabs}
        now = time.time()
        with store.write() as con:
            con.execute("INSERT INTO jobs (id, kind, parent, consortium_id, epoch, params, state, created_by, "
                        "created_at, updated_at) VALUES (?, 'match', NULL, ?, ?, ?, 'queued', ?, ?, ?)",
                        (job_id, body.consortium_id, body.epoch, json.dumps(params), member.fingerprint, now, now))
            con.executemany("INSERT OR IGNORE INTO job_bundles VALUES (?, ?, ?, ?)",
                            [(job_id, r["digest"], r["owner"], r["kind"]) for r in [*refs, *parts]])
        state.audit.append("service.job", {"job": job_id, "by": member.name, "bundles": len(refs) + len(parts)})
        worker.wake()
        return _job_out(store.one("SELECT * FROM jobs WHERE id = ?", job_id))

    def _pick(body: JobIn, kind: str, digests: list[str] | None):
        if digests is None:
            return store.all(
                "SELECT * FROM bundles b WHERE kind = ? AND consortium_id = ? AND epoch = ? AND uploaded_at = "
                "(SELECT MAX(uploaded_at) FROM bundles c WHERE c.owner = b.owner AND c.kind = b.kind "
                "AND c.consortium_id = b.consortium_id AND c.epoch = b.epoch) ORDER BY uploaded_at",
                kind, body.consortium_id, body.epoch)
        rows = []
        for digest in digests:
            row = store.one("SELECT * FROM bundles WHERE digest = ?", digest)
            if row is None:
                raise not_found("bundle")
            if (row["kind"], row["consortium_id"], row["epoch"]) != (kind, body.consortium_id, body.epoch):
                raise Problem(422, "verification-failed", "Verification failed",
                              f"bundle {digest[:12]} is not a {kind} bundle of {body.consortium_id} epoch {body.epoch}")
            rows.append(row)
        return rows

    @app.get("/v1/jobs", tags=["jobs"])
    def list_jobs(member: Caller) -> list[JobOut]:
        """Jobs visible to me: all for coordinators and the admin, else those over my bundles."""
        if member.role in ("admin", "coordinator"):
            rows = store.all("SELECT * FROM jobs ORDER BY created_at")
        else:
            rows = store.all("SELECT * FROM jobs WHERE id IN (SELECT job_id FROM job_bundles WHERE owner = ?) "
                             "ORDER BY created_at", member.fingerprint)
        return [_job_out(r) for r in rows]

    def _visible_job(member: Member, job_id: str):
        row = store.one("SELECT * FROM jobs WHERE id = ?", job_id)
        if row is None:
            raise not_found("job")
        if member.role not in ("admin", "coordinator") and store.one(
            "SELECT 1 FROM job_bundles WHERE job_id = ? AND owner = ?", job_id, member.fingerprint
        ) is None:
            raise not_found("job")
        return row

    @app.get("/v1/jobs/{job_id}", tags=["jobs"])
    def job_status(job_id: str, member: Caller) -> JobOut:
        """A job's state: queued, running, done or failed (with the reason)."""
        return _job_out(_visible_job(member, job_id))

    @app.post("/v1/jobs/{job_id}/retry", tags=["jobs"], status_code=202)
    def retry_job(job_id: str, member: Caller) -> JobOut:
        """Queue a failed job again (coordinator or admin)."""
        _require(member, "coordinator", "admin", action="retry jobs")
        row = _visible_job(member, job_id)
        if row["state"] != "failed":
            raise Problem(409, "conflict", "Not failed", f"the job is {row['state']}; only a failed job is retried")
        with store.write() as con:
            con.execute("UPDATE jobs SET state = 'queued', attempts = 0, updated_at = ? WHERE id = ? AND state = 'failed'",
                        (time.time(), job_id))
        worker.wake()
        return _job_out(store.one("SELECT * FROM jobs WHERE id = ?", job_id))

    @app.get("/v1/jobs/{job_id}/report", tags=["jobs"])
    def report(job_id: str, member: Caller) -> Response:
        """The protected aggregate report of a finished match job."""
        row = _visible_job(member, job_id)
        if row["kind"] not in ("match", "campaign"):
            raise not_found("report")
        if row["state"] != "done":
            raise Problem(409, "not-ready", "Not ready", f"the job is {row['state']}")
        rep = load_report(store.job_dir(job_id) / "report")
        return Response(rep.model_dump_json(), media_type="application/json")

    @app.post("/v1/jobs/{job_id}/segments", tags=["jobs"], status_code=202)
    def create_segment(job_id: str, body: SegmentIn, member: Caller) -> JobOut:
        """Queue a segment release cut from a finished match job (coordinator)."""
        _require(member, "coordinator", action="create segments")
        parent = _visible_job(member, job_id)
        if parent["kind"] != "match" or parent["state"] != "done":
            raise Problem(409, "not-ready", "Not ready", "segments are cut from a finished match job")
        seg_id = "seg-" + secrets.token_hex(12)
        now = time.time()
        with store.write() as con:
            con.execute("INSERT INTO jobs (id, kind, parent, consortium_id, epoch, params, state, created_by, "
                        "created_at, updated_at) VALUES (?, 'segment', ?, ?, ?, ?, 'queued', ?, ?, ?)",
                        (seg_id, job_id, parent["consortium_id"], parent["epoch"], json.dumps({"where": body.where}),
                         member.fingerprint, now, now))
            con.execute("INSERT INTO job_bundles SELECT ?, digest, owner, role FROM job_bundles WHERE job_id = ?",
                        (seg_id, job_id))
        worker.wake()
        return _job_out(store.one("SELECT * FROM jobs WHERE id = ?", seg_id))

    @app.get("/v1/jobs/{job_id}/releases", tags=["releases"])
    def my_releases(job_id: str, member: Caller) -> list[ReleaseOut]:
        """My own releases of a job (partners only: handles never go to anyone else)."""
        _require(member, "partner", action="fetch releases (handles)")
        _visible_job(member, job_id)
        rows = store.all("SELECT * FROM releases WHERE job_id = ? AND recipient = ?", job_id, member.fingerprint)
        return [ReleaseOut(release_id=r["release_id"], job_id=job_id, rows=r["rows"],
                           files=[RELEASE_FILE, RELEASE_MANIFEST, RELEASE_SIGNATURE]) for r in rows]

    @app.get("/v1/jobs/{job_id}/releases/{release_id}/{file}", tags=["releases"])
    def release_file(job_id: str, release_id: str, file: str, member: Caller) -> FileResponse:
        """One file of my release."""
        _require(member, "partner", action="fetch releases (handles)")
        row = store.one("SELECT * FROM releases WHERE job_id = ? AND release_id = ? AND recipient = ?",
                        job_id, release_id, member.fingerprint)
        if row is None or file not in (RELEASE_FILE, RELEASE_MANIFEST, RELEASE_SIGNATURE):
            raise not_found("release")
        return FileResponse(store.root / row["folder"] / file, media_type="application/octet-stream")

    # --- campaigns -------------------------------------------------------------------
    def _finished_match(member: Member, job_id: str):
        row = _visible_job(member, job_id)
        if row["kind"] != "match" or row["state"] != "done":
            raise Problem(409, "not-ready", "Not ready", "campaigns work on a finished match job")
        return row

    def _campaign_out(row) -> CampaignOut:
        return CampaignOut(id=row["id"], job_id=row["job_id"], campaign_id=row["campaign_id"], name=row["name"],
                           definition=json.loads(row["definition"]), created_at=row["created_at"])

    def _recipient_name(job_id: str, member: Member) -> str:
        record = JobRecord.model_validate_json((store.job_dir(job_id) / "job.json").read_text())
        for name, card in record.recipients.items():
            if card.fingerprint == member.fingerprint:
                return name
        raise not_found("job")

    @app.post("/v1/jobs/{job_id}/campaigns", tags=["campaigns"], status_code=201)
    def define_campaign(job_id: str, body: dict[str, Any], member: Caller) -> CampaignOut:
        """Define a campaign on a finished match job (coordinator); `job_id` is filled in by the service."""
        _require(member, "coordinator", action="define campaigns")
        parent = _finished_match(member, job_id)
        campaign = parse_campaign({**body, "job_id": parent["engine_job_id"]})
        cid = "cmp-" + secrets.token_hex(12)
        create_campaign(campaign, store.job_dir(job_id), store.campaign_dir(cid), state=state)
        with store.write() as con:
            con.execute("INSERT INTO campaigns VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (cid, job_id, campaign.campaign_id, campaign.name, campaign.model_dump_json(),
                         member.fingerprint, time.time()))
        return _campaign_out(store.one("SELECT * FROM campaigns WHERE id = ?", cid))

    @app.get("/v1/campaigns", tags=["campaigns"])
    def list_campaigns(member: Caller) -> list[CampaignOut]:
        """Every campaign (coordinator, admin)."""
        _require(member, "coordinator", "admin", action="list campaigns")
        return [_campaign_out(r) for r in store.all("SELECT * FROM campaigns ORDER BY created_at")]

    @app.get("/v1/campaigns/{campaign}", tags=["campaigns"])
    def get_campaign(campaign: str, member: Caller) -> CampaignOut:
        """One campaign's definition (coordinator, admin)."""
        _require(member, "coordinator", "admin", action="read campaigns")
        row = store.one("SELECT * FROM campaigns WHERE id = ?", campaign)
        if row is None:
            raise not_found("campaign")
        return _campaign_out(row)

    @app.post("/v1/campaigns/{campaign}/runs", tags=["campaigns"], status_code=202)
    def run_campaign_now(campaign: str, body: RunIn, member: Caller) -> JobOut:
        """Queue a run: assignments released to each participating partner as a job's releases (coordinator)."""
        _require(member, "coordinator", action="run campaigns")
        row = store.one("SELECT * FROM campaigns WHERE id = ?", campaign)
        if row is None:
            raise not_found("campaign")
        parent = _finished_match(member, row["job_id"])
        run_id = "run-" + secrets.token_hex(12)
        now = time.time()
        params = {"campaign": campaign, "at": body.at if body.at is not None else now}
        with store.write() as con:
            con.execute("INSERT INTO jobs (id, kind, parent, consortium_id, epoch, params, state, created_by, "
                        "created_at, updated_at) VALUES (?, 'campaign', ?, ?, ?, ?, 'queued', ?, ?, ?)",
                        (run_id, row["job_id"], parent["consortium_id"], parent["epoch"], json.dumps(params),
                         member.fingerprint, now, now))
            con.execute("INSERT INTO job_bundles SELECT ?, digest, owner, role FROM job_bundles WHERE job_id = ?",
                        (run_id, row["job_id"]))
        worker.wake()
        return _job_out(store.one("SELECT * FROM jobs WHERE id = ?", run_id))

    @app.post("/v1/jobs/{job_id}/optouts", tags=["campaigns"])
    def register_optout_bundle(job_id: str, body: OptOutIn, member: Caller) -> dict[str, str]:
        """Record an uploaded opt-out bundle of mine against a finished job's persons (partner).

        The answer never says how many persons it named.
        """
        _require(member, "partner", action="register opt-outs")
        parent = _finished_match(member, job_id)
        bundle = store.one("SELECT * FROM bundles WHERE digest = ? AND owner = ?", body.digest, member.fingerprint)
        if bundle is None:
            raise not_found("bundle")
        params = json.loads(parent["params"])
        register_optouts(store.job_dir(job_id), store.bundle_dir(body.digest),
                         received_by=_recipient_name(job_id, member),
                         references=[store.bundle_dir(d) for d in params["references"]],
                         partners=[store.bundle_dir(d) for d in params["partners"]], state=state)
        return {"status": "recorded"}

    @app.post("/v1/jobs/{job_id}/sends", tags=["campaigns"])
    def report_sends(job_id: str, body: SendsIn, member: Caller) -> dict[str, int]:
        """Report my sends (handles of mine and when); they count toward the coalition's caps (partner)."""
        _require(member, "partner", action="report sends")
        _finished_match(member, job_id)
        frame = pl.DataFrame(
            {"handle": [s.handle for s in body.sends],
             "sent_at": [(s.sent_at if s.sent_at.tzinfo else s.sent_at.replace(tzinfo=UTC)).astimezone(UTC)
                         for s in body.sends]},
            schema={"handle": pl.String, "sent_at": pl.Datetime("us", "UTC")},
        )
        n = record_sends(store.job_dir(job_id), _recipient_name(job_id, member), frame, state=state)
        return {"recorded": n}

    # --- audit -----------------------------------------------------------------------
    @app.get("/v1/audit", tags=["audit"])
    def audit(member: Caller, after: Annotated[int, Query(ge=-1)] = -1,
              limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict[str, Any]]:
        """Entries of the broker's hash-chained audit log after sequence number `after` (admin)."""
        _require(member, "admin", action="read the audit log")
        if not state.audit.path.exists():
            return []
        entries = [e for e in state.audit.entries() if e.seq > after][:limit]
        return [e.model_dump(mode="json") for e in entries]

    return app


# --- helpers -----------------------------------------------------------------------

def _cached_body(request: Request) -> bytes:
    body = getattr(request, "_body", None)
    if body is None:
        raise Problem(400, "invalid-input", "Invalid input", "the request has no body")
    return body


def _unauthorized(detail: str) -> Problem:
    return Problem(401, "unauthorized", "Unauthorized", detail,
                   headers={"WWW-Authenticate": 'Cleanroom-Signature realm="cleanroom"'})


def _require(member: Member, *roles: str, action: str) -> None:
    if member.role not in roles:
        raise Problem(403, "forbidden", "Forbidden", f"a {member.role} cannot {action}")


def _relay_visible(name: str, me: str) -> bool:
    parsed = _RELAY_NAME.match(name)
    if parsed is None:
        return False
    return parsed.group(1) is not None or me in (parsed.group(3), parsed.group(4))


def _consortium_out(doc) -> ConsortiumOut:
    return ConsortiumOut(consortium_id=doc.consortium_id, epoch=doc.epoch, digest=doc.digest,
                         members=[c.name for c in doc.members])


def _job_out(row) -> JobOut:
    return JobOut(id=row["id"], kind=row["kind"], parent=row["parent"], consortium_id=row["consortium_id"],
                  epoch=row["epoch"], state=row["state"], attempts=row["attempts"], error=row["error"],
                  engine_job_id=row["engine_job_id"], created_at=row["created_at"], updated_at=row["updated_at"])


def _uploaded(row, *, created: bool) -> Uploaded:
    return Uploaded(digest=row["digest"], bundle_id=row["bundle_id"], rows=row["rows"], size=row["size"],
                    created=created)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = ["ROLES", "Settings", "create_app"]


def enrol_local(data: Path, card: IdentityCard, role: str) -> bool:
    """Enrol a member straight into a data folder (bootstraps the first admin); False if already there."""
    if role not in ROLES:
        raise CleanroomError(f"role must be one of {', '.join(ROLES)}")
    store = Store(data)
    with store.write() as con:
        old = con.execute("SELECT * FROM members WHERE fingerprint = ? OR name = ?",
                          (card.fingerprint, card.name)).fetchall()
        if old:
            if len(old) == 1 and old[0]["fingerprint"] == card.fingerprint and old[0]["role"] == role:
                return False
            raise CleanroomError(f"{card.name} or its card is already enrolled with other details")
        con.execute("INSERT INTO members (fingerprint, name, role, card, enrolled_at, enrolled_by) "
                    "VALUES (?, ?, ?, ?, ?, NULL)", (card.fingerprint, card.name, role, card.model_dump_json(), time.time()))
    return True


def serve(settings: Settings, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Run the service under uvicorn until interrupted; one process per data folder (locked)."""
    import fcntl

    import uvicorn

    settings.data.mkdir(parents=True, exist_ok=True)
    lock = open(settings.data / "service.lock", "w")  # noqa: SIM115 - held for the process lifetime
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise CleanroomError(f"another service is running on {settings.data.name}") from None
    app = create_app(settings)
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_keep_alive=30,
                timeout_graceful_shutdown=10)
