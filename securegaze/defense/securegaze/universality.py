"""Universality: how much dearer one edit shared by every face is than an edit made for each face.

A backdoor is a *universal* shortcut: one trigger sends every face to the target. Its model can be
collapsed by one small change applied to all faces. A benign model has no such shortcut; the
smallest change that collapses it is mostly a different change for each face, and one change that
must serve all faces is several times larger. Both sizes scale together with the model family,
the crop and the images' contrast, so their ratio is a statistic a single threshold can serve
across families (setting ``universality``, off by default; docs/detection_cross_family.md, "One edit for every face, or one for
each"):

    U = eps*(one perturbation for all faces) / eps*(one perturbation per face)

``eps*`` is the smallest bound on the per-pixel change (L-infinity, [0, 1] pixel units) at which an
additive perturbation ``eps * tanh(w)``, trained with Adam to minimise the scan's two constraint
statistics (log of the trimmed output spread ratio plus log of the feature-angle variance ratio,
as the reversal's constraints), brings the trimmed output dispersion to ``rho_out`` of the clean one.
It is found by a search over the bound (:func:`bound_crossing`): doubling or halving from a start
until the crossing is bracketed, bisection in log space, then log-linear interpolation of the
reached ratio between the two bracketing bounds. Each tried bound trains its own perturbation from
zero for ``universality_steps`` steps, so a result depends on the bound only, not on the path.

Where the L1-priced reversal is weak, U is strong, and the other way round: a trigger spread thinly
over the whole face (a blend, a warp, glasses) is dear in L1 but small per pixel, while a small
corner patch is cheap in L1 and large per pixel. The scan flags a model when either statistic falls
below its own threshold (:mod:`securegaze.defense.securegaze.detector`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from securegaze.defense.base import ProgressCallback, ScanProgress
from securegaze.defense.securegaze.settings import DETECTOR_NAME, SecureGazeSettings
from securegaze.defense.securegaze.statistics import collapse_spread, feature_angle_variance

__all__ = ["BoundSearch", "bound_crossing", "collapse_objective", "collapse_ratio_at", "per_image_search", "universal_search",
           "universality_of", "universality_ratio", "universality_record"]

#: The search never goes below / above these bounds ([0, 1] pixel units): below 1/1000 of the range
#: the change is under a quarter of a grey level; above 0.5 the perturbation can paint any image.
LOWEST_BOUND, HIGHEST_BOUND = 1e-3, 0.5
#: Adam's rate on ``w`` (the perturbation is ``eps * tanh(w)``, so the rate is in units of the bound).
LEARNING_RATE = 0.05


@dataclass
class BoundSearch:
    """One price's search: ``eps_star`` (inf when even ``HIGHEST_BOUND`` does not collapse, the lowest
    bound when it already does), ``censored`` ("" / "below" / "above"), ``tried``: {bound: reached
    trimmed dispersion ratio}."""

    per_image: bool
    eps_star: float
    censored: str = ""
    tried: dict[float, float] = field(default_factory=dict)

    def summary(self) -> dict:
        return {"eps_star": self.eps_star, "censored": self.censored,
                "tried": {f"{eps:.5g}": ratio for eps, ratio in sorted(self.tried.items())}}


def collapse_objective(model, x: torch.Tensor, share: float):
    """(loss of a batch's features, clean trimmed spread, clean feature-angle variance) on ``x``: the
    scan's two constraint statistics as one loss, the log of the trimmed-spread ratio over two plus the
    log of the feature-angle variance ratio, both ratios to the clean values on ``x``."""
    head_weight = model.head_weight()
    with torch.no_grad():
        z = model.features(x)
        clean_spread, kept = collapse_spread(model.head(z), share)
        clean_fav = feature_angle_variance(z[kept], head_weight)

    def loss_of(z: torch.Tensor) -> torch.Tensor:
        spread, kept = collapse_spread(model.head(z), share)
        return (0.5 * torch.log(spread / clean_spread + 1e-12)
                + torch.log(feature_angle_variance(z[kept], head_weight) / clean_fav + 1e-12))

    return loss_of, clean_spread, clean_fav


def collapse_ratio_at(model, x: torch.Tensor, eps: float, cfg: SecureGazeSettings, per_image: bool,
                      seed: int = 0, stop=None) -> float:
    """The trimmed dispersion ratio (RMS, to the clean one over ``collapse_share``) that an additive
    perturbation of L-inf size ``eps`` reaches on ``x`` after ``cfg.universality_steps`` Adam steps:
    one perturbation for every image (batches of ``cfg.batch_size``), or, ``per_image``, one per
    image (all of ``x`` each step). ``stop``: called every step (the scan's stop check)."""
    loss_of, clean_spread, _ = collapse_objective(model, x, cfg.collapse_share)
    w = torch.zeros(len(x) if per_image else 1, *x.shape[1:], device=x.device, requires_grad=True)
    optimizer = torch.optim.Adam([w], lr=LEARNING_RATE)
    rng = np.random.default_rng([cfg.seed, seed, 0x55])
    batch = len(x) if per_image else min(cfg.batch_size, len(x))
    for _ in range(cfg.universality_steps):
        if stop is not None:
            stop()
        if per_image:
            edited = x + eps * torch.tanh(w)
        else:
            idx = torch.as_tensor(np.sort(rng.choice(len(x), batch, replace=False)), device=x.device)
            edited = x[idx] + eps * torch.tanh(w)
        loss = loss_of(model.features(edited.clamp(0.0, 1.0)))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        delta = eps * torch.tanh(w)
        spreads = []
        for start in range(0, len(x), cfg.batch_size):
            part = slice(start, start + cfg.batch_size)
            edited = (x[part] + (delta[part] if per_image else delta)).clamp(0.0, 1.0)
            spreads.append(model.head(model.features(edited)))
        spread, _ = collapse_spread(torch.cat(spreads), cfg.collapse_share)
    return math.sqrt(max(spread.item(), 0.0) / max(clean_spread.item(), 1e-30))


def bound_crossing(model, x: torch.Tensor, cfg: SecureGazeSettings, per_image: bool, start: float,
                   progress: ProgressCallback | None = None, stage: str = "universality") -> BoundSearch:
    """The smallest L-inf bound at which :func:`collapse_ratio_at` reaches ``cfg.rho_out``: doubling
    or halving from ``start`` until bracketed, ``cfg.universality_bisections`` log-space bisections,
    then log-linear interpolation of the ratio between the bracketing bounds."""
    line = cfg.rho_out
    search = BoundSearch(per_image=per_image, eps_star=math.inf)
    tries = 0
    expected = cfg.universality_steps * (3 + cfg.universality_bisections)  # for a progress bar only

    def stop() -> None:
        if progress is not None and stop.calls % 20 == 0:
            progress(ScanProgress(DETECTOR_NAME, stage, stop.calls + 1, max(expected, stop.calls + 1),
                                  {"tries": float(tries)}))
        stop.calls += 1

    stop.calls = 0

    def ratio(eps: float) -> float:
        nonlocal tries
        tries += 1
        search.tried[eps] = collapse_ratio_at(model, x, eps, cfg, per_image, seed=tries, stop=stop)
        return search.tried[eps]

    eps = min(max(start, LOWEST_BOUND), HIGHEST_BOUND)
    low = high = None  # the largest bound seen above the line, the smallest at or below it
    if ratio(eps) <= line:
        high = eps
        while low is None:
            if high <= LOWEST_BOUND:
                search.eps_star, search.censored = LOWEST_BOUND, "below"
                return search
            eps = max(high / 2.0, LOWEST_BOUND)
            if ratio(eps) <= line:
                high = eps
            else:
                low = eps
    else:
        low = eps
        while high is None:
            if low >= HIGHEST_BOUND:
                search.censored = "above"
                return search
            eps = min(low * 2.0, HIGHEST_BOUND)
            if ratio(eps) <= line:
                high = eps
            else:
                low = eps
    for _ in range(cfg.universality_bisections):
        eps = math.sqrt(low * high)
        if ratio(eps) <= line:
            high = eps
        else:
            low = eps
    r_low, r_high = search.tried[low], search.tried[high]
    t = (math.log(r_low) - math.log(line)) / max(math.log(r_low) - math.log(max(r_high, 1e-12)), 1e-12)
    search.eps_star = math.exp(math.log(low) + min(max(t, 0.0), 1.0) * (math.log(high) - math.log(low)))
    return search


def universality_ratio(universal: BoundSearch, per_image: BoundSearch) -> float:
    """U = universal eps* / per-image eps* (inf when either search found no collapsing bound: a
    model that no bounded edit collapses gives no evidence of a shortcut)."""
    if math.isinf(universal.eps_star) or math.isinf(per_image.eps_star):
        return math.inf
    return universal.eps_star / per_image.eps_star


#: Where the two searches start ([0, 1] pixel units): about the bounds at which the benchmarks' 64-px
#: benign models collapse (docs/detection_cross_family.md); a model far from them costs a few more tries.
UNIVERSAL_START, PER_IMAGE_START = 0.04, 0.006


def universal_search(model, x: torch.Tensor, cfg: SecureGazeSettings,
                     progress: ProgressCallback | None = None) -> BoundSearch:
    """The bound at which one perturbation shared by all of ``x`` collapses the model."""
    return bound_crossing(model, x, cfg, False, UNIVERSAL_START, progress, "universal")


def per_image_search(model, x: torch.Tensor, cfg: SecureGazeSettings,
                     progress: ProgressCallback | None = None) -> BoundSearch:
    """The bound at which one perturbation per face collapses the model, on the first
    ``cfg.universality_faces`` faces of ``x``."""
    return bound_crossing(model, x[:cfg.universality_faces], cfg, True, PER_IMAGE_START, progress, "per_image")


def universality_record(universal: BoundSearch, per_image: BoundSearch) -> dict:
    """What a report keeps of U: the ratio and both searches."""
    return {"ratio": universality_ratio(universal, per_image), "universal": universal.summary(),
            "per_image": per_image.summary()}


def universality_of(model, x: torch.Tensor, cfg: SecureGazeSettings,
                    progress: ProgressCallback | None = None) -> dict:
    """Both searches one after the other (the scan runs them side by side): :func:`universality_record`."""
    return universality_record(universal_search(model, x, cfg, progress), per_image_search(model, x, cfg, progress))
