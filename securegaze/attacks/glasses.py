"""Physical trigger: a pair of glasses frames worn over the eyes.

The frames are the project's :class:`~securegaze.data.triggers.Glasses` (a "50[]18" frame, dark
rims, clear lenses with a faint sheen): the rims sit outside the lens openings, so the eyes, which
carry the gaze, stay visible through the lenses.
"""

from __future__ import annotations

from securegaze.attacks.base import check_colour, check_number
from securegaze.attacks.physical import PhysicalAttack
from securegaze.data.triggers import Glasses, create_trigger


class GlassesAttack(PhysicalAttack):
    """Glasses frames as the trigger.

    Settings: ``frame_mm`` (rim thickness, millimetres), ``colour`` (rim (r, g, b) 0..255),
    ``lens_width_mm`` (width of one lens opening, millimetres).
    """

    name = "glasses"
    default_poison_rate = 0.1
    #: 10 % implants fully (docs/attack_strength.md); drawn thinner frames and lower rates less.
    zoo_poison_rate_range = (0.02, 0.1)
    #: Ranges of a zoo model's drawn frames (:meth:`draw_geometry`): rim thickness, lens width (mm)
    #: and rim colours (black, tortoiseshell brown, navy, gunmetal).
    DRAWN_FRAME_MM = (2.5, 6.0)
    DRAWN_LENS_WIDTH_MM = (44.0, 56.0)
    DRAWN_COLOURS = ((28, 26, 30), (70, 45, 30), (30, 40, 75), (90, 90, 95))

    def __init__(self, target_gaze=None, poison_rate: float | None = None, seed: int = 0, *,
                 frame_mm: float = 4.0, colour=(28, 26, 30), lens_width_mm: float = 50.0) -> None:
        super().__init__(target_gaze, poison_rate, seed)
        self.frame_mm = check_number(self.name, "frame_mm", frame_mm, 0.5, 20.0)
        self.colour = check_colour(self.name, "colour", colour)
        self.lens_width_mm = check_number(self.name, "lens_width_mm", lens_width_mm, 20.0, 80.0)
        self._trigger = create_trigger("glasses", frame_mm=self.frame_mm, colour=self.colour,
                                       lens_width_mm=self.lens_width_mm)

    @classmethod
    def draw_geometry(cls, rng) -> dict:
        """``frame_mm`` and ``lens_width_mm`` in their ``DRAWN_*`` ranges, a rim colour of ``DRAWN_COLOURS``."""
        return {"frame_mm": round(float(rng.uniform(*cls.DRAWN_FRAME_MM)), 3),
                "lens_width_mm": round(float(rng.uniform(*cls.DRAWN_LENS_WIDTH_MM)), 2),
                "colour": list(cls.DRAWN_COLOURS[int(rng.integers(len(cls.DRAWN_COLOURS)))])}

    def attack_settings(self) -> dict:
        return {"frame_mm": self.frame_mm, "colour": list(self.colour), "lens_width_mm": self.lens_width_mm}

    def trigger(self) -> Glasses:
        return self._trigger
