"""Cabin conditions: named, combinable, seeded changes of the rendered faces (issue 18).

A driver-monitoring camera sees drivers in ordinary glasses and sunglasses, under a cap, behind a
fringe or a face mask, and at night through a near-infrared camera. ``SyntheticConfig.conditions``
names the ones every rendered face shows; each is registered here (:data:`CONDITIONS`) with what it
models and where its numbers come from, and draws its per-face parameters from the face's own
``condition_draws`` (a random stream separate from the face's, so with no conditions every face is
exactly what it was, and a face looks the same in any batch).

Conditions combine (``("clear_glasses_thin", "night_ir")``, ``("face_mask", "fringe")``); they are
drawn in a fixed order whatever the order given: things on the face (mask, fringe, hat brim) after
the eyes, then glasses, then the backdoor trigger if any, then the camera (``night_ir``). A face wears
at most one pair of glasses.

A video renderer changes a condition's per-sample parameters over time with
:func:`with_condition_draws`, e.g. a headlight sweeping over the frame::

    frame_t = with_condition_draws(params, "night_ir", headlight=0.0, headlight_position=t)
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from securegaze.data.synthetic.condition_base import STAGES, Condition, Look, Scene
from securegaze.data.synthetic.condition_names import DRAWING_ORDER, GLASSES
from securegaze.data.synthetic.eyewear import ACETATE_RGB, METAL_RGB, SUNGLASS_FRAME_RGB, Eyewear
from securegaze.data.synthetic.face_cover import FaceMask, Fringe, HatBrim
from securegaze.data.synthetic.layout import MIX_COLUMN
from securegaze.data.synthetic.night_ir import NightInfrared
from securegaze.errors import ConfigError
from securegaze.registry import Registry

if TYPE_CHECKING:  # annotations only: faces.py checks condition names through this package
    from securegaze.data.synthetic.faces import FaceParams

CONDITIONS: Registry[Condition] = Registry("cabin condition")


@CONDITIONS.register("clear_glasses_thin")
def clear_glasses_thin() -> Condition:
    """Thin metal spectacles (gold, silver or rose gold, 1.0-1.6 mm rims) with round or oval clear
    lenses 44-50 mm wide: the frame held by nose pads a little further out than acetate, 13-16 mm in
    front of the corneas (spectacle vertex distance, typically ~12 mm), the lens centres 0.5-2 mm below
    the pupils (optical centres are fitted at the pupils). Uncoated lenses reflect ~4 % per surface,
    AR-coated ones ~1 %: a 1-5 % sheen, and a highlight streak of up to 35 %."""
    return Eyewear(name="clear_glasses_thin", shapes=("round", "oval"), lens_width_mm=(44.0, 50.0),
                   height_ratio=(0.70, 0.92), bridge_mm=(17.0, 21.0), rim_mm=(1.0, 1.6), frame_rgb=METAL_RGB,
                   tortoise=-1, drop_mm=(0.5, 2.0), vertex_mm=(13.0, 16.0), transmission=(0.96, 0.99),
                   tinted=False, reflection=(0.01, 0.05), streak=(0.15, 0.35))


@CONDITIONS.register("clear_glasses_thick")
def clear_glasses_thick() -> Condition:
    """Thick acetate spectacles (tortoise, honey, burgundy, navy or translucent grey, 5-7 mm rims)
    with panto or oval clear lenses 48-54 mm wide, sitting on the nose 10-11.5 mm in front of the
    corneas with the lens centres 4.5-7 mm below the pupils (deep frames). Reflections as the thin
    frames'."""
    return Eyewear(name="clear_glasses_thick", shapes=("panto", "oval"), lens_width_mm=(48.0, 54.0),
                   height_ratio=(0.78, 0.92), bridge_mm=(16.0, 20.0), rim_mm=(5.0, 7.0), frame_rgb=ACETATE_RGB,
                   tortoise=0, drop_mm=(4.5, 7.0), vertex_mm=(10.0, 11.5), transmission=(0.96, 0.99),
                   tinted=False, reflection=(0.01, 0.05), streak=(0.15, 0.35))


@CONDITIONS.register("sunglasses_light")
def sunglasses_light() -> Condition:
    """Lightly tinted sunglasses (grey, brown or G-15 green): 50-70 % transmission, the upper part of
    ISO 12312-1 filter category 1 (43-80 %) and above category 2 (18-43 %); the eyes stay visible,
    darker. Panto or aviator lenses 52-58 mm wide, 2.5-4.5 mm dark frames."""
    return Eyewear(name="sunglasses_light", shapes=("panto", "aviator"), lens_width_mm=(52.0, 58.0),
                   height_ratio=(0.80, 0.92), bridge_mm=(15.0, 19.0), rim_mm=(2.5, 4.5),
                   frame_rgb=SUNGLASS_FRAME_RGB, tortoise=-1, drop_mm=(2.0, 5.0), vertex_mm=(12.0, 15.0),
                   transmission=(0.50, 0.70), tinted=True, reflection=(0.02, 0.06), streak=(0.2, 0.4),
                   nir_transmission=(0.75, 0.95))


@CONDITIONS.register("sunglasses_dark")
def sunglasses_dark() -> Condition:
    """Dark sunglasses: 3-10 % transmission (ISO 12312-1 category 4, 3-8 %, and the dark end of
    category 3, 8-18 %) with a reflective coating (5-12 % sheen, a 30-50 % streak), so the eyes are
    effectively hidden from a visible-light camera. Their dyes pass much more near infrared (35-85 %,
    which is why driver monitors use 850/940 nm), so under ``night_ir`` the eyes show again."""
    # The same frames as the light pair; only the lenses differ.
    return replace(sunglasses_light(), name="sunglasses_dark", transmission=(0.03, 0.10), reflection=(0.05, 0.12),
                   streak=(0.3, 0.5), nir_transmission=(0.35, 0.85))


@CONDITIONS.register("night_ir")
def night_ir() -> Condition:
    """A near-infrared (850/940 nm) night camera with an on-axis illuminator: see
    :mod:`securegaze.data.synthetic.night_ir`."""
    return NightInfrared()


@CONDITIONS.register("hat_brim")
def hat_brim() -> Condition:
    """A cap's peak and its shadow over the brows and eyes: see :class:`~securegaze.data.synthetic.face_cover.HatBrim`."""
    return HatBrim()


@CONDITIONS.register("fringe")
def fringe() -> Condition:
    """Hair over the brows down to the upper lids at most: see :class:`~securegaze.data.synthetic.face_cover.Fringe`."""
    return Fringe()


@CONDITIONS.register("face_mask")
def face_mask() -> Condition:
    """A surgical or cloth face mask: see :class:`~securegaze.data.synthetic.face_cover.FaceMask`."""
    return FaceMask()


def _check_registry() -> None:
    """The registry and condition_names.py must name the same conditions in the same drawing order."""
    drawn = _resolve(CONDITIONS.names())
    if (tuple(c.name for c in drawn) != DRAWING_ORDER
            or tuple(c.name for c in drawn if c.stage == "glasses") != tuple(n for n in DRAWING_ORDER if n in GLASSES)):
        raise RuntimeError("securegaze.data.synthetic.condition_names disagrees with the registered conditions: "
                           f"{[c.name for c in drawn]} against {list(DRAWING_ORDER)}")
    for c in drawn:
        if c.first_column + len(c.draw_names) > MIX_COLUMN:
            raise RuntimeError(f"cabin condition {c.name!r} reads condition draws up to column "
                               f"{c.first_column + len(c.draw_names) - 1}; column {MIX_COLUMN} picks the mix entry")


def _resolve(names) -> list[Condition]:
    """The conditions ``names`` in drawing order (stage, then rank)."""
    conditions = [CONDITIONS.create(name) for name in names]
    return sorted(conditions, key=lambda c: (STAGES.index(c.stage), c.rank))


def prepare_look(params: FaceParams, names: tuple[str, ...]) -> tuple[Look, list[Condition]]:
    """The faces as the conditions change them before drawing, and the conditions in drawing order."""
    conditions = _resolve(names)
    look = Look(params)
    for condition in conditions:
        condition.prepare(look)
    return look, conditions


def draw_stage(scene: Scene, conditions: list[Condition], stages: tuple[str, ...]) -> None:
    """Draw the conditions of ``stages`` into the scene, in order."""
    for condition in conditions:
        if condition.stage in stages:
            condition.draw(scene)


def condition_draws(params: FaceParams, name: str) -> dict[str, np.ndarray]:
    """The per-sample draws of condition ``name``: draw name -> (N,) float64 in [0, 1]."""
    return CONDITIONS.create(name).draws(params)


def with_condition_draws(params: FaceParams, name: str, **draws) -> FaceParams:
    """A copy of ``params`` with some of condition ``name``'s draws replaced (each a number in [0, 1]
    or an (N,) array), e.g. ``headlight_position`` of ``night_ir`` for a moving headlight sweep."""
    condition = CONDITIONS.create(name)
    table = params.condition_draws.copy()
    for key, value in draws.items():
        if key not in condition.draw_names:
            raise ConfigError(f"cabin condition {name!r} has no draw {key!r}; expected one of: "
                              f"{', '.join(condition.draw_names)}")
        value = np.asarray(value, np.float32)
        if np.any((value < 0) | (value > 1)):
            raise ConfigError(f"cabin condition {name!r} draw {key!r} must be within [0, 1]")
        table[:, condition.first_column + condition.draw_names.index(key)] = value
    return params.replace(condition_draws=table)


_check_registry()
