"""SecureGaze (Du, Liu, Jia, Lan, SenSys 2025): reverse-engineer a gaze backdoor's trigger function.

The method (docs/architecture.md section 6) rests on two properties of a backdoored gaze model G = H o F:

1. triggered inputs collapse onto one gaze, so the *dispersion* of G over a batch of triggered
   images is near zero (no target needs to be guessed, unlike classification defenses);
2. the backdoor is carried by all feature neurons: triggered features F(x') line up in a narrow cone,
   so the angle between F(x') and each row of H's weight matrix varies little across images.

A generator M (:class:`TriggerGenerator`, a small encoder-decoder that starts as the identity) is
trained with G frozen to find the cheapest edit x' = M(x) that reaches both collapses::

    minimise    cost = mean(w * |M(x) - x|)                     (per pixel and channel, [0, 1] units)
    subject to  spread_q(G(x'))                 <= rho_out^2 * spread_q(G(x))
                feature_angle_variance_q(x')    <= rho_feat  * feature_angle_variance_q(x)

``spread_q`` is a trimmed statistic (:func:`collapse_spread`): the mean squared angle of the
``collapse_share`` (q) of the outputs closest to their own centre, and the feature-angle variance is
taken over the same kept images. A real backdoor flips most inputs but rarely all; over every image,
the few it leaves alone would dominate the dispersion and hide it. Both constraints are ratios to the
model's own clean statistics (written as log-ratios), and the problem is solved as a Lagrangian whose
two multipliers are found by dual ascent on a log scale: each grows geometrically while its
constraint is violated and relaxes once it holds. The multipliers start small, so the edit grows from
nothing along the cheapest directions, and no weight is tuned per model. ``w`` is the model's
sensitivity map (the squared mean input-gradient magnitude over clean images, smoothed, mean 1): a
benign gaze model can be steered by redrawing the irises (a *natural backdoor*), and pricing edits by
how much the model looks there is what keeps benign models from being flagged.

The score is a ratio measured on the suspect model itself. A second, *reference* run solves a
problem that no backdoor makes cheaper: a *uniform shift*, every clean image's output moved by the
same offset (one clean RMS dispersion along the main axis of the clean outputs, scanner 4.0:
:func:`clean_axis_offset`; 3.x pointed it from the found target towards the most central gaze,
:func:`reference_centre`) within the same tolerance (scanner 3.0; ``reference_kind``). It is the price of redirecting every
face's gaze, which the faces' own eyes set; a trigger collapses the outputs and so cannot meet it.
The score is the first cost over the reference cost (inf when the first run met no constraint). A
backdoor's collapse costs a few hundredths of a shift; a benign model's cheapest collapse costs a few
tenths of one or more. The raw cost scales with the images' contrast, the crop and the model family;
the ratio does not, which is what lets one threshold serve models and clean sets it was never
calibrated on. Scanner 2.x used a collapse onto that gaze as the reference (``reference_kind``
collapse): a backdoor cheapens that one too, as its trigger can carry an edit part of the way.

The package, one seam a file: ``settings`` (settings, version, default threshold), ``statistics``
(what the constraints compare), ``generator`` (M and its file), ``sensitivity`` (the price map),
``reversal`` (the optimisation), ``probe`` (the border and interior probes), ``stages`` (the runs
of a scan side by side: the reversal, the reference, the probes and their restarts need not wait for
each other, so each runs on its own thread with one torch thread, and a scan's result is the same for
any thread count), ``universality`` (the optional second statistic U: how much dearer one edit for
every face is than an edit per face, off by default), ``warp`` (the warp branch, 4.2: how far one
small, smooth displacement of every face gathers the outputs; flagged when it meets both constraints),
``detector`` (the scan and its report),
``picture`` (the PNG).
"""

from __future__ import annotations

from securegaze.defense.securegaze.detector import SecureGazeDetector
from securegaze.defense.securegaze.generator import TriggerGenerator, load_generator, save_generator
from securegaze.defense.securegaze.picture import save_trigger_image
from securegaze.defense.securegaze.reversal import TriggerReversal, reverse_trigger
from securegaze.defense.securegaze.sensitivity import sensitivity_map
from securegaze.defense.securegaze.settings import DEFAULT_THRESHOLD, SCANNER_VERSION, SecureGazeSettings
from securegaze.defense.securegaze.statistics import (
    collapse_spread,
    feature_angle_variance,
    feature_angles,
    gaze_dispersion_deg,
    gaze_trace_covariance,
    mean_gaze,
)

__all__ = [
    "DEFAULT_THRESHOLD", "SCANNER_VERSION", "SecureGazeDetector", "SecureGazeSettings", "TriggerGenerator",
    "TriggerReversal", "collapse_spread", "feature_angle_variance", "feature_angles", "gaze_dispersion_deg", "gaze_trace_covariance",
    "load_generator", "mean_gaze", "reverse_trigger", "save_generator", "save_trigger_image", "sensitivity_map",
]
