"""Backdoor defenses, created by name: ``create_detector("securegaze", seed=0).scan(model, clean_images)``.

Every detector is a :class:`~securegaze.defense.base.Detector` and returns a
:class:`~securegaze.defense.base.ScanReport`; :func:`~securegaze.defense.mitigation.mitigate`
fine-tunes a model against a reversed trigger, and :func:`~securegaze.defense.model_loading.load_model_any`
reads any model file the scanner accepts.
"""

from __future__ import annotations

from securegaze.defense.base import Detector, ReversedTrigger, ReversesTrigger, ScanProgress
from securegaze.defense.report import ScanReport
from securegaze.defense.securegaze import (
    DEFAULT_THRESHOLD,
    SCANNER_VERSION,
    SecureGazeDetector,
    SecureGazeSettings,
    TriggerGenerator,
    TriggerReversal,
    load_generator,
    save_generator,
    save_trigger_image,
)
from securegaze.registry import Registry

DETECTORS: Registry[Detector] = Registry("detector")
DETECTORS.register(SecureGazeDetector.name)(SecureGazeDetector)


def create_detector(name: str, **settings) -> Detector:
    """Build a registered detector from its settings (``create_detector(d.name, **d.settings())`` rebuilds d)."""
    return DETECTORS.create(name, **settings)


from securegaze.defense.baselines import BASELINE_DETECTORS  # noqa: E402

for _baseline in BASELINE_DETECTORS:
    DETECTORS.register(_baseline.name)(_baseline)

from securegaze.defense.mitigation import MitigationResult, mitigate  # noqa: E402
from securegaze.defense.model_loading import load_model_any, model_file_sha256  # noqa: E402

__all__ = [
    "DEFAULT_THRESHOLD", "DETECTORS", "SCANNER_VERSION", "Detector", "MitigationResult", "ReversedTrigger",
    "ReversesTrigger", "ScanProgress",
    "ScanReport", "SecureGazeDetector", "SecureGazeSettings", "TriggerGenerator", "TriggerReversal",
    "create_detector", "load_generator", "load_model_any", "mitigate", "model_file_sha256", "save_generator",
    "save_trigger_image",
]
