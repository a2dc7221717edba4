"""The mask + pattern trigger of Neural Cleanse, TABOR and K-Arm, and the optimiser they share.

Neural Cleanse (Wang et al., IEEE S&P 2019; public code github.com/bolunwang/backdoor) models a
trigger as a mask ``m`` (S x S, in [0, 1]) and a pattern ``p`` (3 x S x S, in [0, 1]) stamped on an
image: ``x' = (1 - m) * x + m * p``. For each candidate target it minimises the model's loss towards
the target plus ``cost * |m|_1``, with ``cost`` adapted during the run so that the attack keeps
succeeding while the mask shrinks. TABOR adds regularisers to that loss, K-Arm schedules several such
runs as arms of a bandit; all three use this module.

Adaptation to gaze regression (docs/baselines_methods.md):

* **Target**: one run per cell of a ``grid_cells`` x ``grid_cells`` grid over the clean
  predictions' gaze range (:func:`~securegaze.defense.baselines.common.gaze_grid`), where a
  classification defense runs one per label. Inside its cell the target is an optimisation
  variable (``centre + half_width * tanh(u)`` per axis), so a backdoor target anywhere in the range
  is reachable by the run of its cell; it cannot leave the cell, so two runs never chase the same
  collapse and the cells stay a population for the outlier statistics, as labels are.
* **Loss towards the target** (the cross-entropy of the classification original): the mean angle
  between the triggered predictions and the target, in units of ``collapse_radius_deg``.
* **Attack success**: the share of triggered predictions within ``collapse_radius_deg`` of the
  target (the ASR@5 deg convention of docs/architecture.md section 5).

The optimiser is Neural Cleanse's: the mask and the pattern live in tanh space
(``tanh(v) / (2 - eps) + 0.5``), Adam with betas (0.5, 0.9), random initialisation, the cost starts
at 0 and is set to ``init_cost`` once the attack has succeeded for ``cost_set_after`` epochs, then
multiplied by ``cost_multiplier_up`` after ``cost_patience`` successful epochs and divided by
``cost_multiplier_down`` after as many failed ones; the kept edit is the one with the smallest
mean mask norm over an epoch whose attack success reached ``attack_success``; early stop once the
cost has gone both up and down and the kept norm has not improved for ``early_stop_patience``
epochs. An epoch is one pass over the clean images in random batches (Neural Cleanse's "step" is a
pass over ~1000 images).
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from securegaze.defense.base import ProgressCallback, ScanProgress
from securegaze.defense.baselines.common import (
    BaselineSettings,
    ReversedEdit,
    gaze_grid,
    gaze_vectors,
    scan_batches,
)
from securegaze.validation import check_int, check_number

__all__ = [
    "CostSchedule", "MaskPatternEdit", "MaskPatternRun", "MaskPatternSettings", "RunOutcome", "TargetCell",
    "angle_to_target", "gaze_cells", "mask_smoothness", "reverse_every_cell", "run_seed", "target_cells",
]

#: Neural Cleanse's epsilon in ``tanh(v) / (2 - eps) + 0.5`` (keras' K.epsilon()): keeps arctanh finite.
TANH_EPS = 1e-7
#: Seed stream of a run's initialisation and batch order (with the scan seed and the run's cell).
RUN_STREAM = 0x4E43


@dataclass(frozen=True)
class MaskPatternSettings(BaselineSettings):
    """Settings of the mask + pattern optimisation (Neural Cleanse's, with its public code's values).

    * ``grid_cells``: target cells per gaze axis (``grid_cells``^2 runs; 4 x 4 = 16 candidates, more
      than CIFAR-10's 10 labels); ``grid_margin``: the grid points span the 2nd..98th percentile of the
      clean predictions widened by this share of that span on each side (:func:`gaze_grid`), and the
      cells reach half a spacing beyond the outer points. 0 by default: with 0.25 the outer ring of a
      4 x 4 grid lies wholly outside the clean range, 12 of 16 candidates are gazes the model hardly
      makes, and they set the median the ordinary cells are compared with;
    * ``epochs``: most epochs (passes over the clean images) per target;
    * ``lr``: Adam's rate on the tanh-space mask, pattern and target (NC: 0.1, betas (0.5, 0.9));
    * ``init_cost``: the mask-norm weight once the attack first succeeds (NC: 1e-3);
    * ``cost_set_after``: successful epochs at cost 0 before the cost is set (NC: its patience, 5);
    * ``cost_patience``: successful (failed) epochs before the cost goes up (down) (NC example: 5);
    * ``cost_multiplier_up`` / ``cost_multiplier_down``: NC's example script: 2 and 2^1.5;
    * ``attack_success``: the attack-success share a kept edit needs. NC's 0.99 is the success of a
      classification backdoor; the default gaze attacks flip 92-100 % of the faces to within 5 deg
      (docs/attack_strength.md), the tiny test models 77-96 % (tests/README.md), so 0.99 would ask a
      real trigger for more than it does and force a larger mask than the backdoor's own. 0.9 is the
      default, the choice most favourable to the method (docs/baselines_methods.md: measured);
    * ``early_stop_patience``: epochs without a smaller kept norm (once the cost went both ways)
      before the run stops (NC example: 5 x patience = 25).
    """

    grid_cells: int = 4
    grid_margin: float = 0.0
    epochs: int = 60
    lr: float = 0.1
    init_cost: float = 1e-3
    cost_set_after: int = 5
    cost_patience: int = 5
    cost_multiplier_up: float = 2.0
    cost_multiplier_down: float = 2.0 ** 1.5
    attack_success: float = 0.9
    early_stop_patience: int = 25

    def validate(self, who: str) -> None:
        super().validate(who)
        check_int(who, "grid_cells", self.grid_cells, 1, 64)
        check_number(who, "grid_margin", self.grid_margin, 0.0, 2.0)
        check_int(who, "epochs", self.epochs, 1, 100_000)
        check_number(who, "lr", self.lr, 0.0, 10.0, low_open=True)
        check_number(who, "init_cost", self.init_cost, 0.0, 1e6, low_open=True)
        check_int(who, "cost_set_after", self.cost_set_after, 1, 100_000)
        check_int(who, "cost_patience", self.cost_patience, 1, 100_000)
        check_number(who, "cost_multiplier_up", self.cost_multiplier_up, 1.0, 100.0, low_open=True)
        check_number(who, "cost_multiplier_down", self.cost_multiplier_down, 1.0, 100.0, low_open=True)
        check_number(who, "attack_success", self.attack_success, 0.0, 1.0, low_open=True)
        check_int(who, "early_stop_patience", self.early_stop_patience, 1, 100_000)


class MaskPatternEdit(ReversedEdit):
    """``x' = (1 - m) * x + m * p``: a mask (1, 1, S, S) and a pattern (1, 3, S, S), both in [0, 1].

    Stored in Neural Cleanse's tanh space (``mask_tanh``, ``pattern_tanh``) so the optimiser needs no
    clipping. ``forward(x, strength)`` applies the mask ``strength`` times as deep (clipped to 1):
    the same pattern, stamped more opaquely and, where the mask was faint, over more pixels.
    """

    def __init__(self, input_size: int, mask: torch.Tensor | None = None, pattern: torch.Tensor | None = None) -> None:
        super().__init__()
        self.input_size = int(input_size)
        s = self.input_size
        mask = torch.full((s, s), 0.5) if mask is None else torch.as_tensor(mask, dtype=torch.float32)
        pattern = torch.full((3, s, s), 0.5) if pattern is None else torch.as_tensor(pattern, dtype=torch.float32)
        self.mask_tanh = torch.nn.Parameter(_to_tanh(mask.reshape(1, 1, s, s)))
        self.pattern_tanh = torch.nn.Parameter(_to_tanh(pattern.reshape(1, 3, s, s)))

    @property
    def mask(self) -> torch.Tensor:
        """(1, 1, S, S) in [0, 1]."""
        return torch.tanh(self.mask_tanh) / (2 - TANH_EPS) + 0.5

    @property
    def pattern(self) -> torch.Tensor:
        """(1, 3, S, S) in [0, 1]."""
        return torch.tanh(self.pattern_tanh) / (2 - TANH_EPS) + 0.5

    def forward(self, x: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
        mask = self.mask if strength == 1.0 else (self.mask * float(strength)).clamp(0.0, 1.0)
        return (1 - mask) * x + mask * self.pattern

    def mask_l1(self) -> float:
        """Neural Cleanse's trigger size: the sum of the mask over the S x S pixels."""
        return float(self.mask.detach().sum())


def _uniform_mask(size: int, generator: torch.Generator) -> torch.Tensor:
    """Neural Cleanse's initial mask: uniform in [0, 1] per pixel, (S, S)."""
    return torch.rand(size, size, generator=generator)


def _to_tanh(values: torch.Tensor) -> torch.Tensor:
    """Inverse of ``tanh(v) / (2 - eps) + 0.5`` for values in [0, 1] (NC's reset_state)."""
    return torch.atanh((values.clamp(0.0, 1.0) - 0.5) * (2 - TANH_EPS))


def angle_to_target(gaze: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(N,) angle in radians between (N, 2) radian gazes and a (2,) radian target (or one (N, 2) target
    per gaze); differentiable, and smooth at 0 unlike an arccos."""
    a = gaze_vectors(gaze)
    b = gaze_vectors(target.reshape(-1, 2).to(gaze.dtype))
    chord = torch.sqrt((a - b).pow(2).sum(-1) + 1e-12)
    return 2.0 * torch.asin((chord / 2.0).clamp(max=1.0))


def mask_smoothness(image: torch.Tensor) -> torch.Tensor:
    """Sum of squared differences between vertically and horizontally adjacent pixels of (..., S, S)
    (TABOR's smoothness term: small for a compact blob, large for scattered pixels)."""
    return (image[..., 1:, :] - image[..., :-1, :]).pow(2).sum() + (image[..., :, 1:] - image[..., :, :-1]).pow(2).sum()


@dataclass(frozen=True)
class TargetCell:
    """One candidate target: the cell of the gaze grid around ``centre`` ((2,) radians), within
    ``half_width`` ((2,) radians) of it on each axis; ``index`` in the grid."""

    index: int
    centre: np.ndarray
    half_width: np.ndarray


def gaze_cells(grid: np.ndarray, cells: int) -> list[TargetCell]:
    """The cells of a :func:`gaze_grid` of ``cells`` x ``cells`` points: each point with half the grid
    spacing on either side (so the cells tile the gridded range; a single cell spans it all)."""
    grid = np.asarray(grid, dtype=np.float64)
    if cells == 1:
        half = np.full(2, math.radians(90.0))
    else:
        square = grid.reshape(cells, cells, 2)
        half = np.array([square[1, 0, 0] - square[0, 0, 0], square[0, 1, 1] - square[0, 0, 1]]) / 2.0
    return [TargetCell(i, grid[i].copy(), half.copy()) for i in range(len(grid))]


@dataclass
class CostSchedule:
    """Neural Cleanse's adaptive weight of the mask norm (``visualizer.py``), one per run."""

    init_cost: float
    set_after: int
    patience: int
    multiplier_up: float
    multiplier_down: float
    cost: float = 0.0
    set_counter: int = 0
    up_counter: int = 0
    down_counter: int = 0
    up_flag: bool = False
    down_flag: bool = False

    def update(self, succeeded: bool) -> None:
        """After an epoch: set, raise or lower the cost from whether the attack succeeded."""
        if self.cost == 0 and succeeded:
            self.set_counter += 1
            if self.set_counter >= self.set_after:
                self.cost = self.init_cost
                self.up_counter = self.down_counter = 0
                self.up_flag = self.down_flag = False
        else:
            self.set_counter = 0
        if succeeded:
            self.up_counter, self.down_counter = self.up_counter + 1, 0
        else:
            self.up_counter, self.down_counter = 0, self.down_counter + 1
        if self.up_counter >= self.patience:
            self.up_counter = 0
            self.cost *= self.multiplier_up
            self.up_flag = True
        elif self.down_counter >= self.patience:
            self.down_counter = 0
            self.cost /= self.multiplier_down
            self.down_flag = True


@dataclass
class EpochStats:
    """Means over one epoch's batches: ``loss`` (towards the target, radius units), ``mask_l1``,
    ``success`` (attack-success share), and whether the run kept a new smallest edit (``improved``)."""

    loss: float
    mask_l1: float
    success: float
    improved: bool


@dataclass
class RunOutcome:
    """A finished run: the kept ``edit`` (the smallest successful one, else the last), its ``target``
    ((2,) radians), ``mask_l1`` (sum of the mask), ``success`` (attack-success share of the kept edit on
    every clean image), ``reached`` (an epoch met ``attack_success``), ``epochs`` run."""

    cell: TargetCell
    edit: MaskPatternEdit
    target: np.ndarray
    mask_l1: float
    success: float
    reached: bool
    epochs: int
    extra: dict = field(default_factory=dict)


#: An extra loss term ``(edit, batch, clean_gaze_of_batch, target) -> scalar tensor`` (TABOR's regularisers).
ExtraLoss = Callable[[MaskPatternEdit, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class MaskPatternRun:
    """One target cell's mask + pattern optimisation, advanced an epoch at a time (:meth:`epoch`).

    Neural Cleanse and TABOR run each cell to its end (:meth:`run`); K-Arm interleaves the runs of
    its arms. ``schedule`` is the cost schedule (Neural Cleanse's by default); ``extra_loss`` adds a
    method's regularisers; ``clean_gaze`` is the model's (N, 2) prediction on ``x``.
    """

    def __init__(self, model, x: torch.Tensor, clean_gaze: torch.Tensor, cell: TargetCell,
                 cfg: MaskPatternSettings, seed: int, schedule: CostSchedule | None = None,
                 extra_loss: ExtraLoss | None = None,
                 initial_mask: Callable[[int, torch.Generator], torch.Tensor] | None = None) -> None:
        self.model, self.x, self.clean_gaze, self.cell, self.cfg = model, x, clean_gaze, cell, cfg
        self.extra_loss = extra_loss
        size = int(x.shape[-1])
        generator = torch.Generator().manual_seed(int(seed))
        # NC initialises the mask and the pattern uniformly at random (gtsrb_visualize_example.py);
        # ``initial_mask(size, generator)`` gives another start for the mask (K-Arm's central one).
        mask = (initial_mask or _uniform_mask)(size, generator)
        self.edit = MaskPatternEdit(size, mask, torch.rand(3, size, size, generator=generator)).to(x.device)
        self.target_tanh = torch.nn.Parameter(torch.zeros(2, device=x.device))
        self.centre = torch.as_tensor(cell.centre, dtype=torch.float32, device=x.device)
        self.half_width = torch.as_tensor(cell.half_width, dtype=torch.float32, device=x.device)
        self.optimizer = torch.optim.Adam([self.edit.mask_tanh, self.edit.pattern_tanh, self.target_tanh],
                                          lr=cfg.lr, betas=(0.5, 0.9))
        self.schedule = schedule or CostSchedule(cfg.init_cost, cfg.cost_set_after, cfg.cost_patience,
                                                 cfg.cost_multiplier_up, cfg.cost_multiplier_down)
        self.batches = scan_batches(len(x), cfg.batch_size, generator)
        self.batches_per_epoch = max(1, len(x) // min(cfg.batch_size, len(x)))
        self.radius = math.radians(cfg.collapse_radius_deg)
        self.epochs = 0
        self.best_success = 0.0
        self.best_reg = math.inf
        self.best_state: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self.times_improved = 0
        self.stall = 0
        self.stall_best = math.inf

    def target(self) -> torch.Tensor:
        """The run's current target gaze, (2,) radians, inside its cell."""
        return self.centre + self.half_width * torch.tanh(self.target_tanh)

    def epoch(self) -> EpochStats:
        """One pass over the clean images: optimise, then update the cost and the kept edit."""
        losses, regs, hits = [], [], []
        for _ in range(self.batches_per_epoch):
            idx = next(self.batches)
            batch = self.x[idx]
            target = self.target()
            gaze = self.model(self.edit(batch))
            angle = angle_to_target(gaze, target)
            loss = angle.mean() / self.radius
            reg = self.edit.mask.sum()
            total = loss + self.schedule.cost * reg
            if self.extra_loss is not None:
                total = total + self.extra_loss(self.edit, batch, self.clean_gaze[idx], target)
            self.optimizer.zero_grad(set_to_none=True)
            total.backward()
            self.optimizer.step()
            losses.append(float(loss.detach()))
            regs.append(float(reg.detach()))
            hits.append(float((angle.detach() <= self.radius).float().mean()))
        self.epochs += 1
        stats = EpochStats(float(np.mean(losses)), float(np.mean(regs)), float(np.mean(hits)), False)
        succeeded = stats.success >= self.cfg.attack_success
        self.best_success = max(self.best_success, stats.success)
        if succeeded and stats.mask_l1 < self.best_reg:
            self.best_reg = stats.mask_l1
            self.best_state = (self.edit.mask_tanh.detach().clone(), self.edit.pattern_tanh.detach().clone(),
                               self.target_tanh.detach().clone())
            self.times_improved += 1
            stats.improved = True
        # NC's early-stop counter: epochs in which the kept norm did not get smaller.
        if self.best_reg < math.inf:
            self.stall = self.stall + 1 if self.best_reg >= self.stall_best else 0
        self.stall_best = min(self.stall_best, self.best_reg)
        self.schedule.update(succeeded)
        return stats

    def converged(self) -> bool:
        """Neural Cleanse's early stop: the cost went both up and down and the kept norm stalled."""
        return (self.schedule.up_flag and self.schedule.down_flag
                and self.stall >= self.cfg.early_stop_patience)

    def run(self, on_epoch: Callable[[int, EpochStats], None] | None = None) -> RunOutcome:
        """Epochs until ``epochs`` or the early stop, then :meth:`finish`."""
        while self.epochs < self.cfg.epochs:
            stats = self.epoch()
            if on_epoch is not None:
                on_epoch(self.epochs, stats)
            if self.converged():
                break
        return self.finish()

    def finish(self) -> RunOutcome:
        """The kept edit (the last one when no epoch succeeded, as NC saves it), measured on every image."""
        edit = copy.deepcopy(self.edit)
        target_tanh = self.target_tanh.detach().clone()
        if self.best_state is not None:
            with torch.no_grad():
                edit.mask_tanh.copy_(self.best_state[0])
                edit.pattern_tanh.copy_(self.best_state[1])
            target_tanh = self.best_state[2]
        edit.requires_grad_(False)
        target = (self.centre + self.half_width * torch.tanh(target_tanh)).detach()
        with torch.no_grad():
            hits = torch.cat([angle_to_target(self.model(edit(self.x[i:i + self.cfg.batch_size])), target)
                              for i in range(0, len(self.x), self.cfg.batch_size)]) <= self.radius
        return RunOutcome(cell=self.cell, edit=edit, target=target.double().cpu().numpy(), mask_l1=edit.mask_l1(),
                          success=float(hits.float().mean()), reached=self.best_state is not None, epochs=self.epochs)


def run_seed(seed: int, cell: int) -> int:
    """The seed of one cell's run: a function of the scan seed and the cell only (runs are independent)."""
    return (int(seed) * 1_000_003 + RUN_STREAM * 1_009 + int(cell)) % (2**63 - 1)


def target_cells(clean_gaze: np.ndarray, cfg: MaskPatternSettings) -> list[TargetCell]:
    """The candidate target cells of a scan: the ``grid_cells`` x ``grid_cells`` grid over the clean gaze."""
    return gaze_cells(gaze_grid(clean_gaze, cfg.grid_cells, cfg.grid_margin), cfg.grid_cells)


def reverse_every_cell(model, x: torch.Tensor, clean_gaze: np.ndarray, cfg: MaskPatternSettings, detector: str,
                       progress: ProgressCallback | None, extra_loss: ExtraLoss | None = None) -> list[RunOutcome]:
    """One full run per target cell, in grid order (Neural Cleanse's loop over labels); progress as
    stage ``"reverse"``, one step per epoch of the whole scan's ``cells x epochs`` budget."""
    cells = target_cells(clean_gaze, cfg)
    gaze = torch.as_tensor(clean_gaze, dtype=torch.float32, device=x.device)
    total = len(cells) * cfg.epochs

    def report(run: MaskPatternRun, epoch: int, stats: EpochStats) -> None:
        if progress is not None:
            progress(ScanProgress(detector, "reverse", run.cell.index * cfg.epochs + epoch, total,
                                  {"cell": float(run.cell.index), "loss": stats.loss, "mask_l1": stats.mask_l1,
                                   "success": stats.success, "cost": float(run.schedule.cost)}))

    outcomes = []
    for cell in cells:
        run = MaskPatternRun(model, x, gaze, cell, cfg, run_seed(cfg.seed, cell.index), extra_loss=extra_loss)
        outcomes.append(run.run(functools.partial(report, run)))
    return outcomes
