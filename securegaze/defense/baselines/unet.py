"""What UNICORN and BTI-DBF share: a small residual U-Net, SSIM, and the pull of a gaze to a target.

Both papers use the same U-Net (32 filters in the first block, 4 blocks, max-pooling down and
transposed convolutions up) and pretrain it towards the identity before the inversion: UNICORN's
transformation P and its inverse Q for 500 epochs of ``MSE(Q(P(x)), x)``, BTI-DBF's generator for 50
epochs of ``MSE(G(x), x)`` plus keeping the model's output and features. :class:`SmallUNet` is
exactly the identity at initialisation instead (its last convolution starts at zero and its output
is added to the input), which is what the pretraining aims at, without its cost; it is narrower and
shallower by default (the scan must run on two CPU cores; :class:`UNetShape` says how wide).

Two output modes:

* ``"image"``: the output stays an image in [0, 1]. The residual ``r`` is added in logit space,
  ``x' = x + sigmoid(logit(x_c) + s r) - sigmoid(logit(x_c))`` with ``x_c`` clamped 1e-3 from 0 and
  1, so saturated pixels keep a gradient and ``r = 0`` gives ``x`` bit for bit (the form of
  SecureGaze's generator, :mod:`securegaze.defense.securegaze.generator`);
* ``"free"``: ``y = x + s r``, unbounded (UNICORN's transformed space, which need not be an image).

``s`` is the ``strength`` argument of :meth:`SmallUNet.forward` (1: as trained; 2: twice as deep).
The network sees the image plus two coordinate channels, so it can place an edit at a fixed spot
(a patch trigger) as well as follow the face. Its initialisation is seeded and independent of the
global random state, so a scan is a function of its seed.

:func:`target_pull` is the regression stand-in for both papers' cross-entropy towards a target label
(UNICORN's attack-success term, BTI-DBF(U)'s re-inversion towards the detected label).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as nnf

from securegaze.geometry import pitchyaw_to_vector_torch
from securegaze.validation import check_choice, check_int

#: Pixels are mapped through logit space clamped this far from 0 and 1 (mode "image").
PIXEL_EPS = 1e-3
#: Output modes of :class:`SmallUNet`.
MODES = ("image", "free")
#: Keeps tanh-bounded masks strictly inside (0, 1) (both official codes' EPSILON).
TANH_EPS = 1e-7


@dataclass(frozen=True)
class UNetShape:
    """Width (channels of the first block, doubled per level up to 8x) and depth (poolings) of a U-Net."""

    width: int = 16
    depth: int = 3

    def validate(self, who: str, prefix: str = "unet_") -> None:
        check_int(who, f"{prefix}width", self.width, 2, 256)
        check_int(who, f"{prefix}depth", self.depth, 1, 5)


class SmallUNet(nn.Module):
    """(N, 3, S, S) -> (N, 3, S, S); the identity until trained (see the module docstring).

    A stride-2 3x3 stem takes the image to half resolution; each level is two 3x3 convolutions with
    leaky ReLUs, then 2x max-pooling; the way up is nearest upsampling, concatenation with the
    level's skip and two 3x3 convolutions; a 1x1 convolution, zero at initialisation, gives four
    values per half-resolution pixel that a pixel shuffle unfolds to the full-resolution residual.
    The half-resolution body (SecureGaze's generator does the same) costs a quarter of a
    full-resolution one, which is what lets the U-Net train within a CPU scan; the edit still has
    per-pixel freedom. Any S >= 2 works (odd sizes are cropped).

    ``out_init_std`` > 0 draws the last convolution from N(0, out_init_std^2) instead of zeros: a
    near-identity start, like a pretrained identity that is not exact. An objective that *maximises*
    a squared difference from the clean image (BTI-DBF's) has a zero gradient at the exact identity
    and would never leave it.
    """

    def __init__(self, input_size: int, shape: UNetShape = UNetShape(), mode: str = "image", seed: int = 0,
                 out_init_std: float = 0.0) -> None:
        super().__init__()
        check_choice("unet", "mode", mode, MODES)
        self.input_size, self.shape, self.mode = int(input_size), shape, mode
        widths = [shape.width * min(2 ** level, 8) for level in range(shape.depth + 1)]

        def double(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.LeakyReLU(0.2),
                                 nn.Conv2d(c_out, c_out, 3, padding=1), nn.LeakyReLU(0.2))

        self.stem = nn.Conv2d(5, widths[0], 3, stride=2, padding=1)
        self.down = nn.ModuleList([double(widths[max(level - 1, 0)], widths[level]) for level in range(shape.depth)])
        self.bottom = double(widths[shape.depth - 1], widths[shape.depth])
        self.up = nn.ModuleList([double(widths[level + 1] + widths[level], widths[level])
                                 for level in reversed(range(shape.depth))])
        self.out = nn.Conv2d(widths[0], 3 * 4, 1)
        ramp = torch.linspace(-1.0, 1.0, self.input_size)
        self.register_buffer("coords", torch.stack(torch.meshgrid(ramp, ramp, indexing="ij"))[None],
                             persistent=False)
        generator = torch.Generator().manual_seed(int(seed))
        for module in self.modules():
            if isinstance(module, nn.Conv2d) and module is not self.out:
                nn.init.kaiming_uniform_(module.weight, a=0.2, generator=generator)
                nn.init.zeros_(module.bias)
        nn.init.zeros_(self.out.bias)
        if out_init_std > 0:  # a near-identity start: see the class docstring
            nn.init.normal_(self.out.weight, 0.0, out_init_std, generator=generator)
        else:
            nn.init.zeros_(self.out.weight)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """The network's output r, (N, 3, S, S) (logit-space in mode "image")."""
        h = torch.cat([x * 2.0 - 1.0, self.coords.expand(len(x), -1, -1, -1)], dim=1)
        h = nnf.leaky_relu(self.stem(h), 0.2)
        skips = []
        for block in self.down:
            h = block(h)
            skips.append(h)
            h = nnf.max_pool2d(h, 2, ceil_mode=True)
        h = self.bottom(h)
        for block, skip in zip(self.up, reversed(skips), strict=True):
            h = nnf.interpolate(h, scale_factor=2.0, mode="nearest")[..., : skip.shape[-2], : skip.shape[-1]]
            h = block(torch.cat([h, skip], dim=1))
        return nnf.pixel_shuffle(self.out(h), 2)[..., : self.input_size, : self.input_size]

    def forward(self, x: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
        r = self.residual(x)
        if self.mode == "free":
            return x + strength * r
        logits = torch.logit(x.clamp(PIXEL_EPS, 1.0 - PIXEL_EPS))
        # Subtracting the same expression with r = 0 makes the untrained network the identity bit for bit.
        return (x + (torch.sigmoid(logits + strength * r) - torch.sigmoid(logits))).clamp(0.0, 1.0)


def bounded(raw: torch.Tensor) -> torch.Tensor:
    """Both papers' parametrisation of a mask or pattern: ``tanh(raw) / 2 + 1/2``, values in (0, 1)."""
    return torch.tanh(raw) / (2.0 + TANH_EPS) + 0.5


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Mean structural similarity of two (N, C, S, S) image batches in [0, 1], a scalar in [-1, 1].

    The usual definition (Wang et al. 2004): a Gaussian window (``window`` taps, ``sigma`` px; the
    window shrinks to the image for S < ``window``), constants (0.01)^2 and (0.03)^2 for a value range
    of 1, per channel, averaged over the valid positions, channels and images. Differentiable; both
    baselines' stealthiness terms use ``1 - ssim``.
    """
    size = min(window, a.shape[-1], a.shape[-2])
    coords = torch.arange(size, dtype=a.dtype, device=a.device) - (size - 1) / 2
    g = torch.exp(-coords.pow(2) / (2 * sigma ** 2))
    g = g / g.sum()
    channels = a.shape[1]
    kernel = (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()

    def blur(t: torch.Tensor) -> torch.Tensor:
        return nnf.conv2d(t, kernel, groups=channels)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a.pow(2)
    var_b = blur(b * b) - mu_b.pow(2)
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    index = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a.pow(2) + mu_b.pow(2) + c1) * (var_a + var_b + c2))
    return index.mean()


def target_pull(gaze: torch.Tensor, target: torch.Tensor, radius_deg: float) -> torch.Tensor:
    """Mean pseudo-Huber loss of (N, 2) radian gazes to a (2,) or (N, 2) radian target, a scalar.

    With ``a`` the angle to the target in units of ``radius_deg`` (via the chord between unit
    vectors, smooth at 0), each gaze costs ``sqrt(1 + a^2) - 1``: about ``a^2 / 2`` inside the radius
    (a flipped input is nearly free, as a confidently classified one is under cross-entropy) and
    ``a`` far outside it (a bounded gradient, like cross-entropy's in the logits). A regression has
    no label to cross-entropy towards; this is the term that plays its part.
    """
    goal = pitchyaw_to_vector_torch(target.reshape(-1, 2).to(gaze)).expand(len(gaze), 3)
    chord = ((pitchyaw_to_vector_torch(gaze) - goal).pow(2).sum(-1) + 1e-12).sqrt()
    angle = 2.0 * torch.asin((chord / 2.0).clamp(max=1.0 - 1e-7))
    scaled = angle / math.radians(radius_deg)
    return (torch.sqrt(1.0 + scaled.pow(2)) - 1.0).mean()
