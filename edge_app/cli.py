"""The ``edge-app`` command line (the driver-monitoring application)."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from securegaze import __version__
from securegaze.cli_support import run_app
from securegaze.geometry import CONVENTION

app = typer.Typer(add_completion=False, no_args_is_help=True, help="SecureGaze Edge driver-monitoring app.")


@app.callback()
def _root() -> None:
    """SecureGaze Edge driver-monitoring app."""


@app.command()
def info() -> None:
    """Print the version and the gaze conventions."""
    Console().print(f"edge-app {__version__}\ngaze convention: {CONVENTION}")


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point."""
    return run_app(app, argv, prog_name="edge-app")


if __name__ == "__main__":
    sys.exit(main())
