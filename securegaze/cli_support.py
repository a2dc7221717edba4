"""Kept for ``edge_app.cli``, which imports ``run_app`` from here: it lives in :mod:`securegaze.cli.support`."""

from __future__ import annotations

from securegaze.cli.support import run_app

__all__ = ["run_app"]
