"""``securegaze info``: the version and the gaze conventions."""

from __future__ import annotations

from securegaze import __version__
from securegaze.cli.support import console
from securegaze.geometry import CONVENTION


def info() -> None:
    """Print the version and the gaze conventions every command uses."""
    console.print(f"securegaze {__version__}")
    console.print(f"gaze convention: {CONVENTION}")
