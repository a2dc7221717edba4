"""SecureGaze's own mitigation as a registered method (``securegaze``), next to the baselines.

It runs :func:`securegaze.defense.mitigation.unlearn_reversed_triggers`, the procedure of ``securegaze
mitigate`` (docs/architecture.md section 6): scan the model, fine-tune it on the clean images and their
reversed-triggered copies (the scan's reversal, a uniform-price reversal, each at several depths),
labelled with the original model's own predictions (or the true gaze), re-scan, and repeat while the
re-scan still flags the model. The details hold both scan reports and the rounds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from securegaze.defense.mitigation import (
    DEFAULT_EPOCHS,
    DEFAULT_LR,
    DEFAULT_LR_SCHEDULE,
    DEFAULT_ROUNDS,
    DEFAULT_STRENGTHS,
    LATER_ROUNDS_LR_FACTOR,
    MITIGATION_VERSION,
    check_lr_schedule,
    check_strengths,
    unlearn_reversed_triggers,
)
from securegaze.defense.mitigations.base import MitigationMethod, MitigationSettings, check_finetune
from securegaze.validation import check_int, check_number, check_setting


@dataclass(frozen=True)
class SecureGazeMitigationSettings(MitigationSettings):
    """The settings of ``securegaze mitigate``: ``epochs`` per round, ``lr`` for the first round and
    ``lr * later_lr_factor`` for the rest (each decaying as ``lr_schedule`` says), at most ``rounds``
    rounds, ``uniform_reversal``, ``strengths``; ``threshold``: the re-scan's decision threshold (None:
    the detector's calibrated default); ``scan``: further SecureGaze detector settings (e.g. ``steps``),
    checked by the detector. ``seed`` seeds the scans and the fine-tuning."""

    epochs: int = DEFAULT_EPOCHS
    lr: float = DEFAULT_LR
    rounds: int = DEFAULT_ROUNDS
    later_lr_factor: float = LATER_ROUNDS_LR_FACTOR
    lr_schedule: str = DEFAULT_LR_SCHEDULE
    uniform_reversal: bool = True
    strengths: tuple[float, ...] = DEFAULT_STRENGTHS
    threshold: float | None = None
    scan: dict = field(default_factory=dict)

    def validate(self, who: str) -> None:
        super().validate(who)
        check_finetune(who, self)
        check_int(who, "rounds", self.rounds, 1, 100)
        object.__setattr__(self, "later_lr_factor", check_number(who, "later_lr_factor", self.later_lr_factor, 0, 1,
                                                                 low_open=True))
        check_lr_schedule(self.lr_schedule, who)
        check_setting(who, "uniform_reversal", isinstance(self.uniform_reversal, bool), "true or false",
                      self.uniform_reversal)
        object.__setattr__(self, "strengths", check_strengths(self.strengths))
        check_setting(who, "scan", isinstance(self.scan, dict) and not {"seed", "threshold"} & set(self.scan),
                      "a dict of detector settings other than seed and threshold", self.scan)


class SecureGazeMitigation(MitigationMethod):
    name = "securegaze"
    settings_class = SecureGazeMitigationSettings
    version = MITIGATION_VERSION
    source = f"this project (securegaze mitigate, mitigation version {MITIGATION_VERSION})"

    def __init__(self, **settings) -> None:
        from securegaze.defense import create_detector

        super().__init__(**settings)
        s = self.config
        # Built now, so that a bad threshold or scan setting is refused before any work.
        extra = {} if s.threshold is None else {"threshold": s.threshold}
        self.detector = create_detector("securegaze", seed=s.seed, **extra, **s.scan)

    def run(self, tuned, x, targets, progress):
        # ``tuned`` is still an exact copy of the original model here: the scan before reads it as such.
        s = self.config
        outcome = unlearn_reversed_triggers(
            tuned, x, self.detector, labels=targets.cpu().numpy(), epochs=s.epochs, lr=s.lr, seed=s.seed,
            progress=progress, rounds=s.rounds, uniform_reversal=s.uniform_reversal, strengths=s.strengths,
            later_lr_factor=s.later_lr_factor, lr_schedule=s.lr_schedule)
        tuned.load_state_dict(outcome.tuned.state_dict())
        return {"scan_before": outcome.scan_before.to_dict(), "scan_after": outcome.scan_after.to_dict(),
                "rounds": outcome.rounds, "finetune": asdict(outcome.finetune)}
