"""CLI of the broker service: `cleanroom serve` and the member client `cleanroom remote ...`.

Every `remote` verb is a thin wrapper over `cleanroom.service.client.ServiceClient`.
Server URL and identity come from --server/--identity, CLEANROOM_SERVER /
CLEANROOM_IDENTITY, or the client config file; passphrases from
CLEANROOM_PASSPHRASE or a prompt.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cleanroom.cli.broker import print_report
from cleanroom.cli.common import out
from cleanroom.errors import InputError
from cleanroom.keys import ceremony
from cleanroom.keys.consortium import accept_consortium, load_consortium
from cleanroom.keys.identity import load_card, load_identity

remote_app = typer.Typer(no_args_is_help=True, help="Talk to the broker service (signed requests).")
job_app = typer.Typer(no_args_is_help=True, help="Match jobs on the service.")
ceremony_app = typer.Typer(no_args_is_help=True, help="Key ceremony with the service as relay.")
remote_app.add_typer(job_app, name="job")
remote_app.add_typer(ceremony_app, name="ceremony")
campaign_app = typer.Typer(no_args_is_help=True, help="Coordinated campaigns on the service.")
sends_app = typer.Typer(no_args_is_help=True, help="Report your sends (they count toward the coalition's caps).")
remote_app.add_typer(campaign_app, name="campaign")
remote_app.add_typer(sends_app, name="sends")

ConsortiumFile = Annotated[Path, typer.Option("--consortium", help="The consortium document (JSON).")]


@remote_app.callback()
def remote_options(
    ctx: typer.Context,
    server: Annotated[str | None, typer.Option(help="Service URL (else CLEANROOM_SERVER or the config file).")] = None,
    identity: Annotated[Path | None, typer.Option(help="Your identity folder (else CLEANROOM_IDENTITY or the config file).")] = None,
    broker_card: Annotated[Path | None, typer.Option(help="Pin the broker's card that must sign releases.")] = None,
) -> None:
    ctx.obj = {"server": server, "identity": identity, "broker_card": broker_card}


def _opts(ctx: typer.Context) -> dict:
    node = ctx
    while node is not None:
        if isinstance(node.obj, dict):
            return node.obj
        node = node.parent
    return {}


def _connect(ctx: typer.Context):
    from cleanroom.service.client import ServiceClient

    return ServiceClient.from_settings(**_opts(ctx))


def serve(
    data: Annotated[Path, typer.Option("--data", help="The service's data folder (created if absent).")],
    identity: Annotated[Path, typer.Option("--identity", help="The broker's identity folder (signs releases and the audit log).")],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    admin_card: Annotated[list[Path] | None, typer.Option("--admin-card", help="Enrol this card as broker admin (repeat).")] = None,
    max_upload_mb: Annotated[float, typer.Option(help="Largest accepted tokens file, in MiB.")] = 4096,
    idle_timeout: Annotated[float, typer.Option(help="Seconds an upload may stall before it is dropped.")] = 30,
    max_attempts: Annotated[int, typer.Option(help="Runs of an interrupted job before it is marked failed.")] = 3,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Run the broker service (FastAPI under uvicorn) over a data folder."""
    from cleanroom.service.app import Settings, enrol_local
    from cleanroom.service.app import serve as run

    for card_path in admin_card or []:
        card = load_card(card_path)
        if enrol_local(data, card, "admin"):
            out.print(f"enrolled {card.name} as admin")
    settings = Settings(data=data, identity=load_identity(identity), max_upload_bytes=int(max_upload_mb * (1 << 20)),
                        idle_timeout=idle_timeout, max_attempts=max_attempts)
    run(settings, host=host, port=port, log_level=log_level)


@remote_app.command("whoami")
def whoami(ctx: typer.Context) -> None:
    """Show how the service knows you (name, fingerprint, role)."""
    with _connect(ctx) as client:
        me = client.me()
    out.print(f"{me['name']} ({me['role']}), fingerprint {me['fingerprint']}")


@remote_app.command("enrol")
def enrol(
    ctx: typer.Context,
    card: Annotated[Path, typer.Option("--card", help="The member's card.json.")],
    role: Annotated[str, typer.Option(help="partner, custodian, coordinator or admin.")],
) -> None:
    """Enrol a member from its identity card (broker admin)."""
    member = load_card(card)
    with _connect(ctx) as client:
        client.enrol(member, role)
    out.print(f"enrolled {member.name} as {role} (fingerprint {member.fingerprint})")


@remote_app.command("register")
def register(ctx: typer.Context, consortium: ConsortiumFile) -> None:
    """Register a consortium document with the service (its convenor or the admin)."""
    doc = load_consortium(consortium)
    with _connect(ctx) as client:
        result = client.register_consortium(doc)
    out.print(f"registered {result['consortium_id']} epoch {result['epoch']} (digest {result['digest']})")


@ceremony_app.command("accept")
def remote_accept(ctx: typer.Context, consortium: ConsortiumFile) -> None:
    """Countersign the consortium document and post the acceptance to the service."""
    doc = load_consortium(consortium)
    with _connect(ctx) as client:
        accept_consortium(doc, client.identity, client.relay())
    out.print(f"accepted {doc.consortium_id} epoch {doc.epoch}")


@ceremony_app.command("contribute")
def remote_contribute(ctx: typer.Context, consortium: ConsortiumFile) -> None:
    """Seal a contribution to every member and post the shares to the service."""
    doc = load_consortium(consortium)
    with _connect(ctx) as client:
        ceremony.contribute(doc, client.identity, client.relay())
    out.print(f"contributed to {doc.consortium_id} epoch {doc.epoch}")


@ceremony_app.command("finish")
def remote_finish(
    ctx: typer.Context,
    consortium: ConsortiumFile,
    out_file: Annotated[Path, typer.Option("--out", help="Key file to write (owner-only).")],
    wait: Annotated[float, typer.Option(help="Seconds to wait for the other members.")] = 0,
) -> None:
    """Open your shares, derive K, post its fingerprint; write the key once all agree (exit 1 while waiting)."""
    doc = load_consortium(consortium)
    with _connect(ctx) as client:
        result = ceremony.finish(doc, client.identity, client.relay(), out_file, wait_seconds=wait)
    out.print(f"key fingerprint {result.key_fingerprint} published")
    if not result.complete:
        out.print(f"waiting for: {', '.join(result.waiting_for)}; run finish again later")
        raise typer.Exit(1)
    out.print(f"all members agree; wrote {out_file.name}")


@remote_app.command("push")
def push(ctx: typer.Context, bundle: Annotated[Path, typer.Argument(metavar="BUNDLE_DIR")]) -> None:
    """Upload a bundle; uploading the same bundle again is a no-op."""
    with _connect(ctx) as client:
        result = client.push(bundle)
    verb = "uploaded" if result.get("created") else "already stored"
    out.print(f"{verb}: {bundle.name} as {result['digest']}")


@remote_app.command("bundles")
def bundles(ctx: typer.Context) -> None:
    """List my bundles (coordinators: every bundle's metadata)."""
    with _connect(ctx) as client:
        rows = client.bundles()
    table = Table("digest", "owner", "kind", "consortium", "epoch", "rows")
    for r in rows:
        table.add_row(r["digest"][:16], r["owner"], r["kind"], r["consortium_id"], str(r["epoch"]), f"{r['rows']:,}")
    out.print(table)


@job_app.command("create")
def job_create(
    ctx: typer.Context,
    consortium_id: Annotated[str, typer.Option("--consortium-id", help="Consortium id.")],
    epoch: Annotated[int, typer.Option(help="Consortium epoch.")],
    reference: Annotated[list[str] | None, typer.Option(help="Reference bundle digest (repeat; default: latest of each custodian).")] = None,
    partner: Annotated[list[str] | None, typer.Option(help="Partner bundle digest (repeat; default: latest of each partner).")] = None,
    crosstab: Annotated[list[str] | None, typer.Option(help="Extra cross-tab, e.g. state_house_district,party.")] = None,
    wait: Annotated[float, typer.Option(help="Seconds to wait for the job to finish.")] = 0,
) -> None:
    """Queue a match job (coordinator)."""
    with _connect(ctx) as client:
        job = client.create_job(consortium_id, epoch, references=reference, partners=partner,
                                crosstabs=[c.split(",") for c in crosstab or []])
        if wait:
            job = client.wait(job["id"], timeout=wait)
    _print_job(job)


@job_app.command("status")
def job_status(ctx: typer.Context, job_id: Annotated[str, typer.Argument(metavar="JOB")],
               wait: Annotated[float, typer.Option(help="Seconds to wait for the job to finish.")] = 0) -> None:
    """Show a job's state."""
    with _connect(ctx) as client:
        job = client.wait(job_id, timeout=wait) if wait else client.job(job_id)
    _print_job(job)


@job_app.command("list")
def job_list(ctx: typer.Context) -> None:
    """Jobs visible to me."""
    with _connect(ctx) as client:
        for job in client.jobs():
            _print_job(job)


@job_app.command("retry")
def job_retry(ctx: typer.Context, job_id: Annotated[str, typer.Argument(metavar="JOB")]) -> None:
    """Queue a failed job again (coordinator)."""
    with _connect(ctx) as client:
        _print_job(client.retry(job_id))


@job_app.command("segment")
def job_segment(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(metavar="JOB")],
    where: Annotated[str, typer.Option(help="Filter over allowed attributes, SQL syntax.")],
    wait: Annotated[float, typer.Option(help="Seconds to wait for the segment.")] = 0,
) -> None:
    """Queue a segment release cut from a finished job (coordinator)."""
    with _connect(ctx) as client:
        job = client.segment(job_id, where)
        if wait:
            job = client.wait(job["id"], timeout=wait)
    _print_job(job)


@remote_app.command("report")
def report(ctx: typer.Context, job_id: Annotated[str, typer.Argument(metavar="JOB")]) -> None:
    """Print a finished job's protected report."""
    with _connect(ctx) as client:
        print_report(client.report(job_id), limit=None)


@remote_app.command("pull")
def pull(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(metavar="JOB")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for my releases (one sub-folder each).")],
) -> None:
    """Download and verify my releases of a job; then run `cleanroom resolve` on each."""
    with _connect(ctx) as client:
        folders = client.pull(job_id, out_dir)
    for folder in folders:
        out.print(f"release {folder.name} verified in {out_dir.name}/{folder.name}")
    if not folders:
        out.print("no releases for you in this job")


@remote_app.command("audit")
def audit(ctx: typer.Context, after: Annotated[int, typer.Option(help="Show entries after this sequence number.")] = -1,
          limit: Annotated[int, typer.Option(help="At most this many entries.")] = 100) -> None:
    """Show the broker's audit log (admin)."""
    with _connect(ctx) as client:
        for entry in client.audit(after, limit):
            out.print(f"{entry['seq']:>5} {entry['at']} {entry['kind']:<20} {entry['body']}")


@campaign_app.command("create")
def campaign_create(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(metavar="JOB", help="A finished match job.")],
    definition: Annotated[Path, typer.Option("--definition", help="Campaign definition (JSON; job_id is filled in).")],
) -> None:
    """Define a campaign on a finished match job (coordinator)."""
    try:
        body = json.loads(definition.read_text())
    except (OSError, ValueError):
        raise InputError(f"{definition.name} is not a readable JSON campaign definition") from None
    with _connect(ctx) as client:
        made = client.define_campaign(job_id, body)
    out.print(f"campaign {made['id']} ({made['name']}) on job {made['job_id']}")


@campaign_app.command("list")
def campaign_list(ctx: typer.Context) -> None:
    """Campaigns on the service (coordinator, admin)."""
    with _connect(ctx) as client:
        rows = client.campaigns()
    grid = Table("campaign", "name", "job", "partners", "policy")
    for c in rows:
        d = c["definition"]
        grid.add_row(c["id"], c["name"], c["job_id"], ", ".join(d["partners"]), " > ".join(d["policy"]))
    out.print(grid)


@campaign_app.command("run")
def campaign_run(
    ctx: typer.Context,
    campaign: Annotated[str, typer.Argument(metavar="CAMPAIGN")],
    wait: Annotated[bool, typer.Option(help="Wait for the run and print its report.")] = True,
) -> None:
    """Queue a campaign run; partners then `cleanroom remote pull RUN` their assignments."""
    with _connect(ctx) as client:
        job = client.run_campaign(campaign)
        if wait:
            job = client.wait(job["id"])
        _print_job(job)
        if job["state"] == "done":
            print_report(client.report(job["id"]), limit=12)


@campaign_app.command("optout")
def campaign_optout(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(metavar="JOB", help="The match job whose campaigns it applies to.")],
    bundle: Annotated[Path, typer.Argument(metavar="BUNDLE_DIR", help="Made with `cleanroom hash --opt-out`.")],
) -> None:
    """Upload your opt-out (unsubscribe) bundle and record it (partner)."""
    with _connect(ctx) as client:
        client.push_optouts(job_id, bundle)
    out.print(f"opt-outs recorded for job {job_id}")


@sends_app.command("report")
def sends_report(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(metavar="JOB", help="The match job of the campaign.")],
    sends_file: Annotated[Path, typer.Argument(metavar="SENDS", help="CSV or Parquet: handle (hex), sent_at (ISO 8601).")],
) -> None:
    """Report the messages you sent (handles from your campaign releases, with timestamps)."""
    import polars as pl

    if sends_file.suffix == ".parquet":
        frame = pl.read_parquet(sends_file)
    else:
        frame = pl.read_csv(sends_file, schema_overrides={"handle": pl.String, "sent_at": pl.String})
    with _connect(ctx) as client:
        n = client.report_sends(job_id, frame)
    out.print(f"{n} sends recorded")


def _print_job(job: dict) -> None:
    extra = f" ({job['error']})" if job.get("error") else ""
    out.print(f"{job['id']} {job['kind']} {job['consortium_id']} epoch {job['epoch']}: {job['state']}{extra}")


SUBCOMMANDS = {"remote": remote_app}
COMMANDS = [serve]
