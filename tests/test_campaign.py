"""Campaigns: exactly-once assignment, nearest senders, opt-outs, caps, releases, bad definitions."""

import json
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cleanroom import create_identity, hash_file, load_identity, load_spec, new_key
from cleanroom.audit import verify_log
from cleanroom.broker.campaign import (
    Campaign,
    Sender,
    assign,
    contact_ledger,
    create_campaign,
    load_campaign,
    mark_opt_out,
    parse_campaign,
    record_sends,
    register_optouts,
    resolve_assignment,
    run_campaign,
)
from cleanroom.broker.job import AUDIT_FILE, ROWS_FILE, BrokerState, match_job
from cleanroom.broker.releases import RELEASE_FILE, verify_release
from cleanroom.errors import CleanroomError, SpecError
from cleanroom.keys.consortium import Policy, init_consortium
from cleanroom.synth import generate_partners, generate_voters, write_frame

PW = b"pw"
PARTNERS = ["Tenants", "Teachers", "Riders"]
ATTRIBUTES = {"county": "county", "state_house_district": "state_house_district", "party": "party"}
T0 = datetime(2026, 9, 1, 9, tzinfo=UTC)


# --- the pure assignment, property-tested ------------------------------------------------------

def _rows(memberships: list[list[int]], counties: list[int]) -> pl.DataFrame:
    rows = []
    for person, (lists, county) in enumerate(zip(memberships, counties, strict=True)):
        for p in lists:
            for copy in range(1 + (person + p) % 2):  # some persons twice on a list
                rows.append((PARTNERS[p], bytes([person % 256, person // 256, p, copy]), person, f"k{person}",
                             f"C{county}"))
    return pl.DataFrame(rows, orient="row", schema={
        "partner": pl.String, "handle": pl.Binary, "person": pl.UInt64, "person_key": pl.String,
        "county": pl.String})


policies = st.permutations(["nearest", "priority", "balanced"]).flatmap(
    lambda chain: st.integers(1, 3).map(lambda n: list(chain[:n])))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    memberships=st.lists(st.sets(st.integers(0, 2), min_size=1).map(sorted), min_size=1, max_size=60),
    data=st.data(),
    policy=policies,
    scope=st.sampled_from(["global", "partner"]),
)
def test_each_person_assigned_exactly_once(memberships, data, policy, scope):
    n = len(memberships)
    counties = data.draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    opted = data.draw(st.sets(st.tuples(st.integers(0, n - 1), st.integers(0, 2)), max_size=n // 3))
    capped = data.draw(st.sets(st.integers(0, n - 1), max_size=n // 4))
    campaign = Campaign(
        name="p", job_id="j", partners=PARTNERS, policy=policy, capacity={p: i + 1 for i, p in enumerate(PARTNERS)},
        geography=["county"], opt_out_scope=scope, seed=data.draw(st.integers(0, 99)),
        senders={"Teachers": [Sender(label="west", covers={"county": ["C0", "C1"]})],
                 "Riders": [Sender(label="hall", covers={"county": ["C2"]}), Sender(label="any")]},
    )
    rows = _rows(memberships, counties)
    optouts = pl.DataFrame([(f"k{p}", PARTNERS[q]) for p, q in opted], orient="row",
                           schema={"person_key": pl.String, "partner": pl.String})
    recent = pl.DataFrame([(f"k{p}", 2) for p in capped], orient="row",
                          schema={"person_key": pl.String, "contacts": pl.Int64})
    assignments, persons = assign(rows, campaign, optouts=optouts, recent=recent)

    assert assignments.get_column("person").is_unique().all()
    assert persons.height == n and set(persons["status"]) <= {"assigned", "opted_out", "deferred_by_cap"}
    blocked = {(p, PARTNERS[q]) for p, q in opted} if scope == "partner" else {
        (p, q) for p, _ in opted for q in PARTNERS}
    for person, lists in enumerate(memberships):
        allowed = [PARTNERS[q] for q in lists if (person, PARTNERS[q]) not in blocked]
        got = assignments.filter(pl.col("person") == person)
        if not allowed or person in capped:
            assert got.is_empty()
            continue
        assert got.height == 1
        partner = got["partner"][0]
        assert partner in allowed
        own = rows.filter((pl.col("person") == person) & (pl.col("partner") == partner))
        assert got["handle"][0] in own["handle"].to_list()
        if len(allowed) == 1:
            assert partner == allowed[0]  # on one list: that list's owner
    status = dict(zip(persons["person"], persons["status"], strict=True))
    assert {p for p, s in status.items() if s == "assigned"} == set(assignments["person"])


def test_nearest_sender_routing_then_priority():
    memberships = [[0, 1, 2]] * 8
    counties = [0, 0, 1, 1, 2, 2, 3, 3]
    campaign = Campaign(
        name="n", job_id="j", partners=PARTNERS, policy=["nearest", "priority"], geography=["county"],
        senders={"Teachers": [Sender(label="west", covers={"county": ["C0"]})],
                 "Riders": [Sender(label="hall", covers={"county": ["C1", "C2"]}), Sender(label="any")],
                 "Tenants": [Sender(label="downtown", covers={"county": ["C2"]})]},
        priority=["Tenants", "Teachers", "Riders"],
    )
    got = assign(_rows(memberships, counties), campaign)[0].sort("person")
    assert got.select("partner", "sender").rows() == [
        ("Teachers", "west"), ("Teachers", "west"), ("Riders", "hall"), ("Riders", "hall"),
        ("Tenants", "downtown"), ("Tenants", "downtown"),  # two cover C2: priority decides
        ("Riders", "any"), ("Riders", "any"),  # only a catch-all sender covers C3
    ]


def test_balanced_shares_follow_capacity():
    rows = _rows([[0, 1, 2]] * 3000, [0] * 3000)
    campaign = Campaign(name="b", job_id="j", partners=PARTNERS, policy=["balanced"],
                        capacity={"Tenants": 1, "Teachers": 2, "Riders": 3})
    shares = assign(rows, campaign)[0].group_by("partner").len()
    share = dict(shares.iter_rows())
    assert share["Tenants"] < share["Teachers"] < share["Riders"]
    assert abs(share["Riders"] / 3000 - 0.5) < 0.05


@pytest.mark.parametrize(("change", "message"), [
    ({"partners": []}, "at least one participating partner"),
    ({"priority": ["Nobody"]}, "not a campaign partner"),
    ({"policy": ["balanced"]}, "positive capacity"),
    ({"policy": ["nearest"]}, "needs `geography`"),
])
def test_bad_definitions_are_clear_errors(tmp_path, change, message):
    body = {"name": "x", "job_id": "j", "partners": PARTNERS, **change}
    with pytest.raises(SpecError, match=message):
        parse_campaign(body)
    path = tmp_path / "c.json"
    path.write_text(json.dumps(body))
    with pytest.raises(SpecError, match=message):
        load_campaign(path)


# --- end to end on a small generated world -----------------------------------------------------

@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("campaign")
    voters = generate_voters(3_000, seed=5)
    lists, _ = generate_partners(voters, 3, sizes=700, seed=5, names=PARTNERS)
    ids = {}
    for org in ["Voter File", *PARTNERS, "Broker"]:
        create_identity(org, root / "id" / org, PW)
        ids[org] = load_identity(root / "id" / org, PW)
    key = new_key("recall", epoch=1)
    spec = load_spec()
    write_frame(voters, root / "voters.parquet")
    hash_file(root / "voters.parquet", root / "b" / "ref", root / "v" / "ref", key=key, identity=ids["Voter File"],
              spec=spec, reference=True, attributes=ATTRIBUTES, id_column="voter_id")
    for name, frame in lists.items():
        write_frame(frame, root / f"{name}.csv")
        hash_file(root / f"{name}.csv", root / "b" / name, root / "v" / name, key=key, identity=ids[name], spec=spec)
    # Tenants' unsubscribe list: 80 of its own members, hashed the same way
    write_frame(lists["Tenants"].head(80), root / "optout.csv")
    hash_file(root / "optout.csv", root / "b" / "optout", root / "v" / "optout", key=key,
              identity=ids["Tenants"], spec=spec)
    assert mark_opt_out(root / "b" / "optout", ids["Tenants"]).kind == "optout"
    policy = Policy(k=5, epsilon_budget=None, clear_attributes=tuple(ATTRIBUTES))
    consortium = init_consortium("recall", ids["Voter File"], [ids[n].card for n in PARTNERS],
                                 root / "consortium.json", epoch=1, policy=policy)
    state = BrokerState(root / "state", ids["Broker"])
    match_job([root / "b" / "ref"], [root / "b" / n for n in PARTNERS], root / "job", state=state,
              consortium=consortium)
    job_id = (root / "job" / "job.json").read_text().split('"job_id": "')[1].split('"')[0]
    return {"root": root, "ids": ids, "job": root / "job", "job_id": job_id, "lists": lists}


def _campaign(world, **kw):
    base = {"name": "gotv", "job_id": world["job_id"], "partners": PARTNERS, "include_unregistered": True,
            "policy": ["nearest", "priority"], "geography": ["state_house_district", "county"],
            "senders": {"Teachers": [Sender(label="HD-1 organizer", covers={"state_house_district": ["1"]})],
                        "Riders": [Sender(label="county chapter", covers={"county": ["RICH"]})]}}
    return Campaign(**{**base, **kw})


def _state(world, name):
    return BrokerState(world["root"] / name, world["ids"]["Broker"])


def _bundles(world):
    return [world["root"] / "b" / "ref"], [world["root"] / "b" / n for n in PARTNERS]


def test_campaign_run_releases_only_own_handles_with_sender(world, tmp_path):
    state = _state(world, "s-run")
    campaign = create_campaign(_campaign(world), world["job"], tmp_path / "c", state=state)
    report, releases = run_campaign(campaign, world["job"], tmp_path / "run", state=state, at=T0)
    rows = pl.read_parquet(world["job"] / ROWS_FILE)
    seen = []
    for name in PARTNERS:
        folder = next((tmp_path / "run" / "releases").glob(f"*-{world['ids'][name].card.fingerprint[:8]}"))
        assert verify_release(folder, world["ids"]["Broker"].card).recipient == name
        got = pl.read_parquet(folder / RELEASE_FILE)
        assert got.columns == ["handle", "person_token", "sender"]
        own = set(pl.read_parquet(world["root"] / "v" / name / "vault.parquet")["handle"])
        assert set(got["handle"]) <= own and got.height == releases[name].rows > 0
        seen += rows.join(got.select("handle"), on="handle")["person"].to_list()
        resolved = resolve_assignment(folder, world["root"] / "v" / name, world["root"] / f"{name}.csv")
        assert resolved.height == got.height and resolved["sender"].null_count() == 0
    assert len(seen) == len(set(seen))  # nobody hears from two partners
    internal = pl.read_parquet(tmp_path / "run" / "internal" / "assignments.parquet")
    hd1 = internal.join(rows.select("person", "state_house_district").unique("person"), on="person")
    teachers = rows.filter(pl.col("partner") == "Teachers")["person"].implode()
    covered = hd1.filter((pl.col("state_house_district") == "1") & pl.col("person").is_in(teachers))
    assert not covered.is_empty()
    assert set(covered["sender"]) == {"HD-1 organizer"}  # nearest sender: the district organizer
    names = {t.name for t in report.tables}
    assert {"campaign_status", "assigned_by_partner", "duplicates_avoided",
            "assigned_by_partner_x_state_house_district"} <= names
    for table in report.tables:
        for cell in table.cells:
            assert cell["suppressed"] or cell["count"] == 0 or cell["count"] >= 5
    kinds = [e.kind for e in verify_log(world["root"] / "s-run" / AUDIT_FILE, world["ids"]["Broker"].card).entries]
    assert kinds[:1] == ["campaign"] and "report" in kinds and kinds.count("release") == 3


@pytest.mark.parametrize("scope", ["global", "partner"])
def test_opt_outs_honoured(world, tmp_path, scope):
    state = _state(world, f"s-opt-{scope}")
    refs, parts = _bundles(world)
    n = register_optouts(world["job"], world["root"] / "b" / "optout", received_by="Tenants",
                         references=refs, partners=parts, state=state)
    assert n >= 60
    campaign = _campaign(world, opt_out_scope=scope)
    _, _ = run_campaign(campaign, world["job"], tmp_path / "run", state=state, at=T0)
    rows = pl.read_parquet(world["job"] / ROWS_FILE)
    vault = pl.read_parquet(world["root"] / "v" / "Tenants" / "vault.parquet")
    opted_handles = vault.sort("row").head(80)["handle"]
    opted = rows.filter((pl.col("partner") == "Tenants") & pl.col("handle").is_in(opted_handles.implode()))
    opted_persons = set(opted["person"])
    assigned = pl.read_parquet(tmp_path / "run" / "internal" / "assignments.parquet")
    hits = assigned.filter(pl.col("person").is_in(list(opted_persons)))
    if scope == "global":
        assert hits.is_empty()
    else:
        assert "Tenants" not in set(hits["partner"])
        assert not hits.is_empty()  # other partners still reach those on their lists


def test_caps_never_exceeded_over_a_month(world, tmp_path):
    state = _state(world, "s-cap")
    campaign = _campaign(world, cap={"messages": 2, "days": 7})
    rows = pl.read_parquet(world["job"] / ROWS_FILE)
    deferred_seen = False
    for day in range(30):
        at = T0 + timedelta(days=day)
        report, _ = run_campaign(campaign, world["job"], tmp_path / f"run{day}", state=state, at=at)
        assigned = pl.read_parquet(tmp_path / f"run{day}" / "internal" / "assignments.parquet")
        deferred = next(c for c in report.table("campaign_status").cells if c["status"] == "deferred_by_cap")
        deferred_seen |= bool(deferred["count"])
        for partner in PARTNERS:  # each partner sends to most of its assignments, an hour later
            mine = assigned.filter(pl.col("partner") == partner)
            mine = mine.filter(pl.col("person") % 5 != day % 5)
            sends = mine.select(pl.col("handle").bin.encode("hex"),
                                pl.lit((at + timedelta(hours=1)).isoformat()).alias("sent_at"))
            record_sends(world["job"], partner, sends, state=state)
    assert deferred_seen
    sends = contact_ledger(state).sends().sort("person_key", "at")
    assert sends.height > rows["person"].n_unique()
    week = 7 * 86400
    per_person = sends.group_by("person_key").agg(pl.col("at").sort())
    for times in per_person["at"].to_list():
        for i, t in enumerate(times):
            assert sum(1 for u in times[i:] if u < t + week) <= 2


def test_bad_campaigns_against_the_job(world, tmp_path):
    state = _state(world, "s-bad")
    with pytest.raises(SpecError, match="not a partner of the job"):
        create_campaign(_campaign(world, partners=["Tenants", "Nobody"], senders={}, policy=["priority"]), world["job"],
                        tmp_path / "a", state=state)
    with pytest.raises(SpecError, match="not an allowed attribute"):
        create_campaign(_campaign(world, target="precinct = 'P1'"), world["job"], tmp_path / "b", state=state)
    with pytest.raises(SpecError, match="target is empty"):
        create_campaign(_campaign(world, target="  "), world["job"], tmp_path / "c", state=state)
    with pytest.raises(CleanroomError, match="selects no person|smaller than k"):
        run_campaign(_campaign(world, target="county = 'NOWHERE'", include_unregistered=False), world["job"],
                     tmp_path / "d", state=state, at=T0)
    assert not (tmp_path / "d").exists()


def test_cli_campaign_create_optout_run_sends_report_resolve(world, tmp_path, monkeypatch, capsys):
    from cleanroom.cli import main

    monkeypatch.setenv("CLEANROOM_PASSPHRASE", PW.decode())
    broker = ["--identity", world["root"] / "id" / "Broker", "--state", tmp_path / "state"]
    definition = _campaign(world, cap={"messages": 1, "days": 7}).model_dump(mode="json")
    (tmp_path / "gotv.json").write_text(json.dumps(definition))
    refs, parts = _bundles(world)

    def run(*args, code=0):
        with pytest.raises(SystemExit) as done:
            main([str(a) for a in args])
        assert (done.value.code or 0) == code
        return capsys.readouterr()

    run("broker", "campaign", "create", world["job"], "--definition", tmp_path / "gotv.json",
        "--out", tmp_path / "c", *broker)
    run("broker", "campaign", "optout", world["job"], world["root"] / "b" / "optout", "--received-by", "Tenants",
        "--reference", refs[0], *[a for p in parts for a in ("--partner", p)], *broker)
    shown = run("broker", "campaign", "run", tmp_path / "c", "--job", world["job"], "--out", tmp_path / "r1",
                "--at", "2026-09-01T09:00:00", *broker).out
    assert "Assigned persons by partner" in shown
    name = "Teachers"
    folder = next((tmp_path / "r1" / "releases").glob(f"*-{world['ids'][name].card.fingerprint[:8]}"))
    release = pl.read_parquet(folder / RELEASE_FILE)
    release.select(pl.col("handle").bin.encode("hex"), pl.lit("2026-09-01T10:00:00Z").alias("sent_at")).write_csv(
        tmp_path / "sends.csv")
    assert f"{release.height} sends" in run("broker", "campaign", "sends", world["job"], tmp_path / "sends.csv",
                                            "--partner", name, *broker).out
    run("broker", "campaign", "sends", world["job"], tmp_path / "sends.csv", "--partner", "Riders", *broker, code=2)
    run("broker", "campaign", "report", tmp_path / "r1")
    run("resolve", folder, "--vault", world["root"] / "v" / name, "--input", world["root"] / f"{name}.csv",
        "--out", tmp_path / "mine.csv")
    mine = pl.read_csv(tmp_path / "mine.csv")
    assert mine.height == release.height and "sender" in mine.columns
    # a day later, with a cap of one a week, nobody who was sent to is assigned again
    run("broker", "campaign", "run", tmp_path / "c", "--job", world["job"], "--out", tmp_path / "r2",
        "--at", "2026-09-02T09:00:00", *broker)
    again = pl.read_parquet(tmp_path / "r2" / "internal" / "assignments.parquet")
    first = pl.read_parquet(tmp_path / "r1" / "internal" / "assignments.parquet")
    assert again.join(first, on="person").is_empty()


def test_cli_hash_opt_out_marks_the_bundle(contacts, tmp_path, key_file, identity_dir, passphrase_env, capsys):
    from cleanroom.bundle import verify_bundle
    from cleanroom.cli import main

    source = tmp_path / "unsubscribed.csv"
    contacts.write_csv(source)
    maps = [a for m in ["Email=email", "Mobile=phone", "First=first_name", "Last=last_name", "DOB=dob", "ZIP=zip"]
            for a in ("--map", m)]
    base = ["hash", source, "--key", key_file, "--identity", identity_dir, "--out", tmp_path / "optout",
            "--vault", tmp_path / "vault", *maps]
    with pytest.raises(SystemExit) as done:
        main([str(a) for a in [*base, "--opt-out"]])
    assert (done.value.code or 0) == 0
    assert verify_bundle(tmp_path / "optout").kind == "optout"
    with pytest.raises(SystemExit) as done:
        main([str(a) for a in [*base[:6], "--out", tmp_path / "x", "--vault", tmp_path / "xv", *maps, "--opt-out",
                               "--reference"]])
    assert done.value.code == 2 and "either a reference or an opt-out" in capsys.readouterr().err
