"""Settings checks, one message format for the whole project.

Every rejected value becomes one :class:`~securegaze.errors.ConfigError` line that names who owns the
setting, the setting, what was expected and what was given::

    wanet: grid_k must be within 4..64, got 2
    securegaze: rho_out must be a ratio in (0, 1), got 1.5
    edge.yaml: attention.warning_after_s: Input should be greater than 0 (got -1)

Plain settings objects (dataclasses) use the ``check_*`` functions; files read into pydantic models
(the bundle manifest, the app's YAML settings, zone maps) derive from :class:`StrictModel` and turn a
``ValidationError`` into one line with :func:`validation_line`.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from securegaze.errors import ConfigError


class StrictModel(BaseModel):
    """A pydantic settings model whose unknown keys are an error: a misspelt key must not silently
    fall back to a default. Instances are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def validation_line(exc: ValidationError) -> str:
    """The first pydantic problem as ``dotted.path: message (got value)``, plus how many more (one line)."""
    errors = exc.errors()
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"]) or "(top level)"
    if first["type"] == "extra_forbidden":
        line = f"{where}: unknown setting"
    else:
        value = first.get("input")
        shown = "" if isinstance(value, (dict, list)) or value is None else f" (got {value!r})"
        line = f"{where}: {first['msg']}{shown}"
    if len(errors) > 1:
        line += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return line


def check_setting(owner: str, name: str, ok: bool, expected: str, value) -> None:
    """A :class:`ConfigError` ``"<owner>: <name> must be <expected>, got <value>"`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"{owner}: {name} must be {expected}, got {value!r}")


def check_number(owner: str, name: str, value, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a float within [low, high] (or open ends), else a :class:`ConfigError`."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{owner}: {name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ConfigError(f"{owner}: {name} must be a finite number, got {value!r}")
    too_low = low is not None and (number <= low if low_open else number < low)
    too_high = high is not None and (number >= high if high_open else number > high)
    if too_low or too_high:
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        interval = f"{'(' if low_open else '['}{lo}, {hi}{')' if high_open else ']'}"
        raise ConfigError(f"{owner}: {name} must be within {interval}, got {value!r}")
    return number


def check_int(owner: str, name: str, value, low: int, high: int) -> int:
    """``value`` as an int within [low, high], else a :class:`ConfigError` (4.0 from JSON counts as 4)."""
    whole_float = isinstance(value, float) and value.is_integer()
    if isinstance(value, bool) or not (isinstance(value, (int, np.integer)) or whole_float):
        raise ConfigError(f"{owner}: {name} must be an integer, got {value!r}")
    if not low <= int(value) <= high:
        raise ConfigError(f"{owner}: {name} must be within {low}..{high}, got {value!r}")
    return int(value)


def check_choice(owner: str, name: str, value, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of ``choices``, else a :class:`ConfigError` listing them."""
    if value not in choices:
        raise ConfigError(f"{owner}: {name} must be one of {', '.join(choices)}; got {value!r}")
    return str(value)
