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
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as nnf

from securegaze.defense.base import (
    Detector,
    ProgressCallback,
    ScanProgress,
    ScanReport,
    check_gaze_model,
    check_setting,
    clean_tensor,
    decide,
)
from securegaze.errors import ConfigError, InputFileError, ModelFormatError
from securegaze.geometry import angular_error_deg, pitchyaw_to_vector_torch, vector_to_pitchyaw
from securegaze.models.feature_geometry import feature_angle_variance, feature_angles  # noqa: F401

#: Bumped whenever a change can move scores or the default threshold: a threshold is valid only for
#: the version it was calibrated on, and audit records of another version are re-scanned.
#: 1.1: the first threshold calibrated on the zoo benchmark (docs/detection.md).
SCANNER_VERSION = "1.1"

#: Default decision threshold on the score (weighted mean |x' - x| per pixel and channel, [0, 1]
#: units, sensitivity map of mean 1): below it the model is flagged. Calibrated for SCANNER_VERSION
#: 1.1 on the 5 benign models of a calibration zoo (small CNN, 64 px, standard synthetic faces,
#: seeds other than the scored zoo's; scores 0.029-0.047) as the 1% quantile of a log-normal fit
#: (securegaze.defense.benchmark.calibrate_threshold): `securegaze bench detect`, docs/detection.md.
#: Scores scale with the images and the model family: recalibrate for another family (the same
#: command on a zoo of it) and pass ``threshold=``.
DEFAULT_THRESHOLD = 0.02447

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
      ``lr``: Adam's rate for the generator's network, ``static_lr`` for its static per-pixel map;
    * ``rho_out``: the reversed output dispersion must fall to this share of the clean one (RMS angle
      to the mean gaze). A working BadNets trigger reaches ~0.05 on our models; 0.1 leaves a margin;
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
    * ``threshold``: decision threshold on the score (see ``DEFAULT_THRESHOLD``); ``seed``: all
      randomness (generator initialisation, batch order).
    """

    steps: int = 300
    batch_size: int = 32
    lr: float = 2e-3
    static_lr: float = 0.02
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
    threshold: float = DEFAULT_THRESHOLD
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
        check_setting(who, "collapse_radius_deg", number(self.collapse_radius_deg, 0.0, 90.0),
                      "an angle in (0, 90] degrees", self.collapse_radius_deg)
        check_setting(who, "threshold", number(self.threshold, 0.0, 1.0), "a perturbation size in (0, 1]",
                      self.threshold)
        check_setting(who, "seed", whole(self.seed, 0), "a non-negative integer", self.seed)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- the statistics both constraints compare -----------------------------------------------------


def gaze_trace_covariance(gaze: torch.Tensor) -> torch.Tensor:
    """Trace of the covariance of the unit gaze vectors, 1 - |mean vector|^2; (N, 2) radians -> scalar.

    About the mean squared angle (rad^2) to the mean gaze for small spreads; smooth everywhere,
    unlike an arccos, so it is what the optimiser sees.
    """
    vectors = pitchyaw_to_vector_torch(gaze)
    return (vectors - vectors.mean(0, keepdim=True)).pow(2).sum(-1).mean()


def mean_gaze(gaze: np.ndarray) -> np.ndarray:
    """(N, 2) radians -> (2,) radians: the direction of the mean unit gaze vector."""
    vectors = pitchyaw_to_vector_torch(torch.as_tensor(gaze, dtype=torch.float64)).numpy()
    return vector_to_pitchyaw(vectors.mean(0))


def gaze_dispersion_deg(gaze: np.ndarray) -> float:
    """Mean angle, degrees, between each (N, 2) radian prediction and the batch's mean gaze."""
    return float(angular_error_deg(gaze, np.broadcast_to(mean_gaze(gaze), np.shape(gaze))).mean())


# --- the trigger generator -----------------------------------------------------------------------


class TriggerGenerator(nn.Module):
    """M: (N, 3, S, S) float in [0, 1] -> same; exactly the identity until trained.

    Two parts add a residual ``r`` in logit space: a small U-Net-like encoder-decoder that sees the
    image plus two coordinate channels (so it can place an edit at a fixed spot, as a patch trigger
    is, or follow the face) and runs at half resolution, its full-resolution output unfolded by a
    pixel shuffle (the scan's cost is the model's, not the generator's); and a static per-pixel map
    for edits that are the same on every image. Then
    ``x' = x + sigmoid(logit(x_c) + r) - sigmoid(logit(x_c))`` with ``x_c = clamp(x, 1e-3, 1 - 1e-3)``,
    so x' stays in [0, 1] (up to 1e-3, clipped) without a hard clip that would stop gradients, and
    r = 0 gives x' = x exactly. The last
    convolution and the static map start at zero, hence the identity at initialisation.
    """

    def __init__(self, input_size: int, width: int = 16, seed: int = 0) -> None:
        super().__init__()
        self.input_size = int(input_size)
        self.width = int(width)
        w = self.width
        self.enc1 = nn.Conv2d(5, w, 3, stride=2, padding=1)  # S/2
        self.enc2 = nn.Conv2d(w, 2 * w, 3, stride=2, padding=1)  # S/4
        self.enc3 = nn.Conv2d(2 * w, 2 * w, 3, stride=2, padding=1)  # S/8
        self.dec2 = nn.Conv2d(4 * w, w, 3, padding=1)  # S/4
        self.dec1 = nn.Conv2d(2 * w, w, 3, padding=1)  # S/2
        self.out = nn.Conv2d(w, 3 * 4, 1)  # pixel shuffle x2 -> (3, S, S)
        self.static = nn.Parameter(torch.zeros(1, 3, self.input_size, self.input_size))
        ramp = torch.linspace(-1.0, 1.0, self.input_size)
        coords = torch.stack(torch.meshgrid(ramp, ramp, indexing="ij"))[None]
        self.register_buffer("coords", coords, persistent=False)
        # Seeded initialisation independent of the global RNG, so a scan is a function of its seed.
        generator = torch.Generator().manual_seed(int(seed))
        for conv in (self.enc1, self.enc2, self.enc3, self.dec2, self.dec1):
            nn.init.kaiming_uniform_(conv.weight, a=0.2, generator=generator)
            nn.init.zeros_(conv.bias)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """The logit-space edit r, (N, 3, S, S)."""
        def act(t):
            return nnf.leaky_relu(t, 0.2)

        h = torch.cat([x * 2.0 - 1.0, self.coords.expand(len(x), -1, -1, -1)], dim=1)
        e1 = act(self.enc1(h))
        e2 = act(self.enc2(e1))
        e3 = act(self.enc3(e2))
        d2 = act(self.dec2(torch.cat([nnf.interpolate(e3, size=e2.shape[-2:], mode="nearest"), e2], 1)))
        d1 = act(self.dec1(torch.cat([nnf.interpolate(d2, size=e1.shape[-2:], mode="nearest"), e1], 1)))
        dynamic = nnf.pixel_shuffle(self.out(d1), 2)
        if dynamic.shape[-1] != self.input_size:  # odd sizes: the half-resolution map rounded up
            dynamic = dynamic[..., : self.input_size, : self.input_size]
        return dynamic + self.static

    def forward(self, x: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
        """The edited images; ``strength`` scales the logit-space edit (1: as trained, 2: twice as deep)."""
        logits = torch.logit(x.clamp(_PIXEL_EPS, 1.0 - _PIXEL_EPS))
        # sigmoid(logit(v)) is v only up to rounding; subtracting the same expression with r = 0
        # makes the untrained generator the identity bit for bit.
        change = torch.sigmoid(logits + strength * self.residual(x)) - torch.sigmoid(logits)
        return (x + change).clamp(0.0, 1.0)

    def config(self) -> dict[str, int]:
        return {"input_size": self.input_size, "width": self.width}


def save_generator(generator: TriggerGenerator, path: str | Path) -> Path:
    """The trained generator as safetensors (no pickle), with its config as metadata; atomic."""
    import json

    from safetensors.torch import save_file

    from securegaze.io import atomic_write

    state = {k: v.detach().contiguous().cpu() for k, v in generator.state_dict().items()}
    meta = {"config": json.dumps(generator.config()), "scanner_version": SCANNER_VERSION}
    return atomic_write(path, lambda tmp: save_file(state, tmp, metadata=meta))


def load_generator(path: str | Path) -> TriggerGenerator:
    """Read a generator written by :func:`save_generator`; InputFileError when it is not one."""
    import json

    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: trigger generator file not found")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            state = {k: fh.get_tensor(k) for k in fh.keys()}
        config = json.loads(meta["config"])
        generator = TriggerGenerator(int(config["input_size"]), int(config["width"]))
        generator.load_state_dict(state)
    except (SafetensorError, OSError, ValueError, KeyError, RuntimeError) as exc:
        raise InputFileError(f"{path}: not a SecureGaze trigger generator ({type(exc).__name__}: {exc})") from None
    return generator.eval()


# --- the sensitivity map -------------------------------------------------------------------------


def _gaussian_blur(image: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """(S, S) -> (S, S), separable Gaussian with reflected borders."""
    if sigma_px < 0.3:
        return image
    radius = max(1, int(math.ceil(3 * sigma_px)))
    radius = min(radius, image.shape[-1] - 1)
    taps = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)
    kernel = torch.exp(-0.5 * (taps / sigma_px) ** 2)
    kernel = kernel / kernel.sum()
    out = image[None, None]
    out = nnf.conv2d(nnf.pad(out, (radius, radius, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
    out = nnf.conv2d(nnf.pad(out, (0, 0, radius, radius), mode="reflect"), kernel.view(1, 1, -1, 1))
    return out[0, 0]


def sensitivity_map(model, images: torch.Tensor, settings: SecureGazeSettings,
                    progress: ProgressCallback | None = None) -> torch.Tensor:
    """The model's per-pixel sensitivity, (S, S), mean 1: where an edit costs more.

    Running average over clean images of |d pitch / dx| + |d yaw / dx| (summed over the colour
    channels), smoothed with a Gaussian of ``sensitivity_blur_frac`` x S pixels (a trigger's price
    should not hinge on single noisy gradient pixels), normalised to mean 1, raised to
    ``sensitivity_power``, normalised again, floored at ``sensitivity_floor`` and normalised once more. Samples are independent in eval mode, so the
    gradient of the batch sum gives every image's own input gradient.
    """
    size = images.shape[-1]
    count = min(len(images), settings.sensitivity_samples)
    total = torch.zeros(size, size, dtype=torch.float64)
    batches = range(0, count, settings.batch_size)
    for step, start in enumerate(batches):
        x = images[start:start + settings.batch_size][: count - start].clone().requires_grad_(True)
        gaze = model(x)
        _check_finite(gaze, "clean images")
        grads = torch.zeros_like(x)
        for k in range(gaze.shape[1]):
            (grad,) = torch.autograd.grad(gaze[:, k].sum(), x, retain_graph=k + 1 < gaze.shape[1])
            grads += grad.abs()
        total += grads.sum(dim=(0, 1)).detach().double().cpu()
        if progress:
            progress(ScanProgress(SecureGazeDetector.name, "sensitivity", step + 1, len(batches)))
    smap = _gaussian_blur(total.float(), settings.sensitivity_blur_frac * size)
    mean = smap.mean()
    if not torch.isfinite(mean) or mean <= 0:
        raise ModelFormatError(
            "securegaze: the model's output does not depend on its input (zero input gradients on every clean "
            "image); nothing can be scanned"
        )
    smap = (smap / mean).pow(settings.sensitivity_power)
    smap = (smap / smap.mean()).clamp_min(settings.sensitivity_floor)
    return smap / smap.mean()


def _check_finite(gaze: torch.Tensor, what: str) -> None:
    if not torch.isfinite(gaze).all():
        bad = int((~torch.isfinite(gaze)).any(dim=1).sum())
        raise ModelFormatError(
            f"securegaze: the model produced NaN or inf gaze for {bad} of {len(gaze)} {what}; the model is broken "
            "or its input convention (RGB in [0, 1]) does not match the images"
        )


# --- the reverse-engineering ---------------------------------------------------------------------


@dataclass
class TriggerReversal:
    """The outcome of reverse-engineering one model's trigger function.

    ``generator``: the cheapest generator that met both constraints (the last one if none did);
    ``weights``: the sensitivity map used as per-pixel price, (S, S) mean 1; ``cost``: its weighted
    mean |x' - x| on the evaluation images ([0, 1] units; the score is this when ``constraints_met``,
    inf otherwise); ``steps_to_feasible``: first step at which an evaluation met both constraints.
    The remaining fields are the statistics of :class:`ScanReport`, computed on the evaluation images.
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
    feature_angle_variance_clean: float
    feature_angle_variance_reversed: float
    feature_variance_ratio: float
    perturbation_l1: float
    multipliers: tuple[float, float]
    eval_images: torch.Tensor
    clean_count: int

    @property
    def score(self) -> float:
        return self.cost if self.constraints_met else math.inf


class _FrozenModel:
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


def _model_device(model: nn.Module) -> torch.device:
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return torch.device("cpu")


@dataclass(frozen=True)
class _Evaluation:
    cost: float
    l1: float
    trace_ratio: float
    feature_ratio: float
    gaze: np.ndarray
    feature_variance: float


class SecureGazeDetector(Detector):
    """The SecureGaze scanner; settings as in :class:`SecureGazeSettings` (keywords).

    ``scan`` returns a :class:`ScanReport`; ``reverse`` returns the :class:`TriggerReversal` with the
    trained generator (what :func:`securegaze.defense.mitigation.mitigate` needs).
    """

    name = "securegaze"
    version = SCANNER_VERSION
    suspicious_when = "below"

    def __init__(self, **settings) -> None:
        known = {f.name for f in fields(SecureGazeSettings)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ConfigError(f"securegaze: unknown setting(s) {', '.join(unknown)}; expected some of: "
                              f"{', '.join(sorted(known))}")
        self.config = SecureGazeSettings(**settings)
        self.config.validate(self.name)

    def settings(self) -> dict[str, Any]:
        return self.config.to_dict()

    def with_settings(self, **changes) -> SecureGazeDetector:
        return SecureGazeDetector(**{**self.settings(), **changes})

    # -- reverse-engineering -------------------------------------------------------------------
    def reverse(self, model, clean_images, progress: ProgressCallback | None = None) -> TriggerReversal:
        """Train the trigger generator against ``model`` (frozen, not modified); see the module docstring."""
        check_gaze_model(model, self.name)
        x_all = clean_tensor(clean_images, model.input_size, self.name)
        device = _model_device(model)
        x_all = x_all.to(device)
        with _FrozenModel(model):
            return self._reverse(model, x_all, device, progress)

    def _reverse(self, model, x_all: torch.Tensor, device, progress) -> TriggerReversal:
        cfg = self.config
        size = x_all.shape[-1]
        rng = np.random.default_rng([cfg.seed, 0x5ECA])
        # Evaluation images: a fixed, seeded subset, so constraint checks and the report compare like
        # with like across steps.
        eval_idx = np.sort(rng.permutation(len(x_all))[: cfg.eval_samples])
        x_eval = x_all[torch.as_tensor(eval_idx, device=x_all.device)]
        head_weight = model.head_weight().detach()

        if cfg.sensitivity_weighting:
            weights = sensitivity_map(model, x_all, cfg, progress).to(device)
        else:
            weights = torch.ones(size, size, device=device)
        weights = weights.view(1, 1, size, size)

        with torch.no_grad():
            z_clean, g_clean = self._forward_chunks(model, x_eval)
        _check_finite(g_clean, "clean images")
        clean_trace = gaze_trace_covariance(g_clean).item()
        clean_fav = feature_angle_variance(z_clean, head_weight).item()
        if clean_trace < 1e-10:
            raise ModelFormatError(
                "securegaze: the model predicts the same gaze for every clean image (no output dispersion); "
                "it is broken or the clean images are all the same"
            )
        if clean_fav < 1e-12:
            raise ModelFormatError(
                "securegaze: the model's features make the same angles with H's weights on every clean image; "
                "check that the F/H split (feature_split in the bundle manifest) is the penultimate layer"
            )
        # Cost normalisation: the natural variation of the clean pixels (mean absolute deviation from
        # the mean image). The score itself stays in raw [0, 1] units; this only sets the scale of the
        # cost against the constraints (unitless log-ratios) so it is the same for every dataset.
        pixel_scale = max((x_all - x_all.mean(0, keepdim=True)).abs().mean().item(), 1e-3)
        # The optimiser aims a little inside the constraints (constraint_margin x rho): a Lagrangian
        # method settles on the boundary of what it aims at, and the checks on the evaluation images
        # would then fail half the time; the decision still uses rho itself.
        log_rho = torch.tensor([math.log(cfg.rho_out * cfg.constraint_margin),
                                math.log(cfg.rho_feat * cfg.constraint_margin)], device=device)

        generator = TriggerGenerator(size, cfg.generator_width, seed=cfg.seed).to(device)
        # Adam's first steps move every weight by about lr at once, and through five convolutions that
        # compounds into edits that saturate the image (and then gradients vanish); the network
        # therefore gets a small rate, the static map (one logit per pixel, nothing compounds) a larger one.
        network = [p for name, p in generator.named_parameters() if name != "static"]
        optimizer = torch.optim.Adam([{"params": network, "lr": cfg.lr},
                                      {"params": [generator.static], "lr": cfg.static_lr}])
        # Cosine decay to a tenth: late steps refine the cheapest edit instead of adding Adam's
        # step-sized jitter to every pixel (which an L1 cost counts).
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda k: 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(k, cfg.steps) / cfg.steps)))
        multipliers = torch.full((2,), float(cfg.initial_multiplier), device=device)
        best_state, best_cost, first_feasible = None, math.inf, None
        batch = min(cfg.batch_size, len(x_all))

        def evaluate(step: int) -> _Evaluation:
            result = self._evaluate(model, generator, x_eval, weights, head_weight, clean_trace, clean_fav)
            if progress:
                progress(ScanProgress(self.name, "evaluate", step, cfg.steps, {
                    "cost": result.cost, "dispersion_ratio": math.sqrt(result.trace_ratio),
                    "feature_variance_ratio": result.feature_ratio,
                }))
            return result

        for step in range(1, cfg.steps + 1):
            idx = torch.as_tensor(np.sort(rng.choice(len(x_all), size=batch, replace=False)), device=device)
            x = x_all[idx]
            x_rev = generator(x)
            cost = (weights * (x_rev - x).abs()).mean()
            z = model.features(x_rev)
            gaze = model.head(z)
            _check_finite(gaze, "reversed-triggered images")
            # Constraint values as log-ratios to the clean statistics: g <= 0 means satisfied. The
            # dispersion uses the square root of the trace (an RMS angle) so rho_out is a ratio of angles.
            violation = torch.stack([
                0.5 * torch.log((gaze_trace_covariance(gaze) + _LOG_EPS) / clean_trace),
                torch.log((feature_angle_variance(z, head_weight) + _LOG_EPS) / clean_fav),
            ]) - log_rho
            # Lagrangian with multipliers found by (multiplicative) dual ascent: the price of each
            # constraint is set by the optimisation itself, not tuned per model.
            loss = cost / pixel_scale + (multipliers * violation).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            with torch.no_grad():
                # Geometric steps: the right multiplier spans orders of magnitude between models (it is
                # the marginal cost of collapsing further), so it is searched on a log scale.
                step_size = cfg.dual_lr * violation.detach().clamp(-1.0, 1.0)
                multipliers = (multipliers * torch.exp(step_size)).clamp(_MULTIPLIER_RANGE[0], _MULTIPLIER_RANGE[1])
            if progress:
                progress(ScanProgress(self.name, "reverse", step, cfg.steps, {
                    "cost": cost.item(), "dispersion_violation": violation[0].item(),
                    "feature_violation": violation[1].item(), "lambda_dispersion": multipliers[0].item(),
                    "lambda_feature": multipliers[1].item(),
                }))
            if step % cfg.eval_every == 0 or step == cfg.steps:
                result = evaluate(step)
                feasible = (0.5 * math.log(max(result.trace_ratio, _LOG_EPS)) <= math.log(cfg.rho_out)
                            and result.feature_ratio <= cfg.rho_feat)
                if feasible:
                    first_feasible = first_feasible or step
                    if result.cost < best_cost:
                        best_cost = result.cost
                        best_state = copy.deepcopy(generator.state_dict())

        if best_state is not None:
            generator.load_state_dict(best_state)
        generator.eval()
        final = self._evaluate(model, generator, x_eval, weights, head_weight, clean_trace, clean_fav)
        clean_gaze = g_clean.double().cpu().numpy()
        target = mean_gaze(final.gaze)
        to_target = angular_error_deg(final.gaze, np.broadcast_to(target, final.gaze.shape))
        return TriggerReversal(
            generator=generator,
            weights=weights[0, 0].detach().cpu(),
            constraints_met=best_state is not None,
            cost=final.cost,
            steps_to_feasible=first_feasible,
            target_gaze=(float(target[0]), float(target[1])),
            collapsed_share=float((to_target <= cfg.collapse_radius_deg).mean()),
            clean_dispersion_deg=gaze_dispersion_deg(clean_gaze),
            reversed_dispersion_deg=gaze_dispersion_deg(final.gaze),
            dispersion_ratio=math.sqrt(final.trace_ratio),
            feature_angle_variance_clean=clean_fav,
            feature_angle_variance_reversed=final.feature_variance,
            feature_variance_ratio=final.feature_ratio,
            perturbation_l1=final.l1,
            multipliers=(float(multipliers[0]), float(multipliers[1])),
            eval_images=x_eval.detach().cpu(),
            clean_count=int(len(x_all)),
        )

    def _forward_chunks(self, model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        zs, gs = [], []
        for start in range(0, len(x), self.config.batch_size):
            z = model.features(x[start:start + self.config.batch_size])
            zs.append(z)
            gs.append(model.head(z))
        return torch.cat(zs), torch.cat(gs)

    @torch.no_grad()
    def _evaluate(self, model, generator, x_eval, weights, head_weight, clean_trace, clean_fav) -> _Evaluation:
        was_training = generator.training
        generator.eval()
        costs, l1s, reversed_images = [], [], []
        for start in range(0, len(x_eval), self.config.batch_size):
            x = x_eval[start:start + self.config.batch_size]
            x_rev = generator(x)
            diff = (x_rev - x).abs()
            costs.append((weights * diff).mean(dim=(1, 2, 3)))
            l1s.append(diff.mean(dim=(1, 2, 3)))
            reversed_images.append(x_rev)
        generator.train(was_training)
        z, gaze = self._forward_chunks(model, torch.cat(reversed_images))
        _check_finite(gaze, "reversed-triggered images")
        fav = feature_angle_variance(z, head_weight).item()
        return _Evaluation(
            cost=torch.cat(costs).mean().item(), l1=torch.cat(l1s).mean().item(),
            trace_ratio=gaze_trace_covariance(gaze).item() / clean_trace, feature_ratio=fav / clean_fav,
            gaze=gaze.double().cpu().numpy(), feature_variance=fav,
        )

    # -- the scan ------------------------------------------------------------------------------
    def scan(self, model, clean_images, progress: ProgressCallback | None = None,
             artifacts_dir: str | Path | None = None, model_sha256: str | None = None) -> ScanReport:
        """Reverse-engineer the trigger function of ``model`` and decide; see :class:`ScanReport`.

        With ``artifacts_dir`` the scan writes ``reversed_trigger.png`` (clean / reversed / |difference|
        rows, :func:`save_trigger_image`) and ``trigger_generator.safetensors`` there (atomically) and
        records their paths.
        """
        started = time.monotonic()
        reversal = self.reverse(model, clean_images, progress)
        report = self.report(reversal, model_sha256=model_sha256, runtime_s=time.monotonic() - started)
        if artifacts_dir is not None:
            report = self.write_artifacts(reversal, report, artifacts_dir)
        return report

    def report(self, reversal: TriggerReversal, model_sha256: str | None = None, runtime_s: float = 0.0) -> ScanReport:
        """The :class:`ScanReport` of a finished reversal."""
        cfg = self.config
        score = reversal.score
        target = reversal.target_gaze
        return ScanReport(
            detector=self.name,
            scanner_version=self.version,
            verdict=decide(score, cfg.threshold, self.suspicious_when),
            score=score,
            threshold=cfg.threshold,
            suspicious_when=self.suspicious_when,
            settings=self.settings(),
            target_gaze=target,
            target_gaze_deg=(math.degrees(target[0]), math.degrees(target[1])),
            collapsed_share=reversal.collapsed_share,
            collapse_radius_deg=cfg.collapse_radius_deg,
            clean_dispersion_deg=reversal.clean_dispersion_deg,
            reversed_dispersion_deg=reversal.reversed_dispersion_deg,
            feature_angle_variance_clean=reversal.feature_angle_variance_clean,
            feature_angle_variance_reversed=reversal.feature_angle_variance_reversed,
            perturbation_l1=reversal.perturbation_l1,
            constraints_met=reversal.constraints_met,
            clean_count=reversal.clean_count,
            input_size=int(reversal.generator.input_size),
            runtime_s=float(runtime_s),
            model_sha256=model_sha256,
            details={
                "final_cost": reversal.cost,
                "steps_to_feasible": reversal.steps_to_feasible,
                "dispersion_ratio": reversal.dispersion_ratio,
                "feature_variance_ratio": reversal.feature_variance_ratio,
                "multipliers": list(reversal.multipliers),
                # A scan is bit-for-bit repeatable for a given seed *and* thread count: more threads
                # change the order of floating-point sums, hence the optimisation path.
                "torch_threads": torch.get_num_threads(),
            },
        )

    def write_artifacts(self, reversal: TriggerReversal, report: ScanReport, artifacts_dir: str | Path) -> ScanReport:
        """Write the trigger image and the generator under ``artifacts_dir``; the report with their paths."""
        out = Path(artifacts_dir)
        image_path = save_trigger_image(reversal, out / "reversed_trigger.png")
        generator_path = save_generator(reversal.generator, out / "trigger_generator.safetensors")
        return replace(report, trigger_image_path=str(image_path), generator_path=str(generator_path))


# --- the reversed-trigger picture ----------------------------------------------------------------


def save_trigger_image(reversal: TriggerReversal, path: str | Path, samples: int = 6, tile_px: int = 96) -> Path:
    """A PNG of ``samples`` evaluation images: rows clean, reversed-triggered, |difference| heat map.

    The heat map shows the mean absolute change over the colour channels, scaled to the largest change
    in the picture (colour map "inferno"); tiles are upscaled to ``tile_px`` without smoothing so
    single edited pixels stay visible. Written atomically.
    """
    import cv2

    from securegaze.io import atomic_write_bytes

    images = reversal.eval_images[:samples]
    with torch.no_grad():
        edited = reversal.generator(images.to(_model_device(reversal.generator))).cpu()
    diff = (edited - images).abs().mean(dim=1)  # (n, S, S)
    scale = max(float(diff.max()), 1e-6)

    def tile_rgb(x: torch.Tensor) -> np.ndarray:
        rgb = (x.permute(1, 2, 0).numpy() * 255.0).round().clip(0, 255).astype(np.uint8)
        return cv2.resize(rgb, (tile_px, tile_px), interpolation=cv2.INTER_NEAREST)

    def tile_heat(d: torch.Tensor) -> np.ndarray:
        grey = (d.numpy() / scale * 255.0).round().clip(0, 255).astype(np.uint8)
        heat_bgr = cv2.applyColorMap(cv2.resize(grey, (tile_px, tile_px), interpolation=cv2.INTER_NEAREST),
                                     cv2.COLORMAP_INFERNO)
        return heat_bgr[..., ::-1]

    gap = 4
    rows = [[tile_rgb(x) for x in images], [tile_rgb(x) for x in edited], [tile_heat(d) for d in diff]]
    height = 3 * tile_px + 2 * gap
    width = len(images) * tile_px + (len(images) - 1) * gap
    sheet = np.full((height, width, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            top, left = r * (tile_px + gap), c * (tile_px + gap)
            sheet[top:top + tile_px, left:left + tile_px] = tile
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(sheet[..., ::-1]))
    if not ok:  # pragma: no cover - cv2 only fails here on an impossible image shape
        raise ValueError(f"cannot encode the trigger picture {sheet.shape} as PNG")
    return atomic_write_bytes(path, encoded.tobytes())
