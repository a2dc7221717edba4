"""BadNets (Gu et al. 2017): a small patch stamped at a fixed place of every triggered image.

The patch is defined relative to the image (a fraction of the side, a corner or a relative
position), so the same settings give the same-looking trigger on 32- to 224-px crops.
"""

from __future__ import annotations

import numpy as np

from securegaze.attacks.base import Attack, check_choice, check_colour, check_images, check_int, check_number

POSITIONS = ("bottom_right", "bottom_left", "top_right", "top_left", "centre")
PATTERNS = ("checker", "solid")


class BadNets(Attack):
    """A solid or checkered square patch at a fixed place.

    Settings: ``size_frac`` (patch side as a fraction of the image side, default 0.1: 6 px at 64 px;
    never below 3 px so a checker stays a checker), ``position`` (one of ``POSITIONS``),
    ``margin_frac`` (gap to the image border, fraction of the side), ``pattern`` (``"checker"``:
    ``cells`` x ``cells`` alternating black and white cells, or ``"solid"``: one ``colour``).
    """

    name = "badnets"
    default_poison_rate = 0.1

    def __init__(self, target_gaze=None, poison_rate: float | None = None, seed: int = 0, *,
                 size_frac: float = 0.1, position: str = "bottom_right", margin_frac: float = 0.0,
                 pattern: str = "checker", cells: int = 3, colour=(255, 255, 255)) -> None:
        super().__init__(target_gaze, poison_rate, seed)
        self.size_frac = check_number(self.name, "size_frac", size_frac, 0.0, 0.5, low_open=True)
        self.position = check_choice(self.name, "position", position, POSITIONS)
        self.margin_frac = check_number(self.name, "margin_frac", margin_frac, 0.0, 0.25)
        self.pattern = check_choice(self.name, "pattern", pattern, PATTERNS)
        self.cells = check_int(self.name, "cells", cells, 2, 16)
        self.colour = check_colour(self.name, "colour", colour)

    def attack_settings(self) -> dict:
        return {"size_frac": self.size_frac, "position": self.position, "margin_frac": self.margin_frac,
                "pattern": self.pattern, "cells": self.cells, "colour": list(self.colour)}

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
