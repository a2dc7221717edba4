"""BTI-DBF (Xu, Huang, Li, Qin and Ren, ICLR 2024) adapted to gaze regression.

The method: backdoor trigger inversion by decoupling benign features. Instead of searching for the
trigger directly (which needs a target and a trigger shape), it first finds what a backdoor does
*not* touch, then inverts whatever is left.

1. Decoupling: a mask ``m`` over the model's features is trained so that the masked features
   ``m * F(x)`` alone still give the model's answer while the rest ``(1 - m) * F(x)`` does not:
   minimise ``L(H(m * F(x)), y) - L(H((1 - m) * F(x)), y)`` on clean images ``x`` with labels ``y``
   (Adam 0.01, ``mask_epochs`` = 20 passes; ``m = tanh(raw) / 2 + 1/2``, ``raw`` drawn from N(0, 1)).
   ``m`` marks the *benign* features.
2. Inversion: a generator G (a U-Net pretrained towards the identity) maps clean images to "poisoned"
   ones that keep the benign features and move the others as far as possible:
   maximise ``MSE((1 - m) F(G(x)), (1 - m) F(x))`` with ``0.01 MSE(m F(G(x)), m F(x))`` as a penalty,
   while ``MSE(G(x), x) <= norm_bound`` and the benign-feature MSE ``<= feat_bound``; a step that
   breaks either bound only pulls back towards ``x`` (Adam 1e-3, ``generator_epochs`` = 30 passes).
3. Target: the label most often predicted on ``G(x + n)``, n ~ N(0, 0.03^2).

The inverted generator then serves two defenses, BTI-DBF(U), unlearning
(:mod:`securegaze.defense.baselines.bti_dbf_unlearn`), and BTI-DBF(P), purification. The paper is
an inversion and defense method; it has no detection statistic of its own. Sources: the paper
(openreview Tw9wemV6cb) and the public code (github.com/xuxiong0214/BTIDBF: ``cfg.py``,
``btidbf.py``, ``btidbfu.py``, ``pretrain.py``), whose defaults are quoted in :class:`BtiDbfSettings`.

Adaptation to gaze regression (each choice is the one that favours the method):

* labels: the model's own gaze on the clean images (the scan has no labels; a model fits its
  predictions exactly, so the decoupling sees the model's behaviour, not its errors); the loss ``L``
  is the L1 distance in pitch and yaw, radians (the project's fine-tuning loss);
* features: F's output (the penultimate vector), the only split every model here exposes;
* bounds in the model's own units: ``norm_bound`` 0.3 of the official code applies to images
  standardised by the dataset's std (about 0.25 for CIFAR-10); in [0, 1] pixels that is 0.3 x 0.226^2
  = 0.015 with the ImageNet std our models standardise with. The official ``feat_bound`` (3, an
  absolute MSE of ResNet-18 features) has no meaning for another family's feature scale: here it is
  relative, ``feature_bound`` times the benign features' own spread over the clean images (their mean
  squared deviation from the mean);
* target: the densest gaze of ``H(F(G(x + n)))`` (the trimmed centre of
  :func:`~securegaze.defense.securegaze.statistics.collapse_spread`), the regression reading of "the
  most frequent label";
* generator: :class:`~securegaze.defense.baselines.unet.SmallUNet` starts near the identity (its last
  layer drawn small, ``OUT_INIT_STD``), which replaces the 50 epochs of identity pretraining
  (``pretrain.py``); the exact identity would be a stationary point of the feature-shift objective.
  The generator kept is the last one (``keep="last"``, the official default) or, with
  ``keep="max_shift"`` (the official ``use_max_bd_feat``), the pass whose check on 64 fixed clean
  images moved the backdoor features most while holding both bounds.

Score: a detection statistic has to be chosen. A backdoored model's easiest feature shift under the
pixel budget is its trigger, which sends every image to one gaze; a benign model's is a change of the
face, which moves each image its own way. The score is the *collapse ratio* of the inverted
generator: the trimmed RMS spread of the predictions on ``G(x)`` around their densest gaze over the
same statistic of the clean predictions (0: every edited image on one gaze; about 1 or more: no
collapse). Suspicious below. The share of edited images within ``collapse_radius_deg`` of the
target (the ASR of the inverted generator) is in the report too, and in ``details``.

Budget: the official run makes 20 mask passes and 30 generator passes over its clean set (5 % of
CIFAR-10's training set, batches of 128) with a U-Net of width 32 and depth 4, after 50 passes of
pretraining. Here the mask passes run on cached features (nearly free), and the 30 generator passes
over 256 images in batches of 32 (240 steps) with a U-Net of width 16 and depth 3 fit a 64-px scan
into about a minute on two CPU cores; with a GPU ``unet_width=32``, ``unet_depth=4`` restore the
official generator.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as nnf

from securegaze.defense.base import ProgressCallback, ScanProgress
from securegaze.defense.baselines.common import (
    BaselineDetector,
    BaselineResult,
    BaselineSettings,
    ReversedEdit,
    scan_batches,
)
from securegaze.defense.baselines.unet import SmallUNet, UNetShape, bounded, target_pull
from securegaze.defense.securegaze.reversal import forward_chunks
from securegaze.defense.securegaze.statistics import check_finite_gaze, collapse_spread, mean_gaze
from securegaze.geometry import angular_error_deg_torch
from securegaze.validation import check_choice, check_int, check_number

#: Spread of the generator's last layer at initialisation: a near-identity start (the official one is a
#: pretrained, inexact identity); the exact identity is a stationary point of the inversion's objective.
OUT_INIT_STD = 0.01
#: Which generator the inversion keeps: the last one (the official default) or the one of the pass whose
#: check moved the backdoor features most within both bounds (the official ``use_max_bd_feat`` option).
KEEP_CHOICES = ("last", "max_shift")
#: Clean images on which each pass's generator is checked (the kept one is the check's best feasible).
CHECK_SAMPLES = 64
#: Share of images whose trimmed centre is the densest gaze (SecureGaze's collapse_share).
CENTRE_SHARE = 0.6


@dataclass(frozen=True)
class BtiDbfSettings(BaselineSettings):
    """BTI-DBF's settings (official defaults in brackets, see the module docstring for the units).

    * ``mask_epochs`` [20], ``mask_lr`` [0.01]: passes and Adam rate of the benign-feature mask;
    * ``generator_epochs`` [30], ``generator_lr`` [1e-3]: passes and Adam rate of the generator;
      ``unet_width``, ``unet_depth`` [32, 4]: its shape;
    * ``norm_bound``: bound on ``MSE(G(x), x)`` in [0, 1] pixels [0.3 on standardised images, 0.015
      here]; ``feature_bound``: bound on the benign-feature MSE as a share of the benign features'
      spread over the clean images [3, absolute]; ``benign_weight`` [0.01]: weight of the benign-feature
      MSE while both bounds hold;
    * ``noise_std`` [0.03]: Gaussian noise added to the images the target is read from;
    * ``keep`` ["last"]: which generator is kept, see :data:`KEEP_CHOICES`.
    """

    mask_epochs: int = 20
    mask_lr: float = 0.01
    generator_epochs: int = 30
    generator_lr: float = 1e-3
    unet_width: int = 16
    unet_depth: int = 3
    norm_bound: float = 0.015
    feature_bound: float = 0.5
    benign_weight: float = 0.01
    noise_std: float = 0.03
    keep: str = "last"
    threshold: float = 0.2

    def validate(self, who: str) -> None:
        super().validate(who)
        check_int(who, "mask_epochs", self.mask_epochs, 0, 10_000)
        check_int(who, "generator_epochs", self.generator_epochs, 1, 10_000)
        check_number(who, "mask_lr", self.mask_lr, 0.0, 10.0, low_open=True)
        check_number(who, "generator_lr", self.generator_lr, 0.0, 10.0, low_open=True)
        UNetShape(self.unet_width, self.unet_depth).validate(who)
        check_number(who, "norm_bound", self.norm_bound, 0.0, 1.0, low_open=True)
        check_number(who, "feature_bound", self.feature_bound, 0.0, 1e6, low_open=True)
        check_number(who, "benign_weight", self.benign_weight, 0.0, 1e6)
        check_number(who, "noise_std", self.noise_std, 0.0, 1.0)
        check_choice(who, "keep", self.keep, KEEP_CHOICES)


class BtiDbfEdit(ReversedEdit):
    """The inverted generator G as an image edit; ``strength`` scales its logit-space residual."""

    def __init__(self, input_size: int, shape: UNetShape, seed: int) -> None:
        super().__init__()
        self.input_size = int(input_size)
        self.generator = SmallUNet(input_size, shape, mode="image", seed=seed, out_init_std=OUT_INIT_STD)

    def forward(self, x: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
        return self.generator(x, strength)


def decouple_benign_features(model, z: torch.Tensor, labels: torch.Tensor, settings: BtiDbfSettings,
                             progress: ProgressCallback | None = None, who: str = "bti_dbf") -> torch.Tensor:
    """Step 1: the benign-feature mask, (D,) in (0, 1), from features ``z`` (N, D) and gaze ``labels`` (N, 2).

    Only H runs (the features of a frozen model are fixed), so the official number of passes costs
    next to nothing.
    """
    cfg = settings
    generator = torch.Generator().manual_seed(cfg.seed)
    raw = nn.Parameter(torch.randn(z.shape[1], generator=generator).to(z.device))
    optimizer = torch.optim.Adam([raw], lr=cfg.mask_lr)
    batch = min(cfg.batch_size, len(z))
    per_epoch = max(1, len(z) // batch)
    batches = scan_batches(len(z), batch, generator)
    total = cfg.mask_epochs * per_epoch
    for step in range(1, total + 1):
        idx = next(batches).to(z.device)
        m = bounded(raw)
        keep = nnf.l1_loss(model.head(m * z[idx]), labels[idx])
        drop = nnf.l1_loss(model.head((1.0 - m) * z[idx]), labels[idx])
        optimizer.zero_grad(set_to_none=True)
        (keep - drop).backward()
        optimizer.step()
        if progress and (step % per_epoch == 0 or step == total):
            progress(ScanProgress(who, "decouple", step, total, {"kept_loss": keep.item(), "dropped_loss": drop.item(),
                                                                  "mask_share": m.mean().item()}))
    return bounded(raw).detach()


def benign_spread(z: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean squared deviation of the masked features ``mask * z`` from their mean, per element (MSE units)."""
    masked = mask * z
    return float((masked - masked.mean(0, keepdim=True)).pow(2).mean())


def train_generator(model, x: torch.Tensor, edit: BtiDbfEdit, mask: torch.Tensor, settings: BtiDbfSettings,
                    epochs: int, progress: ProgressCallback | None = None, who: str = "bti_dbf",
                    target: torch.Tensor | None = None, seed_offset: int = 0,
                    target_weight: float = 1.0) -> list[dict[str, float]]:
    """Step 2: train ``edit``'s generator in place against the frozen ``model`` on clean ``x``.

    ``target`` (2,) radians adds BTI-DBF(U)'s term of its later rounds, ``target_weight`` times the
    pull of ``H(F(G(x)))`` to the target found before (cross-entropy to the detected label in the
    paper). ``settings.keep`` picks the generator kept (:data:`KEEP_CHOICES`). Returns one line of
    figures per pass.
    """
    cfg = settings
    with torch.no_grad():
        z_clean, _ = forward_chunks(model, x, cfg.batch_size)
    feature_limit = cfg.feature_bound * max(benign_spread(z_clean, mask), 1e-12)
    generator = torch.Generator().manual_seed(cfg.seed + 7919 * seed_offset)
    check_idx = torch.randperm(len(x), generator=generator)[:CHECK_SAMPLES].sort().values.to(x.device)
    best_state, best_shift = None, -math.inf
    optimizer = torch.optim.Adam(edit.parameters(), lr=cfg.generator_lr)
    batch = min(cfg.batch_size, len(x))
    per_epoch = max(1, len(x) // batch)
    batches = scan_batches(len(x), batch, generator)
    total, history, sums = epochs * per_epoch, [], {}
    edit.train()
    for step in range(1, total + 1):
        idx = next(batches).to(x.device)
        xb = x[idx]
        edited = edit(xb)
        z_edit = model.features(edited)
        benign = nnf.mse_loss(mask * z_edit, mask * z_clean[idx])
        backdoor = nnf.mse_loss((1.0 - mask) * z_edit, (1.0 - mask) * z_clean[idx])
        norm = nnf.mse_loss(edited, xb)
        if norm.item() > cfg.norm_bound or benign.item() > feature_limit:
            loss = norm
        else:
            loss = -backdoor + cfg.benign_weight * benign
        if target is not None:
            gaze = model.head(z_edit)
            check_finite_gaze(gaze, "generated images")
            loss = loss + target_weight * target_pull(gaze, target, cfg.collapse_radius_deg)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        for key, value in (("backdoor_mse", backdoor), ("benign_share", benign / feature_limit),
                           ("norm_share", norm / cfg.norm_bound)):
            sums[key] = sums.get(key, 0.0) + value.item() / per_epoch
        if step % per_epoch == 0:
            shift, feasible = _check(model, x[check_idx], z_clean[check_idx], edit, mask, cfg, feature_limit)
            if feasible and shift > best_shift:
                best_state, best_shift = copy.deepcopy(edit.state_dict()), shift
            history.append({"epoch": step // per_epoch, **{k: round(v, 6) for k, v in sums.items()},
                            "check_backdoor_mse": round(shift, 6), "feasible": feasible})
            if progress:
                progress(ScanProgress(who, "invert", step, total, dict(sums)))
            sums = {}
    if cfg.keep == "max_shift" and best_state is not None:
        edit.load_state_dict(best_state)
    edit.eval()
    return history


@torch.no_grad()
def _check(model, x: torch.Tensor, z_clean: torch.Tensor, edit: BtiDbfEdit, mask: torch.Tensor,
           cfg: BtiDbfSettings, feature_limit: float) -> tuple[float, bool]:
    """The generator at the end of a pass on fixed check images: (backdoor-feature MSE, both bounds held)."""
    edited = torch.cat([edit(x[i:i + cfg.batch_size]) for i in range(0, len(x), cfg.batch_size)])
    z_edit, _ = forward_chunks(model, edited, cfg.batch_size)
    backdoor = nnf.mse_loss((1.0 - mask) * z_edit, (1.0 - mask) * z_clean).item()
    benign = nnf.mse_loss(mask * z_edit, mask * z_clean).item()
    return backdoor, nnf.mse_loss(edited, x).item() <= cfg.norm_bound and benign <= feature_limit


def densest_gaze(gaze: torch.Tensor) -> torch.Tensor:
    """(2,) radians: the mean of the ``CENTRE_SHARE`` of (N, 2) gazes closest to their own centre."""
    _, kept = collapse_spread(gaze.detach(), CENTRE_SHARE)
    centre = mean_gaze(gaze.detach()[kept].double().cpu().numpy())
    return torch.as_tensor(np.asarray(centre, dtype=np.float32), device=gaze.device)


@torch.no_grad()
def recovered_target(model, x: torch.Tensor, edit: BtiDbfEdit, settings: BtiDbfSettings) -> torch.Tensor:
    """Step 3: the densest gaze of the model on ``G(x + n)``, n ~ N(0, noise_std^2) seeded (2,) radians."""
    cfg = settings
    generator = torch.Generator().manual_seed(cfg.seed + 1)
    noisy = (x + cfg.noise_std * torch.randn(x.shape, generator=generator).to(x.device)).clamp(0.0, 1.0)
    edited = torch.cat([edit(noisy[i:i + cfg.batch_size]) for i in range(0, len(x), cfg.batch_size)])
    _, gaze = forward_chunks(model, edited, cfg.batch_size)
    check_finite_gaze(gaze, "generated images")
    return densest_gaze(gaze)


def invert(model, x: torch.Tensor, settings: BtiDbfSettings, progress: ProgressCallback | None = None,
           who: str = "bti_dbf") -> tuple[BtiDbfEdit, torch.Tensor, torch.Tensor, list]:
    """Steps 1-3 on a frozen model: (the generator as an edit, the benign mask, the target, history)."""
    cfg = settings
    with torch.no_grad():
        z_clean, g_clean = forward_chunks(model, x, cfg.batch_size)
    check_finite_gaze(g_clean, "clean images")
    mask = decouple_benign_features(model, z_clean, g_clean, cfg, progress, who)
    edit = BtiDbfEdit(int(x.shape[-1]), UNetShape(cfg.unet_width, cfg.unet_depth), cfg.seed).to(x.device)
    history = train_generator(model, x, edit, mask, cfg, cfg.generator_epochs, progress, who)
    return edit, mask, recovered_target(model, x, edit, cfg), history


class BtiDbfDetector(BaselineDetector):
    """BTI-DBF's inversion; score = collapse ratio of the inverted generator, low is suspicious (module docstring)."""

    name: ClassVar[str] = "bti_dbf"
    version: ClassVar[str] = "1.0"
    suspicious_when: ClassVar[str] = "below"
    settings_class: ClassVar[type[BaselineSettings]] = BtiDbfSettings
    default_threshold_source: ClassVar[str] = ("uncalibrated: 0.2, the inverted generator's predictions spread a "
                                               "fifth as widely as the clean ones")
    smoke_settings: ClassVar[dict] = {"mask_epochs": 2, "generator_epochs": 1, "unet_width": 4, "unet_depth": 2,
                                      "batch_size": 8}

    def run(self, model, x: torch.Tensor, progress: ProgressCallback | None) -> BaselineResult:
        cfg: BtiDbfSettings = self.config
        edit, mask, target, history = invert(model, x, cfg, progress, self.name)
        with torch.no_grad():
            _, g_clean = forward_chunks(model, x, cfg.batch_size)
            edited = torch.cat([edit(x[i:i + cfg.batch_size]) for i in range(0, len(x), cfg.batch_size)])
            _, g_edit = forward_chunks(model, edited, cfg.batch_size)
            check_finite_gaze(g_edit, "generated images")
            spread_edit, _ = collapse_spread(g_edit, CENTRE_SHARE)
            spread_clean, _ = collapse_spread(g_clean, CENTRE_SHARE)
            norm = float(nnf.mse_loss(edited, x))
        ratio = math.sqrt(float(spread_edit) / max(float(spread_clean), 1e-12))
        asr = float((angular_error_deg_torch(g_edit, target.expand_as(g_edit)) <= cfg.collapse_radius_deg)
                    .float().mean())
        details = {
            "collapse_ratio": ratio,
            "asr_generator": asr,
            "norm_mse": norm,
            "benign_mask_share": float(mask.mean()),
            "history": history,
        }
        return BaselineResult(score=ratio, target_gaze=(float(target[0]), float(target[1])), edit=edit,
                              constraints_met=norm <= cfg.norm_bound, details=details)
