"""BTI-DBF(U) (Xu et al., ICLR 2024) as a registered mitigation method, ``bti_dbf_unlearn``.

The method itself, its adaptation to gaze regression and its defaults are
:func:`securegaze.defense.baselines.bti_dbf_unlearn.bti_dbf_unlearn`: invert the backdoor with BTI-DBF's
decoupled benign-feature mask and generator, then fine-tune so that about a tenth of every batch, replaced
by generated images, keeps its labels and its clean features, for a few rounds. This module only puts it
in the frame of the other methods (:class:`~securegaze.defense.mitigations.base.MitigationMethod`): the
same labels (the original model's own predictions unless true labels are given) and, unlike the function's
own default of 256, **all** the clean images (``samples`` defaults to 1,000,000, i.e. every image given),
as every other method gets.
"""

from __future__ import annotations

from dataclasses import dataclass

from securegaze.defense.baselines.bti_dbf_unlearn import BtiDbfUnlearnSettings, bti_dbf_unlearn
from securegaze.defense.mitigations.base import MitigationMethod


@dataclass(frozen=True)
class BtiDbfUnlearnMethodSettings(BtiDbfUnlearnSettings):
    """:class:`BtiDbfUnlearnSettings` with ``samples`` opened to every clean image given."""

    samples: int = 1_000_000


class BtiDbfUnlearn(MitigationMethod):
    name = "bti_dbf_unlearn"
    settings_class = BtiDbfUnlearnMethodSettings
    source = ("Xu et al., Towards Reliable and Efficient Backdoor Trigger Inversion via Decoupling Benign Features, "
              "ICLR 2024 (BTI-DBF(U)); github.com/xuxiong0214/BTIDBF, rounds cut for the CPU")

    def run(self, tuned, x, targets, progress):
        # ``tuned`` is an exact copy of the original model and ``targets`` its labels (the original's own
        # gaze unless true labels were given): the function fine-tunes its own copy of it.
        settings = self.settings()
        seed = settings.pop("seed")
        mitigated, details = bti_dbf_unlearn(tuned, x, targets.cpu().numpy(), seed=seed, progress=progress,
                                             **settings)
        tuned.load_state_dict(mitigated.state_dict())
        for key in ("method", "labels", "runtime_s", "settings"):
            details.pop(key, None)
        return details
