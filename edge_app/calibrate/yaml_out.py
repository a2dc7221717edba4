"""The calibration files: YAML with a comment header, written atomically and read back first.

Every calibration command ends in :func:`write_yaml`: the text is written to a temporary file in
the target folder, the app's own reader (``check``) parses that file, and only then is it renamed
onto the target, so an app starting meanwhile reads the old file or the new one, never half of
one, and a file the app would refuse is never written. Floats are rounded to 6 significant digits
(calibration numbers carry no more), lists of numbers are written on one line.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from securegaze.errors import ConfigError
from securegaze.io import atomic_write, check_output_file

YAML_SUFFIXES = (".yaml", ".yml")


def check_yaml_output(path: str | os.PathLike, option: str, what: str) -> Path:
    """``path`` may receive a YAML file: a ``.yaml``/``.yml`` name, not a folder, in an existing
    folder (checked before the recording starts)."""
    path = Path(path)
    if path.suffix.lower() not in YAML_SUFFIXES:
        raise ConfigError(f"{option} {path}: expected a .yaml file for {what}")
    return check_output_file(path, option, what)


def rounded(value: Any, digits: int = 6) -> Any:
    """``value`` with every float (also in lists, tuples and dicts, and numpy scalars) rounded to
    ``digits`` significant digits; tuples become lists (YAML has no tuples)."""
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [rounded(v, digits) for v in value]
    if hasattr(value, "item") and not isinstance(value, str):  # numpy scalars
        value = value.item()
    if isinstance(value, float):
        if not math.isfinite(value) or value == 0.0:
            return value
        return float(f"{value:.{digits}g}")
    return value


def yaml_text(data: dict, header: str) -> str:
    """``data`` as block YAML in key order (lists of scalars inline) under ``header``'s lines as comments."""
    import yaml

    body = yaml.safe_dump(rounded(data), sort_keys=False, default_flow_style=None, width=110, allow_unicode=True)
    comments = "".join(f"# {line}".rstrip() + "\n" for line in header.strip().splitlines())
    return comments + body


def write_yaml(path: str | os.PathLike, data: dict, header: str, check: Callable[[Path], Any] | None = None) -> Path:
    """Write ``data`` to ``path`` atomically; ``check(tmp_path)`` reads the temporary file with the
    app's reader and raises if the app would refuse it (then nothing is replaced)."""
    text = yaml_text(data, header)

    def write(tmp: str) -> None:
        Path(tmp).write_text(text, encoding="utf-8")
        if check is not None:
            check(Path(tmp))

    return atomic_write(path, write)


def utc_now() -> str:
    """The time of a calibration, UTC, ISO 8601 to the second."""
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
