"""Campaigns through the real service: define, opt-outs, runs as jobs, pulled assignments, sends, caps."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import polars as pl
import pytest
from conftest import make_identities

from cleanroom import hash_file, load_spec, new_key
from cleanroom.broker.campaign import mark_opt_out
from cleanroom.broker.releases import RELEASE_FILE
from cleanroom.cli import main
from cleanroom.keys.consortium import Policy, init_consortium
from cleanroom.service.client import ServiceClient, ServiceError
from cleanroom.service.testing import ServerProcess
from cleanroom.synth import generate_partners, generate_voters, write_frame

PW = "pw"
PARTNERS = ["Tenants", "Teachers", "Riders"]
ATTRIBUTES = {"county": "county", "state_house_district": "state_house_district", "party": "party"}
CID, EPOCH = "recall", 1


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("campaign-service")
    ids = make_identities(root / "id", ["Voter File", *PARTNERS, "Coordinator", "Admin", "Broker"], PW.encode())
    server = ServerProcess(root / "data", root / "id" / "Broker", admin_card=root / "id" / "Admin" / "card.json",
                           env={"CLEANROOM_PASSPHRASE": PW}).start()
    clients = {name: ServiceClient(server.url, ids[name], broker=ids["Broker"].card) for name in ids if name != "Broker"}
    try:
        admin = clients["Admin"]
        admin.enrol(ids["Voter File"].card, "custodian")
        for name in PARTNERS:
            admin.enrol(ids[name].card, "partner")
        admin.enrol(ids["Coordinator"].card, "coordinator")
        doc = init_consortium(CID, ids["Voter File"], [ids[n].card for n in PARTNERS], root / "consortium.json",
                              epoch=EPOCH, policy=Policy(k=5, epsilon_budget=None, clear_attributes=tuple(ATTRIBUTES)))
        clients["Voter File"].register_consortium(doc)
        key = new_key(CID, epoch=EPOCH)  # the ceremony is tested elsewhere
        voters = generate_voters(3_000, seed=9)
        lists, _ = generate_partners(voters, 3, sizes=600, seed=9, names=PARTNERS)
        write_frame(voters, root / "voters.parquet")
        spec = load_spec()
        hash_file(root / "voters.parquet", root / "b" / "ref", root / "v" / "ref", key=key, identity=ids["Voter File"],
                  spec=spec, reference=True, attributes=ATTRIBUTES, id_column="voter_id")
        clients["Voter File"].push(root / "b" / "ref")
        for name, frame in lists.items():
            write_frame(frame, root / f"{name}.csv")
            hash_file(root / f"{name}.csv", root / "b" / name, root / "v" / name, key=key, identity=ids[name],
                      spec=spec)
            clients[name].push(root / "b" / name)
        write_frame(lists["Tenants"].head(60), root / "optout.csv")
        hash_file(root / "optout.csv", root / "b" / "optout", root / "v" / "optout", key=key, identity=ids["Tenants"],
                  spec=spec)
        mark_opt_out(root / "b" / "optout", ids["Tenants"])
        job = clients["Coordinator"].create_job(CID, EPOCH)
        job = clients["Coordinator"].wait(job["id"], timeout=120)
        assert job["state"] == "done", job
        yield {"root": root, "ids": ids, "clients": clients, "job": job, "server": server}
    finally:
        for client in clients.values():
            client.close()
        server.stop()


DEFINITION = {
    "name": "canvass", "partners": PARTNERS, "include_unregistered": True, "policy": ["nearest", "balanced"],
    "capacity": {"Tenants": 1, "Teachers": 1, "Riders": 2}, "geography": ["state_house_district"],
    "senders": {"Teachers": [{"label": "HD-2 organizer", "covers": {"state_house_district": ["2"]}}]},
    "cap": {"messages": 1, "days": 7},
}


def test_campaign_over_the_service(world, tmp_path):
    clients, job, root = world["clients"], world["job"], world["root"]
    coordinator = clients["Coordinator"]
    with pytest.raises(ServiceError) as refused:
        clients["Tenants"].define_campaign(job["id"], DEFINITION)
    assert refused.value.status == 403
    with pytest.raises(ServiceError) as bad:
        coordinator.define_campaign(job["id"], {**DEFINITION, "partners": ["Tenants", "Nobody"], "senders": {},
                                                "policy": ["balanced"],
                                                "capacity": {"Tenants": 1, "Nobody": 1}})
    assert bad.value.status == 400 and "Nobody" in str(bad.value)
    campaign = coordinator.define_campaign(job["id"], DEFINITION)
    assert [c["id"] for c in coordinator.campaigns()] == [campaign["id"]]
    clients["Tenants"].push_optouts(job["id"], root / "b" / "optout")
    assert "optout" in {b["kind"] for b in coordinator.bundles()}

    run = coordinator.wait(coordinator.run_campaign(campaign["id"])["id"], timeout=60)
    assert run["state"] == "done" and run["kind"] == "campaign", run
    report = coordinator.report(run["id"])
    assert {"campaign_status", "assigned_by_partner", "duplicates_avoided"} <= {t.name for t in report.tables}
    with pytest.raises(ServiceError) as forbidden:
        coordinator.releases(run["id"])
    assert forbidden.value.status == 403
    pulled = {}
    for name in PARTNERS:
        folders = clients[name].pull(run["id"], tmp_path / name)
        assert len(folders) == 1
        release = pl.read_parquet(folders[0] / RELEASE_FILE)
        assert release.columns == ["handle", "person_token", "sender"]
        vault = set(pl.read_parquet(root / "v" / name / "vault.parquet")["handle"])
        assert set(release["handle"]) <= vault and release.height > 0
        pulled[name] = release
    assert set(pulled["Teachers"]["sender"]) <= {"HD-2 organizer", "Teachers"}

    sends = pulled["Riders"].select("handle", pl.lit(datetime.now(UTC)).alias("sent_at"))
    assert clients["Riders"].report_sends(job["id"], sends) == sends.height
    with pytest.raises(ServiceError) as foreign:  # Teachers cannot report Riders' handles
        clients["Teachers"].report_sends(job["id"], sends)
    assert foreign.value.status == 400
    with pytest.raises(ServiceError) as role:
        coordinator.report_sends(job["id"], sends)
    assert role.value.status == 403

    again = coordinator.wait(coordinator.run_campaign(campaign["id"])["id"], timeout=60)
    assert again["state"] == "done", again
    second = clients["Riders"].pull(again["id"], tmp_path / "again")
    repeat = pl.read_parquet(second[0] / RELEASE_FILE)
    assert repeat.join(pulled["Riders"], on="handle").is_empty()  # the weekly cap of one holds
    kinds = {e["kind"] for e in clients["Admin"].audit(limit=1000)}
    assert {"campaign", "optout", "sends", "release", "report"} <= kinds


def test_remote_campaign_verbs(world, tmp_path, monkeypatch, capsys):
    root, job = world["root"], world["job"]
    monkeypatch.setenv("CLEANROOM_PASSPHRASE", PW)
    monkeypatch.setenv("CLEANROOM_SERVER", world["server"].url)
    (tmp_path / "c.json").write_text(json.dumps({**DEFINITION, "name": "cli"}))

    def run(who, *args):
        with pytest.raises(SystemExit) as done:
            main(["remote", "--identity", str(root / "id" / who), *[str(a) for a in args]])
        assert (done.value.code or 0) == 0
        return capsys.readouterr().out

    made = run("Coordinator", "campaign", "create", job["id"], "--definition", tmp_path / "c.json")
    campaign = made.split()[1]
    assert "cli" in run("Coordinator", "campaign", "list")
    run("Tenants", "campaign", "optout", job["id"], root / "b" / "optout")
    shown = run("Coordinator", "campaign", "run", campaign)
    assert "done" in shown and "Assigned persons by partner" in shown
    run_id = next(j["id"] for j in reversed(world["clients"]["Coordinator"].jobs()) if j["kind"] == "campaign")
    run("Teachers", "pull", run_id, "--out", tmp_path / "mine")
    folder = next((tmp_path / "mine").iterdir())
    release = pl.read_parquet(folder / RELEASE_FILE)
    release.select(pl.col("handle").bin.encode("hex"), pl.lit("2026-09-02T10:00:00Z").alias("sent_at")).write_csv(
        tmp_path / "sends.csv")
    assert f"{release.height} sends recorded" in run("Teachers", "sends", "report", job["id"], tmp_path / "sends.csv")
