"""Neural Cleanse (Wang, Yao, Shan, Li, Viswanath, Zheng, Zhao; IEEE S&P 2019), adapted to gaze regression.

The method: for every label, reverse-engineer the smallest mask + pattern trigger that sends the
clean images to that label; a backdoor's target needs a far smaller trigger than the others. The
L1 norms of the reversed masks are compared with the median absolute deviation (MAD): the anomaly
index of a norm below the median is ``(median - norm) / (1.4826 * MAD)``, and a model whose
smallest norm has an index above 2 is flagged (``mad_outlier_detection.py`` of the public code;
2 is the paper's threshold, > 95 % probability of an outlier under a normal assumption).

Gaze adaptation (docs/baselines_methods.md): the labels become the cells of a
``grid_cells`` x ``grid_cells`` grid (default 4 x 4 = 16 cells, more candidates than CIFAR-10's 10
labels) over the clean predictions' gaze range; in each cell the target gaze is an optimisation
variable confined to the cell (:mod:`~securegaze.defense.baselines.mask_pattern`). Attack success
is the share of triggered predictions within ``collapse_radius_deg`` of the cell's target.

Score: the anomaly index of the smallest-norm cell (suspicious above the threshold, 2.0 by
default). Recovered target: that cell's target gaze; the edit: its mask and pattern.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from securegaze.defense.baselines.common import BaselineDetector, BaselineResult, mad_anomaly_index, predict
from securegaze.defense.baselines.mask_pattern import MaskPatternSettings, RunOutcome, reverse_every_cell

__all__ = ["NeuralCleanseDetector", "NeuralCleanseSettings", "cell_rows"]

#: Neural Cleanse's decision rule: an anomaly index above 2 (Wang et al. 2019, section IV-C).
NC_THRESHOLD = 2.0


@dataclass(frozen=True)
class NeuralCleanseSettings(MaskPatternSettings):
    """Neural Cleanse's settings: those of :class:`MaskPatternSettings` and the anomaly-index threshold."""

    threshold: float = NC_THRESHOLD


class NeuralCleanseDetector(BaselineDetector):
    """Neural Cleanse on a gaze model: one mask + pattern reversal per target cell, MAD anomaly index."""

    name = "neural_cleanse"
    version = "1.0"
    settings_class: ClassVar[type[NeuralCleanseSettings]] = NeuralCleanseSettings
    suspicious_when = "above"
    default_threshold_source = ("Wang et al. (S&P 2019) and bolunwang/backdoor mad_outlier_detection.py: "
                                "anomaly index > 2 of the smallest mask L1 norm (not calibrated on gaze models)")
    smoke_settings = {"grid_cells": 2, "epochs": 2, "batch_size": 8, "cost_set_after": 1, "cost_patience": 1,
                      "early_stop_patience": 1}

    def run(self, model, x, progress) -> BaselineResult:
        cfg = self.config
        clean = predict(model, x, cfg.batch_size)
        outcomes = reverse_every_cell(model, x, clean, cfg, self.name, progress)
        norms = np.array([o.mask_l1 for o in outcomes])
        index = mad_anomaly_index(norms, "below")
        flagged = int(np.argmin(norms))
        best = outcomes[flagged]
        return BaselineResult(
            score=float(index[flagged]),
            target_gaze=(float(best.target[0]), float(best.target[1])),
            edit=best.edit,
            constraints_met=best.reached,
            details={
                "score_statistic": "mad_anomaly_index_of_smallest_mask_l1",
                "target_search": f"grid of {cfg.grid_cells}x{cfg.grid_cells} cells, target free inside its cell",
                "flagged_cell": flagged,
                "mask_l1_median": float(np.median(norms)),
                "cells": cell_rows(outcomes, index, int(x.shape[-1])),
            },
        )


def cell_rows(outcomes: list[RunOutcome], anomaly_index: np.ndarray, size: int) -> list[dict]:
    """Per cell, JSON-ready: centre and found target (degrees), mask L1 (and its share of the image),
    attack success of the kept edit, whether an epoch reached ``attack_success``, epochs, anomaly index."""
    rows = []
    for outcome, index in zip(outcomes, anomaly_index, strict=True):
        rows.append({
            "centre_deg": [float(v) for v in np.degrees(outcome.cell.centre)],
            "target_deg": [float(v) for v in np.degrees(outcome.target)],
            "mask_l1": float(outcome.mask_l1),
            "mask_share": float(outcome.mask_l1 / size**2),
            "success": float(outcome.success),
            "reached": bool(outcome.reached),
            "epochs": int(outcome.epochs),
            "anomaly_index": float(index),
            **outcome.extra,
        })
    return rows
