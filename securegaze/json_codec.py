"""One JSON codec for every record the project writes (scan reports, attack records, zoo manifests).

JSON has no NaN or infinity, and Python's ``json`` would write the non-standard tokens ``NaN`` and
``Infinity`` that other readers reject. The project's one convention: a non-finite float is written as
the string ``"nan"``, ``"inf"`` or ``"-inf"`` and read back as the float (an infeasible scan scores
inf, a metric over no samples is nan). Tuples become lists, NumPy scalars and arrays become Python
numbers and lists, paths become strings.
"""

from __future__ import annotations

import math
from pathlib import PurePath
from typing import Any

import numpy as np

NON_FINITE = ("nan", "inf", "-inf")


def encode_float(value: float | None) -> float | str | None:
    """A float for JSON: finite floats unchanged, non-finite ones as "nan" / "inf" / "-inf"."""
    if value is None:
        return None
    value = float(value)
    if math.isfinite(value):
        return value
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def decode_float(value) -> float | None:
    """Inverse of :func:`encode_float` (None stays None)."""
    if value is None:
        return None
    return float(value)  # float() parses the strings "nan", "inf" and "-inf"


def to_json(obj: Any) -> Any:
    """``obj`` as plain JSON values, recursively, with the non-finite convention above."""
    if isinstance(obj, dict):
        return {str(k): to_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_json(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_json(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return encode_float(float(obj))
    if isinstance(obj, PurePath):
        return str(obj)
    return obj


def from_json(obj: Any) -> Any:
    """Inverse of :func:`to_json` for nested values: the non-finite strings become floats again."""
    if isinstance(obj, dict):
        return {k: from_json(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [from_json(v) for v in obj]
    if isinstance(obj, str) and obj in NON_FINITE:
        return float(obj)
    return obj
