"""The reversed-trigger picture: clean, reversed-triggered and difference rows, as a PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from securegaze.defense.securegaze.reversal import TriggerReversal, model_device


def save_trigger_image(reversal: TriggerReversal, path: str | Path, samples: int = 6, tile_px: int = 96) -> Path:
    """A PNG of ``samples`` evaluation images: rows clean, reversed-triggered, |difference| heat map
    (:func:`save_edit_picture` of the reversal's generator)."""
    images = reversal.eval_images[:samples]
    device = model_device(reversal.generator)
    return save_edit_picture(images, lambda x: reversal.generator(x.to(device)).cpu(), path, tile_px)


def save_edit_picture(images: torch.Tensor, edit, path: str | Path, tile_px: int = 96) -> Path:
    """A PNG of (n, 3, S, S) CPU ``images``: rows clean, ``edit(images)``, |difference| heat map.

    The heat map shows the mean absolute change over the colour channels, scaled to the largest change
    in the picture (colour map "inferno"); tiles are upscaled to ``tile_px`` without smoothing so
    single edited pixels stay visible. Written atomically.
    """
    import cv2

    from securegaze.io import atomic_write_bytes

    with torch.no_grad():
        edited = edit(images)
    diff = (edited - images).abs().mean(dim=1)  # (n, S, S)
    scale = max(float(diff.max()), 1e-6)

    def tile_rgb(x: torch.Tensor) -> np.ndarray:
        rgb = (x.permute(1, 2, 0).numpy() * 255.0).round().clip(0, 255).astype(np.uint8)
        return cv2.resize(rgb, (tile_px, tile_px), interpolation=cv2.INTER_NEAREST)

    def tile_heat(d: torch.Tensor) -> np.ndarray:
        grey = (d.numpy() / scale * 255.0).round().clip(0, 255).astype(np.uint8)
        heat_bgr = cv2.applyColorMap(cv2.resize(grey, (tile_px, tile_px), interpolation=cv2.INTER_NEAREST),
                                     cv2.COLORMAP_INFERNO)
        return heat_bgr[..., ::-1]

    gap = 4
    rows = [[tile_rgb(x) for x in images], [tile_rgb(x) for x in edited], [tile_heat(d) for d in diff]]
    height = 3 * tile_px + 2 * gap
    width = len(images) * tile_px + (len(images) - 1) * gap
    sheet = np.full((height, width, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            top, left = r * (tile_px + gap), c * (tile_px + gap)
            sheet[top:top + tile_px, left:left + tile_px] = tile
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(sheet[..., ::-1]))
    if not ok:  # pragma: no cover - cv2 only fails here on an impossible image shape
        raise ValueError(f"cannot encode the trigger picture {sheet.shape} as PNG")
    return atomic_write_bytes(path, encoded.tobytes())
