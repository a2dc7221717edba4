"""Backdoor mitigation methods by name: ``create_mitigation("anp", seed=0).apply(model, clean_images)``.

Every method is a :class:`~securegaze.defense.mitigations.base.MitigationMethod`: built from checked
settings, it returns a mitigated *copy* of a gaze model and a dict of what it did, with the label budget
of ``securegaze mitigate`` (the original model's own predictions on the clean images unless true labels
are given). ``securegaze`` is SecureGaze's own mitigation (scan, unlearn the reversed triggers,
re-scan); the others are classification-era baselines adapted to gaze regression, one module each, with
their adaptation, sources and defaults in the module docstring and docs/mitigation_baselines.md
(``bti_dbf_unlearn`` wraps :mod:`securegaze.defense.baselines.bti_dbf_unlearn`).
``securegaze bench mitigate --methods ...`` loops over these names.
"""

from __future__ import annotations

from securegaze.defense.mitigations.anp import ANP
from securegaze.defense.mitigations.base import MitigationMethod, MitigationSettings
from securegaze.defense.mitigations.bti_dbf_unlearn import BtiDbfUnlearn
from securegaze.defense.mitigations.fine_pruning import FinePruning
from securegaze.defense.mitigations.fine_tuning import FineTuning
from securegaze.defense.mitigations.i_bau import IBAU
from securegaze.defense.mitigations.securegaze_unlearning import SecureGazeMitigation
from securegaze.registry import Registry

MITIGATIONS: Registry[MitigationMethod] = Registry("mitigation method")
for _method in (SecureGazeMitigation, FineTuning, FinePruning, ANP, IBAU, BtiDbfUnlearn):
    MITIGATIONS.register(_method.name)(_method)


def create_mitigation(name: str, **settings) -> MitigationMethod:
    """Build a registered mitigation method from its settings (one :class:`ConfigError` line when bad)."""
    return MITIGATIONS.create(name, **settings)


__all__ = ["MITIGATIONS", "MitigationMethod", "MitigationSettings", "create_mitigation"]
