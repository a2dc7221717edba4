"""K-Arm (Shen, Liu, Tao, An, Xu, Cheng, Ma, Zhang; ICML 2021), adapted to gaze regression.

K-Arm makes Neural Cleanse's per-label reversal cheap: each candidate target is an arm of a
multi-armed bandit, and instead of optimising every arm to the end, a scheduler spends each epoch on
the arm most likely to be the backdoor's. The values below are those of the public code
(github.com/PurduePAML/K-ARM_Backdoor_Optimization, ``main.py`` / ``K_Arm_Scanner.py``):

1. **Arm pre-screening**: only arms that look like targets on the clean images are optimised. K-Arm
   ranks the labels of each image by softmax score, counts for each label the share of images that
   have it among their top ``k = round(gamma * labels)`` (``gamma`` 0.25; k = 2 for <= 8 labels),
   and keeps the labels with a high share (> 0.95 for a global trigger).
2. **Warm-up**: every kept arm, in pre-screening order, is optimised until it has kept an edit
   ``warmup_rounds`` (2) times.
3. **Bandit**: after each epoch in which the current arm kept a smaller edit, the next arm is the one
   maximising ``reg_down_vel + beta / mask_l1`` (how fast its mask has shrunk since ``first_best_reg``,
   per pull, and how small it is; ``beta`` 1e4), or with probability ``epsilon_for_bandits`` (0.3) a
   random arm. An arm stops after ``arm_rounds`` (60) kept edits or once Neural Cleanse's early stop
   holds; when the stopping arm is the one with the smallest mask, the whole scan stops.
   ``total_epochs`` bounds all arms together (the public code's ``step``, 1000).
4. **Decision**: the smallest mask L1 over the arms against a bound; for a trigger on all images
   the public code's ``global_det_bound`` is 1720 pixels of a 224 x 224 input, 3.43 % of the image.

Each arm's optimisation is Neural Cleanse's (:mod:`~securegaze.defense.baselines.mask_pattern`) with
K-Arm's cost settings: cost set after 2 successful epochs, multiplied and divided by 1.5.

Gaze adaptation (docs/baselines_methods.md):

* **Arms** are the cells of a ``grid_cells`` x ``grid_cells`` grid over the clean predictions' gaze
  range, the target free inside its cell (as for Neural Cleanse).
* **Pre-screening**: a gaze model has no per-target score, so the "logit" of a cell on an image is
  the first-order Neural Cleanse cost of reaching it: the fewest pixels that, set to 0 or 1, move
  the prediction to within ``collapse_radius_deg`` of the cell's nearest point, by the input
  gradient of the angle to it (:func:`linearised_mask_cost`; cheaper = higher). The top-``k``
  counting is K-Arm's. K-Arm's share thresholds do not carry over: the cells nearest each face's own
  gaze are its cheapest on every model, so no cell is in the top ``k`` of 95 % of the faces and every
  model would be called benign before any optimisation. The ``prescreen_keep`` share of the cells with
  the highest counts is kept instead (half by default, a generous choice for the method).
* **Arms on several cells**: K-Arm's global mode has a single arm after pre-screening; its
  label-specific mode, with several arms, drops an arm that cannot reach the attack (more than 10
  pulls at 0 success, 20 below 0.3, 200 below 0.8). Those rules are used, plus one: an arm that has
  not reached ``attack_success`` after 20 pulls is dropped, so an unreachable cell cannot hold the
  warm-up forever.
* **Start and shrink speed**: the label-specific mode starts every mask as a centred square
  (``central_init``: 50 x 50 px of 224 at 0.99) and measures the shrink speed from its size
  (``first_best_reg`` = 2500 px); the global mode starts from a random mask, as Neural Cleanse. A gaze
  backdoor is global (every face), so the default is the random start, with the shrink measured from
  the arm's own size at its first kept edit (from a random start the mask is about half the image,
  so the public constant 2500 makes every speed negative, and the arm pulled most, whose speed is
  divided by the most pulls, wins every selection). On the tiny BadNets pair of the tests
  (docs/baselines_methods.md) the central start spent the budget warming arms up at 5-8 % of the
  image and kept a benign cell of the backdoored model (0.011 against the benign model's 0.010);
  the random start found the backdoor's cell (0.008 against 0.024).
* **Sizes** of masks enter the scheduler in pixels of a 224 x 224 image (the public code's
  constants 2500 and 1e4 assume it), and the decision bound is a share of the image.

Score: the smallest mask L1 of an arm that reached ``attack_success``, as a share of the image
(1.0 when none did); suspicious below the threshold (3.43 % by default). Recovered target: that arm's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from securegaze.defense.base import ScanProgress
from securegaze.defense.baselines.common import BaselineDetector, BaselineResult, predict
from securegaze.defense.baselines.mask_pattern import (
    CostSchedule,
    MaskPatternRun,
    MaskPatternSettings,
    RunOutcome,
    TargetCell,
    angle_to_target,
    run_seed,
    target_cells,
)
from securegaze.validation import check_int, check_number, check_setting

__all__ = ["KArmDetector", "KArmSettings", "central_mask", "linearised_mask_cost", "prescreen"]

#: The public code's global_det_bound (1720 px) over the 224 x 224 TrojAI inputs it was set for.
K_ARM_BOUND = 1720 / 224**2
#: Mask sizes in the scheduler are in pixels of this input side (the public code's constants assume it).
_REFERENCE_SIDE = 224
#: ``first_best_reg`` of the public scheduler, the reference mask size of the shrink speed, in such pixels.
_FIRST_BEST_REG = 2500.0
#: Side of K-Arm's central initial mask, in pixels of a 224 x 224 input (50^2 = ``_FIRST_BEST_REG``).
_CENTRAL_SIDE = 50
#: Seed stream of the bandit's random choices.
_BANDIT_STREAM = 0xB4D1


@dataclass(frozen=True)
class KArmSettings(MaskPatternSettings):
    """K-Arm's settings: Neural Cleanse's optimiser (:class:`MaskPatternSettings`, ``epochs`` here the most
    epochs of one arm) with K-Arm's cost values, plus

    * ``total_epochs``: epochs over all arms together (the public code's ``step``, 1000 there: its
      epochs are passes over ~5-20 images per label; 320 here, 20 per cell of the default grid, a
      third of Neural Cleanse's 60 per cell: the saving K-Arm is for);
    * ``warmup_rounds`` (2), ``epsilon_for_bandits`` (0.3), ``beta`` (1e4), ``arm_rounds`` (the public
      ``rounds``, 60: kept edits after which an arm stops);
    * ``gamma`` (0.25: top-``k`` share of the pre-screening), ``prescreen_keep`` (share of the cells
      kept, see the module docstring); ``central_init``: K-Arm's central start of the masks (off: the
      random start of its global mode, see the module docstring);
    * ``threshold``: on the smallest mask share (K-Arm's global bound, 1720 / 224^2).
    """

    epochs: int = 100
    init_cost: float = 1e-3
    cost_set_after: int = 2
    cost_patience: int = 5
    cost_multiplier_up: float = 1.5
    cost_multiplier_down: float = 1.5
    early_stop_patience: int = 10
    total_epochs: int = 320
    warmup_rounds: int = 2
    epsilon_for_bandits: float = 0.3
    beta: float = 1e4
    arm_rounds: int = 60
    gamma: float = 0.25
    prescreen_keep: float = 0.5
    central_init: bool = False
    threshold: float = K_ARM_BOUND

    def validate(self, who: str) -> None:
        super().validate(who)
        check_int(who, "total_epochs", self.total_epochs, 1, 1_000_000)
        check_int(who, "warmup_rounds", self.warmup_rounds, 1, 10_000)
        check_number(who, "epsilon_for_bandits", self.epsilon_for_bandits, 0.0, 1.0)
        check_number(who, "beta", self.beta, 0.0, 1e12)
        check_int(who, "arm_rounds", self.arm_rounds, 1, 100_000)
        check_number(who, "gamma", self.gamma, 0.0, 1.0, low_open=True)
        check_number(who, "prescreen_keep", self.prescreen_keep, 0.0, 1.0, low_open=True)
        check_setting(who, "central_init", isinstance(self.central_init, bool), "true or false", self.central_init)


class KArmDetector(BaselineDetector):
    """K-Arm on a gaze model: pre-screened target cells as bandit arms, Neural Cleanse's reversal per pull."""

    name = "k_arm"
    version = "1.0"
    settings_class: ClassVar[type[KArmSettings]] = KArmSettings
    suspicious_when = "below"
    default_threshold_source = ("Shen et al. (K-Arm, ICML 2021) public code: global_det_bound 1720 px of a "
                                "224x224 input = 3.43 % of the image (not calibrated on gaze models)")
    smoke_settings = {"grid_cells": 2, "epochs": 3, "total_epochs": 4, "batch_size": 8, "cost_patience": 1,
                      "cost_set_after": 1, "early_stop_patience": 1, "warmup_rounds": 1}

    def run(self, model, x, progress) -> BaselineResult:
        cfg = self.config
        size = int(x.shape[-1])
        clean = predict(model, x, cfg.batch_size)
        cells = target_cells(clean, cfg)
        kept, counts = prescreen(model, x, cells, cfg)
        if progress is not None:
            progress(ScanProgress(self.name, "prescreen", 1, 1, {"arms": float(len(kept))}))
        outcomes, pulls, stop_reason = bandit(model, x, clean, [cells[i] for i in kept], cfg, self.name, progress)
        reached = [o for o in outcomes if o is not None and o.reached]
        best = min(reached, key=lambda o: o.mask_l1) if reached else None
        shares = {o.cell.index: o.mask_l1 / size**2 for o in outcomes if o is not None}
        rows = []
        for cell in cells:
            arm = kept.index(cell.index) if cell.index in kept else None
            outcome = outcomes[arm] if arm is not None else None
            rows.append({
                "centre_deg": [float(v) for v in np.degrees(cell.centre)],
                "prescreen_share": float(counts[cell.index]),
                "kept": arm is not None,
                "pulls": 0 if arm is None else int(pulls[arm]),
                "target_deg": None if outcome is None else [float(v) for v in np.degrees(outcome.target)],
                "mask_share": shares.get(cell.index),
                "success": None if outcome is None else float(outcome.success),
                "reached": bool(outcome is not None and outcome.reached),
            })
        score = 1.0 if best is None else best.mask_l1 / size**2
        fallback = best or next((o for o in outcomes if o is not None), None)
        return BaselineResult(
            score=float(score),
            target_gaze=None if fallback is None else (float(fallback.target[0]), float(fallback.target[1])),
            edit=None if fallback is None else fallback.edit,
            constraints_met=best is not None,
            details={
                "score_statistic": "smallest_mask_l1_share",
                "target_search": f"grid of {cfg.grid_cells}x{cfg.grid_cells} cells, target free inside its cell",
                "flagged_cell": None if best is None else int(best.cell.index),
                "arms_kept": len(kept),
                "epochs_spent": int(sum(pulls)),
                "stop_reason": stop_reason,
                "cells": rows,
            },
        )


def linearised_mask_cost(model, x: torch.Tensor, cells: list[TargetCell], radius_deg: float,
                         batch_size: int) -> np.ndarray:
    """(N, K) first-order Neural Cleanse cost, in pixels, of moving each image's gaze into each cell.

    For image ``x`` and cell ``k`` with ``t`` the cell's point nearest the prediction (per axis) and
    ``a`` the angle still to cover (the angle to ``t`` less the collapse radius), the input gradient
    ``G`` of the angle to ``t`` says how far setting pixel ``p`` to the better of 0 and 1 moves the
    prediction: ``sum_c |G_cp| max(x_cp, 1 - x_cp)``. The cost is the fewest pixels, taken in order of
    that push, whose pushes add up to ``a`` (fractional; the whole image when they never do).
    """
    radius = math.radians(radius_deg)
    centres = torch.as_tensor(np.stack([c.centre for c in cells]), dtype=torch.float32, device=x.device)
    halves = torch.as_tensor(np.stack([c.half_width for c in cells]), dtype=torch.float32, device=x.device)
    pixels = x.shape[-1] * x.shape[-2]
    costs = []
    for start in range(0, len(x), batch_size):
        batch = x[start:start + batch_size].detach().requires_grad_(True)
        gaze = model(batch)
        jac = [torch.autograd.grad(gaze[:, k].sum(), batch, retain_graph=k == 0)[0] for k in range(2)]
        reach = torch.maximum(batch.detach(), 1 - batch.detach())
        rows = []
        for centre, half in zip(centres, halves, strict=True):
            g = gaze.detach().clone().requires_grad_(True)
            nearest = torch.maximum(torch.minimum(g.detach(), centre + half), centre - half)
            angle = angle_to_target(g, nearest)
            (direction,) = torch.autograd.grad(angle.sum(), g)
            grad = direction[:, 0, None, None, None] * jac[0] + direction[:, 1, None, None, None] * jac[1]
            push = (grad.abs() * reach).sum(1).flatten(1)  # (n, S*S)
            ordered = torch.sort(push, dim=1, descending=True).values
            total = ordered.cumsum(1)
            need = (angle.detach() - radius).clamp(min=0.0)
            whole = (total < need[:, None]).sum(1)  # pixels used up before the angle is covered
            reached = whole < pixels
            before = torch.where(whole > 0, total.gather(1, (whole - 1).clamp(min=0)[:, None])[:, 0],
                                 torch.zeros_like(need))
            last = ordered.gather(1, whole.clamp(max=pixels - 1)[:, None])[:, 0]
            part = ((need - before) / last.clamp(min=1e-12)).clamp(0.0, 1.0)
            rows.append(torch.where(reached, whole.float() + part, torch.full_like(need, float(pixels))))
        costs.append(torch.stack(rows, 1))
    return torch.cat(costs).double().cpu().numpy()


def prescreen(model, x: torch.Tensor, cells: list[TargetCell], cfg: KArmSettings) -> tuple[list[int], np.ndarray]:
    """K-Arm's arm pre-screening on gaze cells: (indices of the kept cells, most often cheapest first; (K,)
    top-k shares).

    ``k = round(gamma * K)`` (2 for K <= 8, as the public code); a cell's share is the share of
    clean images with it among their ``k`` cheapest cells (:func:`linearised_mask_cost`); the
    ``ceil(prescreen_keep * K)`` cells with the highest shares are kept (ties: the lower mean cost).
    """
    count = len(cells)
    cost = linearised_mask_cost(model, x, cells, cfg.collapse_radius_deg, cfg.batch_size)
    k = min(count, 2 if count <= 8 else max(1, round(cfg.gamma * count)))
    # Stable order: cost, then cell index, so ties (several cells at cost 0) do not depend on the sort.
    ranks = np.argsort(cost, axis=1, kind="stable")[:, :k]
    shares = np.bincount(ranks.ravel(), minlength=count) / len(cost)
    keep = max(1, math.ceil(cfg.prescreen_keep * count))
    order = sorted(range(count), key=lambda i: (-shares[i], float(cost[:, i].mean()), i))
    return order[:keep], shares


def bandit(model, x: torch.Tensor, clean_gaze: np.ndarray, cells: list[TargetCell], cfg: KArmSettings,
           detector: str, progress) -> tuple[list[RunOutcome | None], list[int], str]:
    """K-Arm's scheduler over ``cells``: (outcome per arm, None for an arm never pulled; pulls; why it stopped)."""
    count = len(cells)
    gaze = torch.as_tensor(clean_gaze, dtype=torch.float32, device=x.device)
    scale = (_REFERENCE_SIDE / x.shape[-1]) ** 2  # mask pixels -> pixels of a 224 x 224 input
    runs = [MaskPatternRun(model, x, gaze, cell, cfg, run_seed(cfg.seed, cell.index),
                           schedule=CostSchedule(cfg.init_cost, cfg.cost_set_after, cfg.cost_patience,
                                                 cfg.cost_multiplier_up, cfg.cost_multiplier_down),
                           initial_mask=central_mask if cfg.central_init else None)
            for cell in cells]
    rng = np.random.default_rng([cfg.seed, _BANDIT_STREAM])
    stopped = [False] * count
    down_speed = [-1e10] * count
    last_reg = [1e10] * count
    # The shrink speed is measured from ``first_best_reg``: the public code's 2500 px, the size of its
    # central initial mask; from a random start, the arm's own size at its first kept edit.
    first_reg = [_FIRST_BEST_REG if cfg.central_init else None] * count
    selecting = False
    current, reason = 0, "total_epochs"
    for step in range(cfg.total_epochs):
        run = runs[current]
        stats = run.epoch()
        last_reg[current] = stats.mask_l1 * scale
        if stats.improved:
            if first_reg[current] is None:
                first_reg[current] = last_reg[current]
            down_speed[current] = (first_reg[current] - last_reg[current]) / (run.times_improved + run.epochs / 2)
        if progress is not None:
            progress(ScanProgress(detector, "bandit", step + 1, cfg.total_epochs,
                                  {"cell": float(cells[current].index), "mask_l1": stats.mask_l1,
                                   "success": stats.success, "cost": float(run.schedule.cost)}))
        if _hopeless(run, cfg) or run.epochs >= cfg.epochs:
            stopped[current] = True
        if selecting and (run.times_improved > cfg.arm_rounds or run.converged()):
            best_arm = int(np.argmin([r.best_reg for r in runs]))
            if current == best_arm:
                reason = "best arm converged"
                break
            stopped[current] = True
        active = [i for i in range(count) if not stopped[i]]
        if not active:
            reason = "every arm stopped"
            break
        if stopped[current]:
            fresh = [i for i in active if runs[i].epochs == 0]
            current = fresh[0] if fresh else int(rng.choice(active))
            continue
        warm = run.times_improved >= cfg.warmup_rounds
        if stats.improved and warm and all(runs[i].times_improved >= cfg.warmup_rounds for i in active):
            selecting = True
            if rng.random() < cfg.epsilon_for_bandits and len(active) > 1:
                current = int(rng.choice(active))
            else:
                current = max(active, key=lambda i: down_speed[i] + cfg.beta / last_reg[i])
        elif not warm or not stats.improved:
            continue
        else:
            current = next(i for i in active if runs[i].times_improved < cfg.warmup_rounds)
    outcomes = [run.finish() if run.epochs > 0 else None for run in runs]
    return outcomes, [run.epochs for run in runs], reason


def central_mask(size: int, generator: torch.Generator) -> torch.Tensor:
    """K-Arm's ``central_init`` mask, (S, S): 0.99 on a centred square of 50/224 of the side, 0.001 x
    uniform noise elsewhere (the public code's start for several arms; its area, 50^2 px of a 224 x 224
    input, is the scheduler's reference size ``first_best_reg``)."""
    mask = torch.rand(size, size, generator=generator) * 0.001
    side = max(1, round(_CENTRAL_SIDE * size / _REFERENCE_SIDE))
    start = (size - side) // 2
    mask[start:start + side, start:start + side] = 0.99
    return mask


def _hopeless(run: MaskPatternRun, cfg: KArmSettings) -> bool:
    """K-Arm's rules for an arm that cannot reach the attack, and the one added here (module docstring)."""
    pulls, best = run.epochs, run.best_success
    return ((pulls > 10 and best == 0) or (pulls > 20 and best < 0.3) or (pulls > 200 and best < 0.8)
            or (pulls > 20 and run.best_state is None))
