"""Input checks every detector shares: the model's F/H interface, the clean images, a setting's value.

Each failure is one line naming the detector and what was expected (:mod:`securegaze.errors`).
"""

from __future__ import annotations

import numpy as np
import torch

from securegaze.errors import DatasetError, ModelFormatError
from securegaze.validation import check_setting

__all__ = ["MIN_CLEAN_IMAGES", "check_gaze_model", "check_setting", "clean_tensor"]

#: Fewest clean images a scan accepts: dispersion and variance statistics over fewer are noise.
#: docs/architecture.md section 6 assumes "hundreds"; 8 only keeps tests and smoke runs possible.
MIN_CLEAN_IMAGES = 8


def check_gaze_model(model, detector: str) -> None:
    """``model`` must expose the G = H o F interface (docs/architecture.md section 3), else a ModelFormatError."""
    missing = [name for name in ("features", "head", "head_weight", "input_size") if not hasattr(model, name)]
    if missing or not isinstance(model, torch.nn.Module):
        what = type(model).__name__
        raise ModelFormatError(
            f"{detector}: {what} is not a gaze model split into F and H (missing {', '.join(missing) or 'nn.Module'}); "
            "load it with securegaze.defense.load_model_any, and for a third-party ONNX declare "
            '"feature_split": {"feature_tensor": "<name>"} in its manifest'
        )


def clean_tensor(clean_images, input_size: int, detector: str) -> torch.Tensor:
    """Clean images as (N, 3, S, S) float32 in [0, 1], checked against the model's ``input_size``.

    Accepts an in-memory dataset (its ``images``), (N, S, S, 3) uint8 RGB, or an (N, 3, S, S) float
    tensor / array in [0, 1]. Raises :class:`DatasetError` for an empty or too small set, wrong
    layout or size, and values outside [0, 1].
    """
    images = getattr(clean_images, "images", clean_images)
    if isinstance(images, torch.Tensor):
        x = images.detach().to(torch.float32).cpu()
        layout = "tensor"
    else:
        try:
            array = np.asarray(images)
        except Exception as exc:  # ragged lists and the like
            raise DatasetError(f"{detector}: clean images cannot be read as an array ({exc})") from None
        if array.dtype == np.uint8:
            if array.ndim != 4 or array.shape[-1] != 3:
                raise DatasetError(f"{detector}: clean images must be (N, S, S, 3) uint8 RGB, got shape {array.shape}")
            x = torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2).float().div_(255.0)
        elif np.issubdtype(array.dtype, np.floating):
            x = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        else:
            raise DatasetError(
                f"{detector}: clean images have dtype {array.dtype}; expected uint8 (N, S, S, 3) RGB "
                "or float (N, 3, S, S) in [0, 1]"
            )
        layout = "array"
    if x.ndim != 4 or x.shape[1] != 3:
        raise DatasetError(f"{detector}: clean images must be (N, 3, S, S) floats in [0, 1], got {layout} of shape "
                           f"{tuple(x.shape)}")
    if len(x) == 0:
        raise DatasetError(f"{detector}: the clean image set is empty; give at least {MIN_CLEAN_IMAGES} "
                           "(hundreds recommended) clean face crops")
    if len(x) < MIN_CLEAN_IMAGES:
        raise DatasetError(f"{detector}: got {len(x)} clean images; need at least {MIN_CLEAN_IMAGES} "
                           "(hundreds recommended)")
    size = int(input_size)
    if x.shape[2] != size or x.shape[3] != size:
        raise DatasetError(
            f"{detector}: clean images are {x.shape[2]}x{x.shape[3]} px but the model expects {size}x{size} "
            "(its input_size); resize them first (securegaze.data.base.resize_images)"
        )
    if not torch.isfinite(x).all():
        raise DatasetError(f"{detector}: clean images contain NaN or inf values")
    if x.min() < 0.0 or x.max() > 1.0:
        raise DatasetError(
            f"{detector}: clean image values span [{x.min().item():.3g}, {x.max().item():.3g}]; expected [0, 1] "
            "(or uint8 0..255)"
        )
    return x.contiguous()
