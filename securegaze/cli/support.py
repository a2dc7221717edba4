"""What every ``securegaze`` command shares: the consoles, the progress bar, range checks of options,
``KEY=VALUE`` settings, the command line the benchmark tables quote, and the entry point that turns
errors into one line.

``run_app`` serves the ``edge-app`` command too.
"""

from __future__ import annotations

import shlex
import sys
import time

import click
import typer
from rich.console import Console

from securegaze.errors import SecureGazeError

console = Console()
err_console = Console(stderr=True)

#: Most test / clean samples a command renders or reads: beyond it the images alone outgrow memory.
MAX_SAMPLES = 1_000_000

# Typer >= 0.20 raises its own copy of click's exceptions; older Typer raises click's.
_USAGE_ERRORS = (click.ClickException, getattr(typer, "TyperException", click.ClickException))


class LineProgress:
    """Progress as plain lines on stderr, for a log file or a pipe, where a bar that redraws itself in
    place shows nothing until the end: one line when a stage starts or the status changes, and otherwise
    at most one every :attr:`every_s` seconds. The same calls as rich's ``Progress``."""

    every_s = 30.0

    def __init__(self, stream=None) -> None:
        self.stream = stream
        #: Where a command prints its own lines between progress lines (as on rich's ``Progress``).
        self.console = Console(stderr=True) if stream is None else Console(file=stream)
        self.tasks: list[dict] = []
        self.seen: set[str] = set()
        self.started = self.printed = time.monotonic()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def add_task(self, description: str, total=None, **fields) -> int:
        self.tasks.append({"description": description, "total": total, "completed": 0,
                           "status": fields.get("status", "")})
        return len(self.tasks) - 1

    def update(self, task: int, total=None, completed=None, description=None, status=None, **_) -> None:
        t = self.tasks[task]
        # A stage seen for the first time (stages that run side by side take turns: no line each turn).
        changed = (description is not None and description not in self.seen) or (
            status is not None and status != t["status"])
        if description is not None:
            self.seen.add(description)
        for key, value in (("total", total), ("completed", completed), ("description", description),
                           ("status", status)):
            if value is not None:
                t[key] = value
        now = time.monotonic()
        if changed or now - self.printed >= self.every_s:
            self.printed = now
            done = f" {t['completed']}/{t['total']}" if t["total"] else ""
            extra = f" {t['status']}" if t["status"] else ""
            print(f"{t['description']}:{done}{extra} ({now - self.started:.0f} s)", file=self.stream or sys.stderr,
                  flush=True)


def progress_bar():
    """A rich progress bar on stderr (description, bar, n/total, status, elapsed, remaining); plain
    lines (:class:`LineProgress`) when stderr is not a terminal."""
    if not Console(stderr=True).is_terminal:
        return LineProgress()
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        console=Console(stderr=True), transient=False,
    )


def check_range(name: str, value, low=None, high=None) -> None:
    """Refuse ``--name`` outside ``low..high`` (either end open when None) as a usage error."""
    if (low is not None and value < low) or (high is not None and value > high):
        span = f"{low if low is not None else '-inf'}..{high if high is not None else 'inf'}"
        raise typer.BadParameter(f"{value} is outside {span}", param_hint=f"--{name}")


def setting_value(text: str):
    """A ``KEY=VALUE`` option's value: ``true``/``false`` (any case) as a bool, else an int, else a float,
    else the text itself; the detector or attack that owns the setting checks it."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_key_values(items: list[str], option: str) -> dict:
    """``['steps=400', 'probe=false']`` -> ``{'steps': 400, 'probe': False}`` (:func:`setting_value`);
    an item without ``=`` or without a key, or a key given twice, is a usage error naming ``option``."""
    settings = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise typer.BadParameter(f"{item!r} is not KEY=VALUE", param_hint=option)
        if key in settings:
            raise typer.BadParameter(f"{key} is given twice", param_hint=option)
        settings[key] = setting_value(value.strip())
    return settings


def bench_command_line(argv: list[str], subcommand: str) -> str:
    """The command a benchmark table says regenerates it: ``securegaze bench SUBCOMMAND`` and the
    arguments that followed ``subcommand`` in ``argv`` (shell-quoted), or no arguments when
    ``argv`` does not hold it (a call from Python)."""
    if subcommand not in argv:
        return f"securegaze bench {subcommand}"
    return f"securegaze bench {subcommand} " + " ".join(shlex.quote(a) for a in argv[argv.index(subcommand) + 1:])


def run_app(app: typer.Typer, argv: list[str] | None = None, prog_name: str | None = None) -> int:
    """Run a Typer app; a :class:`SecureGazeError` becomes one ``error:`` line and its exit code.

    Usage errors (bad option values, unknown commands) become one ``error:`` line too, with exit 2
    (Typer's own report is a multi-line box); a bare command still prints its help. A file name that is
    not valid UTF-8 (a Latin-1 name from an old archive) is printed with its odd bytes escaped
    (``caf\\udce9.png``) rather than failing the output.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError, OSError):  # a stream that is not a text file, or already closed
            pass
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
