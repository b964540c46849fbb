"""CLI commands: identity, consortium and ceremony (thin wrappers over `cleanroom.keys`).

Passphrases come from CLEANROOM_PASSPHRASE or a prompt, never from arguments.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.table import Table

from cleanroom.cli.common import out
from cleanroom.errors import SpecError
from cleanroom.keys import ceremony
from cleanroom.keys.consortium import (
    Consortium,
    Policy,
    accept_consortium,
    init_consortium,
    load_consortium,
    rotate_consortium,
)
from cleanroom.keys.identity import IdentityCard, create_identity, load_card, load_identity, resolve_passphrase
from cleanroom.keys.relay import open_relay

identity_app = typer.Typer(no_args_is_help=True, help="Organization identities (signing and key agreement).")
consortium_app = typer.Typer(no_args_is_help=True, help="Consortium documents: members, policy, epoch.")
ceremony_app = typer.Typer(no_args_is_help=True, help="Contributory key ceremony through a relay.")

IdentityDir = Annotated[Path, typer.Option("--identity", help="Your identity folder.")]
ConsortiumFile = Annotated[Path, typer.Option("--consortium", help="The consortium document (JSON).")]
RelayOption = Annotated[str, typer.Option("--relay", help="Relay folder shared by the members.")]


def _card_table(cards: tuple[IdentityCard, ...] | list[IdentityCard], title: str) -> Table:
    table = Table(title=title)
    table.add_column("member")
    table.add_column("fingerprint", style="cyan")
    for card in cards:
        table.add_row(card.name, card.fingerprint)
    return table


def _show_consortium(doc: Consortium) -> None:
    out.print(f"consortium [bold]{doc.consortium_id}[/] epoch {doc.epoch}")
    out.print(f"document digest [cyan]{doc.digest}[/] (compare it with every member out of band)")
    out.print(f"convenor {doc.name_of(doc.body.convenor)}")
    policy = doc.policy
    out.print(
        f"policy: k={policy.k}, epsilon budget={policy.epsilon_budget if policy.epsilon_budget else 'none'}, "
        f"match spec digest={policy.match_spec_digest or 'none'}, "
        f"clear attributes={', '.join(policy.clear_attributes) or 'none'}"
    )
    out.print(_card_table(doc.members, "members"))


@identity_app.command("new")
def identity_new(
    name: Annotated[str, typer.Option("--name", help="Organization name shown to other members.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to create for the identity.")],
) -> None:
    """Create an identity; the passphrase comes from CLEANROOM_PASSPHRASE or a prompt."""
    card = create_identity(name, out_dir, resolve_passphrase(confirm=True))
    out.print(f"identity [bold]{card.name}[/] created; fingerprint [cyan]{card.fingerprint}[/]")
    out.print(f"hand {out_dir.name}/card.json to the convenor; keep the folder private")


@identity_app.command("show")
def identity_show(
    path: Annotated[Path, typer.Argument(help="An identity folder or a card file.")],
) -> None:
    """Print an identity card and its fingerprint."""
    card = load_card(path)
    out.print(f"name         {card.name}")
    out.print(f"fingerprint  [cyan]{card.fingerprint}[/]")
    out.print(f"signing key  {card.signing_key}")
    out.print(f"agreement    {card.agreement_key}")


def _policy(
    k: int, epsilon: float, per_report: float, no_dp: bool, spec_digest: str | None, attributes: list[str]
) -> Policy:
    try:
        return Policy(
            k=k, epsilon_budget=None if no_dp else epsilon, epsilon_per_report=per_report,
            match_spec_digest=spec_digest, clear_attributes=tuple(attributes),
        )
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise SpecError(f"invalid policy: {problems}") from None


@consortium_app.command("init")
def consortium_init(
    consortium_id: Annotated[str, typer.Option("--id", help="Consortium id (letters, digits, . _ -).")],
    convenor: Annotated[Path, typer.Option("--convenor", help="The convenor's identity folder.")],
    members: Annotated[list[Path], typer.Option("--member", help="A member's card.json (repeat).")],
    out_file: Annotated[Path, typer.Option("--out", help="Where to write the consortium document.")],
    epoch: Annotated[int, typer.Option(help="Starting epoch.")] = 0,
    k: Annotated[int, typer.Option("--k", help="Minimum released cell size.")] = 10,
    epsilon: Annotated[float, typer.Option(help="Differential-privacy epsilon budget per epoch.")] = 5.0,
    epsilon_per_report: Annotated[float, typer.Option(help="Epsilon each report costs.")] = 0.5,
    no_dp: Annotated[bool, typer.Option("--no-dp", help="Release without differential-privacy noise.")] = False,
    match_spec_digest: Annotated[str | None, typer.Option(help="Hex digest of the agreed match spec.")] = None,
    clear_attribute: Annotated[
        list[str] | None, typer.Option("--clear-attribute", help="Attribute allowed in the clear (repeat).")
    ] = None,
) -> None:
    """Create and sign a consortium document (the convenor is always a member)."""
    policy = _policy(k, epsilon, epsilon_per_report, no_dp, match_spec_digest, clear_attribute or [])
    cards = [load_card(p) for p in members]
    doc = init_consortium(consortium_id, load_identity(convenor), cards, out_file, epoch=epoch, policy=policy)
    _show_consortium(doc)
    out.print(f"wrote {out_file.name}; send it to every member")


@consortium_app.command("rotate")
def consortium_rotate(
    previous: Annotated[Path, typer.Option("--previous", help="The current consortium document.")],
    convenor: Annotated[Path, typer.Option("--convenor", help="The convenor's identity folder.")],
    out_file: Annotated[Path, typer.Option("--out", help="Where to write the next epoch's document.")],
    remove: Annotated[list[str] | None, typer.Option("--remove", help="Member name to drop (repeat).")] = None,
    add: Annotated[list[Path] | None, typer.Option("--add", help="New member's card.json (repeat).")] = None,
) -> None:
    """Make the next epoch's document (same policy); then run a new ceremony."""
    doc = rotate_consortium(
        load_consortium(previous),
        load_identity(convenor),
        out_file,
        remove=remove or [],
        add=[load_card(p) for p in add or []],
    )
    _show_consortium(doc)
    out.print(f"wrote {out_file.name}; every member accepts it and the ceremony runs again")


@consortium_app.command("show")
def consortium_show(
    path: Annotated[Path, typer.Argument(help="A consortium document.")],
) -> None:
    """Verify and print a consortium document."""
    _show_consortium(load_consortium(path))


@consortium_app.command("accept")
def consortium_accept(consortium: ConsortiumFile, identity: IdentityDir, relay: RelayOption) -> None:
    """Countersign the consortium document and publish the acceptance on the relay."""
    doc = load_consortium(consortium)
    me = load_identity(identity)
    _show_consortium(doc)
    accept_consortium(doc, me, open_relay(relay))
    out.print(f"[green]{me.card.name} accepted[/] {doc.consortium_id} epoch {doc.epoch}")


@ceremony_app.command("contribute")
def ceremony_contribute(consortium: ConsortiumFile, identity: IdentityDir, relay: RelayOption) -> None:
    """Seal a fresh random contribution to every member and put the shares on the relay."""
    doc = load_consortium(consortium)
    me = load_identity(identity)
    ceremony.contribute(doc, me, open_relay(relay))
    out.print(f"[green]{me.card.name} contributed[/] to {doc.consortium_id} epoch {doc.epoch}")


@ceremony_app.command("finish")
def ceremony_finish(
    consortium: ConsortiumFile,
    identity: IdentityDir,
    relay: RelayOption,
    out_file: Annotated[Path, typer.Option("--out", help="Key file to write (owner-only).")],
    wait: Annotated[float, typer.Option(help="Seconds to wait for the other members' fingerprints.")] = 0,
) -> None:
    """Open your shares, derive K, publish its fingerprint; write the key file once all agree.

    Exit code 0 when complete, 1 while other members have not finished (run again).
    """
    doc = load_consortium(consortium)
    result = ceremony.finish(doc, load_identity(identity), open_relay(relay), out_file, wait_seconds=wait)
    out.print(f"key fingerprint [cyan]{result.key_fingerprint}[/] published")
    if not result.complete:
        out.print(f"[yellow]waiting for:[/] {', '.join(result.waiting_for)}; run finish again later")
        raise typer.Exit(1)
    out.print(f"[green]all members agree[/]; wrote {out_file.name} (epoch {doc.epoch})")


@ceremony_app.command("status")
def ceremony_status(consortium: ConsortiumFile, relay: RelayOption) -> None:
    """Show who accepted, contributed and finished, and whether fingerprints agree."""
    doc = load_consortium(consortium)
    st = ceremony.status(doc, open_relay(relay))
    table = Table(title=f"{st.consortium_id} epoch {st.epoch}")
    for column in ("member", "accepted", "shares", "finished", "key fingerprint"):
        table.add_column(column)
    total = len(st.members)
    for m in st.members:
        table.add_row(
            m.name,
            "yes" if m.accepted else "no",
            f"{m.shares}/{total}",
            "yes" if m.finished else "no",
            m.key_fingerprint or "-",
        )
    out.print(table)
    for m in st.members:
        for problem in m.problems:
            out.print(f"[red]problem:[/] {problem}")
    if st.complete:
        out.print(f"[green]complete[/]: every member holds key {st.agreed_fingerprint}")
    elif len({m.key_fingerprint for m in st.members if m.key_fingerprint}) > 1:
        out.print("[red]fingerprints disagree[/]: do not use this epoch's key")
    else:
        out.print("[yellow]in progress[/]")


SUBCOMMANDS = {"identity": identity_app, "consortium": consortium_app, "ceremony": ceremony_app}
