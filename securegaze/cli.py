"""The ``securegaze`` command line. Library code never prints; this module does."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from securegaze import __version__
from securegaze.cli_support import run_app
from securegaze.geometry import CONVENTION

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="SecureGaze Edge research tools: data, gaze models, bundles. " f"Gaze convention: {CONVENTION}.",
)
console = Console()


@app.callback()
def _root() -> None:
    """SecureGaze Edge research tools."""


@app.command()
def info() -> None:
    """Print the version and the gaze conventions every command uses."""
    console.print(f"securegaze {__version__}")
    console.print(f"gaze convention: {CONVENTION}")


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point."""
    return run_app(app, argv, prog_name="securegaze")


if __name__ == "__main__":
    sys.exit(main())
