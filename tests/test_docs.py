"""The documentation site builds without warnings; its CLI and API pages cover the whole surface."""

import subprocess
import sys
from pathlib import Path

import typer.main

import cleanroom
from cleanroom import analysis
from cleanroom.cli import app

ROOT = Path(__file__).parent.parent


def _commands(command, path=()):
    yield path
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


def test_site_builds_strict_with_generated_references(tmp_path):
    site = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
         "--site-dir", str(site)],
        capture_output=True, text=True, timeout=240, cwd=ROOT, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "WARNING" not in done.stderr, done.stderr

    cli = (site / "cli" / "index.html").read_text()
    for path in _commands(typer.main.get_command(app)):
        assert " ".join(("cleanroom", *path)) in cli, path
    assert "Usage: cleanroom broker match [OPTIONS]" in cli
    api = (site / "api" / "index.html").read_text()
    for name in [*cleanroom.__all__, *analysis.__all__]:
        assert f"<code>{name}</code>" in api, name
    for page in ["walkthrough", "quickstart", "concepts", "threat-model", "operators-guide", "analysis", "service"]:
        assert (site / page / "index.html").is_file(), page
    walkthrough = (site / "walkthrough" / "index.html").read_text()
    assert 'href="../concepts/"' in walkthrough and "docs/concepts" not in walkthrough  # links rewritten
