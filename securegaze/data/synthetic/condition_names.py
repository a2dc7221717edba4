"""The cabin conditions' names in drawing order, the check of a config's list of them, and the
named condition mixes a training set can draw from.

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


#: Named mixes of conditions: (conditions, weight) pairs; each face of a data set rendered with a
#: mix wears one entry, drawn with these weights from its own condition draws
#: (:func:`securegaze.data.synthetic.render.mix_groups`). ``cabin`` is the default model's training
#: mix: a third of the faces plain, the rest in the conditions a driver-monitoring camera meets
#: (clear glasses, light sunglasses, the night camera alone and with glasses, a cap, a fringe, a
#: mask). Dark sunglasses are left out: behind them the eyes cannot be seen, a gaze label cannot be
#: learnt, and the app reports "eyes not visible" instead (edge_app/eye_visibility.py).
#: ``cabin_tuning`` is the mix of a fine-tuning stage on top of the default model (``benchmarks/
#: train_accuracy.py --recipe tuned``, an experiment): the same entries, more of the conditions the
#: default model learnt worst (the night camera, thin glasses, light sunglasses) and a quarter plain.
CONDITION_MIXES: dict[str, tuple[tuple[tuple[str, ...], float], ...]] = {
    "cabin": (
        ((), 0.32),
        (("clear_glasses_thin",), 0.08),
        (("clear_glasses_thick",), 0.08),
        (("sunglasses_light",), 0.10),
        (("night_ir",), 0.12),
        (("clear_glasses_thin", "night_ir"), 0.02),
        (("clear_glasses_thick", "night_ir"), 0.02),
        (("sunglasses_light", "night_ir"), 0.02),
        (("sunglasses_dark", "night_ir"), 0.02),
        (("hat_brim",), 0.06),
        (("fringe",), 0.04),
        (("face_mask",), 0.06),
        (("face_mask", "fringe"), 0.04),
        (("hat_brim", "clear_glasses_thin"), 0.02),
    ),
    "cabin_tuning": (
        ((), 0.26),
        (("clear_glasses_thin",), 0.10),
        (("clear_glasses_thick",), 0.07),
        (("sunglasses_light",), 0.11),
        (("night_ir",), 0.16),
        (("clear_glasses_thin", "night_ir"), 0.03),
        (("clear_glasses_thick", "night_ir"), 0.03),
        (("sunglasses_light", "night_ir"), 0.03),
        (("sunglasses_dark", "night_ir"), 0.02),
        (("hat_brim",), 0.05),
        (("fringe",), 0.03),
        (("face_mask",), 0.05),
        (("face_mask", "fringe"), 0.03),
        (("hat_brim", "clear_glasses_thin"), 0.03),
    ),
}


def check_mix(name: str | None) -> tuple[tuple[tuple[str, ...], float], ...] | None:
    """The entries of mix ``name`` (None: no mix), each entry's conditions checked and in drawing
    order; ConfigError naming the known mixes for an unknown one."""
    if name is None:
        return None
    if name not in CONDITION_MIXES:
        raise ConfigError(f"unknown condition mix {name!r}; expected one of: {', '.join(sorted(CONDITION_MIXES))}")
    return tuple((check_conditions(conds), float(w)) for conds, w in CONDITION_MIXES[name])
