"""Python client of the broker service (httpx), and the HTTP ceremony relay.

Every call is signed with the member's identity (see `cleanroom.service.auth`).
The server URL and identity come from arguments, else the environment
(`CLEANROOM_SERVER`, `CLEANROOM_IDENTITY`, optionally `CLEANROOM_BROKER_CARD`),
else a small TOML file (`CLEANROOM_CONFIG`, default
`~/.config/cleanroom/client.toml`) with `server`, `identity` and `broker_card`
keys. The passphrase comes from `CLEANROOM_PASSPHRASE` or a prompt, as for
every other command.
"""

from __future__ import annotations

import json
import os
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import blake3
import httpx
import polars as pl

from cleanroom.broker.releases import verify_release
from cleanroom.broker.reports import Report
from cleanroom.bundle import MANIFEST_FILE, SIGNATURE_FILE, TOKENS_FILE
from cleanroom.errors import CleanroomError, InputError
from cleanroom.fsutil import staged_dir
from cleanroom.keys.consortium import Consortium
from cleanroom.keys.identity import Identity, IdentityCard, load_card, load_identity
from cleanroom.keys.relay import RelayError, _check_segments
from cleanroom.service import auth

SERVER_ENV = "CLEANROOM_SERVER"
IDENTITY_ENV = "CLEANROOM_IDENTITY"
BROKER_CARD_ENV = "CLEANROOM_BROKER_CARD"
CONFIG_ENV = "CLEANROOM_CONFIG"
DEFAULT_CONFIG = Path("~/.config/cleanroom/client.toml")
UPLOAD_MAGIC = b"CRB1"
CHUNK = 1 << 20


class ServiceError(CleanroomError):
    """The service refused a request; `status` and `kind` come from its problem document."""

    def __init__(self, message: str, status: int = 0, kind: str = ""):
        super().__init__(message)
        self.status, self.kind = status, kind


def client_config() -> dict[str, Any]:
    """The client config file's settings (empty when there is none)."""
    path = Path(os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG).expanduser()
    if not path.is_file():
        return {}
    try:
        return tomllib.loads(path.read_text())
    except (OSError, ValueError):
        raise InputError(f"client config {path.name} is not valid TOML") from None


def resolve_settings(server: str | None = None, identity: Path | None = None,
                     broker_card: Path | None = None) -> tuple[str, Path, Path | None]:
    """Server URL, identity folder and pinned broker card from flags, environment, then config."""
    config = client_config()
    server = server or os.environ.get(SERVER_ENV) or config.get("server")
    ident = identity or os.environ.get(IDENTITY_ENV) or config.get("identity")
    card = broker_card or os.environ.get(BROKER_CARD_ENV) or config.get("broker_card")
    if not server:
        raise InputError(f"no server: pass --server, set {SERVER_ENV} or add server to the client config")
    if not ident:
        raise InputError(f"no identity: pass --identity, set {IDENTITY_ENV} or add identity to the client config")
    return str(server).rstrip("/"), Path(ident).expanduser(), Path(card).expanduser() if card else None


class ServiceClient:
    """A member's signed connection to the broker service; methods mirror the CLI verbs."""

    def __init__(self, server: str, identity: Identity, *, broker: IdentityCard | None = None,
                 timeout: float = 60.0, transport: httpx.BaseTransport | None = None):
        self.server = server.rstrip("/")
        self.identity = identity
        self.broker = broker
        self._http = httpx.Client(base_url=self.server, timeout=timeout, transport=transport)

    @classmethod
    def from_settings(cls, server: str | None = None, identity: Path | None = None,
                      broker_card: Path | None = None) -> ServiceClient:
        url, ident, card = resolve_settings(server, identity, broker_card)
        return cls(url, load_identity(ident), broker=load_card(card) if card else None)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing -------------------------------------------------------------------
    def request(self, method: str, path: str, *, body: bytes = b"", json_body: Any = None,
                params: dict[str, Any] | None = None, stream: bool = False,
                content: Iterator[bytes] | None = None, digest: str | None = None,
                headers: dict[str, str] | None = None) -> httpx.Response:
        """One signed request; a problem answer raises ServiceError."""
        headers = dict(headers or {})
        if json_body is not None:
            body = json.dumps(json_body).encode()
            headers["content-type"] = "application/json"
        request = self._http.build_request(method, path, params=params, headers=headers,
                                           content=content if content is not None else body)
        target = request.url.raw_path.decode("latin-1")
        request.headers.update(auth.sign_request(
            self.identity, method, target, digest or auth.body_digest(body)))
        try:
            response = self._http.send(request, stream=stream)
        except httpx.TransportError as exc:
            raise ServiceError(f"cannot reach the service at {self.server} ({type(exc).__name__})") from None
        if response.status_code >= 400:
            if stream:
                response.read()
            raise _problem(response)
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()

    # --- members and consortia ------------------------------------------------------------
    def me(self) -> dict[str, Any]:
        return self.json("GET", "/v1/me")

    def broker_card(self) -> IdentityCard:
        """The broker's card as the service presents it (pin it with --broker-card)."""
        return IdentityCard.parse(self._http.get("/v1/broker").content, label="the broker's card")

    def enrol(self, card: IdentityCard, role: str) -> dict[str, Any]:
        return self.json("POST", "/v1/members", json_body={"card": card.model_dump(), "role": role})

    def members(self) -> list[dict[str, Any]]:
        return self.json("GET", "/v1/members")

    def register_consortium(self, doc: Consortium) -> dict[str, Any]:
        return self.json("POST", "/v1/consortia", body=doc.model_dump_json().encode(),
                         headers={"content-type": "application/json"})

    def relay(self) -> HttpRelay:
        return HttpRelay(self.server, identity=self.identity, client=self)

    # --- bundles ----------------------------------------------------------------------
    def push(self, bundle: Path) -> dict[str, Any]:
        """Upload a bundle folder; a bundle the service already holds is a no-op (`created` false)."""
        bundle = Path(bundle)
        try:
            manifest_text = (bundle / MANIFEST_FILE).read_text()
            signature = (bundle / SIGNATURE_FILE).read_text().strip()
            tokens = bundle / TOKENS_FILE
            size = tokens.stat().st_size
        except OSError:
            raise InputError(f"{bundle.name} is not a bundle folder (manifest, signature and tokens)") from None
        envelope = {"manifest": manifest_text, "signature": signature}
        check = self.json("POST", "/v1/bundles/check", json_body=envelope)
        if check["status"] == "stored":
            return {"digest": check["digest"], "created": False}
        head = json.dumps(envelope).encode()
        prefix = UPLOAD_MAGIC + len(head).to_bytes(4, "big") + head
        hasher = blake3.blake3(prefix)
        with open(tokens, "rb") as f:
            for block in iter(lambda: f.read(CHUNK), b""):
                hasher.update(block)

        def body() -> Iterator[bytes]:
            yield prefix
            with open(tokens, "rb") as f:
                yield from iter(lambda: f.read(CHUNK), b"")

        return self.json("POST", "/v1/bundles", content=body(), digest=hasher.hexdigest(), headers={
            "content-type": "application/vnd.cleanroom.bundle", "content-length": str(len(prefix) + size)})

    def bundles(self) -> list[dict[str, Any]]:
        return self.json("GET", "/v1/bundles")

    # --- jobs -----------------------------------------------------------------------
    def create_job(self, consortium_id: str, epoch: int, *, references: list[str] | None = None,
                   partners: list[str] | None = None, crosstabs: list[list[str]] = ()) -> dict[str, Any]:
        body = {"consortium_id": consortium_id, "epoch": epoch, "crosstabs": [list(c) for c in crosstabs]}
        if references is not None:
            body["references"] = references
        if partners is not None:
            body["partners"] = partners
        return self.json("POST", "/v1/jobs", json_body=body)

    def jobs(self) -> list[dict[str, Any]]:
        return self.json("GET", "/v1/jobs")

    def job(self, job_id: str) -> dict[str, Any]:
        return self.json("GET", f"/v1/jobs/{_segment(job_id)}")

    def wait(self, job_id: str, timeout: float = 600, poll: float = 0.5) -> dict[str, Any]:
        """Poll until the job is done or failed (or `timeout` seconds pass); returns its status."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.job(job_id)
            if status["state"] in ("done", "failed") or time.monotonic() > deadline:
                return status
            time.sleep(poll)

    def retry(self, job_id: str) -> dict[str, Any]:
        return self.json("POST", f"/v1/jobs/{_segment(job_id)}/retry")

    def report(self, job_id: str) -> Report:
        return Report.model_validate_json(self.request("GET", f"/v1/jobs/{_segment(job_id)}/report").content)

    def segment(self, job_id: str, where: str) -> dict[str, Any]:
        return self.json("POST", f"/v1/jobs/{_segment(job_id)}/segments", json_body={"where": where})

    def releases(self, job_id: str) -> list[dict[str, Any]]:
        return self.json("GET", f"/v1/jobs/{_segment(job_id)}/releases")

    def pull(self, job_id: str, out: Path) -> list[Path]:
        """Download and verify my releases of a job into `out/<release id>/`."""
        broker = self.broker or self.broker_card()
        folders = []
        for release in self.releases(job_id):
            target = Path(out) / release["release_id"]
            with staged_dir(target) as staging:
                for name in release["files"]:
                    path = f"/v1/jobs/{_segment(job_id)}/releases/{_segment(release['release_id'])}/{_segment(name)}"
                    response = self.request("GET", path, stream=True)
                    with open(staging / name, "wb") as f:
                        f.writelines(response.iter_bytes(CHUNK))
                    response.close()
                verify_release(staging, broker)
            folders.append(target)
        return folders

    # --- campaigns ----------------------------------------------------------------------
    def define_campaign(self, job_id: str, definition: dict[str, Any]) -> dict[str, Any]:
        """Define a campaign on a finished match job (coordinator); the service fills in `job_id`."""
        body = {k: v for k, v in definition.items() if k != "job_id"}
        return self.json("POST", f"/v1/jobs/{_segment(job_id)}/campaigns", json_body=body)

    def campaigns(self) -> list[dict[str, Any]]:
        return self.json("GET", "/v1/campaigns")

    def run_campaign(self, campaign: str, at: float | None = None) -> dict[str, Any]:
        """Queue a campaign run (a job whose releases are the partners' assignments)."""
        return self.json("POST", f"/v1/campaigns/{_segment(campaign)}/runs", json_body={"at": at})

    def push_optouts(self, job_id: str, bundle: Path) -> dict[str, Any]:
        """Upload an opt-out bundle (`cleanroom hash --opt-out`) and record it against a job's persons."""
        digest = self.push(bundle)["digest"]
        return self.json("POST", f"/v1/jobs/{_segment(job_id)}/optouts", json_body={"digest": digest})

    def report_sends(self, job_id: str, sends: pl.DataFrame, batch: int = 10_000) -> int:
        """Report sends (`handle` as bytes or hex, `sent_at` datetime or ISO 8601) in batches; returns the count."""
        if not {"handle", "sent_at"} <= set(sends.columns):
            raise InputError("sends have columns handle and sent_at")
        handle = pl.col("handle")
        if sends.schema["handle"] == pl.Binary:
            handle = handle.bin.encode("hex")
        sent = pl.col("sent_at")
        if sends.schema["sent_at"] != pl.String:  # naive datetimes are UTC
            if getattr(sends.schema["sent_at"], "time_zone", None):
                sent = sent.dt.convert_time_zone("UTC")
            sent = sent.dt.strftime("%Y-%m-%dT%H:%M:%S%.fZ")
        rows = sends.select(handle.alias("handle"), sent.alias("sent_at")).to_dicts()
        recorded = 0
        for start in range(0, len(rows), batch):
            answer = self.json("POST", f"/v1/jobs/{_segment(job_id)}/sends",
                               json_body={"sends": rows[start:start + batch]})
            recorded += answer["recorded"]
        return recorded

    def audit(self, after: int = -1, limit: int = 100) -> list[dict[str, Any]]:
        return self.json("GET", "/v1/audit", params={"after": after, "limit": limit})


class HttpRelay:
    """The ceremony relay through the broker service; the `Relay` protocol over signed requests.

    Without an identity it loads the one named by `CLEANROOM_IDENTITY` or the
    client config on first use (for `--relay http://...` on the ceremony commands).
    """

    def __init__(self, server: str, *, identity: Identity | None = None, client: ServiceClient | None = None):
        self.server = server.rstrip("/")
        self._client = client
        self._identity = identity

    def __repr__(self) -> str:
        return f"HttpRelay({self.server!r})"

    @property
    def client(self) -> ServiceClient:
        if self._client is None:
            if self._identity is None:
                _, ident, _ = resolve_settings(self.server)
                self._identity = load_identity(ident)
            self._client = ServiceClient(self.server, self._identity)
        return self._client

    def _path(self, topic: str, name: str | None = None) -> str:
        parts = _check_segments(topic, "topic")
        if len(parts) != 2:
            raise RelayError("invalid relay topic")
        path = f"/v1/relay/{parts[0]}/{parts[1]}/messages"
        if name is not None:
            _check_segments(name, "message name")
            path += f"/{name}"
        return path

    def put(self, topic: str, name: str, data: bytes) -> None:
        try:
            self.client.request("PUT", self._path(topic, name), body=data,
                                headers={"content-type": "application/octet-stream"})
        except ServiceError as exc:
            raise RelayError(f"the relay refused message {name}: {exc}") from None

    def list(self, topic: str) -> list[str]:
        try:
            return sorted(self.client.json("GET", self._path(topic)))
        except ServiceError as exc:
            if exc.status == 404:
                return []
            raise RelayError(f"the relay cannot list {topic}: {exc}") from None

    def get(self, topic: str, name: str) -> bytes:
        try:
            return self.client.request("GET", self._path(topic, name)).content
        except ServiceError:
            raise RelayError(f"the relay has no message {name}") from None


def _segment(value: str) -> str:
    """A path segment from user input (job or release id, file name): no slashes or dots-only."""
    if not value or "/" in value or value in (".", "..") or any(c in value for c in "?#%\\"):
        raise InputError("an id must be a single path segment")
    return value


def _problem(response: httpx.Response) -> ServiceError:
    try:
        body = response.json()
        detail = body.get("detail") or body.get("title") or ""
        kind = str(body.get("type", "")).rsplit(":", 1)[-1]
    except ValueError:
        detail, kind = response.reason_phrase, ""
    return ServiceError(f"service answered {response.status_code}: {detail}", response.status_code, kind)
