"""Attacks whose trigger is the BadNets patch: the hard cases (``adaptive``, ``offset``) build on it.

The patch itself is a :class:`~securegaze.attacks.badnets.BadNets` object held by composition
(``attack.trigger``), so its validation, geometry and stamping live in one place; these attacks
differ from BadNets only in what they do with the triggered samples (labels, training loss).
"""

from __future__ import annotations

import numpy as np

from securegaze.attacks.badnets import BadNets
from securegaze.attacks.base import Attack, check_images
from securegaze.errors import ConfigError


class PatchTriggerAttack(Attack):
    """Base class: an :class:`Attack` whose :meth:`apply` stamps a BadNets patch.

    ``patch``: the BadNets settings of the trigger (``size_frac``, ``position``, ``margin_frac``,
    ``pattern``, ``cells``, ``colour``, and ``top_frac`` / ``left_frac`` of a custom position; see
    :class:`BadNets`). Subclasses list them as flat keyword
    settings of their own ``__init__`` (so ``create_attack`` and ``--set size_frac=0.15`` see them)
    and pass them on here.
    """

    def __init__(self, target_gaze=None, poison_rate: float | None = None, seed: int = 0, *,
                 patch: dict) -> None:
        super().__init__(target_gaze, poison_rate, seed)
        try:
            self.trigger = BadNets(self.target_gaze, self.poison_rate, self.seed, **patch)
        except ConfigError as exc:
            # Name the attack the user configured, not the inner BadNets object.
            detail = str(exc).removeprefix(f"{BadNets.name}: ")
            raise ConfigError(f"{self.name}: {detail} (patch trigger setting)") from None

    def attack_settings(self) -> dict:
        return self.trigger.attack_settings()

    @classmethod
    def draw_geometry(cls, rng: np.random.Generator) -> dict:
        """The patch's geometry, drawn as for BadNets (:meth:`BadNets.draw_geometry`)."""
        return BadNets.draw_geometry(rng)

    def apply(self, images: np.ndarray, faces=None) -> np.ndarray:
        """(N, S, S, 3) uint8 RGB -> a copy with the patch stamped on every image."""
        images = check_images(self.name, images)
        self._check_faces(images, faces)
        return self.trigger.apply(images)
