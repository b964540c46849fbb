"""The identity, consortium and ceremony commands, run through `cleanroom.cli.main`."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from cleanroom.cli import main
from cleanroom.keys import identity as ident
from cleanroom.keys.secret import load_key

PASSPHRASE = "five orgs one key"
ORGS = ["Riverside Tenants", "Local 1199", "Eastside Mutual Aid", "Voter Action", "Parents United"]


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(ident, "SCRYPT_LOG_N", 10)
    monkeypatch.setenv(ident.PASSPHRASE_ENV, PASSPHRASE)
    monkeypatch.chdir(tmp_path)


def run(*args: str) -> int:
    """Run the CLI in-process; return its exit code."""
    try:
        main(list(args))
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_five_organizations_through_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    for i, org in enumerate(ORGS):
        assert run("identity", "new", "--name", org, "--out", f"org{i}") == 0
    assert run("identity", "show", "org0") == 0
    members = [arg for i in range(1, 5) for arg in ("--member", f"org{i}/card.json")]
    assert run(
        "consortium", "init", "--id", "metro-2026", "--convenor", "org0", *members,
        "--k", "11", "--epsilon", "1.5", "--match-spec-digest", "ab" * 32,
        "--clear-attribute", "precinct", "--out", "consortium.json",
    ) == 0
    common = ["--consortium", "consortium.json", "--relay", "relay"]
    for i in range(5):
        assert run("consortium", "accept", *common, "--identity", f"org{i}") == 0
    for i in range(5):
        assert run("ceremony", "contribute", *common, "--identity", f"org{i}") == 0
    assert run("ceremony", "finish", *common, "--identity", "org0", "--out", "org0.key") == 1
    assert not Path("org0.key").exists()
    for i in range(1, 5):
        assert run("ceremony", "finish", *common, "--identity", f"org{i}", "--out", f"org{i}.key") == (
            0 if i == 4 else 1
        )
    assert run("ceremony", "finish", *common, "--identity", "org0", "--out", "org0.key", "--wait", "1") == 0
    capsys.readouterr()
    assert run("ceremony", "status", *common) == 0
    shown = capsys.readouterr().out
    keys = [load_key(Path(f"org{i}.key")) for i in (0, 4)]
    assert keys[0].secret == keys[1].secret and keys[0].consortium_id == "metro-2026"
    assert "complete" in shown and keys[0].fingerprint in shown
    assert stat.S_IMODE(os.stat("org0.key").st_mode) == 0o600
    doc = json.loads(Path("consortium.json").read_text())
    assert doc["body"]["policy"] == {
        "k": 11, "epsilon_budget": 1.5, "epsilon_per_report": 0.5, "match_spec_digest": "ab" * 32,
        "clear_attributes": ["precinct"],
    }
    # rotation without a member, then the removed member is refused
    assert run("consortium", "rotate", "--previous", "consortium.json", "--convenor", "org0",
               "--remove", "Parents United", "--out", "epoch1.json") == 0
    capsys.readouterr()
    assert run("consortium", "accept", "--consortium", "epoch1.json", "--relay", "relay", "--identity", "org4") == 2
    assert capsys.readouterr().err.strip() == "error: identity Parents United is not a member of metro-2026"


def test_no_passphrase_and_no_tty_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(ident.PASSPHRASE_ENV)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert run("identity", "new", "--name", "Org", "--out", "org") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "CLEANROOM_PASSPHRASE" in err
    assert not Path("org").exists()


def test_wrong_passphrase_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("identity", "new", "--name", "Org A", "--out", "a") == 0
    assert run("identity", "new", "--name", "Org B", "--out", "b") == 0
    monkeypatch.setenv(ident.PASSPHRASE_ENV, "not the passphrase")
    capsys.readouterr()
    assert run("consortium", "init", "--id", "c", "--convenor", "a", "--member", "b/card.json", "--out", "c.json") == 2
    assert capsys.readouterr().err == "error: wrong passphrase for identity a\n"
    assert not Path("c.json").exists()


def test_user_mistakes_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("identity", "new", "--name", "Org A", "--out", "a") == 0
    assert run("identity", "new", "--name", "Org A", "--out", "a") == 2
    assert run("identity", "show", "missing") == 2
    assert run("consortium", "init", "--id", "c", "--convenor", "a", "--member", "a/card.json",
               "--k", "1", "--out", "c.json") == 2
    assert run("ceremony", "status", "--consortium", "nope.json", "--relay", "relay") == 2
    assert run("ceremony", "status", "--consortium", "nope.json", "--relay", "https://broker") == 2
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 5 and all(line.startswith("error: ") for line in errors)
    assert PASSPHRASE not in "".join(errors)


def test_installed_entry_point_without_passphrase(tmp_path: Path) -> None:
    """The real console script fails fast (no hang) when no passphrase is available."""
    exe = Path(sys.executable).parent / "cleanroom"
    if not exe.exists():
        pytest.skip("console script not installed")
    env = {k: v for k, v in os.environ.items() if k != ident.PASSPHRASE_ENV}
    proc = subprocess.run(
        [str(exe), "identity", "new", "--name", "Org", "--out", str(tmp_path / "org")],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=60,
    )
    assert proc.returncode == 2 and "CLEANROOM_PASSPHRASE" in proc.stderr
