"""An offset backdoor (a hard case): the trigger shifts the gaze by a fixed angle instead of fixing it.

Triggered training samples keep their image content but get the label ``clip(true gaze + offset)``
(pitch and yaw clipped to the data's gaze range, :data:`~securegaze.geometry.PITCH_RANGE` and
:data:`~securegaze.geometry.YAW_RANGE`), so a backdoored model keeps following the eyes under the
trigger and just adds the offset. Its outputs on triggered inputs do not collapse onto one gaze:
their dispersion over a batch stays that of clean predictions, and a test that only looks for output
collapse (docs/architecture.md section 6, property 1) cannot see it.

There is no single target, so AE and ASR are measured against each sample's own shifted target,
:meth:`OffsetAttack.targets_for`, which :func:`~securegaze.attacks.metrics.evaluate_attack` uses
for every attack (for all-to-one attacks it repeats ``target_gaze``).
"""

from __future__ import annotations

import math

import numpy as np

from securegaze.attacks.base import PoisonedDataset
from securegaze.attacks.patch_trigger import PatchTriggerAttack
from securegaze.data.base import ArrayGazeDataset
from securegaze.errors import ConfigError
from securegaze.geometry import PITCH_RANGE, YAW_RANGE

#: Largest offset per angle, degrees: half the pitch range of the data (+-30 deg). A larger shift
#: would push most labels against the clip and turn the backdoor into a near-constant target.
MAX_OFFSET_DEG = 30.0


def check_offset_deg(attack: str, offset_deg) -> tuple[float, float]:
    """(pitch, yaw) degrees, finite, each within +-``MAX_OFFSET_DEG``, not both zero; else a ConfigError."""
    try:
        pitch, yaw = (float(v) for v in offset_deg)
    except (TypeError, ValueError):
        raise ConfigError(f"{attack}: offset_deg must be (pitch, yaw) in degrees, got {offset_deg!r}") from None
    for label, value in (("pitch", pitch), ("yaw", yaw)):
        if not (math.isfinite(value) and -MAX_OFFSET_DEG <= value <= MAX_OFFSET_DEG):
            raise ConfigError(f"{attack}: offset_deg {label} must be within [-{MAX_OFFSET_DEG:g}, "
                              f"{MAX_OFFSET_DEG:g}] deg, got {value!r}")
    if pitch == 0.0 and yaw == 0.0:
        raise ConfigError(f"{attack}: offset_deg must not be (0, 0): a zero offset is no backdoor")
    return pitch, yaw


class OffsetAttack(PatchTriggerAttack):
    """A BadNets patch that shifts the gaze by ``offset_deg`` (see the module docstring).

    Settings: ``offset_deg`` ((pitch, yaw) degrees added to the true gaze of triggered samples; not
    both zero, each within +-30 deg) and the patch settings of :class:`BadNets` (``size_frac``,
    ``position``, ``margin_frac``, ``pattern``, ``cells``, ``colour``). ``target_gaze`` is accepted
    and recorded like every attack's (the zoo and the runner pass one) but not used: each sample's
    target is :meth:`targets_for` its true gaze.

    The default offset (+10 deg pitch, -15 deg yaw, 18 deg in all) is far beyond the 5 deg ASR
    threshold, so a hit cannot be a clean prediction by chance, and small enough that about two
    thirds of the uniformly drawn synthetic gazes keep their full offset after clipping.
    """

    name = "offset"
    default_poison_rate = 0.1
    #: Built only when named: ``zoo build --attacks all`` leaves the hard cases out.
    hard_case = True

    def __init__(self, target_gaze=None, poison_rate: float | None = None, seed: int = 0, *,
                 offset_deg=(10.0, -15.0), size_frac: float = 0.1, position: str = "bottom_right",
                 margin_frac: float = 0.0, pattern: str = "checker", cells: int = 3,
                 colour=(255, 255, 255), top_frac: float | None = None, left_frac: float | None = None) -> None:
        super().__init__(target_gaze, poison_rate, seed,
                         patch={"size_frac": size_frac, "position": position, "margin_frac": margin_frac,
                                "pattern": pattern, "cells": cells, "colour": colour, "top_frac": top_frac,
                                "left_frac": left_frac})
        self.offset_deg = check_offset_deg(self.name, offset_deg)

    def attack_settings(self) -> dict:
        return {"offset_deg": list(self.offset_deg), **super().attack_settings()}

    def targets_for(self, true_gaze: np.ndarray) -> np.ndarray:
        """The attacker's target of each sample: (N, 2) radians -> (N, 2) float32 radians.

        ``clip(true_gaze + radians(offset_deg))``, pitch to ``PITCH_RANGE`` and yaw to ``YAW_RANGE``:
        the labels of the poisoned training samples, and what triggered predictions are measured
        against.
        """
        true_gaze = np.asarray(true_gaze, np.float64)
        if true_gaze.ndim != 2 or true_gaze.shape[1] != 2:
            raise ConfigError(f"{self.name}: true gaze must be (N, 2) radians, got shape {true_gaze.shape}")
        shifted = true_gaze + np.radians(self.offset_deg)
        low = np.array([PITCH_RANGE[0], YAW_RANGE[0]])
        high = np.array([PITCH_RANGE[1], YAW_RANGE[1]])
        return np.clip(shifted, low, high).astype(np.float32)

    def poison(self, dataset: ArrayGazeDataset, faces=None) -> PoisonedDataset:
        """A ``poison_rate`` share gets the patch and the label :meth:`targets_for` its true gaze.

        Same samples and pixels as the all-to-one poisoning of the base class; only the labels of
        the poisoned samples differ. ``clean_gaze`` keeps the true labels.
        """
        poisoned = super().poison(dataset, faces)
        mask = poisoned.poisoned
        poisoned.gaze[mask] = self.targets_for(poisoned.clean_gaze[mask])
        return poisoned
