"""Backdoor attacks on gaze models, created by name: ``create_attack("wanet", target_gaze=(0.17, -0.35))``.

Every attack is an :class:`~securegaze.attacks.base.Attack` (configure once, then ``apply``,
``poison`` or ``train_backdoored``); :func:`~securegaze.attacks.metrics.evaluate_attack` measures
it and :func:`~securegaze.attacks.runner.run_attack` does the whole synthetic experiment.
"""

from __future__ import annotations

from securegaze.attacks.adaptive import AdaptiveAttack
from securegaze.attacks.badnets import BadNets
from securegaze.attacks.base import DEFAULT_TARGET_GAZE, Attack, PoisonedDataset
from securegaze.attacks.blended import Blended
from securegaze.attacks.glasses import GlassesAttack
from securegaze.attacks.input_aware import InputAwareAttack, TriggerGenerator
from securegaze.attacks.metrics import ASR_THRESHOLD_DEG, AttackMetrics, attack_metrics, evaluate_attack
from securegaze.attacks.offset import OffsetAttack
from securegaze.attacks.physical import FaceNotFoundError, PhysicalAttack
from securegaze.attacks.registry import ATTACKS, attack_setting_names, check_attack_settings, create_attack
from securegaze.attacks.runner import SyntheticSplits, render_splits, run_attack, run_benign
from securegaze.attacks.sig import SIG
from securegaze.attacks.tape import TapeAttack
from securegaze.attacks.wanet import WaNet

__all__ = [
    "ASR_THRESHOLD_DEG", "ATTACKS", "DEFAULT_TARGET_GAZE", "SIG", "AdaptiveAttack", "Attack", "AttackMetrics",
    "BadNets", "Blended", "OffsetAttack",
    "FaceNotFoundError", "GlassesAttack", "InputAwareAttack", "PhysicalAttack", "PoisonedDataset",
    "SyntheticSplits", "TapeAttack", "TriggerGenerator", "WaNet", "attack_metrics", "attack_setting_names",
    "check_attack_settings", "create_attack", "evaluate_attack", "render_splits", "run_attack", "run_benign",
]
