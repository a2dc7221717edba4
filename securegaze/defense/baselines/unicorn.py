"""UNICORN (Wang, Mei, Zhai and Ma, ICLR 2023) adapted to gaze regression.

The method. A trigger is a perturbation in *some* input space: a backdoor input is
``x' = phi^-1((1 - m) * phi(x) + m * t)`` for an invertible transformation ``phi`` (the identity for
a patch, a colour space for a filter, a frequency or warping space ...), a mask ``m`` and a pattern
``t`` in that space. UNICORN learns ``phi`` and its inverse as two U-Nets P and Q together with
``m`` and ``t``, under four constraints:

* invertibility: ``MSE(Q(P(x)), x)`` small (weight 200);
* mask size: ``|m|_1`` at most ``input_mask_bound`` (0.15) of the input's C x S x S values;
* stealthiness: ``1 - SSIM(x', x)`` at most ``ssim_bound`` (0.15);
* disentanglement, in the model's feature space: a second mask ``m_f`` over the features picks the
  "backdoor" part; the features ``m_f * F(x') + (1 - m_f) * F(x_ref)`` of a triggered image mixed
  with those of another clean image must still give the target (so the trigger's effect lives in
  few features, ``|m_f|_1`` at most ``feature_mask_bound`` = 0.15 of them), those masked features
  must be consistent over the inputs (their spread bounded), and the triggered features' mean must
  not resemble the target's benign features (cosine similarity driven to 0).

Bounds are hinges (a term counts only while its bound is broken), each with a weight that the run
raises by how far the last pass over the images broke it; the attack-success term counts while
fewer than ``success_share`` (0.9) of a batch reach the target. Per batch the official code takes one
step of both U-Nets (Adam 1e-3, betas 0.5/0.9), ten of the input mask and pattern (Adam 0.1) and ten
of the feature mask (Adam 0.1). Sources: the paper (openreview Mj7K4lglGyj) and the public code
(github.com/RU-System-Software-and-Security/UNICORN: ``config.py``, ``inversion.py``), whose
defaults are quoted in :class:`UnicornSettings`.

Adaptation to gaze regression (each choice is the one that favours the method):

* target: an optimisation variable, not a grid. It follows the densest gaze of the mixed-feature
  predictions (the trimmed centre of :func:`~securegaze.defense.securegaze.statistics.collapse_spread`,
  smoothed over steps), so one inversion searches every target at once and settles where the model
  collapses most easily: a backdoor's target when there is one. A grid would cost one inversion per
  cell, and a coarse one would miss the target by up to half a cell;
* attack success: the cross-entropy towards the target label becomes
  :func:`~securegaze.defense.baselines.unet.target_pull` (pseudo-Huber of the angle to the target in
  units of ``collapse_radius_deg``); a batch "succeeds" when ``success_share`` of it lies within that
  radius of the target (ASR@5 deg);
* the target's benign features (for the cosine term) are the mean features of the clean images the
  model already sends closest to the target (``target_neighbours`` of them): a regression has no class;
* the feature space is F's output (the penultimate vector), the only split every model here exposes;
  the feature-spread bound is relative (masked spread of the triggered features over that of the
  clean ones), since an absolute bound (1 in the official code) depends on the family's feature scale;
* P and Q start as the identity (:class:`~securegaze.defense.baselines.unet.SmallUNet`), which is
  what the official 500 epochs of identity pretraining aim at, and P's output is not min-max
  normalised per batch (that made the edit of an image depend on the rest of its batch);
* one optimisation step updates the U-Nets and the input mask and pattern together (each group's
  gradient comes from the same losses as in the official alternation; its extra input-mask steps per
  batch are ``input_mask_steps``); the feature-mask steps run on cached features, so they are kept at
  the official ten.

Score: the paper measures a successful inversion by the attack success rate of the inverted trigger
(ASR-Inv), and a backdoored model is one whose inversion reaches it within the stealthiness bounds.
On gaze models the bounds are loose enough for a benign model to collapse too: on the tiny test pair
(three seed shifts) ASR-Inv came out 0.90, 1.00, 1.00 benign against 1.00 for every backdoored model,
and the collapse ratio of the inverted edit (trimmed output spread over the clean one) did not
separate them either (benign 0.089, 0.003, 0.004; backdoored 0.025, 0.028, 0.029). What did differ is
what the successful edit cost: the score is the *stealthiness spent*, ``1 - SSIM(x', x)`` over the
clean images, of an inversion that reached ASR-Inv >= ``success_share`` (inf when it did not), in the
spirit of Neural Cleanse's mask norm: a backdoor is a cheap way to the target. Suspicious below
(tiny pair: benign inf (ASR-Inv 0.898; 1 - SSIM 0.118), 0.140, 0.143; backdoored 0.136, 0.074,
0.112). This statistic was chosen
after seeing those six models, so their figures flatter it; ASR-Inv is the report's
``collapsed_share`` and ``details.asr_inv``, the collapse ratio ``details.collapse_ratio``.

Budget: the official run is 1000 epochs over 500 images in batches of 256 (2000 steps, each with 21
inner steps) plus the identity pretraining: hours on a GPU per target label. Here ``steps`` (200)
joint steps of batch 32 with U-Nets of width 16 and depth 3 (official 32 and 4) fit a 64-px,
256-image scan into about two minutes on two CPU cores; with a GPU, ``steps=2000``,
``unet_width=32``, ``unet_depth=4``, ``input_mask_steps=10`` restore the official budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from securegaze.defense.base import ProgressCallback, ScanProgress
from securegaze.defense.baselines.common import (
    BaselineDetector,
    BaselineResult,
    BaselineSettings,
    ReversedEdit,
    scan_batches,
)
from securegaze.defense.baselines.unet import SmallUNet, UNetShape, bounded, ssim, target_pull
from securegaze.defense.securegaze.reversal import forward_chunks
from securegaze.defense.securegaze.statistics import check_finite_gaze, collapse_spread, mean_gaze
from securegaze.geometry import angular_error_deg_torch
from securegaze.validation import check_int, check_number

#: Momentum of the target's smoothing over steps.
_TARGET_MOMENTUM = 0.8
#: Share of images whose trimmed centre defines a batch's densest gaze (SecureGaze's collapse_share).
_CENTRE_SHARE = 0.6


@dataclass(frozen=True)
class UnicornSettings(BaselineSettings):
    """UNICORN's settings (official defaults in brackets; bounds are hinges, see the module docstring).

    * ``steps``: joint optimisation steps of the U-Nets and the input mask and pattern [2000: 1000
      epochs of 2 batches]; ``input_mask_steps``: extra steps of the input mask and pattern per step
      [10, see the module docstring]; ``feature_mask_steps``: steps of the feature mask per step [10];
    * ``unet_width``, ``unet_depth``: P's and Q's first-block channels and levels [32, 4];
    * ``unet_lr`` [1e-3], ``mask_lr`` [0.1]: Adam rates (betas 0.5, 0.9 as in the code);
    * ``input_mask_bound`` [0.15]: share of the C x S x S mask values the L1 norm may reach;
      ``feature_mask_bound`` [0.15]: the same for the feature mask; ``ssim_bound`` [0.15]: on
      ``1 - SSIM(x', x)``; ``std_bound``: masked feature spread of the triggered images over that of
      the clean ones [1, absolute, see the module docstring];
    * ``success_share`` [0.9]: batch share within ``collapse_radius_deg`` of the target that counts as
      success; ``mapping_weight`` [200]: weight of the invertibility loss; ``dist_weight`` [1]: of the
      cosine term; ``target_neighbours``: share of the clean images, nearest the target, whose mean
      features stand for the target's benign features (no official value: a class has them all).
    """

    steps: int = 200
    input_mask_steps: int = 0
    feature_mask_steps: int = 10
    unet_width: int = 16
    unet_depth: int = 3
    unet_lr: float = 1e-3
    mask_lr: float = 0.1
    input_mask_bound: float = 0.15
    feature_mask_bound: float = 0.15
    ssim_bound: float = 0.15
    std_bound: float = 0.5
    success_share: float = 0.9
    mapping_weight: float = 200.0
    dist_weight: float = 1.0
    target_neighbours: float = 0.1
    threshold: float = 0.1

    def validate(self, who: str) -> None:
        super().validate(who)
        check_int(who, "steps", self.steps, 1, 1_000_000)
        check_int(who, "input_mask_steps", self.input_mask_steps, 0, 100)
        check_int(who, "feature_mask_steps", self.feature_mask_steps, 0, 100)
        UNetShape(self.unet_width, self.unet_depth).validate(who)
        for name in ("unet_lr", "mask_lr"):
            check_number(who, name, getattr(self, name), 0.0, 10.0, low_open=True)
        for name in ("input_mask_bound", "feature_mask_bound", "ssim_bound", "success_share", "target_neighbours"):
            check_number(who, name, getattr(self, name), 0.0, 1.0, low_open=True)
        check_number(who, "std_bound", self.std_bound, 0.0, 100.0, low_open=True)
        check_number(who, "mapping_weight", self.mapping_weight, 0.0, 1e6)
        check_number(who, "dist_weight", self.dist_weight, 0.0, 1e6)


class UnicornEdit(ReversedEdit):
    """The inverted trigger ``x' = Q((1 - m) * P(x) + m * t)`` (clipped to [0, 1]).

    ``forward(x, strength)`` returns ``x + strength * (x' - x)``, clipped: 1 is the edit as inverted.
    """

    def __init__(self, input_size: int, shape: UNetShape, seed: int) -> None:
        super().__init__()
        self.input_size = int(input_size)
        self.P = SmallUNet(input_size, shape, mode="free", seed=seed)
        self.Q = SmallUNet(input_size, shape, mode="free", seed=seed + 1)
        # The official initial values: the mask starts at tanh(1) (0.88 everywhere), the pattern at 0.5.
        self.mask_raw = nn.Parameter(torch.ones(1, 3, input_size, input_size))
        self.pattern_raw = nn.Parameter(torch.zeros(1, 3, input_size, input_size))

    def mask(self) -> torch.Tensor:
        return bounded(self.mask_raw)

    def transformed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(P(x), the triggered images Q((1 - m) P(x) + m t) clipped to [0, 1])."""
        p = self.P(x)
        m = self.mask()
        return p, self.Q((1.0 - m) * p + m * bounded(self.pattern_raw)).clamp(0.0, 1.0)

    def forward(self, x: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
        _, triggered = self.transformed(x)
        return (x + strength * (triggered - x)).clamp(0.0, 1.0)


def densest_gaze(gaze: torch.Tensor) -> torch.Tensor:
    """(2,) radians: the mean gaze of the ``_CENTRE_SHARE`` of (N, 2) gazes closest to their own centre."""
    _, kept = collapse_spread(gaze.detach(), _CENTRE_SHARE)
    centre = mean_gaze(gaze.detach()[kept].double().cpu().numpy())
    return torch.as_tensor(np.asarray(centre, dtype=np.float32), device=gaze.device)


class UnicornDetector(BaselineDetector):
    """UNICORN's inversion with a free gaze target; score = 1 - SSIM of a successful inversion, low is
    suspicious (module docstring)."""

    name: ClassVar[str] = "unicorn"
    version: ClassVar[str] = "1.0"
    suspicious_when: ClassVar[str] = "below"
    settings_class: ClassVar[type[BaselineSettings]] = UnicornSettings
    default_threshold_source: ClassVar[str] = ("uncalibrated: 0.1, below the tiny test pair's benign scores "
                                               "(0.140, 0.143, inf)")
    smoke_settings: ClassVar[dict] = {"steps": 3, "feature_mask_steps": 2, "unet_width": 4, "unet_depth": 2,
                                      "batch_size": 8}

    def run(self, model, x: torch.Tensor, progress: ProgressCallback | None) -> BaselineResult:
        cfg: UnicornSettings = self.config
        n, size = len(x), int(x.shape[-1])
        batch = min(cfg.batch_size, n)
        with torch.no_grad():
            z_clean, g_clean = forward_chunks(model, x, cfg.batch_size)
        check_finite_gaze(g_clean, "clean images")
        clean_std = z_clean.std(0).clamp_min(1e-8)
        dims = z_clean.shape[1]

        edit = UnicornEdit(size, UNetShape(cfg.unet_width, cfg.unet_depth), cfg.seed).to(x.device)
        feature_raw = nn.Parameter(torch.ones(dims, device=x.device))
        betas = (0.5, 0.9)
        opt_unet = torch.optim.Adam([*edit.P.parameters(), *edit.Q.parameters()], lr=cfg.unet_lr, betas=betas)
        opt_input = torch.optim.Adam([edit.mask_raw, edit.pattern_raw], lr=cfg.mask_lr, betas=betas)
        opt_feature = torch.optim.Adam([feature_raw], lr=cfg.mask_lr, betas=betas)
        input_limit = cfg.input_mask_bound * edit.mask_raw.numel()
        feature_limit = cfg.feature_mask_bound * dims
        target = torch.as_tensor(np.asarray(mean_gaze(g_clean.double().cpu().numpy()), np.float32), device=x.device)
        neighbours = max(2, math.ceil(cfg.target_neighbours * n))
        weights = {"ssim": 1.0, "success": 1.0, "std": 1.0}  # the official code starts them at 1
        epoch = {"ssim": [], "success": [], "std": []}
        steps_per_epoch = max(1, n // batch)
        generator = torch.Generator().manual_seed(cfg.seed)
        batches = scan_batches(n, batch, generator)
        history: list[dict[str, float]] = []

        def success(gaze: torch.Tensor) -> float:
            return (angular_error_deg_torch(gaze, target.expand_as(gaze)) <= cfg.collapse_radius_deg).float().mean().item()

        def losses(idx: torch.Tensor, ref: torch.Tensor) -> tuple[torch.Tensor, dict[str, float], torch.Tensor, torch.Tensor]:
            xb = x[idx]
            p, triggered = edit.transformed(xb)
            z_t = model.features(triggered)
            m_f = bounded(feature_raw)
            mixed = model.head(m_f * z_t + (1.0 - m_f) * z_clean[ref])
            check_finite_gaze(mixed, "inverted-trigger images")
            near = torch.topk(angular_error_deg_torch(g_clean, target.expand_as(g_clean)), neighbours,
                              largest=False).indices
            cosine = torch.cosine_similarity(z_clean[near].mean(0), z_t.mean(0), dim=0)
            spread = (m_f * z_t.std(0)).sum() / (m_f * clean_std).sum()
            stealth = 1.0 - ssim(triggered, xb)
            rate = success(mixed.detach())
            mask_norm = edit.mask().sum()
            total = cfg.dist_weight * cosine.clamp_min(0.0)
            if spread.item() > cfg.std_bound:
                total = total + 10.0 * (1.0 + weights["std"]) * spread
            if stealth.item() > cfg.ssim_bound:
                total = total + 10.0 * (1.0 + weights["ssim"]) * stealth
            if rate < cfg.success_share:
                total = total + (1.0 + weights["success"]) * target_pull(mixed, target, cfg.collapse_radius_deg)
            if mask_norm.item() > input_limit:  # gradient reaches only the input mask
                total = total + 10.0 * mask_norm
            figures = {"stealth": stealth.item(), "success": rate, "spread": spread.item(),
                       "cosine": cosine.item(), "input_mask_share": mask_norm.item() / edit.mask_raw.numel()}
            return total, figures, z_t, p

        for step in range(1, cfg.steps + 1):
            idx = next(batches).to(x.device)
            ref = idx[torch.randperm(len(idx), generator=generator).to(x.device)]
            total, figures, z_t, p = losses(idx, ref)
            mapping = nn.functional.mse_loss(edit.Q(p), x[idx])
            opt_unet.zero_grad(set_to_none=True)
            opt_input.zero_grad(set_to_none=True)
            (total + cfg.mapping_weight * mapping).backward()
            opt_unet.step()
            opt_input.step()
            for _ in range(cfg.input_mask_steps):
                extra = losses(idx, ref)[0]
                opt_input.zero_grad(set_to_none=True)
                extra.backward()
                opt_input.step()
            z_fixed = z_t.detach()
            for _ in range(cfg.feature_mask_steps):
                m_f = bounded(feature_raw)
                loss = target_pull(model.head(m_f * z_fixed + (1.0 - m_f) * z_clean[ref]), target,
                                   cfg.collapse_radius_deg)
                if m_f.sum().item() > feature_limit:
                    loss = loss + m_f.sum()
                opt_feature.zero_grad(set_to_none=True)
                loss.backward()
                opt_feature.step()
            with torch.no_grad():
                m_f = bounded(feature_raw)
                mixed = model.head(m_f * z_fixed + (1.0 - m_f) * z_clean[ref])
                target = _TARGET_MOMENTUM * target + (1.0 - _TARGET_MOMENTUM) * densest_gaze(mixed)
            for key, value in (("ssim", figures["stealth"]), ("success", figures["success"]),
                               ("std", figures["spread"])):
                epoch[key].append(value)
            if step % steps_per_epoch == 0:
                # The official per-epoch update: each weight grows with how far its bound was broken.
                weights["ssim"] = max(np.mean(epoch["ssim"]) - cfg.ssim_bound, 0.0) / cfg.ssim_bound
                weights["success"] = max(cfg.success_share - np.mean(epoch["success"]), 0.0) / cfg.success_share
                weights["std"] = max(np.mean(epoch["std"]) - cfg.std_bound, 0.0) / cfg.std_bound
                epoch = {key: [] for key in epoch}
            values = {**figures, "mapping": mapping.item(), "feature_mask_share": m_f.mean().item()}
            if step == cfg.steps or step % steps_per_epoch == 0:
                history.append({"step": step, **{k: round(float(v), 6) for k, v in values.items()}})
            if progress:
                progress(ScanProgress(self.name, "invert", step, cfg.steps, values))
        return self._finish(model, x, edit, feature_raw, g_clean, target, history)

    def _finish(self, model, x: torch.Tensor, edit: UnicornEdit, feature_raw: torch.Tensor, g_clean: torch.Tensor,
                tracked: torch.Tensor, history: list) -> BaselineResult:
        """The inverted trigger on every clean image: ASR-Inv around its densest gaze, and the constraints."""
        cfg: UnicornSettings = self.config
        edit.eval()
        with torch.no_grad():
            triggered = torch.cat([edit(x[i:i + cfg.batch_size]) for i in range(0, len(x), cfg.batch_size)])
            _, g_t = forward_chunks(model, triggered, cfg.batch_size)
            check_finite_gaze(g_t, "inverted-trigger images")
            stealth = float(1.0 - ssim(triggered, x))
            mapping = float(torch.cat([(edit.Q(edit.P(x[i:i + cfg.batch_size])) - x[i:i + cfg.batch_size]).pow(2)
                                       .flatten(1).mean(1) for i in range(0, len(x), cfg.batch_size)]).mean())
            spread_t, _ = collapse_spread(g_t, _CENTRE_SHARE)
            spread_c, _ = collapse_spread(g_clean, _CENTRE_SHARE)
        target = densest_gaze(g_t)
        asr = float((angular_error_deg_torch(g_t, target.expand_as(g_t)) <= cfg.collapse_radius_deg).float().mean())
        mask_share = float(edit.mask().detach().mean())
        feature_share = float(bounded(feature_raw.detach()).mean())
        met = asr >= cfg.success_share and stealth <= cfg.ssim_bound and mask_share <= cfg.input_mask_bound
        ratio = math.sqrt(float(spread_t) / max(float(spread_c), 1e-12))
        details = {
            "collapse_ratio": ratio,
            "asr_inv": asr,
            "one_minus_ssim": stealth,
            "input_mask_share": mask_share,
            "feature_mask_share": feature_share,
            "invertibility_mse": mapping,
            "tracked_target_deg": [math.degrees(float(v)) for v in tracked],
            "history": history,
        }
        score = stealth if asr >= cfg.success_share else math.inf
        return BaselineResult(score=score, target_gaze=(float(target[0]), float(target[1])), edit=edit,
                              constraints_met=bool(met), details=details)
