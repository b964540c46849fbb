"""CLI commands of the broker (match, segment, report) and the partner's resolve."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cleanroom.broker.job import BrokerState, match_job, segment_job
from cleanroom.broker.releases import ReleaseManifest
from cleanroom.broker.reports import Report, load_report
from cleanroom.cli.common import out
from cleanroom.keys.consortium import load_consortium
from cleanroom.keys.identity import load_card, load_identity
from cleanroom.resolve import resolve_release, write_rows

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
    mode: Annotated[str, typer.Option(help="cascade (deterministic) or score (learned weights, experimental).")] = "cascade",
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


def resolve(
    release: Annotated[Path, typer.Argument(metavar="RELEASE", help="Your release folder from the broker.")],
    vault: Annotated[Path, typer.Option("--vault", help="The vault folder written by `cleanroom hash`.")],
    input_file: Annotated[Path, typer.Option("--input", help="The list that was hashed.")],
    out_file: Annotated[Path, typer.Option("--out", help="Where to write your rows (.csv or .parquet).")],
    broker: Annotated[Path | None, typer.Option(help="The broker's identity card the release must be signed by.")] = None,
    encoding: Annotated[str, typer.Option(help="CSV encoding of the input.")] = "utf-8",
) -> None:
    """Turn a release back into your own rows (with a per-release person token)."""
    rows = resolve_release(release, vault, input_file, broker=load_card(broker) if broker else None, encoding=encoding)
    write_rows(rows, out_file)
    out.print(f"wrote {rows.height} rows to {out_file} ({rows.get_column('person_token').n_unique()} distinct persons)")


def print_report(report: Report, limit: int | None) -> None:
    """Protected tables as terminal tables; suppressed cells shown as <k."""
    k = report.policy.get("k")
    dp = report.policy.get("dp")
    out.print(
        f"job {report.job_id}: consortium {report.consortium_id} epoch {report.epoch}; "
        f"k={k}; " + (f"differential privacy, epsilon {report.epsilon_charged:g} charged" if dp else "no noise")
    )
    for table in report.tables:
        grid = Table(*table.dims, "count", title=table.title)
        for cell in table.cells[:limit]:
            value = f"<{k}" if cell["suppressed"] else f"{cell['count']:,}"
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
