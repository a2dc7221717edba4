"""Scoring and calibration shared by every detector's benchmark: AUROC, the ROC curve, and the
decision threshold calibrated on benign models' scores.

Scores are compared on the detector's suspicious side: ``"below"`` (SecureGaze: a small edit is
suspicious) or ``"above"`` (an anomaly index).
"""

from __future__ import annotations

import math
import statistics

import numpy as np

from securegaze.errors import ConfigError

#: The share of benign models the calibrated threshold may flag, under a log-normal fit of the
#: benign scores (the issue's FPR target is 5%; calibrating for 1% leaves room for the fit's error
#: with only a handful of calibration models).
CALIBRATION_FPR = 0.01
#: Fewest benign calibration models: the log-normal fit needs a spread estimate.
MIN_CALIBRATION_MODELS = 3


def _suspicion(scores, suspicious_when: str) -> np.ndarray:
    """Scores turned into "higher is more suspicious" (inf, an infeasible scan, is least suspicious)."""
    s = np.asarray(scores, dtype=np.float64)
    return -s if suspicious_when == "below" else s


def auroc(backdoored_scores, benign_scores, suspicious_when: str = "below") -> float:
    """Area under the ROC curve: the chance a backdoored model looks more suspicious than a benign one.

    Ties count one half (the Mann-Whitney U statistic divided by n_pos x n_neg); nan when either set
    is empty.
    """
    pos = _suspicion(backdoored_scores, suspicious_when)
    neg = _suspicion(benign_scores, suspicious_when)
    if len(pos) == 0 or len(neg) == 0:
        return math.nan
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def roc_curve(backdoored_scores, benign_scores, suspicious_when: str = "below") -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) points, from (0, 0) to (1, 1), sweeping the threshold over every observed score."""
    pos = _suspicion(backdoored_scores, suspicious_when)
    neg = _suspicion(benign_scores, suspicious_when)
    cuts = np.unique(np.concatenate([pos, neg]))[::-1]
    fpr = [0.0] + [float((neg >= c).mean()) if len(neg) else 0.0 for c in cuts]
    tpr = [0.0] + [float((pos >= c).mean()) if len(pos) else 0.0 for c in cuts]
    return np.asarray(fpr + [1.0]), np.asarray(tpr + [1.0])


def calibrate_threshold(benign_scores, target_fpr: float = CALIBRATION_FPR) -> float:
    """Threshold on a "below" score from benign models alone: the ``target_fpr`` quantile of a log-normal.

    SecureGaze's score is a perturbation size, positive and spread over orders of magnitude between
    models, so its logarithm is modelled as normal: threshold = exp(mean - z * std) of the log scores
    (z the normal quantile of 1 - ``target_fpr``, std with Bessel's correction), and never above the
    smallest benign score seen. Infeasible scans (score inf: no small edit collapsed the model) are
    the most benign outcome; they only enter through that cap's absence. Raises ConfigError with
    fewer than ``MIN_CALIBRATION_MODELS`` finite scores.
    """
    scores = np.asarray(benign_scores, dtype=np.float64)
    finite = scores[np.isfinite(scores) & (scores > 0)]
    if len(finite) < MIN_CALIBRATION_MODELS:
        raise ConfigError(
            f"calibration needs at least {MIN_CALIBRATION_MODELS} benign models with a finite score, got "
            f"{len(finite)} of {len(scores)}; build a larger calibration zoo"
        )
    if not 0.0 < target_fpr < 0.5:
        raise ConfigError(f"target_fpr must be inside (0, 0.5), got {target_fpr}")
    logs = np.log(finite)
    z = statistics.NormalDist().inv_cdf(1.0 - target_fpr)
    threshold = math.exp(float(logs.mean() - z * logs.std(ddof=1)))
    return min(threshold, float(finite.min()))
