"""Shared CLI plumbing: consoles and option helpers."""

from __future__ import annotations

from rich.console import Console

out = Console()
err = Console(stderr=True)
