"""Baseline backdoor detectors adapted from classification to gaze regression, one module each.

Every baseline is a :class:`~securegaze.defense.baselines.common.BaselineDetector` registered by name
next to SecureGaze (``securegaze scan --detector NAME``), so the benchmarks compare them in one loop.
The adaptation each needed (what "attack success" and "target" mean for a continuous gaze output) is
written in its module's docstring and in docs/baselines.md.
"""

from __future__ import annotations

from securegaze.defense.baselines.common import (
    BaselineDetector,
    BaselineResult,
    BaselineSettings,
    ReversedEdit,
)

#: The baseline detector classes, registered in :data:`securegaze.defense.DETECTORS` under their ``name``.
BASELINE_DETECTORS: tuple[type[BaselineDetector], ...] = (
)

__all__ = ["BASELINE_DETECTORS", "BaselineDetector", "BaselineResult", "BaselineSettings", "ReversedEdit"]
