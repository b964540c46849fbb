"""Faults against a real `cleanroom serve`: kill -9 during a job and during an upload, restart,
resume or fail-and-retry, nonces that survive the restart."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest
from conftest import make_identities

from cleanroom import hash_file, load_spec, new_key
from cleanroom.broker.releases import verify_release
from cleanroom.keys.consortium import Policy, init_consortium
from cleanroom.service import auth
from cleanroom.service.client import ServiceClient
from cleanroom.service.testing import ServerProcess
from cleanroom.service.worker import DELAY_ENV
from cleanroom.synth import generate_partners, generate_voters, write_frame

PW = "pw"
PARTNERS = ["Tenants Union", "Teachers"]
CID, EPOCH = "faults-2026", 1


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("service-faults")
    ids = make_identities(root / "id", ["Voter File", *PARTNERS, "Coordinator", "Admin", "Broker"], PW.encode())
    key = new_key(CID, epoch=EPOCH)
    voters = generate_voters(3_000, seed=3)
    lists, _ = generate_partners(voters, len(PARTNERS), sizes=400, seed=3, names=PARTNERS)
    write_frame(voters, root / "voters.parquet")
    attributes = {"county": "county", "party": "party"}
    hash_file(root / "voters.parquet", root / "bundles" / "ref", root / "vaults" / "ref", key=key,
              identity=ids["Voter File"], spec=load_spec(), reference=True, attributes=attributes, id_column="voter_id")
    for name, frame in lists.items():
        write_frame(frame, root / f"{name}.csv")
        hash_file(root / f"{name}.csv", root / "bundles" / name, root / "vaults" / name, key=key,
                  identity=ids[name], spec=load_spec())
    doc = init_consortium(CID, ids["Voter File"], [ids[n].card for n in PARTNERS], root / "consortium.json",
                          epoch=EPOCH, policy=Policy(k=5, epsilon_budget=None, clear_attributes=tuple(attributes)))
    return {"root": root, "ids": ids, "doc": doc}


def _server(world, name, *args, delay=0.0):
    root = world["root"]
    return ServerProcess(root / name, root / "id" / "Broker", admin_card=root / "id" / "Admin" / "card.json",
                         args=list(args), env={"CLEANROOM_PASSPHRASE": PW, DELAY_ENV: str(delay)},
                         log=root / f"{name}.log")


def _populate(world, server):
    ids = world["ids"]
    with ServiceClient(server.url, ids["Admin"]) as admin:
        admin.enrol(ids["Voter File"].card, "custodian")
        for name in PARTNERS:
            admin.enrol(ids[name].card, "partner")
        admin.enrol(ids["Coordinator"].card, "coordinator")
    with ServiceClient(server.url, ids["Voter File"]) as custodian:
        custodian.register_consortium(world["doc"])
        custodian.push(world["root"] / "bundles" / "ref")
    for name in PARTNERS:
        with ServiceClient(server.url, ids[name]) as partner:
            partner.push(world["root"] / "bundles" / name)


def _wait_state(client, job_id, states, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.job(job_id)
        if job["state"] in states:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job stayed {job['state']}")


def test_killed_job_resumes_and_replays_still_fail(world, tmp_path):
    ids = world["ids"]
    server = _server(world, "resume", delay=2.0).start()
    try:
        _populate(world, server)
        coordinator = ServiceClient(server.url, ids["Coordinator"])
        job = coordinator.create_job(CID, EPOCH)
        _wait_state(coordinator, job["id"], {"running"})
        captured = auth.sign_request(ids[PARTNERS[0]], "GET", "/v1/me")
        assert httpx.get(server.url + "/v1/me", headers=captured).status_code == 200
        server.kill()
        coordinator.close()
        server = _server(world, "resume").start()  # same data folder, no delay
        assert httpx.get(server.url + "/v1/me", headers=captured).status_code == 401  # nonce kept on disk
        with ServiceClient(server.url, ids["Coordinator"]) as coordinator:
            done = coordinator.wait(job["id"], timeout=60)
            assert done["state"] == "done" and done["attempts"] == 2, done
            assert coordinator.report(job["id"]).job_id == done["engine_job_id"]
        with ServiceClient(server.url, ids[PARTNERS[0]], broker=ids["Broker"].card) as partner:
            (folder,) = partner.pull(job["id"], tmp_path / "mine")
            assert verify_release(folder, ids["Broker"].card).recipient == PARTNERS[0]
        assert not [p for p in (world["root"] / "resume" / "jobs").iterdir() if p.name.startswith(".")]
    finally:
        server.stop()


def test_killed_job_out_of_attempts_fails_cleanly_and_is_retried(world):
    ids = world["ids"]
    server = _server(world, "retry", "--max-attempts", "1", delay=2.0).start()
    try:
        _populate(world, server)
        with ServiceClient(server.url, ids["Coordinator"]) as coordinator:
            job = coordinator.create_job(CID, EPOCH)
            _wait_state(coordinator, job["id"], {"running"})
        server.kill()
        server = _server(world, "retry", "--max-attempts", "1").start()
        with ServiceClient(server.url, ids["Coordinator"]) as coordinator:
            failed = coordinator.job(job["id"])
            assert failed["state"] == "failed" and "interrupted" in failed["error"]
            assert not (world["root"] / "retry" / "jobs" / job["id"]).exists()
            coordinator.retry(job["id"])
            assert coordinator.wait(job["id"], timeout=60)["state"] == "done"
    finally:
        server.stop()


def test_upload_killed_midway_leaves_nothing(world):
    ids = world["ids"]
    server = _server(world, "upload").start()
    try:
        _populate(world, server)
        bundle = world["root"] / "bundles" / PARTNERS[0]
        # a fresh bundle (the stored one would be a no-op): same list, hashed again
        fresh = world["root"] / "bundles" / "fresh"
        if not fresh.exists():
            hash_file(world["root"] / f"{PARTNERS[0]}.csv", fresh, world["root"] / "vaults" / "fresh",
                      key=new_key(CID, epoch=EPOCH), identity=ids[PARTNERS[0]], spec=load_spec())
        head = json.dumps({"manifest": (fresh / "manifest.json").read_text(),
                           "signature": (fresh / "manifest.sig").read_text().strip()}).encode()
        body = b"CRB1" + len(head).to_bytes(4, "big") + head + (fresh / "tokens.parquet").read_bytes()
        headers = auth.sign_request(ids[PARTNERS[0]], "POST", "/v1/bundles", auth.body_digest(body))
        lines = ["POST /v1/bundles HTTP/1.1", "host: 127.0.0.1", f"content-length: {len(body)}",
                 *[f"{k}: {v}" for k, v in headers.items()]]
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body[: len(body) // 2])
        time.sleep(0.5)
        assert list((world["root"] / "upload" / "tmp").iterdir())  # the upload is being spooled
        server.kill()
        sock.close()
        server = _server(world, "upload").start()
        assert list((world["root"] / "upload" / "tmp").iterdir()) == []
        with ServiceClient(server.url, ids[PARTNERS[0]]) as partner:
            assert len(partner.bundles()) == 1
            assert partner.push(fresh)["created"] is True  # sent again in full, it is accepted
            assert partner.push(bundle)["created"] is False
    finally:
        server.stop()
