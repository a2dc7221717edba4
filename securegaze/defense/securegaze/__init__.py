"""SecureGaze (Du, Liu, Jia, Lan, SenSys 2025): reverse-engineer a gaze backdoor's trigger function.

The method (docs/architecture.md section 6) rests on two properties of a backdoored gaze model G = H o F:

1. triggered inputs collapse onto one gaze, so the *dispersion* of G over a batch of triggered
   images is near zero (no target needs to be guessed, unlike classification defenses);
2. the backdoor is carried by all feature neurons: triggered features F(x') line up in a narrow cone,
   so the angle between F(x') and each row of H's weight matrix varies little across images.

A generator M (:class:`TriggerGenerator`, a small encoder-decoder that starts as the identity) is
trained with G frozen to find the cheapest edit x' = M(x) that reaches both collapses::

    minimise    cost = mean(w * |M(x) - x|)                     (per pixel and channel, [0, 1] units)
    subject to  rms_dispersion(G(x'))    <= rho_out  * rms_dispersion(G(x))
                feature_angle_variance(x') <= rho_feat * feature_angle_variance(x)

Both constraints are ratios to the model's own clean statistics (written as log-ratios), and the
problem is solved as a Lagrangian whose two multipliers are found by dual ascent on a log scale: each
grows geometrically while its constraint is violated and relaxes once it holds. The multipliers start
small, so the edit grows from nothing along the cheapest directions, and no weight is tuned per model:
one set of settings serves every architecture and input size. ``w`` is the model's sensitivity map
(the squared mean input-gradient magnitude over clean images, smoothed, mean 1): a benign gaze model
can be steered by redrawing the irises (a *natural backdoor*), and pricing edits by how much the
model looks there is what keeps benign models from being flagged.

The score is the weighted cost of the cheapest edit that met both constraints (inf when none did):
a backdoored model collapses under a small trigger, a benign one needs a large edit.

The package, one seam a file: ``settings`` (settings, version, default threshold), ``statistics``
(what the constraints compare), ``generator`` (M and its file), ``sensitivity`` (the price map),
``reversal`` (the optimisation), ``detector`` (the scan and its report), ``picture`` (the PNG).
"""

from __future__ import annotations

from securegaze.defense.securegaze.detector import SecureGazeDetector
from securegaze.defense.securegaze.generator import TriggerGenerator, load_generator, save_generator
from securegaze.defense.securegaze.picture import save_trigger_image
from securegaze.defense.securegaze.reversal import TriggerReversal, reverse_trigger
from securegaze.defense.securegaze.sensitivity import sensitivity_map
from securegaze.defense.securegaze.settings import DEFAULT_THRESHOLD, SCANNER_VERSION, SecureGazeSettings
from securegaze.defense.securegaze.statistics import (
    feature_angle_variance,
    feature_angles,
    gaze_dispersion_deg,
    gaze_trace_covariance,
    mean_gaze,
)

__all__ = [
    "DEFAULT_THRESHOLD", "SCANNER_VERSION", "SecureGazeDetector", "SecureGazeSettings", "TriggerGenerator",
    "TriggerReversal", "feature_angle_variance", "feature_angles", "gaze_dispersion_deg", "gaze_trace_covariance",
    "load_generator", "mean_gaze", "reverse_trigger", "save_generator", "save_trigger_image", "sensitivity_map",
]
