"""``securegaze render-sheet``: a contact sheet of the synthetic faces."""

from __future__ import annotations

from pathlib import Path

import typer

from securegaze.cli.support import check_range, console


def render_sheet(
    out: Path = typer.Option(Path("docs/contact_sheet.png"), "--out"),
    size: int = typer.Option(64, help="Face crop size in px."),
    n: int = typer.Option(8, help="Faces per row."),
    seed: int = typer.Option(0),
) -> None:
    """Write a contact sheet of synthetic faces, with and without each physical trigger."""
    from securegaze.data.synthetic import contact_sheet

    check_range("size", size, 32, 224)
    check_range("n", n, 1, 32)
    contact_sheet(out, size=size, n=n, seed=seed)
    console.print(f"contact sheet written: {out}")
