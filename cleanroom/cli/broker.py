"""CLI commands of the broker (match, segment, report, campaign) and the partner's resolve."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import polars as pl
import typer
from rich.table import Table

from cleanroom.broker.campaign import (
    CAMPAIGN_FILE,
    create_campaign,
    load_campaign,
    record_sends,
    register_optouts,
    resolve_assignment,
    run_campaign,
)
from cleanroom.broker.job import BrokerState, match_job, segment_job
from cleanroom.broker.releases import ReleaseManifest
from cleanroom.broker.reports import Report, load_report
from cleanroom.cli.common import out
from cleanroom.keys.consortium import load_consortium
from cleanroom.keys.identity import load_card, load_identity
from cleanroom.resolve import write_rows

broker_app = typer.Typer(no_args_is_help=True, help="Broker: match jobs, reports and segment releases.")

IdentityOption = Annotated[Path, typer.Option("--identity", help="The broker's identity folder (signs releases and the audit log).")]
StateOption = Annotated[Path, typer.Option("--state", help="The broker's state folder (audit log, budget ledger).")]


@broker_app.command("match")
def match(
    references: Annotated[list[Path], typer.Option("--reference", help="Reference bundle; the first is the voter file.")],
    partners: Annotated[list[Path], typer.Option("--partner", help="Partner bundle (repeat).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Job folder to write.")],
    identity: IdentityOption,
    state: StateOption,
    policy: Annotated[Path | None, typer.Option("--policy", help="Consortium document (policy, members, epoch).")] = None,
    crosstab: Annotated[list[str] | None, typer.Option(help="Extra cross-tab, e.g. state_house_district,party,partner.")] = None,
    mode: Annotated[str, typer.Option(help="cascade (deterministic) or score (learned weights, experimental; "
                                        "for specs made for it, such as examples/scored_spec.toml).")] = "cascade",
) -> None:
    """Verify bundles, run the match cascade, write protected reports and per-partner releases."""
    consortium = load_consortium(policy) if policy else None
    broker = BrokerState(state, load_identity(identity))
    report, releases = match_job(
        references, partners, out_dir, state=broker, consortium=consortium,
        crosstabs=[c.split(",") for c in crosstab or []], mode=mode,
    )
    print_report(report, limit=12)
    _print_releases(releases, out_dir / "releases")


@broker_app.command("segment")
def segment(
    job_dir: Annotated[Path, typer.Argument(metavar="JOB_DIR")],
    where: Annotated[str, typer.Option(help="Filter over allowed attributes, SQL syntax, e.g. \"county = 'WAKE'\".")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the releases.")],
    identity: IdentityOption,
    state: StateOption,
) -> None:
    """Release a further segment of a finished job to each partner."""
    releases = segment_job(job_dir, where, out_dir, state=BrokerState(state, load_identity(identity)))
    _print_releases(releases, out_dir)


@broker_app.command("report")
def report(
    path: Annotated[Path, typer.Argument(metavar="JOB_DIR_OR_REPORT")],
) -> None:
    """Print a job's protected report."""
    target = path / "report" if (path / "report").is_dir() else path
    print_report(load_report(target), limit=None)


campaign_app = typer.Typer(no_args_is_help=True, help="Coordinated campaigns: assignments, opt-outs, sends, caps.")
broker_app.add_typer(campaign_app, name="campaign")
JobArgument = Annotated[Path, typer.Argument(metavar="JOB_DIR", help="A finished match job folder.")]


@campaign_app.command("create")
def campaign_create(
    job_dir: JobArgument,
    definition: Annotated[Path, typer.Option("--definition", help="Campaign definition (JSON).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Campaign folder to write (campaign.json).")],
    identity: IdentityOption,
    state: StateOption,
) -> None:
    """Validate a campaign definition against its job and record it."""
    campaign = create_campaign(load_campaign(definition), job_dir, out_dir, state=BrokerState(state, load_identity(identity)))
    out.print(f"campaign {campaign.name} ({campaign.campaign_id}) for job {campaign.job_id[:12]}: "
              f"{', '.join(campaign.partners)}; policy {' > '.join(campaign.policy)}")


@campaign_app.command("optout")
def campaign_optout(
    job_dir: JobArgument,
    bundle: Annotated[Path, typer.Argument(metavar="OPTOUT_BUNDLE", help="Opt-out list hashed with `cleanroom hash`.")],
    received_by: Annotated[str, typer.Option("--received-by", help="The partner that received the opt-outs.")],
    references: Annotated[list[Path], typer.Option("--reference", help="The job's reference bundle(s).")],
    partners: Annotated[list[Path], typer.Option("--partner", help="The job's partner bundles (repeat).")],
    identity: IdentityOption,
    state: StateOption,
) -> None:
    """Match an opt-out bundle to persons and add it to the broker's contact ledger."""
    register_optouts(job_dir, bundle, received_by=received_by, references=references, partners=partners,
                     state=BrokerState(state, load_identity(identity)))
    out.print(f"opt-outs received by {received_by} recorded")


@campaign_app.command("run")
def campaign_run(
    campaign_dir: Annotated[Path, typer.Argument(metavar="CAMPAIGN_DIR")],
    job_dir: Annotated[Path, typer.Option("--job", help="The campaign's job folder.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Run folder to write (report, releases).")],
    identity: IdentityOption,
    state: StateOption,
    at: Annotated[datetime | None, typer.Option(help="Run time (ISO 8601, UTC); default now.")] = None,
) -> None:
    """Assign targeted persons, reserve contacts, write releases and the protected report."""
    campaign = load_campaign(campaign_dir / CAMPAIGN_FILE)
    when = at.replace(tzinfo=UTC) if at is not None and at.tzinfo is None else at
    report, releases = run_campaign(campaign, job_dir, out_dir, state=BrokerState(state, load_identity(identity)),
                                    at=when)
    print_report(report, limit=12)
    _print_releases(releases, out_dir / "releases")


@campaign_app.command("sends")
def campaign_sends(
    job_dir: JobArgument,
    sends_file: Annotated[Path, typer.Argument(metavar="SENDS", help="CSV or Parquet: handle (hex), sent_at (ISO 8601).")],
    partner: Annotated[str, typer.Option("--partner", help="The partner that sent.")],
    identity: IdentityOption,
    state: StateOption,
) -> None:
    """Record a partner's reported sends in the contact ledger (they count toward caps)."""
    frame = pl.read_parquet(sends_file) if sends_file.suffix == ".parquet" else pl.read_csv(
        sends_file, schema_overrides={"handle": pl.String, "sent_at": pl.String})
    n = record_sends(job_dir, partner, frame, state=BrokerState(state, load_identity(identity)))
    out.print(f"{n} sends by {partner} recorded")


@campaign_app.command("report")
def campaign_report(run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR")]) -> None:
    """Print a campaign run's protected report."""
    print_report(load_report(run_dir / "report"), limit=None)


def resolve(
    release: Annotated[Path, typer.Argument(metavar="RELEASE", help="Your release folder from the broker.")],
    vault: Annotated[Path, typer.Option("--vault", help="The vault folder written by `cleanroom hash`.")],
    input_file: Annotated[Path, typer.Option("--input", help="The list that was hashed.")],
    out_file: Annotated[Path, typer.Option("--out", help="Where to write your rows (.csv or .parquet).")],
    broker: Annotated[Path | None, typer.Option(help="The broker's identity card the release must be signed by.")] = None,
    encoding: Annotated[str, typer.Option(help="CSV encoding of the input.")] = "utf-8",
) -> None:
    """Turn a release back into your own rows (with a per-release person token, and a campaign's sender)."""
    rows = resolve_assignment(release, vault, input_file, broker=load_card(broker) if broker else None,
                              encoding=encoding)
    write_rows(rows, out_file)
    out.print(f"wrote {rows.height} rows to {out_file} ({rows.get_column('person_token').n_unique()} distinct persons)")


def print_report(report: Report, limit: int | None) -> None:
    """Protected tables as terminal tables (suppressed cells, below k or hiding one, say so)."""
    k = report.policy.get("k")
    dp = report.policy.get("dp")
    out.print(
        f"job {report.job_id}: consortium {report.consortium_id} epoch {report.epoch}; "
        f"k={k}; " + (f"differential privacy, epsilon {report.epsilon_charged:g} charged" if dp else "no noise")
    )
    for table in report.tables:
        grid = Table(*table.dims, "count", title=table.title)
        for cell in table.cells[:limit]:
            value = "suppressed" if cell["suppressed"] else f"{cell['count']:,}"
            grid.add_row(*[str(cell[d]) for d in table.dims], value)
        if limit is not None and len(table.cells) > limit:
            grid.add_row(*["..."] * len(table.dims), f"{len(table.cells) - limit} more rows in the report files")
        out.print(grid)


def _print_releases(releases: dict[str, ReleaseManifest], folder: Path) -> None:
    for name, manifest in releases.items():
        out.print(f"release for {name}: {manifest.rows} handles ({manifest.segment})")
    out.print(f"releases in {folder}; each partner receives only its own folder")


SUBCOMMANDS = {"broker": broker_app}
COMMANDS = [resolve]
