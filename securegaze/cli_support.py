"""Shared entry-point plumbing for the ``securegaze`` and ``edge-app`` commands."""

from __future__ import annotations

import sys

import typer

from securegaze.errors import SecureGazeError


def run_app(app: typer.Typer, argv: list[str] | None = None, prog_name: str | None = None) -> int:
    """Run a Typer app; a :class:`SecureGazeError` becomes one ``error:`` line and its exit code.

    Usage errors (bad option values, unknown commands) are reported by Typer itself with exit 2.
    """
    try:
        app(args=argv, prog_name=prog_name, standalone_mode=True)
    except SecureGazeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except SystemExit as exc:
        code = exc.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        print(code, file=sys.stderr)
        return 1
    return 0
