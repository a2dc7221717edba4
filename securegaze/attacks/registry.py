"""The attack registry: every attack by name, and ``create_attack`` that checks the settings given.

Kept apart from the package's ``__init__`` so that modules above the attacks (the experiment runner)
can create attacks by name without importing the package they are part of.
"""

from __future__ import annotations

import inspect

from securegaze.attacks.adaptive import AdaptiveAttack
from securegaze.attacks.badnets import BadNets
from securegaze.attacks.base import Attack
from securegaze.attacks.blended import Blended
from securegaze.attacks.glasses import GlassesAttack
from securegaze.attacks.input_aware import InputAwareAttack
from securegaze.attacks.offset import OffsetAttack
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


def check_attack_settings(name: str, seed: int, target_gaze=None, poison_rate: float | None = None,
                          settings: dict | None = None) -> Attack:
    """Build the attack a run will use, so that a bad name or value fails before any work starts.

    ``target_gaze`` and ``poison_rate`` left at None keep the attack's own defaults (as
    :func:`~securegaze.attacks.runner.run_attack` does); ``settings`` are the attack's other keyword
    settings. Raises what :func:`create_attack` raises.
    """
    checked = {**(settings or {}), "seed": seed}
    if target_gaze is not None:
        checked["target_gaze"] = target_gaze
    if poison_rate is not None:
        checked["poison_rate"] = poison_rate
    return create_attack(name, **checked)
