"""BadNets (Gu et al. 2017): a small patch stamped at a fixed place of every triggered image.

The patch is defined relative to the image (a fraction of the side, a corner or a relative
position), so the same settings give the same-looking trigger on 32- to 224-px crops.
"""

from __future__ import annotations

import numpy as np

from securegaze.attacks.base import Attack, check_choice, check_colour, check_images, check_int, check_number
from securegaze.errors import ConfigError

POSITIONS = ("bottom_right", "bottom_left", "top_right", "top_left", "centre", "custom")
PATTERNS = ("checker", "solid")
#: Ranges of the drawn geometry of a zoo's BadNets models (:meth:`BadNets.draw_geometry`).
DRAWN_SIZE_FRAC = (0.06, 0.14)
DRAWN_CELLS = (2, 3, 4)


class BadNets(Attack):
    """A solid or checkered square patch at a fixed place.

    Settings: ``size_frac`` (patch side as a fraction of the image side, default 0.1: 6 px at 64 px;
    never below 3 px so a checker stays a checker), ``position`` (one of ``POSITIONS``),
    ``margin_frac`` (gap to the image border, fraction of the side), ``pattern`` (``"checker"``:
    ``cells`` x ``cells`` alternating black and white cells, or ``"solid"``: one ``colour``).
    ``position="custom"`` places the patch by ``top_frac`` and ``left_frac`` in [0, 1]: how far down
    and right its top-left corner sits within the free range inside the margin (0: at the top/left
    margin, 1: at the bottom/right one), so (1, 1) is ``bottom_right`` and a 0 or 1 in either puts it
    on the border; the two fractions are settings only of the custom position.
    """

    name = "badnets"
    default_poison_rate = 0.1
    #: Measured with drawn geometry at the zoo's budget: the backdoor switches on near 1 % (figures in
    #: securegaze/zoo_plan.py's docstring).
    zoo_poison_rate_range = (0.01, 0.03)

    def __init__(self, target_gaze=None, poison_rate: float | None = None, seed: int = 0, *,
                 size_frac: float = 0.1, position: str = "bottom_right", margin_frac: float = 0.0,
                 pattern: str = "checker", cells: int = 3, colour=(255, 255, 255), top_frac: float | None = None,
                 left_frac: float | None = None) -> None:
        super().__init__(target_gaze, poison_rate, seed)
        self.size_frac = check_number(self.name, "size_frac", size_frac, 0.0, 0.5, low_open=True)
        self.position = check_choice(self.name, "position", position, POSITIONS)
        fracs = {"top_frac": top_frac, "left_frac": left_frac}
        if self.position == "custom":
            missing = [k for k, v in fracs.items() if v is None]
            if missing:
                raise ConfigError(f"{self.name}: position 'custom' needs {' and '.join(missing)} in [0, 1]")
            self.top_frac = check_number(self.name, "top_frac", top_frac, 0.0, 1.0)
            self.left_frac = check_number(self.name, "left_frac", left_frac, 0.0, 1.0)
        else:
            given = [k for k, v in fracs.items() if v is not None]
            if given:
                raise ConfigError(f"{self.name}: {' and '.join(given)} only place a position 'custom' patch, "
                                  f"not {self.position!r}")
            self.top_frac = self.left_frac = None
        self.margin_frac = check_number(self.name, "margin_frac", margin_frac, 0.0, 0.25)
        self.pattern = check_choice(self.name, "pattern", pattern, PATTERNS)
        self.cells = check_int(self.name, "cells", cells, 2, 16)
        self.colour = check_colour(self.name, "colour", colour)

    def attack_settings(self) -> dict:
        settings = {"size_frac": self.size_frac, "position": self.position, "margin_frac": self.margin_frac,
                    "pattern": self.pattern, "cells": self.cells, "colour": list(self.colour)}
        if self.position == "custom":  # only then: the records of the fixed positions stay as they were
            settings.update(top_frac=self.top_frac, left_frac=self.left_frac)
        return settings

    @classmethod
    def draw_geometry(cls, rng: np.random.Generator) -> dict:
        """A checker anywhere along the image border: a side (top, bottom, left, right) and a place
        along it (corners included), ``size_frac`` in ``DRAWN_SIZE_FRAC``, ``cells`` from ``DRAWN_CELLS``."""
        side = int(rng.integers(4))
        along = float(rng.uniform(0.0, 1.0))
        top, left = [(0.0, along), (1.0, along), (along, 0.0), (along, 1.0)][side]
        return {"position": "custom", "top_frac": round(top, 4), "left_frac": round(left, 4),
                "size_frac": round(float(rng.uniform(*DRAWN_SIZE_FRAC)), 4),
                "cells": int(rng.choice(DRAWN_CELLS))}

    def patch(self, size: int) -> tuple[np.ndarray, int, int]:
        """The patch for ``size``-px images: ((p, p, 3) uint8, top row, left column)."""
        side = min(size, max(3, round(self.size_frac * size)))
        margin = round(self.margin_frac * size)
        if self.pattern == "checker":
            # Cell index per pixel; integer arithmetic so every cell is whole pixels wide.
            cell = np.arange(side) * self.cells // side
            white = (cell[:, None] + cell[None, :]) % 2 == 0
            patch = np.where(white[..., None], np.uint8(255), np.uint8(0)).repeat(3, axis=-1)
        else:
            patch = np.broadcast_to(np.asarray(self.colour, np.uint8), (side, side, 3))
        far = size - side - margin
        centre = (size - side) // 2
        if self.position == "custom":
            top, left = (margin + round(frac * max(0, far - margin)) for frac in (self.top_frac, self.left_frac))
        else:
            top, left = {"bottom_right": (far, far), "bottom_left": (far, margin), "top_right": (margin, far),
                         "top_left": (margin, margin), "centre": (centre, centre)}[self.position]
        return patch.astype(np.uint8), max(0, top), max(0, left)

    def apply(self, images: np.ndarray, faces=None) -> np.ndarray:
        """(N, S, S, 3) uint8 RGB -> a copy with the patch stamped on every image."""
        images = check_images(self.name, images)
        self._check_faces(images, faces)
        patch, top, left = self.patch(images.shape[1])
        out = images.copy()
        out[:, top:top + len(patch), left:left + len(patch)] = patch
        return out
