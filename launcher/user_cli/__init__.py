"""The ``jobmesh`` user commands (Typer, Rich), built on ``jobmesh_client``."""

from __future__ import annotations

from ._app import app, run_cli

__all__ = ["app", "run_cli"]
