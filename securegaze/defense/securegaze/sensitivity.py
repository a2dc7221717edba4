"""The model's sensitivity map: the per-pixel price of an edit, high where the model looks."""

from __future__ import annotations

import math

import torch
from torch.nn import functional as nnf

from securegaze.defense.base import ProgressCallback, ScanProgress
from securegaze.defense.securegaze.settings import DETECTOR_NAME, SecureGazeSettings
from securegaze.defense.securegaze.statistics import check_finite_gaze
from securegaze.errors import ModelFormatError


def _gaussian_blur(image: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """(S, S) -> (S, S), separable Gaussian with reflected borders."""
    if sigma_px < 0.3:
        return image
    radius = max(1, int(math.ceil(3 * sigma_px)))
    radius = min(radius, image.shape[-1] - 1)
    taps = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)
    kernel = torch.exp(-0.5 * (taps / sigma_px) ** 2)
    kernel = kernel / kernel.sum()
    out = image[None, None]
    out = nnf.conv2d(nnf.pad(out, (radius, radius, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
    out = nnf.conv2d(nnf.pad(out, (0, 0, radius, radius), mode="reflect"), kernel.view(1, 1, -1, 1))
    return out[0, 0]


def sensitivity_map(model, images: torch.Tensor, settings: SecureGazeSettings,
                    progress: ProgressCallback | None = None) -> torch.Tensor:
    """The model's per-pixel sensitivity, (S, S), mean 1: where an edit costs more.

    Running average over clean images of |d pitch / dx| + |d yaw / dx| (summed over the colour
    channels), smoothed with a Gaussian of ``sensitivity_blur_frac`` x S pixels (a trigger's price
    should not hinge on single noisy gradient pixels), normalised to mean 1, raised to
    ``sensitivity_power``, normalised again, floored at ``sensitivity_floor`` and normalised once more. Samples are independent in eval mode, so the
    gradient of the batch sum gives every image's own input gradient.
    """
    size = images.shape[-1]
    count = min(len(images), settings.sensitivity_samples)
    total = torch.zeros(size, size, dtype=torch.float64)
    batches = range(0, count, settings.batch_size)
    for step, start in enumerate(batches):
        x = images[start:start + settings.batch_size][: count - start].clone().requires_grad_(True)
        gaze = model(x)
        check_finite_gaze(gaze, "clean images")
        grads = torch.zeros_like(x)
        for k in range(gaze.shape[1]):
            (grad,) = torch.autograd.grad(gaze[:, k].sum(), x, retain_graph=k + 1 < gaze.shape[1])
            grads += grad.abs()
        total += grads.sum(dim=(0, 1)).detach().double().cpu()
        if progress:
            progress(ScanProgress(DETECTOR_NAME, "sensitivity", step + 1, len(batches)))
    smap = _gaussian_blur(total.float(), settings.sensitivity_blur_frac * size)
    mean = smap.mean()
    if not torch.isfinite(mean) or mean <= 0:
        raise ModelFormatError(
            "securegaze: the model's output does not depend on its input (zero input gradients on every clean "
            "image); nothing can be scanned"
        )
    smap = (smap / mean).pow(settings.sensitivity_power)
    smap = (smap / smap.mean()).clamp_min(settings.sensitivity_floor)
    return smap / smap.mean()
