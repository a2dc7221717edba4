"""Baseline backdoor detectors adapted from classification to gaze regression, one module each.

Every baseline is a :class:`~securegaze.defense.baselines.common.BaselineDetector` registered by name
next to SecureGaze (``securegaze scan --detector NAME``), so the benchmarks compare them in one loop.
The adaptation each needed (what "attack success" and "target" mean for a continuous gaze output) is
written in its module's docstring and in docs/baselines.md.
"""

from __future__ import annotations

from securegaze.defense.baselines.abs import ABSDetector
from securegaze.defense.baselines.bti_dbf import BtiDbfDetector
from securegaze.defense.baselines.common import (
    BaselineDetector,
    BaselineResult,
    BaselineSettings,
    ReversedEdit,
)
from securegaze.defense.baselines.feature_re import FeatureREDetector
from securegaze.defense.baselines.k_arm import KArmDetector
from securegaze.defense.baselines.neural_cleanse import NeuralCleanseDetector
from securegaze.defense.baselines.tabor import TaborDetector
from securegaze.defense.baselines.unicorn import UnicornDetector

#: The baseline detector classes, registered in :data:`securegaze.defense.DETECTORS` under their ``name``.
BASELINE_DETECTORS: tuple[type[BaselineDetector], ...] = (
    ABSDetector,
    FeatureREDetector,
    NeuralCleanseDetector,
    TaborDetector,
    KArmDetector,
    UnicornDetector,
    BtiDbfDetector,
)

__all__ = ["BASELINE_DETECTORS", "BaselineDetector", "BaselineResult", "BaselineSettings", "ReversedEdit"]
