"""``securegaze triggers``: printable physical triggers at true size (docs/architecture.md section 9)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

triggers_app = typer.Typer(add_completion=False, no_args_is_help=True,
                           help="Physical triggers (tape, sticker, glasses) for recorded trials.")


@triggers_app.command("print")
def print_trigger(
    kind: str = typer.Option(..., "--kind", help="tape | sticker | glasses (the attacks' default triggers)"),
    out: Path = typer.Option(..., "--out", help="FILE.pdf (vector page) or FILE.png"),
    paper: str = typer.Option("a4", "--paper", help="a4 | letter"),
    ipd_mm: float | None = typer.Option(None, "--ipd-mm", help="the participant's interpupillary distance, mm: "
                                        "scale the page so the trigger covers the same share of the face as "
                                        "on the 63-mm training faces (default: the definition's mm)"),
    dpi: int = typer.Option(300, "--dpi", help="resolution of a PNG page"),
) -> None:
    """Write a page with the trigger at true physical size, a scale bar and a label."""
    from securegaze.data.printable_triggers import write_trigger_page

    layout = write_trigger_page(kind, out, paper, ipd_mm, dpi)
    w, h = layout.trigger_size_mm
    Console(highlight=False, soft_wrap=True).print(f"{out}: {kind} trigger {w:.1f} x {h:.1f} mm on {paper} "
                                   f"({layout.page_mm[0]:g} x {layout.page_mm[1]:g} mm); print at 100 %")
