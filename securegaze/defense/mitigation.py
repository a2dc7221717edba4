"""Mitigation after a scan: unlearn the reversed trigger by fine-tuning (docs/architecture.md section 6).

The model is fine-tuned on the clean images and on their reversed-triggered versions x' = M(x), both
labelled with the gaze the *original* model predicts on the clean x (or the true gaze when labels are
given). The backdoor's shortcut "trigger -> target" then costs loss, while the clean behaviour is what
the labels already ask for. Fine-tuning runs in eval mode: batch-norm statistics and dropout stay as
trained, since a few hundred clean images would only corrupt the running statistics.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as nnf

from securegaze.defense.base import ReversedTrigger, ScanProgress
from securegaze.defense.inputs import check_gaze_model, check_setting, clean_tensor
from securegaze.defense.report import ScanReport
from securegaze.defense.securegaze import TriggerGenerator, load_generator
from securegaze.errors import ConfigError, DatasetError, ModelFormatError

#: Defaults sized for a few hundred clean images: ~10 passes at a learning rate an order of magnitude
#: below training (the model only has to forget a shortcut, not learn gaze again).
DEFAULT_EPOCHS = 10
DEFAULT_LR = 3e-4


@dataclass(frozen=True)
class MitigationResult:
    """What :func:`mitigate` did: the losses (radians, L1 on pitch/yaw) before and after, per image kind."""

    steps: int
    clean_loss_before: float
    reversed_loss_before: float
    clean_loss_after: float
    reversed_loss_after: float


def _generator_from(trigger) -> TriggerGenerator:
    if isinstance(trigger, TriggerGenerator):
        return trigger
    if isinstance(trigger, ReversedTrigger):  # any detector's reversal (SecureGaze's TriggerReversal, ...)
        return trigger.generator
    if isinstance(trigger, ScanReport):
        if not trigger.generator_path:
            raise ConfigError(
                "mitigate: the scan report has no generator_path; scan with artifacts_dir=... so the reversed "
                "trigger generator is written, or pass the reversal from the detector's reverse()"
            )
        return load_generator(trigger.generator_path)
    if isinstance(trigger, (str, os.PathLike)):
        return load_generator(Path(trigger))
    raise ConfigError(
        f"mitigate: cannot take a trigger from {type(trigger).__name__}; expected a ScanReport with a "
        "generator_path, a TriggerReversal, a TriggerGenerator or a generator .safetensors path"
    )


def check_strengths(strengths) -> tuple[float, ...]:
    """``strengths`` as a tuple; ConfigError unless it holds one or more numbers in (0, 10]."""
    strengths = tuple(strengths)
    check_setting("mitigate", "strengths", bool(strengths) and all(
        isinstance(a, (int, float)) and not isinstance(a, bool) and 0 < a <= 10 for a in strengths),
        "one or more numbers in (0, 10]", strengths)
    return strengths


def mitigate(model: nn.Module, clean_images, trigger, labels=None, epochs: int = DEFAULT_EPOCHS,
             lr: float = DEFAULT_LR, batch_size: int = 64, seed: int = 0, strengths=(1.0,),
             progress: Callable[[ScanProgress], None] | None = None,
             return_result: bool = False):
    """Fine-tune a copy of ``model`` against the reversed trigger; ``model`` itself is not changed.

    ``clean_images``: (N, S, S, 3) uint8 RGB, (N, 3, S, S) float in [0, 1] or an in-memory dataset;
    ``trigger``: a :class:`ScanReport` with ``generator_path``, a :class:`TriggerReversal`, a
    :class:`TriggerGenerator` or a generator file, or a list of them (each image is then paired with
    one of them, drawn afresh every epoch); ``strengths``: the edits are applied at each of these
    depths (:meth:`TriggerGenerator.forward`), 1 meaning as reversed; ``labels``: optional (N, 2) true gaze, radians
    (default: the original model's own predictions on the clean images). Deterministic for a given
    ``seed``. Returns the fine-tuned model in eval mode, or ``(model, MitigationResult)`` with
    ``return_result``.
    """
    check_gaze_model(model, "mitigate")
    check_setting("mitigate", "epochs", isinstance(epochs, int) and not isinstance(epochs, bool) and epochs >= 1,
                  "an integer >= 1", epochs)
    check_setting("mitigate", "lr", isinstance(lr, (int, float)) and 0 < lr <= 1, "a number in (0, 1]", lr)
    check_setting("mitigate", "batch_size", isinstance(batch_size, int) and batch_size >= 2, "an integer >= 2",
                  batch_size)
    strengths = check_strengths(strengths)
    x_all = clean_tensor(clean_images, model.input_size, "mitigate")
    triggers = list(trigger) if isinstance(trigger, (list, tuple)) else [trigger]
    if not triggers:
        raise ConfigError("mitigate: no trigger given; pass a scan report, a reversal or a generator (or a list)")
    generators = [_generator_from(t) for t in triggers]
    for generator in generators:
        if generator.input_size != model.input_size:
            raise ConfigError(
                f"mitigate: the trigger generator works on {generator.input_size}-px images but the model takes "
                f"{model.input_size} px; use the generator from this model's scan"
            )

    tuned = copy.deepcopy(model)
    device = next((t.device for t in tuned.parameters()), torch.device("cpu"))
    x_all = x_all.to(device)
    tuned.eval()
    # Every (generator, strength) pair is one way to trigger an image. The edited images are made per
    # batch rather than stored: K copies of the clean set would not fit for large inputs.
    edits = [(g, a) for g in (copy.deepcopy(g).to(device).eval() for g in generators) for a in strengths]

    def reversed_images(idx: torch.Tensor, kinds: torch.Tensor) -> torch.Tensor:
        """x_all[idx], each edited by the trigger ``kinds[j]`` of :data:`edits`."""
        x = x_all[idx]
        out = torch.empty_like(x)
        with torch.no_grad():
            for kind in torch.unique(kinds).tolist():
                sel = kinds == kind
                g, a = edits[kind]
                out[sel] = g(x[sel], a)
        return out

    with torch.no_grad():
        if labels is None:
            targets = torch.cat([model(x_all[i:i + batch_size]) for i in range(0, len(x_all), batch_size)])
        else:
            targets = torch.as_tensor(np.asarray(labels, dtype=np.float32), device=device)
            if targets.shape != (len(x_all), 2):
                raise DatasetError(f"mitigate: labels must be (N, 2) radians with N={len(x_all)}, "
                                   f"got {tuple(targets.shape)}")
    if not torch.isfinite(targets).all():
        raise (DatasetError("mitigate: labels contain NaN or inf") if labels is not None else
               ModelFormatError("mitigate: the model predicts NaN or inf gaze on the clean images"))

    def losses() -> tuple[float, float]:
        with torch.no_grad():
            clean = torch.cat([tuned(x_all[i:i + batch_size]) for i in range(0, len(x_all), batch_size)])
            # Image i under edit i mod K: every edit is represented, one pass over the clean set.
            rev = torch.cat([tuned(reversed_images(span, span % len(edits)))
                             for span in torch.arange(len(x_all), device=device).split(batch_size)])
        return nnf.l1_loss(clean, targets).item(), nnf.l1_loss(rev, targets).item()

    before = losses()
    params = [p for p in tuned.parameters()]
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(params, lr=lr)
    batch = min(batch_size, len(x_all))
    steps_per_epoch = max(1, len(x_all) // batch)
    total, step = epochs * steps_per_epoch, 0
    for epoch in range(epochs):
        rng = np.random.default_rng([seed, epoch, 0x3171])
        order = torch.as_tensor(rng.permutation(len(x_all)), device=device)
        # With several triggers each image gets one of them, drawn afresh every epoch.
        which = torch.as_tensor(rng.integers(0, len(edits), len(x_all)), device=device)
        for k in range(steps_per_epoch):
            idx = order[k * batch:(k + 1) * batch]
            # Clean and reversed-triggered versions of the same images in one batch: the model sees
            # that the edit must not change the answer.
            prediction = tuned(torch.cat([x_all[idx], reversed_images(idx, which[idx])]))
            loss = nnf.l1_loss(prediction, torch.cat([targets[idx], targets[idx]]))
            if not torch.isfinite(loss):
                raise ModelFormatError(f"mitigate: fine-tuning diverged at step {step} (loss {loss.item()}); "
                                       "lower lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if progress:
                progress(ScanProgress("mitigate", "finetune", step, total, {"loss": loss.item()}))
    tuned.eval()
    after = losses()
    if return_result:
        return tuned, MitigationResult(step, before[0], before[1], after[0], after[1])
    return tuned
