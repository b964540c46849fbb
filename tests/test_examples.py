"""The examples run as documented: quickstart, the overlap-analysis notebook, the walkthrough's commands."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import typer.main
from nbclient import NotebookClient

from cleanroom.cli import app

ROOT = Path(__file__).parent.parent
EXAMPLES = ROOT / "examples"
NOTEBOOK = EXAMPLES / "overlap_analysis.ipynb"
CHECKED_PAGES = [EXAMPLES / "coalition_walkthrough.md", *(ROOT / "docs" / p for p in (
    "index.md", "concepts.md", "threat-model.md", "operators-guide.md", "analysis.md"))]


def test_quickstart_runs(tmp_path):
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "quickstart.py"), "--workdir", str(tmp_path), "--voters", "3000",
         "--list-size", "400"],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("matched the voter file") == 3
    assert (tmp_path / "overlap_upset.png").is_file()


def test_notebook_is_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


def test_notebook_executes_on_generated_data(tmp_path, monkeypatch):
    monkeypatch.delenv("CLEANROOM_REPORT", raising=False)
    monkeypatch.setenv("CLEANROOM_VOTERS", "3000")
    monkeypatch.setenv("CLEANROOM_LIST_SIZE", "400")
    monkeypatch.setenv("CLEANROOM_FIGURES", str(tmp_path / "figures"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebook's generated demo data stays in tmp_path
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 4  # figures show themselves
    saved = {p.name for p in (tmp_path / "figures").iterdir()}
    assert {"upset.png", "upset.svg", "overlap.png", "match_rules.svg"} <= saved


def _command_lines(text: str) -> list[str]:
    """`cleanroom ...` lines of shell blocks (continuations joined) and inline code spans."""
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith("cleanroom "):
                lines.append(line)
    prose = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    lines += [" ".join(s.split()) for s in re.findall(r"`(cleanroom [^`]+)`", prose) if "COMMAND" not in s]
    return lines


def _check(line: str, root) -> str | None:
    """None if every subcommand and option of the line exists, else what is wrong."""
    command, path = root, ["cleanroom"]
    tokens = iter(shlex.split(line)[1:])
    for token in tokens:
        subcommands = getattr(command, "commands", None)
        if subcommands is not None and token in subcommands:
            command = subcommands[token]
            path.append(token)
        elif token.startswith("--"):
            options = {o: p for p in command.params for o in [*p.opts, *getattr(p, "secondary_opts", [])]}
            name = token.split("=")[0]
            if name == "--help":
                continue
            if name not in options:
                return f"{' '.join(path)} has no option {token}"
            if "=" not in token and not getattr(options[name], "is_flag", False):
                next(tokens, None)  # the option's value
        elif subcommands is not None and token != "...":
            return f"{' '.join(path)} has no command {token}"
    return None


@pytest.mark.parametrize("page", CHECKED_PAGES, ids=lambda p: p.name)
def test_documented_commands_exist(page):
    root = typer.main.get_command(app)
    lines = _command_lines(page.read_text())
    problems = [f"{line!r}: {problem}" for line in lines if (problem := _check(line, root))]
    assert not problems, "\n".join(problems)
    if page.name == "coalition_walkthrough.md":
        assert len(lines) > 25


def test_command_check_catches_invented_commands():
    root = typer.main.get_command(app)
    assert _check("cleanroom broker match --reference a --partner b", root) is None
    assert _check("cleanroom remote --server x push bundles/a", root) is None
    assert "no option --bogus" in _check("cleanroom broker match --bogus", root)
    assert "no command campaign" in _check("cleanroom campaign create", root)
