"""The broker service end to end over loopback: enrolment, ceremony, uploads, jobs, releases,
authorization and bad input, against a real `cleanroom serve` subprocess."""

from __future__ import annotations

import json
import shutil
import socket
import time
from pathlib import Path

import httpx
import polars as pl
import pytest
from conftest import make_identities

from cleanroom import hash_file, load_spec
from cleanroom.broker.job import BrokerState, match_job
from cleanroom.broker.releases import RELEASE_FILE
from cleanroom.bundle import (
    MANIFEST_FILE,
    TOKENS_FILE,
    file_digest,
    read_manifest,
    sign_manifest,
)
from cleanroom.cli import main
from cleanroom.keys import ceremony
from cleanroom.keys import identity as ident
from cleanroom.keys.consortium import Policy, accept_consortium, init_consortium
from cleanroom.keys.identity import create_identity, load_identity
from cleanroom.keys.secret import load_key
from cleanroom.resolve import resolve_release
from cleanroom.service import auth
from cleanroom.service.client import ServiceClient, ServiceError
from cleanroom.service.testing import ServerProcess
from cleanroom.synth import generate_partners, generate_voters, write_frame

PW = "pw"
PARTNERS = ["Tenants Union", "Teachers", "Transit Riders"]
ATTRIBUTES = {"county": "county", "state_house_district": "state_house_district", "party": "party"}
CID, EPOCH = "recall-2026", 1


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Identities, a running service, the ceremony through it, and every bundle pushed."""
    root = tmp_path_factory.mktemp("service")
    ids = make_identities(root / "id", ["Voter File", *PARTNERS, "Coordinator", "Admin", "Broker"], PW.encode())
    server = ServerProcess(root / "data", root / "id" / "Broker", admin_card=root / "id" / "Admin" / "card.json",
                           args=["--idle-timeout", "2", "--max-upload-mb", "4"],
                           env={"CLEANROOM_PASSPHRASE": PW}).start()
    clients = {name: ServiceClient(server.url, ids[name]) for name in ids if name != "Broker"}
    world = {"root": root, "ids": ids, "server": server, "clients": clients}
    try:
        _enrol_and_ceremony(world)
        _hash_and_push(world)
        yield world
    finally:
        for client in clients.values():
            client.close()
        server.stop()


def _enrol_and_ceremony(world):
    root, ids, clients = world["root"], world["ids"], world["clients"]
    admin = clients["Admin"]
    admin.enrol(ids["Voter File"].card, "custodian")
    for name in PARTNERS:
        admin.enrol(ids[name].card, "partner")
    admin.enrol(ids["Coordinator"].card, "coordinator")
    members = ["Voter File", *PARTNERS]
    doc = init_consortium(CID, ids["Voter File"], [ids[n].card for n in PARTNERS], root / "consortium.json",
                          epoch=EPOCH, policy=Policy(k=10, epsilon_budget=None, clear_attributes=tuple(ATTRIBUTES)))
    clients["Voter File"].register_consortium(doc)
    for name in members:
        accept_consortium(doc, ids[name], clients[name].relay())
    for name in members[:-1]:
        ceremony.contribute(doc, ids[name], clients[name].relay())
    world["doc"] = doc


def _hash_and_push(world):
    root, ids, clients, doc = world["root"], world["ids"], world["clients"], world["doc"]
    members = ["Voter File", *PARTNERS]
    # the last member contributes and finishes through the real CLI and `--relay http://...`
    env = {"CLEANROOM_PASSPHRASE": PW, "CLEANROOM_IDENTITY": str(root / "id" / PARTNERS[-1])}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        for verb in (["contribute"], ["finish", "--out", str(root / "keys" / f"{PARTNERS[-1]}.key")]):
            with pytest.raises(SystemExit) as done:
                main(["ceremony", *verb, "--consortium", str(root / "consortium.json"),
                      "--identity", env["CLEANROOM_IDENTITY"], "--relay", world["server"].url])
            assert done.value.code in (0, 1, None)
    for _ in range(2):  # the first round publishes fingerprints, the second sees them all
        for name in members:
            ceremony.finish(doc, ids[name], clients[name].relay(), root / "keys" / f"{name}.key")
    keys = {name: load_key(root / "keys" / f"{name}.key") for name in members}
    assert len({k.fingerprint for k in keys.values()}) == 1
    voters = generate_voters(4_000, seed=5)
    lists, _ = generate_partners(voters, 3, sizes=600, seed=5, names=PARTNERS)
    write_frame(voters, root / "voters.parquet")
    spec = load_spec()
    hash_file(root / "voters.parquet", root / "bundles" / "ref", root / "vaults" / "ref", key=keys["Voter File"],
              identity=ids["Voter File"], spec=spec, reference=True, attributes=ATTRIBUTES, id_column="voter_id")
    for name, frame in lists.items():
        write_frame(frame, root / f"{name}.csv")
        hash_file(root / f"{name}.csv", root / "bundles" / name, root / "vaults" / name, key=keys[name],
                  identity=ids[name], spec=spec)
    world["lists"] = lists
    world["digests"] = {"Voter File": clients["Voter File"].push(root / "bundles" / "ref")["digest"]}
    for name in PARTNERS:
        result = clients[name].push(root / "bundles" / name)
        assert result["created"]
        world["digests"][name] = result["digest"]


def _job(world):
    if "job" not in world:
        coordinator = world["clients"]["Coordinator"]
        job = coordinator.create_job(CID, EPOCH, crosstabs=[["state_house_district", "party"]])
        world["job"] = coordinator.wait(job["id"], timeout=120)
    return world["job"]


def test_end_to_end_matches_the_offline_engine(world, tmp_path):
    root, clients, ids = world["root"], world["clients"], world["ids"]
    job = _job(world)
    assert job["state"] == "done", job
    report = clients["Coordinator"].report(job["id"])
    offline, releases = match_job(
        [root / "bundles" / "ref"], [root / "bundles" / n for n in PARTNERS], tmp_path / "offline",
        state=BrokerState(tmp_path / "state", ids["Broker"]), consortium=world["doc"],
        crosstabs=[["state_house_district", "party"]],
    )
    assert report.job_id == offline.job_id == job["engine_job_id"]
    assert [(t.name, t.cells) for t in report.tables] == [(t.name, t.cells) for t in offline.tables]

    segment = clients["Coordinator"].segment(job["id"], "party = 'DEM'")
    segment = clients["Coordinator"].wait(segment["id"], timeout=60)
    assert segment["state"] == "done", segment
    broker_card = clients["Coordinator"].broker_card()
    assert broker_card == ids["Broker"].card
    for name in PARTNERS:
        client = ServiceClient(world["server"].url, ids[name], broker=ids["Broker"].card)
        folders = client.pull(job["id"], tmp_path / "pulled" / name)
        seg_folders = client.pull(segment["id"], tmp_path / "pulled-seg" / name)
        client.close()
        assert len(folders) == 1 and len(seg_folders) == 1
        rows = resolve_release(folders[0], root / "vaults" / name, root / f"{name}.csv", broker=ids["Broker"].card)
        assert rows.height == releases[name].rows > 0
        own = set(world["lists"][name].columns)
        assert own <= set(rows.columns)
        handles = set(pl.read_parquet(folders[0] / RELEASE_FILE)["handle"])
        vault = set(pl.read_parquet(root / "vaults" / name / "vault.parquet")["handle"])
        assert handles <= vault
        seg_handles = set(pl.read_parquet(seg_folders[0] / RELEASE_FILE)["handle"])
        assert 0 < len(seg_handles) < len(handles) and seg_handles <= handles
    entries = clients["Admin"].audit(limit=1000)
    kinds = [e["kind"] for e in entries]
    assert {"service.enrol", "service.upload", "service.job", "job", "report", "release"} <= set(kinds)


def test_second_identical_upload_is_a_no_op(world):
    root, clients = world["root"], world["clients"]
    name = PARTNERS[0]
    before = clients[name].bundles()
    again = clients[name].push(root / "bundles" / name)
    assert again == {"digest": world["digests"][name], "created": False}
    assert clients[name].bundles() == before
    # the raw upload (no preflight) is also a no-op, answered 200 after reading the body
    response = _raw_upload(world, name, root / "bundles" / name)
    assert response.status_code == 200 and response.json()["created"] is False


# --- authorization ------------------------------------------------------------------

def _signed(world, who: str, method: str, path: str, body: bytes = b"", **sign_kwargs):
    headers = auth.sign_request(world["ids"][who], method, path, auth.body_digest(body), **sign_kwargs)
    return httpx.request(method, world["server"].url + path, content=body, headers=headers)


def test_unsigned_bad_stale_and_replayed_requests_are_401(world):
    url = world["server"].url
    spec = httpx.get(url + "/openapi.json")
    assert spec.status_code == 200 and "/v1/bundles" in spec.json()["paths"]
    assert httpx.get(url + "/docs").status_code == 200
    assert httpx.get(url + "/v1/me").status_code == 401
    ok = auth.sign_request(world["ids"][PARTNERS[0]], "GET", "/v1/me")
    assert httpx.get(url + "/v1/me", headers=ok).status_code == 200
    replay = httpx.get(url + "/v1/me", headers=ok)
    assert replay.status_code == 401 and "replay" in replay.json()["detail"]
    assert replay.headers["content-type"].startswith("application/problem+json")
    wrong_path = auth.sign_request(world["ids"][PARTNERS[0]], "GET", "/v1/bundles")
    assert httpx.get(url + "/v1/me", headers=wrong_path).status_code == 401
    forged = dict(auth.sign_request(world["ids"][PARTNERS[0]], "GET", "/v1/me"))
    forged[auth.KEY_HEADER] = world["ids"][PARTNERS[1]].card.fingerprint  # claims to be B, signed by A
    assert httpx.get(url + "/v1/me", headers=forged).status_code == 401
    stale = _signed(world, PARTNERS[0], "GET", "/v1/me", timestamp=int(time.time()) - 310)
    assert stale.status_code == 401 and "timestamp" in stale.json()["detail"]
    future = _signed(world, PARTNERS[0], "GET", "/v1/me", timestamp=int(time.time()) + 310)
    assert future.status_code == 401
    body = json.dumps({"consortium_id": CID, "epoch": EPOCH}).encode()
    tampered = auth.sign_request(world["ids"]["Coordinator"], "POST", "/v1/jobs", auth.body_digest(b"{}"))
    response = httpx.post(url + "/v1/jobs", content=body, headers={**tampered, "content-type": "application/json"})
    assert response.status_code == 401  # the body is not the one that was signed
    outsider = load_identity_cheap(world, "Outsider")
    assert _signed({**world, "ids": {"Outsider": outsider}}, "Outsider", "GET", "/v1/me").status_code == 401


def load_identity_cheap(world, name):
    folder = world["root"] / "id" / name
    if not folder.exists():
        saved = ident.SCRYPT_LOG_N
        ident.SCRYPT_LOG_N = 10
        try:
            create_identity(name, folder, PW.encode())
        finally:
            ident.SCRYPT_LOG_N = saved
    return load_identity(folder, PW.encode())


def test_partners_are_confined_to_their_own(world):
    job = _job(world)
    clients, ids, digests = world["clients"], world["ids"], world["digests"]
    a, b = clients[PARTNERS[0]], clients[PARTNERS[1]]
    mine = {r["digest"] for r in a.bundles()}
    assert mine == {digests[PARTNERS[0]]}
    # another partner's bundle, release and share answer exactly like things that do not exist
    other_bundle = _signed(world, PARTNERS[0], "GET", f"/v1/bundles/{digests[PARTNERS[1]]}")
    missing_bundle = _signed(world, PARTNERS[0], "GET", "/v1/bundles/" + "0" * 64)
    assert other_bundle.status_code == missing_bundle.status_code == 404
    assert other_bundle.json() == missing_bundle.json()
    b_release = b.releases(job["id"])[0]["release_id"]
    for file in (RELEASE_FILE, "release.json"):
        theirs = _signed(world, PARTNERS[0], "GET", f"/v1/jobs/{job['id']}/releases/{b_release}/{file}")
        nothing = _signed(world, PARTNERS[0], "GET", f"/v1/jobs/{job['id']}/releases/{'f' * 32}/{file}")
        assert theirs.status_code == nothing.status_code == 404 and theirs.json() == nothing.json()
    assert {r["release_id"] for r in a.releases(job["id"])}.isdisjoint({b_release})
    topic = f"/v1/relay/{CID}/epoch-{EPOCH}/messages"
    fa, fb, fc = (ids[n].card.fingerprint for n in PARTNERS)
    share_b_to_c = _signed(world, PARTNERS[0], "GET", f"{topic}/share.{fb}.{fc}.json")
    no_share = _signed(world, PARTNERS[0], "GET", f"{topic}/share.{'0' * 32}.{fc}.json")
    assert share_b_to_c.status_code == no_share.status_code == 404 and share_b_to_c.json() == no_share.json()
    assert _signed(world, PARTNERS[2], "GET", f"{topic}/share.{fb}.{fc}.json").status_code == 200
    visible = a.relay().list(f"{CID}/epoch-{EPOCH}")
    assert all(fa in n for n in visible if n.startswith("share."))
    # acting as B: posting B's message, uploading B's bundle
    forged = _signed(world, PARTNERS[0], "PUT", f"{topic}/fingerprint.{fb}.json", b"{}")
    assert forged.status_code == 403
    response = _raw_upload(world, PARTNERS[0], world["root"] / "bundles" / PARTNERS[1])
    assert response.status_code == 403 and "signed" in response.json()["detail"]
    # the coordinator never gets handles; partners cannot create jobs or enrol
    with pytest.raises(ServiceError) as refused:
        clients["Coordinator"].releases(job["id"])
    assert refused.value.status == 403
    assert _signed(world, "Coordinator", "GET", f"/v1/jobs/{job['id']}/releases/{b_release}/{RELEASE_FILE}").status_code == 403
    with pytest.raises(ServiceError) as refused:
        a.create_job(CID, EPOCH)
    assert refused.value.status == 403
    with pytest.raises(ServiceError) as refused:
        a.enrol(ids["Broker"].card, "admin")
    assert refused.value.status == 403
    with pytest.raises(ServiceError) as refused:
        a.audit()
    assert refused.value.status == 403


# --- bad input -------------------------------------------------------------------------

def _envelope(bundle: Path) -> bytes:
    head = json.dumps({"manifest": (bundle / MANIFEST_FILE).read_text(),
                       "signature": (bundle / "manifest.sig").read_text().strip()}).encode()
    return b"CRB1" + len(head).to_bytes(4, "big") + head


def _raw_upload(world, who: str, bundle: Path, tokens: bytes | None = None):
    body = _envelope(bundle) + (tokens if tokens is not None else (bundle / TOKENS_FILE).read_bytes())
    return _signed(world, who, "POST", "/v1/bundles", body)


def _resigned(world, name: str, folder: Path, frame: pl.DataFrame | None = None, raw: bytes | None = None,
              attributes: list[str] | None = None) -> Path:
    """A copy of `name`'s bundle with other tokens, re-signed by `name` (a buggy or hostile client)."""
    shutil.copytree(world["root"] / "bundles" / name, folder)
    if frame is not None:
        frame.write_parquet(folder / TOKENS_FILE)
    if raw is not None:
        (folder / TOKENS_FILE).write_bytes(raw)
    manifest, _ = read_manifest(folder)
    update = {"tokens_digest": file_digest(folder / TOKENS_FILE)}
    if attributes is not None:
        update["attributes"] = attributes
    sign_manifest(folder, manifest.model_copy(update=update), world["ids"][name])
    return folder


def test_malformed_bundles_are_clear_4xx(world, tmp_path):
    name = PARTNERS[0]
    good = world["root"] / "bundles" / name
    tokens = (good / TOKENS_FILE).read_bytes()
    frame = pl.read_parquet(good / TOKENS_FILE)
    emails = frame.with_columns(email=pl.lit("someone@example.org"))
    cases = {
        "truncated footer": _resigned(world, name, tmp_path / "trunc", raw=tokens[:-20]),
        "bad magic": _resigned(world, name, tmp_path / "magic", raw=b"XXXX" + tokens[4:]),
        "extra column": _resigned(world, name, tmp_path / "email", frame=emails),
        "declared plaintext": _resigned(world, name, tmp_path / "declared", frame=emails, attributes=["email"]),
    }
    for label, folder in cases.items():
        response = _raw_upload(world, name, folder)
        assert 400 <= response.status_code < 500, (label, response.status_code, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert "someone@example.org" not in response.text and "example" not in response.text
    tampered = tmp_path / "tampered"
    shutil.copytree(good, tampered)
    manifest = json.loads((tampered / MANIFEST_FILE).read_text())
    manifest["row_count"] += 1
    (tampered / MANIFEST_FILE).write_text(json.dumps(manifest))
    response = _raw_upload(world, name, tampered)
    assert response.status_code == 422 and "signature" in response.json()["detail"]
    shuffled = _resigned(world, name, tmp_path / "short", frame=frame.sample(fraction=1.0, shuffle=True, seed=1))
    mismatch = _raw_upload(world, name, shuffled, tokens=(shuffled / TOKENS_FILE).read_bytes()[:-5])
    assert mismatch.status_code in (400, 422)
    for path in ("/v1/jobs/job-unknown", "/v1/jobs/job-unknown/report", "/v1/bundles/zzz"):
        assert _signed(world, "Coordinator", "GET", path).status_code == 404
    bad_json = _signed(world, "Coordinator", "POST", "/v1/jobs", b'{"consortium_id": "<script>x</script>"')
    assert bad_json.status_code == 400 and "<script>" not in bad_json.text
    assert world["clients"][name].bundles() == [b for b in world["clients"][name].bundles()]
    assert len(world["clients"][name].bundles()) == 1
    assert list((world["root"] / "data" / "tmp").iterdir()) == []
    assert httpx.get(world["server"].url + "/v1/health").status_code == 200


def test_oversized_upload_is_refused_while_streaming(world):
    name = PARTNERS[0]
    prefix = _envelope(world["root"] / "bundles" / name)
    total = 64 << 20
    with _connect(world) as sock:  # refused from the declared length, before any body byte
        sock.sendall(_request_head(world, name, "/v1/bundles", "0" * 64, length=total))
        sock.settimeout(10)
        assert b" 413 " in sock.recv(4096).split(b"\r\n")[0]
    rss_before = world["server"].rss_kib()
    status = _socket_upload(world, name, prefix, total, chunked=True)
    assert status == 413
    assert world["server"].rss_kib() - rss_before < 40 * 1024
    assert list((world["root"] / "data" / "tmp").iterdir()) == []
    assert httpx.get(world["server"].url + "/v1/health").status_code == 200


def test_slow_drip_and_interrupted_uploads_leave_nothing(world):
    name = PARTNERS[1]
    prefix = _envelope(world["root"] / "bundles" / name)
    tokens = (world["root"] / "bundles" / name / TOKENS_FILE).read_bytes()
    body = prefix + tokens
    target = "/v1/bundles"
    # slow drip: headers and a few bytes, then silence past the idle timeout (2 s)
    with _connect(world) as sock:
        sock.sendall(_request_head(world, name, target, auth.body_digest(body), len(body)) + body[:100])
        sock.settimeout(10)
        reply = sock.recv(4096)
    assert b" 408 " in reply.split(b"\r\n")[0]
    # interrupted: half the body, then the connection drops
    with _connect(world) as sock:
        sock.sendall(_request_head(world, name, target, auth.body_digest(body), len(body)) + body[: len(body) // 2])
    time.sleep(0.5)
    assert list((world["root"] / "data" / "tmp").iterdir()) == []
    assert not any(p.name.startswith(".") for p in (world["root"] / "data" / "bundles").iterdir())
    assert httpx.get(world["server"].url + "/v1/health").status_code == 200


def _connect(world) -> socket.socket:
    return socket.create_connection(("127.0.0.1", world["server"].port))


def _request_head(world, who, target, digest, length=None, chunked=False) -> bytes:
    headers = auth.sign_request(world["ids"][who], "POST", target, digest)
    lines = [f"POST {target} HTTP/1.1", f"host: 127.0.0.1:{world['server'].port}",
             "content-type: application/vnd.cleanroom.bundle"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines.append("transfer-encoding: chunked" if chunked else f"content-length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _socket_upload(world, who, prefix, total, chunked) -> int:
    """Send `total` bytes of junk after the envelope until the server answers; return its status."""
    with _connect(world) as sock:
        sock.sendall(_request_head(world, who, "/v1/bundles", "0" * 64, chunked=chunked))
        block = b"\0" * (1 << 20)
        sent = 0
        try:
            sock.sendall(f"{len(prefix):x}\r\n".encode() + prefix + b"\r\n")
            while sent < total:
                sock.sendall(f"{len(block):x}\r\n".encode() + block + b"\r\n")
                sent += len(block)
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass
        sock.settimeout(10)
        reply = sock.recv(4096)
    assert sent < total, "the server read the whole oversized body"
    return int(reply.split(b" ", 2)[1])
