"""CLI commands: `synth voters`, `synth partners` and `evaluate`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cleanroom.cli.common import out
from cleanroom.errors import InputError

synth_app = typer.Typer(no_args_is_help=True, help="Generate synthetic voter files and partner lists.")


@synth_app.command("voters")
def voters(
    rows: Annotated[int, typer.Option("--rows", help="Number of voters.")],
    out_file: Annotated[Path, typer.Option("--out", help="Output file (.parquet or .csv).")],
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    state: Annotated[str, typer.Option(help="Two-letter state code.")] = "NC",
    birth_year_only: Annotated[bool, typer.Option(
        "--birth-year-only", help="Publish birth year and age instead of the birth date.")] = False,
) -> None:
    """Write a synthetic state voter file."""
    from cleanroom.synth import generate_voters, write_frame

    df = generate_voters(rows, seed=seed, birth_year_only=birth_year_only, state=state)
    write_frame(df, out_file)
    out.print(f"wrote {len(df):,} voters to {out_file}")


def _overrides(values: list[str]) -> dict[str, float]:
    result = {}
    for item in values:
        key, sep, value = item.partition("=")
        try:
            result[key.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise InputError("--noise takes NAME=RATE, e.g. --noise typo=0.05")
    return result


@synth_app.command("partners")
def partners(
    voters_file: Annotated[Path, typer.Option("--voters", help="Voter file from `synth voters`.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder.")],
    lists: Annotated[int, typer.Option("--lists", help="Number of partner lists.")] = 3,
    size: Annotated[list[int], typer.Option(
        "--size", help="Rows per list; once for all lists or once per list.")] = [10_000],  # noqa: B006
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    profile: Annotated[str, typer.Option(help="Noise profile: default or hard.")] = "default",
    overlap: Annotated[float, typer.Option(help="Share of a list found in another list.")] = 0.3,
    registered_share: Annotated[float, typer.Option(help="Share of listed persons who are voters.")] = 0.8,
    noise: Annotated[list[str], typer.Option(
        "--noise", help="Override a noise rate, NAME=RATE (repeatable).")] = [],  # noqa: B006
) -> None:
    """Write noisy partner lists (OUT/<name>.csv) and their ground truth (OUT/truth/<name>.parquet)."""
    from cleanroom.synth import generate_partners, read_frame, write_partners

    if len(size) not in (1, lists):
        raise InputError("give --size once, or once per list")
    sizes = size * lists if len(size) == 1 else size
    voter_df = read_frame(voters_file)
    result, truth = generate_partners(
        voter_df, lists, sizes=sizes, overlap=overlap, registered_share=registered_share,
        seed=seed, profile=profile, noise=_overrides(noise),  # type: ignore[arg-type]
    )
    write_partners(result, truth, out_dir)
    out.print(f"wrote {len(result)} lists ({sum(map(len, result.values())):,} rows) to {out_dir}")


def evaluate(
    matches: Annotated[Path, typer.Option("--matches", help="Match table (.parquet).")],
    truth: Annotated[Path, typer.Option("--truth", help="Folder of <partner>.parquet ground truth.")],
    vault: Annotated[list[str], typer.Option(
        "--vault", help="A partner vault, NAME=FILE (repeatable).")],
    reference_vault: Annotated[Path, typer.Option("--reference-vault", help="The voter file's vault.")],
    json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Score a match table against synthetic ground truth: precision, recall, F1, overlap."""
    from cleanroom.evaluate import evaluate as run
    from cleanroom.synth import read_frame, read_truth

    vaults = {}
    for item in vault:
        name, sep, path = item.partition("=")
        if not sep or not name:
            raise InputError("--vault takes NAME=FILE")
        vaults[name] = read_frame(Path(path))
    truths = read_truth(truth)
    if set(vaults) - set(truths):
        raise InputError("every --vault name needs a <name>.parquet in the --truth folder")
    truths = {name: truths[name] for name in vaults}
    result = run(read_frame(matches), truths, vaults, read_frame(reference_vault))
    if json:
        print(result.to_json())
    else:
        out.print(result.render())


SUBCOMMANDS = {"synth": synth_app}
COMMANDS = [evaluate]
