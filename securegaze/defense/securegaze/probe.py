"""Border probing: a cheap search for a patch near the image border that collapses the model, to start from.

A gradient search from the identity follows the model's clean-data sensitivity, and a patch trigger
in a corner the model ignores on clean faces has no gradient until most of the patch is there (the
units that detect it sit below their ReLU threshold on clean images): the optimiser then settles on a
face-wide edit that costs tens of times the real trigger. Fixed stamps (white, black, a checker) do
not help: a backdoor answers its own pattern and phase, not a lookalike.

The probe frees every pixel of a ring along the border (``probe_side_frac`` of the side wide) and
optimises their content from random values, ``probe_steps`` Adam steps, to shrink the trimmed output
spread (:func:`collapse_spread`) of ``probe_samples`` clean images. Random content wakes the
detecting units of a patch trigger, so the gradient reaches it, and the ring climbs towards the
trigger wherever it sits along the border. Then it keeps one window (a square of the ring's width)
at a time, reverts the rest of the ring, and measures the spread again: a backdoored model collapses
under the window that holds its trigger alone, a benign one under none (a benign model follows the
face, and a corner of the ring does not move it). The best window's content was optimised together
with the rest of the ring and may fall short on its own, so it is optimised alone for
``probe_refine_steps`` more steps before its ratio is taken (a few hundredths on the tiny BadNets test
models, 0.6 and more on their benign twins). When the best window's ratio is below ``probe_ratio`` the reversal runs
a second time from that window's content (a restart; see
:class:`~securegaze.defense.securegaze.detector.SecureGazeDetector`) and the cheaper of the two
feasible edits is kept.

A trigger inside the face (tape on the forehead or a brow, glasses) has the same problem, and the ring
does not reach it. A second probe (``probe_interior``, scanner 3.1) frees the pixels inside the ring
whose sensitivity weight is at most a quantile of the scan's sensitivity map (:func:`quiet_interior`):
the places the model looks at least. The irises, which any gaze model follows, are its most sensitive
pixels and stay out, so a benign model has nothing there that collapses it (its best interior windows
reach 0.15-0.53 on the cross-family zoos), while a backdoor's interior trigger does (0.004-0.11). Its
best window competes with the border's for the restart.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from securegaze.defense.securegaze.settings import SecureGazeSettings
from securegaze.defense.securegaze.statistics import collapse_spread, shift_spread

#: Largest logit-space value of a stamped pixel in the generator's static map (sigmoid(6) = 0.9975).
STAMP_LOGIT = 6.0
#: Seed stream of the probe's image subset and random start (with the settings' seed).
PROBE_STREAM = 0x9A7C
#: Adam's rate on the ring's logits; the start's spread (std of the random logits).
PROBE_LR = 0.3
PROBE_INIT_STD = 3.0
#: Images per probe step.
PROBE_BATCH = 32


@dataclass(frozen=True)
class ProbeResult:
    """The best window: its side and place (px), the RMS ratio of the trimmed output spread it reaches
    alone to the clean one after its refinement (below ``settings.probe_ratio``: worth a restart) and
    before it (``unrefined_ratio``), the whole ring's ratio, and the window's content, (3, side, side)
    in [0, 1] (not part of :meth:`summary`)."""

    side: int
    top: int
    left: int
    dispersion_ratio: float
    ring_ratio: float
    content: torch.Tensor = field(repr=False, compare=False)
    unrefined_ratio: float = float("nan")
    #: (side, side) 0/1 mask of the window's pixels that were probed (None: all of them): an interior
    #: window keeps only its part in the probed region.
    mask: torch.Tensor | None = field(default=None, repr=False, compare=False)

    def summary(self) -> dict:
        """Plain data for the scan report."""
        return {"side": self.side, "top": self.top, "left": self.left, "dispersion_ratio": self.dispersion_ratio,
                "unrefined_ratio": self.unrefined_ratio, "ring_ratio": self.ring_ratio, "interior": self.mask is not None}

    def static_map(self, size: int) -> torch.Tensor:
        """(1, 3, S, S) logit-space static edit that stamps the window's content (zero elsewhere)."""
        edit = torch.zeros(1, 3, size, size)
        stamp = (2.0 * self.content.detach().cpu() - 1.0) * STAMP_LOGIT
        if self.mask is not None:
            stamp = stamp * self.mask.detach().cpu()
        edit[..., self.top:self.top + self.side, self.left:self.left + self.side] = stamp
        return edit


def _places(size: int, side: int) -> list[int]:
    """Offsets of windows of ``side`` at half-window steps, from 0 to flush with the far border."""
    step = max(1, side // 2)
    places = list(range(0, size - side + 1, step))
    if places[-1] != size - side:
        places.append(size - side)
    return places


def border_ring(size: int, width: int, device=None) -> torch.Tensor:
    """(1, 1, S, S) mask: 1 within ``width`` px of any border."""
    ring = torch.zeros(1, 1, size, size, device=device)
    ring[..., :width, :] = 1
    ring[..., -width:, :] = 1
    ring[..., :, :width] = 1
    ring[..., :, -width:] = 1
    return ring


def _ratio(model, images: torch.Tensor, clean_spread: torch.Tensor, share: float) -> float:
    spread, _ = collapse_spread(model(images), share)
    return float((spread / clean_spread).clamp_min(0).sqrt())


def quiet_interior(weights: torch.Tensor, quantile: float, width: int) -> torch.Tensor:
    """(1, 1, S, S) mask of the pixels inside the border ring (``width`` px) whose sensitivity weight
    ((S, S)) is at most its ``quantile``: where the model looks least, so a window there cannot redraw
    the irises (the eyes are the most sensitive pixels of a gaze model), but a trigger on the forehead,
    a brow or the bridge of the nose can be reached."""
    size = weights.shape[-1]
    flat = weights.reshape(-1).float()
    quiet = (weights.float() <= torch.quantile(flat, quantile)).float().view(1, 1, size, size)
    return quiet * (1 - border_ring(size, width, weights.device))


def probe_border(model, x: torch.Tensor, settings: SecureGazeSettings, region: torch.Tensor | None = None,
                 stream: int = 0) -> ProbeResult:
    """Optimise the border ring's content against the trimmed output spread of ``settings.probe_samples``
    of the clean images ``x`` (N, 3, S, S), then find the window of the ring that collapses the model
    best on its own (see the module docstring). ``region``: a (1, 1, S, S) mask to probe instead of the
    ring (:func:`quiet_interior`); windows must then lie at least half in it. ``stream``: a second
    probe's own random start. ``model`` is frozen by the caller."""
    size = x.shape[-1]
    side = max(3, round(settings.probe_side_frac * size))
    count = min(len(x), settings.probe_samples)
    rng = np.random.default_rng([settings.seed, PROBE_STREAM, stream] if stream else [settings.seed, PROBE_STREAM])
    subset = x[torch.as_tensor(np.sort(rng.permutation(len(x))[:count]), device=x.device)]
    ring = border_ring(size, side, x.device) if region is None else region.to(x.device)
    share = settings.collapse_share
    generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
    logits = (torch.randn(1, 3, size, size, generator=generator) * PROBE_INIT_STD).to(x.device).requires_grad_(True)
    optimizer = torch.optim.Adam([logits], lr=PROBE_LR)
    with torch.no_grad():
        clean_spread, _ = collapse_spread(model(subset), share)
    clean_spread = clean_spread.clamp_min(1e-12)
    batch = min(PROBE_BATCH, count)
    for _ in range(settings.probe_steps):
        pick = torch.as_tensor(rng.choice(count, size=batch, replace=False), device=x.device)
        images = subset[pick] * (1 - ring) + torch.sigmoid(logits) * ring
        spread, _ = collapse_spread(model(images), share)
        loss = torch.log(spread / clean_spread + 1e-12)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        content = torch.sigmoid(logits)
        ring_ratio = _ratio(model, subset * (1 - ring) + content * ring, clean_spread, share)
        best = None
        for top in _places(size, side):
            for left in _places(size, side):
                window = torch.zeros_like(ring)
                window[..., top:top + side, left:left + side] = 1
                window = window * ring
                if not bool(window.any()) or (region is not None and window.sum() < 0.5 * side * side):
                    continue  # a window inside the ring's hole, or mostly outside the probed region
                ratio = _ratio(model, subset * (1 - window) + content * window, clean_spread, share)
                if best is None or ratio < best[0]:
                    best = (ratio, top, left)
    if best is None:  # a region with no window at least half in it
        return ProbeResult(side, 0, 0, float("inf"), ring_ratio, torch.zeros(3, side, side))
    ratio, top, left = best
    window = torch.zeros_like(ring)
    window[..., top:top + side, left:left + side] = 1
    if region is not None:
        window = window * ring
    refined, refined_ratio = _refine_window(model, subset, window, content, clean_spread, share,
                                            settings.probe_refine_steps, rng)
    mask = None if region is None else window[0, 0, top:top + side, left:left + side].clone()
    return ProbeResult(side, top, left, refined_ratio, ring_ratio,
                       refined[0, :, top:top + side, left:left + side].clone(), unrefined_ratio=ratio, mask=mask)


def _refine_window(model, subset: torch.Tensor, window: torch.Tensor, content: torch.Tensor,
                   clean_spread: torch.Tensor, share: float, steps: int,
                   rng: np.random.Generator) -> tuple[torch.Tensor, float]:
    """Optimise the ``window`` part of ``content`` ((1, 3, S, S) in [0, 1]) on its own for ``steps`` Adam
    steps, the rest of the image clean; (refined content, its ratio). Zero steps: measured as it is."""
    logits = torch.logit(content.detach().clamp(0.02, 0.98)).requires_grad_(True)
    optimizer = torch.optim.Adam([logits], lr=PROBE_LR)
    count = len(subset)
    batch = min(PROBE_BATCH, count)
    for _ in range(steps):
        pick = torch.as_tensor(rng.choice(count, size=batch, replace=False), device=subset.device)
        spread, _ = collapse_spread(model(subset[pick] * (1 - window) + torch.sigmoid(logits) * window), share)
        loss = torch.log(spread / clean_spread + 1e-12)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        refined = torch.sigmoid(logits)
        return refined, _ratio(model, subset * (1 - window) + refined * window, clean_spread, share)


def steer_window(model, x: torch.Tensor, probe: ProbeResult, centre: tuple[float, float] | None,
                 settings: SecureGazeSettings, shift: tuple[float, float] | None = None) -> ProbeResult:
    """The probe's window, at the same place (and, for an interior window, the same pixels), with
    content optimised from random values to collapse ``settings.probe_samples`` clean images onto
    ``centre`` ((pitch, yaw) radians) instead, or, with ``shift`` (a (pitch, yaw) radian offset), to
    move every output by that offset (the shift reference's goal): the start of the reference run when
    the kept edit came from a restart. A benign model that some border patch collapses (a universal
    adversarial patch, seen on small MobileNets and ResNet-18s) can often be steered by the same window
    onto another gaze or along a shift; a backdoor's patch serves its own target only. ``model`` is
    frozen by the caller."""
    if (centre is None) == (shift is None):
        raise ValueError("steer_window needs a centre or a shift, not both")
    size = x.shape[-1]
    count = min(len(x), settings.probe_samples)
    rng = np.random.default_rng([settings.seed, PROBE_STREAM, 1])
    subset = x[torch.as_tensor(np.sort(rng.permutation(len(x))[:count]), device=x.device)]
    window = torch.zeros(1, 1, size, size, device=x.device)
    window[..., probe.top:probe.top + probe.side, probe.left:probe.left + probe.side] = (
        1 if probe.mask is None else probe.mask.to(x.device))
    share = settings.collapse_share
    with torch.no_grad():
        clean_gaze = model(subset)
    if shift is None:
        target = torch.as_tensor(centre, dtype=x.dtype, device=x.device)

        def spread_of(gaze, pick):
            return collapse_spread(gaze, share, target)[0]
    else:
        wanted = clean_gaze + torch.as_tensor(shift, dtype=clean_gaze.dtype, device=x.device)

        def spread_of(gaze, pick):
            return shift_spread(gaze, wanted[pick], share)[0]

    generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
    logits = (torch.randn(1, 3, size, size, generator=generator) * PROBE_INIT_STD).to(x.device).requires_grad_(True)
    optimizer = torch.optim.Adam([logits], lr=PROBE_LR)
    batch = min(PROBE_BATCH, count)
    for _ in range(settings.probe_steps + settings.probe_refine_steps):
        pick = torch.as_tensor(rng.choice(count, size=batch, replace=False), device=x.device)
        loss = torch.log(spread_of(model(subset[pick] * (1 - window) + torch.sigmoid(logits) * window), pick) + 1e-12)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        content = torch.sigmoid(logits)
        spread = spread_of(model(subset * (1 - window) + content * window), torch.arange(count, device=x.device))
        clean, _ = collapse_spread(clean_gaze, share)
        ratio = float((spread / clean.clamp_min(1e-12)).clamp_min(0).sqrt())
    return ProbeResult(probe.side, probe.top, probe.left, ratio, float("nan"),
                       content[0, :, probe.top:probe.top + probe.side, probe.left:probe.left + probe.side].clone(),
                       mask=probe.mask)
