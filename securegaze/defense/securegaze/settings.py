"""SecureGaze's settings, its version and its calibrated default threshold."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from securegaze.defense.inputs import check_setting

#: The registry name of the detector (also the name in its progress events and error lines).
DETECTOR_NAME = "securegaze"

#: Bumped whenever a change can move scores or the default threshold: a threshold is valid only for
#: the version it was calibrated on, and audit records of another version are re-scanned.
#: 1.1: the first threshold calibrated on the zoo benchmark (docs/detection.md). 2.0: the score is a
#: ratio of two collapse costs of the same model (see ``reference``), the constraints are trimmed,
#: and a border probe can restart the reversal. 2.1: the probe's best window is refined on its own
#: (``probe_refine_steps``) before its ratio is compared with ``probe_ratio``, now 0.13 (was 0.35).
#: 2.2: ``window_reference`` on: a scan whose kept edit came from the probe's restart compares it with
#: a reference that may start from the same window (benign scores of the threshold calibration
#: unchanged: none of them restarts; its BadNets twins 0.016-0.086). 3.0: the reference is a uniform
#: shift of every output (``reference_kind`` "shift"), which a backdoor cannot make cheaper; threshold
#: recalibrated (benign 0.413-1.774, BadNets twins 0.016-0.070). 3.1: ``probe_interior`` 0.85, a
#: second probe over the quiet interior of the face. 4.0: a shorter budget (``steps`` 200), the shift reference along the clean gazes' main axis
#: (``reference_direction`` "clean_axis": no longer waits for the found target), and the independent
#: runs of a scan side by side on the process's threads (``parallel``); threshold recalibrated.
#: (``universality``, off by default, adds a second statistic, U; it moves no default score, so the
#: version stays: a report made with it on says so in its settings and its ``score_statistic``.)
#: 4.1: the same method, faster: images, model and generator stored channels last when the model
#: allows it (``layout`` module); scores move only as the order of floating-point sums moves them, and
#: the threshold was recalibrated on the same recipes.
#: 4.2: the warp branch (``warp``, on): one smooth displacement field of at most ``warp_budget_frac`` of
#: the side, trained to collapse the outputs; the model is also flagged when the field meets both
#: constraints (``warp`` module). The cost ratio is computed as in 4.1, so its threshold stands.
#: 4.3: ``confirm_seeds`` 2 (was 0, off): a flagged scan is put to the vote of the next two seeds and
#: the model is flagged when most runs flag (``confirm`` module). A single run's cost ratio is computed
#: as in 4.2, so the threshold stands; what moves is the verdict (and the score kept) of a flagged model.
#: 4.4: a flag of the warp branch stands without the vote (its benign fields stay far from the bound, a
#: real warp's near it can miss it at another seed); other scans as in 4.3.
SCANNER_VERSION = "4.4"

#: Default decision threshold on the score (the ratio of the cheapest collapse's cost to the cost of a
#: uniform gaze shift of the same model, since 3.0: unit-free): below it the model is flagged.
#: Calibrated for SCANNER_VERSION 4.1 by benchmarks/calibrate_threshold.py (docs/threshold_calibration.md)
#: on 13 benign models of four recipes that differ in family, renderer style and input size
#: (small_cnn, plain_cnn and a compact resnet18 on easy 32-px faces, plain_cnn on studio faces, three
#: seeds each, and the 128-px default model): benign ratios 0.623-2.326, log mean 0.114, log std
#: 0.390; the 0.1 % quantile of that log-normal is 0.3354 (0.1 %, not 1 %: the ratios are a mixture
#: of family modes). Their BadNets twins scored 0.038-0.132. No model of the cross-family benchmark
#: (docs/detection_cross_family.md) entered the calibration. (4.0: 0.3694 on the same recipes, benign
#: 0.646-2.268, twins 0.028-0.126: the scan is the same method, its optimisation paths moved with the
#: order of floating-point sums; 3.x: 0.1888.)
DEFAULT_THRESHOLD = 0.3354
#: How the default threshold was obtained; scan reports and audit records carry it with the version.
THRESHOLD_CALIBRATION = ("benchmarks/calibrate_threshold.py --seeds 3 --fpr 0.001: 0.1 % quantile of a log-normal "
                         "fitted to 13 benign ratios of collapse to uniform-shift cost (4 recipes: small_cnn, "
                         "plain_cnn, resnet18, studio faces; and the default model)")

#: Default threshold on U, the universal over the per-image collapse bound (``universality``, off by
#: default): with it on, a model is also flagged when U is below this. Calibrated as the cost ratio's
#: is, by benchmarks/universality.py --recipes 3 --default-model --fpr 0.001 (universality_steps 120):
#: the 0.1 % quantile of a log-normal fitted to the 13 benign U of the same recipes and the default
#: model (5.15-15.91; the default model, 128 px, is the lowest). At that level U flags no model of the
#: cross-family zoos that the cost ratio misses (docs/detection_cross_family.md, "U in the scan"),
#: which is why it is off: it costs two more runs per scan for no measured gain yet.
DEFAULT_UNIVERSALITY_THRESHOLD = 3.824
UNIVERSALITY_CALIBRATION = ("benchmarks/universality.py --recipes 3 --default-model --fpr 0.001: 0.1 % quantile of "
                            "a log-normal fitted to 13 benign U (4 recipes and the default model)")

#: What the reference run asks for (``reference_kind``): a uniform shift of every output (3.0) or a
#: collapse onto a reference gaze (2.x).
REFERENCE_KINDS = ("shift", "collapse")
#: Where the shift reference points (``reference_direction``): along the clean gazes' main axis (4.0)
#: or from the found target towards the most central gaze (3.x).
REFERENCE_DIRECTIONS = ("clean_axis", "target")

#: Small constants that keep logarithms and arccos away from their singular points.
_LOG_EPS = 1e-12
#: Bounds of the Lagrange multipliers: a met constraint's multiplier relaxes towards the lower bound
#: but can grow back within ~100 steps; the upper bound stops a hopeless constraint from running away.
_MULTIPLIER_RANGE = (1e-6, 1e4)
#: Pixels are mapped through logit space, clamped this far from 0 and 1 (see TriggerGenerator).
_PIXEL_EPS = 1e-3


@dataclass(frozen=True)
class SecureGazeSettings:
    """Settings of a SecureGaze scan. Ratios are to the model's clean statistics; sizes per pixel in [0, 1].

    * ``steps``, ``batch_size``: optimisation steps of the generator (Adam), clean images per step;
      ``steps`` is 200 since 4.0 (300 before): the reversal is feasible from step 60-80 and a benign
      model's natural collapse is found late, so a shorter cosine schedule stops on a dearer edit for
      benign models more than for backdoored ones (docs/detection_cross_family.md, "Scanner 4.0").
      A restart from a probe's window runs as long: from a window at 0.107 of the clean spread
      (rho_out 0.1), the cross-family plain CNN's glasses-01 became feasible only at step 100, and
      half the budget lost its restart;
      ``lr``: Adam's rate for the generator's network, ``static_lr`` for its static per-pixel map;
    * ``collapse_share``: the share of the images that must collapse: both constraints are measured
      on the ``collapse_share`` of the reversed images closest to their own centre, and compared
      with the same share of the clean images (a trimmed statistic, ``collapse_spread``). A real
      backdoor flips most inputs but not all (ASR 60-95% is common), and an RMS over every image is
      dominated by the few it leaves alone. At 0.6 a backdoor that flips 60% of its inputs meets the
      constraint with its real trigger (and the generator may strengthen a weaker one); at 0.5 the
      collapse found on the tiny test models drifted 7 deg from the backdoor's target (half the
      images collapsing part of the way), at 0.65 it was 4.6 deg off;
    * ``rho_out``: the reversed output spread must fall to this share of the clean one (RMS angle
      to the centre, over the kept share). A working BadNets trigger reaches ~0.05 on our models;
      0.1 leaves a margin;
    * ``rho_feat``: the same for the feature-angle variance. A working BadNets trigger reaches
      0.004-0.009 on direct-regression heads but only ~0.34 on a binned (L2CS-like) head, whose
      softmax decoding collapses the output while the logits still spread; 0.5 admits both;
    * ``constraint_margin``: the optimiser aims at ``constraint_margin`` x rho, so that the iterates
      it settles on meet rho itself when checked;
    * ``initial_multiplier``: starting value of both Lagrange multipliers, relative to the cost
      normalised by the clean images' pixel spread; small, so the edit grows from nothing and the
      cheapest directions are taken first; ``dual_lr``: each step a multiplier is multiplied by
      exp(dual_lr * g), g the constraint's log-ratio violation clipped to [-1, 1]: it grows
      geometrically while violated and relaxes once met (no units; scales of 1e-4..1e2 are reached
      within ~100 steps);
    * ``sensitivity_weighting``: price edits by the model's sensitivity map (off: uniform, the
      ablation); ``sensitivity_samples``: clean images averaged for the map; ``sensitivity_power``:
      the mean gradient magnitude is raised to this power (2: the price grows with the squared
      sensitivity, like a Fisher-information weight; with 1 a benign model's cheapest collapse
      still redraws the irises); ``sensitivity_blur_frac``: Gaussian smoothing sigma as a fraction of the image side;
      ``sensitivity_floor``: lowest weight relative to the mean (edits are never free);
    * ``generator_width``: channels of the generator's first layer;
    * ``eval_every``: steps between checks of both constraints on the evaluation images (the
      cheapest edit that met them is kept); ``eval_samples``: clean images used for those checks and
      for the report;
    * ``collapse_radius_deg``: a reversed-triggered image "collapses" within this angle of the
      recovered target (the ASR@5 deg convention of docs/architecture.md section 5);
    * ``min_clean``: fewest clean images the scan gives a verdict on (fewer: refused, naming the
      number; measured by benchmarks/clean_set_size.py, table in docs/clean_set_size.md);
      ``warn_clean``: below this many the report carries a warning that the verdict rests on few
      images;
    * ``probe``: after the reversal, free the content of a ring along the image border
      (``probe_side_frac`` x S wide), optimise it for ``probe_steps`` steps to collapse
      ``probe_samples`` clean images, then keep one window of the ring at a time; when the best
      window alone brings the trimmed output spread below ``probe_ratio`` of the clean one, run the
      reversal a second time starting from that window and keep the cheaper feasible edit (``probe``
      module: a patch trigger the model ignores on clean faces has no gradient to follow from the
      identity); ``probe_refine_steps``: the best window's content is then optimised alone for this
      many steps before its ratio is taken (it was optimised together with the rest of the ring, and
      on its own it may fall short: on the tiny BadNets test models over 4 training seeds x 3 scan
      seeds the best window reached 0.03-0.54 unrefined and 0.018-0.046 refined, their benign twins
      0.67-0.87 and 0.59-0.79). ``probe_ratio`` 0.13 sits between the refined ratios of the 12
      threshold-calibration pairs (benchmarks/calibrate_threshold.py): BadNets 0.021-0.084 (one
      0.48, a model the reversal flags without a restart), benign 0.205-0.687 (geometric middle of
      0.084 and 0.205). At 0.35 with refinement, 5 of the 12 benign models restarted and their score
      fell (0.93 -> 0.31 the largest move): a refined window of a benign model can steer it part way;
    * ``probe_interior``: above 0, a second probe frees the pixels inside the ring whose sensitivity
      weight is at most this quantile of the map (``probe.quiet_interior``: where the model looks
      least, never the irises) and its best window (at least half in that region) competes with the
      border's for the restart. A trigger on the forehead, a brow or the bridge of the nose (tape,
      glasses) is then reachable the way a corner patch is. 0.85 (3.1): on the cross-family zoos it
      brought the tape and glasses models whose cheapest collapse had been a natural one to 0.09-0.13,
      while no benign CNN restarted (their best interior windows 0.15-0.53 against ``probe_ratio``
      0.13; docs/detection_cross_family.md). 0 turns it off;
    * ``reference``: after the cheapest collapse, run a second, *reference* run with the same price
      and budget, and score the ratio of the two costs. The ratio carries no units of the images or
      the model, so one threshold can serve families and clean sets it was not calibrated on. Off:
      the score is the raw cost (the threshold must then be calibrated for the family, as before 2.0);
    * ``reference_kind``: what the reference run asks for. ``shift`` (3.0): a *uniform shift*, every
      clean image's output moved by the same offset (``reference_distance`` clean RMS dispersions,
      in the direction ``reference_direction`` gives), within ``rho_out`` of the clean spread over the kept
      ``collapse_share``. The price of redirecting every face's gaze: a backdoor cannot make it
      cheaper (its trigger collapses, and a collapse leaves the shifted gazes unmet), so the ratio
      keeps all of a backdoor's cheap collapse. Measured on the cross-family zoos, the shift costs
      0.031-0.046 on every plain, small and residual CNN, benign or backdoored, at 32 and 64 px
      (docs/detection_cross_family.md). ``collapse`` (2.x): a collapse onto a gaze
      ``reference_distance`` dispersions from the found target; a benign model collapses about as
      expensively onto any ordinary gaze, but a backdoor also cheapens collapses onto other gazes
      (the edit can ride its trigger), which gave part of the signal back;
    * ``reference_direction`` (shift only): ``clean_axis`` (4.0): the offset points along the main
      axis of the clean gazes (the first principal direction of their pitch-yaw covariance), towards
      the side where they reach further from their median: a redirection the model gives ordinary
      faces, chosen from the clean outputs alone, so the reference runs beside the reversal instead
      of after it; ``target`` (3.x): from the found target towards the most central gaze;
    * ``parallel``: run the scan's independent runs (reversal, reference, both probes, restarts) side
      by side, one per thread of the process (``torch.get_num_threads()``), each on one torch thread.
      A scan's result is then the same for any thread count (that of a one-thread scan), and on two
      cores it takes about half the time of the runs one after the other. Off: one run after the
      other, each on all threads (the 3.x order);
    * ``window_reference`` (``reference_kind`` collapse only): when the kept edit came from a probe restart, run a second reference
      collapse that starts from the same border window, its content steered onto the reference gaze
      (``probe.steer_window``), and keep the cheaper reference: like with like. A benign model that
      some border patch collapses (a universal adversarial patch: seen on small MobileNets) can
      usually be steered by the same window onto the reference gaze too, a backdoor's patch serves its
      own target. On (2.2): on the threshold calibration's 24 tiny models no benign score moves (none
      restarts) and the BadNets twins stay at 0.016-0.086; on the cross-family MobileNets it clears
      one of two benign models the probe had flagged (docs/detection_cross_family.md);
    * ``shift_window_reference`` (the shift reference, off by default): the same like-with-like for the
      shift: when the kept edit came from a probe restart, a second shift reference starts from the
      same window, its content steered to shift every output by the reference offset, and the cheaper
      feasible reference is kept. Aimed at benign models whose border or interior patch collapses
      the outputs (natural universal patches, measured on the cross-family ResNet-18s); an experiment
      (docs/detection_cross_family.md), not calibrated;
    * ``input_jitter``: the model sees every image of the reversal (clean and reversed) through a small
      random change: a shift of up to ``jitter_shift_frac`` of the image side, a scale within
      ``1 +- jitter_scale``, Gaussian noise ``jitter_noise`` (``jitter`` module). A collapse must then
      survive what a learned trigger survives and faint adversarial noise does not;
      ``jitter_whole_pixels``: shift by whole pixels only, without scale change or resampling (a fine
      checkerboard trigger moves intact). Off by default: an experiment measured by
      benchmarks/scan_variants.py and docs/detection_cross_family.md, not calibrated;
    * ``threshold``: decision threshold on the cost ratio (see ``DEFAULT_THRESHOLD``); ``seed``: all
      randomness (generator initialisation, batch order);
    * ``universality`` (off by default): also measure U (``universality`` module): the smallest per-pixel
      (L-inf) bound at which one additive perturbation shared by every clean face collapses the
      outputs, over the bound at which one perturbation per face does (on the first
      ``universality_faces`` faces). Each tried bound trains its perturbation for
      ``universality_steps`` Adam steps; the bound is bracketed by doubling or halving, then bisected
      ``universality_bisections`` times. A model is flagged when U is below
      ``universality_threshold`` (see ``DEFAULT_UNIVERSALITY_THRESHOLD``) or the cost ratio below
      ``threshold``; the report's score is then min(cost ratio / threshold, U /
      universality_threshold), flagged below 1. Off: the decision on the cost ratio alone. Off by
      default: at a threshold calibrated away from the benchmark zoos it flags nothing the cost ratio
      misses there (docs/detection_cross_family.md, "U in the scan").
    * ``warp`` (on, 4.2): also train one displacement field for every face, ``warp_grid`` control points
      per side upsampled bicubically, its mean length held to ``warp_budget_frac`` of the image side,
      for ``warp_steps`` steps towards the collapse (``warp`` module). A model whose warped outputs meet
      both constraints (``rho_out``, ``rho_feat``) is flagged, whatever its cost ratio; the score is
      then min(cost ratio, threshold x max(warp dispersion ratio / ``rho_out``, warp feature ratio /
      ``rho_feat``)), at or below the threshold exactly when either flags. It runs only where the
      budget is a pixel or more (50 px and up at 2 %): a sub-pixel field mostly blurs, and blur
      alone gathers a small face's outputs; the report says when it did not run
      (docs/detection_cross_family.md, "The warp branch").
    * ``confirm_seeds`` (2; 0 turns it off): when the scan flags the model, scan it again with up to
      ``confirm_seeds`` more seeds (``seed`` + 1, ...: other batch orders, probe subsets and random
      starts on the same clean images) and flag it when more than half of the runs flag, stopping
      once a majority is reached (two of three: a flag the next seed repeats costs one more scan). The
      report is the deciding run's: the flagged run with the highest score or the clean run with the
      lowest (of three, the median score's), with every run's seed, score and verdict in
      ``details.seed_confirmation`` (``confirm`` module). Clean scans cost nothing more. Measured on
      five zoos (docs/detection_cross_family.md, "A flag with another seed"): the seed moves verdicts
      near the line on both sides, natural patches of benign models and, less often, real triggers'
      cheap edits; the vote keeps a flag two starts of three reach (on since 4.3). A flag of the warp
      branch is not voted on (since 4.4: no benign model's field comes near its bound).
    """

    steps: int = 200
    batch_size: int = 32
    lr: float = 2e-3
    static_lr: float = 0.02
    collapse_share: float = 0.6
    rho_out: float = 0.1
    rho_feat: float = 0.5
    constraint_margin: float = 0.8
    initial_multiplier: float = 1e-3
    dual_lr: float = 0.1
    sensitivity_weighting: bool = True
    sensitivity_samples: int = 256
    sensitivity_power: float = 2.0
    sensitivity_blur_frac: float = 0.03
    sensitivity_floor: float = 0.1
    generator_width: int = 16
    eval_every: int = 20
    eval_samples: int = 256
    collapse_radius_deg: float = 5.0
    min_clean: int = 32
    warn_clean: int = 64
    probe: bool = True
    probe_samples: int = 64
    probe_steps: int = 60
    probe_side_frac: float = 0.15
    probe_ratio: float = 0.13
    probe_refine_steps: int = 20
    probe_interior: float = 0.85
    reference: bool = True
    reference_kind: str = "shift"
    reference_distance: float = 1.0
    reference_direction: str = "clean_axis"
    parallel: bool = True
    window_reference: bool = True
    shift_window_reference: bool = False
    input_jitter: bool = False
    jitter_shift_frac: float = 0.025
    jitter_scale: float = 0.03
    jitter_noise: float = 0.01
    jitter_whole_pixels: bool = False
    threshold: float = DEFAULT_THRESHOLD
    universality: bool = False
    universality_steps: int = 120
    universality_bisections: int = 2
    universality_faces: int = 32
    universality_threshold: float = DEFAULT_UNIVERSALITY_THRESHOLD
    warp: bool = True
    warp_grid: int = 16
    warp_budget_frac: float = 0.02
    warp_steps: int = 160
    confirm_seeds: int = 2
    seed: int = 0

    def validate(self, who: str = "securegaze") -> None:
        def whole(value, low, high=None):
            return (isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= low
                    and (high is None or value <= high))

        def number(value, low, high, low_open=True):
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                return False
            value = float(value)
            return math.isfinite(value) and (value > low if low_open else value >= low) and value <= high

        check_setting(who, "steps", whole(self.steps, 1, 1_000_000), "an integer >= 1", self.steps)
        check_setting(who, "batch_size", whole(self.batch_size, 2, 65_536), "an integer >= 2", self.batch_size)
        check_setting(who, "lr", number(self.lr, 0.0, 10.0), "a number in (0, 10]", self.lr)
        check_setting(who, "static_lr", number(self.static_lr, 0.0, 10.0), "a number in (0, 10]", self.static_lr)
        check_setting(who, "collapse_share", number(self.collapse_share, 0.0, 1.0), "a share in (0, 1]",
                      self.collapse_share)
        check_setting(who, "rho_out", number(self.rho_out, 0.0, 1.0, low_open=True) and self.rho_out < 1,
                      "a ratio in (0, 1)", self.rho_out)
        check_setting(who, "rho_feat", number(self.rho_feat, 0.0, 1.0) and self.rho_feat < 1,
                      "a ratio in (0, 1)", self.rho_feat)
        check_setting(who, "constraint_margin", number(self.constraint_margin, 0.0, 1.0), "a ratio in (0, 1]",
                      self.constraint_margin)
        check_setting(who, "initial_multiplier", number(self.initial_multiplier, 0.0, 1e6), "a positive number",
                      self.initial_multiplier)
        check_setting(who, "dual_lr", number(self.dual_lr, 0.0, 10.0), "a number in (0, 10]", self.dual_lr)
        check_setting(who, "sensitivity_weighting", isinstance(self.sensitivity_weighting, bool), "true or false",
                      self.sensitivity_weighting)
        check_setting(who, "sensitivity_samples", whole(self.sensitivity_samples, 1), "an integer >= 1",
                      self.sensitivity_samples)
        check_setting(who, "sensitivity_power", number(self.sensitivity_power, 0.0, 8.0), "a number in (0, 8]",
                      self.sensitivity_power)
        check_setting(who, "sensitivity_blur_frac", number(self.sensitivity_blur_frac, 0.0, 0.5, low_open=False),
                      "a fraction in [0, 0.5]", self.sensitivity_blur_frac)
        check_setting(who, "sensitivity_floor", number(self.sensitivity_floor, 0.0, 1.0, low_open=False),
                      "a number in [0, 1]", self.sensitivity_floor)
        check_setting(who, "generator_width", whole(self.generator_width, 2, 512), "an integer in 2..512",
                      self.generator_width)
        check_setting(who, "eval_every", whole(self.eval_every, 1), "an integer >= 1", self.eval_every)
        check_setting(who, "eval_samples", whole(self.eval_samples, 2), "an integer >= 2", self.eval_samples)
        check_setting(who, "min_clean", whole(self.min_clean, 0, 1_000_000), "an integer >= 0", self.min_clean)
        check_setting(who, "warn_clean", whole(self.warn_clean, 0, 1_000_000), "an integer >= 0", self.warn_clean)
        check_setting(who, "collapse_radius_deg", number(self.collapse_radius_deg, 0.0, 90.0),
                      "an angle in (0, 90] degrees", self.collapse_radius_deg)
        check_setting(who, "probe", isinstance(self.probe, bool), "true or false", self.probe)
        check_setting(who, "probe_samples", whole(self.probe_samples, 2, 65_536), "an integer >= 2",
                      self.probe_samples)
        check_setting(who, "probe_steps", whole(self.probe_steps, 1, 100_000), "an integer >= 1", self.probe_steps)
        check_setting(who, "probe_side_frac", number(self.probe_side_frac, 0.0, 0.5), "a fraction in (0, 0.5]",
                      self.probe_side_frac)
        check_setting(who, "probe_ratio", number(self.probe_ratio, 0.0, 1.0), "a ratio in (0, 1]", self.probe_ratio)
        check_setting(who, "probe_refine_steps", whole(self.probe_refine_steps, 0, 100_000), "an integer >= 0",
                      self.probe_refine_steps)
        check_setting(who, "probe_interior", number(self.probe_interior, 0.0, 1.0, low_open=False) and self.probe_interior < 1,
                      "a quantile in [0, 1) (0: off)", self.probe_interior)
        check_setting(who, "reference", isinstance(self.reference, bool), "true or false", self.reference)
        check_setting(who, "reference_kind", self.reference_kind in REFERENCE_KINDS,
                      f"one of {', '.join(REFERENCE_KINDS)}", self.reference_kind)
        check_setting(who, "reference_distance", number(self.reference_distance, 0.0, 10.0),
                      "a number in (0, 10] (clean RMS dispersions)", self.reference_distance)
        check_setting(who, "reference_direction", self.reference_direction in REFERENCE_DIRECTIONS,
                      f"one of {', '.join(REFERENCE_DIRECTIONS)}", self.reference_direction)
        check_setting(who, "parallel", isinstance(self.parallel, bool), "true or false", self.parallel)
        check_setting(who, "confirm_seeds", whole(self.confirm_seeds, 0, 16), "an integer in 0..16",
                      self.confirm_seeds)
        check_setting(who, "window_reference", isinstance(self.window_reference, bool), "true or false",
                      self.window_reference)
        check_setting(who, "shift_window_reference", isinstance(self.shift_window_reference, bool), "true or false",
                      self.shift_window_reference)
        check_setting(who, "input_jitter", isinstance(self.input_jitter, bool), "true or false", self.input_jitter)
        check_setting(who, "jitter_shift_frac", number(self.jitter_shift_frac, 0.0, 0.25, low_open=False),
                      "a fraction of the image side in [0, 0.25]", self.jitter_shift_frac)
        check_setting(who, "jitter_scale", number(self.jitter_scale, 0.0, 0.5, low_open=False),
                      "a relative scale change in [0, 0.5]", self.jitter_scale)
        check_setting(who, "jitter_noise", number(self.jitter_noise, 0.0, 0.5, low_open=False),
                      "a noise level in [0, 0.5] ([0, 1] pixel units)", self.jitter_noise)
        check_setting(who, "jitter_whole_pixels", isinstance(self.jitter_whole_pixels, bool), "true or false",
                      self.jitter_whole_pixels)
        check_setting(who, "threshold", number(self.threshold, 0.0, 100.0),
                      "a positive score (cost ratio with reference, else perturbation size)", self.threshold)
        check_setting(who, "universality", isinstance(self.universality, bool), "true or false", self.universality)
        check_setting(who, "universality_steps", whole(self.universality_steps, 1, 100_000), "an integer >= 1",
                      self.universality_steps)
        check_setting(who, "universality_bisections", whole(self.universality_bisections, 0, 20),
                      "an integer in 0..20", self.universality_bisections)
        check_setting(who, "universality_faces", whole(self.universality_faces, 2, 65_536), "an integer >= 2",
                      self.universality_faces)
        check_setting(who, "universality_threshold", number(self.universality_threshold, 0.0, 1000.0),
                      "a positive ratio (universal over per-image collapse bound)", self.universality_threshold)
        check_setting(who, "warp", isinstance(self.warp, bool), "true or false", self.warp)
        check_setting(who, "warp_grid", whole(self.warp_grid, 2, 256), "an integer in 2..256", self.warp_grid)
        check_setting(who, "warp_budget_frac", number(self.warp_budget_frac, 0.0, 0.25), "a share of the image side "
                      "in (0, 0.25]", self.warp_budget_frac)
        check_setting(who, "warp_steps", whole(self.warp_steps, 1, 100_000), "an integer >= 1", self.warp_steps)
        check_setting(who, "seed", whole(self.seed, 0), "a non-negative integer", self.seed)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
