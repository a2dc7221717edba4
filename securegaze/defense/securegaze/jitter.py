"""Small random changes of the model's input that a reversed collapse must survive (``input_jitter``).

A benign gaze model can often be collapsed by faint high-frequency noise where it hardly looks (the
background, the hair): an adversarial edit, cheap under the sensitivity price, that stops working
when the image moves by a pixel. A trigger the model learned from poisoned faces is a feature of the
image and keeps working. With ``input_jitter`` on, every reversed image is shifted by up to
``jitter_shift_frac`` of its side (sub-pixel, bilinear), scaled within ``1 +- jitter_scale`` and given
Gaussian noise of ``jitter_noise`` before the model sees it. Optimisation steps draw new changes
(:meth:`InputJitter.random`); the checks that keep the cheapest feasible edit, and the clean
statistics they compare with, use one fixed change per evaluation image (:meth:`InputJitter.fixed`),
so two edits are compared on the same changes.
"""

from __future__ import annotations

import torch
from torch.nn import functional as nnf

#: Seed stream of the jitter draws (with the settings' seed).
JITTER_STREAM = 0x717E


class InputJitter:
    """Random shift / scale / noise of (N, 3, S, S) images in [0, 1]; ``seed`` fixes every draw.

    ``whole_pixels``: shifts by whole pixels only (up to ``shift_frac`` x S rounded, at least 1) and no
    scale change, so nothing is resampled: a fine pattern (a checkerboard patch of 1-px cells) moves
    intact instead of being averaged by the interpolation.
    """

    def __init__(self, shift_frac: float, scale: float, noise: float, seed: int, whole_pixels: bool = False) -> None:
        self.shift_frac, self.scale, self.noise, self.seed = float(shift_frac), float(scale), float(noise), int(seed)
        self.whole_pixels = bool(whole_pixels)
        self.draws = torch.Generator().manual_seed(self._seed(0))

    def _seed(self, stream: int) -> int:
        return (self.seed * 1_000_003 + JITTER_STREAM * 7 + stream) % (2 ** 63)

    def _changes(self, n: int, size: int, draws: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(affine matrices (n, 2, 3), noise (n, 3, size, size)) drawn from ``draws``."""
        theta = torch.zeros(n, 2, 3)
        factor = 1.0 + (torch.rand(n, generator=draws) * 2 - 1) * self.scale
        theta[:, 0, 0] = factor
        theta[:, 1, 1] = factor
        # affine_grid's translation is in half-sides: a shift of f x S pixels is 2 f.
        theta[:, :, 2] = (torch.rand(n, 2, generator=draws) * 2 - 1) * 2 * self.shift_frac
        noise = torch.randn(n, 3, size, size, generator=draws) * self.noise
        return theta, noise

    @staticmethod
    def apply(x: torch.Tensor, theta: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """``x`` moved by ``theta`` (border pixels repeated), plus ``noise``, clamped to [0, 1]."""
        grid = nnf.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
        moved = nnf.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return (moved + noise.to(x.device, x.dtype)).clamp(0.0, 1.0)

    def _whole_pixel_shift(self, x: torch.Tensor, draws: torch.Generator) -> torch.Tensor:
        """``x`` shifted by whole pixels (border pixels repeated), one draw per image, plus noise."""
        n, size = len(x), x.shape[-1]
        reach = max(1, round(self.shift_frac * size)) if self.shift_frac > 0 else 0
        offsets = torch.randint(0, 2 * reach + 1, (n, 2), generator=draws)
        noise = torch.randn(n, 3, size, size, generator=draws) * self.noise
        padded = nnf.pad(x, (reach,) * 4, mode="replicate")
        moved = torch.stack([padded[i, :, dy:dy + size, dx:dx + size] for i, (dy, dx) in enumerate(offsets.tolist())])
        return (moved + noise.to(x.device, x.dtype)).clamp(0.0, 1.0)

    def _draw(self, x: torch.Tensor, draws: torch.Generator) -> torch.Tensor:
        if self.whole_pixels:
            return self._whole_pixel_shift(x, draws)
        theta, noise = self._changes(len(x), x.shape[-1], draws)
        return self.apply(x, theta, noise)

    def random(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` under newly drawn changes (an optimisation step)."""
        return self._draw(x, self.draws)

    def fixed(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` under the same changes at every call: image i always gets the i-th fixed change."""
        return self._draw(x, torch.Generator().manual_seed(self._seed(1)))
