"""The warp branch: how far one small, smooth displacement of every face collapses the model.

A warp trigger (WaNet and its kin) moves pixels by a pixel or two instead of painting them. Priced as
an edit of pixel values, the reversal's price, such a trigger is dear: every edge of the face moves a
little, so the sum of |x' - x| is large even though nothing is visible. The warp branch asks the
question in a warp's own units. Every clean face is resampled through one displacement field (a
``warp_grid`` x ``warp_grid`` grid of 2-D offsets, upsampled bicubically to the image, applied with
bilinear sampling); the field is trained with Adam to minimise the scan's two constraint statistics
(the log of the trimmed output-spread ratio over two plus the log of the feature-angle variance
ratio, :func:`~securegaze.defense.securegaze.universality.collapse_objective`), and after every step
it is scaled back, if need be, to a mean displacement of ``warp_budget_frac`` of the image side.

Why this separates: a benign gaze model's output follows the irises, and one field moves every
face's irises the same way, so a small warp *shifts* the outputs but cannot *gather* them (on the
four 64-px zoos of the cross-family benchmark the best field keeps 0.23-0.64 of the clean trimmed
dispersion of each of 35 benign models); a warp backdoor's outputs gather onto its target (0.012-0.082
on all five). The branch flags when the field meets the scan's own two constraints (trimmed
dispersion ratio <= ``rho_out``, feature-angle variance ratio <= ``rho_feat``), so it has no
threshold of its own; its record says how far the field got (benchmarks/warp_branch.py).

Both the grid and the budget are set relative to the face, not in pixels: what lets a field gather
a benign model's outputs is how finely and how far it can move the irises, which are a fixed share
of a normalised face crop. 16 control points per side and 2 % of the side are 1.28 px at 64 px, where
this project's warp attack moves pixels by 1.2-1.8 px (its fields have 12-20 control points). In an
earlier form of the search (feature term clipped at its line) a grid twice as fine collapsed a
benign ResNet-18 (a field per pixel is as free as a pixel edit) and 8 points per side missed the
finer warps (docs/detection_cross_family.md, "The warp branch"). Below about 50 px the field moves
pixels by less than one, and bilinear resampling then mostly blurs: the tiny 32-px benign model of
the tests reaches 0.114, close to the line. The branch therefore runs only where its budget is at least
``MIN_BUDGET_PX`` (one pixel: 50 px and up at the default 2 %) and says so in the report otherwise.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as nnf

from securegaze.defense.base import ProgressCallback, ScanProgress
from securegaze.defense.securegaze.reversal import forward_chunks
from securegaze.defense.securegaze.settings import DETECTOR_NAME, SecureGazeSettings
from securegaze.defense.securegaze.statistics import collapse_spread, feature_angle_variance
from securegaze.defense.securegaze.universality import collapse_objective
from securegaze.errors import InputFileError
from securegaze.geometry import angular_error_deg, pitchyaw_to_vector_torch, vector_to_pitchyaw

__all__ = ["MIN_BUDGET_PX", "WarpField", "WarpSearch", "kept_warp_fields", "load_warp_field", "save_warp_field", "warp_not_run",
           "warp_search"]

#: Seed stream of the warp search's evaluation subset and batch order (with the settings' seed).
WARP_STREAM = 0x3A9
#: The warp branch runs only when its budget moves pixels by at least this much on average: a field of
#: less than a pixel mostly blurs (bilinear resampling), and blur alone gathers a small face's outputs.
MIN_BUDGET_PX = 1.0
#: Adam's rate on the control offsets, pixels per step, decayed along a half cosine to a tenth.
LEARNING_RATE_PX = 0.05


class WarpField(nn.Module):
    """One displacement field for every image: ``grid`` x ``grid`` control offsets in pixels (x, y),
    upsampled bicubically to ``size`` x ``size``. ``forward(x, strength)`` resamples (N, 3, S, S)
    images at identity + ``strength`` x field (border pixels repeat); it starts as the identity. Its
    call matches a trigger generator's, so mitigation can unlearn it like any reversed trigger."""

    def __init__(self, size: int, grid: int) -> None:
        super().__init__()
        self.input_size = int(size)
        self.offsets = nn.Parameter(torch.zeros(1, 2, grid, grid))
        line = torch.linspace(-1.0, 1.0, size)
        yy, xx = torch.meshgrid(line, line, indexing="ij")
        self.register_buffer("identity", torch.stack([xx, yy], -1)[None], persistent=False)

    def field(self) -> torch.Tensor:
        """(1, 2, S, S) displacement in pixels."""
        return nnf.interpolate(self.offsets, size=(self.input_size, self.input_size), mode="bicubic",
                               align_corners=True)

    def displacement(self) -> torch.Tensor:
        """Mean length of the displacement over the image, pixels (scalar)."""
        return (self.field().pow(2).sum(1) + 1e-12).sqrt().mean()

    def forward(self, x: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
        shift = self.field().permute(0, 2, 3, 1) * (2.0 * strength / max(self.input_size - 1, 1))
        grid = (self.identity + shift).to(x.dtype).expand(len(x), -1, -1, -1)
        return nnf.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)


@dataclass
class WarpSearch:
    """What the warp branch reached: ``dispersion_ratio`` (trimmed, RMS, to the clean one) and
    ``feature_ratio`` of the best field (the lowest dispersion among the checks whose feature ratio
    met ``rho_feat``, else the last field), ``met`` (both constraints), its mean ``displacement_px``,
    the ``target_gaze`` (pitch, yaw) radians its kept outputs gather on, the share of the evaluation
    outputs within ``collapse_radius_deg`` of it, and the ``field`` itself."""

    met: bool
    dispersion_ratio: float
    feature_ratio: float
    displacement_px: float
    budget_px: float
    grid: int
    target_gaze: tuple[float, float]
    collapsed_share: float
    field: WarpField

    def summary(self) -> dict:
        return {"met": self.met, "dispersion_ratio": self.dispersion_ratio, "feature_ratio": self.feature_ratio,
                "displacement_px": self.displacement_px, "budget_px": self.budget_px, "grid": self.grid,
                "target_gaze_deg": [math.degrees(v) for v in self.target_gaze],
                "collapsed_share": self.collapsed_share}


def save_warp_field(field: WarpField, path) -> Path:
    """The field's control offsets as safetensors (no pickle), its image size as metadata; atomic."""
    from securegaze.io import save_safetensors

    return save_safetensors({"offsets": field.offsets.detach().contiguous().cpu()}, path,
                            {"input_size": str(field.input_size), "kind": "securegaze-warp-field"})


def load_warp_field(path) -> WarpField:
    """Read a field written by :func:`save_warp_field`; InputFileError when it is not one."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: warp field file not found")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta, offsets = fh.metadata() or {}, fh.get_tensor("offsets")
        if meta.get("kind") != "securegaze-warp-field" or offsets.dim() != 4 or offsets.shape[:2] != (1, 2):
            raise ValueError("expected offsets of shape (1, 2, k, k) and kind securegaze-warp-field")
        field = WarpField(int(meta["input_size"]), offsets.shape[-1])
        with torch.no_grad():
            field.offsets.copy_(offsets)
    except (SafetensorError, OSError, ValueError, KeyError, RuntimeError) as exc:
        raise InputFileError(f"{path}: not a SecureGaze warp field ({type(exc).__name__}: {exc})") from None
    return field.eval().requires_grad_(False)


def kept_warp_fields(reversal) -> list[WarpField]:
    """A scan reversal's warp field as a trigger to unlearn: [field] when it met both constraints, else []."""
    warp = getattr(reversal, "warp", None)
    return [warp.field] if warp is not None and warp.met else []


def warp_not_run(size: int, cfg: SecureGazeSettings) -> str | None:
    """Why the warp branch does not run on ``size``-px images (None when it does)."""
    if not cfg.warp:
        return "off (setting warp)"
    budget = cfg.warp_budget_frac * size
    if budget < MIN_BUDGET_PX:
        return (f"not run: at {size} px its budget ({cfg.warp_budget_frac:.1%} of the side, {budget:.2f} px) moves "
                f"pixels by less than {MIN_BUDGET_PX:g}, where resampling mostly blurs")
    return None


@torch.no_grad()
def _measure(model, field: WarpField, x: torch.Tensor, cfg: SecureGazeSettings, clean_spread: float,
             clean_fav: float):
    """(dispersion ratio, feature ratio, gaze of the kept outputs' centre, all outputs) of ``field`` on ``x``."""
    z, gaze = forward_chunks(model, field(x), cfg.batch_size)
    spread, kept = collapse_spread(gaze, cfg.collapse_share)
    fav = feature_angle_variance(z[kept], model.head_weight()).item()
    centre = vector_to_pitchyaw(pitchyaw_to_vector_torch(gaze[kept].double()).mean(0).cpu().numpy())
    return math.sqrt(max(spread.item(), 0.0) / clean_spread), fav / clean_fav, centre, gaze


def warp_search(model, x_all: torch.Tensor, cfg: SecureGazeSettings,
                progress: ProgressCallback | None = None) -> WarpSearch:
    """Train one displacement field of mean length <= ``cfg.warp_budget_frac`` x side against the frozen
    ``model`` on the clean images ``x_all`` for ``cfg.warp_steps`` steps (batches of ``cfg.batch_size``),
    checking both constraints on a fixed evaluation subset every ``cfg.eval_every`` steps."""
    size = x_all.shape[-1]
    budget = cfg.warp_budget_frac * size
    rng = np.random.default_rng([cfg.seed, WARP_STREAM])
    x_eval = x_all[torch.as_tensor(np.sort(rng.permutation(len(x_all))[: cfg.eval_samples]), device=x_all.device)]
    loss_of, clean_spread, clean_fav = collapse_objective(model, x_eval, cfg.collapse_share)
    clean_spread, clean_fav = max(clean_spread.item(), 1e-30), max(clean_fav.item(), 1e-30)
    field = WarpField(size, cfg.warp_grid).to(x_all.device)
    optimizer = torch.optim.Adam(field.parameters(), lr=LEARNING_RATE_PX)
    steps = cfg.warp_steps
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda k: 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(k, steps) / steps)))
    batch = min(cfg.batch_size, len(x_all))
    best = None  # (dispersion ratio, feature ratio, centre, gaze, offsets)
    for step in range(1, steps + 1):
        idx = torch.as_tensor(np.sort(rng.choice(len(x_all), size=batch, replace=False)), device=x_all.device)
        loss = loss_of(model.features(field(x_all[idx])))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            length = field.displacement().item()
            if length > budget:  # the mean length is linear in the offsets
                field.offsets.mul_(budget / length)
        if step % cfg.eval_every and step != steps:
            continue
        ratio, feature, centre, gaze = _measure(model, field, x_eval, cfg, clean_spread, clean_fav)
        if progress is not None:
            progress(ScanProgress(DETECTOR_NAME, "warp", step, steps,
                                  {"dispersion_ratio": ratio, "feature_variance_ratio": feature}))
        eligible = feature <= cfg.rho_feat
        if best is None or (eligible, -ratio) > (best[1] <= cfg.rho_feat, -best[0]):
            best = (ratio, feature, centre, gaze, field.offsets.detach().clone())
    ratio, feature, centre, gaze, offsets = best
    kept = copy.deepcopy(field).eval()
    with torch.no_grad():
        kept.offsets.copy_(offsets)
    kept.requires_grad_(False)
    to_target = angular_error_deg(gaze.double().cpu().numpy(), np.broadcast_to(centre, (len(gaze), 2)))
    return WarpSearch(
        met=ratio <= cfg.rho_out and feature <= cfg.rho_feat, dispersion_ratio=ratio, feature_ratio=feature,
        displacement_px=kept.displacement().item(), budget_px=budget, grid=cfg.warp_grid,
        target_gaze=(float(centre[0]), float(centre[1])),
        collapsed_share=float((to_target <= cfg.collapse_radius_deg).mean()), field=kept)
