"""What every mitigation method shares: settings, the apply frame, the labels, the loss, fine-tuning.

A mitigation method takes a (possibly backdoored) gaze model and the defender's clean images and returns
a tuned copy. It is a :class:`MitigationMethod` subclass with a frozen-dataclass settings class (a
subclass of :class:`MitigationSettings`, every field with a default and its source) and one method,
:meth:`MitigationMethod.run`, which works on a copy of the model and the checked images. The frame around
it is written once, here:

* the input model is never modified: :meth:`MitigationMethod.apply` deep-copies it first;
* the label budget is the one of ``securegaze mitigate``: the gaze the *original* model predicts on the
  clean images (:func:`gaze_targets`), or the true gaze when the defender has it;
* the model runs in eval mode: batch-norm statistics and dropout stay as trained (a few hundred clean
  images would only corrupt the running statistics), the convention of :mod:`securegaze.defense.mitigation`.
  The one exception is ANP's mask search, which normalises with batch statistics as its public code does
  (and restores the running statistics afterwards; see :mod:`.anp`);
* the gaze loss is L1 on (pitch, yaw), in radians for the fine-tuning (as SecureGaze's own) or in
  degrees where a method's step sizes were tuned on a cross-entropy of a few units (:func:`gaze_l1`).

Gazes are (pitch, yaw) radians (docs/architecture.md section 3); errors are angles in degrees.
"""

from __future__ import annotations

import copy
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as nnf

from securegaze.defense.base import ProgressCallback, ScanProgress
from securegaze.defense.inputs import check_gaze_model, clean_tensor
from securegaze.errors import ConfigError, DatasetError, ModelFormatError
from securegaze.geometry import angular_error_deg_torch
from securegaze.validation import check_int, check_number

__all__ = ["FinetuneSettings", "MitigationMethod", "MitigationSettings", "check_finetune", "finetune",
           "finetune_budget", "gaze_l1", "gaze_targets", "mean_error_deg", "model_device", "predict_batched"]


@dataclass(frozen=True)
class MitigationSettings:
    """Settings every method has; a method's own class adds its fields (all with defaults).

    * ``batch_size``: images per optimisation step;
    * ``seed``: all randomness (batch order, initialisation of perturbations and masks).
    """

    batch_size: int = 64
    seed: int = 0

    def validate(self, who: str) -> None:
        """One :class:`ConfigError` line naming the first bad setting; subclasses call this, then check theirs."""
        check_int(who, "batch_size", self.batch_size, 2, 65_536)
        check_int(who, "seed", self.seed, 0, 2**32 - 1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class MitigationMethod(ABC):
    """A backdoor mitigation, built from its settings (``create_mitigation(name, **settings)``).

    Subclasses set ``name``, ``settings_class``, ``source`` (the paper and the public code the defaults
    come from) and ``version``, and implement :meth:`run`.
    """

    name: ClassVar[str]
    settings_class: ClassVar[type[MitigationSettings]] = MitigationSettings
    source: ClassVar[str] = ""
    #: Bumped when the method's procedure changes: cached benchmark results of another version are redone.
    version: ClassVar[int] = 1

    def __init__(self, **settings) -> None:
        known = [f.name for f in fields(self.settings_class)]
        unknown = sorted(set(settings) - set(known))
        if unknown:
            raise ConfigError(f"{self.name}: unknown setting {unknown[0]!r}; expected one of: {', '.join(known)}")
        self.config = self.settings_class(**settings)
        self.config.validate(self.name)

    def settings(self) -> dict[str, Any]:
        """The full effective settings, plain data (``create_mitigation(m.name, **m.settings())`` rebuilds m)."""
        return self.config.to_dict()

    def with_settings(self, **changes) -> MitigationMethod:
        """A new method of the same kind with ``changes`` applied (checked again)."""
        return type(self)(**{**self.settings(), **changes})

    def apply(self, model: nn.Module, clean_images, labels=None,
              progress: ProgressCallback | None = None) -> tuple[nn.Module, dict[str, Any]]:
        """Mitigate a copy of ``model``; ``model`` itself is not changed.

        ``clean_images``: (N, S, S, 3) uint8 RGB, (N, 3, S, S) float in [0, 1] or an in-memory dataset;
        ``labels``: optional (N, 2) true gaze, radians (default: the original model's own predictions).
        Returns ``(tuned model in eval mode, details)``: ``details`` is plain data (what the method did:
        losses, pruned channels, ...) plus ``method``, ``labels`` ("own predictions" or "true"),
        ``clean_images`` and ``runtime_s``.
        """
        check_gaze_model(model, self.name)
        started = time.monotonic()
        x = clean_tensor(clean_images, model.input_size, self.name)
        tuned = copy.deepcopy(model).eval()
        device = model_device(tuned)
        x = x.to(device)
        targets = gaze_targets(model, x, labels, self.name, self.config.batch_size)
        trainable = [p.requires_grad for p in tuned.parameters()]
        for p in tuned.parameters():
            p.requires_grad_(True)
        details = self.run(tuned, x, targets, progress)
        for p, flag in zip(tuned.parameters(), trainable, strict=True):
            p.requires_grad_(flag)
        tuned.eval()
        check_finite_output(tuned, x, self.name, self.config.batch_size)
        return tuned, {"method": self.name, "labels": "own predictions" if labels is None else "true",
                       "clean_images": int(len(x)), **details, "runtime_s": time.monotonic() - started}

    @abstractmethod
    def run(self, tuned: nn.Module, x: torch.Tensor, targets: torch.Tensor,
            progress: ProgressCallback | None) -> dict[str, Any]:
        """Mitigate ``tuned`` (a copy, eval mode, every parameter trainable) in place, on the clean
        images ``x`` (N, 3, S, S) in [0, 1] labelled ``targets`` (N, 2) radians; return the details."""

    def report_progress(self, progress: ProgressCallback | None, stage: str, step: int, total: int,
                        **values: float) -> None:
        if progress:
            progress(ScanProgress(self.name, stage, step, total, {k: float(v) for k, v in values.items()}))


def model_device(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def predict_batched(model: nn.Module, x: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
    """(N, 2) radians of ``model`` on ``x`` without gradients, ``batch_size`` images at a time."""
    with torch.no_grad():
        return torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]).float()


def check_finite_output(model: nn.Module, x: torch.Tensor, who: str, batch_size: int) -> None:
    """A :class:`ModelFormatError` when the mitigated model predicts NaN or inf on the clean images."""
    if not torch.isfinite(predict_batched(model, x, batch_size)).all():
        raise ModelFormatError(f"{who}: the mitigated model predicts NaN or inf gaze on the clean images; "
                               "lower the learning rate")


def gaze_targets(model: nn.Module, x: torch.Tensor, labels, who: str, batch_size: int = 128) -> torch.Tensor:
    """The labels of the clean images, (N, 2) radians: ``labels`` when given (checked), else the gaze the
    original ``model`` predicts on them (the label budget of ``securegaze mitigate``)."""
    if labels is None:
        model.eval()
        targets = predict_batched(model, x, batch_size)
        if not torch.isfinite(targets).all():
            raise ModelFormatError(f"{who}: the model predicts NaN or inf gaze on the clean images")
        return targets
    targets = torch.as_tensor(np.asarray(labels, dtype=np.float32), device=x.device)
    if targets.shape != (len(x), 2):
        raise DatasetError(f"{who}: labels must be (N, 2) radians with N={len(x)}, got {tuple(targets.shape)}")
    if not torch.isfinite(targets).all():
        raise DatasetError(f"{who}: labels contain NaN or inf")
    return targets


def gaze_l1(prediction: torch.Tensor, targets: torch.Tensor, degrees: bool = False) -> torch.Tensor:
    """Mean absolute pitch and yaw difference: radians, or degrees with ``degrees`` (same gradient
    direction, 57.3x the size)."""
    loss = nnf.l1_loss(prediction, targets)
    return loss * (180.0 / math.pi) if degrees else loss


def mean_error_deg(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, batch_size: int = 128) -> float:
    """Mean angle (degrees) between ``model``'s gaze on ``x`` and ``targets`` (N, 2) radians."""
    return float(angular_error_deg_torch(predict_batched(model, x, batch_size), targets).mean())


@dataclass(frozen=True)
class FinetuneSettings:
    """The fine-tuning budget: ``epochs`` passes over the clean images at Adam learning rate ``lr``."""

    epochs: int
    lr: float
    batch_size: int
    seed: int


def finetune(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, budget: FinetuneSettings, who: str,
             progress: Callable[[int, int, float], None] | None = None,
             after_step: Callable[[], None] | None = None) -> dict[str, float]:
    """Fine-tune ``model`` in place (eval mode) on ``x`` labelled ``targets``: L1 in radians, Adam,
    the batch order drawn from ``budget.seed`` per epoch. ``after_step`` runs after every optimiser
    step (a pruning method re-zeroes its pruned channels there). Returns the steps and the clean
    loss (radians) before and after."""
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=budget.lr)
    batch = min(budget.batch_size, len(x))
    per_epoch = max(1, len(x) // batch)
    total, step = budget.epochs * per_epoch, 0
    before = float(gaze_l1(predict_batched(model, x), targets))
    for epoch in range(budget.epochs):
        order = torch.as_tensor(np.random.default_rng([budget.seed, epoch, 0x7E57]).permutation(len(x)),
                                device=x.device)
        for k in range(per_epoch):
            idx = order[k * batch:(k + 1) * batch]
            loss = gaze_l1(model(x[idx]), targets[idx])
            if not torch.isfinite(loss):
                raise ModelFormatError(f"{who}: fine-tuning diverged at step {step} (loss {loss.item()}); lower lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if after_step is not None:
                after_step()
            step += 1
            if progress:
                progress(step, total, loss.item())
    return {"steps": step, "clean_loss_before": before, "clean_loss_after": float(gaze_l1(predict_batched(model, x),
                                                                                          targets))}


def finetune_budget(settings, epochs_field: str = "epochs", lr_field: str = "lr") -> FinetuneSettings:
    """The :class:`FinetuneSettings` of a method's settings object (its epochs, lr, batch_size, seed)."""
    return FinetuneSettings(getattr(settings, epochs_field), getattr(settings, lr_field), settings.batch_size,
                            settings.seed)


def check_finetune(who: str, settings, allow_zero_epochs: bool = False) -> None:
    """The fine-tuning fields of a settings object: ``epochs`` an integer, ``lr`` in (0, 1]."""
    check_int(who, "epochs", settings.epochs, 0 if allow_zero_epochs else 1, 10_000)
    check_number(who, "lr", settings.lr, 0.0, 1.0, low_open=True)
