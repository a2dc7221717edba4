"""Plain fine-tuning: the clean images with the label budget, nothing else.

The oldest mitigation and the baseline of every other one (Liu et al., "Fine-Pruning", RAID 2018,
section 3.2, report fine-tuning alone as the first defence they evaluate): the model is trained a little
further on clean data, in the hope that the weights the trigger relies on drift. In gaze regression it is
what ``securegaze mitigate`` does without its reversed triggers, so it isolates what the reversal adds.

Budget: by default the one of a ``securegaze mitigate`` round, 10 passes over the clean images at Adam
3e-4 (:data:`securegaze.defense.mitigation.DEFAULT_EPOCHS`, ``DEFAULT_LR``), L1 on (pitch, yaw) radians,
eval mode; the labels are the original model's predictions unless true labels are given.
"""

from __future__ import annotations

from dataclasses import dataclass

from securegaze.defense.mitigation import DEFAULT_EPOCHS, DEFAULT_LR
from securegaze.defense.mitigations.base import (
    MitigationMethod,
    MitigationSettings,
    check_finetune,
    finetune,
    finetune_budget,
)


@dataclass(frozen=True)
class FineTuningSettings(MitigationSettings):
    """``epochs`` passes over the clean images at Adam learning rate ``lr`` (``batch_size`` images a step)."""

    epochs: int = DEFAULT_EPOCHS
    lr: float = DEFAULT_LR

    def validate(self, who: str) -> None:
        super().validate(who)
        check_finetune(who, self)


class FineTuning(MitigationMethod):
    name = "fine_tuning"
    settings_class = FineTuningSettings
    source = ("Liu et al., Fine-Pruning, RAID 2018 (fine-tuning alone); budget of securegaze mitigate: "
              f"{DEFAULT_EPOCHS} epochs, Adam {DEFAULT_LR:g}")

    def run(self, tuned, x, targets, progress):
        def on_step(step, total, loss):
            self.report_progress(progress, "finetune", step, total, loss=loss)

        return {"finetune": finetune(tuned, x, targets, finetune_budget(self.config), self.name, on_step)}
