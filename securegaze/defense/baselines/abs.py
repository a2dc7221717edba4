"""ABS (Liu et al., "ABS: Scanning Neural Networks for Back-doors by Artificial Brain Stimulation", CCS 2019)
adapted to gaze regression.

ABS looks for a compromised neuron: one that, stimulated on its own, drives every input to the same
output whatever the input shows. It runs in two stages.

1. **Stimulation analysis.** For every neuron of the sampled layers and every seed image, the neuron's
   value is overwritten with levels ``0.5, 1, 2`` times the layer's largest activation on the seed
   images (public code: ``e_scale`` of ``n_samples = 3``; a conv neuron is a channel, set to the level
   over its whole map) and the rest of the network runs on. In classification a neuron is a candidate
   when, on at least 90 % of the images, it lifts one label above all others, ranked by the smallest
   lift over those images. *Gaze adaptation*: a neuron is a candidate when its stimulation
   collapses the gaze of the seed images: at each level the stimulated gazes' centre (the "stimulated
   output") is taken and the 90th percentile of their angles to it measured, as a ratio to the same
   percentile on the clean gazes (90 % of the images, like ABS's label consistency; the worst of
   those images, like its minimum over images). A neuron's ratio is its smallest over the levels; the
   ``top_neurons`` smallest are reversed, at most one per layer and 5-deg cell of stimulated gaze
   (ABS keeps one per label and layer group).
2. **Trigger reversal** per candidate: a mask and a pattern (``x' = (1 - m) x + m p``, both in tanh
   space; the mask starts as a square of 0.8 sqrt(bound) px at the centre, the pattern at random,
   as in the public code) optimised to raise the neuron (its pre- and post-activation mean), keep the
   layer's other neurons low (weight 1e-4), pull the output to the stimulated output (ABS's target
   logit; weight 1, then 3 in the second half), under a mask-size penalty that switches from 0.01 to
   ``mask_weight`` (x2 above 1.2 times the bound) once more than ``max_trigger_frac`` of the pixels
   carry more than 0.01 of mask.

**Score (REASR)**: the share of the clean images whose triggered gaze lies within
``collapse_radius_deg`` (5 deg) of the triggered gazes' centre (their densest point: the public code
counts the modal label of the triggered predictions, not the stimulated one), highest over the
candidates; suspicious above. The share within 5 deg of the neuron's stimulated output is reported
beside it (``details.candidates``).

**Choices, each the one most favourable to ABS**: the neurons are the channels of the last
``layers`` convolutional activation layers of F (the public code samples the last two layers) *and*
F's output units (the penultimate features G = H o F reads); REASR counts collapse on the triggered
gazes' own centre (a regression output moves continuously with the stimulation level, so the
stimulated output is only a direction to pull, while a label is exact); the mask bound is 6 % of the
image (the paper's bound for pixel triggers; the zoo's BadNets patches cover 0.4-2 %).

**Sources and defaults**: the paper and its public PyTorch code (github.com/naiyeleo/ABS,
``TrojAI_competition/round1/abs_pytorch_round1.py``: ``samp_k 2``, ``n_samples 3``, ``top_n_neurons
10``, ``re_epochs 50`` over ``n_re_samples 240`` in batches of 80, i.e. 150 steps, ``re_mask_lr 0.4``,
``re_mask_weight 50``, ``max_troj_size 400`` px of 224^2). **Budget**: on a GPU the public code
reverses 10 neurons for 150 steps of 80 images; on two CPU cores the default reverses 10 neurons for
``reverse_steps`` 100 steps of 32 images, and stimulates on the first 32 clean images (the paper uses
a few seed images per class). Runtime is measured in docs/baselines_methods.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from securegaze.defense.base import ProgressCallback, ScanProgress
from securegaze.defense.baselines.common import (
    BaselineDetector,
    BaselineResult,
    BaselineSettings,
    ReversedEdit,
    collapsed_share,
    gaze_grid,
    gaze_vectors,
    predict,
    scan_batches,
)
from securegaze.defense.baselines.inner_layers import Site, SiteTap, activation_sites, expandable
from securegaze.defense.securegaze.statistics import collapse_spread, mean_gaze
from securegaze.geometry import angular_error_deg, vector_to_pitchyaw
from securegaze.validation import check_int, check_number, check_setting

__all__ = ["ABSDetector", "ABSSettings", "Candidate", "StampEdit", "stimulation_analysis"]

#: Seed stream of the reversal's initialisation and batch order (with the scan seed).
ABS_STREAM = 0xAB5
#: ABS's threshold on a mask pixel that counts towards the trigger size (``mask_epsilon``).
MASK_EPSILON = 0.01
#: Share of the images whose stimulated gazes must lie close together (ABS: 90 % label consistency).
CONSISTENCY = 0.9


@dataclass(frozen=True)
class ABSSettings(BaselineSettings):
    """ABS's settings (public-code values in the module docstring).

    * ``stimulation_images``: clean images the stimulation analysis runs on (the first ones);
    * ``levels``: stimulation levels, ``0.5 * 2**k`` times the layer's largest clean activation for
      k < ``levels`` (public code: 3, i.e. 0.5, 1, 2);
    * ``layers``: convolutional activation layers of F sampled, counted from F's output (public: 2);
    * ``feature_units``: also stimulate F's output units (the penultimate features);
    * ``top_neurons``: candidates reversed (public: 10);
    * ``reverse_steps``: optimisation steps per candidate; ``lr``: Adam's rate (public: 0.4);
    * ``mask_weight``: the mask-size penalty above the bound (public: 50);
    * ``max_trigger_frac``: the trigger-size bound as a share of the S x S pixels (paper: 6 %);
    * ``threshold``: on REASR (suspicious above).
    """

    stimulation_images: int = 32
    levels: int = 6
    stimulation_grid: int = 4
    layers: int = 2
    feature_units: bool = True
    top_neurons: int = 10
    reverse_steps: int = 100
    lr: float = 0.4
    mask_weight: float = 50.0
    max_trigger_frac: float = 0.06
    threshold: float = 0.9

    def validate(self, who: str) -> None:
        super().validate(who)
        check_int(who, "stimulation_images", self.stimulation_images, 2, 100_000)
        check_int(who, "levels", self.levels, 1, 12)
        check_int(who, "stimulation_grid", self.stimulation_grid, 1, 64)
        check_int(who, "layers", self.layers, 0, 64)
        check_setting(who, "layers", self.layers > 0 or self.feature_units,
                      "at least 1 when feature_units is false (no neuron to stimulate)", self.layers)
        check_int(who, "top_neurons", self.top_neurons, 1, 1000)
        check_int(who, "reverse_steps", self.reverse_steps, 1, 100_000)
        check_number(who, "lr", self.lr, 0.0, 10.0, low_open=True)
        check_number(who, "mask_weight", self.mask_weight, 0.0, 1e6)
        check_number(who, "max_trigger_frac", self.max_trigger_frac, 0.0, 1.0, low_open=True)
        check_number(who, "threshold", self.threshold, 0.0, 1.0)


@dataclass(frozen=True)
class Candidate:
    """A neuron found by the stimulation analysis: ``site`` (None: F's output unit ``channel``), the
    ``cell`` of its channel's map ((row0, row1, col0, col1), the whole map or one cell of the
    stimulation grid), its collapse ``ratio`` (smaller is more suspicious), the ``level`` (activation
    value) where it was reached, the stimulated output ``gaze`` there ((2,) radians) and the layer's
    largest clean activation ``layer_max``."""

    site: Site | None
    channel: int
    cell: tuple[int, int, int, int] | None
    ratio: float
    level: float
    gaze: tuple[float, float]
    layer_max: float

    @property
    def label(self) -> str:
        where = "" if self.cell is None else "@{}:{},{}:{}".format(*self.cell)
        return f"{'features' if self.site is None else self.site.label}[{self.channel}]{where}"


class StampEdit(ReversedEdit):
    """``x' = (1 - m) x + m p`` with a mask m (1, 1, S, S) and a pattern p (1, 3, S, S) in ABS's tanh
    space (``tanh(v) / 2 + 0.5``); ``forward(x, strength)`` stamps it ``strength`` times over
    (mask ``1 - (1 - m)**strength``: applying the edit twice is strength 2)."""

    def __init__(self, input_size: int, mask_logit: torch.Tensor, pattern_logit: torch.Tensor) -> None:
        super().__init__()
        self.input_size = int(input_size)
        self.mask_logit = torch.nn.Parameter(mask_logit.clone())
        self.pattern_logit = torch.nn.Parameter(pattern_logit.clone())

    @property
    def mask(self) -> torch.Tensor:
        return torch.tanh(self.mask_logit) / 2 + 0.5

    @property
    def pattern(self) -> torch.Tensor:
        return torch.tanh(self.pattern_logit) / 2 + 0.5

    def forward(self, x: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
        mask = self.mask if strength == 1.0 else 1 - (1 - self.mask).pow(float(strength))
        return (1 - mask) * x + mask * self.pattern


def _spread_quantile(gaze: torch.Tensor) -> tuple[torch.Tensor, np.ndarray]:
    """(..., n, 2) radians -> the CONSISTENCY quantile of the angles (rad) to the gazes' mean direction,
    (...,), and that direction as (..., 2) radians."""
    v = gaze_vectors(gaze.reshape(-1, 2).double()).reshape(*gaze.shape[:-1], 3)
    centre = torch.nn.functional.normalize(v.mean(-2, keepdim=True), dim=-1)
    angles = torch.acos((v * centre).sum(-1).clamp(-1.0, 1.0))
    return torch.quantile(angles, CONSISTENCY, dim=-1), vector_to_pitchyaw(centre.squeeze(-2).cpu().numpy())


def stimulated_layers(model, x: torch.Tensor, count: int) -> list[Site]:
    """The last ``count`` activation layers of F that are not inside a residual block (the public code
    stimulates a ResNet's block outputs, after the skip connection's sum); all layers when every one is."""
    if count == 0:
        return []
    sites = activation_sites(model, x[:2])
    outside = [s for s in sites if expandable(model, s, x)]
    return (outside or sites)[-count:]


def map_cells(height: int, width: int, grid: int) -> list[tuple[int, int, int, int]]:
    """A ``grid`` x ``grid`` partition of an H x W map into (row0, row1, col0, col1) cells (fewer
    when the map is smaller than the grid)."""
    rows = [(int(a[0]), int(a[-1]) + 1) for a in np.array_split(np.arange(height), min(grid, height))]
    cols = [(int(a[0]), int(a[-1]) + 1) for a in np.array_split(np.arange(width), min(grid, width))]
    return [(r0, r1, c0, c1) for r0, r1 in rows for c0, c1 in cols]


def stimulation_analysis(model, x: torch.Tensor, sites: list[Site], feature_units: bool, levels: int,
                         grid: int = 1, progress: ProgressCallback | None = None,
                         chunk: int = 16) -> list[Candidate]:
    """Every neuron of ``sites`` (one per channel and cell of a ``grid`` x ``grid`` partition of its
    map) and of F's output (if ``feature_units``) stimulated on ``x``, as :class:`Candidate` s sorted by
    collapse ratio (most suspicious first)."""
    with torch.no_grad():
        z_clean = model.features(x)
        clean_gaze = model.head(z_clean)
    clean_spread = max(float(_spread_quantile(clean_gaze)[0]), math.radians(0.5))
    scale = torch.tensor([0.5 * 2.0 ** k for k in range(levels)])
    n, found = len(x), []
    groups: list[Site | None] = list(sites) + ([None] if feature_units else [])
    for step, site in enumerate(groups, 1):
        if site is None:
            clean_act = z_clean
            neurons = [(c, None) for c in range(z_clean.shape[1])]
        else:
            with SiteTap(model, site) as tap, torch.no_grad():
                tap.features(x)
                clean_act = tap.post.detach()
            cells = map_cells(site.shape[1], site.shape[2], grid)
            neurons = [(c, cell) for c in range(site.shape[0]) for cell in cells]
        layer_max = max(float(clean_act.max()), 1e-6)
        values = (scale * layer_max).tolist()
        layer_found = []
        for first in range(0, len(neurons), chunk):
            chosen = neurons[first:first + chunk]

            def copies(out: torch.Tensor, chosen=chosen, values=values) -> torch.Tensor:
                edited = out.repeat(len(chosen) * levels, *([1] * (out.dim() - 1)))
                for i, (c, cell) in enumerate(chosen):
                    for k, v in enumerate(values):
                        rows = slice((i * levels + k) * n, (i * levels + k + 1) * n)
                        if cell is None:
                            edited[rows, c] = v
                        else:
                            edited[rows, c, cell[0]:cell[1], cell[2]:cell[3]] = v
                return edited

            count = len(chosen) * levels
            if site is None:
                with torch.no_grad():
                    gaze = model.head(copies(z_clean))
            else:
                with SiteTap(model, site) as tap:
                    gaze = tap.expand_outputs(x, copies, count)
            gaze = gaze.reshape(len(chosen), levels, n, 2)
            spread, centres = _spread_quantile(gaze)  # (chosen, levels), (chosen, levels, 2)
            spread = spread / clean_spread
            best = spread.argmin(dim=1)
            for i, (c, cell) in enumerate(chosen):
                k = int(best[i])
                layer_found.append(Candidate(site, c, cell, float(spread[i, k]), values[k],
                                             (float(centres[i, k, 0]), float(centres[i, k, 1])), layer_max))
        found.extend(layer_found)
        if progress:
            progress(ScanProgress(ABSDetector.name, "stimulate", step, len(groups), {
                "neurons": float(len(neurons)), "best_ratio": min(c.ratio for c in layer_found)}))
    return sorted(found, key=lambda c: c.ratio)


def pick_candidates(ranked: list[Candidate], count: int, radius_deg: float,
                    box: tuple[np.ndarray, np.ndarray]) -> list[Candidate]:
    """The ``count`` most suspicious neurons whose stimulated output lies in the gaze ``box`` ((low,
    high) (2,) radians), at most one per layer and ``radius_deg`` of stimulated output (ABS keeps one
    per label and layer group)."""
    chosen: list[Candidate] = []
    for cand in ranked:
        if not (np.all(np.asarray(cand.gaze) >= box[0]) and np.all(np.asarray(cand.gaze) <= box[1])):
            continue
        layer = None if cand.site is None else cand.site.index
        clash = any((None if c.site is None else c.site.index) == layer
                    and angular_error_deg(np.asarray(c.gaze), np.asarray(cand.gaze)) < radius_deg for c in chosen)
        if not clash:
            chosen.append(cand)
        if len(chosen) == count:
            break
    return chosen


@dataclass
class Reversed:
    """One candidate's reversed trigger: the ``edit``, its REASR (``reasr``: share within the radius of
    the triggered gazes' centre ``target``), the share within the radius of the stimulated output
    (``stimulated_share``) and the share of pixels the mask covers above ``MASK_EPSILON``."""

    candidate: Candidate
    edit: StampEdit
    reasr: float
    target: tuple[float, float]
    stimulated_share: float
    mask_frac: float
    dispersion_deg: float


def _initial_stamp(size: int, bound_px: float, generator: torch.Generator) -> StampEdit:
    """ABS's start: mask logits 2 on a centred square of 0.8 sqrt(bound) px, -4 elsewhere; pattern
    logits uniform in [-1, 1]."""
    side = max(1, min(size, int(math.sqrt(bound_px) * 0.8)))
    low = (size - side) // 2
    mask = torch.full((1, 1, size, size), -4.0)
    mask[..., low:low + side, low:low + side] = 2.0
    pattern = torch.rand((1, 3, size, size), generator=generator) * 2 - 1
    return StampEdit(size, mask, pattern)


def _neuron_terms(model, cand: Candidate, x_edit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(gaze, neuron loss) of edited images: minus the candidate's mean pre- and post-activation (over
    its cell) plus 1e-4 times the mean of the layer's other neurons there, in units of the layer's
    largest clean activation."""
    c = cand.channel
    if cand.site is None:
        z = model.features(x_edit)
        own = 2 * z[:, c].mean()
        others = 2 * (z.sum(1) - z[:, c]).mean() / max(z.shape[1] - 1, 1)
    else:
        with SiteTap(model, cand.site, keep_pre=True) as tap:
            z = tap.features(x_edit)
            pre, post = tap.pre, tap.post
        if cand.cell is not None:
            r0, r1, c0, c1 = cand.cell
            pre, post = pre[..., r0:r1, c0:c1], post[..., r0:r1, c0:c1]
        own = pre[:, c].mean() + post[:, c].mean()
        others = ((pre.sum(1) - pre[:, c]).mean() + (post.sum(1) - post[:, c]).mean()) / max(pre.shape[1] - 1, 1)
    return model.head(z), (-own + 1e-4 * others) / cand.layer_max


def reverse_candidate(model, x: torch.Tensor, cand: Candidate, cfg: ABSSettings, clean_trace: float,
                      seed: int, progress: ProgressCallback | None = None, step_offset: int = 0,
                      total_steps: int = 0) -> Reversed:
    """ABS's trigger reversal for one neuron on clean images ``x``, then its REASR on all of them."""
    size = x.shape[-1]
    bound_px = cfg.max_trigger_frac * size * size
    generator = torch.Generator().manual_seed(seed)
    edit = _initial_stamp(size, bound_px, generator).to(x.device)
    optimizer = torch.optim.Adam(edit.parameters(), lr=cfg.lr)
    target = gaze_vectors(torch.tensor([cand.gaze], dtype=torch.float32, device=x.device))
    batches = scan_batches(len(x), cfg.batch_size, generator)
    for step in range(1, cfg.reverse_steps + 1):
        gaze, neuron_loss = _neuron_terms(model, cand, edit(x[next(batches).to(x.device)]))
        pull = (gaze_vectors(gaze) - target).pow(2).sum(-1).mean() / clean_trace
        mask = edit.mask
        size_px, covered = mask.sum() / bound_px, float((mask > MASK_EPSILON).sum())
        if covered > bound_px:
            mask_loss = cfg.mask_weight * size_px * (2.0 if covered > 1.2 * bound_px else 1.0)
        else:
            mask_loss = 0.01 * size_px
        loss = neuron_loss + (1.0 if step <= cfg.reverse_steps // 2 else 3.0) * pull + mask_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if progress:
            progress(ScanProgress(ABSDetector.name, "reverse", step_offset + step, total_steps, {
                "neuron_loss": neuron_loss.item(), "pull": pull.item(), "mask_frac": covered / (size * size)}))
    edit.requires_grad_(False)
    with torch.no_grad():
        edited = torch.cat([edit(x[i:i + cfg.batch_size]) for i in range(0, len(x), cfg.batch_size)])
        mask_frac = float((edit.mask > MASK_EPSILON).float().mean())
    triggered = predict(model, edited, cfg.batch_size)
    _, kept = collapse_spread(torch.as_tensor(triggered), 0.5)
    centre = mean_gaze(triggered[kept.numpy()])
    own = angular_error_deg(triggered, np.broadcast_to(centre, triggered.shape))
    return Reversed(
        candidate=cand, edit=edit,
        reasr=collapsed_share(triggered, centre, cfg.collapse_radius_deg),
        target=(float(centre[0]), float(centre[1])),
        stimulated_share=collapsed_share(triggered, cand.gaze, cfg.collapse_radius_deg),
        mask_frac=mask_frac, dispersion_deg=float(own.mean()),
    )


class ABSDetector(BaselineDetector):
    """ABS adapted to gaze regression (module docstring): REASR of the best reversed neuron, high is suspicious."""

    name = "abs"
    version = "1.0"
    suspicious_when = "above"
    calibration_fit = "logit"  # REASR is a share: a log-normal quantile can land above 1 and flag nothing
    settings_class = ABSSettings
    smoke_settings = {"stimulation_images": 8, "levels": 3, "layers": 1, "stimulation_grid": 2, "top_neurons": 2,
                      "reverse_steps": 3, "batch_size": 8}
    default_threshold_source = ("provisional 0.9: between benign (0.56-0.77) and BadNets (0.93-1.0) REASRs of "
                                "docs/baselines_methods.md, not fitted on calibration models")

    def run(self, model, x: torch.Tensor, progress: ProgressCallback | None) -> BaselineResult:
        cfg = self.config
        x_stim = x[: cfg.stimulation_images]
        sites = stimulated_layers(model, x_stim, cfg.layers)
        ranked = stimulation_analysis(model, x_stim, sites, cfg.feature_units, cfg.levels,
                                      cfg.stimulation_grid, progress)
        clean_np = predict(model, x, cfg.batch_size)
        corners = gaze_grid(clean_np, 2)
        chosen = pick_candidates(ranked, cfg.top_neurons, cfg.collapse_radius_deg,
                                 (corners.min(0), corners.max(0)))
        if not chosen:
            return BaselineResult(score=0.0, details={"neurons_stimulated": len(ranked), "candidates": [],
                                                      "note": "no neuron's stimulated output is a plausible gaze"})
        clean = torch.as_tensor(clean_np, dtype=torch.float32)
        vectors = gaze_vectors(clean)
        clean_trace = max(float((vectors - vectors.mean(0)).pow(2).sum(-1).mean()), 1e-8)
        results = []
        for i, cand in enumerate(chosen):
            results.append(reverse_candidate(model, x, cand, cfg, clean_trace, seed=cfg.seed * 1000 + ABS_STREAM + i,
                                             progress=progress, step_offset=i * cfg.reverse_steps,
                                             total_steps=len(chosen) * cfg.reverse_steps))
        best = max(results, key=lambda r: (r.reasr, -r.dispersion_deg))
        return BaselineResult(
            score=best.reasr,
            target_gaze=best.target,
            edit=best.edit,
            constraints_met=best.mask_frac <= cfg.max_trigger_frac,
            details={
                "layers": [s.label for s in sites] + (["features"] if cfg.feature_units else []),
                "neurons_stimulated": len(ranked),
                "best_neuron": best.candidate.label,
                "mask_frac": best.mask_frac,
                "candidates": [{
                    "neuron": r.candidate.label, "stimulation_ratio": r.candidate.ratio,
                    "stimulated_gaze_deg": [math.degrees(a) for a in r.candidate.gaze],
                    "reasr": r.reasr, "stimulated_share": r.stimulated_share, "mask_frac": r.mask_frac,
                    "target_deg": [math.degrees(a) for a in r.target],
                } for r in results],
            },
        )
