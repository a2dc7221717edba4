"""Scoring and calibration shared by every detector's benchmark: AUROC, the ROC curve, and the
decision threshold calibrated on benign models' scores.

Scores are compared on the detector's suspicious side: ``"below"`` (SecureGaze: a small edit is
suspicious) or ``"above"`` (an anomaly index). Each detector's threshold is fitted to its own
benign scores on its own side and scale (:func:`fit_threshold`): a log-normal for scores that are
all positive (SecureGaze's cost ratio, which spans orders of magnitude between models), a normal
for scores that can be zero or negative (a MAD anomaly index), and a logit-normal for a share that
cannot leave [0, 1] (ABS's REASR), whose log-normal quantile can land above 1 and flag nothing.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import numpy as np

from securegaze.errors import ConfigError

#: The share of benign models the calibrated threshold may flag, under the fit of the benign scores
#: (the issue's FPR target is 5%; calibrating for 1% leaves room for the fit's error with only a
#: handful of calibration models).
CALIBRATION_FPR = 0.01
#: Fewest benign calibration models: the fit needs a spread estimate.
MIN_CALIBRATION_MODELS = 3
#: How benign scores are modelled: ``"auto"`` picks ``"lognormal"`` when every finite score is
#: positive, else ``"normal"``; ``"logit"`` (a share in [0, 1]) is asked for by the detector.
CALIBRATION_FITS = ("auto", "lognormal", "normal", "logit")
#: A share at 0 or 1 enters a logit fit as this far inside the interval (its logit is finite).
LOGIT_CLIP = 1e-3
FIT_NAMES = {"lognormal": "log-normal", "normal": "normal", "logit": "logit-normal"}


def _logit(scores: np.ndarray) -> np.ndarray:
    share = np.clip(scores, LOGIT_CLIP, 1.0 - LOGIT_CLIP)
    return np.log(share / (1.0 - share))


#: Each fit's map of the scores onto the scale where they are modelled as normal, and back.
SCALES = {"lognormal": (np.log, math.exp), "normal": (lambda s: s, float),
          "logit": (_logit, lambda q: 1.0 / (1.0 + math.exp(-q)))}


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


@dataclass(frozen=True)
class ThresholdFit:
    """A calibrated threshold and how it was obtained.

    ``fit``: ``"lognormal"`` or ``"normal"``; ``centre`` / ``spread``: mean and standard deviation
    (Bessel's correction) of the log scores or of the scores; ``models``: finite benign scores used;
    ``capped``: the fitted quantile would have flagged a benign score seen, so the threshold is that
    score (a "below" threshold is never above the smallest benign score, an "above" one never below
    the largest; the verdict's comparison is strict, so that model is not flagged).
    """

    threshold: float
    fit: str
    suspicious_when: str
    target_fpr: float
    centre: float
    spread: float
    models: int
    capped: bool

    def describe(self) -> str:
        """One phrase for tables, e.g. ``"log-normal fit of 3 benign scores, 1% quantile below"``."""
        name = FIT_NAMES[self.fit]
        capped = ", capped at the extreme benign score" if self.capped else ""
        return (f"{name} fit of {self.models} benign scores, {100 * self.target_fpr:g}% quantile "
                f"{self.suspicious_when}{capped}")


def fit_threshold(benign_scores, target_fpr: float = CALIBRATION_FPR, suspicious_when: str = "below",
                  fit: str = "auto") -> ThresholdFit:
    """The threshold that flags a ``target_fpr`` share of benign models, from benign scores alone.

    The finite benign scores are modelled as normal (``fit="normal"``) or their logarithms are
    (``"lognormal"``, which needs every finite score positive; ``"auto"`` picks it when they are and
    the normal fit otherwise). The threshold is the fit's ``target_fpr`` quantile on the suspicious
    side (``"below"``: mean - z * std; ``"above"``: mean + z * std; z the normal quantile of
    1 - ``target_fpr``) and never flags a benign score seen (see :class:`ThresholdFit`'s ``capped``).
    Non-finite scores are left out of the fit: an infeasible "below" scan (inf) is the most benign
    outcome and only enters through the cap's absence. Raises ConfigError with fewer than
    ``MIN_CALIBRATION_MODELS`` finite scores, a bad side or fit, a log-normal fit of a score <= 0 or
    a logit fit of a score outside [0, 1].

    ``"logit"`` models the scores' logits as normal: for a share in [0, 1] (an attack success
    rate), whose benign values crowd towards 1, the quantile stays inside the interval. Shares at 0
    or 1 are moved ``LOGIT_CLIP`` inside it; a score outside [0, 1] is a ConfigError.
    """
    if suspicious_when not in ("below", "above"):
        raise ConfigError(f"suspicious_when must be 'below' or 'above', got {suspicious_when!r}")
    if fit not in CALIBRATION_FITS:
        raise ConfigError(f"calibration fit must be one of {', '.join(CALIBRATION_FITS)}, got {fit!r}")
    scores = np.asarray(benign_scores, dtype=np.float64)
    finite = scores[np.isfinite(scores)]
    if len(finite) < MIN_CALIBRATION_MODELS:
        raise ConfigError(
            f"calibration needs at least {MIN_CALIBRATION_MODELS} benign models with a finite score, got "
            f"{len(finite)} of {len(scores)}; build a larger calibration zoo"
        )
    if not 0.0 < target_fpr < 0.5:
        raise ConfigError(f"target_fpr must be inside (0, 0.5), got {target_fpr}")
    positive = bool((finite > 0).all())
    if fit == "auto":
        fit = "lognormal" if positive else "normal"
    if fit == "lognormal" and not positive:
        raise ConfigError(f"a log-normal calibration needs positive scores, got {float(finite.min()):g}")
    if fit == "logit" and not bool(((finite >= 0) & (finite <= 1)).all()):
        raise ConfigError(f"a logit calibration needs scores in [0, 1] (a share), got "
                          f"{float(finite[(finite < 0) | (finite > 1)][0]):g}")
    to_normal, from_normal = SCALES[fit]
    values = to_normal(finite)
    centre, spread = float(values.mean()), float(values.std(ddof=1))
    z = statistics.NormalDist().inv_cdf(1.0 - target_fpr)
    threshold = from_normal(centre - z * spread if suspicious_when == "below" else centre + z * spread)
    if suspicious_when == "below":
        capped, threshold = threshold > finite.min(), min(threshold, float(finite.min()))
    else:
        capped, threshold = threshold < finite.max(), max(threshold, float(finite.max()))
    return ThresholdFit(float(threshold), fit, suspicious_when, float(target_fpr), centre, spread, len(finite),
                        bool(capped))


def calibrate_threshold(benign_scores, target_fpr: float = CALIBRATION_FPR, suspicious_when: str = "below",
                        fit: str = "auto") -> float:
    """The threshold of :func:`fit_threshold` alone.

    SecureGaze's score (a "below" cost ratio, positive) gets the log-normal fit: exp(mean - z * std) of
    the log scores, never above the smallest benign score seen (its default 0.3354 is this at 0.1 %).
    """
    return fit_threshold(benign_scores, target_fpr, suspicious_when, fit).threshold
