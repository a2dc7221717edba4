"""The trigger generator M: a small encoder-decoder that starts as the identity, and its file format."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as nnf

from securegaze.defense.securegaze.settings import SCANNER_VERSION
from securegaze.errors import InputFileError

#: Pixels are mapped through logit space, clamped this far from 0 and 1 (see TriggerGenerator).
PIXEL_EPS = 1e-3


class TriggerGenerator(nn.Module):
    """M: (N, 3, S, S) float in [0, 1] -> same; exactly the identity until trained.

    Two parts add a residual ``r`` in logit space: a small U-Net-like encoder-decoder that sees the
    image plus two coordinate channels (so it can place an edit at a fixed spot, as a patch trigger
    is, or follow the face) and runs at half resolution, its full-resolution output unfolded by a
    pixel shuffle (the scan's cost is the model's, not the generator's); and a static per-pixel map
    for edits that are the same on every image. Then
    ``x' = x + sigmoid(logit(x_c) + r) - sigmoid(logit(x_c))`` with ``x_c = clamp(x, 1e-3, 1 - 1e-3)``,
    so x' stays in [0, 1] (up to 1e-3, clipped) without a hard clip that would stop gradients, and
    r = 0 gives x' = x exactly. The last
    convolution and the static map start at zero, hence the identity at initialisation.
    """

    def __init__(self, input_size: int, width: int = 16, seed: int = 0) -> None:
        super().__init__()
        self.input_size = int(input_size)
        self.width = int(width)
        w = self.width
        self.enc1 = nn.Conv2d(5, w, 3, stride=2, padding=1)  # S/2
        self.enc2 = nn.Conv2d(w, 2 * w, 3, stride=2, padding=1)  # S/4
        self.enc3 = nn.Conv2d(2 * w, 2 * w, 3, stride=2, padding=1)  # S/8
        self.dec2 = nn.Conv2d(4 * w, w, 3, padding=1)  # S/4
        self.dec1 = nn.Conv2d(2 * w, w, 3, padding=1)  # S/2
        self.out = nn.Conv2d(w, 3 * 4, 1)  # pixel shuffle x2 -> (3, S, S)
        self.static = nn.Parameter(torch.zeros(1, 3, self.input_size, self.input_size))
        ramp = torch.linspace(-1.0, 1.0, self.input_size)
        coords = torch.stack(torch.meshgrid(ramp, ramp, indexing="ij"))[None]
        self.register_buffer("coords", coords, persistent=False)
        # Seeded initialisation independent of the global RNG, so a scan is a function of its seed.
        generator = torch.Generator().manual_seed(int(seed))
        for conv in (self.enc1, self.enc2, self.enc3, self.dec2, self.dec1):
            nn.init.kaiming_uniform_(conv.weight, a=0.2, generator=generator)
            nn.init.zeros_(conv.bias)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """The logit-space edit r, (N, 3, S, S)."""
        def act(t):
            return nnf.leaky_relu(t, 0.2)

        h = torch.cat([x * 2.0 - 1.0, self.coords.expand(len(x), -1, -1, -1)], dim=1)
        e1 = act(self.enc1(h))
        e2 = act(self.enc2(e1))
        e3 = act(self.enc3(e2))
        d2 = act(self.dec2(torch.cat([nnf.interpolate(e3, size=e2.shape[-2:], mode="nearest"), e2], 1)))
        d1 = act(self.dec1(torch.cat([nnf.interpolate(d2, size=e1.shape[-2:], mode="nearest"), e1], 1)))
        dynamic = nnf.pixel_shuffle(self.out(d1), 2)
        if dynamic.shape[-1] != self.input_size:  # odd sizes: the half-resolution map rounded up
            dynamic = dynamic[..., : self.input_size, : self.input_size]
        return dynamic + self.static

    def forward(self, x: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
        """The edited images; ``strength`` scales the logit-space edit (1: as trained, 2: twice as deep)."""
        logits = torch.logit(x.clamp(PIXEL_EPS, 1.0 - PIXEL_EPS))
        # sigmoid(logit(v)) is v only up to rounding; subtracting the same expression with r = 0
        # makes the untrained generator the identity bit for bit.
        change = torch.sigmoid(logits + strength * self.residual(x)) - torch.sigmoid(logits)
        return (x + change).clamp(0.0, 1.0)

    def config(self) -> dict[str, int]:
        return {"input_size": self.input_size, "width": self.width}


def save_generator(generator: TriggerGenerator, path: str | Path) -> Path:
    """The trained generator as safetensors (no pickle), with its config as metadata; atomic."""
    import json

    from securegaze.io import save_safetensors

    state = {k: v.detach().contiguous().cpu() for k, v in generator.state_dict().items()}
    meta = {"config": json.dumps(generator.config()), "scanner_version": SCANNER_VERSION}
    return save_safetensors(state, path, meta)


def load_generator(path: str | Path) -> TriggerGenerator:
    """Read a generator written by :func:`save_generator`; InputFileError when it is not one."""
    import json

    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: trigger generator file not found")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            state = {k: fh.get_tensor(k) for k in fh.keys()}
        config = json.loads(meta["config"])
        generator = TriggerGenerator(int(config["input_size"]), int(config["width"]))
        generator.load_state_dict(state)
    except (SafetensorError, OSError, ValueError, KeyError, RuntimeError) as exc:
        raise InputFileError(f"{path}: not a SecureGaze trigger generator ({type(exc).__name__}: {exc})") from None
    return generator.eval()
