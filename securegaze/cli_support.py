"""Shared entry-point plumbing for the ``securegaze`` and ``edge-app`` commands."""

from __future__ import annotations

import sys

import click
import typer

from securegaze.errors import SecureGazeError

# Typer >= 0.20 raises its own copy of click's exceptions; older Typer raises click's.
_USAGE_ERRORS = (click.ClickException, getattr(typer, "TyperException", click.ClickException))


def run_app(app: typer.Typer, argv: list[str] | None = None, prog_name: str | None = None) -> int:
    """Run a Typer app; a :class:`SecureGazeError` becomes one ``error:`` line and its exit code.

    Usage errors (bad option values, unknown commands) become one ``error:`` line too, with exit 2
    (Typer's own report is a multi-line box); a bare command still prints its help.
    """
    try:
        result = app(args=argv, prog_name=prog_name, standalone_mode=False)
    except SecureGazeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except _USAGE_ERRORS as exc:
        code = getattr(exc, "exit_code", 2)
        if type(exc).__name__ == "NoArgsIsHelpError":  # a bare command: its help, as before
            exc.show()
            return code
        print(f"error: {' '.join(exc.format_message().split())}", file=sys.stderr)
        return code
    except (typer.Abort, click.exceptions.Abort):
        print("Aborted!", file=sys.stderr)
        return 1
    except SystemExit as exc:
        code = exc.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        print(code, file=sys.stderr)
        return 1
    return result if isinstance(result, int) else 0
