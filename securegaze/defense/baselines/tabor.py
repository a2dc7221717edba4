"""TABOR (Guo, Wang, Xing, Du, Song; arXiv 1908.01763, 2019; ICDM 2020), adapted to gaze regression.

TABOR is Neural Cleanse with a better-posed objective and a better statistic. To the target loss and
NC's adaptively weighted mask norm it adds four regularisers that steer the optimisation away from
the adversarial "triggers" every model has (weights ``lambda_1..lambda_6`` below; the default values
are those of trojanzoo's TABOR, ``hyperparams = [1e-6, 1e-5, 1e-7, 1e-8, 0, 1e-2]``, the public
implementation of the method):

* R1, overly large triggers: ``lambda_1 (|M|_1 + |M|_2^2) + lambda_2 (|(1-M) P|_1 + |(1-M) P|_2^2)``
  (mask area, and pattern left outside the mask);
* R2, scattered triggers: ``lambda_3 s(M) + lambda_4 s(M P)``, ``s`` the sum of squared
  differences of neighbouring pixels (smoothness);
* R3, blocking triggers: ``lambda_5 L(f((1-M) x), y)``: the image with the trigger cut out keeps its
  own output (in gaze: the model's clean prediction; ``lambda_5`` = 0 in trojanzoo, kept here);
* R4, overlaying triggers: ``lambda_6 L(f(M P), y_t)``: the trigger alone, on a black image, is
  enough for the target.

The statistic is TABOR's trigger-quality metric, computed for every candidate target,

    A = beta_1 log(|M|_1 / S^2) + beta_2 log(s(M) / S^2) - beta_3 log(ASR) - beta_4 log(fidelity),

where ``fidelity`` is the share of the pixels an explanation of the triggered images marks as
important that lie inside the trigger. Here the explanation is the input-gradient saliency of the
gaze output on the triggered images (the sum over pitch and yaw and the colour channels of the
squared gradient, averaged over images), its top-``n`` pixels against the ``n`` pixels where the
mask exceeds 0.5. A real trigger is small, compact, effective and what the model looks at, so its
``A`` is low; TABOR flags a model whose lowest ``A`` is a MAD outlier (anomaly index > 2, as Neural
Cleanse). The ``beta`` default to 1: neither the paper nor a public implementation gives other
values (trojanzoo leaves the metric out and reuses Neural Cleanse's norm statistic).

Gaze adaptation: as Neural Cleanse (:mod:`~securegaze.defense.baselines.neural_cleanse`): one run per
cell of a gaze grid with the target free inside its cell; the target loss is the mean angle to the
target in collapse radii; ASR is the share within ``collapse_radius_deg``.

Score: the anomaly index of the cell with the lowest ``A`` (suspicious above, 2.0 by default).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from securegaze.defense.baselines.common import BaselineDetector, BaselineResult, mad_anomaly_index, predict
from securegaze.defense.baselines.mask_pattern import (
    MaskPatternEdit,
    MaskPatternSettings,
    RunOutcome,
    angle_to_target,
    mask_smoothness,
    reverse_every_cell,
)
from securegaze.defense.baselines.neural_cleanse import NC_THRESHOLD, cell_rows
from securegaze.validation import check_number

__all__ = ["TaborDetector", "TaborSettings", "explanation_fidelity", "trigger_quality"]

#: Floors inside TABOR's logarithms (a mask of exactly zero smoothness, an attack that never succeeds).
_LOG_FLOOR = 1e-8


@dataclass(frozen=True)
class TaborSettings(MaskPatternSettings):
    """TABOR's settings: those of :class:`MaskPatternSettings` (Neural Cleanse's optimiser) plus

    * ``lambda_1`` .. ``lambda_6``: weights of R1 (mask, pattern outside the mask), R2 (mask, masked
      pattern smoothness), R3 (blocking) and R4 (overlaying); trojanzoo's defaults;
    * ``beta_1`` .. ``beta_4``: weights of the quality metric's size, smoothness, ASR and fidelity terms;
    * ``threshold``: on the MAD anomaly index of the lowest metric (2, as Neural Cleanse).
    """

    lambda_1: float = 1e-6
    lambda_2: float = 1e-5
    lambda_3: float = 1e-7
    lambda_4: float = 1e-8
    lambda_5: float = 0.0
    lambda_6: float = 1e-2
    beta_1: float = 1.0
    beta_2: float = 1.0
    beta_3: float = 1.0
    beta_4: float = 1.0
    threshold: float = NC_THRESHOLD

    def validate(self, who: str) -> None:
        super().validate(who)
        for name in ("lambda_1", "lambda_2", "lambda_3", "lambda_4", "lambda_5", "lambda_6",
                     "beta_1", "beta_2", "beta_3", "beta_4"):
            check_number(who, name, getattr(self, name), 0.0, 1e6)


class TaborDetector(BaselineDetector):
    """TABOR on a gaze model: Neural Cleanse's runs with TABOR's regularisers, its quality metric, MAD."""

    name = "tabor"
    version = "1.0"
    settings_class: ClassVar[type[TaborSettings]] = TaborSettings
    suspicious_when = "above"
    default_threshold_source = ("Guo et al. (TABOR, 2019), as Neural Cleanse: anomaly index > 2 of the lowest "
                                "trigger-quality metric (not calibrated on gaze models)")
    smoke_settings = {"grid_cells": 2, "epochs": 2, "batch_size": 8, "cost_set_after": 1, "cost_patience": 1,
                      "early_stop_patience": 1, "lambda_5": 1e-3}

    def run(self, model, x, progress) -> BaselineResult:
        cfg = self.config
        clean = predict(model, x, cfg.batch_size)
        outcomes = reverse_every_cell(model, x, clean, cfg, self.name, progress,
                                      extra_loss=tabor_regularisers(model, cfg))
        for outcome in outcomes:
            outcome.extra.update(trigger_quality(model, x, outcome, cfg))
        quality = np.array([o.extra["quality"] for o in outcomes])
        index = mad_anomaly_index(quality, "below")
        flagged = int(np.argmin(quality))
        best = outcomes[flagged]
        return BaselineResult(
            score=float(index[flagged]),
            target_gaze=(float(best.target[0]), float(best.target[1])),
            edit=best.edit,
            constraints_met=best.reached,
            details={
                "score_statistic": "mad_anomaly_index_of_lowest_trigger_quality",
                "target_search": f"grid of {cfg.grid_cells}x{cfg.grid_cells} cells, target free inside its cell",
                "flagged_cell": flagged,
                "quality_median": float(np.median(quality)),
                "cells": cell_rows(outcomes, index, int(x.shape[-1])),
            },
        )


def tabor_regularisers(model, cfg: TaborSettings):
    """TABOR's R1..R4 as an extra loss for :class:`MaskPatternRun` (the target loss is in collapse radii)."""
    radius = math.radians(cfg.collapse_radius_deg)

    def extra(edit: MaskPatternEdit, batch: torch.Tensor, clean_gaze: torch.Tensor, target: torch.Tensor):
        mask, pattern = edit.mask, edit.pattern
        outside = (1 - mask) * pattern
        r1 = (cfg.lambda_1 * (mask.abs().sum() + mask.pow(2).sum())
              + cfg.lambda_2 * (outside.abs().sum() + outside.pow(2).sum()))
        r2 = cfg.lambda_3 * mask_smoothness(mask) + cfg.lambda_4 * mask_smoothness(mask * pattern)
        total = r1 + r2
        if cfg.lambda_5 > 0:  # blocking: the face without the trigger region keeps its own gaze
            kept = model((1 - mask) * batch)
            total = total + cfg.lambda_5 * (angle_to_target(kept, clean_gaze).mean() / radius)
        if cfg.lambda_6 > 0:  # overlaying: the trigger alone, on black, gives the target
            alone = model(mask * pattern)
            total = total + cfg.lambda_6 * (angle_to_target(alone, target).mean() / radius)
        return total

    return extra


def explanation_fidelity(model, x: torch.Tensor, edit: MaskPatternEdit, batch_size: int) -> float:
    """Share of the ``n`` most salient pixels of the triggered images that lie inside the trigger,
    ``n`` the number of pixels where the mask exceeds 0.5 (at least 1).

    Saliency: the squared input gradient of pitch and of yaw, summed over them and the colour
    channels, averaged over the images (a gradient explanation; TABOR takes one of an explanation
    method's outputs, the method is a free choice).
    """
    size = int(x.shape[-1])
    saliency = torch.zeros(size, size, device=x.device)
    for start in range(0, len(x), batch_size):
        triggered = edit(x[start:start + batch_size]).detach().requires_grad_(True)
        gaze = model(triggered)
        for k in range(gaze.shape[1]):
            (grad,) = torch.autograd.grad(gaze[:, k].sum(), triggered, retain_graph=k + 1 < gaze.shape[1])
            saliency += grad.pow(2).sum(dim=(0, 1))
    inside = (edit.mask.detach()[0, 0] > 0.5).flatten()
    n = max(1, int(inside.sum()))
    top = torch.topk(saliency.flatten(), n).indices
    return float(inside[top].float().mean())


def trigger_quality(model, x: torch.Tensor, outcome: RunOutcome, cfg: TaborSettings) -> dict:
    """TABOR's metric ``A`` of one reversed trigger and its four terms (JSON-ready)."""
    size = int(x.shape[-1])
    mask = outcome.edit.mask.detach()[0, 0]
    area = float(mask.sum()) / size**2
    smoothness = float(mask_smoothness(mask)) / size**2
    fidelity = explanation_fidelity(model, x, outcome.edit, cfg.batch_size)
    asr = outcome.success
    quality = (cfg.beta_1 * math.log(max(area, _LOG_FLOOR)) + cfg.beta_2 * math.log(max(smoothness, _LOG_FLOOR))
               - cfg.beta_3 * math.log(max(asr, _LOG_FLOOR)) - cfg.beta_4 * math.log(max(fidelity, _LOG_FLOOR)))
    return {"quality": quality, "smoothness": smoothness, "fidelity": fidelity}
