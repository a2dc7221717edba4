"""The ``securegaze`` command line: each command parses its options, calls the library and prints.

Library code never prints; the modules of this package do, one per command group: ``info``,
``models`` (train, evaluate, export), ``describe`` (a third-party ONNX file's manifest), ``data`` (render-sheet), ``attacks`` (attack), ``defense``
(scan, mitigate), ``bench``, ``zoo`` and ``triggers``; ``support`` holds what they share.
"""

from __future__ import annotations

import typer

from securegaze.cli import attacks, data, defense, describe, info, models
from securegaze.cli.bench import bench_app
from securegaze.cli.support import run_app
from securegaze.cli.triggers import triggers_app
from securegaze.cli.zoo import zoo_app
from securegaze.geometry import CONVENTION

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="SecureGaze Edge research tools: data, gaze models, bundles. " f"Gaze convention: {CONVENTION}.",
)


@app.callback()
def root() -> None:
    """SecureGaze Edge research tools."""


app.command()(info.info)
app.command()(models.train)
app.command()(models.evaluate)
app.command()(models.export)
app.command()(describe.describe)
app.command("render-sheet")(data.render_sheet)
app.command()(attacks.attack)
app.command()(defense.scan)
app.command()(defense.mitigate)
app.add_typer(bench_app, name="bench")
app.add_typer(zoo_app, name="zoo")
app.add_typer(triggers_app, name="triggers")


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point."""
    return run_app(app, argv, prog_name="securegaze")


__all__ = ["app", "main"]
