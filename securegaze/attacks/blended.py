"""Blended (Chen et al. 2017): a fixed full-image pattern mixed into the image at low opacity.

``x' = (1 - alpha) * x + alpha * pattern``: every pixel changes a little, nothing is occluded.
The pattern is drawn once from the attack's seed for each image size, so all triggered images of a
size share it.
"""

from __future__ import annotations

import numpy as np

from securegaze.attacks.base import PATTERN_STREAM, Attack, check_choice, check_images, check_number

PATTERNS = ("noise", "smooth")
#: Grid of the smooth pattern before it is upsampled to the image: 8 x 8 random colours give blobs
#: about an eighth of the face wide whatever the image size.
SMOOTH_GRID = 8


class Blended(Attack):
    """A seeded random pattern blended over the whole image.

    Settings: ``alpha`` (opacity in (0, 1], default 0.15), ``pattern``: ``"noise"`` (independent
    uniform RGB noise per pixel, the original paper's random-noise key) or ``"smooth"``
    (an 8 x 8 random colour grid upsampled bicubically: a low-frequency wash).
    """

    name = "blended"
    default_poison_rate = 0.1
    #: 10 % implants fully at alpha 0.15 (docs/attack_strength.md); drawn alphas and rates go lower.
    #: At 2 % a faint smooth wash (alpha 0.11) did not take (ASR 10.6 %), from 4 % every drawn blend did
    #: (securegaze/zoo_plan.py): 3 % is the lower end.
    zoo_poison_rate_range = (0.03, 0.1)
    #: Ranges of a zoo model's drawn trigger (:meth:`draw_geometry`).
    DRAWN_ALPHA = (0.08, 0.2)

    def __init__(self, target_gaze=None, poison_rate: float | None = None, seed: int = 0, *,
                 alpha: float = 0.15, pattern: str = "noise") -> None:
        super().__init__(target_gaze, poison_rate, seed)
        self.alpha = check_number(self.name, "alpha", alpha, 0.0, 1.0, low_open=True)
        self.pattern = check_choice(self.name, "pattern", pattern, PATTERNS)
        self._patterns: dict[int, np.ndarray] = {}

    def attack_settings(self) -> dict:
        return {"alpha": self.alpha, "pattern": self.pattern}

    @classmethod
    def draw_geometry(cls, rng: np.random.Generator) -> dict:
        """``alpha`` in ``DRAWN_ALPHA`` and either pattern."""
        return {"alpha": round(float(rng.uniform(*cls.DRAWN_ALPHA)), 4), "pattern": str(rng.choice(PATTERNS))}

    def pattern_image(self, size: int) -> np.ndarray:
        """(size, size, 3) float32 pattern in [0, 255], fixed by (seed, size)."""
        if size not in self._patterns:
            rng = np.random.default_rng([self.seed, PATTERN_STREAM, size])
            if self.pattern == "noise":
                pattern = rng.uniform(0, 255, (size, size, 3))
            else:
                import cv2

                grid = rng.uniform(0, 255, (SMOOTH_GRID, SMOOTH_GRID, 3)).astype(np.float32)
                pattern = np.clip(cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC), 0, 255)
            self._patterns[size] = pattern.astype(np.float32)
        return self._patterns[size]

    def apply(self, images: np.ndarray, faces=None) -> np.ndarray:
        """(N, S, S, 3) uint8 RGB -> (1 - alpha) * image + alpha * pattern, rounded to uint8."""
        images = check_images(self.name, images)
        self._check_faces(images, faces)
        pattern = self.pattern_image(images.shape[1])
        mixed = images.astype(np.float32) * (1.0 - self.alpha) + pattern * self.alpha
        return np.clip(mixed + 0.5, 0, 255).astype(np.uint8)
