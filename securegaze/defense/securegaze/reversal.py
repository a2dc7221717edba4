"""The reverse-engineering of a trigger function: set up, step, keep the cheapest feasible generator.

:func:`reverse_trigger` trains a :class:`TriggerGenerator` against a frozen model on clean images
(the problem is in the package docstring). A :class:`ReversalRun` holds one run's state: its setup
(evaluation subset, sensitivity weights, clean statistics, optimiser), one optimisation ``step``, a
``check`` of both constraints that keeps the cheapest generator meeting them, and the ``finish`` that
measures the kept generator for the report.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from securegaze.defense.base import ProgressCallback, ScanProgress
from securegaze.defense.securegaze.generator import TriggerGenerator
from securegaze.defense.securegaze.jitter import InputJitter
from securegaze.defense.securegaze.layout import memory_format
from securegaze.defense.securegaze.probe import ProbeResult
from securegaze.defense.securegaze.sensitivity import sensitivity_map
from securegaze.defense.securegaze.settings import DETECTOR_NAME, SecureGazeSettings
from securegaze.defense.securegaze.statistics import (
    check_finite_gaze,
    collapse_spread,
    feature_angle_variance,
    gaze_dispersion_deg,
    gaze_trace_covariance,
    shift_spread,
)
from securegaze.errors import ModelFormatError
from securegaze.geometry import angular_error_deg, pitchyaw_to_vector_torch, vector_to_pitchyaw

#: Small constant that keeps logarithms away from their singular point.
LOG_EPS = 1e-12
#: Bounds of the Lagrange multipliers: a met constraint's multiplier relaxes towards the lower bound
#: but can grow back within ~100 steps; the upper bound stops a hopeless constraint from running away.
MULTIPLIER_RANGE = (1e-6, 1e4)
#: Seed stream of a run's evaluation subset and batch order (with the settings' seed).
BATCH_STREAM = 0x5ECA


@dataclass
class TriggerReversal:
    """The outcome of reverse-engineering one model's trigger function.

    ``generator``: the cheapest generator that met both constraints (the last one if none did);
    ``weights``: the sensitivity map used as per-pixel price, (S, S) mean 1; ``cost``: its weighted
    mean |x' - x| on the evaluation images ([0, 1] units); ``steps_to_feasible``: first step at which
    an evaluation met both constraints; ``centre``: the prescribed gaze of a reference run (None: the
    collapse was free to choose its target). ``dispersion_ratio`` is the trimmed ratio the constraint
    compares (:func:`collapse_spread`), ``rms_dispersion_ratio`` the same over every image. The
    remaining fields are the statistics of the scan report, computed on the evaluation images.
    """

    generator: TriggerGenerator
    weights: torch.Tensor
    constraints_met: bool
    cost: float
    steps_to_feasible: int | None
    target_gaze: tuple[float, float]
    collapsed_share: float
    clean_dispersion_deg: float
    reversed_dispersion_deg: float
    dispersion_ratio: float
    rms_dispersion_ratio: float
    feature_angle_variance_clean: float
    feature_angle_variance_reversed: float
    feature_variance_ratio: float
    perturbation_l1: float
    multipliers: tuple[float, float]
    eval_images: torch.Tensor
    clean_count: int
    clean_gaze: np.ndarray
    clean_trace: float
    centre: tuple[float, float] | None = None
    #: The (pitch, yaw) radian offset of a uniform-shift run (every output moved by it), else None.
    shift: tuple[float, float] | None = None
    reference: TriggerReversal | None = None
    probe: ProbeResult | None = None
    restarted: bool = False
    #: Wall seconds of each part of the scan (filled by the detector: reverse, probe, restart, reference).
    stage_seconds: dict = field(default_factory=dict)
    #: The universality statistic's record (``universality`` module), when the scan measured it.
    universality: dict | None = None
    #: The warp branch's result (``warp`` module, a ``WarpSearch``), when the scan ran it.
    warp: object | None = None

    @property
    def score(self) -> float:
        """inf when no edit met the constraints; else the cost, as a ratio to the reference run's
        cost when there is one (that run's last cost if it never met them: the ratio then errs
        towards "clean")."""
        if not self.constraints_met:
            return math.inf
        if self.reference is None:
            return self.cost
        return self.cost / max(self.reference.cost, LOG_EPS)


class FrozenModel:
    """Context manager: eval mode and no parameter gradients for the scan; restores both afterwards."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __enter__(self) -> nn.Module:
        self.training = self.model.training
        self.flags = [p.requires_grad for p in self.model.parameters()]
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        return self.model

    def __exit__(self, *exc) -> None:
        for p, flag in zip(self.model.parameters(), self.flags, strict=True):
            p.requires_grad_(flag)
        self.model.train(self.training)


def model_device(model: nn.Module) -> torch.device:
    """The device of the module's first parameter or buffer (CPU for a module without any)."""
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return torch.device("cpu")


def forward_chunks(model, x: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(features, gaze) of ``x`` in chunks of ``batch_size``."""
    zs, gs = [], []
    for start in range(0, len(x), batch_size):
        z = model.features(x[start:start + batch_size])
        zs.append(z)
        gs.append(model.head(z))
    return torch.cat(zs), torch.cat(gs)


@dataclass(frozen=True)
class Evaluation:
    """A generator measured on the evaluation images: weighted cost, plain L1, both constraint ratios
    (``spread_ratio`` trimmed, :func:`collapse_spread`; ``trace_ratio`` over every image)."""

    cost: float
    l1: float
    spread_ratio: float
    trace_ratio: float
    feature_ratio: float
    target: np.ndarray
    gaze: np.ndarray
    feature_variance: float


class ReversalRun:
    """One reverse-engineering run against a frozen ``model`` on clean images ``x_all`` (N, 3, S, S).

    ``centre``: a (pitch, yaw) radian gaze the collapse must land on (the reference run); None lets
    the collapse choose its target. ``weights``: a sensitivity map to reuse ((S, S), mean 1), else it
    is computed. ``stage``: the name of the optimisation steps in progress events. ``static_init``:
    a (1, 3, S, S) logit-space edit the generator's static map starts from (a restart from a probed
    patch, :mod:`~securegaze.defense.securegaze.probe`); None starts at the identity.

    ``shift``: a (pitch, yaw) radian offset; the run then asks for a *uniform shift* instead of a
    collapse: every image's output must move by that offset from its own clean output, within
    ``rho_out`` of the clean spread, over the kept ``collapse_share`` (no feature constraint). A
    collapse cannot meet it (the shifted gazes are as spread as the clean ones), so a backdoor's
    trigger does not make it cheaper: it is the price of redirecting every face's gaze, the scale the
    scanner's score divides by (``reference_kind`` "shift").
    """

    def __init__(self, model, x_all: torch.Tensor, settings: SecureGazeSettings,
                 progress: ProgressCallback | None = None, centre: tuple[float, float] | None = None,
                 weights: torch.Tensor | None = None, stage: str = "reverse",
                 static_init: torch.Tensor | None = None, shift: tuple[float, float] | None = None) -> None:
        cfg = self.config = settings
        if centre is not None and shift is not None:
            raise ValueError("a reversal run has a centre or a shift, not both")
        self.shift = None if shift is None else torch.tensor([float(shift[0]), float(shift[1])])
        self.model, self.x_all, self.progress, self.stage = model, x_all, progress, stage
        self.centre = None if centre is None else torch.tensor([float(centre[0]), float(centre[1])])
        device = x_all.device
        size = x_all.shape[-1]
        self.rng = np.random.default_rng([cfg.seed, BATCH_STREAM])
        # Evaluation images: a fixed, seeded subset, so constraint checks and the report compare like
        # with like across steps.
        eval_idx = np.sort(self.rng.permutation(len(x_all))[: cfg.eval_samples])
        self.x_eval = x_all[torch.as_tensor(eval_idx, device=x_all.device)]
        self.head_weight = model.head_weight().detach()

        if weights is None:
            if cfg.sensitivity_weighting:
                weights = sensitivity_map(model, x_all, cfg, progress)
            else:
                weights = torch.ones(size, size)
        self.weights = weights.to(device).view(1, 1, size, size)

        # With input_jitter the model sees every image (clean or reversed) through a small random change
        # (jitter module); measurements use one fixed change per evaluation image.
        self.jitter = (InputJitter(cfg.jitter_shift_frac, cfg.jitter_scale, cfg.jitter_noise, cfg.seed,
                                   whole_pixels=cfg.jitter_whole_pixels) if cfg.input_jitter else None)
        with torch.no_grad():
            z_clean, g_clean = forward_chunks(model, self.measured(self.x_eval), cfg.batch_size)
        check_finite_gaze(g_clean, "clean images")
        self.clean_gaze = g_clean
        self.clean_trace = gaze_trace_covariance(g_clean).item()
        if self.shift is not None:
            # Where every image's output must go: its own clean output plus the offset (the evaluation
            # images' as the measurements see them).
            self.shift = self.shift.to(device=device, dtype=g_clean.dtype)
            with torch.no_grad():
                self.shifted_all = forward_chunks(model, x_all, cfg.batch_size)[1] + self.shift
            self.shifted_eval = g_clean + self.shift
        # Both constraints compare the kept share of the reversed images with the kept share of the
        # clean ones (the clean images closest to their own densest gaze), like with like.
        spread, kept = collapse_spread(g_clean, cfg.collapse_share)
        self.clean_spread = spread.item()
        self.clean_fav = feature_angle_variance(z_clean[kept], self.head_weight).item()
        if self.clean_trace < 1e-10 or self.clean_spread < 1e-12:
            raise ModelFormatError(
                "securegaze: the model predicts the same gaze for every clean image (no output dispersion); "
                "it is broken or the clean images are all the same"
            )
        if self.clean_fav < 1e-12:
            raise ModelFormatError(
                "securegaze: the model's features make the same angles with H's weights on every clean image; "
                "check that the F/H split (feature_split in the bundle manifest) is the penultimate layer"
            )
        # Cost normalisation: the natural variation of the clean pixels (mean absolute deviation from
        # the mean image). The score itself stays in raw [0, 1] units; this only sets the scale of the
        # cost against the constraints (unitless log-ratios) so it is the same for every dataset.
        self.pixel_scale = max((x_all - x_all.mean(0, keepdim=True)).abs().mean().item(), 1e-3)
        # The optimiser aims a little inside the constraints (constraint_margin x rho): a Lagrangian
        # method settles on the boundary of what it aims at, and the checks on the evaluation images
        # would then fail half the time; the decision still uses rho itself.
        self.log_rho = torch.tensor([math.log(cfg.rho_out * cfg.constraint_margin),
                                     math.log(cfg.rho_feat * cfg.constraint_margin)], device=device)

        self.generator = TriggerGenerator(size, cfg.generator_width, seed=cfg.seed).to(device, memory_format=memory_format(x_all))
        if static_init is not None:
            with torch.no_grad():
                self.generator.static.copy_(static_init.to(device))
        # Adam's first steps move every weight by about lr at once, and through five convolutions that
        # compounds into edits that saturate the image (and then gradients vanish); the network
        # therefore gets a small rate, the static map (one logit per pixel, nothing compounds) a larger one.
        network = [p for name, p in self.generator.named_parameters() if name != "static"]
        self.optimizer = torch.optim.Adam([{"params": network, "lr": cfg.lr},
                                           {"params": [self.generator.static], "lr": cfg.static_lr}])
        # Cosine decay to a tenth: late steps refine the cheapest edit instead of adding Adam's
        # step-sized jitter to every pixel (which an L1 cost counts).
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda k: 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(k, cfg.steps) / cfg.steps)))
        self.multipliers = torch.full((2,), float(cfg.initial_multiplier), device=device)
        self.best_state, self.best_cost, self.first_feasible = None, math.inf, None
        self.batch = min(cfg.batch_size, len(x_all))

    def step(self, step: int) -> None:
        """One step of the Lagrangian: a generator update on a batch, then the multipliers' dual update."""
        cfg, model = self.config, self.model
        idx = torch.as_tensor(np.sort(self.rng.choice(len(self.x_all), size=self.batch, replace=False)),
                              device=self.x_all.device)
        x = self.x_all[idx]
        x_rev = self.generator(x)
        cost = (self.weights * (x_rev - x).abs()).mean()
        z = model.features(x_rev if self.jitter is None else self.jitter.random(x_rev))
        gaze = model.head(z)
        check_finite_gaze(gaze, "reversed-triggered images")
        # Constraint values as log-ratios to the clean statistics: g <= 0 means satisfied. The
        # dispersion uses the square root of the trimmed spread (an RMS angle) so rho_out is a ratio
        # of angles; the feature variance is taken over the same kept images.
        if self.shift is not None:
            # A uniform shift has one constraint (the outputs' distance to their shifted clean
            # outputs); the feature term is held at its aim, so its violation is zero.
            spread, _ = shift_spread(gaze, self.shifted_all[idx], cfg.collapse_share)
            violation = torch.stack([0.5 * torch.log((spread + LOG_EPS) / self.clean_spread), self.log_rho[1]])
        else:
            spread, kept = collapse_spread(gaze, cfg.collapse_share, self.centre)
            violation = torch.stack([
                0.5 * torch.log((spread + LOG_EPS) / self.clean_spread),
                torch.log((feature_angle_variance(z[kept], self.head_weight) + LOG_EPS) / self.clean_fav),
            ])
        violation = violation - self.log_rho
        # Lagrangian with multipliers found by (multiplicative) dual ascent: the price of each
        # constraint is set by the optimisation itself, not tuned per model.
        loss = cost / self.pixel_scale + (self.multipliers * violation).sum()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.schedule.step()
        with torch.no_grad():
            # Geometric steps: the right multiplier spans orders of magnitude between models (it is
            # the marginal cost of collapsing further), so it is searched on a log scale.
            step_size = cfg.dual_lr * violation.detach().clamp(-1.0, 1.0)
            self.multipliers = (self.multipliers * torch.exp(step_size)).clamp(*MULTIPLIER_RANGE)
        if self.progress:
            self.progress(ScanProgress(DETECTOR_NAME, self.stage, step, cfg.steps, {
                "cost": cost.item(), "dispersion_violation": violation[0].item(),
                "feature_violation": violation[1].item(), "lambda_dispersion": self.multipliers[0].item(),
                "lambda_feature": self.multipliers[1].item(),
            }))

    def check(self, step: int) -> None:
        """Measure both constraints on the evaluation images; keep the generator if it is the cheapest
        that meets them (at ``rho`` itself, not the optimiser's aim inside it)."""
        cfg = self.config
        result = self.evaluate()
        if self.progress:
            self.progress(ScanProgress(DETECTOR_NAME, "evaluate", step, cfg.steps, {
                "cost": result.cost, "dispersion_ratio": math.sqrt(result.spread_ratio),
                "feature_variance_ratio": result.feature_ratio,
            }))
        feasible = (0.5 * math.log(max(result.spread_ratio, LOG_EPS)) <= math.log(cfg.rho_out)
                    and (self.shift is not None or result.feature_ratio <= cfg.rho_feat))
        if feasible:
            self.first_feasible = self.first_feasible or step
            if result.cost < self.best_cost:
                self.best_cost = result.cost
                self.best_state = copy.deepcopy(self.generator.state_dict())

    def measured(self, x_eval: torch.Tensor) -> torch.Tensor:
        """Evaluation images as the model sees them in a measurement (the fixed jitter, if any)."""
        return x_eval if self.jitter is None else self.jitter.fixed(x_eval)

    @torch.no_grad()
    def evaluate(self) -> Evaluation:
        """The current generator on the evaluation images (eval mode; its mode is restored)."""
        generator, batch_size = self.generator, self.config.batch_size
        was_training = generator.training
        generator.eval()
        costs, l1s, reversed_images = [], [], []
        for start in range(0, len(self.x_eval), batch_size):
            x = self.x_eval[start:start + batch_size]
            x_rev = generator(x)
            diff = (x_rev - x).abs()
            costs.append((self.weights * diff).mean(dim=(1, 2, 3)))
            l1s.append(diff.mean(dim=(1, 2, 3)))
            reversed_images.append(x_rev)
        generator.train(was_training)
        z, gaze = forward_chunks(self.model, self.measured(torch.cat(reversed_images)), batch_size)
        check_finite_gaze(gaze, "reversed-triggered images")
        if self.shift is not None:
            spread, kept = shift_spread(gaze, self.shifted_eval, self.config.collapse_share)
        else:
            spread, kept = collapse_spread(gaze, self.config.collapse_share, self.centre)
        fav = feature_angle_variance(z[kept], self.head_weight).item()
        if self.centre is not None:
            target = self.centre.double().numpy()
        else:
            target = vector_to_pitchyaw(pitchyaw_to_vector_torch(gaze[kept].double()).mean(0).cpu().numpy())
        return Evaluation(
            cost=torch.cat(costs).mean().item(), l1=torch.cat(l1s).mean().item(),
            spread_ratio=spread.item() / self.clean_spread,
            trace_ratio=gaze_trace_covariance(gaze).item() / self.clean_trace, feature_ratio=fav / self.clean_fav,
            gaze=gaze.double().cpu().numpy(), feature_variance=fav, target=np.asarray(target, dtype=np.float64),
        )

    def finish(self) -> TriggerReversal:
        """The kept generator (the last one if none met the constraints), measured for the report."""
        cfg, generator = self.config, self.generator
        if self.best_state is not None:
            generator.load_state_dict(self.best_state)
        generator.eval()
        final = self.evaluate()
        clean_gaze = self.clean_gaze.double().cpu().numpy()
        target = final.target
        to_target = angular_error_deg(final.gaze, np.broadcast_to(target, final.gaze.shape))
        return TriggerReversal(
            generator=generator,
            weights=self.weights[0, 0].detach().cpu(),
            constraints_met=self.best_state is not None,
            cost=final.cost,
            steps_to_feasible=self.first_feasible,
            target_gaze=(float(target[0]), float(target[1])),
            collapsed_share=float((to_target <= cfg.collapse_radius_deg).mean()),
            clean_dispersion_deg=gaze_dispersion_deg(clean_gaze),
            reversed_dispersion_deg=gaze_dispersion_deg(final.gaze),
            dispersion_ratio=math.sqrt(final.spread_ratio),
            rms_dispersion_ratio=math.sqrt(final.trace_ratio),
            feature_angle_variance_clean=self.clean_fav,
            feature_angle_variance_reversed=final.feature_variance,
            feature_variance_ratio=final.feature_ratio,
            perturbation_l1=final.l1,
            multipliers=(float(self.multipliers[0]), float(self.multipliers[1])),
            eval_images=self.x_eval.detach().cpu(),
            clean_count=int(len(self.x_all)),
            clean_gaze=clean_gaze,
            clean_trace=self.clean_trace,
            centre=None if self.centre is None else (float(self.centre[0]), float(self.centre[1])),
            shift=None if self.shift is None else (float(self.shift[0]), float(self.shift[1])),
        )


def reverse_trigger(model, x_all: torch.Tensor, settings: SecureGazeSettings,
                    progress: ProgressCallback | None = None, centre: tuple[float, float] | None = None,
                    weights: torch.Tensor | None = None, stage: str = "reverse",
                    static_init: torch.Tensor | None = None, shift: tuple[float, float] | None = None) -> TriggerReversal:
    """Run the reverse-engineering for ``settings.steps`` steps, checking every ``eval_every``
    (arguments as :class:`ReversalRun`)."""
    run = ReversalRun(model, x_all, settings, progress, centre=centre, weights=weights, stage=stage,
                      static_init=static_init, shift=shift)
    for step in range(1, settings.steps + 1):
        run.step(step)
        if step % settings.eval_every == 0 or step == settings.steps:
            run.check(step)
    return run.finish()


#: Directions tried around the found target when placing the reference gaze.
REFERENCE_DIRECTIONS = 16


def reference_centre(target: tuple[float, float], clean_gaze: np.ndarray, distance: float) -> tuple[float, float]:
    """The gaze the reference collapse must land on, (pitch, yaw) radians.

    It lies ``distance`` radians (in pitch-yaw) from the found ``target``, in whichever of
    ``REFERENCE_DIRECTIONS`` directions is most central to the clean gazes (smallest mean angle to
    them), so it is a gaze the model gives to ordinary faces, and far enough from the target that a
    backdoor's collapse does not serve it.
    """
    angles = 2 * np.pi * np.arange(REFERENCE_DIRECTIONS) / REFERENCE_DIRECTIONS
    candidates = np.asarray(target, np.float64)[None] + distance * np.stack([np.cos(angles), np.sin(angles)], 1)
    clean = np.asarray(clean_gaze, np.float64)
    centrality = [angular_error_deg(clean, np.broadcast_to(c, clean.shape)).mean() for c in candidates]
    best = candidates[int(np.argmin(centrality))]
    return float(best[0]), float(best[1])
