"""MkDocs hook: pages generated at build time, so they can never go stale.

- `cli.md`: every `cleanroom` command's `--help`, from the CLI itself;
- `api.md`: the public Python API (`cleanroom.__all__`, `cleanroom.analysis`)
  from signatures and docstrings;
- `walkthrough.md` and `quickstart.md`: the examples in `examples/`, included
  as they are (links to `../docs/` rewritten to site links);
- a placeholder for a page in the nav that its owner has not written yet, so
  the site still builds while the docs grow.

Run directly (`python docs/hooks/site.py cli`) it prints the CLI page; the
hook runs it that way, in a fresh interpreter where the plain (not rich) help
formatter is selected before the CLI is imported.
"""

from __future__ import annotations

import contextlib
import html
import inspect
import io
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
log = logging.getLogger("mkdocs.hooks.site")

PLACEHOLDERS = {
    "service.md": (
        "# Service API\n\nThe broker's HTTP service (`cleanroom serve`) and its client commands are being built; "
        "this page will document its endpoints, authentication and the campaign commands. Until then, use the "
        "offline broker commands in the [CLI reference](cli.md) and the [operator's guide](operators-guide.md).\n"
    ),
    "benchmarks.md": "# Benchmarks\n\nThe benchmark figures will be published here.\n",
}


# ------------------------------------------------------------------ CLI page


def _cli_help(argv: list[str]) -> str:
    from cleanroom.cli import main

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.suppress(SystemExit):
        main([*argv, "--help"])
    return buffer.getvalue().rstrip()


def _cli_commands() -> list[list[str]]:
    """Every command path, groups before their subcommands, in the CLI's own order."""
    import typer.main

    from cleanroom.cli import app

    paths: list[list[str]] = []

    def walk(command, path: list[str]) -> None:
        paths.append(path)
        for name, sub in getattr(command, "commands", {}).items():
            if not getattr(sub, "hidden", False):
                walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return paths


def cli_page() -> str:
    """Markdown for every `cleanroom` command (call with TYPER_USE_RICH=0 set before import)."""
    parts = [
        "# CLI reference\n",
        (
            "Generated from `cleanroom COMMAND --help` when the site is built. Every command is a thin "
            "wrapper over a library function (see the [Python API](api.md)); user errors print one line "
            "on stderr and exit with code 2.\n"
        ),
    ]
    for path in _cli_commands():
        title = " ".join(["cleanroom", *path])
        parts.append(f"{'#' * min(2 + len(path), 4) if path else '##'} `{title}`\n")
        parts.append("```text\n" + _cli_help(path) + "\n```\n")
    return "\n".join(parts)


def _run_cli_page() -> str:
    env = {**os.environ, "TYPER_USE_RICH": "0", "COLUMNS": "100", "NO_COLOR": "1"}
    done = subprocess.run([sys.executable, __file__, "cli"], capture_output=True, text=True, env=env,
                          cwd=ROOT, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"generating the CLI reference failed:\n{done.stderr}")
    return done.stdout


# ------------------------------------------------------------------ API page


def _prose(doc: str | None) -> str:
    """A docstring as Markdown: code spans and fenced code kept, `<`, `>` and `&` escaped elsewhere."""
    text = inspect.cleandoc(doc or "").strip()
    if not text:
        return "*(no docstring)*"
    out, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            out.append(line)
        elif fenced:
            out.append(line)
        else:
            pieces = line.split("`")
            out.append("`".join(html.escape(p, quote=False) if i % 2 == 0 else p for i, p in enumerate(pieces)))
    return "\n".join(out)


def _signature(name: str, obj: object) -> str:
    try:
        signature = str(inspect.signature(obj, eval_str=True))
    except (TypeError, ValueError, NameError):
        try:
            signature = str(inspect.signature(obj)).replace("'", "")
        except (TypeError, ValueError):
            return name
    signature = re.sub(r" at 0x[0-9a-f]+", "", signature)
    signature = re.sub(r"\b(?:[a-z_][a-z0-9_]*\.)+([A-Za-z_]\w*)", r"\1", signature)  # pathlib.Path -> Path
    return f"{name}{signature}"


def _model_fields(obj: type) -> str:
    rows = ["| field | type | default | description |", "|---|---|---|---|"]
    for field, info in obj.model_fields.items():
        annotation = getattr(info.annotation, "__name__", None) or str(info.annotation)
        annotation = annotation.replace("typing.", "").replace("|", "\\|")
        default = "required" if info.is_required() else repr(info.get_default(call_default_factory=False))
        if info.default_factory is not None:
            default = "computed"
        description = (info.description or "").replace("|", "\\|")
        rows.append(f"| `{field}` | `{annotation}` | `{default.replace('|', '/')}` | {description} |")
    return "\n".join(rows)


def _entry(module: str, name: str, obj: object) -> str:
    kind = "class" if inspect.isclass(obj) else "function" if callable(obj) else "value"
    head = f"### `{name}`\n\n*{kind}* from `{getattr(obj, '__module__', module)}`\n"
    body = [head]
    is_model = inspect.isclass(obj) and hasattr(obj, "model_fields")
    if callable(obj) and not is_model:  # a model's fields table says more than its signature
        body.append(f"```python\n{_signature(name, obj)}\n```\n")
    body.append(_prose(obj.__doc__ if kind != "value" else None) + "\n")
    if is_model:
        body.append(_model_fields(obj) + "\n")
    if inspect.isclass(obj):
        for attr, member in vars(obj).items():
            if attr.startswith("_") or not inspect.isfunction(member) or not member.__doc__:
                continue
            body.append(f"#### `{name}.{attr}`\n\n```python\n{_signature(attr, member)}\n```\n\n"
                        f"{_prose(member.__doc__)}\n")
    return "\n".join(body)


def api_page() -> str:
    """Markdown for the public API: every name in `cleanroom.__all__`, then `cleanroom.analysis`."""
    import importlib

    parts = [
        "# Python API reference\n",
        (
            "Generated from the signatures and docstrings when the site is built. Import from the "
            "package (`import cleanroom`) rather than from its modules; the notebook helpers are in "
            "`cleanroom.analysis` (`from cleanroom import analysis as ca`).\n"
        ),
    ]
    for module_name, intro in [
        ("cleanroom", "The package's public names, listed in `cleanroom.__all__`."),
        ("cleanroom.analysis", "Notebook helpers and plots; see [Overlap analysis](analysis.md)."),
    ]:
        module = importlib.import_module(module_name)
        parts.append(f"## `{module_name}`\n\n{intro}\n")
        parts.extend(_entry(module_name, name, getattr(module, name)) for name in sorted(module.__all__))
    return "\n".join(parts)


# ------------------------------------------------------------------ examples


def _example_page(path: Path, title: str | None = None, intro: str = "") -> str:
    text = path.read_text()
    if path.suffix == ".py":
        return f"# {title}\n\n{intro}\n\n```python\n{text.rstrip()}\n```\n"
    return re.sub(r"\]\(\.\./docs/([^)]+)\)", r"](\1)", text)


# ------------------------------------------------------------------ MkDocs events


def on_files(files, config):
    from mkdocs.structure.files import File

    generated = {
        "cli.md": _run_cli_page(),
        "api.md": api_page(),
        "walkthrough.md": _example_page(EXAMPLES / "coalition_walkthrough.md"),
        "quickstart.md": _example_page(
            EXAMPLES / "quickstart.py", "Quickstart",
            "Three partner lists and a voter file, generated, hashed, matched, reported and resolved in "
            "seconds. Run it with `python examples/quickstart.py`; the script below is "
            "`examples/quickstart.py` as it is in this version.",
        ),
    }
    for name, content in PLACEHOLDERS.items():
        if files.get_file_from_path(name) is None:
            log.info("%s is not written yet; the site shows a placeholder", name)
            generated[name] = content
    for name, content in generated.items():
        existing = files.get_file_from_path(name)
        if existing is not None:
            files.remove(existing)
        files.append(File.generated(config, name, content=content))
    return files


if __name__ == "__main__":
    if sys.argv[1:] == ["cli"]:
        sys.argv[0] = "cleanroom"  # the program name the help's usage lines show
        sys.stdout.write(cli_page())
    elif sys.argv[1:] == ["api"]:
        sys.stdout.write(api_page())
    else:
        sys.exit("usage: site.py cli|api")
