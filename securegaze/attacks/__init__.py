"""Backdoor attacks on gaze models, created by name: ``create_attack("wanet", target_gaze=(0.17, -0.35))``.

Every attack is an :class:`~securegaze.attacks.base.Attack` (configure once, then ``apply``,
``poison`` or ``train_backdoored``); :func:`~securegaze.attacks.metrics.evaluate_attack` measures
it and :func:`~securegaze.attacks.runner.run_attack` does the whole synthetic experiment.
"""

from __future__ import annotations

import inspect

from securegaze.attacks.adaptive import AdaptiveAttack
from securegaze.attacks.badnets import BadNets
from securegaze.attacks.base import DEFAULT_TARGET_GAZE, Attack, PoisonedDataset
from securegaze.attacks.blended import Blended
from securegaze.attacks.glasses import GlassesAttack
from securegaze.attacks.input_aware import InputAwareAttack, TriggerGenerator
from securegaze.attacks.metrics import ASR_THRESHOLD_DEG, AttackMetrics, attack_metrics, evaluate_attack
from securegaze.attacks.offset import OffsetAttack
from securegaze.attacks.physical import FaceNotFoundError, PhysicalAttack
from securegaze.attacks.runner import SyntheticSplits, render_splits, run_attack, run_benign
from securegaze.attacks.sig import SIG
from securegaze.attacks.tape import TapeAttack
from securegaze.attacks.wanet import WaNet
from securegaze.errors import ConfigError
from securegaze.registry import Registry

ATTACKS: Registry[Attack] = Registry("attack")
for _cls in (BadNets, Blended, WaNet, InputAwareAttack, SIG, TapeAttack, GlassesAttack, AdaptiveAttack,
             OffsetAttack):
    ATTACKS.register(_cls.name)(_cls)


def attack_setting_names(name: str) -> list[str]:
    """The keyword settings ``create_attack(name, ...)`` accepts (common ones first)."""
    return [p for p in inspect.signature(ATTACKS.get(name)).parameters if p not in ("self",)]


def create_attack(name: str, **settings) -> Attack:
    """Build a registered attack: ``create_attack(name, **attack.settings())`` rebuilds ``attack``.

    Raises :class:`ConfigError` for an unknown name (listing the known ones), an unknown setting
    (listing the accepted ones) or a bad value (naming it and the allowed range).
    """
    factory = ATTACKS.get(name)
    accepted = attack_setting_names(name)
    unknown = sorted(set(settings) - set(accepted))
    if unknown:
        raise ConfigError(f"{name}: unknown setting(s) {', '.join(unknown)}; expected some of: {', '.join(accepted)}")
    return factory(**settings)


__all__ = [
    "ASR_THRESHOLD_DEG", "ATTACKS", "DEFAULT_TARGET_GAZE", "SIG", "Attack", "AttackMetrics", "BadNets", "Blended",
    "FaceNotFoundError", "GlassesAttack", "InputAwareAttack", "PhysicalAttack", "PoisonedDataset",
    "SyntheticSplits", "TapeAttack", "TriggerGenerator", "WaNet", "attack_metrics", "attack_setting_names",
    "create_attack", "evaluate_attack", "render_splits", "run_attack", "run_benign",
]
