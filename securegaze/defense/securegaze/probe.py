"""Patch probing: a cheap search for a stamped patch that already collapses the model, to start from.

A gradient search from the identity follows the model's clean-data sensitivity, and a patch trigger
in a corner the model ignores on clean faces has no gradient until most of the patch is there: the
optimiser then settles on a face-wide edit that costs thirty times the real trigger. The probe
stamps a few high-contrast patterns (white, black, a checker, binary noise) on a grid of places that
covers the whole image, borders included, and measures the trimmed output spread of each
(:func:`collapse_spread`). When the best stamp collapses the model well beyond what the clean images
vary, the reversal runs a second time from that stamp (a restart; see
:class:`~securegaze.defense.securegaze.detector.SecureGazeDetector`) and the cheaper of the two
feasible edits is kept. A benign model is collapsed by no small stamp except one over the eyes, and
starting from that reaches about the same cost as starting from the identity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from securegaze.defense.securegaze.settings import SecureGazeSettings
from securegaze.defense.securegaze.statistics import collapse_spread

#: Patterns stamped by the probe.
PATTERNS = ("white", "black", "checker", "noise")
#: Logit-space value of a stamped pixel in the generator's static map (sigmoid(6) = 0.9975).
STAMP_LOGIT = 6.0
#: Seed stream of the noise pattern and the probe's image subset (with the settings' seed).
PROBE_STREAM = 0x9A7C


@dataclass(frozen=True)
class ProbeResult:
    """The best stamp: its pattern, side and place (px), and the RMS ratio of the trimmed output spread
    it reaches to the clean one (below ``settings.probe_ratio``: worth a restart)."""

    pattern: str
    side: int
    top: int
    left: int
    dispersion_ratio: float

    def static_map(self, size: int) -> torch.Tensor:
        """(1, 3, S, S) logit-space static edit that stamps this patch (zero elsewhere)."""
        edit = torch.zeros(1, 3, size, size)
        edit[..., self.top:self.top + self.side, self.left:self.left + self.side] = _pattern(
            self.pattern, self.side, PROBE_STREAM) * STAMP_LOGIT
        return edit


def _pattern(name: str, side: int, seed: int) -> torch.Tensor:
    """(3, side, side) of +1 (white) / -1 (black)."""
    if name == "white":
        sign = torch.ones(side, side)
    elif name == "black":
        sign = -torch.ones(side, side)
    elif name == "checker":
        cell = torch.arange(side) * 3 // side
        sign = ((cell[:, None] + cell[None, :]) % 2 == 0).float() * 2 - 1
    else:
        generator = torch.Generator().manual_seed(seed)
        sign = (torch.rand(side, side, generator=generator) < 0.5).float() * 2 - 1
    return sign.expand(3, side, side)


def _places(size: int, side: int) -> list[int]:
    """Top (or left) offsets of a grid of step ``side`` that starts at 0 and ends flush with the border."""
    places = list(range(0, size - side + 1, side))
    if places[-1] != size - side:
        places.append(size - side)
    return places


@torch.no_grad()
def probe_patches(model, x: torch.Tensor, settings: SecureGazeSettings) -> ProbeResult:
    """Stamp every pattern at every place on ``settings.probe_samples`` of the clean images ``x``
    (N, 3, S, S); return the stamp whose trimmed output spread is smallest relative to the clean one."""
    size = x.shape[-1]
    count = min(len(x), settings.probe_samples)
    rng = np.random.default_rng([settings.seed, PROBE_STREAM])
    subset = x[torch.as_tensor(np.sort(rng.permutation(len(x))[:count]), device=x.device)]
    clean_spread, _ = collapse_spread(model(subset), settings.collapse_share)
    side = max(3, round(settings.probe_side_frac * size))
    best: ProbeResult | None = None
    for name in PATTERNS:
        # In [0, 1] pixel values: +1 -> white, -1 -> black.
        values = (_pattern(name, side, PROBE_STREAM).to(x.device) + 1) / 2
        for top in _places(size, side):
            for left in _places(size, side):
                stamped = subset.clone()
                stamped[..., top:top + side, left:left + side] = values
                spread, _ = collapse_spread(model(stamped), settings.collapse_share)
                ratio = float((spread / clean_spread).clamp_min(0).sqrt())
                if best is None or ratio < best.dispersion_ratio:
                    best = ProbeResult(name, side, top, left, ratio)
    assert best is not None
    return best
