"""The camera finish: per-sample blur and sensor noise, then 8-bit quantisation."""

from __future__ import annotations

import numpy as np

from securegaze.data.synthetic.faces import FaceParams
from securegaze.data.synthetic.layout import NOISE_BANK_SEED, NOISE_BANK_SIZE
from securegaze.data.synthetic.raycast import clamp

_NOISE_BANK: np.ndarray | None = None


def _noise_bank() -> np.ndarray:
    """(3, B, B) float32 standard-normal texture, the same in every process (fixed seed)."""
    global _NOISE_BANK
    if _NOISE_BANK is None:
        rng = np.random.default_rng(NOISE_BANK_SEED)
        _NOISE_BANK = rng.standard_normal((3, NOISE_BANK_SIZE, NOISE_BANK_SIZE), dtype=np.float32)
    return _NOISE_BANK


def finish(image: np.ndarray, p: FaceParams, mono: bool = False) -> np.ndarray:
    """(3, N, S, S) float in [0, 1] -> (N, S, S, 3) uint8, with per-sample blur and sensor noise.

    ``mono``: a monochrome sensor (one noise value per pixel in all three channels, so a grey image
    stays grey)."""
    import cv2

    size = image.shape[2]
    bank = _noise_bank()[:1] if mono else _noise_bank()
    span = NOISE_BANK_SIZE - size
    for i in range(image.shape[1]):
        face = image[:, i]
        sigma = float(p.blur_sigma[i]) * size / 64.0
        if sigma > 0.15:
            # cv2 blurs each channel of an (H, W, C) image; the channel-first face is (C, H, W).
            face[...] = cv2.GaussianBlur(face.transpose(1, 2, 0), (0, 0), sigma,
                                         borderType=cv2.BORDER_REFLECT).transpose(2, 0, 1)
        oy, ox = (p.noise_offset[i] * span).astype(np.int64)
        face += bank[:, oy:oy + size, ox:ox + size] * p.noise_std[i]
    image *= 255.0
    image += 0.5
    clamp(image, 0.0, 255.0)
    return image.astype(np.uint8).transpose(1, 2, 3, 0)


