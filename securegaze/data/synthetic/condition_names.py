"""The cabin conditions' names in drawing order, and the check of a config's list of them.

A leaf module: :class:`~securegaze.data.synthetic.faces.SyntheticConfig` checks its ``conditions``
here without importing the drawing code (which imports the faces module).
:mod:`securegaze.data.synthetic.conditions` registers one condition per name below and refuses to
import when the two disagree.
"""

from __future__ import annotations

from securegaze.errors import ConfigError

#: Every condition, in the order they are drawn: things on the face, then glasses, then the camera.
DRAWING_ORDER = ("face_mask", "fringe", "hat_brim", "clear_glasses_thick", "clear_glasses_thin",
                 "sunglasses_dark", "sunglasses_light", "night_ir")
#: The conditions that are a pair of glasses (a face wears one at most).
GLASSES = ("clear_glasses_thick", "clear_glasses_thin", "sunglasses_dark", "sunglasses_light")


def check_conditions(names) -> tuple[str, ...]:
    """Validate condition names (ConfigError naming the bad one and the known ones); returns them as a
    tuple in drawing order."""
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"conditions must be a tuple of names, got {names!r}")
    names = tuple(names)
    for name in names:
        if name not in DRAWING_ORDER:
            raise ConfigError(f"unknown cabin condition {name!r}; expected one of: {', '.join(sorted(DRAWING_ORDER))}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"cabin condition {repeated[0]!r} is given twice")
    ordered = tuple(sorted(names, key=DRAWING_ORDER.index))
    glasses = [n for n in ordered if n in GLASSES]
    if len(glasses) > 1:
        raise ConfigError(f"a face wears at most one pair of glasses; got {', '.join(glasses)}")
    return ordered
