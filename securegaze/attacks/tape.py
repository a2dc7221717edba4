"""Physical trigger: a strip of white paper tape on the face (forehead, cheek or eyebrow).

The tape is the project's :class:`~securegaze.data.triggers.Tape` (50 x 12 mm by default, off-white
paper), so the same object is rendered on synthetic faces, pasted on photos and printed for trials.
"""

from __future__ import annotations

from securegaze.attacks.base import check_choice, check_number
from securegaze.attacks.physical import PhysicalAttack
from securegaze.data.triggers import PLACEMENTS, SIDES, Tape, create_trigger


class TapeAttack(PhysicalAttack):
    """White tape stuck on the face.

    Settings: ``placement`` (``"forehead"`` (default), ``"cheek"`` or ``"brow"``), ``side`` (the
    subject's ``"left"`` or ``"right"``, for cheek and brow), ``width_mm`` and ``height_mm`` (true size
    of the strip).
    """

    name = "tape"
    default_poison_rate = 0.1
    #: Measured with drawn placements at the zoo's budget: 3 % gives ~65 % ASR, 10 % ~97 % (figures
    #: in securegaze/zoo_plan.py's docstring).
    zoo_poison_rate_range = (0.03, 0.1)

    def __init__(self, target_gaze=None, poison_rate: float | None = None, seed: int = 0, *,
                 placement: str = "forehead", side: str = "left", width_mm: float = 50.0,
                 height_mm: float = 12.0) -> None:
        super().__init__(target_gaze, poison_rate, seed)
        self.placement = check_choice(self.name, "placement", placement, PLACEMENTS)
        self.side = check_choice(self.name, "side", side, SIDES)
        self.width_mm = check_number(self.name, "width_mm", width_mm, 1.0, 150.0)
        self.height_mm = check_number(self.name, "height_mm", height_mm, 1.0, 150.0)
        self._trigger = create_trigger("tape", placement=self.placement, side=self.side,
                                       width_mm=self.width_mm, height_mm=self.height_mm)

    @classmethod
    def draw_geometry(cls, rng) -> dict:
        """A ``placement`` (forehead, cheek, brow) and a ``side``, each equally likely."""
        return {"placement": str(rng.choice(PLACEMENTS)), "side": str(rng.choice(SIDES))}

    def attack_settings(self) -> dict:
        return {"placement": self.placement, "side": self.side, "width_mm": self.width_mm,
                "height_mm": self.height_mm}

    def trigger(self) -> Tape:
        return self._trigger
