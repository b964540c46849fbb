"""Coordinated campaigns: one partner (and sender) per targeted person, opt-outs, frequency caps.

A coordinator defines a `Campaign` on a finished match job: a target segment
over allowed attributes (optionally plus people not on the voter file), the
participating partners, an assignment policy and a frequency cap. Each *run*
of the campaign:

1. cuts the target from the job's internal match table (participating
   partners' rows only);
2. drops opted-out persons (every partner's opt-outs, or only the receiving
   partner's, per `opt_out_scope`) and defers persons the cap does not allow
   one more message now (contact ledger: reported sends plus reservations);
3. assigns each remaining person to exactly one partner on whose list they
   are, sorting candidates by the policy chain (nearest sender, priority,
   balanced by capacity) with priority as the last tie-break;
4. reserves one contact per assignment, writes one signed release per
   partner (one handle per assigned person plus the sender label, nothing
   else) and a protected report for the coordinator, and audits all of it.

Partners report their sends (`record_sends`), which turn reservations into
sends in the ledger. Opt-outs arrive as ordinary partner bundles hashed with
the same spec and key (`register_optouts`).
"""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import blake3
import polars as pl
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cleanroom.audit import save_checkpoint
from cleanroom.broker.contacts import CONTACTS_FILE, ContactLedger, person_key
from cleanroom.broker.job import (
    ROWS_FILE,
    BrokerState,
    JobRecord,
    _require_segment_size,
)
from cleanroom.broker.load import LoadedBundle, load_inputs
from cleanroom.broker.match import cascade, reference_index
from cleanroom.broker.persons import linking_keys
from cleanroom.broker.releases import (
    RELEASE_FILE,
    ReleaseManifest,
    segment_filter,
    write_releases,
)
from cleanroom.broker.reports import Report, ReportTable, write_report
from cleanroom.bundle import Manifest, sign_manifest, verify_bundle
from cleanroom.errors import (
    CleanroomError,
    InputError,
    PolicyError,
    SpecError,
    VerificationError,
)
from cleanroom.fsutil import staged_dir
from cleanroom.keys.identity import Identity, canonical_json
from cleanroom.privacy import protect_table

CAMPAIGN_FILE = "campaign.json"
RUN_FILE = "run.json"
ASSIGNMENTS_FILE = "internal/assignments.parquet"
Step = Literal["nearest", "priority", "balanced"]
STATUSES = ["assigned", "opted_out", "deferred_by_cap"]


class Sender(BaseModel):
    """A partner's sender (organizer, chapter) and the geographies it covers.

    `covers` maps a geography attribute to the values it covers; an empty
    mapping is a catch-all sender, used when no local sender covers a person.
    """

    model_config = ConfigDict(extra="forbid")

    label: str = Field(min_length=1, max_length=80)
    covers: dict[str, list[str]] = Field(default_factory=dict)


class FrequencyCap(BaseModel):
    """At most `messages` per person in any `days`-day window, across the coalition."""

    model_config = ConfigDict(extra="forbid")

    messages: int = Field(ge=1)
    days: float = Field(gt=0)


class Campaign(BaseModel):
    """A campaign definition, validated on its own and against its job (`validate_campaign`)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=120)
    job_id: str
    target: str | None = Field(None, description="SQL WHERE over allowed attributes; none = every registered person")
    include_unregistered: bool = False
    partners: list[str]
    policy: list[Step] = Field(default_factory=lambda: ["priority"])
    priority: list[str] = Field(default_factory=list, description="partner order; default: `partners` order")
    capacity: dict[str, int] = Field(default_factory=dict)
    senders: dict[str, list[Sender]] = Field(default_factory=dict)
    geography: list[str] = Field(default_factory=list, description="attributes senders cover, finest first")
    opt_out_scope: Literal["global", "partner"] = "global"
    cap: FrequencyCap | None = FrequencyCap(messages=2, days=7)
    seed: int = 0

    @model_validator(mode="after")
    def _consistent(self) -> Campaign:
        if not self.partners:
            raise ValueError("a campaign needs at least one participating partner")
        if len(set(self.partners)) != len(self.partners):
            raise ValueError("partners are listed twice")
        if not self.policy or len(set(self.policy)) != len(self.policy):
            raise ValueError("policy is a non-empty chain of distinct steps: nearest, priority, balanced")
        outsiders = ({*self.priority, *self.capacity, *self.senders} - set(self.partners))
        if outsiders:
            raise ValueError(f"priority, capacity and senders name {min(outsiders)!r}, not a campaign partner")
        if "balanced" in self.policy:
            missing = [p for p in self.partners if self.capacity.get(p, 0) <= 0]
            if missing:
                raise ValueError(f"the balanced policy needs a positive capacity for every partner ({missing[0]!r})")
        if "nearest" in self.policy:
            if not self.geography:
                raise ValueError("the nearest policy needs `geography` (the attributes senders cover)")
            if not any(self.senders.values()):
                raise ValueError("the nearest policy needs senders")
        for name, senders in self.senders.items():
            for sender in senders:
                unknown = set(sender.covers) - set(self.geography)
                if unknown:
                    raise ValueError(f"sender {sender.label!r} of {name!r} covers {min(unknown)!r}, "
                                     "which is not in `geography`")
        return self

    @property
    def campaign_id(self) -> str:
        return blake3.blake3(canonical_json(self.model_dump(mode="json"))).hexdigest()[:24]

    def order(self) -> list[str]:
        """Partners in priority order (declared priority first, then the rest as listed)."""
        return [*self.priority, *[p for p in self.partners if p not in self.priority]]


class CampaignRun(BaseModel):
    """run.json: what one run did (no counts; those are in the protected report)."""

    run_id: str
    campaign_id: str
    campaign: str
    job_id: str
    at: datetime
    releases: dict[str, str]  # partner -> release id


def load_campaign(path: Path) -> Campaign:
    """Read and validate a campaign definition (JSON); errors name the field."""
    try:
        text = Path(path).read_text()
    except OSError:
        raise InputError(f"cannot read the campaign definition {Path(path).name}") from None
    return parse_campaign(text)


def parse_campaign(data: str | bytes | dict[str, Any]) -> Campaign:
    """A campaign from JSON text or a dict; a bad definition is a SpecError naming the field."""
    try:
        if isinstance(data, dict):
            return Campaign.model_validate(data)
        return Campaign.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        raise SpecError(f"campaign definition: {where + ': ' if where else ''}{message}") from None


def validate_campaign(campaign: Campaign, record: JobRecord) -> None:
    """Check a campaign against its job: known partners, allowed attributes, a valid target."""
    if campaign.job_id != record.job_id:
        raise SpecError(f"the campaign is for job {campaign.job_id[:12]}, not {record.job_id[:12]}")
    unknown = [p for p in campaign.partners if p not in record.recipients]
    if unknown:
        raise SpecError(f"campaign partner {unknown[0]!r} is not a partner of the job")
    for name in campaign.geography:
        if record.allowed_attributes is not None and name not in record.allowed_attributes:
            raise SpecError(f"geography {name!r} is not an allowed attribute")
        if name not in record.attributes:
            raise SpecError(f"geography {name!r} is not carried by the job's reference")
    if campaign.target is not None and not campaign.target.strip():
        raise SpecError("the campaign target is empty; leave it out to target every registered person")
    segment_filter(campaign.target, record.attributes, record.allowed_attributes)


def targeted_rows(rows: pl.DataFrame, campaign: Campaign, record: JobRecord) -> pl.DataFrame:
    """The participating partners' rows of every person the campaign targets.

    A person is targeted when any of their rows passes the target filter (their
    rows in several lists are one person through a shared email or phone).
    """
    expr = segment_filter(campaign.target, record.attributes, record.allowed_attributes)
    if campaign.include_unregistered:
        expr = expr | ~pl.col("registered")
    persons = rows.filter(expr).select("person").unique()
    return rows.filter(pl.col("partner").is_in(campaign.partners)).join(persons, on="person", how="semi")


# --- assignment (pure; broker-internal) -------------------------------------------------------


def assign(
    rows: pl.DataFrame,
    campaign: Campaign,
    *,
    optouts: pl.DataFrame | None = None,
    recent: pl.DataFrame | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Assign each targeted person to exactly one partner on whose list they are.

    `rows`: the targeted rows (partner, handle, person, person_key, geography
    attributes). `optouts`: (person_key, partner that received it).
    `recent`: (person_key, contacts) in the cap's window.
    Returns (assignments: person, person_key, partner, handle, sender;
    persons: person, person_key, status, lists, geography attributes).
    """
    optouts = optouts if optouts is not None else pl.DataFrame(schema={"person_key": pl.String, "partner": pl.String})
    recent = recent if recent is not None else pl.DataFrame(schema={"person_key": pl.String, "contacts": pl.Int64})
    geo = list(campaign.geography)
    places = rows.group_by("person").agg(*[pl.col(g).drop_nulls().first() for g in geo])
    candidates = (
        rows.sort("handle")
        .group_by("person", "partner", maintain_order=True)
        .agg(pl.col("person_key").first(), pl.col("handle").first())
        .join(places, on="person", how="left")  # a row linked by email/phone has the person's geography
    )
    if campaign.opt_out_scope == "global":
        blocked = candidates.join(optouts.select("person_key").unique(), on="person_key", how="semi")
    else:
        blocked = candidates.join(optouts, on=["person_key", "partner"], how="semi")
    open_ = candidates.join(blocked, on=["person", "partner"], how="anti")
    if campaign.cap is not None:
        full = recent.filter(pl.col("contacts") >= campaign.cap.messages).select("person_key")
        eligible = open_.join(full, on="person_key", how="anti")
    else:
        eligible = open_
    order = campaign.order()
    eligible = eligible.with_columns(
        pl.col("partner").replace_strict(order, list(range(len(order))), return_dtype=pl.Int64).alias("_priority")
    )
    eligible, sender = _sender_keys(eligible, campaign)
    keys: list[str] = []
    for step in campaign.policy:
        if step == "nearest":
            keys.append("_level")
        elif step == "priority":
            keys.append("_priority")
        else:
            eligible = eligible.with_columns(_balanced_key(eligible, campaign))
            keys.append("_balanced")
    keys += ["_priority"] if "_priority" not in keys else []
    assignments = (
        eligible.sort(["person", *keys])
        .unique(subset="person", keep="first", maintain_order=True)
        .select("person", "person_key", "partner", "handle", sender.alias("sender"))
    )
    persons = (
        candidates.group_by("person")
        .agg(pl.col("person_key").first(), pl.len().alias("lists"), *[pl.col(g).first() for g in geo])
        .join(assignments.select("person", pl.lit("assigned").alias("_a")), on="person", how="left")
        .join(open_.select("person").unique().with_columns(pl.lit(True).alias("_open")), on="person", how="left")
        .with_columns(
            pl.when(pl.col("_a").is_not_null()).then(pl.lit("assigned"))
            .when(pl.col("_open").is_null()).then(pl.lit("opted_out"))
            .otherwise(pl.lit("deferred_by_cap")).alias("status")
        )
        .drop("_a", "_open")
        .sort("person")
    )
    return assignments.sort("person"), persons


def _sender_keys(eligible: pl.DataFrame, campaign: Campaign) -> tuple[pl.DataFrame, pl.Expr]:
    """Best covering sender per (person, partner): `_level` (0 = finest geography) and its label."""
    geo = list(campaign.geography)
    catch_all = len(geo)
    cover_rows = []
    for partner, senders in campaign.senders.items():
        for rank, sender in enumerate(senders):
            if not sender.covers:
                cover_rows.append((partner, sender.label, rank, None, None, catch_all))
            for attribute, values in sender.covers.items():
                for value in values:
                    cover_rows.append((partner, sender.label, rank, attribute, value, geo.index(attribute)))
    covers = pl.DataFrame(cover_rows, orient="row", schema={
        "partner": pl.String, "sender": pl.String, "rank": pl.Int64, "attribute": pl.String,
        "value": pl.String, "level": pl.Int64,
    })
    hits = [
        eligible.select("person", "partner", pl.col(a).cast(pl.String).alias("value")).join(
            covers.filter(pl.col("attribute") == a).select("partner", "value", "sender", "rank", "level"),
            on=["partner", "value"],
        ).drop("value")
        for a in geo
    ]
    hits.append(eligible.select("person", "partner").join(
        covers.filter(pl.col("attribute").is_null()).select("partner", "sender", "rank", "level"), on="partner",
    ))
    best = (
        pl.concat(hits).sort("level", "rank")
        .group_by("person", "partner", maintain_order=True)
        .agg(pl.col("sender").first(), pl.col("level").first().alias("_level"))
    )
    eligible = eligible.join(best, on=["person", "partner"], how="left").with_columns(
        pl.col("_level").fill_null(catch_all + 1)
    )
    return eligible, pl.coalesce(pl.col("sender"), pl.col("partner"))


def _balanced_key(eligible: pl.DataFrame, campaign: Campaign) -> pl.Expr:
    """An exponential race weighted by each partner's remaining share of its declared capacity.

    A person's candidate with the smallest -ln(u)/w wins with probability
    w / (sum of the candidates' w); w is the partner's share of the persons
    minus those it gets anyway (persons on its list only), so shares end up
    close to the declared capacities, and it is one vectorized pass.
    """
    total = sum(campaign.capacity[p] for p in campaign.partners)
    persons = eligible.get_column("person").n_unique()
    alone = (
        eligible.group_by("person").agg(pl.col("partner").first(), pl.len().alias("n"))
        .filter(pl.col("n") == 1).group_by("partner").len()
    )
    forced = dict(alone.iter_rows())
    weights = {
        p: max(campaign.capacity[p] / total * persons - forced.get(p, 0), 0.5) for p in campaign.partners
    }
    u = (pl.struct("person", "partner").hash(seed=campaign.seed) // (1 << 11)).cast(pl.Float64) / float(1 << 53)
    w = pl.col("partner").replace_strict(list(weights), list(weights.values()), return_dtype=pl.Float64)
    return (-(u + 1e-300).log() / w).alias("_balanced")


# --- opt-outs and sends -----------------------------------------------------------------------


def _job(job_dir: Path) -> tuple[JobRecord, pl.DataFrame]:
    job_dir = Path(job_dir)
    try:
        record = JobRecord.model_validate_json((job_dir / "job.json").read_text())
    except OSError:
        raise InputError(f"{job_dir.name} is not a finished job folder (no job.json)") from None
    rows = pl.read_parquet(job_dir / ROWS_FILE)
    return record, rows.with_columns(person_key(record.inputs[0]["digest"], record.job_id))


def mark_opt_out(bundle_dir: Path, identity: Identity) -> Manifest:
    """Re-sign a freshly hashed bundle as an opt-out list (`kind` "optout"): never a job's input."""
    manifest = verify_bundle(Path(bundle_dir), identity.card)
    if manifest.kind != "partner":
        raise InputError("only a partner bundle can be marked as an opt-out list")
    marked = manifest.model_copy(update={"kind": "optout"})
    sign_manifest(Path(bundle_dir), marked, identity)
    return marked


def contact_ledger(state: BrokerState) -> ContactLedger:
    """The broker's contact ledger (opt-outs, reservations, sends)."""
    return ContactLedger(state.folder / CONTACTS_FILE)


def register_optouts(
    job_dir: Path,
    optout_bundle: Path,
    *,
    received_by: str,
    references: list[Path],
    partners: list[Path],
    state: BrokerState,
    at: datetime | None = None,
) -> int:
    """Match an opt-out list (a partner bundle, same spec and key) to persons and record it.

    `references` and `partners` are the job's own bundles (checked by digest):
    opt-out rows are matched to registered persons by the match cascade and
    to unregistered ones by email/phone tokens on the job's partner lists.
    Returns the number of persons the list names (the broker's audit keeps it;
    it is not shown to the partner).
    """
    record, rows = _job(job_dir)
    try:
        if received_by not in record.recipients:
            raise SpecError(f"{received_by!r} is not a partner of the job")
        inputs = load_inputs(list(references), list(partners))
        given = sorted(inputs.digests)
        expected = sorted(i["digest"] for i in record.inputs)
        if given != expected:
            raise VerificationError("the bundles given are not the job's bundles (digests differ)")
        manifest = verify_bundle(Path(optout_bundle))
        if manifest.kind not in ("optout", "partner"):
            raise VerificationError("an opt-out list is an opt-out or partner bundle, not a reference")
        primary = inputs.primary.manifest
        if (manifest.consortium_id, manifest.epoch, manifest.key_fingerprint, manifest.spec_digest) != (
            primary.consortium_id, primary.epoch, primary.key_fingerprint, primary.spec_digest
        ):
            raise VerificationError("the opt-out bundle was not hashed with the job's key, epoch and spec")
        if manifest.producer.fingerprint != record.recipients[received_by].fingerprint:
            raise VerificationError(f"the opt-out bundle was not signed by {received_by!r}")
    except CleanroomError as exc:
        state.refuse("optout", exc, job_id=record.job_id)
    optout = LoadedBundle(received_by, manifest, Path(optout_bundle))
    index, _ = reference_index(inputs.primary)
    registered = cascade(optout, index, inputs.primary.key_names).matches.select(
        pl.col("ref_idx").cast(pl.UInt64).alias("person"), pl.lit(True).alias("registered")
    )
    linked = []
    for bundle in inputs.partners:
        handles = bundle.scan().with_row_index("p_idx").select("p_idx", "handle")
        # the receiving partner's own rows by every key (its opt-out list names its own members);
        # other lists by email and phone, as persons are linked
        keys = bundle.key_names if bundle.name == received_by else linking_keys(bundle)
        for key in keys:
            linked.append(
                optout.token_pairs(key, "o_idx").select("token").unique()
                .join(bundle.token_pairs(key, "p_idx"), on="token")
                .join(handles, on="p_idx").select(pl.lit(bundle.name).alias("partner"), "handle")
                .collect()
            )
    found = [registered.with_columns(person_key(record.inputs[0]["digest"], record.job_id)).select("person_key")]
    if linked:
        found.append(rows.join(pl.concat(linked), on=["partner", "handle"], how="semi").select("person_key"))
    keys = pl.concat(found).get_column("person_key").unique()
    new = contact_ledger(state).add_optouts(keys, received_by, at or datetime.now(UTC))
    state.audit.append("optout", {
        "job_id": record.job_id, "received_by": received_by, "bundle_id": manifest.bundle_id,
        "rows": manifest.row_count, "persons": keys.len(), "new": new,
    })
    return keys.len()


def record_sends(job_dir: Path, partner: str, sends: pl.DataFrame, *, state: BrokerState) -> int:
    """Record a partner's reported sends: `handle` (16 bytes or 32 hex chars) and `sent_at` (UTC).

    Handles must be the partner's own handles in the job; returns the sends recorded.
    """
    record, rows = _job(job_dir)
    try:
        if partner not in record.recipients:
            raise SpecError(f"{partner!r} is not a partner of the job")
        sends = _sends_frame(sends)
        own = rows.filter(pl.col("partner") == partner).select("handle", "person_key")
        known = sends.join(own, on="handle", how="inner")
        if known.height != sends.height:
            raise InputError(f"{sends.height - known.height} reported handles are not {partner}'s handles in the job")
    except CleanroomError as exc:
        state.refuse("sends", exc, job_id=record.job_id, partner=partner)
    n = contact_ledger(state).record_sends(known.with_columns(pl.lit(partner).alias("partner")))
    state.audit.append("sends", {"job_id": record.job_id, "partner": partner, "sends": n})
    return n


def _sends_frame(sends: pl.DataFrame) -> pl.DataFrame:
    if not {"handle", "sent_at"} <= set(sends.columns):
        raise InputError("a sends file has columns handle and sent_at")
    handle = pl.col("handle")
    if sends.schema["handle"] == pl.String:
        handle = handle.str.decode("hex")
    sent = pl.col("sent_at")
    if sends.schema["sent_at"] == pl.String:
        sent = sent.str.to_datetime(time_zone="UTC")
    try:
        out = sends.select(handle.alias("handle"), sent.alias("sent_at"))
    except pl.exceptions.PolarsError:
        raise InputError("a sends file has hex handles and ISO 8601 sent_at timestamps") from None
    if out.null_count().sum_horizontal().item():
        raise InputError("a sends file has empty handles or timestamps")
    return out


# --- runs ---------------------------------------------------------------------------------------


def create_campaign(campaign: Campaign, job_dir: Path, out: Path, *, state: BrokerState) -> Campaign:
    """Validate a campaign against its job and write its folder (campaign.json)."""
    record, _ = _job(job_dir)
    try:
        validate_campaign(campaign, record)
    except CleanroomError as exc:
        state.refuse("campaign", exc, job_id=record.job_id, campaign=campaign.name)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / CAMPAIGN_FILE).write_text(campaign.model_dump_json(indent=2) + "\n")
    state.audit.append("campaign", {
        "job_id": record.job_id, "campaign_id": campaign.campaign_id, "name": campaign.name,
        "definition": campaign.model_dump(mode="json"),
    })
    return campaign


def run_campaign(
    campaign: Campaign, job_dir: Path, out: Path, *, state: BrokerState, at: datetime | None = None
) -> tuple[Report, dict[str, ReleaseManifest]]:
    """Assign, reserve, release and report one run of a campaign at time `at` (default now)."""
    at = at or datetime.now(UTC)
    record, rows = _job(job_dir)
    label = f"campaign {campaign.name}"
    try:
        validate_campaign(campaign, record)
        targeted = targeted_rows(rows, campaign, record)
        if targeted.is_empty():
            raise SpecError("the campaign target selects no person on the participating lists")
        _require_segment_size(state, record, targeted.get_column("person").n_unique(), label)
    except CleanroomError as exc:
        state.refuse("campaign-run", exc, job_id=record.job_id, campaign=campaign.campaign_id)
    ledger = contact_ledger(state)
    recent = ledger.recent(at, campaign.cap.days) if campaign.cap else None
    assignments, persons = assign(targeted, campaign, optouts=ledger.optouts(), recent=recent)
    run_id = blake3.blake3(f"{campaign.campaign_id}:{at.isoformat()}".encode()).hexdigest()[:24]
    report = _campaign_report(state, record, campaign, run_id, targeted, assignments, persons)
    recipients = {p: record.recipients[p] for p in campaign.partners}
    # reserve first: a run that fails after this over-counts contacts (never under-counts); a retry
    # of the same run (same time) replaces its reservations
    ledger.reserve(assignments, campaign.campaign_id, run_id, at)
    with staged_dir(out) as staging:
        releases = write_releases(
            assignments, where=f"{label} run {run_id}", job_id=record.job_id, recipients=recipients,
            broker=state.identity, folder=staging / "releases", labels=["sender"],
        )
        write_report(report, staging / "report")
        (staging / "internal").mkdir()
        assignments.write_parquet(staging / ASSIGNMENTS_FILE)
        run = CampaignRun(run_id=run_id, campaign_id=campaign.campaign_id, campaign=campaign.name,
                          job_id=record.job_id, at=at, releases={n: m.release_id for n, m in releases.items()})
        (staging / RUN_FILE).write_text(run.model_dump_json(indent=2) + "\n")
        (staging / CAMPAIGN_FILE).write_text(campaign.model_dump_json(indent=2) + "\n")
        for manifest in releases.values():
            state.audit.append("release", {
                "job_id": record.job_id, "campaign_id": campaign.campaign_id, "run_id": run_id,
                "release_id": manifest.release_id, "segment": manifest.segment,
                "recipient": manifest.recipient, "rows": manifest.rows,
            })
        save_checkpoint(state.audit.checkpoint(), staging / "checkpoint.json")
    return report, releases


def _campaign_report(
    state: BrokerState, record: JobRecord, campaign: Campaign, run_id: str,
    targeted: pl.DataFrame, assignments: pl.DataFrame, persons: pl.DataFrame,
) -> Report:
    policy = record.policy
    partners = list(campaign.partners)
    m = len(partners)
    raws: list[tuple[str, str, list[str], pl.DataFrame, int]] = []

    def counts(frame: pl.DataFrame, dims: list[str], domains: dict[str, list]) -> pl.DataFrame:
        got = frame.group_by(dims).agg(pl.len().cast(pl.Int64).alias("count"))
        grid = pl.DataFrame([dict(zip(domains, combo, strict=True)) for combo in _product(domains)],
                            schema={d: got.schema[d] for d in dims})
        return grid.join(got, on=dims, how="left").with_columns(pl.col("count").fill_null(0))

    raws.append(("campaign_status", "Targeted persons on a participating list, by outcome", ["status"],
                 counts(persons, ["status"], {"status": STATUSES}), 1))
    raws.append(("assigned_by_partner", "Assigned persons by partner", ["partner"],
                 counts(assignments, ["partner"], {"partner": partners}), 1))
    geo_frame = assignments.join(persons.select("person", *campaign.geography), on="person", how="left")
    for g in campaign.geography:
        values = persons.get_column(g).drop_nulls().unique().sort().to_list()
        raws.append((f"assigned_by_partner_x_{g}", f"Assigned persons by partner x {g}", ["partner", g],
                     counts(geo_frame.drop_nulls(g), ["partner", g], {"partner": partners, g: values}), 1))
    on_lists = targeted.select("person", "partner").unique()
    avoided = on_lists.join(assignments.select("person", pl.col("partner").alias("to")), on="person").filter(
        pl.col("partner") != pl.col("to"))
    raws.append(("duplicates_avoided", "Messages not sent twice: persons on the partner's list assigned to another",
                 ["partner"], counts(avoided, ["partner"], {"partner": partners}), max(m - 1, 1)))
    name = f"campaign:{run_id}"
    stored = state.ledger.stored_release(record.consortium_id, record.epoch, record.job_id, name)
    if stored is not None:
        return Report.model_validate_json(stored)
    if policy.dp:
        try:
            state.ledger.charge(record.consortium_id, record.epoch, record.job_id, name,
                                policy.epsilon_per_report, policy.epsilon_budget)
        except PolicyError as exc:
            state.refuse("campaign-report", exc, job_id=record.job_id, run_id=run_id)
    total = sum(r[4] for r in raws)
    tables = []
    for table_name, title, dims, frame, sensitivity in raws:
        epsilon = policy.epsilon_per_report * sensitivity / total if policy.dp else None
        protected = protect_table(frame, dims, policy=policy, epsilon=epsilon, sensitivity=sensitivity)
        tables.append(ReportTable(name=table_name, title=title, dims=dims, cells=protected.cells.to_dicts(),
                                  margins=protected.margins.to_dicts(), protections=protected.protections))
    report = Report(job_id=record.job_id, consortium_id=record.consortium_id, epoch=record.epoch,
                    partners=partners, policy=policy.model_dump(),
                    epsilon_charged=policy.epsilon_per_report if policy.dp else 0.0, tables=tables)
    state.ledger.record_release(record.consortium_id, record.epoch, record.job_id, name,
                                report.model_dump_json().encode())
    state.audit.append("report", {
        "job_id": record.job_id, "campaign_id": campaign.campaign_id, "run_id": run_id,
        "epsilon": report.epsilon_charged, "tables": [t.name for t in tables],
        "suppressed_cells": sum(t.protections.get("suppressed_cells", 0) for t in tables),
    })
    return report


def _product(domains: dict[str, list]) -> itertools.product:
    return itertools.product(*domains.values())


def resolve_assignment(release: Path, vault: Path, input_path: Path, **kwargs) -> pl.DataFrame:
    """Like `resolve_release`, carrying a campaign release's labels (the `sender`) through."""
    from cleanroom.resolve import resolve_release

    resolved = resolve_release(release, vault, input_path, **kwargs)
    extra = pl.read_parquet(Path(release) / RELEASE_FILE)
    labels = [c for c in extra.columns if c not in ("handle", "person_token")]
    if not labels:
        return resolved
    by_token = extra.select(pl.col("person_token").bin.encode("hex"), *labels).unique("person_token")
    return resolved.join(by_token, on="person_token", how="left")


def load_run(folder: Path) -> CampaignRun:
    """Read a run folder's run.json."""
    return CampaignRun.model_validate(json.loads((Path(folder) / RUN_FILE).read_text()))


__all__ = [
    "Campaign", "CampaignRun", "FrequencyCap", "Sender", "assign", "contact_ledger", "create_campaign",
    "load_campaign", "load_run", "mark_opt_out", "parse_campaign", "record_sends", "register_optouts", "resolve_assignment",
    "run_campaign", "validate_campaign",
]
